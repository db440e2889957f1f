//! srtp mode against a peer we control byte by byte: what an on-path
//! attacker who can send from the peer's address gets (nothing delivered,
//! everything counted), what the wire carries, and how bad keys in an offer
//! are refused.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_core::{CloseReason, Mode, Packet, RelayLink, RtpUdpDescription, SrtpParameters, build_rtp};
use rtp_udp_relay::srtp::{ControlAuth, MasterKey, SUITE, SrtpContext, keepalive_key};
use rtp_udp_relay::stun::{self, Control};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpError, RtpUdpLink, RtpUdpOfferer};

const BOUND: Duration = Duration::from_secs(10);

/// The far end of an srtp link, in the test's hands: answers probes on a
/// thread (with replies authenticated under its key, remembering the last
/// one) until told to go silent, and hands every other datagram to the test.
struct FakePeer {
    socket: UdpSocket,
    key: MasterKey,
    received: mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    last_reply: Arc<Mutex<Option<Vec<u8>>>>,
}

impl FakePeer {
    fn new() -> FakePeer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let key = MasterKey::generate();
        let (tx, received) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let last_reply = Arc::new(Mutex::new(None));
        let (s, halt, quiet, last) = (
            socket.try_clone().unwrap(),
            stop.clone(),
            silent.clone(),
            last_reply.clone(),
        );
        let ours = keepalive_key(&key);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                match stun::decode(&buf[..n]) {
                    Ok(Control::Probe(txid)) if !quiet.load(Ordering::Relaxed) => {
                        let reply =
                            stun::encode_with_integrity(&Control::ProbeReply(txid, Some(from)), &ours);
                        let _ = s.send_to(&reply, from);
                        *last.lock().unwrap() = Some(reply);
                    }
                    Ok(Control::Probe(_) | Control::ProbeReply(..)) => {}
                    _ => {
                        let _ = tx.send(buf[..n].to_vec());
                    }
                }
            }
        });
        FakePeer {
            socket,
            key,
            received,
            stop,
            silent,
            last_reply,
        }
    }

    /// Stops answering probes; returns the last reply sent.
    fn go_silent(&self) -> Vec<u8> {
        self.silent.store(true, Ordering::Relaxed);
        // A probe being answered right now finishes first.
        std::thread::sleep(Duration::from_millis(50));
        self.last_reply
            .lock()
            .unwrap()
            .clone()
            .expect("a probe was answered")
    }

    fn offer(&self) -> RtpUdpDescription {
        RtpUdpDescription {
            addr: self.socket.local_addr().unwrap(),
            ssrcs: vec![],
            srtp: Some(SrtpParameters {
                suite: SUITE.into(),
                key: self.key.to_base64(),
            }),
        }
    }

    /// The next datagram that is not a probe or probe reply.
    fn next(&self) -> Vec<u8> {
        self.received
            .recv_timeout(BOUND)
            .expect("a datagram from the link")
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An srtp link whose peer is a [`FakePeer`]; returns the link, where it
/// listens, and the key it protects with.
async fn link_to(peer: &FakePeer) -> (RtpUdpLink, std::net::SocketAddr, MasterKey) {
    link_with(peer, RtpUdpConfig::default()).await
}

async fn link_with(peer: &FakePeer, config: RtpUdpConfig) -> (RtpUdpLink, std::net::SocketAddr, MasterKey) {
    let answerer = RtpUdpAnswerer::bind(config, Mode::Srtp, &peer.offer())
        .await
        .unwrap();
    let answer = answerer.answer();
    let p = answer.srtp.expect("an srtp answer carries the answerer's key");
    let key = MasterKey::from_signaled(&p.suite, &p.key).unwrap();
    let link = tokio::time::timeout(BOUND, answerer.accept())
        .await
        .unwrap()
        .unwrap();
    (link, answer.addr, key)
}

async fn nothing_delivered(link: &RtpUdpLink) {
    let r = tokio::time::timeout(Duration::from_millis(200), link.recv()).await;
    assert!(r.is_err(), "nothing more may be delivered: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_tampered_and_replayed_packets_are_counted_not_delivered() {
    let peer = FakePeer::new();
    let (link, target, _) = link_to(&peer).await;
    let mut protect = SrtpContext::new(&peer.key);
    let send = |bytes: &[u8]| peer.socket.send_to(bytes, target).unwrap();

    // Plain RTP from the peer's own address: what an attacker who can
    // spoof the source, or a misconfigured plain peer, sends.
    let plain = build_rtp(96, 1, 0, 0xBAD, b"injected");
    send(&plain);
    // A valid packet with one payload bit flipped.
    let mut tampered = protect
        .protect_rtp(&build_rtp(96, 2, 0, 0xBAD, b"tampered"))
        .unwrap()
        .to_vec();
    tampered[14] ^= 1;
    send(&tampered);
    // Bytes that are not even RTP count as malformed, as in plain mode.
    send(&[0x40; 50]);

    let real = build_rtp(96, 3, 0, 0x600D, b"real");
    let wire = protect.protect_rtp(&real).unwrap();
    send(&wire);
    let got = tokio::time::timeout(BOUND, link.recv()).await.unwrap().unwrap();
    assert_eq!(got.bytes(), &real, "the authentic packet arrives decrypted");
    nothing_delivered(&link).await;

    // A captured valid packet sent again.
    send(&wire);
    send(&wire);
    // RTCP is protected too: a plain receiver report is refused, an SRTCP one passes.
    let rr = Bytes::from_static(&[0x80, 201, 0, 1, 0, 0, 0x60, 0x0D]);
    send(&rr);
    send(&protect.protect_rtcp(&rr).unwrap());
    let got = tokio::time::timeout(BOUND, link.recv()).await.unwrap().unwrap();
    assert_eq!(got.bytes(), &rr);
    nothing_delivered(&link).await;

    let s = link.stats();
    assert_eq!(s.mode, Mode::Srtp);
    assert_eq!(
        s.drops.unauthenticated, 5,
        "plain, tampered, two replays, plain RTCP: {s:?}"
    );
    assert_eq!(s.drops.malformed, 1);
    assert_eq!((s.packets_received, s.rtcp_received), (2, 1));
    assert!(link.close_reason().is_none(), "attacks must not close the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_leaves_encrypted_and_full_size_packets_fit_the_limit() {
    let peer = FakePeer::new();
    let (link, _, link_key) = link_to(&peer).await;
    let mut unprotect = SrtpContext::new(&link_key);
    let max = link.max_packet_size();
    assert!(max >= relay_core::MIN_MAX_PACKET_SIZE, "{max}");
    assert!(max + 20 <= rtp_udp_relay::DEFAULT_MAX_PACKET_SIZE, "{max}");

    let secret = b"a secret payload that must not appear on the wire";
    for (seq, payload) in [(1u16, secret.to_vec()), (2, vec![0xAB; max - 12])] {
        let rtp = build_rtp(96, seq, 0, 0x1234, &payload);
        link.send(Packet::parse(rtp.clone()).unwrap()).await.unwrap();
        let wire = peer.next();
        assert_eq!(wire.len(), rtp.len() + 16);
        assert!(wire.len() <= rtp_udp_relay::DEFAULT_MAX_PACKET_SIZE);
        assert!(
            !wire.windows(secret.len()).any(|w| w == secret),
            "payload is encrypted"
        );
        assert_eq!(unprotect.unprotect_rtp(&wire).unwrap(), rtp);
    }
    // Forwarding a duplicate sequence number with other content would reuse
    // a GCM nonce: refused and counted, never on the wire.
    let dup = build_rtp(96, 2, 0, 0x1234, b"same seq, other bytes");
    link.send(Packet::parse(dup).unwrap()).await.unwrap();
    assert_eq!(link.stats().drops.unauthenticated, 1);
    let too_big = build_rtp(96, 3, 0, 0x1234, &vec![0; max - 11]);
    assert!(link.send(Packet::parse(too_big).unwrap()).await.is_err());
    assert_eq!(link.stats().drops.too_large, 1);

    // The goodbye is signed with a key derived from the link's master key.
    link.close();
    match stun::decode(&peer.next()) {
        Ok(Control::SignedGoodbye(txid, tag)) => {
            assert!(ControlAuth::new(&link_key).verify(&txid, &tag));
        }
        other => panic!("expected a signed goodbye, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_goodbyes_do_not_close_an_srtp_link_and_a_signed_one_does() {
    let peer = FakePeer::new();
    let (link, target, _) = link_to(&peer).await;
    let send = |c: &Control| peer.socket.send_to(&stun::encode(c), target).unwrap();
    send(&Control::Goodbye);
    send(&Control::SignedGoodbye([7; 12], [0; 32]));
    let other = ControlAuth::new(&MasterKey::generate());
    send(&Control::SignedGoodbye([7; 12], other.sign(&[7; 12])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(link.close_reason().is_none(), "forged goodbyes are ignored");
    assert_eq!(link.stats().drops.unauthenticated, 3);

    let ours = ControlAuth::new(&peer.key);
    send(&Control::SignedGoodbye([8; 12], ours.sign(&[8; 12])));
    let reason = tokio::time::timeout(BOUND, link.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::PeerClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_authentic_reply_does_not_keep_an_srtp_link_alive() {
    // What an on-path attacker who recorded the peer's traffic can do once
    // the peer is gone: send its authentic replies again. A reply counts
    // only for a probe still outstanding, once.
    let timeout = Duration::from_millis(800);
    let peer = FakePeer::new();
    let (link, target, _) = link_with(&peer, RtpUdpConfig::default().liveness_timeout(timeout)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let recorded = peer.go_silent();
    assert_eq!(
        stun::verify_integrity(&recorded, &keepalive_key(&peer.key)),
        Ok(())
    );
    let silent_at = Instant::now();
    while link.close_reason().is_none() && silent_at.elapsed() < BOUND {
        peer.socket.send_to(&recorded, target).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = silent_at.elapsed();
    let reason = link.close_reason();
    assert!(
        matches!(reason, Some(CloseReason::LivenessTimeout(d)) if d >= timeout),
        "{reason:?}"
    );
    assert!(took <= timeout * 2 + Duration::from_secs(1), "took {took:?}");
    // Authentic, so not counted as a forgery: it is just too late to matter.
    assert_eq!(link.stats().drops.unauthenticated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_srtp_ends_relay_and_say_goodbye() {
    let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), Mode::Srtp)
        .await
        .unwrap();
    let offer = offerer.offer();
    let answerer = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Srtp, &offer)
        .await
        .unwrap();
    let answer = answerer.answer();
    assert_ne!(offer.srtp, answer.srtp, "each side signals its own key");
    let json = serde_json::to_value(&offer).unwrap();
    assert_eq!(json["srtp"]["suite"], "AEAD_AES_128_GCM");
    let (a, b) = tokio::time::timeout(BOUND, async {
        tokio::try_join!(offerer.connect(&answer), answerer.accept())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!((a.mode(), b.mode()), (Mode::Srtp, Mode::Srtp));
    for seq in 0..100u16 {
        a.send(Packet::parse(build_rtp(96, seq, 0, 7, b"x")).unwrap())
            .await
            .unwrap();
        let got = tokio::time::timeout(BOUND, b.recv()).await.unwrap().unwrap();
        assert_eq!(got.sequence_number(), Some(seq));
    }
    drop(a);
    let reason = tokio::time::timeout(BOUND, b.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::PeerClosed);
    assert_eq!(b.stats().drops.unauthenticated, 0);
}

#[tokio::test]
async fn offers_with_missing_or_bad_keys_are_refused() {
    let peer = FakePeer::new();
    let good = peer.offer();
    let with = |srtp: Option<(&str, String)>| RtpUdpDescription {
        srtp: srtp.map(|(suite, key)| SrtpParameters {
            suite: suite.into(),
            key,
        }),
        ..good.clone()
    };
    let key = peer.key.to_base64();
    for (mode, offer, why) in [
        (Mode::Srtp, with(None), "carries no srtp key"),
        (
            Mode::Srtp,
            with(Some(("AES_CM_128_HMAC_SHA1_80", key.clone()))),
            "unsupported SRTP suite",
        ),
        (Mode::Srtp, with(Some((SUITE, "AAAA".into()))), "needs 28"),
        (Mode::Srtp, with(Some((SUITE, "%%%".into()))), "not base64"),
        (
            Mode::Unreliable,
            with(Some((SUITE, key.clone()))),
            "ask for mode srtp",
        ),
    ] {
        let err = RtpUdpAnswerer::bind(RtpUdpConfig::default(), mode, &offer)
            .await
            .unwrap_err();
        assert!(matches!(err, RtpUdpError::BadSrtp(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    let err = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Datagram, &good)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RtpUdpError::UnsupportedMode(Mode::Datagram)),
        "{err:?}"
    );

    // The offerer refuses a plain answer to an srtp offer.
    let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), Mode::Srtp)
        .await
        .unwrap();
    let err = offerer.connect(&with(None)).await.unwrap_err();
    assert!(matches!(err, RtpUdpError::BadSrtp(_)), "{err:?}");
}
