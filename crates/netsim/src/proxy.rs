//! The socket side: a UDP proxy that runs two [`Impairment`]s, one per direction.
//!
//! ```text
//!  client ──▶ listen socket ──[upstream Impairment]──▶ target socket ──▶ target (server)
//!  client ◀── listen socket ◀──[downstream Impairment]── target socket ◀── target
//! ```
//!
//! Two threads of its own, each small:
//!
//! - *netsim-rx* runs a single-threaded tokio runtime that receives on both
//!   sockets, stamps each datagram with `Instant::now()`, asks the
//!   direction's [`Impairment`] for a [`Decision`](crate::Decision), sends a copy due now
//!   straight away when nothing of that direction is still waiting (so a
//!   clean link adds no thread hop), and hands every other copy with its
//!   release time to the release thread.
//! - *netsim-release* keeps those copies in a [`DelayLine`] and sends each
//!   when its time comes.
//!
//! Why not a task on the caller's runtime sleeping with
//! `tokio::time::sleep_until`: tokio's timer wheel has a 1 ms resolution and
//! rounds every deadline *up* to the next millisecond tick: `sleep_until`
//! woke 0.9 ms late at the median and 1.9 ms at p99 on the two-core
//! benchmark machine, even at real-time priority — more than the whole error
//! budget of a 20 ms ± 1 ms scenario. A thread blocked in `recv_timeout`
//! waits on a futex with a high-resolution timeout (Linux wakes it within
//! its 50 µs default timer slack), and a new packet wakes it at once. Own
//! threads also keep the emulated network off the runtime of the relays
//! being measured: a busy relay must not delay the network's clock, and
//! a benchmark can give these threads real-time priority (they inherit the
//! policy of the thread that calls [`Proxy::start`], e.g. under `chrt`).
//! `tests/delay_accuracy.rs` measures the result.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use relay_core::udp::{DEFAULT_SOCKET_BUFFER, bind_udp};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::config::{ConfigError, ImpairmentConfig};
use crate::delay_line::DelayLine;
use crate::impairment::{DropCounts, Impairment, ImpairmentStats};

/// Largest UDP payload (IPv4: 65,535 − 8-byte UDP header − 20-byte IP header).
const MAX_DATAGRAM: usize = 65_507;

/// Copies the release thread moves from its channel into the delay line
/// between two looks at the clock. Pushing 256 takes a few microseconds, so
/// a due packet never waits long behind a flood of new arrivals.
const RELEASE_BATCH: usize = 256;

/// Which way a packet travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → target: what arrives on the listen address.
    Upstream,
    /// Target → client: replies from the target.
    Downstream,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Upstream => 0,
            Direction::Downstream => 1,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetsimError {
    /// An impairment setting is out of range.
    #[error("invalid impairment: {0}")]
    Config(#[from] ConfigError),
    /// A socket could not be bound or connected.
    #[error("cannot {action} {addr}: {source}")]
    Socket {
        /// What was being done ("listen on", "connect to").
        action: &'static str,
        /// The address involved.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// A proxy thread or its runtime could not be started.
    #[error("cannot start the netsim proxy's threads: {0}")]
    Thread(io::Error),
    /// A command-line flag was invalid ([`NetsimArgs::into_config`](crate::NetsimArgs::into_config)).
    #[error("{0}")]
    Args(String),
    /// Installing the signal handler failed.
    #[error("cannot install the Ctrl-C/SIGTERM handler: {0}")]
    Signal(io::Error),
}

/// Everything [`Proxy::start`] needs. Both directions are clean and the
/// seed is 0 unless set.
///
/// ```
/// use relay_netsim::{ImpairmentConfig, ProxyConfig};
/// use std::time::Duration;
///
/// let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:5004".parse().unwrap())
///     .impairment(ImpairmentConfig::default().loss(0.01))
///     .downstream(ImpairmentConfig::default().delay(Duration::from_millis(5)))
///     .seed(7);
/// assert_eq!(config.upstream.loss, 0.01);
/// assert_eq!(config.downstream.loss, 0.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Where the proxy listens: the address the client sends to. Port 0
    /// picks one; read it back with [`Proxy::local_addr`].
    pub listen: SocketAddr,
    /// The server packets are forwarded to.
    pub target: SocketAddr,
    /// Impairment of client → target packets.
    pub upstream: ImpairmentConfig,
    /// Impairment of target → client packets.
    pub downstream: ImpairmentConfig,
    /// Seed for both directions (each derives its own stream from it).
    pub seed: u64,
    /// `SO_RCVBUF`/`SO_SNDBUF` for both sockets.
    pub socket_buffer: usize,
}

impl ProxyConfig {
    /// A clean proxy from `listen` to `target`.
    pub fn new(listen: SocketAddr, target: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            listen,
            target,
            upstream: ImpairmentConfig::default(),
            downstream: ImpairmentConfig::default(),
            seed: 0,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
        }
    }

    /// The same impairment both ways.
    pub fn impairment(mut self, config: ImpairmentConfig) -> ProxyConfig {
        self.upstream = config.clone();
        self.downstream = config;
        self
    }

    /// The client → target impairment.
    pub fn upstream(mut self, config: ImpairmentConfig) -> ProxyConfig {
        self.upstream = config;
        self
    }

    /// The target → client impairment.
    pub fn downstream(mut self, config: ImpairmentConfig) -> ProxyConfig {
        self.downstream = config;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> ProxyConfig {
        self.seed = seed;
        self
    }

    /// Sets the socket buffer size.
    pub fn socket_buffer(mut self, bytes: usize) -> ProxyConfig {
        self.socket_buffer = bytes;
        self
    }
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that entered this direction's impairment.
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Copies sent on (duplicates included).
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Copies dropped by the impairment, by cause.
    pub dropped: DropCounts,
    /// Copies the operating system refused to send (for instance
    /// `ECONNREFUSED` after the target's port sent ICMP unreachable).
    pub send_errors: u64,
    /// Downstream only: datagrams from the target before any client was
    /// known, discarded without entering the impairment.
    pub unroutable: u64,
}

impl DirectionStats {
    /// Copies scheduled and not yet sent.
    pub fn in_flight(&self) -> u64 {
        (self.received + self.duplicated)
            .saturating_sub(self.dropped.total() + self.delivered + self.send_errors)
    }
}

/// Counters for both directions, from [`Proxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → target.
    pub upstream: DirectionStats,
    /// Target → client.
    pub downstream: DirectionStats,
    /// The client downstream packets go to: the source of the latest
    /// datagram on the listen address.
    pub client: Option<SocketAddr>,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    received_bytes: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    duplicated: AtomicU64,
    random_loss: AtomicU64,
    burst_loss: AtomicU64,
    queue_overflow: AtomicU64,
    delay_line_full: AtomicU64,
    send_errors: AtomicU64,
    unroutable: AtomicU64,
}

impl Counters {
    /// The model's counters; only the receive task writes these.
    fn publish(&self, s: ImpairmentStats) {
        self.received.store(s.received, Ordering::Relaxed);
        self.duplicated.store(s.duplicated, Ordering::Relaxed);
        self.random_loss.store(s.dropped.random_loss, Ordering::Relaxed);
        self.burst_loss.store(s.dropped.burst_loss, Ordering::Relaxed);
        self.queue_overflow
            .store(s.dropped.queue_overflow, Ordering::Relaxed);
        self.delay_line_full
            .store(s.dropped.delay_line_full, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received: get(&self.received),
            received_bytes: get(&self.received_bytes),
            delivered: get(&self.delivered),
            delivered_bytes: get(&self.delivered_bytes),
            duplicated: get(&self.duplicated),
            dropped: DropCounts {
                random_loss: get(&self.random_loss),
                burst_loss: get(&self.burst_loss),
                queue_overflow: get(&self.queue_overflow),
                delay_line_full: get(&self.delay_line_full),
            },
            send_errors: get(&self.send_errors),
            unroutable: get(&self.unroutable),
        }
    }
}

/// State the [`Proxy`] handle shares with its threads.
struct Shared {
    counters: [Counters; 2],
    /// Copies handed to the release thread and not yet sent, per direction.
    /// While it is non-zero, a copy due now must queue behind them.
    pending: [AtomicU64; 2],
    client: Mutex<Option<SocketAddr>>,
    /// Configurations set at run time, and a generation number the receive
    /// thread compares on every packet (one atomic load) to pick them up.
    configs: Mutex<[ImpairmentConfig; 2]>,
    generation: AtomicU64,
}

/// A running impairment proxy. Stopping it ([`Proxy::shutdown`], or
/// dropping it) closes both sockets and ends its threads.
///
/// The client is whoever sent the latest datagram to the listen address:
/// downstream packets go to that address, and a client that moves (NAT
/// rebinding, a restarted peer) is followed at its next packet. The address
/// is learned at the socket, before the impairment, so even a packet the
/// upstream impairment drops updates it. A packet already scheduled keeps
/// the address it was scheduled with. One client at a time: this is a link,
/// not a NAT.
///
/// ```
/// use relay_netsim::{ImpairmentConfig, Proxy, ProxyConfig};
/// use std::net::UdpSocket;
/// use std::time::{Duration, Instant};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = UdpSocket::bind("127.0.0.1:0")?;
/// let config = ProxyConfig::new("127.0.0.1:0".parse()?, server.local_addr()?)
///     .impairment(ImpairmentConfig::default().delay(Duration::from_millis(5)));
/// let proxy = Proxy::start(config)?;
///
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// let sent = Instant::now();
/// client.send_to(b"rtp", proxy.local_addr())?;
/// let mut buf = [0u8; 16];
/// let (n, from) = server.recv_from(&mut buf)?;
/// assert!(sent.elapsed() >= Duration::from_millis(5));
/// assert_eq!((&buf[..n], from), (&b"rtp"[..], proxy.target_side_addr()));
///
/// proxy.set_config(ImpairmentConfig::default().loss(1.0))?; // black hole
/// assert_eq!(proxy.stats().upstream.received, 1);
/// proxy.shutdown();
/// # Ok(())
/// # }
/// ```
pub struct Proxy {
    local_addr: SocketAddr,
    target_side_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.local_addr)
            .field("target_side_addr", &self.target_side_addr)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds both sockets and starts forwarding on two threads of the
    /// proxy's own. Needs no async runtime; works inside one too.
    pub fn start(config: ProxyConfig) -> Result<Proxy, NetsimError> {
        config.upstream.validate()?;
        config.downstream.validate()?;

        let listen_err = |source| NetsimError::Socket {
            action: "listen on",
            addr: config.listen,
            source,
        };
        let connect_err = |source| NetsimError::Socket {
            action: "connect to",
            addr: config.target,
            source,
        };
        let listen_std = bind_udp(config.listen, config.socket_buffer).map_err(listen_err)?;
        let local_addr = listen_std.local_addr().map_err(listen_err)?;
        // Toward the target: same address family, any port, connected so
        // the kernel filters out everyone but the target and picks the
        // source address the target will see.
        let any: IpAddr = match config.target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let target_std = bind_udp(SocketAddr::new(any, 0), config.socket_buffer).map_err(connect_err)?;
        target_std.connect(config.target).map_err(connect_err)?;
        let target_side_addr = target_std.local_addr().map_err(connect_err)?;
        // Sending goes through plain clones of the sockets: a non-blocking
        // send needs no readiness tracking from the runtime.
        let listen_send = listen_std.try_clone().map_err(listen_err)?;
        let target_send = target_std.try_clone().map_err(connect_err)?;
        let listen_now = listen_std.try_clone().map_err(listen_err)?;
        let target_now = target_std.try_clone().map_err(connect_err)?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetsimError::Thread)?;
        let (listen, target) = {
            let _context = runtime.enter();
            (
                UdpSocket::from_std(listen_std).map_err(listen_err)?,
                UdpSocket::from_std(target_std).map_err(connect_err)?,
            )
        };

        let shared = Arc::new(Shared {
            counters: Default::default(),
            pending: Default::default(),
            client: Mutex::new(None),
            configs: Mutex::new([config.upstream.clone(), config.downstream.clone()]),
            generation: AtomicU64::new(0),
        });
        let links = [
            Impairment::new(config.upstream, config.seed)?,
            // A different stream for the other direction, so a symmetric
            // configuration does not lose the same packet numbers both ways.
            Impairment::new(config.downstream, config.seed ^ 0x5EED_D0E5_0000_0001)?,
        ];

        let (release_tx, release_rx) = mpsc::channel();
        let port = local_addr.port();
        let releaser = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("netsim-release-{port}"))
                .spawn(move || release_loop(release_rx, listen_send, target_send, &shared))
                .map_err(NetsimError::Thread)?
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let receiver = ReceiveLoop {
            listen,
            target,
            listen_now,
            target_now,
            links,
            client: None,
            generation: 0,
            shared: shared.clone(),
            release: release_tx,
        };
        // If this fails, `receiver` (and with it the release channel) is
        // dropped, so the release thread ends by itself.
        let rx = std::thread::Builder::new()
            .name(format!("netsim-rx-{port}"))
            .spawn(move || runtime.block_on(receiver.run(stop_rx)))
            .map_err(NetsimError::Thread)?;
        tracing::debug!(listen = %local_addr, target = %config.target, "netsim proxy started");
        Ok(Proxy {
            local_addr,
            target_side_addr,
            shared,
            stop: Some(stop_tx),
            // The receive thread first: it owns the release channel.
            threads: vec![rx, releaser],
        })
    }

    /// The listen address: where the client sends.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the target sees proxied packets come from (for peers
    /// that only accept a signaled source address).
    pub fn target_side_addr(&self) -> SocketAddr {
        self.target_side_addr
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            upstream: self.shared.counters[0].snapshot(),
            downstream: self.shared.counters[1].snapshot(),
            client: *self.shared.client.lock().expect("netsim client lock"),
        }
    }

    /// Replaces the impairment in both directions. Applies to every datagram
    /// the proxy reads after this returns; packets already scheduled keep
    /// their release times. `loss(1.0)` black-holes the link, the default
    /// restores it.
    pub fn set_config(&self, config: ImpairmentConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut configs = self.shared.configs.lock().expect("netsim config lock");
        *configs = [config.clone(), config];
        self.shared.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Replaces the impairment of one direction.
    pub fn set_direction_config(
        &self,
        direction: Direction,
        config: ImpairmentConfig,
    ) -> Result<(), ConfigError> {
        config.validate()?;
        let mut configs = self.shared.configs.lock().expect("netsim config lock");
        configs[direction.index()] = config;
        self.shared.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Stops forwarding, closes both sockets and waits for the proxy's
    /// threads, which end at once (well under a millisecond). Packets still
    /// scheduled are discarded. Dropping the proxy does the same.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.take();
        for thread in self.threads.drain(..) {
            // A panic in a proxy thread has already been reported on stderr.
            let _ = thread.join();
        }
    }
}

/// One copy on its way out.
struct Outgoing {
    direction: Direction,
    data: Vec<u8>,
    /// Downstream: the client at scheduling time.
    to: Option<SocketAddr>,
}

struct ReceiveLoop {
    listen: UdpSocket,
    target: UdpSocket,
    /// For copies sent straight from here.
    listen_now: StdUdpSocket,
    target_now: StdUdpSocket,
    links: [Impairment; 2],
    client: Option<SocketAddr>,
    generation: u64,
    shared: Arc<Shared>,
    release: mpsc::Sender<(Instant, Outgoing)>,
}

impl ReceiveLoop {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut from_client = vec![0u8; MAX_DATAGRAM];
        let mut from_target = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                r = self.listen.recv_from(&mut from_client) => match r {
                    Ok((n, from)) => {
                        if self.client != Some(from) {
                            self.client = Some(from);
                            *self.shared.client.lock().expect("netsim client lock") = Some(from);
                            tracing::debug!(client = %from, "netsim client address learned");
                        }
                        self.forward(Direction::Upstream, &from_client[..n], None);
                    }
                    Err(e) if transient(&e) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "netsim listen socket failed; proxy stopped");
                        break;
                    }
                },
                r = self.target.recv(&mut from_target) => match r {
                    Ok(n) => match self.client {
                        Some(client) => self.forward(Direction::Downstream, &from_target[..n], Some(client)),
                        None => {
                            self.shared.counters[1].unroutable.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(e) if transient(&e) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "netsim target socket failed; proxy stopped");
                        break;
                    }
                },
            }
        }
        tracing::debug!("netsim proxy stopped");
    }

    fn forward(&mut self, direction: Direction, data: &[u8], to: Option<SocketAddr>) {
        let now = Instant::now();
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            let configs = self.shared.configs.lock().expect("netsim config lock").clone();
            for (link, config) in self.links.iter_mut().zip(configs) {
                // Validated by set_config.
                let _ = link.set_config(config);
            }
        }
        let i = direction.index();
        let decision = self.links[i].on_packet(now, data.len());
        let counters = &self.shared.counters[i];
        counters
            .received_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        counters.publish(self.links[i].stats());
        for at in decision.deliveries() {
            if at <= now && self.shared.pending[i].load(Ordering::Acquire) == 0 {
                // Due now and nothing of this direction ahead of it.
                let sent = match to {
                    None => self.target_now.send(data),
                    Some(client) => self.listen_now.send_to(data, client),
                };
                count_send(counters, sent);
                continue;
            }
            self.shared.pending[i].fetch_add(1, Ordering::AcqRel);
            let copy = Outgoing {
                direction,
                data: data.to_vec(),
                to,
            };
            // Fails only once the release thread is gone, i.e. at shutdown.
            let _ = self.release.send((at, copy));
        }
    }
}

fn count_send(counters: &Counters, sent: io::Result<usize>) {
    match sent {
        Ok(n) => {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            counters.delivered_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => {
            counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Receive errors that say nothing about our socket: ICMP port unreachable
/// from a target that is not listening (yet) arrives as `ECONNREFUSED` on
/// the connected socket.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The release thread: holds scheduled copies and sends each when due.
fn release_loop(
    rx: mpsc::Receiver<(Instant, Outgoing)>,
    listen: StdUdpSocket,
    target: StdUdpSocket,
    shared: &Shared,
) {
    let mut line: DelayLine<Outgoing> = DelayLine::new();
    loop {
        let now = Instant::now();
        while let Some(out) = line.pop_due(now) {
            let i = out.direction.index();
            let sent = match out.to {
                None => target.send(&out.data),
                Some(client) => listen.send_to(&out.data, client),
            };
            count_send(&shared.counters[i], sent);
            shared.pending[i].fetch_sub(1, Ordering::AcqRel);
        }
        let next = match line.next_due() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        match next {
            Ok((at, out)) => {
                line.push(at, out);
                // Take what else is waiting, but not so much that due
                // packets wait behind a flood of new ones.
                for _ in 0..RELEASE_BATCH {
                    let Ok((at, out)) = rx.try_recv() else { break };
                    line.push(at, out);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
