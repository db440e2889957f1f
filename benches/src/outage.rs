//! What a run shows about an outage: how long after the path came back
//! each mode delivered again, and whether it delivered packets too old to
//! play. Pure: arrivals in, [`Recovery`] out.

use std::time::Duration;

/// One-way latency past which a packet is stale: ITU-T G.114 puts the
/// whole mouth-to-ear budget of interactive speech at 150 ms, so a packet
/// later than that at one relay hop is discarded by any player. Delivering
/// it costs bandwidth and, on a reliable path, holds back the fresh
/// packets behind it.
pub const STALE_AFTER: Duration = Duration::from_millis(150);

/// One arrival: when (from the run's epoch) and its one-way latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Arrival time, nanoseconds since the run's epoch.
    pub at_ns: u64,
    /// One-way latency, nanoseconds.
    pub latency_ns: u64,
}

/// How a path came back from an outage, timed from the moment the proxy
/// stopped dropping (the path's return).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Recovery {
    /// How long the path was actually down.
    pub down: Duration,
    /// Return → first arrival of anything. `None`: nothing arrived after.
    pub first_arrival: Option<Duration>,
    /// Return → first arrival within [`STALE_AFTER`]: real-time delivery
    /// is back. A reliable mode first delivers its backlog (stale), so this
    /// comes later than `first_arrival` there.
    pub fresh: Option<Duration>,
    /// Arrivals after the return older than [`STALE_AFTER`].
    pub stale: u64,
    /// Highest latency among arrivals after the return (ms): how old the
    /// oldest delivered packet was.
    pub oldest_ms: f64,
}

/// Judges `arrivals` against a path that went down at `down_ns` and came
/// back at `up_ns` (both from the run's epoch).
///
/// ```
/// use relay_bench::outage::{Arrival, recovery};
/// use std::time::Duration;
///
/// let ms = 1_000_000;
/// // Down at 1 s, up at 2 s; a backlog packet sent at 0.99 s arrives at
/// // 2.3 s, then a fresh one 20 ms after it was sent.
/// let arrivals = [
///     Arrival { at_ns: 900 * ms, latency_ns: 20 * ms },
///     Arrival { at_ns: 2_300 * ms, latency_ns: 1_310 * ms },
///     Arrival { at_ns: 2_320 * ms, latency_ns: 20 * ms },
/// ];
/// let r = recovery(&arrivals, 1_000 * ms, 2_000 * ms);
/// assert_eq!(r.first_arrival, Some(Duration::from_millis(300)));
/// assert_eq!(r.fresh, Some(Duration::from_millis(320)));
/// assert_eq!((r.stale, r.oldest_ms), (1, 1310.0));
/// ```
pub fn recovery(arrivals: &[Arrival], down_ns: u64, up_ns: u64) -> Recovery {
    let after = arrivals.iter().filter(|a| a.at_ns >= up_ns);
    let since_up = |a: &Arrival| Duration::from_nanos(a.at_ns - up_ns);
    let stale_ns = STALE_AFTER.as_nanos() as u64;
    Recovery {
        down: Duration::from_nanos(up_ns.saturating_sub(down_ns)),
        first_arrival: after.clone().map(since_up).min(),
        fresh: after
            .clone()
            .filter(|a| a.latency_ns <= stale_ns)
            .map(since_up)
            .min(),
        stale: after.clone().filter(|a| a.latency_ns > stale_ns).count() as u64,
        oldest_ms: after.map(|a| a.latency_ns).max().unwrap_or(0) as f64 / 1e6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(at_ms: u64, latency_ms: u64) -> Arrival {
        Arrival {
            at_ns: at_ms * MS,
            latency_ns: latency_ms * MS,
        }
    }

    #[test]
    fn unreliable_path_resumes_fresh_and_delivers_nothing_stale() {
        // Every 33 ms, 20 ms latency; nothing between 1,000 and 2,020 ms.
        let arrivals: Vec<Arrival> = (0..100)
            .map(|i| at(i * 33 + 20, 20))
            .filter(|a| !(1_000 * MS..2_020 * MS).contains(&a.at_ns))
            .collect();
        let r = recovery(&arrivals, 1_000 * MS, 2_000 * MS);
        assert_eq!(r.down, Duration::from_secs(1));
        // The first packet sent after 2,000 ms goes at 2,013 and lands at 2,033.
        assert_eq!(r.first_arrival, Some(Duration::from_millis(33)));
        assert_eq!(r.fresh, r.first_arrival);
        assert_eq!((r.stale, r.oldest_ms), (0, 20.0));
    }

    #[test]
    fn nothing_after_the_return_is_none() {
        let r = recovery(&[at(500, 20)], 1_000 * MS, 2_000 * MS);
        assert_eq!(
            (r.first_arrival, r.fresh, r.stale, r.oldest_ms),
            (None, None, 0, 0.0)
        );
    }

    #[test]
    fn a_backlog_is_stale_and_delays_fresh() {
        // A reliable stream: the backlog of the outage first, in order,
        // then fresh packets, the first of them still behind the backlog.
        let mut arrivals = vec![at(500, 20)];
        arrivals.extend((0..28).map(|i| at(2_400 + i, 1_400 - i * 50)));
        arrivals.push(at(2_500, 60));
        arrivals.push(at(2_600, 20));
        let r = recovery(&arrivals, 1_000 * MS, 2_000 * MS);
        assert_eq!(r.first_arrival, Some(Duration::from_millis(400)));
        assert_eq!(r.fresh, Some(Duration::from_millis(425)));
        assert_eq!(r.stale, 25);
        assert_eq!(r.oldest_ms, 1_400.0);
    }
}
