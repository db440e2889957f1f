//! The relay-core contract, checked against dc-relay in both modes.

use async_trait::async_trait;
use dc_relay::{DcAnswerer, DcConfig, DcOfferer};
use relay_core::Mode;
use relay_core::conformance::{Connecting, PairFactory};

struct Loopback;

#[async_trait]
impl PairFactory for Loopback {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = DcOfferer::bind(DcConfig::default(), mode)
            .await
            .expect("bind offerer");
        let answerer = DcAnswerer::bind(DcConfig::default(), &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

relay_core::conformance_tests!(reliable, Loopback, Mode::Reliable);
relay_core::conformance_tests!(unreliable, Loopback, Mode::Unreliable);
