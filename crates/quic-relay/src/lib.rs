//! # quic-relay: RTP over QUIC (RoQ) between media servers
//!
//! RoQ (draft-ietf-avtcore-rtp-over-quic) carries RTP and RTCP inside a
//! QUIC connection instead of bare UDP. QUIC brings TLS 1.3 encryption and
//! authentication, congestion control, and two ways to move a packet:
//!
//! - **DATAGRAM frames** (RFC 9221): unreliable and unordered like UDP, but
//!   encrypted and congestion controlled. One RTP packet per DATAGRAM.
//!   [`Mode::Datagram`] here.
//! - **Streams** (RFC 9000 section 2): reliable and ordered byte streams.
//!   RoQ uses unidirectional ones and prefixes each packet with its length.
//!   [`Mode::Stream`] here, one long-lived stream
//!   per direction so packets stay in order.
//!
//! Every DATAGRAM and every stream starts with a *flow identifier*, a QUIC
//! varint that replaces the port number of plain RTP: many RTP sessions can
//! share one connection (RoQ section 5.1). The connection is negotiated with
//! ALPN `roq` (section 4); errors close it with RoQ codes such as
//! `ROQ_PACKET_ERROR` (section 7). [`roq`] holds the framing, pure and
//! tested without sockets.
//!
//! Live media is useless late, so datagram mode has a *latency budget*
//! ([`QuicConfig::max_delay`], 200 ms by default): a packet that waited
//! longer than that to leave is dropped and counted as
//! [`DropCause::Expired`](relay_core::DropCause::Expired) rather than sent
//! late, after a congested or dead path for instance. And because a relay's
//! sender is application-limited, QUIC's congestion window never grows past
//! its initial 12 KB and a keyframe burst would wait round trips for it; a
//! window floor ([`QuicConfig::min_window`], which says what that costs in
//! fairness) lets it leave at once. Both sides also ask each other for
//! prompt ACKs (the ACK-frequency extension quinn implements), so a lost
//! ACK costs milliseconds, not a probe timeout.
//!
//! There is no certificate authority between two media servers. As DTLS-SRTP
//! does with `a=fingerprint`, each side makes a self-signed certificate
//! (rcgen) and signals its SHA-256 fingerprint: the offer carries the
//! offerer's, the answer the answerer's address, ALPN and fingerprint. Each
//! side accepts exactly the signaled certificate (mutual TLS with pinning).
//!
//! ```
//! use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
//! use relay_core::{Mode, Packet, RelayLink, build_rtp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let offerer = QuicOfferer::bind(QuicConfig::default(), Mode::Datagram).await?;
//! let answerer = QuicAnswerer::bind(QuicConfig::default(), Mode::Datagram, &offerer.offer()).await?;
//! let answer = answerer.answer(); // normally carried back by signaling
//! let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
//! let (a, b) = (a?, b?);
//! a.send(Packet::parse(build_rtp(96, 1, 0, 0x1234, b"media"))?).await?;
//! assert_eq!(b.recv().await?.ssrc(), 0x1234);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod backend;
mod budget;
mod config;
mod congestion;
mod error;
mod identity;
mod link;
pub mod roq;
mod setup;
mod socket;

#[cfg(test)]
mod raw_peer_tests;

pub use backend::Quic;
pub use config::{DEFAULT_MIN_WINDOW, MAX_STREAM_PACKET, QuicConfig};
pub use error::QuicError;
pub use identity::Fingerprint;
pub use link::QuicLink;
/// The relay-core types a user of this crate needs beside it.
pub use relay_core::{LinkStats, Mode, Packet, RelayLink, build_rtp};
pub use setup::{QuicAnswerer, QuicOfferer};
