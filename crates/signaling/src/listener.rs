//! The connection side shared by the signaling server, the metrics server
//! and the fuzzing entry point: accept under a connection cap, optional TLS
//! with a bounded handshake, and hyper's HTTP/1 with bounded headers and a
//! header read timeout. What a request means is the [`Handler`]'s business.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::reply::Body;

/// How long open connections get to finish their request at shutdown.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// At shutdown, time a connection that is not answering a request gets to
/// flush a response just produced; a half-sent head is dropped after it.
const FLUSH_GRACE: Duration = Duration::from_millis(100);

/// Pause after a failed `accept` (typically out of file descriptors) so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one "connection limit reached" warning per this interval, so a
/// flood cannot flood the log too.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection: a handshake record (RFC 8446
/// section 5.1, `ContentType.handshake`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Answers one request. Never panics; every refusal is a response.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The response to `req`.
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Default time a client has to send a request's headers, and then its body:
/// generous for a peer across the world, short enough that idle or
/// slowloris connections do not pile up.
pub const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on open connections. The offerer opens one connection per
/// request and closes it, so a few dozen relays setting up at once stay far
/// below; each connection costs a task and up to
/// [`DEFAULT_MAX_HEADER_BYTES`] of buffer plus the body cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default cap on a request head (request line and headers): ours are well
/// under 1 KiB; 16 KiB is what common proxies allow for a whole head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Bounds on what one client can make the server hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub request_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
        }
    }
}

/// Connection counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounters {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_limit: AtomicU64,
    pub tls_failed: AtomicU64,
}

/// Everything a connection task needs.
pub(crate) struct Listener<H> {
    /// `"signaling"` or `"metrics"`, for logs.
    pub what: &'static str,
    pub handler: Arc<H>,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub counters: Arc<ConnectionCounters>,
    /// Becomes `true` at shutdown.
    pub stop: watch::Receiver<bool>,
    /// One permit per open connection.
    pub slots: Arc<Semaphore>,
}

impl<H> Listener<H> {
    pub(crate) fn new(
        what: &'static str,
        handler: Arc<H>,
        limits: Limits,
        tls: Option<tokio_rustls::TlsAcceptor>,
        counters: Arc<ConnectionCounters>,
        stop: watch::Receiver<bool>,
    ) -> Listener<H> {
        Listener {
            what,
            handler,
            limits,
            tls,
            counters,
            stop,
            slots: Arc::new(Semaphore::new(
                limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }
}

/// Accepts until stopped, then gives open connections [`CONNECTION_DRAIN`]
/// to finish their request.
pub(crate) async fn accept_loop<H: Handler>(listener: TcpListener, shared: Arc<Listener<H>>) {
    let mut stop = shared.stop.clone();
    let mut connections = JoinSet::new();
    let mut refusals = RefusalLog::default();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&shared.slots).try_acquire_owned() {
                    Ok(permit) => {
                        let slot = Slot::taken(permit, &shared.counters);
                        connections.spawn(serve_connection(stream, peer, Arc::clone(&shared), slot));
                    }
                    Err(_) => {
                        // Closing at once costs nothing; answering 503 would
                        // mean a TLS handshake per refused connection.
                        drop(stream);
                        shared.counters.refused_limit.fetch_add(1, Ordering::Relaxed);
                        refusals.refused(shared.what, shared.limits.max_connections);
                    }
                },
                Err(e) => {
                    warn!(error = %e, "{} server cannot accept a connection", shared.what);
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
            "{} connections still open at shutdown; dropping them", shared.what
        );
        connections.abort_all();
    }
}

/// One open connection: holds its place under the cap and in the
/// `open` gauge until dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<ConnectionCounters>,
}

impl Slot {
    fn taken(permit: OwnedSemaphorePermit, counters: &Arc<ConnectionCounters>) -> Slot {
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            counters: Arc::clone(counters),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs refused connections at most once per [`REFUSAL_LOG_INTERVAL`],
/// with how many were refused since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Counts one refusal at `now`; returns how many refusals to report if a
    /// line is due.
    fn refused_at(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    fn refused(&mut self, what: &str, max: usize) {
        if let Some(refused) = self.refused_at(Instant::now()) {
            warn!(
                max_connections = max,
                refused, "{what} connection limit reached: closing new connections until some finish"
            );
        }
    }
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Listener<H>>,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        serve_http(stream, peer, &shared).await;
        return;
    };
    let timeout = shared.limits.request_read_timeout;
    let mut stop = shared.stop.clone();
    let handshake = tokio::select! {
        result = tokio::time::timeout(timeout, tls_handshake(acceptor, stream)) => result,
        _ = stopped(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(tls)) => serve_http(tls, peer, &shared).await,
        Ok(Err(e)) => {
            shared.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, error = %e, "{} TLS handshake failed", shared.what);
        }
        Err(_) => {
            shared.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, after_ms = timeout.as_millis(), "{} TLS handshake not completed in time", shared.what);
        }
    }
}

/// Why a connection to the https server was not served.
#[derive(Debug)]
enum HandshakeError {
    /// The client spoke plain HTTP; it was told to use https.
    PlainHttp,
    Io(std::io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::PlainHttp => f.write_str("the client spoke plain HTTP to the https port"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The server side of the TLS handshake. A client that speaks plain HTTP
/// gets a plain-text `400` saying to use https, rather than a TLS alert it
/// cannot read.
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeError> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await.map_err(HandshakeError::Io)?;
    if n == 1 && first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
        refuse_plain_http(stream).await;
        return Err(HandshakeError::PlainHttp);
    }
    acceptor.accept(stream).await.map_err(HandshakeError::Io)
}

async fn refuse_plain_http(mut stream: TcpStream) {
    let body = r#"{"error":"this signaling server speaks https only; use https://host:port and pass the server's certificate fingerprint"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Read what the client sent first: closing with unread data would make
    // the kernel send a reset, which can destroy the response in flight.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await;
    if stream.write_all(response.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Serves HTTP/1 requests on `io` until the client closes, a limit is hit,
/// or the server stops (then the request in progress is finished first).
pub(crate) async fn serve_http<H, I>(io: I, peer: impl fmt::Display, shared: &Listener<H>)
where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.stop.clone();
    let handler = Arc::clone(&shared.handler);
    // Whether a request is being answered: at shutdown such a connection
    // gets to finish, while one still waiting for (or reading) a head is
    // dropped rather than allowed to hold shutdown up.
    let answering = Arc::new(AtomicBool::new(false));
    let in_service = Arc::clone(&answering);
    let service = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        let answering = Arc::clone(&in_service);
        answering.store(true, Ordering::Relaxed);
        async move {
            let response = handler.handle(req).await;
            answering.store(false, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let limits = shared.limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_read_timeout)
        // Headers beyond this are 431 and the connection is closed: hyper
        // never buffers more than this for a request head.
        .max_header_size(limits.max_header_bytes)
        // hyper's floor for the read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        // A client that half-closes after its request still gets the
        // answer (and a truncated request ends at once instead of waiting
        // for the read timeout).
        .half_close(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "{} connection ended with an error", shared.what);
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    // Finish the request in progress, if any, then close.
    conn.as_mut().graceful_shutdown();
    let grace = if answering.load(Ordering::Relaxed) {
        CONNECTION_DRAIN
    } else {
        FLUSH_GRACE
    };
    match tokio::time::timeout(grace, conn).await {
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "{} connection ended with an error during shutdown", shared.what)
        }
        Ok(Ok(())) => {}
        Err(_) => debug!(%peer, "{} connection dropped at shutdown", shared.what),
    }
}

/// Resolves once the server is stopping (or its handle is gone). Returns
/// nothing: the `watch` guard must not live across an `.await`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_most_once_a_second_with_the_count_since() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.refused_at(t0), Some(1));
        for ms in [1, 10, 500, 999] {
            assert_eq!(log.refused_at(t0 + Duration::from_millis(ms)), None, "{ms} ms");
        }
        assert_eq!(log.refused_at(t0 + Duration::from_millis(1000)), Some(5));
        assert_eq!(log.refused_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.refused_at(t0 + Duration::from_secs(60)), Some(2));
    }
}
