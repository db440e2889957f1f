//! Identity without a CA: a self-signed certificate per side, and TLS
//! verifiers that accept exactly the certificate whose SHA-256 fingerprint
//! was signaled — the model of DTLS-SRTP's `a=fingerprint` (RFC 8122
//! section 5) applied to QUIC's TLS 1.3 (RFC 9001).
//!
//! Pinning replaces the chain-of-trust check, not the handshake check: the
//! verifiers still verify the TLS 1.3 CertificateVerify signature (RFC 8446
//! section 4.4.3) with the ring provider, which proves the peer holds the
//! private key of the pinned certificate.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::QuicError;

/// The name in our certificates and the SNI the offerer sends. Nothing
/// checks it: the fingerprint is the identity.
pub(crate) const SERVER_NAME: &str = "sfu-relay";

pub use relay_core::Fingerprint;

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

pub(crate) use relay_core::pin::PinRecord;
use relay_core::pin::{Pin, PinnedClientCert, PinnedServerCert};

/// Unwraps the `Other(OtherError(…))` that rustls puts around our
/// pin-mismatch text (`relay_core::pin`), for reasons shown to operators.
pub(crate) fn tidy_reason(reason: &str) -> String {
    match reason.split_once("Other(OtherError(") {
        Some((head, tail)) => format!("{head}{}", tail.strip_suffix("))").unwrap_or(tail)),
        None => reason.to_string(),
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
        .with_custom_certificate_verifier(Arc::new(PinnedServerCert(Pin::new(peer, "signaled", record))))
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
        .with_client_cert_verifier(Arc::new(PinnedClientCert(Pin::new(peer, "signaled", record))))
        .with_single_cert(chain, key)
        .map_err(QuicError::Tls)?;
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_signaled_fingerprint_is_a_quic_error_naming_it() {
        let e: QuicError = "sha-256 AB".parse::<Fingerprint>().unwrap_err().into();
        assert!(e.to_string().contains("\"sha-256 AB\""), "{e}");
        assert!(e.to_string().contains("fewer than 32"), "{e}");
    }

    #[test]
    fn pin_refuses_other_certificates_and_records_them() {
        let ours = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let record = Arc::new(PinRecord::default());
        let pin = Pin::new(ours.fingerprint(), "signaled", record.clone());
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
