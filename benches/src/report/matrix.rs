//! Running the matrix: setups, sustained throughput, then every scenario x
//! workload x path, repetitions interleaved.

use std::time::{Duration, Instant};

use super::{FLOOD_SIZE, Matrix, ReportConfig, SUSTAINED_WINDOW, SetupSamples};
use crate::path::Path;
use crate::pion::relay_binary;
use crate::run::measure;
use crate::scenario::Subject;
use crate::tree::{TreeConfig, TreeRows, default_links};

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the matrix (the scenarios [`ReportConfig::selected_scenarios`]
/// picks) on the current (multi-thread) runtime, reporting progress lines
/// to `progress`. Fails only on an unknown scenario name.
pub async fn run_matrix(config: ReportConfig, mut progress: impl FnMut(&str)) -> Result<Matrix, String> {
    let started = Instant::now();
    let load_before = loadavg();
    let mut subjects = config.selected_subjects()?;
    let scenarios = config.selected_scenarios()?;
    let mut setups = Vec::new();
    let mut failures = Vec::new();

    // The pion rows need the Go program: build it (or find it cached) once,
    // and skip the rows with the reason when this machine cannot.
    let mut skipped = Vec::new();
    // Only the scenarios' runs use it (`--scenario tree` alone does not).
    if !scenarios.is_empty() && subjects.iter().any(Subject::is_pion) {
        progress("pion relay: building tools/pion-relay (cached after the first time)");
        let built = tokio::task::spawn_blocking(|| relay_binary().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(format!("the build task failed: {e}")));
        match built {
            Ok(binary) => progress(&format!("pion relay: {}", binary.display())),
            Err(e) => {
                let labels: Vec<String> = subjects
                    .iter()
                    .filter(|s| s.is_pion())
                    .map(Subject::label)
                    .collect();
                let notice = format!("{}: {e}", labels.join(" and "));
                progress(&notice);
                skipped.push(notice);
                subjects.retain(|s| !s.is_pion());
            }
        }
    }

    // Setup: clean and through the 20 ms delay, when they are selected.
    let setup_plan = [
        ("clean", config.setup_samples),
        ("delay20", config.setup_delay_samples),
    ];
    for (scenario, samples) in setup_plan
        .iter()
        .filter_map(|(name, n)| Some((scenarios.iter().find(|s| s.name == *name)?, *n)))
    {
        for &subject in &subjects {
            progress(&format!(
                "setup  {:<8} {:<20} x{samples}",
                scenario.name,
                subject.label()
            ));
            let mut s = SetupSamples {
                subject,
                scenario: scenario.name,
                total: Vec::new(),
                link: Vec::new(),
            };
            for i in 0..samples {
                match Path::open(subject, scenario, config.seed + i as u64).await {
                    Ok(path) => {
                        s.total.push(path.setup);
                        s.link.extend(path.link_setup);
                        path.close().await;
                    }
                    Err(e) => failures.push(format!("setup {} {}: {e}", scenario.name, subject.label())),
                }
            }
            setups.push(s);
        }
    }

    // Sustained throughput: as fast as the receiver confirms (in process),
    // so no transport is measured while it drops its own overload.
    let mut sustained = Vec::new();
    if let Some(clean) = scenarios.iter().find(|s| s.name == "clean") {
        for &subject in &subjects {
            match Path::open(subject, clean, config.seed).await {
                Ok(path) => {
                    let (time, delivered) = path
                        .windowed(
                            config.sustained_packets,
                            FLOOD_SIZE,
                            SUSTAINED_WINDOW,
                            Duration::from_millis(200),
                        )
                        .await;
                    progress(&format!(
                        "sustained {:<20} {:>7.1} Mbit/s ({delivered} of {} packets)",
                        subject.label(),
                        delivered as f64 * FLOOD_SIZE as f64 * 8.0 / time.as_secs_f64().max(1e-9) / 1e6,
                        config.sustained_packets
                    ));
                    sustained.push((subject, time, delivered, config.sustained_packets));
                    path.close().await;
                }
                Err(e) => failures.push(format!("sustained {}: {e}", subject.label())),
            }
        }
    }

    // The ceiling and CPU per byte, next to the clean max-rate runs that
    // follow.
    let mut ceiling = crate::ceiling::Ceiling::default();
    if let Some(clean) = scenarios.iter().find(|s| s.name == "clean") {
        let (c, notices) = super::ceiling::measure(&config, clean, &subjects, &mut progress).await;
        ceiling = c;
        skipped.extend(notices);
    }

    let total: usize = subjects.len()
        * scenarios
            .iter()
            .flat_map(|s| {
                config
                    .workloads_for(s)
                    .into_iter()
                    .map(|(w, _)| config.reps(s, &w))
            })
            .sum::<usize>();
    let mut runs = Vec::new();
    let mut n = 0;
    for scenario in &scenarios {
        for (w, (workload, duration)) in config.workloads_for(scenario).iter().enumerate() {
            // Repetitions interleave the paths, so slow drift of the
            // machine's load hits them alike.
            for rep in 0..config.reps(scenario, workload) {
                let seed = run_seed(config.seed, scenario.name, w, rep);
                for &subject in &subjects {
                    n += 1;
                    let t0 = Instant::now();
                    match measure(subject, scenario, workload, *duration, config.drain, seed).await {
                        Ok(r) => {
                            let l = r.latency.summary();
                            progress(&format!(
                                "[{n:>3}/{total}] {:<11} {:<18} {:<20} rep {} | {:>6.2}% delivered, p99 {:>7.3} ms, {:>7.1} Mbit/s, {:>5.2} us/pkt{}{} ({:.1} s)",
                                scenario.name,
                                workload.name(),
                                subject.label(),
                                rep + 1,
                                r.delivered_ratio() * 100.0,
                                l.p99,
                                r.throughput_bps() / 1e6,
                                r.cpu_us_per_packet(),
                                r.problem.as_ref().map(|p| format!(" [{p}]")).unwrap_or_default(),
                                r.outage
                                    .map(|o| format!(
                                        ", back {} after the outage ({} stale)",
                                        o.first_arrival.map_or("never".into(), |d| format!(
                                            "{:.0} ms",
                                            d.as_secs_f64() * 1e3
                                        )),
                                        o.stale
                                    ))
                                    .unwrap_or_default(),
                                t0.elapsed().as_secs_f64()
                            ));
                            runs.push(r);
                        }
                        Err(e) => {
                            progress(&format!(
                                "[{n:>3}/{total}] {} {} {}: FAILED: {e}",
                                scenario.name,
                                workload.name(),
                                subject.label()
                            ));
                            failures.push(format!(
                                "{} {} {}: {e}",
                                scenario.name,
                                workload.name(),
                                subject.label()
                            ));
                        }
                    }
                }
            }
        }
    }
    let tree = if config.runs_tree() {
        Some(run_tree(&config, &subjects, &mut progress).await)
    } else {
        None
    };
    Ok(Matrix {
        config,
        subjects,
        scenarios,
        setups,
        runs,
        failures,
        skipped,
        elapsed: started.elapsed(),
        load: (load_before, loadavg()),
        sustained,
        ceiling,
        tree,
    })
}

/// The relay trees over the transports of the selected link paths (pion
/// and raw UDP have none), each in its unreliable mode, on a blocking
/// thread (child processes and socket threads), progress passed on.
async fn run_tree(config: &ReportConfig, subjects: &[Subject], progress: &mut impl FnMut(&str)) -> TreeRows {
    let mut transports: Vec<relay_core::Transport> = Vec::new();
    for s in subjects {
        if let Subject::Link(t, _) = s
            && !transports.contains(t)
        {
            transports.push(*t);
        }
    }
    let tree_config = TreeConfig {
        duration: config.tree,
        links: default_links(&transports),
        drain_idle: config.drain.idle,
        ..TreeConfig::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let task = tokio::task::spawn_blocking(move || {
        crate::tree::measure_all(&tree_config, |line| {
            let _ = tx.send(line.to_string());
        })
    });
    while let Some(line) = rx.recv().await {
        progress(&line);
    }
    task.await.unwrap_or_else(|e| TreeRows {
        failures: vec![format!("the tree task failed: {e}")],
        ..TreeRows::default()
    })
}

/// The netsim seed of one repetition: every path in it meets the same
/// network (the same loss decisions for the same packet sequence, the same
/// bursts at the same times), and it does not depend on which other
/// scenarios run, so `--scenario` reproduces a row of the full report.
/// `base + 1000 · (scenario's place in the full matrix) + 100 · workload + rep`.
pub fn run_seed(base: u64, scenario: &str, workload: usize, rep: usize) -> u64 {
    let place = crate::scenario::scenarios()
        .iter()
        .position(|s| s.name == scenario)
        .unwrap_or(0);
    base + 1000 * place as u64 + 100 * workload as u64 + rep as u64
}
