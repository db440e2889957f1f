//! [`ServerConfig`]: how the server treats requests, with its defaults.

use std::fmt;
use std::time::Duration;

use crate::listener::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_REQUEST_READ_TIMEOUT, Limits,
};
use crate::metrics::MetricsSource;
use crate::tls::TlsIdentity;

/// Default cap on a request body: an SDP offer with a few dozen candidates is
/// under 8 KiB, so 64 KiB leaves room without letting a client make the
/// server buffer megabytes (DESIGN.md, "Signaling").
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Default cap on live sessions (each holds sockets and buffers in its
/// backend).
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// How the server treats requests. `Default` plus builder-style setters:
///
/// ```
/// use relay_signaling::ServerConfig;
/// let config = ServerConfig::default()
///     .token(Some("s3cret".into()))
///     .max_body_bytes(32 * 1024)
///     .max_sessions(64)
///     .max_connections(128)
///     .cors_origin("https://app.example");
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    pub(super) token: Option<String>,
    pub(super) max_body_bytes: usize,
    pub(super) max_sessions: usize,
    max_connections: usize,
    max_header_bytes: usize,
    pub(super) request_read_timeout: Duration,
    pub(super) tls: Option<TlsIdentity>,
    pub(super) extra_metrics: Option<MetricsSource>,
    pub(super) cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
            tls: None,
            extra_metrics: None,
            cors_origins: Vec::new(),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("request_read_timeout", &self.request_read_timeout)
            .field("tls", &self.tls)
            .field("extra_metrics", &self.extra_metrics.is_some())
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl ServerConfig {
    /// More metric families for `GET /metrics`, appended after the
    /// server's own: the embedding process's counters (for `relay answer`,
    /// streams resumed after a reconnect). The text must be in the
    /// exposition format and must not repeat the server's metric names.
    pub fn extra_metrics(mut self, source: MetricsSource) -> Self {
        self.extra_metrics = Some(source);
        self
    }

    /// Bearer token every request but `GET /healthz` must carry
    /// (`Authorization: Bearer <token>`); `None` (the default) lets anyone in.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Largest request body accepted; larger is `413` (default
    /// [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Most sessions live at once; an offer beyond is `503` (default
    /// [`DEFAULT_MAX_SESSIONS`]).
    pub fn max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions;
        self
    }

    /// Time a client has to complete the TLS handshake (https), then to
    /// send a request's headers, and again its body, before the connection
    /// is dropped (default [`DEFAULT_REQUEST_READ_TIMEOUT`]). An idle
    /// keep-alive connection gets the same time to start its next request.
    pub fn request_read_timeout(mut self, timeout: Duration) -> Self {
        self.request_read_timeout = timeout;
        self
    }

    /// Most connections open at once (at least 1); beyond, new connections
    /// are closed as soon as they are accepted and a warning is logged at
    /// most once per second (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Largest request head (request line plus headers) accepted; larger is
    /// `431` and the connection is closed (default
    /// [`DEFAULT_MAX_HEADER_BYTES`]; hyper buffers at least 8 KiB whatever
    /// this says).
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Serves https with `identity` instead of plain http. The offerer pins
    /// [`TlsIdentity::fingerprint`] with
    /// [`SignalingClient::with_fingerprint`](crate::SignalingClient::with_fingerprint).
    ///
    /// ```
    /// use relay_signaling::{ServerConfig, TlsIdentity};
    /// let config = ServerConfig::default().tls(TlsIdentity::self_signed()?);
    /// # Ok::<(), relay_signaling::TlsError>(())
    /// ```
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Lets browser pages from `origin` call the server (CORS); repeat for
    /// more origins. `origin` is what a browser sends in `Origin`:
    /// `scheme://host[:port]`, no path (`https://app.example`); `*` allows
    /// every origin. None by default: a request that carries an `Origin`
    /// is refused with `403`, while requests without one (curl, other
    /// servers, [`SignalingClient`](crate::SignalingClient)) are served.
    /// [`SignalingServer::bind`](crate::SignalingServer::bind) refuses anything else.
    ///
    /// ```
    /// use relay_signaling::ServerConfig;
    /// let config = ServerConfig::default().cors_origin("https://app.example");
    /// ```
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }

    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            request_read_timeout: self.request_read_timeout,
        }
    }
}
