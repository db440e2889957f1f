//! The `relay` command line: its commands and their flags.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};
use relay::LinkOptions;
use relay::pipe::{PipeOptions, StreamSpec};
use relay::targets::SignalTarget;
use relay_core::{Mode, Transport};
use relay_signaling::{Fingerprint, TlsIdentity};

#[derive(Parser, Debug)]
#[command(
    name = "relay",
    version,
    about = "Relay RTP between media servers over a data channel, QUIC or plain RTP/UDP"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) struct TlsArgs {
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
    pub(crate) fn identity(&self) -> Result<Option<TlsIdentity>, String> {
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
pub(crate) struct LinkArgs {
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

    pub(crate) fn pipe_options(&self) -> Result<PipeOptions, String> {
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
    pub(crate) fn check_fan_out(&self, links: &[relay::targets::PlannedLink]) -> Result<(), String> {
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

    pub(crate) fn options(&self) -> Result<LinkOptions, String> {
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
