//! What `relay answer` and `relay offer` add to `GET /metrics` beyond the
//! per-link families relay-signaling renders: reconnects, outages, the
//! packets they cost, and the local side of the pipe.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use relay_signaling::SessionState;
use relay_signaling::metrics::{self, Kind, LinkMetrics, MetricsSource, Role, Value, write_family};

use crate::pipe::{Continuity, PipeCounters};
use crate::reconnect::OfferState;

/// The answering side: streams resuming on new sessions (see
/// [`Continuity`]) and the local `--out` pipes of every session, summed.
pub fn answer_source(continuity: Arc<Continuity>, pipes: Arc<PipeCounters>) -> MetricsSource {
    Arc::new(move || {
        let mut out = render_continuity(&continuity);
        write_pipe(&mut out, &pipes);
        out
    })
}

/// The local side of a pipe (`--in` or `--out`): what it relayed, dropped,
/// and the keyframe requests it made and passed on.
fn write_pipe(out: &mut String, pipe: &PipeCounters) {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "relay_local_packets_to_link_total",
            "Local packets relayed onto a link.",
            get(&pipe.to_link),
        ),
        (
            "relay_local_packets_to_local_total",
            "Link packets sent to the local side.",
            get(&pipe.to_local),
        ),
        (
            "relay_local_packets_no_link_total",
            "Local packets dropped because no link was up (before the first, or reconnecting).",
            get(&pipe.no_link),
        ),
        (
            "relay_local_packets_rejected_total",
            "Local datagrams that were not RTP/RTCP or too large for the link.",
            get(&pipe.rejected),
        ),
        (
            "relay_local_packets_foreign_total",
            "Local datagrams from an address not allowed to send (answering side: not --out's IP).",
            get(&pipe.foreign),
        ),
        (
            "relay_local_packets_not_rtcp_total",
            "RTP-shaped datagrams on a local RTCP port, dropped (never relayed as media).",
            get(&pipe.not_rtcp),
        ),
        (
            "relay_local_packets_keepalive_total",
            "Header-only RTP packets (an SFU's hello, e.g. Janus announcing its RTCP socket), dropped.",
            get(&pipe.keepalives),
        ),
        (
            "relay_local_packets_unrouted_total",
            "Link RTP whose payload type no --out takes, dropped.",
            get(&pipe.unrouted),
        ),
        (
            "relay_local_packets_no_destination_total",
            "Link packets with nowhere to go yet (no local sender seen to latch onto).",
            get(&pipe.no_destination),
        ),
        (
            "relay_local_packets_send_failed_total",
            "Link packets the local socket refused to send (consumer port unreachable, datagram too large).",
            get(&pipe.local_send_failed),
        ),
        (
            "relay_keyframe_requests_total",
            "Keyframe requests (PLI + FIR) this relay sent its local source: link up, new stream, outage.",
            get(&pipe.keyframe_requests),
        ),
        (
            "relay_keyframe_requests_to_link_total",
            "Keyframe requests this relay sent over the link for a stream that resumed after an outage.",
            get(&pipe.keyframe_requests_to_link),
        ),
        (
            "relay_keyframe_requests_relayed_total",
            "RTCP from the link holding the far receivers' own PLI/FIR, passed to the local source.",
            get(&pipe.keyframe_requests_relayed),
        ),
    ] {
        write_family(out, name, Kind::Counter, help, Value::U(value));
    }
}

fn render_continuity(c: &Continuity) -> String {
    let mut out = String::new();
    let (last, total) = c.gaps();
    write_family(
        &mut out,
        "relay_stream_resumptions_total",
        Kind::Counter,
        "RTP streams (SSRCs) that stopped on one session and resumed on a new one.",
        Value::U(c.resumed()),
    );
    write_family(
        &mut out,
        "relay_stream_resumption_missing_packets_total",
        Kind::Counter,
        "RTP sequence numbers missing across those resumptions (lost in the outage).",
        Value::U(c.missing()),
    );
    write_family(
        &mut out,
        "relay_stream_resumption_gap_seconds_total",
        Kind::Counter,
        "Time between the last packet on the old session and the first on the new one, summed.",
        Value::F(total.as_secs_f64()),
    );
    write_family(
        &mut out,
        "relay_stream_resumption_last_gap_seconds",
        Kind::Gauge,
        "That time for the latest resumption.",
        Value::F(last.as_secs_f64()),
    );
    out
}

/// The offering side: its current link, reconnects and outages, and the
/// local `--in` pipe.
pub fn offer_source(state: Arc<OfferState>, pipe: Arc<PipeCounters>) -> MetricsSource {
    Arc::new(move || render_offer(&state, &pipe))
}

fn render_offer(state: &OfferState, pipe: &PipeCounters) -> String {
    let links: Vec<LinkMetrics> = state
        .current()
        .map(|(session, link)| {
            let stats = link.stats();
            LinkMetrics {
                session,
                transport: stats.transport,
                mode: stats.mode,
                role: Role::Offer,
                state: SessionState::Up,
                stats: Some(stats),
                extra: Vec::new(),
            }
        })
        .into_iter()
        .collect();
    let mut out = metrics::render(&links, None);
    let (outages, last, total) = state.outages();
    for (name, help, value) in [
        (
            "relay_offer_links_established_total",
            "Links established, the first included.",
            state.links_established(),
        ),
        (
            "relay_offer_attempts_failed_total",
            "Offer or link setup attempts that failed.",
            state.attempts_failed(),
        ),
        (
            "relay_offer_outages_total",
            "Outages (a link died) ended by a new link.",
            outages,
        ),
    ] {
        write_family(&mut out, name, Kind::Counter, help, Value::U(value));
    }
    write_pipe(&mut out, pipe);
    write_family(
        &mut out,
        "relay_offer_outage_seconds_total",
        Kind::Counter,
        "Time from a link being declared dead to the next being up, summed.",
        Value::F(total.as_secs_f64()),
    );
    write_family(
        &mut out,
        "relay_offer_last_outage_seconds",
        Kind::Gauge,
        "That time for the latest outage.",
        Value::F(last.as_secs_f64()),
    );
    write_family(
        &mut out,
        "relay_offer_link_up",
        Kind::Gauge,
        "1 while a link is up.",
        Value::U(u64::from(!links.is_empty())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_metrics_without_a_link_report_it_down_and_count_drops() {
        let state = OfferState::default();
        let pipe = PipeCounters::default();
        pipe.no_link.store(7, Ordering::Relaxed);
        let text = render_offer(&state, &pipe);
        assert!(text.contains("\nrelay_offer_link_up 0\n"), "{text}");
        assert!(text.contains("\nrelay_local_packets_no_link_total 7\n"), "{text}");
        // Every family is announced once, and every sample belongs to one.
        let mut types = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    types.insert(rest.split(' ').next().unwrap().to_string()),
                    "{line}"
                );
            }
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split([' ', '{']).next().unwrap();
            assert!(types.iter().any(|t| name.starts_with(t.as_str())), "{line}");
        }
    }

    #[test]
    fn continuity_metrics_follow_the_tracker() {
        let c = Continuity::default();
        c.session(1).observe(9, 100);
        c.session(2).observe(9, 111);
        let text = render_continuity(&c);
        assert!(text.contains("\nrelay_stream_resumptions_total 1\n"), "{text}");
        assert!(
            text.contains("\nrelay_stream_resumption_missing_packets_total 10\n"),
            "{text}"
        );
    }
}
