//! The lossy-path goals (a transport holds its latency on a lossy WAN
//! path), judged against a [`Matrix`]: every figure is the median over the
//! scenario's seeds, with the spread shown.

use std::time::Duration;

use relay_core::DEFAULT_MAX_DELAY;

use super::Matrix;
use super::goals::{Goal, median, not_run, verdict};
use crate::run::RunResult;
use crate::scenario::{Scenario, Subject};

/// Slack over the path's configured one-way delay and jitter that a
/// real-time mode may add: the relay's own processing and the harness's.
const SLACK_MS: f64 = 5.0;
/// Longest setup allowed, in every scenario.
const SETUP_LIMIT: Duration = Duration::from_secs(2);
/// How soon after an outage's end real-time delivery must be back.
const RESUME_LIMIT_MS: f64 = 300.0;

/// One-way delay plus jitter the scenario configures, in ms.
fn path_ms(s: &Scenario) -> (f64, f64) {
    s.impairment.as_ref().map_or((0.0, 0.0), |i| {
        (i.delay.as_secs_f64() * 1e3, i.jitter.as_secs_f64() * 1e3)
    })
}

/// Our paths: not the raw-UDP baseline, not pion's rows (the yardstick).
fn links(m: &Matrix) -> impl Iterator<Item = Subject> + '_ {
    m.subjects
        .iter()
        .copied()
        .filter(|s| *s != Subject::RawUdp && !s.is_pion())
}

/// Every lossy-path target that the matrix has runs for.
pub(super) fn loss_targets(m: &Matrix) -> Vec<Goal> {
    let video = m.video();
    let scenario = |name: &str| m.scenarios.iter().find(|s| s.name == name);
    let mut out = Vec::new();

    // Without loss a keyframe must not wait: p99 within delay + jitter + 5 ms.
    for sc in ["delay20", "wan-delay40"].into_iter().filter_map(scenario) {
        let (delay, jitter) = path_ms(sc);
        let limit = delay + jitter + SLACK_MS;
        for subject in links(m) {
            out.push(p99_goal(m, sc, &video, subject, limit, "keyframes included"));
        }
    }

    // Lossy WAN paths: unreliable modes keep the path's latency and lose no
    // more than the network did; reliable modes repair within a few RTTs.
    for sc in ["wan-loss1", "wan-burst5"].into_iter().filter_map(scenario) {
        let (delay, jitter) = path_ms(sc);
        let rtt = 2.0 * delay;
        for subject in links(m) {
            if subject.is_reliable() {
                let (rtts, extra) = if sc.name == "wan-loss1" {
                    (2.0, 30.0)
                } else {
                    (4.0, 100.0)
                };
                let limit = delay + rtts * rtt + extra;
                out.push(p99_goal(
                    m,
                    sc,
                    &video,
                    subject,
                    limit,
                    &format!("one-way + {rtts} RTT + {extra} ms"),
                ));
            } else if matches!(subject, Subject::Link(_, m) if m.is_repair()) {
                // Repair trades latency for delivery within its budget: its
                // targets are the repair goals (repair_targets.rs), not
                // the unreliable modes' path-delay bound.
                out.push(delivered_goal(m, sc, &video, subject));
            } else {
                out.push(p99_goal(
                    m,
                    sc,
                    &video,
                    subject,
                    delay + jitter + SLACK_MS,
                    "unreliable",
                ));
                out.push(delivered_goal(m, sc, &video, subject));
            }
        }
    }
    if let Some(sc) = scenario("loss1") {
        for subject in links(m).filter(|s| s.transport() == "dc" && s.is_reliable()) {
            out.push(p99_goal(
                m,
                sc,
                &video,
                subject,
                250.0,
                "loopback, 1% random loss",
            ));
        }
    }

    // Reliable means everything, in every scenario.
    for subject in links(m).filter(Subject::is_reliable) {
        let runs: Vec<&RunResult> = m.runs.iter().filter(|r| r.subject == subject).collect();
        let goal = format!("{}: delivers 100% in every scenario", subject.label());
        if runs.is_empty() {
            out.push(not_run(goal));
            continue;
        }
        let short: Vec<String> = runs
            .iter()
            .filter(|r| r.delivered < r.offered)
            .map(|r| {
                format!(
                    "{} {} seed {}: {}/{}",
                    r.scenario, r.workload, r.seed, r.delivered, r.offered
                )
            })
            .collect();
        out.push(Goal {
            goal,
            measured: if short.is_empty() {
                format!("{} runs, all complete", runs.len())
            } else {
                format!(
                    "{} of {} runs short: {}",
                    short.len(),
                    runs.len(),
                    short.join("; ")
                )
            },
            verdict: verdict(short.is_empty()),
        });
    }

    // Setup within 2 s everywhere, the lossy paths included.
    for subject in links(m) {
        let label = subject.label();
        let runs: Vec<&RunResult> = m.runs.iter().filter(|r| r.subject == subject).collect();
        let failed: Vec<&String> = m
            .failures
            .iter()
            .filter(|f| failed_path(m, f) == Some(subject))
            .collect();
        let goal = format!(
            "{label}: setup succeeds in every scenario within {} s",
            SETUP_LIMIT.as_secs()
        );
        let Some(slowest) = runs.iter().max_by_key(|r| r.setup) else {
            out.push(not_run(goal));
            continue;
        };
        let late = runs.iter().filter(|r| r.setup > SETUP_LIMIT).count();
        out.push(Goal {
            goal,
            measured: format!(
                "{} setups, slowest {:.0} ms ({} seed {}); {late} over the limit; {} failed{}",
                runs.len(),
                slowest.setup.as_secs_f64() * 1e3,
                slowest.scenario,
                slowest.seed,
                failed.len(),
                failed.first().map_or(String::new(), |f| format!(" ({f})"))
            ),
            verdict: verdict(late == 0 && failed.is_empty()),
        });
    }

    // The seed's own system beside ours: dc at least as good as pion's
    // rows on p99 and delivered, scenario by scenario (paced workloads).
    // An unreliable row's delivered counts only what arrived within the
    // latency budget: pion's unreliable channel has none and hands over,
    // after an outage, packets a second old that a live stream can only
    // discard, while ours drops them by design (`drops.expired`);
    // counting them as delivered would score exactly what the budget
    // forbids. Every packet still counts in the row's own tables.
    for subject in links(m) {
        let Some(pion) = subject.pion_counterpart().filter(|p| m.subjects.contains(p)) else {
            continue;
        };
        let budget = relay_core::DEFAULT_MAX_DELAY;
        let within_budget = !subject.is_reliable();
        let goal = format!(
            "{}: p99 and delivered{} at least as good as {} in every scenario",
            subject.label(),
            if within_budget {
                format!(" within the {} ms budget", budget.as_millis())
            } else {
                String::new()
            },
            pion.label()
        );
        let mut compared = 0;
        let mut worse = Vec::new();
        for sc in &m.scenarios {
            for (workload, _) in m.config.workloads_for(sc) {
                let name = workload.name();
                let p99 = |s| median(m.spread(sc.name, &name, s, |r| r.latency.summary().p99), 1);
                let all = |s| median(m.spread(sc.name, &name, s, |r| r.delivered_ratio() * 100.0), 1);
                let in_time = |s| {
                    median(
                        m.spread(sc.name, &name, s, |r| {
                            r.latency.count_within(budget) as f64 * 100.0 / r.offered.max(1) as f64
                        }),
                        1,
                    )
                };
                let share = |s| if within_budget { in_time(s) } else { all(s) };
                let (Some((own_p99, _)), Some((pion_p99, _)), Some((own_d, _)), Some((pion_d, _))) =
                    (p99(subject), p99(pion), share(subject), share(pion))
                else {
                    continue;
                };
                if m.reps(sc.name, &name, subject).first().is_some_and(|r| r.flood) {
                    // Max-rate rows are not comparable (see the report's method).
                    continue;
                }
                compared += 1;
                if own_p99 > pion_p99 || own_d < pion_d {
                    let delivered = if within_budget {
                        let all = |s| all(s).map_or(f64::NAN, |(d, _)| d);
                        format!(
                            "delivered within the budget {own_d:.2}% vs {pion_d:.2}% (at any age {:.2}% vs {:.2}%)",
                            all(subject),
                            all(pion)
                        )
                    } else {
                        format!("delivered {own_d:.2}% vs {pion_d:.2}%")
                    };
                    worse.push(format!(
                        "{} {name}: p99 {own_p99:.1} vs {pion_p99:.1} ms, {delivered}",
                        sc.name
                    ));
                }
            }
        }
        out.push(if compared == 0 {
            not_run(goal)
        } else {
            Goal {
                goal,
                measured: if worse.is_empty() {
                    format!("better or equal in all {compared} scenario/workload cells (median of the repetitions)")
                } else {
                    format!("worse in {} of {compared} cells: {}", worse.len(), worse.join("; "))
                },
                verdict: verdict(worse.is_empty()),
            }
        });
    }

    // Coming back from an outage: real-time delivery within 300 ms of the
    // path's return, and nothing past the budget delivered by an
    // unreliable mode.
    for sc in m.scenarios.iter().filter(|s| s.outage.is_some()) {
        for subject in links(m) {
            let runs = m.reps(sc.name, &video, subject);
            let goal = format!(
                "{}: {}: real-time delivery back within {RESUME_LIMIT_MS:.0} ms of the path's return{}",
                subject.label(),
                sc.name,
                if subject.is_reliable() {
                    String::new()
                } else {
                    format!(
                        ", nothing older than the {} ms budget after it",
                        DEFAULT_MAX_DELAY.as_millis()
                    )
                }
            );
            let recoveries: Vec<_> = runs.iter().filter_map(|r| r.outage).collect();
            let fresh: Vec<f64> = recoveries
                .iter()
                .map(|r| r.fresh.map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3))
                .collect();
            let oldest: Vec<f64> = recoveries.iter().map(|r| r.oldest_ms).collect();
            let (Some((fresh, fresh_all)), Some((oldest, oldest_all))) =
                (median(fresh, 1), median(oldest, 1))
            else {
                out.push(not_run(goal));
                continue;
            };
            let budget = DEFAULT_MAX_DELAY.as_secs_f64() * 1e3;
            out.push(Goal {
                goal,
                measured: format!(
                    "fresh after {fresh:.1} ms (seeds: {fresh_all}); oldest delivered after it {oldest:.1} ms (seeds: {oldest_all})"
                ),
                verdict: verdict(fresh <= RESUME_LIMIT_MS && (subject.is_reliable() || oldest <= budget)),
            });
        }
    }
    out
}

/// The path a failure line (`[setup] SCENARIO [WORKLOAD] PATH: error`)
/// names: the longest path label its head ends with, so `dc reliable` is
/// not taken for another path whose label ends the same way.
fn failed_path(m: &Matrix, failure: &str) -> Option<Subject> {
    let head = failure.split(": ").next()?;
    m.subjects
        .iter()
        .copied()
        .filter(|s| head.ends_with(&format!(" {}", s.label())))
        .max_by_key(|s| s.label().len())
}

/// `subject`'s p99 in `sc` (median over seeds), and its keyframe packets'
/// p99, against `limit_ms`.
fn p99_goal(m: &Matrix, sc: &Scenario, video: &str, subject: Subject, limit_ms: f64, why: &str) -> Goal {
    let goal = format!(
        "{}: {}: p99 one-way <= {limit_ms:.0} ms ({why})",
        subject.label(),
        sc.name
    );
    let p99 = m.spread(sc.name, video, subject, |r| r.latency.summary().p99);
    let key = m.spread(sc.name, video, subject, |r| r.keyframe_latency.summary().p99);
    let (Some((p99, p99_all)), Some((key, _))) = (median(p99, 1), median(key, 1)) else {
        return not_run(goal);
    };
    Goal {
        goal,
        measured: format!("p99 {p99:.1} ms (seeds: {p99_all}); keyframe packets p99 {key:.1} ms"),
        verdict: verdict(p99 <= limit_ms && key <= limit_ms),
    }
}

/// `subject` delivers at least what raw UDP did over the same network
/// (same seeds), less one point.
fn delivered_goal(m: &Matrix, sc: &Scenario, video: &str, subject: Subject) -> Goal {
    let goal = format!(
        "{}: {}: delivered >= what the network delivered - 1 point",
        subject.label(),
        sc.name
    );
    let share = |s| m.spread(sc.name, video, s, |r| r.delivered_ratio() * 100.0);
    let (Some((own, own_all)), Some((net, _))) =
        (median(share(subject), 1), median(share(Subject::RawUdp), 1))
    else {
        return not_run(goal);
    };
    Goal {
        goal,
        measured: format!("{own:.2}% (seeds: {own_all}) vs raw UDP {net:.2}% through the same network"),
        verdict: verdict(own >= net - 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Latency;
    use crate::report::goals::Verdict;
    use crate::report::json::tests::run;
    use relay_core::{Mode, Transport};

    fn at(ms: u64, mut r: RunResult) -> RunResult {
        let mut latency = Latency::new();
        for _ in 0..100 {
            latency.record_ns(ms * 1_000_000);
        }
        r.keyframe_latency = latency.clone();
        r.latency = latency;
        r
    }

    /// The dc unreliable row's goal against pion's.
    fn against_pion(m: &Matrix) -> Goal {
        let goals = loss_targets(m);
        goals
            .iter()
            .find(|g| {
                g.goal
                    .starts_with("dc unreliable: p99 and delivered within the 200 ms budget")
            })
            .cloned()
            .unwrap_or_else(|| panic!("{goals:?}"))
    }

    #[test]
    fn lossy_wan_targets_judge_the_median_seed() {
        let quic = Subject::Link(Transport::Quic, Mode::Datagram);
        let dc = Subject::Link(Transport::Dc, Mode::Reliable);
        let mut runs = Vec::new();
        for seed in 1..=3 {
            runs.push(run("wan-burst5", Subject::RawUdp, seed));
            // One seed of three is slow: the median still passes.
            runs.push(at(
                if seed == 2 { 400 } else { 23 },
                run("wan-burst5", quic, seed),
            ));
            let mut reliable = at(290, run("wan-burst5", dc, seed));
            reliable.delivered = 100;
            runs.push(reliable);
        }
        runs[1].setup = Duration::from_millis(2500);
        let m = Matrix {
            failures: vec!["wan-burst5 video 2.5 Mbit/s dc reliable: data channel not open".into()],
            ..Matrix::of_runs(vec![Subject::RawUdp, quic, dc], |s| s == "wan-burst5", runs)
        };
        let goals = loss_targets(&m);
        let find = |start: &str| {
            goals
                .iter()
                .find(|g| g.goal.starts_with(start))
                .unwrap_or_else(|| panic!("no goal {start}: {goals:?}"))
        };
        let p99 = find("quic datagram: wan-burst5: p99 one-way <= 27 ms");
        assert_eq!(p99.verdict, Verdict::Pass, "{p99:?}");
        assert!(p99.measured.contains("seeds: 23.0, 23.0, 400.0"), "{p99:?}");
        // 93% delivered, as raw UDP through the same network.
        assert_eq!(
            find("quic datagram: wan-burst5: delivered").verdict,
            Verdict::Pass
        );
        // 290 ms is over one-way + 4 RTT + 100 ms = 280 ms.
        assert_eq!(
            find("dc reliable: wan-burst5: p99 one-way <= 280 ms").verdict,
            Verdict::Miss
        );
        assert_eq!(find("dc reliable: delivers 100%").verdict, Verdict::Pass);
        let setup = find("quic datagram: setup");
        assert_eq!(setup.verdict, Verdict::Miss, "{setup:?}");
        assert!(setup.measured.contains("1 over the limit"), "{setup:?}");
        let failed = find("dc reliable: setup");
        assert_eq!(failed.verdict, Verdict::Miss, "{failed:?}");
        assert!(failed.measured.contains("1 failed"), "{failed:?}");
    }

    #[test]
    fn median_is_the_lower_middle_and_lists_every_value() {
        assert_eq!(median(vec![], 1), None);
        assert_eq!(
            median(vec![3.0, 1.0, 2.0], 1),
            Some((2.0, "1.0, 2.0, 3.0".into()))
        );
        assert_eq!(median(vec![4.0, 1.0], 1), Some((1.0, "1.0, 4.0".into())));
    }

    #[test]
    fn dc_is_judged_against_pions_row_cell_by_cell() {
        let dc = Subject::Link(Transport::Dc, Mode::Unreliable);
        let pion = Subject::Pion(Mode::Unreliable);
        let mut runs = Vec::new();
        for seed in 1..=3 {
            runs.push(at(30, run("wan-burst5", dc, seed)));
            runs.push(at(25, run("wan-burst5", pion, seed)));
        }
        let m = Matrix::of_runs(vec![Subject::RawUdp, dc, pion], |s| s == "wan-burst5", runs);
        let vs = against_pion(&m);
        assert_eq!(vs.verdict, Verdict::Miss, "{vs:?}");
        assert!(
            vs.measured
                .contains("wan-burst5 video 2.5 Mbit/s: p99 30.0 vs 25.0 ms"),
            "{vs:?}"
        );
        assert!(
            loss_targets(&m).iter().all(|g| !g.goal.starts_with("pion")),
            "pion's rows are not judged"
        );
    }

    /// An unreliable row's delivered counts what arrived within the
    /// budget: pion's stale packets after an outage do not make it better.
    #[test]
    fn pions_stale_deliveries_do_not_count_against_an_unreliable_dc() {
        let dc = Subject::Link(Transport::Dc, Mode::Unreliable);
        let pion = Subject::Pion(Mode::Unreliable);
        let with = |subject, stale: u64, seed| {
            let mut r = run("wan-outage", subject, seed);
            let mut latency = Latency::new();
            for _ in 0..86 {
                latency.record_ns(23_000_000);
            }
            for _ in 0..stale {
                latency.record_ns(1_100_000_000);
            }
            r.offered = 100;
            r.delivered = 86 + stale;
            r.latency = latency;
            r
        };
        let mut runs = Vec::new();
        for seed in 1..=3 {
            runs.push(with(dc, 0, seed));
            runs.push(with(pion, 11, seed));
        }
        let m = Matrix::of_runs(vec![Subject::RawUdp, dc, pion], |s| s == "wan-outage", runs);
        let vs = against_pion(&m);
        assert_eq!(vs.verdict, Verdict::Pass, "{vs:?}");

        // One packet fewer within the budget is worse, and says both shares.
        let mut m = m;
        for r in m.runs.iter_mut().filter(|r| r.subject == dc) {
            let mut latency = Latency::new();
            for _ in 0..85 {
                latency.record_ns(23_000_000);
            }
            latency.record_ns(300_000_000);
            r.latency = latency;
        }
        let vs = against_pion(&m);
        assert_eq!(vs.verdict, Verdict::Miss, "{vs:?}");
        assert!(
            vs.measured
                .contains("delivered within the budget 85.00% vs 86.00% (at any age 86.00% vs 97.00%)"),
            "{vs:?}"
        );
    }
}
