//! The relay as an RTCP-aware middlebox: keyframe requests it makes on its
//! own, and reading relayed RTCP far enough to route it. Pure: no sockets,
//! and the clock is a parameter.
//!
//! A video decoder that misses the start of a stream, or packets in the
//! middle of one, shows nothing (or garbage) until the next keyframe, and
//! an encoder sends one on its own only every few seconds (aiortc's VP8:
//! every 3,000 frames). A receiving SFU asks for one when a viewer joins,
//! but its request can only reach the source once the relay is up and
//! knows where the source listens for feedback. So the relay asks too:
//! when a link comes up (every reconnect included), when a stream first
//! appears on a live link (a forward added to a live stream), and after an
//! outage (a stream that resumes after [`OUTAGE_GAP`] of silence).
//!
//! A request is a compound RTCP packet (RFC 3550 section 6.1: it starts
//! with an RR, here with no report blocks) holding a PLI (RFC 4585 section
//! 6.3.1) and a FIR (RFC 5104 section 4.3.1) for the media SSRC, from the
//! relay's own SSRC. Both, because senders differ in which they honour:
//! browsers and aiortc answer PLI, some hardware encoders and older SFUs
//! only FIR. The FIR's sequence number goes up by one per new request for
//! each media SSRC (RFC 5104 section 4.3.1.1), so a sender never mistakes a
//! new request for a repeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::receiver_report::ReceiverReport;

/// Least time between two requests the relay makes for one SSRC. A
/// keyframe takes at least the encoder's latency plus a round trip to
/// arrive; asking again sooner would only make the source send a second
/// one (a keyframe is 5-10 times a delta frame).
pub const KEYFRAME_REQUEST_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Silence on a stream after which, when it resumes, its receiver has most
/// likely lost its decoder state: longer than any jitter buffer a
/// real-time receiver keeps (Janus, browsers: up to a few hundred ms), so a
/// paced stream never trips it.
pub const OUTAGE_GAP: Duration = Duration::from_millis(700);

/// Most media SSRCs whose request state is kept; the least recently asked
/// is forgotten first. Far above what a link between two SFUs carries.
pub const MAX_TRACKED_SSRCS: usize = 1024;

/// Rate-limited keyframe requests, with the FIR sequence per media SSRC.
#[derive(Debug)]
pub struct KeyframeRequests {
    sender_ssrc: u32,
    asked: HashMap<u32, Asked>,
}

#[derive(Debug, Clone, Copy)]
struct Asked {
    at: Instant,
    fir_seq: u8,
}

impl KeyframeRequests {
    /// Requests sent from `sender_ssrc` (the relay's own SSRC).
    pub fn new(sender_ssrc: u32) -> KeyframeRequests {
        KeyframeRequests {
            sender_ssrc,
            asked: HashMap::new(),
        }
    }

    /// The request for a keyframe on `media_ssrc` at `now`, or `None` when
    /// one was made less than [`KEYFRAME_REQUEST_MIN_INTERVAL`] ago.
    pub fn request(&mut self, media_ssrc: u32, now: Instant) -> Option<Bytes> {
        let fir_seq = match self.asked.get(&media_ssrc) {
            Some(a) if Self::recent(a, now) => return None,
            Some(a) => a.fir_seq.wrapping_add(1),
            None => 0,
        };
        self.remember(media_ssrc, Asked { at: now, fir_seq });
        Some(keyframe_request(self.sender_ssrc, media_ssrc, fir_seq))
    }

    /// Notes that a request for `media_ssrc` from someone else (a far
    /// receiver) is about to reach the source at `now`; false, and nothing
    /// noted, when a request for it went there less than
    /// [`KEYFRAME_REQUEST_MIN_INTERVAL`] ago. The relay's own requests and
    /// the ones it passes on share the interval.
    pub fn note_relayed(&mut self, media_ssrc: u32, now: Instant) -> bool {
        let fir_seq = match self.asked.get(&media_ssrc) {
            Some(a) if Self::recent(a, now) => return false,
            // Our own FIR sequence goes on where it was.
            Some(a) => a.fir_seq,
            None => u8::MAX,
        };
        self.remember(media_ssrc, Asked { at: now, fir_seq });
        true
    }

    fn recent(asked: &Asked, now: Instant) -> bool {
        now.saturating_duration_since(asked.at) < KEYFRAME_REQUEST_MIN_INTERVAL
    }

    /// Records `asked` for `media_ssrc`, forgetting the least recently
    /// asked SSRC if the table is full.
    fn remember(&mut self, media_ssrc: u32, asked: Asked) {
        if self.asked.len() >= MAX_TRACKED_SSRCS && !self.asked.contains_key(&media_ssrc) {
            let oldest = self.asked.iter().min_by_key(|(_, a)| a.at).map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.asked.remove(&oldest);
            }
        }
        self.asked.insert(media_ssrc, asked);
    }
}

/// RR (no blocks) + PLI + FIR for `media_ssrc`, FIR sequence `fir_seq`.
pub fn keyframe_request(sender_ssrc: u32, media_ssrc: u32, fir_seq: u8) -> Bytes {
    let packets: [Box<dyn RtcpPacket>; 3] = [
        Box::new(ReceiverReport {
            ssrc: sender_ssrc,
            reports: Vec::new(),
            profile_extensions: Bytes::new(),
        }),
        Box::new(PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        }),
        Box::new(FullIntraRequest {
            sender_ssrc,
            // RFC 5104 section 4.3.1.2: the media source SSRC field is
            // unused (0); the FCI entries name the sources.
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: media_ssrc,
                sequence_number: fir_seq,
            }],
        }),
    ];
    // Marshalling these three fixed-size packets cannot fail.
    rtc_rtcp::packet::marshal(&packets)
        .map(|b| b.freeze())
        .unwrap_or_default()
}

/// An RR with no report blocks from `sender_ssrc`: what the relay sends to
/// a receiving SFU's RTCP port so that it learns where to send feedback
/// (Janus's streaming mountpoints, mediasoup without comedia, latch onto
/// the source of the RTCP they receive).
pub fn empty_receiver_report(sender_ssrc: u32) -> Bytes {
    let rr: [Box<dyn RtcpPacket>; 1] = [Box::new(ReceiverReport {
        ssrc: sender_ssrc,
        reports: Vec::new(),
        profile_extensions: Bytes::new(),
    })];
    rtc_rtcp::packet::marshal(&rr)
        .map(|b| b.freeze())
        .unwrap_or_default()
}

/// What a relayed RTCP packet concerns, read far enough to route it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RtcpSummary {
    /// Every SSRC the compound names, senders first, then the sources it
    /// reports on or asks about, in packet order.
    pub ssrcs: Vec<u32>,
    /// It holds a PLI or a FIR: a keyframe request.
    pub keyframe_request: bool,
    /// The media SSRCs its PLIs and FIRs ask keyframes of.
    pub keyframe_ssrcs: Vec<u32>,
}

/// Reads `bytes` as compound RTCP; `None` when rtc-rtcp cannot parse it
/// (still relayed: the far side may speak an RTCP type we do not know).
pub fn summarize(bytes: &[u8]) -> Option<RtcpSummary> {
    let mut buf = bytes;
    let packets = rtc_rtcp::packet::unmarshal(&mut buf).ok()?;
    let mut summary = RtcpSummary::default();
    for p in &packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            summary.keyframe_request = true;
            summary.ssrcs.push(pli.media_ssrc);
            summary.keyframe_ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            summary.keyframe_request = true;
            summary.ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
            summary.keyframe_ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
        } else {
            // SR: report blocks then the sender; RR: report blocks; SDES,
            // BYE: sources; feedback: the media source.
            summary.ssrcs.extend(p.destination_ssrc());
        }
    }
    Some(summary)
}

/// `bytes` (compound RTCP) without its PLIs and FIRs, re-encoded; `None`
/// when nothing else is left or it does not parse. What a merged keyframe
/// request leaves to relay: the receiver's reports, NACKs, REMB.
pub fn without_keyframe_requests(bytes: &[u8]) -> Option<Bytes> {
    let mut buf = bytes;
    let mut packets = rtc_rtcp::packet::unmarshal(&mut buf).ok()?;
    packets.retain(|p| {
        let any = p.as_any();
        !(any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>())
    });
    if packets.is_empty() {
        return None;
    }
    rtc_rtcp::packet::marshal(&packets).ok().map(|b| b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_rr_pli_and_fir_for_the_media_ssrc() {
        let bytes = keyframe_request(0xAAAA, 0x1234, 7);
        // RR 8 + PLI 12 + FIR 20 bytes.
        assert_eq!(bytes.len(), 40);
        assert_eq!((bytes[0] >> 6, bytes[1]), (2, 201), "compound starts with an RR");
        assert_eq!((bytes[8] & 0x1f, bytes[9]), (1, 206), "PLI: PSFB FMT 1");
        assert_eq!((bytes[20] & 0x1f, bytes[21]), (4, 206), "FIR: PSFB FMT 4");
        // FIR FCI: SSRC then the sequence number.
        assert_eq!(&bytes[32..36], &0x1234u32.to_be_bytes());
        assert_eq!(bytes[36], 7);
        let s = summarize(&bytes).unwrap();
        assert!(s.keyframe_request);
        assert!(s.ssrcs.contains(&0x1234));
        assert!(relay_core::Packet::parse(bytes).is_ok(), "relay-core sees RTCP");
    }

    #[test]
    fn requests_are_rate_limited_per_ssrc_and_count_fir_sequence() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(1);
        let fir_seq = |b: &Bytes| b[36];
        assert_eq!(fir_seq(&k.request(10, t0).unwrap()), 0);
        assert!(
            k.request(10, t0 + Duration::from_millis(100)).is_none(),
            "too soon"
        );
        assert!(k.request(11, t0).is_some(), "another SSRC is not held back");
        let again = k.request(10, t0 + KEYFRAME_REQUEST_MIN_INTERVAL).unwrap();
        assert_eq!(fir_seq(&again), 1, "a new request, a new sequence number");
        let mut t = t0 + KEYFRAME_REQUEST_MIN_INTERVAL;
        for _ in 0..300 {
            t += KEYFRAME_REQUEST_MIN_INTERVAL;
            k.request(10, t).unwrap();
        }
        assert_eq!(
            fir_seq(&k.request(10, t + KEYFRAME_REQUEST_MIN_INTERVAL).unwrap()),
            46,
            "wraps: 302 mod 256"
        );
    }

    #[test]
    fn relayed_requests_share_the_interval_with_our_own() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(1);
        assert!(k.note_relayed(10, t0), "the first receiver's request passes");
        assert!(
            !k.note_relayed(10, t0 + Duration::from_millis(10)),
            "a second is merged"
        );
        assert!(
            k.request(10, t0 + Duration::from_millis(20)).is_none(),
            "so is ours"
        );
        let later = t0 + KEYFRAME_REQUEST_MIN_INTERVAL;
        assert_eq!(
            k.request(10, later).unwrap()[36],
            0,
            "our FIR sequence starts at 0"
        );
        assert!(!k.note_relayed(10, later), "ours just went");
        assert!(k.note_relayed(11, later), "another stream is not held back");
    }

    #[test]
    fn stripping_keyframe_requests_keeps_the_reports() {
        let request = keyframe_request(0xAAAA, 0x1234, 0);
        let rest = without_keyframe_requests(&request).unwrap();
        assert_eq!(rest.len(), 8, "the RR");
        assert_eq!(summarize(&rest).unwrap(), RtcpSummary::default());
        let pli_only: [Box<dyn RtcpPacket>; 1] = [Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        })];
        let pli_only = rtc_rtcp::packet::marshal(&pli_only).unwrap();
        assert_eq!(summarize(&pli_only).unwrap().keyframe_ssrcs, vec![2]);
        assert_eq!(without_keyframe_requests(&pli_only), None, "nothing left");
        assert_eq!(without_keyframe_requests(&[0x80, 200, 0, 9]), None, "unreadable");
    }

    #[test]
    fn the_request_state_is_bounded() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(1);
        for ssrc in 0..(MAX_TRACKED_SSRCS as u32 + 50) {
            k.request(ssrc, t0 + Duration::from_micros(u64::from(ssrc)))
                .unwrap();
        }
        assert_eq!(k.asked.len(), MAX_TRACKED_SSRCS);
        assert!(
            k.request(0, t0 + Duration::from_millis(1)).is_some(),
            "the oldest was forgotten"
        );
    }

    #[test]
    fn summaries_name_the_streams_rtcp_concerns() {
        // A viewer's RR about 0x55 plus a generic NACK for 0x66.
        let nack = rtc_rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: 0x66,
            nacks: vec![rtc_rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                packet_id: 5,
                lost_packets: 0,
            }],
        };
        let rr = ReceiverReport {
            ssrc: 9,
            reports: vec![rtc_rtcp::reception_report::ReceptionReport {
                ssrc: 0x55,
                ..Default::default()
            }],
            profile_extensions: Bytes::new(),
        };
        let packets: [Box<dyn RtcpPacket>; 2] = [Box::new(rr), Box::new(nack)];
        let bytes = rtc_rtcp::packet::marshal(&packets).unwrap();
        let s = summarize(&bytes).unwrap();
        assert_eq!(s.ssrcs, vec![0x55, 0x66]);
        assert!(!s.keyframe_request);
        assert_eq!(summarize(&[0x80, 200, 0, 9]), None, "truncated");
        let rr = empty_receiver_report(3);
        assert_eq!(rr.len(), 8);
        assert_eq!(summarize(&rr).unwrap().ssrcs, Vec::<u32>::new());
    }
}
