//! Batched UDP I/O for a backend's socket loop (rtp-udp-relay's): many
//! datagrams per system call, through `quinn-udp`, the socket layer quinn
//! itself uses.
//!
//! - **Receiving**: one `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`]
//!   buffers. Where the kernel has `UDP_GRO` (Linux 5.0), one buffer may
//!   hold a run of equal-size datagrams from one source, coalesced by the
//!   kernel; [`BatchSocket::recv`] cuts it apart again at the kernel's
//!   stride, so the caller always sees one datagram at a time, whole.
//! - **Sending**: a run of datagrams to one address, all of one size but
//!   the last, which may be shorter, leaves in one `sendmsg` with
//!   `UDP_SEGMENT` (GSO): the kernel cuts it into ordinary datagrams, so
//!   the peer cannot tell. [`GsoRun`] decides where runs end.
//!
//! Per packet, the system calls were most of what rtp-udp cost at high
//! rates (one `sendto` and one `recvfrom` per packet sit near 290k
//! packets/s on this machine's loopback, GSO with `recvmmsg` near 1.2M).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes of one receive buffer: the largest UDP payload (65,507 bytes)
/// fits, and so does the largest run the kernel coalesces (`UDP_GRO`
/// stops at 64 KiB), so nothing is ever cut. A datagram longer than the
/// link accepts is then seen at its full length and counted, not read
/// truncated.
pub const RECV_BUFFER: usize = 65_536;

/// Most bytes one GSO send carries: the largest UDP payload over IPv4
/// (65,535 less the IP and UDP headers).
pub const MAX_GSO_BYTES: usize = 65_507;

/// Most segments one GSO send carries: the kernel's `UDP_MAX_SEGMENTS`
/// before Linux 6.6 (later kernels take 128).
pub const MAX_GSO_SEGMENTS: usize = 64;

thread_local! {
    /// The receive buffers, one set per thread rather than per link: a
    /// receive fills and empties them within one synchronous call, so a
    /// process with thousands of links holds as many sets as it has
    /// runtime threads. Allocated zeroed, so the kernel maps only the
    /// pages a receive touches.
    static RECV_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The send buffer a GSO run is gathered in, per thread for the same
    /// reason.
    static SEND_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A UDP socket registered with tokio, with `quinn-udp`'s state for
/// batched receives and GSO sends.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    /// Wraps `socket`. `quinn-udp` switches `UDP_GRO` on where the kernel
    /// has it; the other options it sets are put back as they were (see
    /// `SavedOptions`).
    pub fn new(socket: UdpSocket) -> io::Result<BatchSocket> {
        let saved = SavedOptions::read(&socket);
        let state = UdpSocketState::new((&socket).into())?;
        saved.restore(&socket);
        Ok(BatchSocket { socket, state })
    }

    /// The tokio socket (readiness, single sends).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Datagrams one GSO send may carry here: 1 where the kernel has no
    /// `UDP_SEGMENT`, or after a GSO send failed (quinn-udp then stops
    /// using it on this socket).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().min(MAX_GSO_SEGMENTS)
    }

    /// Whether the kernel coalesces runs of datagrams on receive here.
    pub fn gro(&self) -> bool {
        self.state.gro_segments() > 1
    }

    /// One `recvmmsg`: hands every datagram it got to `each`, whole and in
    /// arrival order, with its source. An empty socket is
    /// `Err(WouldBlock)`, and tokio learns of it (so its readiness wait
    /// does not wake at once again).
    pub fn recv(&self, mut each: impl FnMut(&[u8], SocketAddr)) -> io::Result<Received> {
        with_scratch(&RECV_SCRATCH, quinn_udp::BATCH_SIZE * RECV_BUFFER, |scratch| {
            let mut chunks = scratch.chunks_mut(RECV_BUFFER);
            let mut bufs: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let mut meta = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
            let mut got = Received::default();
            let r = self.socket.try_io(Interest::READABLE, || {
                let n = self.state.recv((&self.socket).into(), &mut bufs, &mut meta)?;
                for (buf, m) in bufs.iter().zip(&meta).take(n) {
                    for datagram in datagrams(buf, m) {
                        got.datagrams += 1;
                        each(datagram, m.addr);
                    }
                }
                if n < bufs.len() {
                    // Fewer than asked for: the kernel found the queue
                    // empty. Telling tokio now saves the system call that
                    // would only say so (at low rates, one per packet); a
                    // datagram that arrives meanwhile wakes the socket
                    // again, as after any would-block.
                    got.emptied = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.datagrams > 0 => Ok(got),
                Err(e) => Err(e),
                Ok(()) => Ok(got),
            }
        })
    }

    /// Sends `contents` to `to` in one system call: one datagram, or with
    /// `segment` a GSO run cut every `segment` bytes. Never waits: a full
    /// send buffer is `Err(WouldBlock)`.
    pub fn send(&self, contents: &[u8], segment: Option<usize>, to: SocketAddr) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|&s| s < contents.len()),
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    /// Sends the datagrams `wires` yields, in order, to `to`: each run
    /// [`GsoRun`] admits in one GSO send, the rest one by one. `sent` is
    /// told, for each datagram in order, whether the kernel took it. A
    /// lone datagram goes out at once, as a plain send.
    pub fn send_all<'a>(
        &self,
        wires: impl IntoIterator<Item = &'a [u8]>,
        to: SocketAddr,
        mut sent: impl FnMut(io::Result<()>),
    ) {
        let max = self.max_segments();
        with_scratch(&SEND_SCRATCH, 0, |buf| {
            buf.clear();
            let mut run = GsoRun::new(max);
            for wire in wires {
                if !run.admits(wire.len()) {
                    self.flush(buf, &mut run, to, &mut sent);
                }
                run.push(wire.len());
                buf.extend_from_slice(wire);
            }
            self.flush(buf, &mut run, to, &mut sent);
        })
    }

    /// Puts the run gathered in `buf` on the wire and empties both.
    fn flush(
        &self,
        buf: &mut Vec<u8>,
        run: &mut GsoRun,
        to: SocketAddr,
        sent: &mut impl FnMut(io::Result<()>),
    ) {
        let count = run.count();
        if count == 0 {
            return;
        }
        let result = self.send(buf, run.segment_size(), to);
        match result {
            Err(e) if count > 1 && e.kind() != io::ErrorKind::WouldBlock => {
                // GSO refused (a device without segmentation offload, a
                // segment over the path MTU): quinn-udp has stopped using
                // it on this socket; these go one by one.
                tracing::debug!(%to, error = %e, segments = count, "GSO send failed; sending one by one");
                for datagram in buf.chunks(run.segment) {
                    sent(self.send(datagram, None, to));
                }
            }
            Err(e) => {
                for _ in 0..count {
                    sent(Err(io::Error::from(e.kind())));
                }
            }
            Ok(()) => {
                for _ in 0..count {
                    sent(Ok(()));
                }
            }
        }
        buf.clear();
        run.clear();
    }
}

/// What one [`BatchSocket::recv`] got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Datagrams handed over.
    pub datagrams: usize,
    /// The socket had no more: wait for readiness before the next call.
    pub emptied: bool,
}

/// The datagrams in one received buffer: `meta.len` bytes cut at the GRO
/// stride, the last one possibly shorter; one datagram without GRO. An
/// empty datagram is one datagram too.
pub fn datagrams<'a>(buf: &'a [u8], meta: &RecvMeta) -> impl Iterator<Item = &'a [u8]> + use<'a> {
    let data = &buf[..meta.len.min(buf.len())];
    let empty = data.is_empty().then_some(data);
    data.chunks(meta.stride.max(1)).chain(empty)
}

/// Runs `f` with this thread's scratch buffer of `cell`, grown to `len`
/// bytes (zeroed; never shrunk). If the buffer is in use (`f` reached
/// another batched call on this thread), a fresh one serves instead.
fn with_scratch<T>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    len: usize,
    f: impl FnOnce(&mut Vec<u8>) -> T,
) -> T {
    cell.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                *buf = vec![0; len];
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

/// Where a GSO run ends. A run is datagrams of one size (the first one's),
/// at most [`max_segments`](GsoRun::new) of them and [`MAX_GSO_BYTES`] in
/// all, which the last may close by being shorter (the kernel's rule for
/// `UDP_SEGMENT`: only the last segment may be short).
///
/// ```
/// use relay_core::udp::batch::GsoRun;
/// let mut run = GsoRun::new(64);
/// for len in [1200, 1200, 1200] {
///     assert!(run.admits(len));
///     run.push(len);
/// }
/// assert!(!run.admits(1300)); // longer than the segment: a new run
/// assert!(run.admits(500)); // shorter: the run's last datagram
/// run.push(500);
/// assert!(!run.admits(1200)); // closed by its short tail
/// assert_eq!((run.count(), run.segment_size()), (4, Some(1200)));
/// ```
#[derive(Debug, Clone)]
pub struct GsoRun {
    segment: usize,
    count: usize,
    bytes: usize,
    max_segments: usize,
    closed: bool,
}

impl GsoRun {
    /// An empty run of at most `max_segments` datagrams (1: no GSO).
    pub fn new(max_segments: usize) -> GsoRun {
        GsoRun {
            segment: 0,
            count: 0,
            bytes: 0,
            max_segments: max_segments.max(1),
            closed: false,
        }
    }

    /// Whether a datagram of `len` bytes may join the run.
    pub fn admits(&self, len: usize) -> bool {
        self.count == 0
            || (!self.closed
                && len <= self.segment
                && len > 0
                && self.count < self.max_segments
                && self.bytes + len <= MAX_GSO_BYTES)
    }

    /// Adds a datagram of `len` bytes (which [`admits`](Self::admits) allowed).
    pub fn push(&mut self, len: usize) {
        if self.count == 0 {
            self.segment = len;
        } else if len < self.segment {
            self.closed = true;
        }
        self.count += 1;
        self.bytes += len;
    }

    /// Datagrams in the run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The `UDP_SEGMENT` size to send the run with: `None` for a lone
    /// datagram, which goes as a plain send.
    pub fn segment_size(&self) -> Option<usize> {
        (self.count > 1).then_some(self.segment)
    }

    /// Empties the run.
    pub fn clear(&mut self) {
        *self = GsoRun::new(self.max_segments);
    }
}

/// The socket options `quinn-udp` sets besides `UDP_GRO`, as they were
/// before, to be put back:
///
/// - `IP_MTU_DISCOVER`, `IPV6_MTU_DISCOVER`, `IPV6_DONTFRAG` forbid IP
///   fragmentation; restored, a datagram larger than the path's MTU is
///   fragmented as before, not refused;
/// - `IP_PKTINFO`, `IP_RECVTOS`, `IPV6_RECVPKTINFO`, `IPV6_RECVTCLASS`
///   make the kernel attach the destination address and the ECN bits to
///   every datagram received, which no backend uses: off, they cost
///   nothing per packet.
struct SavedOptions(Vec<(libc::c_int, libc::c_int, libc::c_int)>);

impl SavedOptions {
    const OPTIONS: [(libc::c_int, libc::c_int); 7] = [
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
        (libc::IPPROTO_IP, libc::IP_PKTINFO),
        (libc::IPPROTO_IP, libc::IP_RECVTOS),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
    ];

    fn read(socket: &UdpSocket) -> SavedOptions {
        let fd = socket.as_raw_fd();
        SavedOptions(
            Self::OPTIONS
                .iter()
                .filter_map(|&(level, name)| {
                    let mut value: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: a valid fd, and a c_int with its length to write to.
                    let rc = unsafe {
                        libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
                    };
                    (rc == 0).then_some((level, name, value))
                })
                .collect(),
        )
    }

    fn restore(&self, socket: &UdpSocket) {
        let fd = socket.as_raw_fd();
        for &(level, name, value) in &self.0 {
            // SAFETY: a valid fd, and a live c_int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                tracing::debug!(level, name, error = %io::Error::last_os_error(), "cannot restore a socket option");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn runs(lens: &[usize], max_segments: usize) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut run = GsoRun::new(max_segments);
        let mut current = Vec::new();
        for &len in lens {
            if !run.admits(len) {
                out.push(std::mem::take(&mut current));
                run.clear();
            }
            run.push(len);
            current.push(len);
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }

    #[test]
    fn runs_are_one_size_with_at_most_a_shorter_tail() {
        assert_eq!(runs(&[1200; 5], 64), [vec![1200; 5]]);
        // A video frame split evenly: 834, 833, 833.
        assert_eq!(runs(&[834, 833, 833], 64), [vec![834, 833], vec![833]]);
        assert_eq!(runs(&[100, 200, 200, 100], 64), [vec![100], vec![200, 200, 100]]);
        assert_eq!(runs(&[1200; 5], 2), [vec![1200; 2], vec![1200; 2], vec![1200]]);
        assert_eq!(runs(&[1200; 5], 1), vec![vec![1200]; 5]);
        // 54 segments of 1,200 bytes fit in 65,507; the 55th starts a run.
        let big = runs(&[1200; 60], 64);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [54, 6]);
        // An empty datagram never joins a run (its segment would be 0).
        assert_eq!(runs(&[0, 0, 12], 64), [vec![0], vec![0], vec![12]]);
    }

    #[test]
    fn a_gro_buffer_splits_at_the_stride() {
        let buf: Vec<u8> = (0..250u8).collect();
        let meta = |len, stride| RecvMeta {
            len,
            stride,
            ..RecvMeta::default()
        };
        let sizes = |m| datagrams(&buf, &m).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(meta(250, 100)), [100, 100, 50]);
        assert_eq!(sizes(meta(200, 200)), [200]);
        assert_eq!(sizes(meta(0, 0)), [0]);
        // A length past the buffer (never from the kernel) is cut, not a panic.
        assert_eq!(sizes(meta(9_999, 9_999)), [250]);
        assert_eq!(datagrams(&buf, &meta(250, 100)).nth(1).unwrap()[0], 100);
    }

    async fn pair() -> (BatchSocket, BatchSocket) {
        let bind = || {
            let s = crate::udp::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
            BatchSocket::new(UdpSocket::from_std(s).unwrap()).unwrap()
        };
        let (a, b) = (bind(), bind());
        a.socket().writable().await.unwrap();
        (a, b)
    }

    /// Reads until `want` datagrams came or two seconds passed.
    async fn read(rx: &BatchSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while got.len() < want {
            tokio::select! {
                r = rx.socket().readable() => r.unwrap(),
                _ = tokio::time::sleep_until(deadline) => break,
            }
            let _ = rx.recv(|d, from| got.push((d.to_vec(), from)));
        }
        got
    }

    fn datagram(i: usize, len: usize) -> Vec<u8> {
        let mut d = vec![i as u8; len];
        d[0] = 0x80;
        d
    }

    #[tokio::test]
    async fn batches_of_mixed_sizes_arrive_whole_and_in_order() {
        let (tx, rx) = pair().await;
        let to = rx.socket().local_addr().unwrap();
        // Runs of equal sizes (GSO), shorter tails, lone ones, a large one.
        let lens = [1200, 1200, 1200, 700, 1200, 64, 64, 64, 64, 1, 9000, 1200, 1200];
        let sent: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &l)| datagram(i, l)).collect();
        let mut results = Vec::new();
        tx.send_all(sent.iter().map(Vec::as_slice), to, |r| results.push(r.is_ok()));
        assert_eq!(results, [true; 13]);
        let got = read(&rx, sent.len()).await;
        let from = tx.socket().local_addr().unwrap();
        assert!(got.iter().all(|(_, f)| *f == from));
        let got: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_gso_run_of_many_arrives_as_separate_datagrams() {
        let (tx, rx) = pair().await;
        let to = rx.socket().local_addr().unwrap();
        let sent: Vec<Vec<u8>> = (0..200).map(|i| datagram(i, 1200)).collect();
        let mut ok = 0;
        tx.send_all(sent.iter().map(Vec::as_slice), to, |r| {
            ok += usize::from(r.is_ok())
        });
        assert_eq!(ok, 200);
        let got: Vec<Vec<u8>> = read(&rx, 200).await.into_iter().map(|(d, _)| d).collect();
        assert_eq!(got.len(), 200);
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn an_empty_socket_would_block() {
        let (_, rx) = pair().await;
        let err = rx.recv(|_, _| panic!("nothing was sent")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
