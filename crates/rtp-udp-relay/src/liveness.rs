//! The path check and keepalive schedule, as a pure state machine driven by
//! an explicit clock (the socket loop in `driver.rs` feeds it).
//!
//! Both sides run the same machine:
//!
//! 1. **Checking**: send a probe at once, then again after 10, 20, 40 ms …
//!    (doubling, capped at the keepalive interval) until a reply arrives.
//!    The first reply makes the link *ready*: a probe went out and its reply
//!    came back, so packets flow both ways.
//! 2. **Up**: send a probe every keepalive interval (default: a fifth of
//!    the liveness timeout, so four consecutive losses are survivable).
//!    Replies give RTT samples.
//! 3. **Dead**: nothing heard from the peer for the liveness timeout. What
//!    counts as heard is the socket loop's call: in plain mode any datagram
//!    from the peer's address ([`Liveness::on_heard`]); in srtp mode only
//!    media that passed SRTP authentication and an authenticated reply to
//!    one of our outstanding probes ([`Liveness::on_reply`]), so a spoofer
//!    without the keys cannot keep a dead link alive.

use std::time::{Duration, Instant};

use crate::stun::TransactionId;

/// First retransmission interval while checking the path.
const FIRST_RETRY: Duration = Duration::from_millis(10);
/// Outstanding probes remembered for RTT matching.
const PENDING: usize = 8;

/// What the socket loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a probe with this transaction id.
    Probe(TransactionId),
    /// The peer has been silent for this long: close the link.
    Dead(Duration),
    /// Nothing until [`Liveness::next_deadline`].
    Wait,
}

/// Keepalive and liveness state of one link.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    interval: Duration,
    nonce: [u8; 4],
    counter: u64,
    created: Instant,
    last_heard: Option<Instant>,
    next_probe: Instant,
    retry: Duration,
    ready: bool,
    pending: [Option<(TransactionId, Instant)>; PENDING],
}

impl Liveness {
    /// A machine that starts checking at `now`. `nonce` makes this link's
    /// transaction ids distinct from any other link's.
    pub fn new(now: Instant, timeout: Duration, interval: Duration, nonce: [u8; 4]) -> Liveness {
        Liveness {
            timeout,
            interval: interval.max(Duration::from_millis(1)),
            nonce,
            counter: 0,
            created: now,
            last_heard: None,
            next_probe: now,
            retry: FIRST_RETRY,
            ready: false,
            pending: [None; PENDING],
        }
    }

    /// Whether a probe reply has come back.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Something arrived that shows the peer is alive.
    pub fn on_heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    /// A reply to one of our probes arrived. If the transaction id is one
    /// we sent recently and no reply to it has been seen yet, the peer is
    /// heard and the RTT returned; otherwise (unknown, late, duplicated or
    /// replayed) nothing changes.
    pub fn on_reply(&mut self, txid: &TransactionId, now: Instant) -> Option<Duration> {
        let slot = self
            .pending
            .iter_mut()
            .find(|p| matches!(p, Some((id, _)) if id == txid))?;
        let (_, sent) = slot.take()?;
        self.on_heard(now);
        if !self.ready {
            self.ready = true;
            self.next_probe = now + self.interval;
        }
        Some(now.saturating_duration_since(sent))
    }

    /// When [`poll`](Liveness::poll) next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let dead_at = self.last_heard.unwrap_or(self.created) + self.timeout;
        self.next_probe.min(dead_at)
    }

    /// Advances the clock to `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        let silent = now.saturating_duration_since(self.last_heard.unwrap_or(self.created));
        if silent >= self.timeout {
            return Action::Dead(silent);
        }
        if now < self.next_probe {
            return Action::Wait;
        }
        if self.ready {
            self.next_probe = now + self.interval;
        } else {
            self.next_probe = now + self.retry;
            self.retry = (self.retry * 2).min(self.interval);
        }
        self.counter += 1;
        let mut txid = [0u8; 12];
        txid[..4].copy_from_slice(&self.nonce);
        txid[4..].copy_from_slice(&self.counter.to_be_bytes());
        let slot = (self.counter as usize) % PENDING;
        self.pending[slot] = Some((txid, now));
        Action::Probe(txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);
    const I: Duration = Duration::from_secs(1);

    fn probe(a: Action) -> TransactionId {
        match a {
            Action::Probe(t) => t,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn checking_retries_with_backoff_until_a_reply() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T, I, [1, 2, 3, 4]);
        let first = probe(l.poll(t0));
        assert_eq!(l.poll(t0), Action::Wait);
        assert_eq!(l.next_deadline(), t0 + Duration::from_millis(10));
        let _second = probe(l.poll(t0 + Duration::from_millis(10)));
        assert_eq!(l.next_deadline(), t0 + Duration::from_millis(30));
        assert!(!l.is_ready());
        let rtt = l.on_reply(&first, t0 + Duration::from_millis(12)).unwrap();
        assert_eq!(rtt, Duration::from_millis(12));
        assert!(l.is_ready());
        // Now on the keepalive schedule.
        assert_eq!(l.next_deadline(), t0 + Duration::from_millis(12) + I);
    }

    #[test]
    fn unknown_or_repeated_reply_gives_no_rtt() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T, I, [0; 4]);
        let id = probe(l.poll(t0));
        assert_eq!(l.on_reply(&[9; 12], t0), None);
        assert!(!l.is_ready());
        assert!(l.on_reply(&id, t0).is_some());
        assert_eq!(l.on_reply(&id, t0), None);
    }

    #[test]
    fn only_a_reply_to_an_outstanding_probe_postpones_death() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T, I, [0; 4]);
        let id = probe(l.poll(t0));
        assert!(l.on_reply(&id, t0).is_some());
        // The same reply again (replayed) and replies to probes never sent,
        // every 100 ms: the peer is still dead at t0 + T.
        let mut now = t0;
        while now < t0 + T - Duration::from_millis(100) {
            now += Duration::from_millis(100);
            assert_eq!(l.on_reply(&id, now), None);
            assert_eq!(l.on_reply(&[0xEE; 12], now), None);
            while let Action::Probe(_) = l.poll(now) {}
        }
        assert_eq!(l.poll(t0 + T), Action::Dead(T));
    }

    #[test]
    fn silence_for_the_timeout_is_death_and_traffic_postpones_it() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T, I, [0; 4]);
        let id = probe(l.poll(t0));
        l.on_reply(&id, t0);
        let mut now = t0;
        // Media keeps it alive for a minute even though no reply comes.
        for _ in 0..60 {
            now += Duration::from_secs(1);
            l.on_heard(now);
            assert!(matches!(l.poll(now), Action::Probe(_) | Action::Wait));
        }
        assert!(matches!(
            l.poll(now + Duration::from_millis(4999)),
            Action::Probe(_) | Action::Wait
        ));
        assert_eq!(l.poll(now + T), Action::Dead(T));
        assert!(l.next_deadline() <= now + T);
    }

    #[test]
    fn a_peer_never_heard_is_dead_after_the_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, Duration::from_millis(300), I, [0; 4]);
        let mut probes = 0;
        let mut now = t0;
        loop {
            match l.poll(now) {
                Action::Probe(_) => probes += 1,
                Action::Dead(d) => {
                    assert!(d >= Duration::from_millis(300));
                    break;
                }
                Action::Wait => now = l.next_deadline(),
            }
            assert!(probes < 100);
        }
        // At 0, 10, 30, 70 and 150 ms; the next would be at 310 ms, after
        // the 300 ms timeout.
        assert_eq!(probes, 5, "probes sent before giving up");
    }
}
