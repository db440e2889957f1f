//! Replay protection (RFC 3711 section 3.3): the per-stream replay window
//! and the rollover counter estimate of an RTP stream.

use super::{REPLAY_WINDOW, SrtpError};

/// RFC 3711 section 3.3.2: the highest index seen and a bitmap of the
/// [`REPLAY_WINDOW`] indices below it (bit i = highest - i was received).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplayWindow {
    pub(super) highest: u64,
    seen: u128,
}

impl ReplayWindow {
    pub(super) fn new(first: u64) -> ReplayWindow {
        ReplayWindow {
            highest: first,
            seen: 1,
        }
    }

    pub(super) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= REPLAY_WINDOW || self.seen & (1u128 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Only after the packet authenticated, so forgeries cannot move it.
    pub(super) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1u128 << (self.highest - index);
        }
    }
}

/// The rollover counter and replay state of one RTP stream.
#[derive(Debug, Clone, Copy)]
pub(super) struct RtpStream {
    pub(super) window: ReplayWindow,
}

impl RtpStream {
    /// RFC 3711 section 3.3.1 (appendix A): the index whose sequence number
    /// is `seq` closest to the highest index so far.
    pub(super) fn estimate(&self, seq: u16) -> u64 {
        let highest = self.window.highest;
        let roc = highest >> 16;
        let s_l = (highest & 0xffff) as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                // Late packet from the previous cycle; there is none before 0.
                roc.checked_sub(1).unwrap_or(roc)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        (v << 16) | seq as u64
    }
}
