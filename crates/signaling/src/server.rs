//! The HTTP server: accepts connections, answers offers through the
//! registered [`Answerer`]s, and tracks the resulting sessions.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use relay_core::{OfferResponse, Transport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::auth::authorize;
use crate::cors::{self, Cors, Verdict};
use crate::listener::{
    self, ConnectionCounters, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_READ_TIMEOUT, Handler, Limits, Listener, stopped,
};
use crate::metrics::{self, LinkMetrics, MetricsSource, Role, ServerCounters, SessionRefusals};
use crate::offer::{names, parse_offer};
use crate::registry::{Entry, Refusal, Registry};
use crate::reply::{self, Body};
use crate::route::Route;
use crate::tls::{Fingerprint, TlsIdentity};
use crate::{Answerer, SessionInfo, SessionState};

/// Default cap on a request body: an SDP offer with a few dozen candidates is
/// under 8 KiB, so 64 KiB leaves room without letting a client make the
/// server buffer megabytes (DESIGN.md, "Signaling").
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Default cap on live sessions (each holds sockets and buffers in its
/// backend).
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// Bound on [`SignalingServer::shutdown`] waiting for the accept loop, which
/// itself gives up on connections after 5 s.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(6);

/// How the server treats requests. `Default` plus builder-style setters:
///
/// ```
/// use relay_signaling::ServerConfig;
/// let config = ServerConfig::default()
///     .token(Some("s3cret".into()))
///     .max_body_bytes(32 * 1024)
///     .max_sessions(64)
///     .max_connections(128)
///     .cors_origin("https://app.example");
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    token: Option<String>,
    max_body_bytes: usize,
    max_sessions: usize,
    max_connections: usize,
    max_header_bytes: usize,
    request_read_timeout: Duration,
    tls: Option<TlsIdentity>,
    extra_metrics: Option<MetricsSource>,
    cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
            tls: None,
            extra_metrics: None,
            cors_origins: Vec::new(),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("request_read_timeout", &self.request_read_timeout)
            .field("tls", &self.tls)
            .field("extra_metrics", &self.extra_metrics.is_some())
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl ServerConfig {
    /// More metric families for `GET /metrics`, appended after the
    /// server's own: the embedding process's counters (for `relay answer`,
    /// streams resumed after a reconnect). The text must be in the
    /// exposition format and must not repeat the server's metric names.
    pub fn extra_metrics(mut self, source: MetricsSource) -> Self {
        self.extra_metrics = Some(source);
        self
    }

    /// Bearer token every request but `GET /healthz` must carry
    /// (`Authorization: Bearer <token>`); `None` (the default) lets anyone in.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Largest request body accepted; larger is `413` (default
    /// [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Most sessions live at once; an offer beyond is `503` (default
    /// [`DEFAULT_MAX_SESSIONS`]).
    pub fn max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions;
        self
    }

    /// Time a client has to complete the TLS handshake (https), then to
    /// send a request's headers, and again its body, before the connection
    /// is dropped (default [`DEFAULT_REQUEST_READ_TIMEOUT`]). An idle
    /// keep-alive connection gets the same time to start its next request.
    pub fn request_read_timeout(mut self, timeout: Duration) -> Self {
        self.request_read_timeout = timeout;
        self
    }

    /// Most connections open at once (at least 1); beyond, new connections
    /// are closed as soon as they are accepted and a warning is logged at
    /// most once per second (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Largest request head (request line plus headers) accepted; larger is
    /// `431` and the connection is closed (default
    /// [`DEFAULT_MAX_HEADER_BYTES`]; hyper buffers at least 8 KiB whatever
    /// this says).
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Serves https with `identity` instead of plain http. The offerer pins
    /// [`TlsIdentity::fingerprint`] with
    /// [`SignalingClient::with_fingerprint`](crate::SignalingClient::with_fingerprint).
    ///
    /// ```
    /// use relay_signaling::{ServerConfig, TlsIdentity};
    /// let config = ServerConfig::default().tls(TlsIdentity::self_signed()?);
    /// # Ok::<(), relay_signaling::TlsError>(())
    /// ```
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Lets browser pages from `origin` call the server (CORS); repeat for
    /// more origins. `origin` is what a browser sends in `Origin`:
    /// `scheme://host[:port]`, no path (`https://app.example`); `*` allows
    /// every origin. None by default: a request that carries an `Origin`
    /// is refused with `403`, while requests without one (curl, other
    /// servers, [`SignalingClient`](crate::SignalingClient)) are served.
    /// [`SignalingServer::bind`] refuses anything else.
    ///
    /// ```
    /// use relay_signaling::ServerConfig;
    /// let config = ServerConfig::default().cors_origin("https://app.example");
    /// ```
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            request_read_timeout: self.request_read_timeout,
        }
    }
}

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

/// What every connection task shares.
pub(crate) struct State {
    config: ServerConfig,
    answerers: HashMap<Transport, Arc<dyn Answerer>>,
    /// The registered transports, in [`Transport::ALL`] order, for messages.
    served: Vec<Transport>,
    registry: Arc<Registry>,
    cors: Cors,
    /// Becomes `true` at shutdown; session watchers and connections stop.
    stop: watch::Receiver<bool>,
    sessions_created: AtomicU64,
    refusals: RefusalCounters,
    /// Kept by the listener that serves this state.
    connections: Arc<ConnectionCounters>,
}

/// [`SessionRefusals`], counted as they happen.
#[derive(Default)]
struct RefusalCounters {
    unauthorized: AtomicU64,
    bad_offer: AtomicU64,
    too_large: AtomicU64,
    timeout: AtomicU64,
    session_limit: AtomicU64,
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
    fn count(&self, status: StatusCode) {
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
    fn metrics(&self) -> String {
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

impl Handler for State {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        handle(self, req)
    }
}

/// Answers one request. Never panics; every refusal is a JSON error.
///
/// A request from a browser page on an origin that is not allowed is
/// refused first, before its body is read or anything is created (see
/// [`cors`]); one from an allowed origin may read the response.
async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    match state.cors.verdict(req.headers()) {
        Verdict::NoOrigin => respond(state, req, false).await,
        Verdict::Allowed(origin) => {
            let mut response = respond(state, req, true).await;
            cors::allow(&mut response, origin);
            response
        }
        Verdict::Refused(origin) => {
            if Route::parse(req.uri().path()) == Some(Route::Sessions) && req.method() == Method::POST {
                state.refusals.count(StatusCode::FORBIDDEN);
            }
            cors::refuse(&origin)
        }
    }
}

/// [`handle`] once the origin is settled; `cross_origin` when the request
/// came from an allowed browser page's origin.
async fn respond(state: &State, req: Request<Incoming>, cross_origin: bool) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        return reject(StatusCode::NOT_FOUND, format!("no such path {path}"));
    };
    if cross_origin && cors::is_preflight(req.method(), req.headers()) {
        return cors::preflight(route);
    }
    if route.needs_token()
        && let Some(refusal) = authorize(state.config.token.as_deref(), &req)
    {
        debug!(%path, "signaling request refused: missing or wrong bearer token");
        if route == Route::Sessions && req.method() == Method::POST {
            state.refusals.count(StatusCode::UNAUTHORIZED);
        }
        return refusal;
    }
    let method = req.method().clone();
    if !route.allowed().contains(&method) {
        debug!(%path, %method, "signaling request refused: method not allowed");
        return reply::method_not_allowed(&method, &path, route.allowed());
    }
    match route {
        Route::Health => reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Route::Metrics => metrics::exposition(state.metrics()),
        Route::Sessions if method == Method::POST => {
            let response = create_session(state, req).await;
            if response.status() == StatusCode::CREATED {
                state.sessions_created.fetch_add(1, Ordering::Relaxed);
            }
            response
        }
        Route::Sessions => {
            let list: Vec<SessionInfo> = state
                .registry
                .list()
                .into_iter()
                .map(|(id, entry)| info_of(id, &entry))
                .collect();
            reply::json(StatusCode::OK, &list)
        }
        Route::Session(id) if method == Method::DELETE => delete_session(state, id),
        Route::Session(id) | Route::SessionStats(id) => match state.registry.get(id) {
            Some(entry) => reply::json(StatusCode::OK, &info_of(id.to_owned(), &entry)),
            None => no_session(id),
        },
    }
}

async fn create_session(state: &State, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(state, req).await {
        Ok(body) => body,
        Err(response) => {
            state.refusals.count(response.status());
            return response;
        }
    };
    let offer = match parse_offer(&body, &state.served) {
        Ok(offer) => offer,
        Err(message) => return state.refuse(StatusCode::BAD_REQUEST, message),
    };
    let Some(answerer) = state.answerers.get(&offer.transport) else {
        // parse_offer only accepts served transports.
        return state.refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no answerer for a served transport",
        );
    };
    let reservation = match state.registry.reserve() {
        Ok(reservation) => reservation,
        Err(refusal @ Refusal::Full(_)) => {
            state.refusals.session_limit.fetch_add(1, Ordering::Relaxed);
            return reject(StatusCode::SERVICE_UNAVAILABLE, refusal.message());
        }
        Err(refusal) => return state.refuse(StatusCode::SERVICE_UNAVAILABLE, refusal.message()),
    };
    let (transport, mode) = (offer.transport, offer.mode);
    let accepted = match answerer.answer(mode, offer.offer).await {
        Ok(accepted) => accepted,
        Err(e) => return state.refuse(e.status(), e.to_string()),
    };
    let entry = Entry {
        transport,
        mode,
        session: Arc::clone(&accepted.session),
    };
    let id = match reservation.insert(entry) {
        Ok(id) => id,
        Err(entry) => {
            entry.session.close();
            return state.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the signaling server is shutting down",
            );
        }
    };
    if offer.bare_w3c {
        // No mode yet: the channel the peer opens sets it (Entry::current_mode).
        info!(%id, %transport, "signaling session created for a bare W3C offer");
    } else {
        info!(%id, %transport, %mode, "signaling session created");
    }
    watch_session(state, id.clone(), accepted.session);

    let mut response = if offer.bare_w3c {
        reply::json(StatusCode::CREATED, &accepted.answer)
    } else {
        reply::json(
            StatusCode::CREATED,
            &OfferResponse {
                id: id.clone(),
                answer: accepted.answer,
            },
        )
    };
    // Ids are hex, always a valid header value.
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Forgets the session as soon as it ends by itself, so none is left behind.
fn watch_session(state: &State, id: String, session: Arc<dyn crate::Session>) {
    let registry = Arc::clone(&state.registry);
    let mut stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            reason = session.closed() => {
                if let Some(entry) = registry.remove(&id) {
                    info!(%id, transport = %entry.transport, mode = %entry.current_mode(), %reason, "signaling session removed");
                }
            }
            // Shutdown closes and forgets every session itself.
            _ = stopped(&mut stop) => {}
        }
    });
}

fn delete_session(state: &State, id: &str) -> Response<Body> {
    let Some(entry) = state.registry.remove(id) else {
        return no_session(id);
    };
    entry.session.close();
    info!(%id, transport = %entry.transport, mode = %entry.current_mode(), "signaling session removed: deleted by request");
    reply::no_content()
}

/// Reads the whole body, refusing more than `max_body_bytes` whether the
/// client announced it (`Content-Length`) or streams it (chunked).
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let max = state.config.max_body_bytes;
    let too_large = || {
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes"),
        )
    };
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let timeout = state.config.request_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(reject(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => Err(reject(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {} ms", timeout.as_millis()),
        )),
    }
}

fn info_of(id: String, entry: &Entry) -> SessionInfo {
    let stats = entry.session.stats();
    SessionInfo {
        id,
        transport: entry.transport,
        mode: stats.as_ref().map_or(entry.mode, |stats| stats.mode),
        state: if stats.is_some() {
            SessionState::Up
        } else {
            SessionState::Connecting
        },
        stats,
    }
}

fn no_session(id: &str) -> Response<Body> {
    reject(StatusCode::NOT_FOUND, format!("no session {id}"))
}

impl State {
    /// [`reject`], counting the refused offer.
    fn refuse(&self, status: StatusCode, message: impl Into<String>) -> Response<Body> {
        self.refusals.count(status);
        reject(status, message)
    }
}

/// An error response, logged at debug level (refusals are the client's
/// business, not the operator's).
fn reject(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    debug!(status = status.as_u16(), %message, "signaling request refused");
    reply::error(status, message)
}
