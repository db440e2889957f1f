//! One measured run: a workload over a fresh [`Path`], with everything the
//! report shows about it.
//!
//! The sender and the receiver are separate tasks on the caller's
//! multi-thread runtime; the netsim proxy, when there is one, runs on its
//! own threads. The sender follows the workload's absolute schedule (it
//! sleeps until each packet's due time, never for an interval, so lateness
//! does not accumulate) and stamps the real send time into each packet; the
//! receiver takes the arrival time as it gets the packet from the link, on
//! the same clock, so one-way latency needs no clock sync and includes
//! everything from the sender's `send` call to the receiver's `recv`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay_core::udp::KernelUdpCounters;
use relay_core::{Drops, SsrcReceived, SsrcReceiver};
use relay_netsim::DirectionStats;
use tokio::sync::oneshot;

use crate::latency::Latency;
use crate::outage::{Arrival, Recovery, recovery};
use crate::path::Path;
use crate::scenario::{Scenario, Subject};
use crate::sys;
use crate::workload::{Workload, clock_rates, read_stamp, stamp};

/// How long a run may take to drain after the sender stops.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Unreliable paths: stop once nothing arrived for this long.
    pub idle: Duration,
    /// Reliable paths: stop after this long even if packets are missing
    /// (they should never be; the report flags it).
    pub reliable_limit: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            // Far above the scenarios' 25 ms worst-case delay plus queueing.
            idle: Duration::from_millis(300),
            reliable_limit: Duration::from_secs(15),
        }
    }
}

/// Everything measured in one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What carried the packets.
    pub subject: Subject,
    /// Scenario name.
    pub scenario: &'static str,
    /// Workload name.
    pub workload: String,
    /// Seed of the run's netsim proxy (unused on a path without one).
    pub seed: u64,
    /// Whether the workload was a flood.
    pub flood: bool,
    /// Path setup (see [`Path::setup`]).
    pub setup: Duration,
    /// The offering link's own setup time.
    pub link_setup: Option<Duration>,
    /// Packets the sender tried to send.
    pub offered: u64,
    /// Their bytes.
    pub offered_bytes: u64,
    /// Packets the link or socket took (the rest was refused at once);
    /// for a pion row, less what the kernel dropped at the pion relay's
    /// input socket.
    pub accepted: u64,
    /// Distinct packets that arrived.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Packets that arrived more than once.
    pub duplicates: u64,
    /// Packets delivered after one sent behind them on the same SSRC (by
    /// RTP sequence number): what the receiving media server's jitter
    /// buffer has to put back in order.
    pub reordered: u64,
    /// First send to last send.
    pub send_time: Duration,
    /// First send to last arrival.
    pub span: Duration,
    /// One-way latency of every arrival.
    pub latency: Latency,
    /// The same for keyframe packets only (video): the bursts that a
    /// congestion controller or pacer holds back first.
    pub keyframe_latency: Latency,
    /// How late the sender was against the schedule (paced workloads): a
    /// reliable link that blocks the sender shows here.
    pub sender_lag: Latency,
    /// RFC 3550 interarrival jitter, ms, mean over the streams (links: the
    /// receiving link's `LinkStats`; raw UDP: the same computation in the
    /// harness). `None` for floods on raw UDP.
    pub jitter_ms: Option<f64>,
    /// Process CPU time (user + system) from the first send to the end of
    /// the drain: both ends, the harness, and the proxy when there is one;
    /// for a pion row, plus the two pion processes' own.
    pub cpu: Duration,
    /// Peak resident memory growth over setup and run, divided by the two
    /// ends; for a pion row, plus both pion processes' whole peak (Go
    /// runtime included).
    pub memory_per_link: u64,
    /// Kernel UDP counters over the run (the whole machine).
    pub kernel: KernelUdpCounters,
    /// Proxy counters, sender → receiver and back.
    pub netsim: Option<(DirectionStats, DirectionStats)>,
    /// Drops the two link ends counted, summed.
    pub link_drops: Option<Drops>,
    /// Bytes both link ends handed to their transport (media, the hop's
    /// own RTCP, repairs): what the relay put on the wire besides the
    /// transport's framing. `None` for raw UDP.
    pub link_bytes_sent: Option<u64>,
    /// What the repair loop did, both ends summed (repairing links only).
    pub repair: Option<relay_core::RepairStats>,
    /// Set when a link closed during the run, or packets a reliable path
    /// owed never came.
    pub problem: Option<String>,
    /// How the path came back from the scenario's outage, if it has one.
    pub outage: Option<Recovery>,
}

impl RunResult {
    /// Delivered / offered.
    pub fn delivered_ratio(&self) -> f64 {
        ratio(self.delivered, self.offered)
    }

    /// Delivered bits per second, first send to last arrival.
    pub fn throughput_bps(&self) -> f64 {
        per_second(self.delivered_bytes * 8, self.span)
    }

    /// Delivered packets per second, first send to last arrival.
    pub fn delivered_pps(&self) -> f64 {
        per_second(self.delivered, self.span)
    }

    /// Offered bits per second while the sender ran.
    pub fn offered_bps(&self) -> f64 {
        per_second(self.offered_bytes * 8, self.send_time)
    }

    /// CPU microseconds per delivered packet.
    pub fn cpu_us_per_packet(&self) -> f64 {
        if self.delivered == 0 {
            return 0.0;
        }
        self.cpu.as_secs_f64() * 1e6 / self.delivered as f64
    }

    /// Packets the kernel dropped for full socket buffers during the run.
    pub fn kernel_drops(&self) -> u64 {
        self.kernel.rcvbuf_errors + self.kernel.sndbuf_errors
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn per_second(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// What the receiver task hands back.
struct Received {
    delivered: u64,
    delivered_bytes: u64,
    duplicates: u64,
    reordered: u64,
    latency: Latency,
    keyframe_latency: Latency,
    last: Option<Instant>,
    jitter_ms: Option<f64>,
    /// Every arrival, kept only when the scenario has an outage.
    arrivals: Vec<Arrival>,
}

/// Mean jitter in ms over the streams whose clock rate is known; `None`
/// if there is none.
fn mean_jitter_ms(streams: &[SsrcReceived]) -> Option<f64> {
    let known: Vec<f64> = streams.iter().filter_map(|r| r.jitter_seconds).collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() * 1e3 / known.len() as f64)
}

/// Distinct-packet accounting by run-wide index.
struct Seen(Vec<u64>);

impl Seen {
    fn with_capacity(packets: usize) -> Seen {
        Seen(Vec::with_capacity(packets / 64 + 1))
    }

    /// Marks `i`; returns whether it was new.
    fn insert(&mut self, i: u32) -> bool {
        let (word, bit) = (i as usize / 64, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let new = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        new
    }
}

/// Opens a fresh path for `subject` under `scenario`, runs `workload` for
/// `duration` over it, drains, and closes it.
pub async fn measure(
    subject: Subject,
    scenario: &Scenario,
    workload: &Workload,
    duration: Duration,
    drain: Drain,
    seed: u64,
) -> Result<RunResult, String> {
    // Allocated before the memory baseline: the harness's own buffers are
    // not the link's.
    let latency = Latency::new();
    let seen = Seen::with_capacity(4 << 20);
    sys::reset_peak();
    let baseline = sys::memory().rss;
    let path = Path::open(subject, scenario, seed).await?;
    let mut result = run(
        &path, scenario, workload, duration, drain, latency, seen, baseline,
    )
    .await;
    result.seed = seed;
    path.close().await;
    Ok(result)
}

/// Packets the sender hands a path in one [`send_batch`](crate::path::End::send_batch)
/// at most: what the ceiling's GSO sender puts in one send
/// ([`GSO_SEGMENTS`](crate::ceiling::GSO_SEGMENTS)), so a batched
/// transport is measured with the batches its ceiling row uses.
const SEND_BATCH: usize = crate::ceiling::GSO_SEGMENTS;

#[allow(clippy::too_many_arguments)]
async fn run(
    path: &Path,
    scenario: &Scenario,
    workload: &Workload,
    duration: Duration,
    drain: Drain,
    latency: Latency,
    seen: Seen,
    baseline: u64,
) -> RunResult {
    let subject = path.subject;
    let reliable = subject.is_reliable();
    let flood = workload.is_flood();
    let epoch = Instant::now();
    let kernel_before = KernelUdpCounters::read();
    let cpu_before = sys::cpu_time();
    let helpers = path.helper_pids();
    let helpers_cpu = || -> Duration { helpers.iter().filter_map(|&p| sys::process_cpu_time(p)).sum() };
    let helpers_cpu_before = helpers_cpu();
    let ingress_before = path.ingress_drops();

    // Receiver: counts distinct arrivals and records latency; stops when told.
    let delivered_now = Arc::new(AtomicU64::new(0));
    let last_arrival_ns = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let receiver = {
        let end = path.receiver.clone();
        let (delivered_now, last_arrival_ns) = (delivered_now.clone(), last_arrival_ns.clone());
        // Raw UDP (and the pion relay behind UDP ports) has no LinkStats:
        // do the RFC 3550 arithmetic here, for paced workloads (on a flood
        // it means nothing and costs the baseline time the links spend
        // elsewhere).
        let raw_jitter = end.stats().is_none() && !flood;
        let keep_arrivals = scenario.outage.is_some();
        let clock_rates = clock_rates();
        tokio::spawn(async move {
            let mut latency = latency;
            let mut keyframe_latency = Latency::new();
            let mut seen = seen;
            let mut buf = vec![0u8; 65_536];
            let (mut delivered, mut bytes, mut duplicates, mut reordered) = (0u64, 0u64, 0u64, 0u64);
            // Highest RTP sequence number delivered per SSRC.
            let mut highest: std::collections::HashMap<u32, u16> = Default::default();
            let mut last = None;
            let mut arrivals = Vec::new();
            let mut jitter: std::collections::HashMap<u32, SsrcReceiver> = Default::default();
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => break,
                    open = end.recv(&mut buf, |b, at| {
                        let Some(stamp) = read_stamp(b) else { return };
                        if !seen.insert(stamp.index) {
                            duplicates += 1;
                            return;
                        }
                        let at_ns = at.duration_since(epoch).as_nanos() as u64;
                        let ns = at_ns.saturating_sub(stamp.sent_ns);
                        latency.record_ns(ns);
                        if keep_arrivals {
                            arrivals.push(Arrival { at_ns, latency_ns: ns });
                        }
                        if stamp.keyframe {
                            keyframe_latency.record_ns(ns);
                        }
                        delivered += 1;
                        bytes += b.len() as u64;
                        // read_stamp checked the fixed RTP header's length.
                        let seq = u16::from_be_bytes([b[2], b[3]]);
                        let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                        let high = highest.entry(ssrc).or_insert(seq);
                        if (seq.wrapping_sub(*high) as i16) < 0 {
                            reordered += 1;
                        } else {
                            *high = seq;
                        }
                        last = Some(at);
                        if raw_jitter {
                            // The fixed RTP header (RFC 3550 section 5.1).
                            let ts = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                            jitter
                                .entry(ssrc)
                                .or_insert_with(|| SsrcReceiver::new(seq, clock_rates.get(b[1] & 0x7f), epoch))
                                .on_packet(seq, ts, b.len(), at);
                        }
                    }) => {
                        delivered_now.store(delivered, Ordering::Relaxed);
                        if let Some(l) = last {
                            last_arrival_ns.store(l.duration_since(epoch).as_nanos() as u64, Ordering::Relaxed);
                        }
                        if !open { break; }
                    }
                }
            }
            let snapshots: Vec<SsrcReceived> = jitter.iter().map(|(s, r)| r.snapshot(*s)).collect();
            let jitter_ms = mean_jitter_ms(&snapshots);
            Received {
                delivered,
                delivered_bytes: bytes,
                duplicates,
                reordered,
                latency,
                keyframe_latency,
                last,
                jitter_ms,
                arrivals,
            }
        })
    };

    // Sender: the schedule, on its own task.
    let closed = Arc::new(AtomicBool::new(false));
    let sender = {
        let end = path.sender.clone();
        let schedule = workload.schedule(duration);
        let closed = closed.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut lag = Latency::new();
            let (mut offered, mut offered_bytes, mut accepted) = (0u64, 0u64, 0u64);
            let mut first = None;
            let mut schedule = schedule.enumerate().peekable();
            let mut batch = Vec::with_capacity(SEND_BATCH);
            while schedule.peek().is_some() {
                // A flood hands over SEND_BATCH packets at a time; a paced
                // workload one packet at a time, each stamped just before
                // it is sent, so its latency figures mean what they
                // always meant (nothing waits for a batch to fill).
                if flood {
                    if start.elapsed() >= duration {
                        break;
                    }
                    // Let the receiving tasks run on a busy runtime.
                    tokio::task::yield_now().await;
                } else if let Some((_, next)) = schedule.peek() {
                    let due = start + next.due;
                    if due > tokio::time::Instant::now() {
                        tokio::time::sleep_until(due).await;
                    }
                }
                let now = tokio::time::Instant::now();
                let limit = if flood { SEND_BATCH } else { 1 };
                while batch.len() < limit {
                    let Some((i, planned)) = schedule.next_if(|(_, p)| flood || start + p.due <= now) else {
                        break;
                    };
                    if !flood {
                        let due = start + planned.due;
                        lag.record_ns(now.saturating_duration_since(due).as_nanos() as u64);
                    }
                    let stamped = Instant::now();
                    first.get_or_insert(stamped);
                    batch.push(stamp(
                        &planned,
                        i as u32,
                        stamped.duration_since(epoch).as_nanos() as u64,
                    ));
                    offered += 1;
                    offered_bytes += planned.size as u64;
                }
                let sent = end.send_batch(&mut batch).await;
                accepted += sent.accepted;
                if sent.closed {
                    closed.store(true, Ordering::Relaxed);
                    break;
                }
            }
            (offered, offered_bytes, accepted, first, Instant::now(), lag)
        })
    };
    // The outage, on this task beside the sender: black hole at the middle
    // of the schedule, the scenario's own impairment again after it.
    let outage = async {
        let (outage, base) = (scenario.outage?, scenario.impairment.clone()?);
        tokio::time::sleep_until(tokio::time::Instant::from_std(epoch) + outage.starts_at(duration)).await;
        let down = Instant::now();
        if let Err(e) = path.set_impairment(base.clone().loss(1.0)) {
            tracing::warn!(error = %e, "cannot start the outage");
            return None;
        }
        tokio::time::sleep(outage.length).await;
        let up = Instant::now();
        if let Err(e) = path.set_impairment(base) {
            tracing::warn!(error = %e, "cannot end the outage");
        }
        let ns = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
        Some((ns(down), ns(up)))
    };
    let (sent, outage_window) = tokio::join!(sender, outage);
    let (offered, offered_bytes, accepted, first_send, last_send, sender_lag) = match sent {
        Ok(r) => r,
        Err(e) => (0, 0, 0, None, Instant::now(), {
            tracing::warn!(error = %e, "sender task failed");
            Latency::new()
        }),
    };

    // Drain: everything accepted arrived, or the path went quiet (unreliable),
    // or the reliable limit passed. What the kernel dropped on the way into
    // the relay (the pion relay's input socket) was never the relay's to
    // deliver: it is not counted as accepted, and shows as kernel drops.
    let lost_at_ingress = || {
        path.ingress_drops()
            .map_or(0, |now| now.saturating_sub(ingress_before.unwrap_or(0)))
    };
    let done = Instant::now();
    let mut accepted = accepted;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let got = delivered_now.load(Ordering::Relaxed);
        if got >= accepted.saturating_sub(lost_at_ingress()) {
            break;
        }
        let now = Instant::now();
        if reliable {
            if now - done > drain.reliable_limit {
                break;
            }
        } else {
            let last = epoch + Duration::from_nanos(last_arrival_ns.load(Ordering::Relaxed));
            if now - last.max(done) > drain.idle {
                break;
            }
        }
    }
    // Nothing enters after the sender stopped: the count is final.
    accepted = accepted.saturating_sub(lost_at_ingress());
    let _ = stop_tx.send(());
    let received = receiver.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "receiver task failed");
        Received {
            delivered: 0,
            delivered_bytes: 0,
            duplicates: 0,
            reordered: 0,
            latency: Latency::new(),
            keyframe_latency: Latency::new(),
            last: None,
            jitter_ms: None,
            arrivals: Vec::new(),
        }
    });
    let cpu = sys::cpu_time().saturating_sub(cpu_before) + helpers_cpu().saturating_sub(helpers_cpu_before);
    let kernel = KernelUdpCounters::read().since(&kernel_before);
    let peak = sys::memory().peak;
    // A helper process is a whole relay end: its peak counts in full.
    let helpers_peak: u64 = helpers.iter().map(|&p| sys::process_memory(p).peak).sum();

    let sender_stats = path.sender.stats();
    let receiver_stats = path.receiver.stats();
    let link_drops = match (&sender_stats, &receiver_stats) {
        (Some(a), Some(b)) => Some(a.drops + b.drops),
        _ => None,
    };
    let link_bytes_sent = match (&sender_stats, &receiver_stats) {
        (Some(a), Some(b)) => Some(a.bytes_sent + b.bytes_sent),
        _ => None,
    };
    let repair = match (
        sender_stats.as_ref().and_then(|s| s.repair),
        receiver_stats.as_ref().and_then(|s| s.repair),
    ) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    let jitter_ms = receiver_stats
        .as_ref()
        .map_or(received.jitter_ms, |s| mean_jitter_ms(&s.received_ssrcs));
    let mut problems = Vec::new();
    for (end, name) in [(&path.sender, "sending"), (&path.receiver, "receiving")] {
        if let Some(reason) = end.close_reason() {
            problems.push(format!("{name} end closed during the run: {reason}"));
        }
    }
    if closed.load(Ordering::Relaxed) && problems.is_empty() {
        problems.push("link closed during the run".to_string());
    }
    if reliable && received.delivered < accepted {
        problems.push(format!(
            "reliable path delivered {} of {} accepted packets within {} s",
            received.delivered,
            accepted,
            drain.reliable_limit.as_secs()
        ));
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let first_send = first_send.unwrap_or(epoch);
    RunResult {
        subject,
        scenario: scenario.name,
        workload: workload.name(),
        seed: 0,
        flood,
        setup: path.setup,
        link_setup: path.link_setup,
        offered,
        offered_bytes,
        accepted,
        delivered: received.delivered,
        delivered_bytes: received.delivered_bytes,
        duplicates: received.duplicates,
        reordered: received.reordered,
        send_time: last_send.saturating_duration_since(first_send),
        span: received
            .last
            .map_or(Duration::ZERO, |l| l.saturating_duration_since(first_send)),
        latency: received.latency,
        keyframe_latency: received.keyframe_latency,
        sender_lag,
        jitter_ms,
        cpu,
        memory_per_link: (peak.saturating_sub(baseline) + helpers_peak) / 2,
        kernel,
        netsim: path.netsim(),
        link_drops,
        link_bytes_sent,
        repair,
        problem,
        outage: outage_window.map(|(down, up)| recovery(&received.arrivals, down, up)),
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
