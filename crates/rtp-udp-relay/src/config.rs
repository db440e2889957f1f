//! [`RtpUdpConfig`]: everything one side of an rtp-udp link can be told.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relay_core::ClockRates;

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
    /// for [`RelayLink::resend`](crate::RelayLink::resend) (a repair loop's
    /// retransmissions; see the module [`resend`](crate::resend)). Default
    /// zero: nothing is kept, and a resend is a send, which SRTP refuses for
    /// an index already used. The
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
