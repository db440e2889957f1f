//! One request on a fresh TCP or TLS connection: connecting, the TLS
//! handshake with its certificate check, and the HTTP/1.1 exchange.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use super::error::error_message;
use super::{ClientError, SignalingClient};
use crate::Fingerprint;
use crate::tls::{PinRecord, pinned_client_config, root_store_client_config};

/// SNI sent when the host is not a valid DNS name or IP address. Nothing
/// checks it: the pinned fingerprint is the identity.
const FALLBACK_SERVER_NAME: &str = "sfu-relay";

/// Cap on a response body: a listing of the default 1,024 sessions with
/// per-SSRC stats stays well under this.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How an https server's certificate is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Exactly this certificate (`--signal-fingerprint`).
    Pin(Fingerprint),
    /// A chain to a root in the system's store.
    RootStore,
}

/// A successful reply.
pub(super) struct Reply {
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl SignalingClient {
    /// One request on a fresh connection, bounded by the timeout; a non-2xx
    /// status becomes an error.
    pub(super) async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Reply, ClientError> {
        let (status, reply) = tokio::time::timeout(self.timeout, self.send(method, path, body, what))
            .await
            .map_err(|_| ClientError::Timeout {
                server: self.base.clone(),
                what: what.to_owned(),
                after: self.timeout,
            })??;
        if status.is_success() {
            return Ok(reply);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                server: self.base.clone(),
                what: what.to_owned(),
                token_sent: self.token.is_some(),
            });
        }
        Err(ClientError::Status {
            server: self.base.clone(),
            status,
            message: error_message(status, &reply.body),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<(StatusCode, Reply), ClientError> {
        let check = match (self.https, self.fingerprint) {
            (true, Some(pin)) => Some(Check::Pin(pin)),
            (true, None) => Some(Check::RootStore),
            (false, Some(_)) => {
                return Err(ClientError::FingerprintOverHttp {
                    server: self.base.clone(),
                });
            }
            (false, None) => None,
        };
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                server: self.base.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        match check {
            None => self.http(stream, method, path, body, what).await,
            Some(check) => {
                let tls = self.tls_connect(stream, check).await?;
                self.http(tls, method, path, body, what).await
            }
        }
    }

    /// The client side of the TLS handshake, accepting only the pinned
    /// certificate, or a chain to a root in the system's store.
    async fn tls_connect(
        &self,
        stream: TcpStream,
        check: Check,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let record = Arc::new(PinRecord::default());
        let config = match check {
            Check::Pin(pin) => {
                pinned_client_config(pin, Arc::clone(&record)).map_err(|e| ClientError::Tls {
                    server: self.base.clone(),
                    reason: e.to_string(),
                })?
            }
            Check::RootStore => root_store_client_config().map_err(|reason| ClientError::NoRootStore {
                server: self.base.clone(),
                reason,
            })?,
        };
        let name = ServerName::try_from(self.host.clone())
            .unwrap_or_else(|_| ServerName::try_from(FALLBACK_SERVER_NAME).expect("a valid DNS name"));
        match tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
        {
            Ok(tls) => Ok(tls),
            Err(e) => Err(match (record.refused(), check) {
                (Some(actual), Check::Pin(expected)) => ClientError::FingerprintMismatch {
                    server: self.base.clone(),
                    expected,
                    actual,
                },
                _ => ClientError::Tls {
                    server: self.base.clone(),
                    reason: explain_tls(&e),
                },
            }),
        }
    }

    /// One HTTP/1.1 request and its whole reply on a connected stream.
    async fn http<I>(
        &self,
        io: I,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<(StatusCode, Reply), ClientError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http_err = |source| ClientError::Http {
            server: self.base.clone(),
            what: what.to_owned(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http_err)?;
        // Drives the connection; ends when `sender` is dropped after the reply.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "signaling client connection ended with an error");
            }
        });

        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority)
            .header(USER_AGENT, concat!("relay-signaling/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                self.bad(
                    what,
                    "the token contains characters not allowed in a header".into(),
                )
            })?;
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.bad(what, format!("cannot build the request: {e}")))?;

        let response = sender.send_request(request).await.map_err(http_err)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => http_err(*e),
                Err(e) => self.bad(what, format!("reply body: {e}")),
            })?;
        Ok((
            parts.status,
            Reply {
                headers: parts.headers,
                body: body.to_bytes(),
            },
        ))
    }
}

/// A failed client handshake in an operator's words, with a hint when the
/// cause is recognisable.
fn explain_tls(e: &std::io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("{e}; the server did not answer in TLS: if it serves plain http, use http://host:port")
        }
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        )) => format!(
            "{e}: no CA in the system's root store signed the server's certificate; \
             if the answerer uses a self-signed one, pass its --signal-fingerprint (printed at its startup)"
        ),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
            format!("{e}: the certificate does not name the host in --signal")
        }
        Some(_) => e.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake; check that it serves https on this port"
                .into()
        }
        None => crate::describe_io(e),
    }
}
