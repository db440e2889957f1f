//! The relay-core contract, checked against rtp-udp.

use async_trait::async_trait;
use relay_core::Mode;
use relay_core::conformance::{self as c, Connecting, PairFactory};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpOfferer};

/// Both ends with this config.
#[derive(Default)]
struct Loopback(RtpUdpConfig);

#[async_trait]
impl PairFactory for Loopback {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = RtpUdpOfferer::bind(self.0.clone(), mode)
            .await
            .expect("bind offerer");
        let answerer = RtpUdpAnswerer::bind(self.0.clone(), mode, &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

relay_core::conformance_tests!(unreliable, Loopback::default(), Mode::Unreliable);
relay_core::conformance_tests!(srtp, Loopback::default(), Mode::Srtp);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Loopback(RtpUdpConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Unreliable, Mode::Srtp] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
