//! The relay-core contract, checked against rtp-udp.

use async_trait::async_trait;
use relay_core::Mode;
use relay_core::conformance::{Connecting, PairFactory};
use rtp_udp_relay::{RtpUdpAnswerer, RtpUdpConfig, RtpUdpOfferer};

struct Loopback;

#[async_trait]
impl PairFactory for Loopback {
    async fn connect(&self, mode: Mode) -> Connecting {
        let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), mode)
            .await
            .expect("bind offerer");
        let answerer = RtpUdpAnswerer::bind(RtpUdpConfig::default(), mode, &offerer.offer())
            .await
            .expect("bind answerer");
        let answer = answerer.answer();
        Connecting::new(async move { offerer.connect(&answer).await }, answerer.accept())
    }
}

relay_core::conformance_tests!(unreliable, Loopback, Mode::Unreliable);
relay_core::conformance_tests!(srtp, Loopback, Mode::Srtp);
