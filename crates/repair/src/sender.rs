//! The sending end of the repair loop, sans IO: the packets sent within
//! the latency budget, kept for retransmission, and the cap that keeps a
//! peer from using NACKs to make the relay send more than its media.

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
    }

    /// The packets to send again for a NACK of `seqs` of stream `ssrc`:
    /// those still kept and within the budget, while the cap allows, each
    /// with its sequence number (its bytes are empty if it was kept by
    /// number only).
    pub fn on_nack(&mut self, ssrc: u32, seqs: &[u16], now: Instant) -> Vec<(u16, Bytes)> {
        self.expire(now);
        let mut out = Vec::new();
        for &seq in seqs {
            self.counts.requested += 1;
            let Some(kept) = self.kept.get(&key(ssrc, seq)) else {
                self.counts.gone += 1;
                continue;
            };
            if now.saturating_duration_since(kept.sent) >= self.budget {
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
        assert_eq!(b.on_nack(1, &[3, 4], t0 + 50 * MS).len(), 2);
        assert_eq!(b.on_nack(2, &[3], t0 + 50 * MS).len(), 0, "another stream");
        assert_eq!(b.on_nack(1, &[3], t0 + 200 * MS).len(), 0, "past the budget");
        assert!(b.is_empty());
        let c = b.counts();
        assert_eq!((c.requested, c.retransmitted, c.gone, c.capped), (4, 2, 2, 0));
        assert_eq!(c.retransmitted_bytes, 2_000);
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
            resent += b.on_nack(1, &all, t0).len();
        }
        // The starting 48 kB plus a quarter of the media, once.
        assert_eq!(resent, 48 + 250);
        assert_eq!(b.counts().capped, 10_000 - 298);
        // New media earns new credit: a quarter of its bytes.
        for seq in 1_000..1_100u16 {
            b.on_sent(1, seq, packet(1_000), t0);
        }
        assert_eq!(b.on_nack(1, &all, t0).len(), 25);
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
        assert!(b.on_nack(0, &[0], t0).is_empty(), "the oldest went first");
    }

    #[test]
    fn a_packet_kept_by_number_comes_back_without_bytes_under_the_same_rules() {
        let t0 = Instant::now();
        let mut b = RetransmitBuffer::new(200 * MS, 0.01);
        for seq in 0..100u16 {
            b.on_sent_numbered(1, seq, 1_000, t0);
        }
        let again = b.on_nack(1, &[3], t0 + 50 * MS);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].0, again[0].1.len()), (3, 0), "the number, no bytes");
        assert_eq!(b.counts().retransmitted_bytes, 1_000, "counted at its own size");
        // The cap counts the numbered packets' sizes: the credit (the base
        // plus 1% of 100 kB, less the first resend: 48 kB) covers 48 more.
        let all: Vec<u16> = (0..100).collect();
        assert_eq!(b.on_nack(1, &all, t0 + 50 * MS).len(), 48);
        assert!(b.on_nack(1, &[3], t0 + 200 * MS).is_empty(), "past the budget");
    }
}
