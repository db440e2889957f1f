//! The pipe against an in-memory link: keyframe requests at every link up,
//! owed until the feedback destination is known, and over the link after
//! an outage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use relay_core::{
    CloseReason, CloseSignal, LinkError, LinkStats, Mode, Packet, RelayLink, StatsRecorder, Transport,
    build_rtp,
};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};

use super::feedback::{KEYFRAME_REQUEST_MIN_INTERVAL, OUTAGE_GAP, summarize};
use super::*;

/// One end of an in-memory link.
#[derive(Debug)]
struct MemLink {
    tx: mpsc::UnboundedSender<Packet>,
    rx: Mutex<mpsc::UnboundedReceiver<Packet>>,
    close: CloseSignal,
    stats: StatsRecorder,
}

fn mem_pair() -> (Arc<MemLink>, Arc<MemLink>) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    let end = |tx, rx| {
        Arc::new(MemLink {
            tx,
            rx: Mutex::new(rx),
            close: CloseSignal::new(),
            stats: StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable),
        })
    };
    (end(a_tx, a_rx), end(b_tx, b_rx))
}

#[async_trait]
impl RelayLink for MemLink {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }
    fn mode(&self) -> Mode {
        Mode::Unreliable
    }
    fn max_packet_size(&self) -> usize {
        1500
    }
    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        if let Some(r) = self.close.reason() {
            return Err(LinkError::Closed(r));
        }
        self.tx
            .send(packet)
            .map_err(|_| LinkError::Closed(CloseReason::PeerClosed))
    }
    async fn recv(&self) -> Result<Packet, LinkError> {
        let mut rx = self.rx.lock().await;
        tokio::select! {
            p = rx.recv() => p.ok_or(LinkError::Closed(CloseReason::PeerClosed)),
            r = self.closed() => Err(LinkError::Closed(r)),
        }
    }
    fn stats(&self) -> LinkStats {
        self.stats.snapshot()
    }
    fn close(&self) {
        self.close.close(CloseReason::Local);
    }
    async fn closed(&self) -> CloseReason {
        let mut rx = self.close.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return CloseReason::Local;
            }
        }
    }
    fn close_reason(&self) -> Option<CloseReason> {
        self.close.reason()
    }
}

async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// The next keyframe request for `ssrc` on `socket` (bounded), with its
/// FIR sequence number.
async fn next_request(socket: &UdpSocket, ssrc: u32, within: Duration) -> Option<u8> {
    let mut buf = [0u8; 1500];
    tokio::time::timeout(within, async {
        loop {
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            if summarize(&buf[..n]).is_some_and(|s| s.keyframe_request && s.ssrcs.contains(&ssrc)) {
                // RR (8) + PLI (12) + FIR header (12) + FCI SSRC (4): the sequence.
                return buf[36];
            }
        }
    })
    .await
    .ok()
}

fn offer_pipe(spec: &str) -> (Pipe, Arc<PipeCounters>) {
    let counters = Arc::new(PipeCounters::default());
    let spec: StreamSpec = spec.parse().unwrap();
    let pipe = Pipe::bind(Side::Offer, &[spec], PipeOptions::default(), counters.clone()).unwrap();
    (pipe, counters)
}

#[tokio::test]
async fn every_new_link_asks_the_source_for_a_keyframe_with_a_new_fir_sequence() {
    let (pipe, counters) = offer_pipe("127.0.0.1:0");
    let input: SocketAddr = pipe.local_addrs()[0].0;
    let source = udp().await;
    // The source is live before any link: its stream is known, nothing asked.
    source
        .send_to(&build_rtp(96, 1, 0, 0x77, &[1; 100]), input)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counters.no_link.load(Ordering::Relaxed), 1);
    assert_eq!(counters.keyframe_requests.load(Ordering::Relaxed), 0);

    let (one, _far_one) = mem_pair();
    pipe.attach(one.clone());
    assert_eq!(next_request(&source, 0x77, Duration::from_secs(2)).await, Some(0));
    // A repeat attach of the same link is not a new link.
    pipe.attach(one.clone());
    one.close();
    pipe.carry(one).await;

    // A reconnect: the next link asks again, once the rate limit allows.
    tokio::time::sleep(KEYFRAME_REQUEST_MIN_INTERVAL).await;
    let (two, _far_two) = mem_pair();
    pipe.attach(two);
    assert_eq!(next_request(&source, 0x77, Duration::from_secs(2)).await, Some(1));
    assert_eq!(counters.keyframe_requests.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_request_is_owed_until_the_source_announces_its_rtcp_socket() {
    let (pipe, counters) = offer_pipe("127.0.0.1:0,rtcp=127.0.0.1:0");
    let (input, input_rtcp) = pipe.local_addrs()[0];
    let (link, far) = mem_pair();
    pipe.attach(link);
    let media = udp().await;
    media
        .send_to(&build_rtp(100, 1, 0, 0x55, &[1; 100]), input)
        .await
        .unwrap();
    // Relayed; but the source's feedback socket is not known yet.
    let relayed = tokio::time::timeout(Duration::from_secs(2), far.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relayed.ssrc(), 0x55);
    assert_eq!(counters.keyframe_requests.load(Ordering::Relaxed), 0);
    // Janus's announcement: header-only RTP from the forwarder's RTCP socket.
    let feedback = udp().await;
    feedback
        .send_to(&build_rtp(100, 0, 0, 0x55, &[]), input_rtcp.unwrap())
        .await
        .unwrap();
    assert_eq!(
        next_request(&feedback, 0x55, Duration::from_secs(2)).await,
        Some(0)
    );
    assert_eq!(
        counters.not_rtcp.load(Ordering::Relaxed),
        1,
        "the announcement is not relayed"
    );
    // The media socket got nothing: feedback goes to the RTCP socket.
    let mut buf = [0u8; 100];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), media.recv_from(&mut buf))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_video_stream_resuming_after_an_outage_asks_the_far_source_over_the_link() {
    let out = udp().await;
    let counters = Arc::new(PipeCounters::default());
    let spec = StreamSpec::muxed(out.local_addr().unwrap());
    let options = PipeOptions {
        clock_rates: [relay_core::ClockRate::new(111, 48_000).unwrap()]
            .into_iter()
            .collect(),
    };
    let pipe = Pipe::bind(Side::Answer, &[spec], options, counters.clone()).unwrap();
    let (link, far) = mem_pair();
    let carrying = tokio::spawn(async move { pipe.carry(link).await });
    let send =
        |pt: u8, seq: u16, ssrc: u32| far.send(Packet::parse(build_rtp(pt, seq, 0, ssrc, &[0; 50])).unwrap());
    send(96, 1, 0xA1).await.unwrap();
    send(111, 1, 0xA2).await.unwrap();
    send(96, 2, 0xA1).await.unwrap();
    tokio::time::sleep(OUTAGE_GAP + Duration::from_millis(100)).await;
    // Both resume; only the video stream (96: unknown rate, so video) asks.
    send(111, 2, 0xA2).await.unwrap();
    send(96, 3, 0xA1).await.unwrap();
    let request = tokio::time::timeout(Duration::from_secs(2), far.recv())
        .await
        .unwrap()
        .unwrap();
    let summary = summarize(request.bytes()).unwrap();
    assert!(
        summary.keyframe_request && summary.ssrcs.contains(&0xA1),
        "{summary:?}"
    );
    assert!(!summary.ssrcs.contains(&0xA2));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), far.recv())
            .await
            .is_err(),
        "one request, for video only"
    );
    assert_eq!(counters.keyframe_requests_to_link.load(Ordering::Relaxed), 1);
    assert_eq!(counters.to_local.load(Ordering::Relaxed), 5);
    far.close();
    carrying.abort();
}
