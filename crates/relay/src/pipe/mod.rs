//! Moving packets between a link and the local media servers (an SFU,
//! ffmpeg, GStreamer) that send and receive plain RTP/RTCP over UDP.
//!
//! A pipe has one or more local streams ([`StreamSpec`]), each an RTP
//! address with an optional separate RTCP address, because SFUs do not
//! multiplex RTCP on their forwarding ports: Janus's `rtp_forward` listens
//! for feedback on a per-forwarder RTCP socket, a streaming mountpoint
//! sends its keyframe requests from its RTCP port.
//!
//! - **Offering side** ([`Side::Offer`], `relay offer --in`): the relay
//!   binds every stream's addresses and the local source sends there.
//!   Where to send back is learned from what arrives (latching, as SFUs
//!   do): RTCP and keyframe requests for a stream go to the last sender of
//!   RTCP (or of the 12-byte RTP-shaped "hello" Janus sends to announce
//!   its feedback socket) on the stream's RTCP port, or, without one, to
//!   the last sender on its RTP port.
//! - **Answering side** ([`Side::Answer`], `relay answer --out`): every
//!   address is a destination; the relay sends from sockets of its own,
//!   per session, and accepts packets only from the destinations' IPs. RTP
//!   from the link goes to the stream its payload type is routed to
//!   ([`spec::route`]); RTCP to the stream whose SSRCs it names. At link
//!   up, and every [`RTCP_HELLO_INTERVAL`], an empty RR goes to each
//!   separate RTCP destination, so that a receiving SFU learns where to
//!   send its feedback.
//!
//! On every port, what is not RTP/RTCP is counted and dropped; a
//! header-only RTP packet (12 bytes, Janus's hello) is counted as a
//! keepalive ([`PipeCounters::keepalives`]) and not relayed; other RTP on an
//! RTCP port is counted ([`PipeCounters::not_rtcp`]) and never relayed as
//! media.
//!
//! The relay asks its local source for keyframes ([`feedback`]) when a
//! link comes up, when a new stream appears on a live link, and, over the
//! link, when a stream resumes after an outage. Keyframe requests from the
//! far side (an SFU's PLI/FIR) pass through unchanged.
//!
//! A [`Pipe`] owns the local sockets and outlives links: `relay offer
//! --reconnect` carries one link after another over the same `--in`
//! sockets, and local packets that arrive while no link is up are dropped
//! and counted ([`PipeCounters::no_link`]), never silently lost.
//! [`Continuity`] notices, on the answering side, an RTP stream that
//! resumes on a new session and counts the packets missing across the gap.
//!
//! One pipe can also feed several links at once ([`Pipe::fan_out`], `relay
//! offer` with several `--signal`): each link is a [`Branch`] with its own
//! queue, counters and reconnects, so that a slow or dead receiver never
//! holds back the others (see [`fanout`]).
//!
//! In a relay tree (`relay answer --forward`) a node's answering pipes
//! feed a forwarding pipe ([`Pipe::forwarding`]) whose local side is the
//! answered sessions: media goes down the tree, feedback up it (see
//! [`forward`]).

mod continuity;
mod down;
pub mod fanout;
pub mod feedback;
pub mod forward;
mod sources;
pub mod spec;
mod up;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_core::{ClockRates, CloseReason, RelayLink};
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use continuity::{CONTINUITY_MAX_STREAMS, Continuity, Resumed, SessionStreams};
pub use fanout::{BRANCH_QUEUE_PACKETS, Branch};
pub use forward::Feed;
pub use spec::{BadStreamSpec, StreamSpec};

use down::FarRequests;
use fanout::BranchQueue;
use feedback::{KeyframeRequests, MAX_TRACKED_SSRCS};
use forward::Upstream;
use up::{Port, count_send, local_to_link};

/// How often the answering side repeats its empty RR to each separate RTCP
/// destination: RFC 3550's minimum RTCP interval, so that an SFU restarted
/// behind `--out` learns the relay's RTCP socket again within seconds.
pub const RTCP_HELLO_INTERVAL: Duration = Duration::from_secs(5);

/// Which side of a link a pipe serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `relay offer`: stream addresses are bound; destinations are latched.
    Offer,
    /// `relay answer`: stream addresses are destinations; only their IPs
    /// may send.
    Answer,
}

/// Counters of one pipe, over all its streams.
#[derive(Debug, Default)]
pub struct PipeCounters {
    /// Where every count is added too (`relay answer`'s process-wide
    /// totals across sessions).
    total: Option<Arc<PipeCounters>>,
    /// Local packets relayed onto the link.
    pub to_link: AtomicU64,
    /// Link packets sent to the local side.
    pub to_local: AtomicU64,
    /// Local datagrams that were not RTP/RTCP or were too large for the link.
    pub rejected: AtomicU64,
    /// Local datagrams from an address not allowed to send.
    pub foreign: AtomicU64,
    /// Link packets with nowhere to go yet (no local sender seen).
    pub no_destination: AtomicU64,
    /// Local packets dropped because no link was up (before the first
    /// link, while reconnecting, or refused by a link that had just died).
    pub no_link: AtomicU64,
    /// RTP with a payload that arrived on an RTCP port (dropped).
    pub not_rtcp: AtomicU64,
    /// Header-only RTP packets (Janus's hello on its RTCP socket, or a
    /// keepalive on a media port), dropped.
    pub keepalives: AtomicU64,
    /// Link RTP whose payload type no stream takes (dropped).
    pub unrouted: AtomicU64,
    /// Link packets the local socket refused to send (the consumer's port
    /// unreachable, a datagram over 65,507 bytes).
    pub local_send_failed: AtomicU64,
    /// Keyframe requests (PLI + FIR) the relay sent its local source.
    pub keyframe_requests: AtomicU64,
    /// Keyframe requests the relay sent over the link after an outage.
    pub keyframe_requests_to_link: AtomicU64,
    /// RTCP from the link holding a PLI or FIR (the far receivers' own
    /// requests), passed on to the local source.
    pub keyframe_requests_relayed: AtomicU64,
    /// Fan-out: far receivers' keyframe requests held back because one for
    /// the same stream reached the local source less than
    /// [`KEYFRAME_REQUEST_MIN_INTERVAL`](feedback::KEYFRAME_REQUEST_MIN_INTERVAL)
    /// ago (the rest of their RTCP still passes).
    pub keyframe_requests_merged: AtomicU64,
    /// Fan-out: local packets dropped from a link's queue because the link
    /// fell [`BRANCH_QUEUE_PACKETS`] behind (the oldest goes first).
    pub queue_overflow: AtomicU64,
}

impl PipeCounters {
    /// Counters that also add every count to `total`.
    pub fn with_total(total: Arc<PipeCounters>) -> PipeCounters {
        PipeCounters {
            total: Some(total),
            ..PipeCounters::default()
        }
    }

    /// Adds one to the counter `which` picks, here and in the total.
    fn count(&self, which: fn(&PipeCounters) -> &AtomicU64) {
        which(self).fetch_add(1, Ordering::Relaxed);
        if let Some(total) = &self.total {
            which(total).fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a pipe needs to know about the media.
#[derive(Debug, Clone, Default)]
pub struct PipeOptions {
    /// Payload type clock rates: a stream at 90 kHz, or on a payload type
    /// of unknown rate, is treated as video and gets keyframe requests.
    pub clock_rates: ClockRates,
}

/// A local socket the pipe could not open.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the {what} socket {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// A destination: fixed (answering side) or learned from the last sender
/// (offering side).
#[derive(Debug)]
enum Dest {
    Fixed(SocketAddr),
    Latched(Mutex<Option<SocketAddr>>),
}

impl Dest {
    fn latched() -> Dest {
        Dest::Latched(Mutex::new(None))
    }

    fn fixed(&self) -> Option<SocketAddr> {
        match self {
            Dest::Fixed(a) => Some(*a),
            Dest::Latched(_) => None,
        }
    }

    fn get(&self) -> Option<SocketAddr> {
        match self {
            Dest::Fixed(a) => Some(*a),
            Dest::Latched(l) => *l.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Latches `from`; true if that changed the destination (never for a
    /// fixed one).
    fn latch(&self, from: SocketAddr) -> bool {
        let Dest::Latched(l) = self else {
            return false;
        };
        let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *l != Some(from);
        *l = Some(from);
        changed
    }
}

/// One local stream's sockets and destinations.
#[derive(Debug)]
struct LocalEnd {
    spec: StreamSpec,
    rtp: Arc<UdpSocket>,
    rtcp: Option<Arc<UdpSocket>>,
    rtp_dest: Dest,
    rtcp_dest: Dest,
}

impl LocalEnd {
    /// Where this stream's RTCP goes: its RTCP socket and destination, or
    /// the RTP ones when RTCP is multiplexed.
    fn rtcp_target(&self) -> (&Arc<UdpSocket>, Option<SocketAddr>) {
        match &self.rtcp {
            Some(s) => (s, self.rtcp_dest.get()),
            None => (&self.rtp, self.rtp_dest.get()),
        }
    }
}

/// Most time a control packet (keyframe request, RTCP hello) may wait for
/// its socket; a socket that stays unwritable this long has a dead peer.
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Sends a control packet the relay makes itself, from a context that
/// cannot wait, and counts it with `which` once sent. A fresh socket is not
/// known writable until the runtime has polled it (`try_send_to` would say
/// WouldBlock right after a link comes up, and the packet would be lost),
/// so the send runs on its own task.
fn send_control(
    socket: &Arc<UdpSocket>,
    packet: Bytes,
    dest: SocketAddr,
    counters: &Arc<PipeCounters>,
    which: Option<fn(&PipeCounters) -> &AtomicU64>,
    what: &'static str,
) {
    let (socket, counters) = (socket.clone(), counters.clone());
    tokio::spawn(async move {
        match tokio::time::timeout(CONTROL_SEND_TIMEOUT, socket.send_to(&packet, dest)).await {
            Ok(Ok(_)) => {
                if let Some(which) = which {
                    counters.count(which);
                }
                tracing::debug!(%dest, "{what} sent");
            }
            Ok(Err(error)) => tracing::debug!(%dest, %error, "{what} not sent"),
            Err(_) => tracing::debug!(%dest, "{what} not sent: socket not writable"),
        }
    });
}

/// A stream the local side sends, by SSRC.
#[derive(Debug, Clone, Copy)]
struct Source {
    end: usize,
    payload_type: u8,
    /// A keyframe request is owed but the stream's feedback destination is
    /// not known yet.
    pending: bool,
}

/// State the local → link tasks and the link → local direction share.
#[derive(Debug)]
struct Shared {
    side: Side,
    ends: Vec<LocalEnd>,
    counters: Arc<PipeCounters>,
    options: PipeOptions,
    sender_ssrc: u32,
    sources: Mutex<HashMap<u32, Source>>,
    requests: Mutex<KeyframeRequests>,
    /// Where local packets go.
    route: watch::Sender<Route>,
    /// A node's forwarding pipe ([`Pipe::forwarding`]): the answered
    /// sessions that are its local side, instead of `ends`.
    upstream: Option<Upstream>,
}

/// Where the local → link tasks send what they read.
#[derive(Debug, Clone, Default)]
enum Route {
    /// No link: local packets are dropped and counted.
    #[default]
    Down,
    /// One link, sent onto directly: a reliable mode's back-pressure
    /// reaches the local socket, as with no relay in between.
    Link(Arc<dyn RelayLink>),
    /// Several links, each behind its own queue ([`Pipe::fan_out`]).
    Fanout(Arc<[Arc<BranchQueue>]>),
}

impl Route {
    fn is_up(&self) -> bool {
        match self {
            Route::Down => false,
            Route::Link(_) => true,
            Route::Fanout(branches) => branches.iter().any(|b| b.is_up()),
        }
    }
}

/// A stream arriving over the link, by SSRC.
#[derive(Debug, Clone, Copy)]
struct LinkStream {
    /// The local stream it goes to; none in a node without `--out` for it.
    end: Option<usize>,
    last: Instant,
}

/// Local sockets relaying to whichever link is attached.
///
/// The local → link direction runs for the pipe's whole life, one task per
/// socket; the link → local direction runs inside [`Pipe::carry`], once
/// per link.
pub struct Pipe {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    continuity: Option<(Arc<Continuity>, u64)>,
    /// A node's answering pipe: where what the link brings also goes.
    forward: Mutex<Option<Feed>>,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("side", &self.shared.side)
            .field("streams", &self.streams())
            .field("counters", &self.shared.counters)
            .finish_non_exhaustive()
    }
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<Arc<UdpSocket>, BindError> {
    relay_core::udp::bind_udp(addr, relay_core::udp::DEFAULT_SOCKET_BUFFER)
        .and_then(UdpSocket::from_std)
        .map(Arc::new)
        .map_err(|source| BindError { what, addr, source })
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    let ip = if addr.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    SocketAddr::new(ip, 0)
}

impl Pipe {
    /// Opens the sockets of `streams` for `side` and starts reading them;
    /// until a link is attached, local packets are counted in
    /// [`PipeCounters::no_link`]. Must run inside a tokio runtime.
    pub fn bind(
        side: Side,
        streams: &[StreamSpec],
        options: PipeOptions,
        counters: Arc<PipeCounters>,
    ) -> Result<Pipe, BindError> {
        let mut ends = Vec::with_capacity(streams.len());
        for spec in streams {
            let end = match side {
                Side::Offer => LocalEnd {
                    rtp: bind("RTP", spec.rtp)?,
                    rtcp: spec.rtcp.map(|a| bind("RTCP", a)).transpose()?,
                    rtp_dest: Dest::latched(),
                    rtcp_dest: Dest::latched(),
                    spec: spec.clone(),
                },
                Side::Answer => LocalEnd {
                    rtp: bind("RTP", unspecified_like(spec.rtp))?,
                    rtcp: spec.rtcp.map(|a| bind("RTCP", unspecified_like(a))).transpose()?,
                    rtp_dest: Dest::Fixed(spec.rtp),
                    // Without an RTCP address, RTCP goes out of the RTP socket.
                    rtcp_dest: spec.rtcp.map(Dest::Fixed).unwrap_or_else(Dest::latched),
                    spec: spec.clone(),
                },
            };
            ends.push(end);
        }
        let sender_ssrc = rand::random();
        let shared = Arc::new(Shared {
            side,
            ends,
            counters,
            options,
            sender_ssrc,
            sources: Mutex::new(HashMap::new()),
            requests: Mutex::new(KeyframeRequests::new(sender_ssrc)),
            route: watch::Sender::new(Route::Down),
            upstream: None,
        });
        let mut tasks = Vec::new();
        for (i, end) in shared.ends.iter().enumerate() {
            tasks.push(tokio::spawn(local_to_link(shared.clone(), i, Port::Rtp)));
            if end.rtcp.is_some() {
                tasks.push(tokio::spawn(local_to_link(shared.clone(), i, Port::Rtcp)));
            }
        }
        Ok(Pipe {
            shared,
            tasks,
            continuity: None,
            forward: Mutex::new(None),
        })
    }

    /// A node's forwarding pipe (`relay answer --forward`, see [`forward`]):
    /// an offering pipe whose local side is the sessions this relay
    /// answers. Each answering pipe feeds it through a [`Feed`]
    /// ([`Pipe::feed`], [`Pipe::with_forward`]); it carries one downstream
    /// link, or several once [fanned out](Pipe::fan_out). Must run inside
    /// a tokio runtime.
    pub fn forwarding(options: PipeOptions, counters: Arc<PipeCounters>) -> Pipe {
        let sender_ssrc = rand::random();
        let shared = Arc::new(Shared {
            side: Side::Offer,
            ends: Vec::new(),
            counters,
            options,
            sender_ssrc,
            sources: Mutex::new(HashMap::new()),
            requests: Mutex::new(KeyframeRequests::new(sender_ssrc)),
            route: watch::Sender::new(Route::Down),
            upstream: Some(Upstream::default()),
        });
        Pipe {
            shared,
            tasks: Vec::new(),
            continuity: None,
            forward: Mutex::new(None),
        }
    }

    /// A forwarding pipe's way in for answered session `session` over
    /// `link`: feedback goes up `link` while the [`Feed`] lives. Panics on
    /// a pipe not made by [`Pipe::forwarding`].
    pub fn feed(&self, session: u64, link: Arc<dyn RelayLink>) -> Feed {
        Feed::new(self.shared.clone(), session, link)
    }

    /// Answered sessions feeding this forwarding pipe now (0 for others).
    pub fn upstream_sessions(&self) -> usize {
        self.shared.upstream.as_ref().map_or(0, |u| u.sessions())
    }

    /// An answering pipe that also passes what its link brings down the
    /// tree through `feed` (`relay answer --forward`; with no `--out`
    /// streams, only there).
    pub fn with_forward(self, feed: Feed) -> Pipe {
        *self.forward.lock().unwrap_or_else(|e| e.into_inner()) = Some(feed);
        self
    }

    /// Reports RTP streams this pipe delivers locally to `continuity`, as
    /// session `session`, so a stream resuming after a reconnect is noticed.
    pub fn with_continuity(mut self, continuity: Arc<Continuity>, session: u64) -> Pipe {
        self.continuity = Some((continuity, session));
        self
    }

    /// The pipe's counters.
    pub fn counters(&self) -> &Arc<PipeCounters> {
        &self.shared.counters
    }

    /// The streams, as given.
    pub fn streams(&self) -> Vec<&StreamSpec> {
        self.shared.ends.iter().map(|e| &e.spec).collect()
    }

    /// Each stream's local socket addresses (RTP, RTCP): on the offering
    /// side, where the local source sends (resolves port 0).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Option<SocketAddr>)> {
        self.shared
            .ends
            .iter()
            .map(|e| {
                let addr = |s: &UdpSocket| s.local_addr().ok();
                (
                    addr(&e.rtp).unwrap_or(e.spec.rtp),
                    e.rtcp.as_deref().and_then(addr),
                )
            })
            .collect()
    }

    /// Makes `link` the one local packets go to from now on, before
    /// [`carry`](Pipe::carry) starts the other direction (so that a caller
    /// can announce "ready" only once nothing sent after it is dropped).
    /// A new link asks the local sources for keyframes.
    pub fn attach(&self, link: Arc<dyn RelayLink>) {
        let previous = self.shared.route.send_replace(Route::Link(link.clone()));
        if !matches!(previous, Route::Link(p) if Arc::ptr_eq(&p, &link)) {
            self.shared.link_came_up();
        }
    }

    /// Relays over `link` until it closes; returns why it closed. The pipe
    /// is then without a link until the next `carry`.
    pub async fn carry(&self, link: Arc<dyn RelayLink>) -> CloseReason {
        self.attach(link.clone());
        let shared = &self.shared;
        let mut forward = self.forward.lock().unwrap_or_else(|e| e.into_inner()).take();
        shared
            .relay_down(
                &link,
                &shared.counters,
                self.continuity.as_ref(),
                FarRequests::PassOn,
                forward.as_mut(),
            )
            .await;
        shared.route.send_replace(Route::Down);
        link.closed().await
    }

    /// Feeds every local packet to `branches` links at once, each through
    /// its own queue, instead of one link: the branches are handed back,
    /// one per link, for [`Branch::attach`] and [`Branch::carry`]. Each
    /// branch's counters add up into the pipe's. [`attach`](Pipe::attach)
    /// and [`carry`](Pipe::carry) are not for a fanned-out pipe.
    pub fn fan_out(&self, branches: usize) -> Vec<Branch> {
        let branches: Vec<Branch> = (0..branches).map(|_| Branch::new(self.shared.clone())).collect();
        let queues: Arc<[Arc<BranchQueue>]> = branches.iter().map(|b| b.queue().clone()).collect();
        self.shared.route.send_replace(Route::Fanout(queues));
        branches
    }
}

/// Where a link plugs into a pipe: the whole [`Pipe`] when it carries one
/// link, or one [`Branch`] of a fanned-out pipe. `relay offer`'s
/// establish-and-reconnect loop ([`crate::reconnect`]) drives either.
pub trait Outlet: Send + Sync {
    /// Local packets go to `link` from now on; see [`Pipe::attach`].
    fn attach(&self, link: Arc<dyn RelayLink>);

    /// Relays over `link` until it closes; returns why. See [`Pipe::carry`].
    fn carry(&self, link: Arc<dyn RelayLink>) -> impl Future<Output = CloseReason> + Send;

    /// The counters of what this outlet relays.
    fn counters(&self) -> &Arc<PipeCounters>;
}

impl<O: Outlet> Outlet for Arc<O> {
    fn attach(&self, link: Arc<dyn RelayLink>) {
        O::attach(self, link);
    }

    fn carry(&self, link: Arc<dyn RelayLink>) -> impl Future<Output = CloseReason> + Send {
        O::carry(self, link)
    }

    fn counters(&self) -> &Arc<PipeCounters> {
        O::counters(self)
    }
}

impl Outlet for Pipe {
    fn attach(&self, link: Arc<dyn RelayLink>) {
        Pipe::attach(self, link);
    }

    fn carry(&self, link: Arc<dyn RelayLink>) -> impl Future<Output = CloseReason> + Send {
        Pipe::carry(self, link)
    }

    fn counters(&self) -> &Arc<PipeCounters> {
        Pipe::counters(self)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;
