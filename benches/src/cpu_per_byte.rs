//! CPU per byte: what carrying a byte costs each path, at a fixed rate
//! every path sustains, so the figure is work per byte and not a side
//! effect of overload (the goal's terms: 1 Gbit/s paced, both ends
//! counted, the harness's own share measured separately and subtracted).
//!
//! Each path carries [`RATE_BPS`] of 1,200-byte RTP packets for a second
//! or two over the clean network ([`measure`]); the process's user and
//! system CPU time over the run covers both link ends (they live in this
//! process) and the harness. The harness's share is the user time of the
//! per-packet `raw-udp` path at the same rate: there the only user-space
//! work is the harness's (building and counting packets, tokio waking the
//! tasks), and the sockets' own work is system time. So
//!
//! `cycles/byte = (CPU time × clock rate) / bytes delivered − raw-udp's user time × clock rate / its bytes`,
//!
//! where the clock rate is the mean `cpu MHz` of `/proc/cpuinfo` ([`Clock`]).
//!
//! ```
//! use relay_bench::cpu_per_byte::cycles_per_byte;
//! use std::time::Duration;
//! // 0.5 s of CPU at 2.6 GHz for 125 MB (1 Gbit/s for a second): 10.4 cycles a byte.
//! let c = cycles_per_byte(Duration::from_millis(500), 2.6e9, 125_000_000);
//! assert!((c - 10.4).abs() < 1e-9);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use relay_core::Packet;

use crate::path::{Path, Sent};
use crate::scenario::{Scenario, Subject};

/// The paced rate every path is measured at: 1 Gbit/s, below every
/// transport's sustained throughput on the report machine.
pub const RATE_BPS: u64 = 1_000_000_000;

/// Packet size: the max-rate workload's.
pub const SIZE: usize = crate::report::FLOOD_SIZE;

/// The receiver stops this long after its last arrival.
pub const IDLE: Duration = Duration::from_millis(100);

/// The clock rate cycles are counted at.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// Cycles per second.
    pub hz: f64,
    /// Where it came from, for the report.
    pub source: String,
}

/// The mean `cpu MHz` over the processors `/proc/cpuinfo` lists.
pub fn parse_cpuinfo_clock(text: &str) -> Option<Clock> {
    let mhz: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse().ok())
        .collect();
    (!mhz.is_empty()).then(|| Clock {
        hz: mhz.iter().sum::<f64>() / mhz.len() as f64 * 1e6,
        source: format!("mean `cpu MHz` of /proc/cpuinfo over {} processors", mhz.len()),
    })
}

/// This machine's clock ([`parse_cpuinfo_clock`]); `None` off Linux or
/// where the kernel does not say.
pub fn clock() -> Option<Clock> {
    parse_cpuinfo_clock(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// `cpu` at `hz` spread over `bytes`; zero when nothing was delivered.
pub fn cycles_per_byte(cpu: Duration, hz: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * hz / bytes as f64
}

/// User and system CPU time of the whole process (`getrusage`).
pub fn rusage() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid
    // `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// One path at [`RATE_BPS`].
#[derive(Debug, Clone, PartialEq)]
pub struct CpuRun {
    /// The path.
    pub subject: Subject,
    /// Packets sent.
    pub sent: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// First send to the receiver's last arrival.
    pub time: Duration,
    /// Process user CPU time over the run.
    pub user: Duration,
    /// Process system CPU time over the run.
    pub system: Duration,
}

impl CpuRun {
    /// Delivered bits per second.
    pub fn delivered_bps(&self) -> f64 {
        if self.time.is_zero() {
            0.0
        } else {
            self.delivered_bytes as f64 * 8.0 / self.time.as_secs_f64()
        }
    }

    /// Everything the process spent, per delivered byte.
    pub fn total_cycles_per_byte(&self, hz: f64) -> f64 {
        cycles_per_byte(self.user + self.system, hz, self.delivered_bytes)
    }

    /// The harness's share per byte, when this is the `raw-udp` run: its
    /// user time (see the module doc).
    pub fn harness_cycles_per_byte(&self, hz: f64) -> f64 {
        cycles_per_byte(self.user, hz, self.delivered_bytes)
    }

    /// This path's cycles per byte with the harness's share (`raw`, the
    /// `raw-udp` run at the same rate) taken out; never below zero.
    pub fn path_cycles_per_byte(&self, raw: &CpuRun, hz: f64) -> f64 {
        (self.total_cycles_per_byte(hz) - raw.harness_cycles_per_byte(hz)).max(0.0)
    }
}

/// A 1,200-byte RTP packet with sequence number `seq`, payload zeros.
fn packet(seq: u16) -> Packet {
    let mut buf = BytesMut::with_capacity(SIZE);
    buf.put_u8(0x80);
    buf.put_u8(96);
    buf.put_u16(seq);
    buf.put_u32(u32::from(seq) * 90);
    buf.put_u32(0x0c0f_fee0);
    buf.resize(SIZE, 0);
    Packet::parse(buf.freeze()).expect("a version-2 RTP header was just written")
}

/// Sends [`RATE_BPS`] over a fresh `subject` path in `scenario` for
/// `duration` (each packet at its due time on an absolute schedule; tokio
/// wakes the sender once a millisecond, so packets leave in bursts of
/// about a hundred), drains, and returns the process's CPU over it.
/// Bounded: the receiver stops [`IDLE`] after its last arrival once the
/// sender is done, and at most three seconds after it.
pub async fn measure(
    subject: Subject,
    scenario: &Scenario,
    duration: Duration,
    seed: u64,
) -> Result<CpuRun, String> {
    let path = Path::open(subject, scenario, seed).await?;
    let count = (RATE_BPS as f64 * duration.as_secs_f64() / (SIZE * 8) as f64) as u64;
    let interval = Duration::from_secs_f64((SIZE * 8) as f64 / RATE_BPS as f64);
    let done = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let delivered_bytes = Arc::new(AtomicU64::new(0));
    let (cpu0, started) = (rusage(), Instant::now());
    let receiver = {
        let (end, done) = (path.receiver.clone(), done.clone());
        let (delivered, delivered_bytes) = (delivered.clone(), delivered_bytes.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut last = Instant::now();
            let hard_stop = started + duration + Duration::from_secs(3);
            loop {
                let got = tokio::time::timeout(
                    IDLE,
                    end.recv(&mut buf, |p, _| {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        delivered_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
                    }),
                )
                .await;
                match got {
                    Ok(true) => last = Instant::now(),
                    Ok(false) => break,
                    Err(_) if done.load(Ordering::Acquire) => break,
                    Err(_) => {}
                }
                if Instant::now() > hard_stop || (done.load(Ordering::Acquire) && last.elapsed() > IDLE) {
                    break;
                }
            }
            last
        })
    };
    let mut sent = 0;
    // A reliable link's `send` waits for room; one that never makes room
    // ends the run here instead of hanging it.
    let give_up = started + duration + Duration::from_secs(5);
    let mut stalled = false;
    for i in 0..count {
        let due = started + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        match tokio::time::timeout_at(give_up.into(), path.sender.send(packet(i as u16))).await {
            Ok(Sent::Accepted) => sent += 1,
            Ok(Sent::Dropped) => {}
            Ok(Sent::Closed) => break,
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    done.store(true, Ordering::Release);
    let last = receiver.await.map_err(|e| format!("receiver task: {e}"))?;
    let cpu1 = rusage();
    let problem = path
        .receiver
        .close_reason()
        .or_else(|| stalled.then(|| "the sender was still sending 5 s after its schedule ended".to_string()));
    path.close().await;
    if let Some(reason) = problem {
        return Err(format!("the run did not finish: {reason}"));
    }
    Ok(CpuRun {
        subject,
        sent,
        delivered: delivered.load(Ordering::Relaxed),
        delivered_bytes: delivered_bytes.load(Ordering::Relaxed),
        time: last.saturating_duration_since(started),
        user: cpu1.0.saturating_sub(cpu0.0),
        system: cpu1.1.saturating_sub(cpu0.1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_mean_of_the_processors() {
        let text =
            "processor\t: 0\ncpu MHz\t\t: 2600.000\nflags\t: x\n\nprocessor\t: 1\ncpu MHz\t\t: 2400.000\n";
        let c = parse_cpuinfo_clock(text).unwrap();
        assert_eq!(c.hz, 2.5e9);
        assert!(c.source.contains("2 processors"));
        assert_eq!(parse_cpuinfo_clock("processor : 0\n"), None);
    }

    fn run(subject: Subject, user_ms: u64, system_ms: u64, bytes: u64) -> CpuRun {
        CpuRun {
            subject,
            sent: bytes / 1_200,
            delivered: bytes / 1_200,
            delivered_bytes: bytes,
            time: Duration::from_secs(1),
            user: Duration::from_millis(user_ms),
            system: Duration::from_millis(system_ms),
        }
    }

    #[test]
    fn the_harness_share_is_raw_udps_user_time_per_byte() {
        let hz = 2.0e9;
        // 125 MB each. raw-udp: 100 ms user (the harness), 200 ms system.
        let raw = run(Subject::RawUdp, 100, 200, 125_000_000);
        assert!((raw.harness_cycles_per_byte(hz) - 1.6).abs() < 1e-9);
        assert!((raw.total_cycles_per_byte(hz) - 4.8).abs() < 1e-9);
        // The socket work stays in raw UDP's own figure.
        assert!((raw.path_cycles_per_byte(&raw, hz) - 3.2).abs() < 1e-9);
        let link = run(
            Subject::Link(relay_core::Transport::Quic, relay_core::Mode::Datagram),
            500,
            250,
            125_000_000,
        );
        assert!((link.path_cycles_per_byte(&raw, hz) - (12.0 - 1.6)).abs() < 1e-9);
        // Per byte, not per run: half the bytes for the same CPU is twice the cost.
        let half = run(link.subject, 500, 250, 62_500_000);
        assert!((half.path_cycles_per_byte(&raw, hz) - (24.0 - 1.6)).abs() < 1e-9);
        assert_eq!(cycles_per_byte(Duration::from_secs(1), hz, 0), 0.0);
        assert_eq!(
            run(Subject::RawUdp, 0, 0, 125_000_000).path_cycles_per_byte(&raw, hz),
            0.0
        );
        assert!((link.delivered_bps() - 1e9).abs() < 1e-3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_udp_at_the_paced_rate_delivers_and_costs_something() {
        let clean = crate::scenario::scenarios()
            .into_iter()
            .find(|s| s.name == "clean")
            .unwrap();
        let r = measure(Subject::RawUdp, &clean, Duration::from_millis(100), 1)
            .await
            .unwrap();
        // 100 ms at 1 Gbit/s: 10,416 packets of 1,200 bytes.
        assert!(r.sent > 0 && r.sent <= 10_416, "{r:?}");
        assert!(r.delivered > 0 && r.delivered <= r.sent, "{r:?}");
        assert_eq!(r.delivered_bytes, r.delivered * SIZE as u64);
        assert!(r.user + r.system > Duration::ZERO);
    }
}
