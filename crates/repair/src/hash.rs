//! A cheap hasher for the repair loop's per-packet maps.
//!
//! Both ends look up a map once per packet (the sender's kept packets by
//! SSRC and sequence number, the receiver's streams by SSRC), and std's
//! SipHash cost about as much as the rest of that packet's bookkeeping.
//! [`Keyed`] hashes a word with one multiplication (Fibonacci hashing),
//! folded so that the low bits hashbrown indexes by depend on every input
//! bit, after mixing in a random per-map key: the receiver's SSRCs are the
//! peer's choice, and without the key a peer could pick SSRCs that all
//! land in one bucket. The key is not a cryptographic defence, but the
//! streams a detector tracks are bounded (`receiver::MAX_STREAMS`), so
//! the worst a peer can do is bounded too.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Builds [`KeyedHasher`]s with one random key per map.
#[derive(Debug, Clone)]
pub(crate) struct Keyed(u64);

impl Default for Keyed {
    fn default() -> Self {
        // RandomState is seeded per thread and per instance by std.
        Keyed(RandomState::new().hash_one(0x5EED_u64) | 1)
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

/// One multiply-and-fold per word; see the module docs.
#[derive(Debug)]
pub(crate) struct KeyedHasher(u64);

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_between_maps_and_spread_sequential_words() {
        let (a, b) = (Keyed::default(), Keyed::default());
        assert_ne!(a.hash_one(7u32), b.hash_one(7u32), "a random key per map");
        // Consecutive sequence numbers of one SSRC fill distinct buckets of
        // a 1,024-bucket table (hashbrown indexes by the low bits).
        let buckets: std::collections::HashSet<u64> = (0..1024u64)
            .map(|seq| a.hash_one((42u64 << 16) | seq) & 1023)
            .collect();
        assert!(buckets.len() > 600, "{} of 1024 buckets", buckets.len());
    }
}
