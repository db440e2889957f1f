//! Local ends as real SFUs use them, through the `relay` binary on every
//! transport: two streams (video, audio) on one link, each with its own
//! RTCP port on both sides, as Janus's `rtp_forward` (sending side) and a
//! streaming mountpoint (receiving side) have them. The SFUs are played by
//! sockets that do what Janus does on the wire:
//!
//! - Janus A's forwarder announces its RTCP socket with a 12-byte,
//!   header-only RTP packet to `rtcp_port`, then listens there for feedback;
//! - Janus B's mountpoint sends its keyframe requests from its RTCP port to
//!   the address it learned from RTCP arriving there.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{RELAY, field, first_line, spawn};
use relay::pipe::feedback::summarize;

const VIDEO_SSRC: u32 = 0x1111_0001;
const AUDIO_SSRC: u32 = 0x2222_0002;
const VIEWER_SSRC: u32 = 0xBBBB_0003;

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

fn rtp(pt: u8, seq: u16, ssrc: u32, payload: usize) -> Vec<u8> {
    relay_core::build_rtp(pt, seq, u32::from(seq) * 3000, ssrc, &vec![0xAB; payload]).to_vec()
}

/// A sender report from `ssrc` (RFC 3550 section 6.4.1, no report blocks).
fn sender_report(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

/// A PLI (RFC 4585 section 6.3.1) from `sender` about `media`.
fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// Every datagram `socket` receives within `for_`, with its source.
fn drain(socket: &UdpSocket, for_: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + for_;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
    }
    got
}

/// Receives until `pred` holds for a datagram (bounded by `within`).
fn wait_for(
    socket: &UdpSocket,
    within: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && pred(&buf[..n])
        {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

fn is_keyframe_request_for(bytes: &[u8], ssrc: u32) -> bool {
    summarize(bytes).is_some_and(|s| s.keyframe_request && s.ssrcs.contains(&ssrc))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn two_sfus(transport: &str, mode: &str) {
    // Janus B's mountpoint: video and audio ports, each with an RTCP port.
    let (video_b, video_b_rtcp, audio_b, audio_b_rtcp) = (socket(), socket(), socket(), socket());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let out_video = format!(
        "{},rtcp={},pt=96",
        video_b.local_addr().unwrap(),
        port(&video_b_rtcp)
    );
    let out_audio = format!(
        "{},rtcp={},pt=111",
        audio_b.local_addr().unwrap(),
        port(&audio_b_rtcp)
    );
    let (_answer, mut answer_out) = spawn(&[
        "answer",
        "--signal-listen",
        "127.0.0.1:0",
        "--out",
        &out_video,
        "--out",
        &out_audio,
        "--clock-rate",
        "111=48000",
    ]);
    let url = field(&first_line(&mut answer_out), "signal").to_string();

    // The offering relay's --in streams (port 0: it prints what it bound).
    let metrics = common::free_tcp_addr();
    let (_offer, mut offer_out) = spawn(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        transport,
        "--mode",
        mode,
        "--in",
        "127.0.0.1:0,rtcp=127.0.0.1:0",
        "--in",
        "127.0.0.1:0,rtcp=127.0.0.1:0",
        "--clock-rate",
        "111=48000",
        "--metrics-listen",
        &metrics,
    ]);
    let ready = first_line(&mut offer_out);
    assert!(ready.starts_with("ready "), "{transport}/{mode}: {ready}");
    let ins: Vec<(SocketAddr, SocketAddr)> = ready
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("in="))
        .map(|s| {
            let (rtp, rtcp) = s.split_once(",rtcp=").expect("in=RTP,rtcp=RTCP");
            (rtp.parse().unwrap(), rtcp.parse().unwrap())
        })
        .collect();
    assert_eq!(ins.len(), 2, "{ready}");
    let ((video_in, video_in_rtcp), (audio_in, audio_in_rtcp)) = (ins[0], ins[1]);

    // Janus A's forwarders: media sockets and per-forwarder RTCP sockets,
    // announced with a header-only RTP packet.
    let (video_a, video_a_rtcp, audio_a, audio_a_rtcp) = (socket(), socket(), socket(), socket());
    video_a_rtcp
        .send_to(&rtp(96, 0, VIDEO_SSRC, 0), video_in_rtcp)
        .unwrap();
    audio_a_rtcp
        .send_to(&rtp(111, 0, AUDIO_SSRC, 0), audio_in_rtcp)
        .unwrap();
    // A header-only packet on a media port is a keepalive, not media.
    video_a.send_to(&rtp(96, 0, VIDEO_SSRC, 0), video_in).unwrap();
    // Media, after the link is up: a forward added to a live link.
    for seq in 1..=50u16 {
        video_a
            .send_to(&rtp(96, seq, VIDEO_SSRC, 1000), video_in)
            .unwrap();
        audio_a
            .send_to(&rtp(111, seq, AUDIO_SSRC, 100), audio_in)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // RTP on an RTCP port is never relayed as media.
    video_a_rtcp
        .send_to(&rtp(96, 999, 0x9999_9999, 500), video_in_rtcp)
        .unwrap();

    // The relay asks Janus A's video forwarder for a keyframe, at the
    // address the announcement came from; not the audio one.
    let request = wait_for(&video_a_rtcp, Duration::from_secs(5), |b| {
        is_keyframe_request_for(b, VIDEO_SSRC)
    });
    assert!(
        request.is_some(),
        "{transport}/{mode}: no keyframe request reached the video source's RTCP socket"
    );
    // Each stream's RTP arrives on its own port, by payload type; nothing
    // header-only, nothing from the RTCP port.
    let video = drain(&video_b, Duration::from_millis(300));
    let audio = drain(&audio_b, Duration::from_millis(100));
    let ssrc = |b: &[u8]| u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    assert_eq!(
        video.len(),
        50,
        "{transport}/{mode}: video packets at the video --out"
    );
    assert!(video.iter().all(|(b, _)| ssrc(b) == VIDEO_SSRC && b.len() > 12));
    assert_eq!(
        audio.len(),
        50,
        "{transport}/{mode}: audio packets at the audio --out"
    );
    assert!(audio.iter().all(|(b, _)| ssrc(b) == AUDIO_SSRC));

    // Janus B learns the relay's RTCP socket from the RR it sends at link
    // up, and sends a late viewer's PLI there; it reaches Janus A's video
    // forwarder unchanged.
    let (_, relay_rtcp) = wait_for(&video_b_rtcp, Duration::from_secs(6), |b| {
        relay_core::classify(b) == Ok(relay_core::PacketKind::Rtcp)
    })
    .expect("RTCP from the answering relay at the mountpoint's video RTCP port");
    video_b_rtcp
        .send_to(&pli(VIEWER_SSRC, VIDEO_SSRC), relay_rtcp)
        .unwrap();
    let relayed = wait_for(&video_a_rtcp, Duration::from_secs(3), |b| {
        b == pli(VIEWER_SSRC, VIDEO_SSRC).as_slice()
    });
    assert!(
        relayed.is_some(),
        "{transport}/{mode}: the viewer's PLI did not reach the source"
    );

    // Janus A's sender report for the video stream reaches the video
    // mountpoint's RTCP port, not the audio one.
    video_a_rtcp
        .send_to(&sender_report(VIDEO_SSRC), video_in_rtcp)
        .unwrap();
    let sr = wait_for(&video_b_rtcp, Duration::from_secs(3), |b| {
        b == sender_report(VIDEO_SSRC).as_slice()
    });
    assert!(
        sr.is_some(),
        "{transport}/{mode}: SR did not reach the video RTCP port"
    );

    let text = common::http_get_body(&format!("http://{metrics}"), "/metrics");
    assert!(metric(&text, "relay_keyframe_requests_total") >= 1, "{text}");
    assert!(
        metric(&text, "relay_keyframe_requests_relayed_total") >= 1,
        "{text}"
    );
    assert_eq!(metric(&text, "relay_local_packets_keepalive_total"), 1, "{text}");
    // Two announcements and the stray RTP packet.
    assert_eq!(metric(&text, "relay_local_packets_not_rtcp_total"), 3, "{text}");
    assert!(
        drain(&audio_a_rtcp, Duration::from_millis(100))
            .iter()
            .all(|(b, _)| !summarize(b).is_some_and(|s| s.keyframe_request)),
        "{transport}/{mode}: audio (48 kHz) gets no keyframe request"
    );
}

fn transports() -> Vec<(String, String)> {
    let out = std::process::Command::new(RELAY)
        .arg("transports")
        .output()
        .expect("relay transports");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, m)| (t.to_string(), m.to_string()))
        .collect()
}

#[test]
fn two_streams_with_their_own_rtcp_ports_on_every_transport() {
    let lines = transports();
    assert!(lines.len() >= 2, "{lines:?}");
    for (transport, mode) in lines {
        two_sfus(&transport, &mode);
    }
}

#[test]
fn bad_stream_specs_are_refused_with_the_syntax() {
    for (args, says) in [
        (vec!["answer", "--out", "127.0.0.1:1,rtcp=1"], "multiplex"),
        (
            vec!["answer", "--out", "127.0.0.1:1", "--out", "127.0.0.1:2"],
            "pt=",
        ),
        (
            vec![
                "answer",
                "--out",
                "127.0.0.1:1,pt=96",
                "--out",
                "127.0.0.1:2,pt=96",
            ],
            "pt=96",
        ),
        (
            vec![
                "offer",
                "--signal",
                "http://127.0.0.1:1",
                "--transport",
                "rtp-udp",
                "--in",
                "127.0.0.1:1,pt=300",
            ],
            "0-127",
        ),
        (
            vec!["answer", "--out", "127.0.0.1:1", "--clock-rate", "111"],
            "PT=HZ",
        ),
        (
            vec![
                "answer",
                "--out",
                "127.0.0.1:1",
                "--sdp",
                "/nonexistent/stream.sdp",
            ],
            "cannot read --sdp /nonexistent/stream.sdp",
        ),
    ] {
        let out = std::process::Command::new(RELAY).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
