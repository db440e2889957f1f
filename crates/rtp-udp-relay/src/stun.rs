//! The control messages plain RTP needs for liveness, encoded as STUN
//! (RFC 8489) so they can never be mistaken for media.
//!
//! RFC 7983 section 7 demultiplexes by the first byte: 0..=3 is STUN,
//! 128..=191 is RTP/RTCP. A relay that receives one of these in the media
//! path knows it is control, and an SFU that is sent one by mistake drops it
//! like any stray STUN. Three messages. Probes and replies are never
//! authenticated, in either mode: an on-path attacker who can send from the
//! peer's address can answer probes (keeping a dead link looking alive)
//! or drop them (closing it after the liveness timeout), but cannot inject
//! media in srtp mode. In srtp mode the goodbye is signed
//! ([`Control::SignedGoodbye`]) and an unsigned one is ignored, so a forged
//! goodbye cannot close the link.
//!
//! | message | STUN encoding | purpose |
//! |---|---|---|
//! | probe | Binding Request | path check at setup, keepalive, RTT sample |
//! | probe reply | Binding Success Response with XOR-MAPPED-ADDRESS | proves the path both ways (as ICE connectivity checks and RFC 7675 consent do) |
//! | goodbye | Binding Indication with attribute [`ATTR_GOODBYE`] | "I closed the link", so the peer does not wait for the liveness timeout; in srtp mode the attribute carries an HMAC-SHA-256 tag over the transaction id |

use std::net::{IpAddr, SocketAddr};

/// RFC 8489 section 5: fixed value in every STUN header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_INDICATION: u16 = 0x0011;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// sfu-relay's goodbye attribute: comprehension-optional range
/// (0x8000..=0xFFFF, RFC 8489 section 14), so a generic STUN agent ignores it.
pub const ATTR_GOODBYE: u16 = 0xC0DE;

/// A STUN transaction id (RFC 8489 section 5: 96 bits).
pub type TransactionId = [u8; 12];

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Binding Request.
    Probe(TransactionId),
    /// Binding Success Response; `mapped` is where the replier saw the probe
    /// come from.
    ProbeReply(TransactionId, Option<SocketAddr>),
    /// Binding Indication with the goodbye attribute.
    Goodbye,
    /// Goodbye whose attribute carries an HMAC-SHA-256 tag over the
    /// transaction id (srtp mode, see [`crate::srtp::ControlAuth`]), so an
    /// on-path attacker cannot close the link with a forged goodbye.
    SignedGoodbye(TransactionId, [u8; 32]),
}

/// Why bytes are not one of our control messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than a STUN header or than the header's length field says.
    #[error("truncated STUN message")]
    Truncated,
    /// First two bits not zero, or wrong magic cookie.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message we do not use.
    #[error("unsupported STUN message type {0:#06x}")]
    Unsupported(u16),
}

/// Whether the first byte puts a datagram in STUN's range (RFC 7983).
pub fn looks_like_stun(first_byte: u8) -> bool {
    first_byte < 4
}

fn header(out: &mut Vec<u8>, kind: u16, txid: &TransactionId) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // length, patched at the end
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let len = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes a control message.
pub fn encode(msg: &Control) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 24);
    match msg {
        Control::Probe(txid) => header(&mut out, BINDING_REQUEST, txid),
        Control::ProbeReply(txid, mapped) => {
            header(&mut out, BINDING_SUCCESS, txid);
            if let Some(addr) = mapped {
                xor_mapped_address(&mut out, *addr, txid);
            }
        }
        Control::Goodbye => {
            header(&mut out, BINDING_INDICATION, &[0x5a; 12]);
            out.extend_from_slice(&ATTR_GOODBYE.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        Control::SignedGoodbye(txid, tag) => {
            header(&mut out, BINDING_INDICATION, txid);
            out.extend_from_slice(&ATTR_GOODBYE.to_be_bytes());
            out.extend_from_slice(&(tag.len() as u16).to_be_bytes());
            out.extend_from_slice(tag);
        }
    }
    finish(out)
}

/// RFC 8489 section 14.2.
fn xor_mapped_address(out: &mut Vec<u8>, addr: SocketAddr, txid: &TransactionId) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            for (b, k) in ip.octets().iter().zip(cookie) {
                out.push(b ^ k);
            }
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = cookie.iter().chain(txid.iter()).copied().collect();
            for (b, k) in ip.octets().iter().zip(key) {
                out.push(b ^ k);
            }
        }
    }
}

fn parse_xor_mapped(value: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (value.get(1)?, value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        (0x02, 20) => {
            let key: Vec<u8> = cookie.iter().chain(txid.iter()).copied().collect();
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    }
}

/// Decodes a control message; anything else is an error (never a panic).
pub fn decode(buf: &[u8]) -> Result<Control, StunError> {
    if buf.len() < HEADER_LEN {
        return Err(StunError::Truncated);
    }
    if buf[0] & 0xc0 != 0 || buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return Err(StunError::NotStun);
    }
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if buf.len() < HEADER_LEN + len {
        return Err(StunError::Truncated);
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    let attrs = Attributes {
        rest: &buf[HEADER_LEN..HEADER_LEN + len],
    };
    match kind {
        BINDING_REQUEST => Ok(Control::Probe(txid)),
        BINDING_SUCCESS => {
            let mapped = attrs
                .filter(|(t, _)| *t == ATTR_XOR_MAPPED_ADDRESS)
                .find_map(|(_, v)| parse_xor_mapped(v, &txid));
            Ok(Control::ProbeReply(txid, mapped))
        }
        BINDING_INDICATION => match attrs.clone().find(|(t, _)| *t == ATTR_GOODBYE) {
            Some((_, tag)) if tag.len() == 32 => {
                let mut t = [0u8; 32];
                t.copy_from_slice(tag);
                Ok(Control::SignedGoodbye(txid, t))
            }
            Some(_) => Ok(Control::Goodbye),
            None => Err(StunError::Unsupported(kind)),
        },
        other => Err(StunError::Unsupported(other)),
    }
}

/// Iterates type-length-value attributes (RFC 8489 section 14), padded to
/// four bytes; stops at the first malformed one.
#[derive(Clone)]
struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let t = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        let len = u16::from_be_bytes([self.rest[2], self.rest[3]]) as usize;
        let padded = (len + 3) & !3;
        let value = self.rest.get(4..4 + len)?;
        self.rest = self.rest.get(4 + padded..).unwrap_or(&[]);
        Some((t, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let txid = [7u8; 12];
        for msg in [
            Control::Probe(txid),
            Control::ProbeReply(txid, Some("127.0.0.1:5004".parse().unwrap())),
            Control::ProbeReply(txid, Some("[::1]:40000".parse().unwrap())),
            Control::ProbeReply(txid, None),
            Control::Goodbye,
            Control::SignedGoodbye([9; 12], [0xab; 32]),
        ] {
            let wire = encode(&msg);
            assert!(looks_like_stun(wire[0]));
            assert!(
                relay_core::classify(&wire).is_err(),
                "control must never parse as RTP"
            );
            assert_eq!(decode(&wire), Ok(msg));
        }
    }

    #[test]
    fn binding_request_matches_rfc8489_layout() {
        let wire = encode(&Control::Probe([1; 12]));
        assert_eq!(&wire[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(wire.len(), 20);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(&Control::ProbeReply([3; 12], Some("10.1.2.3:9".parse().unwrap())));
        for cut in 0..good.len() {
            let r = decode(&good[..cut]);
            assert!(r.is_err() || cut >= 20, "cut {cut}: {r:?}");
        }
        let mut bad_cookie = good.clone();
        bad_cookie[5] ^= 1;
        assert_eq!(decode(&bad_cookie), Err(StunError::NotStun));
        let mut indication_without_goodbye = encode(&Control::Goodbye);
        indication_without_goodbye[20] = 0; // attribute type 0x00DE
        assert_eq!(
            decode(&indication_without_goodbye),
            Err(StunError::Unsupported(0x0011))
        );
        // Attribute length pointing past the end.
        let mut long_attr = good.clone();
        long_attr[22] = 0xff;
        assert!(matches!(decode(&long_attr), Ok(Control::ProbeReply(_, None))));
        for seed in 0..2000u32 {
            let junk: Vec<u8> = (0..(seed % 64))
                .map(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8 & 0x3f)
                .collect();
            let _ = decode(&junk);
        }
    }
}
