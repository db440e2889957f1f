//! The link → local direction: what a link brings goes to the local
//! streams (and, in a node, down the tree); the far receivers' keyframe
//! requests are passed on or merged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use relay_core::{Packet, PacketKind, RelayLink};

use super::feedback::{self, KeyframeRequests, MAX_TRACKED_SSRCS, OUTAGE_GAP};
use super::{Continuity, Feed, LinkStream, PipeCounters, RTCP_HELLO_INTERVAL, Shared, StreamSpec, spec};

/// What the link → local direction does with the far receivers' own
/// keyframe requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FarRequests {
    /// Pass them on unchanged: one link, one receiving SFU, whose requests
    /// are its own business.
    PassOn,
    /// Fan-out: pass on at most one per stream per
    /// [`KEYFRAME_REQUEST_MIN_INTERVAL`](feedback::KEYFRAME_REQUEST_MIN_INTERVAL),
    /// counting the rest, so that N receivers joining or losing packets at
    /// once do not make the source send N keyframes.
    Merge,
}

impl Shared {
    /// The link → local direction of `link` until it closes or fails,
    /// counting into `counters`; in a node, also down the tree through
    /// `forward`. A forwarding pipe's link → local direction goes up the
    /// tree instead ([`Shared::relay_up`]).
    pub(super) async fn relay_down(
        &self,
        link: &Arc<dyn RelayLink>,
        counters: &PipeCounters,
        continuity: Option<&(Arc<Continuity>, u64)>,
        far: FarRequests,
        mut forward: Option<&mut Feed>,
    ) {
        if let Some(upstream) = &self.upstream {
            tokio::select! {
                _ = self.relay_up(link, counters, upstream) => {},
                _ = link.closed() => {},
            }
            return;
        }
        // Dropped when this ends, which publishes the session's streams to
        // the shared tracker.
        let mut streams = continuity.map(|(c, session)| c.session(*session));
        let mut far_requests = KeyframeRequests::new(self.sender_ssrc);
        let mut link_ssrcs: HashMap<u32, LinkStream> = HashMap::new();
        let specs: Vec<StreamSpec> = self.ends.iter().map(|e| e.spec.clone()).collect();
        let down = async {
            while let Ok(mut packet) = link.recv().await {
                let now = Instant::now();
                let end = match packet.kind() {
                    PacketKind::Rtp => {
                        let (ssrc, pt) = (packet.ssrc(), packet.payload_type().unwrap_or(0));
                        let (end, resumed) = match link_ssrcs.get_mut(&ssrc) {
                            Some(s) => {
                                let silent = now.saturating_duration_since(s.last);
                                s.last = now;
                                (s.end, silent >= OUTAGE_GAP)
                            }
                            None => {
                                let end = spec::route(&specs, pt);
                                if end.is_none() && forward.is_none() {
                                    counters.count(|c| &c.unrouted);
                                    continue;
                                }
                                if link_ssrcs.len() >= MAX_TRACKED_SSRCS {
                                    link_ssrcs.clear();
                                }
                                link_ssrcs.insert(ssrc, LinkStream { end, last: now });
                                if let Some(feed) = &forward {
                                    feed.new_stream(ssrc, pt);
                                }
                                (end, false)
                            }
                        };
                        // A video stream resuming after an outage: its
                        // receivers need a keyframe from the far source.
                        if resumed
                            && self.is_video(pt)
                            && let Some(request) = far_requests.request(ssrc, now)
                            && let Ok(request) = Packet::parse(request)
                            && link.send(request).await.is_ok()
                        {
                            counters.count(|c| &c.keyframe_requests_to_link);
                        }
                        if let (Some(streams), Some(seq)) = (&mut streams, packet.sequence_number()) {
                            streams.observe(ssrc, seq);
                        }
                        end
                    }
                    PacketKind::Rtcp => {
                        let summary = feedback::summarize(packet.bytes()).unwrap_or_default();
                        if summary.keyframe_request {
                            match self.far_request(packet, &summary, far, counters, now) {
                                Some(rest) => packet = rest,
                                None => continue,
                            }
                        }
                        self.rtcp_end(&summary.ssrcs, &link_ssrcs)
                    }
                };
                if let Some(feed) = forward.as_deref_mut() {
                    feed.send(packet.clone()).await;
                }
                let Some(end) = end else {
                    continue;
                };
                let local = &self.ends[end];
                let (socket, dest) = match packet.kind() {
                    PacketKind::Rtp => (&local.rtp, local.rtp_dest.get()),
                    PacketKind::Rtcp => local.rtcp_target(),
                };
                let Some(dest) = dest else {
                    counters.count(|c| &c.no_destination);
                    continue;
                };
                match socket.send_to(packet.bytes(), dest).await {
                    Ok(_) => counters.count(|c| &c.to_local),
                    Err(e) => {
                        counters.count(|c| &c.local_send_failed);
                        tracing::debug!(%dest, error = %e, "local send failed");
                    }
                }
            }
        };
        let hello = async {
            let mut tick = tokio::time::interval(RTCP_HELLO_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                self.hello();
            }
        };
        tokio::select! {
            _ = down => {},
            _ = hello => {},
            _ = link.closed() => {},
        }
    }

    /// A far receiver's RTCP holding a keyframe request, as it should go
    /// on: whole, or (merging, when one for the same streams went to the
    /// source within the minimum interval) without its PLI/FIR, the rest
    /// of the compound (the receiver's reports) still going on; `None`
    /// when nothing is left.
    pub(super) fn far_request(
        &self,
        packet: Packet,
        summary: &feedback::RtcpSummary,
        far: FarRequests,
        counters: &PipeCounters,
        now: Instant,
    ) -> Option<Packet> {
        if far == FarRequests::Merge && !self.pass_far_request(summary, now) {
            counters.count(|c| &c.keyframe_requests_merged);
            feedback::without_keyframe_requests(packet.bytes()).and_then(|rest| Packet::parse(rest).ok())
        } else {
            counters.count(|c| &c.keyframe_requests_relayed);
            Some(packet)
        }
    }

    /// Fan-out: whether a far receiver's keyframe request (`summary`)
    /// should reach the local source, that is whether no request for any
    /// stream it names went there (from another receiver, or from the
    /// relay itself) within the minimum interval. Passing it counts as a
    /// request for those streams.
    fn pass_far_request(&self, summary: &feedback::RtcpSummary, now: Instant) -> bool {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        // Not short-circuiting: every stream asked about is noted.
        summary
            .keyframe_ssrcs
            .iter()
            .fold(false, |pass, &ssrc| requests.note_relayed(ssrc, now) | pass)
    }
}
