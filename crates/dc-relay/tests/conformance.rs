//! The relay-core contract, checked against dc-relay in both modes.

use dc_relay::{Dc, DcConfig};
use relay_core::Mode;
use relay_core::conformance::{self as c, Loopback};

/// Both ends on loopback with this config.
type Pair = Loopback<Dc>;

relay_core::conformance_tests!(reliable, Pair::default(), Mode::Reliable);
relay_core::conformance_tests!(unreliable, Pair::default(), Mode::Unreliable);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Loopback::<Dc>(DcConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Reliable, Mode::Unreliable] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
