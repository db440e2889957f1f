//! The HTTP API as a peer sees it: every status the server answers, and no
//! request leaving a session behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use relay_core::{Mode, Transport};
use relay_signaling::{AnswerError, ServerConfig, ServerError, SessionInfo, SessionState, SignalingServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rtp_offer() -> serde_json::Value {
    json!({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:5004"}})
}

async fn listed(server: &SignalingServer) -> Vec<SessionInfo> {
    let reply = request(server.local_addr(), Method::GET, "/v1/sessions", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    serde_json::from_slice(&reply.body).unwrap()
}

/// The server and `GET /v1/sessions` both say no session is left.
async fn assert_no_sessions(server: &SignalingServer) {
    assert_eq!(server.session_ids(), Vec::<String>::new());
    assert!(listed(server).await.is_empty());
}

#[tokio::test]
async fn health_needs_no_token() {
    let server = start(ServerConfig::default().token(Some("T".into())), &[]).await;
    let reply = request(server.local_addr(), Method::GET, "/healthz", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"status": "ok"}));
    server.shutdown().await;
}

#[tokio::test]
async fn offer_creates_a_session_with_location_and_answer() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();

    let reply = post(addr, &[], &rtp_offer()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "128-bit hex id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/sessions/{id}").as_str())
    );
    assert_eq!(body["answer"], json!({"echo": {"addr": "127.0.0.1:5004"}}));
    assert_eq!(server.session_ids(), vec![id.clone()]);
    // No mode given: the transport's default.
    assert_eq!(
        rtp.last_call(),
        (Mode::Unreliable, json!({"addr": "127.0.0.1:5004"}))
    );

    let all = listed(&server).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].id.as_str(), all[0].transport, all[0].mode),
        (id.as_str(), Transport::RtpUdp, Mode::Unreliable)
    );
    assert_eq!(all[0].state, SessionState::Connecting);
    assert!(all[0].stats.is_none());

    rtp.session(0).come_up();
    for path in [format!("/v1/sessions/{id}/stats"), format!("/v1/sessions/{id}")] {
        let reply = request(addr, Method::GET, &path, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        // Durations are seconds, with the unit in the name.
        let stats = &reply.json()["stats"];
        assert!(
            stats["uptime_seconds"]
                .as_f64()
                .is_some_and(|s| (0.0..60.0).contains(&s)),
            "{stats}"
        );
        assert!(
            stats["rtt_seconds"].is_null() && stats["setup_time_seconds"].is_null(),
            "{stats}"
        );
        for unitless in ["rtt", "setup_time", "uptime"] {
            assert!(stats.get(unitless).is_none(), "{unitless} in {stats}");
        }
        let info: SessionInfo = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.state, SessionState::Up);
        assert_eq!(info.stats.unwrap().transport, Transport::RtpUdp);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn explicit_mode_reaches_the_answerer() {
    let quic = FakeAnswerer::new(Transport::Quic);
    let server = start(ServerConfig::default(), &[Arc::clone(&quic)]).await;
    let reply = post(
        server.local_addr(),
        &[],
        &json!({"transport": "quic", "mode": "stream", "offer": {}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(quic.last_call().0, Mode::Stream);
    server.shutdown().await;
}

#[tokio::test]
async fn bare_w3c_offer_is_a_dc_offer_answered_bare() {
    let dc = FakeAnswerer::new(Transport::Dc);
    let server = start(ServerConfig::default(), &[Arc::clone(&dc)]).await;
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=offer\r\n"});

    let reply = post(server.local_addr(), &[], &offer).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.json(),
        json!({"type": "answer", "sdp": "v=0\r\no=answer\r\n"})
    );
    let ids = server.session_ids();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/sessions/{}", ids[0]).as_str())
    );
    // The whole body is the offer, in the dc default mode.
    assert_eq!(dc.last_call(), (Transport::Dc.default_mode(), offer));
    server.shutdown().await;
}

/// A bare W3C offer names no mode; the dc answerer relays the channel the
/// peer opens in that channel's mode. Once it is up, the listing says which.
#[tokio::test]
async fn bare_w3c_session_is_listed_in_the_mode_of_the_peers_channel() {
    let dc = FakeAnswerer::new(Transport::Dc);
    let server = start(ServerConfig::default(), &[Arc::clone(&dc)]).await;
    let addr = server.local_addr();
    let reply = post(addr, &[], &json!({"type": "offer", "sdp": "v=0\r\n"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // The peer opened an unordered, maxRetransmits=0 channel.
    dc.session(0).come_up_in(Mode::Unreliable);

    let all = listed(&server).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, SessionState::Up);
    assert_eq!(all[0].stats.as_ref().map(|s| s.mode), Some(Mode::Unreliable));
    assert_eq!(
        all[0].mode,
        Mode::Unreliable,
        "the listing says the channel's mode"
    );
    let path = format!("/v1/sessions/{}", all[0].id);
    let one: SessionInfo =
        serde_json::from_slice(&request(addr, Method::GET, &path, &[], "").await.body).unwrap();
    assert_eq!(one.mode, Mode::Unreliable);
    server.shutdown().await;
}

#[tokio::test]
async fn bare_w3c_offer_without_dc_is_400_naming_the_transports() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let quic = FakeAnswerer::new(Transport::Quic);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp), quic]).await;
    let reply = post(server.local_addr(), &[], &json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.error();
    assert!(
        message.ends_with("this server answers: quic, rtp-udp"),
        "{message}"
    );
    assert_eq!(rtp.session_count(), 0);
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn delete_closes_and_forgets_the_session() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    let id = post(addr, &[], &rtp_offer()).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reply = request(addr, Method::DELETE, &format!("/v1/sessions/{id}"), &[], "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    assert_eq!(rtp.session(0).closes(), 1);
    assert_no_sessions(&server).await;

    let again = request(addr, Method::DELETE, &format!("/v1/sessions/{id}"), &[], "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.error().contains(&id));
    assert_eq!(rtp.session(0).closes(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_that_ends_by_itself_is_removed() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    post(addr, &[], &rtp_offer()).await;
    let kept = post(addr, &[], &rtp_offer()).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.session_ids().len(), 2);

    rtp.session(0).peer_closes();
    eventually("the ended session to be removed", || {
        server.session_ids() == vec![kept.clone()]
    })
    .await;
    assert_eq!(rtp.session(0).closes(), 0, "it ended by itself; nothing to close");
    assert_eq!(listed(&server).await.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_session_or_path_is_404() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::Dc)]).await;
    let addr = server.local_addr();
    for (method, path) in [
        (Method::GET, "/v1/sessions/0123/stats"),
        (Method::GET, "/v1/sessions/0123"),
        (Method::DELETE, "/v1/sessions/0123"),
        (Method::GET, "/"),
        (Method::GET, "/v1/session"),
        (Method::POST, "/v2/sessions"),
        (Method::GET, "/v1/sessions/0123/other"),
    ] {
        let reply = request(addr, method.clone(), path, &[], "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(!reply.error().is_empty());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::Dc)]).await;
    let addr = server.local_addr();
    for (method, path, allow) in [
        (Method::POST, "/healthz", "GET"),
        (Method::DELETE, "/v1/sessions", "GET, POST"),
        (Method::PUT, "/v1/sessions", "GET, POST"),
        (Method::POST, "/v1/sessions/0123", "GET, DELETE"),
        (Method::PATCH, "/v1/sessions/0123", "GET, DELETE"),
        (Method::DELETE, "/v1/sessions/0123/stats", "GET"),
    ] {
        let reply = request(addr, method.clone(), path, &[], "").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        assert!(reply.error().contains(method.as_str()));
    }
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_the_right_one_passes() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(
        ServerConfig::default().token(Some("s3cret".into())),
        &[Arc::clone(&rtp)],
    )
    .await;
    let addr = server.local_addr();
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong")][..],
        &[("authorization", "Bearer s3cre")][..],
        &[("authorization", "Basic s3cret")][..],
        &[("authorization", "s3cret")][..],
    ] {
        let reply = post(addr, headers, &rtp_offer()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert!(reply.error().contains("bearer token"));
        for (method, path) in [(Method::GET, "/v1/sessions"), (Method::DELETE, "/v1/sessions/x")] {
            let reply = request(addr, method, path, headers, "").await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
        }
    }
    assert_eq!(
        rtp.session_count(),
        0,
        "the answerer is never reached without the token"
    );
    assert!(server.session_ids().is_empty());

    let auth = [("authorization", "Bearer s3cret")];
    let reply = post(addr, &auth, &rtp_offer()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = request(addr, Method::GET, "/v1/sessions", &auth, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_or_incomplete_bodies_are_400() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    for (body, want) in [
        ("{\"transport\":", "not valid JSON"),
        ("", "not valid JSON"),
        ("\u{0}\u{1}binary", "not valid JSON"),
        ("[]", "JSON object"),
        ("{}", "missing field \"transport\""),
        (r#"{"transport":"rtp-udp"}"#, "missing field \"offer\""),
        (
            r#"{"mode":"unreliable","offer":{}}"#,
            "missing field \"transport\"",
        ),
        (r#"{"type":"answer","sdp":"v=0"}"#, "expected a W3C offer"),
    ] {
        let reply = request(addr, Method::POST, "/v1/sessions", &[], body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        let message = reply.error();
        assert!(message.contains(want), "{body:?}: {message}");
    }
    assert_eq!(rtp.session_count(), 0);
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_or_unserved_transport_or_mode_is_400_naming_the_supported_ones() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let quic = FakeAnswerer::new(Transport::Quic);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp), Arc::clone(&quic)]).await;
    let addr = server.local_addr();
    for (body, want) in [
        (
            json!({"transport": "sctp", "offer": {}}),
            "unknown transport \"sctp\"; this server answers: quic, rtp-udp",
        ),
        (
            json!({"transport": "dc", "offer": {}}),
            "transport dc is not available here; this server answers: quic, rtp-udp",
        ),
        (
            json!({"transport": "quic", "mode": "turbo", "offer": {}}),
            "unknown mode \"turbo\"; quic supports: datagram, stream, repair",
        ),
        (
            json!({"transport": "rtp-udp", "mode": "reliable", "offer": {}}),
            "mode reliable is not valid for rtp-udp; rtp-udp supports: unreliable, srtp, repair, srtp-repair",
        ),
    ] {
        let reply = post(addr, &[], &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.error(), want);
    }
    assert_eq!(rtp.session_count() + quic.session_count(), 0);
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn answerer_errors_become_400_503_500() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    for (error, status) in [
        (
            AnswerError::BadOffer("addr is not an address".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            AnswerError::Unavailable("out of ports".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            AnswerError::Internal("socket failed".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ] {
        rtp.set(Behaviour::Refuse(error.clone()));
        let reply = post(server.local_addr(), &[], &rtp_offer()).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.error(), error.to_string());
    }
    assert_no_sessions(&server).await;
    // A refusal does not use up the session cap.
    rtp.set(Behaviour::Accept);
    assert_eq!(
        post(server.local_addr(), &[], &rtp_offer()).await.status,
        StatusCode::CREATED
    );
    server.shutdown().await;
}

#[tokio::test]
async fn session_cap_is_503_until_a_session_ends() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default().max_sessions(2), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    for _ in 0..2 {
        assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    }
    let reply = post(addr, &[], &rtp_offer()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.error().contains("session limit reached (2 sessions)"));
    assert_eq!(rtp.session_count(), 2, "the answerer is not asked when full");
    assert_eq!(server.session_ids().len(), 2);

    rtp.session(0).peer_closes();
    eventually("the ended session to free its slot", || {
        server.session_ids().len() == 1
    })
    .await;
    assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    server.shutdown().await;
}

#[tokio::test]
async fn announced_oversize_body_is_413_before_reading_it() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default().max_body_bytes(1024), &[Arc::clone(&rtp)]).await;
    // Announces a megabyte and sends none of it: the server must not wait for it.
    let head = "POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 1048576\r\n\r\n";
    let response = raw_exchange(server.local_addr(), head.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("application/json") && response.contains("larger than 1024 bytes"),
        "{response}"
    );
    assert_eq!(rtp.session_count(), 0);
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn chunked_oversize_body_is_413() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default().max_body_bytes(1024), &[Arc::clone(&rtp)]).await;
    // No Content-Length to check up front: a valid JSON start, then padding
    // past the cap in several chunks; the terminating chunk never comes.
    let mut req = b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let start = r#"{"transport":"rtp-udp","offer":{"pad":""#;
    req.extend_from_slice(format!("{:x}\r\n{start}\r\n", start.len()).as_bytes());
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 500, "a".repeat(500)).as_bytes());
    }
    let response = raw_exchange(server.local_addr(), &req).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("larger than 1024 bytes"), "{response}");
    assert_eq!(rtp.session_count(), 0);
    assert_no_sessions(&server).await;

    // Under the cap, chunked is fine.
    let mut req =
        b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    let body = rtp_offer().to_string();
    let (a, b) = body.split_at(10);
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let response = raw_exchange(server.local_addr(), &req).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_bytes_do_not_stop_the_server() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    // Opened first and kept open across the garbage: another client that
    // must still be served afterwards.
    let mut other = TcpStream::connect(addr).await.unwrap();

    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // a TLS ClientHello
        b"\x00\xff\xfe\r\n\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/sessions HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ] {
        // Whatever the server answers (400 or a close), it answers quickly.
        let answer = raw_exchange(addr, garbage).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    }

    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    bounded("the other client's answer", other.read_to_string(&mut response))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let server = start(
        ServerConfig::default().request_read_timeout(Duration::from_millis(200)),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let addr = server.local_addr();

    // Headers never finish: the connection is closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = bounded("the header timeout", idle.read_to_end(&mut out)).await;

    // Headers complete, body never comes: 408.
    let head = "POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{";
    let response = raw_exchange(addr, head.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_no_sessions(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_session_and_stops_listening() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let addr = server.local_addr();
    for _ in 0..3 {
        post(addr, &[], &rtp_offer()).await;
    }
    // An idle keep-alive connection must not hold shutdown up.
    let _idle = TcpStream::connect(addr).await.unwrap();

    bounded("shutdown", server.shutdown()).await;
    for i in 0..3 {
        assert_eq!(rtp.session(i).closes(), 1, "session {i}");
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn dropping_the_server_closes_its_sessions() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    post(server.local_addr(), &[], &rtp_offer()).await;
    drop(server);
    assert_eq!(rtp.session(0).closes(), 1);
}

#[tokio::test]
async fn bind_errors_say_what_went_wrong() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = SignalingServer::bind(addr, ServerConfig::default(), vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::Bind { .. }));
    assert_eq!(
        err.to_string(),
        format!("cannot listen for signaling on {addr}: address in use")
    );

    let any = "127.0.0.1:0".parse().unwrap();
    let twice = vec![
        FakeAnswerer::new(Transport::Dc) as Arc<dyn relay_signaling::Answerer>,
        FakeAnswerer::new(Transport::Dc),
    ];
    let err = SignalingServer::bind(any, ServerConfig::default(), twice)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("two answerers registered for transport dc"),
        "{err}"
    );

    let err = SignalingServer::bind(any, ServerConfig::default().token(Some(String::new())), vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::EmptyToken));
}
