//! Who reads the inner link: the application's `recv`, or the link's
//! driver task.
//!
//! Reading in the application's own `recv` call saves every packet a hop
//! through a second task and queue: on a clean path, that hop was most of
//! what repair cost. But the repair loop must go on when the application
//! does not read: a sending end that never calls `recv` still has NACKs
//! to answer. So the driver reads until the application calls `recv`, and
//! reads again once the application, still sending, has neither been in
//! `recv` nor called it for a [`HANDOVER`] (`send` notices; a timer would
//! cost a wake-up from idle per period, which on a paced stream costs as
//! much as a frame's packets).
//!
//! The two sides meet through a counter and a flag, each written first
//! and the other's read second (sequentially consistent), so at least one
//! sees the other: the driver never reads behind an application that has
//! just entered `recv` without that `recv` knowing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long an application that sends may neither be in `recv` nor call
/// it before the driver reads for it: what a NACK may wait behind an
/// application that stopped reading (or is busy forwarding into a
/// back-pressured link). A tenth of the default budget.
pub(crate) const HANDOVER: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub(crate) struct Handover {
    /// `recv` calls in progress.
    receiving: AtomicUsize,
    /// `recv` calls so far.
    calls: AtomicU64,
    /// The driver reads the inner link (or is about to).
    driver_reads: AtomicBool,
    /// `send`'s last look: the `recv` calls it saw, and when they last
    /// changed (nanoseconds since `epoch`).
    seen_calls: AtomicU64,
    seen_at: AtomicU64,
    epoch: Instant,
    /// Wakes the driver: the application entered `recv` while the driver
    /// read, `send` handed the reading to the driver, or a gap appeared
    /// (the driver's timer asks again).
    nudge: Notify,
}

/// The application is in `recv` while this lives.
pub(crate) struct Receiving<'a>(&'a Handover);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.receiving.fetch_sub(1, SeqCst);
    }
}

impl Handover {
    pub(crate) fn new(now: Instant) -> Handover {
        Handover {
            receiving: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            driver_reads: AtomicBool::new(false),
            seen_calls: AtomicU64::new(0),
            seen_at: AtomicU64::new(0),
            epoch: now,
            nudge: Notify::new(),
        }
    }

    /// The application enters `recv`; a reading driver is told to stop.
    pub(crate) fn enter(&self) -> Receiving<'_> {
        self.calls.fetch_add(1, Relaxed);
        self.receiving.fetch_add(1, SeqCst);
        if self.driver_reads.load(SeqCst) {
            self.nudge.notify_one();
        }
        Receiving(self)
    }

    /// Whether the driver reads (or may, until its next turn): a `recv`
    /// then also takes what the driver queued.
    pub(crate) fn driver_reads(&self) -> bool {
        self.driver_reads.load(SeqCst)
    }

    /// Whether the application is in `recv` now.
    pub(crate) fn app_receiving(&self) -> bool {
        self.receiving.load(SeqCst) > 0
    }

    /// Hands the reading to the driver, unless the application is in
    /// `recv`; true if it did (the caller nudges the driver if it is not
    /// the driver).
    pub(crate) fn take_over(&self) -> bool {
        self.driver_reads.store(true, SeqCst);
        if self.app_receiving() {
            self.driver_reads.store(false, SeqCst);
            return false;
        }
        true
    }

    /// The driver stops reading.
    pub(crate) fn step_back(&self) {
        self.driver_reads.store(false, SeqCst);
    }

    /// `send`'s look, once per packet: if the application has been away
    /// from `recv` for a [`HANDOVER`], the driver reads from now on.
    pub(crate) fn on_send(&self, now: Instant) {
        if self.driver_reads() {
            // Nothing to hand over (a sending end that never reads: every
            // packet comes here).
            return;
        }
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let calls = self.calls.load(Relaxed);
        if self.seen_calls.load(Relaxed) != calls {
            self.seen_calls.store(calls, Relaxed);
            self.seen_at.store(at, Relaxed);
            return;
        }
        let away = Duration::from_nanos(at.saturating_sub(self.seen_at.load(Relaxed)));
        if away >= HANDOVER && self.take_over() {
            self.nudge.notify_one();
        }
    }

    /// Wakes the driver.
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Resolves when the driver is nudged (or was, since it last looked).
    pub(crate) async fn nudged(&self) {
        self.nudge.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_driver_reads_until_the_application_does_and_after_it_stopped() {
        let t0 = Instant::now();
        let h = Handover::new(t0);
        assert!(h.take_over(), "nobody reads yet");
        {
            let _r = h.enter();
            assert!(h.app_receiving());
            h.step_back();
            assert!(!h.take_over(), "never behind a recv in progress");
            h.on_send(t0 + 100 * MS);
            assert!(!h.driver_reads(), "waiting in recv is reading");
        }
        // Back from recv, and called it again within the period.
        h.on_send(t0 + 100 * MS);
        drop(h.enter());
        h.on_send(t0 + 110 * MS);
        h.on_send(t0 + 129 * MS);
        assert!(!h.driver_reads());
        // Then no call for a whole period.
        h.on_send(t0 + 130 * MS);
        assert!(h.driver_reads());
    }
}
