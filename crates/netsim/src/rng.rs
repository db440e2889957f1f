//! The random numbers behind every impairment decision.
//!
//! We own the generator rather than borrow one from `rand` so that a seed
//! means the same decisions forever: `rand` documents that `StdRng` may
//! change algorithm between releases, and a benchmark result that cannot be
//! reproduced after `cargo update` is worth little. SplitMix64 (Steele, Lea
//! and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014)
//! is eight lines, passes BigCrush, and any seed — including 0 — is fine.

/// SplitMix64: a 64-bit state advanced by a fixed odd increment, then mixed.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// An independent stream for one purpose (loss, jitter, …) derived from
    /// one user seed, so that turning one impairment on does not change the
    /// decisions another one makes.
    pub(crate) fn stream(seed: u64, purpose: u64) -> SplitMix64 {
        let mut mixer = SplitMix64::new(seed ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F));
        SplitMix64::new(mixer.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (0 never, 1 always).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in [0, n] inclusive (Lemire's multiply-shift; the bias is at
    /// most n / 2^64, far below anything a network test can see).
    pub(crate) fn up_to(&mut self, n: u64) -> u64 {
        match n.checked_add(1) {
            Some(range) => ((self.next_u64() as u128 * range as u128) >> 64) as u64,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of the reference C implementation seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn streams_differ_and_floats_stay_in_range() {
        let mut a = SplitMix64::stream(7, 1);
        let mut b = SplitMix64::stream(7, 2);
        assert_ne!(a.next_u64(), b.next_u64());
        for _ in 0..10_000 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(a.up_to(3) <= 3);
        }
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
    }
}
