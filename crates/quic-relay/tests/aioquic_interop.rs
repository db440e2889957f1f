//! Interop with a third-party RoQ stack: aioquic, driven by
//! `tests/peers/roq_peer.py` (its own self-signed certificate; each side
//! pins the other's fingerprint).
//!
//! The peer sends RTP in RoQ datagrams and on a RoQ stream and echoes what
//! it receives; every packet must arrive byte for byte, both ways, with
//! our side as answerer (QUIC server) and as offerer (QUIC client), in both
//! modes. Needs the venv from `scripts/install-python-peers.sh`; without it
//! the tests print a SKIPPED line and return.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
use relay_core::{Mode, Packet, QuicAnswer, QuicOffer, RelayLink, build_rtp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Packets each side sends per kind; sizes as real video RTP.
const COUNT: u16 = 50;
const SIZE: usize = 1200;
/// SSRCs the Python peer uses (roq_peer.py) and ours.
const PEER_DATAGRAM_SSRC: u32 = 0xD0D0;
const PEER_STREAM_SSRC: u32 = 0x5050;
const OUR_SSRC: u32 = 0xA1A1;

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The venv's Python, or a printed SKIPPED line. Written straight to the
/// process's stderr so the test harness does not swallow it.
fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = root().join("target/peers-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED aioquic_interop::{test}: no aioquic venv at {}; run scripts/install-python-peers.sh",
        python.display()
    );
    None
}

/// What roq_peer.py sends: RTP with payload bytes (seq * 7 + i) & 0xff.
fn peer_packet(ssrc: u32, seq: u16) -> Bytes {
    let payload: Vec<u8> = (0..SIZE - 12).map(|i| (seq as usize * 7 + i) as u8).collect();
    build_rtp(96, seq, u32::from(seq) * 90, ssrc, &payload)
}

fn our_packet(seq: u16) -> Packet {
    relay_core::conformance::numbered(OUR_SSRC, u32::from(seq), SIZE)
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn spawn(python: &Path, role: &str) -> Peer {
        let mut child = Command::new(python)
            .arg(root().join("crates/quic-relay/tests/peers/roq_peer.py"))
            .args([
                "--role",
                role,
                "--count",
                &COUNT.to_string(),
                "--size",
                &SIZE.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start roq_peer.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, stdin, stdout }
    }

    async fn read<T: serde::de::DeserializeOwned>(&mut self) -> T {
        let line = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line())
            .await
            .expect("roq_peer.py signaling in time")
            .unwrap()
            .expect("roq_peer.py printed its description");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from roq_peer.py {line:?}: {e}"))
    }

    async fn write(&mut self, value: &impl serde::Serialize) {
        let mut line = serde_json::to_vec(value).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn exits_cleanly(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("roq_peer.py exits after we close")
            .unwrap();
        assert!(status.success(), "roq_peer.py failed: {status}");
    }
}

/// The peer's packets arrive unchanged; ours come back unchanged.
async fn exchange(link: &quic_relay::QuicLink, mode: Mode) {
    let sender = async {
        for seq in 0..COUNT {
            link.send(our_packet(seq)).await.expect("send to aioquic");
            if seq % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let receiver = async {
        let mut want: BTreeSet<(u32, u16)> = [PEER_DATAGRAM_SSRC, PEER_STREAM_SSRC, OUR_SSRC]
            .into_iter()
            .flat_map(|ssrc| (0..COUNT).map(move |seq| (ssrc, seq)))
            .collect();
        while !want.is_empty() {
            let p = match tokio::time::timeout(Duration::from_secs(10), link.recv()).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => panic!("{mode}: link failed: {e}"),
                Err(_) => {
                    let missing = |ssrc| want.iter().filter(|(s, _)| *s == ssrc).count();
                    panic!(
                        "{mode}: packets never arrived: {} of the peer's datagrams, {} of its stream, \
                         {} of our echoes; QUIC: {:?}",
                        missing(PEER_DATAGRAM_SSRC),
                        missing(PEER_STREAM_SSRC),
                        missing(OUR_SSRC),
                        link.connection_stats()
                    )
                }
            };
            let (ssrc, seq) = (p.ssrc(), p.sequence_number().unwrap());
            let expected = match ssrc {
                OUR_SSRC => our_packet(seq).into_bytes(),
                _ => peer_packet(ssrc, seq),
            };
            assert_eq!(
                p.bytes(),
                &expected,
                "{mode}: packet {ssrc:#x}/{seq} changed in transit"
            );
            assert!(want.remove(&(ssrc, seq)), "{mode}: duplicate {ssrc:#x}/{seq}");
        }
    };
    tokio::join!(sender, receiver);
    assert_eq!(link.stats().drops.total(), 0, "{mode}: {:?}", link.stats().drops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_offerer_to_our_answerer() {
    let Some(python) = python_or_skip("aioquic_offerer_to_our_answerer") else {
        return;
    };
    for mode in [Mode::Datagram, Mode::Stream] {
        let mut peer = Peer::spawn(&python, "offerer");
        let offer: QuicOffer = peer.read().await;
        let answerer = QuicAnswerer::bind(QuicConfig::default(), mode, &offer)
            .await
            .unwrap();
        peer.write(&answerer.answer()).await;
        let link = answerer
            .accept()
            .await
            .expect("aioquic connects with the pinned certificate");
        exchange(&link, mode).await;
        link.close();
        peer.exits_cleanly().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_offerer_to_aioquic_answerer() {
    let Some(python) = python_or_skip("our_offerer_to_aioquic_answerer") else {
        return;
    };
    for mode in [Mode::Datagram, Mode::Stream] {
        let offerer = QuicOfferer::bind(QuicConfig::default(), mode).await.unwrap();
        let mut peer = Peer::spawn(&python, "answerer");
        peer.write(&offerer.offer()).await;
        let answer: QuicAnswer = peer.read().await;
        let link = offerer.connect(&answer).await.expect("connect to aioquic");
        exchange(&link, mode).await;
        link.close();
        peer.exits_cleanly().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_refuses_an_unpinned_certificate() {
    let Some(python) = python_or_skip("aioquic_refuses_an_unpinned_certificate") else {
        return;
    };
    // The Python answerer pins a fingerprint that is not ours.
    let offerer = QuicOfferer::bind(QuicConfig::default(), Mode::Datagram)
        .await
        .unwrap();
    let stranger = QuicOfferer::bind(QuicConfig::default(), Mode::Datagram)
        .await
        .unwrap();
    let mut peer = Peer::spawn(&python, "answerer");
    peer.write(&stranger.offer()).await;
    let answer: QuicAnswer = peer.read().await;
    let err = offerer
        .connect(&answer)
        .await
        .expect_err("aioquic must refuse us");
    assert!(
        matches!(err, quic_relay::QuicError::CertificateRefused { .. }),
        "{err:?}"
    );
}
