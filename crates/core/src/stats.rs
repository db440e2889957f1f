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

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ssrc_table::{DEFAULT_SSRC_CAP, SsrcTable};
use crate::{Mode, Packet, PacketKind, Transport};

/// RFC 3550 appendix A.1: a jump of more than this many sequence numbers is
/// a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 appendix A.1: packets this far behind are late duplicates.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Why a packet was dropped by the relay itself (not by the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Unreliable send queue was full: the oldest queued packet was dropped.
    SendQueueFull,
    /// The application did not read fast enough: the oldest received packet
    /// was dropped.
    ReceiveQueueFull,
    /// The application tried to send a packet larger than the link allows.
    TooLarge,
    /// A datagram arrived from an address other than the signaled peer, or
    /// (RoQ) carried a flow id that was not signaled.
    UnknownSource,
    /// Bytes arrived that are not RTP or RTCP (truncated, garbage, bad framing).
    Malformed,
    /// A packet failed SRTP/SRTCP authentication, or was a replay (or
    /// older than the replay window), on a link that protects media.
    Unauthenticated,
    /// An unreliable link held the packet past its latency budget
    /// ([`DEFAULT_MAX_DELAY`](crate::DEFAULT_MAX_DELAY) unless configured)
    /// before it could leave: delivered, it would only have been late.
    Expired,
}

impl DropCause {
    const COUNT: usize = 7;

    /// Every cause, in declaration order.
    pub const ALL: [DropCause; DropCause::COUNT] = [
        DropCause::SendQueueFull,
        DropCause::ReceiveQueueFull,
        DropCause::TooLarge,
        DropCause::UnknownSource,
        DropCause::Malformed,
        DropCause::Unauthenticated,
        DropCause::Expired,
    ];

    /// The cause as [`Drops`] names its field (`too_large`, …).
    pub fn name(self) -> &'static str {
        match self {
            DropCause::SendQueueFull => "send_queue_full",
            DropCause::ReceiveQueueFull => "receive_queue_full",
            DropCause::TooLarge => "too_large",
            DropCause::UnknownSource => "unknown_source",
            DropCause::Malformed => "malformed",
            DropCause::Unauthenticated => "unauthenticated",
            DropCause::Expired => "expired",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Drops by cause; see [`DropCause`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drops {
    /// See [`DropCause::SendQueueFull`].
    pub send_queue_full: u64,
    /// See [`DropCause::ReceiveQueueFull`].
    pub receive_queue_full: u64,
    /// See [`DropCause::TooLarge`].
    pub too_large: u64,
    /// See [`DropCause::UnknownSource`].
    pub unknown_source: u64,
    /// See [`DropCause::Malformed`].
    pub malformed: u64,
    /// See [`DropCause::Unauthenticated`] (0 on links that do not protect
    /// media).
    #[serde(default)]
    pub unauthenticated: u64,
    /// See [`DropCause::Expired`] (0 on reliable links and on links with no
    /// send queue to expire).
    #[serde(default)]
    pub expired: u64,
}

impl Drops {
    /// The count for one cause.
    pub fn get(&self, cause: DropCause) -> u64 {
        match cause {
            DropCause::SendQueueFull => self.send_queue_full,
            DropCause::ReceiveQueueFull => self.receive_queue_full,
            DropCause::TooLarge => self.too_large,
            DropCause::UnknownSource => self.unknown_source,
            DropCause::Malformed => self.malformed,
            DropCause::Unauthenticated => self.unauthenticated,
            DropCause::Expired => self.expired,
        }
    }

    fn get_mut(&mut self, cause: DropCause) -> &mut u64 {
        match cause {
            DropCause::SendQueueFull => &mut self.send_queue_full,
            DropCause::ReceiveQueueFull => &mut self.receive_queue_full,
            DropCause::TooLarge => &mut self.too_large,
            DropCause::UnknownSource => &mut self.unknown_source,
            DropCause::Malformed => &mut self.malformed,
            DropCause::Unauthenticated => &mut self.unauthenticated,
            DropCause::Expired => &mut self.expired,
        }
    }

    /// Sum over every cause.
    pub fn total(&self) -> u64 {
        DropCause::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

/// Cause by cause: the drops of both ends of a link, or of several links.
impl std::ops::Add for Drops {
    type Output = Drops;

    fn add(mut self, other: Drops) -> Drops {
        for cause in DropCause::ALL {
            *self.get_mut(cause) += other.get(cause);
        }
        self
    }
}

/// A flag for logging something once (the first stranger, the first forged
/// packet) from a path a flood can hit: after the first time it costs one
/// relaxed load, not a read-modify-write on a shared cache line.
#[derive(Debug, Default)]
pub struct WarnOnce(std::sync::atomic::AtomicBool);

impl WarnOnce {
    /// `true` the first time only.
    pub fn first(&self) -> bool {
        !self.0.load(Ordering::Relaxed) && !self.0.swap(true, Ordering::Relaxed)
    }
}

/// Drops by cause, counted from several threads without a lock: what a
/// [`StatsRecorder`] keeps, and what a socket layer under a transport
/// stack counts before the link (and its recorder) exists.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropCause::COUNT]);

impl DropCounters {
    /// Counts `n` packets dropped for `cause`.
    pub fn add(&self, cause: DropCause, n: u64) {
        self.0[cause.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Count for one cause.
    pub fn get(&self, cause: DropCause) -> u64 {
        self.0[cause.index()].load(Ordering::Relaxed)
    }

    /// Adds every count to `drops` (a link's snapshot).
    pub fn add_to(&self, drops: &mut Drops) {
        for cause in DropCause::ALL {
            *drops.get_mut(cause) += self.get(cause);
        }
    }
}

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
    /// payload type's ([`static_clock_rate`]) or a configured one
    /// ([`ClockRates`]); `None` when neither knows it.
    pub clock_rate: Option<u32>,
    /// `jitter` in seconds; `None` when the clock rate is unknown.
    pub jitter_seconds: Option<f64>,
}

/// The RTP clock rate of an RFC 3551 static payload type (tables 4 and 5),
/// or `None` for a reserved, unassigned or dynamic (96–127) one, whose rate
/// only the SDP knows (Opus on 111 runs at 48 kHz, VP8 on 96 at 90 kHz).
///
/// ```
/// use relay_core::static_clock_rate;
/// assert_eq!(static_clock_rate(0), Some(8_000)); // PCMU
/// assert_eq!(static_clock_rate(34), Some(90_000)); // H263
/// assert_eq!(static_clock_rate(111), None); // dynamic: Opus, or anything
/// ```
pub fn static_clock_rate(payload_type: u8) -> Option<u32> {
    match payload_type {
        // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722 (whose RTP clock is
        // 8 kHz although it samples at 16, RFC 3551 section 4.5.2), QCELP,
        // CN, G728, G729.
        0 | 3..=5 | 7..=9 | 12 | 13 | 15 | 18 => Some(8_000),
        6 => Some(16_000),       // DVI4/16000
        10 | 11 => Some(44_100), // L16 stereo, mono
        14 => Some(90_000),      // MPA
        16 => Some(11_025),      // DVI4/11025
        17 => Some(22_050),      // DVI4/22050
        // CelB, JPEG, nv, H261, MPV, MP2T, H263.
        25 | 26 | 28 | 31..=34 => Some(90_000),
        _ => None,
    }
}

/// Largest clock rate [`ClockRate`] accepts. RTP clocks in use top out at
/// 90 kHz (video) and 192 kHz (audio); 10 MHz leaves room and still
/// catches a rate typed with extra zeros.
pub const MAX_CLOCK_RATE: u32 = 10_000_000;

/// One payload type's RTP clock rate, as the SDP's `a=rtpmap` gives it
/// (`a=rtpmap:111 opus/48000/2` is `111=48000`). Parsed from `PT=HZ`.
///
/// ```
/// use relay_core::ClockRate;
/// let opus: ClockRate = "111=48000".parse()?;
/// assert_eq!((opus.payload_type(), opus.hz()), (111, 48_000));
/// assert!("111=0".parse::<ClockRate>().is_err());
/// assert!("128=90000".parse::<ClockRate>().is_err());
/// # Ok::<(), relay_core::InvalidClockRate>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRate {
    payload_type: u8,
    hz: u32,
}

impl ClockRate {
    /// `hz` for `payload_type`: the type must be 0..=127 (7 bits in the
    /// RTP header), the rate 1..=[`MAX_CLOCK_RATE`].
    pub fn new(payload_type: u8, hz: u32) -> Result<ClockRate, InvalidClockRate> {
        if payload_type > 127 {
            return Err(InvalidClockRate::PayloadType(payload_type.to_string()));
        }
        if !(1..=MAX_CLOCK_RATE).contains(&hz) {
            return Err(InvalidClockRate::Rate {
                payload_type,
                hz: hz.to_string(),
            });
        }
        Ok(ClockRate { payload_type, hz })
    }

    /// The payload type.
    pub fn payload_type(self) -> u8 {
        self.payload_type
    }

    /// Its clock rate in Hz.
    pub fn hz(self) -> u32 {
        self.hz
    }
}

impl FromStr for ClockRate {
    type Err = InvalidClockRate;

    fn from_str(s: &str) -> Result<ClockRate, InvalidClockRate> {
        let Some((pt, hz)) = s.split_once('=') else {
            return Err(InvalidClockRate::Syntax(s.to_owned()));
        };
        let (pt, hz) = (pt.trim(), hz.trim());
        let payload_type = pt
            .parse::<u8>()
            .ok()
            .filter(|pt| *pt <= 127)
            .ok_or_else(|| InvalidClockRate::PayloadType(pt.to_owned()))?;
        let rate = |hz: &str| InvalidClockRate::Rate {
            payload_type,
            hz: hz.to_owned(),
        };
        let hz = hz.parse::<u32>().map_err(|_| rate(hz))?;
        ClockRate::new(payload_type, hz)
    }
}

impl fmt::Display for ClockRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.payload_type, self.hz)
    }
}

/// Why a `PT=HZ` clock rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClockRate {
    /// Not of the form `PT=HZ`.
    #[error("clock rate {0:?} is not PT=HZ (for example 111=48000 for Opus)")]
    Syntax(String),
    /// The payload type is not a number from 0 to 127.
    #[error("payload type {0:?} is not an RTP payload type (0 to 127)")]
    PayloadType(String),
    /// The rate is not a whole number of Hz from 1 to [`MAX_CLOCK_RATE`].
    #[error(
        "clock rate {hz:?} for payload type {payload_type} is not a whole number of Hz from 1 to {MAX_CLOCK_RATE} \
         (as in the SDP's a=rtpmap, e.g. 48000 for Opus, 90000 for video)"
    )]
    Rate {
        /// The payload type it was for.
        payload_type: u8,
        /// The rate as given.
        hz: String,
    },
}

/// The RTP clock rate of each payload type on a link, for jitter: the ones
/// configured (from the SDP the relay does not see), then RFC 3551's static
/// ones. Empty by default.
///
/// ```
/// use relay_core::{ClockRate, ClockRates};
/// let rates: ClockRates = ["111=48000", "96=90000"]
///     .iter()
///     .map(|e| e.parse::<ClockRate>())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(rates.get(111), Some(48_000)); // configured
/// assert_eq!(rates.get(0), Some(8_000)); // static PCMU
/// assert_eq!(rates.get(100), None); // dynamic, not configured: unknown
/// # Ok::<(), relay_core::InvalidClockRate>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockRates(BTreeMap<u8, u32>);

impl ClockRates {
    /// No configured rate: only static payload types are known.
    pub fn new() -> ClockRates {
        ClockRates::default()
    }

    /// Adds `rate` (replacing an earlier one for its payload type).
    pub fn with(mut self, rate: ClockRate) -> ClockRates {
        self.insert(rate);
        self
    }

    /// Adds `rate`, returning the rate it replaced for its payload type.
    pub fn insert(&mut self, rate: ClockRate) -> Option<u32> {
        self.0.insert(rate.payload_type, rate.hz)
    }

    /// The clock rate of `payload_type`: configured, else static, else
    /// `None`.
    pub fn get(&self, payload_type: u8) -> Option<u32> {
        self.0
            .get(&payload_type)
            .copied()
            .or_else(|| static_clock_rate(payload_type))
    }

    /// The configured rates, by payload type.
    pub fn iter(&self) -> impl Iterator<Item = ClockRate> + '_ {
        self.0
            .iter()
            .map(|(&payload_type, &hz)| ClockRate { payload_type, hz })
    }

    /// Whether no rate is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<ClockRate> for ClockRates {
    /// Later entries for a payload type replace earlier ones.
    fn from_iter<I: IntoIterator<Item = ClockRate>>(iter: I) -> ClockRates {
        let mut rates = ClockRates::new();
        rates.extend(iter);
        rates
    }
}

impl Extend<ClockRate> for ClockRates {
    fn extend<I: IntoIterator<Item = ClockRate>>(&mut self, iter: I) {
        for rate in iter {
            self.insert(rate);
        }
    }
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

/// A point-in-time view of one link, as `GET /v1/sessions/{id}/stats`
/// returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    /// The transport carrying the link.
    pub transport: Transport,
    /// Its delivery mode.
    pub mode: Mode,
    /// Packets handed to the transport (RTP and RTCP). For every packet
    /// the application offers, exactly one of `packets_sent`,
    /// `drops.send_queue_full`, `drops.too_large`, `drops.expired` (past
    /// the latency budget) or (srtp) `drops.unauthenticated` counts it.
    pub packets_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Packets delivered by the transport (before the receive queue).
    pub packets_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// RTCP packets among `packets_sent`.
    pub rtcp_sent: u64,
    /// RTCP packets among `packets_received`.
    pub rtcp_received: u64,
    /// Packets the relay dropped, by cause.
    pub drops: Drops,
    /// Round-trip time, where the transport measures one (JSON
    /// `rtt_seconds`).
    #[serde(rename = "rtt_seconds", with = "opt_seconds")]
    pub rtt: Option<Duration>,
    /// Time from starting to establish the link to it being ready (JSON
    /// `setup_time_seconds`).
    #[serde(rename = "setup_time_seconds", with = "opt_seconds")]
    pub setup_time: Option<Duration>,
    /// Time since the link was created (JSON `uptime_seconds`).
    #[serde(rename = "uptime_seconds", with = "opt_seconds")]
    pub uptime: Option<Duration>,
    /// Per-SSRC send counters, sorted by SSRC.
    pub sent_ssrcs: Vec<SsrcSent>,
    /// Per-SSRC reception statistics, sorted by SSRC.
    pub received_ssrcs: Vec<SsrcReceived>,
    /// SSRCs forgotten (both directions) because more than the cap
    /// ([`DEFAULT_SSRC_CAP`](crate::DEFAULT_SSRC_CAP) per direction) were
    /// seen: a sender cycling SSRCs cannot grow a link's state.
    #[serde(default)]
    pub ssrcs_evicted: u64,
    /// Times the peer's address changed under the link: a latch to a
    /// NAT's mapping, a rebinding, a QUIC path migration.
    #[serde(default)]
    pub peer_address_changes: u64,
    /// The hop's own loss repair (NACK and retransmission within the
    /// latency budget), on links that repair; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairStats>,
}

/// What a repairing link did about loss on its hop: both ends of the
/// repair loop, as seen from one side (it asks for what it missed, and
/// answers what the peer missed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepairStats {
    /// NACK datagrams this side sent (each asks for one or more packets).
    pub nacks_sent: u64,
    /// Sequence numbers those NACKs asked for.
    pub packets_asked: u64,
    /// Missing packets that arrived after being asked for, within the budget.
    pub repaired: u64,
    /// Repairs (or late originals) that arrived after their packet was
    /// given up: dropped, not delivered late.
    pub repaired_too_late: u64,
    /// Missing packets given up: a repair could no longer arrive within
    /// the budget.
    pub unrepairable: u64,
    /// Packets that arrived twice (an original after its repair, or a
    /// repair after the original): the second copy was dropped.
    pub duplicates: u64,
    /// NACK datagrams the peer sent.
    pub nacks_received: u64,
    /// Sequence numbers the peer asked for.
    pub packets_requested: u64,
    /// Packets this side sent again.
    pub retransmissions: u64,
    /// Their bytes.
    pub retransmitted_bytes: u64,
    /// Asked for but no longer kept (older than the budget, or never
    /// sent): answered with nothing.
    pub requested_gone: u64,
    /// Asked for but refused by the amplification cap (retransmissions
    /// are limited to a share of the media sent).
    pub retransmissions_capped: u64,
}

/// Field by field: both sides of a hop, or several links.
impl std::ops::Add for RepairStats {
    type Output = RepairStats;

    fn add(self, o: RepairStats) -> RepairStats {
        RepairStats {
            nacks_sent: self.nacks_sent + o.nacks_sent,
            packets_asked: self.packets_asked + o.packets_asked,
            repaired: self.repaired + o.repaired,
            repaired_too_late: self.repaired_too_late + o.repaired_too_late,
            unrepairable: self.unrepairable + o.unrepairable,
            duplicates: self.duplicates + o.duplicates,
            nacks_received: self.nacks_received + o.nacks_received,
            packets_requested: self.packets_requested + o.packets_requested,
            retransmissions: self.retransmissions + o.retransmissions,
            retransmitted_bytes: self.retransmitted_bytes + o.retransmitted_bytes,
            requested_gone: self.requested_gone + o.requested_gone,
            retransmissions_capped: self.retransmissions_capped + o.retransmissions_capped,
        }
    }
}

/// `Option<Duration>` as seconds (`f64`) or `null`.
mod opt_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let seconds = Option::<f64>::deserialize(d)?;
        Ok(seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }
}

/// Thread-safe accumulator behind [`LinkStats`]. Backends call `on_sent` /
/// `on_received` / `on_drop` from their I/O paths; counters are atomics and
/// the per-SSRC tables take one uncontended lock per packet.
#[derive(Debug)]
pub struct StatsRecorder {
    transport: Transport,
    mode: Mode,
    created: Instant,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    rtcp_sent: AtomicU64,
    rtcp_received: AtomicU64,
    drops: DropCounters,
    /// Microseconds; `u64::MAX` when unknown.
    rtt_us: AtomicU64,
    setup_us: AtomicU64,
    sent: Mutex<SsrcTable<SsrcSent>>,
    received: Mutex<SsrcTable<SsrcReceiver>>,
    clock_rates: ClockRates,
    peer_changes: AtomicU64,
}

impl StatsRecorder {
    /// A recorder for a link created now.
    pub fn new(transport: Transport, mode: Mode) -> StatsRecorder {
        StatsRecorder {
            transport,
            mode,
            created: Instant::now(),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            rtcp_sent: AtomicU64::new(0),
            rtcp_received: AtomicU64::new(0),
            drops: Default::default(),
            rtt_us: AtomicU64::new(u64::MAX),
            setup_us: AtomicU64::new(u64::MAX),
            sent: Mutex::new(SsrcTable::new(DEFAULT_SSRC_CAP)),
            received: Mutex::new(SsrcTable::new(DEFAULT_SSRC_CAP)),
            clock_rates: ClockRates::new(),
            peer_changes: AtomicU64::new(0),
        }
    }

    /// Keeps at most `cap` SSRCs per direction (default
    /// [`DEFAULT_SSRC_CAP`]); past it the least recently seen is
    /// forgotten and counted in [`LinkStats::ssrcs_evicted`].
    pub fn with_ssrc_cap(mut self, cap: usize) -> StatsRecorder {
        self.sent = Mutex::new(SsrcTable::new(cap));
        self.received = Mutex::new(SsrcTable::new(cap));
        self
    }

    /// Computes jitter with `rates` for the payload types they configure
    /// (static payload types are known without). An SSRC takes the rate of
    /// its first packet's payload type; one whose rate is unknown reports
    /// loss but no jitter.
    pub fn with_clock_rates(mut self, rates: ClockRates) -> StatsRecorder {
        self.clock_rates = rates;
        self
    }

    /// Accounts a packet handed to the transport.
    pub fn on_sent(&self, packet: &Packet) {
        self.on_sent_sized(packet, packet.len());
    }

    /// Accounts a packet of `len` bytes handed to the transport, of which
    /// `packet` is the header (a retransmission found by number: the RTP
    /// header names it, the link kept its bytes).
    pub fn on_sent_sized(&self, packet: &Packet, len: usize) {
        let len = len as u64;
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(len, Ordering::Relaxed);
        match packet.kind() {
            PacketKind::Rtcp => {
                self.rtcp_sent.fetch_add(1, Ordering::Relaxed);
            }
            PacketKind::Rtp => {
                let ssrc = packet.ssrc();
                let mut sent = lock(&self.sent);
                let e = sent.entry(ssrc, || SsrcSent {
                    ssrc,
                    ..Default::default()
                });
                e.packets += 1;
                e.bytes += len;
            }
        }
    }

    /// Accounts a packet the transport delivered at `arrival`.
    pub fn on_received(&self, packet: &Packet, arrival: Instant) {
        let len = packet.len();
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        match (
            packet.sequence_number(),
            packet.timestamp(),
            packet.payload_type(),
        ) {
            (Some(seq), Some(ts), Some(pt)) => {
                let clock = self.clock_rates.get(pt);
                let mut received = lock(&self.received);
                received
                    .entry(packet.ssrc(), || SsrcReceiver::new(seq, clock, self.created))
                    .on_packet(seq, ts, len, arrival);
            }
            _ => {
                self.rtcp_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one change of the peer's address (see
    /// [`LinkStats::peer_address_changes`]).
    pub fn on_peer_address_change(&self) {
        self.peer_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one packet dropped for `cause`.
    pub fn on_drop(&self, cause: DropCause) {
        self.drops.add(cause, 1);
    }

    /// Counts `n` packets dropped for `cause`.
    pub fn on_drops(&self, cause: DropCause, n: u64) {
        self.drops.add(cause, n);
    }

    /// Records the latest round-trip time.
    pub fn set_rtt(&self, rtt: Duration) {
        self.rtt_us.store(
            rtt.as_micros().min(u64::MAX as u128 - 1) as u64,
            Ordering::Relaxed,
        );
    }

    /// Records how long establishing the link took.
    pub fn set_setup_time(&self, setup: Duration) {
        self.setup_us.store(
            setup.as_micros().min(u64::MAX as u128 - 1) as u64,
            Ordering::Relaxed,
        );
    }

    /// Count of drops for one cause.
    pub fn drops(&self, cause: DropCause) -> u64 {
        self.drops.get(cause)
    }

    /// A consistent-enough snapshot (each counter is read once).
    pub fn snapshot(&self) -> LinkStats {
        let us = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(Duration::from_micros(v)),
        };
        let (mut sent_ssrcs, sent_evicted) = {
            let sent = lock(&self.sent);
            let all: Vec<SsrcSent> = sent.iter().map(|(_, s)| *s).collect();
            (all, sent.evicted())
        };
        sent_ssrcs.sort_by_key(|s| s.ssrc);
        let (mut received_ssrcs, received_evicted) = {
            let received = lock(&self.received);
            let all: Vec<SsrcReceived> = received.iter().map(|(ssrc, r)| r.snapshot(ssrc)).collect();
            (all, received.evicted())
        };
        received_ssrcs.sort_by_key(|s| s.ssrc);
        let mut drops = Drops::default();
        self.drops.add_to(&mut drops);
        LinkStats {
            transport: self.transport,
            mode: self.mode,
            packets_sent: self.packets_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            rtcp_sent: self.rtcp_sent.load(Ordering::Relaxed),
            rtcp_received: self.rtcp_received.load(Ordering::Relaxed),
            drops,
            rtt: us(&self.rtt_us),
            setup_time: us(&self.setup_us),
            uptime: Some(self.created.elapsed()),
            sent_ssrcs,
            received_ssrcs,
            ssrcs_evicted: sent_evicted + received_evicted,
            peer_address_changes: self.peer_changes.load(Ordering::Relaxed),
            repair: None,
        }
    }
}

/// Stats locks guard plain counters: a panic elsewhere cannot leave them
/// inconsistent, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_rtp;

    fn rx(seqs: &[u16]) -> SsrcReceived {
        let t0 = Instant::now();
        let mut r = SsrcReceiver::new(seqs[0], Some(90_000), t0);
        for &s in seqs {
            r.on_packet(s, 0, 100, t0);
        }
        r.snapshot(1)
    }

    #[test]
    fn drops_add_cause_by_cause_and_old_json_reads_expired_as_zero() {
        let counters = DropCounters::default();
        for (n, cause) in DropCause::ALL.into_iter().enumerate() {
            counters.add(cause, n as u64 + 1);
        }
        let mut one = Drops::default();
        counters.add_to(&mut one);
        let two = one + one;
        for (n, cause) in DropCause::ALL.into_iter().enumerate() {
            assert_eq!(two.get(cause), 2 * (n as u64 + 1), "{}", cause.name());
        }
        assert_eq!(two.expired, 14);
        let before_expired =
            r#"{"send_queue_full":1,"receive_queue_full":0,"too_large":0,"unknown_source":0,"malformed":0}"#;
        let old: Drops = serde_json::from_str(before_expired).unwrap();
        assert_eq!((old.send_queue_full, old.expired, old.total()), (1, 0, 1));
    }

    #[test]
    fn a_sender_cycling_ssrcs_cannot_grow_a_links_state() {
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).with_ssrc_cap(100);
        let t0 = Instant::now();
        for ssrc in 0..10_000u32 {
            let p = Packet::parse(build_rtp(96, 1, 0, ssrc, b"x")).unwrap();
            rec.on_received(&p, t0);
            rec.on_sent(&p);
        }
        let s = rec.snapshot();
        assert_eq!((s.received_ssrcs.len(), s.sent_ssrcs.len()), (100, 100));
        assert_eq!(s.ssrcs_evicted, 2 * (10_000 - 100));
        assert_eq!(s.packets_received, 10_000, "every packet is still counted");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"ssrcs_evicted\":19800"), "{json}");
    }

    #[test]
    fn once_is_true_only_the_first_time() {
        let once = WarnOnce::default();
        assert!(once.first());
        assert!(!once.first());
        assert!(!once.first());
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

    #[test]
    fn recorder_counts_rtp_rtcp_and_drops() {
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable);
        let p = Packet::parse(build_rtp(96, 1, 0, 7, &[0; 88])).unwrap();
        let sr = Packet::parse(bytes::Bytes::from_static(&[0x80, 200, 0, 1, 0, 0, 0, 7])).unwrap();
        rec.on_sent(&p);
        rec.on_sent(&sr);
        rec.on_received(&p, Instant::now());
        rec.on_received(&sr, Instant::now());
        rec.on_drop(DropCause::Malformed);
        rec.on_drops(DropCause::Unauthenticated, 3);
        rec.set_rtt(Duration::from_micros(1500));
        let s = rec.snapshot();
        assert_eq!((s.packets_sent, s.bytes_sent, s.rtcp_sent), (2, 108, 1));
        assert_eq!((s.packets_received, s.rtcp_received), (2, 1));
        assert_eq!(
            s.sent_ssrcs,
            vec![SsrcSent {
                ssrc: 7,
                packets: 1,
                bytes: 100
            }]
        );
        assert_eq!(s.received_ssrcs.len(), 1);
        assert_eq!(s.drops.malformed, 1);
        assert_eq!(s.drops.unauthenticated, 3);
        assert_eq!(s.drops.total(), 4);
        assert_eq!(s.rtt, Some(Duration::from_micros(1500)));
        let mut json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rtt_seconds"], 0.0015);
        assert!(json["setup_time_seconds"].is_null());
        assert!(json["uptime_seconds"].as_f64().unwrap() < 60.0);
        // PT 96 is dynamic and not configured: no clock rate, no jitter.
        let ssrc = &json["received_ssrcs"][0];
        assert_eq!(ssrc["expected"], 1);
        for field in ["clock_rate", "jitter", "jitter_seconds"] {
            assert!(ssrc[field].is_null(), "{field}: {ssrc}");
        }
        assert_eq!(json["drops"]["unauthenticated"], 3);
        // Stats from a peer that predates the field still parse.
        json["drops"].as_object_mut().unwrap().remove("unauthenticated");
        assert_eq!(
            serde_json::from_value::<LinkStats>(json.clone())
                .unwrap()
                .drops
                .unauthenticated,
            0
        );
        assert_eq!(json["transport"], "rtp-udp");
        let back: LinkStats = serde_json::from_value(json).unwrap();
        assert_eq!(back.packets_sent, 2);
        assert_eq!(back.rtt, Some(Duration::from_micros(1500)));
    }

    /// `count` packets of one stream, sent every `period` with timestamps
    /// `ts_step` apart, arriving `late` behind schedule on every other
    /// packet; returns the stream's stats from a recorder with `rates`.
    fn paced(pt: u8, rates: ClockRates, ts_step: u32, late: Duration) -> SsrcReceived {
        const PERIOD: Duration = Duration::from_millis(20);
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).with_clock_rates(rates);
        let t0 = Instant::now();
        for i in 0..200u16 {
            let p = Packet::parse(build_rtp(pt, i, u32::from(i) * ts_step, 5, &[0; 40])).unwrap();
            let arrival = t0 + PERIOD * u32::from(i) + if i % 2 == 1 { late } else { Duration::ZERO };
            rec.on_received(&p, arrival);
        }
        rec.snapshot().received_ssrcs[0]
    }

    #[test]
    fn opus_at_its_configured_48_khz_has_the_jitter_of_its_arrivals() {
        // 20 ms frames of 48 kHz Opus are 960 timestamp units apart.
        let opus = ClockRates::new().with("111=48000".parse().unwrap());
        let on_time = paced(111, opus.clone(), 960, Duration::ZERO);
        assert_eq!(on_time.clock_rate, Some(48_000));
        assert!(on_time.jitter_seconds.unwrap() < 50e-6, "{on_time:?}");
        // Every other packet 4 ms late: |D| is 4 ms for every pair, so
        // jitter converges to 4 ms (192 units at 48 kHz).
        let late = paced(111, opus, 960, Duration::from_millis(4));
        let seconds = late.jitter_seconds.unwrap();
        assert!((seconds - 0.004).abs() < 0.000_1, "{late:?}");
        assert!((late.jitter.unwrap() - 192.0).abs() < 5.0, "{late:?}");
    }

    #[test]
    fn a_dynamic_payload_type_without_a_configured_rate_has_no_jitter() {
        let s = paced(111, ClockRates::new(), 960, Duration::from_millis(4));
        assert_eq!((s.clock_rate, s.jitter, s.jitter_seconds), (None, None, None));
        // Loss does not need the clock.
        assert_eq!((s.packets, s.expected, s.lost), (200, 200, 0));
        // Another type's rate does not apply to it.
        let other = ClockRates::new().with("96=90000".parse().unwrap());
        assert_eq!(paced(111, other, 960, Duration::ZERO).jitter_seconds, None);
    }

    #[test]
    fn static_pcmu_is_8_khz_without_configuration() {
        // 20 ms of PCMU is 160 units at 8 kHz.
        let s = paced(0, ClockRates::new(), 160, Duration::from_millis(4));
        assert_eq!(s.clock_rate, Some(8_000));
        assert!((s.jitter_seconds.unwrap() - 0.004).abs() < 0.000_1, "{s:?}");
        assert!((s.jitter.unwrap() - 32.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn static_payload_types_are_rfc_3551s() {
        let known: Vec<(u8, u32)> = (0..=127u8)
            .filter_map(|pt| static_clock_rate(pt).map(|hz| (pt, hz)))
            .collect();
        let mut want = vec![(6, 16_000), (10, 44_100), (11, 44_100), (14, 90_000)];
        want.extend([0, 3, 4, 5, 7, 8, 9, 12, 13, 15, 18].map(|pt| (pt, 8_000)));
        want.extend([(16, 11_025), (17, 22_050)]);
        want.extend([25, 26, 28, 31, 32, 33, 34].map(|pt| (pt, 90_000)));
        want.sort();
        assert_eq!(known, want);
    }

    #[test]
    fn a_configured_rate_overrides_a_static_one() {
        let rates = ClockRates::new().with(ClockRate::new(0, 16_000).unwrap());
        assert_eq!(rates.get(0), Some(16_000));
        assert_eq!(rates.get(8), Some(8_000));
    }

    #[test]
    fn clock_rate_entries_parse_or_say_what_is_wrong() {
        let ok: ClockRate = " 111 = 48000 ".parse().unwrap();
        assert_eq!((ok.payload_type(), ok.hz()), (111, 48_000));
        assert_eq!(ok.to_string(), "111=48000");
        assert_eq!("127=10000000".parse::<ClockRate>().unwrap().hz(), MAX_CLOCK_RATE);
        for (entry, want) in [
            ("111", InvalidClockRate::Syntax("111".into())),
            ("opus/48000", InvalidClockRate::Syntax("opus/48000".into())),
            ("128=90000", InvalidClockRate::PayloadType("128".into())),
            ("-1=90000", InvalidClockRate::PayloadType("-1".into())),
            ("=90000", InvalidClockRate::PayloadType("".into())),
            ("opus=48000", InvalidClockRate::PayloadType("opus".into())),
        ] {
            assert_eq!(entry.parse::<ClockRate>(), Err(want), "{entry}");
        }
        for hz in ["0", "-8000", "48k", "", "10000001", "99999999999"] {
            let entry = format!("111={hz}");
            let err = entry.parse::<ClockRate>().unwrap_err();
            assert_eq!(
                err,
                InvalidClockRate::Rate {
                    payload_type: 111,
                    hz: hz.into()
                },
                "{entry}"
            );
            assert!(err.to_string().contains("from 1 to 10000000"), "{err}");
        }
        assert!(ClockRate::new(200, 8_000).is_err());
        assert!(ClockRate::new(0, 0).is_err());
    }

    #[test]
    fn later_entries_for_a_payload_type_win() {
        let rates: ClockRates = ["96=90000", "111=48000", "96=48000"]
            .iter()
            .map(|e| e.parse::<ClockRate>().unwrap())
            .collect();
        assert_eq!(
            rates.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["96=48000", "111=48000"]
        );
    }
}
