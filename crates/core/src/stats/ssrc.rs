//! Per-SSRC records: what was sent ([`SsrcSent`]) and received
//! ([`SsrcReceived`]) on one stream, and the pure RFC 3550 reception state
//! behind the latter ([`SsrcReceiver`]).

use std::time::Instant;

/// RFC 3550 appendix A.1: a jump of more than this many sequence numbers is
/// a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 appendix A.1: packets this far behind are late duplicates.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// What was sent on one SSRC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SsrcSent {
    /// The stream.
    pub ssrc: u32,
    /// RTP packets handed to the transport.
    pub packets: u64,
    /// Their bytes (whole RTP packets).
    pub bytes: u64,
}

/// What was received on one SSRC: RFC 3550 reception statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SsrcReceived {
    /// The stream.
    pub ssrc: u32,
    /// RTP packets received (duplicates included).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets expected from the sequence number range (appendix A.3).
    pub expected: u64,
    /// Cumulative number of packets lost (appendix A.3); negative when
    /// duplicates outnumber losses, as the RFC allows.
    pub lost: i64,
    /// Interarrival jitter in RTP timestamp units (appendix A.8); `None`
    /// when the clock rate is unknown.
    pub jitter: Option<f64>,
    /// The RTP clock rate of the stream's payload type, in Hz: a static
    /// payload type's ([`static_clock_rate`](crate::static_clock_rate)) or
    /// a configured one ([`ClockRates`](crate::ClockRates)); `None` when
    /// neither knows it.
    pub clock_rate: Option<u32>,
    /// `jitter` in seconds; `None` when the clock rate is unknown.
    pub jitter_seconds: Option<f64>,
}

/// Reception state of one SSRC: RFC 3550 appendix A.1 (sequence number
/// validity), A.3 (loss) and A.8 (jitter).
///
/// One deliberate difference from A.1: there is no probation period. A relay
/// only accepts packets from a signaled, authenticated peer, so the first
/// packet starts the count; the RFC's `MIN_SEQUENTIAL` guards against
/// strangers on a multicast group.
#[derive(Debug, Clone)]
pub struct SsrcReceiver {
    clock_rate: Option<u32>,
    max_seq: u16,
    /// Sequence-number wraps, times 2^16 (appendix A.1's `cycles`, kept
    /// in 64 bits so `expected` stays right past 2^32 packets).
    cycles: u64,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    packets: u64,
    bytes: u64,
    epoch: Instant,
    transit: Option<i64>,
    jitter: f64,
}

impl SsrcReceiver {
    /// Starts accounting with the first packet's sequence number. Without
    /// a `clock_rate` (Hz) loss is still counted but jitter is not.
    pub fn new(first_seq: u16, clock_rate: Option<u32>, epoch: Instant) -> SsrcReceiver {
        SsrcReceiver {
            clock_rate: clock_rate.filter(|&hz| hz > 0),
            max_seq: first_seq,
            cycles: 0,
            base_seq: first_seq as u32,
            bad_seq: RTP_SEQ_MOD + 1,
            received: 0,
            packets: 0,
            bytes: 0,
            epoch,
            transit: None,
            jitter: 0.0,
        }
    }

    /// Accounts one RTP packet that arrived at `arrival`.
    pub fn on_packet(&mut self, seq: u16, rtp_timestamp: u32, len: usize, arrival: Instant) {
        self.packets += 1;
        self.bytes += len as u64;
        if self.update_seq(seq) {
            self.update_jitter(rtp_timestamp, arrival);
        }
    }

    /// Appendix A.1 `update_seq`, without probation. Returns whether the
    /// packet counts as valid.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.received == 0 && self.packets == 1 {
            // First packet (set up by `new`).
            self.received = 1;
            return true;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += u64::from(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta as u32 <= RTP_SEQ_MOD - MAX_MISORDER as u32 {
            // A very large jump: a restarted sender, or garbage. Two
            // sequential packets after the jump resynchronise.
            if seq as u32 == self.bad_seq {
                self.restart(seq);
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        } else {
            // Duplicate or reordered packet: counted, max unchanged.
        }
        self.received += 1;
        true
    }

    fn restart(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = seq as u32;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.received = 0;
        self.transit = None;
    }

    /// Appendix A.8: J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16, when the
    /// clock rate is known.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival: Instant) {
        let Some(hz) = self.clock_rate else {
            return;
        };
        let arrival_units = arrival.saturating_duration_since(self.epoch).as_secs_f64() * f64::from(hz);
        // Transit times are compared modulo 2^32 like the timestamps.
        let transit = (arrival_units as i64).wrapping_sub(rtp_timestamp as i64);
        if let Some(prev) = self.transit {
            let d = (transit - prev) as i32 as f64;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Extended highest sequence number received (appendix A.3), as the
    /// 32-bit field of an RTCP receiver report carries it (wrapping).
    pub fn extended_max(&self) -> u32 {
        self.extended_max_wide() as u32
    }

    fn extended_max_wide(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Snapshot in report form.
    pub fn snapshot(&self, ssrc: u32) -> SsrcReceived {
        let expected = (self.extended_max_wide() + 1).saturating_sub(u64::from(self.base_seq));
        SsrcReceived {
            ssrc,
            packets: self.packets,
            bytes: self.bytes,
            expected,
            lost: expected as i64 - self.received as i64,
            jitter: self.clock_rate.map(|_| self.jitter),
            clock_rate: self.clock_rate,
            jitter_seconds: self.clock_rate.map(|hz| self.jitter / f64::from(hz)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rx(seqs: &[u16]) -> SsrcReceived {
        let t0 = Instant::now();
        let mut r = SsrcReceiver::new(seqs[0], Some(90_000), t0);
        for &s in seqs {
            r.on_packet(s, 0, 100, t0);
        }
        r.snapshot(1)
    }

    #[test]
    fn counts_stay_right_past_two_to_the_32_packets() {
        let t0 = Instant::now();
        let mut r = SsrcReceiver::new(0, Some(90_000), t0);
        r.on_packet(0, 0, 100, t0);
        // As if 2^32 - 2^16 packets had already been received in order.
        r.cycles = (1u64 << 32) - u64::from(RTP_SEQ_MOD);
        r.received = (1u64 << 32) - u64::from(RTP_SEQ_MOD) + 1;
        for seq in (1..=u16::MAX).chain(0..10) {
            r.on_packet(seq, 0, 100, t0);
        }
        let s = r.snapshot(1);
        assert_eq!(s.expected, (1u64 << 32) + 10);
        assert_eq!(s.lost, 0);
        assert_eq!(r.extended_max(), 9, "the RR field wraps at 32 bits");
    }

    #[test]
    fn no_loss_in_order() {
        let s = rx(&[10, 11, 12, 13]);
        assert_eq!((s.expected, s.lost, s.packets), (4, 0, 4));
    }

    #[test]
    fn gaps_count_as_loss_and_reordering_does_not() {
        let s = rx(&[10, 11, 13, 12, 16]);
        assert_eq!(s.expected, 7);
        assert_eq!(s.lost, 2); // 14 and 15
    }

    #[test]
    fn sequence_wraparound_extends_the_range() {
        let s = rx(&[65534, 65535, 0, 1]);
        assert_eq!((s.expected, s.lost), (4, 0));
    }

    #[test]
    fn duplicates_make_loss_negative_as_rfc3550_allows() {
        let s = rx(&[1, 2, 2, 3]);
        assert_eq!((s.expected, s.lost, s.packets), (3, -1, 4));
    }

    #[test]
    fn large_jump_resynchronises_after_two_sequential_packets() {
        // 10, 11 then a restart at 30000: the first jumped packet is not
        // counted, the second confirms the restart and becomes the new base.
        let s = rx(&[10, 11, 30000, 30001, 30002]);
        assert_eq!((s.expected, s.lost, s.packets), (2, 0, 5));
    }

    #[test]
    fn jitter_follows_appendix_a8() {
        let t0 = Instant::now();
        let mut r = SsrcReceiver::new(0, Some(8_000), t0);
        // 20 ms packets (160 units); the second arrives 5 ms late (40 units),
        // the third on time again.
        r.on_packet(0, 0, 10, t0);
        r.on_packet(1, 160, 10, t0 + Duration::from_millis(25));
        let j1 = r.snapshot(0).jitter.unwrap();
        assert!((j1 - 40.0 / 16.0).abs() < 0.01, "{j1}");
        r.on_packet(2, 320, 10, t0 + Duration::from_millis(40));
        let j2 = r.snapshot(0).jitter.unwrap();
        let want = j1 + (40.0 - j1) / 16.0;
        assert!((j2 - want).abs() < 0.01, "{j2} vs {want}");
        assert!((r.snapshot(0).jitter_seconds.unwrap() - j2 / 8_000.0).abs() < 1e-12);
    }

    #[test]
    fn constant_transit_has_zero_jitter() {
        let t0 = Instant::now();
        let mut r = SsrcReceiver::new(0, Some(90_000), t0);
        for i in 0..100u32 {
            r.on_packet(
                i as u16,
                i * 3000,
                10,
                t0 + Duration::from_micros(i as u64 * 33_333),
            );
        }
        assert!(r.snapshot(0).jitter.unwrap() < 1.0);
    }
}
