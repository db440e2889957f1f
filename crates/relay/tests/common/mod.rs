//! Process helpers shared by the tests that run the `relay` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const RELAY: &str = env!("CARGO_BIN_EXE_relay");

/// Kills the child on every path.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits (bounded) for the child to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts `relay args` with stdout and stderr piped and no RELAY_TOKEN from
/// the environment.
pub fn spawn(args: &[&str]) -> (Guard, BufReader<ChildStdout>) {
    let mut child = Command::new(RELAY)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RELAY_TOKEN")
        .spawn()
        .expect("spawn relay");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (Guard(child), out)
}

/// The first stdout line (the `listening …` / `ready …` status line).
pub fn first_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read stdout");
    line
}

/// The value of `key=value` in a status line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A loopback UDP address that was free a moment ago (bound, read, closed).
pub fn free_udp_addr() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP socket")
        .to_string()
}

/// Starts `relay answer` relaying to `out` (plus `extra` flags) and returns
/// it with its signaling URL.
pub fn answer(out: &str, extra: &[&str]) -> (Guard, String) {
    let mut args = vec!["answer", "--signal-listen", "127.0.0.1:0", "--out", out];
    args.extend_from_slice(extra);
    let (child, mut stdout) = spawn(&args);
    let url = field(&first_line(&mut stdout), "signal").to_string();
    (child, url)
}
