//! [`QuicConfig`], and what it turns into: the UDP socket, the quinn
//! endpoint and the QUIC transport parameters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_core::{ClockRates, DEFAULT_LIVENESS_TIMEOUT, Mode};

use crate::QuicError;
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
    pub(crate) socket_buffer_bytes: usize,
    pub(crate) receive_queue: usize,
    pub(crate) flow_id: u64,
    pub(crate) clock_rates: ClockRates,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            alpn: "roq".to_string(),
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            // CRATES.md: the 208 KiB kernel default overflows under
            // unpaced bursts; 4 MiB is what iperf3 needs for line rate here.
            socket_buffer_bytes: 4 * 1024 * 1024,
            // About 40 ms of 1,200-byte packets at 1 Gbit/s.
            receive_queue: 4096,
            flow_id: 0,
            clock_rates: ClockRates::new(),
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

    /// `SO_RCVBUF` and `SO_SNDBUF` of the UDP socket (default 4 MiB).
    pub fn socket_buffer_bytes(mut self, bytes: usize) -> Self {
        self.socket_buffer_bytes = bytes;
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
            .max_concurrent_bidi_streams(0u32.into());
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
        let socket = relay_core::udp::bind_udp(self.bind, self.socket_buffer_bytes)
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
