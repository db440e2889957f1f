//! One-way latency: an HdrHistogram in nanoseconds, its percentiles and
//! the points of its CDF for plotting.

use hdrhistogram::Histogram;

/// Largest latency recorded: a minute (anything later is clamped there and
/// is a bug in the run, not a measurement).
const MAX_NS: u64 = 60_000_000_000;

/// Percentiles every row reports.
pub const PERCENTILES: [(f64, &str); 4] = [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9")];

/// Latency samples of one run, 3 significant digits (0.1% error).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// A latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latency {
    /// An empty record.
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid"),
        }
    }

    /// Records one sample in nanoseconds (0 counts as 1 ns).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Samples of at most `limit`: packets delivered within a latency
    /// budget (to the histogram's 0.1% precision).
    pub fn count_within(&self, limit: std::time::Duration) -> u64 {
        let ns = (limit.as_nanos() as u64).clamp(1, MAX_NS);
        self.hist.count_between(1, ns)
    }

    /// The value at `percentile` (0–100) in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_percentile(percentile) as f64 / 1e6
    }

    /// p50/p90/p99/p99.9/max in milliseconds.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            p50: self.percentile_ms(50.0),
            p90: self.percentile_ms(90.0),
            p99: self.percentile_ms(99.0),
            p999: self.percentile_ms(99.9),
            max: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.max() as f64 / 1e6
            },
        }
    }

    /// Points `(latency ms, fraction of samples at or below it)` of the
    /// empirical CDF, one per distinct histogram bucket, thinned to at most
    /// `max_points` (always keeping the first and the last).
    pub fn cdf(&self, max_points: usize) -> Vec<(f64, f64)> {
        let total = self.hist.len();
        if total == 0 {
            return Vec::new();
        }
        let mut points = Vec::new();
        let mut seen = 0u64;
        for v in self.hist.iter_recorded() {
            seen += v.count_at_value();
            let value = self.hist.highest_equivalent(v.value_iterated_to());
            points.push((value as f64 / 1e6, seen as f64 / total as f64));
        }
        thin(points, max_points.max(2))
    }
}

/// Keeps at most `max` points, evenly by index, always the first and last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let last = points.len() - 1;
    let step = last as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| points[((i as f64 * step).round() as usize).min(last)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_set() {
        let mut l = Latency::new();
        // 1..=1000 microseconds.
        for us in 1..=1000u64 {
            l.record_ns(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(s.p50, 0.5), "{s:?}");
        assert!(close(s.p90, 0.9), "{s:?}");
        assert!(close(s.p99, 0.99), "{s:?}");
        assert!(close(s.p999, 0.999), "{s:?}");
        assert!(close(s.max, 1.0), "{s:?}");
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let mut l = Latency::new();
        for _ in 0..990 {
            l.record_ns(100_000); // 0.1 ms
        }
        for _ in 0..10 {
            l.record_ns(20_000_000); // 20 ms
        }
        let s = l.summary();
        assert!((s.p50 - 0.1).abs() < 0.001 && (s.p90 - 0.1).abs() < 0.001);
        assert!(s.p999 > 19.9 && s.max > 19.9);
    }

    #[test]
    fn empty_is_zero_and_out_of_range_is_clamped() {
        let mut l = Latency::new();
        assert_eq!(l.summary(), Summary::default());
        assert!(l.cdf(10).is_empty());
        l.record_ns(0);
        l.record_ns(u64::MAX);
        assert_eq!(l.count(), 2);
        assert!(l.summary().max >= 59_000.0);
    }

    #[test]
    fn cdf_is_monotone_ends_at_one_and_is_thinned() {
        let mut l = Latency::new();
        for i in 0..10_000u64 {
            l.record_ns(50_000 + (i * 7919) % 2_000_000);
        }
        let cdf = l.cdf(50);
        assert_eq!(cdf.len(), 50);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cdf.last().unwrap().1, 1.0);
        assert!(cdf[0].0 >= 0.05 && cdf[0].0 < 0.051);
        // Unthinned: one point per distinct bucket.
        let mut few = Latency::new();
        for v in [1_000_000, 1_000_000, 2_000_000] {
            few.record_ns(v);
        }
        let points = few.cdf(100);
        assert_eq!(points.len(), 2);
        assert!((points[0].1 - 2.0 / 3.0).abs() < 1e-9);
    }
}
