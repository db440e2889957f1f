//! The fuzzing entry point: one raw HTTP/1.1 connection's bytes through the
//! real request path (hyper's HTTP/1 server with this crate's limits, the
//! router, the token check, the offer parser and the session registry),
//! over an in-memory pipe instead of a socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use relay_core::{CloseReason, CloseSignal, LinkStats, Mode, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::listener::serve_http;
use crate::server::State;
use crate::{Accepted, AnswerError, Answerer, ServerConfig, Session};

/// Bound on one call, so a half request cannot hang the fuzzer.
const CALL_BOUND: Duration = Duration::from_millis(200);

/// The server's read timeouts in the fuzzed server: short enough that the
/// `408` and header-timeout paths are reached within [`CALL_BOUND`].
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Size of the in-memory pipe each way.
const PIPE_BYTES: usize = 64 * 1024;

/// The bearer token the fuzzed server expects.
const TOKEN: &str = "t";

/// The one origin the fuzzed server lets browser pages call it from.
const ORIGIN: &str = "https://a.example";

thread_local! {
    /// One runtime per fuzzing thread, built on first use.
    static RUNTIME: Option<Runtime> = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok();
}

/// Feeds `bytes` as the whole input of one HTTP/1.1 connection to a
/// signaling server (token `t`, CORS origin `https://a.example`, one
/// rtp-udp answerer that always answers
/// `{"addr":"127.0.0.1:5004"}`), closes the client's sending side, and
/// returns the status of the first final (non-1xx) response, if one comes
/// within 200 ms.
///
/// Each call starts from a fresh server state, so calls do not influence
/// each other (sessions created by one are closed before it returns).
///
/// ```
/// let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
/// assert_eq!(relay_signaling::__fuzz::request(request), Some(200));
/// ```
pub fn request(bytes: &[u8]) -> Option<u16> {
    RUNTIME.with(|runtime| runtime.as_ref()?.block_on(exchange(bytes)))
}

async fn exchange(bytes: &[u8]) -> Option<u16> {
    let (stop, stop_rx) = watch::channel(false);
    let config = ServerConfig::default()
        .token(Some(TOKEN.to_owned()))
        .cors_origin(ORIGIN)
        .request_read_timeout(READ_TIMEOUT);
    let mut answerers: HashMap<Transport, Arc<dyn Answerer>> = HashMap::new();
    answerers.insert(Transport::RtpUdp, Arc::new(FixedAnswer));
    let state = Arc::new(State::new(config, answerers, stop_rx));
    let listener = state.listener("fuzz");

    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let input = bytes.to_vec();
    let writer = tokio::spawn(async move {
        // The server may close before taking everything: that is an answer too.
        let _ = to_server.write_all(&input).await;
        let _ = to_server.shutdown().await;
    });
    let serve = tokio::spawn(async move { serve_http(server, "fuzz", &listener).await });

    let status = tokio::time::timeout(CALL_BOUND, first_status(&mut from_server))
        .await
        .ok()
        .flatten();

    writer.abort();
    serve.abort();
    stop.send_replace(true);
    for (_, entry) in state.registry().drain_for_shutdown() {
        entry.session.close();
    }
    status
}

/// Reads responses until the first final status line, or the end.
async fn first_status(from_server: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Skip complete informational (1xx) responses; read more while a
        // status line or a 1xx head is incomplete.
        while let Some(line_end) = find(&seen, b"\r\n") {
            let status = parse_status_line(&seen[..line_end])?;
            if status >= 200 {
                return Some(status);
            }
            let Some(head_end) = find(&seen, b"\r\n\r\n") else {
                break;
            };
            seen.drain(..head_end + 4);
        }
        let n = from_server.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 201 Created` → 201.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Answers every rtp-udp offer with a fixed address.
struct FixedAnswer;

#[async_trait::async_trait]
impl Answerer for FixedAnswer {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }

    async fn answer(&self, _mode: Mode, _offer: serde_json::Value) -> Result<Accepted, AnswerError> {
        Ok(Accepted {
            answer: serde_json::json!({"addr": "127.0.0.1:5004"}),
            session: Arc::new(ClosesOnClose(CloseSignal::new())),
        })
    }
}

/// A session that ends when closed.
struct ClosesOnClose(CloseSignal);

#[async_trait::async_trait]
impl Session for ClosesOnClose {
    fn stats(&self) -> Option<LinkStats> {
        None
    }

    fn close(&self) {
        self.0.close(CloseReason::Local);
    }

    async fn closed(&self) -> CloseReason {
        self.0.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = r#"{"transport":"rtp-udp","offer":{"addr":"127.0.0.1:6004"}}"#;

    fn post(token: &str, body: &str) -> Vec<u8> {
        format!(
            "POST /v1/sessions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_valid_offer_is_answered_201() {
        assert_eq!(request(&post("t", OFFER)), Some(201));
        // Fresh state every call: the same again is still 201.
        assert_eq!(request(&post("t", OFFER)), Some(201));
    }

    #[test]
    fn the_token_is_checked() {
        assert_eq!(request(&post("x", OFFER)), Some(401));
        assert_eq!(
            request(b"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\n\r\n"),
            Some(200)
        );
    }

    #[test]
    fn garbage_gets_its_status_or_nothing() {
        assert_eq!(request(b"\x00\xff garbage\r\n\r\n"), Some(400));
        assert_eq!(request(&post("t", "{not json")), Some(400));
        assert_eq!(request(b""), None);
        // A TLS ClientHello to the plain server, a request without Host
        // to an unknown path, and 70 kB of zeros (no request line).
        assert_eq!(request(b"\x16\x03\x01\x02\x00"), Some(400));
        assert_eq!(request(b"GET / HTTP/1.1\r\n\r\n"), Some(404));
        assert_eq!(request(&[0u8; 70_000]), Some(400));
    }

    #[test]
    fn a_truncated_request_ends_without_hanging() {
        let full = post("t", OFFER);
        // Cut in the headers: no response; cut in the body: 400 (each call
        // is bounded by CALL_BOUND, so neither can hang the fuzzer).
        assert_eq!(request(&full[..30]), None);
        assert_eq!(request(&full[..full.len() - 5]), Some(400));
    }

    #[test]
    fn the_status_after_100_continue_is_returned() {
        let body = OFFER;
        let input = format!(
            "POST /v1/sessions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\nexpect: 100-continue\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(request(input.as_bytes()), Some(201));
    }

    #[test]
    fn oversize_headers_are_431() {
        let mut big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(request(&big), Some(431));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 201 Created"), Some(201));
        assert_eq!(parse_status_line(b"HTTP/1.0 400"), Some(400));
        assert_eq!(parse_status_line(b"HTTP/2 200"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2"), None);
    }
}
