//! `relay offer` → `relay answer` as processes: packets and RTCP flow both
//! ways, stats are reported over HTTP, Ctrl-C deletes the session, and a
//! killed answerer is noticed by the offerer within its liveness timeout.

use std::io::Read;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{answer, field, first_line, free_udp_addr, spawn};

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x12, 0x34]);
    p.extend_from_slice(&[0xAB; 100]);
    p
}

fn http_get(url: &str, path: &str) -> String {
    use std::io::Write;
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect signaling");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn packets_and_rtcp_cross_and_ctrl_c_deletes_the_session() {
    let consumer = UdpSocket::bind("127.0.0.1:0").unwrap();
    consumer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let out = consumer.local_addr().unwrap().to_string();
    let (_answer, url) = answer(&out, &[]);

    let input = free_udp_addr();
    let (mut offer, mut oout) = spawn(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        "rtp-udp",
        "--in",
        &input,
    ]);
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
            let (n, _) = sender
                .recv_from(&mut buf)
                .expect("RTCP relayed back to the sender");
            assert_eq!(&buf[..n], &rr[..]);
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
    let (mut offer, mut oout) = spawn(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        "rtp-udp",
        "--in",
        &input,
        "--liveness-timeout",
        "1",
    ]);
    assert!(first_line(&mut oout).starts_with("ready "));
    answer.0.kill().unwrap(); // SIGKILL: no goodbye, no DELETE
    let status = offer
        .wait_exit(Duration::from_secs(10))
        .expect("offerer notices the dead peer");
    assert!(!status.success());
    let mut err = String::new();
    offer.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("liveness timeout"), "{err}");
}
