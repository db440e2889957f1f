//! [`State`]: what every connection task shares (the configuration, the
//! answerers, the session registry, the counters), and the `/metrics` text
//! rendered from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use relay_core::Transport;
use tokio::sync::watch;

use super::ServerConfig;
use super::requests::info_of;
use crate::Answerer;
use crate::cors::Cors;
use crate::listener::{ConnectionCounters, Listener};
use crate::metrics::{self, LinkMetrics, Role, ServerCounters, SessionRefusals};
use crate::registry::Registry;
use crate::tls::TlsIdentity;

/// What every connection task shares.
pub(crate) struct State {
    pub(super) config: ServerConfig,
    pub(super) answerers: HashMap<Transport, Arc<dyn Answerer>>,
    /// The registered transports, in [`Transport::ALL`] order, for messages.
    pub(super) served: Vec<Transport>,
    pub(super) registry: Arc<Registry>,
    pub(super) cors: Cors,
    /// Becomes `true` at shutdown; session watchers and connections stop.
    pub(super) stop: watch::Receiver<bool>,
    pub(super) sessions_created: AtomicU64,
    pub(super) refusals: RefusalCounters,
    /// Kept by the listener that serves this state.
    connections: Arc<ConnectionCounters>,
}

/// [`SessionRefusals`], counted as they happen.
#[derive(Default)]
pub(super) struct RefusalCounters {
    unauthorized: AtomicU64,
    bad_offer: AtomicU64,
    too_large: AtomicU64,
    timeout: AtomicU64,
    pub(super) session_limit: AtomicU64,
    unavailable: AtomicU64,
    internal: AtomicU64,
    origin_not_allowed: AtomicU64,
}

impl RefusalCounters {
    fn snapshot(&self) -> SessionRefusals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SessionRefusals {
            unauthorized: get(&self.unauthorized),
            bad_offer: get(&self.bad_offer),
            too_large: get(&self.too_large),
            timeout: get(&self.timeout),
            session_limit: get(&self.session_limit),
            unavailable: get(&self.unavailable),
            internal: get(&self.internal),
            origin_not_allowed: get(&self.origin_not_allowed),
        }
    }

    /// Counts a refused offer by the status it got.
    pub(super) fn count(&self, status: StatusCode) {
        let counter = match status {
            StatusCode::UNAUTHORIZED => &self.unauthorized,
            StatusCode::FORBIDDEN => &self.origin_not_allowed,
            StatusCode::PAYLOAD_TOO_LARGE => &self.too_large,
            StatusCode::REQUEST_TIMEOUT => &self.timeout,
            StatusCode::SERVICE_UNAVAILABLE => &self.unavailable,
            s if s.is_server_error() => &self.internal,
            _ => &self.bad_offer,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl State {
    pub(crate) fn new(
        config: ServerConfig,
        answerers: HashMap<Transport, Arc<dyn Answerer>>,
        stop: watch::Receiver<bool>,
    ) -> State {
        let registry = Registry::new(config.max_sessions);
        let cors = Cors::new(&config.cors_origins);
        let served = Transport::ALL
            .into_iter()
            .filter(|t| answerers.contains_key(t))
            .collect();
        State {
            config,
            answerers,
            served,
            registry,
            cors,
            stop,
            sessions_created: AtomicU64::new(0),
            refusals: RefusalCounters::default(),
            connections: Arc::default(),
        }
    }

    /// The listener that serves this state.
    pub(crate) fn listener(self: &Arc<Self>, what: &'static str) -> Listener<State> {
        let tls = self.config.tls.as_ref().map(TlsIdentity::acceptor);
        Listener::new(
            what,
            Arc::clone(self),
            self.config.limits(),
            tls,
            Arc::clone(&self.connections),
            self.stop.clone(),
        )
    }

    /// For the fuzz entry point, which closes what each input created.
    #[cfg(any(test, feature = "fuzz"))]
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn counters(&self) -> ServerCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerCounters {
            connections_open: get(&self.connections.open),
            connections_accepted: get(&self.connections.accepted),
            connections_refused: get(&self.connections.refused_limit),
            tls_handshakes_failed: get(&self.connections.tls_failed),
            sessions_created: get(&self.sessions_created),
            sessions_refused: self.refusals.snapshot(),
        }
    }

    /// The `/metrics` text: every live session and the server's counters.
    pub(super) fn metrics(&self) -> String {
        let links: Vec<LinkMetrics> = self
            .registry
            .list()
            .into_iter()
            .map(|(id, entry)| {
                let info = info_of(id, &entry);
                LinkMetrics {
                    session: info.id,
                    transport: info.transport,
                    mode: info.mode,
                    role: Role::Answer,
                    state: info.state,
                    stats: info.stats,
                    extra: Vec::new(),
                }
            })
            .collect();
        let mut text = metrics::render(&links, Some(&self.counters()));
        if let Some(extra) = &self.config.extra_metrics {
            text.push_str(&extra());
        }
        text
    }
}
