//! [`Fingerprint`]: the SHA-256 certificate fingerprint that identifies a
//! peer without a certificate authority: quic-relay pins the QUIC
//! certificate with it, relay-signaling the HTTPS certificate, the way
//! DTLS-SRTP pins `a=fingerprint` (RFC 8122 section 5).

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// A SHA-256 certificate fingerprint, written as SDP writes it
/// (RFC 8122 section 5): `sha-256 AB:CD:…` (32 upper-case hex pairs).
///
/// ```
/// use relay_core::Fingerprint;
/// let fp = Fingerprint::of_der(b"any DER bytes");
/// let text = fp.to_string();
/// assert!(text.starts_with("sha-256 "));
/// assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
/// assert_eq!(fp.hex().parse::<Fingerprint>().unwrap(), fp);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// The 32 digest bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in constant time, so a peer probing with crafted
    /// certificates learns nothing from timing.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The hex pairs alone, `AB:CD:…` (no spaces: fits a `key=value`
    /// status line, and parses back).
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(95);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&format!("{b:02X}"));
        }
        out
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha-256 {}", self.hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not a `sha-256 XX:XX:…` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate fingerprint {value:?}: {reason}")]
pub struct InvalidFingerprint {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Fingerprint {
    type Err = InvalidFingerprint;

    /// Parses `sha-256 AB:CD:…` (the hash name case-insensitive: SDP
    /// writes `sha-256`, some stacks `SHA-256`), hex digits either case.
    /// Also takes the bare hex pairs, and what
    /// `openssl x509 -noout -fingerprint -sha256` prints
    /// (`sha256 Fingerprint=AB:CD:…`), so an operator can paste either.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| InvalidFingerprint {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        let hex = if let Some((label, hex)) = text.split_once('=') {
            if !label.trim().eq_ignore_ascii_case("sha256 fingerprint") {
                return Err(bad("expected \"sha-256 XX:XX:…\""));
            }
            hex
        } else if let Some((hash, hex)) = text.split_once(' ') {
            if !(hash.eq_ignore_ascii_case("sha-256") || hash.eq_ignore_ascii_case("sha256")) {
                return Err(bad("only sha-256 fingerprints are supported"));
            }
            hex
        } else if text.contains(':') {
            text
        } else {
            return Err(bad("expected \"sha-256 XX:XX:…\""));
        };
        let mut out = [0u8; 32];
        let mut n = 0;
        for pair in hex.trim().split(':') {
            if n == 32 {
                return Err(bad("more than 32 bytes"));
            }
            if pair.len() != 2 {
                return Err(bad("each byte must be two hex digits"));
            }
            // Checked first: from_str_radix alone would take "+A".
            if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("not hex"));
            }
            out[n] = u8::from_str_radix(pair, 16).map_err(|_| bad("not hex"))?;
            n += 1;
        }
        if n != 32 {
            return Err(bad("fewer than 32 bytes"));
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form_parses_to_the_same_fingerprint() {
        let fp = Fingerprint::of_der(b"cert");
        let hex = fp.hex();
        for text in [
            fp.to_string(),
            format!("SHA-256 {}", hex.to_lowercase()),
            format!("sha256 {hex}"),
            format!("sha256 Fingerprint={hex}"),
            format!("  {hex}  "),
        ] {
            assert_eq!(text.parse::<Fingerprint>(), Ok(fp), "{text}");
        }
    }

    #[test]
    fn malformed_fingerprints_say_why() {
        let hex = Fingerprint::of_der(b"cert").hex();
        let signed = format!("+A{}", &hex[2..]);
        for (text, why) in [
            ("", "expected \"sha-256"),
            ("AB", "expected \"sha-256"),
            ("nonsense", "expected \"sha-256"),
            ("md5 Fingerprint=AB", "expected \"sha-256"),
            ("sha-1 AB:CD", "only sha-256"),
            ("sha-256 AB:CD", "fewer than 32"),
            (&hex[..hex.len() - 3], "fewer than 32"),
            (&format!("{hex}:00"), "more than 32"),
            ("sha-256 ABC:CD", "two hex digits"),
            ("sha-256 ZZ", "not hex"),
            (&signed, "not hex"),
            (&format!("{}G", &hex[..hex.len() - 1]), "not hex"),
        ] {
            let e = text.parse::<Fingerprint>().unwrap_err();
            assert!(e.reason.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn matching_is_equality() {
        let (a, b) = (Fingerprint::of_der(b"a"), Fingerprint::of_der(b"b"));
        assert!(a.matches(&a) && !a.matches(&b));
    }
}
