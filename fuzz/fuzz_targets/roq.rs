//! RoQ framing (`quic_relay::roq`): datagrams and the stream de-framer.
//!
//! Input layout, read with `arbitrary::Unstructured`:
//! `max_packet: u16`, `chunk sizes: Vec<u8>`, then the rest is the wire.
//!
//! Invariants checked:
//! - datagram: what decodes re-encodes (shortest varint) and decodes to the
//!   same flow id and packet; the re-encoding is never longer.
//! - stream: the events, the error and `finish()` are the same whether the
//!   wire arrives in one chunk or in the arbitrary chunks; a chunk that
//!   yields `Ok(None)` was consumed whole; re-encoding the decoded events
//!   and decoding them again gives the same events.
#![no_main]

use arbitrary::Unstructured;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quic_relay::roq::{self, FrameError, StreamDecoder, StreamEvent};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(max_packet) = u.arbitrary::<u16>() else {
        return;
    };
    let Ok(chunks) = u.arbitrary::<Vec<u8>>() else {
        return;
    };
    let wire = Bytes::copy_from_slice(u.take_rest());

    datagram(&wire);

    let max_packet = max_packet as usize;
    let whole = decode(max_packet, std::iter::once(wire.clone()));
    let chunked = decode(max_packet, split(&wire, &chunks));
    assert_eq!(whole, chunked, "chunking changed what the stream decodes to");

    // Re-encode what decoded (shortest varints) and decode that again.
    let (events, _, _) = &whole;
    if events.is_empty() {
        return;
    }
    let mut again = BytesMut::new();
    for e in events {
        match e {
            StreamEvent::FlowId(flow) => roq::encode_stream_header(*flow, &mut again).unwrap(),
            StreamEvent::Packet(p) => {
                roq::encode_packet_length(p.len(), &mut again).unwrap();
                again.extend_from_slice(p);
            }
        }
    }
    let again = again.freeze();
    assert!(again.len() <= wire.len(), "shortest re-encoding grew");
    let (events2, error2, finish2) = decode(max_packet, split(&again, &chunks));
    assert_eq!(&events2, events, "decode(encode(events)) differs");
    assert_eq!(error2, None);
    assert_eq!(finish2, Ok(()));
});

fn datagram(wire: &Bytes) {
    let Ok((flow, packet)) = roq::decode_datagram(wire.clone()) else {
        assert!(wire.is_empty() || wire.len() < 1 << (wire[0] >> 6));
        return;
    };
    assert!(flow <= roq::VARINT_MAX);
    assert_eq!(&packet[..], &wire[wire.len() - packet.len()..]);
    let mut buf = BytesMut::new();
    roq::encode_datagram(flow, &packet, &mut buf).unwrap();
    assert!(buf.len() <= wire.len());
    assert_eq!(roq::decode_datagram(buf.freeze()).unwrap(), (flow, packet));
}

/// `wire` cut at the sizes in `chunks` (0 gives an empty chunk); the last
/// chunk is whatever is left.
fn split(wire: &Bytes, chunks: &[u8]) -> impl Iterator<Item = Bytes> {
    let mut at = 0;
    let mut out = Vec::new();
    for &c in chunks {
        let end = (at + c as usize).min(wire.len());
        out.push(wire.slice(at..end));
        at = end;
    }
    out.push(wire.slice(at..));
    out.into_iter()
}

/// Events until the first error, that error, and `finish()` if no error.
type Decoded = (Vec<StreamEvent>, Option<FrameError>, Result<(), FrameError>);

fn decode(max_packet: usize, chunks: impl Iterator<Item = Bytes>) -> Decoded {
    let mut dec = StreamDecoder::new(max_packet);
    let mut events = Vec::new();
    for mut chunk in chunks {
        loop {
            match dec.decode(&mut chunk) {
                Ok(Some(e)) => {
                    if let StreamEvent::Packet(p) = &e {
                        assert!(!p.is_empty() && p.len() <= max_packet);
                    }
                    assert_eq!(
                        matches!(e, StreamEvent::FlowId(_)),
                        events.is_empty(),
                        "the flow id comes first, once"
                    );
                    events.push(e);
                }
                Ok(None) => {
                    assert!(chunk.is_empty(), "Ok(None) with input left");
                    break;
                }
                Err(err) => return (events, Some(err), Ok(())),
            }
        }
    }
    assert_eq!(dec.has_flow_id(), !events.is_empty());
    let finish = dec.finish();
    (events, None, finish)
}
