//! The `relay` command: relay RTP between two media servers, or compare the
//! transports on this machine. See `relay --help`.

mod answer;
mod cli;
mod offer;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use relay::targets::TargetDefaults;

/// Prints a status line on stdout for whoever started the relay. A reader
/// that went away (a script that read the first line and closed the pipe)
/// is no reason to stop relaying: write errors are ignored, where
/// `println!` would panic.
fn status_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Raises the soft limit on open files to the hard one: every link holds
/// at least one UDP socket and every signaling connection a TCP one, so
/// the usual soft limit of 1,024 caps a relay near a thousand links
/// (measured: "Too many open files" after about 1,000 idle links of any
/// transport). Returns the limit now in force.
fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Compare { .. }) {
        "warn"
    } else {
        "info"
    };
    relay::logs::init(default_level);
    if let Some(limit) = raise_open_file_limit() {
        tracing::debug!(limit, "open file limit");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("relay: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Netsim(args) => {
            relay_netsim::run_cli(args).await.map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Transports => {
            for t in relay::compiled_transports() {
                for m in t.modes() {
                    println!("{t} {m}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Answer {
            signal_listen,
            out,
            forward,
            forward_transport,
            forward_mode,
            forward_token,
            token,
            no_token,
            cors_origins,
            tls,
            metrics_listen,
            link,
        } => {
            if !out.is_empty() {
                relay::pipe::spec::check_streams(&out, true).map_err(|e| format!("--out: {e}"))?;
            }
            let options = link.options()?;
            let defaults = TargetDefaults {
                transport: forward_transport,
                mode: forward_mode,
                fingerprint: None,
            };
            let planned = relay::targets::plan(&forward, &defaults)
                .map_err(|e| answer::forward_wording(&e.to_string()))?;
            link.check_fan_out(&planned)?;
            let forward = offer::link_offers(planned, forward_token, &options, true)?;
            let token = answer::answer_token(signal_listen, token, no_token);
            let config = answer::AnswerConfig {
                listen: signal_listen,
                out,
                forward,
                token,
                tls: tls.identity()?,
                metrics_listen,
                pipe: link.pipe_options()?,
                cors_origins,
            };
            answer::answer(config, options).await
        }
        Command::Offer {
            signal,
            transport,
            mode,
            input,
            token,
            signal_fingerprint,
            metrics_listen,
            reconnect,
            link,
        } => {
            relay::pipe::spec::check_streams(&input, false).map_err(|e| format!("--in: {e}"))?;
            let defaults = TargetDefaults {
                transport,
                mode,
                fingerprint: signal_fingerprint,
            };
            let planned = relay::targets::plan(&signal, &defaults).map_err(|e| e.to_string())?;
            link.check_fan_out(&planned)?;
            let pipe_options = link.pipe_options()?;
            let options = link.options()?;
            let links = offer::link_offers(planned, token.clone(), &options, reconnect)?;
            offer::offer(links, &input, pipe_options, metrics_listen.map(|a| (a, token))).await
        }
        Command::Compare {
            packets,
            rate,
            size,
            flood_packets,
            transport,
            json,
        } => {
            let config = relay::compare::CompareConfig {
                packets,
                rate: rate.max(1),
                size: size.clamp(32, relay_core::MIN_MAX_PACKET_SIZE),
                flood_packets,
                transports: if transport.is_empty() {
                    relay::compiled_transports()
                } else {
                    transport
                },
            };
            for t in &config.transports {
                relay::check(*t, t.default_mode()).map_err(|e| e.to_string())?;
            }
            let rows = relay::compare::run(&config, |what| eprintln!("relay compare: running {what}"))
                .await
                .map_err(|e| e.to_string())?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
                }
            } else {
                print!("{}", relay::compare::table(&rows, &config));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
