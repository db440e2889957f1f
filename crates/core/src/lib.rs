//! # relay-core: the contract every sfu-relay transport honours
//!
//! Media servers relay RTP to each other (SFU cascading, CDN fan-out,
//! contribution links) over one of three transports: WebRTC data channels,
//! QUIC, or plain RTP over UDP. This crate is what they have in common, with
//! no I/O of its own:
//!
//! - [`Packet`]: one RTP or RTCP packet, classified as RFC 5761 section 4
//!   demultiplexes them, carried as [`bytes::Bytes`].
//! - [`RelayLink`]: one established, bidirectional link. *Ready means
//!   ready*; unreliable modes drop and count, reliable modes wait; a dead peer
//!   becomes a [`CloseReason`].
//! - [`Mode`] and [`Transport`]: what carries the link and how it delivers.
//! - [`LinkStats`] and [`StatsRecorder`]: counters, drops by cause, per-SSRC
//!   loss and interarrival jitter as RFC 3550 appendix A computes them, at
//!   the clock rates of [`ClockRates`] (a dynamic payload type's is unknown
//!   unless configured). Durations are seconds.
//! - [`PacketQueue`]: the bounded queue with drop-oldest or back-pressure
//!   that backends put between the network and the application.
//! - Session descriptions ([`OfferRequest`], [`RtpUdpDescription`],
//!   [`QuicOffer`], [`W3cDescription`], …) that signaling carries.
//! - With feature `conformance`: the suite every backend runs against
//!   itself (module `conformance` and `conformance_tests!`, behind feature `conformance`).
//!
//! ```
//! use relay_core::{Mode, Packet, StatsRecorder, Transport, build_rtp};
//! use std::time::Instant;
//!
//! let stats = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable);
//! for seq in [1u16, 2, 4] {
//!     let p = Packet::parse(build_rtp(96, seq, seq as u32 * 3000, 0x1234, b"frame")).unwrap();
//!     stats.on_received(&p, Instant::now());
//! }
//! let s = stats.snapshot();
//! assert_eq!(s.received_ssrcs[0].lost, 1); // sequence number 3 never came
//! ```
#![warn(missing_docs)]

pub mod backend;
mod description;
mod fingerprint;
mod link;
mod mode;
mod packet;
#[cfg(feature = "tls-pin")]
pub mod pin;
mod queue;
mod ssrc_table;
mod stats;
pub mod udp;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use description::{
    OfferRequest, OfferResponse, QuicAnswer, QuicOffer, RtpUdpDescription, SdpType, SrtpParameters,
    W3cDescription,
};
pub use fingerprint::{Fingerprint, InvalidFingerprint};
pub use link::{
    CloseReason, CloseSignal, DEFAULT_LIVENESS_TIMEOUT, DEFAULT_MAX_DELAY, LinkError, MIN_MAX_PACKET_SIZE,
    RelayLink,
};
pub use mode::{Mode, Transport, UnknownMode, UnknownTransport};
pub use packet::{Packet, PacketError, PacketKind, RTCP_MIN_LEN, RTP_HEADER_LEN, build_rtp, classify};
pub use queue::{Overflow, PacketQueue, Pushed};
pub use ssrc_table::{DEFAULT_SSRC_CAP, SsrcTable};
pub use stats::{
    ClockRate, ClockRates, DropCause, DropCounters, Drops, InvalidClockRate, LinkStats, MAX_CLOCK_RATE,
    RepairStats, SsrcReceived, SsrcReceiver, SsrcSent, StatsRecorder, static_clock_rate,
};
