//! The repair loop between two [`RepairLink`]s over an in-memory link pair
//! that loses exactly the packets a test scripts: what is repaired, what
//! is given up, what passes through untouched, and what a greedy peer gets.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use relay_core::{
    CloseReason, CloseSignal, LinkError, LinkStats, Mode, Overflow, Packet, PacketKind, PacketQueue,
    RelayLink, Transport, build_rtp,
};
use relay_repair::wire::{HOP_SSRC, build_nacks};
use relay_repair::{RepairConfig, RepairLink};

/// Decides, per packet, whether the path loses it.
type Loss = Box<dyn Fn(&Packet) -> bool + Send + Sync>;

/// One end of an in-memory unreliable link: `send` goes to the peer's
/// queue after `delay`, unless `loss` says the path drops it.
struct MemEnd {
    to_peer: Arc<PacketQueue>,
    inbox: Arc<PacketQueue>,
    loss: Loss,
    delay: Duration,
    sent: AtomicU64,
    close: CloseSignal,
    rtt: Duration,
    /// Whether the end has the synchronous fast paths (`try_send`,
    /// `try_recv`) as rtp-udp does; the repair loop must work either way.
    fast: bool,
    /// Resends by number from its own copy, as an SRTP link does.
    by_number: bool,
}

impl fmt::Debug for MemEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemEnd")
    }
}

fn pair(loss_ab: Loss, loss_ba: Loss, one_way: Duration) -> (Arc<MemEnd>, Arc<MemEnd>) {
    pair_with(false, loss_ab, loss_ba, one_way)
}

fn pair_with(fast: bool, loss_ab: Loss, loss_ba: Loss, one_way: Duration) -> (Arc<MemEnd>, Arc<MemEnd>) {
    let a_in = Arc::new(PacketQueue::new(100_000, Overflow::DropOldest));
    let b_in = Arc::new(PacketQueue::new(100_000, Overflow::DropOldest));
    let end = |to_peer, inbox, loss| {
        Arc::new(MemEnd {
            to_peer,
            inbox,
            loss,
            delay: one_way,
            sent: AtomicU64::new(0),
            close: CloseSignal::new(),
            rtt: 2 * one_way,
            fast,
            by_number: false,
        })
    };
    (end(b_in.clone(), a_in.clone(), loss_ab), end(a_in, b_in, loss_ba))
}

#[async_trait]
impl RelayLink for MemEnd {
    fn transport(&self) -> Transport {
        Transport::RtpUdp
    }
    fn mode(&self) -> Mode {
        Mode::Unreliable
    }
    fn max_packet_size(&self) -> usize {
        1_400
    }
    async fn send(&self, packet: Packet) -> Result<(), LinkError> {
        self.put(packet)
    }
    fn try_send(&self, packet: Packet) -> Result<Result<(), LinkError>, Packet> {
        if self.fast {
            Ok(self.put(packet))
        } else {
            Err(packet)
        }
    }
    fn resends_by_number(&self) -> bool {
        self.by_number
    }
    fn try_recv(&self) -> Option<Packet> {
        self.fast.then(|| self.inbox.try_pop()).flatten()
    }
    async fn recv(&self) -> Result<Packet, LinkError> {
        self.inbox.pop().await.map_err(LinkError::Closed)
    }
    fn stats(&self) -> LinkStats {
        let mut s = relay_core::StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).snapshot();
        s.rtt = Some(self.rtt);
        s.packets_sent = self.sent.load(Ordering::Relaxed);
        s
    }
    fn close(&self) {
        self.close.close(CloseReason::Local);
        self.inbox.close(CloseReason::Local);
    }
    async fn closed(&self) -> CloseReason {
        self.close.wait().await
    }
    fn close_reason(&self) -> Option<CloseReason> {
        self.close.reason()
    }
}

impl MemEnd {
    fn put(&self, packet: Packet) -> Result<(), LinkError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if (self.loss)(&packet) {
            return Ok(());
        }
        let to = self.to_peer.clone();
        let delay = self.delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            to.push(packet);
        });
        Ok(())
    }
}

fn rtp(ssrc: u32, seq: u16) -> Packet {
    Packet::parse(build_rtp(96, seq, 0, ssrc, &[seq as u8; 1_000])).unwrap()
}

fn is_rtp_seq(p: &Packet, pick: impl Fn(u16) -> bool) -> bool {
    p.kind() == PacketKind::Rtp && p.sequence_number().is_some_and(pick)
}

/// Every packet that reaches the application of `link` within `quiet`.
async fn drain(link: &RepairLink, quiet: Duration) -> Vec<Packet> {
    let mut got = Vec::new();
    while let Ok(Ok(p)) = tokio::time::timeout(quiet, link.recv()).await {
        got.push(p);
    }
    got
}

fn config(budget_ms: u64) -> RepairConfig {
    RepairConfig {
        budget: Duration::from_millis(budget_ms),
        ..RepairConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn every_lost_packet_is_repaired_once_and_nacks_stay_on_the_hop() {
    repaired_once(false).await;
}

#[tokio::test(start_paused = true)]
async fn every_lost_packet_is_repaired_once_over_a_link_with_fast_paths() {
    repaired_once(true).await;
}

async fn repaired_once(fast: bool) {
    // The first copy of every tenth packet is lost on the way.
    let lost_once = Arc::new(Mutex::new(HashSet::new()));
    let l = lost_once.clone();
    let (a, b) = pair_with(
        fast,
        Box::new(move |p| is_rtp_seq(p, |s| s % 10 == 5) && l.lock().unwrap().insert(p.sequence_number())),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let sender = RepairLink::new(a, Mode::Repair, config(200));
    let receiver = RepairLink::new(b, Mode::Repair, config(200));
    for seq in 0..1_000u16 {
        sender.send(rtp(7, seq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = drain(&receiver, Duration::from_millis(500)).await;
    let seqs: Vec<u16> = got.iter().filter_map(Packet::sequence_number).collect();
    assert!(
        got.iter().all(|p| p.kind() == PacketKind::Rtp),
        "no hop NACK reached the application"
    );
    let unique: HashSet<u16> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), 1_000, "each packet once");
    assert_eq!(unique.len(), 1_000);
    let rx = receiver.stats().repair.unwrap();
    let tx = sender.stats().repair.unwrap();
    assert_eq!(rx.repaired, 100, "{rx:?}");
    // The one duplicate is the tail probe: the last packet, sent again
    // once the stream went quiet, had arrived the first time.
    assert_eq!(tx.tail_probes, 1, "{tx:?}");
    assert_eq!(
        (rx.unrepairable, rx.duplicates, rx.repaired_too_late),
        (0, 1, 0),
        "{rx:?}"
    );
    assert_eq!(tx.retransmissions, 100 + 1, "{tx:?}");
    assert_eq!(tx.nacks_received, rx.nacks_sent);
    assert_eq!(receiver.stats().mode, Mode::Repair);
}

#[tokio::test(start_paused = true)]
async fn a_loss_just_before_the_stream_goes_quiet_is_repaired_through_the_tail_probe() {
    // The first copies of the last three packets are lost, and nothing
    // follows them: no later packet shows the gap.
    let lost_once = Arc::new(Mutex::new(HashSet::new()));
    let l = lost_once.clone();
    let (a, b) = pair(
        Box::new(move |p| is_rtp_seq(p, |s| s >= 97) && l.lock().unwrap().insert(p.sequence_number())),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let sender = RepairLink::new(a, Mode::Repair, config(200));
    let receiver = RepairLink::new(b, Mode::Repair, config(200));
    let t0 = tokio::time::Instant::now();
    for seq in 0..100u16 {
        sender.send(rtp(7, seq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = Vec::new();
    while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await {
        got.push((p.sequence_number().unwrap(), t0.elapsed()));
    }
    let seqs: HashSet<u16> = got.iter().map(|(seq, _)| *seq).collect();
    assert_eq!((got.len(), seqs.len()), (100, 100), "each packet once: {got:?}");
    // Packet n left at n ms. The probe (packet 99 again) leaves 100 ms
    // (half the budget) after it, shows 97 and 98 missing on arrival, and
    // their repairs take one more RTT: all within the 200 ms budget.
    for (seq, at) in &got {
        let age = at.saturating_sub(Duration::from_millis(u64::from(*seq)));
        assert!(
            age < Duration::from_millis(200),
            "packet {seq} delivered {age:?} after it was sent"
        );
    }
    let tail: Vec<_> = got.iter().filter(|(seq, _)| *seq >= 97).collect();
    assert!(
        tail.iter().all(|(_, at)| *at >= Duration::from_millis(199)),
        "the tail came after the probe: {tail:?}"
    );
    let (rx, tx) = (receiver.stats().repair.unwrap(), sender.stats().repair.unwrap());
    assert_eq!(tx.tail_probes, 1, "{tx:?}");
    assert_eq!((rx.repaired, rx.unrepairable, rx.duplicates), (2, 0, 0), "{rx:?}");
    // The probe (99) and the two repairs (97, 98).
    assert_eq!(tx.retransmissions, 3, "{tx:?}");
}

#[tokio::test(start_paused = true)]
async fn a_link_that_resends_by_number_sends_no_tail_probe() {
    // As over SRTP: a second copy of a packet the peer has is a replay to
    // it. The stream stops; nothing is sent again.
    let (a, b) = pair(
        Box::new(|_| false),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let by_number = |end: Arc<MemEnd>| {
        let mut end = Arc::into_inner(end).expect("only reference");
        end.by_number = true;
        Arc::new(end)
    };
    let (a, b) = (by_number(a), by_number(b));
    let sent = a.clone();
    let sender = RepairLink::new(a, Mode::SrtpRepair, config(200));
    let receiver = RepairLink::new(b, Mode::SrtpRepair, config(200));
    for seq in 0..10u16 {
        sender.send(rtp(7, seq)).await.unwrap();
    }
    let got = drain(&receiver, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 10);
    assert_eq!(sender.stats().repair.unwrap().tail_probes, 0);
    assert_eq!(
        sent.sent.load(Ordering::Relaxed),
        10,
        "nothing sent but the stream"
    );
    assert_eq!(receiver.stats().repair.unwrap().duplicates, 0);
}

#[tokio::test(start_paused = true)]
async fn repair_works_whether_the_application_or_the_driver_reads() {
    both_readers(false).await;
}

#[tokio::test(start_paused = true)]
async fn repair_works_whether_the_application_or_the_driver_reads_with_fast_paths() {
    both_readers(true).await;
}

async fn both_readers(fast: bool) {
    // The receiving application reads all along (each packet is judged in
    // its own recv call); the sending one read once and then only sends
    // (the driver takes over answering NACKs).
    let lost_once = Arc::new(Mutex::new(HashSet::new()));
    let l = lost_once.clone();
    let (a, b) = pair_with(
        fast,
        Box::new(move |p| is_rtp_seq(p, |s| s % 10 == 5) && l.lock().unwrap().insert(p.sequence_number())),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let sender = RepairLink::new(a, Mode::Repair, config(200));
    let receiver = Arc::new(RepairLink::new(b, Mode::Repair, config(200)));
    let reader = {
        let receiver = receiver.clone();
        tokio::spawn(async move { drain(&receiver, Duration::from_millis(500)).await })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(5), sender.recv())
            .await
            .is_err()
    );
    for seq in 0..1_000u16 {
        sender.send(rtp(7, seq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = reader.await.unwrap();
    let unique: HashSet<u16> = got.iter().filter_map(Packet::sequence_number).collect();
    assert_eq!((got.len(), unique.len()), (1_000, 1_000), "each packet once");
    let rx = receiver.stats().repair.unwrap();
    // The duplicate: the tail probe of the last packet, which had arrived.
    assert_eq!(
        (rx.repaired, rx.unrepairable, rx.duplicates),
        (100, 0, 1),
        "{rx:?}"
    );
    assert_eq!(sender.stats().repair.unwrap().retransmissions, 100 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_packet_that_cannot_be_repaired_in_time_is_given_up_and_never_delivered_late() {
    // Packet 50 and every copy of it are lost until 300 ms in; the budget
    // is 200 ms, so whatever copy arrives after is dropped, not delivered.
    let start = tokio::time::Instant::now();
    let (a, b) = pair(
        Box::new(move |p| is_rtp_seq(p, |s| s == 50) && start.elapsed() < Duration::from_millis(300)),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let sender = RepairLink::new(a, Mode::Repair, config(200));
    let receiver = RepairLink::new(b, Mode::Repair, config(200));
    for seq in 0..100u16 {
        sender.send(rtp(7, seq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = drain(&receiver, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 99);
    assert!(got.iter().all(|p| p.sequence_number() != Some(50)));
    let rx = receiver.stats().repair.unwrap();
    assert_eq!(rx.unrepairable, 1, "{rx:?}");
    assert!(rx.packets_asked >= 2, "asked again after an RTT: {rx:?}");
    assert!(rx.packets_asked <= 3, "never more than three times: {rx:?}");
}

#[tokio::test(start_paused = true)]
async fn media_servers_rtcp_passes_through_both_ways() {
    let (a, b) = pair(
        Box::new(|_| false),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let left = RepairLink::new(a, Mode::Repair, config(200));
    let right = RepairLink::new(b, Mode::Repair, config(200));
    // A viewer's NACK for stream 7, from its own SSRC, and a PLI.
    let sfu_nack = build_nacks(&[(7, vec![3])]).remove(0);
    let mut sfu_nack = sfu_nack.to_vec();
    sfu_nack[4..8].copy_from_slice(&0xABCD_0001u32.to_be_bytes());
    let pli = Bytes::from_static(&[0x81, 206, 0, 2, 0xAB, 0xCD, 0, 1, 0, 0, 0, 7]);
    right
        .send(Packet::parse(Bytes::from(sfu_nack.clone())).unwrap())
        .await
        .unwrap();
    right.send(Packet::parse(pli.clone()).unwrap()).await.unwrap();
    let got = drain(&left, Duration::from_millis(200)).await;
    let bytes: Vec<&[u8]> = got.iter().map(|p| &p.bytes()[..]).collect();
    assert_eq!(bytes, vec![&sfu_nack[..], &pli[..]]);
    assert_eq!(left.stats().repair.unwrap().nacks_received, 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_asking_for_everything_gets_at_most_a_share_of_the_media_again() {
    let (a, b) = pair(
        Box::new(|_| false),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let sender = RepairLink::new(a.clone(), Mode::Repair, config(10_000));
    // The peer is not a relay: its raw end sends NACKs for all 1,000
    // packets, five times over.
    for seq in 0..1_000u16 {
        sender.send(rtp(9, seq)).await.unwrap();
    }
    let all: Vec<u16> = (0..1_000).collect();
    for _ in 0..5 {
        for nack in build_nacks(&[(9, all.clone())]) {
            b.send(Packet::parse(nack).unwrap()).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tx = sender.stats().repair.unwrap();
    assert_eq!(tx.packets_requested, 5_000);
    // 1 MB of media earns at most a quarter of itself again, beyond the
    // starting credit of one keyframe.
    let media = 1_000 * 1_012;
    assert!(tx.retransmitted_bytes <= 48_000 + media / 4, "{tx:?}");
    assert!(tx.retransmissions_capped >= 4_000, "{tx:?}");
    assert_eq!(a.sent.load(Ordering::Relaxed), 1_000 + tx.retransmissions);
    assert_eq!(HOP_SSRC, 0x5250_4152);
}

/// With a reorder window the repaired packets take their place: the
/// application sees 0..1,000 in order, and a gap that is never repaired
/// holds what follows it for the window only, then is skipped.
#[tokio::test(start_paused = true)]
async fn a_reorder_window_delivers_in_order_and_skips_a_gap_after_the_window() {
    let lost_once = Arc::new(Mutex::new(HashSet::new()));
    let l = lost_once.clone();
    let (a, b) = pair(
        // The first copy of every tenth packet is lost, and 500 always.
        Box::new(move |p| {
            is_rtp_seq(p, |s| s == 500)
                || (is_rtp_seq(p, |s| s % 10 == 5) && l.lock().unwrap().insert(p.sequence_number()))
        }),
        Box::new(|_| false),
        Duration::from_millis(20),
    );
    let window = Duration::from_millis(80);
    let sender = RepairLink::new(a, Mode::Repair, config(200));
    let receiver = RepairLink::new(
        b,
        Mode::Repair,
        RepairConfig {
            reorder_window: window,
            ..config(200)
        },
    );
    let start = tokio::time::Instant::now();
    let receiving = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await {
            got.push((p.sequence_number().unwrap(), start.elapsed()));
        }
        got
    });
    for seq in 0..1_000u16 {
        sender.send(rtp(7, seq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = receiving.await.unwrap();
    let seqs: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u16> = (0..1_000).filter(|s| *s != 500).collect();
    assert_eq!(seqs, expected, "in order, each once, 500 skipped");
    // 501 was sent at ~501 ms and arrived 20 ms later; it waited behind
    // 500 for the window (plus at most one 5 ms tick), no longer.
    let (_, at) = got.iter().find(|(s, _)| *s == 501).unwrap();
    let waited = at.saturating_sub(Duration::from_millis(521));
    assert!(
        waited >= window && waited <= window + Duration::from_millis(10),
        "501 waited {waited:?}"
    );
}
