//! The `relay` command: relay RTP between two media servers, or compare the
//! transports on this machine. See `relay --help`.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use relay::pipe::{Continuity, Local, Pipe, PipeCounters};
use relay::reconnect::{OfferPlan, OfferState};
use relay::{Established, LinkOptions};
use relay_core::{Mode, Transport};
use relay_signaling::{ServerConfig, SignalingClient, SignalingServer};
use tokio::net::UdpSocket;

#[derive(Parser, Debug)]
#[command(
    name = "relay",
    version,
    about = "Relay RTP between media servers over a data channel, QUIC or plain RTP/UDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve signaling; relay every session's packets to --out.
    Answer {
        /// Address for the HTTP signaling server.
        #[arg(long, default_value = "127.0.0.1:8080")]
        signal_listen: SocketAddr,
        /// Where received RTP/RTCP goes (the local consumer: SFU, ffmpeg, GStreamer).
        #[arg(long)]
        out: SocketAddr,
        /// Require `Authorization: Bearer TOKEN` on signaling requests.
        #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Offer a link to a signaling server; relay what arrives on --in.
    Offer {
        /// Base URL of the answering relay's signaling, e.g. http://10.0.0.2:8080.
        #[arg(long)]
        signal: String,
        /// Transport: rtp-udp, quic or dc (those compiled in).
        #[arg(long)]
        transport: Transport,
        /// Delivery mode (default: the transport's first).
        #[arg(long)]
        mode: Option<Mode>,
        /// Where the local sender (SFU, ffmpeg, GStreamer) sends RTP/RTCP.
        #[arg(long = "in")]
        input: SocketAddr,
        /// Bearer token for the signaling server.
        #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// When the link dies (peer restarted, path lost), offer a new one,
        /// backing off from 100 ms to 2 s between attempts, until stopped.
        /// Local packets that arrive with no link up are counted.
        #[arg(long)]
        reconnect: bool,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Run the same RTP workload over every compiled-in transport and raw UDP, on loopback.
    Compare {
        /// Packets in the paced phase.
        #[arg(long, default_value_t = 10_000)]
        packets: u32,
        /// Paced rate, packets per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        /// RTP packet size in bytes.
        #[arg(long, default_value_t = 1_200)]
        size: usize,
        /// Packets in the flood phase.
        #[arg(long, default_value_t = 50_000)]
        flood_packets: u32,
        /// Only this transport (repeatable).
        #[arg(long)]
        transport: Vec<Transport>,
        /// Print JSON rows instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List compiled-in transports and their modes, one `TRANSPORT MODE` per line.
    Transports,
    /// Impair UDP between two addresses: loss, burst loss, delay, jitter, rate cap (netem in userspace).
    Netsim(relay_netsim::NetsimArgs),
}

#[derive(clap::Args, Debug)]
struct LinkArgs {
    /// Local IP for media sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// IP to advertise to the peer when --bind is 0.0.0.0 or ::.
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// Seconds of silence after which the peer is considered dead.
    #[arg(long, default_value_t = 5.0)]
    liveness_timeout: f64,
}

impl LinkArgs {
    fn options(&self) -> Result<LinkOptions, String> {
        if !(self.liveness_timeout.is_finite() && self.liveness_timeout > 0.0) {
            return Err(format!(
                "--liveness-timeout must be a positive number of seconds, not {}",
                self.liveness_timeout
            ));
        }
        Ok(LinkOptions {
            bind_ip: self.bind,
            advertise_ip: self.advertise,
            liveness_timeout: Duration::from_secs_f64(self.liveness_timeout),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Compare { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
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
            token,
            link,
        } => answer(signal_listen, out, token, link.options()?).await,
        Command::Offer {
            signal,
            transport,
            mode,
            input,
            token,
            reconnect,
            link,
        } => {
            let plan = relay::reconnect::OfferPlan {
                transport,
                mode: mode.unwrap_or(transport.default_mode()),
                options: link.options()?,
                reconnect: reconnect.then(relay::reconnect::ReconnectPolicy::default),
            };
            offer(&signal, plan, input, token).await
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

async fn answer(
    listen: SocketAddr,
    out: SocketAddr,
    token: Option<String>,
    options: LinkOptions,
) -> Result<ExitCode, String> {
    if token.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "signaling is open to anyone who can reach it; pass --token");
    }
    let out_bind = SocketAddr::new(
        if out.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    );
    let continuity = Arc::new(Continuity::default());
    let sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = Arc::new(move |e: Established| {
        let continuity = continuity.clone();
        let session = sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let socket = match std_udp(out_bind) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open a socket towards --out; closing the session");
                    return;
                }
            };
            tracing::info!(transport = %e.transport, mode = %e.link.mode(), %out, "link up; relaying to --out");
            let counters = Arc::new(PipeCounters::default());
            let link = e.link.clone();
            let pipe =
                Pipe::start(socket, Local::Fixed(out), counters.clone()).with_continuity(continuity, session);
            let reason = pipe.carry(e.link).await;
            log_end(&*link, &counters, &reason);
        });
    });
    let server = SignalingServer::bind(
        listen,
        ServerConfig::default().token(token),
        relay::answerers(&options, sink),
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("listening signal=http://{} out={out}", server.local_addr());
    shutdown_signal().await;
    tracing::info!("shutting down: closing every session");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn offer(
    signal: &str,
    plan: OfferPlan,
    input: SocketAddr,
    token: Option<String>,
) -> Result<ExitCode, String> {
    relay::check(plan.transport, plan.mode).map_err(|e| e.to_string())?;
    let client = SignalingClient::new(signal)
        .map_err(|e| e.to_string())?
        .with_token(token);
    let socket = std_udp(input).map_err(|e| format!("cannot listen for RTP on --in {input}: {e}"))?;
    let counters = Arc::new(PipeCounters::default());
    let pipe = Pipe::start(socket, Local::LastSender, counters.clone());
    let state = OfferState::default();
    let (transport, mode) = (plan.transport, plan.mode);
    let on_up = |id: &str| println!("ready transport={transport} mode={mode} in={input} session={id}");
    let code = tokio::select! {
        r = relay::offer_and_carry(&client, &plan, &pipe, &state, on_up) => {
            let reason = r.map_err(|e| e.to_string())?;
            eprintln!("relay: link closed: {reason}");
            ExitCode::FAILURE
        }
        _ = shutdown_signal() => {
            if let Some((id, link)) = state.current() {
                // DELETE first, so the answering server ends the session as
                // asked rather than seeing the link's goodbye first.
                match tokio::time::timeout(Duration::from_secs(3), client.delete(&id)).await {
                    Ok(Ok(())) => tracing::info!(session = %id, "session deleted"),
                    Ok(Err(e)) => tracing::warn!(session = %id, error = %e, "could not delete the session"),
                    Err(_) => tracing::warn!(session = %id, "signaling did not answer the DELETE in 3 s"),
                }
                link.close();
                log_end(&*link, &counters, &relay_core::CloseReason::Local);
            }
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}

fn std_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(relay_core::udp::bind_udp(
        addr,
        relay_core::udp::DEFAULT_SOCKET_BUFFER,
    )?)
}

fn log_end(link: &dyn relay_core::RelayLink, counters: &PipeCounters, reason: &relay_core::CloseReason) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = link.stats();
    tracing::info!(
        %reason,
        to_link = counters.to_link.load(Relaxed),
        to_local = counters.to_local.load(Relaxed),
        rejected = counters.rejected.load(Relaxed),
        foreign = counters.foreign.load(Relaxed),
        no_link = counters.no_link.load(Relaxed),
        sent = s.packets_sent,
        received = s.packets_received,
        drops = s.drops.total(),
        "session ended"
    );
}
