//! The relay-core contract, checked against dc-relay in both modes.

use async_trait::async_trait;
use dc_relay::{DcAnswerer, DcConfig, DcOfferer};
use relay_core::Mode;
use relay_core::conformance::{self as c, Connecting, PairFactory};

/// Both ends with this config.
#[derive(Default)]
struct Loopback(DcConfig);

#[async_trait]
impl PairFactory for Loopback {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = DcOfferer::bind(self.0.clone(), mode).await.expect("bind offerer");
        let answerer = DcAnswerer::bind(self.0.clone(), &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

relay_core::conformance_tests!(reliable, Loopback::default(), Mode::Reliable);
relay_core::conformance_tests!(unreliable, Loopback::default(), Mode::Unreliable);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Loopback(DcConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Reliable, Mode::Unreliable] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
