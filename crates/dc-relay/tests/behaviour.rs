//! dc-relay behaviour beyond the shared conformance suite: liveness, setup
//! errors, STUN gathering, RTT, a thousand first-packet rounds, and a soak
//! (`#[ignore]`d: `cargo test --release -p dc-relay --test behaviour --
//! --ignored --nocapture`). Setup times and throughput are measured by the
//! report (`relay-bench report`), not here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dc_relay::{Dc, DcAnswerer, DcConfig, DcError, DcLink, DcOfferer};
use relay_core::conformance::Loopback;
use relay_core::conformance::numbered;
use relay_core::{CloseReason, LinkError, Mode, RelayLink, SdpType, W3cDescription};
use tokio::net::UdpSocket;

const STEP: Duration = Duration::from_secs(10);

async fn pair_with(config: DcConfig, mode: Mode) -> (DcLink, DcLink) {
    let offerer = DcOfferer::bind(config.clone(), mode).await.expect("bind offerer");
    let answerer = DcAnswerer::bind(config, &offerer.offer())
        .await
        .expect("bind answerer");
    let answer = answerer.answer();
    tokio::time::timeout(STEP, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .expect("setup within 10 s")
    .expect("setup")
}

async fn pair(mode: Mode) -> (DcLink, DcLink) {
    pair_with(DcConfig::default(), mode).await
}

/// The answerer learns the mode from the channel the offerer opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answerer_takes_the_offerers_mode() {
    for mode in [Mode::Reliable, Mode::Unreliable] {
        let (a, b) = pair(mode).await;
        assert_eq!((a.mode(), b.mode()), (mode, mode));
        let s = b.stats();
        assert!(s.setup_time.is_some_and(|t| t < STEP), "{s:?}");
    }
}

#[tokio::test]
async fn setup_errors_say_what_is_wrong() {
    let e = DcOfferer::bind(DcConfig::default(), Mode::Datagram)
        .await
        .unwrap_err();
    assert!(matches!(e, DcError::UnsupportedMode(Mode::Datagram)), "{e}");

    let e = DcOfferer::bind(
        DcConfig::default().ice_servers(vec!["turn:127.0.0.1:3478".into()]),
        Mode::Reliable,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("only stun:"), "{e}");

    let e = DcOfferer::bind(
        DcConfig::default().bind_addrs(vec!["0.0.0.0:0".parse().unwrap()]),
        Mode::Reliable,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DcError::BadBindAddress { .. }), "{e}");

    let offerer = DcOfferer::bind(DcConfig::default(), Mode::Reliable)
        .await
        .unwrap();
    let offer = offerer.offer();
    assert_eq!(offer.kind, SdpType::Offer);
    assert!(
        offer.sdp.contains("typ host"),
        "non-trickle: candidates in the offer"
    );
    let e = DcAnswerer::bind(
        DcConfig::default(),
        &W3cDescription {
            kind: SdpType::Answer,
            sdp: offer.sdp.clone(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DcError::BadDescription { side: "offer", .. }), "{e}");
    let e = DcAnswerer::bind(
        DcConfig::default(),
        &W3cDescription {
            kind: SdpType::Offer,
            sdp: "v=0 garbage".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DcError::BadDescription { .. }), "{e}");
    let e = offerer.connect(&offer).await.unwrap_err();
    assert!(matches!(e, DcError::BadDescription { side: "answer", .. }), "{e}");
}

/// An answer nobody acts on: `connect` gives up with a timeout that names
/// the ICE state, it does not hang.
#[tokio::test]
async fn silent_answerer_times_out() {
    let config = DcConfig::default().liveness_timeout(Duration::from_millis(500));
    let offerer = DcOfferer::bind(config.clone(), Mode::Unreliable).await.unwrap();
    let answerer = DcAnswerer::bind(config, &offerer.offer()).await.unwrap();
    let answer = answerer.answer();
    drop(answerer); // closes its driver: nothing answers the checks
    let started = Instant::now();
    let e = tokio::time::timeout(STEP, offerer.connect(&answer))
        .await
        .expect("connect must give up by itself")
        .unwrap_err();
    assert!(matches!(e, DcError::Timeout { .. } | DcError::Closed(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// A peer that vanishes without a word (its runtime is shut down: no SCTP
/// ABORT, no close_notify, its sockets just go) is noticed through ICE
/// consent within the liveness timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_peer_is_detected_within_the_liveness_timeout() {
    const LIVENESS: Duration = Duration::from_millis(1500);
    let config = DcConfig::default().liveness_timeout(LIVENESS);
    for mode in [Mode::Reliable, Mode::Unreliable] {
        let offerer = DcOfferer::bind(config.clone(), mode).await.unwrap();
        let offer = offerer.offer();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let (link_tx, link_rx) = std::sync::mpsc::channel();
        let cfg = config.clone();
        // The answerer lives on its own runtime, so it can be killed alone.
        let other = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let link = rt.block_on(async move {
                let answerer = DcAnswerer::bind(cfg, &offer).await.unwrap();
                answer_tx.send(answerer.answer()).unwrap();
                answerer.accept().await.unwrap()
            });
            link_tx.send(()).unwrap();
            // Keep the link (no clean close) and kill its driver task.
            rt.shutdown_background();
            std::mem::forget(link);
        });
        let answer = answer_rx.await.unwrap();
        let a = offerer.connect(&answer).await.unwrap();
        link_rx.recv_timeout(STEP).unwrap();
        other.join().unwrap();
        let vanished = Instant::now();
        let reason = tokio::time::timeout(STEP, a.closed()).await.expect("noticed");
        let took = vanished.elapsed();
        assert_eq!(reason, CloseReason::LivenessTimeout(LIVENESS), "{mode}");
        assert!(
            took <= LIVENESS + Duration::from_millis(300),
            "{mode}: took {took:?}"
        );
        assert!(matches!(
            a.send(numbered(1, 1, 100)).await,
            Err(LinkError::Closed(CloseReason::LivenessTimeout(_)))
        ));
    }
}

/// Bound to every interface, announced as loopback: the link works, and
/// without an advertised IP the unspecified address is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_bind_with_advertised_ip() {
    let config = DcConfig::default()
        .bind_addrs(vec!["0.0.0.0:0".parse().unwrap()])
        .advertise_ip(Some([127, 0, 0, 1].into()));
    let offerer = DcOfferer::bind(config.clone(), Mode::Reliable).await.unwrap();
    assert!(offerer.offer().sdp.contains("127.0.0.1"));
    let answerer = DcAnswerer::bind(config, &offerer.offer()).await.unwrap();
    let answer = answerer.answer();
    let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept()).unwrap();
    assert_eq!(a.local_addrs()[0].ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    b.send(numbered(9, 0, 500)).await.unwrap();
    assert_eq!(a.recv().await.unwrap().ssrc(), 9);
}

/// A minimal STUN server on loopback: answers Binding requests with the
/// source address (RFC 8489 XOR-MAPPED-ADDRESS), counts them.
async fn stun_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use rtc::stun::message::{BINDING_SUCCESS, Message, Setter};
    use rtc::stun::xoraddr::XorMappedAddress;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut req = Message::new();
            if req.unmarshal_binary(&buf[..n]).is_err() {
                continue;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut resp = Message::new();
            resp.typ = BINDING_SUCCESS;
            resp.transaction_id = req.transaction_id;
            resp.write_header();
            XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }
            .add_to(&mut resp)
            .unwrap();
            resp.encode();
            let _ = socket.send_to(&resp.raw, from).await;
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_server_gives_a_server_reflexive_candidate() {
    let (server, hits) = stun_server().await;
    let config = DcConfig::default().ice_servers(vec![format!("stun:{server}")]);
    let offerer = DcOfferer::bind(config.clone(), Mode::Reliable).await.unwrap();
    assert!(
        offerer.offer().sdp.contains("typ srflx"),
        "{}",
        offerer.offer().sdp
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    let answerer = DcAnswerer::bind(config, &offerer.offer()).await.unwrap();
    let answer = answerer.answer();
    let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept()).unwrap();
    a.send(numbered(5, 0, 300)).await.unwrap();
    assert_eq!(b.recv().await.unwrap().ssrc(), 5);
}

/// A STUN server that never answers costs its candidate, not the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stun_server_is_skipped() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = DcConfig::default()
        .ice_servers(vec![format!("stun:{}", silent.local_addr().unwrap())])
        .gather_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let offerer = DcOfferer::bind(config, Mode::Unreliable).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!offerer.offer().sdp.contains("typ srflx"));
}

/// ICE consent checks measure the round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_is_measured() {
    let config = DcConfig::default().liveness_timeout(Duration::from_millis(500));
    let (a, b) = pair_with(config, Mode::Reliable).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for link in [&a, &b] {
        let rtt = link.stats().rtt.expect("rtt after a few consent checks");
        assert!(rtt < Duration::from_millis(100), "{rtt:?} on loopback");
    }
}

/// Either side's close (or drop) reaches the other as `PeerClosed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_close_in_both_directions() {
    for mode in [Mode::Reliable, Mode::Unreliable] {
        let (a, b) = pair(mode).await;
        b.close();
        assert_eq!(
            tokio::time::timeout(STEP, a.closed()).await.unwrap(),
            CloseReason::PeerClosed
        );
        drop(a);
        // Dropping a link closes it too.
        let (a, b) = pair(mode).await;
        drop(a);
        assert_eq!(
            tokio::time::timeout(STEP, b.closed()).await.unwrap(),
            CloseReason::PeerClosed
        );
    }
}

/// Ready means ready, a thousand times: each side sends the instant its own
/// link is returned; the other side must get it. About 12 s in a debug
/// build, 2 s in release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_lost_a_thousand_times() {
    let started = Instant::now();
    for mode in [Mode::Reliable, Mode::Unreliable] {
        relay_core::conformance::first_packet_not_lost(&Loopback::<Dc>::default(), mode, 500).await;
    }
    println!("1000 rounds (500 per mode) in {:?}", started.elapsed());
}

/// Floods `n` packets of `size` bytes one way while the receiver reads;
/// returns (delivered, elapsed).
async fn flood(a: &Arc<DcLink>, b: &Arc<DcLink>, n: u32, size: usize) -> (u64, Duration) {
    let packets: Vec<_> = (0..n).map(|i| numbered(1, i, size)).collect();
    let started = Instant::now();
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for p in packets {
                a.send(p).await.expect("flood send");
            }
        })
    };
    let mut got = 0u64;
    let mut last = Instant::now();
    let reliable = a.mode().is_reliable();
    while got < n as u64 {
        let quiet = if reliable {
            STEP
        } else {
            Duration::from_millis(300)
        };
        match tokio::time::timeout(quiet, b.recv()).await {
            Ok(Ok(_)) => {
                got += 1;
                last = Instant::now();
            }
            Ok(Err(e)) => panic!("flood receive: {e}"),
            Err(_) if reliable => panic!("reliable flood stalled after {got} of {n}"),
            Err(_) => break,
        }
    }
    tokio::time::timeout(STEP, sender)
        .await
        .expect("sender never stalls")
        .unwrap();
    (got, last - started)
}

/// No stall, ever: 200 back-to-back flood sessions (alternating modes) all
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with --release -- --ignored --nocapture"]
async fn soak_200_flood_sessions() {
    const N: u32 = 10_000;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for session in 0..200 {
        let mode = if session % 2 == 0 {
            Mode::Reliable
        } else {
            Mode::Unreliable
        };
        let (a, b) = pair(mode).await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let (got, took) = flood(&a, &b, N, 1200).await;
        worst = worst.max(took);
        if mode.is_reliable() {
            assert_eq!(got, N as u64, "session {session}");
        } else {
            assert!(got > 0, "session {session}: nothing delivered");
        }
        a.close();
        b.close();
    }
    println!(
        "soak: 200 flood sessions of {N} x 1200 B completed in {:?} (slowest flood {worst:?})",
        started.elapsed()
    );
}

/// Each packet leaves the relay as one UDP datagram (to the media server),
/// so a dc link carries at most 65,507 bytes, the largest IPv4 UDP payload:
/// it advertises that as its `a=max-message-size` (a peer's `send` then
/// refuses more) and refuses more itself with `TooLarge`, counted. RFC
/// 8841's default of 65,536 let packets of 65,508 bytes and up through the
/// link only to be lost at the UDP write after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_larger_than_a_udp_payload_are_refused_and_counted() {
    const UDP_PAYLOAD: usize = 65_507;
    let config = DcConfig::default().max_packet_size(usize::MAX);
    let offerer = DcOfferer::bind(config.clone(), Mode::Reliable)
        .await
        .expect("bind offerer");
    let offer = offerer.offer();
    let answerer = DcAnswerer::bind(config, &offer).await.expect("bind answerer");
    let answer = answerer.answer();
    for d in [&offer, &answer] {
        assert!(
            d.sdp.contains(&format!("a=max-message-size:{UDP_PAYLOAD}\r\n")),
            "{:?} advertises another maximum:\n{}",
            d.kind,
            d.sdp
        );
    }
    let (a, b) = tokio::time::timeout(STEP, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .expect("setup within 10 s")
    .expect("setup");
    assert_eq!(
        (a.max_packet_size(), b.max_packet_size()),
        (UDP_PAYLOAD, UDP_PAYLOAD)
    );

    let largest = numbered(1, 0, UDP_PAYLOAD);
    a.send(largest.clone()).await.expect("the largest packet is sent");
    let got = tokio::time::timeout(STEP, b.recv())
        .await
        .expect("within 10 s")
        .expect("recv");
    assert_eq!(got, largest);
    for size in [UDP_PAYLOAD + 1, 65_536] {
        match a.send(numbered(1, 1, size)).await {
            Err(LinkError::TooLarge { size: s, max }) => assert_eq!((s, max), (size, UDP_PAYLOAD)),
            other => panic!("{size}-byte packet: {other:?}, expected TooLarge"),
        }
    }
    assert_eq!(a.stats().drops.too_large, 2);
    assert_eq!(a.stats().packets_sent, 1);
}

/// A peer that advertises a smaller `a=max-message-size` lowers the link's
/// limit: a larger packet is refused by `send` with `TooLarge`, not taken,
/// counted as sent and then refused by the stack where nobody sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_smaller_max_message_size_is_the_links_limit() {
    const PEER_MAX: usize = 16_384;
    let config = DcConfig::default().max_packet_size(usize::MAX);
    let offerer = DcOfferer::bind(config.clone(), Mode::Reliable)
        .await
        .expect("bind offerer");
    let answerer = DcAnswerer::bind(config, &offerer.offer())
        .await
        .expect("bind answerer");
    let mut answer = answerer.answer();
    let advertised = answer
        .sdp
        .lines()
        .find(|l| l.starts_with("a=max-message-size:"))
        .expect("the answer advertises a maximum")
        .to_string();
    answer.sdp = answer
        .sdp
        .replace(&advertised, &format!("a=max-message-size:{PEER_MAX}"));
    let (a, b) = tokio::time::timeout(STEP, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .expect("setup within 10 s")
    .expect("setup");
    assert_eq!(a.max_packet_size(), PEER_MAX);

    let largest = numbered(1, 0, PEER_MAX);
    a.send(largest.clone()).await.expect("the peer's largest is sent");
    let got = tokio::time::timeout(STEP, b.recv())
        .await
        .expect("within 10 s")
        .expect("recv");
    assert_eq!(got, largest);
    match a.send(numbered(1, 1, PEER_MAX + 1)).await {
        Err(LinkError::TooLarge { max, .. }) => assert_eq!(max, PEER_MAX),
        other => panic!("{other:?}, expected TooLarge"),
    }
    assert_eq!((a.stats().packets_sent, a.stats().drops.too_large), (1, 1));
}

/// A datagram the kernel refuses to send is counted in the link's drops,
/// not only logged. The offer carries an extra host candidate at the
/// broadcast address, which a socket without SO_BROADCAST may not send to
/// (EACCES): the answerer's ICE checks towards it fail, the other pair
/// connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_the_kernel_refuses_are_counted() {
    let offerer = DcOfferer::bind(DcConfig::default(), Mode::Reliable)
        .await
        .expect("bind offerer");
    let mut offer = offerer.offer();
    let host = offer
        .sdp
        .lines()
        .find(|l| l.starts_with("a=candidate:"))
        .expect("a host candidate")
        .to_string();
    // foundation component transport priority address port typ host
    let mut fields: Vec<&str> = host.split(' ').collect();
    fields[0] = "a=candidate:1";
    fields[4] = "255.255.255.255";
    let broadcast = fields.join(" ");
    offer.sdp = offer.sdp.replacen(&host, &format!("{broadcast}\r\n{host}"), 1);
    let answerer = DcAnswerer::bind(DcConfig::default(), &offer)
        .await
        .expect("bind answerer");
    let answer = answerer.answer();
    let (_a, b) = tokio::time::timeout(STEP, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .expect("setup within 10 s")
    .expect("setup");
    let deadline = Instant::now() + Duration::from_secs(3);
    while b.stats().drops.send_queue_full == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        b.stats().drops.send_queue_full > 0,
        "no refused datagram counted: {:?}",
        b.stats().drops
    );
}
