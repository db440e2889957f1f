//! Rough speed figures for the README and the benchmark owner, not
//! assertions (the benchmark harness measures properly). Run in release:
//!
//! ```text
//! cargo test -p quic-relay --release --test throughput -- --ignored --nocapture --test-threads 1
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quic_relay::{QuicAnswerer, QuicConfig, QuicLink, QuicOfferer};
use relay_core::conformance::numbered;
use relay_core::{Mode, RelayLink};

async fn pair(mode: Mode) -> (QuicLink, QuicLink) {
    let offerer = QuicOfferer::bind(QuicConfig::default(), mode).await.unwrap();
    let answerer = QuicAnswerer::bind(QuicConfig::default(), mode, &offerer.offer())
        .await
        .unwrap();
    let answer = answerer.answer();
    let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
    (a.unwrap(), b.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "speed figures; run in release with --ignored --nocapture"]
async fn setup_time() {
    let mut offerer_ms = Vec::new();
    let mut wall_ms = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let (a, _b) = pair(Mode::Datagram).await;
        wall_ms.push(started.elapsed().as_secs_f64() * 1e3);
        offerer_ms.push(a.stats().setup_time.unwrap().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "setup: offerer connect() median {:.2} ms; bind both + connect + accept median {:.2} ms",
        median(&mut offerer_ms),
        median(&mut wall_ms)
    );
}

async fn flood(mode: Mode) {
    const SIZE: usize = 1200;
    const RUN: Duration = Duration::from_secs(2);
    let (a, b) = pair(mode).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let (b, received) = (b.clone(), received.clone());
        tokio::spawn(async move {
            while b.recv().await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Packets are built before the clock starts: the figure is the link's.
    let packets: Vec<_> = (0..1024).map(|i| numbered(1, i, SIZE)).collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < RUN {
        for p in &packets {
            a.send(p.clone()).await.unwrap();
        }
        sent += packets.len() as u64;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = received.load(Ordering::Relaxed);
    let gbps = got as f64 * SIZE as f64 * 8.0 / elapsed.as_secs_f64() / 1e9;
    let s = a.stats();
    println!(
        "{mode}: {gbps:.2} Gbit/s delivered of {SIZE}-byte RTP ({got} of {sent} offered, {:.1}%; \
         sender drops {:?}; receiver drops {:?}; QUIC lost packets {})",
        got as f64 * 100.0 / sent as f64,
        s.drops,
        b.stats().drops,
        a.connection_stats().path.lost_packets
    );
    a.close();
    counter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "speed figures; run in release with --ignored --nocapture"]
async fn datagram_throughput() {
    flood(Mode::Datagram).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "speed figures; run in release with --ignored --nocapture"]
async fn stream_throughput() {
    flood(Mode::Stream).await;
}
