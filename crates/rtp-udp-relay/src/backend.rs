//! rtp-udp's [`Backend`]: its setup types under relay-core's contract.

use relay_core::backend::{Answering, Backend, CommonConfig, Offering};
use relay_core::{Mode, RtpUdpDescription, Transport};

use crate::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpError, RtpUdpLink, RtpUdpOfferer};

/// rtp-udp as a [`Backend`]: plain RTP or SRTP on one UDP socket per side.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtpUdp;

impl Backend for RtpUdp {
    const TRANSPORT: Transport = Transport::RtpUdp;
    type Config = RtpUdpConfig;
    type Offer = RtpUdpDescription;
    type Answer = RtpUdpDescription;
    type Link = RtpUdpLink;
    type Error = RtpUdpError;
    type Offerer = RtpUdpOfferer;
    type Answerer = RtpUdpAnswerer;

    fn config(common: &CommonConfig, mode: Mode) -> RtpUdpConfig {
        let config = RtpUdpConfig::default()
            .bind(common.bind)
            .advertise_ip(common.advertise_ip)
            .media_ports(common.media_ports)
            .liveness_timeout(common.liveness_timeout)
            .clock_rates(common.clock_rates.clone())
            .latch(common.latch);
        if mode == Mode::SrtpRepair {
            // The repair loop resends the SRTP bytes sent the first time:
            // the link keeps them for the latency budget.
            config.resend_window(common.max_delay)
        } else {
            config
        }
    }

    fn offer_was_bad(error: &RtpUdpError) -> bool {
        matches!(
            error,
            RtpUdpError::BadAddress { .. } | RtpUdpError::BadSrtp(_) | RtpUdpError::UnsupportedMode(_)
        )
    }
}

impl Offering<RtpUdp> for RtpUdpOfferer {
    async fn bind(config: RtpUdpConfig, mode: Mode) -> Result<Self, RtpUdpError> {
        RtpUdpOfferer::bind(config, mode).await
    }

    fn offer(&self) -> RtpUdpDescription {
        RtpUdpOfferer::offer(self)
    }

    async fn connect(self, answer: &RtpUdpDescription) -> Result<RtpUdpLink, RtpUdpError> {
        RtpUdpOfferer::connect(self, answer).await
    }
}

impl Answering<RtpUdp> for RtpUdpAnswerer {
    async fn bind(config: RtpUdpConfig, mode: Mode, offer: &RtpUdpDescription) -> Result<Self, RtpUdpError> {
        RtpUdpAnswerer::bind(config, mode, offer).await
    }

    fn answer(&self) -> RtpUdpDescription {
        RtpUdpAnswerer::answer(self)
    }

    fn accept(self) -> impl Future<Output = Result<RtpUdpLink, RtpUdpError>> + Send + 'static {
        RtpUdpAnswerer::accept(self)
    }
}
