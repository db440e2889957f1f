//! The proxy on real loopback sockets.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use relay_core::udp::{DEFAULT_SOCKET_BUFFER, bind_udp};
use relay_netsim::{Direction, ImpairmentConfig, Proxy, ProxyConfig};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const MS: Duration = Duration::from_millis(1);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server that echoes every datagram back to its sender.
async fn echo_server() -> SocketAddr {
    let socket = UdpSocket::bind(loopback()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    match timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// Waits until `done` holds for the proxy's stats (counters are updated
/// just after the send, so a receiver can be a hair ahead of them).
async fn eventually(proxy: &Proxy, done: impl Fn(&relay_netsim::ProxyStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done(&proxy.stats()) {
        assert!(
            Instant::now() < deadline,
            "stats never settled: {:?}",
            proxy.stats()
        );
        tokio::time::sleep(MS).await;
    }
}

#[tokio::test]
async fn replies_come_back_to_the_last_client() {
    let server = echo_server().await;
    let proxy = Proxy::start(ProxyConfig::new(loopback(), server)).unwrap();
    let a = UdpSocket::bind(loopback()).await.unwrap();
    let b = UdpSocket::bind(loopback()).await.unwrap();

    a.send_to(b"from a", proxy.local_addr()).await.unwrap();
    let (reply, from) = recv_within(&a, Duration::from_secs(1)).await.expect("echo to a");
    assert_eq!((reply.as_slice(), from), (&b"from a"[..], proxy.local_addr()));

    // Last seen wins: b takes over the link.
    b.send_to(b"from b", proxy.local_addr()).await.unwrap();
    let (reply, _) = recv_within(&b, Duration::from_secs(1)).await.expect("echo to b");
    assert_eq!(reply, b"from b");
    assert!(recv_within(&a, 50 * MS).await.is_none());

    eventually(&proxy, |s| s.downstream.delivered == 2).await;
    let s = proxy.stats();
    assert_eq!(s.client, Some(b.local_addr().unwrap()));
    assert_eq!((s.upstream.received, s.upstream.delivered), (2, 2));
    assert_eq!(
        (s.upstream.received_bytes, s.downstream.delivered_bytes),
        (12, 12)
    );
    assert_eq!(s.upstream.in_flight(), 0);
    proxy.shutdown();
}

#[tokio::test]
async fn black_hole_and_restore_at_run_time() {
    let server = echo_server().await;
    let proxy = Proxy::start(ProxyConfig::new(loopback(), server)).unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();

    proxy.set_config(ImpairmentConfig::default().loss(1.0)).unwrap();
    for _ in 0..50 {
        client.send_to(b"lost", proxy.local_addr()).await.unwrap();
    }
    assert!(recv_within(&client, 100 * MS).await.is_none());
    eventually(&proxy, |s| s.upstream.dropped.random_loss == 50).await;

    proxy.set_config(ImpairmentConfig::default()).unwrap();
    client.send_to(b"back", proxy.local_addr()).await.unwrap();
    let (reply, _) = recv_within(&client, Duration::from_secs(1))
        .await
        .expect("link restored");
    assert_eq!(reply, b"back");
    assert!(proxy.set_config(ImpairmentConfig::default().loss(1.5)).is_err());
    proxy.shutdown();
}

#[tokio::test]
async fn directions_are_impaired_separately() {
    let server = echo_server().await;
    let config = ProxyConfig::new(loopback(), server).downstream(ImpairmentConfig::default().delay(30 * MS));
    let proxy = Proxy::start(config).unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();

    let sent = Instant::now();
    client.send_to(b"rtt", proxy.local_addr()).await.unwrap();
    recv_within(&client, Duration::from_secs(1)).await.expect("echo");
    let rtt = sent.elapsed();
    assert!(rtt >= 30 * MS && rtt < 60 * MS, "round trip {rtt:?}");

    // Cut only the way back: the server still gets every packet.
    proxy
        .set_direction_config(Direction::Downstream, ImpairmentConfig::default().loss(1.0))
        .unwrap();
    for _ in 0..10 {
        client.send_to(b"one way", proxy.local_addr()).await.unwrap();
    }
    assert!(recv_within(&client, 100 * MS).await.is_none());
    eventually(&proxy, |s| {
        s.upstream.delivered == 11 && s.downstream.dropped.random_loss == 10
    })
    .await;
    proxy.shutdown();
}

#[tokio::test]
async fn target_traffic_before_any_client_is_counted_not_forwarded() {
    let server = UdpSocket::bind(loopback()).await.unwrap();
    let proxy = Proxy::start(ProxyConfig::new(loopback(), server.local_addr().unwrap())).unwrap();
    server
        .send_to(b"anyone?", proxy.target_side_addr())
        .await
        .unwrap();
    eventually(&proxy, |s| s.downstream.unroutable == 1).await;
    assert_eq!(proxy.stats().downstream.received, 0);
    proxy.shutdown();
}

#[tokio::test]
async fn a_target_that_is_not_listening_does_not_stop_the_proxy() {
    // Bind and drop, so the port answers with ICMP unreachable.
    let gone = StdUdpSocket::bind(loopback()).unwrap().local_addr().unwrap();
    let proxy = Proxy::start(ProxyConfig::new(loopback(), gone)).unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    for _ in 0..20 {
        client.send_to(b"hello?", proxy.local_addr()).await.unwrap();
        tokio::time::sleep(MS).await;
    }
    eventually(&proxy, |s| s.upstream.delivered + s.upstream.send_errors == 20).await;
    proxy.shutdown();
}

#[tokio::test]
async fn duplication_and_loss_are_counted_per_cause() {
    // The default 208 KiB receive buffer holds only about 256 small datagrams.
    let server = UdpSocket::from_std(bind_udp(loopback(), DEFAULT_SOCKET_BUFFER).unwrap()).unwrap();
    let impairment = ImpairmentConfig::default().loss(0.2).duplicate(0.2);
    let config = ProxyConfig::new(loopback(), server.local_addr().unwrap())
        .upstream(impairment)
        .seed(3);
    let proxy = Proxy::start(config).unwrap();
    let client = UdpSocket::bind(loopback()).await.unwrap();
    for i in 0..500u32 {
        client
            .send_to(&i.to_be_bytes(), proxy.local_addr())
            .await
            .unwrap();
    }
    let mut got = 0;
    while recv_within(&server, 200 * MS).await.is_some() {
        got += 1;
    }
    let s = proxy.stats().upstream;
    assert_eq!(s.received, 500);
    assert!(s.dropped.random_loss > 50 && s.duplicated > 50, "{s:?}");
    assert_eq!(got, s.delivered);
    assert_eq!(s.received + s.duplicated, s.delivered + s.dropped.total());
    proxy.shutdown();
}
