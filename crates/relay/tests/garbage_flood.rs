//! `relay answer` under a flood of bad input on its media port, one test per
//! line of `relay transports`: while a real, paced RTP stream flows
//! `relay offer` → `relay answer`, another thread sends the answerer's media
//! socket(s) 100,000 datagrams a second of random garbage, truncated
//! headers (RTP, QUIC, DTLS, STUN), oversized datagrams (9,000 and 60,000
//! bytes) and spoofed packets that look right for the transport but come
//! from 127.0.0.2 and 127.0.0.3 (the peer is on 127.0.0.1).
//!
//! Asserted per line:
//!
//! - the stream arrives as without the flood: reliable modes every packet,
//!   in order, byte-exact; unreliable modes at least 99 % byte-exact (less
//!   what the kernel dropped on the answerer's socket, see below), and
//!   nothing from the flood ever reaches `--out`;
//! - the link stays up (both processes running, the session `up`);
//! - every flood datagram is counted in the session's
//!   `GET /v1/sessions/{id}/stats` drops by its cause: oversized as
//!   `too_large`, garbage and truncated as `malformed`, spoofed as
//!   `unknown_source`. Each backend judges size, then shape, then source,
//!   so the causes do not depend on the sender. `unauthenticated` needs
//!   plausible packets from the peer's own address, which a test without
//!   the peer's socket cannot send: it stays 0;
//! - the answerer's resident memory after the flood is within 8 MiB of
//!   what it was after a warm-up.
//!
//! The kernel may drop part of the flood when the answerer's receive buffer
//! is full; that is allowed, measured per socket (`/proc/net/udp`, column
//! `drops`) and system-wide (`/proc/net/snmp` `RcvbufErrors`), printed, and
//! subtracted from what the counts must reach.
//!
//! The lines run one at a time (a lock): two floods at once on two cores
//! would only measure each other. Linux only: the answerer's sockets,
//! memory and drops are read from `/proc`, and spoofing uses 127.0.0.0/8.
#![cfg(target_os = "linux")]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::udp::KernelUdpCounters;

mod common;

use common::{
    Guard, ProcUdpSocket, RELAY, answer, drain_stderr, field, first_line, free_udp_addr, http_get_body,
    rss_bytes, spawn,
};

/// The real stream: packets, rate and size.
const STREAM_PACKETS: u16 = 2_000;
const STREAM_PPS: u64 = 1_000;
const STREAM_PACKET_SIZE: usize = 1_200;
const STREAM_SSRC: u32 = 0x600D_600D;
/// Packets of the stream sent before the flood starts (RSS is measured
/// then) and after it stops.
const WARM_UP_PACKETS: u16 = 300;
const COOL_DOWN_PACKETS: u16 = 200;

/// The flood's target rate, and the lowest average accepted (CI has two
/// loaded cores; the real figure is printed).
const FLOOD_PPS: u64 = 100_000;
const MIN_FLOOD_PPS: f64 = 60_000.0;
/// Hard bound on flood datagrams per line, whatever the clock does.
const MAX_FLOOD: u64 = 400_000;

/// Allowed growth of the answerer's RSS from warm-up to after the flood.
const MAX_RSS_GROWTH: u64 = 8 * 1024 * 1024;

/// One line at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn every_line_of_relay_transports_is_covered_here() {
    let out = std::process::Command::new(RELAY)
        .arg("transports")
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "dc reliable",
            "dc repair",
            "dc unreliable",
            "quic datagram",
            "quic repair",
            "quic stream",
            "rtp-udp repair",
            "rtp-udp srtp",
            "rtp-udp srtp-repair",
            "rtp-udp unreliable"
        ],
        "a new transport line needs its flood test below"
    );
}

#[test]
fn rtp_udp_unreliable_under_flood() {
    flood_line("rtp-udp", "unreliable");
}

#[test]
fn rtp_udp_srtp_under_flood() {
    flood_line("rtp-udp", "srtp");
}

#[test]
fn rtp_udp_repair_under_flood() {
    flood_line("rtp-udp", "repair");
}

#[test]
fn rtp_udp_srtp_repair_under_flood() {
    flood_line("rtp-udp", "srtp-repair");
}

#[test]
fn quic_repair_under_flood() {
    flood_line("quic", "repair");
}

#[test]
fn quic_datagram_under_flood() {
    flood_line("quic", "datagram");
}

#[test]
fn quic_stream_under_flood() {
    flood_line("quic", "stream");
}

#[test]
fn dc_reliable_under_flood() {
    flood_line("dc", "reliable");
}

#[test]
fn dc_repair_under_flood() {
    flood_line("dc", "repair");
}

#[test]
fn dc_unreliable_under_flood() {
    flood_line("dc", "unreliable");
}

/// The stream's packet `seq`: a valid RTP header and a payload that
/// depends on `seq`, so a byte-exact comparison catches mix-ups.
fn stream_packet(seq: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..STREAM_PACKET_SIZE - 12)
        .map(|i| (i as u16).wrapping_add(seq.wrapping_mul(7)) as u8)
        .collect();
    relay_core::build_rtp(96, seq, u32::from(seq) * 90, STREAM_SSRC, &payload).to_vec()
}

/// What a flood datagram is, and which drop cause it must land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Random bytes whose first byte (4..=19) no transport accepts.
    Garbage,
    /// A header cut short: RTP, QUIC short header, DTLS record, STUN.
    Truncated,
    /// 9,000 or 60,000 bytes.
    Oversized,
    /// Right shape for the transport, wrong source address.
    Spoofed,
}

const KINDS: [Kind; 4] = [Kind::Garbage, Kind::Truncated, Kind::Oversized, Kind::Spoofed];

/// Small deterministic generator (xorshift64*), so runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Datagrams that look right for `transport` (and would be accepted from
/// the peer's address, or at least parsed far enough to need it).
fn spoofed_shapes(transport: &str, rng: &mut Rng) -> Vec<Vec<u8>> {
    let stun_request = {
        let mut p = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        p.extend(rng.bytes(12));
        p
    };
    match transport {
        "rtp-udp" => vec![
            relay_core::build_rtp(96, 7, 0, 0xBAD, &rng.bytes(200)).to_vec(),
            relay_core::build_rtp(96, 8, 0, STREAM_SSRC, &rng.bytes(1_188)).to_vec(),
            stun_request,
        ],
        "quic" => {
            // Short header: fixed bit set, 8-byte connection id, payload.
            let mut short = vec![0x41];
            short.extend(rng.bytes(8 + 60));
            // Long header Initial, QUIC v1, padded to 1,200 bytes.
            let mut initial = vec![0xC3, 0, 0, 0, 1, 8];
            initial.extend(rng.bytes(8));
            initial.push(8);
            initial.extend(rng.bytes(8));
            initial.resize(1_200, 0);
            vec![short, initial]
        }
        "dc" => {
            // DTLS 1.2 application_data record, epoch 1.
            let mut record = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 100];
            record.extend(rng.bytes(100));
            vec![record, stun_request]
        }
        other => panic!("no spoofed shapes for {other}"),
    }
}

/// The flood's datagrams, in the order they are sent (cycled): per 100,
/// 40 spoofed, 30 garbage, 20 truncated, 9 of 9,000 and 1 of 60,000 bytes.
fn flood_pool(transport: &str) -> Vec<(Kind, Vec<u8>)> {
    let mut rng = Rng(0x5EED_F100D);
    let spoofed = spoofed_shapes(transport, &mut rng);
    let truncated: [Vec<u8>; 4] = [
        vec![0x80, 96, 0, 1, 0],                              // RTP header cut at 5 bytes
        vec![0x41, 1, 2, 3, 4, 5, 6],                         // QUIC short header, 7 bytes
        vec![22, 0xFE, 0xFD, 0, 0],                           // DTLS record header cut
        vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42], // STUN header cut
    ];
    let mut pool = Vec::new();
    for round in 0..10 {
        for i in 0..100 {
            let d = match i {
                0..40 => (Kind::Spoofed, spoofed[(round + i) % spoofed.len()].clone()),
                40..70 => {
                    let len = 20 + (rng.next() % 1_180) as usize;
                    let mut g = rng.bytes(len);
                    g[0] = 4 + (g[0] % 16);
                    (Kind::Garbage, g)
                }
                70..90 => (Kind::Truncated, truncated[i % 4].clone()),
                90..99 => (Kind::Oversized, {
                    let mut o = rng.bytes(9_000);
                    o[0] = 0x80;
                    o
                }),
                _ => (Kind::Oversized, vec![0x41; 60_000]),
            };
            pool.push(d);
        }
    }
    pool
}

/// What the flood thread did.
#[derive(Debug, Default)]
struct FloodReport {
    sent: [u64; 4],
    send_errors: u64,
    elapsed: Duration,
}

impl FloodReport {
    fn total(&self) -> u64 {
        self.sent.iter().sum()
    }

    fn sent(&self, kind: Kind) -> u64 {
        self.sent[KINDS.iter().position(|k| *k == kind).unwrap()]
    }

    fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends the pool round-robin to `targets` at `FLOOD_PPS` (in 1 ms ticks)
/// until `stop`, from sockets on 127.0.0.2 and 127.0.0.3.
fn flood(
    pool: Vec<(Kind, Vec<u8>)>,
    targets: Vec<SocketAddr>,
    peer_port: u16,
    stop: Arc<AtomicBool>,
) -> FloodReport {
    // The peer's port on other loopback addresses (as a spoofer would pick),
    // and an ephemeral one.
    let from: Vec<UdpSocket> = [
        ("127.0.0.2", peer_port),
        ("127.0.0.3", peer_port),
        ("127.0.0.2", 0),
    ]
    .iter()
    .map(|(ip, port)| {
        UdpSocket::bind((*ip, *port))
            .or_else(|_| UdpSocket::bind((*ip, 0)))
            .unwrap()
    })
    .collect();
    let mut report = FloodReport::default();
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && sent < MAX_FLOOD {
        let due = ((started.elapsed().as_secs_f64() * FLOOD_PPS as f64) as u64).min(MAX_FLOOD);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        while sent < due {
            let (kind, bytes) = &pool[(sent % pool.len() as u64) as usize];
            let socket = &from[(sent % from.len() as u64) as usize];
            let target = targets[(sent / 7 % targets.len() as u64) as usize];
            match socket.send_to(bytes, target) {
                Ok(_) => report.sent[KINDS.iter().position(|k| k == kind).unwrap()] += 1,
                Err(_) => report.send_errors += 1,
            }
            sent += 1;
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// The answering process's media sockets: its loopback UDP sockets (the
/// socket towards `--out` is bound to 0.0.0.0). The media address is in
/// the signaling answer, which only the offerer sees; the relay does not
/// expose it in `GET /v1/sessions`.
fn media_sockets(pid: u32) -> Vec<ProcUdpSocket> {
    common::udp_sockets_of(pid)
        .into_iter()
        .filter(|s| s.local.ip() == std::net::Ipv4Addr::LOCALHOST)
        .collect()
}

fn socket_drops(pid: u32, of: &[ProcUdpSocket]) -> u64 {
    let now = common::udp_sockets_of(pid);
    of.iter()
        .map(|s| {
            now.iter()
                .find(|n| n.inode == s.inode)
                .map_or(0, |n| n.drops.saturating_sub(s.drops))
        })
        .sum()
}

fn session_info(url: &str, session: &str) -> serde_json::Value {
    let body = http_get_body(url, &format!("/v1/sessions/{session}/stats"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {body}"))
}

fn drops(info: &serde_json::Value) -> [u64; 6] {
    let d = &info["stats"]["drops"];
    [
        "too_large",
        "malformed",
        "unknown_source",
        "unauthenticated",
        "send_queue_full",
        "receive_queue_full",
    ]
    .map(|k| d[k].as_u64().unwrap_or_else(|| panic!("no drops.{k} in {info}")))
}

/// Waits (bounded) until the drop counts stop moving: the answerer may
/// still be working through its receive buffer when the flood stops.
fn settled_info(url: &str, session: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = session_info(url, session);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = session_info(url, session);
        if drops(&now) == drops(&last) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Sends the stream to `input` at `STREAM_PPS`; calls `at(seq)` before
/// each packet so the caller can start and stop the flood.
fn send_stream(input: &str, mut at: impl FnMut(u16)) {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    for seq in 0..STREAM_PACKETS {
        at(seq);
        let due = started + Duration::from_micros(u64::from(seq) * 1_000_000 / STREAM_PPS);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sender.send_to(&stream_packet(seq), input).unwrap();
    }
}

/// Receives on `--out` until the whole stream is in or 3 s pass in silence.
fn receive_stream(consumer: UdpSocket) -> Vec<Vec<u8>> {
    consumer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < usize::from(STREAM_PACKETS) && Instant::now() < deadline {
        match consumer.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

/// On a failed assertion: ends both processes (by pid) and prints the tail
/// of their logs.
struct LogsOnPanic {
    line: String,
    pids: [u32; 2],
    logs: Vec<(&'static str, std::thread::JoinHandle<String>)>,
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for pid in self.pids {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        for (who, log) in self.logs.drain(..) {
            let log = log.join().unwrap_or_default();
            eprintln!("--- {} {who} stderr (tail) ---\n{log}", self.line);
        }
    }
}

fn flood_line(transport: &str, mode: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let line = format!("{transport} {mode}");
    let test_started = Instant::now();

    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (mut answerer, url) = answer(&out, &[]);
    let answer_pid = answerer.0.id();
    let answer_log = drain_stderr(&mut answerer, 16 * 1024);
    let input = free_udp_addr();
    let (mut offerer, mut offer_out): (Guard, _) = spawn(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        transport,
        "--mode",
        mode,
        "--in",
        &input,
    ]);
    let offer_log = drain_stderr(&mut offerer, 16 * 1024);
    let _logs = LogsOnPanic {
        line: line.clone(),
        pids: [answer_pid, offerer.0.id()],
        logs: vec![("answer", answer_log), ("offer", offer_log)],
    };
    let ready = first_line(&mut offer_out);
    assert!(ready.starts_with("ready "), "{line}: {ready:?}");
    let session = field(&ready, "session").to_string();

    let targets = media_sockets(answer_pid);
    assert!(
        !targets.is_empty(),
        "{line}: no loopback UDP socket in the answering process"
    );
    let input_port: u16 = input.rsplit(':').next().unwrap().parse().unwrap();
    let peer_port = media_sockets(offerer.0.id())
        .iter()
        .map(|s| s.local.port())
        .find(|p| *p != input_port)
        .expect("the offerer's media socket");

    let receiver = std::thread::spawn(move || receive_stream(consumer));
    let pool = flood_pool(transport);
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooder = None;
    let mut rss_warm = 0;
    let rss_mid = Arc::new(AtomicU64::new(0));
    let mut kernel_before = KernelUdpCounters::default();
    let mut pool = Some(pool);
    let flood_targets: Vec<SocketAddr> = targets.iter().map(|s| s.local).collect();
    send_stream(&input, |seq| {
        if seq == WARM_UP_PACKETS {
            rss_warm = rss_bytes(answer_pid);
            kernel_before = KernelUdpCounters::read();
            let (pool, targets, stop) = (pool.take().unwrap(), flood_targets.clone(), stop.clone());
            flooder = Some(std::thread::spawn(move || flood(pool, targets, peer_port, stop)));
        }
        if seq == (STREAM_PACKETS - COOL_DOWN_PACKETS + WARM_UP_PACKETS) / 2 {
            rss_mid.store(rss_bytes(answer_pid), Ordering::Relaxed);
        }
        if seq == STREAM_PACKETS - COOL_DOWN_PACKETS {
            stop.store(true, Ordering::Relaxed);
        }
    });
    let flood = flooder.take().unwrap().join().unwrap();
    let got = receiver.join().unwrap();
    let info = settled_info(&url, &session);
    let kernel = KernelUdpCounters::read().since(&kernel_before);
    let socket_drops = socket_drops(answer_pid, &targets);
    let rss_after = rss_bytes(answer_pid);
    let [
        too_large,
        malformed,
        unknown_source,
        unauthenticated,
        send_queue_full,
        receive_queue_full,
    ] = drops(&info);

    println!(
        "{line}: flood {} datagrams in {:.2} s = {:.0}/s (target {FLOOD_PPS}/s; garbage {}, truncated {}, oversized {}, spoofed {}, send errors {}) to {:?}",
        flood.total(),
        flood.elapsed.as_secs_f64(),
        flood.rate(),
        flood.sent(Kind::Garbage),
        flood.sent(Kind::Truncated),
        flood.sent(Kind::Oversized),
        flood.sent(Kind::Spoofed),
        flood.send_errors,
        flood_targets,
    );
    println!(
        "{line}: drops too_large {too_large}, malformed {malformed}, unknown_source {unknown_source}, unauthenticated {unauthenticated}, send_queue_full {send_queue_full}, receive_queue_full {receive_queue_full}"
    );
    println!(
        "{line}: kernel drops on the answerer's media socket(s) {socket_drops}; system-wide RcvbufErrors +{} InErrors +{}",
        kernel.rcvbuf_errors, kernel.in_errors
    );
    println!(
        "{line}: answerer RSS warm-up {:.1} MiB, mid-flood {:.1} MiB, after {:.1} MiB; stream {} of {STREAM_PACKETS} delivered; {:.1} s",
        rss_warm as f64 / 1048576.0,
        rss_mid.load(Ordering::Relaxed) as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        got.len(),
        test_started.elapsed().as_secs_f64()
    );

    // The flood was a flood.
    assert!(
        flood.rate() >= MIN_FLOOD_PPS,
        "{line}: the flood reached only {:.0} datagrams/s",
        flood.rate()
    );

    // The link is up, on both sides.
    assert_eq!(info["state"], "up", "{line}: {info}");
    assert!(
        offerer.0.try_wait().unwrap().is_none(),
        "{line}: the offerer exited"
    );

    // The stream: nothing foreign, nothing corrupt.
    let reliable = matches!(mode, "reliable" | "stream");
    let mut seqs = Vec::with_capacity(got.len());
    for p in &got {
        assert!(p.len() >= 12, "{line}: a {}-byte datagram reached --out", p.len());
        let seq = u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(p, &stream_packet(seq), "{line}: packet {seq} is not the one sent");
        seqs.push(seq);
    }
    // The counts below allow for kernel drops; past a tenth of the flood
    // they would check the kernel rather than the relay.
    assert!(
        socket_drops <= flood.total() / 10,
        "{line}: the kernel dropped {socket_drops} of {} flood datagrams; counting cannot be checked",
        flood.total()
    );
    if reliable {
        let expected: Vec<u16> = (0..STREAM_PACKETS).collect();
        assert_eq!(
            seqs, expected,
            "{line}: reliable delivery must be complete and in order"
        );
    } else {
        let mut unique = seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seqs.len(), "{line}: duplicates delivered");
        // Kernel drops on the answerer's socket hit the stream in proportion.
        let flood_share = socket_drops as f64 / (flood.total() + u64::from(STREAM_PACKETS)) as f64;
        let allowed_loss = 0.01 + flood_share;
        let delivered = seqs.len() as f64 / f64::from(STREAM_PACKETS);
        assert!(
            delivered >= 1.0 - allowed_loss,
            "{line}: {:.2} % delivered, {:.2} % allowed to be lost ({socket_drops} kernel drops)",
            delivered * 100.0,
            allowed_loss * 100.0
        );
    }

    // Every flood datagram counted by its cause, less what the kernel
    // dropped before the answerer could read it.
    let expect = |what: &str, counted: u64, sent: u64| {
        assert!(
            counted <= sent && counted + socket_drops >= sent,
            "{line}: {what} counted {counted}, sent {sent}, kernel drops {socket_drops}"
        );
    };
    expect("too_large", too_large, flood.sent(Kind::Oversized));
    expect(
        "malformed",
        malformed,
        flood.sent(Kind::Garbage) + flood.sent(Kind::Truncated),
    );
    expect("unknown_source", unknown_source, flood.sent(Kind::Spoofed));
    assert_eq!(unauthenticated, 0, "{line}: nothing came from the peer's address");
    assert!(
        too_large + malformed + unknown_source + socket_drops >= flood.total(),
        "{line}: flood datagrams unaccounted for"
    );

    // Memory stays flat.
    assert!(
        rss_after <= rss_warm + MAX_RSS_GROWTH,
        "{line}: RSS grew from {rss_warm} to {rss_after} bytes"
    );
    drop(offerer);
    drop(answerer);
}
