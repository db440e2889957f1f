//! Loss without collapse, end to end: on a 40 ms RTT path with 5% loss in
//! ~20 ms bursts (the report's `wan-burst5`), every unreliable mode keeps
//! its one-way latency near the path's. A lost packet is lost; it must not
//! hold up the packets behind it. The bound, p99 under 100 ms on a 20 ms
//! one-way path, is behaviour, not speed: a stack that stalls on loss
//! shows a tail of seconds (the data channel showed 1.4 s, QUIC datagrams
//! 0.5 s before the loss issue), whatever the machine's load.
//!
//! The sender plays 2.5 Mbit/s video as an SFU forwards it: 30 frames a
//! second, each frame's packets back to back, a keyframe five times a
//! delta frame every 2 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::loopback::{LoopbackConfig, establish};
use relay_core::{Mode, Packet, RelayLink, Transport, build_rtp};
use relay_netsim::ImpairmentConfig;

const FRAMES: u32 = 180;
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const DELTA_PACKETS: u32 = 8;
const KEYFRAME_PACKETS: u32 = 5 * DELTA_PACKETS;
const KEYFRAME_EVERY: u32 = 60;
const PACKET: usize = 1_200;
const P99_LIMIT: Duration = Duration::from_millis(100);

fn wan_burst5() -> ImpairmentConfig {
    ImpairmentConfig::default()
        .delay(Duration::from_millis(20))
        .jitter(Duration::from_millis(2))
        .timed_burst_loss(0.05, Duration::from_millis(20))
}

/// One-way latencies of every packet that arrived, how many were sent, and
/// both ends' statistics (for the failure message).
async fn video_through_bursts(transport: Transport, mode: Mode, seed: u64) -> (Vec<Duration>, usize, String) {
    let pair = establish(
        transport,
        mode,
        &LoopbackConfig::default().impairment(wan_burst5(), seed),
    )
    .await
    .unwrap_or_else(|e| panic!("{transport} {mode}: setup through 5% burst loss failed: {e}"));
    let epoch = Instant::now();
    let receiver: Arc<dyn RelayLink> = pair.answerer.clone();
    let receiving = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Ends when nothing arrives for a second after the sender is done.
        while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(1), receiver.recv()).await {
            let bytes = p.bytes();
            let sent_ns = u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes"));
            let now_ns = epoch.elapsed().as_nanos() as u64;
            assert!(
                seen.insert(p.sequence_number().expect("RTP")),
                "a packet came twice"
            );
            latencies.push(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
        }
        latencies
    });

    let mut seq: u16 = 0;
    let mut sent = 0;
    let started = tokio::time::Instant::now();
    for frame in 0..FRAMES {
        tokio::time::sleep_until(started + FRAME_INTERVAL * frame).await;
        let packets = if frame % KEYFRAME_EVERY == 0 {
            KEYFRAME_PACKETS
        } else {
            DELTA_PACKETS
        };
        for _ in 0..packets {
            let mut payload = vec![0u8; PACKET - 12];
            payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            let rtp = build_rtp(96, seq, frame * 3000, 0x5EED, &payload);
            pair.offerer
                .send(Packet::parse(rtp).expect("RTP"))
                .await
                .unwrap_or_else(|e| panic!("{transport} {mode}: send failed: {e}"));
            seq = seq.wrapping_add(1);
            sent += 1;
        }
    }
    let latencies = tokio::time::timeout(Duration::from_secs(20), receiving)
        .await
        .expect("the receiver ends a second after the last arrival")
        .expect("the receiver does not panic");
    let ends = format!(
        "sender {:?}; receiver {:?}",
        pair.offerer.stats().drops,
        pair.answerer.stats().drops
    );
    pair.close().await;
    (latencies, sent, ends)
}

async fn keeps_latency(transport: Transport, mode: Mode) {
    for seed in [1, 2] {
        let (mut latencies, sent, ends) = video_through_bursts(transport, mode, seed).await;
        latencies.sort();
        let delivered = latencies.len();
        // 5% of the path is lost; anything far beyond is the relay's doing.
        assert!(
            delivered * 100 >= sent * 85,
            "{transport} {mode} seed {seed}: delivered {delivered} of {sent}; {ends}"
        );
        let p99 = latencies[(delivered * 99).div_ceil(100) - 1];
        assert!(
            p99 < P99_LIMIT,
            "{transport} {mode} seed {seed}: p99 one-way {p99:?} on a 20 ms path (max {:?}, {delivered} of {sent} delivered); {ends}",
            latencies.last()
        );
    }
}

#[cfg(feature = "rtp-udp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_udp_keeps_its_latency_through_burst_loss() {
    keeps_latency(Transport::RtpUdp, Mode::Unreliable).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_datagrams_keep_their_latency_through_burst_loss() {
    keeps_latency(Transport::Quic, Mode::Datagram).await;
}

#[cfg(feature = "dc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreliable_data_channel_keeps_its_latency_through_burst_loss() {
    keeps_latency(Transport::Dc, Mode::Unreliable).await;
}
