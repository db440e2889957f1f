//! The receiving end of the repair loop, sans IO: which packets are
//! missing, which to ask for again and when, and what became of each.
//!
//! Gaps are found per SSRC by RTP sequence number (RFC 3550 appendix A.1's
//! rules for what is a restart rather than loss). A missing packet is
//! asked for at once, asked again one RTT later if it has not come, and
//! given up once a repair could no longer arrive within the latency
//! budget. A packet is delivered at most once: each stream remembers the
//! fate of its last [`WINDOW`] sequence numbers, so a duplicate (the
//! original arriving after its repair, or a retransmission after the
//! original) and a repair that comes after the packet was given up are
//! both dropped and counted. Order is not restored: every packet is
//! delivered the moment it arrives, a repaired one out of order, because a
//! reorder buffer would delay every packet behind a loss by the repair's
//! RTT, which is exactly the head-of-line blocking this mode exists to
//! avoid. RTP receivers reorder by sequence number in their jitter buffer
//! anyway.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::hash::Keyed;

/// Sequence numbers each stream remembers the fate of: at 2.5 Mbit/s of
/// 1,200-byte packets about 4 s, at 50 Mbit/s about 200 ms, so far longer
/// than any budget at the rates a relay link carries per SSRC.
pub const WINDOW: u64 = 1024;

/// RFC 3550 appendix A.1: a jump of more than this is a restart of the
/// stream (a new sender behind the same SSRC), not a loss to repair.
const MAX_DROPOUT: u64 = 3000;

/// The most packets of one stream waiting for repair; a longer gap is an
/// outage, and its oldest packets are given up. A NACK for this many fits
/// one RTCP packet of a few hundred bytes.
pub const MAX_MISSING: usize = 512;

/// Streams tracked at once; the least recently heard is forgotten first.
pub const MAX_STREAMS: usize = 1024;

/// Times one packet is asked for. Each ask costs the sender one
/// retransmission, and a third loss of the same packet means the path is
/// in an outage the budget will not outlast.
pub const MAX_ASKS: u8 = 3;

/// How long after asking for a packet to ask again: one RTT (the NACK's
/// way there and the repair's way back) with a quarter more and 5 ms for
/// jitter and the sender's own scheduling, so a repair that is merely on
/// its way is not asked for twice (which would cost a duplicate).
pub fn retry_after(rtt: Duration) -> Duration {
    rtt + rtt / 4 + Duration::from_millis(5)
}

/// What became of one arriving RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New: deliver it.
    Fresh,
    /// Was missing and asked for; deliver it. `waited`: from the gap being
    /// seen to now.
    Repaired {
        /// Gap seen → repair arrived.
        waited: Duration,
    },
    /// Already delivered: drop it.
    Duplicate,
    /// Given up on before it came (older than the budget): drop it.
    Late,
}

impl Arrival {
    /// Whether the packet goes to the application.
    pub fn deliver(self) -> bool {
        matches!(self, Arrival::Fresh | Arrival::Repaired { .. })
    }
}

/// What the receiving end counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// Sequence numbers asked for (each NACK asks for one or more).
    pub asked: u64,
    /// Missing packets that came after being asked for, within the budget.
    pub repaired: u64,
    /// Repairs (or originals) that came after the packet was given up.
    pub late: u64,
    /// Missing packets given up: their budget ran out.
    pub unrepairable: u64,
    /// Packets dropped because they had already been delivered.
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    GivenUp,
}

#[derive(Debug)]
struct Missing {
    seen: Instant,
    asks: u8,
    last_ask: Option<Instant>,
}

/// The fate of the last [`WINDOW`] sequence numbers of a stream, two bits
/// each in a ring indexed by extended sequence number modulo the window:
/// 256 bytes a stream, and an in-order packet touches one word of each
/// (a tree of the same touched a path of nodes and allocated).
#[derive(Debug, Clone, Default)]
struct Fates {
    delivered: [u64; WORDS],
    given_up: [u64; WORDS],
}

const WORDS: usize = (WINDOW / 64) as usize;

impl Fates {
    fn bit(ext: u64) -> (usize, u64) {
        let i = ext % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// The fate of `ext`, which the caller keeps within the window.
    fn get(&self, ext: u64) -> Option<Fate> {
        let (w, b) = Fates::bit(ext);
        if self.delivered[w] & b != 0 {
            Some(Fate::Delivered)
        } else if self.given_up[w] & b != 0 {
            Some(Fate::GivenUp)
        } else {
            None
        }
    }

    fn set(&mut self, ext: u64, fate: Fate) {
        let (w, b) = Fates::bit(ext);
        match fate {
            Fate::Delivered => self.delivered[w] |= b,
            Fate::GivenUp => self.given_up[w] |= b,
        }
    }

    /// The window moves up from `from` to `to`: the numbers that fall out
    /// free their bits for `from + 1 ..= to`.
    fn advance(&mut self, from: u64, to: u64) {
        if to - from >= WINDOW {
            *self = Fates::default();
            return;
        }
        for ext in from + 1..=to {
            let (w, b) = Fates::bit(ext);
            self.delivered[w] &= !b;
            self.given_up[w] &= !b;
        }
    }
}

#[derive(Debug)]
struct Stream {
    /// Highest extended sequence number so far.
    highest: u64,
    /// Fate of the last [`WINDOW`] sequence numbers, by extended number.
    fates: Fates,
    missing: BTreeMap<u64, Missing>,
    heard: Instant,
}

impl Stream {
    fn new(seq: u16, now: Instant) -> Stream {
        // Start high enough that sequence numbers before the first can be
        // told apart without going below zero.
        let highest = (1 << 20) + u64::from(seq);
        let mut fates = Fates::default();
        fates.set(highest, Fate::Delivered);
        Stream {
            highest,
            fates,
            missing: BTreeMap::new(),
            heard: now,
        }
    }

    /// The extended sequence number nearest to the highest so far.
    fn extend(&self, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        (self.highest as i64 + i64::from(delta)) as u64
    }

    /// Whether `ext` is within the window (its fate is remembered).
    fn remembers(&self, ext: u64) -> bool {
        ext <= self.highest && ext + WINDOW > self.highest
    }

    /// Records `fate` for `ext`, if the window still holds it.
    fn settle(&mut self, ext: u64, fate: Fate) {
        if self.remembers(ext) {
            self.fates.set(ext, fate);
        }
    }
}

/// The receiving end's state for every stream of one link.
#[derive(Debug)]
pub struct LossDetector {
    budget: Duration,
    streams: HashMap<u32, Stream, Keyed>,
    counts: ReceiverCounts,
    /// A gap appeared since the last [`poll`](LossDetector::poll).
    new_gap: bool,
}

impl LossDetector {
    /// A detector that gives up on a packet once a repair could no longer
    /// arrive within `budget` of it having been due.
    pub fn new(budget: Duration) -> LossDetector {
        LossDetector {
            budget,
            streams: HashMap::default(),
            counts: ReceiverCounts::default(),
            new_gap: false,
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> ReceiverCounts {
        self.counts
    }

    /// Whether a gap appeared since the last poll: the caller asks at once
    /// then, and otherwise leaves the asking to its timer (a poll walks
    /// every missing packet, which is too much to do per arrival).
    pub fn new_gap(&self) -> bool {
        self.new_gap
    }

    /// Whether any packet is waiting for repair (the caller keeps its
    /// timer running only then).
    pub fn pending(&self) -> bool {
        self.streams.values().any(|s| !s.missing.is_empty())
    }

    /// Judges one arriving RTP packet of stream `ssrc`.
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, now: Instant) -> Arrival {
        // One lookup for a known stream, the common case.
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            if self.streams.len() >= MAX_STREAMS
                && let Some(&quietest) = self.streams.iter().min_by_key(|(_, s)| s.heard).map(|(k, _)| k)
            {
                self.streams.remove(&quietest);
            }
            self.streams.insert(ssrc, Stream::new(seq, now));
            return Arrival::Fresh;
        };
        stream.heard = now;
        let ext = stream.extend(seq);
        if ext > stream.highest {
            let gap = ext - stream.highest - 1;
            if gap > MAX_DROPOUT {
                // A restart: nothing between is owed to anyone.
                self.counts.unrepairable += stream.missing.len() as u64;
                *stream = Stream::new(seq, now);
                return Arrival::Fresh;
            }
            self.new_gap |= gap > 0;
            for missing in stream.highest + 1..ext {
                stream.missing.insert(
                    missing,
                    Missing {
                        seen: now,
                        asks: 0,
                        last_ask: None,
                    },
                );
            }
            stream.fates.advance(stream.highest, ext);
            stream.highest = ext;
            stream.fates.set(ext, Fate::Delivered);
            while stream.missing.len() > MAX_MISSING {
                let (oldest, _) = stream.missing.pop_first().expect("not empty");
                stream.settle(oldest, Fate::GivenUp);
                self.counts.unrepairable += 1;
            }
            return Arrival::Fresh;
        }
        if !stream.remembers(ext) {
            // Older than anything remembered: it cannot be told from a
            // duplicate, and it is far past any budget.
            self.counts.late += 1;
            return Arrival::Late;
        }
        match stream.fates.get(ext) {
            Some(Fate::Delivered) => {
                self.counts.duplicates += 1;
                Arrival::Duplicate
            }
            Some(Fate::GivenUp) => {
                self.counts.late += 1;
                Arrival::Late
            }
            None => {
                stream.fates.set(ext, Fate::Delivered);
                match stream.missing.remove(&ext) {
                    Some(m) if m.asks > 0 => {
                        self.counts.repaired += 1;
                        Arrival::Repaired {
                            waited: now.saturating_duration_since(m.seen),
                        }
                    }
                    // Reordered, not lost: it came before anyone asked.
                    _ => Arrival::Fresh,
                }
            }
        }
    }

    /// The sequence numbers to ask for now, per stream, given the link's
    /// round-trip time: packets never asked for, and packets asked for
    /// longer than [`retry_after`] ago (the repair itself may have been
    /// lost). A packet is given up (and counted unrepairable) when a
    /// repair asked for now could arrive after its budget: seen half an RTT
    /// after it was sent (one way), asked now, answered within
    /// [`retry_after`] (the RTT with the jitter and scheduling allowance
    /// that decides when to ask again). With the bare RTT, repairs asked
    /// right at the edge arrived up to a millisecond past the budget when
    /// the path was queueing (after an outage, `wan-outage`).
    pub fn poll(&mut self, now: Instant, rtt: Duration) -> Vec<(u32, Vec<u16>)> {
        self.new_gap = false;
        let mut out = Vec::new();
        for (&ssrc, stream) in &mut self.streams {
            let mut ask = Vec::new();
            let mut given_up = Vec::new();
            for (&ext, m) in &mut stream.missing {
                let age = now.saturating_duration_since(m.seen) + rtt / 2;
                let repair_arrives = age + retry_after(rtt);
                if repair_arrives > self.budget || (m.asks >= MAX_ASKS && age > self.budget) {
                    given_up.push(ext);
                    continue;
                }
                let due = match m.last_ask {
                    None => true,
                    Some(at) => m.asks < MAX_ASKS && now.saturating_duration_since(at) >= retry_after(rtt),
                };
                if due {
                    m.asks += 1;
                    m.last_ask = Some(now);
                    ask.push(ext as u16);
                }
            }
            for ext in given_up {
                stream.missing.remove(&ext);
                stream.settle(ext, Fate::GivenUp);
                self.counts.unrepairable += 1;
            }
            if !ask.is_empty() {
                self.counts.asked += ask.len() as u64;
                out.push((ssrc, ask));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const RTT: Duration = Duration::from_millis(40);

    fn detector() -> (LossDetector, Instant) {
        (LossDetector::new(Duration::from_millis(200)), Instant::now())
    }

    #[test]
    fn a_gap_is_asked_for_at_once_and_its_repair_delivered_once() {
        let (mut d, t0) = detector();
        for seq in [10, 11] {
            assert_eq!(d.on_rtp(7, seq, t0), Arrival::Fresh);
        }
        assert!(!d.new_gap());
        assert_eq!(d.on_rtp(7, 14, t0), Arrival::Fresh);
        assert!(d.pending() && d.new_gap());
        assert_eq!(d.poll(t0, RTT), vec![(7, vec![12, 13])]);
        assert!(!d.new_gap());
        // Asked: nothing more until an RTT and its margin have passed.
        assert_eq!(d.poll(t0 + 10 * MS, RTT), vec![]);
        assert_eq!(d.poll(t0 + 54 * MS, RTT), vec![]);
        assert_eq!(
            d.on_rtp(7, 12, t0 + 41 * MS),
            Arrival::Repaired { waited: 41 * MS }
        );
        assert_eq!(d.on_rtp(7, 12, t0 + 42 * MS), Arrival::Duplicate);
        // 13's repair was lost: asked again an RTT and a margin after the
        // first ask.
        assert_eq!(d.poll(t0 + 55 * MS, RTT), vec![(7, vec![13])]);
        assert!(d.on_rtp(7, 13, t0 + 96 * MS).deliver());
        assert!(!d.pending());
        let c = d.counts();
        assert_eq!((c.asked, c.repaired, c.duplicates, c.unrepairable), (3, 2, 1, 0));
    }

    #[test]
    fn a_packet_whose_repair_would_come_too_late_is_given_up_and_then_dropped() {
        let (mut d, t0) = detector();
        d.on_rtp(1, 100, t0);
        d.on_rtp(1, 102, t0);
        assert_eq!(d.poll(t0, RTT), vec![(1, vec![101])]);
        // Seen at t0, one way is 20 ms; a repair takes up to retry_after(40
        // ms) = 55 ms: at t0 + 126 ms one asked now could arrive at
        // 20 + 126 + 55 = 201 ms of age, past 200 ms.
        assert_eq!(d.poll(t0 + 125 * MS, RTT), vec![(1, vec![101])]);
        assert_eq!(d.poll(t0 + 126 * MS, RTT), vec![]);
        assert_eq!(d.counts().unrepairable, 1);
        assert!(!d.pending());
        assert_eq!(d.on_rtp(1, 101, t0 + 150 * MS), Arrival::Late);
        assert_eq!(d.counts().late, 1);
    }

    #[test]
    fn on_a_long_path_nothing_is_asked_for_that_cannot_arrive_in_time() {
        let mut d = LossDetector::new(Duration::from_millis(100));
        let t0 = Instant::now();
        d.on_rtp(1, 0, t0);
        d.on_rtp(1, 2, t0);
        // RTT 80: half an RTT + retry_after(80 ms) = 40 + 105 = 145 ms > 100 ms.
        assert_eq!(d.poll(t0, 80 * MS), vec![]);
        assert_eq!(d.counts().unrepairable, 1);
    }

    #[test]
    fn reordering_is_not_loss_and_wraps_are_continuous() {
        let (mut d, t0) = detector();
        d.on_rtp(3, 65_534, t0);
        d.on_rtp(3, 1, t0); // 65535 and 0 missing, across the wrap
        assert_eq!(
            d.on_rtp(3, 65_535, t0),
            Arrival::Fresh,
            "came before anyone asked"
        );
        assert_eq!(d.poll(t0, RTT), vec![(3, vec![0])]);
        assert_eq!(d.on_rtp(3, 0, t0 + MS), Arrival::Repaired { waited: MS });
        assert_eq!(d.counts().asked, 1);
    }

    #[test]
    fn a_restart_is_not_a_loss_of_thousands() {
        let (mut d, t0) = detector();
        d.on_rtp(5, 10, t0);
        d.on_rtp(5, 30_000, t0);
        assert_eq!(d.poll(t0, RTT), vec![]);
        assert_eq!(d.on_rtp(5, 30_001, t0), Arrival::Fresh);
    }

    #[test]
    fn a_long_gap_asks_for_at_most_max_missing() {
        let (mut d, t0) = detector();
        d.on_rtp(5, 0, t0);
        d.on_rtp(5, 2_000, t0);
        let asked = d.poll(t0, RTT);
        assert_eq!(asked[0].1.len(), MAX_MISSING);
        assert_eq!(asked[0].1[0], 2_000 - MAX_MISSING as u16);
        assert_eq!(d.counts().unrepairable, (1_999 - MAX_MISSING) as u64);
    }

    #[test]
    fn packets_older_than_the_window_are_dropped_not_delivered_twice() {
        let (mut d, t0) = detector();
        for seq in 0..2_000u16 {
            d.on_rtp(9, seq, t0);
        }
        assert_eq!(d.on_rtp(9, 5, t0), Arrival::Late);
        assert_eq!(d.on_rtp(9, 1_999, t0), Arrival::Duplicate);
    }

    #[test]
    fn the_window_moves_without_mixing_old_and_new_numbers() {
        let (mut d, t0) = detector();
        for seq in 0..10 {
            d.on_rtp(4, seq, t0);
        }
        // 10 to 1,029 missing; the window is now 7 to 1,030.
        d.on_rtp(4, 1_030, t0);
        assert_eq!(d.on_rtp(4, 8, t0), Arrival::Duplicate, "still remembered");
        assert_eq!(d.on_rtp(4, 6, t0), Arrival::Late, "fell out of the window");
        // 1,029 shares its slot with 5, which was delivered.
        assert_eq!(
            d.on_rtp(4, 1_029, t0),
            Arrival::Fresh,
            "missing, not yet asked for"
        );
        assert_eq!(d.on_rtp(4, 1_029, t0), Arrival::Duplicate);
        // 10 was given up (more than MAX_MISSING were missing).
        assert_eq!(d.on_rtp(4, 10, t0), Arrival::Late);
    }

    #[test]
    fn streams_are_bounded_and_independent() {
        let (mut d, t0) = detector();
        for ssrc in 0..MAX_STREAMS as u32 + 10 {
            d.on_rtp(ssrc, 0, t0 + Duration::from_micros(u64::from(ssrc)));
        }
        assert_eq!(d.streams.len(), MAX_STREAMS);
        assert!(!d.streams.contains_key(&0), "the quietest went first");
        let t1 = t0 + MS;
        d.on_rtp(2_000, 0, t1);
        d.on_rtp(2_000, 2, t1);
        d.on_rtp(2_001, 0, t1);
        d.on_rtp(2_001, 3, t1);
        let mut asked = d.poll(t1, RTT);
        asked.sort();
        assert_eq!(asked, vec![(2_000, vec![1]), (2_001, vec![1, 2])]);
    }
}
