//! RoQ framing (draft-ietf-avtcore-rtp-over-quic), pure: no sockets, no
//! QUIC, no clock. Everything here works on bytes and is tested on bytes.
//!
//! - [`encode_datagram`] / [`decode_datagram`]: a DATAGRAM frame payload is
//!   `Flow Identifier (i), RTP Packet (..)` (section 5.3).
//! - [`encode_stream_header`], [`encode_packet_length`] and
//!   [`StreamDecoder`]: a unidirectional stream is `Flow Identifier (i)`
//!   followed by any number of `Length (i), RTP Packet (..)` (section 5.2.1).
//! - [`ErrorCode`]: the RoQ application error codes (section 7), used in
//!   CONNECTION_CLOSE, STOP_SENDING and RESET_STREAM.
//!
//! `(i)` is a QUIC variable-length integer (RFC 9000 section 16): the two
//! high bits of the first byte give the length (1, 2, 4 or 8 bytes), the
//! remaining bits the value, big-endian, so values below 2^62.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use quic_relay::roq;
//!
//! let mut buf = BytesMut::new();
//! roq::encode_datagram(7, b"\x80\x60rtp...", &mut buf).unwrap();
//! assert_eq!(buf[0], 7); // flow id 7 fits one varint byte
//! let (flow, packet) = roq::decode_datagram(buf.freeze()).unwrap();
//! assert_eq!((flow, &packet[..]), (7, &b"\x80\x60rtp..."[..]));
//! ```

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest value a QUIC varint carries: 2^62 - 1 (RFC 9000 section 16).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Why bytes are not valid RoQ framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The input ended inside a varint or a packet.
    #[error("truncated RoQ {what}: {have} of {need} bytes present")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes present.
        have: usize,
        /// Bytes the field needs.
        need: usize,
    },
    /// A value does not fit a QUIC varint (only when encoding).
    #[error("{0} does not fit a QUIC varint (max 2^62-1)")]
    VarintRange(u64),
    /// A stream announced a packet longer than this receiver accepts; the
    /// framing cannot be trusted after that.
    #[error("RoQ stream announced a {len}-byte packet; the limit is {max}")]
    PacketTooLong {
        /// Announced length.
        len: u64,
        /// This receiver's limit.
        max: usize,
    },
    /// A stream announced an empty packet, which no RTP or RTCP packet is.
    #[error("RoQ stream announced a zero-length packet")]
    EmptyPacket,
}

impl FrameError {
    /// The RoQ error code to close with when this error ends a stream or
    /// connection: section 7 lists "length does not match packet, invalid
    /// flow id encoding" under ROQ_PACKET_ERROR.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PacketError
    }
}

/// RoQ application error codes (draft-ietf-avtcore-rtp-over-quic section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// No error: a clean close (CONNECTION_CLOSE after `close()`).
    NoError = 0x00,
    /// An error that matches no more specific code.
    GeneralError = 0x01,
    /// Something broke inside the RoQ stack itself.
    InternalError = 0x02,
    /// Invalid payload format: bad length, bad varint, non-RTP on an RTP flow.
    PacketError = 0x03,
    /// The peer created a stream RoQ does not allow (a bidirectional one).
    StreamCreationError = 0x04,
    /// STOP_SENDING / RESET_STREAM for media that is no longer wanted.
    FrameCancelled = 0x05,
    /// A flow identifier that was not signaled.
    UnknownFlowId = 0x06,
    /// Signaling promised something the QUIC connection does not provide
    /// (e.g. DATAGRAM support).
    ExpectationUnmet = 0x07,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::NoError,
        ErrorCode::GeneralError,
        ErrorCode::InternalError,
        ErrorCode::PacketError,
        ErrorCode::StreamCreationError,
        ErrorCode::FrameCancelled,
        ErrorCode::UnknownFlowId,
        ErrorCode::ExpectationUnmet,
    ];

    /// The code as it goes on the wire.
    pub fn value(self) -> u64 {
        self as u64
    }

    /// The code for a wire value, if RoQ defines it.
    pub fn from_value(v: u64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.value() == v)
    }

    /// The name the draft uses (`ROQ_NO_ERROR`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoError => "ROQ_NO_ERROR",
            ErrorCode::GeneralError => "ROQ_GENERAL_ERROR",
            ErrorCode::InternalError => "ROQ_INTERNAL_ERROR",
            ErrorCode::PacketError => "ROQ_PACKET_ERROR",
            ErrorCode::StreamCreationError => "ROQ_STREAM_CREATION_ERROR",
            ErrorCode::FrameCancelled => "ROQ_FRAME_CANCELLED",
            ErrorCode::UnknownFlowId => "ROQ_UNKNOWN_FLOW_ID",
            ErrorCode::ExpectationUnmet => "ROQ_EXPECTATION_UNMET",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.value())
    }
}

/// Bytes a varint of `v` takes (RFC 9000 section 16, table 4), or `None`
/// past [`VARINT_MAX`].
pub fn varint_len(v: u64) -> Option<usize> {
    match v {
        0..=63 => Some(1),
        64..=16_383 => Some(2),
        16_384..=1_073_741_823 => Some(4),
        1_073_741_824..=VARINT_MAX => Some(8),
        _ => None,
    }
}

/// Appends `v` as a QUIC varint, in its shortest form.
pub fn put_varint(v: u64, buf: &mut impl BufMut) -> Result<(), FrameError> {
    match varint_len(v).ok_or(FrameError::VarintRange(v))? {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
    Ok(())
}

/// Reads one varint from the front of `buf`, advancing it.
pub fn get_varint(buf: &mut impl Buf, what: &'static str) -> Result<u64, FrameError> {
    let have = buf.remaining();
    let Some(&first) = buf.chunk().first() else {
        return Err(FrameError::Truncated { what, have, need: 1 });
    };
    let need = 1usize << (first >> 6);
    if have < need {
        return Err(FrameError::Truncated { what, have, need });
    }
    Ok(match need {
        1 => u64::from(buf.get_u8()),
        2 => u64::from(buf.get_u16() & 0x3fff),
        4 => u64::from(buf.get_u32() & 0x3fff_ffff),
        _ => buf.get_u64() & VARINT_MAX,
    })
}

/// Appends one RoQ datagram payload, `flow id, packet`, to `buf`.
pub fn encode_datagram(flow_id: u64, packet: &[u8], buf: &mut BytesMut) -> Result<(), FrameError> {
    buf.reserve(8 + packet.len());
    put_varint(flow_id, buf)?;
    buf.put_slice(packet);
    Ok(())
}

/// Splits a RoQ datagram payload into its flow id and the packet (a view
/// into `datagram`, not a copy). The packet may be empty; whether it is RTP
/// is the caller's question.
pub fn decode_datagram(mut datagram: Bytes) -> Result<(u64, Bytes), FrameError> {
    let flow = get_varint(&mut datagram, "datagram flow identifier")?;
    Ok((flow, datagram))
}

/// Appends the bytes that open a RoQ stream: the flow identifier.
pub fn encode_stream_header(flow_id: u64, buf: &mut BytesMut) -> Result<(), FrameError> {
    put_varint(flow_id, buf)
}

/// Appends the length prefix that precedes each packet on a RoQ stream.
pub fn encode_packet_length(len: usize, buf: &mut BytesMut) -> Result<(), FrameError> {
    put_varint(len as u64, buf)
}

/// What a [`StreamDecoder`] found on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The flow identifier that opens the stream (always first, once).
    FlowId(u64),
    /// One whole packet.
    Packet(Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    FlowId,
    Length,
    Packet(usize),
}

/// Incremental decoder of one RoQ stream, fed with the chunks QUIC delivers.
///
/// Packets that lie whole inside one chunk are returned as views into it
/// (no copy); only packets split across chunks are gathered into a buffer.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use quic_relay::roq::{self, StreamDecoder, StreamEvent};
///
/// let mut wire = BytesMut::new();
/// roq::encode_stream_header(3, &mut wire).unwrap();
/// for p in [&b"first"[..], b"second"] {
///     roq::encode_packet_length(p.len(), &mut wire).unwrap();
///     wire.extend_from_slice(p);
/// }
/// let wire = wire.freeze();
/// // Delivered in two arbitrary chunks.
/// let mut dec = StreamDecoder::new(1500);
/// let mut events = Vec::new();
/// for mut chunk in [wire.slice(..4), wire.slice(4..)] {
///     while let Some(e) = dec.decode(&mut chunk).unwrap() {
///         events.push(e);
///     }
/// }
/// assert_eq!(events[0], StreamEvent::FlowId(3));
/// assert_eq!(events[2], StreamEvent::Packet(Bytes::from_static(b"second")));
/// dec.finish().unwrap(); // the stream ended between packets
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    next: Field,
    max_packet: usize,
    /// A varint split across chunks.
    varint: [u8; 8],
    varint_have: usize,
    /// A packet split across chunks.
    partial: BytesMut,
}

impl StreamDecoder {
    /// A decoder for a new stream that refuses packets longer than
    /// `max_packet` bytes.
    pub fn new(max_packet: usize) -> StreamDecoder {
        StreamDecoder {
            next: Field::FlowId,
            max_packet,
            varint: [0; 8],
            varint_have: 0,
            partial: BytesMut::new(),
        }
    }

    /// Consumes bytes from the front of `input` until one item is complete
    /// (returned) or `input` is empty (`Ok(None)`: feed the next chunk).
    /// After an error the stream's framing is lost; stop decoding it.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<StreamEvent>, FrameError> {
        loop {
            match self.next {
                Field::FlowId | Field::Length => {
                    let what = if self.next == Field::FlowId {
                        "stream flow identifier"
                    } else {
                        "stream packet length"
                    };
                    let Some(v) = self.varint(input, what)? else {
                        return Ok(None);
                    };
                    if self.next == Field::FlowId {
                        self.next = Field::Length;
                        return Ok(Some(StreamEvent::FlowId(v)));
                    }
                    if v == 0 {
                        return Err(FrameError::EmptyPacket);
                    }
                    if v > self.max_packet as u64 {
                        return Err(FrameError::PacketTooLong {
                            len: v,
                            max: self.max_packet,
                        });
                    }
                    self.next = Field::Packet(v as usize);
                }
                Field::Packet(len) => {
                    if self.partial.is_empty() && input.len() >= len {
                        // The common case: the whole packet is in this chunk.
                        self.next = Field::Length;
                        return Ok(Some(StreamEvent::Packet(input.split_to(len))));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = (len - self.partial.len()).min(input.len());
                    self.partial.reserve(len - self.partial.len());
                    self.partial.extend_from_slice(&input.split_to(take));
                    if self.partial.len() < len {
                        return Ok(None);
                    }
                    self.next = Field::Length;
                    return Ok(Some(StreamEvent::Packet(self.partial.split().freeze())));
                }
            }
        }
    }

    /// Reads a varint that may be split across chunks.
    fn varint(&mut self, input: &mut Bytes, what: &'static str) -> Result<Option<u64>, FrameError> {
        if self.varint_have == 0 && !input.is_empty() {
            let need = 1usize << (input[0] >> 6);
            if input.len() >= need {
                return get_varint(input, what).map(Some);
            }
        }
        while !input.is_empty() {
            self.varint[self.varint_have] = input.get_u8();
            self.varint_have += 1;
            let need = 1usize << (self.varint[0] >> 6);
            if self.varint_have == need {
                self.varint_have = 0;
                return get_varint(&mut &self.varint[..need], what).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether the decoder has read the stream's flow identifier.
    pub fn has_flow_id(&self) -> bool {
        self.next != Field::FlowId
    }

    /// Checks the stream ended on a packet boundary (call at FIN): a stream
    /// that ends inside its flow id, a length or a packet was truncated.
    pub fn finish(&self) -> Result<(), FrameError> {
        let (what, have, need) = match self.next {
            Field::Length if self.varint_have == 0 => return Ok(()),
            Field::FlowId if self.varint_have == 0 => ("stream flow identifier", 0, 1),
            Field::FlowId => (
                "stream flow identifier",
                self.varint_have,
                1 << (self.varint[0] >> 6),
            ),
            Field::Length => (
                "stream packet length",
                self.varint_have,
                1 << (self.varint[0] >> 6),
            ),
            Field::Packet(len) => ("stream packet", self.partial.len(), len),
        };
        Err(FrameError::Truncated { what, have, need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(v, &mut b).unwrap();
        b
    }

    #[test]
    fn varints_match_rfc9000_appendix_a1_examples() {
        // RFC 9000 appendix A.1 sample encodings.
        let samples: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (wire, value) in samples {
            assert_eq!(get_varint(&mut &wire[..], "x").unwrap(), value);
            assert_eq!(varint_bytes(value), wire, "shortest encoding of {value}");
        }
        // A non-shortest encoding is still valid input ("37" in two bytes).
        assert_eq!(get_varint(&mut &[0x40u8, 0x25][..], "x").unwrap(), 37);
    }

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0,
            63,
            64,
            16_383,
            16_384,
            1_073_741_823,
            1_073_741_824,
            VARINT_MAX,
        ] {
            let b = varint_bytes(v);
            assert_eq!(b.len(), varint_len(v).unwrap());
            assert_eq!(get_varint(&mut &b[..], "x").unwrap(), v);
        }
        assert_eq!(
            put_varint(VARINT_MAX + 1, &mut Vec::new()),
            Err(FrameError::VarintRange(VARINT_MAX + 1))
        );
    }

    #[test]
    fn truncated_varint_is_an_error_not_a_panic() {
        assert_eq!(
            get_varint(&mut &[][..], "flow"),
            Err(FrameError::Truncated {
                what: "flow",
                have: 0,
                need: 1
            })
        );
        assert_eq!(
            get_varint(&mut &[0xc0, 1, 2][..], "flow"),
            Err(FrameError::Truncated {
                what: "flow",
                have: 3,
                need: 8
            })
        );
    }

    #[test]
    fn datagram_round_trip_and_malformed_input() {
        let mut buf = BytesMut::new();
        encode_datagram(300, b"rtp", &mut buf).unwrap();
        assert_eq!(&buf[..], &[0x41, 0x2c, b'r', b't', b'p']);
        assert_eq!(
            decode_datagram(buf.freeze()).unwrap(),
            (300, Bytes::from_static(b"rtp"))
        );
        // Empty datagram, and a flow id cut short.
        assert!(matches!(
            decode_datagram(Bytes::new()),
            Err(FrameError::Truncated { .. })
        ));
        let err = decode_datagram(Bytes::from_static(&[0x80, 0])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated RoQ datagram flow identifier: 2 of 4 bytes present"
        );
        assert_eq!(err.code(), ErrorCode::PacketError);
        // A flow id and nothing else is well-framed; the packet is empty.
        assert_eq!(
            decode_datagram(Bytes::from_static(&[5])).unwrap(),
            (5, Bytes::new())
        );
    }

    fn stream_wire(flow: u64, packets: &[&[u8]]) -> Bytes {
        let mut b = BytesMut::new();
        encode_stream_header(flow, &mut b).unwrap();
        for p in packets {
            encode_packet_length(p.len(), &mut b).unwrap();
            b.extend_from_slice(p);
        }
        b.freeze()
    }

    fn decode_in_chunks(wire: &Bytes, chunk: usize) -> (Vec<StreamEvent>, StreamDecoder) {
        let mut dec = StreamDecoder::new(100_000);
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let end = (at + chunk).min(wire.len());
            let mut c = wire.slice(at..end);
            while let Some(e) = dec.decode(&mut c).unwrap() {
                out.push(e);
            }
            assert!(c.is_empty(), "decoder must consume the whole chunk");
            at = end;
        }
        (out, dec)
    }

    #[test]
    fn stream_decodes_identically_for_every_chunking() {
        let big = vec![0xab; 20_000]; // needs a 4-byte length
        let packets: Vec<&[u8]> = vec![b"a", &[1; 63], &[2; 64], &big, b"last"];
        let wire = stream_wire(16_384, &packets);
        let want: Vec<StreamEvent> = std::iter::once(StreamEvent::FlowId(16_384))
            .chain(
                packets
                    .iter()
                    .map(|p| StreamEvent::Packet(Bytes::copy_from_slice(p))),
            )
            .collect();
        for chunk in [1, 2, 3, 5, 7, 64, 1000, wire.len()] {
            let (got, dec) = decode_in_chunks(&wire, chunk);
            assert_eq!(got, want, "chunk size {chunk}");
            dec.finish().unwrap();
        }
    }

    #[test]
    fn whole_packets_in_one_chunk_are_not_copied() {
        let wire = stream_wire(1, &[b"zero-copy"]);
        let mut dec = StreamDecoder::new(1500);
        let mut input = wire.clone();
        assert_eq!(dec.decode(&mut input).unwrap(), Some(StreamEvent::FlowId(1)));
        let Some(StreamEvent::Packet(p)) = dec.decode(&mut input).unwrap() else {
            panic!("expected a packet");
        };
        assert_eq!(
            p.as_ptr(),
            wire[2..].as_ptr(),
            "packet must be a view into the chunk"
        );
    }

    #[test]
    fn stream_ending_mid_field_is_truncated() {
        let wire = stream_wire(1, &[b"hello"]);
        for cut in 0..wire.len() {
            let mut dec = StreamDecoder::new(1500);
            let mut c = wire.slice(..cut);
            while dec.decode(&mut c).unwrap().is_some() {}
            if cut == 1 {
                // Only the flow id: a stream that carried no packet is fine.
                dec.finish().unwrap();
                continue;
            }
            let err = dec.finish().unwrap_err();
            assert!(matches!(err, FrameError::Truncated { .. }), "cut at {cut}: {err}");
        }
        // Flow id split across chunks, then FIN.
        let mut dec = StreamDecoder::new(1500);
        assert_eq!(dec.decode(&mut Bytes::from_static(&[0x40])).unwrap(), None);
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                what: "stream flow identifier",
                have: 1,
                need: 2
            })
        );
    }

    #[test]
    fn oversized_or_empty_lengths_are_refused() {
        let mut wire = BytesMut::new();
        encode_stream_header(0, &mut wire).unwrap();
        encode_packet_length(1501, &mut wire).unwrap();
        let mut dec = StreamDecoder::new(1500);
        let mut input = wire.freeze();
        assert_eq!(dec.decode(&mut input).unwrap(), Some(StreamEvent::FlowId(0)));
        assert_eq!(
            dec.decode(&mut input),
            Err(FrameError::PacketTooLong { len: 1501, max: 1500 })
        );

        let mut dec = StreamDecoder::new(1500);
        let mut input = Bytes::from_static(&[0, 0]);
        dec.decode(&mut input).unwrap();
        assert_eq!(dec.decode(&mut input), Err(FrameError::EmptyPacket));
    }

    #[test]
    fn error_codes_match_the_draft() {
        for (i, c) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(c.value(), i as u64);
            assert_eq!(ErrorCode::from_value(i as u64), Some(c));
        }
        assert_eq!(ErrorCode::from_value(8), None);
        assert_eq!(ErrorCode::UnknownFlowId.to_string(), "ROQ_UNKNOWN_FLOW_ID (0x06)");
    }
}
