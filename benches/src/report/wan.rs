//! The WAN section of the report: latency on a 40 ms RTT path with and
//! without loss across seeds, and how each path came back from an outage.

use std::fmt::Write;

use super::Matrix;
use super::markdown::ms;
use crate::outage::{Recovery, STALE_AFTER};
use crate::run::RunResult;
use crate::scenario::{WAN_DELAY, WAN_JITTER};

/// `median (min–max)` of `values` (the median as [`Matrix::cell`] picks
/// it: the lower middle), or the value alone when there is one.
fn median_spread(mut values: Vec<f64>, fmt: impl Fn(f64) -> String) -> String {
    values.sort_by(f64::total_cmp);
    match values.as_slice() {
        [] => "-".into(),
        [only] => fmt(*only),
        all => format!(
            "{} ({}–{})",
            fmt(all[(all.len() - 1) / 2]),
            fmt(all[0]),
            fmt(all[all.len() - 1])
        ),
    }
}

/// Writes the WAN section for the WAN scenarios that ran.
pub(super) fn render(md: &mut String, m: &Matrix, video: &str) {
    let lossy: Vec<_> = m
        .scenarios
        .iter()
        .filter(|s| s.wan && s.outage.is_none())
        .collect();
    let outages: Vec<_> = m.scenarios.iter().filter(|s| s.outage.is_some()).collect();
    if lossy.is_empty() && outages.is_empty() {
        return;
    }
    let c = &m.config;
    let _ = writeln!(md, "## WAN: 40 ms RTT ({video})\n");
    let _ = writeln!(
        md,
        "Every WAN scenario is the same path, {} ms ± {} ms each way without reordering, plus its loss; `wan-delay40` is the baseline. \
         A transport holds its latency when its p99 on the lossy paths stays near its own baseline. \
         Each cell: median over {} seeds ({:.0} s each), then the lowest and highest run in brackets.\n",
        WAN_DELAY.as_millis(),
        WAN_JITTER.as_millis(),
        c.wan_reps,
        c.wan.as_secs_f64()
    );
    if !lossy.is_empty() {
        let _ = write!(md, "| path |");
        for s in &lossy {
            let _ = write!(
                md,
                " {0} p50 ms | {0} p99 ms | {0} max ms | {0} delivered |",
                s.name
            );
        }
        let _ = writeln!(md, "\n|---|{}", "---|---|---|---|".repeat(lossy.len()));
        for &subject in &m.subjects {
            let _ = write!(md, "| {} |", subject.label());
            for s in &lossy {
                let of = |f: fn(&RunResult) -> f64| m.spread(s.name, video, subject, f);
                let _ = write!(
                    md,
                    " {} | {} | {} | {} |",
                    median_spread(of(|r| r.latency.summary().p50), ms),
                    median_spread(of(|r| r.latency.summary().p99), ms),
                    median_spread(of(|r| r.latency.summary().max), ms),
                    median_spread(of(|r| r.delivered_ratio() * 100.0), |v| format!("{v:.2}%")),
                );
            }
            md.push('\n');
        }
        md.push('\n');
    }
    for scenario in outages {
        let _ = writeln!(md, "### {}: coming back\n", scenario.name);
        let _ = writeln!(
            md,
            "The proxy drops everything both ways for {:.1} s in the middle of each run, then carries packets again (the path's return). \
             `back after`: return → first packet delivered. `fresh after`: return → first packet delivered within {} ms of being sent \
             (ITU-T G.114's whole one-way budget for speech; later than that, a player discards it). \
             `stale`: packets delivered after the return that were older than that; `oldest`: the oldest of them. \
             Median over seeds (lowest–highest); `never`: nothing came within the run and its drain.\n",
            scenario.outage.map_or(0.0, |o| o.length.as_secs_f64()),
            STALE_AFTER.as_millis()
        );
        let _ = writeln!(
            md,
            "| path | back after ms | fresh after ms | stale packets | oldest delivered after ms | delivered | p99 ms |\n|---|---|---|---|---|---|---|"
        );
        for &subject in &m.subjects {
            let runs = m.reps(scenario.name, video, subject);
            let recoveries: Vec<Recovery> = runs.iter().filter_map(|r| r.outage).collect();
            if recoveries.is_empty() {
                let _ = writeln!(md, "| {} | not run |", subject.label());
                continue;
            }
            let millis = |pick: fn(&Recovery) -> Option<std::time::Duration>| {
                let got: Vec<f64> = recoveries
                    .iter()
                    .filter_map(|r| pick(r).map(|d| d.as_secs_f64() * 1e3))
                    .collect();
                let never = recoveries.len() - got.len();
                let shown = median_spread(got, ms);
                match never {
                    0 => shown,
                    n if n == recoveries.len() => "never".into(),
                    n => format!("{shown}; never in {n}"),
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                subject.label(),
                millis(|r| r.first_arrival),
                millis(|r| r.fresh),
                median_spread(recoveries.iter().map(|r| r.stale as f64).collect(), |v| format!(
                    "{v:.0}"
                )),
                median_spread(recoveries.iter().map(|r| r.oldest_ms).collect(), ms),
                median_spread(
                    runs.iter().map(|r| r.delivered_ratio() * 100.0).collect(),
                    |v| format!("{v:.2}%")
                ),
                median_spread(runs.iter().map(|r| r.latency.summary().p99).collect(), ms),
            );
        }
        md.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let f = |v: f64| format!("{v:.1}");
        assert_eq!(median_spread(vec![], f), "-");
        assert_eq!(median_spread(vec![2.0], f), "2.0");
        assert_eq!(median_spread(vec![3.0, 1.0, 2.0], f), "2.0 (1.0–3.0)");
        assert_eq!(median_spread(vec![4.0, 1.0, 2.0, 3.0], f), "2.0 (1.0–4.0)");
    }
}
