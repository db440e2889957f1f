//! [`Outbox`]: the application's packets on their way to SCTP, each with
//! the instant it was queued, so the driver can tell a packet that has
//! waited past the latency budget (see [`DcConfig::max_delay`](crate::DcConfig::max_delay)).
//!
//! The same two overflow policies as `relay_core::PacketQueue`: unreliable
//! links drop the oldest packet, reliable links make the producer wait.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use relay_core::{CloseReason, Overflow, Packet, Pushed};
use tokio::sync::Notify;

use crate::link::lock;

/// A packet and when `send` queued it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) at: Instant,
    pub(crate) packet: Packet,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Queued>,
    closed: Option<CloseReason>,
}

/// Bounded multi-producer, single-consumer queue of timestamped packets.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    overflow: Overflow,
    readable: Notify,
    writable: Notify,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: None,
            }),
            capacity: capacity.max(1),
            overflow,
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// Queues `packet` as of `at` without waiting.
    pub(crate) fn push(&self, packet: Packet, at: Instant) -> Pushed {
        let mut st = lock(&self.state);
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
        st.items.push_back(Queued { at, packet });
        drop(st);
        self.readable.notify_one();
        result
    }

    /// Queues, waiting for room while a `Wait` queue is full; the close
    /// reason if the queue closes first.
    pub(crate) async fn push_wait(&self, mut packet: Packet) -> Result<Pushed, CloseReason> {
        loop {
            let room = self.writable.notified();
            match self.push(packet, Instant::now()) {
                Pushed::Full(p) => packet = p,
                Pushed::Closed(_) => return Err(self.close_reason()),
                other => return Ok(other),
            }
            room.await;
        }
    }

    pub(crate) fn try_pop(&self) -> Option<Queued> {
        let q = lock(&self.state).items.pop_front();
        if q.is_some() {
            self.writable.notify_one();
        }
        q
    }

    /// Waits for a packet; what is queued is still returned after close.
    pub(crate) async fn pop(&self) -> Result<Queued, CloseReason> {
        loop {
            let ready = self.readable.notified();
            {
                let mut st = lock(&self.state);
                if let Some(q) = st.items.pop_front() {
                    drop(st);
                    self.writable.notify_one();
                    return Ok(q);
                }
                if let Some(r) = &st.closed {
                    return Err(r.clone());
                }
            }
            ready.await;
        }
    }

    /// Pushes fail from now on; pops drain what is left.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut st = lock(&self.state);
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        drop(st);
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    fn close_reason(&self) -> CloseReason {
        lock(&self.state).closed.clone().unwrap_or(CloseReason::Local)
    }
}

/// Whether a packet queued at `queued` has waited past `budget` at `now`
/// (`None`: no budget, a reliable link).
pub(crate) fn expired(queued: Instant, now: Instant, budget: Option<std::time::Duration>) -> bool {
    budget.is_some_and(|b| now.saturating_duration_since(queued) > b)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use relay_core::build_rtp;

    use super::*;

    fn p(seq: u16) -> Packet {
        Packet::parse(build_rtp(96, seq, 0, 1, b"x")).unwrap()
    }

    #[test]
    fn keeps_the_time_each_packet_was_queued_and_drops_the_oldest() {
        let q = Outbox::new(2, Overflow::DropOldest);
        let t0 = Instant::now();
        assert_eq!(q.push(p(0), t0), Pushed::Queued);
        assert_eq!(q.push(p(1), t0 + Duration::from_millis(1)), Pushed::Queued);
        assert_eq!(q.push(p(2), t0 + Duration::from_millis(2)), Pushed::DroppedOldest);
        let first = q.try_pop().unwrap();
        assert_eq!(first.packet.sequence_number(), Some(1));
        assert_eq!(first.at, t0 + Duration::from_millis(1));
        assert_eq!(q.try_pop().unwrap().packet.sequence_number(), Some(2));
        assert!(q.try_pop().is_none());
    }

    #[test]
    fn a_packet_expires_only_past_the_budget() {
        let t0 = Instant::now();
        let budget = Some(Duration::from_millis(200));
        assert!(!expired(t0, t0 + Duration::from_millis(200), budget));
        assert!(expired(t0, t0 + Duration::from_millis(201), budget));
        assert!(!expired(t0, t0 + Duration::from_secs(60), None), "reliable");
    }

    #[tokio::test]
    async fn wait_policy_blocks_until_room_and_close_wakes_it() {
        let q = Arc::new(Outbox::new(1, Overflow::Wait));
        q.push_wait(p(0)).await.unwrap();
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push_wait(p(1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!producer.is_finished(), "producer must wait while full");
        assert_eq!(q.pop().await.unwrap().packet.sequence_number(), Some(0));
        let pushed = tokio::time::timeout(Duration::from_secs(2), producer).await;
        assert_eq!(pushed.unwrap().unwrap(), Ok(Pushed::Queued));
        q.close(CloseReason::PeerClosed);
        assert_eq!(q.pop().await.unwrap().packet.sequence_number(), Some(1));
        assert_eq!(q.pop().await.unwrap_err(), CloseReason::PeerClosed);
    }
}
