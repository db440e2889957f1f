//! The scenario report: runs the matrix, judges the goals, and renders
//! `docs/results.md` with its SVG plots.

use std::fmt::Write;
use std::time::{Duration, Instant};

use relay_core::{Mode, Transport};

use crate::path::Path;
use crate::run::{Drain, RunResult, measure};
use crate::scenario::{Scenario, Subject, scenarios};
use crate::svg::{Series, bar_chart, cdf_plot};
use crate::sys::Machine;
use crate::workload::Workload;

/// The video workload's bitrate: a 720p30 conference stream.
pub const VIDEO_BITRATE: u64 = 2_500_000;
/// Packet size of the max-rate workload (and the criterion throughput group).
pub const FLOOD_SIZE: usize = 1_200;

/// How long and how often each part of the matrix runs.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// `--quick`: short runs, for a look in about a minute.
    pub quick: bool,
    /// Seconds of video per run.
    pub video: Duration,
    /// Seconds of audio per run.
    pub audio: Duration,
    /// Concurrent audio streams (each 50 pps).
    pub audio_streams: u32,
    /// Seconds of flood per run.
    pub flood: Duration,
    /// Flood runs per path and scenario; the median is reported.
    pub flood_reps: usize,
    /// Video and audio runs per path on the clean network (where the
    /// latency goals are judged); the median by p99 is reported.
    pub clean_paced_reps: usize,
    /// Packets of the sustained-throughput measurement per path.
    pub sustained_packets: u64,
    /// Setups per path on the clean network.
    pub setup_samples: usize,
    /// Setups per path through the 20 ms delay.
    pub setup_delay_samples: usize,
    /// Drain policy.
    pub drain: Drain,
    /// Seed of every netsim proxy (each run gets its own derived from it).
    pub seed: u64,
}

impl ReportConfig {
    /// The committed report: well under 15 minutes on the 2-core machine.
    pub fn full() -> ReportConfig {
        ReportConfig {
            quick: false,
            video: Duration::from_secs(5),
            audio: Duration::from_secs(5),
            audio_streams: 10,
            flood: Duration::from_secs(1),
            flood_reps: 3,
            clean_paced_reps: 3,
            sustained_packets: 200_000,
            setup_samples: 20,
            setup_delay_samples: 5,
            drain: Drain::default(),
            seed: 1,
        }
    }

    /// About a minute.
    pub fn quick() -> ReportConfig {
        ReportConfig {
            quick: true,
            video: Duration::from_millis(750),
            audio: Duration::from_millis(750),
            flood: Duration::from_millis(200),
            flood_reps: 1,
            clean_paced_reps: 1,
            sustained_packets: 30_000,
            setup_samples: 5,
            setup_delay_samples: 1,
            drain: Drain {
                idle: Duration::from_millis(150),
                ..Drain::default()
            },
            ..ReportConfig::full()
        }
    }

    /// Runs of `workload` per path in `scenario`.
    pub fn reps(&self, scenario: &str, workload: &Workload) -> usize {
        if workload.is_flood() {
            self.flood_reps
        } else if scenario == "clean" {
            self.clean_paced_reps
        } else {
            1
        }
    }

    /// The workloads of every scenario, with their run time.
    pub fn workloads(&self) -> Vec<(Workload, Duration)> {
        vec![
            (
                Workload::Video {
                    bitrate: VIDEO_BITRATE,
                },
                self.video,
            ),
            (
                Workload::Audio {
                    streams: self.audio_streams,
                },
                self.audio,
            ),
            (Workload::Flood { size: FLOOD_SIZE }, self.flood),
        ]
    }
}

/// Setup times of one path under one scenario.
#[derive(Debug, Clone)]
pub struct SetupSamples {
    /// What was set up.
    pub subject: Subject,
    /// Scenario name.
    pub scenario: &'static str,
    /// Whole setup, offer made to both ends ready (in process, no HTTP).
    pub total: Vec<Duration>,
    /// The offering link's own connect → ready.
    pub link: Vec<Duration>,
}

/// Everything one report run measured.
#[derive(Debug)]
pub struct Matrix {
    /// Settings.
    pub config: ReportConfig,
    /// Paths measured, raw UDP first.
    pub subjects: Vec<Subject>,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Setup samples.
    pub setups: Vec<SetupSamples>,
    /// Every run, repetitions included.
    pub runs: Vec<RunResult>,
    /// Runs that could not be made, with why.
    pub failures: Vec<String>,
    /// Wall time of the whole matrix.
    pub elapsed: Duration,
    /// `/proc/loadavg` before and after: other work on the machine.
    pub load: (String, String),
    /// Sustained throughput on the clean network without overload:
    /// (path, time, packets delivered, packets sent), from
    /// [`Path::windowed`].
    pub sustained: Vec<(Subject, Duration, u64, u64)>,
}

/// Packets kept in flight by the sustained-throughput measurement: enough
/// to keep every transport busy, few enough to stay inside every
/// transport's buffers (quinn's 1 MiB datagram send buffer, the 4,096-packet
/// receive queues), so nothing is lost to overload.
pub const SUSTAINED_WINDOW: u64 = 512;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the whole matrix on the current (multi-thread) runtime, reporting
/// progress lines to `progress`.
pub async fn run_matrix(config: ReportConfig, mut progress: impl FnMut(&str)) -> Matrix {
    let started = Instant::now();
    let load_before = loadavg();
    let subjects = Subject::all();
    let scenarios = scenarios();
    let mut setups = Vec::new();
    let mut failures = Vec::new();

    // Setup: clean and through the 20 ms delay.
    for (scenario, samples) in [
        (&scenarios[0], config.setup_samples),
        (&scenarios[3], config.setup_delay_samples),
    ] {
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
    let clean = &scenarios[0];
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

    let workloads = config.workloads();
    let total: usize = subjects.len()
        * scenarios
            .iter()
            .flat_map(|s| workloads.iter().map(|(w, _)| config.reps(s.name, w)))
            .sum::<usize>();
    let mut runs = Vec::new();
    let mut n = 0;
    let mut seed = config.seed;
    for scenario in &scenarios {
        for (workload, duration) in &workloads {
            // Repetitions interleave the paths, so slow drift of the
            // machine's load hits them alike.
            for rep in 0..config.reps(scenario.name, workload) {
                for &subject in &subjects {
                    n += 1;
                    seed += 1;
                    let t0 = Instant::now();
                    match measure(subject, scenario, workload, *duration, config.drain, seed).await {
                        Ok(r) => {
                            let l = r.latency.summary();
                            progress(&format!(
                                "[{n:>3}/{total}] {:<8} {:<18} {:<20} rep {} | {:>6.2}% delivered, p99 {:>7.3} ms, {:>7.1} Mbit/s, {:>5.2} us/pkt{} ({:.1} s)",
                                scenario.name,
                                workload.name(),
                                subject.label(),
                                rep + 1,
                                r.delivered_ratio() * 100.0,
                                l.p99,
                                r.throughput_bps() / 1e6,
                                r.cpu_us_per_packet(),
                                r.problem.as_ref().map(|p| format!(" [{p}]")).unwrap_or_default(),
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
    Matrix {
        config,
        subjects,
        scenarios,
        setups,
        runs,
        failures,
        elapsed: started.elapsed(),
        load: (load_before, loadavg()),
        sustained,
    }
}

impl Matrix {
    /// Every repetition of one cell.
    pub fn reps(&self, scenario: &str, workload: &str, subject: Subject) -> Vec<&RunResult> {
        self.runs
            .iter()
            .filter(|r| r.scenario == scenario && r.workload == workload && r.subject == subject)
            .collect()
    }

    /// The cell's representative run (the only run when there is one):
    /// floods, the median by delivered packets per second; paced
    /// workloads, the median by p99 latency.
    pub fn cell(&self, scenario: &str, workload: &str, subject: Subject) -> Option<&RunResult> {
        let mut reps = self.reps(scenario, workload, subject);
        reps.sort_by(|a, b| {
            if a.flood {
                a.delivered_pps().total_cmp(&b.delivered_pps())
            } else {
                a.latency.summary().p99.total_cmp(&b.latency.summary().p99)
            }
        });
        reps.get(reps.len().saturating_sub(1) / 2).copied()
    }

    /// Sustained Mbit/s of `subject` and the share of packets delivered.
    pub fn sustained_mbps(&self, subject: Subject) -> Option<(f64, f64)> {
        self.sustained
            .iter()
            .find(|s| s.0 == subject)
            .map(|&(_, time, delivered, sent)| {
                (
                    delivered as f64 * FLOOD_SIZE as f64 * 8.0 / time.as_secs_f64().max(1e-9) / 1e6,
                    delivered as f64 / sent.max(1) as f64,
                )
            })
    }

    /// Delivered packets/s of `subject` over raw UDP's, clean max-rate,
    /// each repetition against the raw-UDP run next to it in time: the
    /// median ratio and every ratio. Falls back to the ratio of medians
    /// when a run is missing.
    pub fn paired_ratio(&self, subject: Subject) -> Option<(f64, Vec<f64>)> {
        let flood = self.flood();
        let raw = self.reps("clean", &flood, Subject::RawUdp);
        let own = self.reps("clean", &flood, subject);
        if raw.is_empty() || own.is_empty() {
            return None;
        }
        if raw.len() != own.len() {
            let r = self.cell("clean", &flood, Subject::RawUdp)?.delivered_pps();
            let o = self.cell("clean", &flood, subject)?.delivered_pps();
            return (r > 0.0).then(|| (o / r, vec![o / r]));
        }
        let mut ratios: Vec<f64> = raw
            .iter()
            .zip(&own)
            .filter(|(r, _)| r.delivered_pps() > 0.0)
            .map(|(r, o)| o.delivered_pps() / r.delivered_pps())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = *ratios.get(ratios.len().saturating_sub(1) / 2)?;
        Some((median, ratios))
    }

    fn setup(&self, scenario: &str, subject: Subject) -> Option<&SetupSamples> {
        self.setups
            .iter()
            .find(|s| s.scenario == scenario && s.subject == subject)
    }

    fn video(&self) -> String {
        Workload::Video {
            bitrate: VIDEO_BITRATE,
        }
        .name()
    }

    fn flood(&self) -> String {
        Workload::Flood { size: FLOOD_SIZE }.name()
    }
}

/// Median of durations, in milliseconds.
fn median_ms(samples: &[Duration]) -> Option<f64> {
    percentile_ms(samples, 50.0)
}

/// Nearest-rank percentile of durations, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1].as_secs_f64() * 1000.0)
}

/// A goal's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met.
    Pass,
    /// Not met.
    Miss,
    /// The transport was not in this build or the run failed.
    NotRun,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "**PASS**",
            Verdict::Miss => "**MISS**",
            Verdict::NotRun => "NOT RUN",
        })
    }
}

/// One goal of the issue, judged.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The goal as stated.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// The verdict.
    pub verdict: Verdict,
}

fn judge(ok: Option<bool>) -> Verdict {
    match ok {
        Some(true) => Verdict::Pass,
        Some(false) => Verdict::Miss,
        None => Verdict::NotRun,
    }
}

const QUIC_DGRAM: Subject = Subject::Link(Transport::Quic, Mode::Datagram);
const QUIC_STREAM: Subject = Subject::Link(Transport::Quic, Mode::Stream);
const RTP_UDP: Subject = Subject::Link(Transport::RtpUdp, Mode::Unreliable);
const DC_UNRELIABLE: Subject = Subject::Link(Transport::Dc, Mode::Unreliable);
const DC_RELIABLE: Subject = Subject::Link(Transport::Dc, Mode::Reliable);

/// Judges every goal of the issue against the measurements.
pub fn goals(m: &Matrix) -> Vec<Goal> {
    let mut out = Vec::new();
    let flood = m.flood();
    let video = m.video();
    let raw_pps = m
        .cell("clean", &flood, Subject::RawUdp)
        .map(|r| r.delivered_pps());
    let pps = |s| m.cell("clean", &flood, s).map(|r| r.delivered_pps());
    let gbps = |s| m.cell("clean", &flood, s).map(|r| r.throughput_bps() / 1e9);
    let not_run = || "not in this build (or the run failed)".to_string();

    for (subject, factor) in [(RTP_UDP, 0.8), (QUIC_DGRAM, 0.5)] {
        let (measured, ok) = match (pps(subject), raw_pps, m.paired_ratio(subject)) {
            (Some(p), Some(raw), Some((ratio, all))) if raw > 0.0 => (
                format!(
                    "{ratio:.2}x: median of per-run ratios to the raw-UDP run beside it ({}); medians {:.0} vs {:.0} packets/s, clean max-rate",
                    all.iter()
                        .map(|r| format!("{r:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    p,
                    raw,
                ),
                Some(ratio >= factor),
            ),
            _ => (not_run(), None),
        };
        out.push(Goal {
            goal: format!(
                "{} >= {factor}x raw-UDP packets/s in the same run",
                subject.label()
            ),
            measured,
            verdict: judge(ok),
        });
    }
    for (subject, target) in [
        (QUIC_DGRAM, 3.0),
        (QUIC_STREAM, 3.0),
        (DC_UNRELIABLE, 0.9),
        (DC_RELIABLE, 0.5),
    ] {
        let (measured, ok) = match (gbps(subject), m.cell("clean", &flood, subject)) {
            (Some(g), Some(r)) => (
                format!(
                    "{:.2} Gbit/s delivered ({:.1}% of offered {:.2} Gbit/s; runs: {}); sustained without overload: {}",
                    g,
                    r.delivered_ratio() * 100.0,
                    r.offered_bps() / 1e9,
                    {
                        let mut all: Vec<f64> = m
                            .reps("clean", &flood, subject)
                            .iter()
                            .map(|r| r.throughput_bps() / 1e9)
                            .collect();
                        all.sort_by(f64::total_cmp);
                        all.iter()
                            .map(|v| format!("{v:.2}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    m.sustained_mbps(subject)
                        .map_or("-".into(), |(mbps, share)| format!(
                            "{:.2} Gbit/s ({:.1}% delivered)",
                            mbps / 1e3,
                            share * 100.0
                        ))
                ),
                Some(g >= target),
            ),
            _ => (not_run(), None),
        };
        out.push(Goal {
            goal: format!(
                "{} >= {} of 1,200-byte packets",
                subject.label(),
                if target >= 1.0 {
                    format!("{target} Gbit/s")
                } else {
                    format!("{:.0} Mbit/s", target * 1000.0)
                }
            ),
            measured,
            verdict: judge(ok),
        });
    }
    for (subject, limit) in [
        (RTP_UDP, 0.5),
        (QUIC_DGRAM, 0.5),
        (DC_UNRELIABLE, 2.0),
        (DC_RELIABLE, 2.0),
    ] {
        let (measured, ok) = match m.cell("clean", &video, subject) {
            Some(r) => {
                let s = r.latency.summary();
                let raw = m
                    .cell("clean", &video, Subject::RawUdp)
                    .map(|r| r.latency.summary().p99);
                (
                    format!(
                        "p99 {:.3} ms (p50 {:.3}, max {:.3}, keyframe packets p99 {:.3}; raw UDP p99 {}); runs' p99: {}",
                        s.p99,
                        s.p50,
                        s.max,
                        r.keyframe_latency.summary().p99,
                        raw.map_or("-".into(), |v| format!("{v:.3}")),
                        {
                            let mut all: Vec<f64> = m
                                .reps("clean", &video, subject)
                                .iter()
                                .map(|r| r.latency.summary().p99)
                                .collect();
                            all.sort_by(f64::total_cmp);
                            all.iter()
                                .map(|v| format!("{v:.3}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                    Some(s.p99 <= limit),
                )
            }
            None => (not_run(), None),
        };
        out.push(Goal {
            goal: format!(
                "{}: one relay hop, 2.5 Mbit/s video, clean: p99 one-way <= {limit} ms",
                subject.label()
            ),
            measured,
            verdict: judge(ok),
        });
    }
    for (transport, limit) in [(Transport::Quic, 2.0), (Transport::Dc, 20.0)] {
        let samples: Vec<Duration> = m
            .setups
            .iter()
            .filter(|s| s.scenario == "clean" && matches!(s.subject, Subject::Link(t, _) if t == transport))
            .flat_map(|s| s.link.iter().copied())
            .collect();
        let (measured, ok) = match median_ms(&samples) {
            Some(p50) => (
                format!(
                    "p50 {p50:.2} ms, max {:.2} ms over {} setups (connect -> ready, both modes)",
                    percentile_ms(&samples, 100.0).unwrap_or(0.0),
                    samples.len()
                ),
                Some(p50 < limit),
            ),
            None => (not_run(), None),
        };
        out.push(Goal {
            goal: format!("{transport} setup (connect -> ready) p50 < {limit} ms"),
            measured,
            verdict: judge(ok),
        });
    }
    for &subject in m.subjects.iter().filter(|s| !matches!(s, Subject::RawUdp)) {
        let (Some(burst), clean) = (
            m.cell("burst5", &video, subject),
            m.cell("clean", &video, subject),
        ) else {
            continue;
        };
        let s = burst.latency.summary();
        let clean_p99 = clean.map(|c| c.latency.summary().p99).unwrap_or(0.0);
        if subject.is_reliable() {
            out.push(Goal {
                goal: format!(
                    "{}: 5% burst loss, video: delivers everything; head-of-line cost shown",
                    subject.label()
                ),
                measured: format!(
                    "{:.2}% delivered; p99 {:.3} ms vs {:.3} ms clean (+{:.3} ms), max {:.3} ms",
                    burst.delivered_ratio() * 100.0,
                    s.p99,
                    clean_p99,
                    s.p99 - clean_p99,
                    s.max
                ),
                verdict: judge(Some(burst.delivered == burst.offered)),
            });
        } else {
            let configured = m
                .scenarios
                .iter()
                .find(|sc| sc.name == "burst5")
                .map_or(0.0, |sc| sc.configured_delay().as_secs_f64() * 1000.0);
            out.push(Goal {
                goal: format!(
                    "{}: 5% burst loss, video: p99 within 2 ms of the configured delay ({configured} ms)",
                    subject.label()
                ),
                measured: format!(
                    "p99 {:.3} ms, {:.2}% delivered",
                    s.p99,
                    burst.delivered_ratio() * 100.0
                ),
                verdict: judge(Some(s.p99 <= configured + 2.0)),
            });
        }
    }
    out
}

/// Dependency versions from the workspace's Cargo.lock.
pub fn locked_versions(lock: &str, names: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && names.contains(&n.as_str())
            && !out.iter().any(|(o, _): &(String, String)| *o == n)
        {
            out.push((n, v.trim_matches('"').to_string()));
        }
    }
    out.sort();
    out
}

/// The report: markdown and `(file name, svg)` plots.
pub struct Rendered {
    /// `docs/results.md`.
    pub markdown: String,
    /// Plots, to go under `docs/results/`.
    pub plots: Vec<(String, String)>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), ms)
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn drops(r: &RunResult) -> String {
    format!(
        "{} / {} / {}",
        r.netsim.map_or("-".into(), |(f, b)| format!(
            "{}+{}",
            f.dropped.total(),
            b.dropped.total()
        )),
        r.link_drops.map_or("-".into(), |d| {
            let parts: Vec<String> = [
                (d.send_queue_full, "send-q"),
                (d.receive_queue_full, "recv-q"),
                (d.total() - d.send_queue_full - d.receive_queue_full, "other"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            if parts.is_empty() {
                "0".into()
            } else {
                parts.join(" + ")
            }
        }),
        r.kernel_drops()
    )
}

/// Renders the report.
pub fn render(m: &Matrix, machine: &Machine, versions: &[(String, String)], command: &str) -> Rendered {
    let mut md = String::new();
    let mut plots = Vec::new();
    let video = m.video();
    let flood = m.flood();
    let c = &m.config;

    let _ = writeln!(md, "# sfu-relay benchmark results\n");
    let _ = writeln!(
        md,
        "Generated by `{command}` — do not edit by hand; regenerate instead. {} run{}.\n",
        if c.quick { "A **quick**" } else { "The full" },
        if c.quick {
            " (short runs: numbers are indicative only)"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date | {} |", machine.date);
    let _ = writeln!(md, "| git commit | `{}` |", machine.commit);
    let _ = writeln!(md, "| CPU | {} |", machine.cpu);
    let _ = writeln!(md, "| cores | {} |", machine.cores);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| rustc | {} |", machine.rustc);
    let _ = writeln!(
        md,
        "| crates | relay-bench {}; {} |",
        env!("CARGO_PKG_VERSION"),
        versions
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "| transports | {} |",
        m.subjects
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "| load average (1/5/15 min) | before {}; after {} (other builds share these 2 cores) |",
        m.load.0, m.load.1
    );
    let _ = writeln!(md, "| matrix wall time | {:.0} s |\n", m.elapsed.as_secs_f64());
    if !relay::compiled_transports().contains(&Transport::Dc) {
        let _ = writeln!(
            md,
            "> The data-channel backend (`dc`) is not in the facade yet, so it is absent here and its goals read NOT RUN. \
             Regenerate this report once it lands: the harness picks up every transport `relay::compiled_transports()` returns.\n"
        );
    }

    // Goals.
    let _ = writeln!(md, "## Goals\n");
    let _ = writeln!(md, "| goal | measured | verdict |\n|---|---|---|");
    for g in goals(m) {
        let _ = writeln!(md, "| {} | {} | {} |", g.goal, g.measured, g.verdict);
    }
    md.push('\n');

    // Method.
    let _ = writeln!(md, "## How this was measured\n");
    let _ = writeln!(
        md,
        "- One process, loopback. Each run sets up a fresh path: two UDP sockets (`raw-udp`, the baseline and the harness's own ceiling) \
         or both ends of a relay link from `relay::loopback` (the facade's offer/answer path, in process, no HTTP). \
         Sender and receiver are separate tasks on a 2-worker tokio runtime; the sender follows the workload's absolute schedule."
    );
    let _ = writeln!(
        md,
        "- Impaired scenarios put the relay-netsim proxy (own threads, seeded) between the two ends, impairing both directions alike; \
         raw UDP goes through the same proxy. `clean` has no proxy."
    );
    let _ = writeln!(
        md,
        "- Latency is one-way, from the sender's `send` call to the receiver's `recv` returning, on one clock (send time stamped in the payload). \
         Jitter is RFC 3550 interarrival jitter from the receiving link's `LinkStats` (raw UDP: the same code in the harness), mean over the streams."
    );
    let _ = writeln!(
        md,
        "- Workloads: {video} (30 fps, frames split into packets of at most 1,200 bytes and sent back to back, a keyframe 5x a delta frame every 2 s), \
         {} streams of audio (50 pps each, 172-byte packets: 160 bytes of G.711 plus the RTP header), \
         and max-rate: 1,200-byte packets as fast as the path takes them (unreliable paths: delivered rate at the receiver next to the offered rate).",
        c.audio_streams
    );
    let _ = writeln!(
        md,
        "- Run lengths: video {:.1} s, audio {:.1} s ({} runs each on the clean network, median by p99), max-rate {:.2} s x {} (median by delivered packets/s). \
         Repetitions interleave the paths so drifting machine load hits them alike. \
         Unreliable paths drain until {} ms without arrivals; reliable ones until everything arrived (at most {} s).",
        c.video.as_secs_f64(),
        c.audio.as_secs_f64(),
        c.clean_paced_reps,
        c.flood.as_secs_f64(),
        c.flood_reps,
        c.drain.idle.as_millis(),
        c.drain.reliable_limit.as_secs()
    );
    let _ = writeln!(
        md,
        "- The harness's own ceiling is the clean max-rate `raw-udp` row: one `sendto` per packet on the sending task and one `recvfrom` per packet on the receiving one \
         (no batching, like the rtp-udp backend). The `RelayLink` API moves one packet per `send`/`recv` await, so the harness cannot batch for the links either; \
         quinn batches underneath (GSO/GRO), which is how QUIC can exceed the per-packet raw-UDP rate."
    );
    let _ = writeln!(
        md,
        "- CPU µs/pkt: process user+system time (getrusage) from the first send to the end of the drain, per delivered packet: \
         both relay ends and the harness (and the proxy's threads in impaired scenarios). \
         KiB/link: growth of peak resident memory (VmHWM, reset before each run after returning freed heap to the kernel) over setup and run, halved for the two ends."
    );
    let _ = writeln!(
        md,
        "- Drops column: `netsim` (forward+reverse, the emulated network's loss) / `link` (drops the two link ends counted: full queues, malformed) / \
         `kernel` (UDP receive/send buffer overflows on the whole machine during the run, from /proc/net/snmp): loss the kernel caused is not the transport's.\n"
    );

    // Setup.
    let _ = writeln!(md, "## Setup time\n");
    let _ = writeln!(
        md,
        "`total`: offer made → both ends ready, in process (certificate generation included). \
         `connect → ready`: the offering link's own `LinkStats::setup_time`. Milliseconds.\n"
    );
    let _ = writeln!(
        md,
        "| path | clean total p50 | p90 | max | clean connect → ready p50 | max | 20 ms delay total p50 | connect → ready p50 |\n|---|---|---|---|---|---|---|---|"
    );
    for &subject in &m.subjects {
        let clean = m.setup("clean", subject);
        let delayed = m.setup("delay20", subject);
        let p = |s: Option<&SetupSamples>, link: bool, q: f64| {
            s.and_then(|s| percentile_ms(if link { &s.link } else { &s.total }, q))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            subject.label(),
            opt_ms(p(clean, false, 50.0)),
            opt_ms(p(clean, false, 90.0)),
            opt_ms(p(clean, false, 100.0)),
            opt_ms(p(clean, true, 50.0)),
            opt_ms(p(clean, true, 100.0)),
            opt_ms(p(delayed, false, 50.0)),
            opt_ms(p(delayed, true, 50.0)),
        );
    }
    md.push('\n');

    // Loss and head-of-line blocking.
    let _ = writeln!(md, "## Loss and head-of-line blocking ({video})\n");
    let _ = writeln!(
        md,
        "p99 one-way latency in ms and delivered share per scenario. Unreliable modes lose what the network loses and keep their latency; \
         reliable modes deliver everything and pay for it in the tail: a lost packet holds back every packet behind it until the retransmission arrives.\n"
    );
    let _ = write!(md, "| path |");
    for s in &m.scenarios {
        let _ = write!(md, " {} p99 | {} delivered |", s.name, s.name);
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---|---|".repeat(m.scenarios.len()));
    for &subject in &m.subjects {
        let _ = write!(md, "| {} |", subject.label());
        for s in &m.scenarios {
            match m.cell(s.name, &video, subject) {
                Some(r) => {
                    let _ = write!(
                        md,
                        " {} | {:.2}% |",
                        ms(r.latency.summary().p99),
                        r.delivered_ratio() * 100.0
                    );
                }
                None => md.push_str(" - | - |"),
            }
        }
        md.push('\n');
    }
    md.push('\n');

    // Summary plots.
    plots.push(throughput_plot(m, &flood));
    plots.push(cpu_plot(m, &video, &flood));
    let _ = writeln!(md, "## Throughput and CPU cost (clean)\n");
    let _ = writeln!(
        md,
        "Max-rate: 1,200-byte packets as fast as the sender can hand them over (median of {} runs; unreliable paths drop what they cannot carry). \
         Sustained: {} packets with at most {SUSTAINED_WINDOW} not yet received (the receiver confirms in process, not on the wire): \
         what the path carries without overload loss. On this 2-core machine a sender spinning on a cheap `send` takes CPU from the \
         transport it floods, so for unreliable paths the sustained figure is the fairer capacity; the goals use max-rate, as specified.\n",
        c.flood_reps, c.sustained_packets
    );
    let _ = writeln!(
        md,
        "| path | max-rate offered Mbit/s | max-rate delivered | max-rate Mbit/s | x raw (paired) | sustained Mbit/s | sustained delivered | CPU µs/pkt (max-rate) |\n|---|---|---|---|---|---|---|---|"
    );
    for &subject in &m.subjects {
        let cell = m.cell("clean", &flood, subject);
        let sustained = m.sustained_mbps(subject);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            subject.label(),
            cell.map_or("-".into(), |r| format!("{:.0}", r.offered_bps() / 1e6)),
            cell.map_or("-".into(), |r| format!("{:.2}%", r.delivered_ratio() * 100.0)),
            cell.map_or("-".into(), |r| format!("{:.0}", r.throughput_bps() / 1e6)),
            m.paired_ratio(subject)
                .map_or("-".into(), |(r, _)| format!("{r:.2}x")),
            sustained.map_or("-".into(), |(v, _)| format!("{v:.0}")),
            sustained.map_or("-".into(), |(_, share)| format!("{:.2}%", share * 100.0)),
            cell.map_or("-".into(), |r| format!("{:.2}", r.cpu_us_per_packet())),
        );
    }
    md.push('\n');
    let _ = writeln!(md, "![throughput](results/throughput.svg)\n");
    let _ = writeln!(md, "![CPU per packet](results/cpu-per-packet.svg)\n");
    let _ = writeln!(
        md,
        "CPU per packet on the paced workloads is dominated by waking idle threads for each frame (every packet crosses two or more tasks), \
         not by the per-packet work: compare paths with each other, not with the max-rate figure.\n"
    );

    // Per scenario.
    let _ = writeln!(md, "## Scenarios\n");
    for scenario in &m.scenarios {
        let _ = writeln!(md, "### {}\n", scenario.title);
        let name = format!("latency-{}.svg", scenario.name);
        plots.push((name.clone(), latency_plot(m, scenario, &video)));
        let _ = writeln!(md, "![latency CDF, {video}, {}](results/{name})\n", scenario.name);
        for (workload, _) in c.workloads() {
            let reps = c.reps(scenario.name, &workload);
            let wname = workload.name();
            let raw = m.cell(scenario.name, &wname, Subject::RawUdp);
            let raw_bps = raw.map(|r| r.throughput_bps());
            let _ = writeln!(
                md,
                "#### {wname}{}\n",
                if reps > 1 {
                    format!(
                        " (median of {reps} runs by {})",
                        if workload.is_flood() {
                            "delivered packets/s"
                        } else {
                            "p99"
                        }
                    )
                } else {
                    String::new()
                }
            );
            if workload.is_flood() {
                let raw_pps = raw.map(|r| r.delivered_pps());
                let _ = writeln!(
                    md,
                    "| path | offered Mbit/s | delivered | Mbit/s | x raw | kpps | x raw | runs' Mbit/s | p50 ms | p99 ms | max ms | CPU µs/pkt | KiB/link | drops netsim / link / kernel |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                );
                for &subject in &m.subjects {
                    let Some(r) = m.cell(scenario.name, &wname, subject) else {
                        let _ = writeln!(md, "| {} | not run |", subject.label());
                        continue;
                    };
                    let mut all: Vec<f64> = m
                        .reps(scenario.name, &wname, subject)
                        .iter()
                        .map(|r| r.throughput_bps() / 1e6)
                        .collect();
                    all.sort_by(f64::total_cmp);
                    let l = r.latency.summary();
                    let _ = writeln!(
                        md,
                        "| {} | {:.0} | {:.2}% | {:.0} | {} | {:.1} | {} | {} | {} | {} | {} | {:.2} | {} | {} |{}",
                        subject.label(),
                        r.offered_bps() / 1e6,
                        r.delivered_ratio() * 100.0,
                        r.throughput_bps() / 1e6,
                        ratio(r.throughput_bps(), raw_bps),
                        r.delivered_pps() / 1e3,
                        ratio(r.delivered_pps(), raw_pps),
                        all.iter()
                            .map(|v| format!("{v:.0}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        ms(l.p50),
                        ms(l.p99),
                        ms(l.max),
                        r.cpu_us_per_packet(),
                        r.memory_per_link / 1024,
                        drops(r),
                        r.problem.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
                    );
                }
            } else {
                let _ = writeln!(
                    md,
                    "| path | delivered | p50 ms | p90 | p99 | p99.9 | max | keyframe p99 | jitter ms | Mbit/s | x raw | CPU µs/pkt | KiB/link | drops netsim / link / kernel |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                );
                for &subject in &m.subjects {
                    let Some(r) = m.cell(scenario.name, &wname, subject) else {
                        let _ = writeln!(md, "| {} | not run |", subject.label());
                        continue;
                    };
                    let l = r.latency.summary();
                    let _ = writeln!(
                        md,
                        "| {} | {:.2}% | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} | {} |{}",
                        subject.label(),
                        r.delivered_ratio() * 100.0,
                        ms(l.p50),
                        ms(l.p90),
                        ms(l.p99),
                        ms(l.p999),
                        ms(l.max),
                        if r.keyframe_latency.count() > 0 {
                            ms(r.keyframe_latency.summary().p99)
                        } else {
                            "-".into()
                        },
                        r.jitter_ms.map_or("-".into(), |j| format!("{j:.3}")),
                        r.throughput_bps() / 1e6,
                        ratio(r.throughput_bps(), raw_bps),
                        r.cpu_us_per_packet(),
                        r.memory_per_link / 1024,
                        drops(r),
                        r.problem.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
                    );
                }
            }
            md.push('\n');
        }
    }

    if !m.failures.is_empty() {
        let _ = writeln!(md, "## Runs that failed\n");
        for f in &m.failures {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    Rendered { markdown: md, plots }
}

fn latency_plot(m: &Matrix, scenario: &Scenario, video: &str) -> String {
    let series: Vec<Series> = m
        .subjects
        .iter()
        .map(|&s| Series {
            name: s.label(),
            points: m
                .cell(scenario.name, video, s)
                .map(|r| r.latency.cdf(300))
                .unwrap_or_default(),
        })
        .collect();
    cdf_plot(
        &format!("{video}, {}: one-way latency CDF", scenario.name),
        "one-way latency, ms (log scale)",
        &series,
    )
}

fn throughput_plot(m: &Matrix, flood: &str) -> (String, String) {
    let cats: Vec<String> = m.subjects.iter().map(|s| s.label()).collect();
    let cell = |s| m.cell("clean", flood, s);
    let offered: Vec<f64> = m
        .subjects
        .iter()
        .map(|&s| cell(s).map_or(0.0, |r| r.offered_bps() / 1e6))
        .collect();
    let delivered: Vec<f64> = m
        .subjects
        .iter()
        .map(|&s| cell(s).map_or(0.0, |r| r.throughput_bps() / 1e6))
        .collect();
    let sustained: Vec<f64> = m
        .subjects
        .iter()
        .map(|&s| m.sustained_mbps(s).map_or(0.0, |(v, _)| v))
        .collect();
    (
        "throughput.svg".into(),
        bar_chart(
            "clean, 1,200-byte packets",
            "Mbit/s",
            &cats,
            &[
                "max-rate offered".into(),
                "max-rate delivered".into(),
                "sustained (window 512)".into(),
            ],
            &[offered, delivered, sustained],
        ),
    )
}

fn cpu_plot(m: &Matrix, video: &str, flood: &str) -> (String, String) {
    let cats: Vec<String> = m.subjects.iter().map(|s| s.label()).collect();
    let per = |w: &str| -> Vec<f64> {
        m.subjects
            .iter()
            .map(|&s| m.cell("clean", w, s).map_or(0.0, |r| r.cpu_us_per_packet()))
            .collect()
    };
    (
        "cpu-per-packet.svg".into(),
        bar_chart(
            "clean: CPU per delivered packet (both ends + harness)",
            "µs per packet",
            &cats,
            &[video.to_string(), flood.to_string()],
            &[per(video), per(flood)],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 50.0), Some(5.0));
        assert_eq!(percentile_ms(&d, 90.0), Some(9.0));
        assert_eq!(percentile_ms(&d, 100.0), Some(10.0));
        assert_eq!(percentile_ms(&d, 0.0), Some(1.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn versions_come_from_the_lock_file() {
        let lock = "[[package]]\nname = \"quinn\"\nversion = \"0.11.9\"\nsource = \"x\"\n\n[[package]]\nname = \"tokio\"\nversion = \"1.47.0\"\n\n[[package]]\nname = \"other\"\nversion = \"1\"\n";
        assert_eq!(
            locked_versions(lock, &["tokio", "quinn"]),
            vec![
                ("quinn".to_string(), "0.11.9".to_string()),
                ("tokio".to_string(), "1.47.0".to_string())
            ]
        );
    }
}
