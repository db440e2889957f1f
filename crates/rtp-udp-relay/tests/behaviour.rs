//! rtp-udp specifics beyond the shared contract: source filtering, garbage,
//! a vanished peer, an absent peer, unusable addresses.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use relay_core::{CloseReason, Mode, Packet, RelayLink, RtpUdpDescription, build_rtp};
use rtp_udp_relay::stun::{self, Control};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpError, RtpUdpOfferer};

const BOUND: Duration = Duration::from_secs(10);

async fn pair(config: RtpUdpConfig) -> (rtp_udp_relay::RtpUdpLink, rtp_udp_relay::RtpUdpLink) {
    let offerer = RtpUdpOfferer::bind(config.clone(), Mode::Unreliable)
        .await
        .unwrap();
    let answerer = RtpUdpAnswerer::bind(config, Mode::Unreliable, &offerer.offer())
        .await
        .unwrap();
    let answer = answerer.answer();
    tokio::time::timeout(BOUND, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .expect("setup bounded")
    .expect("setup")
}

/// A peer we control byte by byte: answers probes until told to vanish.
fn fake_peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// An answerer whose offer came from the fake `peer`.
async fn answering(peer: &UdpSocket, config: RtpUdpConfig) -> RtpUdpAnswerer {
    let offer = RtpUdpDescription {
        addr: peer.local_addr().unwrap(),
        ssrcs: vec![],
        srtp: None,
    };
    RtpUdpAnswerer::bind(config, Mode::Unreliable, &offer)
        .await
        .unwrap()
}

fn answer_probes(s: &UdpSocket, for_how_long: Duration) -> usize {
    let until = Instant::now() + for_how_long;
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    while Instant::now() < until {
        if let Ok((n, from)) = s.recv_from(&mut buf)
            && let Ok(Control::Probe(txid)) = stun::decode(&buf[..n])
        {
            s.send_to(&stun::encode(&Control::ProbeReply(txid, Some(from))), from)
                .unwrap();
            answered += 1;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_from_unsignaled_addresses_and_are_counted_not_delivered() {
    let (a, b) = pair(RtpUdpConfig::default()).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spoofed = build_rtp(96, 1, 0, 0xBAD, b"injected");
    for _ in 0..10 {
        stranger.send_to(&spoofed, b.local_addr()).unwrap();
    }
    a.send(Packet::parse(build_rtp(96, 1, 0, 0x600D, b"real")).unwrap())
        .await
        .unwrap();
    let got = tokio::time::timeout(BOUND, b.recv()).await.unwrap().unwrap();
    assert_eq!(
        got.ssrc(),
        0x600D,
        "the real packet arrives, the injected ones do not"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.recv())
            .await
            .is_err()
    );
    assert_eq!(b.stats().drops.unknown_source, 10);
    assert_eq!(b.stats().packets_received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_from_the_peer_are_counted_and_the_link_survives() {
    let peer = fake_peer();
    let answerer = answering(&peer, RtpUdpConfig::default()).await;
    let target = answerer.answer().addr;
    let accept = tokio::spawn(answerer.accept());
    tokio::task::spawn_blocking({
        let peer = peer.try_clone().unwrap();
        move || answer_probes(&peer, Duration::from_millis(300))
    })
    .await
    .unwrap();
    let link = tokio::time::timeout(BOUND, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],                          // empty
        vec![0x80, 96, 0],               // truncated RTP
        vec![0x80, 200],                 // truncated RTCP
        vec![0x17, 0xfe, 0xfd, 0, 0, 0], // DTLS-looking
        vec![0x00, 0x01, 0x00, 0x04],    // truncated STUN
        vec![0x40; 100],                 // version 1
        vec![0x80; 3000],                // oversized
    ];
    for g in &garbage {
        peer.send_to(g, target).unwrap();
    }
    peer.send_to(&build_rtp(96, 5, 0, 0x600D, b"ok"), target).unwrap();
    let p = tokio::time::timeout(BOUND, link.recv()).await.unwrap().unwrap();
    assert_eq!(p.ssrc(), 0x600D);
    let drops = link.stats().drops;
    assert_eq!(drops.malformed, garbage.len() as u64 - 1);
    assert_eq!(drops.too_large, 1, "the oversized one");
    assert!(link.close_reason().is_none(), "garbage must not close the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_is_detected_within_the_liveness_timeout() {
    let timeout = Duration::from_millis(800);
    let peer = fake_peer();
    let answerer = answering(&peer, RtpUdpConfig::default().liveness_timeout(timeout)).await;
    let accept = tokio::spawn(answerer.accept());
    // Alive for 1 s (longer than the timeout: keepalives keep it up), then
    // silent without a goodbye, as a killed process would be.
    let answered = tokio::task::spawn_blocking({
        let peer = peer.try_clone().unwrap();
        move || answer_probes(&peer, Duration::from_secs(1))
    });
    let link = tokio::time::timeout(BOUND, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        answered.await.unwrap() >= 3,
        "keepalives flow while the peer lives"
    );
    let vanished_at = Instant::now();
    let reason = tokio::time::timeout(BOUND, link.closed())
        .await
        .expect("dead peer detected");
    let took = vanished_at.elapsed();
    assert!(
        matches!(reason, CloseReason::LivenessTimeout(d) if d >= timeout),
        "{reason:?}"
    );
    // Detection happens within the timeout of the last thing heard, which
    // was at most one keepalive interval before the peer vanished.
    // Generous slack for a loaded machine; the point is "bounded", not fast.
    assert!(took <= timeout * 2 + Duration::from_secs(1), "took {took:?}");
    assert!(link.stats().rtt.is_some(), "keepalive replies give an RTT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nobody_fails_clearly_within_the_timeout() {
    let nobody = fake_peer(); // bound, never answers
    let offerer = RtpUdpOfferer::bind(
        RtpUdpConfig::default().liveness_timeout(Duration::from_millis(300)),
        Mode::Unreliable,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let err = offerer
        .connect(&RtpUdpDescription {
            addr: nobody.local_addr().unwrap(),
            ssrcs: vec![],
            srtp: None,
        })
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, RtpUdpError::NoPeer { .. }), "{err:?}");
    assert!(err.to_string().contains("no reply from peer"), "{err}");
}

#[tokio::test]
async fn unusable_signaled_addresses_are_refused() {
    for (addr, why) in [
        ("0.0.0.0:5004", "unspecified"),
        ("127.0.0.1:0", "port 0"),
        ("[::1]:5004", "family"),
    ] {
        let offer = RtpUdpDescription {
            addr: addr.parse::<SocketAddr>().unwrap(),
            ssrcs: vec![],
            srtp: None,
        };
        let err = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Unreliable, &offer)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{addr}: {err}");
    }
    let err = RtpUdpOfferer::bind(
        RtpUdpConfig::default().bind("0.0.0.0:0".parse().unwrap()),
        Mode::Unreliable,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("advertised"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_link_says_goodbye() {
    let (a, b) = pair(RtpUdpConfig::default()).await;
    drop(a);
    let reason = tokio::time::timeout(BOUND, b.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::PeerClosed);
}
