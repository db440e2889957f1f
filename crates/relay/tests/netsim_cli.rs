//! The README's "Impair a link", from the command line: `relay answer`
//! binds its media in a one-port range (`--media-ports P-P`) and advertises
//! the port of a `relay netsim` in front of it (`--advertise 127.0.0.1:Q`),
//! `relay netsim --listen Q --to P` forwards, and `relay offer` reaches the
//! answerer only through it (nothing else listens on Q, so a link that
//! carries media proves the path). A second session finds the range used
//! up and fails with one clear line.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use relay_core::build_rtp;

mod common;

use common::{Guard, answer, drain_stderr, first_line, free_udp_addr, offer, spawn};

const PACKETS: u16 = 300;

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sends PACKETS RTP packets into `input` and counts what reaches `out`
/// (waiting up to 2 s for stragglers).
fn carry(input: &str, out: &UdpSocket) -> usize {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    out.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..PACKETS {
        let p = build_rtp(96, seq, u32::from(seq) * 3000, 0x5EED, &[7u8; 800]);
        tx.send_to(&p, input).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        while let Ok(n) = out.recv(&mut buf) {
            got += usize::from(n > 12);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match out.recv(&mut buf) {
            Ok(n) => got += usize::from(n > 12),
            Err(_) if got >= usize::from(PACKETS) => break,
            Err(_) => {}
        }
    }
    got
}

fn through_netsim(transport: &str, mode: &str) {
    let media = port(&free_udp_addr());
    let front = free_udp_addr();
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out_addr = out.local_addr().unwrap().to_string();
    let range = format!("{media}-{media}");
    let (mut answerer, url) = answer(&out_addr, &["--media-ports", &range, "--advertise", &front]);
    let answer_log = drain_stderr(&mut answerer, 8 * 1024);
    let (netsim, mut netsim_out): (Guard, _) = spawn(&[
        "netsim",
        "--listen",
        &front,
        "--to",
        &format!("127.0.0.1:{media}"),
        "--delay",
        "5ms",
    ]);
    let line = first_line(&mut netsim_out);
    assert!(line.starts_with("netsim listen="), "{line:?}");

    let input = free_udp_addr();
    let (mut offerer, mut offer_out) = offer(&url, transport, &input, &["--mode", mode]);
    let offer_log = drain_stderr(&mut offerer, 8 * 1024);
    let ready = first_line(&mut offer_out);
    assert!(
        ready.starts_with("ready "),
        "{transport} {mode}: {ready:?}\noffer: {}\nanswer: {}",
        {
            drop(offerer);
            offer_log.join().unwrap()
        },
        {
            drop(answerer);
            answer_log.join().unwrap()
        }
    );
    let got = carry(&input, &out);
    assert!(
        got >= usize::from(PACKETS) * 95 / 100,
        "{transport} {mode}: {got} of {PACKETS} through the netsim"
    );
    if transport == "rtp-udp" {
        // The range has one port and the first session holds it.
        // (Its stdout stays open until it exits: a closed pipe is not
        // what this checks.)
        let (mut second, _second_out) = offer(&url, transport, &free_udp_addr(), &["--mode", mode]);
        let status = second
            .wait_exit(Duration::from_secs(20))
            .expect("the second offer gives up");
        assert!(!status.success());
        let mut err = String::new();
        use std::io::Read;
        second.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.lines()
                .last()
                .unwrap_or("")
                .contains(&format!("every media port in {range}")),
            "{err}"
        );
    }

    // The netsim was the path: without it nothing arrives.
    drop(netsim);
    let without = carry(&input, &out);
    assert!(
        without < usize::from(PACKETS) / 10,
        "{transport} {mode}: {without} of {PACKETS} arrived with the netsim gone"
    );
}

#[test]
fn srtp_goes_through_a_netsim_in_front_of_the_media_port() {
    through_netsim("rtp-udp", "srtp");
}

#[test]
fn quic_goes_through_a_netsim_in_front_of_the_media_port() {
    through_netsim("quic", "datagram");
}

#[test]
fn a_data_channel_goes_through_a_netsim_in_front_of_the_media_port() {
    through_netsim("dc", "unreliable");
}
