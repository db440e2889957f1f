//! Loss repair within a latency budget, for the unreliable links of
//! sfu-relay: the middle way between passing every loss on to the viewers
//! (unreliable) and repairing everything at the cost of head-of-line
//! blocking (reliable).
//!
//! A hop between two media servers loses packets; a lost video packet is
//! a broken frame until the next keyframe. mediasoup's PipeTransport and
//! Janus's `rtp_forward` leave repair to the endpoints, whose NACKs cross
//! every hop of the path; a repair on the hop where the loss happened
//! costs that hop's RTT only. [`RepairLink`] adds that repair to any
//! unreliable [`RelayLink`](relay_core::RelayLink):
//!
//! - **Receiving end** ([`receiver`]): gaps are found per SSRC by RTP
//!   sequence number and asked for with RTCP Generic NACK (RFC 4585
//!   section 6.2.1), at once and then once per RTT, batched per datagram,
//!   for as long as a repair can still arrive within the budget. Every
//!   packet is delivered at most once, by default as soon as it arrives
//!   (order is not restored; the receiving media server's jitter buffer
//!   does that), or in order within a bounded window ([`reorder`],
//!   [`RepairConfig::reorder_window`]).
//! - **Sending end** ([`sender`]): a buffer of what was sent, bounded by the
//!   budget in time and by [`sender::MAX_KEPT`] in count, answers NACKs with
//!   the original packets; a NACK for a packet that is gone is answered
//!   with nothing and counted. Retransmissions are capped at a share of the
//!   media sent, so a peer cannot use NACKs to amplify.
//! - **On the wire** ([`wire`]): the hop's NACKs carry their own sender
//!   SSRC and are consumed by the relays; the media servers' own RTCP
//!   (NACK, PLI, REMB, TWCC) passes through both ways unchanged.
//!
//! Why the original packet and not RTX (RFC 4588): the hop is private, its
//! receiving end is the other relay, which drops duplicates; the media
//! server behind it sees each packet once, with its own sequence number and
//! SSRC, so its statistics are right without negotiating an RTX payload
//! type and SSRC with it, and an SRTP link re-sends the packet under the
//! same index (the receiver's replay window accepts it, having never seen
//! it). RTX would be needed where the receiver is a media server itself.
//!
//! ```no_run
//! # async fn demo(inner: std::sync::Arc<dyn relay_core::RelayLink>) {
//! use relay_core::{Mode, RelayLink};
//! use relay_repair::{RepairConfig, RepairLink};
//! // `inner`: an established unreliable link (rtp-udp, quic datagram);
//! // its peer wraps its end the same way.
//! let link = RepairLink::new(inner, Mode::Repair, RepairConfig::default());
//! let packet = link.recv().await;
//! println!("{:?}", link.stats().repair);
//! # }
//! ```
#![warn(missing_docs)]

mod handover;
mod hash;
mod link;
pub mod receiver;
pub mod reorder;
pub mod sender;
pub mod wire;

pub use link::{RepairConfig, RepairLink};
