//! Drops by cause: [`DropCause`], the [`Drops`] a snapshot reports, and the
//! lock-free [`DropCounters`] that count them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet was dropped by the relay itself (not by the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Unreliable send queue was full: the oldest queued packet was dropped.
    SendQueueFull,
    /// The application did not read fast enough: the oldest received packet
    /// was dropped.
    ReceiveQueueFull,
    /// The application tried to send a packet larger than the link allows.
    TooLarge,
    /// A datagram arrived from an address other than the signaled peer, or
    /// (RoQ) carried a flow id that was not signaled.
    UnknownSource,
    /// Bytes arrived that are not RTP or RTCP (truncated, garbage, bad framing).
    Malformed,
    /// A packet failed SRTP/SRTCP authentication, or was a replay (or
    /// older than the replay window), on a link that protects media.
    Unauthenticated,
    /// An unreliable link held the packet past its latency budget
    /// ([`DEFAULT_MAX_DELAY`](crate::DEFAULT_MAX_DELAY) unless configured)
    /// before it could leave: delivered, it would only have been late.
    Expired,
}

impl DropCause {
    const COUNT: usize = 7;

    /// Every cause, in declaration order.
    pub const ALL: [DropCause; DropCause::COUNT] = [
        DropCause::SendQueueFull,
        DropCause::ReceiveQueueFull,
        DropCause::TooLarge,
        DropCause::UnknownSource,
        DropCause::Malformed,
        DropCause::Unauthenticated,
        DropCause::Expired,
    ];

    /// The cause as [`Drops`] names its field (`too_large`, …).
    pub fn name(self) -> &'static str {
        match self {
            DropCause::SendQueueFull => "send_queue_full",
            DropCause::ReceiveQueueFull => "receive_queue_full",
            DropCause::TooLarge => "too_large",
            DropCause::UnknownSource => "unknown_source",
            DropCause::Malformed => "malformed",
            DropCause::Unauthenticated => "unauthenticated",
            DropCause::Expired => "expired",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Drops by cause; see [`DropCause`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drops {
    /// See [`DropCause::SendQueueFull`].
    pub send_queue_full: u64,
    /// See [`DropCause::ReceiveQueueFull`].
    pub receive_queue_full: u64,
    /// See [`DropCause::TooLarge`].
    pub too_large: u64,
    /// See [`DropCause::UnknownSource`].
    pub unknown_source: u64,
    /// See [`DropCause::Malformed`].
    pub malformed: u64,
    /// See [`DropCause::Unauthenticated`] (0 on links that do not protect
    /// media).
    #[serde(default)]
    pub unauthenticated: u64,
    /// See [`DropCause::Expired`] (0 on reliable links and on links with no
    /// send queue to expire).
    #[serde(default)]
    pub expired: u64,
}

impl Drops {
    /// The count for one cause.
    pub fn get(&self, cause: DropCause) -> u64 {
        match cause {
            DropCause::SendQueueFull => self.send_queue_full,
            DropCause::ReceiveQueueFull => self.receive_queue_full,
            DropCause::TooLarge => self.too_large,
            DropCause::UnknownSource => self.unknown_source,
            DropCause::Malformed => self.malformed,
            DropCause::Unauthenticated => self.unauthenticated,
            DropCause::Expired => self.expired,
        }
    }

    fn get_mut(&mut self, cause: DropCause) -> &mut u64 {
        match cause {
            DropCause::SendQueueFull => &mut self.send_queue_full,
            DropCause::ReceiveQueueFull => &mut self.receive_queue_full,
            DropCause::TooLarge => &mut self.too_large,
            DropCause::UnknownSource => &mut self.unknown_source,
            DropCause::Malformed => &mut self.malformed,
            DropCause::Unauthenticated => &mut self.unauthenticated,
            DropCause::Expired => &mut self.expired,
        }
    }

    /// Sum over every cause.
    pub fn total(&self) -> u64 {
        DropCause::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

/// Cause by cause: the drops of both ends of a link, or of several links.
impl std::ops::Add for Drops {
    type Output = Drops;

    fn add(mut self, other: Drops) -> Drops {
        for cause in DropCause::ALL {
            *self.get_mut(cause) += other.get(cause);
        }
        self
    }
}

/// A flag for logging something once (the first stranger, the first forged
/// packet) from a path a flood can hit: after the first time it costs one
/// relaxed load, not a read-modify-write on a shared cache line.
#[derive(Debug, Default)]
pub struct WarnOnce(std::sync::atomic::AtomicBool);

impl WarnOnce {
    /// `true` the first time only.
    pub fn first(&self) -> bool {
        !self.0.load(Ordering::Relaxed) && !self.0.swap(true, Ordering::Relaxed)
    }
}

/// Drops by cause, counted from several threads without a lock: what a
/// [`StatsRecorder`](crate::StatsRecorder) keeps, and what a socket layer
/// under a transport stack counts before the link (and its recorder)
/// exists.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropCause::COUNT]);

impl DropCounters {
    /// Counts `n` packets dropped for `cause`.
    pub fn add(&self, cause: DropCause, n: u64) {
        self.0[cause.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Count for one cause.
    pub fn get(&self, cause: DropCause) -> u64 {
        self.0[cause.index()].load(Ordering::Relaxed)
    }

    /// Adds every count to `drops` (a link's snapshot).
    pub fn add_to(&self, drops: &mut Drops) {
        for cause in DropCause::ALL {
            *drops.get_mut(cause) += self.get(cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_add_cause_by_cause_and_old_json_reads_expired_as_zero() {
        let counters = DropCounters::default();
        for (n, cause) in DropCause::ALL.into_iter().enumerate() {
            counters.add(cause, n as u64 + 1);
        }
        let mut one = Drops::default();
        counters.add_to(&mut one);
        let two = one + one;
        for (n, cause) in DropCause::ALL.into_iter().enumerate() {
            assert_eq!(two.get(cause), 2 * (n as u64 + 1), "{}", cause.name());
        }
        assert_eq!(two.expired, 14);
        let before_expired =
            r#"{"send_queue_full":1,"receive_queue_full":0,"too_large":0,"unknown_source":0,"malformed":0}"#;
        let old: Drops = serde_json::from_str(before_expired).unwrap();
        assert_eq!((old.send_queue_full, old.expired, old.total()), (1, 0, 1));
    }

    #[test]
    fn once_is_true_only_the_first_time() {
        let once = WarnOnce::default();
        assert!(once.first());
        assert!(!once.first());
        assert!(!once.first());
    }
}
