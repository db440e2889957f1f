//! The local → link direction: one task per local socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use relay_core::{LinkError, Packet, PacketKind, RTP_HEADER_LEN};

use super::{PipeCounters, Shared};

/// Which of a stream's sockets a task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Rtp,
    Rtcp,
}

/// Most SSRCs a local → link task remembers having seen before it starts
/// over (and asks the shared table again).
const SEEN_CACHE: usize = 256;

/// The local → link direction of one socket: runs until the pipe is dropped.
pub(super) async fn local_to_link(shared: Arc<Shared>, end_index: usize, port: Port) {
    let mut route_changes = shared.route.subscribe();
    let end = &shared.ends[end_index];
    let counters = &*shared.counters;
    let (socket, dest) = match port {
        Port::Rtp => (end.rtp.clone(), &end.rtp_dest),
        Port::Rtcp => (
            end.rtcp.clone().expect("an RTCP task has an RTCP socket"),
            &end.rtcp_dest,
        ),
    };
    // The answering side sends to fixed addresses and takes packets only
    // from their IPs; the offering side takes them from anyone and latches.
    let allowed_ip = dest.fixed().map(|a| a.ip());
    let latches = allowed_ip.is_none();
    // RTCP for this stream goes where RTP comes from when it has no RTCP port.
    let rtcp_follows = port == Port::Rtcp || end.rtcp.is_none();
    let mut buf = vec![0u8; 65_536];
    // Per-packet state kept here, so the shared copies (the watch channel's
    // lock, the destination and source tables) are touched only when they change.
    let mut route = route_changes.borrow_and_update().clone();
    let mut sender_seen: Option<SocketAddr> = None;
    let mut seen: HashSet<u32> = HashSet::new();
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from a consumer not yet listening
                // surfaces here on Linux; keep going.
                tracing::debug!(error = %e, "local receive error");
                continue;
            }
        };
        if allowed_ip.is_some_and(|ip| ip != from.ip()) {
            counters.count(|c| &c.foreign);
            continue;
        }
        let packet = match Packet::parse(Bytes::copy_from_slice(&buf[..n])) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "local datagram is not RTP/RTCP");
                counters.count(|c| &c.rejected);
                continue;
            }
        };
        let kind = packet.kind();
        if latches && sender_seen != Some(from) {
            sender_seen = Some(from);
            if dest.latch(from) && rtcp_follows {
                tracing::info!(stream = %end.spec, %from, ?port, "feedback destination learned");
                shared.destination_learned(end_index);
            }
        }
        if kind == PacketKind::Rtp && n == RTP_HEADER_LEN {
            // Janus announces its feedback socket with header-only RTP.
            counters.count(|c| &c.keepalives);
            continue;
        }
        if kind == PacketKind::Rtp && port == Port::Rtcp {
            // Media on an RTCP port is a misconfiguration: never relayed.
            counters.count(|c| &c.not_rtcp);
            continue;
        }
        if kind == PacketKind::Rtp && !seen.contains(&packet.ssrc()) {
            if seen.len() >= SEEN_CACHE {
                seen.clear();
            }
            seen.insert(packet.ssrc());
            shared.new_source(end_index, packet.ssrc(), packet.payload_type().unwrap_or(0));
        }
        // The sender lives in the Pipe, which aborts this task on drop.
        if route_changes.has_changed().unwrap_or(false) {
            route = route_changes.borrow_and_update().clone();
        }
        shared.dispatch(&route, packet).await;
    }
}

/// Counts what became of a local packet sent onto a link.
pub(super) fn count_send(sent: Result<(), LinkError>, counters: &PipeCounters) {
    match sent {
        Ok(()) => counters.count(|c| &c.to_link),
        Err(LinkError::TooLarge { size, max }) => {
            tracing::warn!(
                size,
                max,
                "local packet too large for the link; lower the sender's MTU"
            );
            counters.count(|c| &c.rejected);
        }
        Err(LinkError::Closed(_)) => counters.count(|c| &c.no_link),
    }
}
