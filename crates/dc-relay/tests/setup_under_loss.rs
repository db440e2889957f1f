//! Setup through a lossy WAN-like path: every link comes up, in bounded
//! time (issue 14: "every setup must succeed within 2 s even under
//! wan-burst5").
//!
//! The offerer reaches the answerer through a relay-netsim proxy: the
//! answer's host candidate is rewritten to the proxy's address, so every
//! ICE check, DTLS flight, SCTP INIT/COOKIE and DCEP OPEN crosses it both
//! ways (the answerer sees the proxy's far side as a peer-reflexive
//! candidate and answers there). The proxy is seeded, so each link meets
//! the same loss pattern in packet order every run; the timing of the
//! handshake still follows the machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dc_relay::{DcAnswerer, DcConfig, DcError, DcOfferer};
use relay_core::{Mode, RelayLink, W3cDescription, build_rtp};
use relay_netsim::{ImpairmentConfig, Proxy, ProxyConfig};

/// The target for setup under `wan-burst5`: 2 s. Measured here
/// (12 links, 2026-12-06): 0.33-0.93 s. Before the rtc-dtls patch's
/// doubling timer (a lost DTLS flight was resent after a fixed 1 s), four
/// of the same twelve took 1.33 s and two lost flights in one setup went
/// past 2 s in about one run in twenty.
const SETUP_BOUND: Duration = Duration::from_secs(2);

/// Points the answer's host candidate at `proxy`; returns the rewritten
/// answer and the address it named before.
fn route_through(answer: &W3cDescription, proxy: SocketAddr) -> (W3cDescription, SocketAddr) {
    let mut target = None;
    let sdp = answer
        .sdp
        .split("\r\n")
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if line.starts_with("a=candidate:") && fields.len() > 5 && fields[2] == "udp" {
                let addr: SocketAddr = format!("{}:{}", fields[4], fields[5])
                    .parse()
                    .expect("candidate address");
                target = Some(addr);
                let mut fields = fields.clone();
                let (ip, port) = (proxy.ip().to_string(), proxy.port().to_string());
                fields[4] = &ip;
                fields[5] = &port;
                fields.join(" ")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut routed = answer.clone();
    routed.sdp = sdp;
    (routed, target.expect("the answer has a UDP candidate"))
}

/// Sets up one link of `mode` through a proxy with `impairment` both ways;
/// returns how long it took, or the error.
async fn setup_through(impairment: ImpairmentConfig, seed: u64, mode: Mode) -> Result<Duration, DcError> {
    let started = Instant::now();
    let offerer = DcOfferer::bind(DcConfig::default(), mode).await?;
    let answerer = DcAnswerer::bind(DcConfig::default(), &offerer.offer()).await?;
    // The proxy needs the answerer's address, which only the answer tells.
    let (_, target) = route_through(&answerer.answer(), "127.0.0.1:9".parse().unwrap());
    let proxy = Proxy::start(
        ProxyConfig::new("127.0.0.1:0".parse().unwrap(), target)
            .impairment(impairment)
            .seed(seed),
    )
    .expect("proxy");
    let (answer, _) = route_through(&answerer.answer(), proxy.local_addr());
    let (a, b) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;
    let took = started.elapsed();
    // Ready means ready: a packet crosses (retried: the path loses some).
    let packet = relay_core::Packet::parse(build_rtp(96, 1, 0, 7, b"x")).unwrap();
    let crossed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            a.send(packet.clone()).await.expect("send");
            if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(200), b.recv()).await {
                return p;
            }
        }
    })
    .await
    .expect("a packet crosses the new link");
    assert_eq!(crossed.ssrc(), 7);
    proxy.shutdown();
    Ok(took)
}

/// `wan-burst5`: 20 ms each way, 5% of the time lost in bursts of 20 ms
/// on average. Twelve links, reliable and unreliable: every one comes up,
/// each within [`SETUP_BOUND`]. One lost datagram of the handshake costs one
/// retransmission timer, which is what this bounds: rtc-dtls's flight timer
/// (1 s, not configurable through `rtc`), and SCTP's RTO.Initial for INIT,
/// COOKIE ECHO and the DCEP OPEN before an RTT is measured.
///
/// End to end, the setup path the rtc-dtls patch (patches/rtc-dtls) is
/// about: when the DTLS server's Flight 4 was lost, the server never resent
/// it and setup failed after 5 s ("data channel not open (ICE
/// connected)"). Whether a run loses Flight 4 depends on timing: on a
/// loaded machine seed 10 did in about half the runs, on a quiet one this
/// test passed without the patch too. The deterministic regression test is
/// rtc-dtls's `a_lost_server_flight_is_resent_after_the_client_repeats_its_own`,
/// which scripts that loss and fails without the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_succeeds_under_burst_loss_within_the_target() {
    let wan_burst5 = ImpairmentConfig::default()
        .delay(Duration::from_millis(20))
        .timed_burst_loss(0.05, Duration::from_millis(20));
    let mut times = vec![];
    for seed in 1..=12u64 {
        let mode = if seed % 2 == 0 {
            Mode::Reliable
        } else {
            Mode::Unreliable
        };
        let took = setup_through(wan_burst5.clone(), seed, mode)
            .await
            .unwrap_or_else(|e| panic!("seed {seed} ({mode}): setup failed: {e}"));
        times.push((seed, took));
    }
    eprintln!("setup times under wan-burst5: {times:?}");
    let slow: Vec<_> = times.iter().filter(|(_, t)| *t > SETUP_BOUND).collect();
    assert!(slow.is_empty(), "setups over {SETUP_BOUND:?}: {slow:?}");
}

/// A lossless WAN path costs round trips, not timers: setup takes a few
/// RTTs (ICE, DTLS, SCTP, DCEP), far below any retransmission timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_on_a_clean_wan_path_takes_round_trips_not_timeouts() {
    let wan = ImpairmentConfig::default().delay(Duration::from_millis(20));
    let took = setup_through(wan, 1, Mode::Unreliable).await.expect("setup");
    assert!(took < Duration::from_millis(600), "{took:?}");
}

#[tokio::test]
async fn an_unusable_latency_budget_is_refused_at_bind() {
    for bad in [Duration::ZERO, Duration::from_secs(66), Duration::from_secs(7200)] {
        let e = DcOfferer::bind(DcConfig::default().max_delay(bad), Mode::Unreliable)
            .await
            .unwrap_err();
        assert!(
            matches!(e, DcError::BadMaxDelay { given, .. } if given == bad),
            "{e}"
        );
    }
}
