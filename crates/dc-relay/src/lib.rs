//! # dc-relay: RTP over WebRTC data channels
//!
//! How pion-based SFUs and browsers relay: each RTP or RTCP packet is one
//! binary message (PPID 53, RFC 8831 section 8) on a data channel. The
//! layers, bottom up:
//!
//! - **ICE** (RFC 8445) finds a UDP path between the candidates each side
//!   listed in its SDP (host addresses from [`DcConfig::bind_addrs`],
//!   optionally server-reflexive ones from STUN) and keeps checking it:
//!   consent freshness (RFC 7675) is also how a vanished peer is noticed
//!   within [`DcConfig::liveness_timeout`].
//! - **DTLS** (RFC 6347) encrypts everything; each side pins the other's
//!   certificate fingerprint from the SDP.
//! - **SCTP** (RFC 9260, over DTLS per RFC 8261) carries messages with
//!   per-stream reliability and its own congestion and flow control. The
//!   answerer is the DTLS server (`a=setup:passive`), which in `rtc` makes
//!   its SCTP the side that accepts the offerer's INIT rather than racing
//!   one of its own.
//! - **DCEP** (RFC 8832) opens the channel in-band: the offerer sends
//!   `DATA_CHANNEL_OPEN` with the channel type, the answerer acknowledges.
//!
//! Three modes. [`Mode::Reliable`] is an
//! ordered, reliable channel: every packet, in order; `send` waits when the
//! send buffer is full, and a slow reader holds the sender back through
//! SCTP's receive window. [`Mode::Unreliable`]
//! is unordered with maxRetransmits=0: a lost packet is never resent.
//! [`Mode::Repair`] is unordered with a packet
//! lifetime (maxPacketLifeTime = [`DcConfig::max_delay`], 200 ms by
//! default; timed partial reliability, RFC 3758): SCTP retransmits a lost
//! packet only while it can still be in time and then abandons it. In both
//! unordered modes a packet that waited longer than the budget in our own
//! send queue is dropped as `expired`, and a full queue drops the oldest
//! packet and counts it. The answerer relays whatever channel the offerer
//! opens, in its mode, so plain WebRTC peers (pion, aiortc, browsers) can
//! relay into us.
//!
//! The SCTP underneath is the workspace's patched `rtc-sctp`
//! (`patches/rtc-sctp`, docs/architecture.md): among its fixes, time-based
//! loss detection and loss probes (RACK-TLP, RFC 8985), so a lost
//! retransmission, a lost tail and a path back from an outage cost a round
//! trip or two, not a backed-off retransmission timeout.
//!
//! Signaling is one exchange of W3C JSON descriptions with every candidate
//! in them (no trickle). The protocol work is done by the sans-IO `rtc`
//! crate, the core under `webrtc` 0.21; this crate drives it with its own
//! socket loop, which is what brings setup from `webrtc`'s 600 ms to about
//! 2 ms on loopback (`src/driver/mod.rs` explains the three waits it avoids).
//!
//! Not supported: TURN (`turn:` servers are refused at bind; host and
//! server-reflexive candidates only), mDNS candidates (off on both ends:
//! relays signal IP addresses), negotiated (out-of-band) channels.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dc_relay::{DcAnswerer, DcConfig, DcOfferer};
//! use relay_core::{Mode, Packet, RelayLink, build_rtp};
//!
//! let offerer = DcOfferer::bind(DcConfig::default(), Mode::Unreliable).await?;
//! let offer = offerer.offer(); // to the other server (relay-signaling does this)
//! let answerer = DcAnswerer::bind(DcConfig::default(), &offer).await?;
//! let answer = answerer.answer(); // ... and back
//! let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;
//! a.send(Packet::parse(build_rtp(96, 1, 0, 0x1234, b"media"))?).await?;
//! assert_eq!(b.recv().await?.ssrc(), 0x1234);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod backend;
mod config;
mod driver;
mod error;
mod gather;
mod link;
mod outbox;
mod setup;

pub use backend::Dc;
pub use config::{DEFAULT_MAX_PACKET_SIZE, DcConfig, MAX_MAX_DELAY, MAX_MESSAGE_SIZE};
pub use error::DcError;
pub use link::DcLink;
/// The relay-core types a user of this crate needs beside it.
pub use relay_core::{LinkStats, Mode, Packet, RelayLink, build_rtp};
pub use setup::{DcAnswerer, DcOfferer};
