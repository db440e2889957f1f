//! ICE candidate gathering, done completely before the offer or answer is
//! written (no trickle: DESIGN.md, one signaling exchange).
//!
//! Host candidates are the bound sockets themselves. Server-reflexive
//! candidates come from one STUN Binding transaction (RFC 8489 section 6.2.1:
//! retransmitted with a doubling interval) per socket and configured
//! `stun:` server, on the same socket ICE will use, so the mapping the server
//! saw is the one the peer can reach. A server that does not answer within
//! the gather timeout costs its candidate, not the link.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::ice::url::{SchemeType, Url};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateServerReflexiveConfig, RTCIceCandidate,
    RTCIceCandidateInit,
};
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, TransactionId};
use rtc::stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

use crate::DcError;

/// RFC 8489 section 6.2.1: the first retransmission after RTO, 500 ms is
/// its recommended initial value.
const STUN_RTO: Duration = Duration::from_millis(500);

/// A configured STUN server, resolved.
#[derive(Debug, Clone)]
pub(crate) struct StunServer {
    pub(crate) url: String,
    pub(crate) addrs: Vec<SocketAddr>,
}

/// Parses and resolves the configured ICE server URLs. Only `stun:` is
/// spoken; anything else is refused up front rather than silently ignored.
pub(crate) async fn resolve_servers(urls: &[String]) -> Result<Vec<StunServer>, DcError> {
    let mut servers = Vec::with_capacity(urls.len());
    for raw in urls {
        // `?transport=udp` is common on STUN URLs although RFC 7064 has no
        // query part; it says nothing we do not already assume.
        let sanitized = raw.split('?').next().unwrap_or(raw);
        let url = Url::parse_url(sanitized).map_err(|e| DcError::IceServer {
            url: raw.clone(),
            why: e.to_string(),
        })?;
        if url.scheme != SchemeType::Stun {
            return Err(DcError::IceServer {
                url: raw.clone(),
                why: format!(
                    "{} servers are not supported by dc-relay (only stun:); relay through a host or \
                     server-reflexive candidate instead",
                    url.scheme
                ),
            });
        }
        let host = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| DcError::IceServer {
                url: raw.clone(),
                why: format!("cannot resolve {host}: {e}"),
            })?
            .collect();
        servers.push(StunServer {
            url: raw.clone(),
            addrs,
        });
    }
    Ok(servers)
}

/// The host candidate for a bound socket.
pub(crate) fn host_candidate(local: SocketAddr) -> Result<RTCIceCandidateInit, DcError> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(DcError::webrtc("creating a host candidate"))?;
    RTCIceCandidate::from(&c)
        .to_json()
        .map_err(DcError::webrtc("encoding a host candidate"))
}

fn srflx_candidate(mapped: SocketAddr, base: SocketAddr) -> Result<RTCIceCandidateInit, DcError> {
    let c = CandidateServerReflexiveConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: mapped.ip().to_string(),
            port: mapped.port(),
            component: 1,
            ..Default::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        ..Default::default()
    }
    .new_candidate_server_reflexive()
    .map_err(DcError::webrtc("creating a server-reflexive candidate"))?;
    RTCIceCandidate::from(&c)
        .to_json()
        .map_err(DcError::webrtc("encoding a server-reflexive candidate"))
}

/// Asks `server` which address it sees `socket` (whose host candidate is
/// `local`) as; `None` if it does not answer within `timeout`.
pub(crate) async fn server_reflexive(
    socket: &UdpSocket,
    local: SocketAddr,
    server: &StunServer,
    timeout: Duration,
) -> Result<Option<RTCIceCandidateInit>, DcError> {
    let Some(&to) = server.addrs.iter().find(|a| a.is_ipv4() == local.is_ipv4()) else {
        return Ok(None);
    };
    let mut request = Message::new();
    request
        .build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .map_err(|e| DcError::IceServer {
            url: server.url.clone(),
            why: e.to_string(),
        })?;
    let deadline = Instant::now() + timeout;
    let mut rto = STUN_RTO;
    let mut buf = vec![0u8; 1500];
    while Instant::now() < deadline {
        // Best effort: a failed send is a lost request, retried below.
        let _ = socket.send_to(&request.raw, to).await;
        let wait = rto.min(deadline.saturating_duration_since(Instant::now()));
        let until = tokio::time::Instant::now() + wait;
        loop {
            let Ok(received) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await else {
                break;
            };
            let Ok((n, from)) = received else { continue };
            if from != to {
                continue;
            }
            let mut response = Message::new();
            if response.unmarshal_binary(&buf[..n]).is_err()
                || response.transaction_id != request.transaction_id
                || response.typ != BINDING_SUCCESS
            {
                continue;
            }
            let mut mapped = XorMappedAddress::default();
            if mapped.get_from(&response).is_err() {
                tracing::warn!(server = %server.url, "STUN response without XOR-MAPPED-ADDRESS");
                return Ok(None);
            }
            let mapped = SocketAddr::new(mapped.ip, mapped.port);
            tracing::debug!(server = %server.url, %local, %mapped, "server-reflexive candidate");
            return srflx_candidate(mapped, local).map(Some);
        }
        rto *= 2;
    }
    tracing::warn!(server = %server.url, %local, "STUN server did not answer; no server-reflexive candidate");
    Ok(None)
}
