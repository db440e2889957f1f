//! The ceiling: what this machine's loopback does with the max-rate
//! workload's 1,200-byte datagrams when nothing but UDP is in the way, so a
//! transport's max-rate figure can be read against the best the kernel
//! does from userspace, not only against the harness's own per-packet
//! `raw-udp` row.
//!
//! Three measurements, each one sender thread and one receiver thread on
//! loopback, run once per report on the clean network:
//!
//! - [`batched`] with [`Receive::Recvmmsg`]: `raw-udp batched`, GSO send
//!   (`UDP_SEGMENT`, [`GSO_SEGMENTS`] datagrams a call) and `recvmmsg`
//!   with GRO switched off, so the receiver still takes one datagram per
//!   message;
//! - [`batched`] with [`Receive::Gro`]: `raw-udp gso+gro`, the same sender
//!   and a receiver that gets coalesced runs of datagrams (`UDP_GRO`);
//! - [`iperf3`]: a third party's one-send-per-packet figure, to check the
//!   harness's per-packet baseline against ([`disagreement`]).
//!
//! Both batched rows go through `quinn-udp`, quinn's own socket layer.
//!
//! ```
//! use relay_bench::ceiling::{disagreement, DISAGREEMENT_LIMIT};
//! // The harness's per-packet baseline at 300k packets/s, iperf3 at 280k: within 20%.
//! assert!(disagreement(300_000.0, 280_000.0).unwrap() <= DISAGREEMENT_LIMIT);
//! ```

use std::io::{ErrorKind, IoSliceMut, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use relay_core::udp::{DEFAULT_SOCKET_BUFFER, bind_udp};

/// Datagrams per GSO send: what a small C program measuring this
/// machine's ceiling used (1,170k packets/s there); 40 × 1,200 = 48,000 bytes stays under the 65,507-byte
/// limit of one UDP send, which caps 1,200-byte segments at 54.
pub const GSO_SEGMENTS: usize = 40;

/// Each receive buffer: a GRO run is at most 64 segments and one 64 KiB
/// skb, so 128 KiB holds any of them.
const RECV_BUFFER: usize = 128 * 1024;

/// How long the receiver waits for more after the sender stopped: far
/// longer than loopback takes to hand over a full socket buffer.
pub const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// How the ceiling's receiver takes datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// `recvmmsg`, one datagram per message (GRO off).
    Recvmmsg,
    /// `recvmmsg` with `UDP_GRO`: runs of equal-size datagrams arrive as
    /// one buffer, split at the kernel's stride.
    Gro,
}

impl Receive {
    /// The report row: `raw-udp batched` or `raw-udp gso+gro`.
    pub fn label(self) -> &'static str {
        match self {
            Receive::Recvmmsg => "raw-udp batched",
            Receive::Gro => "raw-udp gso+gro",
        }
    }
}

/// What one ceiling measurement delivered.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Delivered {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams that arrived.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sender start to last arrival.
    pub time: Duration,
    /// Arrivals whose sequence number was below one already seen
    /// (loopback keeps order, so anything but zero is a harness bug).
    pub reordered: u64,
}

impl Delivered {
    /// Delivered datagrams per second.
    pub fn pps(&self) -> f64 {
        if self.time.is_zero() {
            0.0
        } else {
            self.datagrams as f64 / self.time.as_secs_f64()
        }
    }

    /// Delivered bits per second.
    pub fn bps(&self) -> f64 {
        if self.time.is_zero() {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.time.as_secs_f64()
        }
    }
}

/// Everything the ceiling measured in one report run.
#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    /// `raw-udp batched`: GSO send, recvmmsg without GRO; or why it could
    /// not run.
    pub batched: Option<Result<Delivered, String>>,
    /// `raw-udp gso+gro`.
    pub gso_gro: Option<Result<Delivered, String>>,
    /// `iperf3 -u -l 1200 -b 0` on loopback.
    pub iperf3: Option<Result<Delivered, String>>,
    /// CPU per byte at a fixed rate, per path ([`crate::cpu_per_byte`]).
    pub cpu: Vec<crate::cpu_per_byte::CpuRun>,
    /// The clock rate cycles are counted at, and where it came from.
    pub clock: Option<crate::cpu_per_byte::Clock>,
}

/// Writes `count` datagrams of `size` bytes back to back into `buf` (one
/// GSO send), each starting with its sequence number, `first` onward, as
/// a big-endian u64; the rest of each datagram is zeros. Only the last
/// datagram of a GSO send may be shorter than the segment size, so every
/// one here has the same size.
pub fn fill_batch(buf: &mut Vec<u8>, first: u64, count: usize, size: usize) {
    assert!(size >= 8, "a datagram carries an 8-byte sequence number");
    buf.clear();
    buf.resize(count * size, 0);
    for (i, datagram) in buf.chunks_exact_mut(size).enumerate() {
        datagram[..8].copy_from_slice(&(first + i as u64).to_be_bytes());
    }
}

/// The datagrams in one received buffer: `len` bytes cut at `stride`
/// (GRO), the last one possibly shorter; one datagram without GRO, where
/// the stride is the length.
pub fn datagrams<'a>(buf: &'a [u8], meta: &RecvMeta) -> impl Iterator<Item = &'a [u8]> + use<'a> {
    buf[..meta.len].chunks(meta.stride.max(1))
}

/// A loopback pair: a sender and a receiver socket with the same buffers
/// the per-packet `raw-udp` row has, in `quinn-udp`'s state, the receiver's
/// GRO as `receive` asks.
struct Pair {
    tx: UdpSocket,
    tx_state: UdpSocketState,
    rx: UdpSocket,
    rx_state: UdpSocketState,
    to: SocketAddr,
}

fn pair(receive: Receive) -> Result<Pair, String> {
    let bind = || {
        bind_udp(
            "127.0.0.1:0".parse().expect("literal address"),
            DEFAULT_SOCKET_BUFFER,
        )
        .map_err(|e| format!("loopback UDP socket: {e}"))
    };
    let (tx, rx) = (bind()?, bind()?);
    let tx_state = UdpSocketState::new((&tx).into()).map_err(|e| format!("quinn-udp: {e}"))?;
    // Switches GRO on where the kernel has it.
    let rx_state = UdpSocketState::new((&rx).into()).map_err(|e| format!("quinn-udp: {e}"))?;
    if tx_state.max_gso_segments() < GSO_SEGMENTS {
        return Err(format!(
            "this kernel offers {} GSO segments a send (UDP_SEGMENT), the ceiling needs {GSO_SEGMENTS}",
            tx_state.max_gso_segments()
        ));
    }
    match receive {
        Receive::Gro if rx_state.gro_segments() <= 1 => {
            return Err("this kernel has no UDP_GRO".into());
        }
        Receive::Gro => {}
        Receive::Recvmmsg => set_gro(&rx, false).map_err(|e| format!("switching UDP_GRO off: {e}"))?,
    }
    let to = rx.local_addr().map_err(|e| format!("loopback UDP socket: {e}"))?;
    Ok(Pair {
        tx,
        tx_state,
        rx,
        rx_state,
        to,
    })
}

fn set_gro(socket: &UdpSocket, on: bool) -> std::io::Result<()> {
    let value: libc::c_int = on.into();
    // SAFETY: a valid fd and a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits up to `timeout` for `events` on `socket` (the sockets are
/// non-blocking: `quinn-udp` makes them so).
fn wait(socket: &UdpSocket, events: libc::c_short, timeout: Duration) {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the result only tells whether to retry.
    unsafe {
        libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int);
    }
}

/// Floods `size`-byte datagrams for `duration` from one sender thread
/// (GSO, [`GSO_SEGMENTS`] a send; a full socket buffer makes it wait for
/// room, not drop) to one receiver thread (`receive`), and counts what
/// arrived. Bounded: the sender stops at `duration`, the receiver
/// [`DRAIN_IDLE`] after its last arrival and at most a second after the
/// sender.
pub fn batched(receive: Receive, size: usize, duration: Duration) -> Result<Delivered, String> {
    let Pair {
        tx,
        tx_state,
        rx,
        rx_state,
        to,
    } = pair(receive)?;
    let started = Instant::now();
    let sender_done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let sender_done = sender_done.clone();
        std::thread::Builder::new()
            .name("ceiling-rx".into())
            .spawn(move || receive_all(&rx, &rx_state, started, duration, &sender_done))
            .map_err(|e| format!("receiver thread: {e}"))?
    };
    let sent = send_all(&tx, &tx_state, to, size, started + duration);
    sender_done.store(true, Ordering::Release);
    let delivered = receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_string())?;
    Ok(Delivered {
        sent: sent?,
        ..delivered
    })
}

fn send_all(
    tx: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    size: usize,
    until: Instant,
) -> Result<u64, String> {
    let mut buf = Vec::with_capacity(GSO_SEGMENTS * size);
    let mut sent = 0u64;
    while Instant::now() < until {
        fill_batch(&mut buf, sent, GSO_SEGMENTS, size);
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &buf,
            segment_size: Some(size),
            src_ip: None,
        };
        match state.try_send(tx.into(), &transmit) {
            Ok(()) => sent += GSO_SEGMENTS as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(tx, libc::POLLOUT, Duration::from_millis(10)),
            Err(e) => return Err(format!("GSO send: {e}")),
        }
    }
    Ok(sent)
}

fn receive_all(
    rx: &UdpSocket,
    state: &UdpSocketState,
    started: Instant,
    duration: Duration,
    sender_done: &AtomicBool,
) -> Delivered {
    let batch = quinn_udp::BATCH_SIZE;
    let mut storage = vec![0u8; batch * RECV_BUFFER];
    let mut meta = vec![RecvMeta::default(); batch];
    let mut d = Delivered::default();
    let mut next = 0u64;
    let mut last = started;
    let hard_stop = started + duration + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now > hard_stop || (sender_done.load(Ordering::Acquire) && now.duration_since(last) > DRAIN_IDLE) {
            break;
        }
        let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(RECV_BUFFER).map(IoSliceMut::new).collect();
        match state.recv(rx.into(), &mut bufs, &mut meta) {
            Ok(n) => {
                last = Instant::now();
                for (buf, m) in bufs.iter().zip(&meta).take(n) {
                    for datagram in datagrams(buf, m) {
                        d.datagrams += 1;
                        d.bytes += datagram.len() as u64;
                        let seq = datagram
                            .get(..8)
                            .map_or(0, |s| u64::from_be_bytes(s.try_into().expect("8 bytes")));
                        if seq < next {
                            d.reordered += 1;
                        }
                        next = next.max(seq + 1);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(rx, libc::POLLIN, Duration::from_millis(20)),
            Err(_) => wait(rx, libc::POLLIN, Duration::from_millis(20)),
        }
    }
    d.time = last.duration_since(started);
    d
}

/// The per-packet baseline and iperf3 disagree beyond this share of
/// iperf3's figure: the report flags the run.
pub const DISAGREEMENT_LIMIT: f64 = 0.2;

/// How far the harness's per-packet `raw-udp` figure is from iperf3's, as
/// a share of iperf3's: |ours − iperf3| / iperf3. `None` when iperf3
/// delivered nothing.
pub fn disagreement(per_packet_pps: f64, iperf3_pps: f64) -> Option<f64> {
    (iperf3_pps > 0.0).then(|| (per_packet_pps - iperf3_pps).abs() / iperf3_pps)
}

/// The receiver's side of an `iperf3 -u --json` client report: datagrams
/// that arrived (sent less lost), their bytes, and the receiver's
/// seconds. iperf3 3.12 gives `end.sum_received`; older ones only
/// `end.sum`, whose `packets` are the sender's and `lost_packets` the
/// receiver's count.
pub fn parse_iperf3(json: &str, size: usize) -> Result<Delivered, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("iperf3 printed no JSON report ({e})"))?;
    if let Some(error) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {error}"));
    }
    let end = v.get("end").ok_or("iperf3's report has no `end`")?;
    let sum = end
        .get("sum_received")
        .or_else(|| end.get("sum"))
        .ok_or("iperf3's report has no `end.sum_received` or `end.sum`")?;
    let field = |name: &str| {
        sum.get(name)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("iperf3's report has no numeric `{name}`"))
    };
    let (packets, lost, seconds) = (field("packets")?, field("lost_packets")?, field("seconds")?);
    let sent = end
        .get("sum_sent")
        .and_then(|s| s.get("packets"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(packets);
    let datagrams = (packets - lost).max(0.0) as u64;
    Ok(Delivered {
        sent: sent as u64,
        datagrams,
        bytes: datagrams * size as u64,
        time: Duration::from_secs_f64(seconds.max(0.0)),
        reordered: 0,
    })
}

/// A child process killed and reaped when dropped, on every path.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `limit` for `child` to exit and returns what it printed;
/// kills it (through [`Reaped`]) when it does not.
fn output_within(child: Child, limit: Duration) -> Result<String, String> {
    let mut child = Reaped(child);
    let mut stdout = child.0.stdout.take().ok_or("no stdout pipe")?;
    // Read on the side so a full pipe never stalls the child.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                drop(child);
                let _ = reader.join();
                return Err(format!(
                    "iperf3 did not finish within {} s; killed",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for iperf3: {e}")),
        }
    }
    drop(child);
    reader
        .join()
        .map_err(|_| "reading iperf3's output failed".to_string())
}

/// Whether `iperf3` runs here; the error says what to install.
pub fn iperf3_available() -> Result<(), String> {
    match Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err("iperf3 is not installed (Debian `iperf3`; scripts/install-deps.sh installs it)".into())
        }
        Err(e) => Err(format!("iperf3 does not start: {e}")),
    }
}

/// `iperf3 -s -1` and `iperf3 -c 127.0.0.1 -u -l SIZE -b 0 -t SECS -w
/// 4M --json` on loopback: one send per datagram, as fast as it goes,
/// with the socket buffers the harness's `raw-udp` sockets have
/// ([`DEFAULT_SOCKET_BUFFER`]; with the kernel's default 208 KiB the
/// iperf3 server's buffer overflows and it measures that: half the rate
/// here). Both
/// processes are killed and reaped on every path; the client is retried
/// (at most 20 times, 100 ms apart) until the server listens.
pub fn iperf3(size: usize, secs: u32) -> Result<Delivered, String> {
    iperf3_available()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for iperf3: {e}"))?
        .port()
        .to_string();
    let _server = Reaped(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e}"))?,
    );
    let secs_arg = secs.max(1).to_string();
    let window = format!("{}K", DEFAULT_SOCKET_BUFFER / 1024);
    let size_arg = size.to_string();
    let mut last = String::new();
    for _ in 0..20 {
        let client = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "-l",
                &size_arg,
                "-b",
                "0",
                "-t",
            ])
            .args([&secs_arg, "-w", &window, "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -c: {e}"))?;
        let json = output_within(client, Duration::from_secs(u64::from(secs) + 10))?;
        match parse_iperf3(&json, size) {
            Ok(d) => return Ok(d),
            Err(e) if e.contains("unable to connect") => {
                last = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
#[path = "ceiling_tests.rs"]
mod tests;
