//! One local input, several links: the branches of a fanned-out pipe.
//!
//! `relay offer` with several `--signal` relays its `--in` to several
//! answering relays at once. Each link is a [`Branch`]: the local → link
//! tasks put every packet into each branch's queue without waiting, and
//! each branch sends from its own queue onto its own link. So a link that
//! cannot keep up (a reliable mode under flow control, a receiver that
//! stopped reading) only fills its own queue; once that holds
//! [`BRANCH_QUEUE_PACKETS`] the oldest packet is dropped and counted
//! ([`PipeCounters::queue_overflow`]), and the other links never wait.
//! That is the unreliable modes' rule ("never block the sender, drop the
//! oldest"), applied to reliable links too: waiting for one would stall
//! every other receiver of the stream.
//!
//! A branch whose link is down (not up yet, reconnecting, given up)
//! counts what it misses in [`PipeCounters::no_link`]. Every branch has
//! its own counters, which add up into the pipe's.
//!
//! The far side of every link still sends its RTCP back to the local
//! source, but keyframe requests are merged: one per stream per
//! [`KEYFRAME_REQUEST_MIN_INTERVAL`](super::feedback::KEYFRAME_REQUEST_MIN_INTERVAL)
//! reaches the source, whichever receiver (or the relay itself, when a
//! link comes up) asked first; the others are counted in
//! [`PipeCounters::keyframe_requests_merged`]. Eight SFUs that lose the
//! same packet would otherwise make the source send eight keyframes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use relay_core::{CloseReason, LinkError, Overflow, Packet, PacketQueue, Pushed, RelayLink};

use super::up::count_send;
use super::{FarRequests, PipeCounters, Shared};

/// Packets a fan-out link may fall behind before its oldest are dropped:
/// 100 ms at 10,000 packets/s (a 100 Mbit/s stream of 1,200-byte packets),
/// about 1.2 MiB per link. An unreliable link empties its queue at once
/// (its send never waits), so the bound matters only for a link that
/// stalls, and memory stays bounded however many links there are.
pub const BRANCH_QUEUE_PACKETS: usize = 1024;

/// A branch's queue, as the local → link tasks see it.
#[derive(Debug)]
pub(super) struct BranchQueue {
    packets: PacketQueue,
    /// A link is attached: packets are queued, not counted as missed.
    up: AtomicBool,
    counters: Arc<PipeCounters>,
}

impl BranchQueue {
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Queues a local packet for this branch's link; never waits.
    pub(super) fn push(&self, packet: Packet) {
        if !self.is_up() {
            self.counters.count(|c| &c.no_link);
            return;
        }
        if let Pushed::DroppedOldest = self.packets.push(packet) {
            self.counters.count(|c| &c.queue_overflow);
        }
    }

    /// Empties the queue, counting what it held as missed by a link that
    /// is not there (any more).
    fn flush(&self) {
        while self.packets.try_pop().is_some() {
            self.counters.count(|c| &c.no_link);
        }
    }
}

/// One link of a fanned-out pipe ([`Pipe::fan_out`](super::Pipe::fan_out)):
/// its queue and counters, and the link → local direction of its link.
#[derive(Debug, Clone)]
pub struct Branch {
    shared: Arc<Shared>,
    queue: Arc<BranchQueue>,
}

impl Branch {
    pub(super) fn new(shared: Arc<Shared>) -> Branch {
        let counters = Arc::new(PipeCounters::with_total(shared.counters.clone()));
        Branch {
            shared,
            queue: Arc::new(BranchQueue {
                packets: PacketQueue::new(BRANCH_QUEUE_PACKETS, Overflow::DropOldest),
                up: AtomicBool::new(false),
                counters,
            }),
        }
    }

    pub(super) fn queue(&self) -> &Arc<BranchQueue> {
        &self.queue
    }

    /// This branch's counters (they add up into the pipe's).
    pub fn counters(&self) -> &Arc<PipeCounters> {
        &self.queue.counters
    }

    /// Packets waiting for this branch's link now.
    pub fn queued(&self) -> usize {
        self.queue.packets.len()
    }

    /// Local packets are queued for this branch from now on, for the link
    /// [`carry`](Branch::carry) will send them on (see
    /// [`Pipe::attach`](super::Pipe::attach)); a new link asks the local
    /// sources for keyframes (merged with the other branches' requests).
    pub fn attach(&self) {
        if self.queue.up.load(Ordering::Acquire) {
            return;
        }
        // Whatever a push raced into the queue while the branch went down
        // is stale by now.
        self.queue.flush();
        self.queue.up.store(true, Ordering::Release);
        self.shared.link_came_up();
    }

    /// Relays over `link` until it closes (sending from this branch's
    /// queue, passing the far side's RTCP back); returns why it closed.
    /// What is still queued then is counted as missed.
    pub async fn carry(&self, link: Arc<dyn RelayLink>) -> CloseReason {
        self.attach();
        let counters = &*self.queue.counters;
        // A packet handed to a send that the link's end interrupts is
        // missed too.
        let sending = AtomicBool::new(false);
        let send = async {
            while let Ok(packet) = self.queue.packets.pop().await {
                sending.store(true, Ordering::Relaxed);
                let sent = link.send(packet).await;
                sending.store(false, Ordering::Relaxed);
                let closed = matches!(sent, Err(LinkError::Closed(_)));
                count_send(sent, counters);
                if closed {
                    break;
                }
            }
        };
        tokio::select! {
            _ = send => {},
            _ = self.shared.relay_down(&link, counters, None, FarRequests::Merge, None) => {},
        }
        self.queue.up.store(false, Ordering::Release);
        if sending.load(Ordering::Relaxed) {
            counters.count(|c| &c.no_link);
        }
        self.queue.flush();
        link.closed().await
    }
}

impl super::Outlet for Branch {
    fn attach(&self, _link: Arc<dyn RelayLink>) {
        Branch::attach(self);
    }

    fn carry(&self, link: Arc<dyn RelayLink>) -> impl Future<Output = CloseReason> + Send {
        Branch::carry(self, link)
    }

    fn counters(&self) -> &Arc<PipeCounters> {
        Branch::counters(self)
    }
}
