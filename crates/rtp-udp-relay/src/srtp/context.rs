//! [`SrtpContext`]: protecting and unprotecting SRTP and SRTCP packets
//! under one master key's session keys, with per-SSRC replay state.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{Aad, Tag};

use super::keys::{LABEL_RTCP_KEY, LABEL_RTCP_SALT, LABEL_RTP_KEY, LABEL_RTP_SALT, MasterKey, SessionKeys};
use super::replay::{ReplayWindow, RtpStream};
use super::{
    MAX_RTCP_INDEX, MAX_RTP_INDEX, RTCP_HEADER_LEN, RTP_HEADER_LEN, SRTCP_INDEX_LEN, SrtpError, TAG_LEN,
};

/// SRTP/SRTCP protection state for one master key; see the module docs.
pub struct SrtpContext {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_streams: HashMap<u32, RtpStream>,
    rtcp_windows: HashMap<u32, ReplayWindow>,
    /// SRTCP index of the next packet sent (one counter for every SSRC:
    /// unique nonces, and receivers see it increase per SSRC).
    next_rtcp_index: u32,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("rtp_streams", &self.rtp_streams.len())
            .field("next_rtcp_index", &self.next_rtcp_index)
            .finish_non_exhaustive()
    }
}

/// Length of the RTP header including CSRCs and extension (RFC 3550
/// section 5.3.1): the part SRTP authenticates but does not encrypt.
fn rtp_header_len(p: &[u8]) -> Result<usize, SrtpError> {
    if p.len() < RTP_HEADER_LEN {
        return Err(SrtpError::Truncated);
    }
    let mut len = RTP_HEADER_LEN + 4 * (p[0] & 0x0f) as usize;
    if p[0] & 0x10 != 0 {
        let ext = p.get(len + 2..len + 4).ok_or(SrtpError::Truncated)?;
        len += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    if len > p.len() {
        return Err(SrtpError::Truncated);
    }
    Ok(len)
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

impl SrtpContext {
    /// Derives the SRTP and SRTCP session keys from a master key.
    pub fn new(master: &MasterKey) -> SrtpContext {
        SrtpContext::with_session_keys(
            SessionKeys::derived(master, LABEL_RTP_KEY, LABEL_RTP_SALT),
            SessionKeys::derived(master, LABEL_RTCP_KEY, LABEL_RTCP_SALT),
        )
    }

    fn with_session_keys(rtp: SessionKeys, rtcp: SessionKeys) -> SrtpContext {
        SrtpContext {
            rtp,
            rtcp,
            rtp_streams: HashMap::new(),
            rtcp_windows: HashMap::new(),
            next_rtcp_index: 0,
        }
    }

    /// Encrypts and tags one RTP packet. The result is [`TAG_LEN`] longer.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        let header = rtp_header_len(packet)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32_at(packet, 8);
        // The sender runs the receiver's estimate on its own stream too, so
        // reordered input (a relay forwards what it gets) keeps its ROC. A
        // relay does not choose its sequence numbers: a duplicate, or an
        // upstream that restarts its sequence on the same SSRC, would map to
        // an index already used. GCM must never see a nonce twice, so such
        // packets are refused here (the receiver would refuse them as
        // replays anyway).
        let index = match self.rtp_streams.get(&ssrc) {
            Some(s) => {
                let index = s.estimate(seq);
                s.window.check(index).map_err(|_| SrtpError::WouldReuseIndex)?;
                index
            }
            None => seq as u64,
        };
        if index > MAX_RTP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let mut out = BytesMut::with_capacity(packet.len() + TAG_LEN);
        out.extend_from_slice(packet);
        let (aad, payload) = out.split_at_mut(header);
        let tag = self
            .rtp
            .aead
            .seal_in_place_separate_tag(self.rtp.nonce(ssrc, index), Aad::from(&*aad), payload)
            .map_err(|_| SrtpError::IndexExhausted)?;
        out.put_slice(tag.as_ref());
        self.accept_rtp(ssrc, index);
        Ok(out.freeze())
    }

    /// Moves `ssrc`'s replay window past `index` (a new SSRC starts one).
    fn accept_rtp(&mut self, ssrc: u32, index: u64) {
        self.rtp_streams
            .entry(ssrc)
            .and_modify(|s| s.window.accept(index))
            .or_insert_with(|| RtpStream {
                window: ReplayWindow::new(index),
            });
    }

    /// Verifies, replay-checks and decrypts one SRTP packet.
    pub fn unprotect_rtp(&mut self, wire: &[u8]) -> Result<Bytes, SrtpError> {
        self.unprotect_rtp_in_place(BytesMut::from(wire))
    }

    /// [`unprotect_rtp`](Self::unprotect_rtp) on a buffer it may decrypt
    /// in place: the receive path's own datagram, so nothing is copied.
    pub fn unprotect_rtp_in_place(&mut self, mut wire: BytesMut) -> Result<Bytes, SrtpError> {
        let header = rtp_header_len(&wire)?;
        if wire.len() < header + TAG_LEN {
            return Err(SrtpError::Truncated);
        }
        let seq = u16::from_be_bytes([wire[2], wire[3]]);
        let ssrc = u32_at(&wire, 8);
        let stream = self.rtp_streams.get(&ssrc).copied();
        let index = match stream {
            Some(s) => {
                let index = s.estimate(seq);
                s.window.check(index)?;
                index
            }
            // RFC 3711 section 3.3.1: a new stream starts with ROC 0.
            None => seq as u64,
        };
        let body_end = wire.len() - TAG_LEN;
        let tag = Tag::try_from(&wire[body_end..]).map_err(|_| SrtpError::Truncated)?;
        wire.truncate(body_end);
        let (aad, payload) = wire.split_at_mut(header);
        self.rtp
            .aead
            .open_in_place_separate_tag(self.rtp.nonce(ssrc, index), Aad::from(&*aad), tag, payload, 0..)
            .map_err(|_| SrtpError::AuthenticationFailed)?;
        self.accept_rtp(ssrc, index);
        Ok(wire.freeze())
    }

    /// Encrypts and tags one RTCP packet (compound packets are one unit).
    /// The result is [`TAG_LEN`] + 4 longer.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        let index = self.next_rtcp_index;
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let out = self.protect_rtcp_with_index(packet, index)?;
        self.next_rtcp_index += 1;
        Ok(out)
    }

    fn protect_rtcp_with_index(&self, packet: &[u8], index: u32) -> Result<Bytes, SrtpError> {
        if packet.len() < RTCP_HEADER_LEN {
            return Err(SrtpError::Truncated);
        }
        let ssrc = u32_at(packet, 4);
        // RFC 7714 section 9: E = 1 (encrypted), AAD = header || E|index.
        let e_index = (1u32 << 31) | index;
        let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
        aad[..RTCP_HEADER_LEN].copy_from_slice(&packet[..RTCP_HEADER_LEN]);
        aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index.to_be_bytes());
        let mut out = BytesMut::with_capacity(packet.len() + TAG_LEN + SRTCP_INDEX_LEN);
        out.extend_from_slice(packet);
        let tag = self
            .rtcp
            .aead
            .seal_in_place_separate_tag(
                self.rtcp.nonce(ssrc, index as u64),
                Aad::from(aad),
                &mut out[RTCP_HEADER_LEN..],
            )
            .map_err(|_| SrtpError::IndexExhausted)?;
        out.put_slice(tag.as_ref());
        out.put_u32(e_index);
        Ok(out.freeze())
    }

    /// Verifies, replay-checks and decrypts one SRTCP packet. Packets sent
    /// with E = 0 (authenticated, not encrypted; RFC 7714 section 9.2) are
    /// accepted too.
    pub fn unprotect_rtcp(&mut self, wire: &[u8]) -> Result<Bytes, SrtpError> {
        self.unprotect_rtcp_in_place(BytesMut::from(wire))
    }

    /// [`unprotect_rtcp`](Self::unprotect_rtcp) on a buffer it may decrypt
    /// in place.
    pub fn unprotect_rtcp_in_place(&mut self, mut wire: BytesMut) -> Result<Bytes, SrtpError> {
        if wire.len() < RTCP_HEADER_LEN + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(SrtpError::Truncated);
        }
        let ssrc = u32_at(&wire, 4);
        let e_index = u32_at(&wire, wire.len() - SRTCP_INDEX_LEN);
        let encrypted = e_index >> 31 == 1;
        let index = (e_index & MAX_RTCP_INDEX) as u64;
        if let Some(w) = self.rtcp_windows.get(&ssrc) {
            w.check(index)?;
        }
        let body_end = wire.len() - SRTCP_INDEX_LEN - TAG_LEN;
        let tag = Tag::try_from(&wire[body_end..body_end + TAG_LEN]).map_err(|_| SrtpError::Truncated)?;
        let nonce = self.rtcp.nonce(ssrc, index);
        let opened = if encrypted {
            let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
            aad[..RTCP_HEADER_LEN].copy_from_slice(&wire[..RTCP_HEADER_LEN]);
            aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index.to_be_bytes());
            self.rtcp
                .aead
                .open_in_place_separate_tag(
                    nonce,
                    Aad::from(aad),
                    tag,
                    &mut wire[RTCP_HEADER_LEN..body_end],
                    0..,
                )
                .map(|_| ())
        } else {
            // The whole packet and the index word are associated data.
            let mut aad = Vec::with_capacity(body_end + SRTCP_INDEX_LEN);
            aad.extend_from_slice(&wire[..body_end]);
            aad.extend_from_slice(&e_index.to_be_bytes());
            self.rtcp
                .aead
                .open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut [], 0..)
                .map(|_| ())
        };
        opened.map_err(|_| SrtpError::AuthenticationFailed)?;
        self.rtcp_windows
            .entry(ssrc)
            .and_modify(|w| w.accept(index))
            .or_insert_with(|| ReplayWindow::new(index));
        wire.truncate(body_end);
        Ok(wire.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::{arr, unhex};

    /// RFC 7714 sections 16 and 17 give session keys directly.
    fn rfc7714_context() -> SrtpContext {
        let key = arr::<16>("000102030405060708090a0b0c0d0e0f");
        let salt = arr::<12>("517569642070726f2071756f"); // "Quid pro quo"
        SrtpContext::with_session_keys(SessionKeys::new(&key, salt), SessionKeys::new(&key, salt))
    }

    // RFC 7714 section 16.1: SSRC 0x5501a0b2, SEQ 0xf17b, ROC 0,
    // "Gallia est omnis divisa in partes tres".
    const RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
        20646976 69736120 696e2070 61727465 73207472 6573";
    const RTP_PROTECTED: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
        be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce";

    // RFC 7714 section 17.1 (AEAD_AES_128_GCM, E = 1) and 17.3 (E = 0),
    // SRTCP index 0x5d4.
    const RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
    const RTCP_PROTECTED: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
        6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade
        800005d4";
    const RTCP_TAGGED_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3
        000005d4";

    #[test]
    fn rfc7714_16_1_srtp_protect_and_unprotect() {
        let wire = rfc7714_context().protect_rtp(&unhex(RTP_PLAIN)).unwrap();
        assert_eq!(wire.to_vec(), unhex(RTP_PROTECTED));
        let plain = rfc7714_context().unprotect_rtp(&unhex(RTP_PROTECTED)).unwrap();
        assert_eq!(plain.to_vec(), unhex(RTP_PLAIN));
    }

    #[test]
    fn rfc7714_17_1_srtcp_protect_and_unprotect() {
        let wire = rfc7714_context()
            .protect_rtcp_with_index(&unhex(RTCP_PLAIN), 0x5d4)
            .unwrap();
        assert_eq!(wire.to_vec(), unhex(RTCP_PROTECTED));
        let plain = rfc7714_context().unprotect_rtcp(&unhex(RTCP_PROTECTED)).unwrap();
        assert_eq!(plain.to_vec(), unhex(RTCP_PLAIN));
    }

    #[test]
    fn rfc7714_17_3_srtcp_authenticated_but_not_encrypted() {
        let plain = rfc7714_context()
            .unprotect_rtcp(&unhex(RTCP_TAGGED_ONLY))
            .unwrap();
        assert_eq!(plain.to_vec(), unhex(RTCP_PLAIN));
        let mut tampered = unhex(RTCP_TAGGED_ONLY);
        tampered[20] ^= 1;
        assert_eq!(
            rfc7714_context().unprotect_rtcp(&tampered),
            Err(SrtpError::AuthenticationFailed)
        );
    }

    #[test]
    fn every_tampered_byte_fails_authentication() {
        for wire in [unhex(RTP_PROTECTED), unhex(RTCP_PROTECTED)] {
            for i in 0..wire.len() {
                let mut t = wire.clone();
                t[i] ^= 0x40;
                let mut ctx = rfc7714_context();
                let r = if wire[1] == 0xc8 {
                    ctx.unprotect_rtcp(&t)
                } else {
                    ctx.unprotect_rtp(&t)
                };
                // Flipping the CSRC count or X bit can make the header
                // longer than the packet: refused as truncated instead.
                assert!(
                    matches!(r, Err(SrtpError::AuthenticationFailed | SrtpError::Truncated)),
                    "byte {i}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn truncated_packets_are_errors_not_panics() {
        let rtp = unhex(RTP_PROTECTED);
        let rtcp = unhex(RTCP_PROTECTED);
        let mut ctx = rfc7714_context();
        for n in 0..RTP_HEADER_LEN + TAG_LEN {
            assert!(ctx.unprotect_rtp(&rtp[..n]).is_err(), "{n}");
        }
        for n in 0..RTCP_HEADER_LEN + TAG_LEN + SRTCP_INDEX_LEN {
            assert_eq!(ctx.unprotect_rtcp(&rtcp[..n]), Err(SrtpError::Truncated), "{n}");
        }
        // A header extension longer than the packet.
        let mut ext = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff];
        ext.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(ctx.unprotect_rtp(&ext), Err(SrtpError::Truncated));
        assert_eq!(ctx.protect_rtp(&ext[..16]), Err(SrtpError::Truncated));
        assert_eq!(ctx.protect_rtcp(&[0x80, 200, 0]), Err(SrtpError::Truncated));
    }

    fn pair() -> (SrtpContext, SrtpContext) {
        let key = MasterKey::generate();
        (SrtpContext::new(&key), SrtpContext::new(&key))
    }

    fn rtp(seq: u16) -> Vec<u8> {
        relay_core::build_rtp(96, seq, seq as u32 * 3000, 0xfeed, b"payload").to_vec()
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_not() {
        let (mut tx, mut rx) = pair();
        let wires: Vec<Bytes> = (0..300u16).map(|s| tx.protect_rtp(&rtp(s)).unwrap()).collect();
        // Deliver 0..200, skipping 150, then replay some.
        for (i, w) in wires[..200].iter().enumerate() {
            if i != 150 {
                assert_eq!(rx.unprotect_rtp(w).unwrap().to_vec(), rtp(i as u16));
            }
        }
        assert_eq!(rx.unprotect_rtp(&wires[199]), Err(SrtpError::Replayed));
        assert_eq!(rx.unprotect_rtp(&wires[100]), Err(SrtpError::Replayed));
        // 150 is late but inside the window: accepted once.
        assert!(rx.unprotect_rtp(&wires[150]).is_ok());
        assert_eq!(rx.unprotect_rtp(&wires[150]), Err(SrtpError::Replayed));
        // Older than the window: refused even though never seen.
        assert_eq!(rx.unprotect_rtp(&wires[60]), Err(SrtpError::Replayed));
        // A forged packet does not advance the window.
        let mut forged = wires[299].to_vec();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(rx.unprotect_rtp(&forged), Err(SrtpError::AuthenticationFailed));
        assert!(rx.unprotect_rtp(&wires[200]).is_ok());

        // An empty receiver report from SSRC 0xfeed.
        let rtcp = Bytes::from_static(&[0x80, 201, 0, 1, 0, 0, 0xfe, 0xed]);
        let first = tx.protect_rtcp(&rtcp).unwrap();
        let second = tx.protect_rtcp(&rtcp).unwrap();
        assert_ne!(first, second, "each SRTCP packet gets its own index");
        assert_eq!(rx.unprotect_rtcp(&second).unwrap(), rtcp);
        assert_eq!(rx.unprotect_rtcp(&first).unwrap(), rtcp, "reordered, in window");
        assert_eq!(rx.unprotect_rtcp(&first), Err(SrtpError::Replayed));
    }

    #[test]
    fn rollover_counter_follows_the_sequence_number_across_65535_to_0() {
        let (mut tx, mut rx) = pair();
        let seqs = [
            65_530u16, 65_533, 65_535, 0, 65_534, 2, 30_000, 60_000, 65_000, 100,
        ];
        // 65534 after 0 is a late packet from ROC 0; steps of under half
        // the sequence space (30000, 60000, 65000) stay in ROC 1, and 100
        // after 65000 is ROC 2.
        let mut expected_index = Vec::new();
        for &s in &seqs {
            let w = tx.protect_rtp(&rtp(s)).unwrap();
            let plain = rx.unprotect_rtp(&w).unwrap();
            assert_eq!(plain.to_vec(), rtp(s));
            expected_index.push(rx.rtp_streams[&0xfeed].window.highest);
        }
        assert_eq!(rx.rtp_streams[&0xfeed].window.highest, (2 << 16) | 100);
        assert_eq!(expected_index[3], 1 << 16, "0 after 65535 is ROC 1");
        assert_eq!(
            expected_index[4],
            1 << 16,
            "a late 65534 does not move the highest index"
        );
        // The nonce includes the ROC: the same sequence number in another
        // cycle does not decrypt under the old index.
        let mut other = SrtpContext::new(&MasterKey::new([1; 16], [2; 12]));
        let mut peer = SrtpContext::new(&MasterKey::new([1; 16], [2; 12]));
        for s in [65_535u16, 0] {
            let w = other.protect_rtp(&rtp(s)).unwrap();
            if s == 0 {
                // A receiver that missed the wrap (first packet seen) assumes
                // ROC 0 and fails to authenticate instead of accepting garbage.
                assert_eq!(peer.unprotect_rtp(&w), Err(SrtpError::AuthenticationFailed));
            }
        }
    }

    #[test]
    fn the_sender_never_reuses_an_index() {
        let (mut tx, mut rx) = pair();
        for seq in 1000..1200u16 {
            rx.unprotect_rtp(&tx.protect_rtp(&rtp(seq)).unwrap()).unwrap();
        }
        // A duplicate with other content would reuse the nonce.
        let other = relay_core::build_rtp(96, 1199, 0, 0xfeed, b"different");
        assert_eq!(tx.protect_rtp(&other), Err(SrtpError::WouldReuseIndex));
        // So would an upstream restart below the window (index unknown-used).
        assert_eq!(tx.protect_rtp(&rtp(1000)), Err(SrtpError::WouldReuseIndex));
        // A late packet never sent, inside the window, is fine, once.
        let mut tx2 = SrtpContext::new(&MasterKey::new([3; 16], [4; 12]));
        for seq in [10u16, 12] {
            tx2.protect_rtp(&rtp(seq)).unwrap();
        }
        assert!(tx2.protect_rtp(&rtp(11)).is_ok());
        assert_eq!(tx2.protect_rtp(&rtp(11)), Err(SrtpError::WouldReuseIndex));
        // The refusals did not move the stream: the next packet flows.
        rx.unprotect_rtp(&tx.protect_rtp(&rtp(1200)).unwrap()).unwrap();
    }
}
