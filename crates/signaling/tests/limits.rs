//! What one client (or many) can make the server hold: connections,
//! header bytes, and time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use relay_core::Transport;
use relay_signaling::{ServerConfig, SignalingServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rtp_offer() -> serde_json::Value {
    json!({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:5004"}})
}

fn open_connections(server: &SignalingServer) -> Option<u64> {
    server
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("relay_signaling_connections_open "))
        .and_then(|v| v.parse().ok())
}

/// Reads until the server closes (or resets) the connection; how long it took.
async fn closed_after(what: &str, stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = bounded(what, stream.read_to_end(&mut out)).await;
    started.elapsed()
}

#[tokio::test]
async fn slow_loris_beyond_the_connection_cap_is_closed_and_the_server_recovers() {
    let timeout = Duration::from_millis(400);
    let server = start(
        ServerConfig::default()
            .max_connections(4)
            .request_read_timeout(timeout),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let addr = server.local_addr();

    // Four clients each send half a request head and stall.
    let mut loris = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        loris.push(stream);
    }
    eventually("four connections open", || open_connections(&server) == Some(4)).await;

    // The fifth is closed at once, long before any timeout.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let waited = closed_after("the fifth connection", &mut fifth).await;
    assert!(waited < timeout / 2, "closed after {waited:?}");
    assert!(
        server
            .metrics()
            .contains("relay_signaling_connections_refused_total{cause=\"connection_limit\"} 1"),
        "{}",
        server.metrics()
    );

    // The stalled ones are cut off by the header timeout, and then the
    // server takes new clients again.
    for (i, stream) in loris.iter_mut().enumerate() {
        closed_after(&format!("stalled client {i}"), stream).await;
    }
    eventually("the slots are free", || open_connections(&server) == Some(0)).await;
    assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    server.shutdown().await;
}

#[tokio::test]
async fn many_stalled_clients_under_the_cap_do_not_delay_others() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    let addr = server.local_addr();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTT").await.unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    assert_eq!(post(addr, &[], &rtp_offer()).await.status, StatusCode::CREATED);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_headers_are_431_and_never_buffered_whole() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    let addr = server.local_addr();

    // 64 KiB in one header.
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 64 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    let response = raw_exchange(addr, &head).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:.200}");

    // Many small headers adding up past the limit.
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..90 {
        head.extend_from_slice(format!("x-pad-{i}: {}\r\n", "b".repeat(700)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let response = raw_exchange(addr, &head).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:.200}");

    // A client that keeps streaming header bytes forever is cut off: the
    // server stops reading after the limit instead of buffering on.
    let mut endless = TcpStream::connect(addr).await.unwrap();
    endless
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ")
        .await
        .unwrap();
    let chunk = vec![b'c'; 16 * 1024];
    let mut sent = 0usize;
    let outcome = bounded("the server to stop the endless head", async {
        loop {
            match endless.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(sent < 8 * 1024 * 1024, "sent {sent} bytes before {outcome}");

    // Headers within the limit still pass.
    let reply = request(
        addr,
        Method::GET,
        "/healthz",
        &[("x-pad", &"d".repeat(8 * 1024))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn the_header_limit_is_configurable() {
    let server = start(
        ServerConfig::default().max_header_bytes(32 * 1024),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let addr = server.local_addr();
    let reply = request(
        addr,
        Method::GET,
        "/healthz",
        &[("x-pad", &"d".repeat(24 * 1024))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    assert!(raw_exchange(addr, &head).await.starts_with("HTTP/1.1 431"));
    server.shutdown().await;
}

#[tokio::test]
async fn idle_and_half_sent_heads_are_cut_off_at_the_read_timeout() {
    let timeout = Duration::from_millis(300);
    let server = start(
        ServerConfig::default().request_read_timeout(timeout),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let addr = server.local_addr();

    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n")
        .await
        .unwrap();
    // A byte at a time, never finishing: trickling does not reset the clock.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        trickle
            .write_all(b"GET /healthz HTTP/1.1\r\nx-b: ")
            .await
            .unwrap();
        while trickle.write_all(b"z").await.is_ok() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    });

    let margin = Duration::from_millis(700);
    assert!(closed_after("the idle client", &mut idle).await < timeout + margin);
    assert!(closed_after("the half-sent head", &mut half).await < timeout + margin);
    let trickled = bounded("the trickling client", trickler).await.unwrap();
    assert!(trickled < timeout + margin, "trickled for {trickled:?}");

    // A keep-alive connection idle after a request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let waited = closed_after("the idle keep-alive connection", &mut kept).await;
    assert!(waited < timeout + margin, "{waited:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn half_sent_heads_do_not_hold_shutdown_up() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    let addr = server.local_addr();
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    eventually("ten connections open", || open_connections(&server) == Some(10)).await;
    let started = Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_near_the_body_cap_still_passes_the_header_sized_buffer() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[std::sync::Arc::clone(&rtp)]).await;
    // 60 KiB of offer behind a 16 KiB head limit: the body streams through.
    let pad = "p".repeat(60 * 1024);
    let offer = json!({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:5004", "pad": pad}});
    let reply = post(server.local_addr(), &[], &offer).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(rtp.last_call().1["pad"].as_str().map(str::len), Some(60 * 1024));
    server.shutdown().await;
}
