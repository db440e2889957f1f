//! HTTPS without a certificate authority: the answerer presents a
//! certificate (loaded from PEM files or generated self-signed), prints its
//! SHA-256 fingerprint, and the offerer pins exactly that certificate, the
//! way DTLS-SRTP pins `a=fingerprint` (RFC 8122 section 5) and quic-relay
//! pins its QUIC certificate.
//!
//! Pinning replaces the chain-of-trust check, not the handshake check: the
//! client's verifier still checks the CertificateVerify signature
//! (RFC 8446 section 4.4.3) with the ring provider, which proves the server
//! holds the private key of the pinned certificate.
//!
//! Only TLS 1.3 is offered and accepted: both ends are this crate (or curl,
//! which has spoken 1.3 since 2018), and it keeps the rustls build free of
//! the TLS 1.2 code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The name in a generated certificate. Nothing checks it: the fingerprint
/// is the identity.
const SELF_SIGNED_NAME: &str = "sfu-relay";

/// ALPN: this server speaks HTTP/1.1 only (RFC 7301).
const ALPN_HTTP1: &[u8] = b"http/1.1";

pub use relay_core::{Fingerprint, InvalidFingerprint};

/// Why a [`TlsIdentity`] could not be made. Each message names the file
/// and says what was expected in it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read the signaling TLS {what} file {}: {}", path.display(), crate::describe_io(source))]
    Read {
        /// `"certificate chain"` or `"private key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM of the expected kind.
    #[error("the signaling TLS {what} file {} is not usable: {reason}", path.display())]
    Pem {
        /// `"certificate chain"` or `"private key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what was expected.
        reason: String,
    },
    /// Certificate and key were read but rustls refuses them (the key does
    /// not belong to the certificate, or is of an unsupported kind).
    #[error(
        "the signaling TLS key {} cannot be used with the certificate {}: {reason}",
        key.display(),
        cert.display()
    )]
    Rejected {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A self-signed certificate could not be generated.
    #[error("cannot generate a self-signed signaling certificate: {0}")]
    Generate(String),
    /// A generated identity could not be kept in its file.
    #[error("cannot write the signaling TLS identity to {}: {}", path.display(), crate::describe_io(source))]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The certificate and key a [`SignalingServer`](crate::SignalingServer)
/// presents over https, with its fingerprint for the offerer to pin.
/// Cheap to clone.
///
/// ```
/// use relay_signaling::{ServerConfig, TlsIdentity};
/// let identity = TlsIdentity::self_signed()?;
/// println!("signaling certificate {}", identity.fingerprint());
/// let config = ServerConfig::default().tls(identity);
/// # Ok::<(), relay_signaling::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsIdentity {
    fingerprint: Fingerprint,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads a PEM certificate chain (end-entity first, as web servers
    /// expect) and its PEM private key (PKCS#8, PKCS#1 or SEC1). The
    /// [`fingerprint`](TlsIdentity::fingerprint) is the end-entity
    /// certificate's, the same as
    /// `openssl x509 -noout -fingerprint -sha256 -in cert.pem` prints.
    ///
    /// ```no_run
    /// use relay_signaling::TlsIdentity;
    /// let identity = TlsIdentity::from_pem_files("/etc/relay/cert.pem", "/etc/relay/key.pem")?;
    /// # Ok::<(), relay_signaling::TlsError>(())
    /// ```
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<TlsIdentity, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        const CHAIN: &str = "certificate chain";
        const KEY: &str = "private key";
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let pem_error = |what: &'static str, path: &Path, reason: String| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason,
        };

        let cert_pem = read(CHAIN, cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                pem_error(
                    CHAIN,
                    cert,
                    format!("{e}; expected PEM -----BEGIN CERTIFICATE----- blocks"),
                )
            })?;
        if chain.is_empty() {
            return Err(pem_error(
                CHAIN,
                cert,
                "no -----BEGIN CERTIFICATE----- block found".into(),
            ));
        }
        let key_pem = read(KEY, key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            pem_error(
                KEY,
                key,
                format!(
                    "{e}; expected a PEM -----BEGIN PRIVATE KEY-----, \
                     -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY----- block"
                ),
            )
        })?;
        TlsIdentity::from_der(chain, key_der).map_err(|e| TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A fresh self-signed ECDSA P-256 certificate. The offerer must be told
    /// its [`fingerprint`](TlsIdentity::fingerprint), which changes on every
    /// call (so on every restart of a server that uses it).
    pub fn self_signed() -> Result<TlsIdentity, TlsError> {
        let generated =
            rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_owned(), "localhost".to_owned()])
                .map_err(|e| TlsError::Generate(e.to_string()))?;
        let chain = vec![generated.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        TlsIdentity::from_der(chain, key).map_err(|e| TlsError::Generate(e.to_string()))
    }

    /// A self-signed identity kept in `path` (one PEM file, certificate
    /// and key): loaded if the file exists, else generated and written
    /// there (readable by the owner only), so a restarted answerer keeps
    /// its fingerprint and offerers that pinned it (and `--reconnect`)
    /// still trust it.
    pub fn self_signed_kept(path: impl AsRef<Path>) -> Result<TlsIdentity, TlsError> {
        let path = path.as_ref();
        if path.exists() {
            return TlsIdentity::from_pem_files(path, path);
        }
        let generated =
            rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_owned(), "localhost".to_owned()])
                .map_err(|e| TlsError::Generate(e.to_string()))?;
        let pem = format!(
            "{}{}",
            generated.cert.pem(),
            generated.signing_key.serialize_pem()
        );
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(path)?.write_all(pem.as_bytes())
        };
        write().map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })?;
        TlsIdentity::from_pem_files(path, path)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsIdentity, rustls::Error> {
        let fingerprint = Fingerprint::of_der(&chain[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(TlsIdentity {
            fingerprint,
            config: Arc::new(config),
        })
    }

    /// SHA-256 fingerprint of the end-entity certificate: what the offerer
    /// passes to [`SignalingClient::with_fingerprint`](crate::SignalingClient::with_fingerprint).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) use relay_core::pin::PinRecord;
use relay_core::pin::{Pin, PinnedServerCert};

/// A client configuration that trusts exactly the certificate `expected`,
/// recording a refused certificate's fingerprint in `record`: what
/// [`SignalingClient`](crate::SignalingClient) connects with to a pinned
/// `https://` server, and what a scraper of that server's HTTPS
/// `/metrics` needs (TLS 1.3, ALPN `http/1.1`).
pub fn pinned_client_config(
    expected: Fingerprint,
    record: Arc<PinRecord>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = PinnedServerCert(Pin::new(expected, "pinned", record));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that checks the server's certificate chain
/// against the system's root store (`rustls-native-certs`: the OS's CA
/// bundle, or the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name, as OpenSSL
/// does), for an answerer with a CA-signed certificate and no pin. Loaded
/// once per process.
pub(crate) fn root_store_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let why: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                return Err(if why.is_empty() {
                    "no CA certificates found (install ca-certificates, or point SSL_CERT_FILE at a bundle)"
                        .into()
                } else {
                    why.join("; ")
                });
            }
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_self_signed_identity_survives_a_restart() {
        let path = std::env::temp_dir().join(format!("sfu-relay-identity-{}.pem", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let first = TlsIdentity::self_signed_kept(&path).unwrap();
        let again = TlsIdentity::self_signed_kept(&path).unwrap();
        assert!(first.fingerprint().matches(&again.fingerprint()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
        }
        std::fs::write(&path, "not pem").unwrap();
        let err = TlsIdentity::self_signed_kept(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn self_signed_identities_differ() {
        let a = TlsIdentity::self_signed().unwrap();
        let b = TlsIdentity::self_signed().unwrap();
        assert!(!a.fingerprint().matches(&b.fingerprint()));
    }
}
