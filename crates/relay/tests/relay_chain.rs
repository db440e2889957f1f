//! `relay offer` → `relay answer` as processes: packets and RTCP flow both
//! ways, stats are reported over HTTP, Ctrl-C deletes the session, and a
//! killed answerer is noticed by the offerer within its liveness timeout.

use std::io::Read;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

mod common;

/// The whole response to `GET path` over TLS at `url` (`https://host:port…`),
/// trusting exactly the certificate with fingerprint `fingerprint`.
fn https_get_pinned(url: &str, path: &str, fingerprint: &str) -> String {
    use relay_core::pin::PinRecord;
    use std::io::Write;
    use std::sync::Arc;
    let host = url.trim_start_matches("https://").split('/').next().unwrap();
    let expected: relay_core::Fingerprint = fingerprint.parse().expect("a fingerprint");
    let config = relay_signaling::pinned_client_config(expected, Arc::new(PinRecord::default())).unwrap();
    let name = rustls::pki_types::ServerName::try_from("sfu-relay").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(host).expect("connect metrics");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    response
}

use common::{answer, field, first_line, free_udp_addr, http_get, offer, spawn};

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x12, 0x34]);
    p.extend_from_slice(&[0xAB; 100]);
    p
}

#[test]
fn packets_and_rtcp_cross_and_ctrl_c_deletes_the_session() {
    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    consumer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (_answer, url) = answer(&out, &[]);

    let input = free_udp_addr();
    let (mut offer, mut oout) = offer(&url, "rtp-udp", &input, &[]);
    let ready = first_line(&mut oout);
    assert!(ready.starts_with("ready "), "{ready:?}");
    let session = field(&ready, "session").to_string();

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..50u16 {
        sender.send_to(&rtp(seq), &input).unwrap();
        let (n, from) = consumer.recv_from(&mut buf).expect("packet relayed to --out");
        assert_eq!(&buf[..n], &rtp(seq)[..]);
        if seq == 49 {
            // The consumer's receiver report goes back to the socket that
            // sent to it and must reach the original sender.
            let rr = [
                0x81, 201, 0, 7, 0, 0, 0x56, 0x78, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0,
            ];
            consumer.send_to(&rr, from).unwrap();
            // The relay's own keyframe request (the stream is new on a
            // live link) may come first; the RR follows unchanged.
            let mut relayed = false;
            for _ in 0..3 {
                let (n, _) = sender
                    .recv_from(&mut buf)
                    .expect("RTCP relayed back to the sender");
                if buf[..n] == rr[..] {
                    relayed = true;
                    break;
                }
                let request = relay::pipe::feedback::summarize(&buf[..n]);
                assert!(request.is_some_and(|r| r.keyframe_request), "{:?}", &buf[..n]);
            }
            assert!(relayed, "the consumer's RR reached the sender");
        }
    }
    let stats = http_get(&url, &format!("/v1/sessions/{session}/stats"));
    assert!(stats.contains("\"packets_received\":50"), "{stats}");

    // Ctrl-C on the offerer: DELETE, exit 0, session gone on the answerer.
    let pid = offer.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = offer
        .wait_exit(Duration::from_secs(10))
        .expect("offerer exits on SIGINT");
    assert!(status.success(), "{status:?}");
    let list = http_get(&url, "/v1/sessions");
    assert!(list.ends_with("[]"), "session left behind: {list}");
}

#[test]
fn offerer_notices_a_killed_answerer_within_the_liveness_timeout() {
    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (mut answer, url) = answer(&out, &[]);
    let input = free_udp_addr();
    let (mut offer, mut oout) = offer(&url, "rtp-udp", &input, &["--liveness-timeout", "1"]);
    assert!(first_line(&mut oout).starts_with("ready "));
    answer.0.kill().unwrap(); // SIGKILL: no goodbye, no DELETE
    let killed = std::time::Instant::now();
    let status = offer
        .wait_exit(Duration::from_secs(10))
        .expect("offerer notices the dead peer");
    let noticed = killed.elapsed();
    assert!(!status.success());
    // Liveness timeout 1 s, plus the keepalive interval and scheduling.
    assert!(noticed < Duration::from_secs(3), "noticed after {noticed:?}");
    let mut err = String::new();
    offer.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("liveness timeout"), "{err}");
}

/// Open file descriptors of a process (its sockets among them).
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn answerer_ends_the_session_of_a_killed_offerer_and_frees_its_sockets() {
    for transport in ["rtp-udp", "quic", "dc"] {
        let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
        consumer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let out = consumer.local_addr().unwrap().to_string();
        let (mut answer, url) = answer(&out, &["--liveness-timeout", "1"]);
        let pid = answer.0.id();
        let idle_fds = fd_count(pid);
        let input = free_udp_addr();
        let (mut offer, mut oout) = offer(&url, transport, &input, &["--liveness-timeout", "1"]);
        assert!(first_line(&mut oout).starts_with("ready "), "{transport}");
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 2048];
        for seq in 0..20 {
            sender.send_to(&rtp(seq), &input).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        consumer.recv_from(&mut buf).expect("media flows before the kill");
        assert!(fd_count(pid) > idle_fds, "{transport}: the session holds sockets");

        offer.0.kill().unwrap(); // SIGKILL: no goodbye, no DELETE
        let killed = std::time::Instant::now();
        let mut ended = None;
        while killed.elapsed() < Duration::from_secs(6) {
            if http_get(&url, "/v1/sessions").ends_with("[]") {
                ended = Some(killed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ended =
            ended.unwrap_or_else(|| panic!("{transport}: session of the killed offerer still listed"));
        // Liveness timeout 1 s, plus the keepalive interval and scheduling.
        assert!(
            ended < Duration::from_secs(3),
            "{transport}: noticed after {ended:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while fd_count(pid) > idle_fds && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(fd_count(pid), idle_fds, "{transport}: sockets not freed");

        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        answer
            .wait_exit(Duration::from_secs(5))
            .expect("answer exits on SIGINT");
        let mut err = String::new();
        answer.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let ended_line = err
            .lines()
            .find(|l| l.contains("session ended"))
            .unwrap_or_else(|| panic!("{transport}: no 'session ended' log: {err}"));
        assert!(
            ended_line.contains("liveness")
                || ended_line.contains("timed out")
                || ended_line.contains("idle"),
            "{transport}: the log does not say why: {ended_line}"
        );
        eprintln!("{transport}: killed offerer noticed in {ended:?}: {ended_line}");
    }
}

#[test]
fn offer_reconnect_survives_an_answer_restart() {
    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    consumer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (mut first, url) = answer(&out, &["--liveness-timeout", "1"]);
    let listen = url.trim_start_matches("http://").to_string();
    let input = free_udp_addr();
    let (_offer, mut oout) = offer(&url, "quic", &input, &["--liveness-timeout", "1", "--reconnect"]);
    let session1 = field(&first_line(&mut oout), "session").to_string();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 2048];
    let mut seq = 0u16;
    let mut send_and_receive = |until: &dyn Fn(u16) -> bool| -> Option<u16> {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            sender.send_to(&rtp(seq), &input).unwrap();
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(2));
            while let Ok((n, _)) = consumer.recv_from(&mut buf) {
                if n >= 4 {
                    let got = u16::from_be_bytes([buf[2], buf[3]]);
                    if until(got) {
                        return Some(got);
                    }
                }
                consumer.set_nonblocking(true).unwrap();
            }
            consumer.set_nonblocking(false).unwrap();
        }
        None
    };
    let before = send_and_receive(&|_| true).expect("media flows through the first answer");

    first.0.kill().unwrap(); // SIGKILL the answering relay
    first.wait_exit(Duration::from_secs(2));
    let restarted = std::time::Instant::now();
    let (_second, mut aout) = spawn(&[
        "answer",
        "--signal-listen",
        &listen,
        "--out",
        &out,
        "--liveness-timeout",
        "1",
    ]);
    assert!(
        first_line(&mut aout).starts_with("listening "),
        "the answer restarts on the same port"
    );

    let session2 = field(&first_line(&mut oout), "session").to_string();
    assert_ne!(session1, session2, "a new session after the restart");
    let after = send_and_receive(&|s| s > before).expect("media flows again after the restart");
    let resumed = restarted.elapsed();
    eprintln!(
        "answer restart: media resumed {resumed:?} after the new answer started (seq {before} -> {after})"
    );
    // Liveness (1 s) to notice, at most one 2 s backoff, setup.
    assert!(resumed < Duration::from_secs(5), "resumed only after {resumed:?}");
}

/// The sample of `name` whose labels contain `label`, from exposition text.
fn sample<'a>(text: &'a str, name: &str, label: &str) -> Option<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
}

#[test]
fn https_signaling_with_a_pinned_fingerprint_and_metrics_on_both_sides() {
    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    consumer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (_answer, mut aout) = spawn(&[
        "answer",
        "--signal-listen",
        "127.0.0.1:0",
        "--out",
        &out,
        "--signal-self-signed",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let status = first_line(&mut aout);
    let url = field(&status, "signal").to_string();
    assert!(url.starts_with("https://"), "{status}");
    let fingerprint = field(&status, "signal_fingerprint").to_string();
    let answer_metrics = field(&status, "metrics").to_string();
    let input = free_udp_addr();

    // Without the pin, and with a wrong one: refused, saying what to do.
    let wrong = ["00"; 32].join(":");
    for (extra, expect) in [
        (vec![], "--signal-fingerprint"),
        (vec!["--signal-fingerprint", wrong.as_str()], &fingerprint[..]),
    ] {
        let (mut refused, _) = offer(&url, "rtp-udp", &input, &extra);
        let status = refused
            .wait_exit(Duration::from_secs(10))
            .expect("refused offer exits");
        assert!(!status.success());
        let mut err = String::new();
        refused.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.contains(expect), "expected {expect:?} in: {err}");
    }

    let (_offer, mut oout) = spawn(&[
        "offer",
        "--signal",
        &url,
        "--signal-fingerprint",
        &fingerprint,
        "--transport",
        "quic",
        "--in",
        &input,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let ready = first_line(&mut oout);
    assert!(ready.starts_with("ready "), "{ready}");
    let offer_metrics = field(&ready, "metrics").to_string();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..50 {
        sender.send_to(&rtp(seq), &input).unwrap();
        consumer
            .recv_from(&mut buf)
            .expect("relayed over https-signaled quic");
    }
    // The answerer's metrics are HTTPS with the signaling identity: read
    // them pinning the same fingerprint.
    assert!(answer_metrics.starts_with("https://"), "{answer_metrics}");
    let answer_text = https_get_pinned(&answer_metrics, "/metrics", &fingerprint);
    assert!(answer_text.contains("text/plain; version=0.0.4"), "{answer_text}");
    assert_eq!(
        sample(
            &answer_text,
            "relay_link_packets_received_total",
            "role=\"answer\""
        ),
        Some("50"),
        "{answer_text}"
    );
    assert!(
        answer_text.contains("relay_stream_resumptions_total 0"),
        "{answer_text}"
    );
    let offer_text = http_get(&offer_metrics, "/metrics");
    assert_eq!(
        sample(&offer_text, "relay_link_packets_sent_total", "role=\"offer\""),
        Some("50"),
        "{offer_text}"
    );
    assert!(offer_text.contains("relay_offer_link_up 1"), "{offer_text}");
    assert!(
        offer_text.contains("relay_local_packets_to_link_total 50"),
        "{offer_text}"
    );
}
