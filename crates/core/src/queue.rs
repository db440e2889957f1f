//! A bounded packet queue with the two overflow policies the relay
//! contract needs: unreliable modes drop the oldest packet, reliable modes
//! make the producer wait.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::{CloseReason, Packet};

/// What a full queue does with one more packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest queued packet (fresh media beats stale media).
    DropOldest,
    /// Make the producer wait for room (back-pressure).
    Wait,
}

/// Result of a non-waiting push.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and the oldest packet was dropped to make room.
    DroppedOldest,
    /// `Overflow::Wait` queue is full; the packet is handed back.
    Full(Packet),
    /// The queue is closed; the packet is handed back.
    Closed(Packet),
}

#[derive(Debug)]
struct State {
    items: VecDeque<Packet>,
    closed: Option<CloseReason>,
}

/// Bounded multi-producer, single-consumer packet queue.
///
/// ```
/// use relay_core::{Overflow, Packet, PacketQueue, Pushed, build_rtp};
/// let q = PacketQueue::new(1, Overflow::DropOldest);
/// let p = |seq| Packet::parse(build_rtp(96, seq, 0, 1, b"")).unwrap();
/// assert_eq!(q.push(p(1)), Pushed::Queued);
/// assert_eq!(q.push(p(2)), Pushed::DroppedOldest);
/// assert_eq!(q.try_pop().unwrap().sequence_number(), Some(2));
/// ```
#[derive(Debug)]
pub struct PacketQueue {
    state: Mutex<State>,
    capacity: usize,
    overflow: Overflow,
    readable: Notify,
    writable: Notify,
}

impl PacketQueue {
    /// A queue of at most `capacity` packets (at least 1).
    pub fn new(capacity: usize, overflow: Overflow) -> PacketQueue {
        let capacity = capacity.max(1);
        PacketQueue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(4096)),
                closed: None,
            }),
            capacity,
            overflow,
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only plain data behind the lock: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Most packets held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.state().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes without waiting.
    pub fn push(&self, packet: Packet) -> Pushed {
        let mut st = self.state();
        if st.closed.is_some() {
            return Pushed::Closed(packet);
        }
        let mut result = Pushed::Queued;
        if st.items.len() >= self.capacity {
            match self.overflow {
                Overflow::DropOldest => {
                    st.items.pop_front();
                    result = Pushed::DroppedOldest;
                }
                Overflow::Wait => return Pushed::Full(packet),
            }
        }
        st.items.push_back(packet);
        drop(st);
        self.readable.notify_one();
        result
    }

    /// Pushes, waiting for room if the queue is `Overflow::Wait` and full.
    /// Returns the close reason if the queue closes first.
    pub async fn push_wait(&self, mut packet: Packet) -> Result<Pushed, CloseReason> {
        loop {
            let room = self.writable.notified();
            match self.push(packet) {
                Pushed::Full(p) => packet = p,
                Pushed::Closed(_) => return Err(self.close_reason()),
                other => return Ok(other),
            }
            room.await;
        }
    }

    /// Pops without waiting.
    pub fn try_pop(&self) -> Option<Packet> {
        let p = self.state().items.pop_front();
        if p.is_some() {
            self.made_room();
        }
        p
    }

    /// Moves up to `max` packets into `out` without waiting; returns how many.
    pub fn pop_batch(&self, out: &mut Vec<Packet>, max: usize) -> usize {
        let mut st = self.state();
        let n = st.items.len().min(max);
        out.extend(st.items.drain(..n));
        drop(st);
        if n > 0 && self.overflow == Overflow::Wait {
            self.writable.notify_waiters();
            self.writable.notify_one();
        }
        n
    }

    /// Waits for a packet. Queued packets are returned even after close;
    /// then the close reason.
    pub async fn pop(&self) -> Result<Packet, CloseReason> {
        loop {
            let ready = self.readable.notified();
            {
                let mut st = self.state();
                if let Some(p) = st.items.pop_front() {
                    drop(st);
                    self.made_room();
                    return Ok(p);
                }
                if let Some(r) = &st.closed {
                    return Err(r.clone());
                }
            }
            ready.await;
        }
    }

    /// Wakes a sender waiting for room. Only an [`Overflow::Wait`] queue
    /// has any: a drop-oldest one never makes `push_wait` wait, and its
    /// pops (one per packet) skip the notification.
    fn made_room(&self) {
        if self.overflow == Overflow::Wait {
            self.writable.notify_one();
        }
    }

    /// Closes: pushes fail from now on, pops drain what is left.
    pub fn close(&self, reason: CloseReason) {
        let mut st = self.state();
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        drop(st);
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    fn close_reason(&self) -> CloseReason {
        self.state().closed.clone().unwrap_or(CloseReason::Local)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::build_rtp;

    fn p(seq: u16) -> Packet {
        Packet::parse(build_rtp(96, seq, 0, 1, b"x")).unwrap()
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let q = PacketQueue::new(3, Overflow::DropOldest);
        let dropped = (0..10).filter(|&i| q.push(p(i)) == Pushed::DroppedOldest).count();
        assert_eq!(dropped, 7);
        let left: Vec<_> = std::iter::from_fn(|| q.try_pop())
            .map(|p| p.sequence_number().unwrap())
            .collect();
        assert_eq!(left, vec![7, 8, 9]);
    }

    #[tokio::test]
    async fn wait_policy_blocks_until_room() {
        let q = Arc::new(PacketQueue::new(2, Overflow::Wait));
        q.push_wait(p(0)).await.unwrap();
        q.push_wait(p(1)).await.unwrap();
        assert!(matches!(q.push(p(2)), Pushed::Full(_)));
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push_wait(p(2)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!producer.is_finished(), "producer must wait while full");
        assert_eq!(q.pop().await.unwrap().sequence_number(), Some(0));
        let r = tokio::time::timeout(Duration::from_secs(2), producer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r, Ok(Pushed::Queued));
    }

    #[tokio::test]
    async fn close_drains_then_reports_reason_and_wakes_waiters() {
        let q = Arc::new(PacketQueue::new(1, Overflow::Wait));
        q.push(p(0));
        let q2 = q.clone();
        let blocked = tokio::spawn(async move { q2.push_wait(p(1)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.close(CloseReason::PeerClosed);
        let r = tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r, Err(CloseReason::PeerClosed));
        assert!(q.pop().await.is_ok());
        assert_eq!(q.pop().await, Err(CloseReason::PeerClosed));
        assert!(matches!(q.push(p(3)), Pushed::Closed(_)));
    }
}
