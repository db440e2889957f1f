//! Unit tests of `mod.rs`.

use super::*;

#[test]
fn hops_add_their_difference_and_receivers_split_theirs() {
    let added = added_per_hop(&[0.40, 0.75, 1.30]);
    let want = [0.40, 0.35, 0.55];
    assert_eq!(added.len(), 3);
    for (a, w) in added.iter().zip(want) {
        assert!((a - w).abs() < 1e-12, "{added:?}");
    }
    // A hop whose tail happened to be better shows as negative, not hidden.
    assert!(added_per_hop(&[1.0, 0.9])[1] < 0.0);
    assert!(added_per_hop(&[]).is_empty());
    assert_eq!(per_extra_receiver(12.0, 40.0, 8), Some(4.0));
    assert_eq!(per_extra_receiver(12.0, 40.0, 2), Some(28.0));
    assert_eq!(per_extra_receiver(12.0, 40.0, 1), None);
    assert_eq!(per_extra_receiver(12.0, 40.0, 0), None);
}

#[test]
fn a_hop_is_measured_on_the_packets_that_crossed_it() {
    // Packet 1 never reached the first node, packet 3 not the second.
    let before = [1_000_000, 0, 2_000_000, 3_000_000];
    let this = [1_400_000, 1_500_000, 2_300_000, 0];
    let hop = hop_delays(&before, &this);
    assert_eq!(hop.count(), 2);
    let l = hop.summary();
    assert!(
        (l.p50 - 0.3).abs() < 0.001 && (l.max - 0.4).abs() < 0.001,
        "{l:?}"
    );
    // A packet seen earlier behind the later node counts as no delay.
    assert_eq!(hop_delays(&[5_000], &[4_000]).count(), 1);
    assert_eq!(hop_delays(&[], &[1]).count(), 0);
}

/// A tiny chain and fan-out of real `relay` processes: packets reach
/// every hop and every receiver, and every figure is present and sane.
/// Behaviour, not speed: the bounds hold on a loaded 2-core machine.
#[test]
fn real_relays_deliver_at_every_hop_and_every_receiver() {
    let binary = match built_relay_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let config = TreeConfig {
        workload: Workload::ConstantRate { size: 300, pps: 200 },
        duration: Duration::from_secs(1),
        ..TreeConfig::default()
    };
    let check = |run: &TreeRun, taps: usize| {
        assert_eq!(run.offered, 200, "{run:?}");
        assert_eq!(run.taps.len(), taps);
        assert_eq!(run.relays.len(), taps + 1, "relay offer and one relay per tap");
        assert!(run.problem.is_none(), "{:?}", run.problem);
        for t in &run.taps {
            // Loopback at 200 pps: everything, bar a packet a loaded
            // machine's full socket buffer might drop.
            assert!(t.delivered >= 198, "{}: {} of 200", t.name, t.delivered);
            assert_eq!(t.latency.count(), t.delivered);
            let l = t.latency.summary();
            assert!(
                l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max && l.max < 1_000.0,
                "{l:?}"
            );
        }
        for r in &run.relays {
            // Each relay did work, and no more than two cores' worth.
            let pct = run.core_percent(r);
            assert!(
                r.cpu > Duration::ZERO && pct <= 200.0,
                "{}: {:?}, {pct}%",
                r.role,
                r.cpu
            );
            assert!(run.cpu_us_per_packet(r) > 0.0);
        }
        assert!(run.window >= config.duration);
    };
    if has_forward(&binary) {
        let chain = measure(
            &binary,
            (Transport::RtpUdp, Mode::Unreliable),
            Topology::Chain { hops: 2 },
            &config,
        )
        .expect("a 2-hop chain");
        check(&chain, 2);
        assert_eq!(chain.relays[0].role, "relay offer");
        assert_eq!(chain.relays[2].role, "node 2");
        assert_eq!(chain.hop_latency.len(), 2);
        assert!(chain.hop_latency.iter().all(|h| h.count() >= 198));
        // The second hop's packets crossed the first one too.
        assert!(chain.taps[1].latency.summary().p50 >= chain.taps[0].latency.summary().p50);
    } else {
        eprintln!(
            "chain not measured: {} has no `relay answer --forward`",
            binary.display()
        );
    }
    let fan_out = measure(
        &binary,
        (Transport::Quic, Mode::Datagram),
        Topology::FanOut { receivers: 2 },
        &config,
    )
    .expect("a 1 → 2 fan-out");
    check(&fan_out, 2);
    assert_eq!(fan_out.relays[2].role, "receiver 2");
}
