//! The relay-core contract, checked against rtp-udp.

use relay_core::Mode;
use relay_core::conformance::{self as c, Loopback};
use rtp_udp_relay::{RtpUdp, RtpUdpConfig};

/// Both ends on loopback with this config.
type Pair = Loopback<RtpUdp>;

relay_core::conformance_tests!(unreliable, Pair::default(), Mode::Unreliable);
relay_core::conformance_tests!(srtp, Pair::default(), Mode::Srtp);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Loopback::<RtpUdp>(RtpUdpConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Unreliable, Mode::Srtp] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
