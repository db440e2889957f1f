//! The relay-core conformance suite against the QUIC backend, in both modes.

use async_trait::async_trait;
use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
use relay_core::Mode;
use relay_core::conformance::{Connecting, PairFactory};

/// Binds both sides on loopback and exchanges offer and answer in-process.
struct Factory;

#[async_trait]
impl PairFactory for Factory {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = QuicOfferer::bind(QuicConfig::default(), mode)
            .await
            .expect("bind offerer");
        let answerer = QuicAnswerer::bind(QuicConfig::default(), mode, &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(offerer.connect(answer), answerer.accept())
    }
}

relay_core::conformance_tests!(datagram, Factory, Mode::Datagram);
relay_core::conformance_tests!(stream, Factory, Mode::Stream);
