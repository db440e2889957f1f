//! Relay trees as processes on loopback: `relay answer --forward` passes
//! what it answers on to further relays. Media reaches every hop (and
//! every `--out` on the way) unchanged; a leaf's RTCP reaches the source,
//! keyframe requests merged; a leaf that joins late gets a keyframe
//! request to the source; flag mistakes are named before anything starts.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

mod common;

use common::{
    Consumer, Guard, StatusLines, answer, field, free_udp_addr, http_get_body, metric, offer,
    receiver_feedback, send_paced, spawn, summary,
};

/// Starts a node: `relay answer` relaying to every `--forward` in
/// `forward` (and to `out`, if given). Returns its signaling URL and its
/// status lines (the `ready link=…` lines of its forward links).
fn node(out: Option<&str>, forward: &[String], extra: &[&str]) -> (Guard, String, StatusLines) {
    let mut args = vec!["answer", "--signal-listen", "127.0.0.1:0"];
    if let Some(out) = out {
        args.extend(["--out", out]);
    }
    for f in forward {
        args.extend(["--forward", f.as_str()]);
    }
    args.extend_from_slice(extra);
    let (child, stdout) = spawn(&args);
    let lines = StatusLines::new(stdout);
    let listening = lines.wait_for("listening ", Duration::from_secs(10));
    let url = field(&listening, "signal").to_string();
    (child, url, lines)
}

/// Whether `packet` is RTCP holding a PLI (payload-specific feedback,
/// FMT 1) for `media`.
fn is_pli_for(packet: &[u8], media: u32) -> bool {
    let mut rest = packet;
    while rest.len() >= 4 {
        let words = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let len = (words + 1) * 4;
        if len > rest.len() {
            return false;
        }
        if rest[1] == 206 && rest[0] & 0x1f == 1 && len >= 12 && rest[8..12] == media.to_be_bytes() {
            return true;
        }
        rest = &rest[len..];
    }
    false
}

/// Reads the sender's socket for up to `within`; counts the PLIs for
/// `media` and the other RTCP packets (receivers' reports) that arrive.
fn feedback_at_source(sender: &UdpSocket, media: u32, within: Duration) -> (usize, usize) {
    let (mut plis, mut reports) = (0, 0);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + within;
    sender.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < deadline {
        if let Ok((n, _)) = sender.recv_from(&mut buf) {
            if is_pli_for(&buf[..n], media) {
                plis += 1;
            } else {
                reports += 1;
            }
        }
    }
    (plis, reports)
}

#[test]
fn a_three_hop_chain_delivers_at_every_hop_and_passes_feedback_up() {
    let base = Instant::now();
    let (leaf, middle) = (Consumer::start(base), Consumer::start(base));
    // source → offer →(rtp-udp) A →(quic) B, which also delivers locally,
    // →(dc) C → the leaf's consumer.
    let (_c, c_url) = answer(&leaf.addr(), &[]);
    let (_b, b_url, b_lines) = node(Some(&middle.addr()), &[format!("{c_url},transport=dc")], &[]);
    let (_a, a_url, a_lines) = node(None, &[b_url], &["--forward-transport", "quic"]);
    for lines in [&a_lines, &b_lines] {
        let ready = lines.wait_for("ready link=1 ", Duration::from_secs(20));
        assert!(field(&ready, "session").len() > 4, "{ready}");
    }
    let input = free_udp_addr();
    let (_offer, stdout) = offer(&a_url, "rtp-udp", &input, &[]);
    let offer_lines = StatusLines::new(stdout);
    offer_lines.wait_for("ready ", Duration::from_secs(10));

    let total = 1_000u16;
    send_paced(&input, total, Duration::from_millis(1), base, 400);
    for (name, consumer) in [("the leaf", leaf), ("B's --out", middle)] {
        let (seqs, worst) = summary(&consumer.finish(Duration::from_millis(300)));
        eprintln!("{name}: {} of {total}, worst one-way delay {worst:?}", seqs.len());
        assert_eq!(seqs.len(), usize::from(total), "{name}: every packet arrives");
    }
    // A's forward link counted every packet it passed down.
    let text = http_get_body(&a_url, "/metrics");
    assert_eq!(
        metric(&text, "relay_forward_packets_down_total", "link=\"1\""),
        f64::from(total),
        "{text}"
    );
    assert_eq!(
        metric(&text, "relay_forward_link_up", "link=\"1\""),
        1.0,
        "{text}"
    );
}

#[test]
fn a_leafs_feedback_reaches_the_source_and_a_late_leaf_asks_for_a_keyframe() {
    let media = 0x1234u32;
    // source → offer → A (quic) → B (rtp-udp) → C → leaf socket.
    let leaf = UdpSocket::bind("127.0.0.1:0").unwrap();
    leaf.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let leaf_addr = leaf.local_addr().unwrap().to_string();
    // C starts after the stream runs: B's forward link waits for it.
    let c_listen = common::free_tcp_addr();
    let c_url = format!("http://{c_listen}");
    let (_b, b_url, b_lines) = node(None, &[format!("{c_url},transport=rtp-udp")], &[]);
    let (_a, a_url, a_lines) = node(None, &[format!("{b_url},transport=quic")], &[]);
    a_lines.wait_for("ready link=1 ", Duration::from_secs(20));
    let input = free_udp_addr();
    let (_offer, stdout) = offer(&a_url, "rtp-udp", &input, &[]);
    StatusLines::new(stdout).wait_for("ready ", Duration::from_secs(10));

    // The source sends all along (a pause would make every hop ask for a
    // keyframe when the stream resumes), until the test ends.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let source = {
        let (sender, streaming, base) = (sender.try_clone().unwrap(), streaming.clone(), Instant::now());
        std::thread::spawn(move || {
            // Bounded: the test stops it, or 2^16 packets (5.5 minutes).
            for seq in 0..=u16::MAX {
                if !streaming.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = sender.send_to(&common::rtp(seq, base, 200), &input);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The offer and A asked the source for a keyframe when the stream
    // appeared; let that settle and clear the socket.
    std::thread::sleep(Duration::from_millis(700));
    feedback_at_source(&sender, media, Duration::from_millis(100));

    // The leaf joins: B's forward link comes up and asks up the tree.
    let (_c, _) = {
        let (child, mut out) = spawn(&["answer", "--signal-listen", &c_listen, "--out", &leaf_addr]);
        let line = common::first_line(&mut out);
        assert!(line.starts_with("listening "), "{line}");
        (child, out)
    };
    b_lines.wait_for("ready link=1 ", Duration::from_secs(20));
    let (plis, _) = feedback_at_source(&sender, media, Duration::from_millis(1500));
    assert_eq!(
        plis, 1,
        "the late leaf's keyframe request reaches the source once"
    );

    // Media reaches the leaf; its relay is where the leaf's feedback goes.
    // Past the merge interval of the late leaf's own request:
    std::thread::sleep(Duration::from_millis(600));
    let mut buf = [0u8; 2048];
    let (_, relay) = leaf.recv_from(&mut buf).expect("media reaches the leaf");
    // The leaf loses a picture twice within the merge interval: both
    // reports reach the source, one keyframe request does.
    leaf.send_to(&receiver_feedback(0xA0, media, true), relay)
        .unwrap();
    leaf.send_to(&receiver_feedback(0xA0, media, true), relay)
        .unwrap();
    let (plis, reports) = feedback_at_source(&sender, media, Duration::from_millis(1000));
    assert_eq!(plis, 1, "keyframe requests are merged on the way up");
    assert!(reports >= 1, "the leaf's receiver report reaches the source too");
    let text = http_get_body(&b_url, "/metrics");
    assert!(
        metric(
            &text,
            "relay_forward_keyframe_requests_merged_total",
            "link=\"1\""
        ) >= 1.0,
        "{text}"
    );
    streaming.store(false, std::sync::atomic::Ordering::Relaxed);
    source.join().unwrap();
}

#[test]
fn a_node_feeds_several_forward_links_each_with_its_own_queue() {
    let base = Instant::now();
    let consumers: Vec<Consumer> = (0..3).map(|_| Consumer::start(base)).collect();
    let leaves: Vec<(Guard, String)> = consumers.iter().map(|c| answer(&c.addr(), &[])).collect();
    let forward: Vec<String> = leaves
        .iter()
        .zip(["rtp-udp", "quic", "dc"])
        .map(|((_, url), t)| format!("{url},transport={t},name={t}"))
        .collect();
    let (_a, a_url, a_lines) = node(None, &forward, &[]);
    for _ in 0..3 {
        a_lines.wait_for("ready link=", Duration::from_secs(20));
    }
    let input = free_udp_addr();
    let (_offer, stdout) = offer(&a_url, "quic", &input, &[]);
    StatusLines::new(stdout).wait_for("ready ", Duration::from_secs(10));
    let total = 500u16;
    send_paced(&input, total, Duration::from_millis(1), base, 300);
    for (consumer, t) in consumers.into_iter().zip(["rtp-udp", "quic", "dc"]) {
        let (seqs, _) = summary(&consumer.finish(Duration::from_millis(300)));
        assert_eq!(seqs.len(), usize::from(total), "{t}: every packet arrives");
    }
    let text = http_get_body(&a_url, "/metrics");
    for t in ["rtp-udp", "quic", "dc"] {
        let link = format!("link=\"{t}\"");
        assert_eq!(
            metric(&text, "relay_forward_packets_down_total", &link),
            f64::from(total),
            "{text}"
        );
    }
}

#[test]
fn forward_mistakes_are_named_before_anything_starts() {
    let out = free_udp_addr();
    for (args, expected) in [
        (vec!["answer", "--signal-listen", "127.0.0.1:0"], "--out <STREAM>"),
        (
            vec!["answer", "--out", &out, "--forward-transport", "quic"],
            "--forward",
        ),
        (
            vec!["answer", "--out", &out, "--forward", "http://127.0.0.1:9"],
            "--forward http://127.0.0.1:9 names no transport: pass --forward-transport",
        ),
        (
            vec![
                "answer",
                "--out",
                &out,
                "--forward",
                "http://127.0.0.1:9,transport=quic,mode=unreliable",
            ],
            "quic has no mode unreliable",
        ),
    ] {
        let (mut child, _) = spawn(&args);
        let status = child
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{args:?} exits"));
        let mut err = String::new();
        use std::io::Read;
        child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(!status.success(), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
