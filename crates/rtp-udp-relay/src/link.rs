//! The socket loop: one task per link owns the receive side and the
//! keepalive clock; `send` writes to the socket directly.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use relay_core::backend::check_size;
use relay_core::{
    CloseReason, CloseSignal, DropCause, LinkError, LinkStats, Mode, Overflow, Packet, PacketKind,
    PacketQueue, Pushed, RelayLink, RtpUdpDescription, SrtpParameters, StatsRecorder, Transport,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::batch::BatchSocket;
use crate::liveness::{Action, Liveness};
use crate::resend::SentWire;
use crate::srtp::{self, ControlAuth, MasterKey, SrtpContext, SrtpError};
use crate::stun::{self, Control, IntegrityKey};
use crate::{RtpUdpConfig, RtpUdpError};

/// Datagrams taken per wake-up before the loop checks its clock again:
/// a few `recvmmsg` calls' worth (more with GRO, which packs up to 64 in
/// one buffer).
const RECV_BUDGET: usize = 1024;
/// Received packets are copied out of the receive buffers into chunks this
/// large; one allocation serves about 200 full-size packets.
const RECV_CHUNK: usize = 256 * 1024;
/// Packets from addresses other than the peer's that an srtp link tries
/// to authenticate per second (to latch to a NAT's new mapping); beyond
/// it they are dropped unread as `unknown_source`, so a flood from
/// strangers costs no more than a few hundred AES-GCM checks a second. A
/// rebinding peer's media, whose first packet authenticates, never
/// notices.
const LATCH_TRIES_PER_SECOND: u32 = 256;

/// What SRTP protection adds at most: the GCM tag, plus SRTCP's E flag and
/// index word. The application's packet limit shrinks by this much so the
/// datagram on the wire stays within the configured size.
const SRTP_OVERHEAD: usize = srtp::TAG_LEN + 4;

/// This side's protection in one link's mode: `None` for plain RTP.
fn local_key(mode: Mode) -> Result<Option<MasterKey>, RtpUdpError> {
    match mode {
        Mode::Unreliable => Ok(None),
        Mode::Srtp => Ok(Some(MasterKey::generate())),
        other => Err(RtpUdpError::UnsupportedMode(other)),
    }
}

/// The peer's key from its description, checked against our mode.
fn peer_key(mode: Mode, peer: &RtpUdpDescription) -> Result<Option<MasterKey>, RtpUdpError> {
    match (mode, &peer.srtp) {
        (Mode::Srtp, Some(p)) => MasterKey::from_signaled(&p.suite, &p.key)
            .map(Some)
            .map_err(|e| RtpUdpError::BadSrtp(e.to_string())),
        (Mode::Srtp, None) => Err(RtpUdpError::BadSrtp(
            "mode is srtp but the peer's description carries no srtp key".into(),
        )),
        (_, Some(_)) => Err(RtpUdpError::BadSrtp(format!(
            "the peer's description carries an srtp key but the mode is {mode}; ask for mode srtp"
        ))),
        (_, None) => Ok(None),
    }
}

fn bind(config: &RtpUdpConfig) -> Result<(BatchSocket, SocketAddr), RtpUdpError> {
    let bind_err = |source| RtpUdpError::Bind {
        addr: config.bind,
        source,
    };
    let std_socket = relay_core::udp::bind_udp_in(config.bind, config.media_ports, config.socket_buffer)
        .map_err(bind_err)?;
    let socket = UdpSocket::from_std(std_socket)
        .and_then(BatchSocket::new)
        .map_err(bind_err)?;
    let local = socket.socket().local_addr().map_err(bind_err)?;
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

fn describe(config: &RtpUdpConfig, addr: SocketAddr, key: Option<&MasterKey>) -> RtpUdpDescription {
    RtpUdpDescription {
        addr,
        ssrcs: config.ssrcs.clone(),
        srtp: key.map(|k| SrtpParameters {
            suite: srtp::SUITE.to_string(),
            key: k.to_base64(),
        }),
    }
}

/// The offering side before the answer: a bound socket.
#[derive(Debug)]
pub struct RtpUdpOfferer {
    socket: BatchSocket,
    advertised: SocketAddr,
    config: RtpUdpConfig,
    mode: Mode,
    key: Option<MasterKey>,
    started: Instant,
}

impl RtpUdpOfferer {
    /// Binds the socket the offer will advertise. `mode` is
    /// [`Mode::Unreliable`] (plain RTP) or [`Mode::Srtp`] (a fresh master
    /// key goes into the offer).
    pub async fn bind(config: RtpUdpConfig, mode: Mode) -> Result<RtpUdpOfferer, RtpUdpError> {
        let started = Instant::now();
        let key = local_key(mode)?;
        let (socket, advertised) = bind(&config)?;
        Ok(RtpUdpOfferer {
            socket,
            advertised,
            config,
            mode,
            key,
            started,
        })
    }

    /// The offer to signal.
    pub fn offer(&self) -> RtpUdpDescription {
        describe(&self.config, self.advertised, self.key.as_ref())
    }

    /// Applies the answer and returns once a probe's reply came back.
    pub async fn connect(self, answer: &RtpUdpDescription) -> Result<RtpUdpLink, RtpUdpError> {
        check_peer(answer.addr, self.advertised)?;
        let keys = Keys::pair(self.key, peer_key(self.mode, answer)?);
        let link = RtpUdpLink::start(
            self.socket,
            answer.addr,
            &self.config,
            self.mode,
            keys,
            self.started,
        );
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
    key: Option<MasterKey>,
}

impl RtpUdpAnswerer {
    /// Binds, and starts probing the address in `offer`. In [`Mode::Srtp`]
    /// the offer must carry the offerer's key ([`RtpUdpError::BadSrtp`]
    /// otherwise) and the answer carries a fresh one of ours.
    pub async fn bind(
        config: RtpUdpConfig,
        mode: Mode,
        offer: &RtpUdpDescription,
    ) -> Result<RtpUdpAnswerer, RtpUdpError> {
        let started = Instant::now();
        let key = local_key(mode)?;
        let remote = peer_key(mode, offer)?;
        let (socket, advertised) = bind(&config)?;
        check_peer(offer.addr, advertised)?;
        let keys = Keys::pair(key.clone(), remote);
        let link = RtpUdpLink::start(socket, offer.addr, &config, mode, keys, started);
        Ok(RtpUdpAnswerer {
            link,
            advertised,
            config,
            key,
        })
    }

    /// The answer to signal back.
    pub fn answer(&self) -> RtpUdpDescription {
        describe(&self.config, self.advertised, self.key.as_ref())
    }

    /// Returns once a probe's reply came back from the offerer.
    pub async fn accept(self) -> Result<RtpUdpLink, RtpUdpError> {
        self.link.ready().await?;
        Ok(self.link)
    }
}

/// SRTP state of a link in srtp mode: ours protects what we send, the
/// peer's unprotects what arrives.
struct Keys {
    outbound: SrtpContext,
    inbound: SrtpContext,
    goodbye: GoodbyeAuth,
    keepalive: KeepaliveAuth,
}

/// Signs our goodbye and checks the peer's.
struct GoodbyeAuth {
    ours: ControlAuth,
    peer: ControlAuth,
}

/// MESSAGE-INTEGRITY-SHA256 keys of the probes and replies: ours signs
/// what we send, the peer's checks what arrives.
struct KeepaliveAuth {
    ours: IntegrityKey,
    peer: IntegrityKey,
}

impl Keys {
    fn pair(local: Option<MasterKey>, peer: Option<MasterKey>) -> Option<Keys> {
        match (local, peer) {
            (Some(l), Some(p)) => Some(Keys {
                outbound: SrtpContext::new(&l),
                inbound: SrtpContext::new(&p),
                goodbye: GoodbyeAuth {
                    ours: ControlAuth::new(&l),
                    peer: ControlAuth::new(&p),
                },
                keepalive: KeepaliveAuth {
                    ours: srtp::keepalive_key(&l),
                    peer: srtp::keepalive_key(&p),
                },
            }),
            _ => None,
        }
    }
}

struct Shared {
    socket: BatchSocket,
    local: SocketAddr,
    /// Where the peer is: the signaled address until a latch moves it.
    peer: Mutex<SocketAddr>,
    signaled: SocketAddr,
    /// Plain mode with `latch`: the first packet heard fixes the peer.
    latch_first: bool,
    /// Something authentic was heard from the peer (plain mode: anything;
    /// its latch is spent then).
    heard: AtomicBool,
    /// Start of the current second and the latch tries in it.
    latch_tries: Mutex<(Instant, u32)>,
    mode: Mode,
    /// `Some` in srtp mode; `send` runs on any task, hence the lock (held
    /// for one packet's encryption, never across an await).
    outbound: Option<Mutex<SrtpContext>>,
    /// `Some` in srtp mode with a resend window: what was sent, protected,
    /// for [`RelayLink::resend`].
    sent: Option<Mutex<SentWire>>,
    /// `Some` in srtp mode: goodbyes are signed and checked.
    goodbye: Option<GoodbyeAuth>,
    /// `Some` in srtp mode: probes and replies carry and need
    /// MESSAGE-INTEGRITY-SHA256, and only authenticated packets count as
    /// hearing from the peer.
    keepalive: Option<KeepaliveAuth>,
    stats: StatsRecorder,
    inbox: PacketQueue,
    close: CloseSignal,
    ready: watch::Sender<bool>,
    /// Largest datagram on the wire (the configured packet size).
    max_datagram: usize,
    /// Largest packet the application may send: `max_datagram` less the
    /// SRTP overhead in srtp mode.
    max_packet_size: usize,
    warned_unknown_source: relay_core::backend::WarnOnce,
    warned_unauthenticated: relay_core::backend::WarnOnce,
    warned_unauthenticated_control: relay_core::backend::WarnOnce,
}

/// An established rtp-udp link; see the crate docs.
pub struct RtpUdpLink {
    shared: Arc<Shared>,
}

impl fmt::Debug for RtpUdpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtpUdpLink")
            .field("local", &self.shared.local)
            .field("peer", &self.shared.peer())
            .field("closed", &self.shared.close.reason())
            .finish()
    }
}

impl RtpUdpLink {
    fn start(
        socket: BatchSocket,
        peer: SocketAddr,
        config: &RtpUdpConfig,
        mode: Mode,
        keys: Option<Keys>,
        started: Instant,
    ) -> RtpUdpLink {
        let local = socket.socket().local_addr().unwrap_or(config.bind);
        let (outbound, inbound, goodbye, keepalive) = match keys {
            Some(k) => (
                Some(Mutex::new(k.outbound)),
                Some(k.inbound),
                Some(k.goodbye),
                Some(k.keepalive),
            ),
            None => (None, None, None, None),
        };
        let overhead = if outbound.is_some() { SRTP_OVERHEAD } else { 0 };
        let sent = (outbound.is_some() && !config.resend_window.is_zero())
            .then(|| Mutex::new(SentWire::new(config.resend_window)));
        // The configured size bounds the datagram on the wire, except that
        // the application may always send 1,400 bytes (the relay contract).
        let max_packet_size = config
            .max_packet_size
            .saturating_sub(overhead)
            .max(relay_core::MIN_MAX_PACKET_SIZE);
        let shared = Arc::new(Shared {
            socket,
            local,
            peer: Mutex::new(peer),
            signaled: peer,
            latch_first: config.latch,
            heard: AtomicBool::new(false),
            latch_tries: Mutex::new((Instant::now(), 0)),
            mode,
            outbound,
            sent,
            goodbye,
            keepalive,
            stats: StatsRecorder::new(Transport::RtpUdp, mode).with_clock_rates(config.clock_rates.clone()),
            inbox: PacketQueue::new(config.receive_queue, Overflow::DropOldest),
            close: CloseSignal::new(),
            ready: watch::Sender::new(false),
            max_datagram: max_packet_size + overhead,
            max_packet_size,
            warned_unknown_source: relay_core::backend::WarnOnce::default(),
            warned_unauthenticated: relay_core::backend::WarnOnce::default(),
            warned_unauthenticated_control: relay_core::backend::WarnOnce::default(),
        });
        let liveness = Liveness::new(
            Instant::now(),
            config.liveness_timeout,
            config.keepalive_interval_or_default(),
            rand::random(),
        );
        tokio::spawn(drive(shared.clone(), liveness, inbound, started));
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
                CloseReason::LivenessTimeout(waited) => Err(RtpUdpError::NoPeer { peer: self.shared.peer(), waited }),
                other => Err(RtpUdpError::Closed(other)),
            },
        }
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The peer's address: the signaled one, or where the link latched.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer()
    }
}

impl Drop for RtpUdpLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Every lock here guards plain bookkeeping held for one packet; a panic
/// elsewhere leaves it as consistent as any other moment's.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn peer(&self) -> SocketAddr {
        *lock(&self.peer)
    }

    /// Sends `wire` (the form of `packet` on the wire) to the peer. The
    /// kernel send buffer is this transport's send queue: when it is full
    /// the packet is dropped (counted); the sender never waits.
    fn put_on_wire(&self, wire: &[u8], packet: &Packet) {
        self.put_on_wire_sized(wire, packet, packet.len());
    }

    /// [`put_on_wire`](Self::put_on_wire), counting `len` bytes sent:
    /// the size of the packet `packet` only names (a resend by number).
    fn put_on_wire_sized(&self, wire: &[u8], packet: &Packet, len: usize) {
        let peer = self.peer();
        match self.socket.socket().try_send_to(wire, peer) {
            Ok(_) => self.stats.on_sent_sized(packet, len),
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(%peer, error = %e, "UDP send failed");
                }
                self.stats.on_drop(DropCause::SendQueueFull);
            }
        }
    }

    /// Whether a packet from `from`, not the peer's address, may be looked
    /// at as a candidate for latching: always in srtp mode (only one that
    /// authenticates moves the peer), in plain mode only with `latch` and
    /// before anything was heard.
    fn may_latch(&self) -> bool {
        if self.keepalive.is_none() {
            return self.latch_first && !self.heard.load(Ordering::Relaxed);
        }
        let mut tries = self.latch_tries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(tries.0) >= std::time::Duration::from_secs(1) {
            *tries = (now, 0);
        }
        tries.1 += 1;
        tries.1 <= LATCH_TRIES_PER_SECOND
    }

    /// A datagram from an address that is not the peer's, and did not
    /// prove to be the peer's: counted as `unknown_source`, as strict
    /// filtering would have.
    fn stranger(&self, from: SocketAddr) {
        if self.warned_unknown_source.first() {
            tracing::warn!(%from, expected = %self.peer(), "dropping packets from an address that is not the peer's");
        }
        self.stats.on_drop(DropCause::UnknownSource);
    }

    /// The peer is at `from` from now on.
    fn latch_to(&self, from: SocketAddr, why: &'static str) {
        let old = std::mem::replace(&mut *self.peer.lock().unwrap_or_else(|e| e.into_inner()), from);
        if old != from {
            self.stats.on_peer_address_change();
            tracing::info!(local = %self.local, %old, new = %from, signaled = %self.signaled, why, "peer address changed: latched");
        }
    }

    fn shutdown(&self, reason: CloseReason) -> bool {
        if !self.close.close(reason.clone()) {
            return false;
        }
        self.inbox.close(reason.clone());
        tracing::info!(local = %self.local, peer = %self.peer(), %reason, "rtp-udp link closed");
        true
    }

    fn send_control(&self, msg: &Control) {
        self.send_control_to(msg, self.peer());
    }

    fn send_control_to(&self, msg: &Control, to: SocketAddr) {
        let wire = match (&self.keepalive, msg) {
            (Some(auth), Control::Probe(_) | Control::ProbeReply(..)) => {
                stun::encode_with_integrity(msg, &auth.ours)
            }
            _ => stun::encode(msg),
        };
        // Best effort: a lost probe is retried by the schedule, a lost
        // goodbye falls back to the liveness timeout.
        if let Err(e) = self.socket.socket().try_send_to(&wire, to) {
            tracing::debug!(peer = %to, error = %e, "control message not sent");
        }
    }

    /// Takes what the socket holds, a `recvmmsg` at a time, up to
    /// [`RECV_BUDGET`] datagrams; each is screened, copied out of the
    /// receive buffers into `arena` (one allocation per [`RECV_CHUNK`])
    /// and handled in arrival order.
    fn drain(&self, arena: &mut BytesMut, liveness: &mut Liveness, inbound: &mut Option<SrtpContext>) {
        let mut taken = 0;
        while taken < RECV_BUDGET {
            let received = self.socket.recv(|datagram, from| {
                let (shape, new_source) = match self.screen(datagram, from) {
                    Ok(screened) => screened,
                    Err(cause) => {
                        // Never copied: a flood of garbage allocates nothing.
                        self.stats.on_drop(cause);
                        return;
                    }
                };
                if arena.capacity() - arena.len() < datagram.len() {
                    arena.reserve(RECV_CHUNK.max(datagram.len()));
                }
                arena.extend_from_slice(datagram);
                let data = arena.split();
                self.on_datagram(data, shape, from, new_source, liveness, inbound);
            });
            match received {
                Ok(got) if got.emptied => return,
                Ok(got) => taken += got.datagrams.max(1),
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

    /// Why a datagram is dropped before anything else looks at it. Cheap
    /// checks first, in the order every backend uses: size, then whether
    /// the bytes can be ours at all, then the source. Only the peer's
    /// plausible packets are parsed or decrypted. `true` with the shape:
    /// the packet is from a new address that it may latch to.
    fn screen(&self, data: &[u8], from: SocketAddr) -> Result<(Shape, bool), DropCause> {
        if data.len() > self.max_datagram {
            tracing::trace!(len = data.len(), max = self.max_datagram, %from, "dropping oversized datagram");
            return Err(DropCause::TooLarge);
        }
        let Some(shape) = shape(data) else {
            tracing::trace!(len = data.len(), %from, "dropping datagram that is neither RTP/RTCP nor STUN");
            return Err(DropCause::Malformed);
        };
        if from == self.peer() {
            return Ok((shape, false));
        }
        if self.may_latch() {
            return Ok((shape, true));
        }
        if self.warned_unknown_source.first() {
            tracing::warn!(%from, expected = %self.peer(), "dropping packets from an address that is not the peer's");
        }
        Err(DropCause::UnknownSource)
    }

    fn on_datagram(
        &self,
        data: BytesMut,
        shape: Shape,
        from: SocketAddr,
        new_source: bool,
        liveness: &mut Liveness,
        inbound: &mut Option<SrtpContext>,
    ) {
        let now = Instant::now();
        if self.keepalive.is_none() {
            // Plain RTP: the address is all there is to trust. With
            // `latch`, the first packet heard fixes it.
            if new_source {
                self.latch_to(from, "first packet heard (--latch)");
            }
            self.heard.store(true, Ordering::Relaxed);
            liveness.on_heard(now);
        }
        let kind = match shape {
            Shape::Stun => {
                self.on_control(&data, from, new_source, liveness, now);
                return;
            }
            Shape::Media(kind) => kind,
        };
        let data = match inbound {
            None => data.freeze(),
            Some(ctx) => {
                // RFC 5761 section 4: the header that told RTCP from RTP is
                // in the clear in SRTP and SRTCP alike; decrypted in place.
                let unprotected = match kind {
                    PacketKind::Rtcp => ctx.unprotect_rtcp_in_place(data),
                    PacketKind::Rtp => ctx.unprotect_rtp_in_place(data),
                };
                match unprotected {
                    Ok(plain) => {
                        // Authentic and not a replay: wherever it came
                        // from, that is where the peer is now (RFC 7983's
                        // comedia behaviour, safe because SRTP's replay
                        // window makes a captured packet worthless).
                        if new_source {
                            self.latch_to(from, "authenticated SRTP from a new address");
                        }
                        self.heard.store(true, Ordering::Relaxed);
                        liveness.on_heard(now);
                        plain
                    }
                    Err(_) if new_source => {
                        // A stranger's packet that is not the peer's either.
                        self.stranger(from);
                        return;
                    }
                    Err(e) => {
                        if self.warned_unauthenticated.first() {
                            tracing::warn!(%from, error = %e, "dropping media that fails SRTP checks");
                        }
                        self.stats.on_drop(DropCause::Unauthenticated);
                        return;
                    }
                }
            }
        };
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

    /// A STUN datagram from the peer's address: answer probes, take
    /// replies, honour goodbyes. In srtp mode probes and replies without a
    /// valid MESSAGE-INTEGRITY-SHA256 are dropped as `unauthenticated`,
    /// never answered and never count as hearing from the peer.
    fn on_control(
        &self,
        data: &[u8],
        from: SocketAddr,
        new_source: bool,
        liveness: &mut Liveness,
        now: Instant,
    ) {
        let msg = match stun::decode(data) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(error = %e, "bad control message");
                self.stats.on_drop(DropCause::Malformed);
                return;
            }
        };
        if new_source && !matches!(msg, Control::Probe(_) | Control::ProbeReply(..)) {
            // Only an authenticated probe or reply may come from a new
            // address; a goodbye from one is a stranger's.
            self.stranger(from);
            return;
        }
        if let (Some(auth), Control::Probe(_) | Control::ProbeReply(..)) = (&self.keepalive, &msg)
            && let Err(e) = stun::verify_integrity(data, &auth.peer)
        {
            if new_source {
                self.stranger(from);
                return;
            }
            if self.warned_unauthenticated_control.first() {
                tracing::warn!(%from, error = %e, "dropping keepalives that fail authentication: spoofed, or the peer lacks the signaled key");
            }
            self.stats.on_drop(DropCause::Unauthenticated);
            return;
        }
        match msg {
            // Answered where it came from: a peer whose NAT mapping changed
            // keeps its link alive. A probe can be replayed, so it never
            // moves the peer.
            Control::Probe(txid) => {
                // Before anything authentic was heard from the signaled
                // address, an authentic probe from elsewhere is the peer
                // behind a NAT setting up; afterwards only a reply to our
                // own probe (which cannot be replayed) or media moves it.
                if new_source && !self.heard.load(Ordering::Relaxed) {
                    self.latch_to(from, "authenticated probe during setup from a new address");
                }
                self.send_control_to(&Control::ProbeReply(txid, Some(from)), from)
            }
            Control::ProbeReply(txid, _) => match liveness.on_reply(&txid, now) {
                Some(rtt) => {
                    // A reply to a probe of ours still outstanding cannot
                    // be a replay: the peer is where it came from.
                    if new_source {
                        self.latch_to(from, "authenticated reply to our probe from a new address");
                    }
                    self.heard.store(true, Ordering::Relaxed);
                    self.stats.set_rtt(rtt)
                }
                // Late (the backlog of setup probes), duplicated or
                // replayed: it proves nothing now. Authentic, so not
                // counted as a drop; ignored.
                None => tracing::trace!(%from, "reply to a probe no longer outstanding"),
            },
            Control::Goodbye if self.goodbye.is_none() => {
                self.shutdown(CloseReason::PeerClosed);
            }
            Control::SignedGoodbye(txid, tag) => match &self.goodbye {
                Some(auth) if !auth.peer.verify(&txid, &tag) => {
                    self.stats.on_drop(DropCause::Unauthenticated);
                }
                // Plain RTP cannot check the tag and trusts the network.
                _ => {
                    self.shutdown(CloseReason::PeerClosed);
                }
            },
            Control::Goodbye => {
                // srtp mode: an unsigned goodbye may be forged.
                tracing::debug!(%from, "ignoring an unsigned goodbye on an srtp link");
                self.stats.on_drop(DropCause::Unauthenticated);
            }
        }
    }
}

/// STUN header length (RFC 8489 section 5): a shorter datagram in the STUN
/// range is a cut-off control message.
const STUN_HEADER_LEN: usize = 20;

/// What a datagram can be by its first bytes and length (RFC 7983
/// demultiplexing: 0..=3 STUN, 128..=191 RTP/RTCP, told apart by RFC 5761),
/// or `None`: checked before the source, without parsing, so garbage is
/// counted as `malformed` whoever sent it; the answer then decides how the
/// datagram is handled, so nothing classifies it twice.
fn shape(data: &[u8]) -> Option<Shape> {
    match data.first() {
        Some(&first) if stun::looks_like_stun(first) => {
            (data.len() >= STUN_HEADER_LEN).then_some(Shape::Stun)
        }
        Some(_) => relay_core::classify(data).ok().map(Shape::Media),
        None => None,
    }
}

/// What a datagram can be, from its first bytes; see [`shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A STUN message: path check, keepalive or goodbye.
    Stun,
    /// RTP or RTCP (protected in srtp mode).
    Media(PacketKind),
}

async fn drive(
    shared: Arc<Shared>,
    mut liveness: Liveness,
    mut inbound: Option<SrtpContext>,
    started: Instant,
) {
    let mut closed = shared.close.subscribe();
    let mut arena = BytesMut::new();
    let mut announced_ready = false;
    loop {
        if shared.close.is_closed() {
            break;
        }
        // The clock first: the first probe leaves at once instead of after
        // a timer tick (tokio's timer has 1 ms granularity, which was most
        // of the setup time on loopback).
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
        let deadline = liveness.next_deadline();
        tokio::select! {
            _ = closed.changed() => continue,
            r = shared.socket.socket().readable() => {
                if let Err(e) = r {
                    shared.shutdown(CloseReason::Transport(format!("UDP socket failed: {e}")));
                    break;
                }
                shared.drain(&mut arena, &mut liveness, &mut inbound);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// What a packet becomes on its way out.
enum WireForm {
    /// These bytes go on the wire.
    Send(Bytes),
    /// Not sent, and counted: SRTP refuses its index.
    Dropped,
}

impl RtpUdpLink {
    /// The size check and, in srtp mode, the protection of one packet
    /// (with the outbound context `ctx`, locked by the caller), as every
    /// send does them. A refusal is counted; `Closed` shuts the link down.
    fn wire_form(&self, packet: &Packet, ctx: Option<&mut SrtpContext>) -> Result<WireForm, LinkError> {
        let s = &self.shared;
        if let Err(e) = check_size(packet.len(), s.max_packet_size) {
            s.stats.on_drop(DropCause::TooLarge);
            return Err(e);
        }
        let Some(ctx) = ctx else {
            return Ok(WireForm::Send(packet.bytes().clone()));
        };
        let protected = match packet.kind() {
            PacketKind::Rtp => ctx.protect_rtp(packet.bytes()),
            PacketKind::Rtcp => ctx.protect_rtcp(packet.bytes()),
        };
        match protected {
            Ok(wire) => {
                if let (Some(sent), Some(seq)) = (&s.sent, packet.sequence_number()) {
                    let now = tokio::time::Instant::now().into_std();
                    lock(sent).keep(packet.ssrc(), seq, wire.clone(), now);
                }
                Ok(WireForm::Send(wire))
            }
            Err(SrtpError::WouldReuseIndex) => {
                // A duplicate or a sequence number from before the
                // replay window: the peer would refuse it anyway.
                s.stats.on_drop(DropCause::Unauthenticated);
                Ok(WireForm::Dropped)
            }
            Err(e) => {
                // Index exhaustion (the packet parsed, so it is not
                // truncated): the link cannot send safely any more.
                let reason = CloseReason::Transport(format!("SRTP: {e}"));
                s.shutdown(reason.clone());
                Err(LinkError::Closed(reason))
            }
        }
    }

    /// [`RelayLink::send`], which never waits: the kernel's send buffer
    /// is this transport's queue.
    fn send_now(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &self.shared;
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        let mut ctx = s.outbound.as_ref().map(lock);
        let form = self.wire_form(&packet, ctx.as_deref_mut());
        drop(ctx);
        if let WireForm::Send(wire) = form? {
            s.put_on_wire(&wire, &packet);
        }
        Ok(())
    }

    /// [`RelayLink::send_batch`], which never waits either: every packet
    /// is checked and protected in order under one lock, then runs of
    /// equal sizes leave in one GSO send each ([`BatchSocket::send_all`]).
    /// A packet the kernel has no room for is dropped and counted, as in
    /// `send`.
    fn send_batch_now(&self, packets: &mut Vec<Packet>) -> Result<(), LinkError> {
        let s = &self.shared;
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        // (index in `packets`, bytes on the wire), up to the first refusal.
        let mut wires: Vec<(usize, Bytes)> = Vec::with_capacity(packets.len());
        let mut refused = None;
        {
            let mut ctx = s.outbound.as_ref().map(lock);
            for (i, packet) in packets.iter().enumerate() {
                match self.wire_form(packet, ctx.as_deref_mut()) {
                    Ok(WireForm::Send(wire)) => wires.push((i, wire)),
                    Ok(WireForm::Dropped) => {}
                    Err(e) => {
                        refused = Some((i, e));
                        break;
                    }
                }
            }
        }
        let peer = s.peer();
        let mut next = wires.iter();
        s.socket
            .send_all(wires.iter().map(|(_, w)| &w[..]), peer, |result| {
                let Some((i, _)) = next.next() else { return };
                match result {
                    Ok(()) => s.stats.on_sent(&packets[*i]),
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            tracing::debug!(%peer, error = %e, "UDP send failed");
                        }
                        s.stats.on_drop(DropCause::SendQueueFull);
                    }
                }
            });
        match refused {
            None => {
                packets.clear();
                Ok(())
            }
            Some((i, e)) => {
                packets.drain(..i);
                Err(e)
            }
        }
    }
}

#[async_trait]
impl RelayLink for RtpUdpLink {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }

    fn mode(&self) -> Mode {
        self.shared.mode
    }

    fn max_packet_size(&self) -> usize {
        self.shared.max_packet_size
    }

    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        self.send_now(packet)
    }

    /// Sending never waits on this transport (see `put_on_wire`).
    fn try_send(&self, packet: Packet) -> Result<Result<(), LinkError>, Packet> {
        Ok(self.send_now(packet))
    }

    fn try_recv(&self) -> Option<Packet> {
        self.shared.inbox.try_pop()
    }

    /// In srtp mode with a resend window: `resend` puts the kept SRTP
    /// bytes on the wire, found by SSRC and sequence number.
    fn resends_by_number(&self) -> bool {
        self.shared.sent.is_some()
    }

    /// In srtp mode with a [resend window](RtpUdpConfig::resend_window),
    /// an RTP packet goes out as the SRTP bytes it was first sent as (see
    /// [`resend`](crate::resend)); one no longer kept is not sent, and
    /// counted as `drops.expired`. Anything else is a [`send`](Self::send).
    async fn resend(&self, packet: Packet) -> Result<(), LinkError> {
        let s = &self.shared;
        let (Some(sent), Some(seq)) = (&s.sent, packet.sequence_number()) else {
            return self.send(packet).await;
        };
        if let Some(reason) = s.close.reason() {
            return Err(LinkError::Closed(reason));
        }
        let now = tokio::time::Instant::now().into_std();
        let kept = lock(sent).get(packet.ssrc(), seq, now);
        match kept {
            // Counted at the size first sent (the tag is the wire's), not
            // the size of `packet`, which may be the RTP header alone
            // (`resends_by_number`).
            Some(wire) => s.put_on_wire_sized(&wire, &packet, wire.len().saturating_sub(srtp::TAG_LEN)),
            None => s.stats.on_drop(DropCause::Expired),
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Packet, LinkError> {
        self.shared.inbox.pop().await.map_err(LinkError::Closed)
    }

    /// GSO for runs of equal-size packets; see `send_batch_now`.
    async fn send_batch(&self, packets: &mut Vec<Packet>) -> Result<(), LinkError> {
        self.send_batch_now(packets)
    }

    /// The first packet as `recv` waits for it, then what else is queued,
    /// under one lock.
    async fn recv_batch(&self, out: &mut Vec<Packet>, max: usize) -> Result<usize, LinkError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.recv().await?);
        Ok(1 + self.shared.inbox.pop_batch(out, max - 1))
    }

    fn stats(&self) -> LinkStats {
        self.shared.stats.snapshot()
    }

    fn close(&self) {
        if self.shared.shutdown(CloseReason::Local) {
            // Twice: one loss on the way should not cost the peer a whole
            // liveness timeout.
            let goodbye = match &self.shared.goodbye {
                Some(auth) => {
                    let txid: stun::TransactionId = rand::random();
                    Control::SignedGoodbye(txid, auth.ours.sign(&txid))
                }
                None => Control::Goodbye,
            };
            self.shared.send_control(&goodbye);
            self.shared.send_control(&goodbye);
        }
    }

    async fn closed(&self) -> CloseReason {
        self.shared.close.wait().await
    }

    fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close.reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stun_and_rtp_shaped_datagrams_have_a_shape() {
        let rtp = relay_core::build_rtp(96, 1, 0, 0x1234, b"x");
        assert_eq!(shape(&rtp), Some(Shape::Media(PacketKind::Rtp)));
        assert_eq!(
            shape(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Some(Shape::Media(PacketKind::Rtcp))
        );
        assert_eq!(shape(&stun::encode(&Control::Probe([7; 12]))), Some(Shape::Stun));
        for garbage in [
            &[][..],
            &rtp[..11],                          // a cut RTP header
            &[0x00, 0x01, 0x00, 0x00, 0x21][..], // a cut STUN header
            &[0x16, 0xfe, 0xfd, 0, 0, 0, 0][..], // DTLS, not ours
            &[0x40; 100][..],                    // a QUIC short header / RTP version 1
            &[0xff; 1200][..],
        ] {
            assert_eq!(shape(garbage), None, "{garbage:?}");
        }
    }
}
