//! [`QuicConfig`], and what it turns into: the UDP socket, the quinn
//! endpoint and the QUIC transport parameters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_core::{ClockRates, DEFAULT_LIVENESS_TIMEOUT, DEFAULT_MAX_DELAY, Mode};

use crate::QuicError;
use crate::congestion::FloorFactory;
use crate::roq::VARINT_MAX;
use crate::socket::GuardedSocket;

/// Path MTU assumed from the first packet (CRATES.md): with quinn's
/// default of 1,200 the largest DATAGRAM is about 1,162 bytes until path
/// MTU discovery raises it, so 1,200-byte RTP would fail on a fresh link.
/// 1,452 = 1,500-byte Ethernet minus IPv6 (40) and UDP (8) headers; it
/// leaves 1,413 bytes for RTP in a DATAGRAM (short header, 8-byte CID, AEAD
/// tag, frame header, 1-byte flow id).
pub(crate) const INITIAL_MTU: u16 = 1452;

/// Largest packet a stream-mode link sends. Streams have no MTU, but no RTP
/// packet that crossed a UDP network is larger than a jumbo frame, and the
/// conformance suite expects a bound well below 64 KiB.
pub const MAX_STREAM_PACKET: usize = 16 * 1024;

/// Largest packet accepted from a stream: the largest UDP payload, so a
/// third-party sender's RTP always fits; anything longer is a framing error.
pub(crate) const MAX_STREAM_PACKET_RECEIVED: usize = 65_507;

/// quinn's datagram send buffer (its `datagram_send_buffer_size`, default
/// 1 MiB, about 3 s of 2.5 Mbit/s video). Datagram mode keeps its own
/// timestamped queue ahead of quinn (`budget.rs`), so quinn only needs room
/// for what can leave at once: one keyframe, ~40 × 1,200 bytes plus quinn's
/// 32 bytes of bookkeeping each, fits in 64 KiB. The smaller this is, the
/// less can age where the budget can only be enforced by displacement.
pub(crate) const QUINN_DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

/// Longest latency budget accepted: beyond an hour a "budget" is a typo
/// (seconds given as milliseconds), not a media latency.
const MAX_MAX_DELAY: Duration = Duration::from_secs(3600);

/// Default floor of the congestion window, in bytes. At the 40 ms RTT of
/// the WAN scenarios quinn's pacer then releases 26 KB per 2 ms burst and
/// refills at 1.25 × 512 KiB / 40 ms ≈ 16 MB/s, so a 48 KB keyframe is on
/// the wire within about 2 ms. Picked by the report (`--quick`, 3 seeds):
/// on wan-delay40 a 256 KiB floor left keyframes 3 to 6 ms behind raw UDP
/// (p99 26.3 to 28.7 ms, above the 27 ms target), 512 KiB 24.6 to 26.7 ms.
/// It is also 1.6 s of 2.5 Mbit/s video, so a sender does not run out of
/// window during a 1 s black hole and resumes as the path returns instead
/// of waiting for a backed-off probe timeout (RFC 9002 section 6.2.1).
pub const DEFAULT_MIN_WINDOW: u64 = 512 * 1024;

/// Largest window floor accepted (64 MiB): above it quinn's pacer is off
/// and the floor is no longer a floor but no congestion control at all.
const MAX_MIN_WINDOW: u64 = 64 * 1024 * 1024;

/// The ACK delay this side asks the peer to use (ACK_FREQUENCY frame,
/// draft-ietf-quic-ack-frequency, as quinn 0.11 implements it; quinn
/// advertises min_ack_delay = 1 ms, so two quinn peers always negotiate
/// it). quinn's default is the peer's 25 ms transport parameter, which also
/// enters every probe timeout (RFC 9002 section 6.2.1: PTO = smoothed RTT +
/// 4 × RTT variance + max_ack_delay). 5 ms keeps a lone packet's ACK, and the
/// PTO, a few milliseconds above the RTT; at media rates (a few hundred
/// packets per second) the ACK traffic hardly changes.
const REQUESTED_MAX_ACK_DELAY: Duration = Duration::from_millis(5);

/// How one side of a QUIC relay link is set up.
///
/// ```
/// use std::time::Duration;
/// use quic_relay::QuicConfig;
/// let config = QuicConfig::default()
///     .bind("127.0.0.1:0".parse().unwrap())
///     .liveness_timeout(Duration::from_secs(2))
///     .flow_id(4);
/// assert_ne!(config, QuicConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    pub(crate) bind: SocketAddr,
    pub(crate) alpn: String,
    pub(crate) liveness_timeout: Duration,
    pub(crate) socket_buffer: usize,
    pub(crate) advertise_ip: Option<std::net::IpAddr>,
    pub(crate) media_ports: Option<relay_core::udp::PortRange>,
    pub(crate) receive_queue: usize,
    pub(crate) flow_id: u64,
    pub(crate) clock_rates: ClockRates,
    pub(crate) max_delay: Duration,
    pub(crate) min_window: u64,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            alpn: "roq".to_string(),
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            // CRATES.md: the 208 KiB kernel default overflows under
            // unpaced bursts; 4 MiB is what iperf3 needs for line rate here.
            socket_buffer: relay_core::udp::DEFAULT_SOCKET_BUFFER,
            advertise_ip: None,
            media_ports: None,
            // About 40 ms of 1,200-byte packets at 1 Gbit/s.
            receive_queue: 4096,
            flow_id: 0,
            clock_rates: ClockRates::new(),
            max_delay: DEFAULT_MAX_DELAY,
            min_window: DEFAULT_MIN_WINDOW,
        }
    }
}

impl QuicConfig {
    /// Local UDP address (default `127.0.0.1:0`). The answerer signals the
    /// bound address, so bind a concrete address the peer can reach.
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

    /// ALPN token (default `roq`, RoQ section 4).
    pub fn alpn(mut self, alpn: impl Into<String>) -> Self {
        self.alpn = alpn.into();
        self
    }

    /// Silence after which the link closes with
    /// `CloseReason::LivenessTimeout` (default 5 s). Also bounds how long
    /// `connect` and `accept` wait.
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout;
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

    /// `SO_RCVBUF` and `SO_SNDBUF` of the UDP socket in bytes (default
    /// 4 MiB), as `socket_buffer` on the other backends.
    pub fn socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = bytes;
        self
    }

    /// The IP the answer gives the offerer instead of the bound one
    /// (needed when binding `0.0.0.0` or `::`); the port is always the
    /// bound port. An answerer bound to an unspecified address without one
    /// fails, since no offerer could reach it.
    pub fn advertise_ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.advertise_ip = ip;
        self
    }

    /// Packets held for the application before drops (datagram mode) or
    /// back-pressure (stream mode). Default 4096.
    pub fn receive_queue(mut self, packets: usize) -> Self {
        self.receive_queue = packets;
        self
    }

    /// RoQ flow identifier this link sends with and accepts (default 0;
    /// RoQ section 5.1 suggests low numbers, they encode in one byte).
    pub fn flow_id(mut self, flow_id: u64) -> Self {
        self.flow_id = flow_id;
        self
    }

    /// The latency budget of datagram mode (default
    /// [`relay_core::DEFAULT_MAX_DELAY`], 200 ms): a packet that would
    /// arrive older than this is dropped on the sending side and counted as
    /// [`DropCause::Expired`](relay_core::DropCause::Expired), never sent
    /// late. The age counts from the call to `send`; the sending side may
    /// spend the budget minus the path's one-way delay (half the smoothed
    /// RTT) in this link's queue and quinn's datagram buffer, and a packet
    /// that waited longer there is dropped. quinn does not retransmit
    /// DATAGRAM frames, so a packet on the wire arrives after about one
    /// one-way delay or not at all.
    ///
    /// In stream mode the option is accepted and has no effect: a stream is
    /// reliable and ordered (RoQ section 5.2), so every packet is delivered
    /// however long it takes, and back-pressure (`send` waits) rather than
    /// age bounds the queue. Use datagram mode when late media is useless.
    ///
    /// Zero and more than an hour are refused with
    /// [`QuicError::InvalidConfig`] at `bind`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use quic_relay::QuicConfig;
    /// let config = QuicConfig::default().max_delay(Duration::from_millis(150));
    /// # let _ = config;
    /// ```
    pub fn max_delay(mut self, budget: Duration) -> Self {
        self.max_delay = budget;
        self
    }

    /// Floor of the congestion window in bytes (default
    /// [`DEFAULT_MIN_WINDOW`], 512 KiB), in both modes; 0 leaves quinn's
    /// Cubic unchanged.
    ///
    /// A relay's sender is application-limited, and QUIC's congestion
    /// controllers do not grow the window while it is (RFC 9002 section
    /// 7.8): it stays at its initial 12,000 bytes, and a keyframe (~40 ×
    /// 1,200 bytes back to back) waits several round trips. quinn's pacer
    /// also spreads a burst at 1.25 × window / RTT. With the floor, a
    /// keyframe leaves within a few milliseconds on an uncongested path;
    /// above the floor Cubic grows and backs off on loss as usual.
    ///
    /// **What it costs in fairness.** Below the floor the link does not
    /// back off: on a congested path it keeps up to `min_window` bytes in
    /// flight per round trip (512 KiB at 40 ms RTT is ~105 Mbit/s, at 10 ms
    /// ~420 Mbit/s) where a standard QUIC or TCP flow would fall to two
    /// packets after persistent congestion. A media relay sends only what
    /// its source produces, so in practice it keeps sending at the media
    /// rate (2.5 Mbit/s of video here), keyframe bursts included, through
    /// loss and congestion instead of yielding to competing flows: it
    /// behaves like plain RTP over UDP, whose rate is set end to end by the
    /// media servers' own congestion control (GCC/TWCC feedback, which the
    /// relay passes through untouched). Two cases send faster than the
    /// media: a stream-mode backlog after loss or an outage goes out at up
    /// to 1.25 × floor / RTT, and any burst the floor lets through may
    /// overflow a shallow bottleneck queue, where it costs the relay and its
    /// neighbours loss. The floor also hides short outages: the sender keeps
    /// sending into a dead path until the floor's worth of bytes is in
    /// flight, and so never backs off its probe timeout (RFC 9002 section
    /// 6.2.1) during a black hole shorter than floor / media rate. Use a
    /// floor on provisioned relay paths with headroom over the media rate;
    /// on a bottleneck shared with bulk traffic whose owners expect QUIC's
    /// fairness, or on links slower than `min_window` / RTT, set 0 (quinn's
    /// Cubic unchanged; keyframes then wait for the window).
    ///
    /// More than 64 MiB is refused with [`QuicError::InvalidConfig`].
    pub fn min_window(mut self, bytes: u64) -> Self {
        self.min_window = bytes;
        self
    }

    pub(crate) fn validate(&self, mode: Mode) -> Result<(), QuicError> {
        let bad = |s: String| Err(QuicError::InvalidConfig(s));
        if !matches!(mode, Mode::Datagram | Mode::Stream) {
            return bad(format!("mode {mode} is not a QUIC mode; use datagram or stream"));
        }
        if self.alpn.is_empty() || self.alpn.len() > 255 {
            return bad(format!(
                "ALPN {:?} must be 1 to 255 bytes (RFC 7301 section 3.1)",
                self.alpn
            ));
        }
        if self.flow_id > VARINT_MAX {
            return bad(format!(
                "flow id {} does not fit a QUIC varint (max 2^62-1)",
                self.flow_id
            ));
        }
        // quinn takes the idle timeout in whole milliseconds, and keep-alives
        // at a third of it need at least a millisecond.
        if self.liveness_timeout < Duration::from_millis(3) {
            return bad(format!(
                "liveness timeout {:?} is too short",
                self.liveness_timeout
            ));
        }
        if self.max_delay.is_zero() || self.max_delay > MAX_MAX_DELAY {
            return bad(format!(
                "max delay {:?} must be more than 0 and at most {:?}; it is the datagram \
                 latency budget, typically 100 ms to 1 s",
                self.max_delay, MAX_MAX_DELAY
            ));
        }
        if self.min_window > MAX_MIN_WINDOW {
            return bad(format!(
                "congestion window floor {} bytes is above {MAX_MIN_WINDOW}; \
                 size it to a keyframe burst at the path's RTT (default {DEFAULT_MIN_WINDOW})",
                self.min_window
            ));
        }
        Ok(())
    }

    /// QUIC transport parameters for both sides.
    pub(crate) fn transport(&self) -> Result<Arc<quinn::TransportConfig>, QuicError> {
        let idle = quinn::IdleTimeout::try_from(self.liveness_timeout).map_err(|_| {
            QuicError::InvalidConfig(format!(
                "liveness timeout {:?} is too long for QUIC",
                self.liveness_timeout
            ))
        })?;
        let mut t = quinn::TransportConfig::default();
        t.initial_mtu(INITIAL_MTU)
            // Liveness is QUIC's own: the idle timeout closes a silent
            // connection (RFC 9000 section 10.1), and PINGs at a third of it
            // keep a quiet but healthy link open with two losses to spare.
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.liveness_timeout / 3))
            // RoQ carries media on unidirectional streams only (section
            // 5.2): a peer that opens a bidirectional one hits the stream
            // limit and the connection closes.
            .max_concurrent_bidi_streams(0u32.into())
            // Our own timestamped queue holds the rest (QUINN_DATAGRAM_SEND_BUFFER).
            .datagram_send_buffer_size(QUINN_DATAGRAM_SEND_BUFFER)
            .congestion_controller_factory(Arc::new(FloorFactory::new(self.min_window)));
        let mut ack = quinn::AckFrequencyConfig::default();
        // ACK every other ack-eliciting packet (quinn's and RFC 9000's
        // default), at most REQUESTED_MAX_ACK_DELAY late, and at once on a
        // gap: with threshold 1 a single missing packet triggers an ACK, so
        // the sender sees the loss one RTT after it, not after a delay.
        ack.ack_eliciting_threshold(1u32.into())
            .max_ack_delay(Some(REQUESTED_MAX_ACK_DELAY))
            .reordering_threshold(1u32.into());
        t.ack_frequency_config(Some(ack));
        Ok(Arc::new(t))
    }

    /// The UDP socket, with explicit buffer sizes, wrapped in a quinn
    /// endpoint on the tokio runtime (tests that drive quinn directly).
    #[cfg(test)]
    pub(crate) fn endpoint(&self, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, QuicError> {
        self.guarded_endpoint(server).map(|(endpoint, _)| endpoint)
    }

    /// [`endpoint`](Self::endpoint), and the [`GuardedSocket`] under it
    /// that counts what it drops.
    pub(crate) fn guarded_endpoint(
        &self,
        server: Option<quinn::ServerConfig>,
    ) -> Result<(quinn::Endpoint, Arc<GuardedSocket>), QuicError> {
        let io = |what: String| move |source| QuicError::Io { what, source };
        let socket = relay_core::udp::bind_udp_in(self.bind, self.media_ports, self.socket_buffer)
            .map_err(io(format!("binding UDP {}", self.bind)))?;
        let what = || format!("starting the QUIC endpoint on {}", self.bind);
        let runtime = Arc::new(quinn::TokioRuntime);
        let inner = quinn::Runtime::wrap_udp_socket(&*runtime, socket).map_err(io(what()))?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        // The guard drops packets whose fixed bit is clear (RFC 9000
        // section 17), so peers must not grease it (RFC 9287).
        endpoint_config.grease_quic_bit(false);
        let max_udp_payload = endpoint_config.get_max_udp_payload_size() as usize;
        let guard = Arc::new(GuardedSocket::new(inner, max_udp_payload));
        let endpoint =
            quinn::Endpoint::new_with_abstract_socket(endpoint_config, server, guard.clone(), runtime)
                .map_err(io(what()))?;
        Ok((endpoint, guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: QuicConfig, mode: Mode) -> String {
        match config.validate(mode) {
            Err(QuicError::InvalidConfig(why)) => why,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn max_delay_must_be_a_sane_budget() {
        for mode in [Mode::Datagram, Mode::Stream] {
            let why = refused(QuicConfig::default().max_delay(Duration::ZERO), mode);
            assert!(why.starts_with("max delay 0ns must be more than 0"), "{why}");
            let why = refused(QuicConfig::default().max_delay(Duration::from_secs(3601)), mode);
            assert!(why.contains("at most 3600s"), "{why}");
            // The edges are accepted.
            for ok in [Duration::from_micros(1), MAX_MAX_DELAY, DEFAULT_MAX_DELAY] {
                QuicConfig::default().max_delay(ok).validate(mode).unwrap();
            }
        }
        assert_eq!(QuicConfig::default().max_delay, DEFAULT_MAX_DELAY);
    }

    #[test]
    fn window_floor_is_bounded() {
        let why = refused(
            QuicConfig::default().min_window(MAX_MIN_WINDOW + 1),
            Mode::Datagram,
        );
        assert!(why.contains("congestion window floor 67108865 bytes"), "{why}");
        for ok in [0, DEFAULT_MIN_WINDOW, MAX_MIN_WINDOW] {
            QuicConfig::default()
                .min_window(ok)
                .validate(Mode::Datagram)
                .unwrap();
        }
    }

    #[test]
    fn transport_negotiates_ack_frequency_and_a_small_datagram_buffer() {
        let t = QuicConfig::default().transport().unwrap();
        let text = format!("{t:?}");
        assert!(text.contains("datagram_send_buffer_size: 65536"), "{text}");
        assert!(text.contains("max_ack_delay: Some(5ms)"), "{text}");
    }
}
