//! Relay trees as operators build them from the command line: real
//! `relay` processes on loopback, a chain of hops and a fan-out, with
//! one-way latency measured behind every relay and the CPU time of every
//! relay process (the report's "Relay trees" section).
//!
//! - **Chain**: the harness sends paced RTP into `relay offer`, which
//!   links to node 1; node *k* is `relay answer --out TAP_k --forward
//!   NODE_k+1` and the last node only `--out`s. Every node delivers to
//!   its own harness socket, so one run gives the latency after 1, 2, …
//!   hops, and what each hop adds to the p99.
//! - **Fan-out**: one `relay offer` with one `--signal`, then with N, to
//!   N `relay answer` processes, each `--out` to its own harness socket:
//!   what each extra receiver costs the offering process, and the p99 of
//!   the slowest receiver.
//!
//! Every relay runs in its own process, as deployed, so its CPU time is
//! its own (`/proc/PID/task/*/schedstat`, from the first packet sent to
//! the end of the drain; setup excluded). The harness's sender and
//! receivers are plain threads on one clock: the send time is stamped in
//! each payload ([`crate::workload::stamp`]) and the relays pass the
//! payload through untouched.
//!
//! The pieces: `binary` finds (or builds) the `relay` binary,
//! `process` starts relays and waits for their status lines, `tap` is
//! the harness's sender and receiving sockets, `render` the markdown and
//! JSON; this module holds the figures and runs the trees.
//!
//! ```no_run
//! use relay_bench::tree::{TreeConfig, measure_all};
//!
//! let rows = measure_all(&TreeConfig::default(), |line| eprintln!("{line}"));
//! println!("{}", relay_bench::tree::section(&rows));
//! ```

mod binary;
mod process;
mod render;
mod tap;

use std::path::Path as FsPath;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use relay_core::udp::KernelUdpCounters;
use relay_core::{Mode, Transport};

use crate::latency::Latency;
use crate::workload::Workload;

pub use binary::{built_relay_binary, has_forward, relay_binary};
pub use render::{section, to_json};

use process::{Relays, start_chain, start_fan_out};
use tap::{Tap, send, sender, warm_up};

/// How a tree run is made.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// What the harness sends into the first relay.
    pub workload: Workload,
    /// How long it sends.
    pub duration: Duration,
    /// Relays after `relay offer` in the chain (3: offer → node 1 → node 2 → node 3).
    pub hops: usize,
    /// Answering relays of the wide fan-out (it is compared with one).
    pub receivers: usize,
    /// Transport and mode of every link, one tree of each.
    pub links: Vec<(Transport, Mode)>,
    /// Stop draining once no tap received anything for this long.
    pub drain_idle: Duration,
    /// Longest wait for a relay's status line (process start to link up).
    pub setup_timeout: Duration,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            workload: Workload::Video {
                bitrate: crate::report::VIDEO_BITRATE,
            },
            duration: Duration::from_secs(10),
            hops: 3,
            receivers: 8,
            links: default_links(&relay::compiled_transports()),
            // As the report's drain: far above loopback queueing.
            drain_idle: Duration::from_millis(300),
            // dc setup alone is about 0.6 s here; a loaded machine, more.
            setup_timeout: Duration::from_secs(20),
        }
    }
}

/// Each of `transports` in its unreliable mode: what a media relay uses
/// for live RTP, and what makes hops comparable (no retransmission
/// holding packets back).
pub fn default_links(transports: &[Transport]) -> Vec<(Transport, Mode)> {
    transports
        .iter()
        .map(|&t| {
            let mode = match t {
                Transport::Quic => Mode::Datagram,
                _ => Mode::Unreliable,
            };
            (t, mode)
        })
        .collect()
}

/// The shape of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `relay offer` → `hops` answering relays, each forwarding to the next.
    Chain {
        /// Answering relays in the chain.
        hops: usize,
    },
    /// One `relay offer` to `receivers` answering relays.
    FanOut {
        /// Answering relays.
        receivers: usize,
    },
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Chain { hops } => write!(f, "{hops}-hop chain"),
            Topology::FanOut { receivers } => write!(f, "1 → {receivers} fan-out"),
        }
    }
}

/// What arrived at one harness socket behind a relay's `--out`.
#[derive(Debug, Clone)]
pub struct TapResult {
    /// `hop 2`, `receiver 5`.
    pub name: String,
    /// Distinct packets that arrived.
    pub delivered: u64,
    /// Packets that arrived more than once.
    pub duplicates: u64,
    /// One-way latency, harness send to harness receive.
    pub latency: Latency,
}

/// CPU time one relay process used during the measured window.
#[derive(Debug, Clone)]
pub struct RelayCpu {
    /// `relay offer`, `node 1`, `receiver 3`.
    pub role: String,
    /// User plus system time its threads ran.
    pub cpu: Duration,
}

/// One measured tree.
#[derive(Debug, Clone)]
pub struct TreeRun {
    /// Its shape.
    pub topology: Topology,
    /// Transport of every link.
    pub transport: Transport,
    /// Mode of every link.
    pub mode: Mode,
    /// Workload name.
    pub workload: String,
    /// Packets the harness sent into `relay offer`.
    pub offered: u64,
    /// First packet sent to the end of the drain: what CPU time is divided by.
    pub window: Duration,
    /// Hop 1, 2, … (chain) or receiver 1, 2, … (fan-out).
    pub taps: Vec<TapResult>,
    /// Chain: what each hop added to each packet that got through it
    /// (hop 1: harness send → node 1's `--out`; hop k: arrival behind node
    /// k less arrival behind node k − 1). Empty for a fan-out.
    pub hop_latency: Vec<Latency>,
    /// `relay offer` first, then the answering relays in tap order.
    pub relays: Vec<RelayCpu>,
    /// UDP datagrams the kernel dropped for full buffers during the window
    /// (the whole machine).
    pub kernel_drops: u64,
    /// A relay that exited or a link that failed during the run.
    pub problem: Option<String>,
}

impl TreeRun {
    /// `relay`'s CPU microseconds per packet sent into the tree.
    pub fn cpu_us_per_packet(&self, relay: &RelayCpu) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        relay.cpu.as_secs_f64() * 1e6 / self.offered as f64
    }

    /// `relay`'s CPU time as a percentage of one core over the window.
    pub fn core_percent(&self, relay: &RelayCpu) -> f64 {
        if self.window.is_zero() {
            return 0.0;
        }
        relay.cpu.as_secs_f64() / self.window.as_secs_f64() * 100.0
    }

    /// Share of the offered packets `tap` got.
    pub fn delivered_ratio(&self, tap: &TapResult) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            tap.delivered as f64 / self.offered as f64
        }
    }

    /// The tap with the highest p99 (a fan-out's slowest receiver).
    pub fn slowest(&self) -> Option<&TapResult> {
        self.taps
            .iter()
            .max_by(|a, b| a.latency.summary().p99.total_cmp(&b.latency.summary().p99))
    }

    /// The lowest delivered share over the taps.
    pub fn worst_delivered(&self) -> f64 {
        self.taps
            .iter()
            .map(|t| self.delivered_ratio(t))
            .fold(f64::INFINITY, f64::min)
            .min(1.0)
    }

    /// The offering relay (`relay offer`).
    pub fn entry(&self) -> Option<&RelayCpu> {
        self.relays.first()
    }
}

/// What each hop adds to the p99: hop 1's p99 itself (harness → `relay
/// offer` → node 1 → harness), then each hop's p99 less the one before
/// it. Percentiles do not add exactly (the slowest 1% after two hops need
/// not be the slowest after one), so this is how much worse the tail got
/// at each hop, not any one packet's delay.
///
/// ```
/// let added = relay_bench::tree::added_per_hop(&[0.5, 0.9, 1.2]);
/// assert!((added[0] - 0.5).abs() < 1e-9 && (added[1] - 0.4).abs() < 1e-9 && (added[2] - 0.3).abs() < 1e-9);
/// ```
pub fn added_per_hop(p99s: &[f64]) -> Vec<f64> {
    let mut before = 0.0;
    p99s.iter()
        .map(|&p| {
            let added = p - before;
            before = p;
            added
        })
        .collect()
}

/// What one hop added to each packet that arrived behind both of its
/// ends: `this[i] − before[i]` for every run-wide index `i` with both
/// arrival times (ns, 0: never arrived). The hop's own latency
/// distribution, per packet, where [`added_per_hop`] only compares tails.
///
/// ```
/// let hop = relay_bench::tree::hop_delays(&[1_000, 0, 5_000], &[3_000, 4_000, 6_000]);
/// assert_eq!(hop.count(), 2);
/// assert!((hop.summary().max - 0.002).abs() < 1e-5);
/// ```
pub fn hop_delays(before: &[u64], this: &[u64]) -> Latency {
    let mut hop = Latency::new();
    for (&b, &t) in before.iter().zip(this) {
        if b != 0 && t != 0 {
            hop.record_ns(t.saturating_sub(b));
        }
    }
    hop
}

/// What one more receiver costs: `(many − one) / (receivers − 1)`, with
/// `one` measured with a single receiver and `many` with `receivers`.
/// `None` for fewer than two receivers.
///
/// ```
/// assert_eq!(relay_bench::tree::per_extra_receiver(10.0, 45.0, 8), Some(5.0));
/// assert_eq!(relay_bench::tree::per_extra_receiver(10.0, 45.0, 1), None);
/// ```
pub fn per_extra_receiver(one: f64, many: f64, receivers: usize) -> Option<f64> {
    (receivers > 1).then(|| (many - one) / (receivers - 1) as f64)
}

/// Longest drain after the sender stops, whatever arrives.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs one tree of `topology` over `link`: starts the relays, sends,
/// drains, stops them. Every wait is bounded; the relays are stopped on
/// every path out (the `Relays` guard).
pub fn measure(
    binary: &FsPath,
    link: (Transport, Mode),
    topology: Topology,
    config: &TreeConfig,
) -> Result<TreeRun, String> {
    let epoch = Instant::now();
    let names: Vec<String> = match topology {
        Topology::Chain { hops } => (1..=hops).map(|k| format!("hop {k}")).collect(),
        Topology::FanOut { receivers } => (1..=receivers).map(|k| format!("receiver {k}")).collect(),
    };
    if names.is_empty() {
        return Err(format!("a {topology} has no relay to measure"));
    }
    let taps: Vec<Tap> = names
        .into_iter()
        .map(|n| Tap::start(n, epoch))
        .collect::<Result<_, _>>()?;
    let mut relays = Relays::default();
    let deadline = Instant::now() + config.setup_timeout;
    let started = match topology {
        Topology::Chain { .. } => start_chain(&mut relays, binary, link, &taps, deadline),
        Topology::FanOut { .. } => start_fan_out(&mut relays, binary, link, &taps, deadline),
    };
    let input = started?;
    let socket = sender()?;
    warm_up(&socket, input, &taps, epoch, deadline)?;

    let cpu_before = relays.cpu();
    let kernel_before = KernelUdpCounters::read();
    let t0 = Instant::now();
    let sent = send(&socket, input, &config.workload, config.duration, epoch);
    let done = Instant::now();
    let offered = *sent.as_ref().unwrap_or(&0);
    // Drain: every tap has everything, or none got anything for a while.
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if taps
            .iter()
            .all(|t| t.delivered.load(Ordering::Relaxed) >= offered)
        {
            break;
        }
        let last = taps
            .iter()
            .map(|t| epoch + Duration::from_nanos(t.last_ns.load(Ordering::Relaxed)))
            .max()
            .unwrap_or(done)
            .max(done);
        if last.elapsed() > config.drain_idle || done.elapsed() > DRAIN_LIMIT {
            break;
        }
    }
    let window = t0.elapsed();
    let cpu_after = relays.cpu();
    let kernel = KernelUdpCounters::read().since(&kernel_before);
    let mut problems = relays.problems();
    let cpu: Vec<RelayCpu> = relays
        .0
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(r, (before, after))| {
            if before.is_none() || after.is_none() {
                problems.push(format!(
                    "no CPU time for {} (no /proc/PID/task/*/schedstat)",
                    r.role
                ));
            }
            RelayCpu {
                role: r.role.clone(),
                cpu: after
                    .unwrap_or_default()
                    .saturating_sub(before.unwrap_or_default()),
            }
        })
        .collect();
    relays.stop();
    let (taps, arrivals): (Vec<TapResult>, Vec<Vec<u64>>) = taps.into_iter().map(Tap::finish).unzip();
    let offered = sent?;
    let hop_latency = match topology {
        Topology::Chain { .. } => taps
            .first()
            .map(|t| t.latency.clone())
            .into_iter()
            .chain(arrivals.windows(2).map(|w| hop_delays(&w[0], &w[1])))
            .collect(),
        Topology::FanOut { .. } => Vec::new(),
    };
    Ok(TreeRun {
        topology,
        transport: link.0,
        mode: link.1,
        workload: config.workload.name(),
        offered,
        window,
        taps,
        hop_latency,
        relays: cpu,
        kernel_drops: kernel.rcvbuf_errors + kernel.sndbuf_errors,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

/// Every run of [`measure_all`], and what could not run.
#[derive(Debug, Clone, Default)]
pub struct TreeRows {
    /// Workload name.
    pub workload: String,
    /// Seconds each run sent for.
    pub duration: Duration,
    /// One chain per link.
    pub chains: Vec<TreeRun>,
    /// Per link, one fan-out to one receiver and one to many.
    pub fan_outs: Vec<TreeRun>,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
    /// What could not run on this build at all, with why.
    pub skipped: Vec<String>,
}

impl TreeRows {
    /// The fan-out of `transport` to `receivers`, if it ran.
    pub fn fan_out(&self, transport: Transport, receivers: usize) -> Option<&TreeRun> {
        self.fan_outs
            .iter()
            .find(|r| r.transport == transport && r.topology == Topology::FanOut { receivers })
    }

    /// CPU of `relay offer` per extra receiver, in µs per packet sent into
    /// it and in % of a core: the widest fan-out against one receiver.
    pub fn per_extra_receiver(&self, transport: Transport) -> Option<(usize, f64, f64)> {
        let one = self.fan_out(transport, 1)?;
        let many = self
            .fan_outs
            .iter()
            .filter(|r| r.transport == transport)
            .max_by_key(|r| r.taps.len())?;
        let n = many.taps.len();
        let us = per_extra_receiver(
            one.cpu_us_per_packet(one.entry()?),
            many.cpu_us_per_packet(many.entry()?),
            n,
        )?;
        let pct = per_extra_receiver(
            one.core_percent(one.entry()?),
            many.core_percent(many.entry()?),
            n,
        )?;
        Some((n, us, pct))
    }
}

/// Runs a chain and the two fan-outs over every link of `config`,
/// reporting progress lines to `progress`. Blocking (threads and child
/// processes): from async code, call it in `spawn_blocking`.
pub fn measure_all(config: &TreeConfig, mut progress: impl FnMut(&str)) -> TreeRows {
    let mut rows = TreeRows {
        workload: config.workload.name(),
        duration: config.duration,
        ..TreeRows::default()
    };
    let binary = match relay_binary() {
        Ok(b) => b,
        Err(e) => {
            progress(&format!("tree: {e}"));
            rows.skipped.push(format!("every tree: {e}"));
            return rows;
        }
    };
    progress(&format!("tree: relay binary {}", binary.display()));
    let chains = has_forward(&binary);
    if !chains {
        let why = format!(
            "the chain rows: {} has no `relay answer --forward` (chains), so a {}-hop chain cannot be built from the command line",
            binary.display(),
            config.hops
        );
        progress(&format!("tree: {why}"));
        rows.skipped.push(why);
    }
    for &link in &config.links {
        let mut shapes = Vec::new();
        if chains {
            shapes.push(Topology::Chain { hops: config.hops });
        }
        shapes.push(Topology::FanOut { receivers: 1 });
        if config.receivers > 1 {
            shapes.push(Topology::FanOut {
                receivers: config.receivers,
            });
        }
        for topology in shapes {
            let label = format!("{} {}", link.0, link.1);
            let t0 = Instant::now();
            match measure(&binary, link, topology, config) {
                Ok(run) => {
                    progress(&format!(
                        "tree: {topology:<16} {label:<20} | worst delivered {:.2}%, slowest p99 {:.3} ms, relay offer {:.1} µs/pkt{} ({:.1} s)",
                        run.worst_delivered() * 100.0,
                        run.slowest().map_or(0.0, |t| t.latency.summary().p99),
                        run.entry().map_or(0.0, |e| run.cpu_us_per_packet(e)),
                        run.problem
                            .as_ref()
                            .map(|p| format!(" [{p}]"))
                            .unwrap_or_default(),
                        t0.elapsed().as_secs_f64()
                    ));
                    match topology {
                        Topology::Chain { .. } => rows.chains.push(run),
                        Topology::FanOut { .. } => rows.fan_outs.push(run),
                    }
                }
                Err(e) => {
                    progress(&format!("tree: {topology} {label}: FAILED: {e}"));
                    rows.failures.push(format!("{topology} {label}: {e}"));
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests;
