//! SRTP and SRTCP with AEAD_AES_128_GCM (RFC 7714), sans-IO.
//!
//! One [`SrtpContext`] holds the session keys derived from one master key
//! and salt (RFC 3711 section 4.3, AES-CM PRF, key derivation rate 0) and
//! the per-SSRC state that protection needs: the rollover counter of each
//! RTP stream (RFC 3711 section 3.3.1) and a 128-packet replay window for
//! RTP and for RTCP (section 3.3.2). A link uses two: its own master key
//! protects what it sends, the peer's master key unprotects what arrives
//! (as SDES and mediasoup's PipeTransport `srtpParameters` do).
//!
//! Wire formats (RFC 7714 sections 8 and 9):
//!
//! ```text
//! SRTP:  RTP header (authenticated) | payload (encrypted) | 16-byte tag
//! SRTCP: 8-byte header (authenticated) | rest (encrypted) | 16-byte tag | E(1) index(31)
//! ```
//!
//! The 12-byte GCM nonce is the session salt XORed with
//! `00 00 | SSRC | ROC | SEQ` (SRTP) or `00 00 | SSRC | 00 00 | index` (SRTCP).
//!
//! ```
//! use rtp_udp_relay::srtp::{MasterKey, SrtpContext};
//! let key = MasterKey::generate();
//! let (mut sender, mut receiver) = (SrtpContext::new(&key), SrtpContext::new(&key));
//! let rtp = relay_core::build_rtp(96, 1, 0, 0x1234, b"media");
//! let wire = sender.protect_rtp(&rtp).unwrap();
//! assert_eq!(wire.len(), rtp.len() + 16);
//! assert_eq!(receiver.unprotect_rtp(&wire).unwrap(), rtp);
//! assert!(receiver.unprotect_rtp(&wire).is_err(), "a replay is refused");
//! ```

use std::collections::HashMap;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The one suite offered, as SDES (RFC 7714 section 14.2) and mediasoup name it.
pub const SUITE: &str = "AEAD_AES_128_GCM";
/// Master key length for [`SUITE`].
pub const MASTER_KEY_LEN: usize = 16;
/// Master salt length for [`SUITE`] (RFC 7714 section 11: 96 bits).
pub const MASTER_SALT_LEN: usize = 12;
/// The GCM authentication tag appended to every SRTP and SRTCP packet.
pub const TAG_LEN: usize = 16;
/// The E flag and SRTCP index word after the tag.
const SRTCP_INDEX_LEN: usize = 4;
/// RFC 3711 section 3.3.2: the minimum replay window is 64; 128 rides out
/// the reordering a congested path produces at video packet rates.
pub const REPLAY_WINDOW: u64 = 128;
const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
/// RFC 3711 section 3.2.1: SRTP packet index is 48 bits.
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
/// RFC 3711 section 3.4: SRTCP index is 31 bits.
const MAX_RTCP_INDEX: u32 = (1 << 31) - 1;

// RFC 3711 section 4.3.2 labels.
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_KEY: u8 = 0x03;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Why bytes were not accepted (or could not be protected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Shorter than its header, its header extension, or header plus tag.
    #[error("packet too short for SRTP/SRTCP")]
    Truncated,
    /// The tag did not verify: wrong key, tampered, or not SRTP at all.
    #[error("SRTP/SRTCP authentication failed")]
    AuthenticationFailed,
    /// Authentic, but already received or older than the replay window.
    #[error("SRTP/SRTCP packet replayed or older than the replay window")]
    Replayed,
    /// Sending: this SSRC and sequence number were already protected, or
    /// are older than the replay window. Protecting the packet would reuse
    /// a GCM nonce (which would expose the authentication key), and the
    /// receiver would refuse it as a replay anyway, so it is not sent.
    #[error(
        "RTP sequence number already sent or older than the replay window; not protected (GCM nonce reuse)"
    )]
    WouldReuseIndex,
    /// The packet index space is used up; the link must be re-keyed.
    #[error("SRTP/SRTCP packet index exhausted; re-key the link")]
    IndexExhausted,
}

/// Why a signaled key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Another suite than [`SUITE`].
    #[error("unsupported SRTP suite {0:?}; supported: {SUITE}")]
    UnsupportedSuite(String),
    /// Not base64.
    #[error("SRTP key is not base64")]
    NotBase64,
    /// Decoded to the wrong length.
    #[error("SRTP key is {0} bytes; {SUITE} needs {need} (16-byte master key, 12-byte master salt)", need = MASTER_KEY_LEN + MASTER_SALT_LEN)]
    BadLength(usize),
}

/// A master key and salt: what one side signals and protects with.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (it ends up in logs).
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From raw parts.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> MasterKey {
        MasterKey { key, salt }
    }

    /// A fresh random key and salt from the operating system's CSPRNG.
    pub fn generate() -> MasterKey {
        let mut both = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        SystemRandom::new()
            .fill(&mut both)
            .expect("the operating system's random source failed");
        MasterKey::from_bytes(&both).expect("length is right by construction")
    }

    fn from_bytes(b: &[u8]) -> Result<MasterKey, KeyError> {
        if b.len() != MASTER_KEY_LEN + MASTER_SALT_LEN {
            return Err(KeyError::BadLength(b.len()));
        }
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        key.copy_from_slice(&b[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&b[MASTER_KEY_LEN..]);
        Ok(MasterKey { key, salt })
    }

    /// Parses the signaled form: `suite` must be [`SUITE`], `key` is base64
    /// of master key || master salt (28 bytes), as SDES inline keys are.
    pub fn from_signaled(suite: &str, key: &str) -> Result<MasterKey, KeyError> {
        if suite != SUITE {
            return Err(KeyError::UnsupportedSuite(suite.to_string()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| KeyError::NotBase64)?;
        MasterKey::from_bytes(&bytes)
    }

    /// The signaled form of the key (base64 of key || salt).
    pub fn to_base64(&self) -> String {
        let mut both = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        both[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        both[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        base64::engine::general_purpose::STANDARD.encode(both)
    }
}

/// Authenticates the goodbye in srtp mode: HMAC-SHA-256 under a key derived from the sender's
/// master key with a label outside RFC 3711's range (0..=5), so it is
/// independent of the SRTP session keys.
pub struct ControlAuth {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for ControlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlAuth(..)")
    }
}

/// Private KDF label for [`ControlAuth`] (the goodbye).
const LABEL_CONTROL: u8 = 0xC0;
/// Private KDF label for [`keepalive_key`]: another purpose, another key.
const LABEL_KEEPALIVE: u8 = 0xC1;
const CONTROL_CONTEXT: &[u8] = b"sfu-relay goodbye";

/// The MESSAGE-INTEGRITY-SHA256 key of the keepalive probes and replies
/// sent under `master` (see [`crate::stun`]): 32 bytes of the RFC 3711
/// key derivation with the private label 0xC1, as the goodbye's key uses
/// 0xC0 and SRTP's session keys 0x00..=0x05. Each side signs with the key
/// from its own master key and checks with the one from the peer's, so the
/// two directions, the goodbye and the media all have independent keys.
///
/// ```
/// use rtp_udp_relay::srtp::{MasterKey, keepalive_key};
/// use rtp_udp_relay::stun::{self, Control};
/// let ours = MasterKey::generate();
/// let wire = stun::encode_with_integrity(&Control::Probe([1; 12]), &keepalive_key(&ours));
/// // The peer checks with the key it derives from our signaled master key.
/// assert!(stun::verify_integrity(&wire, &keepalive_key(&ours)).is_ok());
/// assert!(stun::verify_integrity(&wire, &keepalive_key(&MasterKey::generate())).is_err());
/// ```
pub fn keepalive_key(master: &MasterKey) -> crate::stun::IntegrityKey {
    let mut k = [0u8; 32];
    derive(&master.key, &master.salt, LABEL_KEEPALIVE, &mut k);
    crate::stun::IntegrityKey::new(&k)
}

impl ControlAuth {
    /// The authenticator for messages sent under `master`.
    pub fn new(master: &MasterKey) -> ControlAuth {
        let mut k = [0u8; 32];
        derive(&master.key, &master.salt, LABEL_CONTROL, &mut k);
        ControlAuth {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k),
        }
    }

    /// The tag for a message with this STUN transaction id.
    pub fn sign(&self, txid: &[u8; 12]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(CONTROL_CONTEXT);
        ctx.update(txid);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is [`sign`](Self::sign)'s output (constant time).
    pub fn verify(&self, txid: &[u8; 12], tag: &[u8]) -> bool {
        let mut msg = [0u8; CONTROL_CONTEXT.len() + 12];
        msg[..CONTROL_CONTEXT.len()].copy_from_slice(CONTROL_CONTEXT);
        msg[CONTROL_CONTEXT.len()..].copy_from_slice(txid);
        ring::hmac::verify(&self.key, &msg, tag).is_ok()
    }
}

/// RFC 3711 section 4.3.1/4.3.3 with key derivation rate 0: the AES-CM
/// keystream under the master key, starting at the counter block
/// `(master_salt XOR label << 48) || 0x0000`.
fn derive(master_key: &[u8; MASTER_KEY_LEN], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(master_key));
    let mut iv = [0u8; 16];
    // The salt is left-aligned in the 112-bit x (a 96-bit GCM salt is
    // padded with zeros, RFC 7714 section 11); the label lands in byte 7.
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = iv;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        let mut block = GenericArray::from(block);
        aes.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// One direction's GCM key and salt.
struct SessionKeys {
    aead: LessSafeKey,
    salt: [u8; 12],
}

impl SessionKeys {
    fn new(key: &[u8; 16], salt: [u8; 12]) -> SessionKeys {
        let unbound = UnboundKey::new(&AES_128_GCM, key).expect("16 bytes is an AES-128 key");
        SessionKeys {
            aead: LessSafeKey::new(unbound),
            salt,
        }
    }

    fn derived(master: &MasterKey, key_label: u8, salt_label: u8) -> SessionKeys {
        let mut key = [0u8; 16];
        let mut salt = [0u8; 12];
        derive(&master.key, &master.salt, key_label, &mut key);
        derive(&master.key, &master.salt, salt_label, &mut salt);
        SessionKeys::new(&key, salt)
    }

    /// RFC 7714 sections 8.1 and 9.1: salt XOR (00 00 | SSRC | 48-bit index).
    fn nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

/// RFC 3711 section 3.3.2: the highest index seen and a bitmap of the
/// [`REPLAY_WINDOW`] indices below it (bit i = highest - i was received).
#[derive(Debug, Clone, Copy)]
struct ReplayWindow {
    highest: u64,
    seen: u128,
}

impl ReplayWindow {
    fn new(first: u64) -> ReplayWindow {
        ReplayWindow {
            highest: first,
            seen: 1,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= REPLAY_WINDOW || self.seen & (1u128 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Only after the packet authenticated, so forgeries cannot move it.
    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1u128 << (self.highest - index);
        }
    }
}

/// The rollover counter and replay state of one RTP stream.
#[derive(Debug, Clone, Copy)]
struct RtpStream {
    window: ReplayWindow,
}

impl RtpStream {
    /// RFC 3711 section 3.3.1 (appendix A): the index whose sequence number
    /// is `seq` closest to the highest index so far.
    fn estimate(&self, seq: u16) -> u64 {
        let highest = self.window.highest;
        let roc = highest >> 16;
        let s_l = (highest & 0xffff) as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                // Late packet from the previous cycle; there is none before 0.
                roc.checked_sub(1).unwrap_or(roc)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        (v << 16) | seq as u64
    }
}

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

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        unhex(s).try_into().unwrap()
    }

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
    fn rfc3711_b3_key_derivation() {
        let key = arr::<16>("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = unhex("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0u8; 16];
        let mut cipher_salt = [0u8; 14];
        let mut auth_key = [0u8; 94];
        derive(&key, &salt, 0x00, &mut cipher_key);
        derive(&key, &salt, 0x02, &mut cipher_salt);
        derive(&key, &salt, 0x01, &mut auth_key);
        assert_eq!(cipher_key.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(cipher_salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth_key.to_vec(),
            unhex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

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

    #[test]
    fn signaled_keys_round_trip_and_bad_ones_are_refused() {
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_signaled(SUITE, &k.to_base64()).unwrap(), k);
        assert_eq!(k.to_base64().len(), 40);
        assert!(matches!(
            MasterKey::from_signaled("AES_CM_128_HMAC_SHA1_80", &k.to_base64()),
            Err(KeyError::UnsupportedSuite(_))
        ));
        assert_eq!(
            MasterKey::from_signaled(SUITE, "not base64!"),
            Err(KeyError::NotBase64)
        );
        assert_eq!(
            MasterKey::from_signaled(SUITE, "AAAA"),
            Err(KeyError::BadLength(3))
        );
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
        assert_ne!(MasterKey::generate(), k);
    }

    #[test]
    fn keepalive_goodbye_and_srtp_keys_are_independent() {
        let k = MasterKey::new([0x11; 16], [0x22; 12]);
        let mut keys = Vec::new();
        for label in [
            LABEL_RTP_KEY,
            LABEL_RTP_SALT,
            LABEL_RTCP_KEY,
            LABEL_RTCP_SALT,
            LABEL_CONTROL,
            LABEL_KEEPALIVE,
        ] {
            let mut out = [0u8; 32];
            derive(&k.key, &k.salt, label, &mut out);
            keys.push(out);
        }
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a[..16], b[..16]);
            }
        }
        // A keepalive tag does not verify under the peer's key.
        let msg = crate::stun::Control::Probe([1; 12]);
        let wire = crate::stun::encode_with_integrity(&msg, &keepalive_key(&k));
        assert!(crate::stun::verify_integrity(&wire, &keepalive_key(&k)).is_ok());
        let other = MasterKey::new([0x11; 16], [0x23; 12]);
        assert!(crate::stun::verify_integrity(&wire, &keepalive_key(&other)).is_err());
    }

    #[test]
    fn control_tags_verify_only_under_the_same_key_and_txid() {
        let k = MasterKey::generate();
        let (a, b) = (ControlAuth::new(&k), ControlAuth::new(&k));
        let tag = a.sign(&[1; 12]);
        assert!(b.verify(&[1; 12], &tag));
        assert!(!b.verify(&[2; 12], &tag));
        assert!(!b.verify(&[1; 12], &tag[..16]));
        assert!(!ControlAuth::new(&MasterKey::generate()).verify(&[1; 12], &tag));
    }
}
