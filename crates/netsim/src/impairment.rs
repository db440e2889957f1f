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
#[path = "impairment_tests.rs"]
mod tests;
