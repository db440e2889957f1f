//! The data channel's [`Backend`]: its setup types under relay-core's
//! contract.

use relay_core::backend::{Answering, Backend, CommonConfig, Offering};
use relay_core::{Mode, Transport, W3cDescription};

use crate::{DcAnswerer, DcConfig, DcError, DcLink, DcOfferer};

/// The WebRTC data channel as a [`Backend`]: offer and answer are W3C
/// session descriptions (SDP), as browsers and pion exchange them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dc;

impl Backend for Dc {
    const TRANSPORT: Transport = Transport::Dc;
    type Config = DcConfig;
    type Offer = W3cDescription;
    type Answer = W3cDescription;
    type Link = DcLink;
    type Error = DcError;
    type Offerer = DcOfferer;
    type Answerer = DcAnswerer;

    fn config(common: &CommonConfig, _mode: Mode) -> DcConfig {
        DcConfig::default()
            .bind_addrs(vec![common.bind])
            .advertise_ip(common.advertise_ip)
            .media_ports(common.media_ports)
            .liveness_timeout(common.liveness_timeout)
            .clock_rates(common.clock_rates.clone())
            .max_delay(common.max_delay)
    }

    fn offer_was_bad(error: &DcError) -> bool {
        matches!(error, DcError::BadDescription { .. })
    }
}

impl Offering<Dc> for DcOfferer {
    async fn bind(config: DcConfig, mode: Mode) -> Result<Self, DcError> {
        DcOfferer::bind(config, mode).await
    }

    fn offer(&self) -> W3cDescription {
        DcOfferer::offer(self)
    }

    async fn connect(self, answer: &W3cDescription) -> Result<DcLink, DcError> {
        DcOfferer::connect(self, answer).await
    }
}

/// The answering side relays whatever channel the offer opens, in that
/// channel's mode: `mode` (what the offering side announced) is not needed
/// to answer.
impl Answering<Dc> for DcAnswerer {
    async fn bind(config: DcConfig, _mode: Mode, offer: &W3cDescription) -> Result<Self, DcError> {
        DcAnswerer::bind(config, offer).await
    }

    fn answer(&self) -> W3cDescription {
        DcAnswerer::answer(self)
    }

    fn accept(self) -> impl Future<Output = Result<DcLink, DcError>> + Send + 'static {
        DcAnswerer::accept(self)
    }
}
