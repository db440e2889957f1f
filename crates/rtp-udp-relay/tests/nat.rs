//! The offering relay behind a NAT: its packets reach the answerer from the
//! NAT's address, not the one it signaled, and the NAT may change that
//! address mid-stream (a rebinding). A small userspace NAT in the test
//! plays the router: the offerer sends to the NAT's inside socket, which
//! forwards from its outside socket; a rebinding swaps the outside socket
//! for a new one.
//!
//! - srtp latches to the first authenticated packet's source and re-latches
//!   after a rebinding, losing only what was in flight;
//! - plain RTP filters strictly on the signaled address unless `latch` is
//!   set, and with it latches once and never again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use relay_core::{Mode, Packet, RelayLink, build_rtp};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpLink, RtpUdpOfferer};
use tokio::net::UdpSocket;
use tokio::sync::watch;

const BOUND: Duration = Duration::from_secs(10);

/// A one-mapping NAT: `inside` faces the offerer, the current outside
/// socket faces the answerer. `rebind()` moves the mapping to a new
/// outside port; the old one stops forwarding.
struct Nat {
    inside: SocketAddr,
    outside: watch::Sender<Arc<UdpSocket>>,
    rebinds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Nat {
    async fn start(answerer: SocketAddr) -> Nat {
        let inside = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let first = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (outside, mut current) = watch::channel(first);
        let addr = inside.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut offerer: Option<SocketAddr> = None;
            let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
            loop {
                let out = current.borrow_and_update().clone();
                // A rebinding first: once `rebind()` has returned, no packet
                // may leave from the old mapping (without `biased`, a packet
                // already waiting could win the race and leave from it).
                tokio::select! {
                    biased;
                    changed = current.changed() => if changed.is_err() { return },
                    r = inside.recv_from(&mut a) => if let Ok((n, from)) = r {
                        offerer = Some(from);
                        let _ = out.send_to(&a[..n], answerer).await;
                    },
                    r = out.recv_from(&mut b) => if let (Ok((n, _)), Some(to)) = (r, offerer) {
                        let _ = inside.send_to(&b[..n], to).await;
                    },
                }
            }
        });
        Nat {
            inside: addr,
            outside,
            rebinds: Arc::new(AtomicU64::new(0)),
            task,
        }
    }

    fn outside_addr(&self) -> SocketAddr {
        self.outside.borrow().local_addr().unwrap()
    }

    async fn rebind(&self) {
        let fresh = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        self.outside.send_replace(fresh);
        self.rebinds.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An offerer behind `Nat`, and the answerer it reaches through it.
async fn behind_nat(
    mode: Mode,
    answer_config: RtpUdpConfig,
) -> Result<(RtpUdpLink, RtpUdpLink, Nat), String> {
    let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), mode).await.unwrap();
    // The offerer's own address is private: what the answerer sends there
    // goes nowhere (here: to a socket nobody reads).
    let mut offer = offerer.offer();
    let private = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    offer.addr = private.local_addr().unwrap();
    let answerer = RtpUdpAnswerer::bind(answer_config, mode, &offer).await.unwrap();
    let mut answer = answerer.answer();
    let nat = Nat::start(answer.addr).await;
    // The offerer reaches the answerer only through the NAT.
    answer.addr = nat.inside;
    let setup = async { tokio::try_join!(offerer.connect(&answer), answerer.accept()) };
    let result = tokio::time::timeout(Duration::from_secs(3), setup).await;
    drop(private);
    match result {
        Ok(Ok((a, b))) => Ok((a, b, nat)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no link within 3 s".into()),
    }
}

/// Sends `n` packets from `from` (1 ms apart) and counts what `to` gets.
async fn stream(from: &RtpUdpLink, to: &RtpUdpLink, first_seq: u16, n: u16) -> usize {
    for seq in first_seq..first_seq + n {
        from.send(Packet::parse(build_rtp(96, seq, 0, 0xA, b"media")).unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), to.recv()).await {
        got += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_latches_through_a_nat_and_survives_a_rebinding() {
    let (a, b, nat) = tokio::time::timeout(BOUND, behind_nat(Mode::Srtp, RtpUdpConfig::default()))
        .await
        .unwrap()
        .expect("srtp connects through the NAT");
    assert_eq!(
        b.peer_addr(),
        nat.outside_addr(),
        "the answerer latched to the NAT's mapping"
    );
    assert_eq!(stream(&a, &b, 0, 200).await, 200);
    assert_eq!(
        stream(&b, &a, 0, 200).await,
        200,
        "the way back goes to the mapping"
    );

    nat.rebind().await;
    // The offerer's next packets come from the new mapping: the first one
    // that authenticates moves the answerer there.
    assert!(
        stream(&a, &b, 200, 200).await >= 195,
        "at most a few lost to the rebinding"
    );
    assert_eq!(b.peer_addr(), nat.outside_addr());
    assert_eq!(stream(&b, &a, 200, 200).await, 200);
    let s = b.stats();
    assert_eq!(s.peer_address_changes, 2, "the setup latch and the rebinding");
    assert_eq!(s.drops.unauthenticated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srtp_link_does_not_follow_a_stranger() {
    let (a, b, nat) = tokio::time::timeout(BOUND, behind_nat(Mode::Srtp, RtpUdpConfig::default()))
        .await
        .unwrap()
        .unwrap();
    let mapping = b.peer_addr();
    // Someone else replays what the NAT sent, from their own address: the
    // packets were seen (SRTP's replay window) or are not SRTP at all.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..50 {
        stranger
            .send_to(
                &[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xA, 1, 2, 3],
                b.local_addr(),
            )
            .await
            .unwrap();
    }
    assert_eq!(stream(&a, &b, 0, 50).await, 50);
    assert_eq!(b.peer_addr(), mapping, "still the NAT's mapping");
    let s = b.stats();
    assert_eq!(s.peer_address_changes, 1);
    assert!(s.drops.unknown_source >= 50, "{:?}", s.drops);
    drop(nat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtp_filters_on_the_signaled_address_unless_told_to_latch() {
    let refused = tokio::time::timeout(BOUND, behind_nat(Mode::Unreliable, RtpUdpConfig::default()))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "strict filtering: the NAT's packets are a stranger's"
    );

    let (a, b, nat) = tokio::time::timeout(
        BOUND,
        behind_nat(Mode::Unreliable, RtpUdpConfig::default().latch(true)),
    )
    .await
    .unwrap()
    .expect("with latch, plain RTP takes the first source it hears");
    assert_eq!(b.peer_addr(), nat.outside_addr());
    assert_eq!(stream(&a, &b, 0, 100).await, 100);
    // Plain RTP cannot tell the peer's new mapping from anyone else: after a
    // rebinding it keeps the old one, and the new source is counted.
    nat.rebind().await;
    assert_eq!(stream(&a, &b, 100, 100).await, 0);
    let s = b.stats();
    assert_eq!(s.peer_address_changes, 1);
    assert!(s.drops.unknown_source >= 100, "{:?}", s.drops);
}
