//! Answering one HTTP request: the origin check, the route, the bearer
//! token, and the session endpoints (create from an offer, list, show,
//! delete), each refusal a JSON error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use relay_core::OfferResponse;
use tracing::{debug, info};

use super::State;
use crate::auth::authorize;
use crate::cors::{self, Verdict};
use crate::listener::{Handler, stopped};
use crate::metrics;
use crate::offer::parse_offer;
use crate::registry::{Entry, Refusal};
use crate::reply::{self, Body};
use crate::route::Route;
use crate::{SessionInfo, SessionState};

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

pub(super) fn info_of(id: String, entry: &Entry) -> SessionInfo {
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
