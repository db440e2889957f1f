//! [`serve_metrics`]: `/metrics` for a process that has no signaling
//! server (the offerer), on the signaling server's listener and routes.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::text::exposition;
use crate::auth::authorize;
use crate::listener::{self, Handler, Limits, Listener};
use crate::reply::{self, Body};
use crate::route::Route;

/// Bound on [`MetricsServer::shutdown`] waiting for its connections.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(6);

/// The text for `/metrics`, produced afresh on every scrape.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// A tiny HTTP server answering `GET /metrics` (bearer token if one is
/// set) and `GET /healthz` (no token), `404` otherwise, with the signaling
/// server's connection cap, header limit and read timeout. Serves until
/// [`shutdown`](MetricsServer::shutdown) or drop.
pub struct MetricsServer {
    local_addr: SocketAddr,
    https: bool,
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://addr/metrics`, or `https://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/metrics", self.local_addr)
    }

    /// Stops accepting and waits (about 6 s at most) for open scrapes to
    /// finish.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let Some(task) = self.accept_loop.take() else {
            return;
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_BOUND, task).await.is_err() {
            abort.abort();
        }
        info!(addr = %self.local_addr, "metrics server stopped");
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Serves `source()` on `GET /metrics` at `addr`, for a process that has no
/// signaling server (the offerer), or beside one on its own port. `token`:
/// the bearer token scrapes must carry, as on the signaling server; `tls`:
/// serve HTTPS with this identity (the signaling server's, so a scraper
/// pins one fingerprint), else plain HTTP.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use relay_signaling::metrics::{render, serve_metrics};
///
/// let server = serve_metrics("127.0.0.1:0".parse().unwrap(), None, Arc::new(|| render(&[], None)), None).await?;
/// println!("metrics on {}", server.url());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub async fn serve_metrics(
    addr: SocketAddr,
    token: Option<String>,
    source: MetricsSource,
    tls: Option<crate::TlsIdentity>,
) -> io::Result<MetricsServer> {
    if token.as_deref() == Some("") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the metrics token is empty; pass a non-empty token or none",
        ));
    }
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {}", crate::describe_io(&e)),
        )
    })?;
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let limits = Limits::default();
    let handler = Arc::new(MetricsHandler { token, source });
    let shared = Arc::new(Listener::new(
        "metrics",
        handler,
        limits,
        tls.as_ref().map(crate::TlsIdentity::acceptor),
        Arc::default(),
        stop_rx,
    ));
    info!(%local_addr, "metrics server listening");
    let accept_loop = tokio::spawn(listener::accept_loop(listener, shared));
    Ok(MetricsServer {
        local_addr,
        https: tls.is_some(),
        stop,
        accept_loop: Some(accept_loop),
    })
}

struct MetricsHandler {
    token: Option<String>,
    source: MetricsSource,
}

impl Handler for MetricsHandler {
    /// The signaling server's routes, of which this server knows two:
    /// `/healthz` (open, for load balancers) and `/metrics` (token).
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        let path = req.uri().path();
        let response = match Route::parse(path) {
            Some(route @ (Route::Health | Route::Metrics)) => {
                if !route.allowed().contains(req.method()) {
                    reply::method_not_allowed(req.method(), path, route.allowed())
                } else if let Some(refusal) = route
                    .needs_token()
                    .then(|| authorize(self.token.as_deref(), &req))
                    .flatten()
                {
                    refusal
                } else if route == Route::Health {
                    reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
                } else {
                    self.scrape()
                }
            }
            _ => reply::error(
                StatusCode::NOT_FOUND,
                format!("no such path {path}; this server answers GET /metrics and GET /healthz"),
            ),
        };
        std::future::ready(response)
    }
}

impl MetricsHandler {
    fn scrape(&self) -> Response<Body> {
        let source = Arc::clone(&self.source);
        // A panicking source must not take the server down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source())) {
            Ok(text) => exposition(text),
            Err(_) => {
                warn!("the metrics source panicked");
                reply::error(StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics")
            }
        }
    }
}
