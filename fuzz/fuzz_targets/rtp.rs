//! The media path of a relay: RFC 5761 demux, RFC 3550 stats, SRTP
//! (RFC 7714) and the STUN control messages of rtp-udp.
//!
//! The input is used twice:
//!
//! 1. As one datagram: `classify` / `Packet::parse` (and every accessor),
//!    `stun::decode`, and SRTP/SRTCP unprotect under a fixed key (arbitrary
//!    bytes must be refused, never panic); protect must refuse or produce
//!    something the peer unprotects back to the same bytes.
//! 2. As a program of [`Op`]s (read with `arbitrary`): RTP packets, raw
//!    datagrams and bursts fed to a `StatsRecorder` and an `SsrcReceiver`,
//!    and SRTP packets protected, replayed, reordered and tampered with.
//!    At the end the reception statistics are checked against RFC 3550
//!    bounds and every protected packet is delivered again, in order, to a
//!    fresh receiver (lossless in-order delivery must always authenticate).
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relay_core::{
    ClockRate, ClockRates, Mode, Packet, PacketKind, RTCP_MIN_LEN, RTP_HEADER_LEN, SsrcReceiver,
    StatsRecorder, Transport, build_rtp, classify,
};
use rtp_udp_relay::srtp::{MasterKey, SrtpContext, SrtpError, keepalive_key};
use rtp_udp_relay::stun;

/// A handful of SSRCs, so ops hit the same streams again.
const SSRCS: [u32; 4] = [0x1234_5678, 0, 0xffff_ffff, 0x0bad_cafe];
/// Cap on ops per input: keeps one execution well under a millisecond.
const MAX_OPS: usize = 256;
/// RFC 3550 appendix A.1 `MAX_DROPOUT` - 1: the most one in-order packet
/// can move the extended highest sequence number.
const MAX_STEP: u64 = 2999;

fn key() -> MasterKey {
    MasterKey::new([0x11; 16], [0x22; 12])
}

#[derive(Debug, Arbitrary)]
enum Op<'a> {
    /// A well-formed RTP packet on one of [`SSRCS`].
    Rtp {
        ssrc: u8,
        seq: u16,
        timestamp: u32,
        payload_type: u8,
        payload_len: u8,
        after_us: u16,
    },
    /// `count` packets, sequence numbers `step` apart: long runs (wraps,
    /// restarts) in few input bytes.
    Burst {
        ssrc: u8,
        seq: u16,
        step: u16,
        count: u8,
        timestamp_step: u32,
        after_us: u16,
    },
    /// Any datagram the transport delivered.
    Raw { bytes: &'a [u8], after_us: u16 },
    /// Protect an RTP (or RTCP) packet with the sender's context.
    Protect {
        ssrc: u8,
        seq: u16,
        rtcp: bool,
        payload_len: u8,
    },
    /// Deliver the `which`-th protected packet, flipping one bit if asked.
    Deliver { which: u8, flip: Option<u16> },
}

struct Srtp {
    sender: SrtpContext,
    receiver: SrtpContext,
    /// (wire, plaintext, is RTCP, delivered successfully already)
    sent: Vec<(Bytes, Bytes, bool, bool)>,
}

fuzz_target!(|data: &[u8]| {
    datagram(data);
    program(data);
});

fn datagram(data: &[u8]) {
    let kind = classify(data);
    let packet = Packet::parse(Bytes::copy_from_slice(data));
    assert_eq!(kind, packet.as_ref().map(Packet::kind).map_err(Clone::clone));
    if let Ok(p) = &packet {
        assert_eq!(data[0] >> 6, 2);
        let rtcp = (192..=223).contains(&data[1]);
        assert_eq!(p.kind() == PacketKind::Rtcp, rtcp);
        let need = if rtcp { RTCP_MIN_LEN } else { RTP_HEADER_LEN };
        assert!(p.len() >= need && !p.is_empty());
        let _ = (p.ssrc(), p.timestamp(), p.payload_type(), format!("{p:?}"));
        assert_eq!(p.sequence_number().is_some(), !rtcp);
        assert_eq!(p.rtcp_type().is_some(), rtcp);
    }

    // srtp-mode keepalives carry MESSAGE-INTEGRITY-SHA256 under a key
    // derived from the master key (`srtp::keepalive_key`).
    let integrity = keepalive_key(&key());
    assert!(
        stun::verify_integrity(data, &integrity).is_err(),
        "forged STUN MESSAGE-INTEGRITY-SHA256 accepted"
    );
    if let Ok(msg) = stun::decode(data) {
        assert!(stun::looks_like_stun(data[0]));
        assert!(classify(data).is_err(), "STUN taken for RTP/RTCP");
        assert_eq!(stun::decode(&stun::encode(&msg)), Ok(msg), "STUN round trip");
        let signed = stun::encode_with_integrity(&msg, &integrity);
        assert_eq!(stun::decode(&signed), Ok(msg), "STUN round trip with integrity");
        assert_eq!(stun::verify_integrity(&signed, &integrity), Ok(()));
        let other = keepalive_key(&MasterKey::new([0x33; 16], [0x44; 12]));
        assert!(
            stun::verify_integrity(&signed, &other).is_err(),
            "integrity under another key"
        );
        // Any flipped bit is refused: the HMAC covers the header and every
        // attribute before the tag; the length and the tag attribute's own
        // type and length are checked when the tag is looked up.
        let bit = data.len() * 8 % (signed.len() * 8);
        let mut tampered = signed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            stun::verify_integrity(&tampered, &integrity).is_err(),
            "tampered STUN accepted (bit {bit})"
        );
    }

    let mut receiver = SrtpContext::new(&key());
    assert!(receiver.unprotect_rtp(data).is_err(), "forged SRTP accepted");
    assert!(receiver.unprotect_rtcp(data).is_err(), "forged SRTCP accepted");
    let mut sender = SrtpContext::new(&key());
    if let Ok(wire) = sender.protect_rtp(data) {
        assert_eq!(receiver.unprotect_rtp(&wire).as_deref(), Ok(data));
    }
    if let Ok(wire) = sender.protect_rtcp(data) {
        assert_eq!(receiver.unprotect_rtcp(&wire).as_deref(), Ok(data));
    }
}

/// What the recorder must report, counted independently.
#[derive(Default)]
struct Expected {
    received: u64,
    bytes: u64,
    rtcp: u64,
    per_ssrc: std::collections::HashMap<u32, (u64, u64)>,
}

fn program(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let t0 = Instant::now();
    let mut now = t0;
    let Ok((clock_pt, clock_hz)) = u.arbitrary::<(u8, u32)>() else {
        return;
    };
    // An invalid rate (PT over 127, 0 Hz, absurdly high) configures nothing.
    let rates: ClockRates = ClockRate::new(clock_pt, clock_hz).into_iter().collect();
    let stats = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).with_clock_rates(rates);
    let mut expected = Expected::default();
    // One receiver driven directly, started at an arbitrary sequence
    // number (the public constructor allows it to differ from the first
    // packet's).
    let Ok(first_seq) = u.arbitrary::<u16>() else {
        return;
    };
    let mut direct = SsrcReceiver::new(first_seq, Some(90_000), t0);
    let mut direct_packets = 0u64;
    let mut srtp = Srtp {
        sender: SrtpContext::new(&key()),
        receiver: SrtpContext::new(&key()),
        sent: Vec::new(),
    };

    let mut receive = |bytes: Bytes, now: Instant, expected: &mut Expected| {
        let Ok(p) = Packet::parse(bytes) else {
            return;
        };
        stats.on_sent(&p);
        stats.on_received(&p, now);
        expected.received += 1;
        expected.bytes += p.len() as u64;
        match p.kind() {
            PacketKind::Rtcp => expected.rtcp += 1,
            PacketKind::Rtp => {
                let e = expected.per_ssrc.entry(p.ssrc()).or_default();
                e.0 += 1;
                e.1 += p.len() as u64;
                if p.ssrc() == SSRCS[0] {
                    let (seq, ts) = (p.sequence_number().unwrap(), p.timestamp().unwrap());
                    direct.on_packet(seq, ts, p.len(), now);
                    direct_packets += 1;
                }
            }
        }
    };

    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = u.arbitrary::<Op>() else {
            break;
        };
        match op {
            Op::Rtp {
                ssrc,
                seq,
                timestamp,
                payload_type,
                payload_len,
                after_us,
            } => {
                now += Duration::from_micros(after_us.into());
                let payload = vec![0xab; payload_len.into()];
                let p = build_rtp(payload_type, seq, timestamp, ssrc_of(ssrc), &payload);
                receive(p, now, &mut expected);
            }
            Op::Burst {
                ssrc,
                seq,
                step,
                count,
                timestamp_step,
                after_us,
            } => {
                for i in 0..u32::from(count) {
                    now += Duration::from_micros(after_us.into());
                    let s = seq.wrapping_add(step.wrapping_mul(i as u16));
                    let p = build_rtp(96, s, timestamp_step.wrapping_mul(i), ssrc_of(ssrc), b"burst");
                    receive(p, now, &mut expected);
                }
            }
            Op::Raw { bytes, after_us } => {
                now += Duration::from_micros(after_us.into());
                receive(Bytes::copy_from_slice(bytes), now, &mut expected);
            }
            Op::Protect {
                ssrc,
                seq,
                rtcp,
                payload_len,
            } => protect(&mut srtp, ssrc_of(ssrc), seq, rtcp, payload_len),
            Op::Deliver { which, flip } => deliver(&mut srtp, which, flip),
        }
    }

    check_stats(&stats, &expected);
    if direct_packets > 0 {
        check_received(&direct.snapshot(SSRCS[0]), direct_packets, None);
    }
    replay_in_order(&srtp);
}

fn ssrc_of(i: u8) -> u32 {
    SSRCS[i as usize % SSRCS.len()]
}

fn check_stats(stats: &StatsRecorder, expected: &Expected) {
    let s = stats.snapshot();
    assert_eq!(s.packets_received, expected.received);
    assert_eq!(s.packets_sent, expected.received);
    assert_eq!(s.bytes_received, expected.bytes);
    assert_eq!(s.rtcp_received, expected.rtcp);
    assert_eq!(s.received_ssrcs.len(), expected.per_ssrc.len());
    for r in &s.received_ssrcs {
        let &(packets, bytes) = &expected.per_ssrc[&r.ssrc];
        check_received(r, packets, Some(bytes));
    }
    let sent: u64 = s.sent_ssrcs.iter().map(|x| x.packets).sum();
    assert_eq!(sent + s.rtcp_sent, s.packets_sent);
}

/// RFC 3550 appendix A.3 bounds for one SSRC that got `packets` packets.
fn check_received(r: &relay_core::SsrcReceived, packets: u64, bytes: Option<u64>) {
    assert_eq!(r.packets, packets, "{r:?}");
    if let Some(b) = bytes {
        assert_eq!(r.bytes, b, "{r:?}");
    }
    assert!(r.expected >= 1, "{r:?}");
    // Each packet counted in order moves the highest sequence number by at
    // most MAX_DROPOUT - 1; duplicates, late packets and restarts by none.
    assert!(r.expected <= 1 + MAX_STEP * packets, "{r:?}");
    // lost = expected - received, and 0 <= received <= packets.
    assert!(r.lost <= r.expected as i64, "{r:?}");
    assert!(r.lost >= r.expected as i64 - packets as i64, "{r:?}");
    match (r.clock_rate, r.jitter, r.jitter_seconds) {
        (Some(hz), Some(j), Some(seconds)) => {
            assert!(hz > 0, "{r:?}");
            assert!(j.is_finite() && j >= 0.0, "{r:?}");
            assert!(seconds.is_finite() && seconds >= 0.0, "{r:?}");
        }
        // Unknown clock rate: no jitter at a guessed one.
        (None, None, None) => {}
        _ => panic!("jitter without a clock rate or the reverse: {r:?}"),
    }
}

fn protect(srtp: &mut Srtp, ssrc: u32, seq: u16, rtcp: bool, payload_len: u8) {
    let payload = vec![0x5a; payload_len.into()];
    let (plain, result) = if rtcp {
        // A receiver report header; the body is opaque to SRTCP.
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&payload);
        let r = srtp.sender.protect_rtcp(&p);
        (Bytes::from(p), r)
    } else {
        let p = build_rtp(96, seq, u32::from(seq) * 90, ssrc, &payload);
        let r = srtp.sender.protect_rtp(&p);
        (p, r)
    };
    match result {
        Ok(wire) => srtp.sent.push((wire, plain, rtcp, false)),
        Err(e) => assert!(
            matches!(e, SrtpError::WouldReuseIndex) && !rtcp,
            "protect refused a fresh packet: {e}"
        ),
    }
}

fn deliver(srtp: &mut Srtp, which: u8, flip: Option<u16>) {
    if srtp.sent.is_empty() {
        return;
    }
    let i = which as usize % srtp.sent.len();
    let (wire, plain, rtcp, delivered) = srtp.sent[i].clone();
    let mut bytes = wire.to_vec();
    if let Some(bit) = flip {
        let bit = bit as usize % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    let result = if rtcp {
        srtp.receiver.unprotect_rtcp(&bytes)
    } else {
        srtp.receiver.unprotect_rtp(&bytes)
    };
    match result {
        Ok(out) => {
            assert!(flip.is_none(), "tampered packet accepted");
            assert!(!delivered, "replayed packet accepted");
            assert_eq!(out, plain);
            srtp.sent[i].3 = true;
        }
        Err(e) => {
            // A flipped length bit in the RTP header can make the header
            // extension run past the end; everything else authenticates
            // or is a replay.
            let ok = matches!(e, SrtpError::AuthenticationFailed | SrtpError::Replayed)
                || (flip.is_some() && e == SrtpError::Truncated);
            assert!(ok, "unexpected error {e:?}");
        }
    }
}

/// A fresh receiver given every protected packet once, in the order it was
/// protected, must accept them all: the sender ran the same index
/// estimate and replay window over the same sequence.
fn replay_in_order(srtp: &Srtp) {
    let mut receiver = SrtpContext::new(&key());
    for (wire, plain, rtcp, _) in &srtp.sent {
        let out = if *rtcp {
            receiver.unprotect_rtcp(wire)
        } else {
            receiver.unprotect_rtp(wire)
        };
        assert_eq!(out.as_ref(), Ok(plain), "in-order delivery refused");
    }
}
