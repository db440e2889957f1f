//! The conformance suite: the [`RelayLink`] contract, checked the same way
//! against every backend.
//!
//! A backend's tests expand [`conformance_tests!`](crate::conformance_tests)
//! once per mode with a [`PairFactory`] (something that makes a connected
//! offerer/answerer pair on loopback): [`Loopback`] does it for any
//! [`Backend`].
//!
//! ```ignore
//! relay_core::conformance_tests!(unreliable, Loopback::<MyBackend>::default(), relay_core::Mode::Unreliable);
//! ```
//!
//! Each check panics with a message saying what broke. Every wait is bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{Answering, Backend, Offering};
use crate::{ClockRate, ClockRates, CloseReason, LinkError, Mode, Packet, RelayLink, build_rtp};

/// A link on its way to being ready.
pub type LinkFuture = Pin<Box<dyn Future<Output = Result<Box<dyn RelayLink>, String>> + Send>>;

/// Both ends of one link being established. Each future resolves the
/// moment its side is ready, independently of the other.
pub struct Connecting {
    /// The side that sent the offer.
    pub offerer: LinkFuture,
    /// The side that answered.
    pub answerer: LinkFuture,
}

impl Connecting {
    /// Boxes a backend's two setup futures (`connect` and `accept`, each
    /// resolving to that backend's link type or error).
    pub fn new<A, B, EA, EB>(
        offerer: impl Future<Output = Result<A, EA>> + Send + 'static,
        answerer: impl Future<Output = Result<B, EB>> + Send + 'static,
    ) -> Connecting
    where
        A: RelayLink + 'static,
        B: RelayLink + 'static,
        EA: std::fmt::Display,
        EB: std::fmt::Display,
    {
        Connecting {
            offerer: Box::pin(async move {
                offerer
                    .await
                    .map(|l| Box::new(l) as Box<dyn RelayLink>)
                    .map_err(|e| e.to_string())
            }),
            answerer: Box::pin(async move {
                answerer
                    .await
                    .map(|l| Box::new(l) as Box<dyn RelayLink>)
                    .map_err(|e| e.to_string())
            }),
        }
    }
}

/// Makes connected pairs of links on loopback for the suite.
#[async_trait]
pub trait PairFactory: Send + Sync {
    /// Starts establishing one link in `mode`: exchange the offer and answer
    /// in-process, return both sides' readiness futures.
    async fn connect(&self, mode: Mode) -> Connecting;
}

/// Loopback pairs of any [`Backend`]: both sides bound with the same
/// configuration, offer and answer exchanged in-process.
///
/// ```ignore
/// relay_core::conformance_tests!(srtp, Loopback::<rtp_udp_relay::RtpUdp>::default(), relay_core::Mode::Srtp);
/// ```
pub struct Loopback<B: Backend>(pub B::Config);

impl<B: Backend> Default for Loopback<B>
where
    B::Config: Default,
{
    fn default() -> Self {
        Loopback(B::Config::default())
    }
}

#[async_trait]
impl<B: Backend> PairFactory for Loopback<B> {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = B::Offerer::bind(self.0.clone(), mode)
            .await
            .expect("bind offerer");
        let answerer = B::Answerer::bind(self.0.clone(), mode, &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

/// Bound on every single wait in the suite.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {STEP_TIMEOUT:?}"),
    }
}

async fn ready(what: &str, fut: LinkFuture) -> Arc<dyn RelayLink> {
    match within(what, fut).await {
        Ok(l) => Arc::from(l),
        Err(e) => panic!("{what}: failed to establish: {e}"),
    }
}

/// Establishes one link: `(offerer, answerer)`.
pub async fn pair(factory: &dyn PairFactory, mode: Mode) -> (Arc<dyn RelayLink>, Arc<dyn RelayLink>) {
    let c = factory.connect(mode).await;
    let (a, b) = tokio::join!(ready("offerer", c.offerer), ready("answerer", c.answerer));
    assert_eq!(a.mode(), mode, "offerer mode");
    assert_eq!(b.mode(), mode, "answerer mode");
    (a, b)
}

/// A fixed byte pattern that payloads are cut from: copying a slice keeps
/// packet generation cheap even in debug builds, where a per-byte loop
/// dominated the paced check's CPU time.
fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..70_000u32).map(|i| i.wrapping_mul(31) as u8).collect())
}

/// An RTP packet whose payload says which packet it is: the number in the
/// first four bytes, then a pattern that starts at an offset depending on
/// the number, so a packet delivered in place of another is caught.
pub fn numbered(ssrc: u32, seq: u32, size: usize) -> Packet {
    let size = size.max(16);
    let mut payload = Vec::with_capacity(size - 12);
    payload.extend_from_slice(&seq.to_be_bytes());
    let start = (seq % 251) as usize;
    payload.extend_from_slice(&pattern()[start..start + size - 16]);
    Packet::parse(build_rtp(96, seq as u16, seq.wrapping_mul(90), ssrc, &payload)).expect("valid RTP")
}

/// The checks share the machine's two cores: a flood in one test must not
/// starve a paced run in another, so checks run one at a time within a test
/// binary (tokio's mutex works across the tests' separate runtimes).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the suite's lock for one check; public for the macro.
#[doc(hidden)]
pub async fn serialize() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn number_of(p: &Packet) -> u32 {
    let b = p.bytes();
    u32::from_be_bytes([b[12], b[13], b[14], b[15]])
}

async fn recv_one(what: &str, link: &dyn RelayLink) -> Packet {
    match within(what, link.recv()).await {
        Ok(p) => p,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Ready means ready: each side sends the instant its own future resolves,
/// and the other side receives it. Repeated `rounds` times.
pub async fn first_packet_not_lost(factory: &dyn PairFactory, mode: Mode, rounds: usize) {
    for round in 0..rounds {
        let c = factory.connect(mode).await;
        let send_at_once = |fut: LinkFuture, who: &'static str, ssrc: u32| {
            tokio::spawn(async move {
                let link = ready(who, fut).await;
                if let Err(e) = link.send(numbered(ssrc, 0, 200)).await {
                    panic!("{who}: first send failed: {e}");
                }
                link
            })
        };
        let a = send_at_once(c.offerer, "offerer", 0xA);
        let b = send_at_once(c.answerer, "answerer", 0xB);
        let (a, b) = (a.await.expect("offerer task"), b.await.expect("answerer task"));
        let at_a = recv_one(
            &format!("round {round}: offerer receiving the answerer's first packet"),
            &*a,
        )
        .await;
        let at_b = recv_one(
            &format!("round {round}: answerer receiving the offerer's first packet"),
            &*b,
        )
        .await;
        assert_eq!(at_a.ssrc(), 0xB, "round {round}");
        assert_eq!(at_b.ssrc(), 0xA, "round {round}");
        a.close();
        b.close();
    }
}

/// Packets of [`MIN_MAX_PACKET_SIZE`](crate::MIN_MAX_PACKET_SIZE) bytes pass
/// both ways, byte for byte.
pub async fn full_size_packets_pass_both_ways(factory: &dyn PairFactory, mode: Mode) {
    let (a, b) = pair(factory, mode).await;
    assert!(a.max_packet_size() >= crate::MIN_MAX_PACKET_SIZE);
    assert!(b.max_packet_size() >= crate::MIN_MAX_PACKET_SIZE);
    for (from, to, ssrc) in [(&a, &b, 1u32), (&b, &a, 2u32)] {
        // Paced lightly so unreliable modes on loopback have no excuse.
        let sent: Vec<Packet> = (0..50)
            .map(|i| numbered(ssrc, i, crate::MIN_MAX_PACKET_SIZE))
            .collect();
        for p in &sent {
            from.send(p.clone()).await.expect("send 1400 bytes");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let mut got = 0;
        while got < sent.len() {
            let want_at_least = if mode.is_reliable() { sent.len() } else { 45 };
            match tokio::time::timeout(Duration::from_secs(2), to.recv()).await {
                Ok(Ok(p)) => {
                    let n = number_of(&p) as usize;
                    assert_eq!(p.len(), crate::MIN_MAX_PACKET_SIZE);
                    assert_eq!(p.bytes(), sent[n].bytes(), "packet {n} changed in transit");
                    got += 1;
                }
                Ok(Err(e)) => panic!("receiving 1400-byte packets: {e}"),
                Err(_) if got >= want_at_least => break,
                Err(_) => panic!("only {got} of {} 1400-byte packets arrived", sent.len()),
            }
        }
    }
}

/// A packet over the link's maximum is refused with `TooLarge`, counted,
/// and the link keeps working.
pub async fn oversized_is_refused_and_nothing_stalls(factory: &dyn PairFactory, mode: Mode) {
    let (a, b) = pair(factory, mode).await;
    let max = a.max_packet_size();
    for size in [max + 1, 65_000] {
        let big = numbered(7, 1, size);
        match within("oversized send", a.send(big)).await {
            Err(LinkError::TooLarge { size: s, max: m }) => assert_eq!((s, m), (size, max)),
            other => panic!("{size}-byte packet: expected TooLarge, got {other:?}"),
        }
    }
    assert_eq!(a.stats().drops.too_large, 2);
    for i in 0..5 {
        a.send(numbered(7, i, 300)).await.expect("send after oversize");
    }
    let p = recv_one("a packet after the refused ones", &*b).await;
    assert_eq!(p.ssrc(), 7);
}

/// 10,000 packets paced at 10,000/s (80 Mbit/s) arrive (reliable: all, in order;
/// unreliable: at least 99%), and both sides' stats agree with what
/// happened.
pub async fn paced_packets_arrive_and_stats_match(factory: &dyn PairFactory, mode: Mode) {
    const N: u32 = 10_000;
    const SIZE: usize = 1_000;
    let (a, b) = pair(factory, mode).await;
    // Reverse direction at the same time: both directions are independent.
    let reverse = {
        let b = b.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                b.send(numbered(0xBB, i, 200)).await.expect("reverse send");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            // Ten packets every millisecond.
            for burst in 0..(N / 10) {
                tokio::time::sleep_until(start + Duration::from_millis(burst as u64)).await;
                for j in 0..10 {
                    a.send(numbered(0xAA, burst * 10 + j, SIZE))
                        .await
                        .expect("paced send");
                }
            }
        })
    };
    let mut got = 0u32;
    let mut next = 0u32;
    let mut from_b = 0;
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if got == N {
            break;
        }
        let quiet = if mode.is_reliable() {
            STEP_TIMEOUT
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(quiet, b.recv()).await {
            Ok(Ok(p)) => {
                let n = number_of(&p);
                if mode.is_reliable() {
                    assert_eq!(n, next, "reliable mode delivered out of order");
                }
                next = n + 1;
                got += 1;
            }
            Ok(Err(e)) => panic!("receiving paced packets after {got}: {e}"),
            Err(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "paced run took longer than {STEP_TIMEOUT:?}"
        );
    }
    sender.await.expect("sender");
    reverse.await.expect("reverse");
    while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(300), a.recv()).await {
        assert_eq!(p.ssrc(), 0xBB);
        from_b += 1;
    }
    if mode.is_reliable() {
        assert_eq!(got, N, "reliable mode lost packets");
        assert_eq!(from_b, 100, "reliable reverse direction lost packets");
    } else {
        assert!(
            got >= N * 99 / 100,
            "unreliable mode delivered {got} of {N} (< 99%) on clean loopback"
        );
        assert!(from_b >= 99, "reverse direction delivered {from_b} of 100");
    }

    let sa = a.stats();
    let sb = b.stats();
    assert_eq!(sa.packets_sent, N as u64, "offerer packets_sent");
    assert_eq!(sa.bytes_sent, N as u64 * SIZE as u64, "offerer bytes_sent");
    assert_eq!(sa.sent_ssrcs.len(), 1);
    assert_eq!(
        (sa.sent_ssrcs[0].ssrc, sa.sent_ssrcs[0].packets),
        (0xAA, N as u64)
    );
    assert_eq!(sb.packets_sent, 100);
    assert_eq!(
        sb.packets_received, got as u64,
        "answerer packets_received vs packets read"
    );
    assert_eq!(sb.bytes_received, got as u64 * SIZE as u64);
    let r = sb
        .received_ssrcs
        .iter()
        .find(|s| s.ssrc == 0xAA)
        .expect("per-SSRC stats for 0xAA");
    assert_eq!(r.packets, got as u64);
    assert_eq!(
        r.lost,
        (N - got) as i64 - (N as i64 - r.expected as i64),
        "RFC 3550 cumulative loss"
    );
    if mode.is_reliable() {
        assert_eq!((r.expected, r.lost), (N as u64, 0));
    }
    // Payload type 96 is dynamic and no rate is configured: jitter is
    // unknown, never computed at a guessed clock rate.
    assert_eq!(
        (r.clock_rate, r.jitter, r.jitter_seconds),
        (None, None, None),
        "jitter of an unconfigured dynamic payload type"
    );
    assert_eq!(sa.packets_received, from_b as u64);
    assert!(
        sa.setup_time.is_some() && sb.setup_time.is_some(),
        "setup time recorded"
    );
}

/// Unreliable: a flood into a receiver that does not read never blocks the
/// sender, and every packet the transport delivered is either still queued
/// (bounded) or counted as a receive-queue drop. Reliable: the sender is
/// held back instead, then everything arrives in order.
pub async fn flood_is_bounded(factory: &dyn PairFactory, mode: Mode) {
    let (a, b) = pair(factory, mode).await;
    if mode.is_reliable() {
        const N: u32 = 20_000;
        let sender = {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    a.send(numbered(1, i, 1_200)).await.expect("reliable send");
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !sender.is_finished(),
            "reliable sender pushed {N} x 1200 bytes into a receiver that does not read: no back-pressure"
        );
        for i in 0..N {
            let p = recv_one("reliable flood", &*b).await;
            assert_eq!(number_of(&p), i, "reliable flood out of order");
        }
        within("reliable sender finishing", sender)
            .await
            .expect("sender task");
        return;
    }

    const N: u32 = 100_000;
    let started = Instant::now();
    within("unreliable flood send loop (must never block)", async {
        for i in 0..N {
            a.send(numbered(1, i, 1_200)).await.expect("unreliable send");
        }
    })
    .await;
    let send_time = started.elapsed();
    // Let the transport settle: stop when the receiver's count stops moving.
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = b.stats().packets_received;
        if now == last {
            break;
        }
        last = now;
    }
    let mut queued = 0u64;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), b.recv()).await {
        queued += 1;
    }
    let sb = b.stats();
    let sa = a.stats();
    // Every packet offered either left, or was dropped for a full queue or
    // for waiting past the latency budget.
    assert_eq!(
        sa.packets_sent + sa.drops.send_queue_full + sa.drops.expired,
        N as u64,
        "sender accounting: {sa:?}"
    );
    assert_eq!(
        sb.packets_received,
        queued + sb.drops.receive_queue_full,
        "receiver: every delivered packet is either read ({queued}) or a counted drop ({})",
        sb.drops.receive_queue_full
    );
    assert!(
        queued < N as u64 / 4,
        "receive queue held {queued} packets: not bounded"
    );
    assert!(
        sb.drops.receive_queue_full > 0 || sb.packets_received < N as u64 / 2,
        "nothing dropped although the app never read"
    );
    tracing::info!(?send_time, queued, delivered = sb.packets_received, "flood");
}

/// Closing one end closes the other with a reason, and both refuse to send.
pub async fn close_reaches_the_peer(factory: &dyn PairFactory, mode: Mode) {
    let (a, b) = pair(factory, mode).await;
    a.send(numbered(3, 0, 100)).await.expect("send before close");
    recv_one("packet before close", &*b).await;
    a.close();
    assert_eq!(a.close_reason(), Some(CloseReason::Local));
    let reason = within("peer noticing the close", b.closed()).await;
    assert_eq!(reason, CloseReason::PeerClosed, "answerer's close reason");
    assert!(matches!(
        a.send(numbered(3, 1, 100)).await,
        Err(LinkError::Closed(_))
    ));
    assert!(matches!(
        b.send(numbered(3, 1, 100)).await,
        Err(LinkError::Closed(_))
    ));
    assert!(matches!(
        within("recv after close", b.recv()).await,
        Err(LinkError::Closed(_))
    ));
    // Idempotent.
    a.close();
    b.close();
    assert_eq!(a.close_reason(), Some(CloseReason::Local));
}

/// Batches keep order and boundaries: [`RelayLink::send_batch`] of runs
/// of equal sizes, shorter tails and lone odd sizes (what GSO-style
/// batching cuts into runs) arrives through [`RelayLink::recv_batch`]
/// packet for packet, byte for byte, in order (unreliable modes may lose
/// a few on loopback, never reorder or merge them). A batch stops at an
/// oversized packet: those before it are sent, it and the rest are
/// handed back, and it is counted.
pub async fn batches_keep_order_and_boundaries(factory: &dyn PairFactory, mode: Mode) {
    const ROUNDS: u32 = 40;
    let (a, b) = pair(factory, mode).await;
    let max = crate::MIN_MAX_PACKET_SIZE;
    let sizes = [
        1_200, 1_200, 1_200, 700, max, 64, 64, 64, 64, 16, 1_000, 999, 999, 1_200,
    ];
    let mut sent: Vec<Packet> = Vec::new();
    let mut batch = Vec::with_capacity(sizes.len());
    for round in 0..ROUNDS {
        for &size in &sizes {
            let p = numbered(0xBA7C, sent.len() as u32, size);
            sent.push(p.clone());
            batch.push(p);
        }
        within("send_batch", a.send_batch(&mut batch))
            .await
            .expect("send_batch");
        assert!(
            batch.is_empty(),
            "round {round}: send_batch left {} packets",
            batch.len()
        );
        // Paced lightly, so unreliable modes on loopback have no excuse.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got: Vec<Packet> = Vec::with_capacity(64);
    let mut seen = 0usize;
    let mut last: Option<u32> = None;
    loop {
        got.clear();
        let n = match tokio::time::timeout(Duration::from_secs(2), b.recv_batch(&mut got, 64)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("recv_batch after {seen} packets: {e}"),
            Err(_) => break,
        };
        assert!((1..=64).contains(&n), "recv_batch returned {n} for a limit of 64");
        assert_eq!(n, got.len(), "recv_batch's count and what it appended");
        for p in &got {
            let i = number_of(p);
            assert!(
                last.is_none_or(|l| i > l),
                "packet {i} after packet {last:?}: batches reordered"
            );
            if mode.is_reliable() {
                assert_eq!(
                    i,
                    last.map_or(0, |l| l + 1),
                    "reliable batches lost packet(s) before {i}"
                );
            }
            last = Some(i);
            let original = &sent[i as usize];
            assert_eq!(p.len(), original.len(), "packet {i}: boundaries moved");
            assert_eq!(p.bytes(), original.bytes(), "packet {i} changed in transit");
            seen += 1;
        }
        if seen == sent.len() {
            break;
        }
    }
    let want = if mode.is_reliable() {
        sent.len()
    } else {
        sent.len() * 9 / 10
    };
    assert!(seen >= want, "{seen} of {} batched packets arrived", sent.len());

    // An oversized packet in the middle: the two before it go, it and the
    // one after it come back, it first.
    let too_large = a.max_packet_size() + 1;
    let base = sent.len() as u32;
    let mut batch = vec![
        numbered(0xBA7C, base, 100),
        numbered(0xBA7C, base + 1, 100),
        numbered(0xBA7C, base + 2, too_large),
        numbered(0xBA7C, base + 3, 100),
    ];
    let drops_before = a.stats().drops.too_large;
    match within("send_batch with an oversized packet", a.send_batch(&mut batch)).await {
        Err(LinkError::TooLarge { size, .. }) => assert_eq!(size, too_large),
        other => panic!("a batch with a {too_large}-byte packet: expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        batch.len(),
        2,
        "the oversized packet and the one after it are handed back"
    );
    assert_eq!((number_of(&batch[0]), batch[0].len()), (base + 2, too_large));
    assert_eq!(number_of(&batch[1]), base + 3);
    assert_eq!(a.stats().drops.too_large, drops_before + 1);
    let mut numbers = Vec::new();
    while numbers.len() < 2 {
        got.clear();
        match tokio::time::timeout(Duration::from_secs(2), b.recv_batch(&mut got, 64)).await {
            Ok(Ok(_)) => numbers.extend(got.iter().map(number_of)),
            Ok(Err(e)) => panic!("recv_batch: {e}"),
            Err(_) if !mode.is_reliable() => break,
            Err(_) => panic!("the packets before the oversized one never arrived"),
        }
    }
    assert!(
        numbers.iter().all(|n| [base, base + 1].contains(n)),
        "{numbers:?}"
    );
}

/// A batch of one leaves at once and `recv_batch` returns it alone: no
/// backend holds a packet back waiting for a batch to fill, on either
/// side. Twenty ping-pongs of single-packet batches, each answered within
/// a bound far under any batching timer yet safe on a loaded machine.
pub async fn a_lone_packet_is_not_held(factory: &dyn PairFactory, mode: Mode) {
    const BOUND: Duration = Duration::from_millis(500);
    let (a, b) = pair(factory, mode).await;
    let mut batch = Vec::with_capacity(64);
    let mut got = Vec::with_capacity(64);
    for i in 0..20u32 {
        for (from, to) in [(&a, &b), (&b, &a)] {
            batch.push(numbered(0x1011E, i, 200));
            within("send_batch of one", from.send_batch(&mut batch))
                .await
                .expect("send_batch of one");
            got.clear();
            let started = Instant::now();
            // Unreliable modes may lose one on the way: then the next try.
            match tokio::time::timeout(BOUND, to.recv_batch(&mut got, 64)).await {
                Ok(Ok(n)) => {
                    assert_eq!(n, 1, "one packet sent, {n} received");
                    assert_eq!(number_of(&got[0]), i);
                }
                Ok(Err(e)) => panic!("recv_batch: {e}"),
                Err(_) if !mode.is_reliable() && i > 0 => continue,
                Err(_) => panic!(
                    "a lone packet was not delivered within {BOUND:?} (waited {:?}): held for a batch?",
                    started.elapsed()
                ),
            }
        }
    }
    // A limit of zero returns at once with nothing.
    let n = within("recv_batch with max 0", a.recv_batch(&mut got, 0)).await;
    assert!(matches!(n, Ok(0)), "recv_batch(max 0): {n:?}");
}

/// After close, `send_batch` refuses with `Closed` and hands every packet
/// back; `recv_batch` returns what was already received, then `Closed`,
/// on both ends.
pub async fn closed_link_refuses_batches(factory: &dyn PairFactory, mode: Mode) {
    let (a, b) = pair(factory, mode).await;
    let mut batch = vec![numbered(5, 0, 100)];
    a.send_batch(&mut batch).await.expect("send_batch before close");
    let mut got = Vec::new();
    within("recv_batch before close", b.recv_batch(&mut got, 8))
        .await
        .expect("recv_batch before close");
    a.close();
    within("peer noticing the close", b.closed()).await;
    for (link, side) in [(&a, "closing end"), (&b, "peer")] {
        let mut batch = vec![numbered(5, 1, 100), numbered(5, 2, 100)];
        match within("send_batch after close", link.send_batch(&mut batch)).await {
            Err(LinkError::Closed(_)) => {}
            other => panic!("{side}: send_batch after close: expected Closed, got {other:?}"),
        }
        assert_eq!(batch.len(), 2, "{side}: a closed link hands the batch back");
        let r = within("recv_batch after close", async {
            loop {
                got.clear();
                match link.recv_batch(&mut got, 8).await {
                    Ok(_) => continue,
                    Err(e) => return e,
                }
            }
        })
        .await;
        assert!(
            matches!(r, LinkError::Closed(_)),
            "{side}: recv_batch after close: {r:?}"
        );
    }
}

/// The clock rates [`configured_clock_rates_reach_the_stats`] expects both
/// ends to be configured with: Opus on payload type 111 at 48 kHz.
pub fn clock_rates() -> ClockRates {
    ClockRates::new().with(ClockRate::new(111, 48_000).expect("111=48000 is a valid clock rate"))
}

/// A backend applies its configured clock rates (see [`clock_rates`]) to
/// both ends' stats: payload type 111 gets jitter at 48 kHz, dynamic type
/// 100, which nobody configured, gets none. `factory` must configure both
/// ends with [`clock_rates`]; the suite's own factories need not.
pub async fn configured_clock_rates_reach_the_stats(factory: &dyn PairFactory, mode: Mode) {
    const OPUS: u32 = 0x0c10;
    const UNKNOWN: u32 = 0x0c20;
    let (a, b) = pair(factory, mode).await;
    for (from, to, side) in [(&a, &b, "answerer"), (&b, &a, "offerer")] {
        // 20 ms of Opus is 960 timestamp units; a few packets per stream,
        // since the first packet is never lost (see first_packet_not_lost).
        for seq in 0..3u16 {
            for (pt, ssrc) in [(111, OPUS), (100, UNKNOWN)] {
                let p = Packet::parse(build_rtp(pt, seq, u32::from(seq) * 960, ssrc, b"media"))
                    .expect("valid RTP");
                within("send", from.send(p)).await.expect("send");
            }
        }
        let mut seen = (false, false);
        while seen != (true, true) {
            let p = recv_one("packets of both streams", &**to).await;
            seen.0 |= p.ssrc() == OPUS;
            seen.1 |= p.ssrc() == UNKNOWN;
        }
        let stats = to.stats();
        let ssrc = |ssrc: u32| {
            *stats
                .received_ssrcs
                .iter()
                .find(|r| r.ssrc == ssrc)
                .unwrap_or_else(|| panic!("{side}: no stats for SSRC {ssrc:#x}: {stats:?}"))
        };
        let opus = ssrc(OPUS);
        assert_eq!(
            opus.clock_rate,
            Some(48_000),
            "{side}: configured rate not applied: {opus:?}"
        );
        assert!(
            opus.jitter_seconds.is_some_and(|j| j.is_finite() && j >= 0.0),
            "{side}: {opus:?}"
        );
        let unknown = ssrc(UNKNOWN);
        assert_eq!(
            (unknown.clock_rate, unknown.jitter, unknown.jitter_seconds),
            (None, None, None),
            "{side}: an unconfigured dynamic payload type has no jitter: {unknown:?}"
        );
    }
}

/// Expands to one `#[tokio::test]` per conformance check for one backend
/// and mode, in a module named `$name`.
///
/// `$factory` is an expression producing a [`PairFactory`]; it is evaluated
/// once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $factory:expr, $mode:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as c;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn first_packet_not_lost() {
                let _one_at_a_time = c::serialize().await;
                c::first_packet_not_lost(&$factory, $mode, 20).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn full_size_packets_pass_both_ways() {
                let _one_at_a_time = c::serialize().await;
                c::full_size_packets_pass_both_ways(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oversized_is_refused_and_nothing_stalls() {
                let _one_at_a_time = c::serialize().await;
                c::oversized_is_refused_and_nothing_stalls(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn paced_packets_arrive_and_stats_match() {
                let _one_at_a_time = c::serialize().await;
                c::paced_packets_arrive_and_stats_match(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flood_is_bounded() {
                let _one_at_a_time = c::serialize().await;
                c::flood_is_bounded(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn close_reaches_the_peer() {
                let _one_at_a_time = c::serialize().await;
                c::close_reaches_the_peer(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batches_keep_order_and_boundaries() {
                let _one_at_a_time = c::serialize().await;
                c::batches_keep_order_and_boundaries(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_lone_packet_is_not_held() {
                let _one_at_a_time = c::serialize().await;
                c::a_lone_packet_is_not_held(&$factory, $mode).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn closed_link_refuses_batches() {
                let _one_at_a_time = c::serialize().await;
                c::closed_link_refuses_batches(&$factory, $mode).await;
            }
        }
    };
}
