//! Link establishment: [`QuicOfferer`] (QUIC client) and [`QuicAnswerer`]
//! (QUIC server), each pinning the certificate the other signaled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::ConnectionError;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use relay_core::{Mode, QuicAnswer, QuicOffer};
use tokio::task::JoinSet;

use crate::identity::{Fingerprint, Identity, PinRecord, SERVER_NAME, client_tls, server_tls, tidy_reason};
use crate::socket::GuardedSocket;
use crate::{QuicConfig, QuicError, QuicLink};

/// How long the handshake state is polled by yielding before falling back
/// to 1 ms sleeps. On loopback and LANs HANDSHAKE_DONE follows the client's
/// Finished within a few hundred microseconds (the server verifies our
/// certificate first), and a tokio sleep costs a whole millisecond, which
/// was most of the measured setup time. A count of polls was not enough:
/// 200 yields pass in tens of microseconds on an idle runtime. Yielding lets
/// quinn's driver task run, so the frame can arrive meanwhile.
const CONFIRM_SPIN_TIME: Duration = Duration::from_millis(20);

/// TLS alerts (RFC 8446 section 6.2) that mean "your certificate is not
/// the one I want".
const ALERT_BAD_CERTIFICATE: u8 = 42;
const ALERT_CERTIFICATE_UNKNOWN: u8 = 46;
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// The side that sends the offer and connects (the QUIC client).
///
/// ```no_run
/// # async fn run(answer: relay_core::QuicAnswer) -> Result<(), quic_relay::QuicError> {
/// use quic_relay::{QuicConfig, QuicOfferer};
/// use relay_core::{Mode, RelayLink};
///
/// let offerer = QuicOfferer::bind(QuicConfig::default(), Mode::Datagram).await?;
/// let offer = offerer.offer(); // send this to the answerer, get `answer` back
/// let link = offerer.connect(&answer).await?;
/// assert_eq!(link.mode(), Mode::Datagram);
/// # Ok(()) }
/// ```
pub struct QuicOfferer {
    config: QuicConfig,
    mode: Mode,
    identity: Identity,
    endpoint: quinn::Endpoint,
    guard: Arc<GuardedSocket>,
}

impl std::fmt::Debug for QuicOfferer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicOfferer")
            .field("local", &self.endpoint.local_addr().ok())
            .field("mode", &self.mode)
            .field("fingerprint", &self.identity.fingerprint())
            .finish()
    }
}

impl QuicOfferer {
    /// Makes this side's certificate and binds its UDP socket.
    pub async fn bind(config: QuicConfig, mode: Mode) -> Result<QuicOfferer, QuicError> {
        config.validate(mode)?;
        let identity = Identity::generate()?;
        let (endpoint, guard) = config.guarded_endpoint(None)?;
        Ok(QuicOfferer {
            config,
            mode,
            identity,
            endpoint,
            guard,
        })
    }

    /// The offer: this side's certificate fingerprint and ALPN.
    pub fn offer(&self) -> QuicOffer {
        QuicOffer {
            fingerprint: self.identity.fingerprint().to_string(),
            alpn: self.config.alpn.clone(),
        }
    }

    /// Connects to the answerer and returns once the link is ready both
    /// ways. Waits at most the liveness timeout.
    pub async fn connect(self, answer: &QuicAnswer) -> Result<QuicLink, QuicError> {
        let started = Instant::now();
        let peer = answer.addr;
        let alpn = &self.config.alpn;
        if answer.alpn != *alpn {
            return Err(QuicError::AlpnMismatch(format!(
                "this side speaks {alpn:?}, the answer from {peer} says {:?}",
                answer.alpn
            )));
        }
        let expected: Fingerprint = answer.fingerprint.parse()?;
        let record = Arc::new(PinRecord::default());
        let tls = client_tls(&self.identity, expected, alpn, record.clone())?;
        let tls = QuicClientConfig::try_from(tls)
            .map_err(|e| QuicError::InvalidConfig(format!("TLS config unusable for QUIC: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(tls));
        client.transport_config(self.config.transport()?);
        let connecting = self
            .endpoint
            .connect_with(client, peer, SERVER_NAME)
            .map_err(|source| QuicError::Connect { peer, source })?;

        let waited = self.config.liveness_timeout;
        let deadline = tokio::time::Instant::from_std(started + waited);
        let refused = |e: ConnectionError| refusal(peer, e, &record, expected, alpn);
        let conn = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(refused(e)),
            Err(_) => return Err(QuicError::NoAnswer { peer, waited }),
        };
        match tokio::time::timeout_at(deadline, handshake_confirmed(&conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(refused(e)),
            Err(_) => return Err(QuicError::NoAnswer { peer, waited }),
        }
        QuicLink::start(
            self.endpoint,
            self.guard,
            conn,
            self.mode,
            &self.config,
            started.elapsed(),
        )
        .await
    }
}

/// Waits until the server has confirmed the handshake.
///
/// quinn resolves the client's `Connecting` when the client's own TLS
/// handshake is complete (RFC 9001 section 4.1.1), which is before the
/// server has checked the client certificate: in TLS 1.3 the client
/// authenticates in its last flight. Returning then would hand out a link
/// the answerer may yet refuse, and packets sent at once could race the
/// server's own readiness. The server's HANDSHAKE_DONE frame (RFC 9001
/// section 4.1.2) is the proof that it accepted us; quinn raises no event
/// for it, but counts it in the connection stats.
pub(crate) async fn handshake_confirmed(conn: &quinn::Connection) -> Result<(), ConnectionError> {
    let spin_until = Instant::now() + CONFIRM_SPIN_TIME;
    loop {
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        if let Some(e) = conn.close_reason() {
            return Err(e);
        }
        if Instant::now() < spin_until {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Turns a failed client handshake into the error an operator can act on.
fn refusal(
    peer: SocketAddr,
    e: ConnectionError,
    record: &PinRecord,
    expected: Fingerprint,
    alpn: &str,
) -> QuicError {
    if let Some(actual) = record.refused() {
        return QuicError::FingerprintMismatch {
            peer,
            expected: expected.to_string(),
            actual: actual.to_string(),
        };
    }
    let (code, reason) = match &e {
        ConnectionError::ConnectionClosed(c) => (u64::from(c.error_code), String::from_utf8_lossy(&c.reason)),
        ConnectionError::TransportError(t) => (u64::from(t.code), t.reason.as_str().into()),
        _ => return QuicError::Handshake { peer, source: e },
    };
    // RFC 9001 section 4.8: a TLS alert travels as CRYPTO_ERROR 0x100 + alert.
    let Some(alert) = code.checked_sub(0x100).filter(|a| *a < 0x100).map(|a| a as u8) else {
        return QuicError::Handshake { peer, source: e };
    };
    match alert {
        ALERT_NO_APPLICATION_PROTOCOL => QuicError::AlpnMismatch(format!(
            "the peer at {peer} does not accept {alpn:?} (TLS alert no_application_protocol)"
        )),
        ALERT_BAD_CERTIFICATE | ALERT_CERTIFICATE_UNKNOWN | ALERT_CERTIFICATE_REQUIRED => {
            QuicError::CertificateRefused {
                peer,
                reason: if reason.is_empty() {
                    format!("TLS alert {alert}")
                } else {
                    tidy_reason(&reason)
                },
            }
        }
        _ => QuicError::Handshake { peer, source: e },
    }
}

/// The side that receives the offer, listens and answers (the QUIC
/// server).
///
/// ```no_run
/// # async fn run(offer: relay_core::QuicOffer) -> Result<(), quic_relay::QuicError> {
/// use quic_relay::{QuicAnswerer, QuicConfig};
/// use relay_core::Mode;
///
/// let answerer = QuicAnswerer::bind(QuicConfig::default(), Mode::Stream, &offer).await?;
/// let answer = answerer.answer(); // send this back to the offerer
/// let link = answerer.accept().await?;
/// # Ok(()) }
/// ```
pub struct QuicAnswerer {
    config: QuicConfig,
    mode: Mode,
    identity: Identity,
    endpoint: quinn::Endpoint,
    guard: Arc<GuardedSocket>,
    addr: SocketAddr,
}

impl std::fmt::Debug for QuicAnswerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicAnswerer")
            .field("addr", &self.addr)
            .field("mode", &self.mode)
            .field("fingerprint", &self.identity.fingerprint())
            .finish()
    }
}

impl QuicAnswerer {
    /// Makes this side's certificate, pins the offer's fingerprint and
    /// starts listening.
    pub async fn bind(config: QuicConfig, mode: Mode, offer: &QuicOffer) -> Result<QuicAnswerer, QuicError> {
        config.validate(mode)?;
        if offer.alpn != config.alpn {
            return Err(QuicError::AlpnMismatch(format!(
                "the offer asks for {:?}, this side speaks {:?}",
                offer.alpn, config.alpn
            )));
        }
        let expected: Fingerprint = offer.fingerprint.parse()?;
        let identity = Identity::generate()?;
        // The answerer's refusals are reported as text (`NoPeer`), so the
        // record is not read here.
        let tls = server_tls(&identity, expected, &config.alpn, Arc::default())?;
        let tls = QuicServerConfig::try_from(tls)
            .map_err(|e| QuicError::InvalidConfig(format!("TLS config unusable for QUIC: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls));
        server.transport_config(config.transport()?);
        let (endpoint, guard) = config.guarded_endpoint(Some(server))?;
        let bound = endpoint.local_addr().map_err(|source| QuicError::Io {
            what: "reading the bound UDP address".to_string(),
            source,
        })?;
        let addr = std::net::SocketAddr::new(config.advertise_ip.unwrap_or(bound.ip()), bound.port());
        if addr.ip().is_unspecified() {
            return Err(QuicError::InvalidConfig(format!(
                "bound to the unspecified address {bound}: set an advertised IP the offerer can reach \
                 (QuicConfig::advertise_ip, relay answer --advertise)"
            )));
        }
        Ok(QuicAnswerer {
            config,
            mode,
            identity,
            endpoint,
            guard,
            addr,
        })
    }

    /// The answer: where to connect, the ALPN, and this side's fingerprint.
    pub fn answer(&self) -> QuicAnswer {
        QuicAnswer {
            addr: self.addr,
            alpn: self.config.alpn.clone(),
            fingerprint: self.identity.fingerprint().to_string(),
        }
    }

    /// Waits (at most the liveness timeout) for the pinned offerer and
    /// returns the link, usable at once. Connection attempts with another
    /// certificate or ALPN are refused by TLS and waited past; handshakes
    /// run concurrently, so a stalled stranger cannot hold the door.
    pub async fn accept(self) -> Result<QuicLink, QuicError> {
        let waited = self.config.liveness_timeout;
        let deadline = tokio::time::Instant::now() + waited;
        let mut handshakes = JoinSet::new();
        let mut last_refusal = None;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else {
                        return Err(QuicError::NoPeer { waited, last_refusal });
                    };
                    handshakes.spawn(async move {
                        let started = Instant::now();
                        let remote = incoming.remote_address();
                        let conn = match incoming.accept() {
                            Ok(connecting) => connecting.await,
                            Err(e) => Err(e),
                        };
                        (remote, started, conn)
                    });
                }
                Some(Ok((remote, started, result))) = handshakes.join_next() => match result {
                    Ok(conn) => {
                        // One link per answerer: refuse later connection attempts.
                        self.endpoint.set_server_config(None);
                        let setup = started.elapsed();
                        return QuicLink::start(self.endpoint, self.guard, conn, self.mode, &self.config, setup).await;
                    }
                    Err(e) => {
                        let why = format!("{remote}: {}", tidy_reason(&e.to_string()));
                        tracing::info!("refused a RoQ connection attempt from {why}");
                        last_refusal = Some(why);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(QuicError::NoPeer { waited, last_refusal });
                }
            }
        }
    }
}
