//! The HTTP client: sends offers to a peer's signaling server and manages
//! the sessions there.

mod error;
mod exchange;

use std::fmt;
use std::time::Duration;

use http::header::LOCATION;
use http::{Method, Uri};
use relay_core::{OfferRequest, OfferResponse, SdpType, W3cDescription};

pub use self::error::ClientError;
use crate::{Fingerprint, SessionInfo};

/// Default bound on one exchange, connect to last byte: an answerer that
/// gathers ICE candidates takes well under a second; ten leaves room for a
/// slow path without hanging a relay setup forever.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

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
}
