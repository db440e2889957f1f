//! What the server asks of the transports: an [`Answerer`] per transport turns
//! an offer into an answer and a [`Session`], which the server then tracks
//! until it ends.

use std::sync::Arc;

use async_trait::async_trait;
use relay_core::{CloseReason, LinkStats, Mode, Transport};

/// What an [`Answerer`] hands back for one accepted offer.
pub struct Accepted {
    /// The transport's answer, sent back to the offerer as is.
    pub answer: serde_json::Value,
    /// The session the server tracks from now on.
    pub session: Arc<dyn Session>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// One session the server tracks: usually a relay link being set up or up.
///
/// The server calls [`close`](Session::close) on `DELETE` and on shutdown,
/// and forgets the session as soon as [`closed`](Session::closed) resolves.
///
/// ```
/// use relay_core::{CloseReason, CloseSignal, LinkStats};
/// use relay_signaling::Session;
///
/// struct Pending(CloseSignal);
///
/// #[async_trait::async_trait]
/// impl Session for Pending {
///     fn stats(&self) -> Option<LinkStats> {
///         None // still connecting
///     }
///     fn close(&self) {
///         self.0.close(CloseReason::Local);
///     }
///     async fn closed(&self) -> CloseReason {
///         self.0.wait().await
///     }
/// }
/// ```
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// Counters so far; `None` while the link is still being established.
    fn stats(&self) -> Option<LinkStats>;
    /// Tears the session down (`DELETE`, server shutdown). Idempotent.
    fn close(&self);
    /// Resolves when the session has ended for any reason (peer closed,
    /// liveness timeout, [`close`](Session::close)).
    async fn closed(&self) -> CloseReason;
}

/// Answers offers for one transport; the server holds one per transport it
/// serves.
///
/// ```
/// use std::sync::Arc;
/// use relay_core::{CloseReason, CloseSignal, LinkStats, Mode, Transport};
/// use relay_signaling::{Accepted, AnswerError, Answerer, Session};
///
/// struct Pending(CloseSignal);
///
/// #[async_trait::async_trait]
/// impl Session for Pending {
///     fn stats(&self) -> Option<LinkStats> { None }
///     fn close(&self) { self.0.close(CloseReason::Local); }
///     async fn closed(&self) -> CloseReason { self.0.wait().await }
/// }
///
/// /// Accepts any rtp-udp offer and answers with a fixed address.
/// struct Echo;
///
/// #[async_trait::async_trait]
/// impl Answerer for Echo {
///     fn transport(&self) -> Transport {
///         Transport::RtpUdp
///     }
///     async fn answer(&self, _mode: Mode, offer: serde_json::Value) -> Result<Accepted, AnswerError> {
///         if offer.get("addr").is_none() {
///             return Err(AnswerError::BadOffer("missing addr".into()));
///         }
///         Ok(Accepted {
///             answer: serde_json::json!({"addr": "127.0.0.1:5004"}),
///             session: Arc::new(Pending(CloseSignal::new())),
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Answerer: Send + Sync + 'static {
    /// The transport this answerer serves.
    fn transport(&self) -> Transport;
    /// Accepts an offer in `mode` (already checked against
    /// [`Transport::modes`]) and returns the answer.
    async fn answer(&self, mode: Mode, offer: serde_json::Value) -> Result<Accepted, AnswerError>;
}

/// Why an [`Answerer`] refused an offer; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The offer is malformed or cannot be satisfied: `400 Bad Request`.
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// This side cannot take the session now (out of ports, shutting down):
    /// `503 Service Unavailable`.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Something failed on this side: `500 Internal Server Error`.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AnswerError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AnswerError::BadOffer(_) => http::StatusCode::BAD_REQUEST,
            AnswerError::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            AnswerError::Internal(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether a session's link is up yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Answered, link still being established.
    Connecting,
    /// The link is up: packets flow.
    Up,
}

/// One session as `GET /v1/sessions` and `GET /v1/sessions/{id}/stats`
/// report it.
///
/// ```
/// use relay_signaling::{SessionInfo, SessionState};
/// let info: SessionInfo = serde_json::from_str(
///     r#"{"id":"ab12","transport":"quic","mode":"datagram","state":"connecting","stats":null}"#,
/// ).unwrap();
/// assert_eq!(info.state, SessionState::Connecting);
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// Session id, as in `Location: /v1/sessions/{id}`.
    pub id: String,
    /// The transport carrying it.
    pub transport: Transport,
    /// Its delivery mode: the link's once up. While a session from a bare
    /// W3C offer is connecting, the dc default, as the peer has not yet
    /// opened the channel whose mode it will take.
    pub mode: Mode,
    /// Connecting or up.
    pub state: SessionState,
    /// Link counters once the link is up.
    pub stats: Option<LinkStats>,
}
