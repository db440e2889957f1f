//! What `relay answer` and `relay offer` add to `GET /metrics` beyond the
//! per-link families relay-signaling renders: reconnects, outages, the
//! packets they cost, and the local side of the pipe. A fanned-out `relay
//! offer` reports each link apart, with a `link` label
//! (`relay_offer_link_up{link="2"} 0`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use relay_signaling::SessionState;
use relay_signaling::metrics::{self, Kind, LinkMetrics, MetricsSource, Role, Value, write_family};

use crate::pipe::{Branch, Continuity, PipeCounters};
use crate::reconnect::OfferState;

/// The answering side: streams resuming on new sessions (see
/// [`Continuity`]) and the local `--out` pipes of every session, summed.
pub fn answer_source(continuity: Arc<Continuity>, pipes: Arc<PipeCounters>) -> MetricsSource {
    Arc::new(move || {
        let mut out = render_continuity(&continuity);
        write_pipe(&mut out, &pipes, &[(String::new(), &pipes)]);
        out
    })
}

/// Whether a pipe family is counted per link (labelled `link` in a
/// fan-out) or once for the pipe's local side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Per {
    Link,
    Pipe,
}

/// The local side of a pipe (`--in` or `--out`): what it relayed, dropped,
/// and the keyframe requests it made and passed on. The families about
/// one link have a sample per entry of `links` (`(labels, counters)`);
/// the others one unlabelled sample from `pipe`.
fn write_pipe(out: &mut String, pipe: &PipeCounters, links: &[(String, &PipeCounters)]) {
    type Counter = fn(&PipeCounters) -> &std::sync::atomic::AtomicU64;
    let families: [(&str, &str, Per, Counter); 15] = [
        (
            "relay_local_packets_to_link_total",
            "Local packets relayed onto a link.",
            Per::Link,
            |p| &p.to_link,
        ),
        (
            "relay_local_packets_to_local_total",
            "Link packets sent to the local side.",
            Per::Link,
            |p| &p.to_local,
        ),
        (
            "relay_local_packets_no_link_total",
            "Local packets dropped because no link was up (before the first, or reconnecting).",
            Per::Link,
            |p| &p.no_link,
        ),
        (
            "relay_local_packets_queue_overflow_total",
            "Local packets dropped, oldest first, from a fan-out link's queue because that link fell behind.",
            Per::Link,
            |p| &p.queue_overflow,
        ),
        (
            "relay_local_packets_rejected_total",
            "Local datagrams that were not RTP/RTCP or too large for the link.",
            Per::Pipe,
            |p| &p.rejected,
        ),
        (
            "relay_local_packets_foreign_total",
            "Local datagrams from an address not allowed to send (answering side: not --out's IP).",
            Per::Pipe,
            |p| &p.foreign,
        ),
        (
            "relay_local_packets_not_rtcp_total",
            "RTP with a payload on a local RTCP port, dropped (never relayed as media).",
            Per::Pipe,
            |p| &p.not_rtcp,
        ),
        (
            "relay_local_packets_keepalive_total",
            "Header-only RTP packets (an SFU's hello, e.g. Janus announcing its RTCP socket), dropped.",
            Per::Pipe,
            |p| &p.keepalives,
        ),
        (
            "relay_local_packets_unrouted_total",
            "Link RTP whose payload type no --out takes, dropped.",
            Per::Link,
            |p| &p.unrouted,
        ),
        (
            "relay_local_packets_no_destination_total",
            "Link packets with nowhere to go yet (no local sender seen to latch onto).",
            Per::Link,
            |p| &p.no_destination,
        ),
        (
            "relay_local_packets_send_failed_total",
            "Link packets the local socket refused to send (consumer port unreachable, datagram too large).",
            Per::Link,
            |p| &p.local_send_failed,
        ),
        (
            "relay_keyframe_requests_total",
            "Keyframe requests (PLI + FIR) this relay sent its local source: link up, new stream, outage.",
            Per::Pipe,
            |p| &p.keyframe_requests,
        ),
        (
            "relay_keyframe_requests_to_link_total",
            "Keyframe requests this relay sent over the link for a stream that resumed after an outage.",
            Per::Link,
            |p| &p.keyframe_requests_to_link,
        ),
        (
            "relay_keyframe_requests_relayed_total",
            "RTCP from the link holding the far receivers' own PLI/FIR, passed to the local source.",
            Per::Link,
            |p| &p.keyframe_requests_relayed,
        ),
        (
            "relay_keyframe_requests_merged_total",
            "Fan-out: far receivers' PLI/FIR held back because a request for the stream reached the source within 500 ms.",
            Per::Link,
            |p| &p.keyframe_requests_merged,
        ),
    ];
    let get = |p: &PipeCounters, which: Counter| Value::U(which(p).load(Ordering::Relaxed));
    for (name, help, per, which) in families {
        match per {
            Per::Pipe => write_family(out, name, Kind::Counter, help, get(pipe, which)),
            Per::Link => metrics::write_labelled_family(
                out,
                name,
                Kind::Counter,
                help,
                links.iter().map(|(labels, p)| (labels.clone(), get(p, which))),
            ),
        }
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

/// One link of `relay offer` as `/metrics` shows it.
#[derive(Debug, Clone)]
pub struct OfferedLink {
    /// The `link` label: `Some` in a fan-out, `None` for the one link of a
    /// plain `relay offer` (no label).
    name: Option<String>,
    state: Arc<OfferState>,
    counters: Arc<PipeCounters>,
    branch: Option<Branch>,
}

impl OfferedLink {
    /// The only link of a pipe, counted in the pipe's own counters.
    pub fn single(state: Arc<OfferState>, counters: Arc<PipeCounters>) -> OfferedLink {
        OfferedLink {
            name: None,
            state,
            counters,
            branch: None,
        }
    }

    /// Link `name` of a fan-out, carried by `branch`.
    pub fn branch(name: String, state: Arc<OfferState>, branch: Branch) -> OfferedLink {
        OfferedLink {
            name: Some(name),
            state,
            counters: branch.counters().clone(),
            branch: Some(branch),
        }
    }

    /// Forward link `name` of a node; `branch` when there are several.
    pub fn forward(
        name: String,
        state: Arc<OfferState>,
        counters: Arc<PipeCounters>,
        branch: Option<Branch>,
    ) -> OfferedLink {
        OfferedLink {
            name: Some(name),
            state,
            counters,
            branch,
        }
    }

    /// `link="NAME"`, or nothing for a single link.
    fn labels(&self) -> String {
        self.name
            .as_ref()
            .map(|n| format!("link=\"{n}\""))
            .unwrap_or_default()
    }
}

/// The offering side: each link (its stats while up, reconnects and
/// outages, what its queue dropped) and the local `--in` pipe. In a
/// fan-out every per-link sample carries a `link` label, the links' own
/// families (`relay_link_*`) too.
pub fn offer_source(links: Vec<OfferedLink>, pipe: Arc<PipeCounters>) -> MetricsSource {
    Arc::new(move || render_offer(&links, &pipe))
}

fn render_offer(links: &[OfferedLink], pipe: &PipeCounters) -> String {
    let up: Vec<(&OfferedLink, LinkMetrics)> = links
        .iter()
        .filter_map(|l| {
            let (session, link) = l.state.current()?;
            let stats = link.stats();
            Some((
                l,
                LinkMetrics {
                    session,
                    transport: stats.transport,
                    mode: stats.mode,
                    role: Role::Offer,
                    state: SessionState::Up,
                    stats: Some(stats),
                    extra: Vec::new(),
                },
            ))
        })
        .collect();
    let rendered = metrics::render(&up.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), None);
    let mut out = label_links(rendered, up.iter().map(|(l, m)| (m.session.as_str(), l.labels())));
    write_link_states(&mut out, "relay_offer", links);
    let counters: Vec<(String, &PipeCounters)> = links.iter().map(|l| (l.labels(), &*l.counters)).collect();
    write_pipe(&mut out, pipe, &counters);
    out
}

/// Each offered link's state as families named `{prefix}_…`: whether it
/// is up, its setups, failed attempts and outages, and (fan-out) what its
/// queue holds now. `relay offer` writes them as `relay_offer_…`, a node's
/// forward links as `relay_forward_…`.
fn write_link_states(out: &mut String, prefix: &str, links: &[OfferedLink]) {
    let per_link = |value: &dyn Fn(&OfferedLink) -> Value| -> Vec<(String, Value)> {
        links.iter().map(|l| (l.labels(), value(l))).collect()
    };
    for (name, help, value) in [
        (
            "links_established_total",
            "Links established, the first included.",
            per_link(&|l| Value::U(l.state.links_established())),
        ),
        (
            "attempts_failed_total",
            "Offer or link setup attempts that failed.",
            per_link(&|l| Value::U(l.state.attempts_failed())),
        ),
        (
            "outages_total",
            "Outages (a link died) ended by a new link.",
            per_link(&|l| Value::U(l.state.outages().0)),
        ),
        (
            "outage_seconds_total",
            "Time from a link being declared dead to the next being up, summed.",
            per_link(&|l| Value::F(l.state.outages().2.as_secs_f64())),
        ),
    ] {
        metrics::write_labelled_family(out, &format!("{prefix}_{name}"), Kind::Counter, help, value);
    }
    for (name, help, value) in [
        (
            "last_outage_seconds",
            "That time for the latest outage.",
            per_link(&|l| Value::F(l.state.outages().1.as_secs_f64())),
        ),
        (
            "link_up",
            "1 while a link is up.",
            per_link(&|l| Value::U(u64::from(l.state.current().is_some()))),
        ),
    ] {
        metrics::write_labelled_family(out, &format!("{prefix}_{name}"), Kind::Gauge, help, value);
    }
    let queued: Vec<(String, Value)> = links
        .iter()
        .filter_map(|l| Some((l.labels(), Value::U(l.branch.as_ref()?.queued() as u64))))
        .collect();
    metrics::write_labelled_family(
        out,
        &format!("{prefix}_link_queue_packets"),
        Kind::Gauge,
        "Fan-out: packets waiting in a link's queue now.",
        queued,
    );
}

/// A node's `--forward` links (`relay answer --forward`), each labelled
/// `link="NAME"`: whether it is up, its reconnects, what went down the
/// tree on it and what it dropped, and the feedback it sent up. The links'
/// own transport statistics are on the downstream relay's `/metrics`,
/// where they are the answered sessions.
pub fn forward_source(links: Vec<OfferedLink>) -> MetricsSource {
    Arc::new(move || render_forward(&links))
}

fn render_forward(links: &[OfferedLink]) -> String {
    type Counter = fn(&PipeCounters) -> &std::sync::atomic::AtomicU64;
    let mut out = String::new();
    write_link_states(&mut out, "relay_forward", links);
    let counters: [(&str, &str, Counter); 6] = [
        (
            "relay_forward_packets_down_total",
            "Packets passed down the tree on the forward link.",
            |p| &p.to_link,
        ),
        (
            "relay_forward_packets_up_total",
            "Feedback from the forward link passed up the tree.",
            |p| &p.to_local,
        ),
        (
            "relay_forward_packets_no_link_total",
            "Packets for the forward link dropped while it was down.",
            |p| &p.no_link,
        ),
        (
            "relay_forward_packets_queue_overflow_total",
            "Packets dropped from the forward link's queue because it fell behind (oldest first).",
            |p| &p.queue_overflow,
        ),
        (
            "relay_forward_keyframe_requests_up_total",
            "Keyframe requests from below passed up the tree.",
            |p| &p.keyframe_requests_relayed,
        ),
        (
            "relay_forward_keyframe_requests_merged_total",
            "Keyframe requests from below held back: one for the stream went up less than 500 ms before.",
            |p| &p.keyframe_requests_merged,
        ),
    ];
    for (name, help, counter) in counters {
        metrics::write_labelled_family(
            &mut out,
            name,
            Kind::Counter,
            help,
            links
                .iter()
                .map(|l| (l.labels(), Value::U(counter(&l.counters).load(Ordering::Relaxed))))
                .collect::<Vec<_>>(),
        );
    }
    out
}

/// Adds each link's `labels` (`link="NAME"`) to the samples of its
/// session in relay-signaling's rendering, whose per-link labels start
/// with `session`: so a fan-out's link families read by link name, which,
/// unlike the session, survives a reconnect.
fn label_links<'a>(text: String, links: impl Iterator<Item = (&'a str, String)>) -> String {
    let links: Vec<(String, String)> = links
        .filter(|(_, labels)| !labels.is_empty())
        .map(|(session, labels)| {
            (
                format!("{{session=\"{session}\""),
                format!("{{{labels},session=\"{session}\""),
            )
        })
        .collect();
    if links.is_empty() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 64 * links.len());
    for line in text.lines() {
        match links
            .iter()
            .find(|(from, _)| !line.starts_with('#') && line.contains(from.as_str()))
        {
            Some((from, to)) => out.push_str(&line.replacen(from.as_str(), to, 1)),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_metrics_without_a_link_report_it_down_and_count_drops() {
        let state = Arc::new(OfferState::default());
        let pipe = Arc::new(PipeCounters::default());
        pipe.no_link.store(7, Ordering::Relaxed);
        let text = render_offer(&[OfferedLink::single(state, pipe.clone())], &pipe);
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
