//! [`RepairLink`]: any unreliable [`RelayLink`] with the repair loop on
//! top. Whoever reads the inner link (the application's `recv`, or the
//! link's driver task while the application does not read; see
//! `handover.rs`) hands each packet to the repair loop: hop NACKs are
//! answered from the retransmission buffer, media goes through the loss
//! detector (which drops duplicates and late repairs), everything else is
//! delivered as it came. Missing packets are asked for as soon as a gap
//! shows, and again each RTT while the budget allows (the driver's timer).
//! A stream that goes quiet gets its last packet sent once more after
//! [`probe_after`] (the tail probe, `sender.rs`), on the same driver.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use relay_core::{
    CloseReason, LinkError, LinkStats, Mode, Overflow, Packet, PacketKind, PacketQueue, Pushed, RelayLink,
    RepairStats, Transport, build_rtp,
};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::handover::Handover;
use crate::receiver::{Arrival, LossDetector};
use crate::reorder::ReorderWindow;
use crate::sender::{DEFAULT_REPAIR_SHARE, RetransmitBuffer, probe_after};
use crate::wire::{build_nacks, parse_nacks};

/// How often the link looks for packets to ask for again while some are
/// missing: a fraction of any WAN RTT, and cheap (one pass over the
/// missing set).
const TICK: Duration = Duration::from_millis(5);

/// RTT assumed until the inner link measures one: a continental path.
/// Too high only gives up on a packet early; too low asks twice.
const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// How stale the cached RTT may get (reading it takes a stats snapshot).
const RTT_REFRESH: Duration = Duration::from_millis(250);

/// The time on tokio's clock (which tests can pause and advance), as the
/// sans-IO parts take it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How a [`RepairLink`] repairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepairConfig {
    /// The latency budget: packets are kept this long for retransmission,
    /// and a missing packet is asked for only while its repair can still
    /// arrive within it.
    pub budget: Duration,
    /// Retransmitted bytes allowed per media byte sent (the amplification
    /// cap).
    pub share: f64,
    /// Packets held for the application before the oldest is dropped.
    pub receive_queue: usize,
    /// Deliver each SSRC in sequence order, holding packets behind a gap
    /// for at most this long ([`ReorderWindow`]); zero (the default)
    /// delivers every packet as it arrives and leaves order to the
    /// receiving media server's jitter buffer.
    pub reorder_window: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            budget: relay_core::DEFAULT_MAX_DELAY,
            share: DEFAULT_REPAIR_SHARE,
            receive_queue: 4096,
            reorder_window: Duration::ZERO,
        }
    }
}

struct Shared {
    inner: Arc<dyn RelayLink>,
    mode: Mode,
    budget: Duration,
    buffer: Mutex<RetransmitBuffer>,
    detector: Mutex<LossDetector>,
    inbox: PacketQueue,
    /// The inner link resends by number (`RelayLink::resends_by_number`):
    /// the buffer keeps no bytes.
    by_number: bool,
    /// Set by every delivery to `inbox`, cleared by a `recv` that looks:
    /// false means `inbox` is empty (see `queued_packet`).
    queued: AtomicBool,
    /// `Some` with a reorder window.
    reorder: Option<Mutex<ReorderWindow>>,
    rtt: Mutex<(Duration, Option<Instant>)>,
    nacks_sent: AtomicU64,
    nacks_received: AtomicU64,
    inbox_full: AtomicU64,
    /// The driver's tail probe timer is set (or it is about to look):
    /// while false, `send` nudges it once.
    probe_armed: AtomicBool,
    handover: Handover,
}

/// What [`Shared::judge`] made of a packet from the inner link.
enum Judged {
    /// Deliver it now.
    Deliver(Packet),
    /// Nothing to deliver (a duplicate, a late repair, one the reorder
    /// window holds).
    Nothing,
    /// A new gap showed: ask for it now (what was deliverable is queued).
    Ask(Instant),
    /// A NACK: send these again (SSRC, sequence number, and the bytes,
    /// empty where the inner link resends by number).
    Answer(Vec<(u32, u16, Bytes)>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is plain bookkeeping; a panic inside one
    // leaves the state as consistent as any other moment's.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An unreliable link that repairs its losses within a latency budget;
/// see the crate docs.
pub struct RepairLink {
    shared: Arc<Shared>,
    driver: JoinHandle<()>,
}

impl fmt::Debug for RepairLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepairLink")
            .field("inner", &self.shared.inner)
            .field("mode", &self.shared.mode)
            .finish_non_exhaustive()
    }
}

impl RepairLink {
    /// Puts the repair loop on `inner` (an established unreliable link)
    /// and reports itself as `mode`. Both ends of a hop must be wrapped:
    /// an unwrapped peer would receive the NACKs as RTCP and pass them on
    /// to its media server.
    pub fn new(inner: Arc<dyn RelayLink>, mode: Mode, config: RepairConfig) -> RepairLink {
        let by_number = inner.resends_by_number();
        let shared = Arc::new(Shared {
            inner,
            mode,
            budget: config.budget,
            buffer: Mutex::new(RetransmitBuffer::new(config.budget, config.share)),
            detector: Mutex::new(LossDetector::new(config.budget)),
            inbox: PacketQueue::new(config.receive_queue, Overflow::DropOldest),
            by_number,
            queued: AtomicBool::new(false),
            reorder: (!config.reorder_window.is_zero())
                .then(|| Mutex::new(ReorderWindow::new(config.reorder_window))),
            rtt: Mutex::new((DEFAULT_RTT, None)),
            nacks_sent: AtomicU64::new(0),
            nacks_received: AtomicU64::new(0),
            inbox_full: AtomicU64::new(0),
            // Never set for a link that resends by number: see `next_probe`.
            probe_armed: AtomicBool::new(by_number),
            handover: Handover::new(now()),
        });
        let driver = tokio::spawn(drive(Arc::clone(&shared)));
        RepairLink { shared, driver }
    }
}

impl Drop for RepairLink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Shared {
    /// The inner link's RTT, read at most every [`RTT_REFRESH`].
    fn rtt(&self, now: Instant) -> Duration {
        let mut cached = lock(&self.rtt);
        if cached
            .1
            .is_none_or(|at| now.saturating_duration_since(at) >= RTT_REFRESH)
        {
            if let Some(rtt) = self.inner.stats().rtt {
                cached.0 = rtt;
            }
            cached.1 = Some(now);
        }
        cached.0
    }

    fn deliver(&self, packet: Packet) {
        if let Pushed::DroppedOldest = self.inbox.push(packet) {
            self.inbox_full.fetch_add(1, Ordering::Relaxed);
        }
        self.queued.store(true, Ordering::Release);
    }

    /// A packet from the queue, if it may hold one: most calls find it
    /// empty, and looking takes its lock.
    fn queued_packet(&self) -> Option<Packet> {
        if !self.queued.swap(false, Ordering::AcqRel) {
            return None;
        }
        let packet = self.inbox.try_pop()?;
        // There may be more.
        self.queued.store(true, Ordering::Release);
        Some(packet)
    }

    /// One packet from the inner link, judged without waiting: what to
    /// do with it. A packet deliverable now and followed by a wait (a
    /// NACK to send) is queued first, so a cancelled `recv` cannot lose
    /// it. Synchronous, so that the per-packet path keeps no state of
    /// the rare ones (asking, answering) in the caller's future.
    fn judge(&self, packet: Packet) -> Judged {
        let now = now();
        match packet.kind() {
            PacketKind::Rtp => {
                let ssrc = packet.ssrc();
                let seq = packet.sequence_number().expect("RTP has a sequence number");
                let (arrival, new_gap) = {
                    let mut detector = lock(&self.detector);
                    let arrival = detector.on_rtp(ssrc, seq, now);
                    (arrival, detector.new_gap())
                };
                if let Arrival::Repaired { waited } = arrival {
                    debug!(ssrc, seq, ?waited, "packet repaired");
                }
                let packet = match (&self.reorder, arrival.deliver()) {
                    (_, false) => None,
                    (None, true) => Some(packet),
                    (Some(reorder), true) => {
                        // In order: whatever the window lets go, through the
                        // queue (`recv` empties it first).
                        lock(reorder).push(ssrc, seq, packet, now, &mut |p| self.deliver(p));
                        None
                    }
                };
                if !new_gap {
                    return packet.map_or(Judged::Nothing, Judged::Deliver);
                }
                if let Some(packet) = packet {
                    self.deliver(packet);
                }
                // A new gap is asked for at once, not at the next tick, and
                // the driver's timer asks again.
                self.handover.nudge();
                Judged::Ask(now)
            }
            PacketKind::Rtcp => match parse_nacks(packet.bytes()) {
                Some(asks) => {
                    self.nacks_received.fetch_add(1, Ordering::Relaxed);
                    let one_way = self.rtt(now) / 2;
                    let resend: Vec<_> = {
                        let mut buffer = lock(&self.buffer);
                        asks.iter()
                            .flat_map(|&(ssrc, ref seqs)| {
                                buffer
                                    .on_nack(ssrc, seqs, now, one_way)
                                    .into_iter()
                                    .map(move |(seq, bytes)| (ssrc, seq, bytes))
                            })
                            .collect()
                    };
                    Judged::Answer(resend)
                }
                None => Judged::Deliver(packet),
            },
        }
    }

    /// Does what [`judge`](Self::judge) left to do; returns a packet to
    /// deliver now. The waits are boxed: rare, and their state would
    /// otherwise be part of every `recv` call's future.
    async fn follow(&self, judged: Judged) -> Option<Packet> {
        match judged {
            Judged::Deliver(packet) => Some(packet),
            Judged::Nothing => None,
            Judged::Ask(now) => {
                Box::pin(self.ask(now)).await;
                None
            }
            Judged::Answer(resend) => {
                Box::pin(self.answer(resend)).await;
                None
            }
        }
    }

    /// Sends again what a NACK asked for and the buffer still holds. A
    /// packet kept by number goes to the inner link as its RTP header
    /// alone, which is all its `resend` looks at.
    async fn answer(&self, resend: Vec<(u32, u16, Bytes)>) {
        for (ssrc, seq, bytes) in resend {
            let bytes = if bytes.is_empty() {
                build_rtp(0, seq, 0, ssrc, &[])
            } else {
                bytes
            };
            if let Ok(p) = Packet::parse(bytes) {
                let _ = self.inner.resend(p).await;
            }
        }
    }

    /// Delivers what waited its reorder window.
    fn release(&self, now: Instant) {
        if let Some(reorder) = &self.reorder {
            lock(reorder).poll(now, &mut |p| self.deliver(p));
        }
    }

    /// Delivers everything the reorder window holds (the link is closing:
    /// what arrived is still delivered).
    fn flush_reorder(&self) {
        if let Some(reorder) = &self.reorder {
            lock(reorder).flush(&mut |p| self.deliver(p));
        }
    }

    /// Whether packets wait in the reorder window.
    fn holding(&self) -> bool {
        self.reorder.as_ref().is_some_and(|r| lock(r).holding())
    }

    /// Sends the tail probes that are due.
    async fn probe(&self, now: Instant) {
        let rtt = self.rtt(now);
        let probes = lock(&self.buffer).due_probes(now, probe_after(self.budget, rtt), rtt / 2);
        if !probes.is_empty() {
            debug!(probes = probes.len(), "tail probe");
            self.answer(probes).await;
        }
    }

    /// When the next tail probe is due. Disarms first, so a `send` that
    /// comes after this looked (and found nothing) nudges the driver.
    ///
    /// A link that resends by number (SRTP: the same ciphertext again) does
    /// not probe: the probe is usually a packet the peer already has, and
    /// SRTP's replay window rejects a second copy of an index as a replay,
    /// which the peer would count as `unauthenticated` and warn about.
    /// A NACK's repair is a packet the peer never received, so it passes.
    fn next_probe(&self, now: Instant) -> Option<Instant> {
        if self.by_number {
            return None;
        }
        self.probe_armed.store(false, Ordering::SeqCst);
        let after = probe_after(self.budget, self.rtt(now));
        let at = lock(&self.buffer).next_probe(after);
        if at.is_some() {
            self.probe_armed.store(true, Ordering::SeqCst);
        }
        at
    }

    /// Sends NACKs for whatever is due.
    async fn ask(&self, now: Instant) {
        let rtt = self.rtt(now);
        let asks = lock(&self.detector).poll(now, rtt);
        if asks.is_empty() {
            return;
        }
        for datagram in build_nacks(&asks) {
            if let Ok(p) = Packet::parse(datagram) {
                self.nacks_sent.fetch_add(1, Ordering::Relaxed);
                let _ = self.inner.send(p).await;
            }
        }
    }
}

/// The driver: reads the inner link while the application does not
/// (`handover.rs`), asks again for what is still missing every [`TICK`],
/// and sends the tail probes. Otherwise it sleeps: on a clean path with a
/// steady stream only the probe timer runs, moved on as packets are sent.
async fn drive(shared: Arc<Shared>) {
    let h = &shared.handover;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(probe_timer);
    let mut probe_at = None;
    // Until the application first calls `recv`, the driver reads.
    h.take_over();
    loop {
        if probe_at.is_none_or(|at| at <= now()) {
            probe_at = shared.next_probe(now());
            if let Some(at) = probe_at {
                probe_timer.as_mut().reset(at.into());
            }
        }
        let pending = lock(&shared.detector).pending();
        // Held packets are released on the tick too: they wait their
        // window plus at most one tick.
        let holding = shared.holding();
        if h.driver_reads() && h.app_receiving() {
            h.step_back();
        }
        let reading = h.driver_reads();
        tokio::select! {
            received = shared.inner.recv(), if reading => match received {
                Ok(packet) => {
                    let judged = shared.judge(packet);
                    if let Some(packet) = shared.follow(judged).await {
                        shared.deliver(packet);
                    }
                }
                Err(LinkError::Closed(reason)) => {
                    shared.flush_reorder();
                    shared.inbox.close(reason);
                    return;
                }
                Err(LinkError::TooLarge { .. }) => {}
            },
            _ = h.nudged() => {}
            _ = &mut probe_timer, if probe_at.is_some() => {
                shared.probe(now()).await;
                probe_at = None;
            }
            _ = tick.tick(), if pending || holding => {
                let now = now();
                shared.release(now);
                shared.ask(now).await;
            }
        }
    }
}

#[async_trait]
impl RelayLink for RepairLink {
    fn transport(&self) -> Transport {
        self.shared.inner.transport()
    }

    fn mode(&self) -> Mode {
        self.shared.mode
    }

    fn max_packet_size(&self) -> usize {
        self.shared.inner.max_packet_size()
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        // Kept only once the inner link took it (a packet it refused, too
        // large say, is not there to repair). Not checked against
        // `max_packet_size` first: on quic that takes quinn's connection
        // lock, which the connection driver holds while it sends the
        // previous packet of the same frame, and the wait cost more CPU
        // than the rest of repair's sending end.
        let now = now();
        self.shared.handover.on_send(now);
        // Over a link that keeps what it sent (SRTP's protected bytes),
        // only the packet's number and size: a second copy would double
        // the memory held for the budget, which at a high rate costs more
        // in cache misses than anything else repair does.
        let keep = match packet.kind() {
            PacketKind::Rtp => packet.sequence_number().map(|seq| {
                let bytes = if self.shared.by_number {
                    Bytes::new()
                } else {
                    packet.bytes().clone()
                };
                (packet.ssrc(), seq, bytes, packet.len())
            }),
            PacketKind::Rtcp => None,
        };
        match self.shared.inner.try_send(packet) {
            Ok(sent) => sent?,
            Err(packet) => self.shared.inner.send(packet).await?,
        }
        if let Some((ssrc, seq, bytes, len)) = keep {
            {
                let mut buffer = lock(&self.shared.buffer);
                if bytes.is_empty() {
                    buffer.on_sent_numbered(ssrc, seq, len, now);
                } else {
                    buffer.on_sent(ssrc, seq, bytes, now);
                }
            }
            // The first packet after the driver found nothing to probe
            // sets its timer; later ones only move the stream's tail.
            let s = &self.shared;
            if !s.probe_armed.load(Ordering::Relaxed) && !s.probe_armed.swap(true, Ordering::SeqCst) {
                s.handover.nudge();
            }
        }
        Ok(())
    }

    async fn resend(&self, packet: Packet) -> Result<(), LinkError> {
        self.shared.inner.resend(packet).await
    }

    /// Reads the inner link in this call (the driver reads only while
    /// nobody calls `recv`; `handover.rs`): a packet is judged, and a NACK
    /// in it answered, right here. Cancelling the call (a timeout) loses no
    /// packet: one judged but not yet returned waits in the queue for the
    /// next call. It may cut short the answer to a NACK, which the peer
    /// then asks again an RTT later.
    async fn recv(&self) -> Result<Packet, LinkError> {
        let s = &*self.shared;
        let _receiving = s.handover.enter();
        loop {
            if let Some(packet) = s.queued_packet() {
                return Ok(packet);
            }
            let received = if let Some(packet) = s.inner.try_recv() {
                // Already there (the rest of a frame that arrived in one
                // burst): no future to allocate for it.
                Ok(packet)
            } else if s.handover.driver_reads() || s.reorder.is_some() {
                // The driver stops at its next turn; what it read until
                // then comes through the queue, as do the packets a
                // reorder window releases on its timer.
                tokio::select! {
                    queued = s.inbox.pop() => return queued.map_err(LinkError::Closed),
                    received = s.inner.recv() => received,
                }
            } else {
                s.inner.recv().await
            };
            match received {
                Ok(packet) => {
                    // Straight to the application, not through the queue.
                    let judged = s.judge(packet);
                    if let Some(packet) = s.follow(judged).await {
                        return Ok(packet);
                    }
                }
                Err(LinkError::Closed(reason)) => {
                    s.flush_reorder();
                    s.inbox.close(reason.clone());
                    return s.inbox.try_pop().ok_or(LinkError::Closed(reason));
                }
                Err(LinkError::TooLarge { .. }) => {}
            }
        }
    }

    fn stats(&self) -> LinkStats {
        let mut stats = self.shared.inner.stats();
        stats.mode = self.shared.mode;
        stats.drops.receive_queue_full += self.shared.inbox_full.load(Ordering::Relaxed);
        let rx = lock(&self.shared.detector).counts();
        let tx = lock(&self.shared.buffer).counts();
        stats.repair = Some(RepairStats {
            nacks_sent: self.shared.nacks_sent.load(Ordering::Relaxed),
            packets_asked: rx.asked,
            repaired: rx.repaired,
            repaired_too_late: rx.late,
            unrepairable: rx.unrepairable,
            duplicates: rx.duplicates,
            nacks_received: self.shared.nacks_received.load(Ordering::Relaxed),
            packets_requested: tx.requested,
            retransmissions: tx.retransmitted,
            retransmitted_bytes: tx.retransmitted_bytes,
            requested_gone: tx.gone,
            retransmissions_capped: tx.capped,
            tail_probes: tx.probes,
        });
        stats
    }

    fn close(&self) {
        self.shared.inner.close();
        self.shared.inbox.close(CloseReason::Local);
    }

    async fn closed(&self) -> CloseReason {
        self.shared.inner.closed().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.shared.inner.close_reason()
    }
}
