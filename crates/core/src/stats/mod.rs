//! Link statistics: counters, drops by cause, and per-SSRC loss and
//! interarrival jitter computed as RFC 3550 appendix A does.
//!
//! [`SsrcReceiver`] is pure (the caller passes the arrival time), so its
//! arithmetic is tested without sockets or sleeps. [`StatsRecorder`] is the
//! thread-safe accumulator every backend feeds; [`LinkStats`] is the
//! serialisable snapshot it produces.
//!
//! Units: every duration in the JSON form is seconds, with the unit in the
//! field name (`rtt_seconds`, `jitter_seconds`), as on `/metrics`. The one
//! exception is `jitter`, which RFC 3550 defines in RTP timestamp units.
//!
//! Jitter needs the stream's RTP clock rate, which the SDP carries and a
//! relay does not see: only RFC 3551's static payload types have a known
//! rate ([`static_clock_rate`]); any other is configured in [`ClockRates`]
//! or reported as unknown (`null`), never computed at a guessed rate.

mod clock_rates;
mod drops;
mod link_stats;
mod recorder;
mod repair;
mod ssrc;

pub use clock_rates::{ClockRate, ClockRates, InvalidClockRate, MAX_CLOCK_RATE, static_clock_rate};
pub use drops::{DropCause, DropCounters, Drops, WarnOnce};
pub use link_stats::LinkStats;
pub use recorder::StatsRecorder;
pub use repair::RepairStats;
pub use ssrc::{SsrcReceived, SsrcReceiver, SsrcSent};
