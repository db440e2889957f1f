//! Both ends of a link in one process, optionally through a netsim proxy:
//! what the benchmark harness (relay-bench) and tests measure.
//!
//! [`establish`] runs the same offer → answer → ready path as two relays
//! talking over HTTP signaling (the facade's own offerer and
//! [`answerers`](crate::answerers)), with the HTTP hop replaced by a direct
//! call. When a [`relay_netsim`] impairment is asked for, the exchange
//! rewrites the addresses in the offer and the answer so that every packet
//! between the two ends, in both directions, crosses the proxy:
//!
//! | transport | proxy target (the side that binds first) | offer rewritten | answer rewritten |
//! |---|---|---|---|
//! | rtp-udp | offerer | `addr` → proxy listen address | `addr` → proxy target-side address |
//! | dc | offerer | ICE candidates → proxy listen address | ICE candidates → proxy target-side address |
//! | quic | answerer (the QUIC server) | — | `addr` → proxy listen address |
//!
//! Why the target differs: the proxy needs its target when it starts, and
//! rtp-udp and dc answerers start sending (path checks, ICE checks) to the
//! offer's address the moment they bind, so the offerer's address must be
//! final before the answerer sees the offer. The QUIC server only listens,
//! so its client (the offerer) can be pointed at the proxy after the answer.
//! Each side sees exactly one address for its peer (the proxy's), so a
//! source-filtering transport accepts the proxied packets and ICE has no
//! direct path to pick instead. [`LoopbackPair::offerer_to_answerer`] says
//! which proxy [`Direction`] carries the offerer's packets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay::RelayError> {
//! use relay::loopback::{LoopbackConfig, establish};
//! use relay_core::{Mode, Packet, Transport, build_rtp};
//! use relay_netsim::ImpairmentConfig;
//!
//! let config = LoopbackConfig::default().impairment(ImpairmentConfig::default().loss(0.01), 7);
//! let pair = establish(Transport::Quic, Mode::Datagram, &config).await?;
//! pair.offerer.send(Packet::parse(build_rtp(96, 1, 0, 0x1234, b"media")).unwrap()).await.ok();
//! println!("up in {:?}, proxy {:?}", pair.setup, pair.proxy().map(|p| p.stats()));
//! pair.close().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use relay_core::{
    OfferRequest, OfferResponse, QuicAnswer, RelayLink, RtpUdpDescription, Transport, W3cDescription,
};
use relay_netsim::{Direction, ImpairmentConfig, Proxy, ProxyConfig};
use relay_signaling::{Answerer, Session};
use tokio::sync::oneshot;

use crate::backends::Exchange;
use crate::{Established, LinkOptions, RelayError};

/// How to set up a [`LoopbackPair`].
#[derive(Debug, Clone, Default)]
pub struct LoopbackConfig {
    /// Options for both ends (bind address, liveness timeout).
    pub link: LinkOptions,
    /// A netsim proxy between the ends, impairing both directions alike,
    /// with its seed; `None` for a direct path.
    pub proxy: Option<(ImpairmentConfig, u64)>,
}

impl LoopbackConfig {
    /// Puts a proxy with `impairment` (both directions) and `seed` between
    /// the ends.
    pub fn impairment(mut self, impairment: ImpairmentConfig, seed: u64) -> LoopbackConfig {
        self.proxy = Some((impairment, seed));
        self
    }

    /// Sets the options both ends use.
    pub fn link(mut self, link: LinkOptions) -> LoopbackConfig {
        self.link = link;
        self
    }
}

/// Two established ends of one link, in this process.
pub struct LoopbackPair {
    /// The offering end.
    pub offerer: Arc<dyn RelayLink>,
    /// The answering end.
    pub answerer: Arc<dyn RelayLink>,
    /// From making the offer to both ends being ready.
    pub setup: Duration,
    proxy: Option<Proxy>,
    offerer_to_answerer: Option<Direction>,
    session: Arc<dyn Session>,
}

impl std::fmt::Debug for LoopbackPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackPair")
            .field("offerer", &self.offerer)
            .field("answerer", &self.answerer)
            .field("setup", &self.setup)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl LoopbackPair {
    /// The proxy between the ends, if one was asked for.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// Which proxy direction carries packets the offerer sends (`None`
    /// without a proxy).
    pub fn offerer_to_answerer(&self) -> Option<Direction> {
        self.offerer_to_answerer
    }

    /// Closes both ends, waits (at most a second) for the answering end to
    /// see it, then stops the proxy.
    pub async fn close(self) {
        self.offerer.close();
        self.session.close();
        self.answerer.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.answerer.closed()).await;
        // The proxy threads are joined on drop, which takes well under a ms.
        drop(self.proxy);
    }
}

/// Which end the proxy forwards to (its target); the other end is its
/// client. See the module docs for why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyTarget {
    Offerer,
    Answerer,
}

fn proxy_target(transport: Transport) -> ProxyTarget {
    match transport {
        Transport::Quic => ProxyTarget::Answerer,
        Transport::RtpUdp | Transport::Dc => ProxyTarget::Offerer,
    }
}

/// Establishes a link between two ends in this process with
/// `transport` and `mode`, through a proxy if `config` asks for one.
///
/// Fails with [`RelayError::NotCompiled`] for a transport this build does
/// not have (for example `dc` in a build without the `dc` feature).
pub async fn establish(
    transport: Transport,
    mode: relay_core::Mode,
    config: &LoopbackConfig,
) -> Result<LoopbackPair, RelayError> {
    crate::check(transport, mode)?;
    let (up_tx, up_rx) = oneshot::channel::<Established>();
    let up_tx = Mutex::new(Some(up_tx));
    let sink: crate::LinkSink = Arc::new(move |e: Established| {
        if let Some(tx) = up_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(e);
        }
    });
    let answerer = crate::answerers(&config.link, sink)
        .into_iter()
        .find(|a| a.transport() == transport)
        .ok_or_else(|| RelayError::NotCompiled {
            transport,
            available: crate::join(crate::compiled_transports().iter()),
        })?;
    let exchange = InProcess {
        answerer,
        proxy: config.proxy.clone(),
        placed: Mutex::new(None),
    };

    let started = Instant::now();
    let offered = crate::backends::offer(&exchange, transport, mode, &config.link).await?;
    let placed = exchange.placed.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(placed) = placed else {
        return Err(setup_error(transport, "the answering end never answered"));
    };
    let answered = match tokio::time::timeout(config.link.liveness_timeout, up_rx).await {
        Ok(Ok(answered)) => answered,
        _ => {
            offered.link.close();
            placed.session.close();
            return Err(setup_error(
                transport,
                "the offering end is ready but the answering end never reported its link",
            ));
        }
    };
    let setup = started.elapsed();
    let offerer_to_answerer = placed.proxy.as_ref().map(|_| match proxy_target(transport) {
        // The answerer is the proxy's client: offerer → answerer is target → client.
        ProxyTarget::Offerer => Direction::Downstream,
        ProxyTarget::Answerer => Direction::Upstream,
    });
    Ok(LoopbackPair {
        offerer: offered.link,
        answerer: answered.link,
        setup,
        proxy: placed.proxy,
        offerer_to_answerer,
        session: placed.session,
    })
}

fn setup_error(transport: Transport, message: impl Into<String>) -> RelayError {
    RelayError::Setup {
        transport,
        source: message.into().into(),
    }
}

/// What the exchange left behind for [`establish`].
struct Placed {
    proxy: Option<Proxy>,
    session: Arc<dyn Session>,
}

/// The in-process "signaling": hands the offer to the answerer directly,
/// placing the proxy and rewriting addresses on the way.
struct InProcess {
    answerer: Arc<dyn Answerer>,
    proxy: Option<(ImpairmentConfig, u64)>,
    placed: Mutex<Option<Placed>>,
}

#[async_trait]
impl Exchange for InProcess {
    async fn exchange(&self, request: OfferRequest) -> Result<OfferResponse, RelayError> {
        let transport = request.transport;
        let mode = request.mode.unwrap_or(transport.default_mode());
        let answerer = self.answerer.clone();
        let forward = |offer: serde_json::Value| async move {
            let accepted = answerer
                .answer(mode, offer)
                .await
                .map_err(|e| setup_error(transport, format!("the answering end refused the offer: {e}")))?;
            Ok((accepted.answer, accepted.session))
        };
        let (answer, session, proxy) = match &self.proxy {
            Some((impairment, seed)) => {
                let (answer, session, proxy) =
                    exchange_via_proxy(transport, request.offer, impairment, *seed, forward).await?;
                (answer, session, Some(proxy))
            }
            None => {
                let (answer, session) = forward(request.offer).await?;
                (answer, session, None)
            }
        };
        *self.placed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Placed { proxy, session });
        Ok(OfferResponse {
            id: "loopback".to_string(),
            answer,
        })
    }
}

/// Runs one offer/answer exchange (`forward` carries the offer to the
/// answering side and returns its answer plus whatever it wants kept) with
/// a netsim proxy placed in the media path: starts the proxy and rewrites
/// the offer and the answer as the module docs' table says.
pub(crate) async fn exchange_via_proxy<T, F, Fut>(
    transport: Transport,
    offer: serde_json::Value,
    impairment: &ImpairmentConfig,
    seed: u64,
    forward: F,
) -> Result<(serde_json::Value, T, Proxy), RelayError>
where
    F: FnOnce(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(serde_json::Value, T), RelayError>>,
{
    let mut offer = offer;
    let mut proxy = None;
    if proxy_target(transport) == ProxyTarget::Offerer {
        let to = description_addr(transport, &offer)?;
        let p = start_proxy(transport, to, impairment, seed)?;
        offer = rewrite_description(transport, offer, p.local_addr())?;
        proxy = Some(p);
    }
    let (answer, kept) = forward(offer).await?;
    let (via, proxy) = match proxy {
        Some(p) => (p.target_side_addr(), p),
        None => {
            let to = description_addr(transport, &answer)?;
            let p = start_proxy(transport, to, impairment, seed)?;
            (p.local_addr(), p)
        }
    };
    let answer = rewrite_description(transport, answer, via)?;
    Ok((answer, kept, proxy))
}

fn start_proxy(
    transport: Transport,
    target: SocketAddr,
    impairment: &ImpairmentConfig,
    seed: u64,
) -> Result<Proxy, RelayError> {
    let listen = SocketAddr::new(target.ip(), 0);
    Proxy::start(
        ProxyConfig::new(listen, target)
            .impairment(impairment.clone())
            .seed(seed),
    )
    .map_err(|e| setup_error(transport, format!("netsim proxy to {target}: {e}")))
}

/// The address a description says its side receives on (for dc: its first
/// UDP ICE candidate).
pub(crate) fn description_addr(
    transport: Transport,
    description: &serde_json::Value,
) -> Result<SocketAddr, RelayError> {
    let bad = |e: String| {
        setup_error(
            transport,
            format!("cannot read the description to place the proxy: {e}"),
        )
    };
    match transport {
        Transport::RtpUdp => serde_json::from_value::<RtpUdpDescription>(description.clone())
            .map(|d| d.addr)
            .map_err(|e| bad(e.to_string())),
        Transport::Quic => serde_json::from_value::<QuicAnswer>(description.clone())
            .map(|d| d.addr)
            .map_err(|e| bad(e.to_string())),
        Transport::Dc => {
            let d: W3cDescription =
                serde_json::from_value(description.clone()).map_err(|e| bad(e.to_string()))?;
            first_udp_candidate(&d.sdp).ok_or_else(|| bad(SdpRewriteError::NoUdpCandidate.to_string()))
        }
    }
}

/// The description with its receive address replaced by `via`.
pub(crate) fn rewrite_description(
    transport: Transport,
    description: serde_json::Value,
    via: SocketAddr,
) -> Result<serde_json::Value, RelayError> {
    let bad = |e: String| {
        setup_error(
            transport,
            format!("cannot rewrite the description for the proxy: {e}"),
        )
    };
    match transport {
        Transport::RtpUdp | Transport::Quic => {
            let mut description = description;
            match description.get_mut("addr") {
                Some(addr) => *addr = serde_json::Value::String(via.to_string()),
                None => return Err(bad("no addr field".into())),
            }
            Ok(description)
        }
        Transport::Dc => {
            let mut d: W3cDescription =
                serde_json::from_value(description).map_err(|e| bad(e.to_string()))?;
            d.sdp = route_candidates(&d.sdp, via).map_err(|e| bad(e.to_string()))?.0;
            serde_json::to_value(d).map_err(|e| bad(e.to_string()))
        }
    }
}

/// Why an SDP could not be routed through a proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpRewriteError {
    /// No `a=candidate` line with UDP transport.
    #[error("the SDP lists no UDP ICE candidate")]
    NoUdpCandidate,
}

/// The address of the first UDP ICE candidate in `sdp`.
pub fn first_udp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines()
        .find_map(|l| parse_candidate(l).filter(|c| c.udp).map(|c| c.addr))
}

struct Candidate {
    udp: bool,
    addr: SocketAddr,
}

/// `a=candidate:<foundation> <component> <transport> <priority> <address>
/// <port> typ <type> …` (RFC 8839 section 5.1).
fn parse_candidate(line: &str) -> Option<Candidate> {
    let rest = line.trim_end_matches('\r').strip_prefix("a=candidate:")?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let udp = fields.get(2)?.eq_ignore_ascii_case("udp");
    let ip = fields.get(4)?.parse().ok()?;
    let port = fields.get(5)?.parse().ok()?;
    Some(Candidate {
        udp,
        addr: SocketAddr::new(ip, port),
    })
}

/// Routes an SDP's ICE through `via`: the first UDP candidate (the "target")
/// gets `via` as its address and port, every other `a=candidate` line is
/// removed (so ICE cannot find a path around the proxy), and a `c=` line
/// naming the target's IP names `via`'s instead (RFC 8839 section 4.2.1.1:
/// it carries the default candidate). Everything else, line endings
/// included, is kept. Returns the new SDP and the target's original address.
///
/// The peer that receives this SDP then sends its checks to `via`; the
/// proxy forwards them from its own address, which the side behind it
/// learns as a peer-reflexive candidate (RFC 8445 section 7.3.1.3) if it
/// was not signaled that address itself.
///
/// ```
/// use relay::loopback::route_candidates;
/// let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
/// let via: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
/// let (routed, target) = route_candidates(sdp, via).unwrap();
/// assert_eq!(target, "127.0.0.1:50000".parse::<std::net::SocketAddr>().unwrap());
/// assert!(routed.contains("127.0.0.1 7000 typ host"));
/// ```
pub fn route_candidates(sdp: &str, via: SocketAddr) -> Result<(String, SocketAddr), SdpRewriteError> {
    let target = first_udp_candidate(sdp).ok_or(SdpRewriteError::NoUdpCandidate)?;
    let mut out = String::with_capacity(sdp.len());
    let mut kept = false;
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(candidate) = parse_candidate(body) {
            if kept || !candidate.udp || candidate.addr != target {
                continue;
            }
            kept = true;
            // Replace fields 4 and 5 (address and port), keep the rest verbatim.
            let rest = &body["a=candidate:".len()..];
            let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
            let mut rewritten: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            rewritten[4] = via.ip().to_string();
            rewritten[5] = via.port().to_string();
            out.push_str("a=candidate:");
            out.push_str(&rewritten.join(" "));
            out.push_str(ending);
            continue;
        }
        if let Some(c) = body.strip_prefix("c=IN ") {
            let mut parts = c.split_ascii_whitespace();
            if let (Some(_family), Some(ip)) = (parts.next(), parts.next())
                && ip.parse::<std::net::IpAddr>().ok() == Some(target.ip())
            {
                let family = if via.is_ipv4() { "IP4" } else { "IP6" };
                out.push_str(&format!("c=IN {family} {}{ending}", via.ip()));
                continue;
            }
        }
        out.push_str(line);
    }
    Ok((out, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
o=- 1 2 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 127.0.0.1\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdef012345\r\n\
a=fingerprint:sha-256 AA:BB\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n\
a=candidate:2 1 udp 2130706175 10.0.0.5 40002 typ host\r\n\
a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
a=end-of-candidates\r\n\
a=sctp-port:5000\r\n";

    #[test]
    fn routes_the_first_udp_candidate_and_drops_the_rest() {
        let via: SocketAddr = "127.0.0.1:7777".parse().unwrap();
        let (routed, target) = route_candidates(ANSWER, via).unwrap();
        assert_eq!(target, "127.0.0.1:40001".parse::<SocketAddr>().unwrap());
        let candidates: Vec<&str> = routed.lines().filter(|l| l.starts_with("a=candidate")).collect();
        assert_eq!(
            candidates,
            vec!["a=candidate:1 1 udp 2130706431 127.0.0.1 7777 typ host"]
        );
        assert!(routed.contains("127.0.0.1 7777 typ host\r\na=end-of-candidates\r\n"));
        // Everything else is untouched, CRLF included.
        for keep in [
            "a=ice-ufrag:abcd\r\n",
            "a=end-of-candidates\r\n",
            "a=sctp-port:5000\r\n",
        ] {
            assert!(routed.contains(keep), "{keep:?} missing");
        }
        assert!(routed.contains("c=IN IP4 127.0.0.1\r\n"));
        assert_eq!(first_udp_candidate(&routed), Some(via));
        assert_eq!(routed.lines().count(), ANSWER.lines().count() - 2);
    }

    #[test]
    fn c_line_follows_the_default_candidate_across_families() {
        let sdp = "v=0\nc=IN IP4 192.0.2.1\na=candidate:x 1 UDP 1 192.0.2.1 5000 typ host\n";
        let via: SocketAddr = "[::1]:6000".parse().unwrap();
        let (routed, target) = route_candidates(sdp, via).unwrap();
        assert_eq!(target, "192.0.2.1:5000".parse::<SocketAddr>().unwrap());
        assert_eq!(
            routed,
            "v=0\nc=IN IP6 ::1\na=candidate:x 1 UDP 1 ::1 6000 typ host\n"
        );
    }

    #[test]
    fn sdp_without_udp_candidates_is_refused() {
        let sdp = "v=0\r\na=candidate:3 1 tcp 1 127.0.0.1 9 typ host\r\n";
        assert_eq!(
            route_candidates(sdp, "127.0.0.1:1".parse().unwrap()),
            Err(SdpRewriteError::NoUdpCandidate)
        );
        assert_eq!(first_udp_candidate("v=0\r\n"), None);
    }

    #[test]
    fn descriptions_are_rewritten_per_transport() {
        let via: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let rtp = serde_json::json!({"addr": "127.0.0.1:5004", "ssrcs": [1]});
        assert_eq!(
            description_addr(Transport::RtpUdp, &rtp).unwrap(),
            "127.0.0.1:5004".parse::<SocketAddr>().unwrap()
        );
        let rtp = rewrite_description(Transport::RtpUdp, rtp, via).unwrap();
        assert_eq!(rtp, serde_json::json!({"addr": "127.0.0.1:9999", "ssrcs": [1]}));

        let quic = serde_json::json!({"addr": "127.0.0.1:4433", "alpn": "roq", "fingerprint": "sha-256 AA"});
        let quic = rewrite_description(Transport::Quic, quic, via).unwrap();
        assert_eq!(description_addr(Transport::Quic, &quic).unwrap(), via);

        let dc = serde_json::to_value(W3cDescription {
            kind: relay_core::SdpType::Answer,
            sdp: ANSWER.to_string(),
        })
        .unwrap();
        assert_eq!(
            description_addr(Transport::Dc, &dc).unwrap(),
            "127.0.0.1:40001".parse::<SocketAddr>().unwrap()
        );
        let dc = rewrite_description(Transport::Dc, dc, via).unwrap();
        assert_eq!(description_addr(Transport::Dc, &dc).unwrap(), via);
        assert_eq!(dc["type"], "answer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_compiled_transport_relays_through_a_proxy() {
        use relay_core::{Packet, build_rtp};
        for transport in crate::compiled_transports() {
            for &mode in transport.modes() {
                let config = LoopbackConfig::default().impairment(ImpairmentConfig::default(), 1);
                let pair = establish(transport, mode, &config).await.unwrap();
                let proxy = pair.proxy().unwrap();
                let dir = pair.offerer_to_answerer().unwrap();
                let split = |stats: relay_netsim::ProxyStats| match dir {
                    Direction::Upstream => (stats.upstream.delivered_bytes, stats.downstream.delivered_bytes),
                    Direction::Downstream => {
                        (stats.downstream.delivered_bytes, stats.upstream.delivered_bytes)
                    }
                };
                // 20 packets of 1,000 bytes one way only: the direction the
                // pair names must carry them, the other only what the
                // transport sends back (acknowledgements, keepalives).
                let (there_before, back_before) = split(proxy.stats());
                let payload = [7u8; 1_000];
                for seq in 0..20u16 {
                    let p = Packet::parse(build_rtp(96, seq, 0, 0xabc, &payload)).unwrap();
                    pair.offerer.send(p.clone()).await.unwrap();
                    let got = tokio::time::timeout(Duration::from_secs(2), pair.answerer.recv())
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(got.bytes(), p.bytes());
                }
                // The proxy counts a datagram after sending it on, so the
                // receiver can see the last one before the count does.
                let deadline = Instant::now() + Duration::from_secs(1);
                let mut counted = split(proxy.stats());
                while counted.0 - there_before < 20_000 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counted = split(proxy.stats());
                }
                let (there, back) = counted;
                assert!(
                    there - there_before >= 20_000 && back - back_before < 20_000,
                    "{transport} {mode}: offerer to answerer {} bytes, back {} bytes",
                    there - there_before,
                    back - back_before
                );
                let p = Packet::parse(build_rtp(96, 99, 0, 0xabc, b"and back")).unwrap();
                pair.answerer.send(p.clone()).await.unwrap();
                let back = tokio::time::timeout(Duration::from_secs(2), pair.offerer.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(back.bytes(), p.bytes());
                pair.close().await;
            }
        }
    }

    #[cfg(not(feature = "dc"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dc_is_refused_when_its_backend_is_not_compiled_in() {
        let err = establish(
            Transport::Dc,
            relay_core::Mode::Reliable,
            &LoopbackConfig::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RelayError::NotCompiled { .. }), "{err}");
        assert!(err.to_string().contains("not compiled"));
    }
}
