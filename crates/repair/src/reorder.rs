//! A bounded reorder window: the option to deliver each SSRC's packets in
//! sequence order while a repair is on its way.
//!
//! Without it (the default) a repaired packet is delivered when it comes,
//! after the packets sent behind it, and the receiving media server's
//! jitter buffer puts it back in order, as it does for any reordering on a
//! network. With it, a packet that arrives after a gap is held until the
//! gap is filled, or until it has waited the window, whichever comes
//! first; then the gap is skipped and the held packets go out in order. A
//! repair that arrives after its gap was skipped is still delivered (late
//! and out of order, but within the budget: the loss detector has already
//! dropped anything past it). Holding costs every packet behind a loss up
//! to the window in latency; that trade is what the report measures.
//!
//! Sans-IO: [`ReorderWindow::push`] and [`ReorderWindow::poll`] take the
//! time and return what is due.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use relay_core::Packet;

/// Packets held per SSRC at most: past it the oldest gap is skipped, so a
/// long run of loss cannot hold unbounded memory or delay (about 0.5 s of
/// 10 Mbit/s video).
pub const MAX_HELD: usize = 512;

/// SSRCs put in order at most; packets of any further SSRC are delivered
/// as they come.
pub const MAX_STREAMS: usize = 1024;

/// A sequence number this far from the next expected one is a new
/// sequence (a restarted sender), not a gap: what is held is flushed and
/// the stream restarts there.
const RESYNC: u64 = 3000;

#[derive(Debug)]
struct Stream {
    /// The extended sequence number delivered next.
    next: u64,
    /// Packets behind a gap, by extended sequence number, with the time
    /// they arrived.
    held: BTreeMap<u64, (Packet, Instant)>,
}

impl Stream {
    /// Extends `seq` to 64 bits, as the one nearest to `next`.
    fn extend(&self, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(self.next as u16) as i16;
        self.next.wrapping_add_signed(i64::from(delta))
    }

    /// Delivers from `next` on while there is no gap.
    fn drain(&mut self, out: &mut impl FnMut(Packet)) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            out(entry.remove().0);
            self.next += 1;
        }
    }

    /// Skips the gap before the first held packet and delivers from it.
    fn skip_gap(&mut self, out: &mut impl FnMut(Packet)) {
        if let Some(&first) = self.held.keys().next() {
            self.next = first;
            self.drain(out);
        }
    }
}

/// Per-SSRC ordering within a time window; see the module docs.
#[derive(Debug)]
pub struct ReorderWindow {
    window: Duration,
    streams: HashMap<u32, Stream>,
    held: usize,
    reordered: u64,
    skipped: u64,
}

impl ReorderWindow {
    /// Holds a packet behind a gap for at most `window`.
    pub fn new(window: Duration) -> ReorderWindow {
        ReorderWindow {
            window,
            streams: HashMap::new(),
            held: 0,
            reordered: 0,
            skipped: 0,
        }
    }

    /// One packet of `ssrc` with sequence number `seq`, arrived at `now`
    /// (already screened for duplicates and lateness): hands to `out`
    /// whatever can be delivered now, in order.
    pub fn push(&mut self, ssrc: u32, seq: u16, packet: Packet, now: Instant, out: &mut impl FnMut(Packet)) {
        let held_before = self.streams.get(&ssrc).map_or(0, |s| s.held.len());
        if !self.streams.contains_key(&ssrc) {
            if self.streams.len() < MAX_STREAMS {
                self.streams.insert(
                    ssrc,
                    Stream {
                        // Extended numbers start one wrap up, so a late
                        // packet from before the first never goes below 0.
                        next: u64::from(seq) + (1 << 16) + 1,
                        held: BTreeMap::new(),
                    },
                );
            }
            out(packet);
            return;
        }
        let stream = self.streams.get_mut(&ssrc).expect("checked");
        let ext = stream.extend(seq);
        if ext.abs_diff(stream.next) >= RESYNC {
            // A new sequence: what is held goes out in order, then this.
            self.skipped += u64::from(!stream.held.is_empty());
            std::mem::take(&mut stream.held)
                .into_values()
                .for_each(|(p, _)| out(p));
            out(packet);
            // Re-based like a new stream, so no number of restarts can
            // walk the extended numbers below zero.
            stream.next = u64::from(seq) + (1 << 16) + 1;
        } else if ext < stream.next {
            // Its gap was skipped already: late, out of order, still useful.
            self.reordered += 1;
            out(packet);
        } else if ext == stream.next {
            if !stream.held.is_empty() {
                // It fills the gap the held packets wait behind.
                self.reordered += 1;
            }
            out(packet);
            stream.next += 1;
            stream.drain(out);
        } else {
            stream.held.insert(ext, (packet, now));
            if stream.held.len() > MAX_HELD {
                self.skipped += 1;
                stream.skip_gap(out);
            }
        }
        let held_after = self.streams.get(&ssrc).map_or(0, |s| s.held.len());
        self.held = self.held + held_after - held_before;
    }

    /// Hands to `out` the packets whose wait reached the window, with
    /// everything in order behind them (the gaps before them are skipped).
    pub fn poll(&mut self, now: Instant, out: &mut impl FnMut(Packet)) {
        if self.held == 0 {
            return;
        }
        let mut held = 0;
        for stream in self.streams.values_mut() {
            while let Some((_, (_, at))) = stream.held.first_key_value() {
                if now.saturating_duration_since(*at) < self.window {
                    break;
                }
                self.skipped += 1;
                stream.skip_gap(out);
            }
            held += stream.held.len();
        }
        self.held = held;
    }

    /// Hands to `out` everything held, each SSRC in order (the link is
    /// closing: what arrived is still delivered).
    pub fn flush(&mut self, out: &mut impl FnMut(Packet)) {
        for stream in self.streams.values_mut() {
            std::mem::take(&mut stream.held)
                .into_values()
                .for_each(|(p, _)| out(p));
        }
        self.held = 0;
    }

    /// Whether any packet is held (then [`poll`](Self::poll) is due).
    pub fn holding(&self) -> bool {
        self.held > 0
    }

    /// Packets delivered before one sent ahead of them: repairs that
    /// filled a gap the window held packets behind, and repairs that came
    /// after their gap was skipped.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Gaps given up on (the window ran out, too much was held, or the
    /// sequence restarted).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::build_rtp;

    const MS: Duration = Duration::from_millis(1);

    fn rtp(seq: u16) -> Packet {
        Packet::parse(build_rtp(96, seq, 0, 7, b"x")).unwrap()
    }

    fn seqs(out: &[Packet]) -> Vec<u16> {
        out.iter().map(|p| p.sequence_number().unwrap()).collect()
    }

    #[test]
    fn holds_packets_behind_a_gap_until_the_repair_fills_it() {
        let t0 = Instant::now();
        let mut w = ReorderWindow::new(100 * MS);
        let mut out = Vec::new();
        for seq in [10, 11, 13, 14] {
            w.push(7, seq, rtp(seq), t0, &mut |p| out.push(p));
        }
        assert_eq!(seqs(&out), [10, 11]);
        assert!(w.holding());
        w.poll(t0 + 50 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [10, 11], "within the window");
        w.push(7, 12, rtp(12), t0 + 60 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [10, 11, 12, 13, 14]);
        assert!(!w.holding());
        assert_eq!((w.reordered(), w.skipped()), (1, 0));
    }

    #[test]
    fn skips_a_gap_when_the_window_runs_out_and_delivers_a_late_repair_anyway() {
        let t0 = Instant::now();
        let mut w = ReorderWindow::new(100 * MS);
        let mut out = Vec::new();
        for (seq, at) in [(65_534u16, 0), (0, 0), (1, 30), (3, 40)] {
            w.push(7, seq, rtp(seq), t0 + at * MS, &mut |p| out.push(p));
        }
        // 65,535 and 2 are missing; the sequence wraps.
        assert_eq!(seqs(&out), [65_534]);
        w.poll(t0 + 99 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [65_534]);
        // 0 waited its 100 ms: the first gap is skipped, 0 and 1 go, 3
        // still waits behind 2 (it arrived later).
        w.poll(t0 + 100 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [65_534, 0, 1]);
        w.poll(t0 + 140 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [65_534, 0, 1, 3]);
        assert!(!w.holding());
        w.push(7, 65_535, rtp(65_535), t0 + 150 * MS, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [65_534, 0, 1, 3, 65_535]);
        assert_eq!((w.reordered(), w.skipped()), (1, 2));
    }

    #[test]
    fn holds_at_most_max_held_packets_per_stream() {
        let t0 = Instant::now();
        let mut w = ReorderWindow::new(Duration::from_secs(10));
        let mut out = Vec::new();
        w.push(7, 0, rtp(0), t0, &mut |p| out.push(p));
        for seq in 2..(MAX_HELD as u16 + 3) {
            w.push(7, seq, rtp(seq), t0, &mut |p| out.push(p));
        }
        // One more than MAX_HELD arrived behind the gap at 1: it is skipped.
        assert_eq!(out.len(), 1 + MAX_HELD + 1);
        assert!(!w.holding());
        assert_eq!(w.skipped(), 1);
    }

    #[test]
    fn a_restarted_sequence_flushes_what_is_held_and_starts_over() {
        let t0 = Instant::now();
        let mut w = ReorderWindow::new(100 * MS);
        let mut out = Vec::new();
        for seq in [100, 102, 40_000, 40_001] {
            w.push(7, seq, rtp(seq), t0, &mut |p| out.push(p));
        }
        assert_eq!(seqs(&out), [100, 102, 40_000, 40_001]);
        assert!(!w.holding());
    }

    #[test]
    fn streams_are_ordered_independently() {
        let t0 = Instant::now();
        let mut w = ReorderWindow::new(100 * MS);
        let mut out = Vec::new();
        let other = |seq| Packet::parse(build_rtp(96, seq, 0, 8, b"y")).unwrap();
        w.push(7, 1, rtp(1), t0, &mut |p| out.push(p));
        w.push(7, 3, rtp(3), t0, &mut |p| out.push(p));
        w.push(8, 50, other(50), t0, &mut |p| out.push(p));
        w.push(8, 51, other(51), t0, &mut |p| out.push(p));
        assert_eq!(seqs(&out), [1, 50, 51], "SSRC 8 is not held behind 7's gap");
        w.flush(&mut |p| out.push(p));
        assert_eq!(seqs(&out), [1, 50, 51, 3]);
        assert!(!w.holding());
    }
}
