//! Between two real SFUs: Janus 1.1.2 (Debian's `janus`) on both sides of the relay, with
//! aiortc as the WebRTC publisher and viewer.
//!
//! ```text
//! aiortc publisher --WebRTC--> Janus A videoroom --rtp_forward (audio, video, each with rtcp_port)-->
//!   relay offer --TRANSPORT MODE--> relay answer --> Janus B streaming mountpoint (rtp, audio and
//!   video on their own ports, each with its own RTCP port) --WebRTC--> aiortc viewer
//! ```
//!
//! For the direct baseline (Janus A forwarding straight into Janus B) and every line of
//! `relay transports`, two scenarios:
//! - **a, late viewer**: the forward runs; the viewer joins 3 s later;
//! - **b, forward added to a live stream**: the viewer already watches the mountpoint, then
//!   the rtp_forward is created.
//!
//! In both the viewer must decode at least 95% of the video frames the publisher sent from one
//! second after it joined (a) or after the forward was added (b). Each frame carries its number
//! in its pixels, so the count is exact. The room has no `fir_freq` and aiortc's VP8 encoder
//! sends a keyframe only every 3,000 frames unless asked: the viewer gets a picture only if
//! Janus B's keyframe request (PLI) crosses the relay back to Janus A's forwarder RTCP socket.
//!
//! The orchestrator is `tests/janus/scenario.py` (Janus configs, HTTP API, aiortc peers, the
//! relay processes); this test gives it a network namespace of its own, because Janus skips
//! loopback interfaces when it gathers ICE candidates. Inside: `lo` up and a veth pair
//! `sfr0`/`sfr1` with 10.77.0.1/24 on `sfr0` (a `dummy` interface works too where that kernel
//! module exists; veth always does). Janus gathers only on `sfr0` (`ice_enforce_list`).
//!
//! Needs root (CI runs as root), `janus` and iproute2 from `scripts/install-deps.sh`, and aiortc
//! in target/peers-venv from `scripts/install-python-peers.sh`. Skipped, with a notice on stderr,
//! only when not root or when network namespaces cannot be made. About 3 minutes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{is_root, notice, run};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
/// The namespace's own address and the interface that carries it.
const NS_IP: &str = "10.77.0.1";
const NS_IFACE: &str = "sfr0";
const NS_PEER_IFACE: &str = "sfr1";
/// The whole run takes about 3 minutes (14 scenarios of about 11 s, Janus starts in well under
/// a second); this bound only stops a hung run.
const BUDGET: Duration = Duration::from_secs(480);
const PASS_RATIO: f64 = 0.95;

#[test]
fn video_recovers_through_every_transport_between_two_janus_sfus() {
    if !is_root() {
        notice("SKIP janus: needs root to make a network namespace (Janus ignores loopback for ICE)");
        return;
    }
    let python = peers_python();
    check_janus();
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            notice(&format!("SKIP janus: cannot make a network namespace: {e}"));
            return;
        }
    };
    let workdir = std::env::temp_dir().join(format!("sfurelay-janus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).expect("create the work dir");

    let started = Instant::now();
    let run = Orchestrator::spawn(&ns, &python, &workdir);
    let (rows, exit) = run.collect(BUDGET);
    let elapsed = started.elapsed();

    let expected = expected_rows();
    let table = table(&expected, &rows);
    notice(&format!(
        "janus: {} scenarios in {:.0} s (work dir {}):\n{table}",
        rows.len(),
        elapsed.as_secs_f64(),
        workdir.display()
    ));

    let mut failures = Vec::new();
    if let Some(exit) = exit {
        failures.push(exit);
    }
    for key in &expected {
        match rows.get(key) {
            None => failures.push(format!("{}: no result", label(key))),
            Some(r) if !r.ok() => failures.push(format!("{}: {}", label(key), r.explain())),
            Some(_) => {}
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&workdir);
        return;
    }
    let baseline_broken = [("direct", "-", "a"), ("direct", "-", "b")]
        .iter()
        .any(|(t, m, s)| !rows.get(&key(t, m, s)).is_some_and(Row::ok));
    panic!(
        "{} of {} scenarios failed{}:\n  {}\n\nLogs (Janus, relays, orchestrator) are in {}; the tail of scenario.log:\n{}",
        failures.len(),
        expected.len(),
        if baseline_broken {
            " (the DIRECT baseline too: the setup is broken, not only the relay)"
        } else {
            ""
        },
        failures.join("\n  "),
        workdir.display(),
        tail(&workdir.join("scenario.log"), 40)
    );
}

/// (transport, mode, scenario) of every row the run must produce.
type Key = (String, String, String);

fn key(t: &str, m: &str, s: &str) -> Key {
    (t.to_string(), m.to_string(), s.to_string())
}

fn label((t, m, s): &Key) -> String {
    format!("{t} {m} scenario {s}")
}

fn expected_rows() -> Vec<Key> {
    let out = Command::new(RELAY)
        .arg("transports")
        .output()
        .expect("run `relay transports`");
    let mut links = vec![("direct".to_string(), "-".to_string())];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [t, m] => links.push((t.to_string(), m.to_string())),
            [] => {}
            _ => panic!("`relay transports` printed {line:?}, not `TRANSPORT MODE`"),
        }
    }
    links
        .into_iter()
        .flat_map(|(t, m)| ["a", "b"].map(|s| (t.clone(), m.clone(), s.to_string())))
        .collect()
}

/// One JSON line of scenario.py.
struct Row(serde_json::Value);

impl Row {
    fn num(&self, k: &str) -> Option<f64> {
        self.0.get(k).and_then(serde_json::Value::as_f64)
    }

    fn ok(&self) -> bool {
        self.0.get("error").is_none() && self.num("ratio").is_some_and(|r| r >= PASS_RATIO)
    }

    fn explain(&self) -> String {
        if let Some(e) = self.0.get("error").and_then(|e| e.as_str()) {
            return e.to_string();
        }
        format!(
            "decoded {} of {} frames ({:.1}%, need {:.0}%), first frame after {}, {} keyframe requests reached the publisher; relay logs {}",
            self.num("decoded").unwrap_or(0.0),
            self.num("sent").unwrap_or(0.0),
            100.0 * self.num("ratio").unwrap_or(0.0),
            100.0 * PASS_RATIO,
            self.num("first_frame_s")
                .map_or("never".to_string(), |s| format!("{s:.2} s")),
            self.num("keyframe_requests_at_publisher").unwrap_or(0.0),
            self.0
                .get("relay_logs")
                .map_or("-".to_string(), |l| l.to_string())
        )
    }
}

fn table(expected: &[Key], rows: &BTreeMap<Key, Row>) -> String {
    let mut t = format!(
        "  {:<9} {:<11} {:<3} {:>9} {:>7} {:>12} {:>7}  {}\n",
        "transport", "mode", "", "decoded", "ratio", "first frame", "PLIs", "result"
    );
    for k in expected {
        let (tr, m, s) = k;
        let line = match rows.get(k) {
            None => format!("  {tr:<9} {m:<11} {s:<3} {:>9}\n", "no result"),
            Some(r) => format!(
                "  {tr:<9} {m:<11} {s:<3} {:>9} {:>7} {:>12} {:>7}  {}\n",
                format!(
                    "{}/{}",
                    r.num("decoded").unwrap_or(0.0),
                    r.num("sent").unwrap_or(0.0)
                ),
                format!("{:.1}%", 100.0 * r.num("ratio").unwrap_or(0.0)),
                r.num("first_frame_s")
                    .map_or("never".to_string(), |s| format!("{s:.2} s")),
                r.num("keyframe_requests_at_publisher").unwrap_or(0.0),
                if r.ok() {
                    "ok".to_string()
                } else if let Some(e) = r.0.get("error").and_then(|e| e.as_str()) {
                    format!("FAIL: {e}")
                } else {
                    "FAIL".to_string()
                }
            ),
        };
        t.push_str(&line);
    }
    t
}

/// scenario.py running inside the namespace, in a process group of its own so that
/// everything it started (both Janus, the relays) can be stopped together.
struct Orchestrator {
    child: Child,
}

impl Orchestrator {
    fn spawn(ns: &Netns, python: &Path, workdir: &Path) -> Orchestrator {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/janus/scenario.py");
        let log = std::fs::File::create(workdir.join("scenario.log")).expect("create scenario.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(python)
            .arg("-u")
            .arg(script)
            .args(["--workdir"])
            .arg(workdir)
            .args(["--ip", NS_IP, "--iface", NS_IFACE, "--relay", RELAY])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start tests/janus/scenario.py");
        Orchestrator { child }
    }

    /// Reads JSON result lines until the orchestrator exits or `budget` runs out. Returns the
    /// rows and, if the run itself went wrong, why.
    fn collect(mut self, budget: Duration) -> (BTreeMap<Key, Row>, Option<String>) {
        let stdout = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + budget;
        let mut rows = BTreeMap::new();
        let mut problem = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(line) => match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
                        rows.insert((s("transport"), s("mode"), s("scenario")), Row(v));
                    }
                    Err(_) => notice(&format!("janus: scenario.py printed {line:?}")),
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                    problem = Some(format!("the run did not finish within {} s", budget.as_secs()));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        if problem.is_none() {
            match self.wait_exit(Duration::from_secs(15)) {
                Some(s) if s.success() => {}
                Some(s) => problem = Some(format!("scenario.py exited with {s}")),
                None => problem = Some("scenario.py did not exit after its last result".to_string()),
            }
        }
        (rows, problem)
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets scenario.py stop Janus and the relays itself; then the whole group goes.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// A network namespace with `lo` and a veth pair carrying NS_IP. Dropping it kills every
/// process still inside and deletes it (the veth pair goes with it).
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let name = format!("sfurelay-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        run("ip", &["-n", n, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                n,
                "link",
                "add",
                NS_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                NS_PEER_IFACE,
            ],
        )?;
        run(
            "ip",
            &["-n", n, "addr", "add", &format!("{NS_IP}/24"), "dev", NS_IFACE],
        )?;
        run("ip", &["-n", n, "link", "set", NS_IFACE, "up"])?;
        run("ip", &["-n", n, "link", "set", NS_PEER_IFACE, "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            notice(&format!(
                "janus: could not delete network namespace {}: {e}",
                self.name
            ));
        }
    }
}

/// The peers venv's python with aiortc; fails with what to run otherwise.
fn peers_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers-venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import aiortc, av"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no aiortc in {}: run scripts/install-python-peers.sh",
        python.display()
    );
    python
}

fn check_janus() {
    // `janus --version` prints the version and exits 1; `--help` exits 0.
    let ok = Command::new("janus")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`janus` is missing: run scripts/install-deps.sh (Debian's janus 1.1.2)"
    );
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
