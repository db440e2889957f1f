//! The relay interface: [`RelayLink`], its errors, and the close signal.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{LinkStats, Mode, Packet, Transport};

/// The size every link must carry in every mode (DESIGN.md): an RTP packet
/// that fits a 1,500-byte Ethernet MTU with room for any tunnel.
pub const MIN_MAX_PACKET_SIZE: usize = 1400;

/// Default time without hearing from the peer before a link is declared dead.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Default latency budget of the unreliable modes (`--max-delay`): how long
/// a packet may wait on the sending side (in the link's queues and the
/// transport stack's) before it is dropped as
/// [`DropCause::Expired`](crate::DropCause::Expired) rather than delivered
/// late. 200 ms is the mouth-to-ear budget ITU-T G.114 leaves for one
/// network leg of interactive media; past it a video frame is stale for a
/// viewer and an audio packet is behind the jitter buffer.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(200);

/// Why a link closed.
///
/// In JSON: `{"reason":"liveness_timeout","detail":5.0}`, the detail of a
/// liveness timeout in seconds like every duration sfu-relay reports.
///
/// ```
/// use std::time::Duration;
/// use relay_core::CloseReason;
/// let silent = CloseReason::LivenessTimeout(Duration::from_millis(2500));
/// let json = serde_json::to_string(&silent).unwrap();
/// assert_eq!(json, r#"{"reason":"liveness_timeout","detail":2.5}"#);
/// assert_eq!(serde_json::from_str::<CloseReason>(&json).unwrap(), silent);
/// assert!(serde_json::from_str::<CloseReason>(r#"{"reason":"liveness_timeout","detail":-1}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum CloseReason {
    /// This side called [`RelayLink::close`].
    Local,
    /// The peer closed the link (and said so).
    PeerClosed,
    /// Nothing was heard from the peer for this long (JSON detail: seconds).
    LivenessTimeout(#[serde(with = "seconds")] Duration),
    /// The transport failed; the text says how.
    Transport(String),
}

/// A `Duration` as seconds (`f64`).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(d)?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| D::Error::custom(format!("{seconds} is not a duration in seconds")))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::LivenessTimeout(d) => {
                write!(f, "peer silent for {} ms (liveness timeout)", d.as_millis())
            }
            CloseReason::Transport(e) => write!(f, "transport failed: {e}"),
        }
    }
}

/// What can go wrong sending or receiving on a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The packet is larger than this link carries. Nothing was sent; the
    /// link is unaffected.
    #[error("packet of {size} bytes exceeds this link's maximum of {max} bytes")]
    TooLarge {
        /// Bytes offered.
        size: usize,
        /// [`RelayLink::max_packet_size`].
        max: usize,
    },
    /// The link is closed; the reason says why.
    #[error("link closed: {0}")]
    Closed(CloseReason),
}

/// One established, bidirectional relay connection between two servers.
///
/// Every backend honours the same contract, checked by the conformance
/// suite (`relay_core::conformance`, feature `conformance`):
///
/// - **Ready means ready**: a value of this type exists only once packets
///   can flow both ways; a packet the peer sends the instant its side is
///   ready is delivered.
/// - **One message = one RTP or RTCP packet.** Packets up to
///   [`MIN_MAX_PACKET_SIZE`] pass in every mode; larger than
///   [`max_packet_size`](RelayLink::max_packet_size) is
///   [`LinkError::TooLarge`], never a stall.
/// - **Unreliable modes never block the sender**: a full queue drops (the
///   oldest packet where the backend controls the queue) and counts it.
///   Reliable modes apply back-pressure: `send` waits.
/// - **Liveness**: a silent peer closes the link with
///   [`CloseReason::LivenessTimeout`].
///
/// All methods take `&self`, so one task can send while another receives
/// (share it in an `Arc`).
#[async_trait]
pub trait RelayLink: Send + Sync + fmt::Debug {
    /// The transport carrying this link.
    fn transport(&self) -> Transport;

    /// The delivery mode.
    fn mode(&self) -> Mode;

    /// Largest packet [`send`](RelayLink::send) accepts (at least
    /// [`MIN_MAX_PACKET_SIZE`]).
    fn max_packet_size(&self) -> usize;

    /// Sends one packet. Unreliable modes return at once; reliable modes wait
    /// for room.
    async fn send(&self, packet: Packet) -> Result<(), LinkError>;

    /// Sends again a packet this link sent before, because the peer asked
    /// for it (a repair loop's retransmission). The default sends it like
    /// any other; a link whose wire form must not be built twice (SRTP:
    /// each packet index is encrypted once) overrides it to put the bytes
    /// of the first sending on the wire again.
    async fn resend(&self, packet: Packet) -> Result<(), LinkError> {
        self.send(packet).await
    }

    /// Receives the next packet. After the link closes, packets already
    /// received are still returned, then `Err(LinkError::Closed)`.
    async fn recv(&self) -> Result<Packet, LinkError>;

    /// Sends the packets in `packets`, in order, as [`send`](RelayLink::send)
    /// would one by one, taking them out of `packets` (the vector keeps its
    /// capacity for the next batch, so a sender allocates nothing per
    /// batch). A backend with batched I/O puts many on the wire per system
    /// call (rtp-udp: GSO); none holds a packet back to wait for more, so
    /// a batch of one leaves at once.
    ///
    /// Stops at the first packet refused: `Err(TooLarge)` (the packets
    /// before it were sent; that one and the rest stay in `packets`, the
    /// oversized one first, for the caller to drop or split) or
    /// `Err(Closed)` (what was not sent stays in `packets`). The default
    /// loops over `send`.
    ///
    /// ```
    /// # use relay_core::{Packet, RelayLink, LinkError, build_rtp};
    /// # async fn demo(link: &dyn RelayLink) -> Result<(), LinkError> {
    /// let mut batch: Vec<Packet> = Vec::with_capacity(64);
    /// for seq in 0..3 {
    ///     batch.push(Packet::parse(build_rtp(96, seq, 0, 0x1234, b"frame part")).unwrap());
    /// }
    /// link.send_batch(&mut batch).await?;
    /// assert!(batch.is_empty());
    /// # Ok(()) }
    /// ```
    async fn send_batch(&self, packets: &mut Vec<Packet>) -> Result<(), LinkError> {
        for i in 0..packets.len() {
            // A clone is a reference count: the packet stays in `packets`
            // until it is known to have been taken.
            let sent = match self.try_send(packets[i].clone()) {
                Ok(sent) => sent,
                Err(packet) => self.send(packet).await,
            };
            if let Err(e) = sent {
                packets.drain(..i);
                return Err(e);
            }
        }
        packets.clear();
        Ok(())
    }

    /// Waits for at least one packet, then appends to `out` every packet
    /// already received, up to `max`; returns how many it appended (0 only
    /// when `max` is 0, at once). The first packet is returned as soon as
    /// it is there: nothing waits for a batch to fill. After the link
    /// closes, packets already received are still returned, then
    /// `Err(LinkError::Closed)`. The shape of tokio's `recv_many`.
    ///
    /// The default is [`recv`](RelayLink::recv) then
    /// [`try_recv`](RelayLink::try_recv) until none waits.
    ///
    /// ```
    /// # use relay_core::{Packet, RelayLink, LinkError};
    /// # async fn demo(link: &dyn RelayLink) -> Result<(), LinkError> {
    /// let mut got: Vec<Packet> = Vec::with_capacity(256);
    /// let n = link.recv_batch(&mut got, 256).await?;
    /// assert!(n >= 1 && n == got.len());
    /// # Ok(()) }
    /// ```
    async fn recv_batch(&self, out: &mut Vec<Packet>, max: usize) -> Result<usize, LinkError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.recv().await?);
        let mut n = 1;
        while n < max {
            match self.try_recv() {
                Some(p) => out.push(p),
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }

    /// Whether [`resend`](RelayLink::resend) finds what to put on the wire
    /// by the packet's SSRC and sequence number alone, because the link
    /// keeps what it sent (rtp-udp in srtp mode with a resend window keeps
    /// the protected bytes). A repair loop over such a link keeps no copy
    /// of the packets, only their numbers and sizes, and hands `resend`
    /// the RTP header alone. The default: no.
    fn resends_by_number(&self) -> bool {
        false
    }

    /// Sends `packet` as [`send`](RelayLink::send) would, if the link can
    /// without waiting; `Err(packet)` hands it back when it would have to
    /// wait (or the link does not say), and the caller awaits `send`.
    ///
    /// A fast path for wrappers of a link (the repair loop) that call it
    /// once per packet: `send` through `dyn RelayLink` allocates its future,
    /// which on a link whose sending never waits (rtp-udp) cost as much as
    /// the wrapper's own work. The default always hands the packet back.
    fn try_send(&self, packet: Packet) -> Result<Result<(), LinkError>, Packet> {
        Err(packet)
    }

    /// A packet already received, if one waits, without waiting: what
    /// [`recv`](RelayLink::recv) would return at once. `None` when none
    /// waits, the link is closed, or the link does not say; the caller then
    /// awaits `recv`. The fast path of [`try_send`](RelayLink::try_send)'s
    /// kind on the receiving side; the default is always `None`.
    fn try_recv(&self) -> Option<Packet> {
        None
    }

    /// Counters so far.
    fn stats(&self) -> LinkStats;

    /// Closes the link and tells the peer (best effort). Idempotent.
    fn close(&self);

    /// Waits until the link is closed, by either side or by a failure.
    async fn closed(&self) -> CloseReason;

    /// The close reason, if closed.
    fn close_reason(&self) -> Option<CloseReason>;
}

/// A one-shot, many-reader close signal: the first reason wins.
#[derive(Debug, Clone)]
pub struct CloseSignal {
    tx: watch::Sender<Option<CloseReason>>,
}

impl Default for CloseSignal {
    fn default() -> Self {
        CloseSignal::new()
    }
}

impl CloseSignal {
    /// An open signal.
    pub fn new() -> CloseSignal {
        CloseSignal {
            tx: watch::Sender::new(None),
        }
    }

    /// Closes with `reason`; returns whether this call closed it (false if it
    /// was already closed).
    pub fn close(&self, reason: CloseReason) -> bool {
        self.tx.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
            true
        })
    }

    /// The reason, if closed.
    pub fn reason(&self) -> Option<CloseReason> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees the change to closed (for `select!` loops).
    pub fn subscribe(&self) -> watch::Receiver<Option<CloseReason>> {
        self.tx.subscribe()
    }

    /// Whether closed.
    pub fn is_closed(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Waits for the close.
    pub async fn wait(&self) -> CloseReason {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or(CloseReason::Local),
            // The sender lives in `self`, so it cannot be dropped while we wait.
            Err(_) => CloseReason::Local,
        }
    }
}

/// Checks `size` against `max`, the same way in every backend.
pub fn check_size(size: usize, max: usize) -> Result<(), LinkError> {
    if size > max {
        Err(LinkError::TooLarge { size, max })
    } else {
        Ok(())
    }
}
