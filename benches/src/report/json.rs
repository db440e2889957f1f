//! `--json FILE`: every run of a [`Matrix`] as one flat row, for scripts
//! that check for regressions. Field names are stable; a new field may be
//! added, an existing one is never renamed without bumping `schema`.

use serde_json::{Value, json};

use super::Matrix;
use crate::run::RunResult;
use crate::sys::Machine;

/// Version of the layout below.
pub const SCHEMA: u32 = 1;

/// The whole matrix: the machine, then one row per run (`runs`), per setup
/// series (`setups`) and per sustained measurement (`sustained`), and the
/// runs that failed. Times are milliseconds, rates per second.
pub fn to_json(m: &Matrix, machine: &Machine) -> Value {
    json!({
        "schema": SCHEMA,
        "quick": m.config.quick,
        "commit": machine.commit,
        "date": machine.date,
        "cpu": machine.cpu,
        "cores": machine.cores,
        "load_before": m.load.0,
        "load_after": m.load.1,
        "wall_time_s": m.elapsed.as_secs_f64(),
        "scenarios": m.scenarios.iter().map(|s| s.name).collect::<Vec<_>>(),
        "runs": m.runs.iter().map(run_row).collect::<Vec<_>>(),
        "setups": m.setups.iter().map(|s| json!({
            "scenario": s.scenario,
            "subject": s.subject.label(),
            "total_ms": s.total.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "connect_to_ready_ms": s.link.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "sustained": m.sustained.iter().map(|(subject, time, delivered, sent)| json!({
            "subject": subject.label(),
            "time_ms": time.as_secs_f64() * 1e3,
            "delivered": delivered,
            "sent": sent,
        })).collect::<Vec<_>>(),
        "failures": m.failures,
        "skipped": m.skipped,
        "ceiling": super::ceiling::to_json(&m.ceiling),
        "tree": m.tree.as_ref().map(crate::tree::to_json),
    })
}

fn run_row(r: &RunResult) -> Value {
    let l = r.latency.summary();
    let netsim = |i: usize| {
        r.netsim.map(|pair| {
            let d = if i == 0 { pair.0 } else { pair.1 };
            json!({
                "received": d.received,
                "delivered": d.delivered,
                "random_loss": d.dropped.random_loss,
                "burst_loss": d.dropped.burst_loss,
                "queue_overflow": d.dropped.queue_overflow,
                "delay_line_full": d.dropped.delay_line_full,
            })
        })
    };
    json!({
        "scenario": r.scenario,
        "subject": r.subject.label(),
        "transport": r.subject.transport(),
        "mode": r.subject.mode(),
        "workload": r.workload,
        "seed": r.seed,
        "offered": r.offered,
        "accepted": r.accepted,
        "delivered": r.delivered,
        "delivered_ratio": r.delivered_ratio(),
        "duplicates": r.duplicates,
        "reordered": r.reordered,
        "latency_ms": {
            "p50": l.p50,
            "p90": l.p90,
            "p99": l.p99,
            "p999": l.p999,
            "max": l.max,
        },
        "keyframe_p99_ms": (r.keyframe_latency.count() > 0).then(|| r.keyframe_latency.summary().p99),
        "jitter_ms": r.jitter_ms,
        "throughput_bps": r.throughput_bps(),
        "delivered_pps": r.delivered_pps(),
        "cpu_us_per_packet": r.cpu_us_per_packet(),
        "memory_per_link_bytes": r.memory_per_link,
        "setup_ms": r.setup.as_secs_f64() * 1e3,
        "connect_to_ready_ms": r.link_setup.map(|d| d.as_secs_f64() * 1e3),
        "drops": {
            "netsim_forward": netsim(0),
            "netsim_reverse": netsim(1),
            "link": r.link_drops,
            "kernel_rcvbuf": r.kernel.rcvbuf_errors,
            "kernel_sndbuf": r.kernel.sndbuf_errors,
        },
        "outage": r.outage.map(|o| json!({
            "down_ms": o.down.as_secs_f64() * 1e3,
            "back_after_ms": o.first_arrival.map(|d| d.as_secs_f64() * 1e3),
            "fresh_after_ms": o.fresh.map(|d| d.as_secs_f64() * 1e3),
            "stale_packets": o.stale,
            "oldest_after_ms": o.oldest_ms,
        })),
        "delivered_within_budget": r.latency.count_within(relay_core::DEFAULT_MAX_DELAY),
        "link_bytes_sent": r.link_bytes_sent,
        "repair": r.repair,
        "problem": r.problem,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::latency::Latency;
    use crate::outage::Recovery;
    use crate::report::ReportConfig;
    use crate::scenario::{Subject, scenarios};
    use relay_core::{Drops, Mode, Transport};
    use relay_netsim::DirectionStats;
    use std::time::Duration;

    /// A video run of 100 packets, 93 delivered at 20, 21, 22 and 45 ms.
    pub(in crate::report) fn run(scenario: &'static str, subject: Subject, seed: u64) -> RunResult {
        let mut latency = Latency::new();
        for ms in [20, 21, 22, 45] {
            latency.record_ns(ms * 1_000_000);
        }
        let mut forward = DirectionStats::default();
        forward.dropped.burst_loss = 7;
        RunResult {
            subject,
            scenario,
            workload: "video 2.5 Mbit/s".into(),
            seed,
            flood: false,
            setup: Duration::from_millis(3),
            link_setup: Some(Duration::from_millis(2)),
            offered: 100,
            offered_bytes: 100_000,
            accepted: 100,
            delivered: 93,
            delivered_bytes: 93_000,
            duplicates: 0,
            reordered: 0,
            send_time: Duration::from_secs(1),
            span: Duration::from_secs(1),
            latency,
            keyframe_latency: Latency::new(),
            sender_lag: Latency::new(),
            jitter_ms: Some(0.5),
            cpu: Duration::from_millis(10),
            memory_per_link: 4096,
            kernel: Default::default(),
            netsim: Some((forward, DirectionStats::default())),
            link_drops: Some(Drops::default()),
            link_bytes_sent: Some(100_000),
            repair: None,
            problem: None,
            outage: (scenario == "wan-outage").then_some(Recovery {
                down: Duration::from_secs(1),
                first_arrival: Some(Duration::from_millis(25)),
                fresh: Some(Duration::from_millis(25)),
                stale: 0,
                oldest_ms: 22.0,
            }),
        }
    }

    #[test]
    fn every_run_is_a_row_with_its_fields() {
        let quic = Subject::Link(Transport::Quic, Mode::Datagram);
        let m = Matrix {
            config: ReportConfig::quick(),
            subjects: vec![Subject::RawUdp, quic],
            scenarios: scenarios()
                .into_iter()
                .filter(|s| s.name.starts_with("wan-b") || s.name == "wan-outage")
                .collect(),
            setups: Vec::new(),
            runs: vec![
                run("wan-burst5", Subject::RawUdp, 7001),
                run("wan-burst5", quic, 7001),
                run("wan-outage", quic, 8001),
            ],
            failures: vec!["wan-loss1 video dc reliable: refused".into()],
            skipped: vec!["pion dc reliable and pion dc unreliable: no Go toolchain".into()],
            elapsed: Duration::from_secs(9),
            load: ("1.0".into(), "1.1".into()),
            sustained: Vec::new(),
            tree: None,
            ceiling: Default::default(),
        };
        let machine = crate::sys::Machine {
            cpu: "test".into(),
            cores: 2,
            kernel: "k".into(),
            rustc: "r".into(),
            commit: "abc".into(),
            date: "today".into(),
        };
        // Through text and back, as a script would read it.
        let text = serde_json::to_string_pretty(&to_json(&m, &machine)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["scenarios"], json!(["wan-burst5", "wan-outage"]));
        let rows = v["runs"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        let row = &rows[1];
        assert_eq!(row["scenario"], "wan-burst5");
        assert_eq!(row["subject"], "quic datagram");
        assert_eq!(
            (row["transport"].as_str(), row["mode"].as_str()),
            (Some("quic"), Some("datagram"))
        );
        assert_eq!(row["workload"], "video 2.5 Mbit/s");
        assert_eq!(row["seed"], 7001);
        assert_eq!(row["delivered"], 93);
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(row["latency_ms"][p].as_f64().unwrap() >= 19.9, "{p}");
        }
        assert!((row["latency_ms"]["max"].as_f64().unwrap() - 45.0).abs() < 0.1);
        assert_eq!(row["drops"]["netsim_forward"]["burst_loss"], 7);
        assert_eq!(row["drops"]["link"]["send_queue_full"], 0);
        assert_eq!(row["drops"]["kernel_rcvbuf"], 0);
        assert_eq!(row["setup_ms"], 3.0);
        assert_eq!(row["connect_to_ready_ms"], 2.0);
        assert!(row["outage"].is_null());
        assert_eq!(rows[2]["outage"]["back_after_ms"], 25.0);
        assert_eq!(rows[2]["outage"]["stale_packets"], 0);
        assert_eq!(v["failures"][0], "wan-loss1 video dc reliable: refused");
        assert!(v["skipped"][0].as_str().unwrap().contains("no Go toolchain"));
    }
}
