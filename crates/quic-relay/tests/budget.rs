//! The latency budget of datagram mode, end to end: a path that turns into
//! a black hole for a second must not make the link deliver stale media
//! when it comes back. Packets that waited longer than the budget are
//! dropped on the sending side and counted in `drops.expired`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
use relay_core::conformance::numbered;
use relay_core::{Mode, RelayLink};
use tokio::net::UdpSocket;

const BUDGET: Duration = Duration::from_millis(100);

/// A one-socket UDP relay between the offerer and the answerer that drops
/// everything, both ways, while `blocked` is set: a black hole, as when a
/// route flaps. Both sides see the proxy as their peer.
async fn black_hole_proxy(answerer: SocketAddr, blocked: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = socket.local_addr().expect("proxy address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut offerer: Option<SocketAddr> = None;
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let to = if from == answerer {
                match offerer {
                    Some(o) => o,
                    None => continue,
                }
            } else {
                offerer = Some(from);
                answerer
            };
            if !blocked.load(Ordering::Relaxed) {
                let _ = socket.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_path_expires_packets_and_delivers_nothing_stale_after() {
    // No window floor: with one, the sender keeps sending into the dead
    // path until the floor's worth of bytes is in flight (that is how the
    // floor hides short outages); without it the window is full after a few
    // packets and everything after has to wait, which is what this tests.
    let config = QuicConfig::default()
        .max_delay(BUDGET)
        .min_window(0)
        .liveness_timeout(Duration::from_secs(10));
    let offerer = QuicOfferer::bind(config.clone(), Mode::Datagram).await.unwrap();
    let answerer = QuicAnswerer::bind(config, Mode::Datagram, &offerer.offer())
        .await
        .unwrap();
    let blocked = Arc::new(AtomicBool::new(false));
    let mut answer = answerer.answer();
    answer.addr = black_hole_proxy(answer.addr, blocked.clone()).await;
    let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
    let (a, b) = (Arc::new(a.expect("offerer")), b.expect("answerer"));

    // 500 packets/s of 1,200 bytes (4.8 Mbit/s): 0.5 s on a good path,
    // 1 s of black hole, 2 s on the good path again. Without a window floor
    // the sender waits for a backed-off probe timeout (RFC 9002 section
    // 6.2.1) before it learns the path is back: on loopback the probes go
    // out ~7, 21, 49, 105, 217, 441, 889, 1,785 ms after the window filled,
    // so the link may resume up to ~0.8 s after the path does.
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let sender = {
        let (a, sent_at, blocked) = (a.clone(), sent_at.clone(), blocked.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut unblocked_at = None;
            for i in 0..1_750u32 {
                tokio::time::sleep_until(start + Duration::from_millis(2 * u64::from(i))).await;
                match i {
                    250 => blocked.store(true, Ordering::Relaxed),
                    750 => {
                        blocked.store(false, Ordering::Relaxed);
                        unblocked_at = Some(Instant::now());
                    }
                    _ => {}
                }
                sent_at.lock().unwrap().push(Instant::now());
                a.send(numbered(7, i, 1_200))
                    .await
                    .expect("datagram send never fails");
            }
            unblocked_at.expect("the path was unblocked")
        })
    };

    let mut received_after: Vec<(u32, Duration)> = Vec::new();
    let mut before = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while let Ok(Ok(p)) = tokio::time::timeout_at(deadline.into(), b.recv()).await {
        let now = Instant::now();
        let i = u32::from_be_bytes(p.bytes()[12..16].try_into().unwrap());
        let age = now - sent_at.lock().unwrap()[i as usize];
        if i < 250 {
            before += 1;
        } else {
            received_after.push((i, age));
        }
        if i == 1_749 {
            break;
        }
    }
    let unblocked_at = sender.await.expect("sender");
    let stats = a.stats();

    // Both sides asked the other for prompt ACKs (ACK_FREQUENCY frames,
    // draft-ietf-quic-ack-frequency), and each got the other's request.
    let (qa, qb) = (a.connection_stats(), b.connection_stats());
    assert!(
        qa.frame_tx.ack_frequency >= 1 && qb.frame_rx.ack_frequency >= 1,
        "{qa:?} {qb:?}"
    );
    assert!(
        qb.frame_tx.ack_frequency >= 1 && qa.frame_rx.ack_frequency >= 1,
        "{qa:?} {qb:?}"
    );

    assert!(
        before >= 240,
        "only {before} of 250 packets before the black hole arrived"
    );
    // Half a second of media offered into a dead path cannot leave within a
    // 100 ms budget: most of it must have expired on the sending side.
    assert!(
        stats.drops.expired >= 250,
        "a 1 s black hole at 500 packets/s expired only {} packets: {stats:?}",
        stats.drops.expired
    );
    // Nothing that waited past the budget is delivered: loopback adds well
    // under a millisecond, so allow scheduling slack on a loaded machine but
    // not the second of the black hole.
    let slack = Duration::from_millis(60);
    let stale: Vec<_> = received_after
        .iter()
        .filter(|(_, age)| *age > BUDGET + slack)
        .collect();
    assert!(
        stale.is_empty(),
        "{} packets delivered older than the {BUDGET:?} budget (+{slack:?}), first {:?}",
        stale.len(),
        stale.first()
    );
    // And the link came back: media sent after the path returned arrives.
    let fresh = received_after.iter().filter(|(i, _)| *i >= 750).count();
    assert!(
        fresh >= 200,
        "only {fresh} of 1000 packets sent after the path returned (at {unblocked_at:?}) arrived"
    );
}
