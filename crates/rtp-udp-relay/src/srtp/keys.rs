//! Keys derived from a master key (RFC 3711 section 4.3): the SRTP and
//! SRTCP session keys, and the private-label keys that authenticate the
//! goodbye and the keepalives.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use ring::aead::{AES_128_GCM, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::{KeyError, MASTER_KEY_LEN, MASTER_SALT_LEN, SUITE};

// RFC 3711 section 4.3.2 labels.
pub(super) const LABEL_RTP_KEY: u8 = 0x00;
pub(super) const LABEL_RTP_SALT: u8 = 0x02;
pub(super) const LABEL_RTCP_KEY: u8 = 0x03;
pub(super) const LABEL_RTCP_SALT: u8 = 0x05;

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
pub(super) struct SessionKeys {
    pub(super) aead: LessSafeKey,
    salt: [u8; 12],
}

impl SessionKeys {
    pub(super) fn new(key: &[u8; 16], salt: [u8; 12]) -> SessionKeys {
        let unbound = UnboundKey::new(&AES_128_GCM, key).expect("16 bytes is an AES-128 key");
        SessionKeys {
            aead: LessSafeKey::new(unbound),
            salt,
        }
    }

    pub(super) fn derived(master: &MasterKey, key_label: u8, salt_label: u8) -> SessionKeys {
        let mut key = [0u8; 16];
        let mut salt = [0u8; 12];
        derive(&master.key, &master.salt, key_label, &mut key);
        derive(&master.key, &master.salt, salt_label, &mut salt);
        SessionKeys::new(&key, salt)
    }

    /// RFC 7714 sections 8.1 and 9.1: salt XOR (00 00 | SSRC | 48-bit index).
    pub(super) fn nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::{arr, unhex};

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
