//! The trees as a markdown section (results.md and `relay-bench tree`)
//! and as JSON rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use relay_core::Transport;
use serde_json::{Value, json};

use super::{Topology, TreeRows, TreeRun, added_per_hop};
use crate::latency::Latency;

/// `values` in ms joined by `sep`, or `-` for none.
fn joined(values: &[f64], sep: &str) -> String {
    if values.is_empty() {
        "-".into()
    } else {
        values.iter().map(|v| ms(*v)).collect::<Vec<_>>().join(sep)
    }
}

fn ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown section: a summary row per transport, then the chain and
/// fan-out tables, each column explained.
pub fn section(rows: &TreeRows) -> String {
    let mut md = String::new();
    // The most relays that ran at once: the widest fan-out, or the chain.
    let most = rows
        .fan_outs
        .iter()
        .chain(&rows.chains)
        .map(|r| r.relays.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(md, "## Relay trees: chains and fan-out\n");
    let _ = writeln!(
        md,
        "Real `relay` processes on loopback, one per relay as deployed, started from the command line as the README shows. \
         The harness sends {} for {} s into `relay offer --in`; every answering relay `--out`s to a harness socket of its own, \
         which stamps the arrival on the sender's clock (one-way latency, send call to receive). \
         CPU is each relay process's own time on the CPU (`/proc/PID/task/*/schedstat`, all threads) from the first packet sent to the end of the drain, setup excluded, \
         per packet sent into the tree (µs/pkt) and as a share of one core over that window. Links in each transport's unreliable mode.{}\n",
        rows.workload,
        if rows.duration.subsec_nanos() == 0 {
            rows.duration.as_secs().to_string()
        } else {
            format!("{:.1}", rows.duration.as_secs_f64())
        },
        if most > 1 {
            format!(
                " Every relay and the harness share this machine's {} cores: up to {most} relay processes and as many harness threads take turns on them, \
                 so the tails include waiting for a core, which relays on machines of their own would not.",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            )
        } else {
            String::new()
        }
    );
    for s in &rows.skipped {
        let _ = writeln!(md, "> **Not run:** {s}.\n");
    }
    let mut transports: Vec<Transport> = rows
        .chains
        .iter()
        .chain(&rows.fan_outs)
        .map(|r| r.transport)
        .collect();
    transports.dedup();
    transports.sort_by_key(|t| t.name());
    transports.dedup();

    if transports.is_empty() {
        failures(&mut md, rows);
        return md;
    }
    // Summary.
    let _ = writeln!(
        md,
        "| link | chain p99 after hop 1 / 2 / 3, ms | p99 added per hop, ms | each hop's own p99, ms | CPU per forwarding node, µs/pkt (% core) | fan-out `relay offer` CPU, 1 / N receivers, µs/pkt | CPU per extra receiver, µs/pkt (% core) | slowest receiver's p99, 1 / N, ms | worst delivered |\n|---|---|---|---|---|---|---|---|---|"
    );
    for &t in &transports {
        let chain = rows.chains.iter().find(|r| r.transport == t);
        let one = rows.fan_out(t, 1);
        let many = rows
            .fan_outs
            .iter()
            .filter(|r| r.transport == t)
            .max_by_key(|r| r.taps.len());
        let mode = chain.or(one).map_or(String::new(), |r| format!(" {}", r.mode));
        let p99s: Vec<f64> = chain.map_or(Vec::new(), |c| {
            c.taps.iter().map(|t| t.latency.summary().p99).collect()
        });
        let added = added_per_hop(&p99s);
        let own: Vec<f64> = chain.map_or(Vec::new(), |c| {
            c.hop_latency.iter().map(|h| h.summary().p99).collect()
        });
        // Forwarding nodes: every node but the last (it only delivers).
        let forwarding = chain.map_or(Vec::new(), |c| {
            let n = c.relays.len();
            c.relays
                .iter()
                .skip(1)
                .take(n.saturating_sub(2))
                .map(|r| (c.cpu_us_per_packet(r), c.core_percent(r)))
                .collect::<Vec<_>>()
        });
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let worst = chain
            .iter()
            .chain(one.iter())
            .chain(many.iter())
            .map(|r| r.worst_delivered())
            .fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            md,
            "| {t}{mode} | {} | {} | {} | {} | {} | {} | {} | {} |",
            joined(&p99s, " / "),
            joined(&added, ", "),
            joined(&own, ", "),
            match (
                mean(&forwarding.iter().map(|f| f.0).collect::<Vec<_>>()),
                mean(&forwarding.iter().map(|f| f.1).collect::<Vec<_>>())
            ) {
                (Some(us), Some(pct)) => format!("{us:.1} ({pct:.2}%)"),
                _ => "-".into(),
            },
            match (one, many) {
                (Some(o), Some(m)) if m.taps.len() > 1 => format!(
                    "{:.1} / {:.1} (N = {})",
                    o.entry().map_or(0.0, |e| o.cpu_us_per_packet(e)),
                    m.entry().map_or(0.0, |e| m.cpu_us_per_packet(e)),
                    m.taps.len()
                ),
                _ => "-".into(),
            },
            rows.per_extra_receiver(t)
                .map_or("-".into(), |(_, us, pct)| format!("{us:.1} ({pct:.2}%)")),
            match (
                one.and_then(TreeRun::slowest),
                many.filter(|m| m.taps.len() > 1).and_then(TreeRun::slowest)
            ) {
                (Some(o), Some(m)) => format!(
                    "{} / {}",
                    ms(o.latency.summary().p99),
                    ms(m.latency.summary().p99)
                ),
                _ => "-".into(),
            },
            if worst.is_finite() {
                format!("{:.2}%", worst * 100.0)
            } else {
                "-".into()
            }
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "- *p99 added per hop*: hop 1's p99 (harness → `relay offer` → node 1 → harness), then each hop's p99 less the previous hop's, from the same packets in the same run. \
         Percentiles do not add exactly, so this is how much worse the tail got at that hop.\n\
         - *each hop's own p99*: per packet, its arrival behind this node less its arrival behind the node before (hop 1: less its send time), p99 over the packets: \
         the hop's own delay distribution (node k − 1 sending onwards, the link, node k delivering), without the tails of the hops before it.\n\
         - *CPU per forwarding node*: mean over the middle nodes (`relay answer --out … --forward …`: receive one link, send onwards and deliver locally): what one more hop in a chain costs.\n\
         - *CPU per extra receiver*: (`relay offer`'s CPU with N receivers − with one) / (N − 1). With one `--signal` the offer sends onto its link directly; with several, through a queue per link.\n\
         - *Slowest receiver*: the receiver with the highest p99 in the run. *Worst delivered*: the lowest share of packets any tap got, over the chain and both fan-outs.\n"
    );

    if !rows.chains.is_empty() {
        let _ = writeln!(md, "### Chain: per hop\n");
        let _ = writeln!(
            md,
            "| link | relay | role | delivered there | p50 ms | p99 ms | p99 added ms | max ms | hop's own p50 ms | hop's own p99 ms | CPU µs/pkt | CPU % core |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for c in &rows.chains {
            let p99s: Vec<f64> = c.taps.iter().map(|t| t.latency.summary().p99).collect();
            let added = added_per_hop(&p99s);
            let last = c.relays.len().saturating_sub(1);
            for (i, r) in c.relays.iter().enumerate() {
                let role = if i == 0 {
                    "offer: harness → link".to_string()
                } else if i == last {
                    "answer: link → harness".to_string()
                } else {
                    "answer + forward: link → link, and → harness".to_string()
                };
                let tap = i.checked_sub(1).and_then(|k| c.taps.get(k));
                let l = tap.map(|t| t.latency.summary());
                let hop = i
                    .checked_sub(1)
                    .and_then(|k| c.hop_latency.get(k))
                    .map(Latency::summary);
                let _ = writeln!(
                    md,
                    "| {} {} | {} | {role} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2}% |",
                    c.transport,
                    c.mode,
                    r.role,
                    tap.map_or("-".into(), |t| format!("{:.2}%", c.delivered_ratio(t) * 100.0)),
                    l.map_or("-".into(), |l| ms(l.p50)),
                    l.map_or("-".into(), |l| ms(l.p99)),
                    i.checked_sub(1)
                        .and_then(|k| added.get(k))
                        .map_or("-".into(), |a| ms(*a)),
                    l.map_or("-".into(), |l| ms(l.max)),
                    hop.map_or("-".into(), |h| ms(h.p50)),
                    hop.map_or("-".into(), |h| ms(h.p99)),
                    c.cpu_us_per_packet(r),
                    c.core_percent(r),
                );
            }
            if let Some(p) = &c.problem {
                let _ = writeln!(
                    md,
                    "| {} {} | problem: {p} | | | | | | | | | | |",
                    c.transport, c.mode
                );
            }
        }
        md.push('\n');
    }
    if !rows.fan_outs.is_empty() {
        let _ = writeln!(md, "### Fan-out: per run\n");
        let _ = writeln!(
            md,
            "| link | receivers | `relay offer` CPU µs/pkt | its % core | each `relay answer`, mean µs/pkt | slowest receiver | its p50 ms | its p99 ms | fastest receiver's p99 ms | worst delivered | kernel drops |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &rows.fan_outs {
            let entry = r.entry();
            let answers: Vec<f64> = r.relays.iter().skip(1).map(|a| r.cpu_us_per_packet(a)).collect();
            let slowest = r.slowest();
            let fastest = r
                .taps
                .iter()
                .map(|t| t.latency.summary().p99)
                .fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                md,
                "| {} {} | {} | {:.1} | {:.2}% | {} | {} | {} | {} | {} | {:.2}% | {} |{}",
                r.transport,
                r.mode,
                r.taps.len(),
                entry.map_or(0.0, |e| r.cpu_us_per_packet(e)),
                entry.map_or(0.0, |e| r.core_percent(e)),
                if answers.is_empty() {
                    "-".into()
                } else {
                    format!("{:.1}", answers.iter().sum::<f64>() / answers.len() as f64)
                },
                slowest.map_or("-".into(), |t| t.name.clone()),
                slowest.map_or("-".into(), |t| ms(t.latency.summary().p50)),
                slowest.map_or("-".into(), |t| ms(t.latency.summary().p99)),
                if fastest.is_finite() {
                    ms(fastest)
                } else {
                    "-".into()
                },
                r.worst_delivered() * 100.0,
                r.kernel_drops,
                r.problem.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
            );
        }
        md.push('\n');
    }
    failures(&mut md, rows);
    md
}

fn failures(md: &mut String, rows: &TreeRows) {
    if !rows.failures.is_empty() {
        let _ = writeln!(md, "Runs that failed:\n");
        for f in &rows.failures {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
}

/// Every run as JSON rows (milliseconds, µs per packet, % of a core).
pub fn to_json(rows: &TreeRows) -> Value {
    let run = |r: &TreeRun| {
        let p99s: Vec<f64> = r.taps.iter().map(|t| t.latency.summary().p99).collect();
        json!({
            "topology": match r.topology {
                Topology::Chain { .. } => "chain",
                Topology::FanOut { .. } => "fan-out",
            },
            "transport": r.transport.name(),
            "mode": r.mode.to_string(),
            "workload": r.workload,
            "offered": r.offered,
            "window_ms": r.window.as_secs_f64() * 1e3,
            "kernel_drops": r.kernel_drops,
            "taps": r.taps.iter().map(|t| {
                let l = t.latency.summary();
                json!({
                    "name": t.name,
                    "delivered": t.delivered,
                    "delivered_ratio": r.delivered_ratio(t),
                    "duplicates": t.duplicates,
                    "latency_ms": {"p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max},
                })
            }).collect::<Vec<_>>(),
            "p99_added_per_hop_ms": match r.topology {
                Topology::Chain { .. } => Some(added_per_hop(&p99s)),
                Topology::FanOut { .. } => None,
            },
            "hops_own_latency_ms": r.hop_latency.iter().map(|h| {
                let l = h.summary();
                json!({"p50": l.p50, "p99": l.p99, "max": l.max, "count": l.count})
            }).collect::<Vec<_>>(),
            "relays": r.relays.iter().map(|c| json!({
                "role": c.role,
                "cpu_ms": c.cpu.as_secs_f64() * 1e3,
                "cpu_us_per_packet": r.cpu_us_per_packet(c),
                "cpu_core_percent": r.core_percent(c),
            })).collect::<Vec<_>>(),
            "problem": r.problem,
        })
    };
    let mut extra = BTreeMap::new();
    for r in &rows.fan_outs {
        if let Some((n, us, pct)) = rows.per_extra_receiver(r.transport) {
            extra.insert(
                r.transport.name(),
                json!({"receivers": n, "cpu_us_per_packet": us, "cpu_core_percent": pct}),
            );
        }
    }
    json!({
        "workload": rows.workload,
        "duration_s": rows.duration.as_secs_f64(),
        "chains": rows.chains.iter().map(run).collect::<Vec<_>>(),
        "fan_outs": rows.fan_outs.iter().map(run).collect::<Vec<_>>(),
        "per_extra_receiver": extra,
        "failures": rows.failures,
        "skipped": rows.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{RelayCpu, TapResult};
    use super::*;
    use relay_core::Mode;
    use std::time::Duration;

    fn run(topology: Topology, cpus_ms: &[u64], p99s_ms: &[u64]) -> TreeRun {
        TreeRun {
            topology,
            transport: Transport::Quic,
            mode: Mode::Datagram,
            workload: "w".into(),
            offered: 1000,
            window: Duration::from_secs(2),
            taps: p99s_ms
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let mut latency = Latency::new();
                    for _ in 0..100 {
                        latency.record_ns(p * 1_000_000);
                    }
                    TapResult {
                        name: format!("tap {i}"),
                        delivered: 1000 - i as u64,
                        duplicates: 0,
                        latency,
                    }
                })
                .collect(),
            relays: cpus_ms
                .iter()
                .enumerate()
                .map(|(i, &c)| RelayCpu {
                    role: format!("relay {i}"),
                    cpu: Duration::from_millis(c),
                })
                .collect(),
            hop_latency: match topology {
                Topology::Chain { .. } => p99s_ms
                    .iter()
                    .map(|_| {
                        let mut h = Latency::new();
                        h.record_ns(500_000);
                        h
                    })
                    .collect(),
                Topology::FanOut { .. } => Vec::new(),
            },
            kernel_drops: 0,
            problem: None,
        }
    }

    #[test]
    fn rows_pair_the_fan_outs_and_render_every_table() {
        let rows = TreeRows {
            workload: "w".into(),
            duration: Duration::from_secs(2),
            chains: vec![run(Topology::Chain { hops: 3 }, &[10, 20, 22, 12], &[1, 2, 4])],
            fan_outs: vec![
                run(Topology::FanOut { receivers: 1 }, &[10, 5], &[1]),
                run(
                    Topology::FanOut { receivers: 8 },
                    &[38, 5, 5, 5, 5, 5, 5, 5, 5],
                    &[1, 1, 1, 3, 1, 1, 1, 1],
                ),
            ],
            ..TreeRows::default()
        };
        // 10 ms and 38 ms over 1,000 packets: 10 and 38 µs/pkt, 0.5% and 1.9% of a core.
        let (n, us, pct) = rows.per_extra_receiver(Transport::Quic).unwrap();
        assert_eq!(n, 8);
        assert!((us - 4.0).abs() < 1e-9, "{us}");
        assert!((pct - 0.2).abs() < 1e-9, "{pct}");
        let wide = rows.fan_out(Transport::Quic, 8).unwrap();
        assert_eq!(wide.slowest().unwrap().name, "tap 3");
        assert!((wide.worst_delivered() - 0.993).abs() < 1e-9);
        let md = section(&rows);
        // HdrHistogram keeps 3 significant digits: 2 ms reads 2.001.
        assert!(md.contains("| quic datagram | 1.000 / 2.00"), "{md}");
        assert!(
            md.contains("| 0.500, 0.500, 0.500 | 21.0 (1.05%) | 10.0 / 38.0 (N = 8) | 4.0 (0.20%) | 1.000 / 3.000 | 99.30% |"),
            "{md}"
        );
        assert!(md.contains("### Chain: per hop"));
        assert!(md.contains("### Fan-out: per run"));
        let j = to_json(&rows);
        let added = j["chains"][0]["p99_added_per_hop_ms"][2].as_f64().unwrap();
        assert!((added - 2.0).abs() < 0.01, "{added}");
        assert_eq!(j["chains"][0]["hops_own_latency_ms"].as_array().unwrap().len(), 3);
        assert_eq!(j["per_extra_receiver"]["quic"]["cpu_us_per_packet"], 4.0);
    }
}
