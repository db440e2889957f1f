//! What one direction of a link does to packets: [`ImpairmentConfig`] and its parts.

use std::time::Duration;

/// Largest number of packets one direction holds between arrival and release
/// (rate queue plus delay line), unless [`ImpairmentConfig::max_in_flight`]
/// says otherwise. About 100 ms of a 300,000 packets/s flood, or 40 MB of
/// 1,200-byte packets: enough for every scenario in the benchmark, small
/// enough that a mistyped `--delay 20s` cannot take the machine's memory.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32_768;

/// Mean burst length (packets) that `--burst-loss` uses unless
/// `--burst-length` is given. Four packets is an 80 ms hole in 20 ms audio,
/// or a third of a 1 Mbit/s video frame: long enough that FEC sized for random
/// loss stops helping, which is the point of a burst scenario.
pub const DEFAULT_BURST_LENGTH: f64 = 4.0;

/// Drop-tail queue size in front of a rate cap when none is given: 64 KiB,
/// 10 ms at 50 Mbit/s and 100 ms at 5 Mbit/s, the order of a home router's
/// buffer.
pub const DEFAULT_QUEUE: QueueLimit = QueueLimit::Bytes(64 * 1024);

/// An invalid impairment setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A probability outside [0, 1] (or not a number).
    #[error("{what} = {value} is not a probability between 0 and 1")]
    Probability {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A rate cap of zero bits per second.
    #[error("the rate cap must be above 0 bit/s (leave it unset for no cap)")]
    ZeroRate,
    /// A rate queue that can hold nothing.
    #[error("the rate queue must hold at least one packet or byte")]
    ZeroQueue,
    /// `max_in_flight` of zero.
    #[error("max_in_flight must be at least 1 packet")]
    ZeroMaxInFlight,
    /// A mean burst length below one packet.
    #[error("a mean burst length of {0} packets is below 1")]
    BurstLength(f64),
    /// A timed burst of zero length.
    #[error("a mean burst duration of {0:?} is too short: give at least 1us (e.g. 20ms)")]
    BurstDuration(Duration),
    /// Mean loss and burst length no two-state chain can produce.
    #[error(
        "a mean loss of {loss} with mean bursts of {burst} packets is impossible: \
         bursts of {burst} packets allow at most {max} mean loss"
    )]
    BurstLossTooHigh {
        /// Requested mean loss.
        loss: f64,
        /// Requested mean burst length.
        burst: f64,
        /// The highest mean loss that burst length allows, burst / (burst + 1).
        max: f64,
    },
}

/// Gilbert–Elliott burst loss: a two-state Markov chain stepped once per
/// packet. In state *good* a packet is lost with probability `loss_good`, in
/// *bad* with `loss_bad`; after each packet the chain moves good→bad with
/// probability `p_good_to_bad` and bad→good with `p_bad_to_good`.
///
/// A stay in *bad* lasts 1 / `p_bad_to_good` packets on average, and the
/// chain spends `p_good_to_bad / (p_good_to_bad + p_bad_to_good)` of the time
/// there. With the classic Gilbert setting (`loss_good` 0, `loss_bad` 1)
/// that is the mean burst length and the mean loss; [`GilbertElliott::from_mean_loss`]
/// solves for the transition probabilities from those two numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad after a packet.
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good after a packet.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The Gilbert chain (every packet in *bad* lost, none in *good*) with
    /// the given long-run `mean_loss` and mean burst length in packets.
    ///
    /// ```
    /// let ge = relay_netsim::GilbertElliott::from_mean_loss(0.05, 4.0).unwrap();
    /// assert_eq!(ge.p_bad_to_good, 0.25);
    /// assert!((ge.mean_loss() - 0.05).abs() < 1e-12);
    /// ```
    pub fn from_mean_loss(mean_loss: f64, mean_burst: f64) -> Result<GilbertElliott, ConfigError> {
        check_probability("burst mean loss", mean_loss)?;
        if mean_burst.is_nan() || mean_burst < 1.0 {
            return Err(ConfigError::BurstLength(mean_burst));
        }
        let max = mean_burst / (mean_burst + 1.0);
        if mean_loss > max {
            return Err(ConfigError::BurstLossTooHigh {
                loss: mean_loss,
                burst: mean_burst,
                max,
            });
        }
        let p_bad_to_good = 1.0 / mean_burst;
        // Stationary P(bad) = p / (p + r) = mean_loss  ⇒  p = mean_loss·r / (1 − mean_loss).
        let p_good_to_bad = (mean_loss * p_bad_to_good / (1.0 - mean_loss)).min(1.0);
        Ok(GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        })
    }

    /// Long-run fraction of packets lost.
    pub fn mean_loss(&self) -> f64 {
        let bad = self.stationary_bad();
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }

    /// Long-run fraction of packets that find the chain in *bad*:
    /// p / (p + r).
    pub fn stationary_bad(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total == 0.0 {
            // The chain never moves: it stays in good, where it starts.
            return 0.0;
        }
        self.p_good_to_bad / total
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_probability("Gilbert-Elliott p(good->bad)", self.p_good_to_bad)?;
        check_probability("Gilbert-Elliott p(bad->good)", self.p_bad_to_good)?;
        check_probability("Gilbert-Elliott loss in good", self.loss_good)?;
        check_probability("Gilbert-Elliott loss in bad", self.loss_bad)
    }
}

/// Burst loss that follows time, not packet count: a two-state chain
/// (*good*: nothing lost, *bad*: everything lost) whose stays are
/// exponentially distributed, `mean_burst` long in *bad* on average and
/// [`TimedBurstLoss::mean_gap`] in *good*, so that the chain is in *bad*
/// for `mean_loss` of the time.
///
/// Why not only [`GilbertElliott`]: a chain stepped per packet leaves a
/// burst only when packets arrive, so a sender that sends one probe per
/// retransmission timeout stays "in the burst" for as many timeouts as the
/// burst has packets, seconds instead of the tens of milliseconds a real
/// fade or queue overflow lasts. Here a burst ends when its time is up,
/// whoever is sending; a paced stream (arrivals independent of the chain)
/// loses `mean_loss` of its packets in the long run.
///
/// ```
/// use relay_netsim::TimedBurstLoss;
/// use std::time::Duration;
///
/// let chain = TimedBurstLoss::new(0.05, Duration::from_millis(20));
/// // In bad 20 ms, then good 380 ms on average: 5% of the time.
/// assert_eq!(chain.mean_gap(), Some(Duration::from_millis(380)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedBurstLoss {
    /// Long-run fraction of time in *bad*, i.e. of a paced stream lost.
    pub mean_loss: f64,
    /// Mean time in *bad* per burst.
    pub mean_burst: Duration,
}

impl TimedBurstLoss {
    /// A chain with this long-run loss and mean burst duration.
    pub fn new(mean_loss: f64, mean_burst: Duration) -> TimedBurstLoss {
        TimedBurstLoss {
            mean_loss,
            mean_burst,
        }
    }

    /// Mean time in *good* between bursts, `mean_burst · (1 − p) / p`;
    /// `None` when `mean_loss` is 0 (the chain never leaves *good*).
    pub fn mean_gap(&self) -> Option<Duration> {
        // Through whole nanoseconds, so 20 ms at 5% is exactly 380 ms.
        (self.mean_loss > 0.0).then(|| {
            let nanos = self.mean_burst.as_nanos() as f64 * (1.0 - self.mean_loss) / self.mean_loss;
            Duration::from_nanos(nanos.round().min(u64::MAX as f64) as u64)
        })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_probability("timed burst mean loss", self.mean_loss)?;
        if self.mean_burst < Duration::from_micros(1) {
            return Err(ConfigError::BurstDuration(self.mean_burst));
        }
        Ok(())
    }
}

/// How much the drop-tail queue in front of a rate cap holds. The packet
/// being transmitted counts as queued until its last bit is out. A packet
/// that finds the queue empty is always accepted, even when it is larger
/// than a byte limit, so a small limit cannot black-hole large packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// At most this many bytes of packets.
    Bytes(usize),
    /// At most this many packets.
    Packets(usize),
}

/// A bottleneck: packets leave at most at `bits_per_second`, waiting in a
/// drop-tail queue of size `queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Link rate in bits per second (UDP payload bits; no header overhead).
    pub bits_per_second: u64,
    /// The queue in front of the link.
    pub queue: QueueLimit,
}

/// Everything one direction of a link does to packets. The default is a
/// clean link. Build one with the setters:
///
/// ```
/// use relay_netsim::{ImpairmentConfig, QueueLimit};
/// use std::time::Duration;
///
/// let lossy_dsl = ImpairmentConfig::default()
///     .loss(0.01)
///     .delay(Duration::from_millis(20))
///     .jitter(Duration::from_millis(5))
///     .rate(8_000_000, QueueLimit::Bytes(32 * 1024));
/// assert!(lossy_dsl.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairmentConfig {
    /// Independent random loss, probability per packet.
    pub loss: f64,
    /// Burst loss on top of `loss`, stepped per packet (and redrawn after
    /// [`BURST_MEMORY`](crate::BURST_MEMORY) of silence).
    pub burst_loss: Option<GilbertElliott>,
    /// Burst loss on top of `loss`, following time.
    pub timed_burst_loss: Option<TimedBurstLoss>,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    /// Rate cap with its queue; `None` for no cap.
    pub rate: Option<RateLimit>,
    /// Constant one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform sample in
    /// [−`jitter`, +`jitter`] (never below zero).
    pub jitter: Duration,
    /// Whether jitter may reorder packets. When `false` a packet never
    /// leaves before the one that arrived before it (its release time is
    /// raised to its predecessor's), as most real paths behave.
    pub reorder: bool,
    /// Hard cap on packets held (rate queue plus delay line); arrivals beyond
    /// it are dropped and counted as [`DropCause::DelayLineFull`](crate::DropCause::DelayLineFull).
    pub max_in_flight: usize,
}

impl Default for ImpairmentConfig {
    fn default() -> ImpairmentConfig {
        ImpairmentConfig {
            loss: 0.0,
            burst_loss: None,
            timed_burst_loss: None,
            duplicate: 0.0,
            rate: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl ImpairmentConfig {
    /// Sets independent random loss (0.01 = 1%).
    pub fn loss(mut self, probability: f64) -> ImpairmentConfig {
        self.loss = probability;
        self
    }

    /// Sets Gilbert–Elliott burst loss.
    pub fn burst_loss(mut self, chain: GilbertElliott) -> ImpairmentConfig {
        self.burst_loss = Some(chain);
        self
    }

    /// Sets burst loss that follows time ([`TimedBurstLoss`]): `mean_loss`
    /// of the time lost, in bursts of `mean_burst` on average.
    pub fn timed_burst_loss(mut self, mean_loss: f64, mean_burst: Duration) -> ImpairmentConfig {
        self.timed_burst_loss = Some(TimedBurstLoss::new(mean_loss, mean_burst));
        self
    }

    /// Sets the duplication probability.
    pub fn duplicate(mut self, probability: f64) -> ImpairmentConfig {
        self.duplicate = probability;
        self
    }

    /// Caps the rate at `bits_per_second` behind a drop-tail `queue`.
    pub fn rate(mut self, bits_per_second: u64, queue: QueueLimit) -> ImpairmentConfig {
        self.rate = Some(RateLimit {
            bits_per_second,
            queue,
        });
        self
    }

    /// Sets the constant delay.
    pub fn delay(mut self, delay: Duration) -> ImpairmentConfig {
        self.delay = delay;
        self
    }

    /// Sets the jitter (± around the delay).
    pub fn jitter(mut self, jitter: Duration) -> ImpairmentConfig {
        self.jitter = jitter;
        self
    }

    /// Allows or forbids reordering under jitter.
    pub fn reorder(mut self, reorder: bool) -> ImpairmentConfig {
        self.reorder = reorder;
        self
    }

    /// Sets the hard cap on packets held.
    pub fn max_in_flight(mut self, packets: usize) -> ImpairmentConfig {
        self.max_in_flight = packets;
        self
    }

    /// Checks every setting is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_probability("loss", self.loss)?;
        check_probability("duplicate", self.duplicate)?;
        if let Some(chain) = &self.burst_loss {
            chain.validate()?;
        }
        if let Some(chain) = &self.timed_burst_loss {
            chain.validate()?;
        }
        if let Some(rate) = &self.rate {
            if rate.bits_per_second == 0 {
                return Err(ConfigError::ZeroRate);
            }
            if matches!(rate.queue, QueueLimit::Bytes(0) | QueueLimit::Packets(0)) {
                return Err(ConfigError::ZeroQueue);
            }
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::ZeroMaxInFlight);
        }
        Ok(())
    }
}

fn check_probability(what: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Probability { what, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gilbert_from_mean_loss_solves_the_chain() {
        let ge = GilbertElliott::from_mean_loss(0.05, 4.0).unwrap();
        assert_eq!(ge.p_bad_to_good, 0.25);
        assert!((ge.p_good_to_bad - 0.05 * 0.25 / 0.95).abs() < 1e-15);
        assert!((ge.mean_loss() - 0.05).abs() < 1e-12);
        assert_eq!(GilbertElliott::from_mean_loss(0.0, 4.0).unwrap().mean_loss(), 0.0);
        assert!(matches!(
            GilbertElliott::from_mean_loss(0.9, 4.0),
            Err(ConfigError::BurstLossTooHigh { .. })
        ));
        assert_eq!(
            GilbertElliott::from_mean_loss(0.1, 0.5),
            Err(ConfigError::BurstLength(0.5))
        );
    }

    #[test]
    fn timed_burst_gap_gives_the_mean_loss() {
        let ms = Duration::from_millis;
        let chain = TimedBurstLoss::new(0.05, ms(20));
        assert_eq!(chain.mean_gap(), Some(ms(380)));
        let gap = chain.mean_gap().unwrap().as_secs_f64();
        assert!((0.020 / (0.020 + gap) - 0.05).abs() < 1e-12);
        assert_eq!(TimedBurstLoss::new(0.0, ms(20)).mean_gap(), None);
        assert_eq!(TimedBurstLoss::new(1.0, ms(20)).mean_gap(), Some(Duration::ZERO));
        let config = |p, burst| ImpairmentConfig::default().timed_burst_loss(p, burst).validate();
        assert!(config(0.05, ms(20)).is_ok());
        assert!(config(1.5, ms(20)).is_err());
        assert_eq!(
            config(0.05, Duration::ZERO),
            Err(ConfigError::BurstDuration(Duration::ZERO))
        );
    }

    #[test]
    fn validate_rejects_out_of_range() {
        assert!(ImpairmentConfig::default().validate().is_ok());
        assert!(ImpairmentConfig::default().loss(1.5).validate().is_err());
        assert!(
            ImpairmentConfig::default()
                .duplicate(f64::NAN)
                .validate()
                .is_err()
        );
        assert_eq!(
            ImpairmentConfig::default().rate(0, DEFAULT_QUEUE).validate(),
            Err(ConfigError::ZeroRate)
        );
        assert_eq!(
            ImpairmentConfig::default()
                .rate(1_000, QueueLimit::Packets(0))
                .validate(),
            Err(ConfigError::ZeroQueue)
        );
        assert_eq!(
            ImpairmentConfig::default().max_in_flight(0).validate(),
            Err(ConfigError::ZeroMaxInFlight)
        );
    }
}
