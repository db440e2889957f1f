//! Two relays on two hosts with a NAT between them, in network namespaces
//! this test makes and removes itself: host `a` (10.77.1.2, private, the
//! offering relay) reaches host `b` (198.51.100.2, public, the answering
//! relay) only through router `r`, which masquerades `a` behind its own
//! outside address (nftables, source ports 40000-40999). `b` has no route
//! to `a`'s network, so every packet from `b` to `a` depends on the NAT's
//! mapping, as across the internet.
//!
//! Per transport line: the link comes up and carries a paced RTP stream
//! end to end; then the NAT is forced to rebind mid-stream (the masquerade
//! moves to ports 41000-41999 and the conntrack table is flushed, so `a`'s
//! next packet leaves from a new outside port) and the stream must go on:
//! at once on the lines that follow a peer to a new address (rtp-udp srtp
//! latching on authenticated packets, QUIC's connection migration), after
//! one liveness timeout (1 s here) and a new offer on the others, whose
//! offering relay runs with `--reconnect` (plain rtp-udp with `--latch`,
//! which latches once; the data channel, whose ICE does not follow).
//!
//! Needs root (CI runs as root), iproute2, nftables and conntrack
//! (scripts/install-deps.sh); skipped with a notice otherwise.
#![cfg(target_os = "linux")]

use std::io::{BufReader, Write};
use std::net::UdpSocket;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use relay_core::build_rtp;

mod common;

use common::{Guard, RELAY, drain_stderr, first_line, is_root, notice, run};

const A_IP: &str = "10.77.1.2";
const B_IP: &str = "198.51.100.2";
const TOKEN: &str = "nat-test-token";
const PACKETS: u16 = 400;

/// The three namespaces; dropping it kills what runs inside and deletes
/// them (their veth pairs go with them).
struct Network {
    prefix: String,
}

impl Network {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn create() -> Result<Network, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "sfunat{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let net = Network { prefix };
        let (a, b, r) = (net.ns("a"), net.ns("b"), net.ns("r"));
        for ns in [&a, &b, &r] {
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        for (inside, host, router_ip, host_ip) in [
            ("in0", &a, "10.77.1.1/24", "10.77.1.2/24"),
            ("out0", &b, "198.51.100.1/24", "198.51.100.2/24"),
        ] {
            run(
                "ip",
                &[
                    "-n", &r, "link", "add", inside, "type", "veth", "peer", "name", "eth0", "netns", host,
                ],
            )?;
            run("ip", &["-n", &r, "addr", "add", router_ip, "dev", inside])?;
            run("ip", &["-n", &r, "link", "set", inside, "up"])?;
            run("ip", &["-n", host, "addr", "add", host_ip, "dev", "eth0"])?;
            run("ip", &["-n", host, "link", "set", "eth0", "up"])?;
        }
        run("ip", &["-n", &a, "route", "add", "default", "via", "10.77.1.1"])?;
        run(
            "ip",
            &["netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        )?;
        run("ip", &["netns", "exec", &r, "nft", "add", "table", "ip", "nat"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &r,
                "nft",
                "add chain ip nat post { type nat hook postrouting priority 100 ; }",
            ],
        )?;
        net.masquerade("40000-40999")?;
        Ok(net)
    }

    /// Masquerades `a` behind the router's outside address: UDP from
    /// `ports`, anything else (the signaling's TCP) as the kernel likes.
    fn masquerade(&self, ports: &str) -> Result<(), String> {
        let r = self.ns("r");
        run(
            "ip",
            &["netns", "exec", &r, "nft", "flush", "chain", "ip", "nat", "post"],
        )?;
        for rule in [
            format!("add rule ip nat post oifname \"out0\" meta l4proto udp masquerade to :{ports}"),
            "add rule ip nat post oifname \"out0\" masquerade".to_string(),
        ] {
            run("ip", &["netns", "exec", &r, "nft", &rule])?;
        }
        Ok(())
    }

    /// Forces a new mapping: new outside ports, and the old mapping gone.
    fn rebind(&self) -> Result<(), String> {
        self.masquerade("41000-41999")?;
        run("ip", &["netns", "exec", &self.ns("r"), "conntrack", "-F"])
    }

    /// `relay args` inside host `host`.
    fn relay(&self, host: &str, args: &[&str]) -> (Guard, BufReader<ChildStdout>) {
        let ns = self.ns(host);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, RELAY])
            .args(args)
            .env_remove("RELAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay in a namespace");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        (Guard(child), out)
    }

    /// The body of `GET path` on the answering relay's signaling server,
    /// asked from inside host `b` (the test's own namespace cannot reach
    /// it).
    fn get_in_b(&self, path: &str) -> String {
        use std::io::Read;
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.ns("b"))).expect("namespace file");
        let path = path.to_string();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut s = std::net::TcpStream::connect((B_IP, 8080)).expect("connect signaling");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {B_IP}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).unwrap();
            response
        })
        .join()
        .expect("namespace thread")
    }

    /// A UDP socket bound to `addr` inside host `host` (made on a thread
    /// that enters the namespace; the socket stays there).
    fn udp(&self, host: &str, addr: &str) -> UdpSocket {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.ns(host))).expect("namespace file");
        let addr = addr.to_string();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            UdpSocket::bind(addr).expect("bind inside the namespace")
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in ["a", "b", "r"] {
            let ns = self.ns(host);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            if let Err(e) = run("ip", &["netns", "del", &ns]) {
                notice(&format!("nat_netns: could not delete namespace {ns}: {e}"));
            }
        }
    }
}

/// Whether this machine can run the test; says why not.
fn usable() -> bool {
    if !is_root() {
        notice("SKIP nat_netns: needs root to make network namespaces (CI runs as root)");
        return false;
    }
    for tool in ["nft", "conntrack"] {
        if Command::new(tool).arg("--version").output().is_err() {
            notice(&format!(
                "SKIP nat_netns: `{tool}` is missing (scripts/install-deps.sh installs it)"
            ));
            return false;
        }
    }
    true
}

/// Sends `count` packets from `seq` at 2 ms into `tx`→`input`, and counts
/// the packets of the stream that reach `rx` by sequence number.
fn stream(tx: &UdpSocket, input: &str, rx: &UdpSocket, seqs: std::ops::Range<u16>) -> Vec<u16> {
    rx.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut take = |got: &mut Vec<u16>| {
        while let Ok(n) = rx.recv(&mut buf) {
            if n >= 12 {
                got.push(u16::from_be_bytes([buf[2], buf[3]]));
            }
        }
    };
    for seq in seqs {
        let p = build_rtp(96, seq, u32::from(seq) * 3000, 0xA7A7, &[9u8; 700]);
        tx.send_to(&p, input).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        take(&mut got);
    }
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        take(&mut got);
    }
    got
}

/// What a line does when the NAT rebinds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rebinding {
    /// Follows the peer to its new address.
    Follows,
    /// Loses the link at the liveness timeout; `--reconnect` offers anew.
    Reconnects,
}

fn through_nat(transport: &str, mode: &str, rebinding: Rebinding) {
    if !usable() {
        return;
    }
    let net = Network::create().unwrap_or_else(|e| panic!("making the namespaces: {e}"));
    let out = net.udp("b", "127.0.0.1:6004");
    let (mut answerer, mut answer_out) = net.relay(
        "b",
        &[
            "answer",
            "--signal-listen",
            &format!("{B_IP}:8080"),
            "--bind",
            B_IP,
            "--out",
            "127.0.0.1:6004",
            "--token",
            TOKEN,
            "--liveness-timeout",
            "1",
            "--latch",
        ],
    );
    let answer_log = drain_stderr(&mut answerer, 16 * 1024);
    let listening = first_line(&mut answer_out);
    assert!(listening.contains("signal="), "{listening:?}: {}", {
        drop(answerer);
        answer_log.join().unwrap()
    });
    let (mut offerer, mut offer_out) = net.relay(
        "a",
        &[
            "offer",
            "--signal",
            &format!("http://{B_IP}:8080"),
            "--token",
            TOKEN,
            "--transport",
            transport,
            "--mode",
            mode,
            "--bind",
            A_IP,
            "--in",
            "127.0.0.1:5004",
            "--liveness-timeout",
            "1",
            "--latch",
            "--reconnect",
        ],
    );
    let offer_log = drain_stderr(&mut offerer, 16 * 1024);
    let ready = first_line(&mut offer_out);
    let logs = |offerer: Guard, answerer: Guard| {
        drop((offerer, answerer));
        format!(
            "\n--- offer:\n{}\n--- answer:\n{}",
            offer_log.join().unwrap(),
            answer_log.join().unwrap()
        )
    };
    if !ready.starts_with("ready ") {
        panic!(
            "{transport} {mode}: no link through the NAT: {ready:?}{}",
            logs(offerer, answerer)
        );
    }
    let session = common::field(&ready, "session").to_string();
    let tx = net.udp("a", "127.0.0.1:0");
    let before = stream(&tx, "127.0.0.1:5004", &out, 0..PACKETS);
    let wanted = usize::from(PACKETS) * 95 / 100;
    if before.len() < wanted {
        panic!(
            "{transport} {mode}: {} of {PACKETS} through the NAT{}",
            before.len(),
            logs(offerer, answerer)
        );
    }
    net.rebind().unwrap_or_else(|e| panic!("rebinding the NAT: {e}"));
    // Following: the first packets after the rebinding may be lost while
    // the far end learns the new address. Reconnecting: a liveness timeout
    // (1 s), a new offer and its setup. The last quarter must all but
    // fully arrive.
    let after_packets = match rebinding {
        Rebinding::Follows => PACKETS,
        Rebinding::Reconnects => 4 * PACKETS,
    };
    let after = stream(&tx, "127.0.0.1:5004", &out, PACKETS..PACKETS + after_packets);
    let last = after_packets / 4;
    let tail = after
        .iter()
        .filter(|s| **s >= PACKETS + after_packets - last)
        .count();
    if tail < usize::from(last) * 95 / 100 {
        panic!(
            "{transport} {mode}: after the NAT rebound, {} of {after_packets} arrived ({tail} of the last {last}){}",
            after.len(),
            logs(offerer, answerer)
        );
    }
    if rebinding == Rebinding::Follows {
        // The answering end says it followed the peer.
        let stats = net.get_in_b(&format!("/v1/sessions/{session}/stats"));
        let changes: u64 = stats
            .split("\"peer_address_changes\":")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no peer_address_changes in {stats}"));
        assert!(changes >= 1, "{transport} {mode}: {stats}");
    }
}

#[test]
fn srtp_crosses_a_nat_and_follows_its_rebinding() {
    through_nat("rtp-udp", "srtp", Rebinding::Follows);
}

#[test]
fn quic_crosses_a_nat_and_migrates_when_it_rebinds() {
    through_nat("quic", "datagram", Rebinding::Follows);
}

#[test]
fn plain_rtp_with_latch_crosses_a_nat_and_reconnects_after_its_rebinding() {
    through_nat("rtp-udp", "unreliable", Rebinding::Reconnects);
}

#[test]
fn a_data_channel_crosses_a_nat_and_reconnects_after_its_rebinding() {
    through_nat("dc", "unreliable", Rebinding::Reconnects);
}
