//! One relayed message: a single RTP or RTCP packet, classified once.

use bytes::Bytes;

/// Smallest RTP packet: the 12-byte fixed header (RFC 3550 section 5.1).
pub const RTP_HEADER_LEN: usize = 12;
/// Smallest RTCP packet: 4-byte common header plus the sender SSRC
/// (RFC 3550 section 6.4).
pub const RTCP_MIN_LEN: usize = 8;

/// Whether a packet is RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacketKind {
    /// An RTP media packet.
    Rtp,
    /// An RTCP control packet (possibly compound).
    Rtcp,
}

/// Why bytes are not an RTP or RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Nothing to relay.
    #[error("empty packet")]
    Empty,
    /// The two version bits are not 2 (RFC 3550 section 5.1): STUN, DTLS,
    /// QUIC and garbage all land here (RFC 7983 demultiplexing).
    #[error("not RTP/RTCP: version {0}, expected 2")]
    BadVersion(u8),
    /// Shorter than the fixed header of its kind.
    #[error("truncated {kind:?} packet: {len} bytes, header needs {need}")]
    Truncated {
        /// What the second byte says it is.
        kind: PacketKind,
        /// Bytes present.
        len: usize,
        /// Bytes the fixed header needs.
        need: usize,
    },
}

/// One RTP or RTCP packet, carried as [`Bytes`] without copying.
///
/// Construction validates just enough to demultiplex (version 2, long enough
/// for its fixed header) so every backend and every stats counter can rely
/// on the accessors below.
///
/// ```
/// use relay_core::{Packet, PacketKind};
/// let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 10, 0xde, 0xad, 0xbe, 0xef];
/// rtp.extend_from_slice(b"payload");
/// let p = Packet::parse(rtp.into()).unwrap();
/// assert_eq!(p.kind(), PacketKind::Rtp);
/// assert_eq!(p.ssrc(), 0xdeadbeef);
/// assert_eq!(p.sequence_number(), Some(1));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    bytes: Bytes,
    kind: PacketKind,
}

impl Packet {
    /// Classifies `bytes` as RTP or RTCP (RFC 5761 section 4: a second byte
    /// of 192..=223 is an RTCP packet type, anything else an RTP marker bit
    /// plus payload type).
    pub fn parse(bytes: Bytes) -> Result<Packet, PacketError> {
        let kind = classify(&bytes)?;
        Ok(Packet { bytes, kind })
    }

    /// RTP or RTCP.
    pub fn kind(&self) -> PacketKind {
        self.kind
    }

    /// The whole packet.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole packet, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: an empty buffer is not a packet. Present for clippy's
    /// `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// RTP: the SSRC of the stream. RTCP: the SSRC of the packet's sender.
    pub fn ssrc(&self) -> u32 {
        let at = match self.kind {
            PacketKind::Rtp => 8,
            PacketKind::Rtcp => 4,
        };
        u32::from_be_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    /// RTP sequence number; `None` for RTCP.
    pub fn sequence_number(&self) -> Option<u16> {
        (self.kind == PacketKind::Rtp).then(|| u16::from_be_bytes([self.bytes[2], self.bytes[3]]))
    }

    /// RTP timestamp; `None` for RTCP.
    pub fn timestamp(&self) -> Option<u32> {
        (self.kind == PacketKind::Rtp)
            .then(|| u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]]))
    }

    /// RTP payload type; `None` for RTCP.
    pub fn payload_type(&self) -> Option<u8> {
        (self.kind == PacketKind::Rtp).then(|| self.bytes[1] & 0x7f)
    }

    /// RTCP packet type of the first packet in a compound; `None` for RTP.
    pub fn rtcp_type(&self) -> Option<u8> {
        (self.kind == PacketKind::Rtcp).then(|| self.bytes[1])
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("kind", &self.kind)
            .field("len", &self.bytes.len())
            .field("ssrc", &format_args!("{:#010x}", self.ssrc()))
            .field("seq", &self.sequence_number())
            .finish()
    }
}

/// Classifies raw bytes without keeping them (RFC 5761 section 4,
/// RFC 7983 section 7).
pub fn classify(bytes: &[u8]) -> Result<PacketKind, PacketError> {
    let Some(&first) = bytes.first() else {
        return Err(PacketError::Empty);
    };
    let version = first >> 6;
    if version != 2 {
        return Err(PacketError::BadVersion(version));
    }
    let second = bytes.get(1).copied().unwrap_or(0);
    let (kind, need) = if (192..=223).contains(&second) {
        (PacketKind::Rtcp, RTCP_MIN_LEN)
    } else {
        (PacketKind::Rtp, RTP_HEADER_LEN)
    };
    if bytes.len() < need {
        return Err(PacketError::Truncated {
            kind,
            len: bytes.len(),
            need,
        });
    }
    Ok(kind)
}

/// Builds a minimal RTP packet: header plus `payload`. Used by tests,
/// benchmarks and the `compare` workload.
pub fn build_rtp(payload_type: u8, seq: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(RTP_HEADER_LEN + payload.len());
    buf.push(0x80);
    buf.push(payload_type & 0x7f);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtcp_sender_report_is_rtcp() {
        // SR, length 6 words, SSRC 0x01020304.
        let sr = [0x80, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0];
        let p = Packet::parse(Bytes::copy_from_slice(&sr)).unwrap();
        assert_eq!(p.kind(), PacketKind::Rtcp);
        assert_eq!(p.ssrc(), 0x01020304);
        assert_eq!(p.rtcp_type(), Some(200));
        assert_eq!(p.sequence_number(), None);
    }

    #[test]
    fn rtp_with_marker_and_payload_type_near_rtcp_range_is_rtp() {
        // Marker set, PT 63: second byte 0xbf = 191, just below the RTCP range.
        let p = Packet::parse(build_rtp(63, 7, 1, 2, b"x")).unwrap();
        assert_eq!(p.kind(), PacketKind::Rtp);
        let mut b = p.bytes().to_vec();
        b[1] |= 0x80;
        assert_eq!(classify(&b), Ok(PacketKind::Rtp));
        // PT 64..=95 with marker would collide with RTCP: RFC 5761 section 4
        // forbids those payload types on a muxed session.
        b[1] = 0x80 | 72;
        assert_eq!(classify(&b), Ok(PacketKind::Rtcp));
    }

    #[test]
    fn garbage_and_truncated_are_rejected() {
        assert_eq!(classify(&[]), Err(PacketError::Empty));
        // STUN binding request starts with 0x00 0x01.
        assert_eq!(classify(&[0x00, 0x01, 0, 0]), Err(PacketError::BadVersion(0)));
        // DTLS handshake record (22).
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Err(PacketError::BadVersion(0)));
        assert_eq!(
            classify(&[0x80, 96, 0, 1]),
            Err(PacketError::Truncated {
                kind: PacketKind::Rtp,
                len: 4,
                need: 12
            })
        );
        assert!(matches!(
            classify(&[0x80, 201, 0]),
            Err(PacketError::Truncated {
                kind: PacketKind::Rtcp,
                ..
            })
        ));
        assert_eq!(
            classify(&[0x80]),
            Err(PacketError::Truncated {
                kind: PacketKind::Rtp,
                len: 1,
                need: 12
            })
        );
    }
}
