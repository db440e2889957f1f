//! # rtp-udp-relay: RTP/RTCP or SRTP/SRTCP over UDP
//!
//! The way Kurento's RtpEndpoint, mediasoup's PipeTransport and Janus's
//! `rtp_forward` relay media: RTP and RTCP on one UDP socket per side
//! (RTCP-mux, RFC 5761), no handshake, no retransmission. Two modes:
//!
//! - [`Mode::Unreliable`]: plain RTP, no
//!   encryption, no authentication. It is the cheapest transport and the
//!   baseline the others are measured against. **Use it only on networks you
//!   trust**: anyone who can send from the signaled address can inject
//!   packets, and anyone on the path can read them.
//! - [`Mode::Srtp`]: SRTP and SRTCP with
//!   AEAD_AES_128_GCM (RFC 7714, module [`srtp`]), as mediasoup's
//!   PipeTransport offers. Each side generates a master key, signals it in
//!   its description ([`relay_core::SrtpParameters`]) and protects what it
//!   sends with it; the peer's key unprotects what arrives. Media and RTCP
//!   get confidentiality, integrity and replay protection (128-packet window
//!   per SSRC); packets that fail are counted in `LinkStats::unauthenticated`
//!   and dropped. The keys travel in signaling, so signaling must be HTTPS
//!   or on a trusted network. The keepalives and the goodbye below are
//!   authenticated too, with keys derived from the same master keys, so a
//!   spoofer without the keys can neither keep a dead link alive nor close
//!   a live one (an on-path attacker can still drop packets and so starve
//!   the keepalives: the link then closes after the liveness timeout).
//!
//! What this crate adds to bare sockets:
//!
//! - **Source filtering**: each side accepts packets only from the peer's
//!   address; everything else is counted as `drops.unknown_source`. Bytes
//!   that are not RTP/RTCP are counted as `drops.malformed`. The peer's
//!   address is the signaled one until a latch moves it: srtp follows the
//!   peer to wherever a packet that authenticates and is not a replay
//!   comes from (a NAT's mapping, and its rebinding); plain RTP only with
//!   [`RtpUdpConfig::latch`], once, to the first source heard.
//! - **A path check and keepalive that cannot be mistaken for media**:
//!   STUN Binding requests and responses ([`stun`]), as ICE uses for
//!   connectivity checks and RFC 7675 for consent. The link is ready when a
//!   probe's reply comes back (packets flow both ways); probes continue
//!   every keepalive interval and give the RTT; a peer silent for the
//!   liveness timeout (default 5 s) closes the link. In plain mode anything
//!   from the peer's address counts as hearing from it. In srtp mode every
//!   probe and reply carries MESSAGE-INTEGRITY-SHA256 (RFC 8489 section
//!   14.6) under a key derived from the sender's SRTP master key
//!   ([`srtp::keepalive_key`]); probes and replies without a valid one are
//!   counted in `drops.unauthenticated`, never answered, and ignored for
//!   liveness. Only media that passes SRTP authentication and an
//!   authenticated reply to a probe still outstanding (the reply echoes
//!   the probe's transaction id; each counts once) keep an srtp link alive.
//! - **A goodbye** (a STUN Binding Indication with a private attribute) so
//!   the peer learns of a clean close at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rtp_udp_relay::{Mode, Packet, RelayLink, RtpUdpAnswerer, RtpUdpConfig, RtpUdpOfferer, build_rtp};
//!
//! let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), Mode::Srtp).await?;
//! let offer = offerer.offer(); // send to the other server (relay-signaling does this)
//! let answerer = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Srtp, &offer).await?;
//! let answer = answerer.answer(); // ... and back
//! let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;
//! a.send(Packet::parse(build_rtp(96, 1, 0, 0x1234, b"media"))?).await?;
//! assert_eq!(b.recv().await?.ssrc(), 0x1234);
//! # Ok(()) }
//! ```
//!
//! `examples/pair.rs` runs the same in one process: `cargo run -p
//! rtp-udp-relay --example pair`.
#![warn(missing_docs)]

mod backend;
mod config;
mod driver;
mod error;
mod link;
pub mod liveness;
pub mod resend;
mod setup;
pub mod srtp;
pub mod stun;

pub use backend::RtpUdp;
pub use config::{DEFAULT_MAX_PACKET_SIZE, RtpUdpConfig};
pub use error::RtpUdpError;
pub use link::RtpUdpLink;
/// The relay-core types a user of this crate needs beside it.
pub use relay_core::{LinkStats, Mode, Packet, RelayLink, build_rtp};
pub use setup::{RtpUdpAnswerer, RtpUdpOfferer};
