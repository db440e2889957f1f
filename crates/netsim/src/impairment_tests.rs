//! Unit tests of `impairment.rs`.

use super::*;
use crate::config::{DEFAULT_QUEUE, GilbertElliott};

const MS: Duration = Duration::from_millis(1);

fn link(config: ImpairmentConfig, seed: u64) -> Impairment {
    Impairment::new(config, seed).unwrap()
}

/// Offers `n` packets of `len` bytes every `gap`, returns the decisions.
fn run(link: &mut Impairment, t0: Instant, n: usize, gap: Duration, len: usize) -> Vec<Decision> {
    (0..n).map(|i| link.on_packet(t0 + gap * i as u32, len)).collect()
}

/// Asserts `count` of `n` trials is within 4 standard deviations of `n·p`.
fn assert_binomial(count: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (count as f64 - mean).abs() <= 4.0 * sigma,
        "{what}: {count} of {n}, expected {mean:.0} ± {:.0} (4σ)",
        4.0 * sigma
    );
}

#[test]
fn clean_link_delivers_immediately_in_order() {
    let t0 = Instant::now();
    let mut l = link(ImpairmentConfig::default(), 0);
    for d in run(&mut l, t0, 100, MS, 100).iter().enumerate() {
        assert_eq!(*d.1, Decision::Deliver(t0 + MS * d.0 as u32));
    }
    assert_eq!(l.stats().scheduled, 100);
}

/// The exact decisions for seed 42. If this changes, every recorded
/// benchmark scenario changes with it: that needs a very good reason.
#[test]
fn golden_decisions_for_a_fixed_seed() {
    let config = ImpairmentConfig::default()
        .loss(0.2)
        .duplicate(0.2)
        .delay(10 * MS)
        .jitter(2 * MS)
        .reorder(true);
    let t0 = Instant::now();
    let mut l = link(config.clone(), 42);
    let got: Vec<String> = run(&mut l, t0, 16, MS, 1200)
        .into_iter()
        .map(|d| match d {
            Decision::Drop(cause) => format!("{cause:?}"),
            Decision::Deliver(at) => format!("{}", (at - t0).as_micros()),
            Decision::DeliverTwice(at, copy) => {
                format!("{}+{}", (at - t0).as_micros(), (copy - t0).as_micros())
            }
        })
        .collect();
    // Microseconds after t0 (copy after `+`). Cross-checked against an
    // independent transcription of the model in Python.
    let expected = [
        "10041",
        "12936",
        "13139",
        "12908",
        "14201",
        "15016",
        "14777",
        "17747",
        "18663",
        "17513+18917",
        "RandomLoss",
        "19782",
        "20103",
        "21762+21117",
        "23379",
        "23355+24639",
    ];
    assert_eq!(got, expected);

    // Same seed and traffic, same decisions; another seed, others.
    let again = run(&mut link(config.clone(), 42), t0, 1000, MS, 1200);
    assert_eq!(again, run(&mut link(config.clone(), 42), t0, 1000, MS, 1200));
    assert_ne!(again, run(&mut link(config, 43), t0, 1000, MS, 1200));
}

#[test]
fn random_loss_matches_the_setting() {
    let t0 = Instant::now();
    for (p, seed) in [(0.01, 1), (0.05, 2)] {
        let mut l = link(ImpairmentConfig::default().loss(p), seed);
        run(&mut l, t0, 100_000, Duration::from_micros(10), 200);
        let s = l.stats();
        assert_binomial(s.dropped.random_loss, 100_000, p, &format!("random loss {p}"));
        assert_eq!(s.dropped.total(), s.dropped.random_loss);
        assert_eq!(s.received, s.scheduled + s.dropped.total());
    }
}

#[test]
fn duplication_matches_the_setting() {
    let t0 = Instant::now();
    let mut l = link(ImpairmentConfig::default().duplicate(0.01).delay(MS), 9);
    let decisions = run(&mut l, t0, 100_000, Duration::from_micros(10), 200);
    let twice = decisions
        .iter()
        .filter(|d| matches!(d, Decision::DeliverTwice(..)))
        .count();
    assert_binomial(twice as u64, 100_000, 0.01, "duplicates");
    assert_eq!(l.stats().duplicated, twice as u64);
    assert_eq!(l.stats().scheduled, 100_000 + twice as u64);
}

#[test]
fn full_loss_black_holes_and_zero_restores() {
    let t0 = Instant::now();
    let mut l = link(ImpairmentConfig::default().loss(1.0), 3);
    assert!(
        run(&mut l, t0, 1000, MS, 100)
            .iter()
            .all(|d| *d == Decision::Drop(DropCause::RandomLoss))
    );
    l.set_config(ImpairmentConfig::default()).unwrap();
    assert!(matches!(
        l.on_packet(t0 + 2 * MS * 1000, 100),
        Decision::Deliver(_)
    ));
    assert!(l.set_config(ImpairmentConfig::default().loss(2.0)).is_err());
}

#[test]
fn gilbert_elliott_mean_loss_and_burst_length() {
    let t0 = Instant::now();
    for (loss, burst) in [(0.05, 4.0), (0.02, 2.0), (0.1, 10.0)] {
        let chain = GilbertElliott::from_mean_loss(loss, burst).unwrap();
        let mut l = link(ImpairmentConfig::default().burst_loss(chain), 5);
        let n = 200_000;
        let decisions = run(&mut l, t0, n, Duration::from_micros(10), 200);
        let mut bursts = Vec::new();
        let mut run_len = 0u64;
        for d in &decisions {
            if *d == Decision::Drop(DropCause::BurstLoss) {
                run_len += 1;
            } else if run_len > 0 {
                bursts.push(run_len);
                run_len = 0;
            }
        }
        let lost: u64 = bursts.iter().sum();
        let mean_burst = lost as f64 / bursts.len() as f64;
        // Burst lengths are geometric with mean b, variance b(b − 1);
        // the mean of k of them is within 4σ/√k.
        let sigma = (burst * (burst - 1.0)).sqrt() / (bursts.len() as f64).sqrt();
        assert!(
            (mean_burst - burst).abs() <= 4.0 * sigma.max(1e-9),
            "mean burst {mean_burst:.3} over {} bursts, expected {burst} ± {:.3}",
            bursts.len(),
            4.0 * sigma
        );
        // Losses are correlated, so the binomial bound is too tight:
        // allow ±15% of the mean.
        let measured = lost as f64 / n as f64;
        assert!(
            (measured - loss).abs() < 0.15 * loss,
            "mean loss {measured} for {loss}"
        );
    }
}

/// Runs of consecutive `BurstLoss` drops in `decisions`, in packets.
fn loss_runs(decisions: &[Decision]) -> Vec<u64> {
    let mut runs = Vec::new();
    let mut run_len = 0u64;
    for d in decisions {
        if *d == Decision::Drop(DropCause::BurstLoss) {
            run_len += 1;
        } else if run_len > 0 {
            runs.push(run_len);
            run_len = 0;
        }
    }
    runs
}

#[test]
fn timed_burst_long_run_loss_and_burst_duration_match() {
    // A paced stream, one packet per ms for 1,000 s: each burst shows
    // as a run of losses about as many ms long as the burst.
    let t0 = Instant::now();
    let (mean_loss, burst) = (0.05, 20 * MS);
    let mut l = link(ImpairmentConfig::default().timed_burst_loss(mean_loss, burst), 7);
    let n = 1_000_000;
    let decisions = run(&mut l, t0, n, MS, 200);
    let runs = loss_runs(&decisions);
    let lost: u64 = runs.iter().sum();
    assert_eq!(l.stats().dropped.burst_loss, lost);

    // The loss fraction is the time average of a two-state chain with
    // correlation time τ = b·g/(b + g) (19 ms): variance ≈ 2·p(1−p)·τ/T.
    let tau = 0.019;
    let sigma = (2.0 * mean_loss * (1.0 - mean_loss) * tau / 1000.0).sqrt();
    let measured = lost as f64 / n as f64;
    assert!(
        (measured - mean_loss).abs() <= 4.0 * sigma,
        "mean loss {measured:.4}, expected {mean_loss} ± {:.4} (4σ)",
        4.0 * sigma
    );

    // Burst durations are exponential (σ = mean): the mean of k bursts
    // is within 4·mean/√k. Sampling at 1 ms misses a few bursts shorter
    // than a packet gap, which biases the mean up by about 2.5%.
    let mean_ms = lost as f64 / runs.len() as f64;
    let tolerance = 4.0 * 20.0 / (runs.len() as f64).sqrt() + 0.5;
    assert!(
        (mean_ms - 20.0).abs() <= tolerance,
        "mean burst {mean_ms:.2} ms over {} bursts, expected 20 ± {tolerance:.2}",
        runs.len()
    );
    // About 1,000 s / 400 ms bursts.
    assert!((2300..2700).contains(&runs.len()), "{} bursts", runs.len());
}

#[test]
fn a_sparse_sender_is_not_held_in_a_burst() {
    // One packet per 200 ms for an hour, as a sender probing once per
    // retransmission timeout does. A chain stepped only per packet
    // would keep such a sender in a burst for 4 packets on average,
    // 800 ms, and for seconds at its longest. Both chains let it go:
    // the timed one because its bursts are over long before the next
    // probe, the per-packet one because it forgets its state after
    // BURST_MEMORY without packets.
    let t0 = Instant::now();
    let every = 200 * MS;
    let n = 18_000;
    let longest = |config: ImpairmentConfig| {
        let mut l = link(config, 3);
        let runs = loss_runs(&run(&mut l, t0, n, every, 200));
        let lost = l.stats().dropped.burst_loss;
        assert_binomial(lost, n as u64, 0.05, "sparse sender's losses");
        let mean = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
        (every * *runs.iter().max().unwrap() as u32, mean)
    };
    let per_packet = GilbertElliott::from_mean_loss(0.05, 4.0).unwrap();
    for (name, config) in [
        ("per-packet", ImpairmentConfig::default().burst_loss(per_packet)),
        (
            "timed",
            ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS),
        ),
    ] {
        let (stuck, mean_run) = longest(config);
        // Independent 5% losses: a run of 4 among 18,000 probes about
        // one time in ten, of 5 one time in 200.
        assert!(stuck <= 4 * every, "{name} chain: longest {stuck:?}");
        // A loss is followed by another only when the next probe finds
        // a burst afresh: about 5% of the time.
        assert!(mean_run < 1.15, "{name} chain: mean run {mean_run}");
    }

    // A dense stream (one packet per ms) still meets 4-packet bursts.
    let mut dense = link(ImpairmentConfig::default().burst_loss(per_packet), 3);
    let runs = loss_runs(&run(&mut dense, t0, n, MS, 200));
    let mean_run = dense.stats().dropped.burst_loss as f64 / runs.len() as f64;
    assert!(
        (3.5..4.5).contains(&mean_run),
        "dense stream: mean run {mean_run}"
    );
}

#[test]
fn timed_burst_is_deterministic_and_independent_of_other_streams() {
    let t0 = Instant::now();
    let config = ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS);
    let decide = |config: ImpairmentConfig, seed| run(&mut link(config, seed), t0, 50_000, MS, 200);
    let a = decide(config.clone(), 42);
    assert_eq!(a, decide(config.clone(), 42));
    assert_ne!(a, decide(config.clone(), 43));
    // Adding jitter does not change which packets are lost.
    let lost = |d: &[Decision]| -> Vec<bool> { d.iter().map(|d| matches!(d, Decision::Drop(_))).collect() };
    let jittered = decide(config.clone().delay(20 * MS).jitter(2 * MS), 42);
    assert_eq!(lost(&a), lost(&jittered));
    // 0% never drops, 100% always does.
    assert!(
        decide(ImpairmentConfig::default().timed_burst_loss(0.0, 20 * MS), 1)
            .iter()
            .all(|d| matches!(d, Decision::Deliver(_)))
    );
    assert!(
        decide(ImpairmentConfig::default().timed_burst_loss(1.0, 20 * MS), 1)
            .iter()
            .all(|d| *d == Decision::Drop(DropCause::BurstLoss))
    );
}

#[test]
fn timed_burst_carries_over_unrelated_config_changes() {
    // The harness black-holes the path with `loss(1.0)` and restores
    // it: the timed chain must carry on where it was, not restart.
    let t0 = Instant::now();
    let base = ImpairmentConfig::default().timed_burst_loss(0.05, 20 * MS);
    let mut plain = link(base.clone(), 9);
    let mut switched = link(base.clone(), 9);
    let mut differ = 0;
    for i in 0..20_000u32 {
        let now = t0 + MS * i;
        if i == 5_000 {
            switched.set_config(base.clone().loss(1.0)).unwrap();
        }
        if i == 6_000 {
            switched.set_config(base.clone()).unwrap();
        }
        let (a, b) = (plain.on_packet(now, 200), switched.on_packet(now, 200));
        if !(5_000..6_000).contains(&i) && a != b {
            differ += 1;
        }
    }
    assert_eq!(differ, 0);
}

#[test]
fn rate_cap_paces_to_the_rate_and_drops_at_the_tail() {
    // 1 Mbit/s, 1,000-byte packets: one every 8 ms. Offer 2 Mbit/s.
    let t0 = Instant::now();
    let config = ImpairmentConfig::default().rate(1_000_000, QueueLimit::Packets(10));
    let mut l = link(config, 0);
    let decisions = run(&mut l, t0, 2000, 4 * MS, 1000);
    let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 8 * MS,
            "departures closer than the link allows"
        );
    }
    let span = (*times.last().unwrap() - t0).as_secs_f64();
    let throughput = times.len() as f64 * 8000.0 / span;
    assert!((throughput - 1e6).abs() < 0.01e6, "throughput {throughput} bit/s");
    let s = l.stats();
    // Half the offered load cannot fit (less the queue's start-up).
    assert!((s.dropped.queue_overflow as i64 - 1000).abs() <= 12, "{s:?}");
    assert_eq!(s.received, s.scheduled + s.dropped.queue_overflow);
    // The queue never held more than 10 packets: the worst queueing
    // delay is 10 transmission times.
    for (i, d) in decisions.iter().enumerate() {
        if let Decision::Deliver(at) = d {
            assert!(*at - (t0 + 4 * MS * i as u32) <= 80 * MS);
        }
    }
}

#[test]
fn rate_queue_in_bytes_and_under_the_cap() {
    let t0 = Instant::now();
    // 8 Mbit/s = 1 byte/µs; 3,000-byte queue holds three 1,000-byte packets.
    let config = ImpairmentConfig::default().rate(8_000_000, QueueLimit::Bytes(3000));
    let mut l = link(config.clone(), 0);
    let burst = run(&mut l, t0, 5, Duration::ZERO, 1000);
    let us = |d: &Decision| d.deliveries().next().map(|at| (at - t0).as_micros());
    let got: Vec<Option<u128>> = burst.iter().map(us).collect();
    assert_eq!(got, vec![Some(1000), Some(2000), Some(3000), None, None]);
    assert_eq!(l.stats().dropped.queue_overflow, 2);
    // Under the cap nothing waits and nothing drops.
    let mut l = link(config, 0);
    let decisions = run(&mut l, t0, 1000, 2 * MS, 1000);
    assert!(
        decisions
            .iter()
            .enumerate()
            .all(|(i, d)| us(d) == Some(2000 * i as u128 + 1000))
    );
    // A packet larger than the byte limit still passes an empty queue.
    let mut l = link(
        ImpairmentConfig::default().rate(8_000_000, QueueLimit::Bytes(100)),
        0,
    );
    assert!(matches!(l.on_packet(t0, 1500), Decision::Deliver(_)));
    assert_eq!(DEFAULT_QUEUE, QueueLimit::Bytes(65536));
}

#[test]
fn no_reorder_keeps_order_under_jitter() {
    // Order is kept unless asked otherwise.
    assert!(!ImpairmentConfig::default().reorder);
    let t0 = Instant::now();
    let config = ImpairmentConfig::default()
        .delay(20 * MS)
        .jitter(5 * MS)
        .duplicate(0.05);
    let mut l = link(config, 11);
    let decisions = run(&mut l, t0, 10_000, Duration::from_micros(100), 200);
    let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "a packet left before its predecessor"
    );
    // Jitter still applies: delays stay in the ±5 ms window (raising a
    // release time to its predecessor's never takes it past the
    // predecessor's own +5 ms) and still vary.
    let delays: Vec<Duration> = decisions
        .iter()
        .enumerate()
        .map(|(i, d)| d.deliveries().next().unwrap() - (t0 + Duration::from_micros(100) * i as u32))
        .collect();
    assert!(delays.iter().all(|d| *d >= 15 * MS && *d <= 25 * MS));
    let spread = *delays.iter().max().unwrap() - *delays.iter().min().unwrap();
    assert!(spread > 3 * MS, "delays spread only {spread:?}");
}

#[test]
fn reorder_mode_reorders_and_respects_the_jitter_window() {
    let t0 = Instant::now();
    let config = ImpairmentConfig::default()
        .delay(20 * MS)
        .jitter(5 * MS)
        .reorder(true);
    let mut l = link(config, 11);
    let decisions = run(&mut l, t0, 10_000, Duration::from_micros(100), 200);
    let times: Vec<Instant> = decisions.iter().flat_map(|d| d.deliveries()).collect();
    let inversions = times.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(inversions > 1000, "only {inversions} reorderings");
    for (i, at) in times.iter().enumerate() {
        let delay = *at - (t0 + Duration::from_micros(100) * i as u32);
        assert!(delay >= 15 * MS && delay <= 25 * MS, "delay {delay:?}");
    }
    // Jitter larger than the delay is floored at zero delay.
    let mut l = link(
        ImpairmentConfig::default().delay(MS).jitter(5 * MS).reorder(true),
        1,
    );
    for d in run(&mut l, t0, 1000, MS, 100).iter().enumerate() {
        let at = d.1.deliveries().next().unwrap();
        assert!(at >= t0 + MS * d.0 as u32);
    }
}

#[test]
fn in_flight_cap_drops_and_counts() {
    let t0 = Instant::now();
    let config = ImpairmentConfig::default().delay(10 * MS).max_in_flight(5);
    let mut l = link(config, 0);
    let decisions = run(&mut l, t0, 8, Duration::ZERO, 100);
    assert_eq!(decisions[4], Decision::Deliver(t0 + 10 * MS));
    assert_eq!(decisions[5], Decision::Drop(DropCause::DelayLineFull));
    assert_eq!(l.stats().dropped.delay_line_full, 3);
    assert_eq!(l.in_flight(), 5);
    // Once they are due, there is room again.
    assert!(matches!(l.on_packet(t0 + 10 * MS, 100), Decision::Deliver(_)));
    assert_eq!(l.in_flight(), 1);
}
