//! The HTTP client: sends offers to a peer's signaling server and manages
//! the sessions there.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, LOCATION, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use relay_core::{OfferRequest, OfferResponse, SdpType, W3cDescription};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::tls::{PinRecord, pinned_client_config, root_store_client_config};
use crate::{Fingerprint, SessionInfo};

/// SNI sent when the host is not a valid DNS name or IP address. Nothing
/// checks it: the pinned fingerprint is the identity.
const FALLBACK_SERVER_NAME: &str = "sfu-relay";

/// Default bound on one exchange, connect to last byte: an answerer that
/// gathers ICE candidates takes well under a second; ten leaves room for a
/// slow path without hanging a relay setup forever.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Cap on a response body: a listing of the default 1,024 sessions with
/// per-SSRC stats stays well under this.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Longest server error text quoted in a [`ClientError`].
const MAX_QUOTED_CHARS: usize = 300;

/// What went wrong talking to a signaling server. The `Display` text is
/// meant for an operator: it says which server, what happened, and what to
/// do when there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base address given to [`SignalingClient::new`] is not usable.
    #[error("invalid signaling server address {base:?}: {reason}")]
    InvalidBase {
        /// What was given.
        base: String,
        /// Why it is not usable.
        reason: String,
    },
    /// A session id that cannot be a path segment.
    #[error("invalid session id {0:?}: ids are letters, digits, '-' and '_'")]
    InvalidSessionId(String),
    /// No TCP connection could be made.
    #[error("cannot reach signaling server at {server}: {}", crate::describe_io(source))]
    Connect {
        /// The server's base address.
        server: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Connect plus exchange took longer than the client's timeout.
    #[error("signaling server at {server} did not answer {what}: timed out after {}", human(*after))]
    Timeout {
        /// The server's base address.
        server: String,
        /// Which request.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// The HTTP exchange failed after connecting (connection closed or reset,
    /// not HTTP).
    #[error("signaling exchange with {server} failed during {what}: {source}")]
    Http {
        /// The server's base address.
        server: String,
        /// Which request.
        what: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// `401`: no token, or the wrong one.
    #[error(
        "signaling server at {server} refused {what}: 401 unauthorized; {}",
        if *token_sent { "the --token given was not accepted, check it" } else { "pass --token" }
    )]
    Unauthorized {
        /// The server's base address.
        server: String,
        /// Which request.
        what: String,
        /// Whether this client sent a token.
        token_sent: bool,
    },
    /// Any other non-success status, with the server's error message.
    #[error("signaling server at {server} answered {}: {message}", status.as_u16())]
    Status {
        /// The server's base address.
        server: String,
        /// The status.
        status: StatusCode,
        /// The server's `{"error": ...}` text, or the start of its body.
        message: String,
    },
    /// The server is https, no fingerprint was given, and the system's
    /// root store (which checks a CA-signed certificate instead) could not
    /// be loaded.
    #[error(
        "signaling server at {server} uses https and no certificate fingerprint was given, so its certificate \
         must be checked against the system's root store, which could not be loaded: {reason}; \
         or pass the answerer's fingerprint (--signal-fingerprint \"sha-256 AB:CD:…\", printed by the answerer at startup)"
    )]
    NoRootStore {
        /// The server's base address.
        server: String,
        /// Why the root store is unusable.
        reason: String,
    },
    /// A fingerprint was given for a plain http server, which has no
    /// certificate to check.
    #[error(
        "a certificate fingerprint was given for {server}, which is plain http; \
         use https://… if the server serves https, or drop the fingerprint"
    )]
    FingerprintOverHttp {
        /// The server's base address.
        server: String,
    },
    /// The server presented a certificate other than the pinned one.
    #[error(
        "signaling server at {server} presented a certificate with fingerprint {actual}, but {expected} was expected; \
         check --signal-fingerprint against what the answerer printed (its certificate may have changed)"
    )]
    FingerprintMismatch {
        /// The server's base address.
        server: String,
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint of the certificate the server presented.
        actual: Fingerprint,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake with signaling server at {server} failed: {reason}")]
    Tls {
        /// The server's base address.
        server: String,
        /// What went wrong, with a hint when the cause is clear.
        reason: String,
    },
    /// A success status with a body or headers this client cannot use.
    #[error("signaling server at {server} sent a reply to {what} this client cannot read: {reason}")]
    BadResponse {
        /// The server's base address.
        server: String,
        /// Which request.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status the server answered with, if it answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `10s`, or `250ms` when not whole seconds.
/// How an https server's certificate is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Exactly this certificate (`--signal-fingerprint`).
    Pin(Fingerprint),
    /// A chain to a root in the system's store.
    RootStore,
}

fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A client for one signaling server. One TCP (or TLS) connection per
/// request.
///
/// Over https the server's certificate is pinned by its SHA-256
/// fingerprint (see [`with_fingerprint`](SignalingClient::with_fingerprint)),
/// or, without a pin, checked against the system's root store (a
/// CA-signed certificate for the host in `base`; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured).
///
/// ```no_run
/// # async fn run() -> Result<(), relay_signaling::ClientError> {
/// use relay_core::{OfferRequest, Transport};
/// use relay_signaling::SignalingClient;
///
/// let client = SignalingClient::new("http://10.0.0.2:8080")?.with_token(Some("s3cret".into()));
/// let answer = client
///     .offer(&OfferRequest {
///         transport: Transport::RtpUdp,
///         mode: None,
///         offer: serde_json::json!({"addr": "10.0.0.1:5004"}),
///     })
///     .await?;
/// // ... relay ...
/// client.delete(&answer.id).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SignalingClient {
    /// As given, for messages.
    base: String,
    /// `host:port` for the `Host` header.
    authority: String,
    /// Host to connect to (IPv6 without brackets).
    host: String,
    port: u16,
    /// Path prefix without a trailing slash (`""` or `"/relay"`).
    prefix: String,
    /// `https://`.
    https: bool,
    fingerprint: Option<Fingerprint>,
    token: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for SignalingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalingClient")
            .field("base", &self.base)
            .field("fingerprint", &self.fingerprint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A successful reply.
struct Reply {
    headers: HeaderMap,
    body: Bytes,
}

impl SignalingClient {
    /// A client for the server at `base`: `http://host:port` or
    /// `https://host:port`, with an optional path prefix
    /// (`http://10.0.0.2:8080/relay`). Anything else (no scheme, another
    /// scheme, a query) is an error saying what is expected. An https
    /// server's certificate is checked against the system's root store
    /// unless [`with_fingerprint`](SignalingClient::with_fingerprint) pins it.
    pub fn new(base: &str) -> Result<SignalingClient, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidBase {
            base: base.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&format!("{e}; expected http://host:port")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(invalid(&format!(
                    "scheme {other} is not supported; use http://host:port or https://host:port"
                )));
            }
            None => return Err(invalid("missing http:// ; expected http://host:port")),
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid("missing host; expected http://host:port"));
        };
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not supported; pass the token with --token"));
        }
        if uri.query().is_some() {
            return Err(invalid(
                "a query string is not supported; expected http://host:port[/prefix]",
            ));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("missing host; expected http://host:port"));
        }
        Ok(SignalingClient {
            base: base.trim_end_matches('/').to_owned(),
            authority: authority.as_str().to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            https,
            fingerprint: None,
            token: None,
            timeout: DEFAULT_CLIENT_TIMEOUT,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request (`None`:
    /// no header).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Pins the https server's certificate: only a certificate whose
    /// SHA-256 fingerprint is `fingerprint` is accepted (the handshake
    /// signature is still verified, proving the server holds its key).
    ///
    /// ```
    /// use relay_signaling::{Fingerprint, SignalingClient};
    /// let fingerprint: Fingerprint = "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
    ///     00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".parse()?;
    /// let client = SignalingClient::new("https://10.0.0.2:8443")?.with_fingerprint(fingerprint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// Bound on each exchange, from connect to the last byte of the reply
    /// (default [`DEFAULT_CLIENT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `POST /v1/sessions` with `req`; the answer and the new session's id.
    pub async fn offer(&self, req: &OfferRequest) -> Result<OfferResponse, ClientError> {
        let what = "the offer";
        let body =
            serde_json::to_vec(req).map_err(|e| self.bad(what, format!("cannot encode the offer: {e}")))?;
        let reply = self
            .exchange(Method::POST, "/v1/sessions", Some(body), what)
            .await?;
        self.decode(what, &reply.body)
    }

    /// `POST /v1/sessions` with a bare W3C offer (no `transport` key), the way
    /// pion, aiortc and browsers do; the session id (from `Location`) and the
    /// W3C answer.
    pub async fn offer_w3c(&self, offer: &W3cDescription) -> Result<(String, W3cDescription), ClientError> {
        let what = "the offer";
        let body =
            serde_json::to_vec(offer).map_err(|e| self.bad(what, format!("cannot encode the offer: {e}")))?;
        let reply = self
            .exchange(Method::POST, "/v1/sessions", Some(body), what)
            .await?;
        let location = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.bad(what, "no Location header".into()))?;
        let id = location
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| self.bad(what, format!("no session id in Location {location:?}")))?
            .to_owned();
        let answer: W3cDescription = self.decode(what, &reply.body)?;
        if answer.kind != SdpType::Answer {
            return Err(self.bad(what, "expected a W3C answer, got an offer".into()));
        }
        Ok((id, answer))
    }

    /// `DELETE /v1/sessions/{id}`: tears the session down on the server.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        check_id(id)?;
        let what = format!("the delete of session {id}");
        self.exchange(Method::DELETE, &format!("/v1/sessions/{id}"), None, &what)
            .await?;
        Ok(())
    }

    /// `GET /v1/sessions/{id}/stats`: one session's state and counters.
    pub async fn stats(&self, id: &str) -> Result<SessionInfo, ClientError> {
        check_id(id)?;
        let what = format!("the stats request for session {id}");
        let reply = self
            .exchange(Method::GET, &format!("/v1/sessions/{id}/stats"), None, &what)
            .await?;
        self.decode(&what, &reply.body)
    }

    /// `GET /v1/sessions`: every live session.
    pub async fn list(&self) -> Result<Vec<SessionInfo>, ClientError> {
        let what = "the session listing";
        let reply = self.exchange(Method::GET, "/v1/sessions", None, what).await?;
        self.decode(what, &reply.body)
    }

    /// `GET /healthz`: `Ok` when the server answers `200`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.exchange(Method::GET, "/healthz", None, "the health check")
            .await?;
        Ok(())
    }

    fn bad(&self, what: &str, reason: String) -> ClientError {
        ClientError::BadResponse {
            server: self.base.clone(),
            what: what.to_owned(),
            reason,
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| self.bad(what, format!("unexpected JSON: {e}")))
    }

    /// One request on a fresh connection, bounded by the timeout; a non-2xx
    /// status becomes an error.
    async fn exchange(
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

/// The server's `{"error": ...}` text, else the start of the body, else the
/// status's reason phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body)
        && let Some(serde_json::Value::String(message)) = fields.get("error")
    {
        return message.chars().take(MAX_QUOTED_CHARS).collect();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_lowercase();
    }
    text.chars().take(MAX_QUOTED_CHARS).collect()
}

fn check_id(id: &str) -> Result<(), ClientError> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ClientError::InvalidSessionId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_addresses() {
        let c = SignalingClient::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        assert_eq!(c.authority, "127.0.0.1:8080");
        let c = SignalingClient::new("http://[::1]:9000/relay/").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("::1", 9000, "/relay")
        );
        assert_eq!(c.base, "http://[::1]:9000/relay");
        let c = SignalingClient::new("http://relay.example").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.https), ("relay.example", 80, false));
        let c = SignalingClient::new("https://relay.example").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.https), ("relay.example", 443, true));
        let c = SignalingClient::new("https://127.0.0.1:8443/relay").unwrap();
        assert_eq!((c.port, c.prefix.as_str(), c.https), (8443, "/relay", true));
    }

    #[test]
    fn unusable_base_addresses_say_what_is_expected() {
        for (base, want) in [
            ("127.0.0.1:8080", "expected http://host:port"),
            ("ftp://127.0.0.1", "scheme ftp is not supported"),
            ("http://u:p@127.0.0.1:8080", "--token"),
            ("http://127.0.0.1:8080/?x=1", "query string"),
            ("", "expected http://host:port"),
            ("not a url", "expected http://host:port"),
        ] {
            let e = SignalingClient::new(base).unwrap_err().to_string();
            assert!(e.contains(want), "{base:?}: {e}");
            assert!(e.contains("invalid signaling server address"), "{e}");
        }
    }

    #[test]
    fn session_ids_must_be_path_safe() {
        assert!(check_id("0af3-x_Y").is_ok());
        for id in ["", "a/b", "a b", "..%2f", "é"] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn server_error_text_is_quoted() {
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, br#"{"error":"bad offer: x"}"#),
            "bad offer: x"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"  upstream down\n"),
            "upstream down"
        );
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b""), "bad gateway");
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, &[b'x'; 1000]).len(),
            MAX_QUOTED_CHARS
        );
    }

    #[test]
    fn messages_tell_the_operator_what_to_do() {
        let e = ClientError::Unauthorized {
            server: "http://127.0.0.1:8080".into(),
            what: "the offer".into(),
            token_sent: false,
        };
        assert_eq!(
            e.to_string(),
            "signaling server at http://127.0.0.1:8080 refused the offer: 401 unauthorized; pass --token"
        );
        let e = ClientError::Timeout {
            server: "http://127.0.0.1:8080".into(),
            what: "the offer".into(),
            after: Duration::from_secs(10),
        };
        assert!(e.to_string().ends_with("timed out after 10s"), "{e}");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        let e = ClientError::Status {
            server: "http://127.0.0.1:8080".into(),
            status: StatusCode::BAD_REQUEST,
            message: "unknown transport \"x\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "signaling server at http://127.0.0.1:8080 answered 400: unknown transport \"x\""
        );
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
    }
}
