//! [`QuicLink`]: one established RoQ connection driven as a
//! [`RelayLink`].
//!
//! The I/O is a handful of small tasks around the quinn connection:
//!
//! - `send` frames a datagram and queues it, stamped with the time, for
//!   the datagram feeder (datagram mode), or queues the packet for the
//!   stream writer (stream mode);
//! - the datagram feeder hands quinn what fits its small send buffer and
//!   drops what waited longer than the latency budget (`budget.rs`);
//! - a datagram reader and a stream acceptor (one reader task per peer
//!   stream) decode RoQ and feed the inbox, a [`PacketQueue`];
//! - a watcher turns the connection's end into a [`CloseReason`].
//!
//! Both receive paths run in both modes: RoQ lets a peer mix DATAGRAMs and
//! streams on one connection (section 3.2), and a relay takes what comes.
//! The mode decides what this side sends and the inbox policy.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use quinn::{ConnectionError, ReadError, RecvStream, SendDatagramError, SendStream, VarInt, WriteError};
use relay_core::backend::check_size;
use relay_core::{
    CloseReason, CloseSignal, DropCause, LinkError, LinkStats, Mode, Overflow, Packet, PacketQueue, Pushed,
    RelayLink, StatsRecorder, Transport,
};

use crate::budget::{Handover, Outbox, Queued, QuinnBuffer, Waiting, is_expired, send_allowance};
use crate::config::{MAX_STREAM_PACKET, MAX_STREAM_PACKET_RECEIVED, QUINN_DATAGRAM_SEND_BUFFER};
use crate::roq::{self, ErrorCode, StreamDecoder, StreamEvent};
use crate::socket::GuardedSocket;
use crate::{QuicConfig, QuicError};

mod tasks;

use self::tasks::{accept_streams, feed_datagrams, read_datagrams, watch, write_stream};

/// Packets the stream writer takes per write: enough to amortise the
/// connection lock and the wake-up, small enough to keep latency flat.
const WRITE_BATCH: usize = 64;

/// Stream-mode send queue in packets. QUIC flow control is the real
/// back-pressure; this only decouples `send` from the writer task.
const SEND_QUEUE: usize = 512;

/// Datagram-mode send queue in packets: a memory guard only, since the
/// latency budget bounds the queue by age first. 4,096 × 1,200 bytes is
/// 4.9 MB, 200 ms at 200 Mbit/s.
const DATAGRAM_QUEUE: usize = 4096;

/// Datagrams are framed into slices of a shared buffer of this size, so
/// framing allocates once per ~50 packets instead of once per packet.
const ARENA_BYTES: usize = 64 * 1024;

/// One established RoQ connection: a [`RelayLink`] in
/// [`Mode::Datagram`] or [`Mode::Stream`].
///
/// Dropping the link closes it (CONNECTION_CLOSE with ROQ_NO_ERROR).
pub struct QuicLink {
    shared: Arc<Shared>,
}

struct Shared {
    conn: quinn::Connection,
    mode: Mode,
    flow_id: u64,
    flow_id_len: usize,
    liveness_timeout: Duration,
    stats: StatsRecorder,
    signal: CloseSignal,
    inbox: PacketQueue,
    /// Stream mode: packets waiting for the writer task.
    outbox: PacketQueue,
    arena: Mutex<BytesMut>,
    /// Datagram mode: packets waiting for quinn, stamped when offered.
    datagram_queue: Mutex<Outbox<Outgoing>>,
    /// The latency budget (datagram mode).
    max_delay: Duration,
    /// Wakes the datagram feeder when the queue gets a packet.
    datagram_queued: tokio::sync::Notify,
    /// Datagram mode: what quinn's send buffer holds of ours.
    in_quinn: Mutex<QuinnBuffer<Outgoing>>,
    /// Last known largest datagram packet, so `send` checks sizes without
    /// taking quinn's connection lock.
    max_datagram_packet: AtomicUsize,
    malformed_logged: relay_core::backend::WarnOnce,
    /// The socket under the endpoint: what it dropped before quinn saw it
    /// is part of this link's drops.
    guard: Arc<GuardedSocket>,
    /// Where the peer was last seen: quinn moves the connection when a NAT
    /// rebinds it (see [`crate::socket`]); compared when stats are read.
    peer: Mutex<std::net::SocketAddr>,
    /// Keeps the endpoint (socket and driver) alive as long as the link.
    _endpoint: quinn::Endpoint,
}

/// A packet on its way to quinn: the packet (for the stats) and its RoQ
/// datagram.
#[derive(Debug)]
struct Outgoing {
    packet: Packet,
    datagram: Bytes,
}

/// What became of the packet the datagram feeder holds.
enum Step {
    /// Handed to quinn, or dropped and counted.
    Done,
    /// quinn is full of media within the budget: wait for room, or until
    /// the given time, when the oldest of it expires.
    Wait(Waiting<Outgoing>, Option<Instant>),
    /// The connection is gone.
    Closed,
}

impl QuicLink {
    /// Wraps an established connection (handshake confirmed on both sides)
    /// and starts its tasks.
    pub(crate) async fn start(
        endpoint: quinn::Endpoint,
        guard: Arc<GuardedSocket>,
        conn: quinn::Connection,
        mode: Mode,
        config: &QuicConfig,
        setup_time: Duration,
    ) -> Result<QuicLink, QuicError> {
        let peer = conn.remote_address();
        // Established: from now on the socket hears only the peer.
        guard.lock_peer(peer);
        if mode == Mode::Datagram && conn.max_datagram_size().is_none() {
            let what = "it did not negotiate QUIC DATAGRAM frames (RFC 9221), which datagram mode needs";
            close_with(&conn, ErrorCode::ExpectationUnmet, what);
            return Err(QuicError::ExpectationUnmet {
                peer,
                what: what.to_string(),
            });
        }
        let send_stream = if mode == Mode::Stream {
            // Waits for stream credit, which a RoQ peer must grant (section
            // 5.2.3); a peer that grants none would otherwise hang us here.
            match tokio::time::timeout(config.liveness_timeout, conn.open_uni()).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(source)) => return Err(QuicError::Handshake { peer, source }),
                Err(_) => {
                    let what = "it grants no unidirectional stream, which stream mode needs";
                    close_with(&conn, ErrorCode::ExpectationUnmet, what);
                    return Err(QuicError::ExpectationUnmet {
                        peer,
                        what: what.to_string(),
                    });
                }
            }
        } else {
            None
        };
        let stats = StatsRecorder::new(Transport::Quic, mode).with_clock_rates(config.clock_rates.clone());
        stats.set_setup_time(setup_time);
        stats.set_rtt(conn.rtt());
        let inbox_policy = if mode.is_reliable() {
            Overflow::Wait
        } else {
            Overflow::DropOldest
        };
        let shared = Arc::new(Shared {
            flow_id: config.flow_id,
            flow_id_len: roq::varint_len(config.flow_id).unwrap_or(8),
            liveness_timeout: config.liveness_timeout,
            stats,
            signal: CloseSignal::new(),
            inbox: PacketQueue::new(config.receive_queue, inbox_policy),
            outbox: PacketQueue::new(SEND_QUEUE, Overflow::Wait),
            arena: Mutex::new(BytesMut::new()),
            datagram_queue: Mutex::new(Outbox::new(DATAGRAM_QUEUE)),
            max_delay: config.max_delay,
            datagram_queued: tokio::sync::Notify::new(),
            in_quinn: Mutex::new(QuinnBuffer::new(QUINN_DATAGRAM_SEND_BUFFER)),
            max_datagram_packet: AtomicUsize::new(0),
            malformed_logged: relay_core::backend::WarnOnce::default(),
            mode,
            conn,
            guard,
            peer: Mutex::new(peer),
            _endpoint: endpoint,
        });
        shared.refresh_max_datagram_packet();
        tokio::spawn(watch(shared.clone()));
        tokio::spawn(read_datagrams(shared.clone()));
        tokio::spawn(accept_streams(shared.clone()));
        if let Some(send) = send_stream {
            tokio::spawn(write_stream(shared.clone(), send));
        } else {
            tokio::spawn(feed_datagrams(shared.clone()));
        }
        tracing::debug!(%peer, %mode, ?setup_time, "RoQ link ready");
        Ok(QuicLink { shared })
    }

    /// The peer's UDP address.
    pub fn remote_addr(&self) -> std::net::SocketAddr {
        self.shared.conn.remote_address()
    }

    /// QUIC-level counters (UDP datagrams, lost packets, congestion
    /// events, path MTU): what [`LinkStats`] cannot say about why packets
    /// went missing.
    pub fn connection_stats(&self) -> quinn::ConnectionStats {
        self.shared.conn.stats()
    }
}

impl Drop for QuicLink {
    fn drop(&mut self) {
        self.shared.close_local();
    }
}

impl fmt::Debug for QuicLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLink")
            .field("peer", &self.shared.conn.remote_address())
            .field("mode", &self.shared.mode)
            .field("flow_id", &self.shared.flow_id)
            .field("closed", &self.shared.signal.reason())
            .finish()
    }
}

fn close_with(conn: &quinn::Connection, code: ErrorCode, why: &str) {
    conn.close(VarInt::from_u32(code as u32), why.as_bytes());
}

/// How the end of a connection reads as a [`CloseReason`].
fn close_reason(err: &ConnectionError, liveness_timeout: Duration) -> CloseReason {
    match err {
        ConnectionError::LocallyClosed => CloseReason::Local,
        // The idle timeout is the liveness timeout (config.rs).
        ConnectionError::TimedOut => CloseReason::LivenessTimeout(liveness_timeout),
        ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == ErrorCode::NoError.value() => {
            CloseReason::PeerClosed
        }
        ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            let name = ErrorCode::from_value(code)
                .map(|c| c.to_string())
                .unwrap_or_else(|| format!("application error 0x{code:x}"));
            let why = String::from_utf8_lossy(&c.reason);
            CloseReason::Transport(format!("peer closed the connection with {name}: {why}"))
        }
        ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0 => CloseReason::PeerClosed,
        other => CloseReason::Transport(other.to_string()),
    }
}

impl Shared {
    /// Closes everything with `reason` unless already closed; returns
    /// whether this call closed it.
    fn shut(&self, reason: CloseReason) -> bool {
        let first = self.signal.close(reason);
        // The first reason wins everywhere, whoever got here first.
        let reason = self.signal.reason().unwrap_or(CloseReason::Local);
        self.inbox.close(reason.clone());
        self.outbox.close(reason);
        self.datagram_queued.notify_one();
        first
    }

    fn close_local(&self) {
        if self.shut(CloseReason::Local) {
            // RoQ section 6: CONNECTION_CLOSE with a section 7 code.
            close_with(&self.conn, ErrorCode::NoError, "");
        }
    }

    fn closed_error(&self) -> LinkError {
        LinkError::Closed(self.signal.reason().unwrap_or(CloseReason::Local))
    }

    fn refresh_max_datagram_packet(&self) -> usize {
        let max = self
            .conn
            .max_datagram_size()
            .map_or(0, |m| m.saturating_sub(self.flow_id_len));
        self.max_datagram_packet.store(max, Ordering::Relaxed);
        max
    }

    fn max_packet_size(&self) -> usize {
        match self.mode {
            Mode::Stream => MAX_STREAM_PACKET,
            _ => self.refresh_max_datagram_packet(),
        }
    }

    fn too_large(&self, size: usize, max: usize) -> LinkError {
        self.stats.on_drop(DropCause::TooLarge);
        LinkError::TooLarge { size, max }
    }

    /// Datagram mode: frame and queue for the feeder; never waits (RFC
    /// 9221 DATAGRAMs are not flow controlled). The packet's wait, which
    /// the latency budget bounds, starts here.
    fn send_datagram(&self, packet: Packet) -> Result<(), LinkError> {
        let len = packet.len();
        if len > self.max_datagram_packet.load(Ordering::Relaxed) {
            // Maybe the path MTU grew since; ask quinn before refusing.
            let max = self.refresh_max_datagram_packet();
            check_size(len, max).map_err(|_| self.too_large(len, max))?;
        }
        let datagram = {
            let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
            if arena.capacity() < self.flow_id_len + len {
                *arena = BytesMut::with_capacity(ARENA_BYTES.max(self.flow_id_len + len));
            }
            // Cannot fail: the flow id was validated in QuicConfig.
            let _ = roq::put_varint(self.flow_id, &mut *arena);
            arena.put_slice(packet.bytes());
            arena.split().freeze()
        };
        let queued =
            lock(&self.datagram_queue).push(Instant::now(), datagram.len(), Outgoing { packet, datagram });
        if queued == Queued::DroppedOldest {
            self.stats.on_drop(DropCause::SendQueueFull);
        }
        self.datagram_queued.notify_one();
        Ok(())
    }

    /// Counts as sent what quinn has taken from its buffer since last
    /// asked (its free space tells), so `packets_sent` means on the wire.
    fn sync_in_quinn(&self, in_quinn: &mut QuinnBuffer<Outgoing>) -> usize {
        let space = self.conn.datagram_send_buffer_space();
        in_quinn.sync(space, |w| self.stats.on_sent(&w.item.packet));
        space
    }

    /// The datagram feeder's step for one packet that is still within the
    /// budget: hand it to quinn now, or say until when to wait.
    fn hand_to_quinn(&self, waiting: Waiting<Outgoing>, allowance: Duration) -> Step {
        let now = Instant::now();
        let mut in_quinn = lock(&self.in_quinn);
        let space = self.sync_in_quinn(&mut in_quinn);
        let displaced = match in_quinn.handover(waiting.len, space, now, allowance) {
            Handover::Fits => 0,
            Handover::DisplaceExpired(n) => n,
            Handover::Wait(until) => return Step::Wait(waiting, until),
        };
        match self.conn.send_datagram(waiting.item.datagram.clone()) {
            Ok(()) => {
                // What quinn dropped to make room had waited past the budget.
                in_quinn.on_handed(waiting, displaced, |_| self.stats.on_drop(DropCause::Expired));
                Step::Done
            }
            Err(e) => {
                drop(in_quinn);
                self.datagram_refused(waiting.item.packet.len(), e)
            }
        }
    }

    /// quinn refused a datagram: count it, or end the feeder if the
    /// connection is gone.
    fn datagram_refused(&self, len: usize, e: SendDatagramError) -> Step {
        match e {
            SendDatagramError::TooLarge => {
                // The path MTU shrank after `send` checked the size.
                let max = self.refresh_max_datagram_packet();
                let _ = self.too_large(len, max);
                Step::Done
            }
            SendDatagramError::ConnectionLost(e) => {
                self.shut(close_reason(&e, self.liveness_timeout));
                Step::Closed
            }
            e => {
                // Checked at setup (ExpectationUnmet); kept for completeness.
                self.shut(CloseReason::Transport(format!("cannot send QUIC DATAGRAM: {e}")));
                Step::Closed
            }
        }
    }

    /// Stream mode: queue for the writer; waits while the queue is full,
    /// which it is while QUIC flow control holds the writer back.
    async fn send_stream(&self, packet: Packet) -> Result<(), LinkError> {
        let len = packet.len();
        check_size(len, MAX_STREAM_PACKET).map_err(|_| self.too_large(len, MAX_STREAM_PACKET))?;
        // A clone of `Packet` is a reference count, not a copy.
        match self.outbox.push_wait(packet.clone()).await {
            Ok(_) => {
                self.stats.on_sent(&packet);
                Ok(())
            }
            Err(_) => Err(self.closed_error()),
        }
    }

    fn note_malformed(&self, what: fmt::Arguments<'_>) {
        self.stats.on_drop(DropCause::Malformed);
        // Once per link: a peer sending garbage must not flood the log.
        if self.malformed_logged.first() {
            tracing::warn!(peer = %self.conn.remote_address(), "dropping malformed RoQ input: {what}");
        }
    }

    /// Accounts and queues a packet from a datagram: never waits.
    fn deliver_now(&self, packet: Packet) -> bool {
        self.stats.on_received(&packet, Instant::now());
        match self.inbox.push(packet) {
            Pushed::Queued => true,
            Pushed::DroppedOldest | Pushed::Full(_) => {
                self.stats.on_drop(DropCause::ReceiveQueueFull);
                true
            }
            Pushed::Closed(_) => false,
        }
    }

    /// Accounts and queues a packet from a stream: waits for room in stream
    /// mode, so the stream is not read faster than the application reads
    /// and QUIC flow control pushes back on the sender.
    async fn deliver_wait(&self, packet: Packet) -> bool {
        self.stats.on_received(&packet, Instant::now());
        match self.inbox.push_wait(packet).await {
            Ok(Pushed::DroppedOldest) => {
                self.stats.on_drop(DropCause::ReceiveQueueFull);
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl RelayLink for QuicLink {
    fn transport(&self) -> Transport {
        Transport::Quic
    }

    fn mode(&self) -> Mode {
        self.shared.mode
    }

    fn max_packet_size(&self) -> usize {
        self.shared.max_packet_size()
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &*self.shared;
        if s.signal.is_closed() {
            return Err(s.closed_error());
        }
        match s.mode {
            Mode::Stream => s.send_stream(packet).await,
            _ => {
                // Never waits for the network, but gives the scheduler a turn
                // every so often (tokio's cooperative budget): a sender
                // looping on `send` must not starve the connection driver
                // that empties quinn's datagram buffer on the same worker.
                tokio::task::consume_budget().await;
                s.send_datagram(packet)
            }
        }
    }

    async fn recv(&self) -> Result<Packet, LinkError> {
        self.shared.inbox.pop().await.map_err(LinkError::Closed)
    }

    fn stats(&self) -> LinkStats {
        let now_at = self.shared.conn.remote_address();
        let was = std::mem::replace(&mut *lock(&self.shared.peer), now_at);
        if was != now_at {
            self.shared.stats.on_peer_address_change();
            tracing::info!(old = %was, new = %now_at, "QUIC peer moved (a NAT rebinding): quinn validated the new path");
        }
        self.shared.stats.set_rtt(self.shared.conn.rtt());
        if self.shared.mode == Mode::Datagram {
            self.shared.sync_in_quinn(&mut lock(&self.shared.in_quinn));
        }
        let mut stats = self.shared.stats.snapshot();
        self.shared.guard.drops().add_to(&mut stats.drops);
        stats
    }

    fn close(&self) {
        self.shared.close_local();
    }

    async fn closed(&self) -> CloseReason {
        self.shared.signal.wait().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.shared.signal.reason()
    }
}
