//! Unit tests of `ceiling.rs`.

use super::*;

#[test]
fn a_batch_holds_numbered_datagrams_of_one_size() {
    let mut buf = Vec::new();
    fill_batch(&mut buf, 7, 3, 20);
    assert_eq!(buf.len(), 60);
    let seqs: Vec<u64> = buf
        .chunks(20)
        .map(|d| u64::from_be_bytes(d[..8].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, [7, 8, 9]);
    assert!(buf.chunks(20).all(|d| d[8..].iter().all(|&b| b == 0)));
}

/// Sends one GSO batch over loopback and reads it back: each datagram
/// arrives whole, at its own size, in order, with and without GRO;
/// a shorter last segment stays its own datagram.
fn round_trip(receive: Receive) {
    let Pair {
        tx,
        tx_state,
        rx,
        rx_state,
        to,
    } = match pair(receive) {
        Ok(p) => p,
        Err(e) if e.contains("kernel") => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut buf = Vec::new();
    fill_batch(&mut buf, 100, 5, 1_200);
    // A 500-byte tail segment: GSO allows the last one to be shorter.
    buf.extend_from_slice(&105u64.to_be_bytes());
    buf.resize(buf.len() + 492, 0xab);
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: &buf,
        segment_size: Some(1_200),
        src_ip: None,
    };
    tx_state.try_send((&tx).into(), &transmit).unwrap();
    let mut got: Vec<(u64, usize)> = Vec::new();
    let mut storage = vec![0u8; quinn_udp::BATCH_SIZE * RECV_BUFFER];
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut calls = 0;
    while got.len() < 6 && Instant::now() < deadline {
        let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(RECV_BUFFER).map(IoSliceMut::new).collect();
        match rx_state.recv((&rx).into(), &mut bufs, &mut meta) {
            Ok(n) => {
                calls += 1;
                for (b, m) in bufs.iter().zip(&meta).take(n) {
                    if receive == Receive::Recvmmsg {
                        assert_eq!(m.stride, m.len, "GRO is off: one datagram per message");
                    }
                    got.extend(
                        datagrams(b, m).map(|d| (u64::from_be_bytes(d[..8].try_into().unwrap()), d.len())),
                    );
                }
            }
            Err(_) => wait(&rx, libc::POLLIN, Duration::from_millis(50)),
        }
    }
    assert_eq!(
        got,
        [
            (100, 1_200),
            (101, 1_200),
            (102, 1_200),
            (103, 1_200),
            (104, 1_200),
            (105, 500)
        ],
        "{calls} receive calls"
    );
}

#[test]
fn gso_batches_keep_order_and_boundaries_through_recvmmsg() {
    round_trip(Receive::Recvmmsg);
}

#[test]
fn gso_batches_keep_order_and_boundaries_through_gro() {
    round_trip(Receive::Gro);
}

#[test]
fn a_short_flood_delivers_in_order() {
    let d = match batched(Receive::Recvmmsg, 1_200, Duration::from_millis(50)) {
        Ok(d) => d,
        Err(e) if e.contains("kernel") => return eprintln!("skipped: {e}"),
        Err(e) => panic!("{e}"),
    };
    assert!(d.sent > 0 && d.datagrams > 0 && d.datagrams <= d.sent, "{d:?}");
    assert_eq!(d.bytes, d.datagrams * 1_200);
    assert_eq!(d.reordered, 0);
    assert!(d.pps() > 0.0);
}

#[test]
fn iperf3_reports_are_read_from_the_receiver_side() {
    // iperf3 3.12, trimmed: 133,990 sent, 80,213 lost at the receiver.
    let json = r#"{"start":{},"end":{
        "sum":{"seconds":1.00774,"bytes":160788000,"lost_packets":80213,"packets":133990,"sender":true},
        "sum_sent":{"seconds":1.000035,"bytes":160788000,"lost_packets":0,"packets":133990,"sender":true},
        "sum_received":{"seconds":1.00774,"bytes":64509600,"lost_packets":80213,"packets":133971,"sender":false}}}"#;
    let d = parse_iperf3(json, 1_200).unwrap();
    assert_eq!(d.sent, 133_990);
    assert_eq!(d.datagrams, 53_758);
    assert_eq!(d.bytes, 64_509_600);
    assert!((d.pps() - 53_758.0 / 1.00774).abs() < 1e-6);
    // Older iperf3: only `sum`.
    let old = r#"{"end":{"sum":{"seconds":2.0,"lost_packets":10,"packets":110}}}"#;
    let d = parse_iperf3(old, 1_200).unwrap();
    assert_eq!((d.sent, d.datagrams), (110, 100));
    assert_eq!(d.pps(), 50.0);
    let refused = r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
    assert!(
        parse_iperf3(refused, 1_200)
            .unwrap_err()
            .contains("unable to connect")
    );
    assert!(parse_iperf3("", 1_200).unwrap_err().contains("no JSON"));
    assert!(
        parse_iperf3(r#"{"end":{"sum":{"seconds":1}}}"#, 1_200)
            .unwrap_err()
            .contains("`packets`")
    );
}

#[test]
fn disagreement_is_relative_to_iperf3() {
    assert_eq!(disagreement(120.0, 100.0), Some(0.2));
    assert!(disagreement(120.0, 100.0).unwrap() <= DISAGREEMENT_LIMIT);
    assert!(disagreement(121.0, 100.0).unwrap() > DISAGREEMENT_LIMIT);
    assert!(disagreement(79.0, 100.0).unwrap() > DISAGREEMENT_LIMIT);
    assert!(disagreement(80.0, 100.0).unwrap() <= DISAGREEMENT_LIMIT);
    assert_eq!(disagreement(100.0, 0.0), None);
}
