//! The sending end of the repair loop, sans IO: the packets sent within
//! the latency budget, kept for retransmission, the cap that keeps a
//! peer from using NACKs to make the relay send more than its media, and
//! the tail probe that lets the peer see a loss at the end of a burst.
//!
//! **Tail loss.** A receiver finds a gap when a later packet arrives; the
//! last packets before a stream goes quiet (the end of a talk spurt, a
//! paused or ended stream, a frame rate below the budget) have no later
//! packet, so their loss would never be asked for. As TCP's tail loss
//! probe does (RACK-TLP, RFC 8985 section 7), a stream quiet for
//! [`probe_after`] gets its last packet sent once more
//! ([`RetransmitBuffer::due_probes`]): if it was lost, the probe delivers
//! it and shows the gap before it; if not, the peer drops a duplicate.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::hash::Keyed;

/// Packets kept at most, whatever the budget: 200 ms of 50 Mbit/s in
/// 1,200-byte packets. Beyond it the oldest go first.
pub const MAX_KEPT: usize = 1 << 13;

/// Retransmitted bytes allowed per media byte sent: repairing 5% loss
/// costs 5%, so a quarter leaves room for bursts and repeated asks, while
/// a peer that NACKs everything gets at most a quarter more traffic out of
/// the relay, never a multiple (the amplification cap).
pub const DEFAULT_REPAIR_SHARE: f64 = 0.25;

/// Credit a link starts with, in bytes: about one keyframe (40 packets of
/// 1,200 bytes), so the first loss of a fresh link can be repaired at
/// once. The credit saved is capped at this plus the share of what the
/// buffer holds (the budget's worth of media), so a burst loss at a high
/// rate can be repaired whole while a quiet link cannot save up for a
/// flood.
pub const CREDIT_BASE: f64 = 48_000.0;

/// Streams whose last packet is watched for a tail probe; beyond this the
/// least recently sent is no longer probed. A relay hop carries a few
/// streams (audio, video, simulcast layers), and the per-packet lookup is
/// a scan of this list.
pub const MAX_PROBED_STREAMS: usize = 32;

/// How long a stream must be quiet before its last packet is probed: half
/// the budget, so a 30 fps stream (a frame every 33 ms) or 50 pps audio
/// never probes on a 200 ms budget, and a tail lost just before a pause
/// is still repaired within the budget on paths up to about 50 ms RTT
/// (probe at half the budget, its arrival shows the gap one way later, the
/// repair takes one RTT); and at least two RTTs, as RFC 8985's PTO.
pub fn probe_after(budget: Duration, rtt: Duration) -> Duration {
    (budget / 2).max(2 * rtt)
}

/// What the sending end counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderCounts {
    /// Sequence numbers the peer asked for.
    pub requested: u64,
    /// Packets sent again.
    pub retransmitted: u64,
    /// Bytes sent again.
    pub retransmitted_bytes: u64,
    /// Asked for, but no longer kept (older than the budget, or never
    /// sent): answered with nothing.
    pub gone: u64,
    /// Asked for and kept, but the amplification cap was reached.
    pub capped: u64,
    /// Tail probes sent (also counted in `retransmitted`).
    pub probes: u64,
}

/// The last packet sent of one stream, for its tail probe.
#[derive(Debug, Clone, Copy)]
struct Tail {
    ssrc: u32,
    seq: u16,
    sent: Instant,
    /// Already probed: a quiet stream is probed once.
    probed: bool,
}

/// Whether `kept`, sent again now, would reach the peer (`one_way` later)
/// past `budget`: the peer would only drop it.
fn arrives_late(kept: &Kept, now: Instant, one_way: Duration, budget: Duration) -> bool {
    now.saturating_duration_since(kept.sent) + one_way >= budget
}

/// A kept packet's key: its SSRC and sequence number in one word.
fn key(ssrc: u32, seq: u16) -> u64 {
    (u64::from(ssrc) << 16) | u64::from(seq)
}

#[derive(Debug)]
struct Kept {
    /// Empty for a packet kept by number only (`on_sent_numbered`).
    bytes: Bytes,
    len: usize,
    sent: Instant,
}

/// Packets sent within the budget, by SSRC and sequence number.
#[derive(Debug)]
pub struct RetransmitBuffer {
    budget: Duration,
    share: f64,
    kept: HashMap<u64, Kept, Keyed>,
    order: VecDeque<(Instant, u32, u16)>,
    credit: f64,
    kept_bytes: usize,
    /// Each stream's last packet, most recently sent first.
    tails: Vec<Tail>,
    counts: SenderCounts,
}

impl RetransmitBuffer {
    /// Keeps packets for `budget`; retransmits at most `share` of the media
    /// bytes sent ([`DEFAULT_REPAIR_SHARE`]).
    pub fn new(budget: Duration, share: f64) -> RetransmitBuffer {
        RetransmitBuffer {
            budget,
            share: share.max(0.0),
            kept: HashMap::default(),
            order: VecDeque::new(),
            credit: CREDIT_BASE,
            kept_bytes: 0,
            tails: Vec::new(),
            counts: SenderCounts::default(),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> SenderCounts {
        self.counts
    }

    /// Packets kept now.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keeps one RTP packet that was just sent.
    pub fn on_sent(&mut self, ssrc: u32, seq: u16, bytes: Bytes, now: Instant) {
        let len = bytes.len();
        self.keep(ssrc, seq, bytes, len, now);
    }

    /// Records one RTP packet of `len` bytes that was just sent, without
    /// its bytes: for a link that resends by number from its own copy
    /// (`RelayLink::resends_by_number`). [`on_nack`](Self::on_nack) then
    /// returns it with empty bytes; the budget and the cap apply as to any.
    pub fn on_sent_numbered(&mut self, ssrc: u32, seq: u16, len: usize, now: Instant) {
        self.keep(ssrc, seq, Bytes::new(), len, now);
    }

    fn keep(&mut self, ssrc: u32, seq: u16, bytes: Bytes, len: usize, now: Instant) {
        self.expire(now);
        while self.kept.len() >= MAX_KEPT {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.forget(oldest);
        }
        self.kept_bytes += len;
        self.credit += self.share * len as f64;
        self.credit = self.credit.min(CREDIT_BASE + self.share * self.kept_bytes as f64);
        // The same number again (a sender restart) replaces the old packet;
        // its stale entry in `order` no longer matches and is skipped.
        if let Some(old) = self.kept.insert(
            key(ssrc, seq),
            Kept {
                bytes,
                len,
                sent: now,
            },
        ) {
            self.kept_bytes -= old.len;
        }
        self.order.push_back((now, ssrc, seq));
        self.note_tail(ssrc, seq, now);
    }

    /// Records `seq` as `ssrc`'s last packet, the list kept most recent
    /// first (one stream sending in a row finds itself at the front).
    fn note_tail(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let tail = Tail {
            ssrc,
            seq,
            sent: now,
            probed: false,
        };
        match self.tails.iter().position(|t| t.ssrc == ssrc) {
            Some(0) => self.tails[0] = tail,
            Some(i) => {
                self.tails[..=i].rotate_right(1);
                self.tails[0] = tail;
            }
            None => {
                self.tails.truncate(MAX_PROBED_STREAMS - 1);
                self.tails.insert(0, tail);
            }
        }
    }

    /// When the next tail probe is due, if any stream waits for one.
    pub fn next_probe(&self, after: Duration) -> Option<Instant> {
        self.tails
            .iter()
            .filter(|t| !t.probed)
            .map(|t| t.sent + after)
            .min()
    }

    /// The tail probes due at `now`: each stream quiet for `after` whose
    /// last packet was not probed yet sends it again, if the packet is
    /// still kept and would reach the peer (`one_way` later) within the
    /// budget. Each comes with its SSRC and sequence number (bytes empty if
    /// kept by number only). Probes are not charged to the amplification
    /// cap: the peer cannot cause them, and there is at most one per
    /// stream per quiet spell.
    pub fn due_probes(&mut self, now: Instant, after: Duration, one_way: Duration) -> Vec<(u32, u16, Bytes)> {
        self.expire(now);
        let mut out = Vec::new();
        for tail in &mut self.tails {
            if tail.probed || now.saturating_duration_since(tail.sent) < after {
                continue;
            }
            tail.probed = true;
            let Some(kept) = self.kept.get(&key(tail.ssrc, tail.seq)) else {
                continue;
            };
            if arrives_late(kept, now, one_way, self.budget) {
                continue;
            }
            self.counts.probes += 1;
            self.counts.retransmitted += 1;
            self.counts.retransmitted_bytes += kept.len as u64;
            out.push((tail.ssrc, tail.seq, kept.bytes.clone()));
        }
        out
    }

    /// The packets to send again for a NACK of `seqs` of stream `ssrc`:
    /// those still kept that would reach the peer (`one_way` from now)
    /// within the budget, while the cap allows, each with its sequence
    /// number (its bytes are empty if it was kept by number only). A packet
    /// that would arrive too late is counted as gone: the peer would only
    /// drop it.
    pub fn on_nack(&mut self, ssrc: u32, seqs: &[u16], now: Instant, one_way: Duration) -> Vec<(u16, Bytes)> {
        self.expire(now);
        let mut out = Vec::new();
        for &seq in seqs {
            self.counts.requested += 1;
            let Some(kept) = self.kept.get(&key(ssrc, seq)) else {
                self.counts.gone += 1;
                continue;
            };
            if arrives_late(kept, now, one_way, self.budget) {
                self.counts.gone += 1;
                continue;
            }
            let len = kept.len as f64;
            if self.credit < len {
                self.counts.capped += 1;
                continue;
            }
            self.credit -= len;
            self.counts.retransmitted += 1;
            self.counts.retransmitted_bytes += kept.len as u64;
            out.push((seq, kept.bytes.clone()));
        }
        out
    }

    fn expire(&mut self, now: Instant) {
        // One subtraction per call, then plain comparisons: this runs for
        // every packet sent.
        let Some(cutoff) = now.checked_sub(self.budget) else {
            return;
        };
        while let Some(&(sent, ssrc, seq)) = self.order.front() {
            if sent > cutoff {
                break;
            }
            self.order.pop_front();
            self.forget((sent, ssrc, seq));
        }
    }

    /// Drops the packet `order` recorded, unless it was replaced since.
    fn forget(&mut self, (sent, ssrc, seq): (Instant, u32, u16)) {
        if let Entry::Occupied(kept) = self.kept.entry(key(ssrc, seq))
            && kept.get().sent == sent
        {
            self.kept_bytes -= kept.remove().len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn packet(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn a_nacked_packet_within_the_budget_is_sent_again_and_then_forgotten() {
        let mut b = RetransmitBuffer::new(200 * MS, DEFAULT_REPAIR_SHARE);
        let t0 = Instant::now();
        for seq in 0..10 {
            b.on_sent(1, seq, packet(1_000), t0);
        }
        assert_eq!(b.on_nack(1, &[3, 4], t0 + 50 * MS, Duration::ZERO).len(), 2);
        assert_eq!(
            b.on_nack(2, &[3], t0 + 50 * MS, Duration::ZERO).len(),
            0,
            "another stream"
        );
        assert_eq!(
            b.on_nack(1, &[3], t0 + 200 * MS, Duration::ZERO).len(),
            0,
            "past the budget"
        );
        assert!(b.is_empty());
        let c = b.counts();
        assert_eq!((c.requested, c.retransmitted, c.gone, c.capped), (4, 2, 2, 0));
        assert_eq!(c.retransmitted_bytes, 2_000);
    }

    #[test]
    fn a_repair_that_would_reach_the_peer_after_the_budget_is_not_sent() {
        let mut b = RetransmitBuffer::new(200 * MS, DEFAULT_REPAIR_SHARE);
        let t0 = Instant::now();
        b.on_sent(1, 7, packet(1_000), t0);
        // 20 ms one way: sent at 179 ms it arrives at 199 ms of age; at
        // 180 ms it would arrive at 200, past the budget.
        assert_eq!(b.on_nack(1, &[7], t0 + 179 * MS, 20 * MS).len(), 1);
        assert!(b.on_nack(1, &[7], t0 + 180 * MS, 20 * MS).is_empty());
        assert_eq!(b.counts().gone, 1);
    }

    #[test]
    fn a_quiet_stream_gets_its_last_packet_probed_once() {
        let mut b = RetransmitBuffer::new(200 * MS, DEFAULT_REPAIR_SHARE);
        let t0 = Instant::now();
        let after = probe_after(200 * MS, 40 * MS);
        assert_eq!(after, 100 * MS, "half the budget, above two RTTs");
        assert_eq!(
            probe_after(200 * MS, 80 * MS),
            160 * MS,
            "two RTTs on a long path"
        );
        assert_eq!(b.next_probe(after), None, "nothing sent, nothing to probe");
        // Two streams; video's last packet is 9 at 10 ms, audio's 3 at 20 ms.
        for seq in 0..10u16 {
            b.on_sent(1, seq, packet(1_000), t0 + MS * u32::from(seq) / 10);
        }
        b.on_sent(1, 9, packet(1_000), t0 + 10 * MS);
        b.on_sent(2, 3, packet(100), t0 + 20 * MS);
        assert_eq!(b.next_probe(after), Some(t0 + 110 * MS));
        assert!(b.due_probes(t0 + 109 * MS, after, 20 * MS).is_empty());
        let probes = b.due_probes(t0 + 110 * MS, after, 20 * MS);
        assert_eq!(
            probes
                .iter()
                .map(|(ssrc, seq, bytes)| (*ssrc, *seq, bytes.len()))
                .collect::<Vec<_>>(),
            vec![(1, 9, 1_000)]
        );
        assert_eq!(b.next_probe(after), Some(t0 + 120 * MS), "audio's turn next");
        assert_eq!(b.due_probes(t0 + 150 * MS, after, 20 * MS).len(), 1);
        assert_eq!(b.next_probe(after), None, "each quiet stream is probed once");
        assert!(b.due_probes(t0 + 500 * MS, after, 20 * MS).is_empty());
        let c = b.counts();
        assert_eq!((c.probes, c.retransmitted, c.retransmitted_bytes), (2, 2, 1_100));
        // Sending again re-arms the stream.
        b.on_sent(1, 10, packet(1_000), t0 + 600 * MS);
        assert_eq!(b.next_probe(after), Some(t0 + 700 * MS));
        // A probe that could not reach the peer within the budget is not
        // sent (here the path's one way is longer than what is left).
        assert!(b.due_probes(t0 + 700 * MS, after, 100 * MS).is_empty());
        assert_eq!(b.counts().probes, 2);
    }

    #[test]
    fn only_the_most_recent_streams_are_probed() {
        let mut b = RetransmitBuffer::new(200 * MS, DEFAULT_REPAIR_SHARE);
        let t0 = Instant::now();
        for ssrc in 0..(MAX_PROBED_STREAMS as u32 + 8) {
            b.on_sent(ssrc, 1, packet(10), t0);
        }
        let probes = b.due_probes(t0 + 100 * MS, 100 * MS, Duration::ZERO);
        assert_eq!(probes.len(), MAX_PROBED_STREAMS);
        assert!(
            probes.iter().all(|(ssrc, _, _)| *ssrc >= 8),
            "the first 8 were forgotten"
        );
    }

    #[test]
    fn nacks_cannot_make_the_relay_send_more_than_a_share_of_its_media() {
        let mut b = RetransmitBuffer::new(Duration::from_secs(10), 0.25);
        let t0 = Instant::now();
        // 1,000 packets of 1,000 bytes: 1 MB of media.
        for seq in 0..1_000u16 {
            b.on_sent(1, seq, packet(1_000), t0);
        }
        // A peer asking for everything, ten times over.
        let all: Vec<u16> = (0..1_000).collect();
        let mut resent = 0;
        for _ in 0..10 {
            resent += b.on_nack(1, &all, t0, Duration::ZERO).len();
        }
        // The starting 48 kB plus a quarter of the media, once.
        assert_eq!(resent, 48 + 250);
        assert_eq!(b.counts().capped, 10_000 - 298);
        // New media earns new credit: a quarter of its bytes.
        for seq in 1_000..1_100u16 {
            b.on_sent(1, seq, packet(1_000), t0);
        }
        assert_eq!(b.on_nack(1, &all, t0, Duration::ZERO).len(), 25);
    }

    #[test]
    fn a_quiet_link_cannot_save_credit_for_a_flood() {
        let mut b = RetransmitBuffer::new(100 * MS, 0.25);
        let t0 = Instant::now();
        // A packet a second for 1,000 s: the buffer holds one at a time.
        for seq in 0..1_000u16 {
            b.on_sent(1, seq, packet(1_000), t0 + Duration::from_secs(u64::from(seq)));
        }
        assert_eq!(b.len(), 1);
        assert_eq!(b.credit, CREDIT_BASE + 250.0);
    }

    #[test]
    fn the_buffer_is_bounded_by_count_as_well_as_time() {
        let mut b = RetransmitBuffer::new(Duration::from_secs(60), DEFAULT_REPAIR_SHARE);
        let t0 = Instant::now();
        for i in 0..(MAX_KEPT as u32 + 100) {
            b.on_sent(i >> 16, i as u16, packet(10), t0);
        }
        assert_eq!(b.len(), MAX_KEPT);
        assert!(
            b.on_nack(0, &[0], t0, Duration::ZERO).is_empty(),
            "the oldest went first"
        );
    }

    #[test]
    fn a_packet_kept_by_number_comes_back_without_bytes_under_the_same_rules() {
        let t0 = Instant::now();
        let mut b = RetransmitBuffer::new(200 * MS, 0.01);
        for seq in 0..100u16 {
            b.on_sent_numbered(1, seq, 1_000, t0);
        }
        let again = b.on_nack(1, &[3], t0 + 50 * MS, Duration::ZERO);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].0, again[0].1.len()), (3, 0), "the number, no bytes");
        assert_eq!(b.counts().retransmitted_bytes, 1_000, "counted at its own size");
        // The cap counts the numbered packets' sizes: the credit (the base
        // plus 1% of 100 kB, less the first resend: 48 kB) covers 48 more.
        let all: Vec<u16> = (0..100).collect();
        assert_eq!(b.on_nack(1, &all, t0 + 50 * MS, Duration::ZERO).len(), 48);
        assert!(
            b.on_nack(1, &[3], t0 + 200 * MS, Duration::ZERO).is_empty(),
            "past the budget"
        );
    }
}
