//! [`RtpUdpError`]: what can go wrong establishing an rtp-udp link.

use std::net::SocketAddr;
use std::time::Duration;

use relay_core::CloseReason;

/// What can go wrong establishing an rtp-udp link.
#[derive(Debug, thiserror::Error)]
pub enum RtpUdpError {
    /// The local socket could not be created.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The signaled address cannot be sent to.
    #[error("signaled address {addr} is unusable: {why}")]
    BadAddress {
        /// What was signaled.
        addr: SocketAddr,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// No probe reply within the liveness timeout.
    #[error("no reply from peer {peer} within {} ms: is it running, and is UDP to it allowed?", waited.as_millis())]
    NoPeer {
        /// Where the probes went.
        peer: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// The link closed while being established.
    #[error("link closed before it was ready: {0}")]
    Closed(CloseReason),
    /// A mode other than `unreliable` (plain RTP) or `srtp`.
    #[error("rtp-udp does not offer mode {0}; it offers unreliable and srtp")]
    UnsupportedMode(relay_core::Mode),
    /// The SRTP parameters in the peer's description are missing, or do not
    /// match the mode, or name an unsupported suite or a bad key.
    #[error("bad SRTP parameters: {0}")]
    BadSrtp(String),
}
