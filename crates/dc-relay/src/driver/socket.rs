//! [`Socket`]: one bound UDP socket of a link, as the driver uses it: what
//! it sends, what it holds while the kernel's buffer is full, and which
//! received datagrams are worth handing to the connection ([`verdict`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;

use bytes::BytesMut;
use relay_core::{DropCause, DropCounters};
use tokio::net::UdpSocket;

/// Largest datagram a peer may send us: a jumbo frame's UDP payload
/// (9,000-byte MTU less IPv4 and UDP headers). WebRTC stacks size their
/// datagrams to the path MTU (ours: SCTP at 1,428 bytes in DTLS; browsers
/// and pion read at most 1,460), so anything longer is not from a peer.
const MAX_WIRE_DATAGRAM: usize = 8_972;
/// RFC 8489 section 5: the STUN header.
const STUN_HEADER_LEN: usize = 20;
/// RFC 6347 section 4.1: the DTLS record header.
const DTLS_HEADER_LEN: usize = 13;

/// Why a datagram cannot be for this connection, or `None` to hand it to
/// the stack. Cheapest test first, in the order every backend of the relay
/// uses: size, then whether the bytes can be ours at all (RFC 7983
/// demultiplexing: a data channel carries only STUN, first byte 0..=3, and
/// DTLS, 20..=63, each at least a header long; there is no TURN ChannelData,
/// 64..=79, as dc-relay gathers only host and `stun:` candidates), then the
/// source: once ICE
/// has selected a pair, only its remote address is heard (`peer`). The
/// stack would refuse all of these too, silently and after copying them
/// through its pipeline; here they cost a few comparisons and a count.
pub(crate) fn verdict(datagram: &[u8], from: SocketAddr, peer: Option<SocketAddr>) -> Option<DropCause> {
    if datagram.len() > MAX_WIRE_DATAGRAM {
        return Some(DropCause::TooLarge);
    }
    let shaped = match datagram.first() {
        Some(0..=3) => datagram.len() >= STUN_HEADER_LEN,
        Some(20..=63) => datagram.len() >= DTLS_HEADER_LEN,
        _ => false,
    };
    if !shaped {
        return Some(DropCause::Malformed);
    }
    match peer {
        Some(peer) if peer != from => Some(DropCause::UnknownSource),
        _ => None,
    }
}

/// One bound UDP socket: one ICE host candidate.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) udp: UdpSocket,
    pub(crate) local: SocketAddr,
    /// Datagrams the kernel refused (send buffer full), sent when writable.
    pub(super) pending: VecDeque<(BytesMut, SocketAddr)>,
}

impl Socket {
    pub(crate) fn new(udp: UdpSocket, local: SocketAddr) -> Socket {
        Socket {
            udp,
            local,
            pending: VecDeque::new(),
        }
    }

    /// Sends, or queues while the kernel's buffer is full; a datagram the
    /// kernel refuses is counted in `drops` (see [`refused`]).
    pub(super) fn transmit(&mut self, data: BytesMut, to: SocketAddr, drops: &DropCounters) {
        if !self.pending.is_empty() {
            self.pending.push_back((data, to));
            return;
        }
        match self.udp.try_send_to(&data, to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.pending.push_back((data, to)),
            Err(e) => refused(&e, data.len(), to, drops),
        }
    }

    pub(super) fn flush_pending(&mut self, drops: &DropCounters) {
        while let Some((data, to)) = self.pending.front() {
            match self.udp.try_send_to(data, *to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => refused(&e, data.len(), *to, drops),
            }
            self.pending.pop_front();
        }
    }
}

/// Linux's EMSGSIZE (asm-generic/errno.h), which std reports only as
/// `ErrorKind::Uncategorized`.
const EMSGSIZE: i32 = 90;

/// Counts a datagram the kernel refused to send; it is lost, which every
/// layer above copes with (SCTP and DTLS retransmit, ICE checks again).
/// Longer than the path takes (EMSGSIZE) is `too_large`; any other refusal
/// (no buffer, a destination that cannot be reached or may not be sent to)
/// is `send_queue_full`, as rtp-udp-relay counts a refused send: the
/// kernel's send path is the link's last queue.
fn refused(e: &io::Error, len: usize, to: SocketAddr, drops: &DropCounters) {
    let cause = if cfg!(target_os = "linux") && e.raw_os_error() == Some(EMSGSIZE) {
        DropCause::TooLarge
    } else {
        DropCause::SendQueueFull
    };
    tracing::debug!(%to, len, error = %e, cause = cause.name(), "UDP send failed; datagram dropped");
    drops.add(cause, 1);
}

/// Resolves when any socket has a datagram to read.
pub(super) async fn readable(sockets: &[Socket]) {
    poll_fn(|cx| {
        for s in sockets {
            if s.udp.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Resolves when a socket with refused datagrams can send again.
pub(super) async fn writable(sockets: &[Socket]) {
    poll_fn(|cx| {
        for s in sockets.iter().filter(|s| !s.pending.is_empty()) {
            if s.udp.poll_send_ready(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_judged_by_size_then_shape_then_source() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let dtls = [&[23u8, 0xfe, 0xfd][..], &[0; 40]].concat();
        let stun = [&[0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42][..], &[0; 12]].concat();
        for ok in [&dtls, &stun] {
            assert_eq!(verdict(ok, peer, Some(peer)), None);
            assert_eq!(verdict(ok, stranger, None), None, "before ICE selected a pair");
            assert_eq!(verdict(ok, stranger, Some(peer)), Some(DropCause::UnknownSource));
        }
        for garbage in [
            &[][..],
            &dtls[..12],      // a cut DTLS record header
            &stun[..19],      // a cut STUN header
            &[0x80; 100][..], // RTP: not on a data-channel connection
            &[0x41; 100][..], // QUIC short header
            &[0xff; 1200][..],
        ] {
            assert_eq!(
                verdict(garbage, peer, Some(peer)),
                Some(DropCause::Malformed),
                "{garbage:?}"
            );
        }
        let mut big = dtls.clone();
        big.resize(MAX_WIRE_DATAGRAM, 0);
        assert_eq!(verdict(&big, peer, Some(peer)), None);
        big.push(0);
        assert_eq!(verdict(&big, stranger, Some(peer)), Some(DropCause::TooLarge));
    }
}
