//! The socket loop: one task per link owns the sans-IO peer connection
//! (`rtc`), its UDP sockets and its clock.
//!
//! Each turn feeds the connection what happened (datagrams, an expired
//! timer, packets the application queued) and then drains everything it has
//! to say (datagrams, events, received messages) until it has nothing more.
//! How that draining is done is what makes setup take 2 ms instead of the
//! `webrtc` crate's 600 ms. Three steps of the handshake queue their output
//! as a side effect of handling an *event*, and the `webrtc` driver (its
//! `driver.rs` loop: `poll_writes`, then `poll_events`, then sleep until the
//! next deadline) only sends it at its next wake-up, about 200 ms later.
//! Measured with `webrtc` 0.21.1 on loopback: ICE connects 1.5 ms after the
//! answer, DTLS completes 150 ms later (7.5 ms with a 10 ms ICE check
//! interval: step 1 waits for the ICE agent's 200 ms check tick, rtc-ice
//! `DEFAULT_CHECK_INTERVAL`), and the channel opens 200-250 ms after that
//! whatever the ICE interval (steps 2 and 3):
//!
//! 1. ICE selects the pair: the DTLS handler's `handle_event` starts the
//!    client handshake, but the ClientHello stays in the DTLS endpoint until
//!    the handler's next `handle_timeout` moves it to the wire.
//! 2. DTLS completes: the SCTP handler queues the INIT and marks itself
//!    dirty; only a later `poll_write` sends it.
//! 3. SCTP completes: the data-channel handler queues the DCEP OPEN, again
//!    for a later `poll_write`; on the SCTP server side this raises no
//!    public event at all.
//!
//! So a turn here flushes writes, handles events, and if there were any
//! calls `handle_timeout(now)` once (every layer ignores a timer that is not
//! due; the DTLS handler moves queued flights) and goes round again, then
//! flushes writes once more. No timer needs shortening: ICE's triggered
//! checks (RFC 8445 section 7.3.1.4) already complete the checks in one
//! round trip.

mod events;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relay_core::{CloseReason, DropCause, Packet, Pushed};
use rtc::data_channel::RTCDataChannelId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use self::socket::{readable, verdict, writable};
use crate::link::Shared;
use crate::outbox::{Queued, expired};

pub(crate) use self::socket::Socket;

/// Datagrams read from one socket per wake-up before the loop lets the
/// connection answer (SACKs) and the application's queue in. Picked like
/// rtp-udp-relay's: large enough to amortise a turn of the loop, small
/// enough that SACKs leave promptly under a flood.
const RECV_BATCH: usize = 256;
/// Receive memory is carved from chunks this large and split off per
/// datagram without copying.
const RECV_CHUNK: usize = 256 * 1024;
/// While draining a burst, SACKs (and anything else queued) leave after
/// this many datagrams rather than once at the end: `rtc` coalesces the
/// acknowledgements of a burst into one SACK, and a sender waiting for it
/// would otherwise idle while we work through the whole burst.
const SACK_EVERY: usize = 32;
/// Largest datagram we read whole.
const MAX_DATAGRAM: usize = 65_536;
/// Messages taken from the connection per turn before looking at the
/// sockets again, so a flood cannot starve the timers.
const READ_BATCH: usize = 1024;

/// Shortest sleep between two timer wake-ups; see `run`.
const MIN_TIMER_WAIT: Duration = Duration::from_millis(1);

/// Which end of the signaling exchange this driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Created the channel; it is `channel` from the start.
    Offerer(RTCDataChannelId),
    /// Relays the first channel the offerer opens.
    Answerer,
}

/// Settings the loop needs.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig {
    pub(crate) send_buffer_limit: usize,
    pub(crate) send_queue: usize,
    pub(crate) receive_queue: usize,
    pub(crate) liveness_timeout: Duration,
    pub(crate) stats_interval: Duration,
    /// For the stats of the channel the peer opens.
    pub(crate) clock_rates: relay_core::ClockRates,
    /// The latency budget of an unreliable channel (`DcConfig::max_delay`).
    pub(crate) max_delay: Duration,
}

pub(crate) struct Driver {
    pub(crate) pc: RTCPeerConnection,
    pub(crate) sockets: Vec<Socket>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
    pub(crate) config: DriverConfig,
    /// When setup started (the offer was created, or the offer arrived).
    pub(crate) started: Instant,
    /// The relayed channel, once known and open.
    dc: Option<RTCDataChannelId>,
    /// A received packet the full (reliable) inbox refused.
    rx_pending: Option<Packet>,
    recv_buf: BytesMut,
    next_stats: Instant,
    /// When the connection next wants `handle_timeout`.
    deadline: Instant,
    /// A reliable inbox refused a packet since the last full read sweep, so
    /// SCTP may have parked a stream (see `read_messages`).
    parked: bool,
    /// The remote address of the ICE pair in use, once known: datagrams
    /// from anywhere else are dropped (see [`verdict`]). A relay link
    /// does not follow an ICE restart or a peer that moves.
    peer: Option<SocketAddr>,
}

enum Wake {
    Closed,
    Readable,
    Send(Queued),
    RxSpace,
    Writable,
    Timer,
}

impl Driver {
    pub(crate) fn new(
        pc: RTCPeerConnection,
        sockets: Vec<Socket>,
        shared: Arc<Shared>,
        role: Role,
        config: DriverConfig,
        started: Instant,
    ) -> Driver {
        Driver {
            pc,
            sockets,
            shared,
            role,
            next_stats: Instant::now() + config.stats_interval,
            config,
            started,
            dc: None,
            rx_pending: None,
            recv_buf: BytesMut::new(),
            deadline: Instant::now(),
            parked: false,
            peer: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let mut closed = shared.close.subscribe();
        loop {
            if shared.close.is_closed() {
                self.teardown();
                return;
            }
            let now = Instant::now();
            // The deadline asked for at the end of the last turn (asking again
            // costs a sweep of every handler).
            if self.deadline <= now
                && let Err(e) = self.pc.handle_timeout(now)
            {
                tracing::debug!(error = %e, "timer handling failed");
            }
            self.feed(now);
            self.pump(now);
            if now >= self.next_stats {
                self.next_stats = now + self.config.stats_interval;
                self.sample_rtt(now);
            }
            if shared.close.is_closed() {
                continue;
            }

            self.deadline = self.pc.poll_timeout().unwrap_or(now + Duration::from_secs(3600));
            // A deadline that is already due was handled at the top of this
            // turn; waking again within the same millisecond cannot advance
            // any protocol timer (they are millisecond-grained), only spin.
            let deadline = self.deadline.min(self.next_stats).max(now + MIN_TIMER_WAIT);
            let channel = if self.dc.is_some() {
                shared.channel.get()
            } else {
                None
            };
            let can_feed = channel.is_some() && self.writable();
            let wants_write = self.sockets.iter().any(|s| !s.pending.is_empty());
            let sockets = &self.sockets;
            let wake = tokio::select! {
                biased;
                _ = closed.changed() => Wake::Closed,
                _ = readable(sockets) => Wake::Readable,
                _ = writable(sockets), if wants_write => Wake::Writable,
                p = async { channel.expect("checked").outbox.pop().await }, if can_feed => match p {
                    Ok(q) => Wake::Send(q),
                    Err(_) => Wake::Closed,
                },
                _ = shared.rx_space.notified(), if self.rx_pending.is_some() => Wake::RxSpace,
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            match wake {
                Wake::Closed | Wake::Timer => {}
                Wake::Readable => self.drain_sockets(),
                Wake::Writable => {
                    for s in &mut self.sockets {
                        s.flush_pending(&shared.wire_drops);
                    }
                }
                Wake::Send(q) => self.send_one(q, Instant::now()),
                Wake::RxSpace => {}
            }
        }
    }

    /// The channel whose messages we take: the offerer's own from the start
    /// (a message can arrive in the very packet that completes the open),
    /// the answerer's once the peer has opened it.
    fn relayed(&self) -> Option<RTCDataChannelId> {
        match self.role {
            Role::Offerer(id) => Some(id),
            Role::Answerer => self.dc,
        }
    }

    /// Whether SCTP has room under the send-buffer limit.
    fn writable(&mut self) -> bool {
        let Some(id) = self.dc else { return false };
        self.pc
            .data_channel(id)
            .is_some_and(|dc| dc.outstanding_bytes() < self.config.send_buffer_limit)
    }

    /// Moves queued packets into SCTP while it is under the send-buffer
    /// limit (RFC 8831 section 6.6 leaves flow control to the application;
    /// this is ours).
    fn feed(&mut self, now: Instant) {
        let shared = self.shared.clone();
        let Some(ch) = shared.channel.get() else { return };
        if self.dc.is_none() {
            return;
        }
        while self.writable() {
            let Some(q) = ch.outbox.try_pop() else { return };
            self.send_one(q, now);
        }
    }

    fn send_one(&mut self, queued: Queued, now: Instant) {
        let (Some(id), Some(ch)) = (self.dc, self.shared.channel.get()) else {
            return;
        };
        // The latency budget, before SCTP sees the packet: one that waited
        // for the send buffer longer than the budget would only be late.
        // SCTP's own queues are bounded by the channel's packet lifetime.
        let budget = (!ch.mode.is_reliable()).then_some(self.config.max_delay);
        if expired(queued.at, now, budget) {
            ch.stats.on_drop(DropCause::Expired);
            return;
        }
        let packet = queued.packet;
        ch.stats.on_sent(&packet);
        // One packet, one binary message (PPID 53, RFC 8831 section 8).
        // `send` takes `BytesMut`: zero-copy when we hold the only reference.
        let data = packet
            .into_bytes()
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let sent = match self.pc.data_channel(id) {
            Some(mut dc) => dc.send(now, data),
            None => Err(rtc::shared::error::Error::ErrDataChannelClosed),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "data channel refused a message");
        }
    }

    fn drain_sockets(&mut self) {
        for i in 0..self.sockets.len() {
            for n in 1..=RECV_BATCH {
                if n % SACK_EVERY == 0 {
                    self.flush_writes();
                }
                if self.recv_buf.capacity() - self.recv_buf.len() < MAX_DATAGRAM {
                    self.recv_buf.reserve(RECV_CHUNK);
                }
                match self.sockets[i].udp.try_recv_buf_from(&mut self.recv_buf) {
                    Ok((_, from)) => {
                        if let Some(cause) = verdict(&self.recv_buf, from, self.peer) {
                            self.shared.wire_drops.add(cause, 1);
                            // Reuse the space: nothing is split off.
                            self.recv_buf.clear();
                            continue;
                        }
                        let message = self.recv_buf.split();
                        let local = self.sockets[i].local;
                        let input = TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr: local,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message,
                        };
                        if let Err(e) = self.pc.handle_read(input) {
                            tracing::trace!(error = %e, %from, "datagram refused");
                        }
                        // Take what it delivered before the next datagram: the
                        // pipeline bounds what it holds for us (256 messages),
                        // and what it cannot hold stays in SCTP's receive
                        // buffer, shrinking the window the next SACK offers.
                        // Until the answerer knows its channel, `pump` reads
                        // instead, after the events that name it.
                        if self.relayed().is_some() {
                            self.read_messages(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ICMP port unreachable and friends: liveness decides.
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive error");
                        break;
                    }
                }
            }
        }
    }

    /// Sends everything the connection has queued.
    fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let to = out.transport.peer_addr;
            let from = out.transport.local_addr;
            let i = self.sockets.iter().position(|s| s.local == from).unwrap_or(0);
            if let Some(s) = self.sockets.get_mut(i) {
                s.transmit(out.message, to, &self.shared.wire_drops);
            }
        }
    }

    /// Drains the connection until it has nothing more to say.
    ///
    /// Writes are flushed before the events, so replies leave in the order
    /// the input asked for them (the STUN response that completes the
    /// peer's nomination before the DTLS ClientHello that selection starts;
    /// the other way round the peer drops the ClientHello and retransmits it
    /// a second later). And after them: handling an event inside
    /// `poll_event` can queue output that raises no event of its own (the
    /// SCTP server's DCEP OPEN on COOKIE-ECHO).
    fn pump(&mut self, now: Instant) {
        loop {
            self.flush_writes();
            let mut saw_event = false;
            while let Some(event) = self.pc.poll_event() {
                saw_event = true;
                self.on_event(event, now);
            }
            if saw_event {
                // See the module docs: flushes a DTLS flight queued by the event.
                if let Err(e) = self.pc.handle_timeout(now) {
                    tracing::debug!(error = %e, "timer handling failed");
                }
            }
            let sweep = std::mem::take(&mut self.parked) || saw_event;
            self.read_messages(sweep);
            self.flush_writes();
            if !saw_event || self.shared.close.is_closed() {
                return;
            }
        }
    }

    /// Moves received messages to the inbox; returns whether any moved.
    /// `sweep`: also give the pipeline one full pass (see below).
    fn read_messages(&mut self, mut sweep: bool) -> bool {
        let mut moved = false;
        if let Some(p) = self.rx_pending.take() {
            if !self.deliver(p) {
                return false;
            }
            self.shared.rx_blocked.store(false, Ordering::Release);
            moved = true;
        }
        for _ in 0..READ_BATCH {
            // `poll_data_read` pops what `handle_read` delivered; `poll_read`
            // also sweeps all eight handlers of the pipeline, once per call,
            // which resumes SCTP streams parked by a full backlog (more than
            // 256 messages we did not take). We take them as they arrive, so
            // that only happens after a full reliable inbox made us stop
            // reading: then one sweep when the queue is empty. Stopping is the
            // back-pressure: the messages stay in SCTP's reassembly queue, its
            // advertised receive window shrinks, and the peer slows down
            // (RFC 9260 section 6.2).
            let next = match self.pc.poll_data_read() {
                Some(m) => Some(m),
                None if sweep => {
                    sweep = false;
                    self.pc.poll_read()
                }
                None => None,
            };
            let Some(TaggedRTCMessage { now, message }) = next else {
                break;
            };
            moved = true;
            let RTCMessage::DataChannelMessage(id, msg) = message else {
                continue;
            };
            if self.relayed() != Some(id) {
                tracing::debug!(channel = id, "message on a channel we do not relay");
                continue;
            }
            let Some(ch) = self.shared.channel.get() else {
                continue;
            };
            match Packet::parse(msg.data.freeze()) {
                Ok(p) => {
                    ch.stats.on_received(&p, now);
                    if !self.deliver(p) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "message is not RTP/RTCP");
                    ch.stats.on_drop(DropCause::Malformed);
                }
            }
        }
        moved
    }

    /// Pushes to the inbox; false when a reliable inbox is full (the
    /// packet is kept for later).
    fn deliver(&mut self, p: Packet) -> bool {
        let Some(ch) = self.shared.channel.get() else {
            return true;
        };
        match ch.inbox.push(p) {
            Pushed::Queued | Pushed::Closed(_) => true,
            Pushed::DroppedOldest => {
                ch.stats.on_drop(DropCause::ReceiveQueueFull);
                true
            }
            Pushed::Full(p) => {
                self.shared.rx_blocked.store(true, Ordering::Release);
                // Re-check after announcing: a `recv` between the push and the
                // store would not have signalled.
                match ch.inbox.push(p) {
                    Pushed::Full(p) => {
                        self.rx_pending = Some(p);
                        self.parked = true;
                        false
                    }
                    _ => {
                        self.shared.rx_blocked.store(false, Ordering::Release);
                        true
                    }
                }
            }
        }
    }

    /// Tells the peer (SCTP ABORT and DTLS close_notify, as W3C `close()`
    /// does) and sends it before the sockets go.
    fn teardown(&mut self) {
        if let Some(id) = self.dc
            && let Some(mut dc) = self.pc.data_channel(id)
        {
            let _ = dc.close();
        }
        if let Err(e) = self.pc.close() {
            tracing::debug!(error = %e, "closing peer connection");
        }
        self.flush_writes();
        while self.pc.poll_event().is_some() {}
        for s in &mut self.sockets {
            s.flush_pending(&self.shared.wire_drops);
        }
        if let Some(ch) = self.shared.channel.get() {
            let reason = self.shared.close.reason().unwrap_or(CloseReason::Local);
            ch.inbox.close(reason.clone());
            ch.outbox.close(reason);
        }
    }
}
