//! [`GuardedSocket`]: the UDP socket under quinn, with the datagrams that
//! cannot belong to the link counted and dropped before quinn sees them.
//!
//! quinn drops garbage silently inside its endpoint (and copies every
//! datagram into a fresh buffer first). A relay operator wants to know
//! that a port is being flooded and by what, so each datagram quinn reads
//! is checked here, cheapest test first, in the order every backend of the
//! relay uses:
//!
//! 1. **too large**: longer than the `max_udp_payload_size` this endpoint
//!    advertises (RFC 9000 section 18.2), which a conforming peer never
//!    exceeds;
//! 2. **malformed**: cannot be a QUIC packet at all: shorter than
//!    21 bytes (RFC 9000 section 10.3: smaller short-header packets are
//!    never valid with the QUIC-TLS AEADs) or with the fixed bit (0x40)
//!    clear (RFC 9000 section 17: such packets MUST be discarded; we do not
//!    advertise `grease_quic_bit`, RFC 9287, so no peer may clear it). A
//!    Version Negotiation packet (long header, version 0) is exempt: its
//!    fixed bit is unused (RFC 8999 section 6);
//! 3. **unknown source**: once the connection is established, from any
//!    address but the peer's. A relay link is one connection between two
//!    fixed addresses, so this side does not follow a peer that migrates
//!    or is rebound by a NAT (RFC 9000 section 9): its packets are
//!    dropped and the link ends by the liveness timeout. Before that the
//!    answerer must hear from anyone (it does not know the offerer's
//!    address: signaling carries only fingerprints), and quinn's TLS
//!    refuses strangers.
//!
//! Checks read a few bytes of each datagram in place and count into
//! atomics: no allocation, no lock. A dropped datagram is handed to quinn
//! with length 0, which it skips.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use relay_core::{DropCause, DropCounters};

/// RFC 9000 section 10.3: "short header packets that are smaller than 21
/// bytes are never valid".
const MIN_QUIC_PACKET: usize = 21;
/// RFC 9000 section 17.2/17.3: the fixed bit of the first byte.
const FIXED_BIT: u8 = 0x40;
/// RFC 9000 section 17.2: the header form bit (1 = long header).
const LONG_HEADER: u8 = 0x80;

/// Why a datagram cannot be for this endpoint's link, or `None` to hand it
/// to quinn. `peer` is the connected peer once established.
pub(crate) fn verdict(
    datagram: &[u8],
    from: SocketAddr,
    peer: Option<SocketAddr>,
    max_udp_payload: usize,
) -> Option<DropCause> {
    if datagram.len() > max_udp_payload {
        return Some(DropCause::TooLarge);
    }
    if datagram.len() < MIN_QUIC_PACKET {
        return Some(DropCause::Malformed);
    }
    let first = datagram[0];
    let version_negotiation = first & LONG_HEADER != 0 && datagram[1..5] == [0; 4];
    if first & FIXED_BIT == 0 && !version_negotiation {
        return Some(DropCause::Malformed);
    }
    match peer {
        Some(peer) if peer != from => Some(DropCause::UnknownSource),
        _ => None,
    }
}

/// quinn's own tokio socket with the checks of the module docs in front.
pub(crate) struct GuardedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    peer: OnceLock<SocketAddr>,
    max_udp_payload: usize,
    drops: DropCounters,
}

impl fmt::Debug for GuardedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedSocket")
            .field("inner", &self.inner)
            .field("peer", &self.peer.get())
            .field("drops", &self.drops)
            .finish()
    }
}

impl GuardedSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, max_udp_payload: usize) -> GuardedSocket {
        GuardedSocket {
            inner,
            peer: OnceLock::new(),
            max_udp_payload,
            drops: DropCounters::default(),
        }
    }

    /// From now on only `peer` is heard. Called once the connection is
    /// established; later calls are ignored (the link does not migrate).
    pub(crate) fn lock_peer(&self, peer: SocketAddr) {
        let _ = self.peer.set(peer);
    }

    pub(crate) fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Checks the datagram(s) of one receive slot; drops are cut out of
    /// `buf` and `meta.len` shrinks (to 0 when all are dropped). With GRO
    /// one slot holds several datagrams from one source, `stride` apart.
    fn filter(&self, meta: &mut RecvMeta, buf: &mut [u8], peer: Option<SocketAddr>) {
        let len = meta.len.min(buf.len());
        let stride = if meta.stride == 0 { len } else { meta.stride };
        if stride >= len {
            if let Some(cause) = verdict(&buf[..len], meta.addr, peer, self.max_udp_payload) {
                self.drops.add(cause, 1);
                meta.len = 0;
            }
            return;
        }
        let (mut read, mut write) = (0, 0);
        while read < len {
            let end = (read + stride).min(len);
            match verdict(&buf[read..end], meta.addr, peer, self.max_udp_payload) {
                Some(cause) => self.drops.add(cause, 1),
                None => {
                    if write != read {
                        buf.copy_within(read..end, write);
                    }
                    write += end - read;
                }
            }
            read = end;
        }
        meta.len = write;
    }
}

impl AsyncUdpSocket for GuardedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
        let peer = self.peer.get().copied();
        for (m, buf) in meta.iter_mut().zip(bufs.iter_mut()).take(n) {
            self.filter(m, buf, peer);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1472;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A short-header packet: fixed bit set, 8-byte connection id, body.
    fn short_header(len: usize) -> Vec<u8> {
        let mut p = vec![0x41];
        p.resize(len, 0xAB);
        p
    }

    #[test]
    fn datagrams_are_judged_by_size_then_shape_then_source() {
        let peer = addr("127.0.0.1:4000");
        let stranger = addr("127.0.0.2:4000");
        let ok = short_header(100);
        assert_eq!(verdict(&ok, peer, Some(peer), MAX), None);
        assert_eq!(
            verdict(&ok, stranger, None, MAX),
            None,
            "before the peer is known"
        );
        assert_eq!(
            verdict(&ok, stranger, Some(peer), MAX),
            Some(DropCause::UnknownSource)
        );
        assert_eq!(
            verdict(&short_header(MAX + 1), peer, Some(peer), MAX),
            Some(DropCause::TooLarge)
        );
        assert_eq!(
            verdict(&short_header(9000), stranger, None, MAX),
            Some(DropCause::TooLarge),
            "size is judged before the source"
        );
        for garbage in [
            &short_header(20)[..],      // a cut short header
            &[0x00; 100][..],           // fixed bit clear
            &[0x8f, 0, 0, 0, 1, 0][..], // a cut long header
            &[],
        ] {
            assert_eq!(
                verdict(garbage, stranger, Some(peer), MAX),
                Some(DropCause::Malformed),
                "{garbage:?}"
            );
        }
        let mut vn = vec![0x80, 0, 0, 0, 0];
        vn.resize(40, 1);
        assert_eq!(verdict(&vn, peer, None, MAX), None, "version negotiation");
    }

    #[test]
    fn a_gro_batch_keeps_its_good_datagrams_in_order() {
        #[derive(Debug)]
        struct Never;
        impl AsyncUdpSocket for Never {
            fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
                unimplemented!()
            }
            fn try_send(&self, _: &Transmit) -> io::Result<()> {
                unimplemented!()
            }
            fn poll_recv(
                &self,
                _: &mut Context,
                _: &mut [IoSliceMut<'_>],
                _: &mut [RecvMeta],
            ) -> Poll<io::Result<usize>> {
                Poll::Pending
            }
            fn local_addr(&self) -> io::Result<SocketAddr> {
                Ok(addr("127.0.0.1:1"))
            }
        }
        let socket = GuardedSocket::new(Arc::new(Never), MAX);
        let peer = addr("127.0.0.1:4000");
        // Four 30-byte datagrams; the second is garbage (fixed bit clear),
        // the last is a short 25-byte one.
        let mut buf = Vec::new();
        for (i, first) in [0x41u8, 0x01, 0x42, 0x43].iter().enumerate() {
            let mut d = vec![*first; if i == 3 { 25 } else { 30 }];
            d[1] = i as u8;
            buf.extend_from_slice(&d);
        }
        let mut meta = RecvMeta {
            addr: peer,
            len: buf.len(),
            stride: 30,
            ..RecvMeta::default()
        };
        socket.filter(&mut meta, &mut buf, Some(peer));
        assert_eq!(meta.len, 85);
        assert_eq!((buf[0], buf[1]), (0x41, 0));
        assert_eq!((buf[30], buf[31]), (0x42, 2));
        assert_eq!((buf[60], buf[61]), (0x43, 3));
        assert_eq!(socket.drops().get(DropCause::Malformed), 1);

        // A stranger's single datagram is dropped whole.
        let mut one = short_header(100);
        let mut meta = RecvMeta {
            addr: addr("127.0.0.3:9"),
            len: 100,
            stride: 100,
            ..RecvMeta::default()
        };
        socket.filter(&mut meta, &mut one, Some(peer));
        assert_eq!(meta.len, 0);
        assert_eq!(socket.drops().get(DropCause::UnknownSource), 1);
    }
}
