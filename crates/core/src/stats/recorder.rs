//! [`StatsRecorder`]: the thread-safe accumulator every backend feeds from
//! its I/O paths, and the [`LinkStats`] snapshot it produces.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{ClockRates, DropCause, DropCounters, Drops, LinkStats, SsrcReceived, SsrcReceiver, SsrcSent};
use crate::ssrc_table::{DEFAULT_SSRC_CAP, SsrcTable};
use crate::{Mode, Packet, PacketKind, Transport};

/// Thread-safe accumulator behind [`LinkStats`]. Backends call `on_sent` /
/// `on_received` / `on_drop` from their I/O paths; counters are atomics and
/// the per-SSRC tables take one uncontended lock per packet.
#[derive(Debug)]
pub struct StatsRecorder {
    transport: Transport,
    mode: Mode,
    created: Instant,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    rtcp_sent: AtomicU64,
    rtcp_received: AtomicU64,
    drops: DropCounters,
    /// Microseconds; `u64::MAX` when unknown.
    rtt_us: AtomicU64,
    setup_us: AtomicU64,
    sent: Mutex<SsrcTable<SsrcSent>>,
    received: Mutex<SsrcTable<SsrcReceiver>>,
    clock_rates: ClockRates,
    peer_changes: AtomicU64,
}

impl StatsRecorder {
    /// A recorder for a link created now.
    pub fn new(transport: Transport, mode: Mode) -> StatsRecorder {
        StatsRecorder {
            transport,
            mode,
            created: Instant::now(),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            rtcp_sent: AtomicU64::new(0),
            rtcp_received: AtomicU64::new(0),
            drops: Default::default(),
            rtt_us: AtomicU64::new(u64::MAX),
            setup_us: AtomicU64::new(u64::MAX),
            sent: Mutex::new(SsrcTable::new(DEFAULT_SSRC_CAP)),
            received: Mutex::new(SsrcTable::new(DEFAULT_SSRC_CAP)),
            clock_rates: ClockRates::new(),
            peer_changes: AtomicU64::new(0),
        }
    }

    /// Keeps at most `cap` SSRCs per direction (default
    /// [`DEFAULT_SSRC_CAP`]); past it the least recently seen is
    /// forgotten and counted in [`LinkStats::ssrcs_evicted`].
    pub fn with_ssrc_cap(mut self, cap: usize) -> StatsRecorder {
        self.sent = Mutex::new(SsrcTable::new(cap));
        self.received = Mutex::new(SsrcTable::new(cap));
        self
    }

    /// Computes jitter with `rates` for the payload types they configure
    /// (static payload types are known without). An SSRC takes the rate of
    /// its first packet's payload type; one whose rate is unknown reports
    /// loss but no jitter.
    pub fn with_clock_rates(mut self, rates: ClockRates) -> StatsRecorder {
        self.clock_rates = rates;
        self
    }

    /// Accounts a packet handed to the transport.
    pub fn on_sent(&self, packet: &Packet) {
        self.on_sent_sized(packet, packet.len());
    }

    /// Accounts a packet of `len` bytes handed to the transport, of which
    /// `packet` is the header (a retransmission found by number: the RTP
    /// header names it, the link kept its bytes).
    pub fn on_sent_sized(&self, packet: &Packet, len: usize) {
        let len = len as u64;
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(len, Ordering::Relaxed);
        match packet.kind() {
            PacketKind::Rtcp => {
                self.rtcp_sent.fetch_add(1, Ordering::Relaxed);
            }
            PacketKind::Rtp => {
                let ssrc = packet.ssrc();
                let mut sent = lock(&self.sent);
                let e = sent.entry(ssrc, || SsrcSent {
                    ssrc,
                    ..Default::default()
                });
                e.packets += 1;
                e.bytes += len;
            }
        }
    }

    /// Accounts a packet the transport delivered at `arrival`.
    pub fn on_received(&self, packet: &Packet, arrival: Instant) {
        let len = packet.len();
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        match (
            packet.sequence_number(),
            packet.timestamp(),
            packet.payload_type(),
        ) {
            (Some(seq), Some(ts), Some(pt)) => {
                let clock = self.clock_rates.get(pt);
                let mut received = lock(&self.received);
                received
                    .entry(packet.ssrc(), || SsrcReceiver::new(seq, clock, self.created))
                    .on_packet(seq, ts, len, arrival);
            }
            _ => {
                self.rtcp_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one change of the peer's address (see
    /// [`LinkStats::peer_address_changes`]).
    pub fn on_peer_address_change(&self) {
        self.peer_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one packet dropped for `cause`.
    pub fn on_drop(&self, cause: DropCause) {
        self.drops.add(cause, 1);
    }

    /// Counts `n` packets dropped for `cause`.
    pub fn on_drops(&self, cause: DropCause, n: u64) {
        self.drops.add(cause, n);
    }

    /// Records the latest round-trip time.
    pub fn set_rtt(&self, rtt: Duration) {
        self.rtt_us.store(
            rtt.as_micros().min(u64::MAX as u128 - 1) as u64,
            Ordering::Relaxed,
        );
    }

    /// Records how long establishing the link took.
    pub fn set_setup_time(&self, setup: Duration) {
        self.setup_us.store(
            setup.as_micros().min(u64::MAX as u128 - 1) as u64,
            Ordering::Relaxed,
        );
    }

    /// Count of drops for one cause.
    pub fn drops(&self, cause: DropCause) -> u64 {
        self.drops.get(cause)
    }

    /// A consistent-enough snapshot (each counter is read once).
    pub fn snapshot(&self) -> LinkStats {
        let us = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(Duration::from_micros(v)),
        };
        let (mut sent_ssrcs, sent_evicted) = {
            let sent = lock(&self.sent);
            let all: Vec<SsrcSent> = sent.iter().map(|(_, s)| *s).collect();
            (all, sent.evicted())
        };
        sent_ssrcs.sort_by_key(|s| s.ssrc);
        let (mut received_ssrcs, received_evicted) = {
            let received = lock(&self.received);
            let all: Vec<SsrcReceived> = received.iter().map(|(ssrc, r)| r.snapshot(ssrc)).collect();
            (all, received.evicted())
        };
        received_ssrcs.sort_by_key(|s| s.ssrc);
        let mut drops = Drops::default();
        self.drops.add_to(&mut drops);
        LinkStats {
            transport: self.transport,
            mode: self.mode,
            packets_sent: self.packets_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            rtcp_sent: self.rtcp_sent.load(Ordering::Relaxed),
            rtcp_received: self.rtcp_received.load(Ordering::Relaxed),
            drops,
            rtt: us(&self.rtt_us),
            setup_time: us(&self.setup_us),
            uptime: Some(self.created.elapsed()),
            sent_ssrcs,
            received_ssrcs,
            ssrcs_evicted: sent_evicted + received_evicted,
            peer_address_changes: self.peer_changes.load(Ordering::Relaxed),
            repair: None,
        }
    }
}

/// Stats locks guard plain counters: a panic elsewhere cannot leave them
/// inconsistent, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_rtp;

    #[test]
    fn a_sender_cycling_ssrcs_cannot_grow_a_links_state() {
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).with_ssrc_cap(100);
        let t0 = Instant::now();
        for ssrc in 0..10_000u32 {
            let p = Packet::parse(build_rtp(96, 1, 0, ssrc, b"x")).unwrap();
            rec.on_received(&p, t0);
            rec.on_sent(&p);
        }
        let s = rec.snapshot();
        assert_eq!((s.received_ssrcs.len(), s.sent_ssrcs.len()), (100, 100));
        assert_eq!(s.ssrcs_evicted, 2 * (10_000 - 100));
        assert_eq!(s.packets_received, 10_000, "every packet is still counted");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"ssrcs_evicted\":19800"), "{json}");
    }

    #[test]
    fn recorder_counts_rtp_rtcp_and_drops() {
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable);
        let p = Packet::parse(build_rtp(96, 1, 0, 7, &[0; 88])).unwrap();
        let sr = Packet::parse(bytes::Bytes::from_static(&[0x80, 200, 0, 1, 0, 0, 0, 7])).unwrap();
        rec.on_sent(&p);
        rec.on_sent(&sr);
        rec.on_received(&p, Instant::now());
        rec.on_received(&sr, Instant::now());
        rec.on_drop(DropCause::Malformed);
        rec.on_drops(DropCause::Unauthenticated, 3);
        rec.set_rtt(Duration::from_micros(1500));
        let s = rec.snapshot();
        assert_eq!((s.packets_sent, s.bytes_sent, s.rtcp_sent), (2, 108, 1));
        assert_eq!((s.packets_received, s.rtcp_received), (2, 1));
        assert_eq!(
            s.sent_ssrcs,
            vec![SsrcSent {
                ssrc: 7,
                packets: 1,
                bytes: 100
            }]
        );
        assert_eq!(s.received_ssrcs.len(), 1);
        assert_eq!(s.drops.malformed, 1);
        assert_eq!(s.drops.unauthenticated, 3);
        assert_eq!(s.drops.total(), 4);
        assert_eq!(s.rtt, Some(Duration::from_micros(1500)));
        let mut json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rtt_seconds"], 0.0015);
        assert!(json["setup_time_seconds"].is_null());
        assert!(json["uptime_seconds"].as_f64().unwrap() < 60.0);
        // PT 96 is dynamic and not configured: no clock rate, no jitter.
        let ssrc = &json["received_ssrcs"][0];
        assert_eq!(ssrc["expected"], 1);
        for field in ["clock_rate", "jitter", "jitter_seconds"] {
            assert!(ssrc[field].is_null(), "{field}: {ssrc}");
        }
        assert_eq!(json["drops"]["unauthenticated"], 3);
        // Stats from a peer that predates the field still parse.
        json["drops"].as_object_mut().unwrap().remove("unauthenticated");
        assert_eq!(
            serde_json::from_value::<LinkStats>(json.clone())
                .unwrap()
                .drops
                .unauthenticated,
            0
        );
        assert_eq!(json["transport"], "rtp-udp");
        let back: LinkStats = serde_json::from_value(json).unwrap();
        assert_eq!(back.packets_sent, 2);
        assert_eq!(back.rtt, Some(Duration::from_micros(1500)));
    }

    /// `count` packets of one stream, sent every `period` with timestamps
    /// `ts_step` apart, arriving `late` behind schedule on every other
    /// packet; returns the stream's stats from a recorder with `rates`.
    fn paced(pt: u8, rates: ClockRates, ts_step: u32, late: Duration) -> SsrcReceived {
        const PERIOD: Duration = Duration::from_millis(20);
        let rec = StatsRecorder::new(Transport::RtpUdp, Mode::Unreliable).with_clock_rates(rates);
        let t0 = Instant::now();
        for i in 0..200u16 {
            let p = Packet::parse(build_rtp(pt, i, u32::from(i) * ts_step, 5, &[0; 40])).unwrap();
            let arrival = t0 + PERIOD * u32::from(i) + if i % 2 == 1 { late } else { Duration::ZERO };
            rec.on_received(&p, arrival);
        }
        rec.snapshot().received_ssrcs[0]
    }

    #[test]
    fn opus_at_its_configured_48_khz_has_the_jitter_of_its_arrivals() {
        // 20 ms frames of 48 kHz Opus are 960 timestamp units apart.
        let opus = ClockRates::new().with("111=48000".parse().unwrap());
        let on_time = paced(111, opus.clone(), 960, Duration::ZERO);
        assert_eq!(on_time.clock_rate, Some(48_000));
        assert!(on_time.jitter_seconds.unwrap() < 50e-6, "{on_time:?}");
        // Every other packet 4 ms late: |D| is 4 ms for every pair, so
        // jitter converges to 4 ms (192 units at 48 kHz).
        let late = paced(111, opus, 960, Duration::from_millis(4));
        let seconds = late.jitter_seconds.unwrap();
        assert!((seconds - 0.004).abs() < 0.000_1, "{late:?}");
        assert!((late.jitter.unwrap() - 192.0).abs() < 5.0, "{late:?}");
    }

    #[test]
    fn a_dynamic_payload_type_without_a_configured_rate_has_no_jitter() {
        let s = paced(111, ClockRates::new(), 960, Duration::from_millis(4));
        assert_eq!((s.clock_rate, s.jitter, s.jitter_seconds), (None, None, None));
        // Loss does not need the clock.
        assert_eq!((s.packets, s.expected, s.lost), (200, 200, 0));
        // Another type's rate does not apply to it.
        let other = ClockRates::new().with("96=90000".parse().unwrap());
        assert_eq!(paced(111, other, 960, Duration::ZERO).jitter_seconds, None);
    }

    #[test]
    fn static_pcmu_is_8_khz_without_configuration() {
        // 20 ms of PCMU is 160 units at 8 kHz.
        let s = paced(0, ClockRates::new(), 160, Duration::from_millis(4));
        assert_eq!(s.clock_rate, Some(8_000));
        assert!((s.jitter_seconds.unwrap() - 0.004).abs() < 0.000_1, "{s:?}");
        assert!((s.jitter.unwrap() - 32.0).abs() < 1.0, "{s:?}");
    }
}
