//! The hop's NACKs on the wire: RTCP Generic NACK (RFC 4585 section
//! 6.2.1), built and parsed with webrtc-rs's `rtc-rtcp`.
//!
//! A hop NACK is told from the media servers' own RTCP by its sender SSRC,
//! [`HOP_SSRC`]: the two relays consume every RTCP datagram made only of
//! NACKs from it, and pass everything else (the SFUs' NACKs, PLIs, REMB,
//! TWCC, reports) through unchanged. A media server picks its SSRCs at
//! random (RFC 3550 section 8.1), so one of them equals [`HOP_SSRC`] with
//! a chance of one in four billion per stream; its NACKs would then be
//! taken for the hop's, answered from the relay's buffer and not
//! forwarded, which is a repair either way.

use bytes::Bytes;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

/// Sender SSRC of the hop's own NACKs (ASCII `RPAR`).
pub const HOP_SSRC: u32 = 0x5250_4152;

/// NACK pairs per RTCP datagram: 12 bytes of header and 4 per pair keep a
/// datagram under 1,000 bytes, inside every transport's packet limit, and
/// each NACK under the 253 pairs rtc-rtcp builds (its length must fit the
/// 8-bit count it checks against).
const PAIRS_PER_DATAGRAM: usize = 240;

/// RTCP datagrams asking for `seqs` of each stream, as compound packets of
/// Generic NACKs from [`HOP_SSRC`].
pub fn build_nacks(asks: &[(u32, Vec<u16>)]) -> Vec<Bytes> {
    let mut datagrams = Vec::new();
    let mut packets: Vec<Box<dyn RtcpPacket>> = Vec::new();
    let mut pairs_in = 0;
    for (ssrc, seqs) in asks {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        for chunk in nack_pairs_from_sequence_numbers(&sorted).chunks(PAIRS_PER_DATAGRAM) {
            if pairs_in + chunk.len() > PAIRS_PER_DATAGRAM {
                datagrams.extend(marshal(&packets));
                packets.clear();
                pairs_in = 0;
            }
            pairs_in += chunk.len();
            packets.push(Box::new(TransportLayerNack {
                sender_ssrc: HOP_SSRC,
                media_ssrc: *ssrc,
                nacks: chunk.to_vec(),
            }));
        }
    }
    datagrams.extend(marshal(&packets));
    datagrams
}

fn marshal(packets: &[Box<dyn RtcpPacket>]) -> Option<Bytes> {
    if packets.is_empty() {
        return None;
    }
    // Marshalling fails only on a NACK rtc-rtcp itself would not build
    // (too many pairs), which the chunking rules out; were it to happen,
    // those packets would go unasked once and be asked again an RTT later.
    match rtc_rtcp::packet::marshal(packets) {
        Ok(bytes) => Some(bytes.freeze()),
        Err(error) => {
            tracing::warn!(%error, "cannot build a NACK");
            None
        }
    }
}

/// The streams and sequence numbers a hop NACK asks for; `None` when the
/// datagram is anything else (a media server's RTCP, to pass through).
pub fn parse_nacks(datagram: &[u8]) -> Option<Vec<(u32, Vec<u16>)>> {
    let mut buf = datagram;
    let packets = rtc_rtcp::packet::unmarshal(&mut buf).ok()?;
    let mut asks = Vec::new();
    for p in &packets {
        let nack = p.as_any().downcast_ref::<TransportLayerNack>()?;
        if nack.sender_ssrc != HOP_SSRC {
            return None;
        }
        let seqs: Vec<u16> = nack.nacks.iter().flat_map(|pair| pair.packet_list()).collect();
        asks.push((nack.media_ssrc, seqs));
    }
    (!asks.is_empty()).then_some(asks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nacks_round_trip_and_are_rtcp_to_relay_core() {
        let asks = vec![(0x1234, vec![7, 5, 6, 40]), (0x99, vec![65_535, 0])];
        let datagrams = build_nacks(&asks);
        assert_eq!(datagrams.len(), 1);
        let d = &datagrams[0];
        assert_eq!((d[0] & 0x1f, d[1]), (1, 205), "RTPFB FMT 1: Generic NACK");
        assert!(relay_core::Packet::parse(d.clone()).is_ok());
        let mut back = parse_nacks(d).unwrap();
        for (_, seqs) in &mut back {
            seqs.sort_unstable();
        }
        assert_eq!(back, vec![(0x1234, vec![5, 6, 7, 40]), (0x99, vec![0, 65_535])]);
    }

    #[test]
    fn a_media_servers_nack_or_report_is_not_the_hops() {
        let sfu_nack = TransportLayerNack {
            sender_ssrc: 0xABCD,
            media_ssrc: 1,
            nacks: nack_pairs_from_sequence_numbers(&[3]),
        };
        let bytes = rtc_rtcp::packet::marshal(&[Box::new(sfu_nack) as Box<dyn RtcpPacket>]).unwrap();
        assert_eq!(parse_nacks(&bytes), None);
        assert_eq!(parse_nacks(&[0x80, 201, 0, 1, 0, 0, 0, 9]), None, "an empty RR");
        assert_eq!(parse_nacks(&[0x81, 205, 0]), None, "truncated");
        assert_eq!(parse_nacks(b""), None);
    }

    #[test]
    fn a_long_list_is_split_into_datagrams_that_fit() {
        // Two losses 18 apart in every 20 packets: one NACK pair each, 2,000 pairs.
        let seqs: Vec<u16> = (0..20_000).step_by(20).flat_map(|s| [s, s + 18]).collect();
        let datagrams = build_nacks(&[(5, seqs.clone())]);
        assert!(datagrams.len() > 1);
        let mut got = Vec::new();
        for d in &datagrams {
            assert!(d.len() <= 1_000, "{} bytes", d.len());
            got.extend(parse_nacks(d).unwrap().into_iter().flat_map(|(_, s)| s));
        }
        got.sort_unstable();
        assert_eq!(got, seqs);
    }
}
