//! The relay-core conformance suite against the QUIC backend, in both modes.

use quic_relay::{Quic, QuicConfig};
use relay_core::Mode;
use relay_core::conformance::{self as c, Loopback};

/// Both ends on loopback with this config.
type Pair = Loopback<Quic>;

relay_core::conformance_tests!(datagram, Pair::default(), Mode::Datagram);
relay_core::conformance_tests!(stream, Pair::default(), Mode::Stream);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_clock_rates_reach_the_stats() {
    let _one_at_a_time = c::serialize().await;
    let factory = Loopback::<Quic>(QuicConfig::default().clock_rates(c::clock_rates()));
    for mode in [Mode::Datagram, Mode::Stream] {
        c::configured_clock_rates_reach_the_stats(&factory, mode).await;
    }
}
