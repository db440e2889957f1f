//! `relay compare`: the same synthetic RTP workload over every compiled-in
//! backend and mode, plus raw UDP sockets as the baseline, in one process on
//! loopback. A quick look, not the benchmark harness: one run, no
//! impairment.
//!
//! Two phases per transport:
//! - **paced**: `packets` RTP packets of `size` bytes at `rate` per second;
//!   gives delivered ratio and one-way latency (send time is in the payload,
//!   same clock, so no clock sync is involved).
//! - **flood**: `flood_packets` as fast as the link takes them; gives
//!   throughput (delivered bytes over first send to last receive).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use relay_core::udp::{DEFAULT_SOCKET_BUFFER, KernelUdpCounters, bind_udp};
use relay_core::{Packet, RelayLink, Transport, build_rtp};
use relay_signaling::{ServerConfig, SignalingClient, SignalingServer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::{Established, LinkOptions, RelayError};

/// Workload settings.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Packets in the paced phase.
    pub packets: u32,
    /// Paced send rate, packets per second.
    pub rate: u32,
    /// RTP packet size in bytes.
    pub size: usize,
    /// Packets in the flood phase.
    pub flood_packets: u32,
    /// Transports to run (default: every compiled-in one).
    pub transports: Vec<Transport>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            packets: 10_000,
            rate: 10_000,
            size: 1_200,
            flood_packets: 50_000,
            transports: crate::compiled_transports(),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// `raw-udp` or a transport name.
    pub transport: String,
    /// Mode name, `-` for raw UDP.
    pub mode: String,
    /// Offer sent → link ready, signaling included.
    pub setup_ms: Option<f64>,
    /// Paced phase: packets received / sent.
    pub delivered: f64,
    /// Paced phase one-way latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Flood phase throughput.
    pub mbit_s: f64,
    /// Flood phase: packets received / sent.
    pub flood_delivered: f64,
    /// Throughput relative to raw UDP in the same run.
    pub vs_raw: Option<f64>,
    /// Datagrams the kernel dropped for full socket buffers during this row.
    pub kernel_drops: u64,
}

/// Something that carries packets one way, from `send` to `recv`.
enum Path {
    Link {
        tx: Arc<dyn RelayLink>,
        rx: Arc<dyn RelayLink>,
    },
    Udp {
        tx: Arc<UdpSocket>,
        rx: Arc<UdpSocket>,
        to: std::net::SocketAddr,
    },
}

impl Path {
    async fn send(&self, p: Packet) -> bool {
        match self {
            Path::Link { tx, .. } => tx.send(p).await.is_ok(),
            // Like an unreliable link: never wait, drop on a full buffer.
            Path::Udp { tx, to, .. } => {
                let _ = tx.try_send_to(p.bytes(), *to);
                true
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Option<Bytes> {
        match self {
            Path::Link { rx, .. } => rx.recv().await.ok().map(Packet::into_bytes),
            Path::Udp { rx, .. } => {
                let n = rx.recv(buf).await.ok()?;
                Some(Bytes::copy_from_slice(&buf[..n]))
            }
        }
    }
}

fn packet(epoch: Instant, seq: u32, size: usize) -> Packet {
    let mut payload = vec![0u8; size.saturating_sub(12).max(12)];
    payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    payload[8..12].copy_from_slice(&seq.to_be_bytes());
    Packet::parse(build_rtp(
        96,
        seq as u16,
        seq.wrapping_mul(3000),
        0xC0FFEE,
        &payload,
    ))
    .expect("valid RTP")
}

struct PhaseResult {
    received: u32,
    bytes: u64,
    latency: Histogram<u64>,
    first_send: Instant,
    last_recv: Option<Instant>,
}

/// Runs `count` packets through `path`, paced at `rate` per second (`None`:
/// as fast as possible). RTP sequence numbers start at `first_seq`: one
/// path is one stream across phases, and SRTP refuses a repeated number.
async fn phase(path: Arc<Path>, first_seq: u32, count: u32, size: usize, rate: Option<u32>) -> PhaseResult {
    let epoch = Instant::now();
    let receiver = {
        let path = path.clone();
        tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut buf = vec![0u8; 65_536];
            let (mut received, mut bytes, mut last) = (0u32, 0u64, None);
            // Stop when all arrived, or 500 ms after the last arrival.
            while received < count {
                match tokio::time::timeout(Duration::from_millis(500), path.recv(&mut buf)).await {
                    Ok(Some(b)) if b.len() >= 20 => {
                        let sent = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"));
                        let now = epoch.elapsed().as_nanos() as u64;
                        let _ = latency.record((now.saturating_sub(sent) / 1000).max(1));
                        received += 1;
                        bytes += b.len() as u64;
                        last = Some(Instant::now());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (received, bytes, latency, last)
        })
    };
    let first_send = Instant::now();
    match rate {
        Some(rate) => {
            // Bursts every millisecond keep the timer load sane.
            let per_ms = (rate / 1000).max(1);
            let start = tokio::time::Instant::now();
            let mut seq = 0;
            let mut tick = 0u64;
            while seq < count {
                let due = Duration::from_secs_f64(tick as f64 * per_ms as f64 / rate as f64);
                tokio::time::sleep_until(start + due).await;
                for _ in 0..per_ms.min(count - seq) {
                    if !path.send(packet(epoch, first_seq + seq, size)).await {
                        break;
                    }
                    seq += 1;
                }
                tick += 1;
            }
        }
        None => {
            for seq in 0..count {
                if !path.send(packet(epoch, first_seq + seq, size)).await {
                    break;
                }
                if seq % 64 == 0 {
                    // Let the receiving task run on a busy runtime.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    let (received, bytes, latency, last_recv) =
        receiver
            .await
            .unwrap_or((0, 0, Histogram::new(3).expect("hist"), None));
    PhaseResult {
        received,
        bytes,
        latency,
        first_send,
        last_recv,
    }
}

async fn measure(path: Path, config: &CompareConfig) -> (PhaseResult, PhaseResult) {
    let path = Arc::new(path);
    let paced = phase(path.clone(), 0, config.packets, config.size, Some(config.rate)).await;
    let flood = phase(path, config.packets, config.flood_packets, config.size, None).await;
    (paced, flood)
}

fn row(
    transport: &str,
    mode: &str,
    setup: Option<Duration>,
    paced: PhaseResult,
    flood: PhaseResult,
    sent: (u32, u32),
    kernel: u64,
) -> Row {
    let ms = |us: u64| us as f64 / 1000.0;
    let secs = flood
        .last_recv
        .map(|l| l.duration_since(flood.first_send).as_secs_f64())
        .unwrap_or(0.0);
    Row {
        transport: transport.to_string(),
        mode: mode.to_string(),
        setup_ms: setup.map(|d| d.as_secs_f64() * 1000.0),
        delivered: paced.received as f64 / sent.0.max(1) as f64,
        p50_ms: ms(paced.latency.value_at_quantile(0.5)),
        p99_ms: ms(paced.latency.value_at_quantile(0.99)),
        mbit_s: if secs > 0.0 {
            flood.bytes as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        },
        flood_delivered: flood.received as f64 / sent.1.max(1) as f64,
        vs_raw: None,
        kernel_drops: kernel,
    }
}

/// Runs the comparison and returns one row per transport and mode, raw UDP
/// first.
pub async fn run(config: &CompareConfig, mut progress: impl FnMut(&str)) -> Result<Vec<Row>, RelayError> {
    let mut rows = Vec::new();

    progress("raw-udp");
    let k0 = KernelUdpCounters::read();
    let (tx, rx) = raw_pair().map_err(|e| RelayError::Setup {
        transport: Transport::RtpUdp,
        source: format!("raw UDP baseline: {e}").into(),
    })?;
    let to = rx.local_addr().expect("bound socket");
    let (paced, flood) = measure(
        Path::Udp {
            tx: Arc::new(tx),
            rx: Arc::new(rx),
            to,
        },
        config,
    )
    .await;
    let kernel = KernelUdpCounters::read().since(&k0).rcvbuf_errors;
    rows.push(row(
        "raw-udp",
        "-",
        None,
        paced,
        flood,
        (config.packets, config.flood_packets),
        kernel,
    ));

    let (sink_tx, mut sink_rx) = mpsc::unbounded_channel::<Established>();
    let options = LinkOptions::default();
    let answerers = crate::answerers(
        &options,
        Arc::new(move |e: Established| {
            let _ = sink_tx.send(e);
        }),
    );
    let server = SignalingServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ServerConfig::default(),
        answerers,
    )
    .await
    .map_err(|e| RelayError::Setup {
        transport: Transport::RtpUdp,
        source: e.into(),
    })?;
    let client = SignalingClient::new(&format!("http://{}", server.local_addr()))?;

    for &transport in &config.transports {
        for &mode in transport.modes() {
            progress(&format!("{transport} {mode}"));
            let k0 = KernelUdpCounters::read();
            let started = Instant::now();
            let offered = crate::offer(&client, transport, mode, &options).await?;
            let setup = started.elapsed();
            let answered = tokio::time::timeout(Duration::from_secs(10), sink_rx.recv())
                .await
                .ok()
                .flatten()
                .ok_or_else(|| RelayError::Setup {
                    transport,
                    source: "answering side never reported the link".into(),
                })?;
            let (paced, flood) = measure(
                Path::Link {
                    tx: offered.link.clone(),
                    rx: answered.link.clone(),
                },
                config,
            )
            .await;
            let kernel = KernelUdpCounters::read().since(&k0).rcvbuf_errors;
            rows.push(row(
                transport.name(),
                mode.name(),
                Some(setup),
                paced,
                flood,
                (config.packets, config.flood_packets),
                kernel,
            ));
            offered.link.close();
            let _ = tokio::time::timeout(Duration::from_secs(2), answered.link.closed()).await;
            let _ = client.delete(&offered.session_id).await;
        }
    }
    server.shutdown().await;

    let raw = rows[0].mbit_s;
    for r in rows.iter_mut() {
        r.vs_raw = (raw > 0.0).then(|| r.mbit_s / raw);
    }
    Ok(rows)
}

fn raw_pair() -> std::io::Result<(UdpSocket, UdpSocket)> {
    let a = bind_udp("127.0.0.1:0".parse().expect("addr"), DEFAULT_SOCKET_BUFFER)?;
    let b = bind_udp("127.0.0.1:0".parse().expect("addr"), DEFAULT_SOCKET_BUFFER)?;
    Ok((UdpSocket::from_std(a)?, UdpSocket::from_std(b)?))
}

/// The table `relay compare` prints.
pub fn table(rows: &[Row], config: &CompareConfig) -> String {
    let mut out = format!(
        "paced: {} x {} B at {} pps; flood: {} x {} B; loopback, one process\n\n",
        config.packets, config.size, config.rate, config.flood_packets, config.size
    );
    out += &format!(
        "{:<9} {:<11} {:>9} {:>10} {:>9} {:>9} {:>10} {:>8} {:>9} {:>8}\n",
        "transport",
        "mode",
        "setup ms",
        "delivered",
        "p50 ms",
        "p99 ms",
        "flood Mb/s",
        "x raw",
        "flood dlv",
        "k-drops"
    );
    for r in rows {
        out += &format!(
            "{:<9} {:<11} {:>9} {:>9.2}% {:>9.3} {:>9.3} {:>10.0} {:>8} {:>8.1}% {:>8}\n",
            r.transport,
            r.mode,
            r.setup_ms
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.delivered * 100.0,
            r.p50_ms,
            r.p99_ms,
            r.mbit_s,
            r.vs_raw.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
            r.flood_delivered * 100.0,
            r.kernel_drops,
        );
    }
    out += "\nflood: the sender sends as fast as it can, on the same cores as the receiver. flood dlv is the share\n\
            that arrived: an unreliable mode drops what cannot leave at once instead of slowing the sender,\n\
            so a low figure says the CPU was saturated, not that the path loses packets; compare p50/p99\n\
            at the paced rate for latency and flood Mb/s for throughput.\n";
    out += "k-drops: datagrams the kernel dropped for full socket buffers during the row (not the transport's loss).\n";
    out
}
