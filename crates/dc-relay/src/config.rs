//! [`DcConfig`]: everything one side of a data-channel link can be told.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relay_core::ClockRates;

/// Largest packet [`DcLink`](crate::DcLink) sends by default: the relay
/// contract's minimum. With the 28 bytes of SCTP common and DATA chunk
/// headers and about 37 of DTLS record, a packet this size still leaves in one
/// IPv4 datagram on a 1,500-byte Ethernet path, so no RTP packet is ever
/// split into two SCTP chunks (an unreliable channel would lose the whole
/// message for either half) or IP-fragmented.
pub const DEFAULT_MAX_PACKET_SIZE: usize = relay_core::MIN_MAX_PACKET_SIZE;

/// Largest message a link here accepts or sends, and the
/// `a=max-message-size` (RFC 8841 section 6) it advertises: the largest UDP
/// payload over IPv4 (65,535 less the 20-byte IP and 8-byte UDP headers).
/// Each message is one RTP or RTCP packet, which the relay writes as one
/// UDP datagram to its media server; RFC 8841's default of 65,536 would
/// let a peer send packets of 65,508 to 65,536 bytes that no socket can
/// write.
pub const MAX_MESSAGE_SIZE: usize = 65_507;

/// Largest latency budget [`DcConfig::max_delay`] takes: an unreliable
/// channel carries it as maxPacketLifeTime, an unsigned 16-bit count of
/// milliseconds (RFC 8832 section 5.1, the DATA_CHANNEL_OPEN reliability
/// parameter as W3C `RTCDataChannelInit` gives it), so about 65.5 s. The
/// one-hour bound the other transports share is looser than this.
pub const MAX_MAX_DELAY: Duration = Duration::from_millis(u16::MAX as u64);

/// Settings for one side of a data-channel link.
///
/// ```
/// use std::time::Duration;
/// use dc_relay::DcConfig;
///
/// let config = DcConfig::default()
///     .bind_addrs(vec!["127.0.0.1:0".parse().unwrap()])
///     .ice_servers(vec!["stun:127.0.0.1:3478".into()])
///     .liveness_timeout(Duration::from_secs(2))
///     .label("cascade");
/// assert_eq!(config.keepalive_interval(), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone)]
pub struct DcConfig {
    pub(crate) bind_addrs: Vec<SocketAddr>,
    pub(crate) advertise_ip: Option<IpAddr>,
    pub(crate) ice_servers: Vec<String>,
    pub(crate) liveness_timeout: Duration,
    pub(crate) send_buffer_limit: usize,
    pub(crate) receive_queue: usize,
    pub(crate) label: String,
    pub(crate) max_packet_size: usize,
    pub(crate) sctp_receive_window: u32,
    pub(crate) socket_buffer: usize,
    pub(crate) media_ports: Option<relay_core::udp::PortRange>,
    pub(crate) gather_timeout: Duration,
    pub(crate) clock_rates: ClockRates,
    pub(crate) max_delay: Duration,
}

impl Default for DcConfig {
    fn default() -> Self {
        DcConfig {
            bind_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            advertise_ip: None,
            ice_servers: Vec::new(),
            liveness_timeout: relay_core::DEFAULT_LIVENESS_TIMEOUT,
            // Measured on loopback, 1,200-byte packets, release build, 2 cores
            // (a flood test since replaced by the report's max-rate rows,
            // `relay-bench report --scenario clean --path dc`): 256 KiB here with a 128 KiB
            // receive window moved 640-720 Mbit/s unreliable; 512 KiB with 1 MiB
            // 780-970 Mbit/s unreliable and 780-870 reliable. More adds only
            // queueing delay.
            send_buffer_limit: 512 * 1024,
            // About 0.25 s of 16 Mbit/s video, as in rtp-udp-relay.
            receive_queue: 4096,
            label: "relay".to_string(),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            // See send_buffer_limit; also rtc's own default.
            sctp_receive_window: 1024 * 1024,
            socket_buffer: relay_core::udp::DEFAULT_SOCKET_BUFFER,
            media_ports: None,
            gather_timeout: Duration::from_secs(2),
            clock_rates: ClockRates::new(),
            max_delay: relay_core::DEFAULT_MAX_DELAY,
        }
    }
}

impl DcConfig {
    /// Local addresses to bind, one UDP socket and one ICE host candidate
    /// each (default `127.0.0.1:0`). An unspecified address (`0.0.0.0`) is
    /// no candidate a peer can reach: bind interface addresses, or set
    /// [`advertise_ip`](DcConfig::advertise_ip).
    pub fn bind_addrs(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.bind_addrs = addrs;
        self
    }

    /// Ports to bind in when the bind address asks for any port (port 0),
    /// as firewalls open a range: the first free one, from a random start;
    /// none free is a bind error (default: any port the kernel picks).
    pub fn media_ports(mut self, ports: Option<relay_core::udp::PortRange>) -> Self {
        self.media_ports = ports;
        self
    }

    /// The IP to put in the host candidate instead of the bound one (the
    /// port is always the bound port): needed when binding `0.0.0.0`, and
    /// the way to announce a 1:1 NAT's public address.
    pub fn advertise_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.advertise_ip = ip;
        self
    }

    /// STUN servers (`stun:host:port`) to learn server-reflexive candidates
    /// from. None by default: no external server is contacted unless
    /// configured.
    pub fn ice_servers(mut self, urls: Vec<String>) -> Self {
        self.ice_servers = urls;
        self
    }

    /// Silence after which the peer is declared dead (default 5 s). ICE
    /// consent checks (RFC 7675) run at a fifth of it.
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

    /// Bytes handed to SCTP and not yet acknowledged (or abandoned) before
    /// the relay stops feeding it (default 512 KiB). Beyond it, reliable
    /// sends wait and unreliable sends drop the oldest queued packet.
    pub fn send_buffer_limit(mut self, bytes: usize) -> Self {
        self.send_buffer_limit = bytes.max(relay_core::MIN_MAX_PACKET_SIZE);
        self
    }

    /// Received packets held for the application (default 4096). Unreliable
    /// links then drop the oldest; reliable links stop reading, and SCTP's
    /// receive window holds the sender back.
    pub fn receive_queue(mut self, packets: usize) -> Self {
        self.receive_queue = packets.max(1);
        self
    }

    /// The data channel's label (default `"relay"`; the offerer's counts).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Largest packet accepted by `send` (default and minimum 1,400, at most
    /// [`MAX_MESSAGE_SIZE`]). The link's own limit is lower if the peer
    /// advertises a smaller `a=max-message-size`.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes.clamp(relay_core::MIN_MAX_PACKET_SIZE, MAX_MESSAGE_SIZE);
        self
    }

    /// SCTP receive window (a_rwnd) in bytes (default 1 MiB; at least one
    /// max-size message).
    pub fn sctp_receive_window(mut self, bytes: u32) -> Self {
        self.sctp_receive_window = bytes.max(MAX_MESSAGE_SIZE as u32);
        self
    }

    /// `SO_RCVBUF`/`SO_SNDBUF` of each socket (default 4 MiB).
    pub fn socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer = bytes;
        self
    }

    /// How long to wait for each STUN server before going on without its
    /// candidate (default 2 s).
    pub fn gather_timeout(mut self, d: Duration) -> Self {
        self.gather_timeout = d;
        self
    }

    /// The latency budget of [`Mode::Unreliable`](relay_core::Mode) and
    /// [`Mode::Repair`](relay_core::Mode) (default
    /// [`relay_core::DEFAULT_MAX_DELAY`], 200 ms): a packet that waited
    /// longer than this in the relay's own send queue in front of SCTP is
    /// dropped and counted as
    /// [`DropCause::Expired`](relay_core::DropCause::Expired), never handed
    /// to SCTP late. The offerer's repair channel is opened with
    /// maxPacketLifeTime = the budget (RFC 3758 timed reliability,
    /// unordered), so SCTP retransmits a lost packet only while it can
    /// still be in time and abandons it (FORWARD TSN) when the lifetime
    /// ends; an unreliable channel (maxRetransmits=0) never retransmits.
    /// What SCTP abandons is not counted: `rtc` exposes no SCTP
    /// statistics. Reliable links ignore the budget: they deliver
    /// everything, in order, however late.
    ///
    /// Between 1 ms and [`MAX_MAX_DELAY`]; anything else (zero, a
    /// sub-millisecond budget, more than maxPacketLifeTime's 16 bits of
    /// milliseconds) makes `bind` fail with [`DcError::BadMaxDelay`](crate::DcError::BadMaxDelay).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dc_relay::DcConfig;
    /// let config = DcConfig::default().max_delay(Duration::from_millis(150));
    /// assert!(config.check().is_ok());
    /// assert!(DcConfig::default().max_delay(Duration::ZERO).check().is_err());
    /// ```
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Checks what the setters cannot clamp: the latency budget.
    pub fn check(&self) -> Result<(), crate::DcError> {
        let why = if self.max_delay.is_zero() {
            "zero would drop every packet"
        } else if self.max_delay < Duration::from_millis(1) {
            "maxPacketLifeTime counts whole milliseconds"
        } else if self.max_delay > Duration::from_secs(3600) {
            "more than an hour is no latency budget"
        } else if self.max_delay > MAX_MAX_DELAY {
            "more than maxPacketLifeTime's 16-bit milliseconds (RFC 8832) can carry"
        } else {
            return Ok(());
        };
        Err(crate::DcError::BadMaxDelay {
            given: self.max_delay,
            why,
        })
    }

    /// The budget as maxPacketLifeTime (whole milliseconds, after `check`).
    pub(crate) fn packet_life_time(&self) -> u16 {
        u16::try_from(self.max_delay.as_millis()).unwrap_or(u16::MAX)
    }

    /// ICE consent check interval: a fifth of the liveness timeout, at least
    /// 50 ms.
    pub fn keepalive_interval(&self) -> Duration {
        (self.liveness_timeout / 5).max(Duration::from_millis(50))
    }

    /// Silence after which ICE reports the pair disconnected: the liveness
    /// timeout less one consent interval, because ICE only looks at each
    /// consent tick; so a dead peer is noticed within the liveness timeout.
    pub(crate) fn ice_disconnected_timeout(&self) -> Duration {
        self.liveness_timeout
            .saturating_sub(self.keepalive_interval())
            .max(self.keepalive_interval())
    }

    /// Outbound packets queued between `send` and SCTP: about the send
    /// buffer's worth of 1 KiB packets.
    pub(crate) fn send_queue(&self) -> usize {
        (self.send_buffer_limit / 1024).max(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_maps_onto_ice_consent_timers() {
        let c = DcConfig::default();
        assert_eq!(c.keepalive_interval(), Duration::from_secs(1));
        // Noticed at the first consent tick after the disconnected timeout:
        // within the liveness timeout.
        assert_eq!(c.ice_disconnected_timeout(), Duration::from_secs(4));
        let short = DcConfig::default().liveness_timeout(Duration::from_millis(100));
        assert_eq!(short.keepalive_interval(), Duration::from_millis(50));
        assert_eq!(short.ice_disconnected_timeout(), Duration::from_millis(50));
    }

    #[test]
    fn max_delay_must_fit_max_packet_life_time() {
        let ok = |ms| DcConfig::default().max_delay(Duration::from_millis(ms)).check();
        assert!(DcConfig::default().check().is_ok());
        assert_eq!(DcConfig::default().packet_life_time(), 200);
        assert!(ok(1).is_ok());
        assert!(ok(65_535).is_ok());
        assert_eq!(
            DcConfig::default()
                .max_delay(Duration::from_millis(65_535))
                .packet_life_time(),
            u16::MAX
        );
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            Duration::from_millis(65_536),
            Duration::from_secs(3601),
        ] {
            let err = DcConfig::default().max_delay(bad).check().unwrap_err();
            assert!(
                matches!(err, crate::DcError::BadMaxDelay { given, .. } if given == bad),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("65535 ms"), "{err}");
        }
    }

    #[test]
    fn setters_clamp_to_what_the_stack_carries() {
        let c = DcConfig::default()
            .max_packet_size(10)
            .sctp_receive_window(1)
            .receive_queue(0);
        assert_eq!(c.max_packet_size, relay_core::MIN_MAX_PACKET_SIZE);
        assert_eq!(c.sctp_receive_window, MAX_MESSAGE_SIZE as u32);
        assert_eq!(c.receive_queue, 1);
        assert_eq!(
            DcConfig::default().max_packet_size(1 << 20).max_packet_size,
            MAX_MESSAGE_SIZE
        );
    }
}
