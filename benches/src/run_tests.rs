//! Unit tests of `run.rs`.

use super::*;

#[test]
fn seen_counts_each_index_once() {
    let mut s = Seen::with_capacity(10);
    assert!(s.insert(5));
    assert!(!s.insert(5));
    assert!(s.insert(100_000));
    assert!(s.insert(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_udp_run_delivers_and_measures() {
    let clean = &crate::scenario::scenarios()[0];
    let w = Workload::ConstantRate { size: 200, pps: 2000 };
    let r = measure(
        Subject::RawUdp,
        clean,
        &w,
        Duration::from_millis(200),
        Drain::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(r.offered, 400);
    assert!(r.delivered_ratio() > 0.99, "{r:?}");
    assert!(r.latency.count() == r.delivered);
    assert!(r.latency.summary().p50 < 5.0);
    assert!(r.jitter_ms.is_some());
    assert!(r.problem.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_black_holes_the_middle_and_is_timed() {
    let outage = crate::scenario::scenarios()
        .into_iter()
        .find(|s| s.name == "wan-outage")
        .unwrap();
    // 200 pps for 2.5 s: down from 0.75 s to 1.75 s.
    let w = Workload::ConstantRate { size: 200, pps: 200 };
    let r = measure(
        Subject::RawUdp,
        &outage,
        &w,
        Duration::from_millis(2500),
        Drain::default(),
        1,
    )
    .await
    .unwrap();
    let o = r.outage.expect("the scenario has an outage");
    // Behaviour, not speed: bounds wide enough for a loaded machine.
    assert!(
        o.down >= Duration::from_secs(1) && o.down < Duration::from_millis(1500),
        "{o:?}"
    );
    // About 200 of 500 packets fell into the hole (a longer hole on a
    // loaded machine takes a few more).
    assert!((200..=320).contains(&r.delivered), "{} delivered", r.delivered);
    // Raw UDP is back one path delay (20 ms ± 2) plus at most one packet
    // gap (5 ms) later on an idle machine; nothing is held back.
    let back = o.first_arrival.expect("packets after the outage");
    assert!(
        back >= Duration::from_millis(15) && back < Duration::from_millis(500),
        "{o:?}"
    );
    assert_eq!(o.fresh, o.first_arrival);
    assert_eq!(o.stale, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_runs_through_an_impaired_proxy() {
    let lossy = &crate::scenario::scenarios()[1];
    let w = Workload::Audio { streams: 2 };
    for subject in Subject::ours() {
        let r = measure(
            subject,
            lossy,
            &w,
            Duration::from_millis(300),
            Drain::default(),
            3,
        )
        .await
        .unwrap();
        assert!(r.netsim.is_some(), "{subject:?}");
        // 30 packets offered; the proxy saw their bytes (plus control
        // traffic and the transport's overhead). Not 30 datagrams: QUIC
        // packs the two streams' simultaneous packets into one.
        assert_eq!(r.offered, 30, "{subject:?}");
        let forward = r.netsim.unwrap().0;
        assert!(
            forward.received_bytes >= r.offered_bytes && forward.received >= 15,
            "{subject:?}: {:?}",
            r.netsim
        );
        if subject.is_reliable() {
            assert_eq!(r.delivered, 30, "{subject:?}");
        }
        assert!(r.jitter_ms.is_some(), "{subject:?}");
    }
}
