//! [`render`]: the relay's metric families (the signaling server's
//! counters, then every link's state, counters, drops, loss, jitter, RTT
//! and repair) written in the text exposition format.

use relay_core::{DropCause, LinkStats};

use super::text::{Exposition, escape_label, metric_name_part};
use super::{Kind, LinkMetrics, ServerCounters, Value};
use crate::SessionState;

/// Renders `links` (and, on the answerer, the signaling server's
/// counters) in the text exposition format. `relay_sessions_active` is the
/// number of links given.
///
/// Families without a sample (no link measures RTT yet, say) are left out
/// entirely; HELP and TYPE appear once per family, before its samples.
pub fn render(links: &[LinkMetrics], server: Option<&ServerCounters>) -> String {
    let mut out = Exposition::default();
    if let Some(s) = server {
        out.family(
            "relay_signaling_connections_open",
            Kind::Gauge,
            "Signaling connections open now.",
            [(String::new(), Value::U(s.connections_open))],
        );
        out.family(
            "relay_signaling_connections_accepted_total",
            Kind::Counter,
            "Signaling connections accepted.",
            [(String::new(), Value::U(s.connections_accepted))],
        );
        out.family(
            "relay_signaling_connections_refused_total",
            Kind::Counter,
            "Signaling connections closed without serving them, by cause.",
            [
                (cause_label("connection_limit"), Value::U(s.connections_refused)),
                (cause_label("tls_handshake"), Value::U(s.tls_handshakes_failed)),
            ],
        );
        out.family(
            "relay_signaling_sessions_created_total",
            Kind::Counter,
            "Sessions created by an answered offer.",
            [(String::new(), Value::U(s.sessions_created))],
        );
        out.family(
            "relay_signaling_sessions_refused_total",
            Kind::Counter,
            "Offers refused, by cause.",
            s.sessions_refused
                .by_cause()
                .map(|(cause, n)| (cause_label(cause), Value::U(n))),
        );
    }
    out.family(
        "relay_sessions_active",
        Kind::Gauge,
        "Relay sessions live now (connecting or up).",
        [(String::new(), Value::U(links.len() as u64))],
    );

    let labelled: Vec<(String, &LinkMetrics)> = links.iter().map(|l| (link_labels(l), l)).collect();
    let per_link = |f: &dyn Fn(&LinkMetrics) -> Option<Value>| -> Vec<(String, Value)> {
        labelled
            .iter()
            .filter_map(|(labels, link)| f(link).map(|v| (labels.clone(), v)))
            .collect()
    };
    let stat =
        |f: fn(&LinkStats) -> Option<Value>| per_link(&move |l: &LinkMetrics| l.stats.as_ref().and_then(f));

    out.family(
        "relay_link_up",
        Kind::Gauge,
        "1 when the link is up, 0 while it is being established.",
        per_link(&|l| Some(Value::U(u64::from(l.state == SessionState::Up)))),
    );
    let counters: [StatFamily; 7] = [
        (
            "relay_link_packets_sent_total",
            "Packets (RTP and RTCP) handed to the transport.",
            |s| Some(Value::U(s.packets_sent)),
        ),
        (
            "relay_link_bytes_sent_total",
            "Bytes of the packets handed to the transport.",
            |s| Some(Value::U(s.bytes_sent)),
        ),
        (
            "relay_link_packets_received_total",
            "Packets (RTP and RTCP) delivered by the transport.",
            |s| Some(Value::U(s.packets_received)),
        ),
        (
            "relay_link_bytes_received_total",
            "Bytes of the packets delivered by the transport.",
            |s| Some(Value::U(s.bytes_received)),
        ),
        (
            "relay_link_rtcp_packets_sent_total",
            "RTCP packets among the packets sent.",
            |s| Some(Value::U(s.rtcp_sent)),
        ),
        (
            "relay_link_rtcp_packets_received_total",
            "RTCP packets among the packets received.",
            |s| Some(Value::U(s.rtcp_received)),
        ),
        (
            "relay_link_ssrcs_evicted_total",
            "SSRCs forgotten because more than the per-direction cap were seen (a sender cycling SSRCs).",
            |s| Some(Value::U(s.ssrcs_evicted)),
        ),
    ];
    for (name, help, f) in counters {
        out.family(name, Kind::Counter, help, stat(f));
    }

    let drops: Vec<(String, Value)> = labelled
        .iter()
        .filter_map(|(labels, link)| link.stats.as_ref().map(|s| (labels, s.drops)))
        .flat_map(|(labels, d)| {
            DropCause::ALL.map(|cause| {
                (
                    format!("{labels},{}", cause_label(cause.name())),
                    Value::U(d.get(cause)),
                )
            })
        })
        .collect();
    out.family(
        "relay_link_dropped_packets_total",
        Kind::Counter,
        "Packets the relay itself dropped, by cause.",
        drops,
    );

    // The hop's own repair, on links in repair mode only.
    let repairs: [StatFamily; 13] = [
        (
            "relay_link_repair_nacks_sent_total",
            "Hop NACK datagrams sent (each asks for one or more packets).",
            |s| s.repair.map(|r| Value::U(r.nacks_sent)),
        ),
        (
            "relay_link_repair_packets_asked_total",
            "Missing packets asked for by hop NACKs (each ask counted).",
            |s| s.repair.map(|r| Value::U(r.packets_asked)),
        ),
        (
            "relay_link_repair_repaired_total",
            "Missing packets that arrived after being asked for, within the budget.",
            |s| s.repair.map(|r| Value::U(r.repaired)),
        ),
        (
            "relay_link_repair_too_late_total",
            "Repairs that arrived after their packet was given up (dropped, not delivered late).",
            |s| s.repair.map(|r| Value::U(r.repaired_too_late)),
        ),
        (
            "relay_link_repair_unrepairable_total",
            "Missing packets given up: no repair could arrive within the budget.",
            |s| s.repair.map(|r| Value::U(r.unrepairable)),
        ),
        (
            "relay_link_repair_duplicates_total",
            "Packets that arrived twice (original and repair); the second copy was dropped.",
            |s| s.repair.map(|r| Value::U(r.duplicates)),
        ),
        (
            "relay_link_repair_nacks_received_total",
            "Hop NACK datagrams received from the peer.",
            |s| s.repair.map(|r| Value::U(r.nacks_received)),
        ),
        (
            "relay_link_repair_packets_requested_total",
            "Packets the peer asked for.",
            |s| s.repair.map(|r| Value::U(r.packets_requested)),
        ),
        (
            "relay_link_repair_retransmissions_total",
            "Packets sent again on the peer's request.",
            |s| s.repair.map(|r| Value::U(r.retransmissions)),
        ),
        (
            "relay_link_repair_retransmitted_bytes_total",
            "Bytes of the packets sent again.",
            |s| s.repair.map(|r| Value::U(r.retransmitted_bytes)),
        ),
        (
            "relay_link_repair_requested_gone_total",
            "Packets asked for that were no longer kept (older than the budget): answered with nothing.",
            |s| s.repair.map(|r| Value::U(r.requested_gone)),
        ),
        (
            "relay_link_repair_capped_total",
            "Packets asked for but refused by the amplification cap (a share of the media sent).",
            |s| s.repair.map(|r| Value::U(r.retransmissions_capped)),
        ),
        (
            "relay_link_repair_tail_probes_total",
            "Tail probes: a quiet stream's last packet sent once more so a loss just before the pause is seen.",
            |s| s.repair.map(|r| Value::U(r.tail_probes)),
        ),
    ];
    for (name, help, f) in repairs {
        out.family(name, Kind::Counter, help, stat(f));
    }

    let gauges: [StatFamily; 5] = [
        (
            "relay_link_packets_lost",
            "Packets lost over all received SSRCs (RFC 3550 A.3 cumulative loss; negative when duplicates outnumber losses).",
            |s| {
                (!s.received_ssrcs.is_empty())
                    .then(|| Value::I(s.received_ssrcs.iter().map(|r| r.lost).sum()))
            },
        ),
        (
            "relay_link_jitter_seconds",
            "Interarrival jitter (RFC 3550 A.8) of the worst received SSRC whose clock rate is known.",
            |s| {
                // An SSRC with an unknown clock rate has no jitter, which
                // is not 0: it is left out, and a link without any known
                // one has no sample.
                s.received_ssrcs
                    .iter()
                    .filter_map(|r| r.jitter_seconds)
                    .reduce(f64::max)
                    .map(Value::F)
            },
        ),
        (
            "relay_link_rtt_seconds",
            "Round-trip time, where the transport measures one.",
            |s| s.rtt.map(|d| Value::F(d.as_secs_f64())),
        ),
        (
            "relay_link_setup_seconds",
            "Time from starting to establish the link to it being ready.",
            |s| s.setup_time.map(|d| Value::F(d.as_secs_f64())),
        ),
        (
            "relay_link_uptime_seconds",
            "Time since the link was created.",
            |s| s.uptime.map(|d| Value::F(d.as_secs_f64())),
        ),
    ];
    for (name, help, f) in gauges {
        out.family(name, Kind::Gauge, help, stat(f));
    }

    // Extra families, in the order they first appear.
    let mut suffixes: Vec<(&'static str, &'static str)> = Vec::new();
    for link in links {
        for (suffix, help, _) in &link.extra {
            if !suffixes.iter().any(|(s, _)| s == suffix) {
                suffixes.push((suffix, help));
            }
        }
    }
    for (suffix, help) in suffixes {
        let samples = per_link(&|l| {
            l.extra
                .iter()
                .find(|(s, _, _)| *s == suffix)
                .map(|(_, _, v)| Value::U(*v))
        });
        let kind = if suffix.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        out.family(
            &format!("relay_link_{}", metric_name_part(suffix)),
            kind,
            help,
            samples,
        );
    }
    out.text
}

/// A per-link family read from [`LinkStats`]: name, help, value (none: no
/// sample for that link).
type StatFamily = (&'static str, &'static str, fn(&LinkStats) -> Option<Value>);

/// `session="…",transport="…",mode="…",role="…"`.
fn link_labels(link: &LinkMetrics) -> String {
    format!(
        "session=\"{}\",transport=\"{}\",mode=\"{}\",role=\"{}\"",
        escape_label(&link.session),
        link.transport,
        link.mode,
        link.role
    )
}

fn cause_label(cause: &str) -> String {
    format!("cause=\"{}\"", escape_label(cause))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::text::check_exposition;
    use crate::metrics::{Role, SessionRefusals};
    use relay_core::{Drops, Mode, SsrcReceived, Transport};
    use std::time::Duration;

    fn stats() -> LinkStats {
        LinkStats {
            transport: Transport::RtpUdp,
            mode: Mode::Unreliable,
            packets_sent: 10,
            bytes_sent: 12_000,
            packets_received: 9,
            bytes_received: 10_800,
            rtcp_sent: 1,
            rtcp_received: 2,
            drops: Drops {
                send_queue_full: 1,
                receive_queue_full: 2,
                too_large: 3,
                unknown_source: 4,
                malformed: 5,
                unauthenticated: 6,
                expired: 7,
            },
            rtt: Some(Duration::from_millis(25)),
            setup_time: None,
            uptime: Some(Duration::from_secs(3)),
            sent_ssrcs: vec![],
            received_ssrcs: vec![
                SsrcReceived {
                    ssrc: 1,
                    packets: 5,
                    bytes: 6000,
                    expected: 7,
                    lost: 2,
                    jitter: Some(90.0),
                    clock_rate: Some(90_000),
                    jitter_seconds: Some(0.001),
                },
                SsrcReceived {
                    ssrc: 2,
                    packets: 4,
                    bytes: 4800,
                    expected: 4,
                    lost: -1,
                    jitter: Some(225.0),
                    clock_rate: Some(90_000),
                    jitter_seconds: Some(0.0025),
                },
                // A dynamic payload type without a configured clock rate.
                SsrcReceived {
                    ssrc: 3,
                    packets: 100,
                    bytes: 1000,
                    expected: 100,
                    lost: 0,
                    jitter: None,
                    clock_rate: None,
                    jitter_seconds: None,
                },
            ],
            ssrcs_evicted: 0,
            peer_address_changes: 0,
            repair: None,
        }
    }

    fn links() -> Vec<LinkMetrics> {
        vec![
            LinkMetrics {
                session: "ab12".into(),
                transport: Transport::RtpUdp,
                mode: Mode::Unreliable,
                role: Role::Answer,
                state: SessionState::Up,
                stats: Some(stats()),
                extra: vec![("retransmits_total", "Retransmitted packets.", 7)],
            },
            LinkMetrics {
                session: "we\"ird\\id\n".into(),
                transport: Transport::Quic,
                mode: Mode::Datagram,
                role: Role::Offer,
                state: SessionState::Connecting,
                stats: None,
                extra: vec![],
            },
        ]
    }

    fn server() -> ServerCounters {
        ServerCounters {
            connections_open: 2,
            connections_accepted: 40,
            connections_refused: 3,
            tls_handshakes_failed: 1,
            sessions_created: 5,
            sessions_refused: SessionRefusals {
                unauthorized: 1,
                bad_offer: 2,
                session_limit: 3,
                ..SessionRefusals::default()
            },
        }
    }

    const EXPECTED: &str = r#"# HELP relay_signaling_connections_open Signaling connections open now.
# TYPE relay_signaling_connections_open gauge
relay_signaling_connections_open 2
# HELP relay_signaling_connections_accepted_total Signaling connections accepted.
# TYPE relay_signaling_connections_accepted_total counter
relay_signaling_connections_accepted_total 40
# HELP relay_signaling_connections_refused_total Signaling connections closed without serving them, by cause.
# TYPE relay_signaling_connections_refused_total counter
relay_signaling_connections_refused_total{cause="connection_limit"} 3
relay_signaling_connections_refused_total{cause="tls_handshake"} 1
# HELP relay_signaling_sessions_created_total Sessions created by an answered offer.
# TYPE relay_signaling_sessions_created_total counter
relay_signaling_sessions_created_total 5
# HELP relay_signaling_sessions_refused_total Offers refused, by cause.
# TYPE relay_signaling_sessions_refused_total counter
relay_signaling_sessions_refused_total{cause="unauthorized"} 1
relay_signaling_sessions_refused_total{cause="bad_offer"} 2
relay_signaling_sessions_refused_total{cause="too_large"} 0
relay_signaling_sessions_refused_total{cause="timeout"} 0
relay_signaling_sessions_refused_total{cause="session_limit"} 3
relay_signaling_sessions_refused_total{cause="unavailable"} 0
relay_signaling_sessions_refused_total{cause="internal"} 0
relay_signaling_sessions_refused_total{cause="origin_not_allowed"} 0
# HELP relay_sessions_active Relay sessions live now (connecting or up).
# TYPE relay_sessions_active gauge
relay_sessions_active 2
# HELP relay_link_up 1 when the link is up, 0 while it is being established.
# TYPE relay_link_up gauge
relay_link_up{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 1
relay_link_up{session="we\"ird\\id\n",transport="quic",mode="datagram",role="offer"} 0
# HELP relay_link_packets_sent_total Packets (RTP and RTCP) handed to the transport.
# TYPE relay_link_packets_sent_total counter
relay_link_packets_sent_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 10
# HELP relay_link_bytes_sent_total Bytes of the packets handed to the transport.
# TYPE relay_link_bytes_sent_total counter
relay_link_bytes_sent_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 12000
# HELP relay_link_packets_received_total Packets (RTP and RTCP) delivered by the transport.
# TYPE relay_link_packets_received_total counter
relay_link_packets_received_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 9
# HELP relay_link_bytes_received_total Bytes of the packets delivered by the transport.
# TYPE relay_link_bytes_received_total counter
relay_link_bytes_received_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 10800
# HELP relay_link_rtcp_packets_sent_total RTCP packets among the packets sent.
# TYPE relay_link_rtcp_packets_sent_total counter
relay_link_rtcp_packets_sent_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 1
# HELP relay_link_rtcp_packets_received_total RTCP packets among the packets received.
# TYPE relay_link_rtcp_packets_received_total counter
relay_link_rtcp_packets_received_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 2
# HELP relay_link_ssrcs_evicted_total SSRCs forgotten because more than the per-direction cap were seen (a sender cycling SSRCs).
# TYPE relay_link_ssrcs_evicted_total counter
relay_link_ssrcs_evicted_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 0
# HELP relay_link_dropped_packets_total Packets the relay itself dropped, by cause.
# TYPE relay_link_dropped_packets_total counter
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="send_queue_full"} 1
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="receive_queue_full"} 2
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="too_large"} 3
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="unknown_source"} 4
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="malformed"} 5
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="unauthenticated"} 6
relay_link_dropped_packets_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer",cause="expired"} 7
# HELP relay_link_packets_lost Packets lost over all received SSRCs (RFC 3550 A.3 cumulative loss; negative when duplicates outnumber losses).
# TYPE relay_link_packets_lost gauge
relay_link_packets_lost{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 1
# HELP relay_link_jitter_seconds Interarrival jitter (RFC 3550 A.8) of the worst received SSRC whose clock rate is known.
# TYPE relay_link_jitter_seconds gauge
relay_link_jitter_seconds{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 0.0025
# HELP relay_link_rtt_seconds Round-trip time, where the transport measures one.
# TYPE relay_link_rtt_seconds gauge
relay_link_rtt_seconds{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 0.025
# HELP relay_link_uptime_seconds Time since the link was created.
# TYPE relay_link_uptime_seconds gauge
relay_link_uptime_seconds{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 3
# HELP relay_link_retransmits_total Retransmitted packets.
# TYPE relay_link_retransmits_total counter
relay_link_retransmits_total{session="ab12",transport="rtp-udp",mode="unreliable",role="answer"} 7
"#;

    #[test]
    fn renders_the_exact_exposition_text() {
        let text = render(&links(), Some(&server()));
        if text != EXPECTED {
            for (i, (got, want)) in text.lines().zip(EXPECTED.lines()).enumerate() {
                assert_eq!(got, want, "line {}", i + 1);
            }
            assert_eq!(text, EXPECTED);
        }
    }

    #[test]
    fn repair_families_appear_for_repairing_links_only() {
        assert!(!render(&links(), None).contains("repair"));
        let mut link = links().remove(0);
        link.mode = Mode::Repair;
        let mut s = stats();
        s.repair = Some(relay_core::RepairStats {
            repaired: 41,
            retransmissions_capped: 2,
            tail_probes: 1,
            ..Default::default()
        });
        link.stats = Some(s);
        let text = render(&[link], None);
        check_exposition(&text).unwrap();
        assert!(
            text.contains(
                r#"relay_link_repair_repaired_total{session="ab12",transport="rtp-udp",mode="repair",role="answer"} 41"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE relay_link_repair_capped_total counter\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("relay_link_repair_").count(),
            13 * 3,
            "HELP, TYPE, one sample each"
        );
    }

    #[test]
    fn unknown_jitter_is_no_sample_not_zero() {
        let mut link = links().remove(0);
        let stats = link.stats.as_mut().unwrap();
        stats.received_ssrcs.retain(|r| r.clock_rate.is_none());
        let text = render(&[link], None);
        assert!(!text.contains("relay_link_jitter_seconds"), "{text}");
        assert!(text.contains("relay_link_packets_lost{"), "{text}");
    }

    #[test]
    fn output_parses_as_the_exposition_format() {
        check_exposition(&render(&links(), Some(&server()))).unwrap();
        check_exposition(&render(&links(), None)).unwrap();
        check_exposition(&render(&[], None)).unwrap();
        // The checker itself refuses what it should.
        for bad in [
            "relay_x 1",
            "# TYPE relay_x counter\nrelay_x{a=\"b} 1\n",
            "# TYPE relay_x counter\nrelay_x{a=\"\\t\"} 1\n",
            "# TYPE relay_x counter\nrelay_y 1\n",
            "# TYPE relay_x counter\n# TYPE relay_x counter\n",
            "# TYPE relay_x counter\nrelay_x one\n",
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_offerer_alone_gets_only_link_metrics() {
        let text = render(&links()[1..], None);
        assert!(!text.contains("relay_signaling_"), "{text}");
        assert!(text.contains("relay_sessions_active 1\n"), "{text}");
        // No stats yet: no counters, only the up gauge.
        assert!(!text.contains("relay_link_packets_sent_total"), "{text}");
    }

    #[test]
    fn an_extra_named_like_a_built_in_metric_is_left_out() {
        let mut link = links().remove(0);
        link.extra = vec![("packets_sent_total", "Clash.", 99), ("fine", "Fine.", 1)];
        let text = render(&[link], None);
        check_exposition(&text).unwrap();
        assert!(!text.contains("Clash") && !text.contains(" 99\n"), "{text}");
        assert!(text.contains("# TYPE relay_link_fine gauge\n"), "{text}");
    }
}
