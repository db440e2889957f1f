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

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relay_core::{CloseReason, DropCause, DropCounters, Mode, Packet, Pushed};
use rtc::data_channel::RTCDataChannelId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use tokio::net::UdpSocket;

use crate::DcError;
use crate::link::{Channel, Shared, lock};
use crate::outbox::{Queued, expired};

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

/// Largest datagram a peer may send us: a jumbo frame's UDP payload
/// (9,000-byte MTU less IPv4 and UDP headers). WebRTC stacks size their
/// datagrams to the path MTU (ours: SCTP at 1,428 bytes in DTLS; browsers
/// and pion read at most 1,460), so anything longer is not from a peer.
const MAX_WIRE_DATAGRAM: usize = 8_972;
/// RFC 8489 section 5: the STUN header.
const STUN_HEADER_LEN: usize = 20;
/// RFC 6347 section 4.1: the DTLS record header.
const DTLS_HEADER_LEN: usize = 13;

/// Why a datagram cannot be for this connection, or `None` to hand it to
/// the stack. Cheapest test first, in the order every backend of the relay
/// uses: size, then whether the bytes can be ours at all (RFC 7983
/// demultiplexing: a data channel carries only STUN, first byte 0..=3, and
/// DTLS, 20..=63, each at least a header long; there is no TURN ChannelData,
/// 64..=79, as dc-relay gathers only host and `stun:` candidates), then the
/// source: once ICE
/// has selected a pair, only its remote address is heard (`peer`). The
/// stack would refuse all of these too, silently and after copying them
/// through its pipeline; here they cost a few comparisons and a count.
pub(crate) fn verdict(datagram: &[u8], from: SocketAddr, peer: Option<SocketAddr>) -> Option<DropCause> {
    if datagram.len() > MAX_WIRE_DATAGRAM {
        return Some(DropCause::TooLarge);
    }
    let shaped = match datagram.first() {
        Some(0..=3) => datagram.len() >= STUN_HEADER_LEN,
        Some(20..=63) => datagram.len() >= DTLS_HEADER_LEN,
        _ => false,
    };
    if !shaped {
        return Some(DropCause::Malformed);
    }
    match peer {
        Some(peer) if peer != from => Some(DropCause::UnknownSource),
        _ => None,
    }
}

/// Shortest sleep between two timer wake-ups; see `run`.
const MIN_TIMER_WAIT: Duration = Duration::from_millis(1);

/// One bound UDP socket: one ICE host candidate.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) udp: UdpSocket,
    pub(crate) local: SocketAddr,
    /// Datagrams the kernel refused (send buffer full), sent when writable.
    pending: VecDeque<(BytesMut, SocketAddr)>,
}

impl Socket {
    pub(crate) fn new(udp: UdpSocket, local: SocketAddr) -> Socket {
        Socket {
            udp,
            local,
            pending: VecDeque::new(),
        }
    }

    /// Sends, or queues while the kernel's buffer is full; a datagram the
    /// kernel refuses is counted in `drops` (see [`refused`]).
    fn transmit(&mut self, data: BytesMut, to: SocketAddr, drops: &DropCounters) {
        if !self.pending.is_empty() {
            self.pending.push_back((data, to));
            return;
        }
        match self.udp.try_send_to(&data, to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.pending.push_back((data, to)),
            Err(e) => refused(&e, data.len(), to, drops),
        }
    }

    fn flush_pending(&mut self, drops: &DropCounters) {
        while let Some((data, to)) = self.pending.front() {
            match self.udp.try_send_to(data, *to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => refused(&e, data.len(), *to, drops),
            }
            self.pending.pop_front();
        }
    }
}

/// Linux's EMSGSIZE (asm-generic/errno.h), which std reports only as
/// `ErrorKind::Uncategorized`.
const EMSGSIZE: i32 = 90;

/// Counts a datagram the kernel refused to send; it is lost, which every
/// layer above copes with (SCTP and DTLS retransmit, ICE checks again).
/// Longer than the path takes (EMSGSIZE) is `too_large`; any other refusal
/// (no buffer, a destination that cannot be reached or may not be sent to)
/// is `send_queue_full`, as rtp-udp-relay counts a refused send: the
/// kernel's send path is the link's last queue.
fn refused(e: &io::Error, len: usize, to: SocketAddr, drops: &DropCounters) {
    let cause = if cfg!(target_os = "linux") && e.raw_os_error() == Some(EMSGSIZE) {
        DropCause::TooLarge
    } else {
        DropCause::SendQueueFull
    };
    tracing::debug!(%to, len, error = %e, cause = cause.name(), "UDP send failed; datagram dropped");
    drops.add(cause, 1);
}

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

    fn on_event(&mut self, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => self.on_open(id, now),
            RTCPeerConnectionEvent::OnDataChannel(
                RTCDataChannelEvent::OnClose(id) | RTCDataChannelEvent::OnClosing(id),
            ) if self.dc == Some(id) => {
                self.shared.shutdown(CloseReason::PeerClosed);
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                *lock(&self.shared.ice_state) = state.to_string();
                match state {
                    RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed => {
                        let reason = if self.dc.is_some() {
                            CloseReason::LivenessTimeout(self.config.liveness_timeout)
                        } else {
                            CloseReason::Transport(format!("ICE {state} before the channel opened"))
                        };
                        self.shared.shutdown(reason);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Failed) => {
                self.shared.shutdown(CloseReason::Transport(
                    "peer connection failed (DTLS or ICE)".into(),
                ));
            }
            _ => {}
        }
    }

    fn on_open(&mut self, id: RTCDataChannelId, now: Instant) {
        if self.dc.is_some() {
            tracing::warn!(
                channel = id,
                "peer opened a second data channel; relaying only the first"
            );
            return;
        }
        match self.role {
            Role::Offerer(ours) if ours != id => return,
            Role::Offerer(_) => {}
            Role::Answerer => {
                let Some(dc) = self.pc.data_channel(id) else {
                    return;
                };
                let (label, ordered, max_retransmits, max_packet_life_time) = (
                    dc.label().to_string(),
                    dc.ordered(),
                    dc.max_retransmits(),
                    dc.max_packet_life_time(),
                );
                let Some(mode) = mode_of(ordered, max_retransmits, max_packet_life_time) else {
                    self.shared.fail(DcError::UnsupportedChannel {
                        label,
                        ordered,
                        max_retransmits,
                        max_packet_life_time,
                    });
                    return;
                };
                tracing::debug!(%label, %mode, "peer opened data channel");
                let _ = self.shared.channel.set(Channel::new(
                    mode,
                    self.config.send_queue,
                    self.config.receive_queue,
                    self.config.clock_rates.clone(),
                ));
            }
        }
        self.dc = Some(id);
        if let Some(peer_accepts) = self.pc.sctp().and_then(|sctp| sctp.max_message_size()) {
            self.shared.limit_packet_size(peer_accepts as usize);
        }
        self.lock_peer();
        if let Some(ch) = self.shared.channel.get() {
            ch.stats
                .set_setup_time(now.saturating_duration_since(self.started));
        }
        self.shared.ready.send_replace(true);
    }

    /// Learns the remote address of the selected ICE pair, after which
    /// [`verdict`] drops datagrams from anywhere else.
    fn lock_peer(&mut self) {
        if self.peer.is_some() {
            return;
        }
        let pair = self
            .pc
            .sctp()
            .and_then(|sctp| sctp.transport().ice_transport().get_selected_candidate_pair());
        self.peer = pair.and_then(|p| {
            let remote = p.remote();
            let ip: std::net::IpAddr = remote.address.parse().ok()?;
            Some(SocketAddr::new(ip, remote.port))
        });
        match self.peer {
            Some(peer) => tracing::debug!(%peer, "hearing only the selected ICE pair's remote address"),
            None => tracing::warn!(
                "the selected ICE pair's remote address is unknown; datagrams from other addresses are not filtered"
            ),
        }
    }

    fn sample_rtt(&mut self, now: Instant) {
        let Some(ch) = self.shared.channel.get() else {
            return;
        };
        if self.dc.is_none() {
            return;
        }
        // The ICE consent checks on the selected pair measure it (RFC 7675).
        let report = self.pc.get_stats(now, StatsSelector::None);
        let rtt = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p) if p.current_round_trip_time > 0.0 => {
                Some(p.current_round_trip_time)
            }
            _ => None,
        });
        if let Some(rtt) = rtt.filter(|r| r.is_finite()) {
            ch.stats.set_rtt(Duration::from_secs_f64(rtt));
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

/// RFC 8832 section 5.1 channel types onto relay modes: ordered and
/// reliable is `reliable`; unordered with maxRetransmits=0 (what pion and
/// browsers open) or with a packet lifetime (timed reliability, what our
/// offerer opens: see `DcConfig::max_delay`) is `unreliable`.
///
/// rtc 0.21.1 reports neither limit for a channel the peer opened
/// (`RTCDataChannelInternal::accept` sets both to `None`; the SCTP stream
/// itself gets the right reliability), so an unordered channel without
/// limits is taken for what relay peers open, maxRetransmits=0, and an
/// ordered partially reliable channel cannot be told from a reliable one.
pub(crate) fn mode_of(
    ordered: bool,
    max_retransmits: Option<u16>,
    max_packet_life_time: Option<u16>,
) -> Option<Mode> {
    match (ordered, max_retransmits, max_packet_life_time) {
        (true, None, None) => Some(Mode::Reliable),
        (false, Some(0) | None, None) | (false, None, Some(_)) => Some(Mode::Unreliable),
        _ => None,
    }
}

/// Resolves when any socket has a datagram to read.
async fn readable(sockets: &[Socket]) {
    poll_fn(|cx| {
        for s in sockets {
            if s.udp.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Resolves when a socket with refused datagrams can send again.
async fn writable(sockets: &[Socket]) {
    poll_fn(|cx| {
        for s in sockets.iter().filter(|s| !s.pending.is_empty()) {
            if s.udp.poll_send_ready(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_judged_by_size_then_shape_then_source() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let dtls = [&[23u8, 0xfe, 0xfd][..], &[0; 40]].concat();
        let stun = [&[0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42][..], &[0; 12]].concat();
        for ok in [&dtls, &stun] {
            assert_eq!(verdict(ok, peer, Some(peer)), None);
            assert_eq!(verdict(ok, stranger, None), None, "before ICE selected a pair");
            assert_eq!(verdict(ok, stranger, Some(peer)), Some(DropCause::UnknownSource));
        }
        for garbage in [
            &[][..],
            &dtls[..12],      // a cut DTLS record header
            &stun[..19],      // a cut STUN header
            &[0x80; 100][..], // RTP: not on a data-channel connection
            &[0x41; 100][..], // QUIC short header
            &[0xff; 1200][..],
        ] {
            assert_eq!(
                verdict(garbage, peer, Some(peer)),
                Some(DropCause::Malformed),
                "{garbage:?}"
            );
        }
        let mut big = dtls.clone();
        big.resize(MAX_WIRE_DATAGRAM, 0);
        assert_eq!(verdict(&big, peer, Some(peer)), None);
        big.push(0);
        assert_eq!(verdict(&big, stranger, Some(peer)), Some(DropCause::TooLarge));
    }

    #[test]
    fn channel_types_map_to_relay_modes() {
        assert_eq!(mode_of(true, None, None), Some(Mode::Reliable));
        assert_eq!(mode_of(false, Some(0), None), Some(Mode::Unreliable));
        assert_eq!(mode_of(false, None, None), Some(Mode::Unreliable));
        assert_eq!(mode_of(false, None, Some(200)), Some(Mode::Unreliable));
        // Other partially reliable variants have no relay mode.
        assert_eq!(mode_of(false, Some(3), None), None);
        assert_eq!(mode_of(true, None, Some(100)), None);
        assert_eq!(mode_of(true, Some(0), None), None);
    }
}
