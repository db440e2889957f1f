//! `GET /metrics` on the signaling server, and the stand-alone metrics
//! server for the offerer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use relay_core::{Mode, Transport};
use relay_signaling::metrics::{self, LinkMetrics, Role, serve_metrics};
use relay_signaling::{AnswerError, ServerConfig, SessionState};
use serde_json::json;

const EXPOSITION: &str = "text/plain; version=0.0.4";

fn rtp_offer() -> serde_json::Value {
    json!({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:5004"}})
}

/// Every line is a comment (`# HELP` / `# TYPE`) or `name{labels} value`.
fn assert_exposition(text: &str) {
    assert!(text.ends_with('\n'), "{text}");
    for line in text.lines() {
        if line.starts_with("# HELP relay_") || line.starts_with("# TYPE relay_") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "value: {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("relay_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "name: {line:?}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "labels: {line:?}");
        }
    }
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
}

#[tokio::test]
async fn metrics_need_the_token_and_report_sessions_and_refusals() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(
        ServerConfig::default().token(Some("T".into())),
        &[Arc::clone(&rtp)],
    )
    .await;
    let addr = server.local_addr();
    let auth = [("authorization", "Bearer T")];

    let reply = request(addr, Method::GET, "/metrics", &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));

    let created = post(addr, &auth, &rtp_offer()).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        post(addr, &[], &rtp_offer()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(addr, &auth, &json!({"x": 1})).await.status,
        StatusCode::BAD_REQUEST
    );
    rtp.set(Behaviour::Refuse(AnswerError::Unavailable("no ports".into())));
    assert_eq!(
        post(addr, &auth, &rtp_offer()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    rtp.session(0).come_up();

    let reply = request(addr, Method::GET, "/metrics", &auth, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(EXPOSITION));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_exposition(&text);
    let link = format!("{{session=\"{id}\",transport=\"rtp-udp\",mode=\"unreliable\",role=\"answer\"}}");
    for (series, want) in [
        ("relay_sessions_active".to_owned(), "1"),
        (format!("relay_link_up{link}"), "1"),
        (format!("relay_link_packets_sent_total{link}"), "0"),
        ("relay_signaling_sessions_created_total".to_owned(), "1"),
        (
            "relay_signaling_sessions_refused_total{cause=\"unauthorized\"}".to_owned(),
            "1",
        ),
        (
            "relay_signaling_sessions_refused_total{cause=\"bad_offer\"}".to_owned(),
            "1",
        ),
        (
            "relay_signaling_sessions_refused_total{cause=\"unavailable\"}".to_owned(),
            "1",
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(server.metrics().lines().count(), text.lines().count());

    // POST /metrics is not a thing.
    let reply = request(addr, Method::POST, "/metrics", &auth, "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    server.shutdown().await;
}

#[tokio::test]
async fn the_session_limit_is_counted_apart_from_other_unavailability() {
    let server = start(
        ServerConfig::default().max_sessions(1),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let addr = server.local_addr();
    assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    assert_eq!(
        post(addr, &[], &rtp_offer()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let text = server.metrics();
    assert_eq!(
        sample(
            &text,
            "relay_signaling_sessions_refused_total{cause=\"session_limit\"}"
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            "relay_signaling_sessions_refused_total{cause=\"unavailable\"}"
        ),
        Some("0")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn serve_metrics_answers_metrics_and_health_only() {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&scrapes);
    let source: metrics::MetricsSource = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        metrics::render(
            &[LinkMetrics {
                session: "s1".into(),
                transport: Transport::Quic,
                mode: Mode::Datagram,
                role: Role::Offer,
                state: SessionState::Connecting,
                stats: None,
                extra: vec![("reconnects_total", "Times the link was re-established.", 2)],
            }],
            None,
        )
    });
    let server = serve_metrics("127.0.0.1:0".parse().unwrap(), Some("T".into()), source, None)
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(server.url(), format!("http://{addr}/metrics"));

    assert_eq!(
        request(addr, Method::GET, "/metrics", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        scrapes.load(Ordering::SeqCst),
        0,
        "no rendering for a refused scrape"
    );
    let reply = request(
        addr,
        Method::GET,
        "/metrics",
        &[("authorization", "Bearer T")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(EXPOSITION));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_exposition(&text);
    let link = "{session=\"s1\",transport=\"quic\",mode=\"datagram\",role=\"offer\"}";
    assert_eq!(sample(&text, &format!("relay_link_up{link}")), Some("0"));
    assert_eq!(
        sample(&text, &format!("relay_link_reconnects_total{link}")),
        Some("2")
    );
    assert!(
        text.contains("# TYPE relay_link_reconnects_total counter\n"),
        "{text}"
    );
    assert_eq!(scrapes.load(Ordering::SeqCst), 1);

    assert_eq!(
        request(addr, Method::GET, "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    for path in ["/", "/v1/sessions", "/metrics/x"] {
        let reply = request(addr, Method::GET, path, &[("authorization", "Bearer T")], "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    let reply = request(addr, Method::DELETE, "/metrics", &[], "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));

    // Oversize heads are refused here too.
    let mut head = b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 64 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    assert!(raw_exchange(addr, &head).await.starts_with("HTTP/1.1 431"));

    bounded("shutdown", server.shutdown()).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn serve_metrics_refuses_an_empty_token_and_a_taken_port() {
    let source: metrics::MetricsSource = Arc::new(String::new);
    let err = serve_metrics(
        "127.0.0.1:0".parse().unwrap(),
        Some(String::new()),
        Arc::clone(&source),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("token is empty"), "{err}");
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve_metrics(addr, None, source, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot listen for metrics on {addr}: address in use")
    );
}

#[tokio::test]
async fn the_signaling_servers_metrics_can_be_served_elsewhere() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    post(server.local_addr(), &[], &rtp_offer()).await;
    let metrics_server = serve_metrics(
        "127.0.0.1:0".parse().unwrap(),
        None,
        server.metrics_source(),
        None,
    )
    .await
    .unwrap();
    let reply = request(metrics_server.local_addr(), Method::GET, "/metrics", &[], "").await;
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_eq!(sample(&text, "relay_sessions_active"), Some("1"), "{text}");
    metrics_server.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_embedding_process_adds_its_own_families() {
    let extra: metrics::MetricsSource = Arc::new(|| {
        "# HELP relay_test_resumed_total Streams resumed.\n# TYPE relay_test_resumed_total counter\nrelay_test_resumed_total 3\n"
            .to_string()
    });
    let server = start(
        ServerConfig::default().extra_metrics(extra),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let reply = request(server.local_addr(), Method::GET, "/metrics", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_exposition(&text);
    assert_eq!(sample(&text, "relay_test_resumed_total"), Some("3"), "{text}");
    assert!(
        sample(&text, "relay_sessions_active").is_some(),
        "the server's own families stay: {text}"
    );
    server.shutdown().await;
}

/// With the signaling server's identity, `/metrics` is HTTPS: a scraper
/// that pins that fingerprint reads it, plain HTTP gets nothing.
#[tokio::test]
async fn metrics_serve_https_with_the_signaling_identity() {
    use relay_core::pin::PinRecord;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let identity = relay_signaling::TlsIdentity::self_signed().unwrap();
    let source: metrics::MetricsSource = Arc::new(|| "relay_up 1\n".to_string());
    let server = serve_metrics(
        "127.0.0.1:0".parse().unwrap(),
        None,
        source,
        Some(identity.clone()),
    )
    .await
    .unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());

    let config =
        relay_signaling::pinned_client_config(identity.fingerprint(), Arc::new(PinRecord::default()))
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("sfu-relay").unwrap();
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("the pinned identity");
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("relay_up 1"),
        "{reply}"
    );

    // Plain HTTP on the same port is not served.
    let mut plain = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("relay_up"));
    server.shutdown().await;
}
