//! The socket loop: one task per link owns the receive side and the
//! keepalive clock; `send` writes to the socket directly.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use relay_core::{
    CloseReason, CloseSignal, DropCause, LinkError, LinkStats, Mode, Overflow, Packet, PacketQueue, Pushed,
    RelayLink, RtpUdpDescription, StatsRecorder, Transport, check_size,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::liveness::{Action, Liveness};
use crate::stun::{self, Control};
use crate::{RtpUdpConfig, RtpUdpError};

/// Datagrams read per wake-up before the loop checks its clock again.
const RECV_BATCH: usize = 256;
/// Receive memory is carved from chunks this large; one allocation serves
/// about 150 full-size packets.
const RECV_CHUNK: usize = 256 * 1024;
/// Room left in a chunk before a read: the largest UDP payload, so nothing
/// is ever truncated (an oversized datagram is then counted, not cut).
const MAX_DATAGRAM: usize = 65_536;

fn bind(config: &RtpUdpConfig) -> Result<(UdpSocket, SocketAddr), RtpUdpError> {
    let bind_err = |source| RtpUdpError::Bind {
        addr: config.bind,
        source,
    };
    let std_socket = relay_core::udp::bind_udp(config.bind, config.socket_buffer).map_err(bind_err)?;
    let socket = UdpSocket::from_std(std_socket).map_err(bind_err)?;
    let local = socket.local_addr().map_err(bind_err)?;
    let advertised = SocketAddr::new(config.advertise_ip.unwrap_or(local.ip()), local.port());
    if advertised.ip().is_unspecified() {
        return Err(RtpUdpError::BadAddress {
            addr: advertised,
            why: "bound to an unspecified address; set an advertised IP the peer can reach",
        });
    }
    Ok((socket, advertised))
}

fn check_peer(peer: SocketAddr, local: SocketAddr) -> Result<(), RtpUdpError> {
    let why = if peer.ip().is_unspecified() {
        "unspecified IP address"
    } else if peer.port() == 0 {
        "port 0"
    } else if peer.is_ipv4() != local.is_ipv4() {
        "address family differs from the local socket's"
    } else {
        return Ok(());
    };
    Err(RtpUdpError::BadAddress { addr: peer, why })
}

fn describe(config: &RtpUdpConfig, addr: SocketAddr) -> RtpUdpDescription {
    RtpUdpDescription {
        addr,
        ssrcs: config.ssrcs.clone(),
    }
}

/// The offering side before the answer: a bound socket.
#[derive(Debug)]
pub struct RtpUdpOfferer {
    socket: UdpSocket,
    advertised: SocketAddr,
    config: RtpUdpConfig,
    started: Instant,
}

impl RtpUdpOfferer {
    /// Binds the socket the offer will advertise.
    pub async fn bind(config: RtpUdpConfig) -> Result<RtpUdpOfferer, RtpUdpError> {
        let started = Instant::now();
        let (socket, advertised) = bind(&config)?;
        Ok(RtpUdpOfferer {
            socket,
            advertised,
            config,
            started,
        })
    }

    /// The offer to signal.
    pub fn offer(&self) -> RtpUdpDescription {
        describe(&self.config, self.advertised)
    }

    /// Applies the answer and returns once a probe's reply came back.
    pub async fn connect(self, answer: &RtpUdpDescription) -> Result<RtpUdpLink, RtpUdpError> {
        check_peer(answer.addr, self.advertised)?;
        let link = RtpUdpLink::start(self.socket, answer.addr, &self.config, self.started);
        link.ready().await?;
        Ok(link)
    }
}

/// The answering side: bound and already probing the offerer.
#[derive(Debug)]
pub struct RtpUdpAnswerer {
    link: RtpUdpLink,
    advertised: SocketAddr,
    config: RtpUdpConfig,
}

impl RtpUdpAnswerer {
    /// Binds, and starts probing the address in `offer`.
    pub async fn bind(
        config: RtpUdpConfig,
        offer: &RtpUdpDescription,
    ) -> Result<RtpUdpAnswerer, RtpUdpError> {
        let started = Instant::now();
        let (socket, advertised) = bind(&config)?;
        check_peer(offer.addr, advertised)?;
        let link = RtpUdpLink::start(socket, offer.addr, &config, started);
        Ok(RtpUdpAnswerer {
            link,
            advertised,
            config,
        })
    }

    /// The answer to signal back.
    pub fn answer(&self) -> RtpUdpDescription {
        describe(&self.config, self.advertised)
    }

    /// Returns once a probe's reply came back from the offerer.
    pub async fn accept(self) -> Result<RtpUdpLink, RtpUdpError> {
        self.link.ready().await?;
        Ok(self.link)
    }
}

struct Shared {
    socket: UdpSocket,
    local: SocketAddr,
    peer: SocketAddr,
    stats: StatsRecorder,
    inbox: PacketQueue,
    close: CloseSignal,
    ready: watch::Sender<bool>,
    max_packet_size: usize,
    warned_unknown_source: AtomicBool,
}

/// An established rtp-udp link; see the crate docs.
pub struct RtpUdpLink {
    shared: Arc<Shared>,
}

impl fmt::Debug for RtpUdpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtpUdpLink")
            .field("local", &self.shared.local)
            .field("peer", &self.shared.peer)
            .field("closed", &self.shared.close.reason())
            .finish()
    }
}

impl RtpUdpLink {
    fn start(socket: UdpSocket, peer: SocketAddr, config: &RtpUdpConfig, started: Instant) -> RtpUdpLink {
        let local = socket.local_addr().unwrap_or(config.bind);
        let shared = Arc::new(Shared {
            socket,
            local,
            peer,
            stats: StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable),
            inbox: PacketQueue::new(config.receive_queue, Overflow::DropOldest),
            close: CloseSignal::new(),
            ready: watch::Sender::new(false),
            max_packet_size: config.max_packet_size,
            warned_unknown_source: AtomicBool::new(false),
        });
        let liveness = Liveness::new(
            Instant::now(),
            config.liveness_timeout,
            config.keepalive_interval_or_default(),
            rand::random(),
        );
        tokio::spawn(drive(shared.clone(), liveness, started));
        RtpUdpLink { shared }
    }

    async fn ready(&self) -> Result<(), RtpUdpError> {
        let mut ready = self.shared.ready.subscribe();
        tokio::select! {
            r = ready.wait_for(|r| *r) => match r {
                Ok(_) => Ok(()),
                Err(_) => Err(RtpUdpError::Closed(self.shared.close.reason().unwrap_or(CloseReason::Local))),
            },
            reason = self.shared.close.wait() => match reason {
                CloseReason::LivenessTimeout(waited) => Err(RtpUdpError::NoPeer { peer: self.shared.peer, waited }),
                other => Err(RtpUdpError::Closed(other)),
            },
        }
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The peer's signaled address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }
}

impl Drop for RtpUdpLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn shutdown(&self, reason: CloseReason) -> bool {
        if !self.close.close(reason.clone()) {
            return false;
        }
        self.inbox.close(reason.clone());
        tracing::info!(local = %self.local, peer = %self.peer, %reason, "rtp-udp link closed");
        true
    }

    fn send_control(&self, msg: &Control) {
        // Best effort: a lost probe is retried by the schedule, a lost
        // goodbye falls back to the liveness timeout.
        if let Err(e) = self.socket.try_send_to(&stun::encode(msg), self.peer) {
            tracing::debug!(peer = %self.peer, error = %e, "control message not sent");
        }
    }

    fn drain(&self, buf: &mut BytesMut, liveness: &mut Liveness) {
        for _ in 0..RECV_BATCH {
            if buf.capacity() - buf.len() < MAX_DATAGRAM {
                buf.reserve(RECV_CHUNK);
            }
            match self.socket.try_recv_buf_from(buf) {
                Ok((_, from)) => {
                    let data = buf.split().freeze();
                    self.on_datagram(data, from, liveness);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors reported on the socket (e.g. port
                    // unreachable) are not fatal: liveness decides.
                    tracing::debug!(error = %e, "UDP receive error");
                    return;
                }
            }
        }
    }

    fn on_datagram(&self, data: Bytes, from: SocketAddr, liveness: &mut Liveness) {
        if from != self.peer {
            self.stats.on_drop(DropCause::UnknownSource);
            if !self.warned_unknown_source.swap(true, Ordering::Relaxed) {
                tracing::warn!(%from, expected = %self.peer, "dropping packets from an address that was not signaled");
            }
            return;
        }
        let now = Instant::now();
        liveness.on_heard(now);
        let Some(&first) = data.first() else {
            self.stats.on_drop(DropCause::Malformed);
            return;
        };
        if stun::looks_like_stun(first) {
            match stun::decode(&data) {
                Ok(Control::Probe(txid)) => self.send_control(&Control::ProbeReply(txid, Some(from))),
                Ok(Control::ProbeReply(txid, _)) => {
                    if let Some(rtt) = liveness.on_reply(&txid, now) {
                        self.stats.set_rtt(rtt);
                    }
                }
                Ok(Control::Goodbye) => {
                    self.shutdown(CloseReason::PeerClosed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad control message");
                    self.stats.on_drop(DropCause::Malformed);
                }
            }
            return;
        }
        if data.len() > self.max_packet_size {
            tracing::debug!(
                len = data.len(),
                max = self.max_packet_size,
                "dropping oversized datagram"
            );
            self.stats.on_drop(DropCause::Malformed);
            return;
        }
        match Packet::parse(data) {
            Ok(packet) => {
                self.stats.on_received(&packet, now);
                if self.inbox.push(packet) == Pushed::DroppedOldest {
                    self.stats.on_drop(DropCause::ReceiveQueueFull);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping datagram that is not RTP/RTCP");
                self.stats.on_drop(DropCause::Malformed);
            }
        }
    }
}

async fn drive(shared: Arc<Shared>, mut liveness: Liveness, started: Instant) {
    let mut closed = shared.close.subscribe();
    let mut buf = BytesMut::new();
    let mut announced_ready = false;
    loop {
        if shared.close.is_closed() {
            break;
        }
        let deadline = liveness.next_deadline();
        tokio::select! {
            _ = closed.changed() => continue,
            r = shared.socket.readable() => {
                if let Err(e) = r {
                    shared.shutdown(CloseReason::Transport(format!("UDP socket failed: {e}")));
                    break;
                }
                shared.drain(&mut buf, &mut liveness);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        loop {
            match liveness.poll(now) {
                Action::Probe(txid) => shared.send_control(&Control::Probe(txid)),
                Action::Dead(silent) => {
                    shared.shutdown(CloseReason::LivenessTimeout(silent));
                    return;
                }
                Action::Wait => break,
            }
        }
        if !announced_ready && liveness.is_ready() {
            announced_ready = true;
            shared.stats.set_setup_time(started.elapsed());
            shared.ready.send_replace(true);
        }
    }
}

#[async_trait]
impl RelayLink for RtpUdpLink {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }

    fn mode(&self) -> Mode {
        Mode::Unreliable
    }

    fn max_packet_size(&self) -> usize {
        self.shared.max_packet_size
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &self.shared;
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        if let Err(e) = check_size(packet.len(), s.max_packet_size) {
            s.stats.on_drop(DropCause::TooLarge);
            return Err(e);
        }
        // The kernel send buffer is this transport's send queue: when it is
        // full the packet being sent is dropped (counted); the sender never
        // waits.
        match s.socket.try_send_to(packet.bytes(), s.peer) {
            Ok(_) => s.stats.on_sent(&packet),
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(peer = %s.peer, error = %e, "UDP send failed");
                }
                s.stats.on_drop(DropCause::SendQueueFull);
            }
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Packet, LinkError> {
        self.shared.inbox.pop().await.map_err(LinkError::Closed)
    }

    fn stats(&self) -> LinkStats {
        self.shared.stats.snapshot()
    }

    fn close(&self) {
        if self.shared.shutdown(CloseReason::Local) {
            // Twice: one loss on the way should not cost the peer a whole
            // liveness timeout.
            self.shared.send_control(&Control::Goodbye);
            self.shared.send_control(&Control::Goodbye);
        }
    }

    async fn closed(&self) -> CloseReason {
        self.shared.close.wait().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close.reason()
    }
}
