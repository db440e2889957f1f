//! A [`Path`]: the two ends a run sends between, a relay link pair from
//! [`relay::loopback`], two raw UDP sockets, or two raw UDP sockets talking
//! through a pion relay ([`crate::pion`]), with the netsim proxy in the
//! middle when the scenario has an impairment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay::loopback::{LoopbackConfig, LoopbackPair, establish};
use relay_core::udp::{DEFAULT_SOCKET_BUFFER, bind_udp};
use relay_core::{LinkError, LinkStats, Packet, RelayLink};
use relay_netsim::{Direction, DirectionStats, ImpairmentConfig, Proxy, ProxyConfig};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::pion::{PionPair, relay_binary};
use crate::scenario::{Scenario, Subject};

/// Largest datagram the raw receiver reads.
const MAX_DATAGRAM: usize = 65_536;

/// Datagrams the raw receiver takes per wake-up before yielding, and
/// packets a link's receiver takes per `recv_batch`.
const RAW_RECV_BATCH: usize = 256;

/// The reorder window every link path in this process opens its repair
/// modes with, in microseconds (`relay-bench report --reorder-window`;
/// zero, the default, delivers repairs as they arrive).
static REORDER_WINDOW_US: AtomicU64 = AtomicU64::new(0);

/// Sets the reorder window of the repair modes for every path opened
/// after it (the report's `--reorder-window`, so the same matrix can be
/// run with and without one).
pub fn set_reorder_window(window: Duration) {
    REORDER_WINDOW_US.store(window.as_micros() as u64, Ordering::Relaxed);
}

fn reorder_window() -> Duration {
    Duration::from_micros(REORDER_WINDOW_US.load(Ordering::Relaxed))
}

/// One end of a path.
#[derive(Debug, Clone)]
pub enum End {
    /// A relay link end.
    Link(Arc<dyn RelayLink>),
    /// A raw UDP socket and where it sends.
    Udp {
        /// The socket.
        socket: Arc<UdpSocket>,
        /// Its peer (or the proxy in front of it).
        peer: SocketAddr,
    },
}

/// What became of a batch of sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentBatch {
    /// Packets taken by the link or the kernel.
    pub accepted: u64,
    /// Packets refused without waiting (full socket buffer, too large).
    pub dropped: u64,
    /// The link closed: the packets not taken are dropped.
    pub closed: bool,
}

/// What became of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Taken by the link or the kernel.
    Accepted,
    /// Refused without waiting (full socket buffer, too large).
    Dropped,
    /// The link is closed.
    Closed,
}

impl End {
    /// Sends one packet: a link's own `send` (waits only in reliable
    /// modes); raw UDP never waits and drops on a full socket buffer, like
    /// the unreliable transports.
    pub async fn send(&self, packet: Packet) -> Sent {
        match self {
            End::Link(link) => match link.send(packet).await {
                Ok(()) => Sent::Accepted,
                Err(LinkError::TooLarge { .. }) => Sent::Dropped,
                Err(LinkError::Closed(_)) => Sent::Closed,
            },
            End::Udp { socket, peer } => match socket.try_send_to(packet.bytes(), *peer) {
                Ok(_) => Sent::Accepted,
                Err(_) => Sent::Dropped,
            },
        }
    }

    /// Sends `packets` in order and takes them out of the vector: a link's
    /// own [`RelayLink::send_batch`] (rtp-udp puts runs of equal sizes on
    /// the wire in one GSO send), raw UDP one `sendto` per packet as
    /// [`send`](Self::send) does (it is the per-packet baseline). A packet
    /// the link refuses as too large is dropped and the rest still go.
    pub async fn send_batch(&self, packets: &mut Vec<Packet>) -> SentBatch {
        let mut result = SentBatch::default();
        match self {
            End::Link(link) => loop {
                let offered = packets.len() as u64;
                match link.send_batch(packets).await {
                    Ok(()) => {
                        result.accepted += offered;
                        break;
                    }
                    Err(LinkError::TooLarge { .. }) => {
                        result.accepted += offered - packets.len() as u64;
                        packets.remove(0);
                        result.dropped += 1;
                    }
                    Err(LinkError::Closed(_)) => {
                        result.accepted += offered - packets.len() as u64;
                        result.closed = true;
                        packets.clear();
                        break;
                    }
                }
            },
            End::Udp { .. } => {
                for packet in packets.drain(..) {
                    match self.send(packet).await {
                        Sent::Accepted => result.accepted += 1,
                        Sent::Dropped => result.dropped += 1,
                        Sent::Closed => result.closed = true,
                    }
                }
            }
        }
        result
    }

    /// Waits for at least one packet and hands each one that is there to
    /// `each` with its arrival time. Returns `false` once the end is closed.
    ///
    /// A relay link gives what it holds, up to a batch, through
    /// [`RelayLink::recv_batch`]; a raw socket is drained up to a batch per
    /// wake-up.
    pub async fn recv(&self, buf: &mut [u8], mut each: impl FnMut(&[u8], Instant)) -> bool {
        match self {
            End::Link(link) => {
                // Grown as packets come: a lone packet costs one small
                // allocation, not a whole batch's.
                let mut got = Vec::new();
                match link.recv_batch(&mut got, RAW_RECV_BATCH).await {
                    Ok(_) => {
                        let at = Instant::now();
                        for p in &got {
                            each(p.bytes(), at);
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            End::Udp { socket, .. } => {
                // The first datagram through tokio's own wait, the rest of
                // what is queued without waiting.
                match socket.recv(buf).await {
                    Ok(n) => each(&buf[..n], Instant::now()),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
                    Err(_) => return false,
                }
                for _ in 1..RAW_RECV_BATCH {
                    match socket.try_recv(buf) {
                        Ok(n) => each(&buf[..n], Instant::now()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors from a proxy that went away: not ours.
                        Err(_) => break,
                    }
                }
                true
            }
        }
    }

    /// Why the link closed, if it did (`None` for raw UDP).
    pub fn close_reason(&self) -> Option<String> {
        match self {
            End::Link(link) => link.close_reason().map(|r| r.to_string()),
            End::Udp { .. } => None,
        }
    }

    /// The link's counters (`None` for raw UDP).
    pub fn stats(&self) -> Option<LinkStats> {
        match self {
            End::Link(link) => Some(link.stats()),
            End::Udp { .. } => None,
        }
    }
}

/// Two ends and what sits between them. Packets go `sender` → `receiver`;
/// the reverse is used by ping-pong.
pub struct Path {
    /// What carries the packets.
    pub subject: Subject,
    /// Sending end (the offerer for links).
    pub sender: End,
    /// Receiving end.
    pub receiver: End,
    /// From starting to set up to both ends ready (links: offer made to
    /// both ends ready, in process, no HTTP).
    pub setup: Duration,
    /// The offering link's own setup time (its `LinkStats::setup_time`:
    /// connect → ready as the backend measures it).
    pub link_setup: Option<Duration>,
    pair: Option<LoopbackPair>,
    /// The pion relay's two processes (pion rows).
    pion: Option<PionPair>,
    raw_proxy: Option<Proxy>,
    /// Next RTP sequence number for `ping_pong` and `windowed`: it carries
    /// on across calls on one path, as one sender's stream does.
    next_seq: std::sync::atomic::AtomicU16,
    forward: Option<Direction>,
}

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Path")
            .field("subject", &self.subject)
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

impl Path {
    /// `planned` with this path's next RTP sequence number.
    fn numbered(&self, planned: crate::workload::Planned) -> crate::workload::Planned {
        crate::workload::Planned {
            rtp_seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            ..planned
        }
    }

    /// Sets up `subject` for `scenario` (a proxy seeded with `seed` when
    /// the scenario impairs the network).
    pub async fn open(subject: Subject, scenario: &Scenario, seed: u64) -> Result<Path, String> {
        let started = Instant::now();
        match subject {
            Subject::RawUdp => {
                let (a, b) = bound_pair().await?;
                let (a_addr, b_addr) = (local(&a)?, local(&b)?);
                // With a proxy, `a` is its client and `b` its target.
                let (raw_proxy, a_peer, b_peer) = match &scenario.impairment {
                    Some(impairment) => {
                        let proxy = Proxy::start(
                            ProxyConfig::new("127.0.0.1:0".parse().expect("literal address"), b_addr)
                                .impairment(impairment.clone())
                                .seed(seed),
                        )
                        .map_err(|e| format!("netsim proxy: {e}"))?;
                        let (l, t) = (proxy.local_addr(), proxy.target_side_addr());
                        (Some(proxy), l, t)
                    }
                    None => (None, b_addr, a_addr),
                };
                let forward = raw_proxy.as_ref().map(|_| Direction::Upstream);
                Ok(Path {
                    next_seq: Default::default(),
                    subject,
                    sender: End::Udp {
                        socket: Arc::new(a),
                        peer: a_peer,
                    },
                    receiver: End::Udp {
                        socket: Arc::new(b),
                        peer: b_peer,
                    },
                    setup: started.elapsed(),
                    link_setup: None,
                    pair: None,
                    pion: None,
                    raw_proxy,
                    forward,
                })
            }
            Subject::Pion(mode) => {
                // Built (or found cached) once per process, off the runtime's threads.
                let binary = tokio::task::spawn_blocking(relay_binary)
                    .await
                    .map_err(|e| format!("building the pion relay: {e}"))?
                    .map_err(|e| e.to_string())?;
                // `a` sends into the offerer and gets the way back from it;
                // `b` gets what the answerer takes out of the channel.
                let (a, b) = bound_pair().await?;
                let (pion, proxy) = PionPair::establish(
                    binary,
                    mode,
                    local(&a)?,
                    local(&b)?,
                    scenario.impairment.as_ref().map(|i| (i, seed)),
                )
                .await?;
                Ok(Path {
                    next_seq: Default::default(),
                    subject,
                    sender: End::Udp {
                        socket: Arc::new(a),
                        peer: pion.offerer_udp,
                    },
                    receiver: End::Udp {
                        socket: Arc::new(b),
                        peer: pion.answerer_udp,
                    },
                    setup: pion.setup,
                    link_setup: Some(pion.link_setup),
                    pair: None,
                    // As for our dc: the proxy targets the offerer, so the
                    // offerer's packets travel target → client.
                    forward: proxy.as_ref().map(|_| Direction::Downstream),
                    raw_proxy: proxy,
                    pion: Some(pion),
                })
            }
            Subject::Link(transport, mode) => {
                let mut config = LoopbackConfig::default();
                config.link.clock_rates = crate::workload::clock_rates();
                config.link.reorder_window = reorder_window();
                if let Some(impairment) = &scenario.impairment {
                    config = config.impairment(impairment.clone(), seed);
                }
                let pair = establish(transport, mode, &config)
                    .await
                    .map_err(|e| e.to_string())?;
                let link_setup = pair.offerer.stats().setup_time;
                Ok(Path {
                    next_seq: Default::default(),
                    subject,
                    sender: End::Link(pair.offerer.clone()),
                    receiver: End::Link(pair.answerer.clone()),
                    setup: pair.setup,
                    link_setup,
                    forward: pair.offerer_to_answerer(),
                    pair: Some(pair),
                    pion: None,
                    raw_proxy: None,
                })
            }
        }
    }

    fn proxy(&self) -> Option<&Proxy> {
        self.raw_proxy
            .as_ref()
            .or_else(|| self.pair.as_ref().and_then(|p| p.proxy()))
    }

    /// Replaces the proxy's impairment both ways at run time (an outage:
    /// `loss(1.0)`, then the scenario's own again). Fails on a path without
    /// a proxy.
    pub fn set_impairment(&self, config: ImpairmentConfig) -> Result<(), String> {
        let proxy = self
            .proxy()
            .ok_or("this path has no netsim proxy to change: give the scenario an impairment")?;
        proxy.set_config(config).map_err(|e| e.to_string())
    }

    /// The proxy's counters for sender → receiver and for the way back.
    pub fn netsim(&self) -> Option<(DirectionStats, DirectionStats)> {
        let stats = self.proxy()?.stats();
        Some(match self.forward? {
            Direction::Upstream => (stats.upstream, stats.downstream),
            Direction::Downstream => (stats.downstream, stats.upstream),
        })
    }

    /// The helper processes that carry this path (the pion relay's two
    /// peers), whose CPU time and memory a run adds to its own.
    pub fn helper_pids(&self) -> Vec<u32> {
        self.pion.as_ref().map(|p| p.pids().to_vec()).unwrap_or_default()
    }

    /// Datagrams the kernel dropped on the way into the path, before any
    /// relay took them: the pion relay's input socket overflowing (UDP
    /// into it has no back-pressure). `None` for the other paths, whose
    /// `send` takes or refuses each packet itself.
    pub fn ingress_drops(&self) -> Option<u64> {
        let pion = self.pion.as_ref()?;
        crate::sys::udp_socket_drops(pion.offerer_udp)
    }

    /// Closes both ends and stops the proxy (and the helper processes).
    pub async fn close(self) {
        if let Some(pair) = self.pair {
            pair.close().await;
        }
        if let Some(pion) = self.pion {
            pion.close().await;
        }
        drop(self.raw_proxy);
    }

    /// `rounds` ping-pongs of `size`-byte packets: the sender sends, the
    /// receiver echoes, the sender waits for the echo. Returns the total
    /// time and how many rounds completed (a round whose packet is lost
    /// gives up after `timeout`).
    pub async fn ping_pong(&self, rounds: u64, size: usize, timeout: Duration) -> (Duration, u64) {
        let echo = {
            let receiver = self.receiver.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                let mut back = Vec::new();
                loop {
                    back.clear();
                    let open = receiver
                        .recv(&mut buf, |b, _| back.push(bytes::Bytes::copy_from_slice(b)))
                        .await;
                    if !open {
                        return;
                    }
                    for b in back.drain(..) {
                        if let Ok(p) = Packet::parse(b) {
                            receiver.send(p).await;
                        }
                    }
                }
            })
        };
        let planned = crate::workload::Workload::ConstantRate { size, pps: 1 }
            .schedule(Duration::MAX)
            .next()
            .expect("a constant-rate schedule is never empty");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let started = Instant::now();
        let mut done = 0;
        for i in 0..rounds {
            // A fresh RTP sequence number per packet, as a real sender has:
            // SRTP refuses to encrypt a repeated one (GCM nonce reuse).
            let packet = crate::workload::stamp(&self.numbered(planned), i as u32, 0);
            if self.sender.send(packet).await == Sent::Closed {
                break;
            }
            let got = tokio::time::timeout(timeout, async {
                loop {
                    let mut found = false;
                    if !self
                        .sender
                        .recv(&mut buf, |b, _| {
                            found |= crate::workload::read_stamp(b).is_some_and(|s| s.index == i as u32)
                        })
                        .await
                    {
                        return false;
                    }
                    if found {
                        return true;
                    }
                }
            })
            .await;
            if got == Ok(true) {
                done += 1;
            }
        }
        let elapsed = started.elapsed();
        echo.abort();
        (elapsed, done)
    }

    /// Moves `total` packets of `size` bytes sender → receiver with at most
    /// `window` unacknowledged by the receiver (acknowledged in process,
    /// not on the wire): the throughput a link sustains without overload
    /// loss. Packets missing for `stall` are written off as lost. Returns
    /// the time from the first send to the last arrival and the packets
    /// delivered.
    pub async fn windowed(&self, total: u64, size: usize, window: u64, stall: Duration) -> (Duration, u64) {
        let received = Arc::new(AtomicU64::new(0));
        // Nanoseconds from `started` to the latest arrival.
        let last_ns = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let started = Instant::now();
        let receiver = {
            let (receiver, received, progress, last_ns) = (
                self.receiver.clone(),
                received.clone(),
                progress.clone(),
                last_ns.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while received.load(Ordering::Relaxed) < total {
                    let mut n = 0;
                    let mut last = started;
                    if !receiver
                        .recv(&mut buf, |_, at| {
                            n += 1;
                            last = at;
                        })
                        .await
                    {
                        break;
                    }
                    last_ns.store(last.duration_since(started).as_nanos() as u64, Ordering::Relaxed);
                    let now = received.fetch_add(n, Ordering::Relaxed) + n;
                    // Wake the sender once per eighth of a window.
                    if now % (window / 8).max(1) < n {
                        progress.notify_one();
                    }
                }
                progress.notify_one();
            })
        };
        let planned = crate::workload::Workload::Flood { size }
            .schedule(Duration::ZERO)
            .next()
            .expect("a flood schedule is endless");
        let mut written_off = 0u64;
        for i in 0..total {
            loop {
                let got = received.load(Ordering::Relaxed);
                if i < got + written_off + window {
                    break;
                }
                if tokio::time::timeout(stall, progress.notified()).await.is_err()
                    && received.load(Ordering::Relaxed) == got
                {
                    // Nothing arrived for `stall`: the window's worth is lost.
                    written_off = i - got;
                }
            }
            if self
                .sender
                .send(crate::workload::stamp(&self.numbered(planned), i as u32, 0))
                .await
                == Sent::Closed
            {
                break;
            }
        }
        // Wait for the tail, or give up on it after `stall` without
        // progress. (A wake-up may be a stale one from before the last
        // send, so progress is judged by the clock, not by one wait.)
        let mut seen = received.load(Ordering::Relaxed);
        let mut progressed = Instant::now();
        while seen + written_off < total {
            let _ = tokio::time::timeout(stall.min(Duration::from_millis(5)), progress.notified()).await;
            let now = received.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                progressed = Instant::now();
            } else if progressed.elapsed() >= stall {
                break;
            }
        }
        receiver.abort();
        let _ = receiver.await;
        let delivered = received.load(Ordering::Relaxed);
        (Duration::from_nanos(last_ns.load(Ordering::Relaxed)), delivered)
    }
}

/// Two UDP sockets on 127.0.0.1 with the relays' buffer sizes, ready to send.
async fn bound_pair() -> Result<(UdpSocket, UdpSocket), String> {
    let bind = || -> Result<UdpSocket, String> {
        let s = bind_udp(
            "127.0.0.1:0".parse().expect("literal address"),
            DEFAULT_SOCKET_BUFFER,
        )
        .map_err(|e| format!("raw UDP socket: {e}"))?;
        UdpSocket::from_std(s).map_err(|e| format!("raw UDP socket: {e}"))
    };
    let (a, b) = (bind()?, bind()?);
    // tokio learns a new socket's readiness from its first event loop
    // turn; until then `try_send_to` refuses with WouldBlock. Wait for it,
    // so the first packets of a run are not dropped (the links' sockets
    // are past this by the time they are ready).
    for s in [&a, &b] {
        s.writable().await.map_err(|e| format!("raw UDP socket: {e}"))?;
    }
    Ok((a, b))
}

fn local(s: &UdpSocket) -> Result<SocketAddr, String> {
    s.local_addr().map_err(|e| format!("raw UDP socket: {e}"))
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
