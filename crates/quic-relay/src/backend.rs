//! QUIC's [`Backend`]: its setup types under relay-core's contract.

use relay_core::backend::{Answering, Backend, CommonConfig, Offering};
use relay_core::{Mode, QuicAnswer, QuicOffer, Transport};

use crate::{QuicAnswerer, QuicConfig, QuicError, QuicLink, QuicOfferer};

/// QUIC as a [`Backend`]: the offering side is the client, the answering
/// side the server; each pins the other's certificate fingerprint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quic;

impl Backend for Quic {
    const TRANSPORT: Transport = Transport::Quic;
    type Config = QuicConfig;
    type Offer = QuicOffer;
    type Answer = QuicAnswer;
    type Link = QuicLink;
    type Error = QuicError;
    type Offerer = QuicOfferer;
    type Answerer = QuicAnswerer;

    fn config(common: &CommonConfig, _mode: Mode) -> QuicConfig {
        QuicConfig::default()
            .bind(common.bind)
            .advertise_ip(common.advertise_ip)
            .media_ports(common.media_ports)
            .liveness_timeout(common.liveness_timeout)
            .clock_rates(common.clock_rates.clone())
            .max_delay(common.max_delay)
    }

    fn offer_was_bad(error: &QuicError) -> bool {
        matches!(
            error,
            QuicError::InvalidFingerprint { .. } | QuicError::AlpnMismatch(_)
        )
    }
}

impl Offering<Quic> for QuicOfferer {
    async fn bind(config: QuicConfig, mode: Mode) -> Result<Self, QuicError> {
        QuicOfferer::bind(config, mode).await
    }

    fn offer(&self) -> QuicOffer {
        QuicOfferer::offer(self)
    }

    async fn connect(self, answer: &QuicAnswer) -> Result<QuicLink, QuicError> {
        QuicOfferer::connect(self, answer).await
    }
}

impl Answering<Quic> for QuicAnswerer {
    async fn bind(config: QuicConfig, mode: Mode, offer: &QuicOffer) -> Result<Self, QuicError> {
        QuicAnswerer::bind(config, mode, offer).await
    }

    fn answer(&self) -> QuicAnswer {
        QuicAnswerer::answer(self)
    }

    fn accept(self) -> impl Future<Output = Result<QuicLink, QuicError>> + Send + 'static {
        QuicAnswerer::accept(self)
    }
}
