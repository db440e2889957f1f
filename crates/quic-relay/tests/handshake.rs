//! Who may connect, and what happens when the peer goes away: pinning
//! refuses wrong certificates and ALPNs with errors an operator can act on,
//! and a silent peer is detected within the liveness timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quic_relay::{QuicAnswerer, QuicConfig, QuicError, QuicOfferer};
use relay_core::conformance::numbered;
use relay_core::{CloseReason, Mode, QuicAnswer, RelayLink};
use tokio::net::UdpSocket;

/// Short enough that refused handshakes do not slow the suite down.
fn config() -> QuicConfig {
    QuicConfig::default().liveness_timeout(Duration::from_secs(1))
}

async fn offerer(mode: Mode) -> QuicOfferer {
    QuicOfferer::bind(config(), mode).await.expect("bind offerer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answerer_fingerprint_is_refused_by_the_offerer() {
    let offerer = offerer(Mode::Datagram).await;
    let answerer = QuicAnswerer::bind(config(), Mode::Datagram, &offerer.offer())
        .await
        .unwrap();
    let imposter = QuicOfferer::bind(config(), Mode::Datagram).await.unwrap();
    // The answer names another certificate than the one the answerer holds.
    let mut answer = answerer.answer();
    let real = answer.fingerprint.clone();
    answer.fingerprint = imposter.offer().fingerprint;

    let (connected, accepted) = tokio::join!(offerer.connect(&answer), answerer.accept());
    let err = connected.expect_err("an unpinned server certificate must be refused");
    let text = err.to_string();
    assert!(matches!(err, QuicError::FingerprintMismatch { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "peer certificate fingerprint {real} does not match the signaled {}",
            answer.fingerprint
        )),
        "{text}"
    );
    // The answerer saw the offerer abort and kept waiting until its timeout.
    let err = accepted.expect_err("nobody acceptable connected");
    let text = err.to_string();
    assert!(text.starts_with("no peer connected within 1s"), "{text}");
    assert!(text.contains("last attempt refused"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_certificate_is_refused_and_the_right_one_still_gets_in() {
    let pinned = offerer(Mode::Stream).await;
    let stranger = offerer(Mode::Stream).await;
    let answerer = QuicAnswerer::bind(
        config().liveness_timeout(Duration::from_secs(5)),
        Mode::Stream,
        &pinned.offer(),
    )
    .await
    .unwrap();
    let answer = answerer.answer();
    let accepting = tokio::spawn(answerer.accept());

    // The stranger has the answer but not the pinned certificate.
    let err = stranger
        .connect(&answer)
        .await
        .expect_err("stranger must be refused");
    let text = err.to_string();
    assert!(matches!(err, QuicError::CertificateRefused { .. }), "{err:?}");
    assert!(text.contains("refused this side's certificate"), "{text}");
    assert!(text.contains("does not match the signaled"), "{text}");

    // The answerer is still waiting, and the pinned offerer gets through.
    let a = pinned.connect(&answer).await.expect("pinned offerer connects");
    let b = accepting
        .await
        .unwrap()
        .expect("answerer accepts the pinned offerer");
    a.send(numbered(1, 0, 100)).await.unwrap();
    assert_eq!(b.recv().await.unwrap().ssrc(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused_in_signaling_and_on_the_wire() {
    // Signaled ALPNs that differ never reach the network.
    let offerer = offerer(Mode::Datagram).await;
    let err = QuicAnswerer::bind(config().alpn("roq-other"), Mode::Datagram, &offerer.offer())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ALPN mismatch: the offer asks for \"roq\", this side speaks \"roq-other\""
    );

    // A description that lies about the ALPN: TLS refuses (RFC 7301
    // no_application_protocol) and the error says so.
    let offerer = QuicOfferer::bind(config().alpn("roq-other"), Mode::Datagram)
        .await
        .unwrap();
    let mut offer = offerer.offer();
    offer.alpn = "roq".into();
    let answerer = QuicAnswerer::bind(config(), Mode::Datagram, &offer)
        .await
        .unwrap();
    let mut answer = answerer.answer();
    answer.alpn = "roq-other".into();
    let (connected, accepted) = tokio::join!(offerer.connect(&answer), answerer.accept());
    let err = connected.expect_err("no common ALPN");
    assert!(matches!(err, QuicError::AlpnMismatch(_)), "{err:?}");
    assert!(err.to_string().contains("does not accept \"roq-other\""), "{err}");
    let err = accepted.unwrap_err().to_string();
    assert!(err.contains("last attempt refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_from_nobody_times_out_with_a_clear_error() {
    let offerer = offerer(Mode::Datagram).await;
    let nobody = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answer = QuicAnswer {
        addr: nobody.local_addr().unwrap(),
        alpn: "roq".into(),
        fingerprint: offerer.offer().fingerprint,
    };
    let started = Instant::now();
    let err = offerer.connect(&answer).await.unwrap_err();
    assert!(matches!(err, QuicError::NoAnswer { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        err.to_string().contains("is the answerer listening there?"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_descriptions_and_modes_are_refused() {
    let offerer = offerer(Mode::Datagram).await;
    let mut offer = offerer.offer();
    offer.fingerprint = "sha-256 00:11".into();
    let err = QuicAnswerer::bind(config(), Mode::Datagram, &offer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fewer than 32 bytes"), "{err}");
    let err = QuicOfferer::bind(config(), Mode::Reliable).await.unwrap_err();
    assert!(err.to_string().contains("not a QUIC mode"), "{err}");
    let err = QuicOfferer::bind(config().flow_id(1 << 62), Mode::Stream)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not fit a QUIC varint"), "{err}");
}

/// A UDP forwarder between the offerer and the answerer; aborting it makes
/// each side's peer vanish without a word.
async fn proxy_to(server: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    client = Some(from);
                    let _ = back.send(&up[..n]).await;
                }
                Ok(n) = back.recv(&mut down) => {
                    if let Some(c) = client {
                        let _ = front.send_to(&down[..n], c).await;
                    }
                }
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_peer_is_detected_within_the_liveness_timeout() {
    for mode in [Mode::Datagram, Mode::Stream] {
        let offerer = offerer(mode).await;
        let answerer = QuicAnswerer::bind(config(), mode, &offerer.offer())
            .await
            .unwrap();
        let mut answer = answerer.answer();
        let (via, proxy) = proxy_to(answer.addr).await;
        answer.addr = via;
        let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
        let (a, b) = (a.unwrap(), b.unwrap());
        a.send(numbered(1, 0, 200)).await.unwrap();
        assert_eq!(b.recv().await.unwrap().ssrc(), 1);

        // Keep-alives hold a quiet link open past the timeout...
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(a.close_reason(), None, "{mode}: quiet but healthy link closed");
        assert_eq!(b.close_reason(), None, "{mode}: quiet but healthy link closed");

        // ...until the path goes silent: no CONNECTION_CLOSE ever arrives.
        proxy.abort();
        let cut = Instant::now();
        let bound = Duration::from_secs(3);
        for (side, link) in [("offerer", &a), ("answerer", &b)] {
            let reason = tokio::time::timeout(bound, link.closed())
                .await
                .unwrap_or_else(|_| panic!("{mode} {side}: silent peer not detected within {bound:?}"));
            assert_eq!(
                reason,
                CloseReason::LivenessTimeout(Duration::from_secs(1)),
                "{mode} {side}"
            );
        }
        let took = cut.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "{mode}: closed too early ({took:?})"
        );
        assert!(matches!(
            a.send(numbered(1, 1, 200)).await,
            Err(relay_core::LinkError::Closed(CloseReason::LivenessTimeout(_)))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_rtt_and_setup_time() {
    let offerer = offerer(Mode::Datagram).await;
    let answerer = QuicAnswerer::bind(config(), Mode::Datagram, &offerer.offer())
        .await
        .unwrap();
    let answer = answerer.answer();
    let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
    let (a, b) = (a.unwrap(), b.unwrap());
    for link in [&a, &b] {
        let s = link.stats();
        let rtt = s.rtt.expect("QUIC measures RTT");
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_millis(500),
            "{rtt:?}"
        );
        let setup = s.setup_time.expect("setup time");
        assert!(setup < Duration::from_secs(1), "{setup:?}");
        assert!(link.max_packet_size() >= relay_core::MIN_MAX_PACKET_SIZE);
    }
}

/// An answerer on every interface must be told which address to give the
/// offerer; with one, the answer carries it and the offerer connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answerer_bound_to_every_interface_needs_an_advertised_ip() {
    let offerer = offerer(Mode::Datagram).await;
    let any = config().bind("0.0.0.0:0".parse().unwrap());
    let err = QuicAnswerer::bind(any.clone(), Mode::Datagram, &offerer.offer())
        .await
        .expect_err("no address an offerer could reach");
    assert!(err.to_string().contains("advertise"), "{err}");

    let advertised = any.advertise_ip(Some("127.0.0.1".parse().unwrap()));
    let answerer = QuicAnswerer::bind(advertised, Mode::Datagram, &offerer.offer())
        .await
        .unwrap();
    let answer = answerer.answer();
    assert_eq!(answer.addr.ip().to_string(), "127.0.0.1");
    let (a, b) = tokio::join!(offerer.connect(&answer), answerer.accept());
    let (a, b) = (a.unwrap(), b.unwrap());
    a.send(numbered(7, 0, 200)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes(), numbered(7, 0, 200).bytes());
}
