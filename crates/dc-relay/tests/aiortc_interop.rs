//! Interop with a plain WebRTC peer: aiortc (Python), as a subprocess, on
//! loopback. Skipped, with a line saying so, when the peer venv is missing
//! (`scripts/install-python-peers.sh` creates it; CI runs it).
//!
//! The peer (`tests/peers/dc_peer.py`) sends 50 RTP packets once its channel
//! is open and echoes every binary message back. Each test checks that
//! those packets arrive byte for byte, that ours come back, and that the
//! link has the mode of the channel aiortc opened or accepted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dc_relay::{DcAnswerer, DcConfig, DcLink, DcOfferer};
use relay_core::{Mode, Packet, RelayLink, SdpType, W3cDescription, build_rtp};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Must match dc_peer.py.
const PEER_COUNT: u16 = 50;
const PEER_SSRC: u32 = 0x0A1C_0DE0;
const PEER_SIZE: usize = 1000;
const OUR_SSRC: u32 = 0x0000_0B0B;
/// Bound on every wait for the peer.
const STEP: Duration = Duration::from_secs(15);

fn venv_python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/peers-venv/bin/python");
    let ok = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import aiortc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        // On stderr, so the test harness does not swallow it.
        eprintln!("SKIP aiortc interop: no aiortc in target/peers-venv; run scripts/install-python-peers.sh");
        return None;
    }
    Some(python)
}

/// The peer process; killed when dropped, whatever path the test takes.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn spawn(python: &PathBuf, args: &[&str]) -> Peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dc_peer.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the aiortc peer");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Peer {
            child,
            stdin,
            stdout: Some(stdout),
            log,
        }
    }

    async fn read_description(&mut self) -> W3cDescription {
        let stdout = self.stdout.as_mut().expect("stdout not yet drained");
        let line = tokio::time::timeout(STEP, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no description from the peer; stderr: {:?}", self.log()))
            .expect("read peer stdout")
            .unwrap_or_else(|| panic!("peer exited; stderr: {:?}", self.log()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer said {line:?}: {e}"))
    }

    async fn write_description(&mut self, d: &W3cDescription) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = serde_json::to_string(d).unwrap();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.expect("write to peer");
        stdin.flush().await.expect("flush to peer");
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Keeps the status lines flowing so the peer never blocks on a full pipe.
    fn drain_stdout(&mut self) {
        let Some(mut lines) = self.stdout.take() else {
            return;
        };
        let sink = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
    }

    async fn finish(mut self) {
        drop(self.stdin.take()); // the peer exits when stdin closes
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn peer_packet(seq: u16) -> Packet {
    let payload: Vec<u8> = (0..PEER_SIZE - 12)
        .map(|i| ((seq as usize + i) % 256) as u8)
        .collect();
    Packet::parse(build_rtp(
        96,
        seq,
        (seq as u32).wrapping_mul(3000),
        PEER_SSRC,
        &payload,
    ))
    .unwrap()
}

/// The peer's packets arrive unchanged, and ours come back from its echo.
async fn exchange(link: &DcLink, mode: Mode, peer: &Peer) {
    let need = if mode.is_reliable() {
        PEER_COUNT
    } else {
        PEER_COUNT * 9 / 10
    };
    let mut got = 0u16;
    while got < PEER_COUNT {
        match tokio::time::timeout(Duration::from_secs(3), link.recv()).await {
            Ok(Ok(p)) if p.ssrc() == PEER_SSRC => {
                let seq = p.sequence_number().unwrap();
                assert_eq!(p, peer_packet(seq), "aiortc's packet {seq} changed in transit");
                got += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("link failed after {got} packets: {e}; peer: {:?}", peer.log()),
            Err(_) if got >= need => break,
            Err(_) => panic!(
                "only {got} of {PEER_COUNT} packets from aiortc; peer: {:?}",
                peer.log()
            ),
        }
    }
    let ours: Vec<Packet> = (0..20u16)
        .map(|i| Packet::parse(build_rtp(111, i, i as u32 * 960, OUR_SSRC, &[i as u8; 160])).unwrap())
        .collect();
    for p in &ours {
        link.send(p.clone()).await.expect("send to aiortc");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let need = if mode.is_reliable() {
        ours.len()
    } else {
        ours.len() * 9 / 10
    };
    let mut echoed = 0;
    while echoed < ours.len() {
        match tokio::time::timeout(Duration::from_secs(3), link.recv()).await {
            Ok(Ok(p)) if p.ssrc() == OUR_SSRC => {
                let seq = p.sequence_number().unwrap() as usize;
                assert_eq!(p, ours[seq], "our packet {seq} changed on the round trip");
                echoed += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("link failed during the echo: {e}"),
            Err(_) if echoed >= need => break,
            Err(_) => panic!(
                "aiortc echoed {echoed} of {} packets; peer: {:?}",
                ours.len(),
                peer.log()
            ),
        }
    }
    let s = link.stats();
    assert!(s.packets_received >= (need + PEER_COUNT as usize * 9 / 10) as u64);
    assert_eq!(s.drops.malformed, 0);
}

async fn aiortc_offers(mode: Mode) {
    let Some(python) = venv_python() else { return };
    let mut peer = Peer::spawn(&python, &["offer", mode.name()]);
    let offer = peer.read_description().await;
    assert_eq!(offer.kind, SdpType::Offer);
    let answerer = DcAnswerer::bind(DcConfig::default(), &offer)
        .await
        .expect("answer aiortc's offer");
    peer.write_description(&answerer.answer()).await;
    peer.drain_stdout();
    let link = tokio::time::timeout(STEP, answerer.accept())
        .await
        .unwrap_or_else(|_| panic!("aiortc's channel did not open; peer: {:?}", peer.log()))
        .expect("accept aiortc's channel");
    assert_eq!(link.mode(), mode, "relayed in the mode aiortc opened");
    exchange(&link, mode, &peer).await;
    link.close();
    peer.finish().await;
}

async fn aiortc_answers(mode: Mode) {
    let Some(python) = venv_python() else { return };
    let offerer = DcOfferer::bind(DcConfig::default(), mode)
        .await
        .expect("bind offerer");
    let mut peer = Peer::spawn(&python, &["answer"]);
    peer.write_description(&offerer.offer()).await;
    let answer = peer.read_description().await;
    assert_eq!(answer.kind, SdpType::Answer);
    peer.drain_stdout();
    let link = tokio::time::timeout(STEP, offerer.connect(&answer))
        .await
        .unwrap_or_else(|_| panic!("channel to aiortc did not open; peer: {:?}", peer.log()))
        .expect("connect to aiortc");
    assert_eq!(link.mode(), mode);
    exchange(&link, mode, &peer).await;
    link.close();
    peer.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_offers_reliable_channel() {
    aiortc_offers(Mode::Reliable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_offers_unreliable_channel() {
    aiortc_offers(Mode::Unreliable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_answers_reliable_channel() {
    aiortc_answers(Mode::Reliable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_answers_unreliable_channel() {
    aiortc_answers(Mode::Unreliable).await;
}

/// Chromium starts SCTP in a task posted once DTLS is up, drops what
/// arrives before, and then sends its INIT whatever its DTLS role. An
/// answerer that initiates too (the DTLS client's part in `rtc`) loses its
/// INIT in that gap and, having no SCTP server config, refuses the peer's;
/// the channel then opens only when its own INIT is retransmitted, one RTO
/// (1 s, RFC 9260 section 6.3.1) later. Here aiortc plays that peer, 100 ms
/// late: the answerer must accept its INIT and open well before an RTO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_starting_sctp_late_opens_without_waiting_for_an_rto() {
    const LATE: Duration = Duration::from_millis(100);
    let Some(python) = venv_python() else { return };
    let late = LATE.as_millis().to_string();
    let mut peer = Peer::spawn(&python, &["offer", "reliable", "--late-sctp", &late]);
    let offer = peer.read_description().await;
    let answerer = DcAnswerer::bind(DcConfig::default(), &offer)
        .await
        .expect("answer aiortc's offer");
    peer.write_description(&answerer.answer()).await;
    peer.drain_stdout();
    let link = tokio::time::timeout(STEP, answerer.accept())
        .await
        .unwrap_or_else(|_| panic!("aiortc's channel did not open; peer: {:?}", peer.log()))
        .expect("accept aiortc's channel");
    let setup = link.stats().setup_time.expect("setup time");
    eprintln!("setup with SCTP {late} ms late: {setup:?}");
    // Bind, ICE and DTLS with aiortc take 20-60 ms here; an RTO adds 1 s.
    assert!(
        setup < LATE + Duration::from_millis(500),
        "channel opened {setup:?} after the offer: an SCTP INIT waited for its retransmission; peer: {:?}",
        peer.log()
    );
    exchange(&link, Mode::Reliable, &peer).await;
    link.close();
    peer.finish().await;
}
