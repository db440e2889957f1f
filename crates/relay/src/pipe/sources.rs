//! The local side's streams and the keyframes the relay asks for: which
//! SSRCs the local side sends, where their feedback goes, and the requests
//! made when a link comes up, a stream appears or its destination is
//! learned.

use std::collections::HashMap;
use std::time::Instant;

use relay_core::Packet;

use super::feedback;
use super::{LinkStream, MAX_TRACKED_SSRCS, Route, Shared, Side, Source, count_send, send_control};

impl Shared {
    /// Whether `pt` is (or may be) video: 90 kHz, or of unknown rate on a
    /// dynamic type (a PLI for an audio stream is ignored by its sender).
    pub(super) fn is_video(&self, pt: u8) -> bool {
        // Configured, else RFC 3551's static rate (every static video type
        // runs at 90 kHz); a dynamic type of unknown rate may be video.
        self.options.clock_rates.get(pt).is_none_or(|hz| hz == 90_000)
    }

    /// Asks the local source of `ssrc` for a keyframe, unless asked
    /// recently; owed until the stream's feedback destination is known.
    pub(super) fn ask_keyframe(&self, ssrc: u32, now: Instant) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let Some(source) = sources.get_mut(&ssrc) else {
            return;
        };
        if !self.is_video(source.payload_type) {
            return;
        }
        if let Some(upstream) = &self.upstream {
            drop(sources);
            self.ask_upstream(upstream, ssrc, now);
            return;
        }
        let end = &self.ends[source.end];
        let (socket, dest) = end.rtcp_target();
        let Some(dest) = dest else {
            source.pending = true;
            return;
        };
        source.pending = false;
        drop(sources);
        let request = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(ssrc, now);
        if let Some(request) = request {
            tracing::debug!(ssrc = format_args!("{ssrc:#010x}"), %dest, "asking the local source for a keyframe");
            send_control(
                socket,
                request,
                dest,
                &self.counters,
                Some(|c| &c.keyframe_requests),
                "keyframe request",
            );
        }
    }

    /// A link is up: ask for a keyframe on every known stream, and tell
    /// receiving SFUs where our RTCP comes from.
    pub(super) fn link_came_up(&self) {
        let now = Instant::now();
        let ssrcs: Vec<u32> = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for ssrc in ssrcs {
            self.ask_keyframe(ssrc, now);
        }
        self.hello();
    }

    /// Answering side: an empty RR to every separate RTCP destination.
    pub(super) fn hello(&self) {
        if self.side != Side::Answer {
            return;
        }
        let rr = feedback::empty_receiver_report(self.sender_ssrc);
        for end in &self.ends {
            if let (Some(socket), Some(dest)) = (&end.rtcp, end.rtcp_dest.get()) {
                send_control(socket, rr.clone(), dest, &self.counters, None, "RTCP hello");
            }
        }
    }

    /// The first packet of `ssrc` on stream `end`: remember it, and ask for
    /// a keyframe if a link is up (a stream joining a live link).
    pub(super) fn new_source(&self, end: usize, ssrc: u32, payload_type: u8) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.contains_key(&ssrc) {
            return;
        }
        if sources.len() >= MAX_TRACKED_SSRCS {
            return;
        }
        sources.insert(
            ssrc,
            Source {
                end,
                payload_type,
                pending: false,
            },
        );
        drop(sources);
        match self.ends.get(end) {
            Some(local) => {
                tracing::info!(stream = %local.spec, ssrc = format_args!("{ssrc:#010x}"), payload_type, "new local RTP stream")
            }
            None => tracing::info!(
                ssrc = format_args!("{ssrc:#010x}"),
                payload_type,
                "new RTP stream from upstream"
            ),
        }
        if self.route.borrow().is_up() {
            self.ask_keyframe(ssrc, Instant::now());
        }
    }

    /// Stream `end`'s feedback destination became known: send what is owed.
    pub(super) fn destination_learned(&self, end: usize) {
        let owed: Vec<u32> = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.end == end && s.pending)
            .map(|(ssrc, _)| *ssrc)
            .collect();
        let now = Instant::now();
        for ssrc in owed {
            self.ask_keyframe(ssrc, now);
        }
    }

    /// The stream a relayed RTCP packet belongs to: the first SSRC it names
    /// that the link delivered to a stream or a local source sent on one;
    /// else the first stream (none without local streams).
    pub(super) fn rtcp_end(&self, ssrcs: &[u32], link_ssrcs: &HashMap<u32, LinkStream>) -> Option<usize> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        ssrcs
            .iter()
            .find_map(|s| {
                link_ssrcs
                    .get(s)
                    .map(|l| l.end)
                    .or_else(|| sources.get(s).map(|x| Some(x.end)))
            })
            .unwrap_or((!self.ends.is_empty()).then_some(0))
    }

    /// Sends a local packet where `route` says (the tail of every local →
    /// link path: a local socket's, or an answered session's in a node).
    pub(super) async fn dispatch(&self, route: &Route, packet: Packet) {
        let counters = &*self.counters;
        match route {
            Route::Down => counters.count(|c| &c.no_link),
            Route::Link(link) => count_send(link.send(packet).await, counters),
            Route::Fanout(branches) => {
                for branch in branches.iter() {
                    branch.push(packet.clone());
                }
            }
        }
    }
}
