//! Process helpers shared by the tests that run the `relay` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
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

/// An RTP packet of SSRC 0x1234 whose payload starts with the
/// microseconds since `base` at which it is sent, padded to `size` bytes.
pub fn rtp(seq: u16, base: Instant, size: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x12, 0x34]);
    p.extend_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
    p.resize(size.max(20), 0xAB);
    p
}

/// A consumer behind one answering relay's `--out`: a thread records the
/// sequence number and one-way delay of every RTP packet until stopped.
pub struct Consumer {
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u16, Duration)>>>,
}

impl Consumer {
    pub fn start(base: Instant) -> Consumer {
        // A large receive buffer: a relay that resumes after a stall
        // delivers its backlog in one burst.
        let socket = relay_core::udp::bind_udp(
            "127.0.0.1:0".parse().unwrap(),
            relay_core::udp::DEFAULT_SOCKET_BUFFER,
        )
        .expect("bind a consumer");
        socket.set_nonblocking(false).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, stopped) = (socket.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: the test stops it, or two minutes pass.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, _)) = s.recv_from(&mut buf) else {
                    continue;
                };
                // RTP only (the second byte of RTCP is 192..=223).
                if n >= 20 && !(192..=223).contains(&buf[1]) {
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                    let delay = base.elapsed().saturating_sub(Duration::from_micros(sent));
                    got.push((seq, delay));
                }
            }
            got
        });
        Consumer {
            socket,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    /// Waits `quiet` for stragglers, stops, and returns what arrived.
    pub fn finish(mut self, quiet: Duration) -> Vec<(u16, Duration)> {
        std::thread::sleep(quiet);
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("consumer thread")
    }
}

/// The distinct sequence numbers and the largest one-way delay.
pub fn summary(got: &[(u16, Duration)]) -> (BTreeSet<u16>, Duration) {
    let seqs = got.iter().map(|(s, _)| *s).collect();
    let worst = got.iter().map(|(_, d)| *d).max().unwrap_or_default();
    (seqs, worst)
}

/// The offering relay's stdout, read on a thread so that waiting for a
/// status line is bounded in time.
pub struct StatusLines(mpsc::Receiver<String>);

impl StatusLines {
    pub fn new(out: BufReader<ChildStdout>) -> StatusLines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StatusLines(rx)
    }

    /// The next line starting with `prefix` within `within` (others skipped).
    pub fn wait_for(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => eprintln!("status: {line}"),
                Err(_) => break,
            }
        }
        panic!("no status line starting {prefix:?} within {within:?}")
    }
}

/// The value of sample `name{labels}` (labels exactly as rendered), or of
/// the family summed over every label set when `labels` is empty.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            if labels.is_empty() {
                *series == name || series.starts_with(&format!("{name}{{"))
            } else {
                *series == format!("{name}{{{labels}}}")
                    || (series.starts_with(&format!("{name}{{{labels},")))
            }
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .sum()
}

pub fn kill(signal: &str, child: &Guard) {
    let status = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal}");
}

/// Sends `count` packets to `input`, one every `gap`.
pub fn send_paced(input: &str, count: u16, gap: Duration, base: Instant, size: usize) {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    for seq in 0..count {
        // Paced against the start, so a slow iteration does not slow the rest.
        let due = started + gap * u32::from(seq);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sender.send_to(&rtp(seq, base, size), input).unwrap();
    }
}

/// Waits for a `ready` line from each of `names`; returns the metrics URL.
pub fn wait_ready(lines: &StatusLines, names: &[&str], within: Duration) -> String {
    let mut waiting: BTreeSet<&str> = names.iter().copied().collect();
    let mut metrics = String::new();
    let deadline = Instant::now() + within;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.wait_for("ready ", left);
        waiting.remove(field(&line, "link"));
        metrics = field(&line, "metrics").to_string();
    }
    metrics
}

/// A compound RTCP packet from `sender`: an RR about `media`, then, if
/// asked, a PLI for it.
pub fn receiver_feedback(sender: u32, media: u32, pli: bool) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    if pli {
        p.extend_from_slice(&[0x81, 206, 0, 2]);
        p.extend_from_slice(&sender.to_be_bytes());
        p.extend_from_slice(&media.to_be_bytes());
    }
    p
}
