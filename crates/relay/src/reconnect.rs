//! The offering side of `relay offer`: establish a link, carry the local
//! stream over it, and with `--reconnect` establish a new one whenever it
//! dies (peer restarted, path black-holed), until told to stop.
//!
//! What an outage costs is never silent:
//! - local packets that arrive while no link is up are dropped and counted
//!   ([`PipeCounters::no_link`](crate::pipe::PipeCounters::no_link));
//! - every outage's length, from the link being declared dead to the next
//!   one being up, is logged and summed in [`OfferState`];
//! - the answering side counts the RTP sequence numbers missing across the
//!   gap, which includes what was in flight on the dead link
//!   ([`Continuity`](crate::pipe::Continuity)).
//!
//! Retrying backs off from [`ReconnectPolicy::min_backoff`] to
//! [`ReconnectPolicy::max_backoff`]. Errors retrying cannot fix (a refused
//! token, a transport or mode the far side does not have, a pinned
//! certificate that does not match) end the loop at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::{CloseReason, Mode, RelayLink, Transport};
use relay_signaling::ClientError;

use crate::backends::Exchange;
use crate::pipe::Outlet;
use crate::{LinkOptions, RelayError};

/// How `relay offer --reconnect` retries.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// First wait after a failed attempt (doubles per failure).
    pub min_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// What the offering side has done so far; read by `/metrics` and the log.
#[derive(Debug, Default)]
pub struct OfferState {
    current: Mutex<Option<(String, Arc<dyn RelayLink>)>>,
    links_established: AtomicU64,
    attempts_failed: AtomicU64,
    outage_micros_total: AtomicU64,
    outage_micros_last: AtomicU64,
    outages: AtomicU64,
}

impl OfferState {
    /// The session and link up now, if any.
    pub fn current(&self) -> Option<(String, Arc<dyn RelayLink>)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Links established, the first included.
    pub fn links_established(&self) -> u64 {
        self.links_established.load(Ordering::Relaxed)
    }

    /// Attempts (offer plus setup) that failed.
    pub fn attempts_failed(&self) -> u64 {
        self.attempts_failed.load(Ordering::Relaxed)
    }

    /// Outages ended by a new link, the last one's length and their sum.
    pub fn outages(&self) -> (u64, Duration, Duration) {
        (
            self.outages.load(Ordering::Relaxed),
            Duration::from_micros(self.outage_micros_last.load(Ordering::Relaxed)),
            Duration::from_micros(self.outage_micros_total.load(Ordering::Relaxed)),
        )
    }

    fn set_current(&self, current: Option<(String, Arc<dyn RelayLink>)>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = current;
    }
}

/// Whether another attempt could succeed where this one failed.
pub fn worth_retrying(error: &RelayError) -> bool {
    match error {
        RelayError::NotCompiled { .. } | RelayError::BadMode { .. } | RelayError::BadAnswer(_) => false,
        RelayError::Signaling(e) => match e {
            ClientError::InvalidBase { .. }
            | ClientError::InvalidSessionId(_)
            | ClientError::Unauthorized { .. }
            | ClientError::NoRootStore { .. }
            | ClientError::FingerprintOverHttp { .. }
            // A restarted answerer with a new self-signed certificate is
            // not the pinned one: an operator must decide (docs/security.md).
            | ClientError::FingerprintMismatch { .. }
            | ClientError::BadResponse { .. } => false,
            // 408 and 429 are the server asking to come back; 503 is its
            // session cap. Any other 4xx is this offer being wrong.
            ClientError::Status { status, .. } => {
                !status.is_client_error() || matches!(status.as_u16(), 408 | 429)
            }
            _ => true,
        },
        RelayError::Setup { .. } => true,
    }
}

/// What `relay offer` establishes, and whether it re-establishes.
#[derive(Debug, Clone)]
pub struct OfferPlan {
    /// Transport to offer.
    pub transport: Transport,
    /// Its mode.
    pub mode: Mode,
    /// Media socket options.
    pub options: LinkOptions,
    /// `Some`: establish a new link whenever one dies (`--reconnect`).
    pub reconnect: Option<ReconnectPolicy>,
}

/// A link of `relay offer` coming up or going down, as
/// [`offer_and_carry`](crate::offer_and_carry) reports it
/// (the command prints a status line for each).
#[derive(Debug, Clone, Copy)]
pub enum LinkEvent<'a> {
    /// A link is up and carrying: session `session` on the answering side.
    Up {
        /// The session id.
        session: &'a str,
    },
    /// That link closed; with `--reconnect` another is being established.
    Down {
        /// The session id.
        session: &'a str,
        /// Why it closed.
        reason: &'a CloseReason,
    },
}

/// Establishes links and carries `pipe` (the whole pipe, or one branch of
/// a fan-out) over them until a link closes and the plan does not
/// reconnect (returns why it closed), or an attempt fails in a way
/// retrying cannot fix (returns the error). `on_event` hears of every link
/// that comes up and goes down.
pub(crate) async fn run(
    exchange: &dyn Exchange,
    plan: &OfferPlan,
    pipe: &impl Outlet,
    state: &OfferState,
    mut on_event: impl FnMut(LinkEvent<'_>),
) -> Result<CloseReason, RelayError> {
    let (transport, mode, options, policy) =
        (plan.transport, plan.mode, &plan.options, plan.reconnect.as_ref());
    let mut down_since: Option<Instant> = None;
    let mut backoff = policy.map(|p| p.min_backoff).unwrap_or_default();
    loop {
        let offered = match crate::backends::offer(exchange, transport, mode, options).await {
            Ok(o) => o,
            Err(e) => {
                state.attempts_failed.fetch_add(1, Ordering::Relaxed);
                let Some(policy) = policy.filter(|_| worth_retrying(&e)) else {
                    return Err(e);
                };
                let dropped = pipe.counters().no_link.load(Ordering::Relaxed);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    dropped_while_down = dropped,
                    "link setup failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                continue;
            }
        };
        if let Some(policy) = policy {
            backoff = policy.min_backoff;
        }
        state.links_established.fetch_add(1, Ordering::Relaxed);
        if let Some(since) = down_since.take() {
            let outage = since.elapsed();
            let micros = u64::try_from(outage.as_micros()).unwrap_or(u64::MAX);
            state.outages.fetch_add(1, Ordering::Relaxed);
            state.outage_micros_last.store(micros, Ordering::Relaxed);
            state.outage_micros_total.fetch_add(micros, Ordering::Relaxed);
            tracing::info!(
                session = %offered.session_id,
                outage_ms = outage.as_secs_f64() * 1e3,
                dropped_while_down = pipe.counters().no_link.load(Ordering::Relaxed),
                "link re-established"
            );
        }
        let id = offered.session_id.clone();
        state.set_current(Some((id.clone(), offered.link.clone())));
        pipe.attach(offered.link.clone());
        on_event(LinkEvent::Up { session: &id });
        let reason = pipe.carry(offered.link.clone()).await;
        state.set_current(None);
        on_event(LinkEvent::Down {
            session: &id,
            reason: &reason,
        });
        let s = offered.link.stats();
        tracing::warn!(
            session = %id,
            %reason,
            sent = s.packets_sent,
            received = s.packets_received,
            "link closed"
        );
        if policy.is_none() {
            return Ok(reason);
        }
        down_since = Some(Instant::now());
        // The far side may still hold the session (it has not noticed yet,
        // or it was the path that failed): end it there so nothing stays
        // half-open, without waiting long for a server that is gone.
        exchange.release(&id).await;
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use relay_signaling::Fingerprint;

    #[test]
    fn only_errors_a_later_attempt_could_escape_are_retried() {
        let server = || "http://10.0.0.2:8080".to_string();
        let status = |code: u16| {
            RelayError::Signaling(ClientError::Status {
                server: server(),
                status: http::StatusCode::from_u16(code).unwrap(),
                message: String::new(),
            })
        };
        let fp: Fingerprint = ["AB"; 32].join(":").parse().unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let retried = [
            RelayError::Signaling(ClientError::Connect {
                server: server(),
                source: refused,
            }),
            RelayError::Setup {
                transport: Transport::Quic,
                source: "handshake timed out".into(),
            },
            status(503),
            status(500),
            status(408),
            status(429),
        ];
        let fatal = [
            RelayError::Signaling(ClientError::Unauthorized {
                server: server(),
                what: "the offer".into(),
                token_sent: true,
            }),
            RelayError::Signaling(ClientError::FingerprintMismatch {
                server: server(),
                expected: fp,
                actual: fp,
            }),
            RelayError::Signaling(ClientError::NoRootStore {
                server: server(),
                reason: "no CA certificates found".into(),
            }),
            RelayError::BadMode {
                transport: Transport::Quic,
                mode: Mode::Srtp,
                modes: String::new(),
            },
            status(400),
            status(404),
        ];
        for e in &retried {
            assert!(worth_retrying(e), "should retry: {e}");
        }
        for e in &fatal {
            assert!(!worth_retrying(e), "should give up: {e}");
        }
    }
}

#[cfg(test)]
#[path = "reconnect_tests.rs"]
mod tests;
