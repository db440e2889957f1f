//! Which transport carries a link, and in which delivery mode.

use std::fmt;
use std::str::FromStr;

/// The three ways media servers relay to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// WebRTC data channel: SCTP over DTLS over ICE/UDP.
    #[serde(rename = "dc")]
    Dc,
    /// RTP over QUIC (draft-ietf-avtcore-rtp-over-quic).
    #[serde(rename = "quic")]
    Quic,
    /// Plain RTP/RTCP over UDP with RTCP-mux (RFC 5761).
    #[serde(rename = "rtp-udp")]
    RtpUdp,
}

impl Transport {
    /// Every transport, in a stable order.
    pub const ALL: [Transport; 3] = [Transport::Dc, Transport::Quic, Transport::RtpUdp];

    /// The name used on the command line and in signaling.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Dc => "dc",
            Transport::Quic => "quic",
            Transport::RtpUdp => "rtp-udp",
        }
    }

    /// The modes this transport offers; the first is its default.
    pub fn modes(self) -> &'static [Mode] {
        match self {
            Transport::Dc => &[Mode::Reliable, Mode::Unreliable, Mode::Repair],
            Transport::Quic => &[Mode::Datagram, Mode::Stream, Mode::Repair],
            Transport::RtpUdp => &[Mode::Unreliable, Mode::Srtp, Mode::Repair, Mode::SrtpRepair],
        }
    }

    /// The mode the transport's own link runs in for `mode`: repair runs
    /// over the plain unreliable one (DATAGRAM frames on QUIC), srtp-repair
    /// over SRTP, with the hop's repair loop on top; every other mode is its
    /// own.
    pub fn link_mode(self, mode: Mode) -> Mode {
        match (self, mode) {
            // A data channel repairs within a lifetime itself (RFC 3758).
            (Transport::Dc, Mode::Repair) => Mode::Repair,
            (_, Mode::Repair) => self.plain_unreliable(),
            (_, Mode::SrtpRepair) => Mode::Srtp,
            (_, other) => other,
        }
    }

    /// The mode a repair mode is compared with: the same link without the
    /// repair (for dc, its plain unreliable channel). `None` for a mode
    /// that does not repair.
    pub fn unrepaired(self, mode: Mode) -> Option<Mode> {
        match mode {
            Mode::Repair => Some(self.plain_unreliable()),
            Mode::SrtpRepair => Some(Mode::Srtp),
            _ => None,
        }
    }

    /// The transport's plain unreliable mode: what its repair mode is
    /// compared with.
    pub fn plain_unreliable(self) -> Mode {
        match self {
            Transport::Quic => Mode::Datagram,
            Transport::Dc | Transport::RtpUdp => Mode::Unreliable,
        }
    }

    /// The mode used when none is given.
    pub fn default_mode(self) -> Mode {
        self.modes()[0]
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}; known: dc, quic, rtp-udp")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

/// How a link delivers packets.
///
/// `Reliable` and `Stream` deliver every packet in order and apply
/// back-pressure to the sender; `Unreliable` and `Datagram` never block the
/// sender and drop (counted) instead. `Srtp` is unreliable too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Ordered and reliable (data channel default).
    Reliable,
    /// Unordered, no retransmission (data channel maxRetransmits=0, plain RTP).
    Unreliable,
    /// QUIC DATAGRAM frames (RFC 9221): unreliable.
    Datagram,
    /// QUIC unidirectional streams (RoQ): reliable, ordered per flow.
    Stream,
    /// SRTP and SRTCP (RFC 7714 AEAD_AES_128_GCM) over UDP: unreliable like
    /// plain RTP, with confidentiality, integrity and replay protection.
    Srtp,
    /// Unreliable, with the hop's own loss repair within the latency
    /// budget: on rtp-udp over plain RTP and on QUIC over DATAGRAM frames,
    /// RTCP NACK and retransmission between the two relays (the
    /// `relay-repair` crate); on a data channel, SCTP's timed reliability
    /// (maxPacketLifeTime = the budget, RFC 3758).
    Repair,
    /// [`Srtp`](Mode::Srtp) with the hop's repair loop: the NACKs travel as
    /// SRTCP and a retransmission is the packet's own SRTP bytes sent again
    /// (rtp-udp only).
    #[serde(rename = "srtp-repair")]
    SrtpRepair,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 7] = [
        Mode::Reliable,
        Mode::Unreliable,
        Mode::Datagram,
        Mode::Stream,
        Mode::Srtp,
        Mode::Repair,
        Mode::SrtpRepair,
    ];

    /// The name used on the command line and in signaling.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reliable => "reliable",
            Mode::Unreliable => "unreliable",
            Mode::Datagram => "datagram",
            Mode::Stream => "stream",
            Mode::Srtp => "srtp",
            Mode::Repair => "repair",
            Mode::SrtpRepair => "srtp-repair",
        }
    }

    /// Whether every packet is delivered, in order, with back-pressure.
    pub fn is_reliable(self) -> bool {
        matches!(self, Mode::Reliable | Mode::Stream)
    }

    /// Whether the link repairs its losses within the latency budget.
    pub fn is_repair(self) -> bool {
        matches!(self, Mode::Repair | Mode::SrtpRepair)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}; known: reliable, unreliable, datagram, stream, srtp, repair, srtp-repair")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert!(t.modes().contains(&t.default_mode()));
        }
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
        }
        assert_eq!(Transport::RtpUdp.link_mode(Mode::SrtpRepair), Mode::Srtp);
        assert_eq!(Transport::RtpUdp.unrepaired(Mode::SrtpRepair), Some(Mode::Srtp));
        assert_eq!(Transport::Quic.unrepaired(Mode::Repair), Some(Mode::Datagram));
        assert_eq!(Transport::Dc.link_mode(Mode::Repair), Mode::Repair);
        assert_eq!(Transport::Dc.unrepaired(Mode::Repair), Some(Mode::Unreliable));
        assert_eq!(Transport::Quic.unrepaired(Mode::Stream), None);
        assert!(
            "sctp"
                .parse::<Transport>()
                .unwrap_err()
                .to_string()
                .contains("rtp-udp")
        );
    }
}
