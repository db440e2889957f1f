//! `cargo bench -p relay-bench`: every compiled-in transport and mode side
//! by side with raw UDP (`setup`, `throughput`, `rtt`), and the pure parts
//! every packet goes through (`micro`).
//!
//! Sample sizes and times are set so the whole suite runs in a few
//! minutes on the 2-core benchmark machine (well under the 15-minute
//! budget); the scenario report (`relay-bench report`) is where loss,
//! delay and rate caps are measured.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quic_relay::roq::{self, StreamDecoder};
use relay_bench::path::Path;
use relay_bench::report::FLOOD_SIZE;
use relay_bench::scenario::{Subject, scenarios};
use relay_core::{Mode, Packet, StatsRecorder, Transport, build_rtp};
use relay_netsim::{GilbertElliott, Impairment, ImpairmentConfig, QueueLimit};

/// Packets per criterion iteration of the throughput group.
const BATCH: u64 = 1_000;
/// Packets in flight in the throughput group: large enough to keep every
/// transport busy, small enough to stay inside quinn's 1 MiB datagram send
/// buffer and the 4,096-packet receive queues (no overload loss).
const WINDOW: u64 = 512;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn setup(c: &mut Criterion) {
    let rt = runtime();
    let clean = scenarios().remove(0);
    let mut group = c.benchmark_group("setup");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for subject in Subject::ours() {
        group.bench_function(BenchmarkId::from_parameter(subject.label()), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        let path = Path::open(subject, &clean, i).await.expect("path setup");
                        total += path.setup;
                        path.close().await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let clean = scenarios().remove(0);
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(BATCH * FLOOD_SIZE as u64));
    for subject in Subject::ours() {
        let path = rt.block_on(Path::open(subject, &clean, 1)).expect("path setup");
        group.bench_function(BenchmarkId::from_parameter(subject.label()), |b| {
            b.iter_custom(|iters| {
                let total = iters * BATCH;
                let (elapsed, delivered) =
                    rt.block_on(path.windowed(total, FLOOD_SIZE, WINDOW, Duration::from_millis(50)));
                if delivered < total {
                    eprintln!(
                        "{}: {} of {total} packets lost (written off after 50 ms)",
                        subject.label(),
                        total - delivered
                    );
                }
                elapsed
            })
        });
        rt.block_on(path.close());
    }
    group.finish();
}

fn rtt(c: &mut Criterion) {
    let rt = runtime();
    let clean = scenarios().remove(0);
    let mut group = c.benchmark_group("rtt");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for subject in Subject::ours() {
        let path = rt.block_on(Path::open(subject, &clean, 1)).expect("path setup");
        group.bench_function(BenchmarkId::from_parameter(subject.label()), |b| {
            b.iter_custom(|iters| {
                let (elapsed, done) = rt.block_on(path.ping_pong(iters, 200, Duration::from_millis(100)));
                if done < iters {
                    eprintln!("{}: {} of {iters} pings lost", subject.label(), iters - done);
                }
                elapsed
            })
        });
        rt.block_on(path.close());
    }
    group.finish();
}

fn rtp(seq: u16, size: usize) -> Bytes {
    build_rtp(96, seq, seq as u32 * 3000, 0x1234_5678, &vec![0u8; size - 12])
}

fn micro(c: &mut Criterion) {
    let mut group = c.benchmark_group("micro");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));

    // RTP classification (RFC 5761 demultiplexing) of a 1,200-byte packet.
    let packet = rtp(1, FLOOD_SIZE);
    group.bench_function("packet_parse", |b| {
        b.iter(|| Packet::parse(std::hint::black_box(packet.clone())))
    });

    // Per-packet RFC 3550 receive accounting (loss, jitter).
    let stats = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable);
    let packets: Vec<Packet> = (0..1024u16)
        .map(|s| Packet::parse(rtp(s, 200)).expect("valid RTP"))
        .collect();
    let mut i = 0;
    group.bench_function("stats_on_received", |b| {
        b.iter(|| {
            stats.on_received(&packets[i % packets.len()], Instant::now());
            i += 1;
        })
    });

    // The same accounting when a link sees many SSRCs: 1,000 (all kept)
    // and 10,000 cycling (past the 4,096 cap, so every packet evicts one):
    // the per-packet cost should stay flat.
    for ssrcs in [1_000u32, 10_000] {
        let stats = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable);
        let packets: Vec<Packet> = (0..ssrcs)
            .map(|ssrc| Packet::parse(build_rtp(96, 1, 0, ssrc, &[0; 188])).expect("valid RTP"))
            .collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("stats_on_received_ssrcs", ssrcs), |b| {
            b.iter(|| {
                stats.on_received(&packets[i % packets.len()], Instant::now());
                i += 1;
            })
        });
    }

    // RoQ framing: one DATAGRAM, and one packet on a stream.
    let mut buf = BytesMut::with_capacity(64 * 1024);
    group.bench_function("roq_datagram_encode", |b| {
        b.iter(|| {
            if buf.capacity() < 2 * FLOOD_SIZE {
                buf = BytesMut::with_capacity(64 * 1024);
            }
            roq::encode_datagram(0, &packet, &mut buf).expect("flow id fits");
            buf.split().freeze()
        })
    });
    let mut framed = BytesMut::new();
    roq::encode_datagram(0, &packet, &mut framed).expect("flow id fits");
    let framed = framed.freeze();
    group.bench_function("roq_datagram_decode", |b| {
        b.iter(|| roq::decode_datagram(std::hint::black_box(framed.clone())))
    });
    let mut stream = BytesMut::new();
    roq::encode_stream_header(0, &mut stream).expect("flow id fits");
    for _ in 0..64 {
        roq::encode_packet_length(packet.len(), &mut stream).expect("length fits");
        stream.extend_from_slice(&packet);
    }
    let stream = stream.freeze();
    group.throughput(Throughput::Elements(64));
    group.bench_function("roq_stream_decode_64", |b| {
        b.iter(|| {
            let mut decoder = StreamDecoder::new(65_507);
            let mut input = stream.clone();
            let mut n = 0;
            while let Ok(Some(_)) = decoder.decode(&mut input) {
                n += 1;
            }
            n
        })
    });
    group.throughput(Throughput::Elements(1));

    // netsim decisions: clean, lossy with delay and jitter, and a rate cap.
    let t0 = Instant::now();
    for (name, config) in [
        ("netsim_clean", ImpairmentConfig::default()),
        (
            "netsim_burst_loss_delay_jitter",
            ImpairmentConfig::default()
                .burst_loss(GilbertElliott::from_mean_loss(0.05, 4.0).expect("valid chain"))
                .loss(0.01)
                .delay(Duration::from_millis(20))
                .jitter(Duration::from_millis(5)),
        ),
        (
            "netsim_rate_cap",
            ImpairmentConfig::default().rate(50_000_000, QueueLimit::Bytes(64 * 1024)),
        ),
    ] {
        let mut model = Impairment::new(config, 1).expect("valid impairment");
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                // One packet every 100 µs of model time: 96 Mbit/s, so the
                // cap's queue sees both accepts and overflows.
                n += 1;
                model.on_packet(t0 + Duration::from_micros(n * 100), FLOOD_SIZE)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, micro, setup, rtt, throughput);
criterion_main!(benches);
