//! The socket loop: one task per link owns the receive side and the
//! keepalive clock; it screens, authenticates and queues what arrives,
//! answers probes, and latches to a peer that moved.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use relay_core::{CloseReason, DropCause, Packet, PacketKind, Pushed};

use crate::link::Shared;
use crate::liveness::{Action, Liveness};
use crate::srtp::SrtpContext;
use crate::stun::{self, Control};

/// Datagrams taken per wake-up before the loop checks its clock again:
/// a few `recvmmsg` calls' worth (more with GRO, which packs up to 64 in
/// one buffer).
const RECV_BUDGET: usize = 1024;
/// Received packets are copied out of the receive buffers into chunks this
/// large; one allocation serves about 200 full-size packets.
const RECV_CHUNK: usize = 256 * 1024;
/// Packets from addresses other than the peer's that an srtp link tries
/// to authenticate per second (to latch to a NAT's new mapping); beyond
/// it they are dropped unread as `unknown_source`, so a flood from
/// strangers costs no more than a few hundred AES-GCM checks a second. A
/// rebinding peer's media, whose first packet authenticates, never
/// notices.
const LATCH_TRIES_PER_SECOND: u32 = 256;

impl Shared {
    /// Whether a packet from `from`, not the peer's address, may be looked
    /// at as a candidate for latching: always in srtp mode (only one that
    /// authenticates moves the peer), in plain mode only with `latch` and
    /// before anything was heard.
    fn may_latch(&self) -> bool {
        if self.keepalive.is_none() {
            return self.latch_first && !self.heard.load(Ordering::Relaxed);
        }
        let mut tries = self.latch_tries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(tries.0) >= std::time::Duration::from_secs(1) {
            *tries = (now, 0);
        }
        tries.1 += 1;
        tries.1 <= LATCH_TRIES_PER_SECOND
    }

    /// A datagram from an address that is not the peer's, and did not
    /// prove to be the peer's: counted as `unknown_source`, as strict
    /// filtering would have.
    fn stranger(&self, from: SocketAddr) {
        if self.warned_unknown_source.first() {
            tracing::warn!(%from, expected = %self.peer(), "dropping packets from an address that is not the peer's");
        }
        self.stats.on_drop(DropCause::UnknownSource);
    }

    /// The peer is at `from` from now on.
    fn latch_to(&self, from: SocketAddr, why: &'static str) {
        let old = std::mem::replace(&mut *self.peer.lock().unwrap_or_else(|e| e.into_inner()), from);
        if old != from {
            self.stats.on_peer_address_change();
            tracing::info!(local = %self.local, %old, new = %from, signaled = %self.signaled, why, "peer address changed: latched");
        }
    }

    /// Takes what the socket holds, a `recvmmsg` at a time, up to
    /// [`RECV_BUDGET`] datagrams; each is screened, copied out of the
    /// receive buffers into `arena` (one allocation per [`RECV_CHUNK`])
    /// and handled in arrival order.
    fn drain(&self, arena: &mut BytesMut, liveness: &mut Liveness, inbound: &mut Option<SrtpContext>) {
        let mut taken = 0;
        while taken < RECV_BUDGET {
            let received = self.socket.recv(|datagram, from| {
                let (shape, new_source) = match self.screen(datagram, from) {
                    Ok(screened) => screened,
                    Err(cause) => {
                        // Never copied: a flood of garbage allocates nothing.
                        self.stats.on_drop(cause);
                        return;
                    }
                };
                if arena.capacity() - arena.len() < datagram.len() {
                    arena.reserve(RECV_CHUNK.max(datagram.len()));
                }
                arena.extend_from_slice(datagram);
                let data = arena.split();
                self.on_datagram(data, shape, from, new_source, liveness, inbound);
            });
            match received {
                Ok(got) if got.emptied => return,
                Ok(got) => taken += got.datagrams.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors reported on the socket (e.g. port
                    // unreachable) are not fatal: liveness decides.
                    tracing::debug!(error = %e, "UDP receive error");
                    return;
                }
            }
        }
    }

    /// Why a datagram is dropped before anything else looks at it. Cheap
    /// checks first, in the order every backend uses: size, then whether
    /// the bytes can be ours at all, then the source. Only the peer's
    /// plausible packets are parsed or decrypted. `true` with the shape:
    /// the packet is from a new address that it may latch to.
    fn screen(&self, data: &[u8], from: SocketAddr) -> Result<(Shape, bool), DropCause> {
        if data.len() > self.max_datagram {
            tracing::trace!(len = data.len(), max = self.max_datagram, %from, "dropping oversized datagram");
            return Err(DropCause::TooLarge);
        }
        let Some(shape) = shape(data) else {
            tracing::trace!(len = data.len(), %from, "dropping datagram that is neither RTP/RTCP nor STUN");
            return Err(DropCause::Malformed);
        };
        if from == self.peer() {
            return Ok((shape, false));
        }
        if self.may_latch() {
            return Ok((shape, true));
        }
        if self.warned_unknown_source.first() {
            tracing::warn!(%from, expected = %self.peer(), "dropping packets from an address that is not the peer's");
        }
        Err(DropCause::UnknownSource)
    }

    fn on_datagram(
        &self,
        data: BytesMut,
        shape: Shape,
        from: SocketAddr,
        new_source: bool,
        liveness: &mut Liveness,
        inbound: &mut Option<SrtpContext>,
    ) {
        let now = Instant::now();
        if self.keepalive.is_none() {
            // Plain RTP: the address is all there is to trust. With
            // `latch`, the first packet heard fixes it.
            if new_source {
                self.latch_to(from, "first packet heard (--latch)");
            }
            self.heard.store(true, Ordering::Relaxed);
            liveness.on_heard(now);
        }
        let kind = match shape {
            Shape::Stun => {
                self.on_control(&data, from, new_source, liveness, now);
                return;
            }
            Shape::Media(kind) => kind,
        };
        let data = match inbound {
            None => data.freeze(),
            Some(ctx) => {
                // RFC 5761 section 4: the header that told RTCP from RTP is
                // in the clear in SRTP and SRTCP alike; decrypted in place.
                let unprotected = match kind {
                    PacketKind::Rtcp => ctx.unprotect_rtcp_in_place(data),
                    PacketKind::Rtp => ctx.unprotect_rtp_in_place(data),
                };
                match unprotected {
                    Ok(plain) => {
                        // Authentic and not a replay: wherever it came
                        // from, that is where the peer is now (RFC 7983's
                        // comedia behaviour, safe because SRTP's replay
                        // window makes a captured packet worthless).
                        if new_source {
                            self.latch_to(from, "authenticated SRTP from a new address");
                        }
                        self.heard.store(true, Ordering::Relaxed);
                        liveness.on_heard(now);
                        plain
                    }
                    Err(_) if new_source => {
                        // A stranger's packet that is not the peer's either.
                        self.stranger(from);
                        return;
                    }
                    Err(e) => {
                        if self.warned_unauthenticated.first() {
                            tracing::warn!(%from, error = %e, "dropping media that fails SRTP checks");
                        }
                        self.stats.on_drop(DropCause::Unauthenticated);
                        return;
                    }
                }
            }
        };
        match Packet::parse(data) {
            Ok(packet) => {
                self.stats.on_received(&packet, now);
                if self.inbox.push(packet) == Pushed::DroppedOldest {
                    self.stats.on_drop(DropCause::ReceiveQueueFull);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping datagram that is not RTP/RTCP");
                self.stats.on_drop(DropCause::Malformed);
            }
        }
    }

    /// A STUN datagram from the peer's address: answer probes, take
    /// replies, honour goodbyes. In srtp mode probes and replies without a
    /// valid MESSAGE-INTEGRITY-SHA256 are dropped as `unauthenticated`,
    /// never answered and never count as hearing from the peer.
    fn on_control(
        &self,
        data: &[u8],
        from: SocketAddr,
        new_source: bool,
        liveness: &mut Liveness,
        now: Instant,
    ) {
        let msg = match stun::decode(data) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(error = %e, "bad control message");
                self.stats.on_drop(DropCause::Malformed);
                return;
            }
        };
        if new_source && !matches!(msg, Control::Probe(_) | Control::ProbeReply(..)) {
            // Only an authenticated probe or reply may come from a new
            // address; a goodbye from one is a stranger's.
            self.stranger(from);
            return;
        }
        if let (Some(auth), Control::Probe(_) | Control::ProbeReply(..)) = (&self.keepalive, &msg)
            && let Err(e) = stun::verify_integrity(data, &auth.peer)
        {
            if new_source {
                self.stranger(from);
                return;
            }
            if self.warned_unauthenticated_control.first() {
                tracing::warn!(%from, error = %e, "dropping keepalives that fail authentication: spoofed, or the peer lacks the signaled key");
            }
            self.stats.on_drop(DropCause::Unauthenticated);
            return;
        }
        match msg {
            // Answered where it came from: a peer whose NAT mapping changed
            // keeps its link alive. A probe can be replayed, so it never
            // moves the peer.
            Control::Probe(txid) => {
                // Before anything authentic was heard from the signaled
                // address, an authentic probe from elsewhere is the peer
                // behind a NAT setting up; afterwards only a reply to our
                // own probe (which cannot be replayed) or media moves it.
                if new_source && !self.heard.load(Ordering::Relaxed) {
                    self.latch_to(from, "authenticated probe during setup from a new address");
                }
                self.send_control_to(&Control::ProbeReply(txid, Some(from)), from)
            }
            Control::ProbeReply(txid, _) => match liveness.on_reply(&txid, now) {
                Some(rtt) => {
                    // A reply to a probe of ours still outstanding cannot
                    // be a replay: the peer is where it came from.
                    if new_source {
                        self.latch_to(from, "authenticated reply to our probe from a new address");
                    }
                    self.heard.store(true, Ordering::Relaxed);
                    self.stats.set_rtt(rtt)
                }
                // Late (the backlog of setup probes), duplicated or
                // replayed: it proves nothing now. Authentic, so not
                // counted as a drop; ignored.
                None => tracing::trace!(%from, "reply to a probe no longer outstanding"),
            },
            Control::Goodbye if self.goodbye.is_none() => {
                self.shutdown(CloseReason::PeerClosed);
            }
            Control::SignedGoodbye(txid, tag) => match &self.goodbye {
                Some(auth) if !auth.peer.verify(&txid, &tag) => {
                    self.stats.on_drop(DropCause::Unauthenticated);
                }
                // Plain RTP cannot check the tag and trusts the network.
                _ => {
                    self.shutdown(CloseReason::PeerClosed);
                }
            },
            Control::Goodbye => {
                // srtp mode: an unsigned goodbye may be forged.
                tracing::debug!(%from, "ignoring an unsigned goodbye on an srtp link");
                self.stats.on_drop(DropCause::Unauthenticated);
            }
        }
    }
}

/// STUN header length (RFC 8489 section 5): a shorter datagram in the STUN
/// range is a cut-off control message.
const STUN_HEADER_LEN: usize = 20;

/// What a datagram can be by its first bytes and length (RFC 7983
/// demultiplexing: 0..=3 STUN, 128..=191 RTP/RTCP, told apart by RFC 5761),
/// or `None`: checked before the source, without parsing, so garbage is
/// counted as `malformed` whoever sent it; the answer then decides how the
/// datagram is handled, so nothing classifies it twice.
fn shape(data: &[u8]) -> Option<Shape> {
    match data.first() {
        Some(&first) if stun::looks_like_stun(first) => {
            (data.len() >= STUN_HEADER_LEN).then_some(Shape::Stun)
        }
        Some(_) => relay_core::classify(data).ok().map(Shape::Media),
        None => None,
    }
}

/// What a datagram can be, from its first bytes; see [`shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A STUN message: path check, keepalive or goodbye.
    Stun,
    /// RTP or RTCP (protected in srtp mode).
    Media(PacketKind),
}

pub(crate) async fn drive(
    shared: Arc<Shared>,
    mut liveness: Liveness,
    mut inbound: Option<SrtpContext>,
    started: Instant,
) {
    let mut closed = shared.close.subscribe();
    let mut arena = BytesMut::new();
    let mut announced_ready = false;
    loop {
        if shared.close.is_closed() {
            break;
        }
        // The clock first: the first probe leaves at once instead of after
        // a timer tick (tokio's timer has 1 ms granularity, which was most
        // of the setup time on loopback).
        let now = Instant::now();
        loop {
            match liveness.poll(now) {
                Action::Probe(txid) => shared.send_control(&Control::Probe(txid)),
                Action::Dead(silent) => {
                    shared.shutdown(CloseReason::LivenessTimeout(silent));
                    return;
                }
                Action::Wait => break,
            }
        }
        if !announced_ready && liveness.is_ready() {
            announced_ready = true;
            shared.stats.set_setup_time(started.elapsed());
            shared.ready.send_replace(true);
        }
        let deadline = liveness.next_deadline();
        tokio::select! {
            _ = closed.changed() => continue,
            r = shared.socket.socket().readable() => {
                if let Err(e) = r {
                    shared.shutdown(CloseReason::Transport(format!("UDP socket failed: {e}")));
                    break;
                }
                shared.drain(&mut arena, &mut liveness, &mut inbound);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stun_and_rtp_shaped_datagrams_have_a_shape() {
        let rtp = relay_core::build_rtp(96, 1, 0, 0x1234, b"x");
        assert_eq!(shape(&rtp), Some(Shape::Media(PacketKind::Rtp)));
        assert_eq!(
            shape(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Some(Shape::Media(PacketKind::Rtcp))
        );
        assert_eq!(shape(&stun::encode(&Control::Probe([7; 12]))), Some(Shape::Stun));
        for garbage in [
            &[][..],
            &rtp[..11],                          // a cut RTP header
            &[0x00, 0x01, 0x00, 0x00, 0x21][..], // a cut STUN header
            &[0x16, 0xfe, 0xfd, 0, 0, 0, 0][..], // DTLS, not ours
            &[0x40; 100][..],                    // a QUIC short header / RTP version 1
            &[0xff; 1200][..],
        ] {
            assert_eq!(shape(garbage), None, "{garbage:?}");
        }
    }
}
