//! The harness's ends of a tree: the paced sender into `relay offer` and
//! one receiving socket (a thread) behind each relay's `--out`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay_core::udp::{DEFAULT_SOCKET_BUFFER, bind_udp};

use super::TapResult;
use crate::latency::Latency;
use crate::workload::{Workload, read_stamp, stamp};

/// A harness socket behind one relay's `--out`: a thread records every
/// stamped packet's one-way latency until stopped.
pub(super) struct Tap {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub(super) delivered: Arc<AtomicU64>,
    /// Warm-up packets that arrived (not measured).
    warm: Arc<AtomicU64>,
    /// Nanoseconds since the epoch of the latest arrival.
    pub(super) last_ns: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<(TapResult, Vec<u64>)>>,
}

impl Tap {
    pub(super) fn start(name: String, epoch: Instant) -> Result<Tap, String> {
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
    pub(super) fn finish(mut self) -> (TapResult, Vec<u64>) {
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

/// Run-wide packet indexes from here up are warm-up packets: counted by
/// the taps, never measured.
const WARM_UP_INDEX: u32 = 0xFFFF_0000;

/// Warm-up packets reach every tap at least this often before a run.
const WARM_UP_PACKETS: u64 = 3;

/// The harness's sending socket.
pub(super) fn sender() -> Result<UdpSocket, String> {
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
pub(super) fn warm_up(
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
pub(super) fn send(
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
