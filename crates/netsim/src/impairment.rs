//! The pure model of one direction: packets in, decisions out, no I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, ImpairmentConfig, QueueLimit, TimedBurstLoss};
use crate::rng::SplitMix64;

/// Why a packet (or a duplicate copy) was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Independent random loss ([`ImpairmentConfig::loss`]).
    RandomLoss,
    /// Burst loss, per packet ([`ImpairmentConfig::burst_loss`]) or
    /// timed ([`ImpairmentConfig::timed_burst_loss`]).
    BurstLoss,
    /// The rate cap's drop-tail queue was full.
    QueueOverflow,
    /// [`ImpairmentConfig::max_in_flight`] packets were already held.
    DelayLineFull,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not delivered.
    Drop(DropCause),
    /// Delivered once, at this time.
    Deliver(Instant),
    /// Duplicated and both copies delivered: the original at the first
    /// time, the copy at the second.
    DeliverTwice(Instant, Instant),
}

impl Decision {
    /// The release times, zero to two of them.
    pub fn deliveries(&self) -> impl Iterator<Item = Instant> {
        let (a, b) = match *self {
            Decision::Drop(_) => (None, None),
            Decision::Deliver(at) => (Some(at), None),
            Decision::DeliverTwice(at, copy) => (Some(at), Some(copy)),
        };
        a.into_iter().chain(b)
    }
}

/// Packets dropped, by cause. Counts copies: a duplicated packet whose copy
/// does not fit the queue adds one `queue_overflow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Independent random loss.
    pub random_loss: u64,
    /// Burst loss (either chain).
    pub burst_loss: u64,
    /// Rate queue full.
    pub queue_overflow: u64,
    /// In-flight cap reached.
    pub delay_line_full: u64,
}

impl DropCounts {
    /// All causes together.
    pub fn total(&self) -> u64 {
        self.random_loss + self.burst_loss + self.queue_overflow + self.delay_line_full
    }

    fn count(&mut self, cause: DropCause) {
        match cause {
            DropCause::RandomLoss => self.random_loss += 1,
            DropCause::BurstLoss => self.burst_loss += 1,
            DropCause::QueueOverflow => self.queue_overflow += 1,
            DropCause::DelayLineFull => self.delay_line_full += 1,
        }
    }
}

/// What an [`Impairment`] has decided so far. Every copy is either scheduled
/// or dropped: `received + duplicated == scheduled + dropped.total()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairmentStats {
    /// Packets offered to [`Impairment::on_packet`].
    pub received: u64,
    /// Copies given a release time.
    pub scheduled: u64,
    /// Extra copies made by duplication (whether or not they then fit the queue).
    pub duplicated: u64,
    /// Copies dropped, by cause.
    pub dropped: DropCounts,
}

/// One direction of an impaired link, as a pure function of its
/// configuration, its seed and the packets offered to it with their arrival
/// times. The caller owns the clock and the packets; this type only says
/// when each packet leaves, or why it does not.
///
/// ```
/// use relay_netsim::{Decision, Impairment, ImpairmentConfig};
/// use std::time::{Duration, Instant};
///
/// let mut link = Impairment::new(ImpairmentConfig::default().delay(Duration::from_millis(20)), 1).unwrap();
/// let t0 = Instant::now();
/// assert_eq!(link.on_packet(t0, 1200), Decision::Deliver(t0 + Duration::from_millis(20)));
/// ```
#[derive(Debug, Clone)]
pub struct Impairment {
    config: ImpairmentConfig,
    // One stream per impairment, so that (say) adding jitter does not change
    // which packets are lost.
    loss_rng: SplitMix64,
    burst_rng: SplitMix64,
    duplicate_rng: SplitMix64,
    jitter_rng: SplitMix64,
    timed_rng: SplitMix64,
    burst_bad: bool,
    /// When the per-packet chain last stepped (the previous packet's
    /// arrival), for [`BURST_MEMORY`].
    burst_last: Option<Instant>,
    /// Where the timed burst chain is; `None` until the first packet, and
    /// again after its settings change.
    timed: Option<TimedState>,
    /// Rate queue: (time the last bit leaves, length) per queued packet,
    /// oldest first.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    /// Release times of every copy not yet released (as of the last `now`).
    in_flight: BinaryHeap<Reverse<Instant>>,
    /// Latest release time handed out, for the no-reordering rule.
    last_release: Option<Instant>,
    stats: ImpairmentStats,
}

impl Impairment {
    /// A fresh link in the good burst state with empty queues. The same
    /// `seed`, configuration and arrivals always give the same decisions, on
    /// every machine and in every release of this crate.
    pub fn new(config: ImpairmentConfig, seed: u64) -> Result<Impairment, ConfigError> {
        config.validate()?;
        Ok(Impairment {
            config,
            loss_rng: SplitMix64::stream(seed, 1),
            burst_rng: SplitMix64::stream(seed, 2),
            duplicate_rng: SplitMix64::stream(seed, 3),
            jitter_rng: SplitMix64::stream(seed, 4),
            timed_rng: SplitMix64::stream(seed, 5),
            burst_bad: false,
            burst_last: None,
            timed: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: BinaryHeap::new(),
            last_release: None,
            stats: ImpairmentStats::default(),
        })
    }

    /// Replaces the configuration from the next packet on. Packets already
    /// scheduled keep their release times; the random streams, the burst
    /// state and the rate queue carry over (a new rate applies to packets
    /// arriving from now on). The timed burst chain carries over too unless
    /// its own settings change; then it starts afresh at the next packet.
    pub fn set_config(&mut self, config: ImpairmentConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if config.timed_burst_loss != self.config.timed_burst_loss {
            self.timed = None;
        }
        self.config = config;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &ImpairmentConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairmentStats {
        self.stats
    }

    /// Copies scheduled but not yet due as of the last `now` given.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`.
    /// Arrival times must not go backwards.
    ///
    /// The stages run in this order: burst loss (per packet, then timed),
    /// random loss, duplication,
    /// then for each copy the in-flight cap, the rate queue, and delay with
    /// jitter (see the crate documentation for why).
    pub fn on_packet(&mut self, now: Instant, len: usize) -> Decision {
        self.stats.received += 1;
        while self.in_flight.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.in_flight.pop();
        }
        while self.queue.front().is_some_and(|(done, _)| *done <= now) {
            let (_, bytes) = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= bytes;
        }

        if let Some(chain) = self.config.burst_loss {
            // A burst is an event on the path, not a count of one sender's
            // packets: after a silence of BURST_MEMORY the chain's state is
            // drawn afresh from its stationary distribution, so a sparse
            // sender (one retransmission per timeout) is not held in one
            // burst for seconds.
            if self
                .burst_last
                .is_some_and(|last| now.saturating_duration_since(last) > BURST_MEMORY)
            {
                self.burst_bad = self.burst_rng.chance(chain.stationary_bad());
            }
            self.burst_last = Some(now);
            // Decide in the current state, then step: a stay in bad of k
            // packets is then exactly a burst of k losses (loss_bad = 1).
            let loss = if self.burst_bad {
                chain.loss_bad
            } else {
                chain.loss_good
            };
            let lost = self.burst_rng.chance(loss);
            let flip = if self.burst_bad {
                chain.p_bad_to_good
            } else {
                chain.p_good_to_bad
            };
            if self.burst_rng.chance(flip) {
                self.burst_bad = !self.burst_bad;
            }
            if lost {
                return self.drop_packet(DropCause::BurstLoss);
            }
        }
        if let Some(chain) = self.config.timed_burst_loss
            && self.timed_bad_at(chain, now)
        {
            return self.drop_packet(DropCause::BurstLoss);
        }
        if self.config.loss > 0.0 && self.loss_rng.chance(self.config.loss) {
            return self.drop_packet(DropCause::RandomLoss);
        }
        let copies = if self.config.duplicate > 0.0 && self.duplicate_rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };

        let first = self.schedule(now, len);
        let second = if copies == 2 {
            self.schedule(now, len).ok()
        } else {
            None
        };
        match (first, second) {
            (Ok(at), Some(copy)) => Decision::DeliverTwice(at, copy),
            (Ok(at), None) => Decision::Deliver(at),
            // The copy sees the same queue the original did not fit in, so
            // it was dropped too (and counted).
            (Err(cause), _) => Decision::Drop(cause),
        }
    }

    /// Advances the timed burst chain to `now` and says whether it is in
    /// *bad* there.
    fn timed_bad_at(&mut self, chain: TimedBurstLoss, now: Instant) -> bool {
        let Some(gap) = chain.mean_gap() else {
            return false; // 0% loss: never leaves good
        };
        if gap.is_zero() {
            return true; // 100% loss: never leaves bad
        }
        // After this many mean cycles without a packet the chain has
        // forgotten its state (correlation decays as e^(−t/τ) with τ under
        // half a cycle: e^(−128) here), so a sender back from a long silence
        // starts afresh instead of stepping through every burst it missed.
        const FORGET_AFTER_CYCLES: u32 = 64;
        let forget = (chain.mean_burst + gap).saturating_mul(FORGET_AFTER_CYCLES);
        let mut state = match self.timed {
            Some(state) if now.saturating_duration_since(state.next_flip) < forget => state,
            // Start in the stationary distribution, so a short run loses
            // the mean share from its first packet on.
            _ => {
                let bad = self.timed_rng.chance(chain.mean_loss);
                TimedState {
                    bad,
                    next_flip: now + self.sojourn(bad, chain.mean_burst, gap),
                }
            }
        };
        while state.next_flip <= now {
            state.bad = !state.bad;
            state.next_flip += self.sojourn(state.bad, chain.mean_burst, gap);
        }
        self.timed = Some(state);
        state.bad
    }

    /// An exponentially distributed stay in *bad* (mean `burst`) or *good*
    /// (mean `gap`): −mean · ln(1 − U). At least a nanosecond, so the chain
    /// always moves forward; at most about 30 years. (`ln` comes from the
    /// platform's libm: a last-bit difference moves a flip by far less than
    /// the nanosecond it is rounded to, so seeds replay across machines.)
    fn sojourn(&mut self, bad: bool, burst: Duration, gap: Duration) -> Duration {
        let mean = if bad { burst } else { gap }.as_nanos() as f64;
        let nanos = -mean * (1.0 - self.timed_rng.next_f64()).ln();
        Duration::from_nanos(nanos.clamp(1.0, 1e18) as u64)
    }

    fn drop_packet(&mut self, cause: DropCause) -> Decision {
        self.stats.dropped.count(cause);
        Decision::Drop(cause)
    }

    /// One copy through the in-flight cap, the rate queue and the delay.
    fn schedule(&mut self, now: Instant, len: usize) -> Result<Instant, DropCause> {
        let cause = if self.in_flight.len() >= self.config.max_in_flight {
            Some(DropCause::DelayLineFull)
        } else if self
            .config
            .rate
            .is_some_and(|rate| !self.queue_fits(rate.queue, len))
        {
            Some(DropCause::QueueOverflow)
        } else {
            None
        };
        if let Some(cause) = cause {
            self.stats.dropped.count(cause);
            return Err(cause);
        }

        let mut departs = now;
        if let Some(rate) = self.config.rate {
            let start = self.queue.back().map_or(now, |(done, _)| (*done).max(now));
            departs = start + transmission_time(len, rate.bits_per_second);
            self.queue.push_back((departs, len));
            self.queued_bytes += len;
        }

        let mut at = departs + self.sample_delay();
        if !self.config.reorder
            && let Some(last) = self.last_release
        {
            at = at.max(last);
        }
        self.last_release = Some(self.last_release.map_or(at, |last| last.max(at)));
        self.in_flight.push(Reverse(at));
        self.stats.scheduled += 1;
        Ok(at)
    }

    fn queue_fits(&self, limit: QueueLimit, len: usize) -> bool {
        if self.queue.is_empty() {
            return true;
        }
        match limit {
            QueueLimit::Bytes(max) => self.queued_bytes + len <= max,
            QueueLimit::Packets(max) => self.queue.len() < max,
        }
    }

    /// `delay` plus a uniform sample in [−jitter, +jitter], floored at zero.
    fn sample_delay(&mut self) -> Duration {
        let jitter = self.config.jitter.as_nanos().min(u64::MAX as u128 / 2) as u64;
        if jitter == 0 {
            return self.config.delay;
        }
        let offset = self.jitter_rng.up_to(2 * jitter) as i128 - jitter as i128;
        let nanos = (self.config.delay.as_nanos() as i128 + offset).max(0);
        Duration::from_nanos(nanos.min(u64::MAX as i128) as u64)
    }
}

/// How long the per-packet burst chain ([`ImpairmentConfig::burst_loss`])
/// remembers its state without packets. A per-packet chain has no time
/// scale of its own; on a real path a burst (a fade, a queue overflow)
/// lasts milliseconds to tens of milliseconds. Packets closer together than
/// this step the chain as before (a 2.5 Mbit/s video stream sends every
/// ~4 ms, 50 pps audio every 20 ms); after a longer silence the next packet
/// finds the chain in *bad* with its stationary probability, as a packet
/// at a random time would.
pub const BURST_MEMORY: Duration = Duration::from_millis(100);

/// Where the timed burst chain is.
#[derive(Debug, Clone, Copy)]
struct TimedState {
    bad: bool,
    /// When it next changes state.
    next_flip: Instant,
}

/// Time for `len` bytes to leave at `bits_per_second`, rounded up to the
/// nanosecond so the cap is never exceeded.
fn transmission_time(len: usize, bits_per_second: u64) -> Duration {
    let bits = len as u128 * 8 * 1_000_000_000;
    let nanos = bits.div_ceil(bits_per_second as u128);
    Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_QUEUE, GilbertElliott};

    const MS: Duration = Duration::from_millis(1);

    fn link(config: ImpairmentConfig, seed: u64) -> Impairment {
        Impairment::new(config, seed).unwrap()
    }

    /// Offers `n` packets of `len` bytes every `gap`, returns the decisions.
    fn run(link: &mut Impairment, t0: Instant, n: usize, gap: Duration, len: usize) -> Vec<Decision> {
        (0..n).map(|i| link.on_packet(t0 + gap * i as u32, len)).collect()
    }

    /// Asserts `count` of `n` trials is within 4 standard deviations of `n·p`.
    fn assert_binomial(count: u64, n: u64, p: f64, what: &str) {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - mean).abs() <= 4.0 * sigma,
            "{what}: {count} of {n}, expected {mean:.0} ± {:.0} (4σ)",
            4.0 * sigma
        );
    }

    #[test]
    fn clean_link_delivers_immediately_in_order() {
        let t0 = Instant::now();
        let mut l = link(ImpairmentConfig::default(), 0);
        for d in run(&mut l, t0, 100, MS, 100).iter().enumerate() {
            assert_eq!(*d.1, Decision::Deliver(t0 + MS * d.0 as u32));
        }
        assert_eq!(l.stats().scheduled, 100);
    }

    /// The exact decisions for seed 42. If this changes, every recorded
    /// benchmark scenario changes with it: that needs a very good reason.
    #[test]
    fn golden_decisions_for_a_fixed_seed() {
        let config = ImpairmentConfig::default()
            .loss(0.2)
            .duplicate(0.2)
            .delay(10 * MS)
            .jitter(2 * MS)
            .reorder(true);
        let t0 = Instant::now();
        let mut l = link(config.clone(), 42);
        let got: Vec<String> = run(&mut l, t0, 16, MS, 1200)
            .into_iter()
            .map(|d| match d {
                Decision::Drop(cause) => format!("{cause:?}"),
                Decision::Deliver(at) => format!("{}", (at - t0).as_micros()),
                Decision::DeliverTwice(at, copy) => {
                    format!("{}+{}", (at - t0).as_micros(), (copy - t0).as_micros())
                }
            })
            .collect();
        // Microseconds after t0 (copy after `+`). Cross-checked against an
        // independent transcription of the model in Python.
        let expected = [
            "10041",
            "12936",
            "13139",
            "12908",
            "14201",
            "15016",
            "14777",
            "17747",
            "18663",
            "17513+18917",
            "RandomLoss",
            "19782",
            "20103",
            "21762+21117",
            "23379",
            "23355+24639",
        ];
        assert_eq!(got, expected);

        // Same seed and traffic, same decisions; another seed, others.
        let again = run(&mut link(config.clone(), 42), t0, 1000, MS, 1200);
        assert_eq!(again, run(&mut link(config.clone(), 42), t0, 1000, MS, 1200));
        assert_ne!(again, run(&mut link(config, 43), t0, 1000, MS, 1200));
    }

    #[test]
    fn random_loss_matches_the_setting() {
        let t0 = Instant::now();
        for (p, seed) in [(0.01, 1), (0.05, 2)] {
            let mut l = link(ImpairmentConfig::default().loss(p), seed);
            run(&mut l, t0, 100_000, Duration::from_micros(10), 200);
            let s = l.stats();
            assert_binomial(s.dropped.random_loss, 100_000, p, &format!("random loss {p}"));
            assert_eq!(s.dropped.total(), s.dropped.random_loss);
            assert_eq!(s.received, s.scheduled + s.dropped.total());
        }
    }

    #[test]
    fn duplication_matches_the_setting() {
        let t0 = Instant::now();
        let mut l = link(ImpairmentConfig::default().duplicate(0.01).delay(MS), 9);
        let decisions = run(&mut l, t0, 100_000, Duration::from_micros(10), 200);
        let twice = decisions
            .iter()
            .filter(|d| matches!(d, Decision::DeliverTwice(..)))
            .count();
        assert_binomial(twice as u64, 100_000, 0.01, "duplicates");
        assert_eq!(l.stats().duplicated, twice as u64);
        assert_eq!(l.stats().scheduled, 100_000 + twice as u64);
    }

    #[test]
    fn full_loss_black_holes_and_zero_restores() {
        let t0 = Instant::now();
        let mut l = link(ImpairmentConfig::default().loss(1.0), 3);
        assert!(
            run(&mut l, t0, 1000, MS, 100)
                .iter()
                .all(|d| *d == Decision::Drop(DropCause::RandomLoss))
        );
        l.set_config(ImpairmentConfig::default()).unwrap();
        assert!(matches!(
            l.on_packet(t0 + 2 * MS * 1000, 100),
            Decision::Deliver(_)
        ));
        assert!(l.set_config(ImpairmentConfig::default().loss(2.0)).is_err());
    }

    #[test]
    fn gilbert_elliott_mean_loss_and_burst_length() {
        let t0 = Instant::now();
        for (loss, burst) in [(0.05, 4.0), (0.02, 2.0), (0.1, 10.0)] {
            let chain = GilbertElliott::from_mean_loss(loss, burst).unwrap();
            let mut l = link(ImpairmentConfig::default().burst_loss(chain), 5);
            let n = 200_000;
            let decisions = run(&mut l, t0, n, Duration::from_micros(10), 200);
            let mut bursts = Vec::new();
            let mut run_len = 0u64;
            for d in &decisions {
                if *d == Decision::Drop(DropCause::BurstLoss) {
                    run_len += 1;
                } else if run_len > 0 {
                    bursts.push(run_len);
                    run_len = 0;
                }
            }
            let lost: u64 = bursts.iter().sum();
            let mean_burst = lost as f64 / bursts.len() as f64;
            // Burst lengths are geometric with mean b, variance b(b − 1);
            // the mean of k of them is within 4σ/√k.
            let sigma = (burst * (burst - 1.0)).sqrt() / (bursts.len() as f64).sqrt();
            assert!(
                (mean_burst - burst).abs() <= 4.0 * sigma.max(1e-9),
                "mean burst {mean_burst:.3} over {} bursts, expected {burst} ± {:.3}",
                bursts.len(),
                4.0 * sigma
            );
            // Losses are correlated, so the binomial bound is too tight:
            // allow ±15% of the mean.
            let measured = lost as f64 / n as f64;
            assert!(
                (measured - loss).abs() < 0.15 * loss,
                "mean loss {measured} for {loss}"
            );
        }
    }

    /// Runs of consecutive `BurstLoss` drops in `decisions`, in packets.
    fn loss_runs(decisions: &[Decision]) -> Vec<u64> {
        let mut runs = Vec::new();
        let mut run_len = 0u64;
        for d in decisions {
            if *d == Decision::Drop(DropCause::BurstLoss) {
                run_len += 1;
            } else if run_len > 0 {
                runs.push(run_len);
                run_len = 0;
            }
        }
        runs
    }

    #[test]
    fn timed_burst_long_run_loss_and_burst_duration_match() {
        // A paced stream, one packet per ms for 1,000 s: each burst shows
        // as a run of losses about as many ms long as the burst.
        let t0 = Instant::now();
        let (mean_loss, burst) = (0.05, 20 * MS);
        let mut l = link(ImpairmentConfig::default().timed_burst_loss(mean_loss, burst), 7);
        let n = 1_000_000;
        let decisions = run(&mut l, t0, n, MS, 200);
        let runs = loss_runs(&decisions);
        let lost: u64 = runs.iter().sum();
        assert_eq!(l.stats().dropped.burst_loss, lost);

        // The loss fraction is the time average of a two-state chain with
        // correlation time τ = b·g/(b + g) (19 ms): variance ≈ 2·p(1−p)·τ/T.
        let tau = 0.019;
        let sigma = (2.0 * mean_loss * (1.0 - mean_loss) * tau / 1000.0).sqrt();
        let measured = lost as f64 / n as f64;
        assert!(
            (measured - mean_loss).abs() <= 4.0 * sigma,
            "mean loss {measured:.4}, expected {mean_loss} ± {:.4} (4σ)",
            4.0 * sigma
        );

        // Burst durations are exponential (σ = mean): the mean of k bursts
        // is within 4·mean/√k. Sampling at 1 ms misses a few bursts shorter
        // than a packet gap, which biases the mean up by about 2.5%.
        let mean_ms = lost as f64 / runs.len() as f64;
        let tolerance = 4.0 * 20.0 / (runs.len() as f64).sqrt() + 0.5;
        assert!(
            (mean_ms - 20.0).abs() <= tolerance,
            "mean burst {mean_ms:.2} ms over {} bursts, expected 20 ± {tolerance:.2}",
            runs.len()
        );
        // About 1,000 s / 400 ms bursts.
        assert!((2300..2700).contains(&runs.len()), "{} bursts", runs.len());
    }

    #[test]
    fn a_sparse_sender_is_not_held_in_a_burst() {
        // One packet per 200 ms for an hour, as a sender probing once per
        // retransmission timeout does. A chain stepped only per packet
        // would keep such a sender in a burst for 4 packets on average,
        // 800 ms, and for seconds at its longest. Both chains let it go:
        // the timed one because its bursts are over long before the next
        // probe, the per-packet one because it forgets its state after
        // BURST_MEMORY without packets.
        let t0 = Instant::now();
        let every = 200 * MS;
        let n = 18_000;
        let longest = |config: ImpairmentConfig| {
            let mut l = link(config, 3);
            let runs = loss_runs(&run(&mut l, t0, n, every, 200));
            let lost = l.stats().dropped.burst_loss;
            assert_binomial(lost, n as u64, 0.05, "sparse sender's losses");
            let mean = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
            (every * *runs.iter().max().unwrap() as u32, mean)
        };
        let per_packet = GilbertElliott::from_mean_loss(0.05, 4.0).unwrap();
        for (name, config) in [
            ("per-packet", ImpairmentConfig::default().burst_loss(per_packet)),
            (
                "timed",
                ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS),
            ),
        ] {
            let (stuck, mean_run) = longest(config);
            // Independent 5% losses: a run of 4 among 18,000 probes about
            // one time in ten, of 5 one time in 200.
            assert!(stuck <= 4 * every, "{name} chain: longest {stuck:?}");
            // A loss is followed by another only when the next probe finds
            // a burst afresh: about 5% of the time.
            assert!(mean_run < 1.15, "{name} chain: mean run {mean_run}");
        }

        // A dense stream (one packet per ms) still meets 4-packet bursts.
        let mut dense = link(ImpairmentConfig::default().burst_loss(per_packet), 3);
        let runs = loss_runs(&run(&mut dense, t0, n, MS, 200));
        let mean_run = dense.stats().dropped.burst_loss as f64 / runs.len() as f64;
        assert!(
            (3.5..4.5).contains(&mean_run),
            "dense stream: mean run {mean_run}"
        );
    }

    #[test]
    fn timed_burst_is_deterministic_and_independent_of_other_streams() {
        let t0 = Instant::now();
        let config = ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS);
        let decide = |config: ImpairmentConfig, seed| run(&mut link(config, seed), t0, 50_000, MS, 200);
        let a = decide(config.clone(), 42);
        assert_eq!(a, decide(config.clone(), 42));
        assert_ne!(a, decide(config.clone(), 43));
        // Adding jitter does not change which packets are lost.
        let lost =
            |d: &[Decision]| -> Vec<bool> { d.iter().map(|d| matches!(d, Decision::Drop(_))).collect() };
        let jittered = decide(config.clone().delay(20 * MS).jitter(2 * MS), 42);
        assert_eq!(lost(&a), lost(&jittered));
        // 0% never drops, 100% always does.
        assert!(
            decide(ImpairmentConfig::default().timed_burst_loss(0.0, 20 * MS), 1)
                .iter()
                .all(|d| matches!(d, Decision::Deliver(_)))
        );
        assert!(
            decide(ImpairmentConfig::default().timed_burst_loss(1.0, 20 * MS), 1)
                .iter()
                .all(|d| *d == Decision::Drop(DropCause::BurstLoss))
        );
    }

    #[test]
    fn timed_burst_carries_over_unrelated_config_changes() {
        // The harness black-holes the path with `loss(1.0)` and restores
        // it: the timed chain must carry on where it was, not restart.
        let t0 = Instant::now();
        let base = ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS);
        let mut plain = link(base.clone(), 9);
        let mut switched = link(base.clone(), 9);
        let mut differ = 0;
        for i in 0..20_000u32 {
            let now = t0 + MS * i;
            if i == 5_000 {
                switched.set_config(base.clone().loss(1.0)).unwrap();
            }
            if i == 6_000 {
                switched.set_config(base.clone()).unwrap();
            }
            let (a, b) = (plain.on_packet(now, 200), switched.on_packet(now, 200));
            if !(5_000..6_000).contains(&i) && a != b {
                differ += 1;
            }
        }
        assert_eq!(differ, 0);
    }

    #[test]
    fn rate_cap_paces_to_the_rate_and_drops_at_the_tail() {
        // 1 Mbit/s, 1,000-byte packets: one every 8 ms. Offer 2 Mbit/s.
        let t0 = Instant::now();
        let config = ImpairmentConfig::default().rate(1_000_000, QueueLimit::Packets(10));
        let mut l = link(config, 0);
        let decisions = run(&mut l, t0, 2000, 4 * MS, 1000);
        let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= 8 * MS,
                "departures closer than the link allows"
            );
        }
        let span = (*times.last().unwrap() - t0).as_secs_f64();
        let throughput = times.len() as f64 * 8000.0 / span;
        assert!((throughput - 1e6).abs() < 0.01e6, "throughput {throughput} bit/s");
        let s = l.stats();
        // Half the offered load cannot fit (less the queue's start-up).
        assert!((s.dropped.queue_overflow as i64 - 1000).abs() <= 12, "{s:?}");
        assert_eq!(s.received, s.scheduled + s.dropped.queue_overflow);
        // The queue never held more than 10 packets: the worst queueing
        // delay is 10 transmission times.
        for (i, d) in decisions.iter().enumerate() {
            if let Decision::Deliver(at) = d {
                assert!(*at - (t0 + 4 * MS * i as u32) <= 80 * MS);
            }
        }
    }

    #[test]
    fn rate_queue_in_bytes_and_under_the_cap() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1 byte/µs; 3,000-byte queue holds three 1,000-byte packets.
        let config = ImpairmentConfig::default().rate(8_000_000, QueueLimit::Bytes(3000));
        let mut l = link(config.clone(), 0);
        let burst = run(&mut l, t0, 5, Duration::ZERO, 1000);
        let us = |d: &Decision| d.deliveries().next().map(|at| (at - t0).as_micros());
        let got: Vec<Option<u128>> = burst.iter().map(us).collect();
        assert_eq!(got, vec![Some(1000), Some(2000), Some(3000), None, None]);
        assert_eq!(l.stats().dropped.queue_overflow, 2);
        // Under the cap nothing waits and nothing drops.
        let mut l = link(config, 0);
        let decisions = run(&mut l, t0, 1000, 2 * MS, 1000);
        assert!(
            decisions
                .iter()
                .enumerate()
                .all(|(i, d)| us(d) == Some(2000 * i as u128 + 1000))
        );
        // A packet larger than the byte limit still passes an empty queue.
        let mut l = link(
            ImpairmentConfig::default().rate(8_000_000, QueueLimit::Bytes(100)),
            0,
        );
        assert!(matches!(l.on_packet(t0, 1500), Decision::Deliver(_)));
        assert_eq!(DEFAULT_QUEUE, QueueLimit::Bytes(65536));
    }

    #[test]
    fn no_reorder_keeps_order_under_jitter() {
        // Order is kept unless asked otherwise.
        assert!(!ImpairmentConfig::default().reorder);
        let t0 = Instant::now();
        let config = ImpairmentConfig::default()
            .delay(20 * MS)
            .jitter(5 * MS)
            .duplicate(0.05);
        let mut l = link(config, 11);
        let decisions = run(&mut l, t0, 10_000, Duration::from_micros(100), 200);
        let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "a packet left before its predecessor"
        );
        // Jitter still applies: delays stay in the ±5 ms window (raising a
        // release time to its predecessor's never takes it past the
        // predecessor's own +5 ms) and still vary.
        let delays: Vec<Duration> = decisions
            .iter()
            .enumerate()
            .map(|(i, d)| d.deliveries().next().unwrap() - (t0 + Duration::from_micros(100) * i as u32))
            .collect();
        assert!(delays.iter().all(|d| *d >= 15 * MS && *d <= 25 * MS));
        let spread = *delays.iter().max().unwrap() - *delays.iter().min().unwrap();
        assert!(spread > 3 * MS, "delays spread only {spread:?}");
    }

    #[test]
    fn reorder_mode_reorders_and_respects_the_jitter_window() {
        let t0 = Instant::now();
        let config = ImpairmentConfig::default()
            .delay(20 * MS)
            .jitter(5 * MS)
            .reorder(true);
        let mut l = link(config, 11);
        let decisions = run(&mut l, t0, 10_000, Duration::from_micros(100), 200);
        let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
        let inversions = times.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 1000, "only {inversions} reorderings");
        for (i, at) in times.iter().enumerate() {
            let delay = *at - (t0 + Duration::from_micros(100) * i as u32);
            assert!(delay >= 15 * MS && delay <= 25 * MS, "delay {delay:?}");
        }
        // Jitter larger than the delay is floored at zero delay.
        let mut l = link(
            ImpairmentConfig::default().delay(MS).jitter(5 * MS).reorder(true),
            1,
        );
        for d in run(&mut l, t0, 1000, MS, 100).iter().enumerate() {
            let at = d.1.deliveries().next().unwrap();
            assert!(at >= t0 + MS * d.0 as u32);
        }
    }

    #[test]
    fn in_flight_cap_drops_and_counts() {
        let t0 = Instant::now();
        let config = ImpairmentConfig::default().delay(10 * MS).max_in_flight(5);
        let mut l = link(config, 0);
        let decisions = run(&mut l, t0, 8, Duration::ZERO, 100);
        assert_eq!(decisions[4], Decision::Deliver(t0 + 10 * MS));
        assert_eq!(decisions[5], Decision::Drop(DropCause::DelayLineFull));
        assert_eq!(l.stats().dropped.delay_line_full, 3);
        assert_eq!(l.in_flight(), 5);
        // Once they are due, there is room again.
        assert!(matches!(l.on_packet(t0 + 10 * MS, 100), Decision::Deliver(_)));
        assert_eq!(l.in_flight(), 1);
    }
}
