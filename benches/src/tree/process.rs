//! The relays of one tree as child processes: started in order, each
//! waited for through its status lines (every wait bounded), all stopped
//! and reaped on every path out.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use relay_core::{Mode, Transport};

use super::tap::Tap;
use crate::sys;

/// The value of `key=value` in a status line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Bytes of a relay's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// One relay process: its stdout lines arrive on a channel (so every wait
/// for a status line is bounded), its stderr is drained into a tail.
pub(super) struct RelayProcess {
    pub(super) role: String,
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
            // Logging as deployed, whatever this shell asks for.
            .env_remove("RELAY_LOG");
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
pub(super) struct Relays(pub(super) Vec<RelayProcess>);

/// How long stopped relays get to end their sessions before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Relays {
    fn spawn(&mut self, binary: &FsPath, role: &str, args: Vec<String>) -> Result<&mut RelayProcess, String> {
        self.0.push(RelayProcess::spawn(binary, role, &args)?);
        Ok(self.0.last_mut().expect("just pushed"))
    }

    pub(super) fn cpu(&self) -> Vec<Option<Duration>> {
        self.0.iter().map(|r| sys::process_run_time(r.pid())).collect()
    }

    /// Relays that exited, and links that went down or failed.
    pub(super) fn problems(&mut self) -> Vec<String> {
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

    pub(super) fn stop(&mut self) {
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

/// The relay's `--signal` value for one link.
fn signal_spec(url: &str, transport: Transport, mode: Mode, name: &str) -> String {
    format!("{url},transport={transport},mode={mode},name={name}")
}

/// Starts the chain's answering relays, last first (each forwards to the
/// one started before it), then `relay offer` into node 1; returns the
/// address to send into.
pub(super) fn start_chain(
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
pub(super) fn start_fan_out(
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

#[cfg(test)]
mod tests {
    use super::*;

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
