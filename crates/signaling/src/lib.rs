//! # relay-signaling: the offer/answer exchange between relays
//!
//! Before two media servers can relay RTP to each other they agree on a
//! transport in one HTTP exchange (DESIGN.md, "Signaling"). There is no
//! trickle: the offerer gathers everything first, and the answer comes back in
//! the response.
//!
//! ```text
//! offerer                                   answerer (SignalingServer)
//!   POST /v1/sessions                  ──▶  Answerer for that transport
//!   {"transport":"quic","mode":"datagram","offer":{...}}
//!                                      ◀──  201 Created, Location: /v1/sessions/{id}
//!                                           {"id":"...","answer":{...}}
//!   GET /v1/sessions/{id}/stats, GET /v1/sessions, DELETE /v1/sessions/{id},
//!   GET /metrics (Prometheus text), GET /healthz
//! ```
//!
//! A plain WebRTC peer (pion, aiortc, a browser) may post a bare W3C offer
//! `{"type":"offer","sdp":"..."}`: it is a `dc` offer, answered with the bare
//! `{"type":"answer","sdp":"..."}`.
//!
//! This crate knows nothing about the transports themselves: each backend
//! provides an [`Answerer`] that turns an offer into an answer and a
//! [`Session`]; the [`SignalingServer`] validates requests (bearer token,
//! body size, transport and mode), tracks sessions until they end, and turns
//! every refusal into a JSON error. The [`SignalingClient`] is the offerer's
//! side, with errors that tell an operator what to do.
//!
//! What one client can make the server hold is bounded: open connections
//! ([`ServerConfig::max_connections`]), the request head
//! ([`ServerConfig::max_header_bytes`], `431` beyond), the body
//! ([`ServerConfig::max_body_bytes`], `413`), and the time to send each
//! ([`ServerConfig::request_read_timeout`], which also bounds a TLS
//! handshake).
//!
//! ```
//! use std::sync::Arc;
//! use relay_core::{CloseReason, CloseSignal, LinkStats, Mode, OfferRequest, Transport};
//! use relay_signaling::{Accepted, AnswerError, Answerer, ServerConfig, Session, SignalingClient, SignalingServer};
//!
//! struct Pending(CloseSignal);
//!
//! #[async_trait::async_trait]
//! impl Session for Pending {
//!     fn stats(&self) -> Option<LinkStats> { None }
//!     fn close(&self) { self.0.close(CloseReason::Local); }
//!     async fn closed(&self) -> CloseReason { self.0.wait().await }
//! }
//!
//! struct RtpUdp;
//!
//! #[async_trait::async_trait]
//! impl Answerer for RtpUdp {
//!     fn transport(&self) -> Transport { Transport::RtpUdp }
//!     async fn answer(&self, _mode: Mode, _offer: serde_json::Value) -> Result<Accepted, AnswerError> {
//!         Ok(Accepted {
//!             answer: serde_json::json!({"addr": "127.0.0.1:5004"}),
//!             session: Arc::new(Pending(CloseSignal::new())),
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::default().token(Some("s3cret".into()));
//! let server = SignalingServer::bind("127.0.0.1:0".parse()?, config, vec![Arc::new(RtpUdp)]).await?;
//!
//! let client = SignalingClient::new(&format!("http://{}", server.local_addr()))?
//!     .with_token(Some("s3cret".into()));
//! let offer = OfferRequest {
//!     transport: Transport::RtpUdp,
//!     mode: None,
//!     offer: serde_json::json!({"addr": "127.0.0.1:6004"}),
//! };
//! let response = client.offer(&offer).await?;
//! assert_eq!(response.answer["addr"], "127.0.0.1:5004");
//! assert_eq!(server.session_ids(), vec![response.id.clone()]);
//!
//! client.delete(&response.id).await?;
//! assert!(server.session_ids().is_empty());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## https without a certificate authority
//!
//! The answerer presents a certificate (from PEM files with
//! [`TlsIdentity::from_pem_files`], or [`TlsIdentity::self_signed`]) and
//! prints its SHA-256 [`Fingerprint`]; the offerer pins exactly that
//! certificate, as DTLS-SRTP pins `a=fingerprint` (RFC 8122). There is no
//! root store: an https client without a fingerprint refuses to connect.
//!
//! ```
//! # use std::sync::Arc;
//! # use relay_core::{CloseReason, CloseSignal, LinkStats, Mode, OfferRequest, Transport};
//! # use relay_signaling::{Accepted, AnswerError, Answerer, Session};
//! # struct Pending(CloseSignal);
//! # #[async_trait::async_trait]
//! # impl Session for Pending {
//! #     fn stats(&self) -> Option<LinkStats> { None }
//! #     fn close(&self) { self.0.close(CloseReason::Local); }
//! #     async fn closed(&self) -> CloseReason { self.0.wait().await }
//! # }
//! # struct RtpUdp;
//! # #[async_trait::async_trait]
//! # impl Answerer for RtpUdp {
//! #     fn transport(&self) -> Transport { Transport::RtpUdp }
//! #     async fn answer(&self, _mode: Mode, _offer: serde_json::Value) -> Result<Accepted, AnswerError> {
//! #         Ok(Accepted { answer: serde_json::json!({"addr": "127.0.0.1:5004"}), session: Arc::new(Pending(CloseSignal::new())) })
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use relay_signaling::{Fingerprint, ServerConfig, SignalingClient, SignalingServer, TlsIdentity};
//!
//! // Answerer: serve https and tell the offerer the fingerprint.
//! let identity = TlsIdentity::self_signed()?; // or TlsIdentity::from_pem_files(cert, key)?
//! let config = ServerConfig::default().token(Some("s3cret".into())).tls(identity);
//! let server = SignalingServer::bind("127.0.0.1:0".parse()?, config, vec![Arc::new(RtpUdp)]).await?;
//! let printed = server.tls_fingerprint().unwrap().to_string(); // "sha-256 AB:CD:…"
//!
//! // Offerer: pin it.
//! let fingerprint: Fingerprint = printed.parse()?;
//! let client = SignalingClient::new(&server.url())? // "https://127.0.0.1:port"
//!     .with_fingerprint(fingerprint)
//!     .with_token(Some("s3cret".into()));
//! let offer = OfferRequest {
//!     transport: Transport::RtpUdp,
//!     mode: None,
//!     offer: serde_json::json!({"addr": "127.0.0.1:6004"}),
//! };
//! let response = client.offer(&offer).await?;
//! assert_eq!(response.answer["addr"], "127.0.0.1:5004");
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Browser pages (CORS)
//!
//! A page served from another origin can signal too, once its origin is
//! allowed with [`ServerConfig::cors_origin`] (none by default):
//!
//! - A request without `Origin` (curl, [`SignalingClient`], another
//!   server) is served as always.
//! - From an allowed origin, every response carries
//!   `Access-Control-Allow-Origin` (that origin), `Vary: Origin` and
//!   `Access-Control-Expose-Headers: Location`; a preflight `OPTIONS` with
//!   `Access-Control-Request-Method` gets `204` with the path's methods,
//!   `Authorization` and `Content-Type` as allowed headers and a max age,
//!   without a token.
//! - From any other origin, a preflight and any request (a `text/plain`
//!   POST, which a browser sends without asking first, included) get `403`
//!   with a JSON error before anything else happens: no session is made.
//!   Refused offers count as `cause="origin_not_allowed"` on `/metrics`.
//!
//! ```
//! use relay_signaling::ServerConfig;
//! let config = ServerConfig::default()
//!     .token(Some("s3cret".into()))
//!     .cors_origin("https://app.example")
//!     .cors_origin("http://localhost:5173");
//! ```
//!
//! Counters for Prometheus are on `GET /metrics` (same token rule);
//! [`metrics`] renders them and serves them for a process without a
//! signaling server.
#![warn(missing_docs)]

mod auth;
mod client;
mod cors;
// Compiled for its own tests, and for fuzz/ with the `fuzz` feature; never
// part of the shipping library.
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod listener;
pub mod metrics;
mod offer;
mod registry;
mod reply;
mod route;
mod server;
mod session;
mod tls;

pub use client::{ClientError, DEFAULT_CLIENT_TIMEOUT, SignalingClient};
pub use listener::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_REQUEST_READ_TIMEOUT};
pub use server::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_SESSIONS, ServerConfig, ServerError, SignalingServer};
pub use session::{Accepted, AnswerError, Answerer, Session, SessionInfo, SessionState};
pub use tls::{Fingerprint, InvalidFingerprint, TlsError, TlsIdentity, pinned_client_config};

/// Entry points for the cargo-fuzz targets (the `fuzz` feature, which only
/// fuzz/ enables); not part of the API.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::fuzz::request;
}

/// The OS error in the words an operator expects ("connection refused",
/// "address in use"), falling back to the OS's own text.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let text = match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::AddrInUse => "address in use",
        ErrorKind::AddrNotAvailable => "address not available on this machine",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "no such file or directory",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::HostUnreachable => "host unreachable",
        ErrorKind::NetworkUnreachable => "network unreachable",
        _ => return e.to_string(),
    };
    text.to_owned()
}
