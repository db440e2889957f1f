//! The `relay` command: relay RTP between two media servers, or compare the
//! transports on this machine. See `relay --help`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use relay::metrics::OfferedLink;
use relay::pipe::{Branch, Continuity, Pipe, PipeCounters, PipeOptions, Side, StreamSpec};
use relay::reconnect::{LinkEvent, OfferPlan, OfferState};
use relay::targets::{SignalTarget, TargetDefaults};
use relay::{Established, LinkOptions};
use relay_core::{Mode, Transport};
use relay_signaling::metrics::serve_metrics;
use relay_signaling::{Fingerprint, ServerConfig, SignalingClient, SignalingServer, TlsIdentity};
use tracing::Instrument;

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
    /// Serve signaling; relay every session's packets to --out, and with
    /// --forward onwards to further relays (a relay tree).
    Answer {
        /// Address for the signaling server (HTTP, or HTTPS with the TLS flags).
        #[arg(long, default_value = "127.0.0.1:8080")]
        signal_listen: SocketAddr,
        /// Where received RTP goes (the local consumer: SFU, ffmpeg,
        /// GStreamer), as ADDR[,rtcp=PORT|ADDR][,pt=N]...: `rtcp=` sends
        /// RTCP to its own port (an SFU mountpoint's RTCP port; its
        /// feedback is relayed back), `pt=` routes that payload type here.
        /// Repeatable: one --out per stream, at most one without pt=.
        /// Optional with --forward.
        #[arg(long, required_unless_present = "forward", value_name = "STREAM")]
        out: Vec<StreamSpec>,
        /// Relay every answered session onwards to the answering relay
        /// whose signaling is at URL, as `relay offer --signal` does: this
        /// relay becomes a node of a tree. Repeatable (fan-out, each link
        /// with its own queue); each link is established at start and again
        /// whenever it dies. Feedback from below (receivers' RTCP, keyframe
        /// requests, merged to one per stream per 500 ms) goes back up.
        /// URL,transport=T,mode=M,fingerprint=FP,name=NAME as for --signal.
        #[arg(long, value_name = "URL[,KEY=VALUE]...")]
        forward: Vec<SignalTarget>,
        /// Transport of every --forward that does not name its own.
        #[arg(long, requires = "forward")]
        forward_transport: Option<Transport>,
        /// Mode of every --forward that does not name its own (default:
        /// the transport's first).
        #[arg(long, requires = "forward")]
        forward_mode: Option<Mode>,
        /// Bearer token for the --forward relays' signaling.
        #[arg(
            long,
            env = "RELAY_FORWARD_TOKEN",
            hide_env_values = true,
            requires = "forward"
        )]
        forward_token: Option<String>,
        /// Require `Authorization: Bearer TOKEN` on signaling requests and
        /// /metrics. Listening beyond loopback without one, a random token is
        /// generated and printed (`token=` in the status line).
        #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Serve signaling beyond loopback without a token (trusted networks only).
        #[arg(long, conflicts_with = "token")]
        no_token: bool,
        /// Let browser pages from this origin (scheme://host[:port]) signal
        /// to this relay (CORS; repeatable; none by default, `*` for any).
        /// Requests from other origins are refused before anything happens.
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors_origins: Vec<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Also serve GET /metrics (Prometheus) on this address; it is always
        /// on the signaling address too.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Offer a link to a signaling server, or one to each of several
    /// (fan-out); relay what arrives on --in.
    Offer {
        /// Base URL of the answering relay's signaling, e.g.
        /// http://10.0.0.2:8080. Repeatable: the same --in then goes to
        /// every answering relay at once, each over its own link with its
        /// own queue, stats and reconnects (fan-out). A link that differs
        /// from --transport, --mode or --signal-fingerprint says so:
        /// URL,transport=T,mode=M,fingerprint=FP; name=NAME labels it in
        /// status lines and /metrics (default: its position, 1, 2, ...).
        #[arg(long, required = true, value_name = "URL[,KEY=VALUE]...")]
        signal: Vec<SignalTarget>,
        /// Transport: rtp-udp, quic or dc (those compiled in), for every
        /// --signal that does not name its own.
        #[arg(long)]
        transport: Option<Transport>,
        /// Delivery mode (default: the transport's first), for every
        /// --signal that does not name its own.
        #[arg(long)]
        mode: Option<Mode>,
        /// Where the local sender (SFU, ffmpeg, GStreamer) sends RTP, as
        /// ADDR[,rtcp=PORT|ADDR]: with `rtcp=` the relay also listens there
        /// for the sender's RTCP and sends feedback (keyframe requests,
        /// the far receiver's RTCP) back to whoever sent to it. Repeatable:
        /// several streams (audio, video) on one link.
        #[arg(long = "in", required = true, value_name = "STREAM")]
        input: Vec<StreamSpec>,
        /// Bearer token for the signaling server (and this side's /metrics).
        #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// SHA-256 fingerprint of the answering relay's HTTPS certificate, as
        /// `relay answer` prints it (`signal_fingerprint=`), pinned instead
        /// of checking it against the system's root store. With several
        /// --signal, put each pin on its own: URL,fingerprint=FP.
        #[arg(long)]
        signal_fingerprint: Option<Fingerprint>,
        /// Serve GET /metrics (Prometheus) for the link(s) on this address
        /// (a `link` label per link in a fan-out).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// When a link dies (peer restarted, path lost), offer a new one,
        /// backing off from 100 ms to 2 s between attempts, until stopped;
        /// in a fan-out each link on its own. Local packets that arrive
        /// with no link up are counted.
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
struct TlsArgs {
    /// Serve signaling over HTTPS with this PEM certificate chain (with --signal-key).
    #[arg(long, requires = "signal_key", conflicts_with = "signal_self_signed")]
    signal_cert: Option<std::path::PathBuf>,
    /// The PEM private key for --signal-cert.
    #[arg(long, requires = "signal_cert")]
    signal_key: Option<std::path::PathBuf>,
    /// Serve signaling over HTTPS with a generated self-signed certificate;
    /// offerers pin the printed `signal_fingerprint=`. With a PATH the
    /// certificate and key are kept there (created on first start, mode
    /// 0600), so a restart keeps the fingerprint offerers pinned.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    signal_self_signed: Option<Option<std::path::PathBuf>>,
}

impl TlsArgs {
    fn identity(&self) -> Result<Option<TlsIdentity>, String> {
        match (&self.signal_cert, &self.signal_key, &self.signal_self_signed) {
            (Some(cert), Some(key), _) => TlsIdentity::from_pem_files(cert, key).map(Some),
            (_, _, Some(Some(path))) => TlsIdentity::self_signed_kept(path).map(Some),
            (_, _, Some(None)) => TlsIdentity::self_signed().map(Some),
            _ => Ok(None),
        }
        .map_err(|e| e.to_string())
    }
}

#[derive(clap::Args, Debug)]
struct LinkArgs {
    /// Local IP for media sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Address to advertise to the peer, IP or IP:PORT: the IP when --bind
    /// is 0.0.0.0 or ::; the port where a port-forwarding NAT or proxy
    /// (relay netsim) sits in front of the media ports. With --media-ports
    /// LO-HI forwarded to PORT.., a session on LO+n is advertised as PORT+n.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_advertise)]
    advertise: Option<(IpAddr, Option<u16>)>,
    /// Bind every media socket in this UDP port range, LO-HI (the range
    /// your firewall opens). When every port is taken, a new session fails
    /// with a clear error (503 on the answering side).
    #[arg(long, value_name = "LO-HI")]
    media_ports: Option<relay_core::udp::PortRange>,
    /// Seconds of silence after which the peer is considered dead.
    #[arg(long, default_value_t = 5.0)]
    liveness_timeout: f64,
    /// Latency budget of the unreliable modes, with its unit (200ms,
    /// 0.2s): a packet that cannot leave within it is dropped and counted
    /// (drops.expired), never delivered late. Reliable modes ignore it.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = relay::duration::parse_budget)]
    max_delay: Duration,
    /// Plain rtp-udp: take the peer's address from the first packet heard
    /// (it is behind a NAT) instead of accepting the signaled address only.
    /// srtp latches to authenticated packets without it; see docs/security.md.
    #[arg(long)]
    latch: bool,
    /// Repair modes: deliver each SSRC in sequence order, holding packets
    /// behind a loss for at most DURATION (e.g. 60ms, below --max-delay)
    /// while the repair comes. Without it packets are delivered as they
    /// arrive and the receiving media server's jitter buffer orders them.
    #[arg(long, value_name = "DURATION", value_parser = relay::duration::parse_budget)]
    reorder_window: Option<Duration>,
    /// RTP clock rate of a payload type, PT=HZ (repeatable), e.g.
    /// 111=48000 for Opus: jitter is computed at this rate, and only
    /// 90 kHz streams (or unknown dynamic ones) get keyframe requests.
    /// Dynamic payload types without one report jitter as unknown.
    #[arg(long = "clock-rate", value_name = "PT=HZ")]
    clock_rates: Vec<relay_core::ClockRate>,
    /// Read payload types' clock rates from an SDP file's a=rtpmap lines,
    /// as ffmpeg's -sdp_file and GStreamer write them (repeatable;
    /// --clock-rate wins for a payload type both name).
    #[arg(long, value_name = "FILE")]
    sdp: Vec<std::path::PathBuf>,
}

impl LinkArgs {
    /// --sdp files' rates, then --clock-rate's (a later entry wins).
    fn clock_rates(&self) -> Result<relay_core::ClockRates, String> {
        let mut rates = relay_core::ClockRates::new();
        for path in &self.sdp {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --sdp {}: {e}", path.display()))?;
            rates.extend(
                relay::sdp::clock_rates(&text).map_err(|e| format!("--sdp {}: {e}", path.display()))?,
            );
        }
        rates.extend(self.clock_rates.iter().copied());
        Ok(rates)
    }

    fn pipe_options(&self) -> Result<PipeOptions, String> {
        Ok(PipeOptions {
            clock_rates: self.clock_rates()?,
        })
    }

    /// --reorder-window, which only makes sense below the budget.
    fn reorder_window(&self) -> Result<Duration, String> {
        match self.reorder_window {
            Some(window) if window >= self.max_delay => Err(format!(
                "--reorder-window {} ms must be below --max-delay {} ms: a packet held that long is past its budget",
                window.as_millis(),
                self.max_delay.as_millis()
            )),
            window => Ok(window.unwrap_or(Duration::ZERO)),
        }
    }

    /// Refuses what one advertised port cannot do for several links: every
    /// rtp-udp and dc offer carries its own media address, and without a
    /// port range all of them would be advertised as the same port.
    fn check_fan_out(&self, links: &[relay::targets::PlannedLink]) -> Result<(), String> {
        let advertising = links.iter().filter(|l| l.transport != Transport::Quic).count();
        match self.advertise {
            Some((ip, Some(port))) if advertising > 1 && self.media_ports.is_none() => Err(format!(
                "--advertise {}: {advertising} links offer a media address of their own (rtp-udp and dc do), \
                 and without --media-ports all would be advertised as port {port}: add --media-ports LO-HI, \
                 forwarded to {port}.. so the link bound on LO+n is advertised as {port}+n",
                SocketAddr::new(ip, port)
            )),
            _ => Ok(()),
        }
    }

    fn options(&self) -> Result<LinkOptions, String> {
        if !(self.liveness_timeout.is_finite() && self.liveness_timeout > 0.0) {
            return Err(format!(
                "--liveness-timeout must be a positive number of seconds, not {}",
                self.liveness_timeout
            ));
        }
        Ok(LinkOptions {
            bind_ip: self.bind,
            advertise_ip: self.advertise.map(|(ip, _)| ip),
            advertise_port: self.advertise.and_then(|(_, port)| port),
            media_ports: self.media_ports,
            liveness_timeout: Duration::from_secs_f64(self.liveness_timeout),
            clock_rates: self.clock_rates()?,
            max_delay: self.max_delay,
            latch: self.latch,
            reorder_window: self.reorder_window()?,
        })
    }
}

/// Prints a status line on stdout for whoever started the relay. A reader
/// that went away (a script that read the first line and closed the pipe)
/// is no reason to stop relaying: write errors are ignored, where
/// `println!` would panic.
fn status_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// `--advertise`: an IP, or an IP and a port (`[::1]:7000` for IPv6).
fn parse_advertise(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match text.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok((addr.ip(), Some(addr.port()))),
        _ => Err(format!(
            "{text:?} is not an IP or IP:PORT (203.0.113.7, 203.0.113.7:40000, [2001:db8::7]:40000)"
        )),
    }
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
            let planned =
                relay::targets::plan(&forward, &defaults).map_err(|e| forward_wording(&e.to_string()))?;
            link.check_fan_out(&planned)?;
            let forward = link_offers(planned, forward_token, &options, true)?;
            let token = answer_token(signal_listen, token, no_token);
            let config = AnswerConfig {
                listen: signal_listen,
                out,
                forward,
                token,
                tls: tls.identity()?,
                metrics_listen,
                pipe: link.pipe_options()?,
                cors_origins,
            };
            answer(config, options).await
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
            let links = link_offers(planned, token.clone(), &options, reconnect)?;
            offer(links, &input, pipe_options, metrics_listen.map(|a| (a, token))).await
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

/// The links to offer for `planned` targets, each with its signaling
/// client (bearer `token`, the link's pin) and, with `reconnect`, the
/// default reconnect policy.
fn link_offers(
    planned: Vec<relay::targets::PlannedLink>,
    token: Option<String>,
    options: &LinkOptions,
    reconnect: bool,
) -> Result<Vec<LinkOffer>, String> {
    let mut links = Vec::with_capacity(planned.len());
    for p in planned {
        let client = SignalingClient::new(&p.url)
            .map_err(|e| e.to_string())?
            .with_token(token.clone());
        let client = match p.fingerprint {
            Some(fp) => client.with_fingerprint(fp),
            None => client,
        };
        let plan = relay::reconnect::OfferPlan {
            transport: p.transport,
            mode: p.mode,
            options: options.clone(),
            reconnect: reconnect.then(relay::reconnect::ReconnectPolicy::default),
        };
        links.push(LinkOffer {
            name: p.name,
            url: p.url,
            client,
            plan,
        });
    }
    Ok(links)
}

/// A mistake in the `--forward` targets, in `relay answer`'s words: the
/// planner speaks of `relay offer`'s `--signal`, `--transport` and `--mode`.
fn forward_wording(message: &str) -> String {
    message
        .replace("--signal ", "--forward ")
        .replace("--transport", "--forward-transport")
        .replace("--mode", "--forward-mode")
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

/// The token `relay answer` requires: the one given; none on loopback or
/// with --no-token; otherwise a generated one, so that signaling reachable
/// from a network is never open by default.
fn answer_token(listen: SocketAddr, token: Option<String>, no_token: bool) -> Option<String> {
    if token.is_some() {
        return token;
    }
    if no_token {
        if !listen.ip().is_loopback() {
            tracing::warn!(%listen, "--no-token: signaling is open to anyone who can reach it");
        }
        return None;
    }
    if listen.ip().is_loopback() {
        return None;
    }
    let bytes: [u8; 16] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    tracing::info!(%listen, "listening beyond loopback: generated a bearer token (printed as token=); pass --token to choose one");
    Some(token)
}

/// What `relay answer` serves.
struct AnswerConfig {
    listen: SocketAddr,
    out: Vec<StreamSpec>,
    /// The relays this one passes every session on to (a node).
    forward: Vec<LinkOffer>,
    token: Option<String>,
    tls: Option<TlsIdentity>,
    metrics_listen: Option<SocketAddr>,
    pipe: PipeOptions,
    cors_origins: Vec<String>,
}

async fn answer(config: AnswerConfig, options: LinkOptions) -> Result<ExitCode, String> {
    let AnswerConfig {
        listen,
        out,
        forward,
        token,
        tls,
        metrics_listen,
        pipe: pipe_options,
        cors_origins,
    } = config;
    let continuity = Arc::new(Continuity::default());
    // Every session's pipe counts into these, for /metrics.
    let totals = Arc::new(PipeCounters::default());
    let sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A node passes every session on through one forwarding pipe, whose
    // links are established below once signaling is up.
    let forwarding = (!forward.is_empty()).then(|| {
        Arc::new(Pipe::forwarding(
            pipe_options.clone(),
            Arc::new(PipeCounters::default()),
        ))
    });
    let sink = {
        let (continuity, totals, out) = (continuity.clone(), totals.clone(), out.clone());
        let forwarding = forwarding.clone();
        Arc::new(move |e: Established| {
            let (continuity, totals, out, pipe_options) = (
                continuity.clone(),
                totals.clone(),
                out.clone(),
                pipe_options.clone(),
            );
            let session = sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let feed = forwarding.as_ref().map(|f| f.feed(session, e.link.clone()));
            let note = forwarding_note(feed.is_some());
            tokio::spawn(async move {
                let counters = Arc::new(PipeCounters::with_total(totals));
                let pipe = match Pipe::bind(Side::Answer, &out, pipe_options, counters.clone()) {
                    Ok(p) => p.with_continuity(continuity, session),
                    Err(error) => {
                        tracing::error!(%error, "cannot open sockets towards --out; closing the session");
                        e.link.close();
                        return;
                    }
                };
                let pipe = match feed {
                    Some(feed) => pipe.with_forward(feed),
                    None => pipe,
                };
                let outs = out.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
                tracing::info!(transport = %e.transport, mode = %e.link.mode(), out = %outs, "link up; relaying to --out{note}");
                let link = e.link.clone();
                let reason = pipe.carry(e.link).await;
                log_end(&*link, &counters, &reason);
            });
        })
    };
    let forward_states: Vec<Arc<OfferState>> = forward.iter().map(|_| Arc::default()).collect();
    let branches = match &forwarding {
        Some(f) if forward.len() > 1 => f.fan_out(forward.len()),
        _ => Vec::new(),
    };
    let mut extra_metrics = relay::metrics::answer_source(continuity, totals);
    if let Some(f) = &forwarding {
        // The forward links' metrics join the answering side's.
        let shown = forward
            .iter()
            .zip(&forward_states)
            .enumerate()
            .map(|(i, (l, state))| {
                let branch = branches.get(i).cloned();
                let counters = branch
                    .as_ref()
                    .map_or_else(|| f.counters().clone(), |b| b.counters().clone());
                OfferedLink::forward(l.name.clone(), state.clone(), counters, branch)
            })
            .collect();
        let (answering, forwarding) = (extra_metrics, relay::metrics::forward_source(shown));
        extra_metrics = Arc::new(move || answering() + &forwarding());
    }
    let mut server_config = ServerConfig::default()
        .token(token.clone())
        .extra_metrics(extra_metrics);
    if let Some(identity) = tls.clone() {
        server_config = server_config.tls(identity);
    }
    for origin in cors_origins {
        server_config = server_config.cors_origin(origin);
    }
    let server = SignalingServer::bind(listen, server_config, relay::answerers(&options, sink))
        .await
        .map_err(|e| e.to_string())?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            // The signaling server's identity: one fingerprint to pin.
            serve_metrics(addr, token.clone(), server.metrics_source(), tls)
                .await
                .map_err(|e| format!("cannot serve /metrics on --metrics-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let mut status = format!("listening signal={}", server.url());
    for o in &out {
        status.push_str(&format!(" out={o}"));
    }
    for l in &forward {
        status.push_str(&format!(" forward={}", l.url));
    }
    if let Some(fp) = server.tls_fingerprint() {
        status.push_str(&format!(" signal_fingerprint={}", fp.hex()));
    }
    if let Some(m) = &metrics {
        status.push_str(&format!(" metrics={}", m.url()));
    }
    if let Some(t) = &token {
        status.push_str(&format!(" token={t}"));
    }
    status_line(&status);
    let forward_links = forwarding.map(|f| {
        let note = Notes {
            input: None,
            metrics: String::new(),
        };
        if branches.is_empty() {
            LinkTasks::spawn(forward, vec![f], forward_states, note)
        } else {
            LinkTasks::spawn(forward, branches, forward_states, note)
        }
    });
    shutdown_signal().await;
    tracing::info!("shutting down: closing every session");
    if let Some(links) = forward_links {
        links.stop().await;
    }
    server.shutdown().await;
    if let Some(m) = metrics {
        m.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// How a session's "link up" log line mentions forwarding.
fn forwarding_note(forwarding: bool) -> &'static str {
    if forwarding {
        " and passing it on (--forward)"
    } else {
        ""
    }
}

/// One answering relay `relay offer` keeps a link to.
struct LinkOffer {
    /// The link's label (`link=`), used in a fan-out.
    name: String,
    url: String,
    client: SignalingClient,
    plan: OfferPlan,
}

async fn offer(
    links: Vec<LinkOffer>,
    input: &[StreamSpec],
    pipe_options: PipeOptions,
    metrics_listen: Option<(SocketAddr, Option<String>)>,
) -> Result<ExitCode, String> {
    let counters = Arc::new(PipeCounters::default());
    let pipe = Pipe::bind(Side::Offer, input, pipe_options, counters.clone())
        .map_err(|e| format!("cannot listen on --in: {e}"))?;
    let ins: Vec<String> = pipe
        .local_addrs()
        .iter()
        .map(|(rtp, rtcp)| match rtcp {
            Some(rtcp) => format!("{rtp},rtcp={rtcp}"),
            None => rtp.to_string(),
        })
        .collect();
    let input = ins.join(" in=");
    let states: Vec<Arc<OfferState>> = links.iter().map(|_| Arc::default()).collect();
    // One link is sent onto directly, as it always was; several each get
    // a branch of the pipe with its own queue.
    let branches = if links.len() > 1 {
        pipe.fan_out(links.len())
    } else {
        Vec::new()
    };
    let metrics = match metrics_listen {
        Some((addr, token)) => {
            let shown = if branches.is_empty() {
                vec![OfferedLink::single(states[0].clone(), counters.clone())]
            } else {
                links
                    .iter()
                    .zip(&states)
                    .zip(&branches)
                    .map(|((l, state), branch)| {
                        OfferedLink::branch(l.name.clone(), state.clone(), branch.clone())
                    })
                    .collect()
            };
            let source = relay::metrics::offer_source(shown, counters.clone());
            Some(
                serve_metrics(addr, token, source, None)
                    .await
                    .map_err(|e| format!("cannot serve /metrics on --metrics-listen {addr}: {e}"))?,
            )
        }
        None => None,
    };
    let metrics_note = metrics
        .as_ref()
        .map(|m| format!(" metrics={}", m.url()))
        .unwrap_or_default();
    let note = Notes {
        input: Some(input),
        metrics: metrics_note,
    };
    let code = if branches.is_empty() {
        let link = links.into_iter().next().ok_or("no --signal given")?;
        offer_one(link, &pipe, &states[0], &note).await?
    } else {
        fan_out(links, branches, states, note).await
    };
    if let Some(m) = metrics {
        m.shutdown().await;
    }
    Ok(code)
}

/// What every `ready` status line of `relay offer` repeats.
#[derive(Clone)]
struct Notes {
    /// The --in addresses, bound (` in=` between streams); none for a
    /// node's --forward links.
    input: Option<String>,
    /// ` metrics=URL`, or nothing.
    metrics: String,
}

/// `relay offer` to one answering relay: the pipe sends onto the link
/// directly, and the command ends when the link does (unless it reconnects).
async fn offer_one(
    link: LinkOffer,
    pipe: &Pipe,
    state: &OfferState,
    note: &Notes,
) -> Result<ExitCode, String> {
    let LinkOffer { client, plan, .. } = link;
    let (transport, mode) = (plan.transport, plan.mode);
    let on_event = |event: LinkEvent<'_>| {
        if let LinkEvent::Up { session } = event {
            status_line(&format!(
                "ready transport={transport} mode={mode} in={} session={session}{}",
                note.input.as_deref().unwrap_or_default(),
                note.metrics
            ));
        }
    };
    tokio::select! {
        r = relay::offer_and_carry(&client, &plan, pipe, state, on_event) => {
            let reason = r.map_err(|e| e.to_string())?;
            eprintln!("relay: link closed: {reason}");
            Ok(ExitCode::FAILURE)
        }
        _ = shutdown_signal() => {
            if let Some((id, link)) = state.current() {
                end_session(&client, &id, link, pipe.counters()).await;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `relay offer` to several answering relays: each link runs on its own
/// task, with its own branch of the pipe (see [`LinkTasks`]). A link that
/// ends for good leaves the others running; the command ends when every
/// link has, or on Ctrl-C.
async fn fan_out(
    links: Vec<LinkOffer>,
    branches: Vec<Branch>,
    states: Vec<Arc<OfferState>>,
    note: Notes,
) -> ExitCode {
    let mut tasks = LinkTasks::spawn(links, branches, states, note);
    let code = tokio::select! {
        _ = tasks.all_ended() => {
            eprintln!("relay: every link has closed");
            ExitCode::FAILURE
        }
        _ = shutdown_signal() => ExitCode::SUCCESS,
    };
    tasks.stop().await;
    code
}

/// Links that run on their own tasks, each through its own outlet, with
/// its own reconnects and status lines (`ready link=NAME …`, `down
/// link=NAME …`, `failed link=NAME …`): a fanned-out `relay offer`'s
/// links, or a node's `--forward` links.
struct LinkTasks {
    tasks: tokio::task::JoinSet<()>,
    /// What ending each link's session takes.
    ends: Vec<(SignalingClient, Arc<OfferState>, Arc<PipeCounters>, tracing::Span)>,
}

impl LinkTasks {
    fn spawn<O: relay::pipe::Outlet + 'static>(
        links: Vec<LinkOffer>,
        outlets: Vec<O>,
        states: Vec<Arc<OfferState>>,
        note: Notes,
    ) -> LinkTasks {
        let mut tasks = tokio::task::JoinSet::new();
        let mut ends = Vec::with_capacity(links.len());
        for ((link, outlet), state) in links.into_iter().zip(outlets).zip(states) {
            // Every log line of a link's task names the link.
            let span = tracing::info_span!("link", name = %link.name);
            ends.push((
                link.client.clone(),
                state.clone(),
                outlet.counters().clone(),
                span.clone(),
            ));
            let note = note.clone();
            let task = async move {
                let LinkOffer {
                    name,
                    url,
                    client,
                    plan,
                } = link;
                let (transport, mode) = (plan.transport, plan.mode);
                let input = note
                    .input
                    .as_deref()
                    .map(|i| format!(" in={i}"))
                    .unwrap_or_default();
                let on_event = |event: LinkEvent<'_>| match event {
                    LinkEvent::Up { session } => status_line(&format!(
                        "ready link={name} signal={url} transport={transport} mode={mode}{input} session={session}{}",
                        note.metrics
                    )),
                    LinkEvent::Down { session, reason } => status_line(&format!(
                        "down link={name} signal={url} session={session} reason={reason}"
                    )),
                };
                if let Err(error) = relay::offer_and_carry(&client, &plan, &outlet, &state, on_event).await {
                    status_line(&format!("failed link={name} signal={url} error={error}"));
                    eprintln!("relay: link {name} to {url}: {error}");
                }
            };
            tasks.spawn(task.instrument(span));
        }
        LinkTasks { tasks, ends }
    }

    /// Resolves when every link has ended for good.
    async fn all_ended(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops every link's loop first (no reconnect from here on), then
    /// ends the sessions still up, all at once.
    async fn stop(mut self) {
        self.tasks.shutdown().await;
        let mut deletes = tokio::task::JoinSet::new();
        for (client, state, counters, span) in self.ends {
            if let Some((id, link)) = state.current() {
                deletes
                    .spawn(async move { end_session(&client, &id, link, &counters).await }.instrument(span));
            }
        }
        deletes.join_all().await;
    }
}

/// Ends session `id` on Ctrl-C: DELETE first, so the answering server ends
/// the session as asked rather than seeing the link's goodbye first; then
/// the link.
async fn end_session(
    client: &SignalingClient,
    id: &str,
    link: Arc<dyn relay_core::RelayLink>,
    counters: &PipeCounters,
) {
    match relay::delete_session(client, id, Duration::from_secs(3)).await {
        Ok(()) => tracing::info!(session = %id, "session deleted"),
        Err(error) => tracing::warn!(session = %id, %error, "could not delete the session"),
    }
    link.close();
    log_end(&*link, counters, &relay_core::CloseReason::Local);
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
        not_rtcp = counters.not_rtcp.load(Relaxed),
        keepalives = counters.keepalives.load(Relaxed),
        unrouted = counters.unrouted.load(Relaxed),
        keyframe_requests = counters.keyframe_requests.load(Relaxed),
        keyframe_requests_relayed = counters.keyframe_requests_relayed.load(Relaxed),
        keyframe_requests_merged = counters.keyframe_requests_merged.load(Relaxed),
        no_link = counters.no_link.load(Relaxed),
        queue_overflow = counters.queue_overflow.load(Relaxed),
        sent = s.packets_sent,
        received = s.packets_received,
        drops = s.drops.total(),
        "session ended"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_generated_only_beyond_loopback_unless_refused() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let net: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(answer_token(lo, None, false), None);
        assert_eq!(answer_token(lo6, None, false), None);
        for addr in [net, any] {
            let generated = answer_token(addr, None, false).expect("a generated token");
            assert_eq!(generated.len(), 32);
            assert_ne!(
                Some(generated),
                answer_token(addr, None, false),
                "tokens are random"
            );
            assert_eq!(answer_token(addr, None, true), None, "--no-token opts out");
        }
        assert_eq!(answer_token(net, Some("t".into()), false).as_deref(), Some("t"));
    }
}
