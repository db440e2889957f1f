//! The wire bytes of recently sent SRTP packets, for retransmission.
//!
//! A repair loop above the link (the `relay-repair` crate) answers a NACK
//! by sending the lost packet again. Over plain RTP that is the same packet
//! sent twice. Over SRTP it cannot be: AES-GCM must never see a (key,
//! nonce) pair twice, and the nonce is the packet's index, so
//! [`SrtpContext::protect_rtp`](crate::srtp::SrtpContext::protect_rtp)
//! refuses any index it has protected before. The retransmission is
//! therefore the ciphertext sent the first time, kept here by SSRC and
//! sequence number: the receiver never authenticated that index (the
//! original was lost), so its replay window takes it, and nothing is
//! encrypted twice.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Packets kept at most, whatever the window: about 1.6 s of 50 Mbit/s
/// video in 1,200-byte packets, and ~10 MB of memory.
pub const MAX_KEPT: usize = 8192;

/// Sent SRTP packets, oldest first, for at most a window of time and
/// [`MAX_KEPT`] packets.
#[derive(Debug)]
pub(crate) struct SentWire {
    window: Duration,
    order: VecDeque<(u32, u16, Instant)>,
    wire: HashMap<(u32, u16), (Bytes, Instant)>,
}

impl SentWire {
    pub(crate) fn new(window: Duration) -> SentWire {
        SentWire {
            window,
            order: VecDeque::new(),
            wire: HashMap::new(),
        }
    }

    /// Keeps `wire`, the protected form of `ssrc`'s packet `seq`, sent at
    /// `now`; forgets what fell out of the window.
    pub(crate) fn keep(&mut self, ssrc: u32, seq: u16, wire: Bytes, now: Instant) {
        // One subtraction per packet, then comparisons (this runs for every
        // packet sent); before the clock has run a window, nothing is old.
        let cutoff = now.checked_sub(self.window);
        while let Some(&(s, q, at)) = self.order.front() {
            if self.order.len() < MAX_KEPT && cutoff.is_none_or(|cutoff| at >= cutoff) {
                break;
            }
            self.order.pop_front();
            // A later send of the same sequence number (16-bit wrap) owns
            // the entry now; only the one this slot recorded is removed.
            if self.wire.get(&(s, q)).is_some_and(|(_, kept)| *kept == at) {
                self.wire.remove(&(s, q));
            }
        }
        self.order.push_back((ssrc, seq, now));
        self.wire.insert((ssrc, seq), (wire, now));
    }

    /// The bytes sent for `ssrc`'s packet `seq`, if they are still within
    /// the window.
    pub(crate) fn get(&self, ssrc: u32, seq: u16, now: Instant) -> Option<Bytes> {
        self.wire
            .get(&(ssrc, seq))
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.window)
            .map(|(wire, _)| wire.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.wire.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn returns_what_was_sent_within_the_window_and_nothing_after() {
        let t0 = Instant::now();
        let mut sent = SentWire::new(200 * MS);
        sent.keep(7, 1, Bytes::from_static(b"one"), t0);
        sent.keep(7, 2, Bytes::from_static(b"two"), t0 + 10 * MS);
        assert_eq!(sent.get(7, 1, t0 + 150 * MS).as_deref(), Some(&b"one"[..]));
        assert_eq!(sent.get(8, 1, t0 + 150 * MS), None, "another SSRC");
        assert_eq!(sent.get(7, 1, t0 + 201 * MS), None, "past the window");
        assert_eq!(sent.get(7, 2, t0 + 201 * MS).as_deref(), Some(&b"two"[..]));
        // Keeping a new packet forgets the expired one for good.
        sent.keep(7, 3, Bytes::from_static(b"three"), t0 + 205 * MS);
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn is_bounded_in_count_whatever_the_window() {
        let t0 = Instant::now();
        let mut sent = SentWire::new(Duration::from_secs(3600));
        for i in 0..(MAX_KEPT as u32 + 100) {
            sent.keep(1, i as u16, Bytes::new(), t0);
        }
        assert_eq!(sent.len(), MAX_KEPT);
        assert_eq!(sent.get(1, 99, t0), None, "the oldest went first");
        assert!(sent.get(1, (MAX_KEPT as u32 + 99) as u16, t0).is_some());
    }

    #[test]
    fn a_reused_sequence_number_keeps_its_newest_bytes() {
        let t0 = Instant::now();
        let mut sent = SentWire::new(100 * MS);
        sent.keep(1, 5, Bytes::from_static(b"old"), t0);
        sent.keep(1, 5, Bytes::from_static(b"new"), t0 + 50 * MS);
        // Evicting the first slot must not remove the second send's bytes.
        sent.keep(1, 6, Bytes::new(), t0 + 120 * MS);
        assert_eq!(sent.get(1, 5, t0 + 120 * MS).as_deref(), Some(&b"new"[..]));
    }
}
