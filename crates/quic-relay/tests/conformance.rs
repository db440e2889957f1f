//! The relay-core conformance suite against the QUIC backend, in both modes.

use async_trait::async_trait;
use quic_relay::{QuicAnswerer, QuicConfig, QuicOfferer};
use relay_core::conformance::{Connecting, PairFactory};
use relay_core::{Mode, RelayLink};

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
        Connecting {
            offerer: Box::pin(async move {
                let link = offerer.connect(answer).await.map_err(|e| e.to_string())?;
                Ok(Box::new(link) as Box<dyn RelayLink>)
            }),
            answerer: Box::pin(async move {
                let link = answerer.accept().await.map_err(|e| e.to_string())?;
                Ok(Box::new(link) as Box<dyn RelayLink>)
            }),
        }
    }
}

relay_core::conformance_tests!(datagram, Factory, Mode::Datagram);
relay_core::conformance_tests!(stream, Factory, Mode::Stream);
