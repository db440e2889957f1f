//! Moving packets between a link and local UDP, where the media server (or
//! ffmpeg, GStreamer) sends and receives plain RTP.
//!
//! - On the offering side the local socket is `--in`: whatever arrives is
//!   relayed, and what comes back over the link (RTCP from the far
//!   consumer) goes to whoever sent to `--in` last.
//! - On the answering side a fresh socket per session sends to `--out`, and
//!   what the consumer sends back to that socket (its RTCP) is relayed back.
//!   Only packets from `--out`'s IP are accepted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use relay_core::{CloseReason, LinkError, Packet, RelayLink};
use tokio::net::UdpSocket;

/// Where link → local packets go, and who may send local → link.
#[derive(Debug, Clone, Copy)]
pub enum Local {
    /// Send to this address; accept only from its IP (answering side).
    Fixed(SocketAddr),
    /// Send to the last address that sent to the socket; accept from anyone
    /// (offering side: the socket is `--in`).
    LastSender,
}

/// Counters of one pipe.
#[derive(Debug, Default)]
pub struct PipeCounters {
    /// Local packets relayed onto the link.
    pub to_link: AtomicU64,
    /// Link packets sent to the local side.
    pub to_local: AtomicU64,
    /// Local datagrams that were not RTP/RTCP or were too large for the link.
    pub rejected: AtomicU64,
    /// Local datagrams from an address not allowed to send.
    pub foreign: AtomicU64,
    /// Link packets with nowhere to go yet (no local sender seen).
    pub no_destination: AtomicU64,
}

/// Relays until the link closes; returns why it closed.
pub async fn run(
    link: Arc<dyn RelayLink>,
    socket: UdpSocket,
    local: Local,
    counters: Arc<PipeCounters>,
) -> CloseReason {
    let socket = Arc::new(socket);
    let last_sender: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let up = {
        let (link, socket, last_sender, counters) = (
            link.clone(),
            socket.clone(),
            last_sender.clone(),
            counters.clone(),
        );
        async move {
            let allowed_ip: Option<IpAddr> = match local {
                Local::Fixed(a) => Some(a.ip()),
                Local::LastSender => None,
            };
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP port unreachable from a consumer not yet
                        // listening surfaces here on Linux; keep going.
                        tracing::debug!(error = %e, "local receive error");
                        continue;
                    }
                };
                if allowed_ip.is_some_and(|ip| ip != from.ip()) {
                    counters.foreign.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if matches!(local, Local::LastSender) {
                    *last_sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                }
                let packet = match Packet::parse(Bytes::copy_from_slice(&buf[..n])) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "local datagram is not RTP/RTCP");
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                match link.send(packet).await {
                    Ok(()) => {
                        counters.to_link.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(LinkError::TooLarge { size, max }) => {
                        tracing::warn!(
                            size,
                            max,
                            "local packet too large for the link; lower the sender's MTU"
                        );
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(LinkError::Closed(_)) => return,
                }
            }
        }
    };
    let down = {
        let (link, socket, counters) = (link.clone(), socket.clone(), counters.clone());
        async move {
            loop {
                let packet = match link.recv().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let dest = match local {
                    Local::Fixed(a) => Some(a),
                    Local::LastSender => *last_sender.lock().unwrap_or_else(|e| e.into_inner()),
                };
                let Some(dest) = dest else {
                    counters.no_destination.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match socket.send_to(packet.bytes(), dest).await {
                    Ok(_) => {
                        counters.to_local.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(%dest, error = %e, "local send failed"),
                }
            }
        }
    };
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
    link.closed().await
}
