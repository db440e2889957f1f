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

mod context;
mod keys;
mod replay;

pub use context::SrtpContext;
pub use keys::{ControlAuth, MasterKey, keepalive_key};

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

/// Test vectors as the RFCs print them (hex, spaced), for the key and
/// context tests.
#[cfg(test)]
fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().unwrap()
}
