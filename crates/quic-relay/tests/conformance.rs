//! The relay-core conformance suite against the QUIC backend, in both modes.

use async_trait::async_trait;
use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
use relay_core::Mode;
use relay_core::conformance::{self as c, Connecting, PairFactory};

/// Binds both sides on loopback with this config and exchanges offer and
/// answer in-process.
#[derive(Default)]
struct Factory(QuicConfig);

#[async_trait]
impl PairFactory for Factory {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = QuicOfferer::bind(self.0.clone(), mode)
            .await
            .expect("bind offerer");
        let answerer = QuicAnswerer::bind(self.0.clone(), mode, &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

relay_core::conformance_tests!(datagram, Factory::default(), Mode::Datagram);
relay_core::conformance_tests!(stream, Factory::default(), Mode::Stream);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Factory(QuicConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Datagram, Mode::Stream] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
