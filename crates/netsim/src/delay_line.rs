//! Packets waiting for their release time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items held until a release time, handed out earliest first; items with
/// the same release time come out in the order they went in (so a
/// no-reordering link, which gives a packet its predecessor's time, stays
/// in order). Pure: the caller supplies `now`.
///
/// ```
/// use relay_netsim::DelayLine;
/// use std::time::{Duration, Instant};
///
/// let t0 = Instant::now();
/// let mut line = DelayLine::new();
/// line.push(t0 + Duration::from_millis(2), "b");
/// line.push(t0 + Duration::from_millis(1), "a");
/// assert_eq!(line.next_due(), Some(t0 + Duration::from_millis(1)));
/// assert_eq!(line.pop_due(t0), None);
/// assert_eq!(line.pop_due(t0 + Duration::from_millis(5)), Some("a"));
/// assert_eq!(line.pop_due(t0 + Duration::from_millis(5)), Some("b"));
/// ```
#[derive(Debug)]
pub struct DelayLine<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

// Reversed so that BinaryHeap, a max-heap, pops the earliest (at, seq).
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> Default for DelayLine<T> {
    fn default() -> Self {
        DelayLine {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> DelayLine<T> {
    /// An empty line.
    pub fn new() -> DelayLine<T> {
        DelayLine::default()
    }

    /// Holds `item` until `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.heap.push(Entry {
            at,
            seq: self.next_seq,
            item,
        });
        self.next_seq += 1;
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The earliest item if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? <= now {
            self.heap.pop().map(|e| e.item)
        } else {
            None
        }
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn equal_times_keep_insertion_order() {
        let t0 = Instant::now();
        let mut line = DelayLine::new();
        for i in 0..100 {
            line.push(t0 + Duration::from_millis(if i % 2 == 0 { 5 } else { 3 }), i);
        }
        let out: Vec<i32> = std::iter::from_fn(|| line.pop_due(t0 + Duration::from_secs(1))).collect();
        let odd: Vec<i32> = (0..100).filter(|i| i % 2 == 1).collect();
        let even: Vec<i32> = (0..100).filter(|i| i % 2 == 0).collect();
        assert_eq!(out, [odd, even].concat());
        assert!(line.is_empty());
    }
}
