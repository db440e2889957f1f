//! The HTTP server: accepts connections, answers offers through the
//! registered [`Answerer`]s, and tracks the resulting sessions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use relay_core::{OfferResponse, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::auth::bearer_matches;
use crate::offer::{names, parse_offer};
use crate::registry::{Entry, Registry};
use crate::reply::{self, Body};
use crate::route::Route;
use crate::{Answerer, SessionInfo, SessionState};

/// Default cap on a request body: an SDP offer with a few dozen candidates is
/// under 8 KiB, so 64 KiB leaves room without letting a client make the
/// server buffer megabytes (DESIGN.md, "Signaling").
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Default cap on live sessions (each holds sockets and buffers in its
/// backend).
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// Default time a client has to send a request's headers, and then its body:
/// generous for a peer across the world, short enough that idle or
/// slowloris connections do not pile up.
pub const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish their request at shutdown.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// Bound on [`SignalingServer::shutdown`] waiting for the accept loop, which
/// itself gives up on connections after [`CONNECTION_DRAIN`].
const SHUTDOWN_BOUND: Duration = Duration::from_secs(6);

/// Pause after a failed `accept` (typically out of file descriptors) so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the server treats requests. `Default` plus builder-style setters:
///
/// ```
/// use relay_signaling::ServerConfig;
/// let config = ServerConfig::default()
///     .token(Some("s3cret".into()))
///     .max_body_bytes(32 * 1024)
///     .max_sessions(64);
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    token: Option<String>,
    max_body_bytes: usize,
    max_sessions: usize,
    request_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("request_read_timeout", &self.request_read_timeout)
            .finish()
    }
}

impl ServerConfig {
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

    /// Time a client has to send a request's headers, and again its body,
    /// before the connection is dropped (default
    /// [`DEFAULT_REQUEST_READ_TIMEOUT`]).
    pub fn request_read_timeout(mut self, timeout: Duration) -> Self {
        self.request_read_timeout = timeout;
        self
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
}

/// What every connection task shares.
struct State {
    config: ServerConfig,
    answerers: HashMap<Transport, Arc<dyn Answerer>>,
    /// The registered transports, in [`Transport::ALL`] order, for messages.
    served: Vec<Transport>,
    registry: Arc<Registry>,
    /// Becomes `true` at shutdown; session watchers and connections stop.
    stop: watch::Receiver<bool>,
}

/// The signaling HTTP server, serving in a background task from
/// [`bind`](SignalingServer::bind) until [`shutdown`](SignalingServer::shutdown)
/// or drop.
///
/// Dropping it without `shutdown` also stops accepting and closes every
/// session, but does not wait for open connections to finish.
pub struct SignalingServer {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl fmt::Debug for SignalingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalingServer")
            .field("local_addr", &self.local_addr)
            .field("sessions", &self.registry.ids().len())
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
        let registry = Registry::new(config.max_sessions);
        let served = Transport::ALL
            .into_iter()
            .filter(|t| by_transport.contains_key(t))
            .collect();
        let state = Arc::new(State {
            config,
            answerers: by_transport,
            served,
            registry: Arc::clone(&registry),
            stop: stop_rx,
        });
        info!(%local_addr, transports = %names(&state.served), "signaling server listening");
        let accept_loop = tokio::spawn(accept_loop(listener, state));
        Ok(SignalingServer {
            local_addr,
            registry,
            stop,
            accept_loop: Some(accept_loop),
        })
    }

    /// The address the server listens on (with the port chosen by the OS if
    /// `bind` was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Ids of the live sessions, sorted.
    pub fn session_ids(&self) -> Vec<String> {
        self.registry.ids()
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
        for (id, entry) in self.registry.drain_for_shutdown() {
            entry.session.close();
            info!(%id, transport = %entry.transport, mode = %entry.mode, "signaling session closed: server shutting down");
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

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut stop = state.stop.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&state)));
                }
                Err(e) => {
                    warn!(error = %e, "signaling server cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(CONNECTION_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "signaling connections still open at shutdown; dropping them"
        );
        connections.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut stop = state.stop.clone();
    let service_state = Arc::clone(&state);
    let service = service_fn(move |req| {
        let state = Arc::clone(&service_state);
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.request_read_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "signaling connection ended with an error");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    // Finish the request in progress, if any, then close.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "signaling connection ended with an error during shutdown");
    }
}

/// Resolves once the server is stopping (or its handle is gone). Returns
/// nothing: the `watch` guard must not live across an `.await`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Answers one request. Never panics; every refusal is a JSON error.
async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        return reject(StatusCode::NOT_FOUND, format!("no such path {path}"));
    };
    if let Some(token) = state.config.token.as_deref()
        && route.needs_token()
        && !bearer_matches(req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes), token)
    {
        let mut response = reject(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token; send Authorization: Bearer <token>",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let method = req.method().clone();
    if !route.allowed().contains(&method) {
        let allow = route
            .allowed()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut response = reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; allowed: {allow}"),
        );
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(ALLOW, value);
        }
        return response;
    }
    match route {
        Route::Health => reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Route::Sessions if method == Method::POST => create_session(state, req).await,
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
        Err(response) => return response,
    };
    let offer = match parse_offer(&body, &state.served) {
        Ok(offer) => offer,
        Err(message) => return reject(StatusCode::BAD_REQUEST, message),
    };
    let Some(answerer) = state.answerers.get(&offer.transport) else {
        // parse_offer only accepts served transports.
        return reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no answerer for a served transport",
        );
    };
    let reservation = match state.registry.reserve() {
        Ok(reservation) => reservation,
        Err(refusal) => return reject(StatusCode::SERVICE_UNAVAILABLE, refusal.message()),
    };
    let (transport, mode) = (offer.transport, offer.mode);
    let accepted = match answerer.answer(mode, offer.offer).await {
        Ok(accepted) => accepted,
        Err(e) => return reject(e.status(), e.to_string()),
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
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the signaling server is shutting down",
            );
        }
    };
    info!(%id, %transport, %mode, "signaling session created");
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
                    info!(%id, transport = %entry.transport, mode = %entry.mode, %reason, "signaling session removed");
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
    info!(%id, transport = %entry.transport, mode = %entry.mode, "signaling session removed: deleted by request");
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
        mode: entry.mode,
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

/// An error response, logged at debug level (refusals are the client's
/// business, not the operator's).
fn reject(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    debug!(status = status.as_u16(), %message, "signaling request refused");
    reply::error(status, message)
}
