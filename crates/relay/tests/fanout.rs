//! One `relay offer` feeding several `relay answer`s at once (fan-out), as
//! processes on loopback: every answering relay gets every packet over its
//! own transport; a stalled or killed receiver does not hold back the
//! others and its losses are counted on its own link; each far side's
//! RTCP reaches the sender, its keyframe requests merged; flag mistakes
//! are named before anything starts.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{
    Consumer, Guard, StatusLines, answer, free_tcp_addr, free_udp_addr, http_get_body, kill, metric,
    receiver_feedback, rtp, send_paced, spawn, summary, wait_ready,
};

/// Starts `relay offer` from `input` to every `--signal` in `signals`.
fn fan_out(input: &str, signals: &[String], extra: &[&str]) -> (Guard, StatusLines) {
    let mut args = vec!["offer", "--in", input, "--metrics-listen", "127.0.0.1:0"];
    for s in signals {
        args.extend(["--signal", s.as_str()]);
    }
    args.extend_from_slice(extra);
    let (child, out) = spawn(&args);
    (child, StatusLines::new(out))
}

#[test]
fn one_offer_feeds_every_transport_and_reports_each_link() {
    let base = Instant::now();
    let transports = ["rtp-udp", "quic", "dc"];
    let consumers: Vec<Consumer> = transports.iter().map(|_| Consumer::start(base)).collect();
    let answers: Vec<(Guard, String)> = consumers.iter().map(|c| answer(&c.addr(), &[])).collect();
    let signals: Vec<String> = answers
        .iter()
        .zip(transports)
        .map(|((_, url), t)| format!("{url},transport={t},name={t}"))
        .collect();
    let input = free_udp_addr();
    let (mut offer, lines) = fan_out(&input, &signals, &[]);
    let metrics = wait_ready(&lines, &transports, Duration::from_secs(20));

    let total = 1_000u16;
    send_paced(&input, total, Duration::from_millis(1), base, 300);
    let received: Vec<Vec<(u16, Duration)>> = consumers
        .into_iter()
        .map(|c| c.finish(Duration::from_millis(300)))
        .collect();
    let text = http_get_body(&metrics, "/metrics");
    for (got, transport) in received.iter().zip(transports) {
        let (seqs, worst) = summary(got);
        eprintln!(
            "{transport}: {} of {total} delivered, worst one-way delay {worst:?}",
            seqs.len()
        );
        assert_eq!(
            seqs.len(),
            usize::from(total),
            "{transport}: every packet arrives"
        );
        let link = format!("link=\"{transport}\"");
        assert_eq!(
            metric(&text, "relay_local_packets_to_link_total", &link),
            f64::from(total),
            "{text}"
        );
        assert_eq!(metric(&text, "relay_offer_link_up", &link), 1.0, "{text}");
        assert_eq!(
            metric(&text, "relay_local_packets_queue_overflow_total", &link),
            0.0
        );
        // The link's own families carry the link label too.
        assert!(
            text.lines().any(
                |l| l.starts_with(&format!("relay_link_packets_sent_total{{{link},session="))
                    && l.contains(&format!("transport=\"{transport}\""))
            ),
            "{transport}: {text}"
        );
    }
    // Ctrl-C ends every session on its answering relay.
    kill("-INT", &offer);
    let status = offer
        .wait_exit(Duration::from_secs(10))
        .expect("the offer exits on SIGINT");
    assert!(status.success(), "{status:?}");
    for (_, url) in &answers {
        let left = http_get_body(url, "/v1/sessions");
        assert_eq!(left.trim(), "[]", "{url}: session left behind");
    }
}

#[test]
fn a_stalled_receiver_loses_only_its_own_packets() {
    let base = Instant::now();
    let (fast, stalled) = (Consumer::start(base), Consumer::start(base));
    let (_fast_answer, fast_url) = answer(&fast.addr(), &["--liveness-timeout", "20"]);
    let (stalled_answer, stalled_url) = answer(&stalled.addr(), &["--liveness-timeout", "20"]);
    let input = free_udp_addr();
    let signals = [
        format!("{fast_url},transport=rtp-udp"),
        // Reliable: a receiver that stops reading stops its sender.
        format!("{stalled_url},transport=quic,mode=stream"),
    ];
    let (_offer, lines) = fan_out(&input, &signals, &["--liveness-timeout", "20"]);
    let metrics = wait_ready(&lines, &["1", "2"], Duration::from_secs(20));

    // The second answering relay stops reading; its QUIC flow-control
    // window, the link's send queue and then the branch queue fill up.
    kill("-STOP", &stalled_answer);
    let total = 8_000u16;
    let gap = Duration::from_micros(250);
    send_paced(&input, total, gap, base, 1_000);
    let stalled_for = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let during = http_get_body(&metrics, "/metrics");
    kill("-CONT", &stalled_answer);

    let (seqs, worst) = summary(&fast.finish(Duration::from_millis(300)));
    eprintln!(
        "fast link: {} of {total} delivered, worst one-way delay {worst:?}",
        seqs.len()
    );
    assert_eq!(seqs.len(), usize::from(total), "the fast link lost packets");
    // The stall lasted the whole send plus a second: a fast link held back
    // by it would see delays of seconds.
    assert!(worst < Duration::from_millis(500), "fast link delayed {worst:?}");

    let overflow = metric(&during, "relay_local_packets_queue_overflow_total", "link=\"2\"");
    assert!(overflow > 0.0, "the stalled link's queue overflowed: {during}");
    assert_eq!(
        metric(&during, "relay_local_packets_queue_overflow_total", "link=\"1\""),
        0.0
    );
    assert!(
        metric(&during, "relay_offer_link_queue_packets", "link=\"2\"") > 0.0,
        "{during}"
    );
    // Once resumed, the stalled link delivers what it still held: every
    // packet was either sent on it or dropped from its queue, counted.
    let mut after = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        after = http_get_body(&metrics, "/metrics");
        if metric(&after, "relay_offer_link_queue_packets", "link=\"2\"") == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = metric(&after, "relay_local_packets_to_link_total", "link=\"2\"");
    let dropped = metric(&after, "relay_local_packets_queue_overflow_total", "link=\"2\"");
    assert_eq!(sent + dropped, f64::from(total), "{after}");
    let (stalled_seqs, _) = summary(&stalled.finish(Duration::from_millis(1_500)));
    eprintln!(
        "stalled link ({:?} stopped): {} delivered after it resumed, {dropped} dropped from its queue",
        stalled_for.elapsed(),
        stalled_seqs.len()
    );
    assert_eq!(
        stalled_seqs.len() as f64,
        sent,
        "a reliable link delivers what it sent"
    );
    assert_eq!(metric(&after, "relay_offer_link_up", ""), 2.0);
}

#[test]
fn a_killed_receiver_is_counted_down_and_reconnects_while_the_other_streams() {
    let base = Instant::now();
    let (steady, killed) = (Consumer::start(base), Consumer::start(base));
    let (_steady_answer, steady_url) = answer(&steady.addr(), &["--liveness-timeout", "1"]);
    let listen = free_tcp_addr();
    let killed_out = killed.addr();
    let answer_at = |listen: &str| {
        let (child, mut out) = spawn(&[
            "answer",
            "--signal-listen",
            listen,
            "--out",
            &killed_out,
            "--liveness-timeout",
            "1",
        ]);
        assert!(common::first_line(&mut out).starts_with("listening "));
        child
    };
    let mut killed_answer = answer_at(&listen);
    let signals = [
        format!("{steady_url},name=steady"),
        format!("http://{listen},name=killed"),
    ];
    let input = free_udp_addr();
    let (_offer, lines) = fan_out(
        &input,
        &signals,
        &["--transport", "rtp-udp", "--reconnect", "--liveness-timeout", "1"],
    );
    let metrics = wait_ready(&lines, &["steady", "killed"], Duration::from_secs(20));

    let total = 3_000u16;
    let gap = Duration::from_millis(2);
    let sending = {
        let input = input.clone();
        std::thread::spawn(move || send_paced(&input, total, gap, base, 200))
    };
    std::thread::sleep(Duration::from_millis(500));
    killed_answer.0.kill().unwrap(); // SIGKILL: no goodbye
    killed_answer.wait_exit(Duration::from_secs(2));
    let down = lines.wait_for("down link=killed ", Duration::from_secs(5));
    assert!(down.contains("liveness"), "{down}");
    let while_down = http_get_body(&metrics, "/metrics");
    killed_answer = answer_at(&listen);
    let back = lines.wait_for("ready link=killed ", Duration::from_secs(10));
    sending.join().unwrap();
    let text = http_get_body(&metrics, "/metrics");
    drop(killed_answer);

    let (seqs, worst) = summary(&steady.finish(Duration::from_millis(300)));
    let (killed_seqs, _) = summary(&killed.finish(Duration::ZERO));
    let missed = metric(&text, "relay_local_packets_no_link_total", "link=\"killed\"");
    eprintln!(
        "steady: {} of {total}, worst delay {worst:?}; killed: {} delivered, {missed} counted while down ({back})",
        seqs.len(),
        killed_seqs.len()
    );
    assert_eq!(seqs.len(), usize::from(total), "the steady link lost packets");
    assert!(
        worst < Duration::from_millis(500),
        "steady link delayed {worst:?}"
    );
    assert_eq!(
        metric(&while_down, "relay_offer_link_up", "link=\"killed\""),
        0.0,
        "{while_down}"
    );
    assert_eq!(metric(&while_down, "relay_offer_link_up", "link=\"steady\""), 1.0);
    assert!(missed > 0.0, "packets while down are counted: {text}");
    assert_eq!(
        metric(&text, "relay_local_packets_no_link_total", "link=\"steady\""),
        0.0
    );
    assert_eq!(metric(&text, "relay_offer_outages_total", "link=\"killed\""), 1.0);
    assert!(
        killed_seqs.iter().any(|&s| f64::from(s) > f64::from(total) / 2.0),
        "media reaches the restarted receiver"
    );
}

#[test]
fn every_receivers_rtcp_reaches_the_sender_with_keyframe_requests_merged() {
    let input = free_udp_addr();
    let receivers: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let answers: Vec<(Guard, String)> = receivers
        .iter()
        .map(|r| answer(&r.local_addr().unwrap().to_string(), &[]))
        .collect();
    let signals: Vec<String> = answers.iter().map(|(_, url)| url.clone()).collect();
    let (_offer, lines) = fan_out(&input, &signals, &["--transport", "quic"]);
    let metrics = wait_ready(&lines, &["1", "2"], Duration::from_secs(20));

    let base = Instant::now();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 2048];
    // Each receiver learns the address its answering relay sends from.
    let mut relays = Vec::new();
    for r in &receivers {
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    for seq in 0..20 {
        sender.send_to(&rtp(seq, base, 200), &input).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    for r in &receivers {
        let (_, from) = r.recv_from(&mut buf).expect("media reaches each receiver");
        relays.push(from);
    }
    // The relay asked for a keyframe itself when the stream appeared; let
    // that request's interval pass and clear it from the sender's socket.
    std::thread::sleep(Duration::from_millis(700));
    while sender.recv_from(&mut buf).is_ok() {}

    // Both receivers lose the picture at once: RR + PLI from each.
    let media = 0x1234;
    for (i, (r, relay)) in receivers.iter().zip(&relays).enumerate() {
        r.send_to(&receiver_feedback(0xA0 + i as u32, media, true), relay)
            .unwrap();
    }
    let mut reports = BTreeSet::new();
    let mut keyframe_requests = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok((n, _)) = sender.recv_from(&mut buf) else {
            continue;
        };
        let Some(rtcp) = relay::pipe::feedback::summarize(&buf[..n]) else {
            continue;
        };
        if buf[1] == 201 {
            reports.insert(u32::from_be_bytes(buf[4..8].try_into().unwrap()));
        }
        keyframe_requests += usize::from(rtcp.keyframe_request);
    }
    assert_eq!(
        reports,
        BTreeSet::from([0xA0, 0xA1]),
        "each receiver's report reaches the sender"
    );
    assert_eq!(
        keyframe_requests, 1,
        "two receivers' PLIs, one request at the sender"
    );
    let text = http_get_body(&metrics, "/metrics");
    assert_eq!(
        metric(&text, "relay_keyframe_requests_merged_total", ""),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "relay_keyframe_requests_relayed_total", ""),
        1.0,
        "{text}"
    );
}

#[test]
fn fan_out_mistakes_are_named_before_anything_starts() {
    let input = free_udp_addr();
    let pin = ["AB"; 32].join(":");
    let cases: [(Vec<String>, &str); 7] = [
        (
            vec!["--signal".into(), "http://127.0.0.1:9".into()],
            "names no transport",
        ),
        (
            vec![
                "--signal".into(),
                "http://127.0.0.1:9,transport=quic".into(),
                "--signal".into(),
                "http://127.0.0.1:9/,transport=quic".into(),
            ],
            "given twice",
        ),
        (
            vec![
                "--signal".into(),
                "https://127.0.0.1:9".into(),
                "--signal".into(),
                "https://127.0.0.1:10".into(),
                "--transport".into(),
                "quic".into(),
                "--signal-fingerprint".into(),
                pin.clone(),
            ],
            "write each relay's pin on its own --signal",
        ),
        (
            vec![
                "--signal".into(),
                "http://127.0.0.1:9".into(),
                "--signal".into(),
                "http://127.0.0.1:10,transport=rtp-udp".into(),
                "--transport".into(),
                "quic".into(),
                "--mode".into(),
                "stream".into(),
            ],
            "rtp-udp has no mode stream",
        ),
        (
            vec![
                "--signal".into(),
                "http://127.0.0.1:9,transport=quic,colour=red".into(),
            ],
            "unknown key \"colour\"",
        ),
        (
            vec![
                "--signal".into(),
                format!("http://127.0.0.1:9,transport=quic,fingerprint={pin}"),
            ],
            "plain http://",
        ),
        (
            vec![
                "--signal".into(),
                "http://127.0.0.1:9".into(),
                "--signal".into(),
                "http://127.0.0.1:10".into(),
                "--transport".into(),
                "rtp-udp".into(),
                "--advertise".into(),
                "203.0.113.7:40000".into(),
            ],
            "add --media-ports",
        ),
    ];
    for (flags, says) in cases {
        let mut args = vec!["offer", "--in", input.as_str()];
        args.extend(flags.iter().map(String::as_str));
        let (mut child, _) = spawn(&args);
        let status = child
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{args:?} did not exit"));
        assert!(!status.success(), "{args:?}");
        let mut err = String::new();
        child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn each_link_carries_its_own_token_from_the_variable_it_names() {
    use std::io::BufReader;
    use std::process::Stdio;
    let base = Instant::now();
    let consumers: Vec<Consumer> = (0..3).map(|_| Consumer::start(base)).collect();
    let tokens = ["token-a", "token-b", "token-c"];
    let answers: Vec<(Guard, String)> = consumers
        .iter()
        .zip(tokens)
        .map(|(c, t)| answer(&c.addr(), &["--token", t]))
        .collect();
    let input = free_udp_addr();
    let mut args = vec!["offer", "--in", &input, "--transport", "rtp-udp"];
    let signals: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, (_, url))| format!("{url},token-env=RELAY_TEST_TOKEN_{i}"))
        .collect();
    for s in &signals {
        args.extend(["--signal", s.as_str()]);
    }
    // The third relay's variable holds the wrong token.
    let mut child = Command::new(common::RELAY)
        .args(&args)
        .env_remove("RELAY_TOKEN")
        .env("RELAY_TEST_TOKEN_0", "token-a")
        .env("RELAY_TEST_TOKEN_1", "token-b")
        .env("RELAY_TEST_TOKEN_2", "token-a")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay offer");
    let stdout = child.stdout.take().unwrap();
    let _offer = Guard(child);
    let lines = StatusLines::new(BufReader::new(stdout));
    // Two links come up and the third fails, in whatever order.
    let (mut ready, mut failed) = (std::collections::BTreeSet::new(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready.len() < 2 || failed.is_none() {
        let line = lines.wait_for("", deadline.saturating_duration_since(Instant::now()));
        if line.starts_with("ready ") {
            ready.insert(common::field(&line, "link").to_string());
        } else if line.starts_with("failed link=3 ") {
            failed = Some(line);
        }
    }
    assert_eq!(ready, ["1".to_string(), "2".to_string()].into());
    let failed = failed.unwrap();
    assert!(failed.contains("401"), "{failed}");
    send_paced(&input, 200, Duration::from_millis(1), base, 200);
    let got: Vec<usize> = consumers
        .into_iter()
        .map(|c| summary(&c.finish(Duration::from_millis(300))).0.len())
        .collect();
    assert_eq!(
        got,
        [200, 200, 0],
        "each relay took its own token; the wrong one none"
    );
}
