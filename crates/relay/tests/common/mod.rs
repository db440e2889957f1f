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

/// The value of `key=value` in a status line, if there.
pub fn find_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// The value of `key=value` in a status line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    find_field(line, key).unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A loopback UDP address that was free a moment ago (bound, read, closed).
pub fn free_udp_addr() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP socket")
        .to_string()
}

/// A loopback TCP address that was free a moment ago.
pub fn free_tcp_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback TCP socket")
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

/// Starts `relay offer` to `url` over `transport`, relaying what arrives
/// on `input` (plus `extra` flags), and returns it with its stdout.
pub fn offer(url: &str, transport: &str, input: &str, extra: &[&str]) -> (Guard, BufReader<ChildStdout>) {
    let mut args = vec!["offer", "--signal", url, "--transport", transport, "--in", input];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// The whole response (status line, headers, body) to `GET path` on the
/// server at `url` (`http://host:port`, any path after it ignored;
/// HTTP/1.1, `Connection: close`, 5 s timeout).
pub fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(host).expect("connect signaling");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

/// The body of [`http_get`]'s response.
pub fn http_get_body(url: &str, path: &str) -> String {
    let response = http_get(url, path);
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("no HTTP body in {response:?}"),
    }
}

/// One IPv4 UDP socket of a process, as `/proc/net/udp` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUdpSocket {
    pub local: std::net::SocketAddr,
    pub inode: u64,
    /// Datagrams the kernel dropped on this socket (receive buffer full).
    pub drops: u64,
}

/// The IPv4 UDP sockets process `pid` holds (Linux: its fds in
/// `/proc/PID/fd` matched by inode against `/proc/net/udp`).
pub fn udp_sockets_of(pid: u32) -> Vec<ProcUdpSocket> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(inode.parse::<u64>().unwrap_or(0));
                }
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = f.get(1)?.split_once(':')?;
            let ip = u32::from_str_radix(addr, 16).ok()?;
            // The kernel prints the network-order address as a native u32.
            let ip = std::net::Ipv4Addr::from(ip.to_ne_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            let drops = f.get(12)?.parse().ok()?;
            inodes.contains(&inode).then_some(ProcUdpSocket {
                local: std::net::SocketAddr::new(ip.into(), port),
                inode,
                drops,
            })
        })
        .collect()
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmRSS in /proc/PID/status")
}

/// Reads the child's stderr to the end on a thread, so a chatty child never
/// blocks on a full pipe; the thread returns the last `keep` bytes.
pub fn drain_stderr(child: &mut Guard, keep: usize) -> std::thread::JoinHandle<String> {
    use std::io::Read;
    let mut err = child.0.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * keep {
                tail.drain(..tail.len() - keep);
            }
        }
        let start = tail.len().saturating_sub(keep);
        String::from_utf8_lossy(&tail[start..]).into_owned()
    })
}

/// Runs `program args` to completion; its stderr is the error when it fails.
/// For the tests that build networks (`ip`, `nft`, `conntrack`).
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}` (scripts/install-deps.sh installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the tests run as root (network namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// On the real stderr: the test harness captures `eprintln!`, and a skip
/// should be seen without `--nocapture`.
pub fn notice(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}
