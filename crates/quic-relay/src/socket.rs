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
//!    address but the peer's, unless it is a short-header packet for one
//!    of this end's connection IDs the peer has used. That exception is
//!    what lets a link survive a NAT rebinding: the offerer's packets
//!    arrive from a new address with the same destination connection ID,
//!    quinn validates the new path (PATH_CHALLENGE, RFC 9000 section 9)
//!    and moves the connection to it. A stranger cannot know the IDs
//!    without seeing the traffic, and one that does still cannot pass
//!    quinn's packet protection. Before the connection is established the
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// Length of the connection IDs quinn issues (its default
/// `HashedConnectionIdGenerator`; a test checks it).
const LOCAL_CID_LEN: usize = 8;
/// Connection IDs remembered: quinn issues a few (active_connection_id_limit).
const KNOWN_CIDS: usize = 8;

/// The destination connection ID of a short-header packet, as a number.
fn short_header_dcid(datagram: &[u8]) -> Option<u64> {
    if datagram[0] & LONG_HEADER != 0 {
        return None;
    }
    let cid = datagram.get(1..1 + LOCAL_CID_LEN)?;
    Some(u64::from_be_bytes(cid.try_into().ok()?))
}

/// This end's connection IDs that the peer has sent to from its own
/// address: lock-free, a few atomics.
#[derive(Debug, Default)]
pub(crate) struct KnownCids {
    slots: [AtomicU64; KNOWN_CIDS],
    next: AtomicUsize,
}

impl KnownCids {
    fn contains(&self, cid: u64) -> bool {
        cid != 0 && self.slots.iter().any(|s| s.load(Ordering::Relaxed) == cid)
    }

    fn learn(&self, cid: u64) {
        if cid != 0 && !self.contains(cid) {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % KNOWN_CIDS;
            self.slots[slot].store(cid, Ordering::Relaxed);
        }
    }
}

/// Why a datagram cannot be for this endpoint's link, or `None` to hand it
/// to quinn. `peer` is the connected peer once established; `cids` the
/// connection IDs it has used (learnt here from its packets).
pub(crate) fn verdict(
    datagram: &[u8],
    from: SocketAddr,
    peer: Option<SocketAddr>,
    cids: &KnownCids,
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
        Some(peer) if peer == from => {
            if let Some(cid) = short_header_dcid(datagram) {
                cids.learn(cid);
            }
            None
        }
        // The peer from a new address (a NAT rebound it): quinn validates
        // the path and migrates.
        Some(_) if short_header_dcid(datagram).is_some_and(|cid| cids.contains(cid)) => None,
        Some(_) => Some(DropCause::UnknownSource),
        None => None,
    }
}

/// quinn's own tokio socket with the checks of the module docs in front.
pub(crate) struct GuardedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    peer: OnceLock<SocketAddr>,
    cids: KnownCids,
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
            cids: KnownCids::default(),
            max_udp_payload,
            drops: DropCounters::default(),
        }
    }

    /// From now on only `peer` is heard, and packets for the connection
    /// IDs it uses from wherever they come (a rebinding). Called once the
    /// connection is established; later calls are ignored.
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
            if let Some(cause) = verdict(&buf[..len], meta.addr, peer, &self.cids, self.max_udp_payload) {
                self.drops.add(cause, 1);
                meta.len = 0;
            }
            return;
        }
        let (mut read, mut write) = (0, 0);
        while read < len {
            let end = (read + stride).min(len);
            match verdict(&buf[read..end], meta.addr, peer, &self.cids, self.max_udp_payload) {
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
        let cids = KnownCids::default();
        let peer = addr("127.0.0.1:4000");
        let stranger = addr("127.0.0.2:4000");
        let ok = short_header(100);
        assert_eq!(verdict(&ok, peer, Some(peer), &cids, MAX), None);
        assert_eq!(
            verdict(&ok, stranger, None, &cids, MAX),
            None,
            "before the peer is known"
        );
        // (A stranger's packet for a connection ID the peer never used.)
        let mut theirs = short_header(100);
        theirs[1] = 0x11;
        assert_eq!(
            verdict(&theirs, stranger, Some(peer), &cids, MAX),
            Some(DropCause::UnknownSource)
        );
        assert_eq!(
            verdict(&short_header(MAX + 1), peer, Some(peer), &cids, MAX),
            Some(DropCause::TooLarge)
        );
        assert_eq!(
            verdict(&short_header(9000), stranger, None, &cids, MAX),
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
                verdict(garbage, stranger, Some(peer), &cids, MAX),
                Some(DropCause::Malformed),
                "{garbage:?}"
            );
        }
        let mut vn = vec![0x80, 0, 0, 0, 0];
        vn.resize(40, 1);
        assert_eq!(verdict(&vn, peer, None, &cids, MAX), None, "version negotiation");
    }

    #[test]
    fn the_peer_rebound_by_a_nat_is_heard_by_its_connection_id_and_strangers_are_not() {
        let cids = KnownCids::default();
        let peer = addr("127.0.0.1:4000");
        let rebound = addr("127.0.0.1:4999");
        let mut ours = short_header(100);
        ours[1..9].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut other = ours.clone();
        other[8] = 9;
        // Before the peer used the connection ID from its own address, a
        // packet for it from elsewhere is a stranger's.
        assert_eq!(
            verdict(&ours, rebound, Some(peer), &cids, MAX),
            Some(DropCause::UnknownSource)
        );
        assert_eq!(verdict(&ours, peer, Some(peer), &cids, MAX), None);
        assert_eq!(
            verdict(&ours, rebound, Some(peer), &cids, MAX),
            None,
            "the rebound peer"
        );
        assert_eq!(
            verdict(&other, rebound, Some(peer), &cids, MAX),
            Some(DropCause::UnknownSource),
            "another connection ID"
        );
        let mut long = ours.clone();
        long[0] = 0xc1;
        assert_eq!(
            verdict(&long, rebound, Some(peer), &cids, MAX),
            Some(DropCause::UnknownSource),
            "a long header (a new handshake) from elsewhere"
        );
    }

    #[test]
    fn quinn_issues_connection_ids_of_the_length_the_guard_reads() {
        use quinn_proto::ConnectionIdGenerator;
        assert_eq!(
            quinn_proto::HashedConnectionIdGenerator::default().cid_len(),
            LOCAL_CID_LEN
        );
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
