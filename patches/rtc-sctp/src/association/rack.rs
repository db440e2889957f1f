//! sfu-relay: RACK, time-based loss detection (RFC 8985 §6), adapted to
//! SCTP as pion/sctp (since v1.10) and dcsctp do.
//!
//! RFC 9260 §7.2.4 fast retransmits a chunk once: when that retransmission
//! is lost too, only T3-rtx (RTO.Min at least, then doubling) resends it.
//! RACK instead remembers when each chunk was last transmitted and, once
//! a chunk sent *later* is acknowledged, declares every earlier
//! transmission still unacknowledged after one RTT plus a reordering
//! window lost: an original, a fast retransmission or a retransmission of
//! a retransmission alike. The loss probe (`Association::on_probe_timeout`,
//! RFC 8985 §7) supplies such an acknowledgement when nothing else would.

use std::time::{Duration, Instant};

use crate::util::sna32gt;

/// The most recent transmission among acknowledged DATA (RFC 8985 §6.1:
/// RACK.xmit_ts, RACK.end_seq, RACK.rtt) and the least RTT seen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rack {
    xmit_ts: Option<Instant>,
    end_tsn: u32,
    rtt: Duration,
    min_rtt: Option<Duration>,
}

impl Rack {
    /// RFC 8985 §6.2 steps 1-2: DATA `tsn`, transmitted `nsent` times, the
    /// last at `sent`, was newly acknowledged at `now`.
    pub(crate) fn on_acked(&mut self, tsn: u32, sent: Instant, nsent: u32, now: Instant) {
        let rtt = now.saturating_duration_since(sent);
        if nsent > 1 && self.min_rtt.is_some_and(|min| rtt < min) {
            // Acknowledged sooner after its last retransmission than any
            // round trip takes: the acknowledgement is for an earlier
            // transmission, whose time is not known (step 2).
            return;
        }
        if nsent == 1 {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
        }
        if self.sent_after(tsn, sent) {
            self.xmit_ts = Some(sent);
            self.end_tsn = tsn;
            self.rtt = rtt;
        }
    }

    /// Whether a transmission of `tsn` at `sent` is more recent than the
    /// most recent acknowledged one (step 3's RACK_sent_after).
    pub(crate) fn sent_after(&self, tsn: u32, sent: Instant) -> bool {
        self.xmit_ts
            .is_none_or(|ts| sent > ts || (sent == ts && sna32gt(tsn, self.end_tsn)))
    }

    /// When an unacknowledged transmission of `tsn` at `sent` is deemed
    /// lost (step 5): one RACK RTT plus the reordering window after it, if
    /// a later transmission has been acknowledged; `None` while none has.
    pub(crate) fn lost_at(&self, tsn: u32, sent: Instant, srtt: Duration) -> Option<Instant> {
        if self.xmit_ts.is_none() || self.sent_after(tsn, sent) {
            return None;
        }
        Some(sent + self.rtt + self.reo_wnd(srtt))
    }

    /// The reordering window (§6.2 step 4): a quarter of the least RTT,
    /// bounded by SRTT. Kept open in recovery too (RFC 8985 would close it
    /// until reordering is seen): a data channel path can reorder (ICE over
    /// several interfaces), and a spurious retransmission of a
    /// partially reliable message costs its retransmission budget.
    fn reo_wnd(&self, srtt: Duration) -> Duration {
        let quarter = self.min_rtt.unwrap_or_default() / 4;
        if srtt.is_zero() {
            quarter
        } else {
            quarter.min(srtt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_chunk_sent_before_the_newest_acknowledged_one_is_lost_after_rtt_and_window() {
        let t0 = Instant::now();
        let mut rack = Rack::default();
        assert_eq!(
            rack.lost_at(1, t0, Duration::ZERO),
            None,
            "nothing acknowledged"
        );
        // TSN 2, sent at 10 ms, acknowledged at 50 ms: RTT 40 ms, window 10 ms.
        rack.on_acked(2, t0 + 10 * MS, 1, t0 + 50 * MS);
        assert_eq!(rack.lost_at(1, t0, 40 * MS), Some(t0 + 50 * MS));
        assert_eq!(rack.lost_at(1, t0 + 10 * MS, 40 * MS), Some(t0 + 60 * MS));
        assert_eq!(
            rack.lost_at(3, t0 + 10 * MS, 40 * MS),
            None,
            "same burst, after it"
        );
        assert_eq!(rack.lost_at(3, t0 + 11 * MS, 40 * MS), None, "sent later");
        assert!(rack.sent_after(3, t0 + 10 * MS));
        assert!(!rack.sent_after(1, t0 + 10 * MS));
    }

    #[test]
    fn a_retransmission_acknowledged_within_min_rtt_is_not_a_sample() {
        let t0 = Instant::now();
        let mut rack = Rack::default();
        rack.on_acked(1, t0, 1, t0 + 40 * MS);
        // Retransmitted at 100 ms, acknowledged at 110 ms: that ack was for
        // the original.
        rack.on_acked(2, t0 + 100 * MS, 2, t0 + 110 * MS);
        assert_eq!(rack.xmit_ts, Some(t0));
        // Acknowledged a round trip after its retransmission: a sample.
        rack.on_acked(3, t0 + 100 * MS, 2, t0 + 141 * MS);
        assert_eq!(rack.xmit_ts, Some(t0 + 100 * MS));
        assert_eq!(rack.rtt, 41 * MS);
    }
}
