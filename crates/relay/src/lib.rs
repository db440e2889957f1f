//! # relay: one front door to every sfu-relay transport
//!
//! The facade is the only crate that knows all backends. It picks one by
//! cargo feature (`rtp-udp`, `quic`, `dc`) at build time and by
//! [`Transport`] at run time, and connects it to relay-signaling:
//!
//! - [`offer`]: the offering server's side. Makes the backend's offer,
//!   posts it to the far server's signaling, applies the answer, and returns
//!   the established link.
//! - [`answerers`]: the answering server's side. One
//!   [`relay_signaling::Answerer`] per compiled-in backend, each handing every
//!   link it establishes to a [`LinkSink`].
//! - [`pipe`]: moves packets between a link and local UDP (where ffmpeg,
//!   GStreamer or an SFU sends and receives RTP), to one link or, fanned
//!   out, to several at once ([`pipe::fanout`], [`targets`]).
//! - [`compare`]: the same workload over every backend and raw UDP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use relay::{LinkOptions, offer};
//! use relay_core::{Mode, Transport};
//! use relay_signaling::SignalingClient;
//!
//! let client = SignalingClient::new("http://127.0.0.1:8080")?;
//! let offered = offer(&client, Transport::RtpUdp, Mode::Unreliable, &LinkOptions::default()).await?;
//! println!("session {} up in {:?}", offered.session_id, offered.link.stats().setup_time);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod backends;
pub mod compare;
pub mod duration;
pub mod logs;
pub mod loopback;
pub mod metrics;
pub mod pipe;
pub mod reconnect;
pub mod sdp;
mod session;
pub mod targets;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_core::{ClockRates, Mode, RelayLink, Transport};
use relay_signaling::{Answerer, ClientError};

pub use backends::compiled_transports;

/// Settings shared by every backend's side of a link.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Local IP for media sockets (default 127.0.0.1).
    pub bind_ip: IpAddr,
    /// IP to advertise in offers/answers when `bind_ip` is unspecified.
    pub advertise_ip: Option<IpAddr>,
    /// Port to advertise instead of the bound one, where a port-forwarding
    /// NAT or proxy sits in front of the media ports: with `media_ports`
    /// `LO-HI` forwarded to `PORT..`, the session bound on `LO + n` is
    /// advertised as `PORT + n`; without, every session as `PORT`.
    pub advertise_port: Option<u16>,
    /// Local UDP ports every media socket binds in (`--media-ports`):
    /// none free fails the session (a 503 on the answering side).
    pub media_ports: Option<relay_core::udp::PortRange>,
    /// Silence after which the peer is dead (default 5 s).
    pub liveness_timeout: Duration,
    /// RTP clock rates of dynamic payload types, for jitter in the links'
    /// stats (default none: only RFC 3551 static types are known; see
    /// [`ClockRates`]).
    pub clock_rates: ClockRates,
    /// Latency budget of the unreliable modes (default
    /// [`DEFAULT_MAX_DELAY`](relay_core::DEFAULT_MAX_DELAY), 200 ms): a
    /// packet that cannot leave within it is dropped and counted as
    /// `drops.expired`, never delivered late. dc unreliable also opens its
    /// channel with this packet lifetime; quic datagram bounds its send
    /// queue by it; rtp-udp sends each packet at once and has no queue to
    /// expire. Reliable modes deliver everything and ignore it.
    pub max_delay: Duration,
    /// Plain rtp-udp: accept the peer from the first source heard rather
    /// than the signaled address only (a peer behind a NAT). srtp always
    /// latches to authenticated packets; other transports ignore it.
    pub latch: bool,
    /// Repair modes: deliver each SSRC in sequence order, holding the
    /// packets behind a loss for at most this long while its repair comes
    /// (`relay_repair::reorder`). Zero (the default) delivers packets as
    /// they arrive and leaves order to the receiving media server.
    pub reorder_window: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: None,
            advertise_port: None,
            media_ports: None,
            liveness_timeout: relay_core::DEFAULT_LIVENESS_TIMEOUT,
            clock_rates: ClockRates::new(),
            max_delay: relay_core::DEFAULT_MAX_DELAY,
            latch: false,
            reorder_window: Duration::ZERO,
        }
    }
}

/// Receives every link an answerer establishes.
pub type LinkSink = Arc<dyn Fn(Established) + Send + Sync>;

/// A link established on the answering side, with its session id.
#[derive(Debug, Clone)]
pub struct Established {
    /// The transport it came in on.
    pub transport: Transport,
    /// The link.
    pub link: Arc<dyn RelayLink>,
}

/// The offering side's result.
#[derive(Debug)]
pub struct Offered {
    /// Session id on the answering server (for `DELETE`).
    pub session_id: String,
    /// The established link.
    pub link: Arc<dyn RelayLink>,
}

/// What can go wrong establishing a link through signaling.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The transport was not compiled into this build.
    #[error("transport {transport} is not compiled into this relay; available: {available}")]
    NotCompiled {
        /// Asked for.
        transport: Transport,
        /// What is there.
        available: String,
    },
    /// The mode does not exist for the transport.
    #[error("transport {transport} has no mode {mode}; its modes: {modes}")]
    BadMode {
        /// Transport.
        transport: Transport,
        /// Asked for.
        mode: Mode,
        /// What it offers.
        modes: String,
    },
    /// Signaling failed.
    #[error(transparent)]
    Signaling(#[from] ClientError),
    /// The answer could not be parsed as the transport's description.
    #[error("the answering server sent an answer this relay cannot read: {0}")]
    BadAnswer(String),
    /// The backend failed to set up the link.
    #[error("{transport} link setup failed: {source}")]
    Setup {
        /// Transport.
        transport: Transport,
        /// The backend's own error (its type, for a caller that wants to
        /// tell one failure from another), or what went wrong around it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Establishes a link as the offerer: offer → signaling → answer → ready.
pub async fn offer(
    client: &relay_signaling::SignalingClient,
    transport: Transport,
    mode: Mode,
    options: &LinkOptions,
) -> Result<Offered, RelayError> {
    check(transport, mode)?;
    backends::offer(client, transport, mode, options).await
}

/// Runs `relay offer`: establishes a link through `client` and carries
/// `pipe` over it (a [`Pipe`](pipe::Pipe), or one
/// [`Branch`](pipe::Branch) of a fan-out); with a `policy`, establishes a
/// new link whenever one dies, until an error retrying cannot fix. See
/// [`reconnect`].
pub async fn offer_and_carry(
    client: &relay_signaling::SignalingClient,
    plan: &reconnect::OfferPlan,
    pipe: &impl pipe::Outlet,
    state: &reconnect::OfferState,
    on_event: impl FnMut(reconnect::LinkEvent<'_>),
) -> Result<relay_core::CloseReason, RelayError> {
    check(plan.transport, plan.mode)?;
    reconnect::run(client, plan, pipe, state, on_event).await
}

/// `DELETE`s session `id` on the answering side, waiting at most `within`.
pub async fn delete_session(
    client: &relay_signaling::SignalingClient,
    id: &str,
    within: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(within, client.delete(id)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "signaling did not answer the DELETE in {} ms",
            within.as_millis()
        )),
    }
}

/// One [`Answerer`] per compiled-in backend; each established link goes to
/// `sink`.
pub fn answerers(options: &LinkOptions, sink: LinkSink) -> Vec<Arc<dyn Answerer>> {
    backends::answerers(options, sink)
}

/// Checks that `transport` is compiled in and `mode` belongs to it.
pub fn check(transport: Transport, mode: Mode) -> Result<(), RelayError> {
    let compiled = compiled_transports();
    if !compiled.contains(&transport) {
        return Err(RelayError::NotCompiled {
            transport,
            available: join(compiled.iter()),
        });
    }
    if !transport.modes().contains(&mode) {
        return Err(RelayError::BadMode {
            transport,
            mode,
            modes: join(transport.modes().iter()),
        });
    }
    Ok(())
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}
