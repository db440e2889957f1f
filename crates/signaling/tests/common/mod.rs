//! Fakes and helpers shared by the integration tests: an [`Answerer`] whose
//! behaviour the test picks, a [`Session`] the test can end, and a raw HTTP
//! request helper. Every wait is bounded.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_core::{CloseReason, CloseSignal, LinkStats, Mode, StatsRecorder, Transport};
use relay_signaling::{Accepted, AnswerError, Answerer, ServerConfig, Session, SignalingServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A session the test controls.
pub struct FakeSession {
    transport: Transport,
    mode: Mutex<Mode>,
    signal: CloseSignal,
    pub close_calls: AtomicUsize,
    up: Mutex<bool>,
}

impl FakeSession {
    /// The peer goes away: `closed()` resolves without `close()`.
    pub fn peer_closes(&self) {
        self.signal.close(CloseReason::PeerClosed);
    }

    /// The link comes up: `stats()` starts returning counters.
    pub fn come_up(&self) {
        *self.up.lock().unwrap() = true;
    }

    /// The link comes up in `mode`, as a dc link does in the mode of the
    /// channel the peer opened, whatever the offer said.
    pub fn come_up_in(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        self.come_up();
    }

    pub fn closes(&self) -> usize {
        self.close_calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Session for FakeSession {
    fn stats(&self) -> Option<LinkStats> {
        self.up
            .lock()
            .unwrap()
            .then(|| StatsRecorder::new(self.transport, *self.mode.lock().unwrap()).snapshot())
    }

    fn close(&self) {
        self.close_calls.fetch_add(1, Ordering::SeqCst);
        self.signal.close(CloseReason::Local);
    }

    async fn closed(&self) -> CloseReason {
        self.signal.wait().await
    }
}

/// What the fake answerer does with the next offers.
#[derive(Clone)]
pub enum Behaviour {
    Accept,
    Refuse(AnswerError),
}

/// Answers for one transport; records every call and every session.
pub struct FakeAnswerer {
    transport: Transport,
    behaviour: Mutex<Behaviour>,
    pub calls: Mutex<Vec<(Mode, Value)>>,
    pub sessions: Mutex<Vec<Arc<FakeSession>>>,
}

impl FakeAnswerer {
    pub fn new(transport: Transport) -> Arc<FakeAnswerer> {
        Arc::new(FakeAnswerer {
            transport,
            behaviour: Mutex::new(Behaviour::Accept),
            calls: Mutex::default(),
            sessions: Mutex::default(),
        })
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn last_call(&self) -> (Mode, Value) {
        self.calls
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the answerer was called")
    }

    pub fn session(&self, i: usize) -> Arc<FakeSession> {
        Arc::clone(&self.sessions.lock().unwrap()[i])
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Answerer for FakeAnswerer {
    fn transport(&self) -> Transport {
        self.transport
    }

    async fn answer(&self, mode: Mode, offer: Value) -> Result<Accepted, AnswerError> {
        self.calls.lock().unwrap().push((mode, offer.clone()));
        if let Behaviour::Refuse(e) = self.behaviour.lock().unwrap().clone() {
            return Err(e);
        }
        let session = Arc::new(FakeSession {
            transport: self.transport,
            mode: Mutex::new(mode),
            signal: CloseSignal::new(),
            close_calls: AtomicUsize::new(0),
            up: Mutex::new(false),
        });
        self.sessions.lock().unwrap().push(Arc::clone(&session));
        let answer = match self.transport {
            Transport::Dc => json!({"type": "answer", "sdp": "v=0\r\no=answer\r\n"}),
            _ => json!({"echo": offer}),
        };
        Ok(Accepted { answer, session })
    }
}

/// A server on an ephemeral loopback port.
pub async fn start(config: ServerConfig, answerers: &[Arc<FakeAnswerer>]) -> SignalingServer {
    let answerers = answerers
        .iter()
        .map(|a| Arc::clone(a) as Arc<dyn Answerer>)
        .collect();
    bounded(
        "bind",
        SignalingServer::bind("127.0.0.1:0".parse().unwrap(), config, answerers),
    )
    .await
    .expect("bind on loopback")
}

/// A response as the tests look at it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the JSON error shape and returns the message.
    pub fn error(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "status {}",
            self.status
        );
        match self.json().get("error") {
            Some(Value::String(m)) => m.clone(),
            other => panic!("no \"error\" string in the body: {other:?}"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let body = body.into();
    bounded(&format!("{method} {path}"), async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = sender
            .send_request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    })
    .await
}

/// POSTs `body` (JSON) to /v1/sessions.
pub async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, Method::POST, "/v1/sessions", &all, body.to_string()).await
}

/// Writes `bytes` on a raw connection and reads until the server closes it.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    bounded("raw exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        // A reset after the response still leaves what was read.
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}
