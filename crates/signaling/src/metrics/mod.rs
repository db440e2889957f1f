//! Link and server counters in the Prometheus text exposition format,
//! version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! The answerer's [`SignalingServer`](crate::SignalingServer) serves this on
//! `GET /metrics`; a process without a signaling server (the offerer)
//! renders its own links with [`render`] and serves them with
//! [`serve_metrics`].
//!
//! Every metric is prefixed `relay_`; counters end in `_total`. Per-link
//! metrics carry the labels `session`, `transport`, `mode` and `role`;
//! drops are one metric with a `cause` label.
//!
//! ```
//! use relay_core::{Mode, Transport};
//! use relay_signaling::SessionState;
//! use relay_signaling::metrics::{render, LinkMetrics, Role};
//!
//! let text = render(
//!     &[LinkMetrics {
//!         session: "ab12".into(),
//!         transport: Transport::Quic,
//!         mode: Mode::Datagram,
//!         role: Role::Offer,
//!         state: SessionState::Connecting,
//!         stats: None,
//!         extra: vec![],
//!     }],
//!     None,
//! );
//! assert!(text.contains(r#"relay_link_up{session="ab12",transport="quic",mode="datagram",role="offer"} 0"#));
//! ```

//!
//! The module is four parts: the types the relay's metrics are read from
//! (here), its metric families ([`render`], in `families`), the text
//! format's encoder (`text`), and a small listener for a process without a
//! signaling server (`server`).

use std::fmt;

use relay_core::{LinkStats, Mode, Transport};

use crate::SessionState;

mod families;
mod server;
mod text;

pub use families::render;
pub use server::{MetricsServer, MetricsSource, serve_metrics};
pub(crate) use text::exposition;
pub use text::{CONTENT_TYPE, Kind, Value, write_family, write_labelled_family};

/// Which side of the offer/answer exchange a link was set up from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// This process answered the offer (it runs the signaling server).
    Answer,
    /// This process sent the offer.
    Offer,
}

impl Role {
    /// `"answer"` or `"offer"`, the `role` label value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Answer => "answer",
            Role::Offer => "offer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One link as `/metrics` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkMetrics {
    /// Session id (the `session` label).
    pub session: String,
    /// The transport carrying it.
    pub transport: Transport,
    /// Its delivery mode.
    pub mode: Mode,
    /// Whether this side answered or offered.
    pub role: Role,
    /// Connecting or up (`relay_link_up` 0 or 1).
    pub state: SessionState,
    /// Counters once the link is up.
    pub stats: Option<LinkStats>,
    /// More per-link values, each `(name suffix, help, value)`: rendered as
    /// `relay_link_<suffix>`, a counter if the suffix ends in `_total`, a
    /// gauge otherwise. Characters outside `[a-zA-Z0-9_]` become `_`.
    pub extra: Vec<(&'static str, &'static str, u64)>,
}

/// Why `POST /v1/sessions` did not create a session, counted by cause
/// (the `cause` label of `relay_signaling_sessions_refused_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionRefusals {
    /// `401`: no or wrong bearer token.
    pub unauthorized: u64,
    /// `400`: a body that is not an offer this server can answer, or the
    /// answerer refused it as bad.
    pub bad_offer: u64,
    /// `413`: body over the cap.
    pub too_large: u64,
    /// `408`: the body did not arrive in time.
    pub timeout: u64,
    /// `503`: `max_sessions` reached.
    pub session_limit: u64,
    /// `503`: the answerer could not take it now, or the server is shutting down.
    pub unavailable: u64,
    /// `500`: the answerer failed.
    pub internal: u64,
    /// `403`: a browser page's request from an origin the server does not
    /// allow (CORS; see [`ServerConfig::cors_origin`](crate::ServerConfig::cors_origin)).
    pub origin_not_allowed: u64,
}

impl SessionRefusals {
    /// Every cause with its label value, in a fixed order.
    pub fn by_cause(&self) -> [(&'static str, u64); 8] {
        [
            ("unauthorized", self.unauthorized),
            ("bad_offer", self.bad_offer),
            ("too_large", self.too_large),
            ("timeout", self.timeout),
            ("session_limit", self.session_limit),
            ("unavailable", self.unavailable),
            ("internal", self.internal),
            ("origin_not_allowed", self.origin_not_allowed),
        ]
    }
}

/// A signaling server's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// TLS handshakes that failed or did not finish in time (https only).
    pub tls_handshakes_failed: u64,
    /// Sessions created since start.
    pub sessions_created: u64,
    /// Offers refused, by cause.
    pub sessions_refused: SessionRefusals,
}
