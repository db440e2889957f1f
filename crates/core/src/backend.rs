//! The setup contract every backend implements: how an offering side and an
//! answering side become a [`RelayLink`].
//!
//! A link is established in the offer/answer pattern of RFC 3264 and
//! WebRTC, whatever the transport:
//!
//! 1. the offering side binds its sockets ([`Offering::bind`]) and
//!    describes itself ([`Offering::offer`]);
//! 2. the offer reaches the answering side (HTTP signaling between two
//!    servers, or in-process), which binds, applies it
//!    ([`Answering::bind`]) and describes itself
//!    ([`Answering::answer`]);
//! 3. the answer comes back; the offering side connects
//!    ([`Offering::connect`]) while the answering side waits for it
//!    ([`Answering::accept`]). Each resolves to its end of the link.
//!
//! A backend names its types once, in a [`Backend`] (a marker type such as
//! `rtp_udp_relay::RtpUdp`), so code that drives setup (the `relay`
//! facade's dispatch, the conformance suite's loopback pairs in
//! `relay_core::conformance` with the `conformance` feature) is written
//! once, generically, for every transport.
//!
//! Descriptions are serde types: what goes over signaling is their JSON.
//!
//! ```
//! use relay_core::backend::{Backend, Offering};
//!
//! /// Offers a link of backend `B` and returns the offer's JSON.
//! async fn describe<B: Backend>(config: B::Config, mode: relay_core::Mode) -> Result<String, B::Error> {
//!     let offerer = B::Offerer::bind(config, mode).await?;
//!     Ok(serde_json::to_string(&offerer.offer()).expect("descriptions serialize"))
//! }
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::udp::PortRange;
use crate::{ClockRates, Mode, RelayLink, Transport};

/// Pieces every backend's link uses and a user of a link never needs: the
/// size check every `send` starts with, and a warning logged once per link.
pub use crate::link::check_size;
pub use crate::stats::WarnOnce;

/// One transport's setup types.
pub trait Backend: Send + Sync + 'static {
    /// The transport this backend is.
    const TRANSPORT: Transport;
    /// Its configuration (sockets, timers, limits).
    type Config: Clone + Send + Sync + 'static;
    /// What the offering side sends.
    type Offer: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What the answering side sends back.
    type Answer: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Both sides' end of an established link.
    type Link: RelayLink + 'static;
    /// What can go wrong setting one up.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The offering side.
    type Offerer: Offering<Self>;
    /// The answering side.
    type Answerer: Answering<Self>;

    /// The backend's configuration from the settings every backend shares,
    /// for links in `mode` (one of [`Transport::modes`] of
    /// [`TRANSPORT`](Backend::TRANSPORT), as the backend runs it:
    /// [`Transport::link_mode`]).
    fn config(common: &CommonConfig, mode: Mode) -> Self::Config;

    /// Whether `error`, from [`Answering::bind`], says the offer itself is
    /// wrong (a malformed description, a mode this backend does not have),
    /// rather than that this side could not take it (no free port).
    /// Signaling answers the first with 400 and the second with 503.
    fn offer_was_bad(error: &Self::Error) -> bool;
}

/// The offering side of backend `B`.
pub trait Offering<B: Backend + ?Sized>: Sized + Send + 'static {
    /// Binds this side's sockets for a link in `mode`.
    fn bind(config: B::Config, mode: Mode) -> impl Future<Output = Result<Self, B::Error>> + Send;

    /// This side's description, for the answering side.
    fn offer(&self) -> B::Offer;

    /// Applies the answering side's description and establishes the link.
    fn connect(self, answer: &B::Answer) -> impl Future<Output = Result<B::Link, B::Error>> + Send;
}

/// The answering side of backend `B`.
pub trait Answering<B: Backend + ?Sized>: Sized + Send + 'static {
    /// Binds this side's sockets and applies `offer`, for a link in `mode`
    /// (a backend whose offer carries its mode may check the two agree).
    fn bind(
        config: B::Config,
        mode: Mode,
        offer: &B::Offer,
    ) -> impl Future<Output = Result<Self, B::Error>> + Send;

    /// This side's description, for the offering side.
    fn answer(&self) -> B::Answer;

    /// Waits for the offering side to connect; resolves to this side's end
    /// of the link. Runs on its own (a signaling server answers first and
    /// hands this to a session).
    fn accept(self) -> impl Future<Output = Result<B::Link, B::Error>> + Send + 'static;
}

/// The settings every backend takes alike, as the `relay` command's flags
/// give them; [`Backend::config`] maps them onto each backend's own
/// configuration (whose defaults fill in everything else).
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Where media sockets bind (port 0: any, or within `media_ports`).
    pub bind: SocketAddr,
    /// The IP to put in descriptions when `bind` is unspecified (0.0.0.0).
    pub advertise_ip: Option<IpAddr>,
    /// Local ports media sockets must bind in.
    pub media_ports: Option<PortRange>,
    /// Silence after which the peer is dead.
    pub liveness_timeout: Duration,
    /// Clock rates of dynamic payload types, for jitter.
    pub clock_rates: ClockRates,
    /// Latency budget of the unreliable modes.
    pub max_delay: Duration,
    /// Plain rtp-udp: accept the peer from the first source heard.
    pub latch: bool,
}

impl Default for CommonConfig {
    fn default() -> Self {
        CommonConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_ip: None,
            media_ports: None,
            liveness_timeout: crate::DEFAULT_LIVENESS_TIMEOUT,
            clock_rates: ClockRates::new(),
            max_delay: crate::DEFAULT_MAX_DELAY,
            latch: false,
        }
    }
}
