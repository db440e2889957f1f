//! A hand-driven quinn peer that holds a pinned certificate but speaks
//! broken RoQ: the link counts what it drops, stops bad streams with the
//! right RoQ code, and the connection survives.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::VarInt;
use quinn::crypto::rustls::QuicClientConfig;
use relay_core::conformance::numbered;
use relay_core::{Mode, QuicOffer, RelayLink};

use crate::identity::{Identity, PinRecord, SERVER_NAME, client_tls};
use crate::roq::{self, ErrorCode};
use crate::setup::handshake_confirmed;
use crate::{QuicAnswerer, QuicConfig, QuicLink};

/// Our answerer's link, and a raw quinn connection to it.
async fn raw_pair(mode: Mode) -> (QuicLink, quinn::Connection, quinn::Endpoint) {
    let config = QuicConfig::default();
    let identity = Identity::generate().unwrap();
    let offer = QuicOffer {
        fingerprint: identity.fingerprint().to_string(),
        alpn: "roq".into(),
    };
    let answerer = QuicAnswerer::bind(config.clone(), mode, &offer).await.unwrap();
    let answer = answerer.answer();
    let accepting = tokio::spawn(answerer.accept());

    let tls = client_tls(
        &identity,
        answer.fingerprint.parse().unwrap(),
        "roq",
        Arc::new(PinRecord::default()),
    )
    .unwrap();
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    client.transport_config(config.transport().unwrap());
    let endpoint = config.endpoint(None).unwrap();
    let conn = endpoint
        .connect_with(client, answer.addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    handshake_confirmed(&conn).await.unwrap();
    let link = accepting.await.unwrap().unwrap();
    (link, conn, endpoint)
}

fn rtp(seq: u32) -> Bytes {
    numbered(0x5EED, seq, 100).into_bytes()
}

fn datagram(flow: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    roq::encode_datagram(flow, payload, &mut b).unwrap();
    b.freeze()
}

async fn recv_seq(link: &QuicLink) -> u16 {
    tokio::time::timeout(Duration::from_secs(5), link.recv())
        .await
        .expect("a packet in time")
        .expect("link open")
        .sequence_number()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_are_counted_and_the_link_survives() {
    let (link, raw, _ep) = raw_pair(Mode::Datagram).await;
    for bad in [
        Bytes::new(),                           // no flow id at all
        Bytes::from_static(&[0x80, 0x00]),      // flow id varint cut short
        datagram(0, b"\x00not rtp, version 0"), // framed, but not RTP
        datagram(0, b""),                       // framed, empty packet
        datagram(9, &rtp(1)),                   // RTP on an unsignaled flow
    ] {
        raw.send_datagram(bad).unwrap();
    }
    raw.send_datagram(datagram(0, &rtp(2))).unwrap();
    assert_eq!(recv_seq(&link).await, 2, "only the good datagram is delivered");
    let drops = link.stats().drops;
    assert_eq!((drops.malformed, drops.unknown_source), (4, 1), "{drops:?}");
    assert_eq!(link.close_reason(), None);

    // And it still works the other way.
    link.send(numbered(1, 3, 100)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), raw.read_datagram())
        .await
        .unwrap()
        .unwrap();
    let (flow, packet) = roq::decode_datagram(back).unwrap();
    assert_eq!(
        (flow, packet, link.stats().drops.total()),
        (0, numbered(1, 3, 100).into_bytes(), 5)
    );
}

async fn stream_with(conn: &quinn::Connection, bytes: &[u8]) -> quinn::SendStream {
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

async fn stopped_code(s: quinn::SendStream) -> Option<VarInt> {
    tokio::time::timeout(Duration::from_secs(5), s.stopped())
        .await
        .expect("the link reacts to the stream")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streams_are_stopped_with_roq_codes_and_the_link_survives() {
    let (link, raw, _ep) = raw_pair(Mode::Stream).await;
    let code = |c: ErrorCode| Some(VarInt::from_u32(c as u32));

    // A length no RTP packet can have: the stream's framing is lost.
    let mut wire = BytesMut::new();
    roq::encode_stream_header(0, &mut wire).unwrap();
    roq::encode_packet_length(10_000_000, &mut wire).unwrap();
    let s = stream_with(&raw, &wire).await;
    assert_eq!(stopped_code(s).await, code(ErrorCode::PacketError));

    // A flow that was never signaled.
    let mut wire = BytesMut::new();
    roq::encode_stream_header(7, &mut wire).unwrap();
    let s = stream_with(&raw, &wire).await;
    assert_eq!(stopped_code(s).await, code(ErrorCode::UnknownFlowId));

    // A good packet, a non-RTP packet, then the stream ends mid-packet.
    let mut wire = BytesMut::new();
    roq::encode_stream_header(0, &mut wire).unwrap();
    let good = rtp(1);
    roq::encode_packet_length(good.len(), &mut wire).unwrap();
    wire.extend_from_slice(&good);
    roq::encode_packet_length(3, &mut wire).unwrap();
    wire.extend_from_slice(b"\x00no");
    roq::encode_packet_length(100, &mut wire).unwrap();
    wire.extend_from_slice(&[0x80; 10]);
    let mut s = stream_with(&raw, &wire).await;
    s.finish().unwrap();
    assert_eq!(recv_seq(&link).await, 1);

    // The connection is fine: a new, good stream is delivered.
    let mut wire = BytesMut::new();
    roq::encode_stream_header(0, &mut wire).unwrap();
    let good = rtp(2);
    roq::encode_packet_length(good.len(), &mut wire).unwrap();
    wire.extend_from_slice(&good);
    let _s = stream_with(&raw, &wire).await;
    assert_eq!(recv_seq(&link).await, 2);
    // Each stream has its own reader: wait for the third one to reach its
    // FIN. Too-long length, non-RTP packet, truncated packet; unknown flow.
    let mut drops = link.stats().drops;
    for _ in 0..500 {
        if drops.malformed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        drops = link.stats().drops;
    }
    assert_eq!((drops.malformed, drops.unknown_source), (3, 1), "{drops:?}");
    assert_eq!(link.close_reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sending_moves_our_media_to_a_new_stream() {
    let (link, raw, _ep) = raw_pair(Mode::Stream).await;
    link.send(numbered(1, 0, 100)).await.unwrap();
    let mut first = raw.accept_uni().await.unwrap();
    let mut head = [0u8; 3];
    first.read_exact(&mut head).await.unwrap();
    // Flow id 0, then 100 as a two-byte varint (RFC 9000 section 16).
    assert_eq!(head, [0, 0x40, 100], "stream header and first length");
    // RoQ section 5.2.2: the receiver no longer wants this stream.
    first
        .stop(VarInt::from_u32(ErrorCode::FrameCancelled as u32))
        .unwrap();

    let sender = tokio::spawn(async move {
        for seq in 1..200 {
            if link.send(numbered(1, seq, 100)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        link
    });
    let mut second = tokio::time::timeout(Duration::from_secs(5), raw.accept_uni())
        .await
        .expect("a new stream after STOP_SENDING")
        .unwrap();
    let mut dec = roq::StreamDecoder::new(1500);
    let mut events = Vec::new();
    while events.len() < 2 {
        let mut chunk = second.read_chunk(usize::MAX, true).await.unwrap().unwrap().bytes;
        while let Some(e) = dec.decode(&mut chunk).unwrap() {
            events.push(e);
        }
    }
    assert_eq!(events[0], roq::StreamEvent::FlowId(0));
    assert!(matches!(events[1], roq::StreamEvent::Packet(_)));
    raw.close(VarInt::from_u32(0), b"");
    sender.abort();
}
