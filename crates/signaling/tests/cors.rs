//! Browser pages on other origins (CORS): an allowed origin gets preflights
//! answered and may read responses; any other origin is refused before
//! anything happens, so no session is left behind; requests without
//! `Origin` are served as before.

mod common;

use std::sync::Arc;

use common::*;
use http::{Method, StatusCode};
use relay_core::Transport;
use relay_signaling::{ServerConfig, ServerError, SignalingServer};
use serde_json::json;

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

fn rtp_offer() -> String {
    json!({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:5004"}}).to_string()
}

/// A server with token `T` that allows [`APP`].
async fn server(rtp: &Arc<FakeAnswerer>) -> SignalingServer {
    let config = ServerConfig::default().token(Some("T".into())).cors_origin(APP);
    start(config, &[Arc::clone(rtp)]).await
}

/// Sessions as the server and an Origin-less `GET /v1/sessions` see them.
async fn session_count(server: &SignalingServer) -> usize {
    let reply = request(
        server.local_addr(),
        Method::GET,
        "/v1/sessions",
        &[("authorization", "Bearer T")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let listed = reply.json().as_array().expect("a list").len();
    assert_eq!(listed, server.session_ids().len());
    listed
}

fn assert_no_cors_headers(reply: &Reply) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
    ] {
        assert_eq!(reply.header(name), None, "{name} on a {}", reply.status);
    }
}

fn assert_readable_by(reply: &Reply, origin: &str) {
    assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
    assert_eq!(reply.header("vary"), Some("Origin"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("Location"));
}

fn preflight<'a>(origin: &'a str, method: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", "authorization, content-type"),
    ]
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflights_answered_without_a_token() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = server(&rtp).await;
    let addr = server.local_addr();
    for (path, method, methods) in [
        ("/v1/sessions", "POST", "GET, POST"),
        ("/v1/sessions/ab12", "DELETE", "GET, DELETE"),
        ("/v1/sessions/ab12/stats", "GET", "GET"),
    ] {
        let reply = request(addr, Method::OPTIONS, path, &preflight(APP, method), "").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{path}");
        assert_readable_by(&reply, APP);
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some(methods),
            "{path}"
        );
        let headers = reply
            .header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        let max_age: u64 = reply.header("access-control-max-age").unwrap().parse().unwrap();
        assert!(max_age > 0);
        assert!(reply.body.is_empty());
    }
    assert_eq!(rtp.calls.lock().unwrap().len(), 0, "a preflight answers nothing");
    assert_eq!(session_count(&server).await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_allowed_origin_can_read_every_response_and_the_location() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = server(&rtp).await;
    let addr = server.local_addr();
    let page = [
        ("origin", APP),
        ("authorization", "Bearer T"),
        ("content-type", "application/json"),
    ];

    let created = request(addr, Method::POST, "/v1/sessions", &page, rtp_offer()).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_readable_by(&created, APP);
    let location = created.header("location").unwrap().to_owned();
    assert_eq!(session_count(&server).await, 1);

    let stats = request(addr, Method::GET, &format!("{location}/stats"), &page, "").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_readable_by(&stats, APP);

    // Errors too, so the page can show why.
    let unauthorized = request(addr, Method::GET, "/v1/sessions", &[("origin", APP)], "").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_readable_by(&unauthorized, APP);
    unauthorized.error();

    let deleted = request(addr, Method::DELETE, &location, &page, "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_readable_by(&deleted, APP);
    assert_eq!(session_count(&server).await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn any_other_origin_is_refused_before_anything_happens() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = server(&rtp).await;
    let addr = server.local_addr();
    let with_token = |origin| [("origin", origin), ("authorization", "Bearer T")];

    // The preflight a page's JSON POST would need.
    let reply = request(
        addr,
        Method::OPTIONS,
        "/v1/sessions",
        &preflight(EVIL, "POST"),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_no_cors_headers(&reply);
    assert!(reply.error().contains(EVIL), "{}", reply.error());

    // The POSTs a browser sends without asking (CORS "simple requests"),
    // a JSON one (curl-like, forged Origin), and one with the token.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json",
    ] {
        let headers = [("origin", EVIL), ("content-type", content_type)];
        let reply = request(addr, Method::POST, "/v1/sessions", &headers, rtp_offer()).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{content_type}");
        assert_no_cors_headers(&reply);
        reply.error();
    }
    let reply = request(addr, Method::POST, "/v1/sessions", &with_token(EVIL), rtp_offer()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        rtp.calls.lock().unwrap().len(),
        0,
        "no offer reached the answerer"
    );
    assert_eq!(session_count(&server).await, 0, "no session left behind");

    // Nor may it read or delete a session someone else made.
    let created = post(
        addr,
        &[("authorization", "Bearer T")],
        &json!({"transport": "rtp-udp", "offer": {}}),
    )
    .await;
    let location = created.header("location").unwrap().to_owned();
    for (method, path) in [
        (Method::GET, "/v1/sessions".to_owned()),
        (Method::GET, format!("{location}/stats")),
        (Method::DELETE, location.clone()),
        (Method::GET, "/metrics".to_owned()),
    ] {
        let reply = request(addr, method.clone(), &path, &with_token(EVIL), "").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_no_cors_headers(&reply);
        reply.error();
    }
    assert_eq!(session_count(&server).await, 1, "the DELETE did nothing");

    // The refused POSTs are counted as refused offers; nothing else is.
    let metrics = server.metrics();
    assert!(
        metrics.contains("\nrelay_signaling_sessions_refused_total{cause=\"origin_not_allowed\"} 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nrelay_signaling_sessions_created_total 1\n"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_origin_every_origin_is_refused() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    let headers = [("origin", APP), ("content-type", "text/plain")];
    let reply = request(addr, Method::POST, "/v1/sessions", &headers, rtp_offer()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = request(addr, Method::OPTIONS, "/v1/sessions", &preflight(APP, "POST"), "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(server.session_ids().len(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn requests_without_origin_are_served_as_before() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = server(&rtp).await;
    let addr = server.local_addr();
    let created = post(
        addr,
        &[("authorization", "Bearer T")],
        &json!({"transport": "rtp-udp", "offer": {}}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_no_cors_headers(&created);
    assert_eq!(created.header("vary"), None);
    // OPTIONS without Origin is no preflight: the method is not allowed,
    // and the token is checked first as for any request.
    let reply = request(
        addr,
        Method::OPTIONS,
        "/v1/sessions",
        &[("authorization", "Bearer T")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_no_cors_headers(&reply);
    server.shutdown().await;
}

#[tokio::test]
async fn star_allows_every_origin_and_echoes_it() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default().cors_origin("*"), &[Arc::clone(&rtp)]).await;
    let headers = [("origin", EVIL), ("content-type", "application/json")];
    let reply = request(
        server.local_addr(),
        Method::POST,
        "/v1/sessions",
        &headers,
        rtp_offer(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_readable_by(&reply, EVIL);
    server.shutdown().await;
}

#[tokio::test]
async fn bind_refuses_an_origin_no_browser_sends() {
    for bad in [
        "https://app.example/",
        "app.example",
        "https://app.example/page",
        "null",
        "",
    ] {
        let err = SignalingServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            ServerConfig::default().cors_origin(APP).cors_origin(bad),
            vec![],
        )
        .await
        .expect_err(bad);
        assert!(
            matches!(&err, ServerError::InvalidCorsOrigin(o) if o == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains("scheme://host[:port]"), "{err}");
    }
}
