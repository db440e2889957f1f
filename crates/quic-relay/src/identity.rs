//! Identity without a CA: a self-signed certificate per side, and TLS
//! verifiers that accept exactly the certificate whose SHA-256 fingerprint
//! was signaled — the model of DTLS-SRTP's `a=fingerprint` (RFC 8122
//! section 5) applied to QUIC's TLS 1.3 (RFC 9001).
//!
//! Pinning replaces the chain-of-trust check, not the handshake check: the
//! verifiers still verify the TLS 1.3 CertificateVerify signature (RFC 8446
//! section 4.4.3) with the ring provider, which proves the peer holds the
//! private key of the pinned certificate.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use subtle::ConstantTimeEq;

use crate::QuicError;

/// The name in our certificates and the SNI the offerer sends. Nothing
/// checks it: the fingerprint is the identity.
pub(crate) const SERVER_NAME: &str = "sfu-relay";

/// A SHA-256 certificate fingerprint, written as SDP writes it
/// (RFC 8122 section 5): `sha-256 AB:CD:…` (32 upper-case hex pairs).
///
/// ```
/// use quic_relay::Fingerprint;
/// let fp = Fingerprint::of_der(b"any DER bytes");
/// let text = fp.to_string();
/// assert!(text.starts_with("sha-256 "));
/// assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
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
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha-256 ")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = QuicError;

    /// Parses `sha-256 AB:CD:…`; the hash name is case-insensitive (SDP
    /// writes `sha-256`, some stacks `SHA-256`), hex digits either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| QuicError::InvalidFingerprint {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (hash, hex) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("expected \"sha-256 XX:XX:…\""))?;
        if !hash.eq_ignore_ascii_case("sha-256") {
            return Err(bad("only sha-256 fingerprints are supported"));
        }
        let mut out = [0u8; 32];
        let mut n = 0;
        for pair in hex.trim().split(':') {
            if n == 32 {
                return Err(bad("more than 32 bytes"));
            }
            if pair.len() != 2 {
                return Err(bad("each byte must be two hex digits"));
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

/// This side's self-signed certificate and key.
pub(crate) struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl Identity {
    /// A fresh ECDSA P-256 key and certificate (rcgen defaults).
    pub(crate) fn generate() -> Result<Identity, QuicError> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(QuicError::Certificate)?;
        let cert = ck.cert.der().clone();
        let fingerprint = Fingerprint::of_der(&cert);
        Ok(Identity {
            cert,
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
            fingerprint,
        })
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the last pin check saw; lets the caller turn a failed handshake
/// into a typed error instead of a TLS alert number.
#[derive(Debug, Default)]
pub(crate) struct PinRecord(Mutex<Option<Fingerprint>>);

impl PinRecord {
    /// The fingerprint of a certificate that was refused, if any.
    pub(crate) fn refused(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The check both verifiers share.
#[derive(Debug)]
struct Pin {
    expected: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
    record: Arc<PinRecord>,
}

impl Pin {
    fn new(expected: Fingerprint, record: Arc<PinRecord>) -> Pin {
        Pin {
            expected,
            algorithms: provider().signature_verification_algorithms,
            record,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let actual = Fingerprint::of_der(end_entity);
        if self.expected.matches(&actual) {
            return Ok(());
        }
        *self.record.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(actual);
        // The text travels in the CONNECTION_CLOSE reason phrase, so the
        // refused side learns why.
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PinMismatch {
                expected: self.expected,
                actual,
            })),
        )))
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

struct PinMismatch {
    expected: Fingerprint,
    actual: Fingerprint,
}

/// rustls shows `CertificateError::Other` through `Debug`, so `Debug` says
/// the sentence too.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate fingerprint {} does not match the signaled {}",
            self.actual, self.expected
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Unwraps the `Other(OtherError(…))` that rustls puts around our
/// [`PinMismatch`] text, for reasons shown to operators.
pub(crate) fn tidy_reason(reason: &str) -> String {
    match reason.split_once("Other(OtherError(") {
        Some((head, tail)) => format!("{head}{}", tail.strip_suffix("))").unwrap_or(tail)),
        None => reason.to_string(),
    }
}

/// QUIC is TLS 1.3 only (RFC 9001 section 4.2), so TLS 1.2 signatures are
/// never legitimately asked for.
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The offerer's check of the answerer's certificate.
#[derive(Debug)]
struct PinnedServerCert(Pin);

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// The answerer's check of the offerer's certificate: client
/// authentication is mandatory, the pinned certificate the only one taken.
#[derive(Debug)]
struct PinnedClientCert(Pin);

impl ClientCertVerifier for PinnedClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// TLS for the offerer (QUIC client): presents `identity`, accepts only a
/// server certificate with fingerprint `peer`.
pub(crate) fn client_tls(
    identity: &Identity,
    peer: Fingerprint,
    alpn: &str,
    record: Arc<PinRecord>,
) -> Result<rustls::ClientConfig, QuicError> {
    let (chain, key) = identity.chain();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(QuicError::Tls)?
        // `dangerous()` is rustls's door to any non-WebPKI verifier; ours
        // pins a fingerprint and verifies the handshake signature.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerCert(Pin::new(peer, record))))
        .with_client_auth_cert(chain, key)
        .map_err(QuicError::Tls)?;
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(tls)
}

/// TLS for the answerer (QUIC server): presents `identity`, requires a
/// client certificate with fingerprint `peer`.
pub(crate) fn server_tls(
    identity: &Identity,
    peer: Fingerprint,
    alpn: &str,
    record: Arc<PinRecord>,
) -> Result<rustls::ServerConfig, QuicError> {
    let (chain, key) = identity.chain();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(QuicError::Tls)?
        .with_client_cert_verifier(Arc::new(PinnedClientCert(Pin::new(peer, record))))
        .with_single_cert(chain, key)
        .map_err(QuicError::Tls)?;
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trips_and_bad_text_is_explained() {
        let id = Identity::generate().unwrap();
        let text = id.fingerprint().to_string();
        assert_eq!(text.len(), "sha-256 ".len() + 32 * 3 - 1);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), id.fingerprint());
        assert_eq!(
            text.to_lowercase().parse::<Fingerprint>().unwrap(),
            id.fingerprint(),
            "hash name and hex digits are case-insensitive"
        );
        for (bad, why) in [
            ("", "expected"),
            ("sha-1 AB:CD", "only sha-256"),
            ("sha-256 AB:CD", "fewer than 32"),
            ("sha-256 ABC:D", "two hex digits"),
            ("sha-256 ZZ", "not hex"),
        ] {
            let e = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pin_refuses_other_certificates_and_records_them() {
        let ours = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let record = Arc::new(PinRecord::default());
        let pin = Pin::new(ours.fingerprint(), record.clone());
        pin.check(&ours.cert).unwrap();
        assert_eq!(record.refused(), None);
        let e = tidy_reason(&pin.check(&other.cert).unwrap_err().to_string());
        assert!(
            e.starts_with("invalid peer certificate: certificate fingerprint"),
            "{e}"
        );
        assert!(e.contains("does not match the signaled"), "{e}");
        assert!(e.contains(&other.fingerprint().to_string()), "{e}");
        assert_eq!(record.refused(), Some(other.fingerprint()));
    }
}
