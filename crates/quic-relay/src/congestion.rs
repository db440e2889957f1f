//! A congestion window with a floor, so a keyframe leaves at once.
//!
//! A relay's sender is application-limited: 2.5 Mbit/s of video never fills
//! a window, and quinn's Cubic (like NewReno, RFC 9002 section 7.8) does not
//! grow the window while the sender is application-limited. So it stays at
//! its initial 12,000 bytes (10 × 1,200, RFC 9002 section 7.2), and a
//! keyframe of ~40 × 1,200 bytes sent back to back waits several round
//! trips for it. quinn's pacer (quinn-proto `connection/pacing.rs`) takes its
//! burst size (window × 2 ms / RTT, at least 10 MTUs) and its rate (1.25 ×
//! window / RTT) from the same window, so the window also sets how fast a
//! burst is spread out once it is allowed.
//!
//! [`FloorFactory`] wraps quinn's Cubic and never reports a window below a
//! configured floor: above the floor Cubic grows and backs off as usual
//! (loss, ECN, persistent congestion); below it the sender no longer slows
//! down. See [`QuicConfig::min_window`](crate::QuicConfig::min_window) for
//! what that costs in fairness.
//!
//! After a black hole. While nothing is acknowledged, a QUIC sender may
//! only fill its window; then it sends nothing but probes, each after a
//! probe timeout that doubles every time (RFC 9002 section 6.2.1, "MUST";
//! quinn-proto's `MAX_BACKOFF_EXPONENT` is a constant, nothing configures
//! it). PTO = smoothed RTT + 4 × RTT variance + the peer's max_ack_delay
//! (the 5 ms this crate asks for; 25 ms by default). With quinn's 12 KB
//! window, which fills within ~40 ms at 2.5 Mbit/s, the report measured
//! (wan-outage: 40 ms RTT, 1 s black hole, 3 seeds) the first packet 238
//! to 329 ms after the path returned and fresh media only after 1.1 to
//! 1.2 s, behind a 1 MiB datagram buffer of stale media. With the floor the
//! window does not fill during a 1 s black hole at media rates (512 KiB is
//! 1.6 s of 2.5 Mbit/s), so no probe timeout runs and the link resumes with
//! the path (19 to 59 ms, nothing stale); a longer outage falls back to the
//! backed-off probes, and the latency budget keeps what waited meanwhile
//! from being delivered late.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// Builds Cubic controllers whose window never falls below `floor` bytes.
#[derive(Debug)]
pub(crate) struct FloorFactory {
    cubic: Arc<CubicConfig>,
    floor: u64,
}

impl FloorFactory {
    pub(crate) fn new(floor: u64) -> Self {
        let mut cubic = CubicConfig::default();
        // Start where the floor is, so slow start begins there too.
        cubic.initial_window(floor.max(cubic_default_initial_window()));
        FloorFactory {
            cubic: Arc::new(cubic),
            floor,
        }
    }
}

/// quinn's own initial window (RFC 9002 section 7.2: 10 × 1,200 bytes).
fn cubic_default_initial_window() -> u64 {
    12_000
}

impl ControllerFactory for FloorFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Floored {
            inner: self.cubic.clone().build(now, current_mtu),
            floor: self.floor,
        })
    }
}

/// A controller that reports `max(inner window, floor)`.
pub(crate) struct Floored {
    inner: Box<dyn Controller>,
    floor: u64,
}

impl Floored {
    #[cfg(test)]
    pub(crate) fn new(inner: Box<dyn Controller>, floor: u64) -> Self {
        Floored { inner, floor }
    }
}

impl Controller for Floored {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool, largest_acked: Option<u64>) {
        self.inner.on_end_acks(now, in_flight, app_limited, largest_acked);
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, lost_bytes: u64) {
        self.inner.on_congestion_event(now, sent, persistent, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.inner.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Floored {
            inner: self.inner.clone_box(),
            floor: self.floor,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FLOOR: u64 = 64 * 1024;

    #[test]
    fn floor_holds_through_loss_and_persistent_congestion() {
        let now = Instant::now();
        let mut c = Arc::new(FloorFactory::new(FLOOR)).build(now, 1_200);
        assert_eq!(c.initial_window(), FLOOR);
        assert_eq!(c.window(), FLOOR);
        // A loss halves Cubic's window (× 0.7); the floor holds.
        c.on_congestion_event(now + Duration::from_millis(10), now, false, 1_200);
        assert_eq!(c.window(), FLOOR);
        // Persistent congestion (RFC 9002 section 7.6) collapses Cubic to
        // its minimum window of 2 packets; the floor still holds.
        let sent = now + Duration::from_millis(20);
        c.on_congestion_event(now + Duration::from_secs(1), sent, true, 100_000);
        assert_eq!(c.window(), FLOOR);
        assert_eq!(c.metrics().congestion_window, FLOOR);
        assert_eq!(c.clone_box().window(), FLOOR);
    }

    #[test]
    fn above_the_floor_cubic_still_backs_off() {
        let now = Instant::now();
        // A Cubic that starts at 1 MB, well above a 64 KiB floor.
        let mut config = CubicConfig::default();
        config.initial_window(1_000_000);
        let inner = Arc::new(config).build(now, 1_200);
        let mut c = Floored::new(inner, FLOOR);
        assert_eq!(c.window(), 1_000_000);
        // One loss: Cubic's multiplicative decrease (β = 0.7, RFC 9438
        // section 4.6) shows through the floor.
        c.on_congestion_event(now + Duration::from_millis(10), now, false, 1_200);
        assert_eq!(c.window(), 700_000);
        // Persistent congestion among packets sent after that recovery
        // began: down to the floor, not to 2 packets.
        let sent = now + Duration::from_millis(20);
        c.on_congestion_event(now + Duration::from_secs(1), sent, true, 100_000);
        assert_eq!(c.window(), FLOOR);
    }

    #[test]
    fn a_floor_below_quinns_initial_window_changes_nothing_at_start() {
        let now = Instant::now();
        let c = Arc::new(FloorFactory::new(2_400)).build(now, 1_200);
        assert_eq!(c.window(), cubic_default_initial_window());
    }
}
