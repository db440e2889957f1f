//! [`DcError`]: what can go wrong establishing a data-channel link.

use std::net::SocketAddr;
use std::time::Duration;

use relay_core::{CloseReason, Mode};

/// What can go wrong establishing a data-channel link. The text is meant
/// for an operator: it says what failed and, where it can, what to change.
#[derive(Debug, thiserror::Error)]
pub enum DcError {
    /// A local UDP socket could not be created.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bind address cannot be offered as an ICE host candidate.
    #[error("bind address {addr} is unusable as an ICE host candidate: {why}")]
    BadBindAddress {
        /// What was configured.
        addr: SocketAddr,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// A configured ICE server URL is malformed or of a kind this crate
    /// does not speak.
    #[error("ICE server {url:?} not usable: {why}")]
    IceServer {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// [`DcConfig::max_delay`](crate::DcConfig::max_delay) cannot be
    /// carried as an unreliable channel's maxPacketLifeTime.
    #[error(
        "max delay {} ms is not a usable latency budget: {why}; give 1 ms to {} ms (the default is {} ms)",
        given.as_millis(),
        crate::config::MAX_MAX_DELAY.as_millis(),
        relay_core::DEFAULT_MAX_DELAY.as_millis()
    )]
    BadMaxDelay {
        /// The configured budget.
        given: std::time::Duration,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Data channels here carry `reliable` or `unreliable` links only.
    #[error("mode {0} is not a data-channel mode; use reliable or unreliable")]
    UnsupportedMode(Mode),
    /// The peer's session description was refused.
    #[error("{side} session description refused: {why}")]
    BadDescription {
        /// `"offer"` or `"answer"`.
        side: &'static str,
        /// What the WebRTC stack said.
        why: String,
    },
    /// The offerer opened a channel with reliability settings that map to
    /// no relay mode.
    #[error(
        "peer opened data channel {label:?} with ordered={ordered}, maxRetransmits={max_retransmits:?}, \
         maxPacketLifeTime={max_packet_life_time:?}; relay accepts ordered+reliable, or unordered with maxRetransmits=0 or a maxPacketLifeTime"
    )]
    UnsupportedChannel {
        /// The channel's label.
        label: String,
        /// Whether it is ordered.
        ordered: bool,
        /// Its retransmission limit.
        max_retransmits: Option<u16>,
        /// Its lifetime limit in ms.
        max_packet_life_time: Option<u16>,
    },
    /// The WebRTC stack refused an operation while setting up.
    #[error("WebRTC setup failed while {doing}: {why}")]
    Webrtc {
        /// What we were doing.
        doing: &'static str,
        /// The stack's error.
        why: String,
    },
    /// No open channel within the liveness timeout.
    #[error(
        "data channel not open after {} ms (ICE {ice}): is the peer running, did it get the answer, \
         and is UDP between the signaled candidates allowed?",
        waited.as_millis()
    )]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// The ICE connection state at that moment.
        ice: String,
    },
    /// The link closed while being established.
    #[error("link closed before it was ready: {0}")]
    Closed(CloseReason),
}

impl DcError {
    pub(crate) fn webrtc(doing: &'static str) -> impl FnOnce(rtc::shared::error::Error) -> DcError {
        move |e| DcError::Webrtc {
            doing,
            why: e.to_string(),
        }
    }
}
