//! The only place that knows every backend: how each one's offer and answer
//! map onto signaling.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use relay_core::{Mode, OfferRequest, RelayLink, Transport};
use relay_signaling::{Accepted, AnswerError, Answerer, SignalingClient};

use crate::session::LinkSession;
use crate::{LinkOptions, LinkSink, Offered, RelayError};

/// Backends in this build, in [`Transport::ALL`] order.
pub fn compiled_transports() -> Vec<Transport> {
    Transport::ALL
        .into_iter()
        .filter(|t| match t {
            Transport::RtpUdp => cfg!(feature = "rtp-udp"),
            Transport::Quic => cfg!(feature = "quic"),
            Transport::Dc => cfg!(feature = "dc"),
        })
        .collect()
}

/// A backend's setup error, kept whole.
fn setup_err<E: std::error::Error + Send + Sync + 'static>(transport: Transport) -> impl Fn(E) -> RelayError {
    move |e| RelayError::Setup {
        transport,
        source: Box::new(e),
    }
}

fn parse_answer<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, RelayError> {
    serde_json::from_value(v).map_err(|e| RelayError::BadAnswer(e.to_string()))
}

fn parse_offer<T: serde::de::DeserializeOwned>(
    transport: Transport,
    v: serde_json::Value,
) -> Result<T, AnswerError> {
    serde_json::from_value(v).map_err(|e| AnswerError::BadOffer(format!("not a {transport} offer: {e}")))
}

fn media_addr(options: &LinkOptions) -> SocketAddr {
    SocketAddr::new(options.bind_ip, 0)
}

/// Carries an offer to the answering side and its answer back. HTTP
/// signaling is one; [`crate::loopback`] is another (in process, optionally
/// rewriting addresses so a netsim proxy sits in the path).
#[async_trait]
pub(crate) trait Exchange: Sync {
    async fn exchange(&self, request: OfferRequest) -> Result<relay_core::OfferResponse, RelayError>;

    /// Ends session `id` on the answering side, best effort (the side may
    /// be gone); used when a link dies and another is about to be offered.
    async fn release(&self, id: &str) {
        let _ = id;
    }
}

/// How long a best-effort DELETE of a dead session may take.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[async_trait]
impl Exchange for SignalingClient {
    async fn exchange(&self, request: OfferRequest) -> Result<relay_core::OfferResponse, RelayError> {
        Ok(self.offer(&request).await?)
    }

    async fn release(&self, id: &str) {
        match crate::delete_session(self, id, RELEASE_TIMEOUT).await {
            Ok(()) => tracing::info!(session = %id, "dead session deleted on the answering side"),
            // Expected when the answering relay is what died.
            Err(error) => tracing::debug!(session = %id, %error, "could not delete the dead session"),
        }
    }
}

async fn post(
    client: &dyn Exchange,
    transport: Transport,
    mode: Mode,
    offer: impl serde::Serialize,
    options: &LinkOptions,
) -> Result<relay_core::OfferResponse, RelayError> {
    let offer = serde_json::to_value(offer).map_err(|e| RelayError::BadAnswer(e.to_string()))?;
    // A QUIC offer has no address: the offering end is the client.
    let offer = if transport == Transport::Quic {
        offer
    } else {
        advertise_port(transport, offer, options)?
    };
    client
        .exchange(OfferRequest {
            transport,
            mode: Some(mode),
            offer,
        })
        .await
}

pub(crate) async fn offer(
    client: &dyn Exchange,
    transport: Transport,
    mode: Mode,
    options: &LinkOptions,
) -> Result<Offered, RelayError> {
    let _ = (client, mode, options);
    let link_mode = transport.link_mode(mode);
    let offered = match transport {
        #[cfg(feature = "rtp-udp")]
        Transport::RtpUdp => {
            use rtp_udp_relay::RtpUdpOfferer;
            let err = setup_err(transport);
            let offerer = RtpUdpOfferer::bind(rtp_udp_config(options, mode), link_mode)
                .await
                .map_err(&err)?;
            let resp = post(client, transport, mode, offerer.offer(), options).await?;
            let answer = parse_answer(resp.answer)?;
            let link = offerer.connect(&answer).await.map_err(&err)?;
            Ok(Offered {
                session_id: resp.id,
                link: Arc::new(link),
            })
        }
        #[cfg(feature = "quic")]
        Transport::Quic => {
            let err = setup_err(transport);
            let offerer = quic_relay::QuicOfferer::bind(quic_config(options), link_mode)
                .await
                .map_err(&err)?;
            let resp = post(client, transport, mode, offerer.offer(), options).await?;
            let answer = parse_answer(resp.answer)?;
            let link = offerer.connect(&answer).await.map_err(&err)?;
            Ok(Offered {
                session_id: resp.id,
                link: Arc::new(link),
            })
        }
        #[cfg(feature = "dc")]
        Transport::Dc => {
            let err = setup_err(transport);
            let offerer = dc_relay::DcOfferer::bind(dc_config(options), link_mode)
                .await
                .map_err(&err)?;
            let resp = post(client, transport, mode, offerer.offer(), options).await?;
            let answer: relay_core::W3cDescription = parse_answer(resp.answer)?;
            let link = offerer.connect(&answer).await.map_err(&err)?;
            Ok(Offered {
                session_id: resp.id,
                link: Arc::new(link),
            })
        }
        #[allow(unreachable_patterns)]
        other => Err(RelayError::NotCompiled {
            transport: other,
            available: crate::join(compiled_transports().iter()),
        }),
    }?;
    Ok(Offered {
        link: with_repair(offered.link, mode, options),
        ..offered
    })
}

/// `description` with the port of its address replaced by the advertised
/// one (`--advertise IP:PORT`). A port-forwarding NAT or proxy in front of
/// the media ports maps `LO..=HI` to `PORT..`, so a session bound on
/// `LO + n` is advertised as `PORT + n` (without `--media-ports`, as
/// `PORT`).
pub(crate) fn advertise_port(
    transport: Transport,
    description: serde_json::Value,
    options: &LinkOptions,
) -> Result<serde_json::Value, RelayError> {
    let Some(base) = options.advertise_port else {
        return Ok(description);
    };
    let local = crate::loopback::description_addr(transport, &description)?;
    let offset = options
        .media_ports
        .filter(|r| r.contains(local.port()))
        .map_or(0, |r| local.port() - r.lo());
    let port = base.checked_add(offset).ok_or_else(|| RelayError::Setup {
        transport,
        source: format!("--advertise port {base} + {offset} is past 65535").into(),
    })?;
    crate::loopback::rewrite_description(transport, description, SocketAddr::new(local.ip(), port))
}

/// `link` as `mode` has it: in repair mode, under the hop's repair loop
/// (both ends wrap theirs), with the latency budget as its horizon.
fn with_repair(link: Arc<dyn RelayLink>, mode: Mode, options: &LinkOptions) -> Arc<dyn RelayLink> {
    if !mode.is_repair() || link.transport().link_mode(mode) == mode {
        // Not repair mode, or a transport that repairs by itself (dc).
        return link;
    }
    let config = relay_repair::RepairConfig {
        budget: options.max_delay,
        reorder_window: options.reorder_window,
        ..relay_repair::RepairConfig::default()
    };
    Arc::new(relay_repair::RepairLink::new(link, mode, config))
}

#[cfg(feature = "rtp-udp")]
fn rtp_udp_config(options: &LinkOptions, mode: Mode) -> rtp_udp_relay::RtpUdpConfig {
    let config = rtp_udp_relay::RtpUdpConfig::default()
        .bind(media_addr(options))
        .advertise_ip(options.advertise_ip)
        .media_ports(options.media_ports)
        .liveness_timeout(options.liveness_timeout)
        .clock_rates(options.clock_rates.clone())
        .latch(options.latch);
    if mode == Mode::SrtpRepair {
        // The repair loop's retransmissions are the SRTP bytes sent the
        // first time; the link keeps them as long as the loop keeps the
        // packets.
        config.resend_window(options.max_delay)
    } else {
        config
    }
}

#[cfg(feature = "quic")]
fn quic_config(options: &LinkOptions) -> quic_relay::QuicConfig {
    quic_relay::QuicConfig::default()
        .bind(media_addr(options))
        .advertise_ip(options.advertise_ip)
        .media_ports(options.media_ports)
        .liveness_timeout(options.liveness_timeout)
        .clock_rates(options.clock_rates.clone())
        .max_delay(options.max_delay)
}

#[cfg(feature = "dc")]
fn dc_config(options: &LinkOptions) -> dc_relay::DcConfig {
    dc_relay::DcConfig::default()
        .bind_addrs(vec![media_addr(options)])
        .advertise_ip(options.advertise_ip)
        .media_ports(options.media_ports)
        .liveness_timeout(options.liveness_timeout)
        .clock_rates(options.clock_rates.clone())
        .max_delay(options.max_delay)
}

/// Answers one transport's offers, handing established links to the sink.
struct FacadeAnswerer {
    transport: Transport,
    options: LinkOptions,
    sink: LinkSink,
}

pub(crate) fn answerers(options: &LinkOptions, sink: LinkSink) -> Vec<Arc<dyn Answerer>> {
    compiled_transports()
        .into_iter()
        .map(|transport| {
            Arc::new(FacadeAnswerer {
                transport,
                options: options.clone(),
                sink: sink.clone(),
            }) as Arc<dyn Answerer>
        })
        .collect()
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn RelayLink>, String>> + Send>>;

#[async_trait]
impl Answerer for FacadeAnswerer {
    fn transport(&self) -> Transport {
        self.transport
    }

    async fn answer(&self, mode: Mode, offer: serde_json::Value) -> Result<Accepted, AnswerError> {
        let link_mode = self.transport.link_mode(mode);
        let (answer, pending): (serde_json::Value, Pending) = match self.transport {
            #[cfg(feature = "rtp-udp")]
            Transport::RtpUdp => {
                let offer: relay_core::RtpUdpDescription = parse_offer(self.transport, offer)?;
                use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpError};
                let answerer = RtpUdpAnswerer::bind(rtp_udp_config(&self.options, mode), link_mode, &offer)
                    .await
                    .map_err(|e| match e {
                        RtpUdpError::BadAddress { .. }
                        | RtpUdpError::BadSrtp(_)
                        | RtpUdpError::UnsupportedMode(_) => AnswerError::BadOffer(e.to_string()),
                        other => AnswerError::Unavailable(other.to_string()),
                    })?;
                let answer = to_json(answerer.answer())?;
                let pending = boxed(answerer.accept());
                (answer, pending)
            }
            #[cfg(feature = "quic")]
            Transport::Quic => {
                let offer: relay_core::QuicOffer = parse_offer(self.transport, offer)?;
                let answerer = quic_relay::QuicAnswerer::bind(quic_config(&self.options), link_mode, &offer)
                    .await
                    .map_err(|e| AnswerError::Unavailable(e.to_string()))?;
                let answer = answerer.answer();
                let pending = boxed(answerer.accept());
                (to_json(answer)?, pending)
            }
            #[cfg(feature = "dc")]
            Transport::Dc => {
                // The answerer relays whatever channel the offerer opens, in
                // that channel's mode; `mode` is what the offerer announced.
                let offer: relay_core::W3cDescription = parse_offer(self.transport, offer)?;
                if offer.kind != relay_core::SdpType::Offer {
                    return Err(AnswerError::BadOffer(format!(
                        "expected a W3C description of type \"offer\", got {:?}",
                        offer.kind
                    )));
                }
                let answerer = dc_relay::DcAnswerer::bind(dc_config(&self.options), &offer)
                    .await
                    .map_err(|e| match e {
                        dc_relay::DcError::BadDescription { .. } => AnswerError::BadOffer(e.to_string()),
                        other => AnswerError::Unavailable(other.to_string()),
                    })?;
                let answer = to_json(answerer.answer())?;
                let pending = boxed(answerer.accept());
                let _ = link_mode;
                (answer, pending)
            }
            #[allow(unreachable_patterns)]
            other => {
                let _ = (link_mode, offer);
                return Err(AnswerError::BadOffer(format!(
                    "transport {other} is not compiled in"
                )));
            }
        };
        let answer = advertise_port(self.transport, answer, &self.options)
            .map_err(|e| AnswerError::Unavailable(e.to_string()))?;
        let pending: Pending = if mode.is_repair() && link_mode != mode {
            let options = self.options.clone();
            Box::pin(async move { Ok(with_repair(pending.await?, mode, &options)) })
        } else {
            pending
        };
        let session = LinkSession::start(self.transport, pending, self.sink.clone());
        Ok(Accepted { answer, session })
    }
}

/// A backend's accept future, as the session tracker wants it.
fn boxed<L, E>(accept: impl std::future::Future<Output = Result<L, E>> + Send + 'static) -> Pending
where
    L: RelayLink + 'static,
    E: std::fmt::Display,
{
    Box::pin(async move {
        accept
            .await
            .map(|l| Arc::new(l) as Arc<dyn RelayLink>)
            .map_err(|e| e.to_string())
    })
}

fn to_json(v: impl serde::Serialize) -> Result<serde_json::Value, AnswerError> {
    serde_json::to_value(v).map_err(|e| AnswerError::Internal(e.to_string()))
}

#[cfg(all(test, feature = "rtp-udp"))]
mod tests {
    use super::*;

    /// Signaling that must not be reached.
    struct Unreached;

    #[async_trait]
    impl Exchange for Unreached {
        async fn exchange(&self, _: OfferRequest) -> Result<relay_core::OfferResponse, RelayError> {
            panic!("setup failed before signaling")
        }
    }

    #[tokio::test]
    async fn a_backend_setup_error_keeps_its_type_and_text() {
        // The range's only port is taken.
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let options = LinkOptions {
            media_ports: relay_core::udp::PortRange::new(port, port),
            ..LinkOptions::default()
        };
        let error = offer(&Unreached, Transport::RtpUdp, Mode::Unreliable, &options)
            .await
            .expect_err("no port to bind");
        let RelayError::Setup { transport, source } = &error else {
            panic!("not a setup error: {error}");
        };
        assert_eq!(*transport, Transport::RtpUdp);
        let backend = source
            .downcast_ref::<rtp_udp_relay::RtpUdpError>()
            .unwrap_or_else(|| panic!("the backend's error type is kept: {error}"));
        assert!(error.to_string().ends_with(&backend.to_string()), "{error}");
    }
}
