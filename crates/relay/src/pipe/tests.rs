//! The pipe against an in-memory link: keyframe requests at every link up,
//! owed until the feedback destination is known, and over the link after
//! an outage; a fanned-out pipe whose stalled link loses only its own
//! packets, and far keyframe requests merged.

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
    /// Sends wait until the link closes, as a reliable link to a receiver
    /// that stopped reading does.
    stalled: std::sync::atomic::AtomicBool,
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
            stalled: Default::default(),
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
        if self.stalled.load(Ordering::Relaxed) {
            return Err(LinkError::Closed(self.closed().await));
        }
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
        counters.keepalives.load(Ordering::Relaxed),
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

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 2 s: {what}");
}

#[tokio::test]
async fn a_stalled_branch_drops_its_oldest_and_never_holds_back_the_others() {
    let (pipe, totals) = offer_pipe("127.0.0.1:0");
    let input: SocketAddr = pipe.local_addrs()[0].0;
    let branches = pipe.fan_out(2);
    let (fast, fast_far) = mem_pair();
    let (stalled, _stalled_far) = mem_pair();
    stalled.stalled.store(true, Ordering::Relaxed);
    let carrying: Vec<_> = branches
        .iter()
        .cloned()
        .zip([fast.clone(), stalled.clone()])
        .map(|(branch, link)| {
            let link: Arc<dyn RelayLink> = link;
            tokio::spawn(async move { branch.carry(link).await })
        })
        .collect();
    eventually("both branches up", || branches.iter().all(|b| b.queue().is_up())).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let source = udp().await;
    let total = BRANCH_QUEUE_PACKETS as u16 + 300;
    for seq in 0..total {
        source
            .send_to(&build_rtp(96, seq, 0, 0x42, &[0; 100]), input)
            .await
            .unwrap();
        if seq % 64 == 0 {
            // Let the pipe read: the test's socket is faster than its buffer.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // The fast branch gets everything, in order.
    for seq in 0..total {
        let p = tokio::time::timeout(Duration::from_secs(2), fast_far.recv())
            .await
            .expect("the fast branch is not held back")
            .unwrap();
        assert_eq!(p.sequence_number(), Some(seq));
    }
    let (fast_counts, stalled_counts) = (branches[0].counters(), branches[1].counters());
    assert_eq!(fast_counts.to_link.load(Ordering::Relaxed), u64::from(total));
    // The stalled one holds one packet in its send and a full queue; the
    // rest went out oldest first, counted.
    let overflow = u64::from(total) - 1 - BRANCH_QUEUE_PACKETS as u64;
    eventually("the stalled branch's overflow is counted", || {
        stalled_counts.queue_overflow.load(Ordering::Relaxed) == overflow
    })
    .await;
    assert_eq!(branches[1].queued(), BRANCH_QUEUE_PACKETS);
    assert_eq!(fast_counts.queue_overflow.load(Ordering::Relaxed), 0);
    // Its link dies: what it still held is counted as missed, and from now
    // on so is every new packet, on that branch only.
    stalled.close();
    eventually("the dead branch's queue is flushed", || {
        stalled_counts.no_link.load(Ordering::Relaxed) == BRANCH_QUEUE_PACKETS as u64 + 1
    })
    .await;
    source
        .send_to(&build_rtp(96, total, 0, 0x42, &[0; 100]), input)
        .await
        .unwrap();
    assert!(fast_far.recv().await.is_ok());
    eventually("a packet with the branch down is counted", || {
        stalled_counts.no_link.load(Ordering::Relaxed) == BRANCH_QUEUE_PACKETS as u64 + 2
    })
    .await;
    // The branches' counts add up in the pipe's.
    assert_eq!(totals.to_link.load(Ordering::Relaxed), u64::from(total) + 1);
    assert_eq!(totals.queue_overflow.load(Ordering::Relaxed), overflow);
    fast.close();
    for c in carrying {
        tokio::time::timeout(Duration::from_secs(2), c)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn far_keyframe_requests_are_merged_across_branches_but_reports_pass() {
    let (pipe, totals) = offer_pipe("127.0.0.1:0");
    let input: SocketAddr = pipe.local_addrs()[0].0;
    let branches = pipe.fan_out(2);
    let links: Vec<_> = (0..2).map(|_| mem_pair()).collect();
    for (branch, (link, _)) in branches.iter().zip(&links) {
        let (branch, link): (_, Arc<dyn RelayLink>) = (branch.clone(), link.clone());
        tokio::spawn(async move { branch.carry(link).await });
    }
    let source = udp().await;
    source
        .send_to(&build_rtp(96, 1, 0, 0x42, &[0; 100]), input)
        .await
        .unwrap();
    // The relay's own request for the new stream.
    assert_eq!(next_request(&source, 0x42, Duration::from_secs(2)).await, Some(0));
    // Within its interval, both far receivers ask too: merged into it.
    let feedback = |receiver: u32| {
        let packets: [Box<dyn rtc_rtcp::packet::Packet>; 2] = [
            Box::new(rtc_rtcp::receiver_report::ReceiverReport {
                ssrc: receiver,
                reports: Vec::new(),
                profile_extensions: Bytes::new(),
            }),
            Box::new(
                rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                    sender_ssrc: receiver,
                    media_ssrc: 0x42,
                },
            ),
        ];
        Packet::parse(rtc_rtcp::packet::marshal(&packets).unwrap().freeze()).unwrap()
    };
    for (i, (_, far)) in links.iter().enumerate() {
        far.send(feedback(0xA0 + i as u32)).await.unwrap();
    }
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), source.recv_from(&mut buf))
            .await
            .expect("each receiver's report reaches the source")
            .unwrap();
        let s = summarize(&buf[..n]).unwrap();
        assert!(!s.keyframe_request, "merged: {s:?}");
        assert_eq!(n, 8, "the RR alone");
    }
    assert_eq!(totals.keyframe_requests_merged.load(Ordering::Relaxed), 2);
    // Once the interval has passed, the next receiver's request goes through.
    tokio::time::sleep(KEYFRAME_REQUEST_MIN_INTERVAL).await;
    links[1].1.send(feedback(0xA1)).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), source.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(summarize(&buf[..n]).unwrap().keyframe_request);
    assert_eq!(
        branches[1]
            .counters()
            .keyframe_requests_relayed
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(totals.keyframe_requests_relayed.load(Ordering::Relaxed), 1);
}

/// The next packet `link` receives (bounded).
async fn next(link: &MemLink) -> Packet {
    tokio::time::timeout(Duration::from_secs(2), link.recv())
        .await
        .expect("a packet within 2 s")
        .unwrap()
}

/// The media SSRC of a [`report_about`].
fn about(report: &Packet) -> u32 {
    u32::from_be_bytes(report.bytes()[8..12].try_into().unwrap())
}

/// An empty RR from `sender` about `media` (a receiver's report).
fn report_about(sender: u32, media: u32) -> Packet {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    Packet::parse(Bytes::from(p)).unwrap()
}

#[tokio::test]
async fn a_node_passes_each_session_down_and_feedback_up_the_session_that_brings_its_stream() {
    // Two answered sessions feed one forwarding pipe with one downstream link.
    let forwarding = Pipe::forwarding(PipeOptions::default(), Arc::new(PipeCounters::default()));
    let (down, leaf) = mem_pair();
    let (up_one, source_one) = mem_pair();
    let (up_two, source_two) = mem_pair();
    let answering = |up: &Arc<MemLink>, session| {
        Pipe::bind(
            Side::Answer,
            &[],
            PipeOptions::default(),
            Arc::new(PipeCounters::default()),
        )
        .unwrap()
        .with_forward(forwarding.feed(session, up.clone()))
    };
    let (one, two) = (answering(&up_one, 1), answering(&up_two, 2));
    assert_eq!(forwarding.upstream_sessions(), 2);
    let carrying = async {
        tokio::join!(
            forwarding.carry(down.clone()),
            one.carry(up_one.clone()),
            two.carry(up_two.clone())
        )
    };
    let test = async {
        // Media of each session arrives below, unchanged.
        source_one
            .send(Packet::parse(build_rtp(96, 7, 0, 0xA1, &[1; 50])).unwrap())
            .await
            .unwrap();
        source_two
            .send(Packet::parse(build_rtp(96, 9, 0, 0xB2, &[2; 50])).unwrap())
            .await
            .unwrap();
        let mut below = Vec::new();
        for _ in 0..2 {
            let p = tokio::time::timeout(Duration::from_secs(2), leaf.recv())
                .await
                .unwrap()
                .unwrap();
            below.push((p.ssrc(), p.sequence_number()));
        }
        below.sort();
        assert_eq!(below, [(0xA1, Some(7)), (0xB2, Some(9))]);
        // A report about each stream goes up the session that brings it.
        leaf.send(report_about(0x10, 0xB2)).await.unwrap();
        leaf.send(report_about(0x10, 0xA1)).await.unwrap();
        // Each stream appeared with a link below up: its source was asked
        // for a keyframe, through its own session, before the report came.
        for (source, media) in [(&source_two, 0xB2), (&source_one, 0xA1)] {
            let request = next(source).await;
            assert!(
                summarize(request.bytes()).is_some_and(|s| s.keyframe_request && s.ssrcs.contains(&media))
            );
            assert_eq!(about(&next(source).await), media);
        }
        // Session two ends: feedback about its stream goes to the one left.
        up_two.close();
        eventually("session two leaves", || forwarding.upstream_sessions() == 1).await;
        leaf.send(report_about(0x10, 0xB2)).await.unwrap();
        assert_eq!(about(&next(&source_one).await), 0xB2);
        down.close();
        up_one.close();
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(carrying, test) })
        .await
        .expect("the node's pipes end when their links close");
}
