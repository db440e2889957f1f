//! [`SsrcTable`]: per-SSRC state with a bound. A link's statistics keep
//! one entry per SSRC on the per-packet path; a sender (or, on plain
//! rtp-udp, anyone who can spoof the peer's address) that cycles SSRCs
//! would otherwise grow it without limit. Past the bound the least
//! recently seen entry goes, found with the CLOCK approximation of LRU
//! (each entry has a "seen again since the hand last passed" bit; the hand
//! clears bits until it finds a clear one), so an insertion costs O(1)
//! amortised however many SSRCs cycle through.

use std::collections::HashMap;

/// SSRCs a table keeps by default, per direction of a link: far more
/// than any media server sends on one link (one per track and
/// simulcast layer, and their RTX), few enough that a snapshot stays
/// small.
pub const DEFAULT_SSRC_CAP: usize = 4096;

#[derive(Debug)]
struct Slot<V> {
    ssrc: u32,
    seen: bool,
    value: V,
}

/// Per-SSRC values, at most `cap` of them.
#[derive(Debug)]
pub struct SsrcTable<V> {
    index: HashMap<u32, usize>,
    slots: Vec<Slot<V>>,
    hand: usize,
    cap: usize,
    evicted: u64,
}

impl<V> SsrcTable<V> {
    /// An empty table of at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> SsrcTable<V> {
        SsrcTable {
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// The entry of `ssrc`, made with `make` if it is new (evicting the
    /// least recently seen one if the table is full).
    pub fn entry(&mut self, ssrc: u32, make: impl FnOnce() -> V) -> &mut V {
        if let Some(&i) = self.index.get(&ssrc) {
            let slot = &mut self.slots[i];
            slot.seen = true;
            return &mut slot.value;
        }
        // A new entry counts as seen once it is seen again: a flood of
        // one-packet SSRCs then evicts its own, not the streams that keep
        // sending.
        let slot = Slot {
            ssrc,
            seen: false,
            value: make(),
        };
        let i = if self.slots.len() < self.cap {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            // Each pass clears at most `cap` bits, so this ends within two
            // turns of the hand.
            while self.slots[self.hand].seen {
                self.slots[self.hand].seen = false;
                self.hand = (self.hand + 1) % self.cap;
            }
            let victim = self.hand;
            self.hand = (self.hand + 1) % self.cap;
            self.index.remove(&self.slots[victim].ssrc);
            self.evicted += 1;
            self.slots[victim] = slot;
            victim
        };
        self.index.insert(ssrc, i);
        &mut self.slots[i].value
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &V)> {
        self.slots.iter().map(|s| (s.ssrc, &s.value))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries evicted to make room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_cycling_ssrcs_stay_within_the_cap_and_are_counted() {
        let mut t = SsrcTable::new(DEFAULT_SSRC_CAP);
        for ssrc in 0..1_000_000u32 {
            *t.entry(ssrc, || 0u64) += 1;
            // The real stream keeps sending among the flood.
            if ssrc % 100 == 0 {
                *t.entry(0xFFFF_FFFF, || 0u64) += 1;
            }
        }
        assert_eq!(t.len(), DEFAULT_SSRC_CAP);
        assert_eq!(t.index.len(), DEFAULT_SSRC_CAP);
        // All but the cap's worth of flood SSRCs went, and the real stream
        // (seen every 100 insertions, more often than the hand comes by)
        // never did: evictions = inserted - kept.
        let kept_real = t.iter().find(|(s, _)| *s == 0xFFFF_FFFF).map(|(_, v)| *v);
        assert_eq!(kept_real, Some(10_000), "the live stream kept its counts");
        assert_eq!(t.evicted(), 1_000_000 + 1 - DEFAULT_SSRC_CAP as u64);
        // The index and the slots agree.
        for (i, slot) in t.slots.iter().enumerate() {
            assert_eq!(t.index[&slot.ssrc], i);
        }
    }

    #[test]
    fn below_the_cap_nothing_is_evicted() {
        let mut t = SsrcTable::new(3);
        for round in 0..5 {
            for ssrc in [7, 8, 9] {
                *t.entry(ssrc, || 0) += round;
            }
        }
        assert_eq!(t.evicted(), 0);
        let mut all: Vec<_> = t.iter().map(|(s, v)| (s, *v)).collect();
        all.sort();
        assert_eq!(all, vec![(7, 10), (8, 10), (9, 10)]);
        // A fourth replaces one that had not been seen since the hand
        // passed: all were seen, so the hand clears them and takes 7.
        t.entry(10, || 0);
        assert_eq!(t.evicted(), 1);
        assert!(t.iter().all(|(s, _)| s != 7));
    }
}
