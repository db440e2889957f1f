//! Relay trees as operators build them from the command line: real
//! `relay` processes on loopback, a chain of hops and a fan-out, with
//! one-way latency measured behind every relay and the CPU time of every
//! relay process (issue 15's "Measured" rows).
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
//! ```no_run
//! use relay_bench::tree::{TreeConfig, measure_all};
//!
//! let rows = measure_all(&TreeConfig::default(), |line| eprintln!("{line}"));
//! println!("{}", relay_bench::tree::section(&rows));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use relay_core::udp::{DEFAULT_SOCKET_BUFFER, KernelUdpCounters, bind_udp};
use relay_core::{Mode, Transport};
use serde_json::{Value, json};

use crate::latency::Latency;
use crate::sys;
use crate::workload::{Workload, read_stamp, stamp};

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

/// Finds the `relay` binary of this workspace, built for the profile this
/// program was (`target/release/relay` beside `target/release/relay-bench`).
///
/// `RELAY_BIN=PATH` names one explicitly. Otherwise cargo is asked to
/// bring it up to date (a no-op second when it is: without this, a
/// changed `crates/relay` would be measured with the old binary, since
/// building relay-bench builds the relay library but not its binary);
/// without cargo, the binary already beside this program is used.
pub fn relay_binary() -> Result<PathBuf, String> {
    if let Some(path) = explicit_relay_binary() {
        return path;
    }
    let (exe, dir) = profile_dir()?;
    let dir = dir.as_path();
    let beside = dir.join("relay");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => "release".to_string(),
    };
    let command = format!("cargo build --profile {profile} -p relay --bin relay");
    match build_relay(&profile, dir.parent()) {
        Ok(built) => Ok(built),
        Err(e) if beside.is_file() => {
            tracing::warn!(error = %e, binary = %beside.display(), "cannot rebuild relay; using the binary already there");
            Ok(beside)
        }
        Err(e) => Err(format!(
            "no relay binary beside {} and `{command}` failed: {e}; run `{command}` (or set RELAY_BIN)",
            exe.display()
        )),
    }
}

/// `RELAY_BIN`, if set.
fn explicit_relay_binary() -> Option<Result<PathBuf, String>> {
    let path = PathBuf::from(std::env::var_os("RELAY_BIN")?);
    Some(if path.is_file() {
        Ok(path)
    } else {
        Err(format!("RELAY_BIN={} is not a file", path.display()))
    })
}

/// This program and the target directory of its profile
/// (`target/PROFILE/relay-bench`, or `target/PROFILE/deps/TEST` for a test).
fn profile_dir() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut dir = exe.parent().ok_or("this program has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().ok_or("deps/ has no parent")?;
    }
    let dir = dir.to_path_buf();
    Ok((exe, dir))
}

/// A `relay` binary that is already built, without running cargo:
/// `RELAY_BIN`, the one beside this program, or the release one of the
/// same target directory. For the tests: a cargo build from inside `cargo
/// test` would rebuild the relay library with other features, and the
/// test build would rebuild it back the next time.
pub fn built_relay_binary() -> Result<PathBuf, String> {
    if let Some(path) = explicit_relay_binary() {
        return path;
    }
    let (_, dir) = profile_dir()?;
    let candidates = [dir.join("relay"), dir.with_file_name("release").join("relay")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "no relay binary at {}; build it with `cargo build -p relay --bin relay` (or set RELAY_BIN)",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })
}

/// `cargo build --profile PROFILE -p relay --bin relay` in this workspace,
/// into `target_dir`; returns the executable cargo reports.
fn build_relay(profile: &str, target_dir: Option<&FsPath>) -> Result<PathBuf, String> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--profile", profile, "-p", "relay", "--bin", "relay"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    // A cold release build of the relay takes minutes on 2 cores.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cargo build took over 20 minutes".into());
            }
            Err(e) => return Err(format!("cannot wait for cargo: {e}")),
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        let tail: String = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!("cargo build exited with {status}: {tail}"));
    }
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "relay")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no relay executable".into())
}

/// Whether `binary` has chains (`relay answer --forward`).
pub fn has_forward(binary: &FsPath) -> bool {
    Command::new(binary)
        .args(["answer", "--help"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--forward"))
}

/// The value of `key=value` in a status line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Bytes of a relay's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// One relay process: its stdout lines arrive on a channel (so every wait
/// for a status line is bounded), its stderr is drained into a tail.
struct RelayProcess {
    role: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl RelayProcess {
    fn spawn(binary: &FsPath, role: &str, args: &[String]) -> Result<RelayProcess, String> {
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RELAY_TOKEN")
            .env("RUST_LOG", "warn");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches only the new
            // process. If the harness dies without running its Drop (a
            // SIGKILL), the kernel kills the relays too.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {} ({role}): {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(Vec::new()));
        let kept = tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let Ok(mut t) = kept.lock() else { break };
                t.extend_from_slice(&buf[..n]);
                if t.len() > 2 * STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    t.drain(..cut);
                }
            }
        });
        Ok(RelayProcess {
            role: role.to_string(),
            child,
            lines,
            stderr: tail,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Why this relay is no use: its exit status if it exited, and the
    /// tail of its stderr.
    fn failure(&mut self, what: &str) -> String {
        // Give a dying process a moment to write its last words.
        std::thread::sleep(Duration::from_millis(50));
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            _ => "still running".to_string(),
        };
        let tail = self
            .stderr
            .lock()
            .map(|t| {
                String::from_utf8_lossy(&t[t.len().saturating_sub(600)..])
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        format!("{} ({status}): {what}; stderr: {tail}", self.role)
    }

    /// The first line starting with each of `prefixes` (in any order),
    /// by `deadline`. A `failed ` line is an error at once.
    fn expect(&mut self, prefixes: &[&str], deadline: Instant) -> Result<Vec<String>, String> {
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("failed ") => {
                    return Err(self.failure(&format!("a link failed: {line}")));
                }
                Ok(line) => {
                    if let Some(i) = prefixes
                        .iter()
                        .zip(&found)
                        .position(|(p, f)| f.is_none() && line.starts_with(p))
                    {
                        found[i] = Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let missing: Vec<&str> = prefixes
                        .iter()
                        .zip(&found)
                        .filter(|(_, f)| f.is_none())
                        .map(|(p, _)| p.trim())
                        .collect();
                    return Err(self.failure(&format!("no `{}` status line in time", missing.join("`, `"))));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.failure("stdout closed before its status line"));
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// `ready` lines beyond those already read, and `down`/`failed` ones:
    /// what went wrong on a link during the run.
    fn link_trouble(&self) -> Vec<String> {
        self.lines
            .try_iter()
            .filter(|l| l.starts_with("down ") || l.starts_with("failed "))
            .collect()
    }
}

/// Every relay process of one run. Dropping it stops them all, on every
/// path out of a run (errors and panics included): SIGTERM (each relay
/// ends its sessions), a grace period, then SIGKILL; every child is reaped.
#[derive(Default)]
struct Relays(Vec<RelayProcess>);

/// How long stopped relays get to end their sessions before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Relays {
    fn spawn(&mut self, binary: &FsPath, role: &str, args: Vec<String>) -> Result<&mut RelayProcess, String> {
        self.0.push(RelayProcess::spawn(binary, role, &args)?);
        Ok(self.0.last_mut().expect("just pushed"))
    }

    fn cpu(&self) -> Vec<Option<Duration>> {
        self.0.iter().map(|r| sys::process_run_time(r.pid())).collect()
    }

    /// Relays that exited, and links that went down or failed.
    fn problems(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for r in &mut self.0 {
            if let Ok(Some(status)) = r.child.try_wait() {
                problems.push(format!("{} exited during the run ({status})", r.role));
            }
            for line in r.link_trouble() {
                problems.push(format!("{}: {line}", r.role));
            }
        }
        problems
    }

    fn stop(&mut self) {
        for r in &mut self.0 {
            if matches!(r.child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own child's pid, not yet reaped
                // (try_wait just said it runs), so the pid is still ours.
                unsafe {
                    libc::kill(r.pid() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.0.iter_mut().any(|r| matches!(r.child.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in &mut self.0 {
            if matches!(r.child.try_wait(), Ok(None)) {
                let _ = r.child.kill();
            }
            let _ = r.child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A harness socket behind one relay's `--out`: a thread records every
/// stamped packet's one-way latency until stopped.
struct Tap {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    /// Warm-up packets that arrived (not measured).
    warm: Arc<AtomicU64>,
    /// Nanoseconds since the epoch of the latest arrival.
    last_ns: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<(TapResult, Vec<u64>)>>,
}

impl Tap {
    fn start(name: String, epoch: Instant) -> Result<Tap, String> {
        let socket: UdpSocket = bind_udp(
            "127.0.0.1:0".parse().expect("a socket address"),
            DEFAULT_SOCKET_BUFFER,
        )
        .map_err(|e| format!("cannot bind a harness socket: {e}"))?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        socket
            .set_nonblocking(false)
            .and_then(|()| socket.set_read_timeout(Some(Duration::from_millis(20))))
            .map_err(|e| format!("cannot set up a harness socket: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let warm = Arc::new(AtomicU64::new(0));
        let last_ns = Arc::new(AtomicU64::new(0));
        let (stopped, count, warmed, last) = (stop.clone(), delivered.clone(), warm.clone(), last_ns.clone());
        let thread = std::thread::spawn(move || {
            let mut result = TapResult {
                name,
                delivered: 0,
                duplicates: 0,
                latency: Latency::new(),
            };
            // Arrival time of each packet by run-wide index, ns since the
            // epoch (0: not arrived): a chain compares them hop to hop.
            let mut arrivals: Vec<u64> = Vec::new();
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else { continue };
                let at_ns = epoch.elapsed().as_nanos() as u64;
                // RTP only: relays also pass RTCP (second byte 192..=223).
                if n < 2 || (192..=223).contains(&buf[1]) {
                    continue;
                }
                let Some(s) = read_stamp(&buf[..n]) else { continue };
                if s.index >= WARM_UP_INDEX {
                    warmed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let i = s.index as usize;
                if i >= arrivals.len() {
                    arrivals.resize(i + 1, 0);
                }
                if arrivals[i] != 0 {
                    result.duplicates += 1;
                    continue;
                }
                arrivals[i] = at_ns.max(1);
                result.latency.record_ns(at_ns.saturating_sub(s.sent_ns));
                result.delivered += 1;
                count.store(result.delivered, Ordering::Relaxed);
                last.store(at_ns, Ordering::Relaxed);
            }
            (result, arrivals)
        });
        Ok(Tap {
            addr,
            stop,
            delivered,
            warm,
            last_ns,
            thread: Some(thread),
        })
    }

    /// Stops the thread; what arrived, and each packet's arrival time by
    /// run-wide index (ns since the epoch, 0: never).
    fn finish(mut self) -> (TapResult, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take();
        thread.and_then(|t| t.join().ok()).unwrap_or_else(|| {
            (
                TapResult {
                    name: "a tap whose thread panicked".into(),
                    delivered: 0,
                    duplicates: 0,
                    latency: Latency::new(),
                },
                Vec::new(),
            )
        })
    }
}

impl Drop for Tap {
    /// A tap left behind (an error, a panic) stops its thread within one
    /// read timeout.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The relay's `--signal` value for one link.
fn signal_spec(url: &str, transport: Transport, mode: Mode, name: &str) -> String {
    format!("{url},transport={transport},mode={mode},name={name}")
}

/// Starts the chain's answering relays, last first (each forwards to the
/// one started before it), then `relay offer` into node 1; returns the
/// address to send into.
fn start_chain(
    relays: &mut Relays,
    binary: &FsPath,
    (transport, mode): (Transport, Mode),
    taps: &[Tap],
    deadline: Instant,
) -> Result<SocketAddr, String> {
    let mut next: Option<String> = None;
    let mut nodes = Vec::new();
    for (i, tap) in taps.iter().enumerate().rev() {
        let hop = i + 1;
        let mut args: Vec<String> = ["answer", "--signal-listen", "127.0.0.1:0", "--out"]
            .map(String::from)
            .into();
        args.push(tap.addr.to_string());
        let mut expected = vec!["listening "];
        if let Some(url) = &next {
            args.push("--forward".into());
            args.push(signal_spec(url, transport, mode, &format!("node{}", hop + 1)));
            expected.push("ready ");
        }
        let node = relays.spawn(binary, &format!("node {hop}"), args)?;
        let lines = node.expect(&expected, deadline)?;
        let url =
            field(&lines[0], "signal").ok_or_else(|| format!("node {hop}: no signal= in {:?}", lines[0]))?;
        next = Some(url.to_string());
        nodes.push(relays.0.len() - 1);
    }
    let first = next.ok_or("a chain needs at least one hop")?;
    let entry = offer(relays, binary, &[first], (transport, mode), deadline)?;
    // `relay offer` first, then node 1, 2, ...: the order results list them.
    let offer_index = relays.0.len() - 1;
    let mut order = vec![offer_index];
    order.extend(nodes.into_iter().rev());
    reorder(relays, &order);
    Ok(entry)
}

/// Starts `receivers` answering relays and one `relay offer` to all of
/// them; returns the address to send into.
fn start_fan_out(
    relays: &mut Relays,
    binary: &FsPath,
    link: (Transport, Mode),
    taps: &[Tap],
    deadline: Instant,
) -> Result<SocketAddr, String> {
    let mut urls = Vec::new();
    for (i, tap) in taps.iter().enumerate() {
        let args = vec![
            "answer".into(),
            "--signal-listen".into(),
            "127.0.0.1:0".into(),
            "--out".into(),
            tap.addr.to_string(),
        ];
        let receiver = relays.spawn(binary, &format!("receiver {}", i + 1), args)?;
        let lines = receiver.expect(&["listening "], deadline)?;
        urls.push(
            field(&lines[0], "signal")
                .ok_or_else(|| format!("receiver {}: no signal= in {:?}", i + 1, lines[0]))?
                .to_string(),
        );
    }
    let entry = offer(relays, binary, &urls, link, deadline)?;
    let mut order = vec![relays.0.len() - 1];
    order.extend(0..taps.len());
    reorder(relays, &order);
    Ok(entry)
}

/// `relay offer --in 127.0.0.1:0` to every URL; waits for each link's
/// `ready` line and returns the bound `in=` address.
fn offer(
    relays: &mut Relays,
    binary: &FsPath,
    urls: &[String],
    (transport, mode): (Transport, Mode),
    deadline: Instant,
) -> Result<SocketAddr, String> {
    let mut args: Vec<String> = ["offer", "--in", "127.0.0.1:0", "--transport"]
        .map(String::from)
        .into();
    args.push(transport.to_string());
    args.push("--mode".into());
    args.push(mode.to_string());
    for (i, url) in urls.iter().enumerate() {
        args.push("--signal".into());
        args.push(if urls.len() > 1 {
            signal_spec(url, transport, mode, &format!("r{}", i + 1))
        } else {
            url.clone()
        });
    }
    let entry = relays.spawn(binary, "relay offer", args)?;
    let ready = vec!["ready "; urls.len()];
    let lines = entry.expect(&ready, deadline)?;
    let input = field(&lines[0], "in").ok_or_else(|| format!("relay offer: no in= in {:?}", lines[0]))?;
    input
        .parse()
        .map_err(|e| format!("relay offer: in={input} is not an address: {e}"))
}

/// Puts the relays in `order` (indexes into the current list).
fn reorder(relays: &mut Relays, order: &[usize]) {
    let mut all: Vec<Option<RelayProcess>> = relays.0.drain(..).map(Some).collect();
    relays.0 = order
        .iter()
        .filter_map(|&i| all.get_mut(i).and_then(Option::take))
        .collect();
    // Anything not named stays, after them (never leaked unstopped).
    relays.0.extend(all.into_iter().flatten());
}

/// Run-wide packet indexes from here up are warm-up packets: counted by
/// the taps, never measured.
const WARM_UP_INDEX: u32 = 0xFFFF_0000;

/// Warm-up packets reach every tap at least this often before a run.
const WARM_UP_PACKETS: u64 = 3;

/// The harness's sending socket.
fn sender() -> Result<UdpSocket, String> {
    let socket = bind_udp(
        "127.0.0.1:0".parse().expect("a socket address"),
        DEFAULT_SOCKET_BUFFER,
    )
    .map_err(|e| format!("cannot bind the sender: {e}"))?;
    socket
        .set_nonblocking(false)
        .map_err(|e| format!("cannot set up the sender: {e}"))?;
    Ok(socket)
}

/// Sends small packets of a stream of their own (SSRC 0x7A7A_0001) every
/// 10 ms until [`WARM_UP_PACKETS`] of them reached every tap, by
/// `deadline`. `ready` on `relay offer`'s side does not mean the answering
/// relay already delivers to its `--out` (here it took about 10 ms more):
/// without this, the first keyframe of every run would measure that
/// start, not the relay.
fn warm_up(
    socket: &UdpSocket,
    input: SocketAddr,
    taps: &[Tap],
    epoch: Instant,
    deadline: Instant,
) -> Result<(), String> {
    let mut planned = Workload::ConstantRate { size: 200, pps: 100 }
        .schedule(Duration::from_secs(3600))
        .next()
        .ok_or("an empty warm-up schedule")?;
    planned.ssrc = 0x7A7A_0001;
    let mut i = 0u32;
    while taps
        .iter()
        .any(|t| t.warm.load(Ordering::Relaxed) < WARM_UP_PACKETS)
    {
        if Instant::now() > deadline {
            let cold: Vec<String> = taps
                .iter()
                .enumerate()
                .filter(|(_, t)| t.warm.load(Ordering::Relaxed) < WARM_UP_PACKETS)
                .map(|(k, _)| (k + 1).to_string())
                .collect();
            return Err(format!(
                "every relay said ready, but no packet sent into relay offer at {input} reached tap {} in time",
                cold.join(", ")
            ));
        }
        planned.rtp_seq = i as u16;
        let packet = stamp(&planned, WARM_UP_INDEX + i, epoch.elapsed().as_nanos() as u64);
        socket
            .send_to(packet.bytes(), input)
            .map_err(|e| format!("cannot send to relay offer at {input}: {e}"))?;
        i = (i + 1) % 0xFFFF;
        std::thread::sleep(Duration::from_millis(10));
    }
    // What was queued behind the start drains before the run.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// Sends `workload` for `duration` to `input`, paced against an absolute
/// schedule, each packet stamped with its send time since `epoch`.
/// Returns the packets sent.
fn send(
    socket: &UdpSocket,
    input: SocketAddr,
    workload: &Workload,
    duration: Duration,
    epoch: Instant,
) -> Result<u64, String> {
    let start = Instant::now();
    let mut sent = 0u64;
    for (i, planned) in workload.schedule(duration).enumerate() {
        if workload.is_flood() && start.elapsed() >= duration {
            break;
        }
        let due = start + planned.due;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let packet = stamp(&planned, i as u32, epoch.elapsed().as_nanos() as u64);
        // The relay's keyframe requests come back to this socket and are
        // never read: a full receive buffer drops them, harmlessly.
        match socket.send_to(packet.bytes(), input) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sent += 1,
            Err(e) => return Err(format!("cannot send to relay offer at {input}: {e}")),
        }
    }
    Ok(sent)
}

/// Longest drain after the sender stops, whatever arrives.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs one tree of `topology` over `link`: starts the relays, sends,
/// drains, stops them. Every wait is bounded; the relays are stopped on
/// every path out (the [`Relays`] guard).
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
    let _ = writeln!(md, "## Relay trees: chains and fan-out\n");
    let _ = writeln!(
        md,
        "Real `relay` processes on loopback, one per relay as deployed, started from the command line as the README shows. \
         The harness sends {} for {:.0} s into `relay offer --in`; every answering relay `--out`s to a harness socket of its own, \
         which stamps the arrival on the sender's clock (one-way latency, send call to receive). \
         CPU is each relay process's own time on the CPU (`/proc/PID/task/*/schedstat`, all threads) from the first packet sent to the end of the drain, setup excluded, \
         per packet sent into the tree (µs/pkt) and as a share of one core over that window. Links in each transport's unreliable mode.\n",
        rows.workload,
        rows.duration.as_secs_f64()
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
    if !rows.failures.is_empty() {
        let _ = writeln!(md, "Runs that failed:\n");
        for f in &rows.failures {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    md
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
    use super::*;

    #[test]
    fn hops_add_their_difference_and_receivers_split_theirs() {
        let added = added_per_hop(&[0.40, 0.75, 1.30]);
        let want = [0.40, 0.35, 0.55];
        assert_eq!(added.len(), 3);
        for (a, w) in added.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{added:?}");
        }
        // A hop whose tail happened to be better shows as negative, not hidden.
        assert!(added_per_hop(&[1.0, 0.9])[1] < 0.0);
        assert!(added_per_hop(&[]).is_empty());
        assert_eq!(per_extra_receiver(12.0, 40.0, 8), Some(4.0));
        assert_eq!(per_extra_receiver(12.0, 40.0, 2), Some(28.0));
        assert_eq!(per_extra_receiver(12.0, 40.0, 1), None);
        assert_eq!(per_extra_receiver(12.0, 40.0, 0), None);
    }

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

    #[test]
    fn a_hop_is_measured_on_the_packets_that_crossed_it() {
        // Packet 1 never reached the first node, packet 3 not the second.
        let before = [1_000_000, 0, 2_000_000, 3_000_000];
        let this = [1_400_000, 1_500_000, 2_300_000, 0];
        let hop = hop_delays(&before, &this);
        assert_eq!(hop.count(), 2);
        let l = hop.summary();
        assert!(
            (l.p50 - 0.3).abs() < 0.001 && (l.max - 0.4).abs() < 0.001,
            "{l:?}"
        );
        // A packet seen earlier behind the later node counts as no delay.
        assert_eq!(hop_delays(&[5_000], &[4_000]).count(), 1);
        assert_eq!(hop_delays(&[], &[1]).count(), 0);
    }

    /// A tiny chain and fan-out of real `relay` processes: packets reach
    /// every hop and every receiver, and every figure is present and sane.
    /// Behaviour, not speed: the bounds hold on a loaded 2-core machine.
    #[test]
    fn real_relays_deliver_at_every_hop_and_every_receiver() {
        let binary = match built_relay_binary() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIPPED: {e}");
                return;
            }
        };
        let config = TreeConfig {
            workload: Workload::ConstantRate { size: 300, pps: 200 },
            duration: Duration::from_secs(1),
            ..TreeConfig::default()
        };
        let check = |run: &TreeRun, taps: usize| {
            assert_eq!(run.offered, 200, "{run:?}");
            assert_eq!(run.taps.len(), taps);
            assert_eq!(run.relays.len(), taps + 1, "relay offer and one relay per tap");
            assert!(run.problem.is_none(), "{:?}", run.problem);
            for t in &run.taps {
                // Loopback at 200 pps: everything, bar a packet a loaded
                // machine's full socket buffer might drop.
                assert!(t.delivered >= 198, "{}: {} of 200", t.name, t.delivered);
                assert_eq!(t.latency.count(), t.delivered);
                let l = t.latency.summary();
                assert!(
                    l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max && l.max < 1_000.0,
                    "{l:?}"
                );
            }
            for r in &run.relays {
                // Each relay did work, and no more than two cores' worth.
                let pct = run.core_percent(r);
                assert!(
                    r.cpu > Duration::ZERO && pct <= 200.0,
                    "{}: {:?}, {pct}%",
                    r.role,
                    r.cpu
                );
                assert!(run.cpu_us_per_packet(r) > 0.0);
            }
            assert!(run.window >= config.duration);
        };
        if has_forward(&binary) {
            let chain = measure(
                &binary,
                (Transport::RtpUdp, Mode::Unreliable),
                Topology::Chain { hops: 2 },
                &config,
            )
            .expect("a 2-hop chain");
            check(&chain, 2);
            assert_eq!(chain.relays[0].role, "relay offer");
            assert_eq!(chain.relays[2].role, "node 2");
            assert_eq!(chain.hop_latency.len(), 2);
            assert!(chain.hop_latency.iter().all(|h| h.count() >= 198));
            // The second hop's packets crossed the first one too.
            assert!(chain.taps[1].latency.summary().p50 >= chain.taps[0].latency.summary().p50);
        } else {
            eprintln!(
                "chain not measured: {} has no `relay answer --forward`",
                binary.display()
            );
        }
        let fan_out = measure(
            &binary,
            (Transport::Quic, Mode::Datagram),
            Topology::FanOut { receivers: 2 },
            &config,
        )
        .expect("a 1 → 2 fan-out");
        check(&fan_out, 2);
        assert_eq!(fan_out.relays[2].role, "receiver 2");
    }

    #[test]
    fn status_lines_give_their_fields() {
        let line = "ready link=r2 signal=http://127.0.0.1:4 transport=quic mode=datagram in=127.0.0.1:5000 session=ab";
        assert_eq!(field(line, "in"), Some("127.0.0.1:5000"));
        assert_eq!(field(line, "signal"), Some("http://127.0.0.1:4"));
        assert_eq!(field(line, "metrics"), None);
        assert_eq!(
            signal_spec("http://h:1", Transport::RtpUdp, Mode::Unreliable, "node2"),
            "http://h:1,transport=rtp-udp,mode=unreliable,name=node2"
        );
    }
}
