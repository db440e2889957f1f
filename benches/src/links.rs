//! Many links in one process: `relay-bench links`
//! opens `count` idle links of each transport through
//! [`relay::loopback`] (both ends in this process, offer/answer in
//! process, no HTTP), `parallel` setups in flight, and reports what one
//! idle link holds (resident memory, file descriptors, threads), what the
//! idle links cost in CPU, how fast they were set up, and the first thing
//! that failed if anything did.
//!
//! A loopback pair is two links (the offering and the answering end), so
//! `count` links are `count / 2` pairs, and every per-link figure is the
//! process's growth divided by the links opened.
//!
//! ```
//! use relay_bench::links::per_link;
//! // 64 MiB more resident memory after 1,000 links: 67,108 bytes a link.
//! assert_eq!(per_link(100 << 20, 164 << 20, 1_000), 67_108);
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use relay::loopback::{LoopbackConfig, LoopbackPair, establish};
use relay_core::{Mode, Transport};
use tokio::task::JoinSet;

use crate::sys;

/// How `relay-bench links` runs.
#[derive(Debug, Clone)]
pub struct LinksConfig {
    /// Links per transport (two per loopback pair).
    pub count: usize,
    /// Setups in flight at once.
    pub parallel: usize,
    /// How long the links sit idle before memory and CPU are read.
    pub idle: Duration,
    /// Longest one setup may take before it counts as the failure.
    pub setup_timeout: Duration,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            count: 1_000,
            parallel: 8,
            idle: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(10),
        }
    }
}

/// What `count` idle links of one transport cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinksResult {
    /// Transport and mode.
    pub label: String,
    /// Links asked for.
    pub requested: usize,
    /// Links that came up.
    pub opened: usize,
    /// Wall time of all the setups.
    pub setup_time: Duration,
    /// Resident bytes before the first setup and after the idle period.
    pub rss: (u64, u64),
    /// Open file descriptors before and after.
    pub fds: (u64, u64),
    /// Threads before and after.
    pub threads: (u64, u64),
    /// Process CPU time over the idle period.
    pub idle_cpu: Duration,
    /// The idle period.
    pub idle: Duration,
    /// Links that closed on their own while idle.
    pub closed_while_idle: usize,
    /// The first setup that failed: how many links were up, and why.
    pub first_failure: Option<(usize, String)>,
    /// File descriptors still open beyond the starting count after every
    /// pair was closed and up to two seconds had passed.
    pub fds_left_after_close: u64,
}

/// `(after − before) / links`, zero for no links or no growth.
pub fn per_link(before: u64, after: u64, links: usize) -> u64 {
    if links == 0 {
        return 0;
    }
    after.saturating_sub(before) / links as u64
}

impl LinksResult {
    /// Resident memory per idle link.
    pub fn memory_per_link(&self) -> u64 {
        per_link(self.rss.0, self.rss.1, self.opened)
    }

    /// Links set up per second.
    pub fn setup_rate(&self) -> f64 {
        if self.setup_time.is_zero() {
            0.0
        } else {
            self.opened as f64 / self.setup_time.as_secs_f64()
        }
    }

    /// Share of one core the idle links keep busy (timers, keepalives).
    pub fn idle_cores(&self) -> f64 {
        if self.idle.is_zero() {
            0.0
        } else {
            self.idle_cpu.as_secs_f64() / self.idle.as_secs_f64()
        }
    }
}

fn proc_count(path: &str) -> u64 {
    std::fs::read_dir(path).map_or(0, |d| d.count() as u64)
}

/// Opens `config.count` links of `transport` in `mode`, lets them idle,
/// measures, and closes them all (each close bounded by the pair's own
/// one-second wait). Stops opening at the first failure, which the result
/// names. Setups are bounded by `config.setup_timeout` each.
pub async fn measure(transport: Transport, mode: Mode, config: &LinksConfig) -> LinksResult {
    let pairs_wanted = config.count.div_ceil(2);
    sys::reset_peak();
    let mut r = LinksResult {
        label: format!("{transport} {mode}"),
        requested: pairs_wanted * 2,
        ..LinksResult::default()
    };
    let before = (
        sys::memory().rss,
        proc_count("/proc/self/fd"),
        proc_count("/proc/self/task"),
    );
    let started = Instant::now();
    let mut pairs: Vec<LoopbackPair> = Vec::with_capacity(pairs_wanted);
    let mut setups = JoinSet::new();
    let mut launched = 0;
    let timeout = config.setup_timeout;
    loop {
        while r.first_failure.is_none() && launched < pairs_wanted && setups.len() < config.parallel.max(1) {
            launched += 1;
            setups.spawn(async move {
                match tokio::time::timeout(timeout, establish(transport, mode, &LoopbackConfig::default()))
                    .await
                {
                    Ok(Ok(pair)) => Ok(pair),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("setup took longer than {} s", timeout.as_secs())),
                }
            });
        }
        let Some(done) = setups.join_next().await else {
            break;
        };
        match done.unwrap_or_else(|e| Err(format!("setup task failed: {e}"))) {
            Ok(pair) => pairs.push(pair),
            Err(e) => {
                if r.first_failure.is_none() {
                    r.first_failure = Some((pairs.len() * 2, e));
                }
            }
        }
    }
    r.setup_time = started.elapsed();
    r.opened = pairs.len() * 2;

    let cpu = sys::cpu_time();
    tokio::time::sleep(config.idle).await;
    r.idle_cpu = sys::cpu_time().saturating_sub(cpu);
    r.idle = config.idle;
    r.closed_while_idle = pairs
        .iter()
        .flat_map(|p| [&p.offerer, &p.answerer])
        .filter(|l| l.close_reason().is_some())
        .count();
    let after = (
        sys::memory().rss,
        proc_count("/proc/self/fd"),
        proc_count("/proc/self/task"),
    );
    r.rss = (before.0, after.0);
    r.fds = (before.1, after.1);
    r.threads = (before.2, after.2);

    let mut closes = JoinSet::new();
    for pair in pairs {
        closes.spawn(pair.close());
    }
    while closes.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        r.fds_left_after_close = proc_count("/proc/self/fd").saturating_sub(before.1);
        if r.fds_left_after_close == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r
}

/// The markdown table of `results`.
pub fn table(results: &[LinksResult], config: &LinksConfig) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} idle links per transport through `relay::loopback` (both ends in this process, no HTTP signaling), \
         {} setups in flight; memory, descriptors and threads are the process's growth over the links opened, \
         read after {:.1} s idle.\n",
        config.count,
        config.parallel,
        config.idle.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| link | opened | setup links/s | resident KiB per link | fds per link | threads (before → after) | idle CPU, share of a core | closed while idle | fds left 2 s after closing | first failure |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {} of {} | {:.0} | {:.1} | {:.2} | {} → {} | {:.3} | {} | {} | {} |",
            r.label,
            r.opened,
            r.requested,
            r.setup_rate(),
            r.memory_per_link() as f64 / 1024.0,
            if r.opened == 0 {
                0.0
            } else {
                r.fds.1.saturating_sub(r.fds.0) as f64 / r.opened as f64
            },
            r.threads.0,
            r.threads.1,
            r.idle_cores(),
            r.closed_while_idle,
            r.fds_left_after_close,
            r.first_failure
                .as_ref()
                .map_or("none".into(), |(at, why)| format!("after {at} links: {why}")),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_link_figures_divide_the_growth() {
        assert_eq!(per_link(1_000, 3_000, 4), 500);
        assert_eq!(per_link(3_000, 1_000, 4), 0);
        assert_eq!(per_link(0, 1_000, 0), 0);
        let r = LinksResult {
            label: "rtp-udp unreliable".into(),
            requested: 10,
            opened: 8,
            setup_time: Duration::from_millis(400),
            rss: (1 << 20, 1 << 21),
            fds: (10, 26),
            threads: (3, 3),
            idle_cpu: Duration::from_millis(20),
            idle: Duration::from_secs(2),
            closed_while_idle: 0,
            first_failure: Some((8, "Too many open files".into())),
            fds_left_after_close: 1,
        };
        assert_eq!(r.memory_per_link(), 131_072);
        assert_eq!(r.setup_rate(), 20.0);
        assert_eq!(r.idle_cores(), 0.01);
        let md = table(&[r], &LinksConfig::default());
        assert!(
            md.contains("| rtp-udp unreliable | 8 of 10 | 20 | 128.0 | 2.00 | 3 → 3 | 0.010 | 0 | 1 | after 8 links: Too many open files |"),
            "{md}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_few_links_open_idle_and_close() {
        let config = LinksConfig {
            count: 6,
            parallel: 2,
            idle: Duration::from_millis(100),
            ..LinksConfig::default()
        };
        let r = measure(Transport::RtpUdp, Mode::Unreliable, &config).await;
        assert_eq!(r.first_failure, None);
        assert_eq!((r.requested, r.opened), (6, 6));
        assert_eq!(r.closed_while_idle, 0);
        // Descriptor counts are the whole process's, which other tests
        // running beside this one change: the report reads them from a
        // process of their own (`relay-bench links`).
        assert!(r.setup_rate() > 0.0);
        assert!(r.idle >= Duration::from_millis(100));
    }
}
