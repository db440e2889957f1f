//! rtp-udp specifics beyond the shared contract: source filtering, garbage,
//! a vanished peer, an absent peer, unusable addresses, and a spoofer
//! keeping a dead link alive (it can in plain mode, not in srtp mode).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_core::{CloseReason, Mode, Packet, RelayLink, RtpUdpDescription, SrtpParameters, build_rtp};
use rtp_udp_relay::srtp::{self, MasterKey};
use rtp_udp_relay::stun::{self, Control, IntegrityKey};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpError, RtpUdpLink, RtpUdpOfferer};

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
    answer_probes_with(s, for_how_long, None)
}

/// The keepalive keys of an srtp fake peer: its own, and the link's.
struct KeepaliveKeys {
    ours: IntegrityKey,
    link: IntegrityKey,
}

/// Answers probes as the real peer would: in srtp mode (`keys`), only
/// probes that carry the link's MESSAGE-INTEGRITY-SHA256, with a reply
/// that carries ours.
fn answer_probes_with(s: &UdpSocket, for_how_long: Duration, keys: Option<&KeepaliveKeys>) -> usize {
    let until = Instant::now() + for_how_long;
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    while Instant::now() < until {
        if let Ok((n, from)) = s.recv_from(&mut buf)
            && let Ok(Control::Probe(txid)) = stun::decode(&buf[..n])
        {
            let reply = Control::ProbeReply(txid, Some(from));
            let wire = match keys {
                None => stun::encode(&reply),
                Some(k) => {
                    assert_eq!(
                        stun::verify_integrity(&buf[..n], &k.link),
                        Ok(()),
                        "an srtp link's probes carry its MESSAGE-INTEGRITY-SHA256"
                    );
                    stun::encode_with_integrity(&reply, &k.ours)
                }
            };
            s.send_to(&wire, from).unwrap();
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

/// What a spoofer sent from the peer's address, and what it got back.
#[derive(Debug, Default)]
struct Spoofed {
    /// Datagrams sent to the link.
    sent: u64,
    /// Replies from the link to the spoofer's own probes.
    answered: u64,
}

/// A spoofer at the peer's address (an off-path attacker forging the
/// source; here it even sees the link's probes, which is more than an
/// off-path attacker can), with no keys. It answers every probe of the
/// link, echoing its transaction id, once without MESSAGE-INTEGRITY-SHA256
/// and once with a wrong one, and every 50 ms sends a probe of each kind
/// and a plain RTP packet. Runs until `stop` says so; never sends to a
/// closed link, so what it sent is what the link saw.
fn spoof(s: &UdpSocket, target: SocketAddr, stop: impl Fn() -> bool) -> Spoofed {
    let wrong = IntegrityKey::new(&[0xEE; 32]);
    let mut out = Spoofed::default();
    let mut buf = [0u8; 2048];
    let mut next_burst = Instant::now();
    let mut n: u64 = 0;
    let send = |out: &mut Spoofed, wire: &[u8]| {
        if !stop() {
            s.send_to(wire, target).unwrap();
            out.sent += 1;
        }
    };
    while !stop() {
        if let Ok((len, from)) = s.recv_from(&mut buf) {
            match stun::decode(&buf[..len]) {
                Ok(Control::Probe(txid)) => {
                    let reply = Control::ProbeReply(txid, Some(from));
                    send(&mut out, &stun::encode(&reply));
                    send(&mut out, &stun::encode_with_integrity(&reply, &wrong));
                }
                Ok(Control::ProbeReply(txid, _)) if txid[0] == 0xEE => out.answered += 1,
                _ => {}
            }
        }
        if Instant::now() >= next_burst {
            next_burst += Duration::from_millis(50);
            n += 1;
            let mut txid = [0xEE; 12];
            txid[4..].copy_from_slice(&n.to_be_bytes());
            send(&mut out, &stun::encode(&Control::Probe(txid)));
            txid[3] = 0xEF;
            send(
                &mut out,
                &stun::encode_with_integrity(&Control::Probe(txid), &wrong),
            );
            send(&mut out, &build_rtp(96, n as u16, 0, 0xBAD, b"spoofed"));
        }
    }
    out
}

/// An answerer in `mode` whose offerer is the fake `peer`, accepted while
/// the peer answers probes for `alive`: returns the link, and when the
/// real peer went silent.
async fn linked_then_vanished(
    mode: Mode,
    peer: &UdpSocket,
    timeout: Duration,
    alive: Duration,
) -> (Arc<RtpUdpLink>, Instant) {
    let peer_key = MasterKey::generate();
    let offer = RtpUdpDescription {
        addr: peer.local_addr().unwrap(),
        ssrcs: vec![],
        srtp: (mode == Mode::Srtp).then(|| SrtpParameters {
            suite: srtp::SUITE.into(),
            key: peer_key.to_base64(),
        }),
    };
    let config = RtpUdpConfig::default().liveness_timeout(timeout);
    let answerer = RtpUdpAnswerer::bind(config, mode, &offer).await.unwrap();
    let keys = answerer.answer().srtp.map(|p| KeepaliveKeys {
        ours: srtp::keepalive_key(&peer_key),
        link: srtp::keepalive_key(&MasterKey::from_signaled(&p.suite, &p.key).unwrap()),
    });
    let accept = tokio::spawn(answerer.accept());
    let answered = tokio::task::spawn_blocking({
        let peer = peer.try_clone().unwrap();
        move || answer_probes_with(&peer, alive, keys.as_ref())
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
    assert!(link.close_reason().is_none());
    assert!(link.stats().rtt.is_some(), "authenticated replies give an RTT");
    (Arc::new(link), Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_a_spoofer_without_the_keys_cannot_keep_a_dead_link_alive() {
    let timeout = Duration::from_millis(800);
    let peer = fake_peer();
    let (link, vanished_at) = linked_then_vanished(Mode::Srtp, &peer, timeout, Duration::from_secs(1)).await;
    let target = link.local_addr();
    // The real peer is gone; the spoofer takes its address over at once.
    let spoofer = tokio::task::spawn_blocking({
        let (peer, link) = (peer.try_clone().unwrap(), link.clone());
        move || {
            spoof(&peer, target, || {
                link.close_reason().is_some() || vanished_at.elapsed() > BOUND
            })
        }
    });
    let reason = tokio::time::timeout(BOUND, link.closed())
        .await
        .expect("dead peer detected despite the spoofer");
    let took = vanished_at.elapsed();
    let spoofed = spoofer.await.unwrap();
    assert!(
        matches!(reason, CloseReason::LivenessTimeout(d) if d >= timeout),
        "{reason:?}"
    );
    // As in a_peer_that_vanishes_is_detected_within_the_liveness_timeout:
    // the last authentic reply was at most one keepalive interval before
    // the peer vanished; slack for a loaded machine.
    assert!(took <= timeout * 2 + Duration::from_secs(1), "took {took:?}");
    let drops = link.stats().drops;
    assert!(spoofed.sent >= 20, "{spoofed:?}");
    // Every spoofed datagram the link read is counted; the few sent in the
    // instant between the liveness check and the close may go unread.
    assert!(
        drops.unauthenticated <= spoofed.sent && drops.unauthenticated + 5 >= spoofed.sent,
        "{drops:?}, {spoofed:?}"
    );
    assert_eq!(drops.malformed, 0, "{drops:?}");
    assert_eq!(spoofed.answered, 0, "unauthenticated probes are never answered");
    assert_eq!(link.stats().packets_received, 0, "spoofed RTP is not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_a_spoofer_at_the_peer_address_keeps_a_dead_link_alive() {
    // The known limitation of plain mode (docs/security.md): the signaled
    // address is the only credential, so whoever sends from it is the peer.
    let timeout = Duration::from_millis(800);
    let peer = fake_peer();
    let (link, vanished_at) =
        linked_then_vanished(Mode::Unreliable, &peer, timeout, Duration::from_millis(500)).await;
    let target = link.local_addr();
    let spoof_for = timeout * 3;
    let spoofed = tokio::task::spawn_blocking({
        let (peer, link) = (peer.try_clone().unwrap(), link.clone());
        move || {
            spoof(&peer, target, || {
                link.close_reason().is_some() || vanished_at.elapsed() > spoof_for
            })
        }
    })
    .await
    .unwrap();
    assert!(
        link.close_reason().is_none(),
        "plain mode cannot tell the spoofer from the peer: alive {spoof_for:?} after the peer vanished"
    );
    assert!(
        spoofed.answered > 0,
        "the spoofer's probes are answered: {spoofed:?}"
    );
    let stats = link.stats();
    assert_eq!(stats.drops.unauthenticated, 0);
    assert!(stats.packets_received > 0, "and its RTP delivered");
    // Once the spoofer stops too, the link dies as usual.
    let reason = tokio::time::timeout(BOUND, link.closed()).await.unwrap();
    assert!(matches!(reason, CloseReason::LivenessTimeout(_)), "{reason:?}");
}

/// The batched receive path (recvmmsg, and GRO where the kernel has it)
/// keeps every datagram whole and in order, whatever else is in the same
/// batch: a burst from the peer of GSO runs, shorter tails, lone odd
/// sizes, an oversized datagram and garbage between them, with a stranger
/// sending at the same time, arrives as exactly the peer's valid packets,
/// byte for byte, and every other datagram is counted by cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_mixed_sizes_arrives_whole_and_in_order() {
    let peer = fake_peer();
    let answerer = answering(&peer, RtpUdpConfig::default()).await;
    let target = answerer.answer().addr;
    let accept = tokio::spawn(answerer.accept());
    let peer = tokio::task::spawn_blocking(move || {
        answer_probes(&peer, Duration::from_millis(300));
        peer
    })
    .await
    .unwrap();
    let link = tokio::time::timeout(BOUND, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    peer.set_nonblocking(true).unwrap();
    let peer =
        relay_core::udp::batch::BatchSocket::new(tokio::net::UdpSocket::from_std(peer).unwrap()).unwrap();
    peer.socket().writable().await.unwrap();

    let rtp = |seq: u16, size: usize| {
        let payload: Vec<u8> = (0..size - 12).map(|i| (i as u16 ^ seq) as u8).collect();
        build_rtp(96, seq, u32::from(seq) * 90, 0x600D, &payload).to_vec()
    };
    let mut sizes = vec![1_200; 100]; // one GSO run, coalesced again by GRO
    sizes.extend([700, 1_472, 12, 13, 999, 1_000, 1_000, 1_000, 64]);
    sizes.extend([200; 30]);
    sizes.push(100); // a shorter tail
    let mut wires: Vec<Vec<u8>> = Vec::new();
    let mut valid: Vec<Vec<u8>> = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let packet = rtp(i as u16, size);
        valid.push(packet.clone());
        wires.push(packet);
        if i % 37 == 5 {
            // Between valid ones: oversized (the default limit is 1,472),
            // not RTP, cut short.
            wires.push(vec![0x80; 1_473]);
            wires.push(vec![0x40; 200]);
            wires.push(vec![0x80, 96, 0]);
        }
    }
    let garbage_rounds = sizes.iter().enumerate().filter(|(i, _)| i % 37 == 5).count() as u64;
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        stranger.send_to(&rtp(9, 100), target).unwrap();
    }
    let mut failed = 0;
    peer.send_all(wires.iter().map(Vec::as_slice), target, |r| {
        failed += usize::from(r.is_err())
    });
    assert_eq!(failed, 0);

    let mut got: Vec<Packet> = Vec::new();
    while got.len() < valid.len() {
        match tokio::time::timeout(Duration::from_secs(2), link.recv_batch(&mut got, 64)).await {
            Ok(r) => {
                r.unwrap();
            }
            Err(_) => panic!("{} of {} packets arrived", got.len(), valid.len()),
        }
    }
    let got: Vec<&[u8]> = got.iter().map(|p| p.bytes().as_ref()).collect();
    let valid: Vec<&[u8]> = valid.iter().map(Vec::as_slice).collect();
    assert_eq!(got.len(), valid.len());
    for (i, (g, v)) in got.iter().zip(&valid).enumerate() {
        assert_eq!(g, v, "packet {i} of {} bytes", v.len());
    }
    let stats = link.stats();
    assert_eq!(stats.packets_received, valid.len() as u64);
    assert_eq!(stats.drops.too_large, garbage_rounds);
    assert_eq!(stats.drops.malformed, 2 * garbage_rounds);
    assert_eq!(stats.drops.unknown_source, 20);
}

/// `send_batch` puts runs of equal sizes on the wire in one GSO send each:
/// the peer still sees one datagram per packet, each byte for byte, in
/// order, and the link counts every one as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_batch_arrives_as_one_datagram_per_packet() {
    // A buffer that holds the whole batch (the default 208 KiB does not).
    let peer = relay_core::udp::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let answerer = answering(&peer, RtpUdpConfig::default()).await;
    let accept = tokio::spawn(answerer.accept());
    let peer = tokio::task::spawn_blocking(move || {
        answer_probes(&peer, Duration::from_millis(300));
        peer
    })
    .await
    .unwrap();
    let link = tokio::time::timeout(BOUND, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut sizes = vec![1_200; 130]; // more than one GSO send holds
    sizes.extend([700, 1_472, 12, 64, 64, 64, 63, 1_000]);
    let sent: Vec<Packet> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            Packet::parse(build_rtp(96, i as u16, 0, 0xB47C, &vec![i as u8; size - 12])).unwrap()
        })
        .collect();
    let mut batch = sent.clone();
    link.send_batch(&mut batch).await.unwrap();
    assert!(batch.is_empty());
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 65_536];
        let until = Instant::now() + Duration::from_secs(2);
        while got.len() < 138 && Instant::now() < until {
            if let Ok(n) = peer.recv(&mut buf)
                && buf[0] >= 0x80
            {
                got.push(buf[..n].to_vec());
            }
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(got.len(), sent.len());
    for (i, (g, p)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(&g[..], &p.bytes()[..], "datagram {i}");
    }
    let stats = link.stats();
    assert_eq!(stats.packets_sent, sent.len() as u64);
    assert_eq!(stats.bytes_sent, sizes.iter().sum::<usize>() as u64);
}
