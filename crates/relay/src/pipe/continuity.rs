//! Streams that resume on a new session after a reconnect, and what went
//! missing across the gap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most streams [`Continuity`] remembers; the least recently seen is
/// forgotten first.
pub const CONTINUITY_MAX_STREAMS: usize = 4096;

/// Notices RTP streams (by SSRC) that stop on one session and resume on
/// another (a reconnect), and counts what went missing in between: the
/// sequence-number gap and its duration. Shared by every session of one
/// `relay answer`.
///
/// Each session tracks its streams on its own, without a lock
/// ([`SessionStreams`]); the shared map is read when a stream first shows up
/// on a session and written when the session ends. So a resumption is seen
/// when the old session ended before the stream came back on the new one,
/// which is the order `relay offer --reconnect` produces (it deletes the
/// dead session before offering again, and otherwise the answering side's
/// own liveness timeout ends it first).
#[derive(Debug, Default)]
pub struct Continuity {
    streams: Mutex<HashMap<u32, Track>>,
    resumed: AtomicU64,
    missing: AtomicU64,
    gap_micros_total: AtomicU64,
    gap_micros_last: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    session: u64,
    seq: u16,
    at: Instant,
}

/// One stream resuming on a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The stream.
    pub ssrc: u32,
    /// Sequence numbers missing between the last packet on the old session
    /// and the first on the new one (0 if the new one starts at or before
    /// where the old one ended).
    pub missing: u64,
    /// Time between those two packets.
    pub gap: Duration,
}

impl Continuity {
    /// The tracker of session `session`'s streams; dropping it ends the
    /// session (its last packet per stream becomes what a later session
    /// resumes from).
    pub fn session(&self, session: u64) -> SessionStreams<'_> {
        SessionStreams {
            continuity: self,
            session,
            streams: HashMap::new(),
        }
    }

    /// Stream `ssrc`'s first packet `seq` on `session`: the resumption if
    /// another session delivered it last.
    fn first_on(&self, session: u64, ssrc: u32, seq: u16, now: Instant) -> Option<Resumed> {
        let previous = *self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ssrc)?;
        if previous.session == session {
            return None;
        }
        // Forward distance in sequence space; a stream that restarted or
        // went backwards (distance in the upper half) has nothing missing
        // that can be told apart from a restart.
        let ahead = seq.wrapping_sub(previous.seq);
        let missing = if ahead != 0 && ahead < 0x8000 {
            u64::from(ahead) - 1
        } else {
            0
        };
        let gap = now.saturating_duration_since(previous.at);
        let micros = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        self.resumed.fetch_add(1, Ordering::Relaxed);
        self.missing.fetch_add(missing, Ordering::Relaxed);
        self.gap_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.gap_micros_last.store(micros, Ordering::Relaxed);
        tracing::info!(
            ssrc = format_args!("{ssrc:#010x}"),
            missing,
            gap_ms = gap.as_secs_f64() * 1e3,
            "RTP stream resumed on a new session"
        );
        Some(Resumed { ssrc, missing, gap })
    }

    /// Records where a session's streams ended.
    fn publish(&self, tracks: impl Iterator<Item = (u32, Track)>) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for (ssrc, track) in tracks {
            if streams.len() >= CONTINUITY_MAX_STREAMS && !streams.contains_key(&ssrc) {
                let oldest = streams.iter().min_by_key(|(_, t)| t.at).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    streams.remove(&oldest);
                }
            }
            streams.insert(ssrc, track);
        }
    }

    /// Streams that resumed on a new session.
    pub fn resumed(&self) -> u64 {
        self.resumed.load(Ordering::Relaxed)
    }

    /// RTP packets missing across every resumption.
    pub fn missing(&self) -> u64 {
        self.missing.load(Ordering::Relaxed)
    }

    /// The last resumption's gap, and the sum of all of them.
    pub fn gaps(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.gap_micros_last.load(Ordering::Relaxed)),
            Duration::from_micros(self.gap_micros_total.load(Ordering::Relaxed)),
        )
    }
}

/// One session's streams, tracked without a lock; see [`Continuity`].
#[derive(Debug)]
pub struct SessionStreams<'a> {
    continuity: &'a Continuity,
    session: u64,
    streams: HashMap<u32, Track>,
}

impl SessionStreams<'_> {
    /// Records packet `seq` of stream `ssrc`; returns the resumption when
    /// this is the stream's first packet on the session and another session
    /// delivered it last.
    pub fn observe(&mut self, ssrc: u32, seq: u16) -> Option<Resumed> {
        self.observe_at(ssrc, seq, Instant::now())
    }

    fn observe_at(&mut self, ssrc: u32, seq: u16, at: Instant) -> Option<Resumed> {
        let track = Track {
            session: self.session,
            seq,
            at,
        };
        match self.streams.insert(ssrc, track) {
            Some(_) => None,
            None => self.continuity.first_on(self.session, ssrc, seq, at),
        }
    }
}

impl Drop for SessionStreams<'_> {
    fn drop(&mut self) {
        self.continuity.publish(self.streams.drain());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_resuming_on_another_session_counts_the_sequence_gap() {
        let c = Continuity::default();
        let t0 = Instant::now();
        let mut one = c.session(1);
        for seq in 10..=20 {
            assert_eq!(one.observe_at(0xAB, seq, t0), None);
        }
        drop(one);
        let mut two = c.session(2);
        let r = two
            .observe_at(0xAB, 31, t0 + Duration::from_millis(1500))
            .unwrap();
        assert_eq!(
            r,
            Resumed {
                ssrc: 0xAB,
                missing: 10,
                gap: Duration::from_millis(1500)
            }
        );
        assert_eq!(two.observe_at(0xAB, 32, t0 + Duration::from_millis(1501)), None);
        assert_eq!((c.resumed(), c.missing()), (1, 10));
        assert_eq!(c.gaps().0, Duration::from_millis(1500));
    }

    #[test]
    fn wraparound_restart_and_other_streams_are_told_apart() {
        let c = Continuity::default();
        let t0 = Instant::now();
        c.session(1).observe_at(1, 65_530, t0);
        // Across the wrap: 65531..=65535, 0..=3 missing = 9.
        assert_eq!(c.session(2).observe_at(1, 4, t0).unwrap().missing, 9);
        // A stream that starts over (sequence goes back) has nothing countable missing.
        c.session(3).observe_at(2, 5_000, t0);
        assert_eq!(c.session(4).observe_at(2, 100, t0).unwrap().missing, 0);
        // Consecutive on the new session: nothing missing, still a resumption.
        c.session(5).observe_at(3, 7, t0);
        let mut six = c.session(6);
        assert_eq!(six.observe_at(3, 8, t0).unwrap().missing, 0);
        // A stream first seen on a new session is not a resumption.
        assert_eq!(six.observe_at(4, 1, t0), None);
        assert_eq!(c.resumed(), 3);
    }

    #[test]
    fn a_session_still_running_is_not_resumed_from() {
        let c = Continuity::default();
        let t0 = Instant::now();
        let mut one = c.session(1);
        one.observe_at(9, 100, t0);
        // Published only when session 1 ends.
        assert_eq!(c.session(2).observe_at(9, 200, t0), None);
        drop(one);
        assert_eq!(c.session(3).observe_at(9, 111, t0).unwrap().missing, 10);
    }

    #[test]
    fn remembers_a_bounded_number_of_streams() {
        let c = Continuity::default();
        let t0 = Instant::now();
        let mut one = c.session(1);
        for ssrc in 0..(CONTINUITY_MAX_STREAMS as u32 + 100) {
            one.observe_at(ssrc, 0, t0 + Duration::from_micros(u64::from(ssrc)));
        }
        drop(one);
        assert_eq!(c.streams.lock().unwrap().len(), CONTINUITY_MAX_STREAMS);
        // The oldest were forgotten: stream 0 on a new session is new, not resumed.
        assert_eq!(c.session(2).observe_at(0, 5, t0 + Duration::from_secs(1)), None);
    }
}
