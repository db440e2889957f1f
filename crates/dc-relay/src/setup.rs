//! Establishing a link: sockets, candidates, the peer connection, the
//! offer/answer exchange, and the wait for the channel to open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_core::{Mode, SdpType, W3cDescription};
use rtc::data_channel::RTCDataChannelInit;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::{SctpMaxMessageSize, SettingEngineBuilder};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use tokio::net::UdpSocket;

use crate::driver::{Driver, DriverConfig, Role, Socket};
use crate::gather;
use crate::link::{Channel, CloseOnDrop, DcLink, Shared};
use crate::{DcConfig, DcError, MAX_MESSAGE_SIZE};

/// SCTP packet budget: one 1,400-byte message plus the 12-byte common
/// header and 16-byte DATA chunk header, so every relay-sized RTP packet is
/// one DATA chunk. The `rtc` default (1,191, sized for TURN over IPv6) would
/// split a 1,200-byte packet in two.
const SCTP_MTU: u32 = (relay_core::MIN_MAX_PACKET_SIZE + 12 + 16) as u32;

/// Bounds the whole of setup (ICE, DTLS, SCTP, DCEP) when the liveness
/// timeout is shorter: a lost DTLS flight or SCTP INIT is retransmitted
/// after 1 s, so a shorter bound would turn one lost packet into a failure.
const MIN_SETUP_TIMEOUT: Duration = Duration::from_secs(5);

async fn bind_sockets(config: &DcConfig) -> Result<Vec<Socket>, DcError> {
    if config.bind_addrs.is_empty() {
        return Err(DcError::BadBindAddress {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            why: "no bind address configured",
        });
    }
    let mut sockets = Vec::with_capacity(config.bind_addrs.len());
    for &addr in &config.bind_addrs {
        let advertised_ip = config.advertise_ip.unwrap_or(addr.ip());
        if advertised_ip.is_unspecified() {
            return Err(DcError::BadBindAddress {
                addr,
                why: "unspecified address; bind each interface address the peer can reach, or set an \
                      advertised IP",
            });
        }
        let bind_err = |source| DcError::Bind { addr, source };
        let std_socket =
            relay_core::udp::bind_udp_in(addr, config.media_ports, config.socket_buffer).map_err(bind_err)?;
        let udp = UdpSocket::from_std(std_socket).map_err(bind_err)?;
        let local = udp.local_addr().map_err(bind_err)?;
        // The connection only ever sees the advertised address: it is the
        // candidate, and the local address of everything this socket reads
        // and writes, so ICE matches traffic to its candidate.
        sockets.push(Socket::new(udp, SocketAddr::new(advertised_ip, local.port())));
    }
    Ok(sockets)
}

/// Sockets, gathered candidates and a configured peer connection.
async fn prepare(config: &DcConfig) -> Result<(RTCPeerConnection, Vec<Socket>), DcError> {
    let servers = gather::resolve_servers(&config.ice_servers).await?;
    let sockets = bind_sockets(config).await?;
    let mut candidates = Vec::new();
    for s in &sockets {
        candidates.push(gather::host_candidate(s.local)?);
    }
    for s in &sockets {
        for server in &servers {
            if let Some(c) = gather::server_reflexive(&s.udp, s.local, server, config.gather_timeout).await? {
                candidates.push(c);
            }
        }
    }

    let keepalive = config.keepalive_interval();
    let settings = SettingEngineBuilder::new()
        // Liveness (DESIGN.md) through ICE consent freshness (RFC 7675):
        // a check every keepalive interval; a pair silent for the
        // disconnected timeout closes the link. "Failed" adds nothing.
        .with_ice_timeouts(
            Some(config.ice_disconnected_timeout()),
            Some(config.liveness_timeout),
            Some(keepalive),
        )
        // Candidates are IP addresses we chose; mDNS would only add
        // multicast traffic and hide them (RFC 8828 does not apply to
        // server-to-server relaying).
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Answer `a=setup:passive`: as DTLS server the answerer's SCTP
        // endpoint is the one `rtc` gives a server config, so it accepts the
        // offerer's INIT and sends none of its own. As DTLS client (the
        // default, `active`) it only initiates and refuses any INIT, and a
        // peer that sends one too (Chromium, aiortc: RFC 8841 section 9.3
        // has both ends initiate) gets its INIT dropped; if the peer also
        // missed ours (Chromium starts SCTP after DTLS and drops what came
        // before), the channel waits a full RTO of 1 s for our retransmission.
        // RFC 8829 section 5.3.1 lets an answerer take either role.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // What the relay can pass on (see MAX_MESSAGE_SIZE), not RFC 8841's 64 KiB.
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(MAX_MESSAGE_SIZE as u32))
        .with_sctp_mtu(SCTP_MTU)
        .with_sctp_max_receive_buffer_size(config.sctp_receive_window)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .build(Instant::now())
        .map_err(DcError::webrtc("creating the peer connection"))?;
    for c in candidates {
        pc.add_local_candidate(c)
            .map_err(DcError::webrtc("adding a local candidate"))?;
    }
    Ok((pc, sockets))
}

fn driver_config(config: &DcConfig) -> DriverConfig {
    DriverConfig {
        send_buffer_limit: config.send_buffer_limit,
        send_queue: config.send_queue(),
        receive_queue: config.receive_queue,
        liveness_timeout: config.liveness_timeout,
        stats_interval: config.keepalive_interval(),
        clock_rates: config.clock_rates.clone(),
        max_delay: config.max_delay,
    }
}

fn setup_timeout(config: &DcConfig) -> Duration {
    config.liveness_timeout.max(MIN_SETUP_TIMEOUT)
}

fn w3c(kind: SdpType, desc: RTCSessionDescription) -> W3cDescription {
    W3cDescription { kind, sdp: desc.sdp }
}

/// The offering side before the answer: sockets bound, candidates
/// gathered, the channel created, the offer written.
pub struct DcOfferer {
    pc: RTCPeerConnection,
    sockets: Vec<Socket>,
    shared: Arc<Shared>,
    channel: rtc::data_channel::RTCDataChannelId,
    offer: W3cDescription,
    config: DcConfig,
    started: Instant,
}

impl std::fmt::Debug for DcOfferer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcOfferer")
            .field("local", &self.shared.local_addrs)
            .finish_non_exhaustive()
    }
}

impl DcOfferer {
    /// Binds, gathers every candidate (non-trickle) and creates the data
    /// channel: ordered and reliable for [`Mode::Reliable`], unordered with
    /// maxRetransmits=0 for [`Mode::Unreliable`], unordered with
    /// maxPacketLifeTime = [`DcConfig::max_delay`] for [`Mode::Repair`].
    pub async fn bind(config: DcConfig, mode: Mode) -> Result<DcOfferer, DcError> {
        let started = Instant::now();
        config.check()?;
        let init = match mode {
            Mode::Reliable => RTCDataChannelInit {
                ordered: true,
                ..Default::default()
            },
            // Never retransmitted: a lost packet is lost, and nothing behind
            // it waits for its repair (the outbox still drops what waited
            // past the budget before SCTP took it).
            Mode::Unreliable => RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            },
            // RFC 3758 timed reliability: SCTP retransmits a lost packet
            // while it can still arrive within the budget and abandons it
            // (FORWARD TSN) when the lifetime ends: the data channel's own
            // repair within a latency budget, what `repair` mode adds to
            // the other transports.
            Mode::Repair => RTCDataChannelInit {
                ordered: false,
                max_packet_life_time: Some(config.packet_life_time()),
                ..Default::default()
            },
            other => return Err(DcError::UnsupportedMode(other)),
        };
        let (mut pc, sockets) = prepare(&config).await?;
        let channel = pc
            .create_data_channel(&config.label, Some(init))
            .map_err(DcError::webrtc("creating the data channel"))?
            .id();
        let offer = pc
            .create_offer(None)
            .map_err(DcError::webrtc("creating the offer"))?;
        pc.set_local_description(Instant::now(), offer.clone())
            .map_err(DcError::webrtc("applying the offer"))?;
        let shared = Arc::new(Shared::new(
            config.max_packet_size,
            sockets.iter().map(|s| s.local).collect(),
        ));
        // The channel's queues exist before anything can arrive.
        let _ = shared.channel.set(Channel::new(
            mode,
            config.send_queue(),
            config.receive_queue,
            config.clock_rates.clone(),
        ));
        Ok(DcOfferer {
            pc,
            sockets,
            shared,
            channel,
            offer: w3c(SdpType::Offer, offer),
            config,
            started,
        })
    }

    /// The offer to signal: W3C JSON form, every candidate included.
    pub fn offer(&self) -> W3cDescription {
        self.offer.clone()
    }

    /// Applies the answer and returns once the channel is open on both
    /// sides: the answerer has acknowledged it (DCEP `DATA_CHANNEL_ACK`,
    /// RFC 8832 section 5.2).
    pub async fn connect(mut self, answer: &W3cDescription) -> Result<DcLink, DcError> {
        if answer.kind != SdpType::Answer {
            return Err(DcError::BadDescription {
                side: "answer",
                why: "type is \"offer\", expected \"answer\"".into(),
            });
        }
        let desc =
            RTCSessionDescription::answer(answer.sdp.clone()).map_err(|e| DcError::BadDescription {
                side: "answer",
                why: e.to_string(),
            })?;
        self.pc
            .set_remote_description(Instant::now(), desc)
            .map_err(|e| DcError::BadDescription {
                side: "answer",
                why: e.to_string(),
            })?;
        let guard = CloseOnDrop(self.shared.clone());
        let driver = Driver::new(
            self.pc,
            self.sockets,
            self.shared.clone(),
            Role::Offerer(self.channel),
            driver_config(&self.config),
            self.started,
        );
        tokio::spawn(driver.run());
        self.shared.wait_ready(setup_timeout(&self.config)).await?;
        Ok(DcLink::new(guard))
    }
}

/// The answering side: the offer applied, candidates gathered, the answer
/// written, and already reachable by the offerer.
#[derive(Debug)]
pub struct DcAnswerer {
    guard: CloseOnDrop,
    answer: W3cDescription,
    timeout: Duration,
}

impl DcAnswerer {
    /// Binds, gathers every candidate, applies `offer` and answers. The
    /// connection runs from here on; [`accept`](DcAnswerer::accept) waits
    /// for the offerer's channel.
    pub async fn bind(config: DcConfig, offer: &W3cDescription) -> Result<DcAnswerer, DcError> {
        let started = Instant::now();
        if offer.kind != SdpType::Offer {
            return Err(DcError::BadDescription {
                side: "offer",
                why: "type is \"answer\", expected \"offer\"".into(),
            });
        }
        config.check()?;
        let desc = RTCSessionDescription::offer(offer.sdp.clone()).map_err(|e| DcError::BadDescription {
            side: "offer",
            why: e.to_string(),
        })?;
        let (mut pc, sockets) = prepare(&config).await?;
        pc.set_remote_description(Instant::now(), desc)
            .map_err(|e| DcError::BadDescription {
                side: "offer",
                why: e.to_string(),
            })?;
        let answer = pc
            .create_answer(None)
            .map_err(DcError::webrtc("creating the answer"))?;
        pc.set_local_description(Instant::now(), answer.clone())
            .map_err(DcError::webrtc("applying the answer"))?;
        let shared = Arc::new(Shared::new(
            config.max_packet_size,
            sockets.iter().map(|s| s.local).collect(),
        ));
        let guard = CloseOnDrop(shared.clone());
        let driver = Driver::new(
            pc,
            sockets,
            shared,
            Role::Answerer,
            driver_config(&config),
            started,
        );
        tokio::spawn(driver.run());
        Ok(DcAnswerer {
            guard,
            answer: w3c(SdpType::Answer, answer),
            timeout: setup_timeout(&config),
        })
    }

    /// The answer to signal back (W3C JSON form).
    pub fn answer(&self) -> W3cDescription {
        self.answer.clone()
    }

    /// Returns once the offerer's data channel is open, relaying it in the
    /// mode it was opened with (ordered → [`Mode::Reliable`], unordered with
    /// maxRetransmits=0 → [`Mode::Unreliable`]).
    pub async fn accept(self) -> Result<DcLink, DcError> {
        self.guard.0.wait_ready(self.timeout).await?;
        Ok(DcLink::new(self.guard))
    }
}
