//! [`ClientError`]: what went wrong talking to a signaling server, in an
//! operator's words.

use std::time::Duration;

use http::StatusCode;

use crate::Fingerprint;

/// Longest server error text quoted in a [`ClientError`].
const MAX_QUOTED_CHARS: usize = 300;

/// What went wrong talking to a signaling server. The `Display` text is
/// meant for an operator: it says which server, what happened, and what to
/// do when there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base address given to
    /// [`SignalingClient::new`](crate::SignalingClient::new) is not usable.
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
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The server's `{"error": ...}` text, else the start of the body, else the
/// status's reason phrase.
pub(super) fn error_message(status: StatusCode, body: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
