//! What the sender sends and when: pure schedules, tested without sockets.
//!
//! A [`Workload`] turns into a [`Schedule`], an iterator of [`Planned`]
//! packets, each with its due time (offset from the start), size and RTP
//! header fields. The sender stamps the real send time into the payload
//! ([`stamp`]), so the schedule only decides *when to try*, never what the
//! latency is.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use relay_core::{ClockRate, ClockRates, Packet, RTP_HEADER_LEN};

/// Largest RTP packet a video frame is split into (DESIGN.md): leaves room
/// for any tunnel under a 1,500-byte MTU.
pub const VIDEO_MTU: usize = 1_200;

/// Frames per second of the video workload.
pub const VIDEO_FPS: u32 = 30;

/// A keyframe every this many seconds, as WebRTC encoders do by default
/// when no picture loss indication asks for one sooner.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// A keyframe is this many times the size of a delta frame: typical of
/// H.264/VP8 at conference bitrates, and what makes the keyframe a burst.
pub const KEYFRAME_FACTOR: usize = 5;

/// Audio packet: 20 ms of G.711 (160 bytes of payload) plus the RTP header.
pub const AUDIO_PACKET: usize = RTP_HEADER_LEN + 160;

/// Audio packets per second per stream (20 ms frames).
pub const AUDIO_PPS: u32 = 50;

/// Bytes after the RTP header that carry the harness's own fields: send
/// time (nanoseconds since the run's epoch), a per-run sequence number and
/// a flags byte (bit 0: part of a keyframe).
pub const STAMP_LEN: usize = 13;

/// Smallest packet the harness can send: header plus stamp.
pub const MIN_PACKET: usize = RTP_HEADER_LEN + STAMP_LEN;

/// Payload types used: 96 (dynamic, 90 kHz as the harness's SDP would say)
/// for video and synthetic traffic, 0 (PCMU, static, 8 kHz) for audio.
const PT_VIDEO: u8 = 96;
const PT_AUDIO: u8 = 0;

/// The clock rates of the payload types the harness sends, for RFC 3550
/// jitter: the dynamic video type is configured, as a relay between real
/// SFUs is from their SDP; PCMU's is static.
pub fn clock_rates() -> ClockRates {
    // 96 and 90 kHz are in range: ClockRate::new cannot refuse them.
    ClockRates::new().with(ClockRate::new(PT_VIDEO, 90_000).expect("a valid clock rate"))
}

/// A traffic shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// `pps` packets per second of `size` bytes, evenly spaced.
    ConstantRate {
        /// RTP packet size in bytes.
        size: usize,
        /// Packets per second.
        pps: u32,
    },
    /// One video stream: 30 frames per second averaging `bitrate` bits per
    /// second, each frame split into packets of at most [`VIDEO_MTU`]
    /// bytes and sent back to back (as an SFU forwards a frame), with a
    /// keyframe [`KEYFRAME_FACTOR`] times larger every [`KEYFRAME_INTERVAL`].
    Video {
        /// Average bits per second over a keyframe interval.
        bitrate: u64,
    },
    /// `streams` audio streams, each 50 packets per second of
    /// [`AUDIO_PACKET`] bytes, their phases spread over the 20 ms period.
    Audio {
        /// Concurrent streams (distinct SSRCs).
        streams: u32,
    },
    /// As fast as the link takes packets of `size` bytes.
    Flood {
        /// RTP packet size in bytes.
        size: usize,
    },
}

impl Workload {
    /// Short name for tables.
    pub fn name(&self) -> String {
        match self {
            Workload::ConstantRate { size, pps } => format!("{pps} pps x {size} B"),
            Workload::Video { bitrate } => format!("video {:.1} Mbit/s", *bitrate as f64 / 1e6),
            Workload::Audio { streams } => format!("audio {streams} x 50 pps"),
            Workload::Flood { size } => format!("max-rate {size} B"),
        }
    }

    /// Whether the sender ignores time and sends as fast as it can.
    pub fn is_flood(&self) -> bool {
        matches!(self, Workload::Flood { .. })
    }

    /// The packets of `duration` of this workload. A flood has no timing:
    /// its schedule is endless and every packet is due at once; the sender
    /// stops it by time.
    pub fn schedule(&self, duration: Duration) -> Schedule {
        Schedule {
            workload: self.clone(),
            duration,
            index: 0,
            state: State::default(),
        }
    }
}

/// One packet the sender will try to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// When, from the start of the run.
    pub due: Duration,
    /// RTP packet size in bytes (header included).
    pub size: usize,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP sequence number.
    pub rtp_seq: u16,
    /// RTP timestamp.
    pub rtp_timestamp: u32,
    /// RTP marker bit: last packet of a video frame.
    pub marker: bool,
    /// Whether it belongs to a keyframe.
    pub keyframe: bool,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// Video: packets left in the current frame, and the frame's numbers.
    frame_packets: Vec<usize>,
    frame_index: u64,
    frame_keyframe: bool,
    seq: u16,
}

/// Iterator over a workload's [`Planned`] packets, in due order.
#[derive(Debug, Clone)]
pub struct Schedule {
    workload: Workload,
    duration: Duration,
    index: u64,
    state: State,
}

/// Splits `bytes` of frame into packets of at most `mtu` bytes, as even as
/// possible (an RTP packetizer does the same so no tiny tail packet trails
/// a frame). Every packet is at least [`MIN_PACKET`] bytes.
pub fn split_frame(bytes: usize, mtu: usize) -> Vec<usize> {
    let bytes = bytes.max(MIN_PACKET);
    let count = bytes.div_ceil(mtu);
    let base = bytes / count;
    let extra = bytes % count;
    (0..count).map(|i| base + usize::from(i < extra)).collect()
}

/// Delta and key frame sizes in bytes for `bitrate`: over a keyframe
/// interval (one keyframe and N−1 deltas) the average is `bitrate`.
pub fn video_frame_sizes(bitrate: u64) -> (usize, usize) {
    let frames = (VIDEO_FPS as u64 * KEYFRAME_INTERVAL.as_secs()) as usize;
    let interval_bytes = bitrate as f64 / 8.0 * KEYFRAME_INTERVAL.as_secs_f64();
    let delta = (interval_bytes / (frames - 1 + KEYFRAME_FACTOR) as f64).round() as usize;
    (delta, delta * KEYFRAME_FACTOR)
}

impl Iterator for Schedule {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        let seq = self.state.seq;
        let planned = match self.workload {
            Workload::ConstantRate { size, pps } => {
                let due = Duration::from_secs_f64(self.index as f64 / pps.max(1) as f64);
                Planned {
                    due,
                    size: size.max(MIN_PACKET),
                    ssrc: 0x5EED_0001,
                    payload_type: PT_VIDEO,
                    rtp_seq: seq,
                    rtp_timestamp: (due.as_secs_f64() * 90_000.0) as u32,
                    marker: false,
                    keyframe: false,
                }
            }
            Workload::Flood { size } => Planned {
                due: Duration::ZERO,
                size: size.max(MIN_PACKET),
                ssrc: 0x5EED_0002,
                payload_type: PT_VIDEO,
                rtp_seq: seq,
                rtp_timestamp: (self.index as u32).wrapping_mul(90),
                marker: false,
                keyframe: false,
            },
            Workload::Audio { streams } => {
                let streams = streams.max(1) as u64;
                let period = self.index / streams;
                let stream = self.index % streams;
                let offset = Duration::from_micros(20_000 * stream / streams);
                Planned {
                    due: Duration::from_millis(20 * period) + offset,
                    size: AUDIO_PACKET,
                    ssrc: 0xA0D1_0000 + stream as u32,
                    payload_type: PT_AUDIO,
                    // Each stream numbers its own packets.
                    rtp_seq: period as u16,
                    rtp_timestamp: (period as u32).wrapping_mul(160),
                    marker: false,
                    keyframe: false,
                }
            }
            Workload::Video { bitrate } => {
                if self.state.frame_packets.is_empty() {
                    if self.index > 0 {
                        self.state.frame_index += 1;
                    }
                    let per_gop = VIDEO_FPS as u64 * KEYFRAME_INTERVAL.as_secs();
                    let keyframe = self.state.frame_index.is_multiple_of(per_gop);
                    let (delta, key) = video_frame_sizes(bitrate);
                    let mut packets = split_frame(if keyframe { key } else { delta }, VIDEO_MTU);
                    packets.reverse(); // popped from the back
                    self.state.frame_packets = packets;
                    self.state.frame_keyframe = keyframe;
                }
                let size = self.state.frame_packets.pop().unwrap_or(MIN_PACKET);
                let frame = self.state.frame_index;
                Planned {
                    due: Duration::from_secs_f64(frame as f64 / VIDEO_FPS as f64),
                    size,
                    ssrc: 0x5EED_0003,
                    payload_type: PT_VIDEO,
                    rtp_seq: seq,
                    rtp_timestamp: (frame as u32).wrapping_mul(90_000 / VIDEO_FPS),
                    marker: self.state.frame_packets.is_empty(),
                    keyframe: self.state.frame_keyframe,
                }
            }
        };
        if !self.workload.is_flood() && planned.due >= self.duration {
            return None;
        }
        self.index += 1;
        self.state.seq = self.state.seq.wrapping_add(1);
        Some(planned)
    }
}

/// Builds the packet for `planned`, stamped with `sent_ns` (nanoseconds
/// since the run's epoch), the run-wide sequence number `index` and the
/// keyframe flag, right after the 12-byte RTP header. The rest of the
/// payload is zeros.
pub fn stamp(planned: &Planned, index: u32, sent_ns: u64) -> Packet {
    let size = planned.size.max(MIN_PACKET);
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u8(0x80);
    buf.put_u8((u8::from(planned.marker) << 7) | (planned.payload_type & 0x7f));
    buf.put_u16(planned.rtp_seq);
    buf.put_u32(planned.rtp_timestamp);
    buf.put_u32(planned.ssrc);
    buf.put_u64(sent_ns);
    buf.put_u32(index);
    buf.put_u8(u8::from(planned.keyframe));
    buf.resize(size, 0);
    Packet::parse(buf.freeze()).expect("a version-2 RTP header was just written")
}

/// The harness's fields in a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, nanoseconds since the run's epoch.
    pub sent_ns: u64,
    /// Run-wide sequence number.
    pub index: u32,
    /// Whether the packet belongs to a keyframe.
    pub keyframe: bool,
}

/// Reads the [`Stamp`] of a received packet; `None` for a packet too short
/// to carry one.
pub fn read_stamp(packet: &[u8]) -> Option<Stamp> {
    let s = packet.get(RTP_HEADER_LEN..RTP_HEADER_LEN + STAMP_LEN)?;
    Some(Stamp {
        sent_ns: u64::from_be_bytes(s[..8].try_into().ok()?),
        index: u32::from_be_bytes(s[8..12].try_into().ok()?),
        keyframe: s[12] & 1 == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(w: Workload, secs: f64) -> Vec<Planned> {
        w.schedule(Duration::from_secs_f64(secs)).collect()
    }

    #[test]
    fn constant_rate_counts_and_spacing() {
        let p = all(Workload::ConstantRate { size: 500, pps: 1000 }, 2.0);
        assert_eq!(p.len(), 2000);
        assert!(p.iter().all(|p| p.size == 500));
        assert_eq!(p[1].due - p[0].due, Duration::from_millis(1));
        assert_eq!(p[1999].due, Duration::from_millis(1999));
        // Sequence numbers are consecutive and wrap.
        assert!(p.windows(2).all(|w| w[1].rtp_seq == w[0].rtp_seq.wrapping_add(1)));
    }

    #[test]
    fn video_frames_split_under_the_mtu_and_keep_the_bitrate() {
        let bitrate = 2_500_000;
        let p = all(Workload::Video { bitrate }, 4.0);
        assert!(p.iter().all(|p| p.size <= VIDEO_MTU && p.size >= MIN_PACKET));
        let bytes: usize = p.iter().map(|p| p.size).sum();
        let got = bytes as f64 * 8.0 / 4.0;
        assert!((got / bitrate as f64 - 1.0).abs() < 0.01, "{got} bit/s");
        // 30 frames per second: 120 frames, each ending with a marker.
        assert_eq!(p.iter().filter(|p| p.marker).count(), 120);
        // Packets of one frame share its due time and RTP timestamp.
        let frame0: Vec<_> = p.iter().take_while(|x| x.due == Duration::ZERO).collect();
        assert!(frame0.iter().all(|x| x.rtp_timestamp == 0));
        assert_eq!(p[frame0.len()].rtp_timestamp, 3000);
    }

    #[test]
    fn video_keyframe_burst_every_two_seconds() {
        let p = all(Workload::Video { bitrate: 2_500_000 }, 5.0);
        let key_frames: Vec<Duration> = p
            .iter()
            .filter(|p| p.keyframe && p.marker)
            .map(|p| p.due)
            .collect();
        assert_eq!(
            key_frames,
            vec![Duration::ZERO, Duration::from_secs(2), Duration::from_secs(4)]
        );
        let packets_at = |due: Duration| p.iter().filter(|p| p.due == due).count();
        let (delta, key) = video_frame_sizes(2_500_000);
        assert_eq!(key, delta * KEYFRAME_FACTOR);
        assert_eq!(packets_at(Duration::ZERO), key.div_ceil(VIDEO_MTU));
        assert_eq!(packets_at(Duration::from_secs(1)), delta.div_ceil(VIDEO_MTU));
        assert!(packets_at(Duration::from_secs(2)) >= 4 * packets_at(Duration::from_secs(1)));
    }

    #[test]
    fn audio_streams_are_50_pps_each_with_their_own_ssrc_and_numbers() {
        let p = all(Workload::Audio { streams: 4 }, 1.0);
        assert_eq!(p.len(), 200);
        assert!(p.iter().all(|p| p.size == AUDIO_PACKET && p.payload_type == 0));
        let one: Vec<_> = p.iter().filter(|x| x.ssrc == 0xA0D1_0002).collect();
        assert_eq!(one.len(), 50);
        assert_eq!(one[1].due - one[0].due, Duration::from_millis(20));
        assert_eq!(one[1].rtp_timestamp - one[0].rtp_timestamp, 160);
        assert_eq!((one[0].rtp_seq, one[1].rtp_seq), (0, 1));
        // Phases spread over the period, and due times never go backwards.
        assert_eq!(one[0].due, Duration::from_millis(10));
        assert!(p.windows(2).all(|w| w[0].due <= w[1].due));
    }

    #[test]
    fn flood_is_endless_and_due_at_once() {
        let p: Vec<_> = Workload::Flood { size: 1200 }
            .schedule(Duration::ZERO)
            .take(10_000)
            .collect();
        assert_eq!(p.len(), 10_000);
        assert!(p.iter().all(|p| p.due == Duration::ZERO && p.size == 1200));
    }

    #[test]
    fn split_frame_is_even_and_exact() {
        assert_eq!(split_frame(2500, 1200), vec![834, 833, 833]);
        assert_eq!(split_frame(1200, 1200), vec![1200]);
        assert_eq!(split_frame(1, 1200), vec![MIN_PACKET]);
        for bytes in [1201, 9766, 48_828] {
            let parts = split_frame(bytes, 1200);
            assert_eq!(parts.iter().sum::<usize>(), bytes);
            assert!(parts.iter().all(|&s| s <= 1200));
        }
    }

    #[test]
    fn stamp_round_trips_and_keeps_the_size() {
        let planned = Workload::Video { bitrate: 1_000_000 }
            .schedule(Duration::from_secs(1))
            .next()
            .unwrap();
        let p = stamp(&planned, 77, 123_456_789);
        assert_eq!(p.len(), planned.size);
        assert_eq!(p.ssrc(), planned.ssrc);
        assert_eq!(p.sequence_number(), Some(planned.rtp_seq));
        assert_eq!(
            read_stamp(p.bytes()),
            Some(Stamp {
                sent_ns: 123_456_789,
                index: 77,
                keyframe: true
            })
        );
        assert_eq!(read_stamp(&p.bytes()[..24]), None);
    }
}
