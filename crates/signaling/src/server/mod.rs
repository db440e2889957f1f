//! The HTTP server: accepts connections, answers offers through the
//! registered [`Answerer`]s, and tracks the resulting sessions.

mod config;
mod requests;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_core::Transport;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use self::config::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_SESSIONS, ServerConfig};
pub(crate) use self::state::State;
use crate::Answerer;
use crate::cors;
use crate::listener;
use crate::metrics::MetricsSource;
use crate::offer::names;
use crate::tls::{Fingerprint, TlsIdentity};

/// Bound on [`SignalingServer::shutdown`] waiting for the accept loop, which
/// itself gives up on connections after 5 s.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(6);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be opened.
    #[error("cannot listen for signaling on {addr}: {}", crate::describe_io(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Two answerers were given for one transport.
    #[error("two answerers registered for transport {0}; register one per transport")]
    DuplicateAnswerer(Transport),
    /// `Some("")` as the token would accept `Authorization: Bearer ` from anyone.
    #[error("the signaling token is empty; pass a non-empty token or none")]
    EmptyToken,
    /// A CORS origin that no browser sends.
    #[error(
        "CORS origin {0:?} is not an origin: give scheme://host[:port] without a path, as a browser sends it in Origin (e.g. https://app.example), or *"
    )]
    InvalidCorsOrigin(String),
}

/// The signaling HTTP server, serving in a background task from
/// [`bind`](SignalingServer::bind) until [`shutdown`](SignalingServer::shutdown)
/// or drop.
///
/// Dropping it without `shutdown` also stops accepting and closes every
/// session, but does not wait for open connections to finish.
pub struct SignalingServer {
    local_addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl fmt::Debug for SignalingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalingServer")
            .field("local_addr", &self.local_addr)
            .field("https", &self.state.config.tls.is_some())
            .field("sessions", &self.state.registry.ids().len())
            .finish_non_exhaustive()
    }
}

impl SignalingServer {
    /// Binds `addr` and starts serving in a background task, answering offers
    /// with `answerers` (one per transport).
    ///
    /// ```no_run
    /// # async fn run(answerers: Vec<std::sync::Arc<dyn relay_signaling::Answerer>>) -> Result<(), relay_signaling::ServerError> {
    /// use relay_signaling::{ServerConfig, SignalingServer};
    /// let server = SignalingServer::bind("0.0.0.0:8080".parse().unwrap(), ServerConfig::default(), answerers).await?;
    /// println!("signaling on http://{}", server.local_addr());
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        answerers: Vec<Arc<dyn Answerer>>,
    ) -> Result<SignalingServer, ServerError> {
        if config.token.as_deref() == Some("") {
            return Err(ServerError::EmptyToken);
        }
        if let Some(bad) = config.cors_origins.iter().find(|o| !cors::check_origin(o)) {
            return Err(ServerError::InvalidCorsOrigin(bad.clone()));
        }
        let mut by_transport = HashMap::new();
        for answerer in answerers {
            let transport = answerer.transport();
            if by_transport.insert(transport, answerer).is_some() {
                return Err(ServerError::DuplicateAnswerer(transport));
            }
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;

        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(State::new(config, by_transport, stop_rx));
        let shared = Arc::new(state.listener("signaling"));
        match &state.config.tls {
            Some(identity) => info!(
                %local_addr,
                transports = %names(&state.served),
                fingerprint = %identity.fingerprint(),
                "signaling server listening (https)"
            ),
            None => {
                info!(%local_addr, transports = %names(&state.served), "signaling server listening (http)")
            }
        }
        let accept_loop = tokio::spawn(listener::accept_loop(listener, shared));
        Ok(SignalingServer {
            local_addr,
            state,
            stop,
            accept_loop: Some(accept_loop),
        })
    }

    /// The base address to give [`SignalingClient::new`](crate::SignalingClient::new):
    /// `https://ip:port` when serving TLS, else `http://ip:port` (the bound
    /// address: an unspecified `0.0.0.0` stays as is).
    pub fn url(&self) -> String {
        let scheme = if self.is_https() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Whether the server speaks https.
    pub fn is_https(&self) -> bool {
        self.state.config.tls.is_some()
    }

    /// SHA-256 fingerprint of the certificate the server presents (https
    /// only): what the offerer pins with
    /// [`SignalingClient::with_fingerprint`](crate::SignalingClient::with_fingerprint).
    pub fn tls_fingerprint(&self) -> Option<Fingerprint> {
        self.state.config.tls.as_ref().map(TlsIdentity::fingerprint)
    }

    /// The text `GET /metrics` serves now (Prometheus text format; see
    /// [`metrics`](crate::metrics)).
    pub fn metrics(&self) -> String {
        self.state.metrics()
    }

    /// [`metrics`](SignalingServer::metrics) as a source for
    /// [`serve_metrics`](crate::metrics::serve_metrics), to serve them on a
    /// separate address as well. Keeps reporting (the last sessions and
    /// counters) after the server stops.
    pub fn metrics_source(&self) -> MetricsSource {
        let state = Arc::clone(&self.state);
        Arc::new(move || state.metrics())
    }

    /// The address the server listens on (with the port chosen by the OS if
    /// `bind` was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Ids of the live sessions, sorted.
    pub fn session_ids(&self) -> Vec<String> {
        self.state.registry.ids()
    }

    /// Stops accepting, closes every session ([`Session::close`](crate::Session::close)),
    /// lets open connections finish their request, and waits for all that
    /// for a bounded time (about 6 s at most).
    pub async fn shutdown(mut self) {
        self.stop_and_close_sessions();
        let Some(task) = self.accept_loop.take() else {
            return;
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_BOUND, task).await.is_err() {
            warn!(addr = %self.local_addr, "signaling server did not stop in time; aborting its connections");
            abort.abort();
        }
        info!(addr = %self.local_addr, "signaling server stopped");
    }

    fn stop_and_close_sessions(&self) {
        self.stop.send_replace(true);
        for (id, entry) in self.state.registry.drain_for_shutdown() {
            entry.session.close();
            info!(%id, transport = %entry.transport, mode = %entry.current_mode(), "signaling session closed: server shutting down");
        }
    }
}

impl Drop for SignalingServer {
    fn drop(&mut self) {
        if self.accept_loop.is_some() {
            self.stop_and_close_sessions();
        }
    }
}
