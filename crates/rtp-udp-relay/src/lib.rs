//! # rtp-udp-relay: RTP/RTCP or SRTP/SRTCP over UDP
//!
//! The way Kurento's RtpEndpoint, mediasoup's PipeTransport and Janus's
//! `rtp_forward` relay media: RTP and RTCP on one UDP socket per side
//! (RTCP-mux, RFC 5761), no handshake, no retransmission. Two modes:
//!
//! - [`Mode::Unreliable`]: plain RTP, no
//!   encryption, no authentication. It is the cheapest transport and the
//!   baseline the others are measured against. **Use it only on networks you
//!   trust**: anyone who can send from the signaled address can inject
//!   packets, and anyone on the path can read them.
//! - [`Mode::Srtp`]: SRTP and SRTCP with
//!   AEAD_AES_128_GCM (RFC 7714, module [`srtp`]), as mediasoup's
//!   PipeTransport offers. Each side generates a master key, signals it in
//!   its description ([`relay_core::SrtpParameters`]) and protects what it
//!   sends with it; the peer's key unprotects what arrives. Media and RTCP
//!   get confidentiality, integrity and replay protection (128-packet window
//!   per SSRC); packets that fail are counted in `LinkStats::unauthenticated`
//!   and dropped. The keys travel in signaling, so signaling must be HTTPS
//!   or on a trusted network. The keepalives and the goodbye below are
//!   authenticated too, with keys derived from the same master keys, so a
//!   spoofer without the keys can neither keep a dead link alive nor close
//!   a live one (an on-path attacker can still drop packets and so starve
//!   the keepalives: the link then closes after the liveness timeout).
//!
//! What this crate adds to bare sockets:
//!
//! - **Source filtering**: each side accepts packets only from the peer's
//!   address; everything else is counted as `drops.unknown_source`. Bytes
//!   that are not RTP/RTCP are counted as `drops.malformed`. The peer's
//!   address is the signaled one until a latch moves it: srtp follows the
//!   peer to wherever a packet that authenticates and is not a replay
//!   comes from (a NAT's mapping, and its rebinding); plain RTP only with
//!   [`RtpUdpConfig::latch`], once, to the first source heard.
//! - **A path check and keepalive that cannot be mistaken for media**:
//!   STUN Binding requests and responses ([`stun`]), as ICE uses for
//!   connectivity checks and RFC 7675 for consent. The link is ready when a
//!   probe's reply comes back (packets flow both ways); probes continue
//!   every keepalive interval and give the RTT; a peer silent for the
//!   liveness timeout (default 5 s) closes the link. In plain mode anything
//!   from the peer's address counts as hearing from it. In srtp mode every
//!   probe and reply carries MESSAGE-INTEGRITY-SHA256 (RFC 8489 section
//!   14.6) under a key derived from the sender's SRTP master key
//!   ([`srtp::keepalive_key`]); probes and replies without a valid one are
//!   counted in `drops.unauthenticated`, never answered, and ignored for
//!   liveness. Only media that passes SRTP authentication and an
//!   authenticated reply to a probe still outstanding (the reply echoes
//!   the probe's transaction id; each counts once) keep an srtp link alive.
//! - **A goodbye** (a STUN Binding Indication with a private attribute) so
//!   the peer learns of a clean close at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rtp_udp_relay::{Mode, Packet, RelayLink, RtpUdpAnswerer, RtpUdpConfig, RtpUdpOfferer, build_rtp};
//!
//! let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), Mode::Srtp).await?;
//! let offer = offerer.offer(); // send to the other server (relay-signaling does this)
//! let answerer = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Srtp, &offer).await?;
//! let answer = answerer.answer(); // ... and back
//! let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;
//! a.send(Packet::parse(build_rtp(96, 1, 0, 0x1234, b"media"))?).await?;
//! assert_eq!(b.recv().await?.ssrc(), 0x1234);
//! # Ok(()) }
//! ```
//!
//! `examples/pair.rs` runs the same in one process: `cargo run -p
//! rtp-udp-relay --example pair`.
#![warn(missing_docs)]

mod backend;
pub mod batch;
mod link;
pub mod liveness;
pub mod resend;
pub mod srtp;
pub mod stun;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relay_core::{ClockRates, CloseReason};

pub use backend::RtpUdp;
pub use link::{RtpUdpAnswerer, RtpUdpLink, RtpUdpOfferer};
/// The relay-core types a user of this crate needs beside it.
pub use relay_core::{LinkStats, Mode, Packet, RelayLink, build_rtp};

/// Largest RTP packet accepted by default: a 1,500-byte Ethernet MTU less
/// the IPv4 and UDP headers, so nothing is ever IP-fragmented.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1472;

/// Settings for one side of an rtp-udp link.
///
/// ```
/// use std::time::Duration;
/// let config = rtp_udp_relay::RtpUdpConfig::default()
///     .bind("127.0.0.1:0".parse().unwrap())
///     .liveness_timeout(Duration::from_secs(2));
/// assert_eq!(config.keepalive_interval_or_default(), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone)]
pub struct RtpUdpConfig {
    pub(crate) bind: SocketAddr,
    pub(crate) advertise_ip: Option<IpAddr>,
    pub(crate) liveness_timeout: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) socket_buffer: usize,
    pub(crate) receive_queue: usize,
    pub(crate) max_packet_size: usize,
    pub(crate) ssrcs: Vec<u32>,
    pub(crate) clock_rates: ClockRates,
    pub(crate) latch: bool,
    pub(crate) resend_window: Duration,
    pub(crate) media_ports: Option<relay_core::udp::PortRange>,
}

impl Default for RtpUdpConfig {
    fn default() -> Self {
        RtpUdpConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_ip: None,
            liveness_timeout: relay_core::DEFAULT_LIVENESS_TIMEOUT,
            keepalive_interval: None,
            socket_buffer: relay_core::udp::DEFAULT_SOCKET_BUFFER,
            // About 0.25 s of 16 Mbit/s video: enough to ride out a scheduling
            // hiccup in the consumer, small enough to stay fresh.
            receive_queue: 4096,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            ssrcs: Vec::new(),
            clock_rates: ClockRates::new(),
            latch: false,
            resend_window: Duration::ZERO,
            media_ports: None,
        }
    }
}

impl RtpUdpConfig {
    /// Local address to bind (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Ports to bind in when the bind address asks for any port (port 0),
    /// as firewalls open a range: the first free one, from a random start;
    /// none free is a bind error (default: any port the kernel picks).
    pub fn media_ports(mut self, ports: Option<relay_core::udp::PortRange>) -> Self {
        self.media_ports = ports;
        self
    }

    /// IP to put in the offer/answer instead of the bound one (needed when
    /// binding `0.0.0.0`); the port is always the bound port.
    pub fn advertise_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.advertise_ip = ip;
        self
    }

    /// Silence after which the peer is declared dead (default 5 s).
    pub fn liveness_timeout(mut self, d: Duration) -> Self {
        self.liveness_timeout = d;
        self
    }

    /// RTP clock rates of the dynamic payload types the link carries, as
    /// the SDP the relay does not see gives them (`a=rtpmap:111
    /// opus/48000/2` is `111=48000`), for RFC 3550 jitter in the link's
    /// stats. Static payload types (RFC 3551) are known without; a stream
    /// whose rate is unknown reports loss but no jitter. None by default.
    pub fn clock_rates(mut self, rates: ClockRates) -> Self {
        self.clock_rates = rates;
        self
    }

    /// Probe interval once up (default: liveness timeout / 5).
    pub fn keepalive_interval(mut self, d: Duration) -> Self {
        self.keepalive_interval = Some(d);
        self
    }

    /// The effective keepalive interval.
    pub fn keepalive_interval_or_default(&self) -> Duration {
        self.keepalive_interval.unwrap_or(self.liveness_timeout / 5)
    }

    /// `SO_RCVBUF`/`SO_SNDBUF` in bytes (default 4 MiB).
    pub fn socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = bytes;
        self
    }

    /// Received packets held for the application before the oldest is
    /// dropped (default 4096).
    pub fn receive_queue(mut self, packets: usize) -> Self {
        self.receive_queue = packets;
        self
    }

    /// Largest datagram sent or accepted (default 1472, at most 65,507). In
    /// srtp mode the application's packets are 20 bytes smaller (the SRTP
    /// tag and SRTCP index), but never limited below 1,400 bytes.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes.clamp(relay_core::MIN_MAX_PACKET_SIZE, 65_507);
        self
    }

    /// Plain mode: take the source of the first packet heard as the
    /// peer's address even if it is not the signaled one (the peer is
    /// behind a NAT), then filter strictly on it; default off, so plain
    /// RTP accepts the signaled address only. srtp mode always latches,
    /// and re-latches whenever a packet that authenticates and passes the
    /// replay check arrives from a new address (a NAT rebinding); see
    /// docs/security.md for why plain mode does not.
    pub fn latch(mut self, latch: bool) -> Self {
        self.latch = latch;
        self
    }

    /// srtp mode: how long the SRTP bytes of each sent RTP packet are kept
    /// for [`RelayLink::resend`] (a repair loop's retransmissions; see
    /// the module [`resend`]). Default zero: nothing is kept, and a
    /// resend is a send, which SRTP refuses for an index already used. The
    /// facade sets it to the latency budget in `srtp-repair` mode.
    pub fn resend_window(mut self, window: Duration) -> Self {
        self.resend_window = window;
        self
    }

    /// SSRCs announced in the description (informational).
    pub fn ssrcs(mut self, ssrcs: Vec<u32>) -> Self {
        self.ssrcs = ssrcs;
        self
    }
}

/// What can go wrong establishing an rtp-udp link.
#[derive(Debug, thiserror::Error)]
pub enum RtpUdpError {
    /// The local socket could not be created.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The signaled address cannot be sent to.
    #[error("signaled address {addr} is unusable: {why}")]
    BadAddress {
        /// What was signaled.
        addr: SocketAddr,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// No probe reply within the liveness timeout.
    #[error("no reply from peer {peer} within {} ms: is it running, and is UDP to it allowed?", waited.as_millis())]
    NoPeer {
        /// Where the probes went.
        peer: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// The link closed while being established.
    #[error("link closed before it was ready: {0}")]
    Closed(CloseReason),
    /// A mode other than `unreliable` (plain RTP) or `srtp`.
    #[error("rtp-udp does not offer mode {0}; it offers unreliable and srtp")]
    UnsupportedMode(relay_core::Mode),
    /// The SRTP parameters in the peer's description are missing, or do not
    /// match the mode, or name an unsupported suite or a bad key.
    #[error("bad SRTP parameters: {0}")]
    BadSrtp(String),
}
