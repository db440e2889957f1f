//! Establishing a link: binding the socket, the offer/answer exchange with
//! its SRTP keys, and the wait for the first probe reply.

use std::net::SocketAddr;
use std::time::Instant;

use relay_core::{Mode, RtpUdpDescription, SrtpParameters};
use tokio::net::UdpSocket;

use crate::link::{Keys, RtpUdpLink};
use crate::srtp::{self, MasterKey};
use crate::{RtpUdpConfig, RtpUdpError};
use relay_core::udp::batch::BatchSocket;

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
