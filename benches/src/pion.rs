//! pion, the third-party baseline: two `tools/pion-relay` processes (Go,
//! pion/webrtc 3.1.56 from Debian) relaying UDP → data channel → UDP, set
//! up so the report measures them exactly as it measures our `dc` rows.
//!
//! The harness sends a workload's datagrams into the offerer's UDP port and
//! receives them from the answerer's, the way it drives raw UDP
//! ([`End::Udp`](crate::path::End::Udp)); the data channel between the two
//! pion peers crosses the same netsim proxy, placed the same way
//! ([`relay::loopback`]'s table, row `dc`): the proxy targets the offerer,
//! the offer's one ICE candidate is rewritten to the proxy's listen address
//! and the answer's to its target-side address, so every ICE, DTLS and SCTP
//! packet both ways crosses it and ICE has no way around it.
//!
//! The Go program is built on first use from the workspace's source with
//! the system's `go` and Debian's pion packages, offline (GOPATH mode,
//! `GOPROXY=off`), and cached under the cargo target directory by a hash of
//! its source and the Go version. Without them [`relay_binary`] says why,
//! and the report skips the rows with that notice.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use relay_bench::pion::{PionPair, relay_binary};
//! use relay_core::Mode;
//!
//! let binary = relay_binary().map_err(|e| e.to_string())?;
//! let out_a = "127.0.0.1:40000".parse().unwrap();
//! let out_b = "127.0.0.1:40001".parse().unwrap();
//! let (pair, proxy) = PionPair::establish(binary, Mode::Unreliable, out_a, out_b, None).await?;
//! println!("send into {}, receive from {} (setup {:?})", pair.offerer_udp, pair.answerer_udp, pair.setup);
//! assert!(proxy.is_none());
//! pair.close().await;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use relay_core::Mode;
use relay_netsim::{ImpairmentConfig, Proxy, ProxyConfig};
use tokio::sync::mpsc;

/// Longest wait for any setup step of a pion peer, on both sides of the
/// pipe (the program's own `-timeout` and the harness's reads): far above
/// the 2 s setup target, so a slow setup shows as slow, not as a failure.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a `go build` of the relay may take (a cold build of pion and its
/// dependencies is about 15 s on the 2-core machine, several times that
/// while other builds share it).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a peer gets to exit on its own after stdin closes before it
/// is killed.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Lines of a peer's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// The pion version the Debian package provides (the report names it).
pub const PION_PACKAGE: &str = "golang-github-pion-webrtc.v3-dev";

/// The Go program's source: `tools/pion-relay` in the workspace.
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/pion-relay")
}

/// Where built binaries and Go's build cache live: `pion-relay/` under the
/// cargo target directory (`CARGO_TARGET_DIR` at run time, else at build
/// time, else the workspace's `target/`).
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("pion-relay")
}

/// Why the pion relay cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No `go` on `PATH`.
    NoGo(String),
    /// The program's source is missing or unreadable.
    NoSource(String),
    /// `go build` failed (pion's packages missing, a compile error) or
    /// took longer than [`BUILD_TIMEOUT`].
    BuildFailed(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoGo(e) => write!(
                f,
                "no Go toolchain ({e}); scripts/install-deps.sh installs golang-go and {PION_PACKAGE}"
            ),
            Unavailable::NoSource(e) => write!(f, "cannot read the pion relay's source: {e}"),
            Unavailable::BuildFailed(e) => write!(
                f,
                "cannot build tools/pion-relay ({e}); scripts/install-deps.sh installs golang-go and {PION_PACKAGE}"
            ),
        }
    }
}

impl std::error::Error for Unavailable {}

/// The built relay, building it on the first call in this process (later
/// calls return the same answer).
pub fn relay_binary() -> Result<&'static FsPath, &'static Unavailable> {
    static BINARY: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    BINARY
        .get_or_init(|| build(&source_dir(), &cache_dir()))
        .as_ref()
        .map(PathBuf::as_path)
}

/// Builds `source` (main.go and its stub go.mod) into `cache`, unless a
/// binary of the same source and Go version is already there.
pub fn build(source: &FsPath, cache: &FsPath) -> Result<PathBuf, Unavailable> {
    let go_version = Command::new("go")
        .arg("version")
        .output()
        .map_err(|e| Unavailable::NoGo(format!("`go version`: {e}")))?;
    if !go_version.status.success() {
        return Err(Unavailable::NoGo(format!(
            "`go version` exited with {}",
            go_version.status
        )));
    }
    let read = |name: &str| {
        std::fs::read(source.join(name))
            .map_err(|e| Unavailable::NoSource(format!("{}: {e}", source.join(name).display())))
    };
    let (main_go, go_mod) = (read("main.go")?, read("go.mod")?);
    let key = fnv1a(&[&main_go, &go_mod, &go_version.stdout]);
    let binary = cache.join(format!("pion-relay-{key:016x}"));
    if binary.is_file() {
        return Ok(binary);
    }

    // GOPATH mode resolves `github.com/pion/webrtc/v3` to Debian's
    // /usr/share/gocode/src/github.com/pion/webrtc only for a program that
    // itself sits in a GOPATH tree with a go.mod (minimal module
    // compatibility), so the source is staged into one of our own.
    let failed = |what: &str, e: std::io::Error| Unavailable::BuildFailed(format!("{what}: {e}"));
    let gopath = cache.join("gopath");
    let staged = gopath.join("src/pion-relay");
    std::fs::create_dir_all(&staged).map_err(|e| failed("create the GOPATH", e))?;
    std::fs::write(staged.join("main.go"), &main_go).map_err(|e| failed("stage main.go", e))?;
    std::fs::write(staged.join("go.mod"), &go_mod).map_err(|e| failed("stage go.mod", e))?;
    // A name of our own, renamed into place when done: concurrent test
    // processes may build at the same time.
    let partial = cache.join(format!("pion-relay-{key:016x}.{}.partial", std::process::id()));
    let mut child = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(&staged)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            std::env::join_paths([gopath.as_path(), FsPath::new("/usr/share/gocode")])
                .map_err(|e| Unavailable::BuildFailed(format!("GOPATH: {e}")))?,
        )
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", cache.join("go-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed("start go build", e))?;
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let output = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < BUILD_TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Unavailable::BuildFailed(format!(
                    "go build took longer than {} s",
                    BUILD_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(failed("wait for go build", e)),
        }
    };
    let errors = output.join().unwrap_or_default();
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Unavailable::BuildFailed(format!(
            "go build exited with {status}: {}",
            errors.trim()
        )));
    }
    std::fs::rename(&partial, &binary).map_err(|e| failed("move the built binary into place", e))?;
    tracing::info!(binary = %binary.display(), took = ?started.elapsed(), "built the pion relay");
    Ok(binary)
}

/// FNV-1a over the parts: a cache key, not a security boundary.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// One running pion peer: the child, its stdin, its stdout as lines, and
/// the tail of its stderr. Dropping it kills the process.
pub struct PionPeer {
    role: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl std::fmt::Debug for PionPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PionPeer")
            .field("role", &self.role)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// One line the program prints on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Listening(SocketAddr),
    Description(String),
    Open(Duration),
}

fn parse_event(line: &str) -> Result<Event, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON event line ({e}): {line:?}"))?;
    let field = |name: &str| v.get(name).and_then(serde_json::Value::as_str);
    match field("event") {
        Some("listening") => field("udp")
            .and_then(|a| a.parse().ok())
            .map(Event::Listening)
            .ok_or_else(|| format!("listening without a UDP address: {line:?}")),
        Some("offer" | "answer") => field("sdp")
            .map(|s| Event::Description(s.to_string()))
            .ok_or_else(|| format!("description without sdp: {line:?}")),
        Some("open") => v
            .get("setup_us")
            .and_then(serde_json::Value::as_u64)
            .map(|us| Event::Open(Duration::from_micros(us)))
            .ok_or_else(|| format!("open without setup_us: {line:?}")),
        _ => Err(format!("unknown event: {line:?}")),
    }
}

impl PionPeer {
    /// Starts `binary` as `role` (`offer` or `answer`) in `mode`, sending
    /// what comes out of the channel to `udp_peer`.
    pub fn spawn(
        binary: &FsPath,
        role: &'static str,
        mode: Mode,
        udp_peer: SocketAddr,
    ) -> Result<PionPeer, String> {
        let mut child = Command::new(binary)
            .args(["-role", role, "-mode", mode.name(), "-udp-peer"])
            .arg(udp_peer.to_string())
            .arg("-timeout")
            .arg(format!("{}ms", SETUP_TIMEOUT.as_millis()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let (stdout, stderr_pipe) = (
            child.stdout.take().expect("stdout was piped"),
            child.stderr.take().expect("stderr was piped"),
        );
        // Blocking pipe readers on their own threads (they end when the
        // process does), feeding the async side.
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    tracing::debug!(target: "pion_relay", "{line}");
                    let mut tail = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        Ok(PionPeer {
            role,
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        })
    }

    /// The process id (for its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the peer said on stderr lately, for an error message.
    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() {
            "nothing on stderr".into()
        } else {
            tail.iter().cloned().collect::<Vec<_>>().join("; ")
        }
    }

    /// The next event, within [`SETUP_TIMEOUT`].
    async fn next(&mut self, waiting_for: &str) -> Result<Event, String> {
        match tokio::time::timeout(SETUP_TIMEOUT, self.lines.recv()).await {
            Ok(Some(line)) => parse_event(&line).map_err(|e| format!("pion {}: {e}", self.role)),
            Ok(None) => {
                // Give the stderr reader a moment to catch the last words.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(format!(
                    "pion {} exited before {waiting_for} ({}): {}",
                    self.role,
                    self.child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map_or("still running".into(), |s| s.to_string()),
                    self.stderr_tail()
                ))
            }
            Err(_) => Err(format!(
                "pion {}: no {waiting_for} within {} ms: {}",
                self.role,
                SETUP_TIMEOUT.as_millis(),
                self.stderr_tail()
            )),
        }
    }

    async fn expect_listening(&mut self) -> Result<SocketAddr, String> {
        match self.next("its UDP address").await? {
            Event::Listening(a) => Ok(a),
            e => Err(format!("pion {}: expected its UDP address, got {e:?}", self.role)),
        }
    }

    async fn expect_description(&mut self) -> Result<String, String> {
        match self.next("its description").await? {
            Event::Description(s) => Ok(s),
            e => Err(format!("pion {}: expected its description, got {e:?}", self.role)),
        }
    }

    async fn expect_open(&mut self) -> Result<Duration, String> {
        match self.next("an open data channel").await? {
            Event::Open(d) => Ok(d),
            e => Err(format!(
                "pion {}: expected the channel open, got {e:?}",
                self.role
            )),
        }
    }

    /// Hands the peer the other side's description (one JSON line on stdin).
    fn give(&mut self, sdp: &str) -> Result<(), String> {
        let line = serde_json::json!({ "sdp": sdp }).to_string() + "\n";
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        // One short line into an empty pipe: does not block.
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| {
                format!(
                    "pion {}: cannot write the description: {e}: {}",
                    self.role,
                    self.stderr_tail()
                )
            })
    }

    /// Closes stdin (the program's signal to exit), waits up to
    /// [`EXIT_GRACE`], then kills it.
    pub async fn close(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Drop kills it.
    }
}

impl Drop for PionPeer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        // Reap it (immediate after a kill), so no zombie is left.
        let _ = self.child.wait();
    }
}

/// Two pion peers with an open data channel between them.
#[derive(Debug)]
pub struct PionPair {
    /// The offering peer: datagrams sent to [`PionPair::offerer_udp`] go
    /// into the channel; what comes out of it is sent to its `udp_peer`.
    pub offerer: PionPeer,
    /// The answering peer.
    pub answerer: PionPeer,
    /// Where the offerer takes datagrams for the channel.
    pub offerer_udp: SocketAddr,
    /// Where the answerer takes datagrams for the channel (the way back).
    pub answerer_udp: SocketAddr,
    /// Offer read from the offerer to both channels open (process start
    /// not included: it is the harness's cost, not pion's).
    pub setup: Duration,
    /// The offerer's own peer connection created → channel open.
    pub link_setup: Duration,
}

impl PionPair {
    /// Starts both peers in `mode` (the offerer delivers to `offerer_out`,
    /// the answerer to `answerer_out`) and runs the offer/answer exchange,
    /// through a netsim proxy with `impairment` and its seed if given
    /// (returned with the pair). Every wait is bounded by
    /// [`SETUP_TIMEOUT`]; on any error both processes are killed.
    pub async fn establish(
        binary: &FsPath,
        mode: Mode,
        offerer_out: SocketAddr,
        answerer_out: SocketAddr,
        impairment: Option<(&ImpairmentConfig, u64)>,
    ) -> Result<(PionPair, Option<Proxy>), String> {
        if !matches!(mode, Mode::Reliable | Mode::Unreliable) {
            return Err(format!(
                "a pion data channel is reliable or unreliable, not {mode}"
            ));
        }
        let mut offerer = PionPeer::spawn(binary, "offer", mode, offerer_out)?;
        let mut answerer = PionPeer::spawn(binary, "answer", mode, answerer_out)?;
        let offerer_udp = offerer.expect_listening().await?;
        let answerer_udp = answerer.expect_listening().await?;
        let offer = offerer.expect_description().await?;
        let started = Instant::now();
        // The proxy's target is the offerer, whose candidate is final
        // before the answerer starts checking (relay::loopback's dc row).
        let (offer, answer_via, proxy) = match impairment {
            Some((impairment, seed)) => {
                let target = relay::loopback::first_udp_candidate(&offer)
                    .ok_or("pion offer: the SDP lists no UDP ICE candidate")?;
                let proxy = Proxy::start(
                    ProxyConfig::new(SocketAddr::new(target.ip(), 0), target)
                        .impairment(impairment.clone())
                        .seed(seed),
                )
                .map_err(|e| format!("netsim proxy to the pion offerer {target}: {e}"))?;
                let (routed, _) = relay::loopback::route_candidates(&offer, proxy.local_addr())
                    .map_err(|e| format!("pion offer: {e}"))?;
                (routed, Some(proxy.target_side_addr()), Some(proxy))
            }
            None => (offer, None, None),
        };
        answerer.give(&offer)?;
        let mut answer = answerer.expect_description().await?;
        if let Some(via) = answer_via {
            answer = relay::loopback::route_candidates(&answer, via)
                .map_err(|e| format!("pion answer: {e}"))?
                .0;
        }
        offerer.give(&answer)?;
        let link_setup = offerer.expect_open().await?;
        answerer.expect_open().await?;
        Ok((
            PionPair {
                offerer,
                answerer,
                offerer_udp,
                answerer_udp,
                setup: started.elapsed(),
                link_setup,
            },
            proxy,
        ))
    }

    /// Both process ids.
    pub fn pids(&self) -> [u32; 2] {
        [self.offerer.pid(), self.answerer.pid()]
    }

    /// Stops both peers (stdin closed, then killed after a grace period).
    pub async fn close(self) {
        tokio::join!(self.offerer.close(), self.answerer.close());
    }
}

#[cfg(test)]
#[path = "pion_tests.rs"]
mod tests;
