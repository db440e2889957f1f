//! A relay in a tree: what it answers, it passes on (`relay answer
//! --forward`).
//!
//! A node answers sessions from the relay above it (upstream) and offers
//! links to the relays below it (downstream), each established at start
//! and again whenever it dies. Between the two sits a forwarding pipe
//! ([`Pipe::forwarding`](super::Pipe::forwarding)): a pipe like `relay
//! offer`'s, whose local side is the answered sessions rather than UDP
//! sockets.
//!
//! - **Down the tree.** Every packet an answered session brings (the
//!   media and the source's own RTCP) is fed to the forwarding pipe
//!   through that session's [`Feed`], as a local packet would be: onto the
//!   one downstream link directly, or to each of several through its own
//!   drop-oldest queue ([`super::fanout`]). With `--out` as well, the node
//!   also delivers it locally. Nothing is rewritten on the way: SSRCs,
//!   sequence numbers and timestamps reach the leaves as the source sent
//!   them.
//! - **Up the tree.** What a downstream link sends back (receivers'
//!   reports, NACKs, keyframe requests, REMB) goes up the answered session
//!   that brings the stream it names, or the latest one. Feedback is
//!   forwarded, not aggregated: each leaf's reports reach the source as
//!   the leaf sent them. Keyframe requests are the exception: every node
//!   merges them, passing at most one per stream per
//!   [`KEYFRAME_REQUEST_MIN_INTERVAL`](super::feedback::KEYFRAME_REQUEST_MIN_INTERVAL)
//!   upwards and counting the rest
//!   ([`PipeCounters::keyframe_requests_merged`]), so eight leaves that
//!   lose the same packet cost the source one keyframe, however deep the
//!   tree.
//! - **A new downstream link** asks upstream for a keyframe on every stream
//!   the node passes on, so a leaf that joins starts decoding one round
//!   trip to the source later, not at the source's next periodic keyframe.
//!
//! The forwarding pipe's counters read from the node's point of view:
//! `to_link` is what went down the tree, `to_local` what went up it,
//! `no_destination` feedback that arrived while no session was up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use relay_core::{Packet, PacketKind, RelayLink};
use tokio::sync::watch;

use super::feedback::{self, MAX_TRACKED_SSRCS};
use super::{FarRequests, PipeCounters, Route, Shared};

/// The answered sessions of a node, as its forwarding pipe sees them.
#[derive(Debug, Default)]
pub(super) struct Upstream {
    /// Sessions up now with their links, oldest first.
    sessions: Mutex<Vec<(u64, Arc<dyn RelayLink>)>>,
    /// The session that brings each stream, by SSRC.
    streams: Mutex<HashMap<u32, u64>>,
}

impl Upstream {
    /// The link feedback about `ssrcs` goes up: the session that brings
    /// the first of them that one brings, else the latest session.
    pub(super) fn link_for(&self, ssrcs: &[u32]) -> Option<Arc<dyn RelayLink>> {
        let session = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            ssrcs.iter().find_map(|s| streams.get(s).copied())
        };
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        session
            .and_then(|id| sessions.iter().find(|(s, _)| *s == id))
            .or_else(|| sessions.last())
            .map(|(_, link)| link.clone())
    }

    fn note_stream(&self, ssrc: u32, session: u64) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= MAX_TRACKED_SSRCS && !streams.contains_key(&ssrc) {
            streams.clear();
        }
        streams.insert(ssrc, session);
    }

    /// Sessions up now.
    pub(super) fn sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One answered session's way into a node's forwarding pipe: what the
/// session brings goes down the tree through it, and while it lives the
/// session is where feedback goes up. Dropping it takes the session out.
pub struct Feed {
    /// The forwarding pipe's state.
    shared: Arc<Shared>,
    session: u64,
    route_changes: watch::Receiver<Route>,
    route: Route,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Registers session `session`, whose link is `link`, with the
    /// forwarding pipe `shared`.
    pub(super) fn new(shared: Arc<Shared>, session: u64, link: Arc<dyn RelayLink>) -> Feed {
        let upstream = shared
            .upstream
            .as_ref()
            .expect("a forwarding pipe has an upstream");
        upstream
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session, link));
        let mut route_changes = shared.route.subscribe();
        let route = route_changes.borrow_and_update().clone();
        Feed {
            shared,
            session,
            route_changes,
            route,
        }
    }

    /// A stream this session brings for the first time: feedback about it
    /// goes up this session, and downstream links coming up ask for its
    /// keyframes.
    pub(super) fn new_stream(&self, ssrc: u32, payload_type: u8) {
        if let Some(upstream) = &self.shared.upstream {
            upstream.note_stream(ssrc, self.session);
        }
        self.shared.new_source(0, ssrc, payload_type);
    }

    /// Passes `packet` down the tree.
    pub(super) async fn send(&mut self, packet: Packet) {
        if self.route_changes.has_changed().unwrap_or(false) {
            self.route = self.route_changes.borrow_and_update().clone();
        }
        self.shared.dispatch(&self.route, packet).await;
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(upstream) = &self.shared.upstream {
            upstream
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(s, _)| *s != self.session);
        }
    }
}

impl Shared {
    /// A node's forwarding pipe, link → "local": what a downstream `link`
    /// sends back goes up the tree, keyframe requests merged. Runs until
    /// the link closes or fails.
    pub(super) async fn relay_up(
        &self,
        link: &Arc<dyn RelayLink>,
        counters: &PipeCounters,
        upstream: &Upstream,
    ) {
        while let Ok(mut packet) = link.recv().await {
            let ssrcs = match packet.kind() {
                PacketKind::Rtp => vec![packet.ssrc()],
                PacketKind::Rtcp => {
                    let summary = feedback::summarize(packet.bytes()).unwrap_or_default();
                    if summary.keyframe_request {
                        match self.far_request(packet, &summary, FarRequests::Merge, counters, Instant::now())
                        {
                            Some(rest) => packet = rest,
                            None => continue,
                        }
                    }
                    summary.ssrcs
                }
            };
            let Some(up) = upstream.link_for(&ssrcs) else {
                counters.count(|c| &c.no_destination);
                continue;
            };
            match up.send(packet).await {
                Ok(()) => counters.count(|c| &c.to_local),
                Err(error) => {
                    counters.count(|c| &c.local_send_failed);
                    tracing::debug!(%error, "feedback not sent up the tree");
                }
            }
        }
    }

    /// Asks upstream for a keyframe on stream `ssrc` (a forwarding pipe's
    /// [`ask_keyframe`](Shared::ask_keyframe)): through the session that
    /// brings it, unless one was asked for within the minimum interval.
    pub(super) fn ask_upstream(&self, upstream: &Upstream, ssrc: u32, now: Instant) {
        let Some(link) = upstream.link_for(&[ssrc]) else {
            return;
        };
        let request = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(ssrc, now);
        let Some(request) = request.and_then(|r| Packet::parse(r).ok()) else {
            return;
        };
        tracing::debug!(
            ssrc = format_args!("{ssrc:#010x}"),
            "asking upstream for a keyframe"
        );
        let counters = self.counters.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(super::CONTROL_SEND_TIMEOUT, link.send(request)).await {
                Ok(Ok(())) => counters.count(|c| &c.keyframe_requests),
                Ok(Err(error)) => tracing::debug!(%error, "keyframe request not sent upstream"),
                Err(_) => tracing::debug!("keyframe request not sent upstream: link not writable"),
            }
        });
    }
}
