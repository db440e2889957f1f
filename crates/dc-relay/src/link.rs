//! [`DcLink`]: the application's handle on an open data channel, and the
//! state it shares with the driver task that owns the peer connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use relay_core::backend::check_size;
use relay_core::{
    CloseReason, CloseSignal, DropCause, DropCounters, LinkError, LinkStats, Mode, Overflow, Packet,
    PacketQueue, Pushed, RelayLink, StatsRecorder, Transport,
};
use tokio::sync::{Notify, watch};

use crate::DcError;
use crate::outbox::Outbox;

/// The relay side of one data channel: created with the channel's mode,
/// which the answerer only learns when the offerer's channel opens.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) mode: Mode,
    pub(crate) stats: StatsRecorder,
    /// Network to application. Installed before the channel can deliver
    /// anything, so a packet sent the instant the peer is ready has a place
    /// to land (ready means ready).
    pub(crate) inbox: PacketQueue,
    /// Application to driver: the part of the send buffer in front of SCTP,
    /// each packet with the time it was queued (the latency budget).
    pub(crate) outbox: Outbox,
}

impl Channel {
    pub(crate) fn new(
        mode: Mode,
        send_queue: usize,
        receive_queue: usize,
        clock_rates: relay_core::ClockRates,
    ) -> Channel {
        // Unreliable: fresh media beats stale media, so a full queue drops
        // the oldest packet. Reliable: the producer waits.
        let overflow = if mode.is_reliable() {
            Overflow::Wait
        } else {
            Overflow::DropOldest
        };
        Channel {
            mode,
            stats: StatsRecorder::new(Transport::Dc, mode).with_clock_rates(clock_rates),
            inbox: PacketQueue::new(receive_queue, overflow),
            outbox: Outbox::new(send_queue, overflow),
        }
    }
}

/// What the driver task and the handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) close: CloseSignal,
    pub(crate) channel: OnceLock<Channel>,
    /// Becomes true when the channel is open on both sides.
    pub(crate) ready: watch::Sender<bool>,
    /// Why setup failed, when it did in a way a [`CloseReason`] cannot say.
    pub(crate) setup_error: Mutex<Option<DcError>>,
    /// The driver holds a received packet the full reliable inbox refused
    /// and waits on `rx_space`; `recv` signals it after taking one.
    pub(crate) rx_blocked: AtomicBool,
    pub(crate) rx_space: Notify,
    /// The configured limit, lowered when the channel opens to the peer's
    /// `a=max-message-size` if that is smaller (see `limit_packet_size`).
    max_packet_size: AtomicUsize,
    pub(crate) local_addrs: Vec<SocketAddr>,
    /// ICE connection state, for error messages.
    pub(crate) ice_state: Mutex<String>,
    /// Datagrams the driver dropped before the stack saw them.
    pub(crate) wire_drops: DropCounters,
}

impl Shared {
    pub(crate) fn new(max_packet_size: usize, local_addrs: Vec<SocketAddr>) -> Shared {
        Shared {
            close: CloseSignal::new(),
            channel: OnceLock::new(),
            ready: watch::Sender::new(false),
            setup_error: Mutex::new(None),
            rx_blocked: AtomicBool::new(false),
            rx_space: Notify::new(),
            max_packet_size: AtomicUsize::new(max_packet_size),
            local_addrs,
            ice_state: Mutex::new("new".to_string()),
            wire_drops: DropCounters::default(),
        }
    }

    /// Closes everything the application can see; returns whether this call
    /// closed it. The driver notices through `close` and tears the
    /// connection down.
    pub(crate) fn shutdown(&self, reason: CloseReason) -> bool {
        if !self.close.close(reason.clone()) {
            return false;
        }
        if let Some(ch) = self.channel.get() {
            ch.inbox.close(reason.clone());
            ch.outbox.close(reason.clone());
        }
        tracing::debug!(locals = ?self.local_addrs, %reason, "dc link closed");
        true
    }

    /// Largest packet `send` takes.
    pub(crate) fn max_packet_size(&self) -> usize {
        self.max_packet_size.load(Ordering::Relaxed)
    }

    /// Lowers the limit to what the peer accepts (its `a=max-message-size`,
    /// as SCTP negotiated it), so a packet the stack would refuse is refused
    /// by `send` with [`LinkError::TooLarge`] instead of being lost after
    /// it. Called once the channel is open, before the link is handed out.
    pub(crate) fn limit_packet_size(&self, peer_accepts: usize) {
        self.max_packet_size.fetch_min(peer_accepts, Ordering::Relaxed);
        if peer_accepts < relay_core::MIN_MAX_PACKET_SIZE {
            tracing::warn!(
                peer_accepts,
                relay_needs = relay_core::MIN_MAX_PACKET_SIZE,
                "peer's a=max-message-size is below the relay's packet size; larger packets are refused"
            );
        }
    }

    /// Fails setup with an error for the waiting `connect`/`accept`.
    pub(crate) fn fail(&self, error: DcError) {
        let reason = CloseReason::Transport(error.to_string());
        *lock(&self.setup_error) = Some(error);
        self.shutdown(reason);
    }

    /// Waits until the channel is open on both sides, or setup fails.
    pub(crate) async fn wait_ready(&self, timeout: std::time::Duration) -> Result<(), DcError> {
        let mut ready = self.ready.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            tokio::select! {
                r = ready.wait_for(|r| *r) => r.map(|_| ()).map_err(|_| CloseReason::Local),
                reason = self.close.wait() => Err(reason),
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(lock(&self.setup_error).take().unwrap_or(DcError::Closed(reason))),
            Err(_) => {
                let ice = lock(&self.ice_state).clone();
                self.shutdown(CloseReason::Transport("setup timed out".into()));
                Err(DcError::Timeout { waited: timeout, ice })
            }
        }
    }

    fn channel(&self) -> &Channel {
        // A link is only handed out once the driver has installed the channel.
        self.channel
            .get()
            .expect("channel installed before the link is ready")
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the link when the last handle holding it goes away, so a dropped
/// offerer, answerer or link never leaves a driver task behind.
#[derive(Debug)]
pub(crate) struct CloseOnDrop(pub(crate) Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.shutdown(CloseReason::Local);
    }
}

/// An open data channel: one established relay link; see the crate docs.
///
/// Created by [`DcOfferer::connect`](crate::DcOfferer::connect) and
/// [`DcAnswerer::accept`](crate::DcAnswerer::accept) once the channel is
/// open on both sides. Dropping it closes it.
pub struct DcLink {
    shared: CloseOnDrop,
    mode: Mode,
}

impl fmt::Debug for DcLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcLink")
            .field("mode", &self.mode)
            .field("local", &self.shared.0.local_addrs)
            .field("closed", &self.shared.0.close.reason())
            .finish()
    }
}

impl DcLink {
    pub(crate) fn new(shared: CloseOnDrop) -> DcLink {
        let mode = shared.0.channel().mode;
        DcLink { shared, mode }
    }

    /// The local UDP addresses (one per ICE host candidate).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.0.local_addrs
    }

    fn s(&self) -> &Shared {
        &self.shared.0
    }
}

#[async_trait]
impl RelayLink for DcLink {
    fn transport(&self) -> Transport {
        Transport::Dc
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn max_packet_size(&self) -> usize {
        self.s().max_packet_size()
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        let s = self.s();
        let ch = s.channel();
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        if let Err(e) = check_size(packet.len(), s.max_packet_size()) {
            ch.stats.on_drop(DropCause::TooLarge);
            return Err(e);
        }
        // The driver counts the packet as sent when SCTP takes it, and as
        // dropped if the queue evicts it first.
        let pushed = if ch.mode.is_reliable() {
            ch.outbox.push_wait(packet).await.map_err(LinkError::Closed)?
        } else {
            ch.outbox.push(packet, std::time::Instant::now())
        };
        match pushed {
            Pushed::Queued => Ok(()),
            Pushed::DroppedOldest => {
                ch.stats.on_drop(DropCause::SendQueueFull);
                Ok(())
            }
            Pushed::Closed(_) | Pushed::Full(_) => {
                Err(LinkError::Closed(s.close.reason().unwrap_or(CloseReason::Local)))
            }
        }
    }

    async fn recv(&self) -> Result<Packet, LinkError> {
        let s = self.s();
        let r = s.channel().inbox.pop().await.map_err(LinkError::Closed);
        if s.rx_blocked.load(Ordering::Acquire) {
            s.rx_space.notify_one();
        }
        r
    }

    fn stats(&self) -> LinkStats {
        let mut stats = self.s().channel().stats.snapshot();
        self.s().wire_drops.add_to(&mut stats.drops);
        stats
    }

    fn close(&self) {
        self.s().shutdown(CloseReason::Local);
    }

    async fn closed(&self) -> CloseReason {
        self.s().close.wait().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.s().close.reason()
    }
}
