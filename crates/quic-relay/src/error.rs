//! Errors of link establishment, written for the operator who reads them.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a QUIC relay link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The configuration cannot work.
    #[error("invalid QUIC relay configuration: {0}")]
    InvalidConfig(String),
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the address.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not make the self-signed certificate.
    #[error("generating the self-signed certificate failed: {0}")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(#[source] rustls::Error),
    /// A signaled fingerprint is not `sha-256 XX:XX:…`.
    #[error("signaled fingerprint {value:?} is invalid: {reason}")]
    InvalidFingerprint {
        /// The text received.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer presented a certificate other than the one signaled.
    #[error(
        "peer certificate fingerprint {actual} does not match the signaled {expected}; \
         the peer at {peer} is not the one that sent the description (or it restarted: signal again)"
    )]
    FingerprintMismatch {
        /// The peer's address.
        peer: SocketAddr,
        /// The signaled fingerprint.
        expected: String,
        /// The fingerprint of the certificate presented.
        actual: String,
    },
    /// The peer refused this side's certificate.
    #[error(
        "the peer at {peer} refused this side's certificate ({reason}); \
         it must pin the fingerprint this side signaled"
    )]
    CertificateRefused {
        /// The peer's address.
        peer: SocketAddr,
        /// What the peer said.
        reason: String,
    },
    /// The two sides do not speak the same application protocol.
    #[error("ALPN mismatch: {0}")]
    AlpnMismatch(String),
    /// The offerer got no answer from the answerer's address.
    #[error("no QUIC answer from {peer} within {waited:?}: is the answerer listening there?")]
    NoAnswer {
        /// Where the offerer connected.
        peer: SocketAddr,
        /// How long it waited (the liveness timeout).
        waited: Duration,
    },
    /// The answerer saw no acceptable offerer within the liveness timeout.
    #[error("no peer connected within {}{}", fmt_secs(*.waited), fmt_refusal(.last_refusal))]
    NoPeer {
        /// How long it waited (the liveness timeout).
        waited: Duration,
        /// Why the last connection attempt, if any, was refused.
        last_refusal: Option<String>,
    },
    /// The connection failed during or right after the handshake.
    #[error("QUIC handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer's address.
        peer: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// quinn refused to start connecting.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The address.
        peer: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The connection does not offer what the signaled mode needs
    /// (RoQ section 5.3: ROQ_EXPECTATION_UNMET).
    #[error("the peer at {peer} cannot carry this link: {what}")]
    ExpectationUnmet {
        /// The peer's address.
        peer: SocketAddr,
        /// What is missing.
        what: String,
    },
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{d:?}")
    }
}

fn fmt_refusal(r: &Option<String>) -> String {
    match r {
        Some(r) => format!(" (last attempt refused: {r})"),
        None => String::new(),
    }
}

impl From<relay_core::InvalidFingerprint> for QuicError {
    fn from(e: relay_core::InvalidFingerprint) -> QuicError {
        QuicError::InvalidFingerprint {
            value: e.value,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_peer_reads_well() {
        let e = QuicError::NoPeer {
            waited: Duration::from_secs(5),
            last_refusal: None,
        };
        assert_eq!(e.to_string(), "no peer connected within 5s");
        let e = QuicError::NoPeer {
            waited: Duration::from_millis(1500),
            last_refusal: Some("bad certificate".into()),
        };
        assert_eq!(
            e.to_string(),
            "no peer connected within 1.5s (last attempt refused: bad certificate)"
        );
    }
}
