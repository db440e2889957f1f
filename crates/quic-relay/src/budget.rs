//! The latency budget of datagram mode, sans-IO: which packet goes to
//! quinn next, which has waited too long, and what quinn still holds.
//!
//! quinn's datagram send buffer is bounded in bytes and drops the oldest
//! datagram only when a newer one needs the room; it cannot tell how old
//! what it holds is. So the link keeps its own queue ahead of
//! `send_datagram`, stamped with the time each packet was offered, and
//! hands quinn only what fits its (small) buffer without displacing
//! anything. A packet whose wait exceeds the budget is dropped here and
//! counted as [`DropCause::Expired`](relay_core::DropCause::Expired).
//!
//! What quinn already holds can still age while the path is blocked (the
//! congestion window is full, or the path is a black hole). quinn sends its
//! buffer in order and reports its free space, so [`QuinnBuffer`] mirrors
//! which of our datagrams it still holds; when a fresh packet waits and the
//! oldest ones quinn holds are past the budget, the fresh one is handed over
//! with displacement (`send_datagram` drops the oldest to make room), so
//! stale media never leaves after a path returns.
//!
//! Everything here takes `now` from the caller: the socket loop passes
//! `Instant::now()`, the tests a scripted clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Per-datagram bookkeeping quinn adds to the payload length when it
/// measures its send buffer (`DatagramBuffer::memory_used` in quinn-proto
/// 0.11: one `Bytes` per queued datagram).
pub(crate) const QUINN_DATAGRAM_OVERHEAD: usize = std::mem::size_of::<bytes::Bytes>();

/// One packet waiting in our queue.
#[derive(Debug)]
pub(crate) struct Waiting<T> {
    /// When the application offered it.
    pub(crate) at: Instant,
    /// The framed datagram's length in bytes.
    pub(crate) len: usize,
    pub(crate) item: T,
}

/// How long a packet may wait on the sending side so that it still
/// arrives within the budget `max_delay`: the budget is what the receiver
/// sees, so the path's one-way delay, estimated as half the smoothed RTT,
/// comes off it, but never more than half the budget. Without that floor
/// an RTT estimate inflated by a lost handshake packet (quinn's smoothed
/// RTT after an ambiguous sample can exceed the whole budget) would expire
/// every packet before it left, and with nothing sent no new sample would
/// ever correct the estimate: the link would stay silent for good (seen
/// on a 40 ms path with 5% burst loss). A path whose one-way delay really
/// exceeds half the budget delivers late rather than nothing.
pub(crate) fn send_allowance(max_delay: Duration, rtt: Duration) -> Duration {
    max_delay.saturating_sub(rtt / 2).max(max_delay / 2)
}

/// Our send queue: FIFO, stamped with arrival times, bounded by age (the
/// sending side's share of the budget, passed in as `allowance`) and, as a
/// memory guard only, by a packet count.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    queue: VecDeque<Waiting<T>>,
    max_packets: usize,
}

/// What [`Outbox::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued; nothing dropped.
    Queued,
    /// Queued; the oldest packet made room for it (count cap, not age).
    DroppedOldest,
}

impl<T> Outbox<T> {
    pub(crate) fn new(max_packets: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            max_packets: max_packets.max(1),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn push(&mut self, now: Instant, len: usize, item: T) -> Queued {
        let mut dropped = Queued::Queued;
        if self.queue.len() >= self.max_packets {
            self.queue.pop_front();
            dropped = Queued::DroppedOldest;
        }
        self.queue.push_back(Waiting { at: now, len, item });
        dropped
    }

    /// Drops every packet that has waited longer than `allowance` at
    /// `now`; returns how many. The queue is FIFO, so only its head can be
    /// stale.
    pub(crate) fn expire(&mut self, now: Instant, allowance: Duration) -> u64 {
        let mut n = 0;
        while let Some(front) = self.queue.front() {
            if !is_expired(front.at, now, allowance) {
                break;
            }
            self.queue.pop_front();
            n += 1;
        }
        n
    }

    /// The next packet for quinn, if any has waited at most `allowance` at
    /// `now`, and how many expired packets were dropped on the way.
    pub(crate) fn pop_fresh(&mut self, now: Instant, allowance: Duration) -> (Option<Waiting<T>>, u64) {
        let expired = self.expire(now, allowance);
        (self.queue.pop_front(), expired)
    }
}

/// Whether a packet offered `at` has waited longer than `max_delay` at `now`.
pub(crate) fn is_expired(at: Instant, now: Instant, max_delay: Duration) -> bool {
    now.saturating_duration_since(at) > max_delay
}

/// A mirror of quinn's datagram send buffer: which of the datagrams we
/// handed over it still holds, oldest first, with their arrival times.
///
/// quinn-proto 0.11 keeps outgoing datagrams in a FIFO, sends from its
/// front, drops from its front to make room, and measures itself as
/// payload + [`QUINN_DATAGRAM_OVERHEAD`] per datagram; its
/// `send_buffer_space` is `capacity - used - overhead` (saturating). The
/// mirror follows those rules; [`sync`](Self::sync) hands back what quinn
/// has sent since, so the link counts a packet sent when it left.
#[derive(Debug)]
pub(crate) struct QuinnBuffer<T> {
    capacity: usize,
    held: VecDeque<Waiting<T>>,
    used: usize,
}

/// What the feeder should do with the packet in hand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handover {
    /// quinn has room: `send_datagram` drops nothing.
    Fits,
    /// quinn is full, but its oldest `n` datagrams are past the budget and
    /// their room is enough: `send_datagram` drops them (count them
    /// expired).
    DisplaceExpired(usize),
    /// quinn is full of datagrams still within the budget: wait for it to
    /// send, or until `Some(t)`, when its oldest expires.
    Wait(Option<Instant>),
}

impl<T> QuinnBuffer<T> {
    /// `capacity` is the `datagram_send_buffer_size` quinn was given.
    pub(crate) fn new(capacity: usize) -> Self {
        QuinnBuffer {
            capacity,
            held: VecDeque::new(),
            used: 0,
        }
    }

    /// Datagrams quinn still holds, by our account.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// quinn reports `space` free bytes: passes what it has sent since to
    /// `sent`, oldest first.
    pub(crate) fn sync(&mut self, space: usize, mut sent: impl FnMut(Waiting<T>)) {
        // quinn's used bytes are `capacity - overhead - space` while space
        // is positive, and somewhere in (capacity - overhead, capacity] when
        // it reads 0; every entry is larger than the overhead, so pruning to
        // at most `capacity - space` is exact in both cases.
        let used_at_most = self.capacity.saturating_sub(space);
        let used_at_most = if space > 0 {
            used_at_most.saturating_sub(QUINN_DATAGRAM_OVERHEAD)
        } else {
            used_at_most
        };
        while self.used > used_at_most {
            match self.held.pop_front() {
                Some(w) => {
                    self.used -= w.len + QUINN_DATAGRAM_OVERHEAD;
                    sent(w);
                }
                None => {
                    self.used = 0;
                    break;
                }
            }
        }
    }

    /// Decides how a `len`-byte datagram goes to quinn at `now`, given
    /// quinn's reported free `space`. Call [`sync`](Self::sync) with the
    /// same `space` first.
    pub(crate) fn handover(&self, len: usize, space: usize, now: Instant, max_delay: Duration) -> Handover {
        if space >= len {
            return Handover::Fits;
        }
        // What quinn's `make_space_for` would drop: from the front until
        // used + len + overhead fits the capacity.
        let fits = |used: usize| used + len + QUINN_DATAGRAM_OVERHEAD <= self.capacity;
        let mut used = self.used;
        let mut n = 0;
        for held in &self.held {
            if fits(used) {
                break;
            }
            if !is_expired(held.at, now, max_delay) {
                // Displacing would drop media that can still arrive in
                // time: wait until this one expires (or quinn sends it).
                return Handover::Wait(Some(held.at + max_delay));
            }
            used -= held.len + QUINN_DATAGRAM_OVERHEAD;
            n += 1;
        }
        if fits(used) && n > 0 {
            Handover::DisplaceExpired(n)
        } else {
            // Nothing of ours in quinn to displace (it is full of what it
            // is sending right now): wait for room.
            Handover::Wait(None)
        }
    }

    /// Records a datagram handed to quinn; with `displaced` > 0, quinn
    /// dropped that many of the oldest to make room: they go to `dropped`.
    pub(crate) fn on_handed(
        &mut self,
        waiting: Waiting<T>,
        displaced: usize,
        mut dropped: impl FnMut(Waiting<T>),
    ) {
        for _ in 0..displaced {
            if let Some(w) = self.held.pop_front() {
                self.used -= w.len + QUINN_DATAGRAM_OVERHEAD;
                dropped(w);
            }
        }
        self.used += waiting.len + QUINN_DATAGRAM_OVERHEAD;
        self.held.push_back(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn outbox_drops_by_age_and_keeps_the_fresh() {
        let t0 = Instant::now();
        let mut q = Outbox::new(100);
        q.push(t0, 100, 1);
        q.push(t0 + ms(50), 100, 2);
        q.push(t0 + ms(150), 100, 3);
        // At exactly the budget a packet is still on time.
        assert_eq!(q.expire(t0 + BUDGET, BUDGET), 0);
        assert_eq!(q.len(), 3);
        // 1 ms later the first has waited too long; the others have not.
        let (next, expired) = q.pop_fresh(t0 + ms(201), BUDGET);
        assert_eq!(expired, 1);
        assert_eq!(next.map(|w| w.item), Some(2));
        // A packet that waited 201 ms is never handed out.
        let (next, expired) = q.pop_fresh(t0 + ms(351), BUDGET);
        assert_eq!((next.map(|w| w.item), expired), (None, 1));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn outbox_count_cap_drops_the_oldest() {
        let t0 = Instant::now();
        let mut q = Outbox::new(2);
        assert_eq!(q.push(t0, 10, 'a'), Queued::Queued);
        assert_eq!(q.push(t0, 10, 'b'), Queued::Queued);
        assert_eq!(q.push(t0, 10, 'c'), Queued::DroppedOldest);
        assert_eq!(q.pop_fresh(t0, BUDGET).0.map(|w| w.item), Some('b'));
    }

    #[test]
    fn the_path_takes_its_one_way_share_of_the_budget() {
        // 40 ms RTT: ~20 ms one way, so 180 ms may be spent sending.
        assert_eq!(send_allowance(BUDGET, ms(40)), ms(180));
        // A packet that waited 190 ms would arrive ~210 ms old: expired.
        let t0 = Instant::now();
        let mut q = Outbox::new(10);
        q.push(t0, 100, ());
        assert_eq!(q.expire(t0 + ms(190), send_allowance(BUDGET, ms(40))), 1);
        // An RTT estimate past the whole budget (a lost handshake packet
        // inflates it) still leaves half the budget to send in, so packets
        // leave and new samples can correct the estimate.
        assert_eq!(send_allowance(BUDGET, ms(500)), BUDGET / 2);
        assert_eq!(send_allowance(BUDGET, ms(200)), BUDGET / 2);
    }

    /// A scripted quinn buffer: what quinn-proto's `DatagramState` does
    /// with `send(data, drop)` and `send_buffer_space`, to check the mirror
    /// against.
    struct FakeQuinn {
        capacity: usize,
        queue: VecDeque<(u32, usize)>,
    }

    impl FakeQuinn {
        fn used(&self) -> usize {
            self.queue.iter().map(|(_, l)| l + QUINN_DATAGRAM_OVERHEAD).sum()
        }
        fn space(&self) -> usize {
            self.capacity
                .saturating_sub(self.used())
                .saturating_sub(QUINN_DATAGRAM_OVERHEAD)
        }
        fn send(&mut self, id: u32, len: usize) {
            while self.used() + len + QUINN_DATAGRAM_OVERHEAD > self.capacity {
                self.queue.pop_front();
            }
            self.queue.push_back((id, len));
        }
        fn transmit(&mut self, n: usize) -> Vec<u32> {
            (0..n)
                .filter_map(|_| self.queue.pop_front().map(|(id, _)| id))
                .collect()
        }
    }

    fn waiting(at: Instant, id: u32, len: usize) -> Waiting<u32> {
        Waiting { at, len, item: id }
    }

    fn ids(buf: &mut QuinnBuffer<u32>, space: usize) -> Vec<u32> {
        let mut out = Vec::new();
        buf.sync(space, |w| out.push(w.item));
        out
    }

    #[test]
    fn mirror_follows_quinn_and_displaces_only_expired() {
        let t0 = Instant::now();
        let capacity = 4 * (1_200 + QUINN_DATAGRAM_OVERHEAD) + QUINN_DATAGRAM_OVERHEAD;
        let mut quinn = FakeQuinn {
            capacity,
            queue: VecDeque::new(),
        };
        let mut mirror = QuinnBuffer::new(capacity);
        let no_drop = |w: Waiting<u32>| panic!("dropped {}", w.item);
        // Four fresh datagrams fill quinn; the path is blocked (nothing sent).
        for id in 0..4u32 {
            let now = t0 + ms(id.into());
            assert!(ids(&mut mirror, quinn.space()).is_empty());
            assert_eq!(mirror.handover(1_200, quinn.space(), now, BUDGET), Handover::Fits);
            quinn.send(id, 1_200);
            mirror.on_handed(waiting(now, id, 1_200), 0, no_drop);
        }
        assert_eq!(mirror.held(), 4);
        // A fifth, 100 ms later: quinn's oldest is only 100 ms old, so it
        // must not be displaced; wait until it expires at t0 + 200 ms.
        let now = t0 + ms(100);
        assert!(ids(&mut mirror, quinn.space()).is_empty());
        assert_eq!(
            mirror.handover(1_200, quinn.space(), now, BUDGET),
            Handover::Wait(Some(t0 + BUDGET))
        );
        // quinn sends two (the window opened): the mirror reports them sent.
        assert_eq!(quinn.transmit(2), vec![0, 1]);
        assert_eq!(ids(&mut mirror, quinn.space()), vec![0, 1]);
        assert_eq!(mirror.held(), 2);
        assert_eq!(mirror.handover(1_200, quinn.space(), now, BUDGET), Handover::Fits);
        for id in [4, 5] {
            quinn.send(id, 1_200);
            mirror.on_handed(waiting(now, id, 1_200), 0, no_drop);
        }
        // Blocked again; at 250 ms ids 2 and 3 (offered at 2 and 3 ms) are
        // stale: a fresh packet displaces exactly the oldest.
        let now = t0 + ms(250);
        assert!(ids(&mut mirror, quinn.space()).is_empty());
        assert_eq!(
            mirror.handover(1_200, quinn.space(), now, BUDGET),
            Handover::DisplaceExpired(1)
        );
        let mut dropped = Vec::new();
        quinn.send(6, 1_200);
        mirror.on_handed(waiting(now, 6, 1_200), 1, |w| dropped.push(w.item));
        assert_eq!(dropped, vec![2]);
        assert_eq!(
            quinn.queue.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        // The next fresh packet displaces the other stale one, so nothing
        // older than the budget is left to leave when the path returns.
        assert!(ids(&mut mirror, quinn.space()).is_empty());
        assert_eq!(
            mirror.handover(1_200, quinn.space(), now, BUDGET),
            Handover::DisplaceExpired(1)
        );
        quinn.send(7, 1_200);
        mirror.on_handed(waiting(now, 7, 1_200), 1, |w| dropped.push(w.item));
        assert_eq!(dropped, vec![2, 3]);
        // Only fresh media (offered at 100 and 250 ms) is left; at 310 ms
        // ids 4 and 5 are stale too, but quinn has room again: they leave
        // only if nothing fresh comes, and the mirror says what left.
        assert_eq!(quinn.transmit(4), vec![4, 5, 6, 7]);
        assert_eq!(ids(&mut mirror, quinn.space()), vec![4, 5, 6, 7]);
        assert_eq!(mirror.held(), 0);
    }

    #[test]
    fn mirror_sync_is_exact_when_quinn_reads_full() {
        // Capacity such that four datagrams leave quinn's space at 0 with
        // used == capacity: the saturating case.
        let capacity = 4 * (1_000 + QUINN_DATAGRAM_OVERHEAD);
        let mut quinn = FakeQuinn {
            capacity,
            queue: VecDeque::new(),
        };
        let mut mirror = QuinnBuffer::new(capacity);
        let t0 = Instant::now();
        for id in 0..4 {
            quinn.send(id, 1_000);
            mirror.on_handed(waiting(t0, id, 1_000), 0, |_| {});
        }
        assert_eq!(quinn.space(), 0);
        assert!(ids(&mut mirror, quinn.space()).is_empty());
        assert_eq!(mirror.held(), 4);
        quinn.transmit(1);
        assert_eq!(ids(&mut mirror, quinn.space()), vec![0]);
        assert_eq!(mirror.held(), 3);
    }
}
