//! [`RtpUdpLink`]: the application's handle on an established link, the
//! state it shares with the driver task, and the send path, which writes
//! to the socket directly.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use relay_core::backend::check_size;
use relay_core::{
    CloseReason, CloseSignal, DropCause, LinkError, LinkStats, Mode, Overflow, Packet, PacketKind,
    PacketQueue, RelayLink, StatsRecorder, Transport,
};
use tokio::sync::watch;

use crate::driver::drive;
use crate::liveness::Liveness;
use crate::resend::SentWire;
use crate::srtp::{self, ControlAuth, MasterKey, SrtpContext, SrtpError};
use crate::stun::{self, Control, IntegrityKey};
use crate::{RtpUdpConfig, RtpUdpError};
use relay_core::udp::batch::BatchSocket;

/// What SRTP protection adds at most: the GCM tag, plus SRTCP's E flag and
/// index word. The application's packet limit shrinks by this much so the
/// datagram on the wire stays within the configured size.
const SRTP_OVERHEAD: usize = srtp::TAG_LEN + 4;

/// SRTP state of a link in srtp mode: ours protects what we send, the
/// peer's unprotects what arrives.
pub(crate) struct Keys {
    outbound: SrtpContext,
    inbound: SrtpContext,
    goodbye: GoodbyeAuth,
    keepalive: KeepaliveAuth,
}

/// Signs our goodbye and checks the peer's.
pub(crate) struct GoodbyeAuth {
    ours: ControlAuth,
    pub(crate) peer: ControlAuth,
}

/// MESSAGE-INTEGRITY-SHA256 keys of the probes and replies: ours signs
/// what we send, the peer's checks what arrives.
pub(crate) struct KeepaliveAuth {
    ours: IntegrityKey,
    pub(crate) peer: IntegrityKey,
}

impl Keys {
    pub(crate) fn pair(local: Option<MasterKey>, peer: Option<MasterKey>) -> Option<Keys> {
        match (local, peer) {
            (Some(l), Some(p)) => Some(Keys {
                outbound: SrtpContext::new(&l),
                inbound: SrtpContext::new(&p),
                goodbye: GoodbyeAuth {
                    ours: ControlAuth::new(&l),
                    peer: ControlAuth::new(&p),
                },
                keepalive: KeepaliveAuth {
                    ours: srtp::keepalive_key(&l),
                    peer: srtp::keepalive_key(&p),
                },
            }),
            _ => None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) socket: BatchSocket,
    pub(crate) local: SocketAddr,
    /// Where the peer is: the signaled address until a latch moves it.
    pub(crate) peer: Mutex<SocketAddr>,
    pub(crate) signaled: SocketAddr,
    /// Plain mode with `latch`: the first packet heard fixes the peer.
    pub(crate) latch_first: bool,
    /// Something authentic was heard from the peer (plain mode: anything;
    /// its latch is spent then).
    pub(crate) heard: AtomicBool,
    /// Start of the current second and the latch tries in it.
    pub(crate) latch_tries: Mutex<(Instant, u32)>,
    mode: Mode,
    /// `Some` in srtp mode; `send` runs on any task, hence the lock (held
    /// for one packet's encryption, never across an await).
    outbound: Option<Mutex<SrtpContext>>,
    /// `Some` in srtp mode with a resend window: what was sent, protected,
    /// for [`RelayLink::resend`].
    sent: Option<Mutex<SentWire>>,
    /// `Some` in srtp mode: goodbyes are signed and checked.
    pub(crate) goodbye: Option<GoodbyeAuth>,
    /// `Some` in srtp mode: probes and replies carry and need
    /// MESSAGE-INTEGRITY-SHA256, and only authenticated packets count as
    /// hearing from the peer.
    pub(crate) keepalive: Option<KeepaliveAuth>,
    pub(crate) stats: StatsRecorder,
    pub(crate) inbox: PacketQueue,
    pub(crate) close: CloseSignal,
    pub(crate) ready: watch::Sender<bool>,
    /// Largest datagram on the wire (the configured packet size).
    pub(crate) max_datagram: usize,
    /// Largest packet the application may send: `max_datagram` less the
    /// SRTP overhead in srtp mode.
    max_packet_size: usize,
    pub(crate) warned_unknown_source: relay_core::backend::WarnOnce,
    pub(crate) warned_unauthenticated: relay_core::backend::WarnOnce,
    pub(crate) warned_unauthenticated_control: relay_core::backend::WarnOnce,
}

/// An established rtp-udp link; see the crate docs.
pub struct RtpUdpLink {
    shared: Arc<Shared>,
}

impl fmt::Debug for RtpUdpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtpUdpLink")
            .field("local", &self.shared.local)
            .field("peer", &self.shared.peer())
            .field("closed", &self.shared.close.reason())
            .finish()
    }
}

impl RtpUdpLink {
    pub(crate) fn start(
        socket: BatchSocket,
        peer: SocketAddr,
        config: &RtpUdpConfig,
        mode: Mode,
        keys: Option<Keys>,
        started: Instant,
    ) -> RtpUdpLink {
        let local = socket.socket().local_addr().unwrap_or(config.bind);
        let (outbound, inbound, goodbye, keepalive) = match keys {
            Some(k) => (
                Some(Mutex::new(k.outbound)),
                Some(k.inbound),
                Some(k.goodbye),
                Some(k.keepalive),
            ),
            None => (None, None, None, None),
        };
        let overhead = if outbound.is_some() { SRTP_OVERHEAD } else { 0 };
        let sent = (outbound.is_some() && !config.resend_window.is_zero())
            .then(|| Mutex::new(SentWire::new(config.resend_window)));
        // The configured size bounds the datagram on the wire, except that
        // the application may always send 1,400 bytes (the relay contract).
        let max_packet_size = config
            .max_packet_size
            .saturating_sub(overhead)
            .max(relay_core::MIN_MAX_PACKET_SIZE);
        let shared = Arc::new(Shared {
            socket,
            local,
            peer: Mutex::new(peer),
            signaled: peer,
            latch_first: config.latch,
            heard: AtomicBool::new(false),
            latch_tries: Mutex::new((Instant::now(), 0)),
            mode,
            outbound,
            sent,
            goodbye,
            keepalive,
            stats: StatsRecorder::new(Transport::RtpUdp, mode).with_clock_rates(config.clock_rates.clone()),
            inbox: PacketQueue::new(config.receive_queue, Overflow::DropOldest),
            close: CloseSignal::new(),
            ready: watch::Sender::new(false),
            max_datagram: max_packet_size + overhead,
            max_packet_size,
            warned_unknown_source: relay_core::backend::WarnOnce::default(),
            warned_unauthenticated: relay_core::backend::WarnOnce::default(),
            warned_unauthenticated_control: relay_core::backend::WarnOnce::default(),
        });
        let liveness = Liveness::new(
            Instant::now(),
            config.liveness_timeout,
            config.keepalive_interval_or_default(),
            rand::random(),
        );
        tokio::spawn(drive(shared.clone(), liveness, inbound, started));
        RtpUdpLink { shared }
    }

    pub(crate) async fn ready(&self) -> Result<(), RtpUdpError> {
        let mut ready = self.shared.ready.subscribe();
        tokio::select! {
            r = ready.wait_for(|r| *r) => match r {
                Ok(_) => Ok(()),
                Err(_) => Err(RtpUdpError::Closed(self.shared.close.reason().unwrap_or(CloseReason::Local))),
            },
            reason = self.shared.close.wait() => match reason {
                CloseReason::LivenessTimeout(waited) => Err(RtpUdpError::NoPeer { peer: self.shared.peer(), waited }),
                other => Err(RtpUdpError::Closed(other)),
            },
        }
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The peer's address: the signaled one, or where the link latched.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer()
    }
}

impl Drop for RtpUdpLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Every lock here guards plain bookkeeping held for one packet; a panic
/// elsewhere leaves it as consistent as any other moment's.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn peer(&self) -> SocketAddr {
        *lock(&self.peer)
    }

    /// Sends `wire` (the form of `packet` on the wire) to the peer. The
    /// kernel send buffer is this transport's send queue: when it is full
    /// the packet is dropped (counted); the sender never waits.
    fn put_on_wire(&self, wire: &[u8], packet: &Packet) {
        self.put_on_wire_sized(wire, packet, packet.len());
    }

    /// [`put_on_wire`](Self::put_on_wire), counting `len` bytes sent:
    /// the size of the packet `packet` only names (a resend by number).
    fn put_on_wire_sized(&self, wire: &[u8], packet: &Packet, len: usize) {
        let peer = self.peer();
        match self.socket.socket().try_send_to(wire, peer) {
            Ok(_) => self.stats.on_sent_sized(packet, len),
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(%peer, error = %e, "UDP send failed");
                }
                self.stats.on_drop(DropCause::SendQueueFull);
            }
        }
    }

    pub(crate) fn shutdown(&self, reason: CloseReason) -> bool {
        if !self.close.close(reason.clone()) {
            return false;
        }
        self.inbox.close(reason.clone());
        tracing::info!(local = %self.local, peer = %self.peer(), %reason, "rtp-udp link closed");
        true
    }

    pub(crate) fn send_control(&self, msg: &Control) {
        self.send_control_to(msg, self.peer());
    }

    pub(crate) fn send_control_to(&self, msg: &Control, to: SocketAddr) {
        let wire = match (&self.keepalive, msg) {
            (Some(auth), Control::Probe(_) | Control::ProbeReply(..)) => {
                stun::encode_with_integrity(msg, &auth.ours)
            }
            _ => stun::encode(msg),
        };
        // Best effort: a lost probe is retried by the schedule, a lost
        // goodbye falls back to the liveness timeout.
        if let Err(e) = self.socket.socket().try_send_to(&wire, to) {
            tracing::debug!(peer = %to, error = %e, "control message not sent");
        }
    }
}

/// What a packet becomes on its way out.
enum WireForm {
    /// These bytes go on the wire.
    Send(Bytes),
    /// Not sent, and counted: SRTP refuses its index.
    Dropped,
}

impl RtpUdpLink {
    /// The size check and, in srtp mode, the protection of one packet
    /// (with the outbound context `ctx`, locked by the caller), as every
    /// send does them. A refusal is counted; `Closed` shuts the link down.
    fn wire_form(&self, packet: &Packet, ctx: Option<&mut SrtpContext>) -> Result<WireForm, LinkError> {
        let s = &self.shared;
        if let Err(e) = check_size(packet.len(), s.max_packet_size) {
            s.stats.on_drop(DropCause::TooLarge);
            return Err(e);
        }
        let Some(ctx) = ctx else {
            return Ok(WireForm::Send(packet.bytes().clone()));
        };
        let protected = match packet.kind() {
            PacketKind::Rtp => ctx.protect_rtp(packet.bytes()),
            PacketKind::Rtcp => ctx.protect_rtcp(packet.bytes()),
        };
        match protected {
            Ok(wire) => {
                if let (Some(sent), Some(seq)) = (&s.sent, packet.sequence_number()) {
                    let now = tokio::time::Instant::now().into_std();
                    lock(sent).keep(packet.ssrc(), seq, wire.clone(), now);
                }
                Ok(WireForm::Send(wire))
            }
            Err(SrtpError::WouldReuseIndex) => {
                // A duplicate or a sequence number from before the
                // replay window: the peer would refuse it anyway.
                s.stats.on_drop(DropCause::Unauthenticated);
                Ok(WireForm::Dropped)
            }
            Err(e) => {
                // Index exhaustion (the packet parsed, so it is not
                // truncated): the link cannot send safely any more.
                let reason = CloseReason::Transport(format!("SRTP: {e}"));
                s.shutdown(reason.clone());
                Err(LinkError::Closed(reason))
            }
        }
    }

    /// [`RelayLink::send`], which never waits: the kernel's send buffer
    /// is this transport's queue.
    fn send_now(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &self.shared;
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        let mut ctx = s.outbound.as_ref().map(lock);
        let form = self.wire_form(&packet, ctx.as_deref_mut());
        drop(ctx);
        if let WireForm::Send(wire) = form? {
            s.put_on_wire(&wire, &packet);
        }
        Ok(())
    }

    /// [`RelayLink::send_batch`], which never waits either: every packet
    /// is checked and protected in order under one lock, then runs of
    /// equal sizes leave in one GSO send each ([`BatchSocket::send_all`]).
    /// A packet the kernel has no room for is dropped and counted, as in
    /// `send`.
    fn send_batch_now(&self, packets: &mut Vec<Packet>) -> Result<(), LinkError> {
        let s = &self.shared;
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        // (index in `packets`, bytes on the wire), up to the first refusal.
        let mut wires: Vec<(usize, Bytes)> = Vec::with_capacity(packets.len());
        let mut refused = None;
        {
            let mut ctx = s.outbound.as_ref().map(lock);
            for (i, packet) in packets.iter().enumerate() {
                match self.wire_form(packet, ctx.as_deref_mut()) {
                    Ok(WireForm::Send(wire)) => wires.push((i, wire)),
                    Ok(WireForm::Dropped) => {}
                    Err(e) => {
                        refused = Some((i, e));
                        break;
                    }
                }
            }
        }
        let peer = s.peer();
        let mut next = wires.iter();
        s.socket
            .send_all(wires.iter().map(|(_, w)| &w[..]), peer, |result| {
                let Some((i, _)) = next.next() else { return };
                match result {
                    Ok(()) => s.stats.on_sent(&packets[*i]),
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            tracing::debug!(%peer, error = %e, "UDP send failed");
                        }
                        s.stats.on_drop(DropCause::SendQueueFull);
                    }
                }
            });
        match refused {
            None => {
                packets.clear();
                Ok(())
            }
            Some((i, e)) => {
                packets.drain(..i);
                Err(e)
            }
        }
    }
}

#[async_trait]
impl RelayLink for RtpUdpLink {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }

    fn mode(&self) -> Mode {
        self.shared.mode
    }

    fn max_packet_size(&self) -> usize {
        self.shared.max_packet_size
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        self.send_now(packet)
    }

    /// Sending never waits on this transport (see `put_on_wire`).
    fn try_send(&self, packet: Packet) -> Result<Result<(), LinkError>, Packet> {
        Ok(self.send_now(packet))
    }

    fn try_recv(&self) -> Option<Packet> {
        self.shared.inbox.try_pop()
    }

    /// In srtp mode with a resend window: `resend` puts the kept SRTP
    /// bytes on the wire, found by SSRC and sequence number.
    fn resends_by_number(&self) -> bool {
        self.shared.sent.is_some()
    }

    /// In srtp mode with a [resend window](RtpUdpConfig::resend_window),
    /// an RTP packet goes out as the SRTP bytes it was first sent as (see
    /// [`resend`](crate::resend)); one no longer kept is not sent, and
    /// counted as `drops.expired`. Anything else is a [`send`](Self::send).
    async fn resend(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &self.shared;
        let (Some(sent), Some(seq)) = (&s.sent, packet.sequence_number()) else {
            return self.send(packet).await;
        };
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        let now = tokio::time::Instant::now().into_std();
        let kept = lock(sent).get(packet.ssrc(), seq, now);
        match kept {
            // Counted at the size first sent (the tag is the wire's), not
            // the size of `packet`, which may be the RTP header alone
            // (`resends_by_number`).
            Some(wire) => s.put_on_wire_sized(&wire, &packet, wire.len().saturating_sub(srtp::TAG_LEN)),
            None => s.stats.on_drop(DropCause::Expired),
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Packet, LinkError> {
        self.shared.inbox.pop().await.map_err(LinkError::Closed)
    }

    /// GSO for runs of equal-size packets; see `send_batch_now`.
    async fn send_batch(&self, packets: &mut Vec<Packet>) -> Result<(), LinkError> {
        self.send_batch_now(packets)
    }

    /// The first packet as `recv` waits for it, then what else is queued,
    /// under one lock.
    async fn recv_batch(&self, out: &mut Vec<Packet>, max: usize) -> Result<usize, LinkError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.recv().await?);
        Ok(1 + self.shared.inbox.pop_batch(out, max - 1))
    }

    fn stats(&self) -> LinkStats {
        self.shared.stats.snapshot()
    }

    fn close(&self) {
        if self.shared.shutdown(CloseReason::Local) {
            // Twice: one loss on the way should not cost the peer a whole
            // liveness timeout.
            let goodbye = match &self.shared.goodbye {
                Some(auth) => {
                    let txid: stun::TransactionId = rand::random();
                    Control::SignedGoodbye(txid, auth.ours.sign(&txid))
                }
                None => Control::Goodbye,
            };
            self.shared.send_control(&goodbye);
            self.shared.send_control(&goodbye);
        }
    }

    async fn closed(&self) -> CloseReason {
        self.shared.close.wait().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close.reason()
    }
}
