//! The control messages plain RTP needs for liveness, encoded as STUN
//! (RFC 8489) so they can never be mistaken for media.
//!
//! RFC 7983 section 7 demultiplexes by the first byte: 0..=3 is STUN,
//! 128..=191 is RTP/RTCP. A relay that receives one of these in the media
//! path knows it is control, and an SFU that is sent one by mistake drops it
//! like any stray STUN. Three messages:
//!
//! | message | STUN encoding | purpose |
//! |---|---|---|
//! | probe | Binding Request | path check at setup, keepalive, RTT sample |
//! | probe reply | Binding Success Response with XOR-MAPPED-ADDRESS, same transaction id as the probe | proves the path both ways (as ICE connectivity checks and RFC 7675 consent do) |
//! | goodbye | Binding Indication with attribute [`ATTR_GOODBYE`] | "I closed the link", so the peer does not wait for the liveness timeout; in srtp mode the attribute carries an HMAC-SHA-256 tag over the transaction id |
//!
//! **Plain mode** (`unreliable`): nothing is authenticated. Anyone who can
//! send from the peer's address can answer probes (keeping a dead link
//! looking alive), send probes, or say goodbye.
//!
//! **srtp mode**: every probe and reply ends with a
//! MESSAGE-INTEGRITY-SHA256 attribute (RFC 8489 section 14.6, type
//! [`ATTR_MESSAGE_INTEGRITY_SHA256`], the full 32-byte HMAC-SHA-256, never
//! truncated) made by [`encode_with_integrity`] and checked by
//! [`verify_integrity`]. The HMAC covers the header (type, transaction id,
//! the length as if the message ended after this attribute) and every
//! attribute before it, so a tag cannot be moved to another message type or
//! transaction. The key is not a STUN password: each side derives it from
//! the SRTP master key it signaled ([`crate::srtp::keepalive_key`]), so it
//! is per direction and independent of the SRTP and goodbye keys. There is
//! no USERNAME: a socket has exactly one peer and one key to try.
//!
//! ```text
//! probe:  0x0001 | len 36 | cookie | txid | 0x001C 0x0020 HMAC(32)
//! reply:  0x0101 | len 48 | cookie | txid | XOR-MAPPED-ADDRESS (12) | 0x001C 0x0020 HMAC(32)
//!         (len 60 with an IPv6 XOR-MAPPED-ADDRESS)
//! ```
//!
//! In srtp mode the goodbye is signed ([`Control::SignedGoodbye`]) and an
//! unsigned one is ignored, so a forged goodbye cannot close the link.
//!
//! ```
//! use rtp_udp_relay::stun::{self, Control, IntegrityError, IntegrityKey};
//! let key = IntegrityKey::new(&[7; 32]);
//! let wire = stun::encode_with_integrity(&Control::Probe([1; 12]), &key);
//! assert_eq!(wire.len(), 20 + 36);
//! assert_eq!(stun::decode(&wire), Ok(Control::Probe([1; 12])));
//! assert_eq!(stun::verify_integrity(&wire, &key), Ok(()));
//! let plain = stun::encode(&Control::Probe([1; 12]));
//! assert_eq!(stun::verify_integrity(&plain, &key), Err(IntegrityError::Missing));
//! ```

use std::net::{IpAddr, SocketAddr};

/// RFC 8489 section 5: fixed value in every STUN header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_INDICATION: u16 = 0x0011;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RFC 8489 section 14.6: HMAC-SHA-256 over the message up to this
/// attribute (srtp mode only).
pub const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// The MESSAGE-INTEGRITY-SHA256 value we send and accept: the whole
/// HMAC-SHA-256. RFC 8489 allows truncation to 16 bytes; both ends are
/// ours, so nothing is gained by accepting a weaker tag.
pub const INTEGRITY_LEN: usize = 32;
/// Longest message whose integrity is checked: ours are at most 80 bytes
/// (a reply with an IPv6 address), and the HMAC input is assembled on the
/// stack, so a flood of long forgeries costs no allocation.
const MAX_INTEGRITY_INPUT: usize = 512;
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

/// The key of MESSAGE-INTEGRITY-SHA256 for one direction of an srtp link
/// (see [`crate::srtp::keepalive_key`]).
pub struct IntegrityKey(ring::hmac::Key);

impl IntegrityKey {
    /// An HMAC-SHA-256 key from raw bytes.
    pub fn new(key: &[u8]) -> IntegrityKey {
        IntegrityKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (it ends up in logs).
        f.write_str("IntegrityKey(..)")
    }
}

/// Why a message's MESSAGE-INTEGRITY-SHA256 was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The message carries no MESSAGE-INTEGRITY-SHA256 (or is not STUN).
    #[error("no MESSAGE-INTEGRITY-SHA256 attribute")]
    Missing,
    /// The attribute is there but does not verify under the key: forged,
    /// tampered with, truncated, or made with another key.
    #[error("MESSAGE-INTEGRITY-SHA256 does not verify")]
    Mismatch,
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
    // Room for the largest message plus MESSAGE-INTEGRITY-SHA256.
    let mut out = Vec::with_capacity(HEADER_LEN + 24 + 4 + INTEGRITY_LEN);
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

/// Encodes a control message and appends MESSAGE-INTEGRITY-SHA256 under
/// `key` (RFC 8489 section 14.6); srtp mode sends probes and replies so.
pub fn encode_with_integrity(msg: &Control, key: &IntegrityKey) -> Vec<u8> {
    let mut out = encode(msg);
    append_integrity(&mut out, key);
    out
}

/// RFC 8489 section 14.6: the HMAC input is the message so far with the
/// header's length already counting the integrity attribute (so it is
/// also the final length: nothing follows it here).
fn append_integrity(out: &mut Vec<u8>, key: &IntegrityKey) {
    let len = (out.len() - HEADER_LEN + 4 + INTEGRITY_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    let tag = ring::hmac::sign(&key.0, out);
    out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY_SHA256.to_be_bytes());
    out.extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
    out.extend_from_slice(tag.as_ref());
}

/// Checks the first MESSAGE-INTEGRITY-SHA256 attribute of a STUN message
/// under `key`, over the bytes as received (RFC 8489 section 14.6:
/// attributes after it are not covered). The comparison is constant-time.
pub fn verify_integrity(buf: &[u8], key: &IntegrityKey) -> Result<(), IntegrityError> {
    let body = body(buf).map_err(|_| IntegrityError::Missing)?;
    let mut attrs = Attributes { rest: body };
    loop {
        let at = HEADER_LEN + body.len() - attrs.rest.len();
        let (kind, value) = attrs.next().ok_or(IntegrityError::Missing)?;
        if kind != ATTR_MESSAGE_INTEGRITY_SHA256 {
            continue;
        }
        if value.len() != INTEGRITY_LEN || at > MAX_INTEGRITY_INPUT {
            return Err(IntegrityError::Mismatch);
        }
        let mut input = [0u8; MAX_INTEGRITY_INPUT];
        input[..at].copy_from_slice(&buf[..at]);
        let len = (at - HEADER_LEN + 4 + INTEGRITY_LEN) as u16;
        input[2..4].copy_from_slice(&len.to_be_bytes());
        return ring::hmac::verify(&key.0, &input[..at], value).map_err(|_| IntegrityError::Mismatch);
    }
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

/// The attributes of a STUN message, after the header checks.
fn body(buf: &[u8]) -> Result<&[u8], StunError> {
    if buf.len() < HEADER_LEN {
        return Err(StunError::Truncated);
    }
    if buf[0] & 0xc0 != 0 || buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return Err(StunError::NotStun);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    buf.get(HEADER_LEN..HEADER_LEN + len).ok_or(StunError::Truncated)
}

/// Decodes a control message; anything else is an error (never a panic).
/// A MESSAGE-INTEGRITY-SHA256 attribute is not checked here (see
/// [`verify_integrity`]); attributes after it are ignored, as RFC 8489
/// section 14.6 requires.
pub fn decode(buf: &[u8]) -> Result<Control, StunError> {
    let rest = body(buf)?;
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    let attrs = Attributes { rest }.take_while(|(t, _)| *t != ATTR_MESSAGE_INTEGRITY_SHA256);
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
            if let Ok(msg) = decode(&junk) {
                assert_eq!(decode(&encode(&msg)), Ok(msg), "{junk:?}");
            }
            let _ = verify_integrity(&junk, &IntegrityKey::new(&[1; 32]));
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8489 appendix B.1 as corrected by verified erratum 6268 (the
    /// published bytes omit PASSWORD-ALGORITHM): a Binding Request with
    /// long-term credentials, USERHASH, NONCE, REALM, PASSWORD-ALGORITHM
    /// SHA-256 and MESSAGE-INTEGRITY-SHA256. The key is
    /// SHA-256("<username>:example.org:TheMatrIX") (section 9.2.2).
    const RFC8489_B1: &str = "00010090 2112a442 78ad3433 c6ad72c0 29da412e
        001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704
        00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33 346f4c39
                 46535476 79363473 41000000
        0014000b 6578616d 706c652e 6f726700
        001d0004 00020000
        001c0020 b5c7bf00 5b6c52a2 1c51c5e8 92f81924 136296cb 927c4314 9309278c c6518e65";

    fn rfc8489_b1_key() -> IntegrityKey {
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{username}:example.org:TheMatrIX").as_bytes(),
        );
        IntegrityKey::new(digest.as_ref())
    }

    #[test]
    fn rfc8489_b1_message_integrity_sha256() {
        let vector = unhex(RFC8489_B1);
        assert_eq!(vector.len(), 164);
        let key = rfc8489_b1_key();
        assert_eq!(verify_integrity(&vector, &key), Ok(()));
        // The sending side reproduces the vector from the bytes before the
        // attribute (whatever the length field said before).
        let mut rebuilt = vector[..vector.len() - 36].to_vec();
        rebuilt[2..4].copy_from_slice(&[0, 0]);
        append_integrity(&mut rebuilt, &key);
        assert_eq!(rebuilt, vector);
        assert_eq!(
            verify_integrity(&vector, &IntegrityKey::new(b"TheMatrIX")),
            Err(IntegrityError::Mismatch)
        );
    }

    #[test]
    fn integrity_round_trips_and_every_flipped_bit_is_refused() {
        let key = IntegrityKey::new(&[0x42; 32]);
        for msg in [
            Control::Probe([5; 12]),
            Control::ProbeReply([6; 12], Some("192.0.2.1:32853".parse().unwrap())),
            Control::ProbeReply([6; 12], Some("[2001:db8::1]:40000".parse().unwrap())),
        ] {
            let wire = encode_with_integrity(&msg, &key);
            assert_eq!(verify_integrity(&wire, &key), Ok(()), "{msg:?}");
            assert_eq!(
                decode(&wire),
                Ok(msg),
                "the attribute does not change the message"
            );
            assert!(wire.len() <= 80, "{} bytes", wire.len());
            assert!(relay_core::classify(&wire).is_err());
            for bit in 0..wire.len() * 8 {
                let mut t = wire.clone();
                t[bit / 8] ^= 1 << (bit % 8);
                assert!(verify_integrity(&t, &key).is_err(), "{msg:?}: bit {bit} flipped");
            }
            assert_eq!(
                verify_integrity(&wire, &IntegrityKey::new(&[0x43; 32])),
                Err(IntegrityError::Mismatch),
                "another key"
            );
            // Without the attribute, or cut off inside it.
            assert_eq!(
                verify_integrity(&encode(&msg), &key),
                Err(IntegrityError::Missing)
            );
            for cut in 0..wire.len() {
                assert!(verify_integrity(&wire[..cut], &key).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn integrity_binds_type_and_transaction_id() {
        let key = IntegrityKey::new(&[1; 32]);
        let probe = encode_with_integrity(&Control::Probe([9; 12]), &key);
        // The probe's tag on a reply with the same transaction id (same
        // length: a reply without XOR-MAPPED-ADDRESS).
        let mut as_reply = probe.clone();
        as_reply[..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert_eq!(decode(&as_reply), Ok(Control::ProbeReply([9; 12], None)));
        assert_eq!(verify_integrity(&as_reply, &key), Err(IntegrityError::Mismatch));
        // The tag of an old reply on a new transaction id.
        let old = encode_with_integrity(&Control::ProbeReply([1; 12], None), &key);
        let mut moved = old.clone();
        moved[8..20].copy_from_slice(&[2; 12]);
        assert_eq!(verify_integrity(&moved, &key), Err(IntegrityError::Mismatch));
    }

    #[test]
    fn attributes_after_the_integrity_are_not_covered_and_ignored() {
        let key = IntegrityKey::new(&[3; 32]);
        let mut wire = encode_with_integrity(&Control::ProbeReply([4; 12], None), &key);
        // A FINGERPRINT-like trailer (RFC 8489 section 14.7 allows one).
        wire.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
        // An XOR-MAPPED-ADDRESS smuggled in after the tag.
        xor_mapped_address(&mut wire, "10.0.0.1:5".parse().unwrap(), &[4; 12]);
        let len = (wire.len() - HEADER_LEN) as u16;
        wire[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(verify_integrity(&wire, &key), Ok(()));
        assert_eq!(decode(&wire), Ok(Control::ProbeReply([4; 12], None)));
    }

    #[test]
    fn a_truncated_or_oversized_integrity_is_refused() {
        let key = IntegrityKey::new(&[5; 32]);
        let wire = encode_with_integrity(&Control::Probe([8; 12]), &key);
        // RFC 8489 allows a 16-byte tag; we never send one and refuse it.
        let mut short = wire[..HEADER_LEN + 4 + 16].to_vec();
        short[2..4].copy_from_slice(&20u16.to_be_bytes());
        short[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(verify_integrity(&short, &key), Err(IntegrityError::Mismatch));
        // A long message is refused without being hashed.
        let mut long = encode(&Control::Probe([8; 12]));
        long.extend_from_slice(&[0x80, 0x22, 0x02, 0x00]);
        long.extend_from_slice(&[b'x'; 512]);
        append_integrity(&mut long, &key);
        assert_eq!(verify_integrity(&long, &key), Err(IntegrityError::Mismatch));
        assert_eq!(format!("{key:?}"), "IntegrityKey(..)");
    }
}
