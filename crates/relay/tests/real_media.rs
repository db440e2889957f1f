//! Real media end to end, once per line of `relay transports`:
//!
//! ```text
//! gst-launch (sender) --UDP--> relay offer --TRANSPORT--> relay answer --UDP--> gst-launch (receiver)
//! ```
//!
//! The sender (tests/media/sender.pipeline) streams 150 H.264 frames (PT 96) and 251 Opus
//! frames (PT 111), two SSRCs plus their RTCP sender reports, from ONE UDP socket to the
//! offerer's `--in`; the receiver (tests/media/receiver.pipeline) listens on ONE UDP port, the
//! answerer's `--out`, splits RTP by payload type and decodes. Both ends print one checksum line
//! per decoded frame (the sender decodes its own packets with the same chain), and the test
//! requires the receiver's frames to be exactly the sender's: every frame, in order, bit for bit.
//!
//! Needs GStreamer 1.22 from Debian (`scripts/install-deps.sh`); without it the test fails and
//! says so. `tests/media/loopback.sh` runs the same two pipelines without the relay.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{RELAY, find_field, free_udp_addr};

const SENDER: &str = include_str!("media/sender.pipeline");
const RECEIVER: &str = include_str!("media/receiver.pipeline");
const VIDEO_DECODE: &str = include_str!("media/video-decode.chain");
const AUDIO_DECODE: &str = include_str!("media/audio-decode.chain");

/// Frames the sender produces: `num-buffers=150` at 30 fps, and 250 × 20 ms of audio plus the
/// frame opusenc emits at EOS for its 6.5 ms look-ahead.
const VIDEO_FRAMES: usize = 150;
const AUDIO_FRAMES: usize = 251;
/// checksumsink prints sha1 (40 hex digits) for video frames and md5 (32) for audio frames.
const VIDEO_HASH_LEN: usize = 40;
const AUDIO_HASH_LEN: usize = 32;

/// GStreamer elements the two pipelines use.
const ELEMENTS: &[&str] = &[
    "rtpbin",
    "funnel",
    "tee",
    "queue",
    "udpsink",
    "udpsrc",
    "videotestsrc",
    "x264enc",
    "rtph264pay",
    "rtph264depay",
    "h264parse",
    "avdec_h264",
    "audiotestsrc",
    "opusenc",
    "rtpopuspay",
    "rtpopusdepay",
    "opusdec",
    "rtpptdemux",
    "capssetter",
    "rtpjitterbuffer",
    "checksumsink",
];

#[test]
fn h264_and_opus_decode_frame_for_frame_through_every_transport() {
    check_gstreamer();
    let listed = run_to_end(RELAY, &["transports"]);
    let transports: Vec<(String, String)> = listed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [t, m] => (t.to_string(), m.to_string()),
            _ => panic!("`relay transports` printed {l:?}, not `TRANSPORT MODE`"),
        })
        .collect();
    assert!(!transports.is_empty(), "`relay transports` listed nothing");

    let mut failures = Vec::new();
    for (transport, mode) in &transports {
        let started = Instant::now();
        match run_chain(transport, mode) {
            Ok(summary) => eprintln!(
                "real_media: {transport} {mode}: {summary} in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!(
                    "real_media: {transport} {mode}: FAILED after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                failures.push(format!("{transport} {mode}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} transports failed:\n\n{}",
        failures.len(),
        transports.len(),
        failures.join("\n\n")
    );
}

/// The point of repair mode, shown with a real decoder: through a hop that loses 2% of its
/// packets (both ways, 10 ms each way), the plain mode's receiver decodes something other than
/// what was sent (frames missing or corrupt), while repair mode's decodes every frame bit for
/// bit. The relays run in this process (`relay::loopback` with a netsim proxy between them, and
/// the same pipes `relay offer`/`relay answer` use), since the command line cannot yet put a
/// proxy on the hop.
#[test]
fn h264_through_a_lossy_hop_decodes_exactly_only_with_repair() {
    check_gstreamer();
    let repaired = lossy_chain(relay_core::Mode::Repair);
    assert!(repaired.is_ok(), "repair mode: {}", repaired.unwrap_err());
    eprintln!(
        "real_media: rtp-udp repair through 2% loss: {}",
        repaired.unwrap()
    );
    let plain = lossy_chain(relay_core::Mode::Unreliable);
    let Err(damage) = plain else {
        panic!("the plain mode decoded every frame through 2% loss: the path lost nothing that mattered");
    };
    eprintln!("real_media: rtp-udp unreliable through 2% loss, as expected: {damage}");
    assert!(damage.contains("video") || damage.contains("audio"), "{damage}");
}

/// The chain of `run_chain` with the relay hop in process, through 2% loss; `Ok` when the
/// receiver decoded exactly the sender's frames, else what differed.
fn lossy_chain(mode: relay_core::Mode) -> Result<String, String> {
    use relay::loopback::{LoopbackConfig, establish};
    use relay::pipe::{Pipe, PipeCounters, PipeOptions, Side, StreamSpec};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut procs = Procs::default();
    let out = free_udp_addr();
    let receiver = procs.spawn(
        "receiver (gst-launch)",
        "gst-launch-1.0",
        &render(
            RECEIVER,
            &[("LISTEN_HOST", "127.0.0.1"), ("LISTEN_PORT", port_of(&out))],
        ),
    )?;
    procs.wait_line(receiver, "receiver listening", Duration::from_secs(15), |l| {
        l.starts_with("Setting pipeline to PLAYING")
    })?;
    let input = free_udp_addr();
    let spec = |addr: &str| -> Result<Vec<StreamSpec>, String> {
        Ok(vec![addr.parse().map_err(|e| format!("{e}"))?])
    };
    let (in_spec, out_spec) = (spec(&input)?, spec(&out)?);
    let pair = runtime.block_on(async {
        let impairment = relay_netsim::ImpairmentConfig::default()
            .delay(Duration::from_millis(10))
            .loss(0.02);
        let config = LoopbackConfig::default().impairment(impairment, 5);
        let pair = establish(relay_core::Transport::RtpUdp, mode, &config)
            .await
            .map_err(|e| e.to_string())?;
        let offer = Pipe::bind(
            Side::Offer,
            &in_spec,
            PipeOptions::default(),
            Arc::new(PipeCounters::default()),
        )
        .map_err(|e| e.to_string())?;
        let answer = Pipe::bind(
            Side::Answer,
            &out_spec,
            PipeOptions::default(),
            Arc::new(PipeCounters::default()),
        )
        .map_err(|e| e.to_string())?;
        let (o, a) = (pair.offerer.clone(), pair.answerer.clone());
        tokio::spawn(async move { offer.carry(o).await });
        tokio::spawn(async move { answer.carry(a).await });
        Ok::<_, String>(pair)
    })?;
    let sender = procs.spawn(
        "sender (gst-launch)",
        "gst-launch-1.0",
        &render(
            SENDER,
            &[("DEST_HOST", "127.0.0.1"), ("DEST_PORT", port_of(&input))],
        ),
    )?;
    let sent = procs.wait_sender(sender)?;
    let received = procs.drain_receiver(receiver, &sent)?;
    let lost = pair.proxy().map(|p| {
        let s = p.stats();
        (s.upstream.dropped.total(), s.downstream.dropped.total())
    });
    let repair = pair.answerer.stats().repair;
    runtime.block_on(pair.close());
    let mismatches: Vec<String> = [
        compare("video", &sent.video, &received.video),
        compare("audio", &sent.audio, &received.audio),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    let path = format!("the path dropped {lost:?} packets (each way), receiving end's repair {repair:?}");
    if mismatches.is_empty() {
        Ok(format!(
            "video {}/{} and audio {}/{} frames bit-identical; {path}",
            received.video.len(),
            sent.video.len(),
            received.audio.len(),
            sent.audio.len()
        ))
    } else {
        Err(format!("{}; {path}", mismatches.join("; ")))
    }
}

/// One whole chain: receiver, answerer, offerer, sender; then compares the decoded frames.
fn run_chain(transport: &str, mode: &str) -> Result<String, String> {
    let mut procs = Procs::default();

    // The receiver listens on what will be the answerer's --out.
    let out = free_udp_addr();
    let receiver = procs.spawn(
        "receiver (gst-launch)",
        "gst-launch-1.0",
        &render(
            RECEIVER,
            &[("LISTEN_HOST", "127.0.0.1"), ("LISTEN_PORT", port_of(&out))],
        ),
    )?;
    // Printed once set_state(PAUSED) has returned, i.e. after udpsrc bound its port.
    procs.wait_line(receiver, "receiver listening", Duration::from_secs(15), |l| {
        l.starts_with("Setting pipeline to PLAYING")
    })?;

    let answer = procs.spawn(
        "relay answer",
        RELAY,
        &args(&["answer", "--signal-listen", "127.0.0.1:0", "--out", &out]),
    )?;
    let listening = procs.wait_line(answer, "`listening` line", Duration::from_secs(10), |l| {
        l.starts_with("listening")
    })?;
    let signal = find_field(&listening, "signal")
        .map(str::to_string)
        .ok_or_else(|| procs.fail(format!("no signal= in {listening:?}")))?;
    if find_field(&listening, "out") != Some(out.as_str()) || !signal.starts_with("http://127.0.0.1:") {
        return Err(procs.fail(format!(
            "answerer printed {listening:?}; expected `listening signal=http://127.0.0.1:PORT out={out}`"
        )));
    }

    let input = free_udp_addr();
    let offer = procs.spawn(
        "relay offer",
        RELAY,
        &args(&[
            "offer",
            "--signal",
            &signal,
            "--transport",
            transport,
            "--mode",
            mode,
            "--in",
            &input,
        ]),
    )?;
    let ready = procs.wait_line(offer, "`ready` line", Duration::from_secs(20), |l| {
        l.starts_with("ready")
    })?;
    let expected = format!("ready transport={transport} mode={mode} in={input} session=");
    if !ready.starts_with(&expected) || ready.len() == expected.len() {
        return Err(procs.fail(format!("offerer printed {ready:?}; expected `{expected}ID`")));
    }

    // The link is up and the receiver listens: stream.
    let sender = procs.spawn(
        "sender (gst-launch)",
        "gst-launch-1.0",
        &render(
            SENDER,
            &[("DEST_HOST", "127.0.0.1"), ("DEST_PORT", port_of(&input))],
        ),
    )?;
    let sent = procs.wait_sender(sender)?;

    let received = procs.drain_receiver(receiver, &sent)?;

    let mismatches: Vec<String> = [
        compare("video", &sent.video, &received.video),
        compare("audio", &sent.audio, &received.audio),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    if !mismatches.is_empty() {
        return Err(procs.fail(mismatches.join("\n")));
    }

    // SIGTERM: the offerer DELETEs the session and exits 0.
    procs.signal(offer, "TERM");
    match procs.wait_exit(offer, Duration::from_secs(10)) {
        Some(s) if s.success() => {}
        Some(s) => return Err(procs.fail(format!("relay offer exited with {s} on SIGTERM, not 0"))),
        None => return Err(procs.fail("relay offer did not exit within 10 s of SIGTERM")),
    }
    Ok(format!(
        "video {}/{} frames, audio {}/{} frames, bit-identical to the sender's own decode",
        received.video.len(),
        sent.video.len(),
        received.audio.len(),
        sent.audio.len()
    ))
}

/// Decoded-frame checksums, in decode order.
struct Frames {
    video: Vec<String>,
    audio: Vec<String>,
}

fn frames(lines: &[String]) -> Frames {
    let pick = |len: usize| {
        lines
            .iter()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                // "<pts> <hex>", pts as H:MM:SS.NNNNNNNNN
                [pts, hex]
                    if pts.contains(':')
                        && pts.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.')
                        && hex.len() == len
                        && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    Some(hex.to_string())
                }
                _ => None,
            })
            .collect()
    };
    Frames {
        video: pick(VIDEO_HASH_LEN),
        audio: pick(AUDIO_HASH_LEN),
    }
}

fn compare(what: &str, sent: &[String], received: &[String]) -> Result<(), String> {
    if sent == received {
        return Ok(());
    }
    let first_diff = sent.iter().zip(received).position(|(a, b)| a != b);
    Err(format!(
        "{what}: the receiver decoded {} frames, the sender {}; {}",
        received.len(),
        sent.len(),
        match first_diff {
            Some(i) => format!(
                "frame {i} is the first that differs (sender {}, receiver {})",
                sent[i], received[i]
            ),
            None if received.is_empty() => "none arrived".to_string(),
            None if received.len() < sent.len() => "the last ones are missing".to_string(),
            None => "the extra ones are duplicates or strays".to_string(),
        }
    ))
}

/// Fails, with what to do, unless gst-launch-1.0 and every element the pipelines need are here.
fn check_gstreamer() {
    let hint =
        "run scripts/install-deps.sh (GStreamer 1.22 tools and plugins-base/good/bad/ugly/libav from Debian)";
    match Command::new("gst-launch-1.0")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => panic!("gst-launch-1.0 is missing: {hint}"),
    }
    let missing: Vec<&str> = ELEMENTS
        .iter()
        .copied()
        .filter(|e| {
            !Command::new("gst-inspect-1.0")
                .args(["--exists", e])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "GStreamer elements missing: {missing:?}: {hint}"
    );
}

/// Turns a pipeline template into gst-launch-1.0 arguments: drops `#` comment lines, inlines
/// the decode chains, fills in `@NAME@`. gst-launch escapes each argument as a single token, so
/// the description goes in word by word (no word contains a space).
fn render(template: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = strip(template)
        .replace("@VIDEO_DECODE@", &strip(VIDEO_DECODE))
        .replace("@AUDIO_DECODE@", &strip(AUDIO_DECODE));
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    assert!(!text.contains('@'), "unfilled placeholder in pipeline: {text}");
    std::iter::once("-e".to_string())
        .chain(text.split_whitespace().map(str::to_string))
        .collect()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// Runs a command to completion (bounded) and returns its stdout; panics with stderr otherwise.
fn run_to_end(program: &str, a: &[&str]) -> String {
    let mut procs = Procs::default();
    let p = procs
        .spawn(program, program, &args(a))
        .unwrap_or_else(|e| panic!("{e}"));
    match procs.wait_exit(p, Duration::from_secs(30)) {
        Some(s) if s.success() => procs.0[p].stdout().join("\n"),
        Some(s) => panic!("{}", procs.fail(format!("{program} {a:?} exited with {s}"))),
        None => panic!(
            "{}",
            procs.fail(format!("{program} {a:?} did not exit within 30 s"))
        ),
    }
}

/// One child process with its output collected line by line on two threads.
struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// After the process exited: gives the reader threads up to 1 s to take its last lines.
    fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                self.settle();
            }
        }
        self.status
    }

    fn report(&mut self) -> String {
        const TAIL: usize = 25;
        let state = match self.exited() {
            Some(s) => format!("exited with {s}"),
            None => "still running".to_string(),
        };
        let mut r = format!("--- {} (pid {}, {state})\n", self.name, self.child.id());
        for (stream, lines) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let lines = lines.lock().unwrap();
            let skip = lines.len().saturating_sub(TAIL);
            let _ = writeln!(
                r,
                "  {stream} ({} lines{}):",
                lines.len(),
                if skip > 0 { ", last ones" } else { "" }
            );
            for l in &lines[skip..] {
                let _ = writeln!(r, "    {l}");
            }
        }
        r
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Every process of one chain: all are killed when it is dropped, on every path.
#[derive(Default)]
struct Procs(Vec<Proc>);

impl Procs {
    fn spawn(&mut self, name: &str, program: &str, a: &[String]) -> Result<usize, String> {
        let mut child = Command::new(program)
            .args(a)
            .env_remove("RELAY_TOKEN")
            .env("GST_DEBUG_NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.fail(format!("cannot start {name} ({program}): {e}")))?;
        let collect = |pipe: Box<dyn Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            let reader = thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    match line {
                        Ok(l) => sink.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            });
            (lines, reader)
        };
        let (stdout, out_reader) = collect(Box::new(child.stdout.take().expect("piped stdout")));
        let (stderr, err_reader) = collect(Box::new(child.stderr.take().expect("piped stderr")));
        self.0.push(Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            status: None,
        });
        Ok(self.0.len() - 1)
    }

    /// The error message: what went wrong, then the state and output of every process.
    fn fail(&mut self, what: impl std::fmt::Display) -> String {
        let mut m = format!("{what}\n");
        for p in &mut self.0 {
            m.push_str(&p.report());
        }
        m
    }

    /// First line (stdout or stderr) matching `pred`, within `within`; fails early if the
    /// process exits.
    fn wait_line(
        &mut self,
        p: usize,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let found = {
                let proc = &self.0[p];
                let out = proc.stdout.lock().unwrap();
                let err = proc.stderr.lock().unwrap();
                out.iter().chain(err.iter()).find(|l| pred(l)).cloned()
            };
            if let Some(l) = found {
                return Ok(l);
            }
            if let Some(s) = self.0[p].exited() {
                let name = self.0[p].name.clone();
                return Err(self.fail(format!("{name} exited with {s} before printing its {what}")));
            }
            if Instant::now() >= deadline {
                let name = self.0[p].name.clone();
                return Err(self.fail(format!("no {what} from {name} within {within:?}")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, p: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.0[p].exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, p: usize, sig: &str) {
        if self.0[p].exited().is_none() {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), self.0[p].child.id().to_string()])
                .status();
        }
    }

    /// Waits until the sender has sent (and decoded locally) every frame.
    ///
    /// gst-launch usually exits by itself about 0.2 s after the last frame, but in about one
    /// run in ten rtpbin never sends EOS out of its RTCP pads and the pipeline never finishes.
    /// So "done" is every frame decoded by the sender's local copy (which lags the packets on
    /// the wire by its jitter-buffer latency), not the exit; a sender still running then is
    /// given a moment and killed.
    fn wait_sender(&mut self, p: usize) -> Result<Frames, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = frames(&self.0[p].stdout());
            if sent.video.len() >= VIDEO_FRAMES && sent.audio.len() >= AUDIO_FRAMES {
                if self.wait_exit(p, Duration::from_millis(500)).is_none() {
                    eprintln!(
                        "real_media: the sender sent every frame but did not exit (rtpbin EOS stall); killed"
                    );
                    self.signal(p, "KILL");
                    self.wait_exit(p, Duration::from_secs(5));
                }
                break;
            }
            if self.0[p].exited().is_some() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let sent = frames(&self.0[p].stdout());
        match self.0[p].exited() {
            Some(s) if !s.success() && s.code().is_some() => {
                Err(self.fail(format!("the sender (gst-launch) exited with {s}")))
            }
            _ if sent.video.len() != VIDEO_FRAMES || sent.audio.len() != AUDIO_FRAMES => {
                Err(self.fail(format!(
                    "the sender decoded {} video and {} audio frames of its own, not {VIDEO_FRAMES} and \
                 {AUDIO_FRAMES} (within 20 s): a GStreamer problem, not the relay's",
                    sent.video.len(),
                    sent.audio.len()
                )))
            }
            _ => Ok(sent),
        }
    }

    /// Waits for the receiver to decode as many frames as were sent (or to go quiet for 3 s),
    /// then stops it with SIGINT, which `gst-launch -e` turns into EOS so everything drains.
    fn drain_receiver(&mut self, p: usize, sent: &Frames) -> Result<Frames, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let got = frames(&self.0[p].stdout());
            let count = got.video.len() + got.audio.len();
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            if got.video.len() >= sent.video.len() && got.audio.len() >= sent.audio.len() {
                // Everything is in; a little longer shows duplicates, if any.
                thread::sleep(Duration::from_millis(300));
                break;
            }
            if self.0[p].exited().is_some() {
                return Err(self.fail("the receiver exited before the sender's frames were decoded"));
            }
            if last_change.elapsed() >= Duration::from_secs(3) || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.signal(p, "INT");
        if self.wait_exit(p, Duration::from_secs(3)).is_none() {
            // EOS stuck (e.g. a stream never arrived, so its branch never linked): kill it.
            self.signal(p, "KILL");
            self.wait_exit(p, Duration::from_secs(5));
        }
        Ok(frames(&self.0[p].stdout()))
    }
}
