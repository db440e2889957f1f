//! Unit tests of `pion.rs`.

use super::*;

#[test]
fn events_parse_and_bad_lines_say_what_they_were() {
    assert_eq!(
        parse_event(r#"{"event":"listening","udp":"127.0.0.1:4000"}"#),
        Ok(Event::Listening("127.0.0.1:4000".parse().unwrap()))
    );
    assert_eq!(
        parse_event(r#"{"event":"offer","sdp":"v=0\r\n"}"#),
        Ok(Event::Description("v=0\r\n".into()))
    );
    assert_eq!(
        parse_event(r#"{"event":"open","setup_us":4211}"#),
        Ok(Event::Open(Duration::from_micros(4211)))
    );
    assert!(parse_event("panic: boom").unwrap_err().contains("panic: boom"));
    assert!(parse_event(r#"{"event":"open"}"#).is_err());
}

#[test]
fn the_cache_key_follows_every_part() {
    let a = fnv1a(&[b"main", b"mod", b"go1.19"]);
    assert_eq!(a, fnv1a(&[b"main", b"mod", b"go1.19"]));
    assert_ne!(a, fnv1a(&[b"main", b"mod", b"go1.20"]));
    // Parts are separated: moving a byte across a boundary changes it.
    assert_ne!(a, fnv1a(&[b"mai", b"nmod", b"go1.19"]));
}

/// The pion relay end to end, both modes: built from source, opened,
/// a few hundred packets through it on a clean path and through the
/// netsim proxy, and back the other way. Counts, not speed. Skips (and
/// says so) only when there is no `go` at all; CI installs it
/// (scripts/install-deps.sh), and a failed build fails the test.
/// `f`, or a panic after 30 s: no test waits unbounded on a child process.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("no result within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pion_relays_both_modes_clean_and_through_the_proxy() {
    use crate::path::Path;
    use crate::run::{Drain, measure};
    use crate::scenario::{Subject, scenarios};
    use crate::workload::Workload;

    match relay_binary() {
        Err(Unavailable::NoGo(e)) => {
            eprintln!(
                "SKIPPED pion_relays_both_modes_clean_and_through_the_proxy: no Go toolchain ({e}); run scripts/install-deps.sh"
            );
            return;
        }
        Err(e) => panic!("{e}"),
        Ok(_) => {}
    }
    let all = scenarios();
    let (clean, lossy) = (&all[0], all.iter().find(|s| s.name == "loss1").unwrap());
    // 300 packets of 200 bytes at 1,000/s.
    let w = Workload::ConstantRate { size: 200, pps: 1000 };
    for subject in Subject::PION {
        for scenario in [clean, lossy] {
            let r = bounded(measure(
                subject,
                scenario,
                &w,
                Duration::from_millis(300),
                Drain::default(),
                5,
            ))
            .await
            .unwrap_or_else(|e| panic!("{subject:?} {}: {e}", scenario.name));
            assert_eq!(r.offered, 300, "{subject:?} {}", scenario.name);
            assert_eq!(r.duplicates, 0, "{subject:?} {}", scenario.name);
            assert!(
                r.problem.is_none(),
                "{subject:?} {}: {:?}",
                scenario.name,
                r.problem
            );
            assert!(r.link_setup.is_some_and(|d| d < SETUP_TIMEOUT), "{r:?}");
            match (subject.is_reliable(), scenario.impairment.is_some()) {
                // Reliable: everything, loss or not.
                (true, _) => assert_eq!(r.delivered, 300, "{subject:?} {}", scenario.name),
                // Unreliable on loopback: all but kernel drops (none expected at 1,000/s).
                (false, false) => assert!(r.delivered >= 297, "{subject:?}: {} of 300", r.delivered),
                // Unreliable through 1% loss each way: what the network let through.
                (false, true) => assert!(r.delivered >= 270, "{subject:?}: {} of 300", r.delivered),
            }
            if scenario.impairment.is_some() {
                let (forward, back) = r.netsim.expect("the proxy carried the channel");
                // The media crossed the proxy (SCTP bundles several
                // messages into one packet: count bytes), and SACKs came back.
                assert!(forward.received_bytes >= 300 * 200, "{forward:?}");
                assert!(back.received > 0, "{back:?}");
            }
        }
        // The way back (answerer → offerer) works too.
        let path = bounded(Path::open(subject, clean, 1)).await.unwrap();
        let (_, done) = bounded(path.ping_pong(50, 200, Duration::from_millis(500))).await;
        assert_eq!(done, 50, "{subject:?}");
        let pids = path.helper_pids();
        assert_eq!(pids.len(), 2);
        path.close().await;
        // Both processes are gone (reaped) once the path is closed.
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "pion process {pid} left running"
            );
        }
    }
}

#[test]
fn a_missing_source_is_reported_not_built() {
    let dir = std::env::temp_dir().join(format!("pion-relay-nosrc-{}", std::process::id()));
    match build(&dir.join("missing"), &dir) {
        // Without go the first check already says so.
        Err(Unavailable::NoGo(_)) | Err(Unavailable::NoSource(_)) => {}
        other => panic!("{other:?}"),
    }
}
