//! Certificate pinning for rustls (feature `tls-pin`): accept exactly the
//! certificate whose SHA-256 [`Fingerprint`] was exchanged out of band, and
//! still verify the handshake signature, which proves the peer holds that
//! certificate's private key (RFC 8446 section 4.4.3). quic-relay pins the
//! QUIC certificates (both directions) with it, relay-signaling the HTTPS
//! server's: [`PinnedServerCert`] for the client side of both,
//! [`PinnedClientCert`] for the QUIC answerer's mutual TLS.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};

use crate::Fingerprint;

/// What the pin check saw on one connection, so that a failed handshake
/// becomes a typed error naming both fingerprints instead of a TLS alert.
#[derive(Debug, Default)]
pub struct PinRecord(Mutex<Option<Fingerprint>>);

impl PinRecord {
    /// The fingerprint of a certificate that was refused, if any.
    pub fn refused(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The check a pinning verifier makes, with ring's signature algorithms.
#[derive(Debug)]
pub struct Pin {
    expected: Fingerprint,
    /// How the expected fingerprint came ("signaled", "pinned"), for the
    /// refusal's text.
    source: &'static str,
    algorithms: WebPkiSupportedAlgorithms,
    record: Arc<PinRecord>,
}

impl Pin {
    /// Accepts only the certificate `expected`; a refused one is recorded
    /// in `record`. `source` says where `expected` came from, in the text
    /// a refusal carries ("does not match the {source} …").
    pub fn new(expected: Fingerprint, source: &'static str, record: Arc<PinRecord>) -> Pin {
        Pin {
            expected,
            source,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            record,
        }
    }

    /// Whether `end_entity` is the pinned certificate. The refusal's text
    /// names both fingerprints (QUIC carries it in CONNECTION_CLOSE).
    pub fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let actual = Fingerprint::of_der(end_entity);
        if self.expected.matches(&actual) {
            return Ok(());
        }
        *self.record.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(actual);
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PinMismatch {
                expected: self.expected,
                actual,
                source: self.source,
            })),
        )))
    }

    /// Verifies a TLS 1.2 handshake signature.
    pub fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    /// Verifies a TLS 1.3 CertificateVerify signature.
    pub fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    /// The signature schemes it can verify.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client's verifier of the server certificate: exactly the pinned one.
#[derive(Debug)]
pub struct PinnedServerCert(pub Pin);

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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12(message, cert, dss)
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
pub struct PinnedClientCert(pub Pin);

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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12(message, cert, dss)
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

/// Why [`Pin::check`] refused a certificate.
struct PinMismatch {
    expected: Fingerprint,
    actual: Fingerprint,
    source: &'static str,
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
            "certificate fingerprint {} does not match the {} {}",
            self.actual, self.source, self.expected
        )
    }
}

impl std::error::Error for PinMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_certificate_passes_and_a_refusal_names_both() {
        let (ours, other) = (
            CertificateDer::from(vec![1u8, 2, 3]),
            CertificateDer::from(vec![4u8, 5]),
        );
        let record = Arc::new(PinRecord::default());
        let pin = Pin::new(Fingerprint::of_der(&ours), "signaled", record.clone());
        pin.check(&ours).unwrap();
        assert_eq!(record.refused(), None);
        let e = pin.check(&other).unwrap_err().to_string();
        assert_eq!(record.refused(), Some(Fingerprint::of_der(&other)));
        assert!(e.contains("does not match the signaled"), "{e}");
        assert!(e.contains(&Fingerprint::of_der(&other).to_string()), "{e}");
        assert!(e.contains(&Fingerprint::of_der(&ours).to_string()), "{e}");
        assert!(!pin.schemes().is_empty());
    }
}
