//! Loss recovery under scripted loss (sfu-relay patch).
//!
//! A sender and a receiver association joined by an in-memory path with a
//! fixed one-way delay and an explicit clock: no sockets, no wall clock. A
//! loss script decides, for each DATA TSN and each of its transmissions,
//! whether the path drops the packet carrying it. SACKs are never dropped.

use super::*;
use crate::config::{DEFAULT_MAX_PROBE_INTERVAL, INITIAL_MTU, max_payload_size_for_mtu};

const ONE_WAY: Duration = Duration::from_millis(10);
const SI: u16 = 1;
const PPI: PayloadProtocolIdentifier = PayloadProtocolIdentifier::Binary;

/// Decides whether the path drops DATA message `index` (its TSN minus the
/// first TSN sent after the handshake) on its `nth` transmission (1-based).
type LossScript = Box<dyn FnMut(u32, u32) -> bool>;

struct Path {
    now: Instant,
    sender: Association,
    receiver: Association,
    /// Packets on the wire: arrival time, whether bound for the receiver, bytes.
    wire: VecDeque<(Instant, bool, Bytes)>,
    loss: LossScript,
    first_tsn: u32,
    /// When the application wrote each message index.
    written_at: HashMap<u32, Instant>,
    /// When each message index was put on the wire, one entry per transmission.
    sent_at: HashMap<u32, Vec<Instant>>,
    /// When the receiving application read each message index.
    delivered: HashMap<u32, Instant>,
    sender_events: Vec<Event>,
    /// Decides whether the path drops a SACK, given the message index it
    /// acknowledges cumulatively.
    sack_loss: LossScript,
    /// SACKs the receiver sent: when, cumulative message index, gap blocks.
    sacks: Vec<(Instant, u32, usize)>,
    /// An outage: every packet either way put on the wire in this interval
    /// is lost.
    down: Option<(Instant, Instant)>,
    /// The path's one-way delay (`ONE_WAY` unless a test sets it).
    one_way: Duration,
}

impl Path {
    /// Runs the handshake without loss and opens stream `SI` on the sender.
    fn new(config: TransportConfig, loss: LossScript) -> Path {
        let now = Instant::now();
        let addr = SocketAddr::from_str("0.0.0.0:0").unwrap();
        let payload = max_payload_size_for_mtu(INITIAL_MTU);
        let config = Arc::new(config);
        let server = Arc::new(ServerConfig::new((*config).clone()));
        let new_association = |server: Option<Arc<ServerConfig>>, aid| {
            let udp = TransportProtocol::UDP;
            Association::new(server, config.clone(), payload, aid, addr, addr, udp, now)
        };
        let mut path = Path {
            now,
            sender: new_association(None, 1),
            receiver: new_association(Some(server), 2),
            wire: VecDeque::new(),
            loss: Box::new(|_, _| false),
            first_tsn: 0,
            written_at: HashMap::new(),
            sent_at: HashMap::new(),
            delivered: HashMap::new(),
            sender_events: vec![],
            sack_loss: Box::new(|_, _| false),
            sacks: vec![],
            down: None,
            one_way: ONE_WAY,
        };
        path.run_for(Duration::from_millis(100));
        assert_eq!(path.sender.state(), AssociationState::Established);
        assert_eq!(path.receiver.state(), AssociationState::Established);
        path.sender_events.clear();
        path.sender.open_stream(SI, PPI).unwrap();
        path.first_tsn = path.sender.my_next_tsn;
        path.loss = loss;
        path
    }

    /// Queues message `index` (`len` bytes, one DATA chunk) on stream `SI`.
    fn write(&mut self, index: u32, len: usize) {
        let mut message = vec![0u8; len.max(4)];
        message[..4].copy_from_slice(&index.to_be_bytes());
        self.written_at.insert(index, self.now);
        let mut stream = self.sender.stream(SI).unwrap();
        stream
            .write_sctp(self.now, &Bytes::from(message), PPI)
            .unwrap();
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..1_000_000 {
            self.transmit();
            self.read();
            let next = [
                self.wire.front().map(|(at, _, _)| *at),
                self.sender.poll_timeout(),
                self.receiver.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(at) if at <= end => self.now = self.now.max(at),
                _ => {
                    self.now = end;
                    return;
                }
            }
            // One datagram at a time, each answered before the next is read,
            // as a socket loop would: a SACK per packet, not per batch.
            while self.wire.front().is_some_and(|(at, _, _)| *at <= self.now) {
                let (_, to_receiver, raw) = self.wire.pop_front().unwrap();
                let packet = Packet::unmarshal(&raw).unwrap();
                let to = if to_receiver {
                    &mut self.receiver
                } else {
                    &mut self.sender
                };
                to.handle_inbound(packet, self.now).unwrap();
                self.transmit();
            }
            self.sender.handle_timeout(self.now);
            self.receiver.handle_timeout(self.now);
        }
        panic!("the path did not settle");
    }

    fn transmit(&mut self) {
        let now = self.now;
        let black = self.down.is_some_and(|(from, to)| from <= now && now < to);
        while let Some(out) = self.sender.poll_transmit(self.now) {
            let Payload::RawEncode(raws) = out.message else {
                unreachable!()
            };
            for raw in raws {
                let packet = Packet::unmarshal(&raw).unwrap();
                let mut dropped = false;
                for chunk in &packet.chunks {
                    if let Some(d) = chunk.as_any().downcast_ref::<ChunkPayloadData>() {
                        let index = d.tsn.wrapping_sub(self.first_tsn);
                        let sends = self.sent_at.entry(index).or_default();
                        sends.push(self.now);
                        dropped |= (self.loss)(index, sends.len() as u32);
                    }
                }
                if !dropped && !black {
                    self.wire.push_back((self.now + self.one_way, true, raw));
                }
            }
        }
        while let Some(out) = self.receiver.poll_transmit(self.now) {
            let Payload::RawEncode(raws) = out.message else {
                unreachable!()
            };
            for raw in raws {
                let packet = Packet::unmarshal(&raw).unwrap();
                let mut dropped = false;
                for chunk in &packet.chunks {
                    if let Some(sack) = chunk.as_any().downcast_ref::<ChunkSelectiveAck>() {
                        let index = sack.cumulative_tsn_ack.wrapping_sub(self.first_tsn);
                        let gaps = sack.gap_ack_blocks.len();
                        self.sacks.push((self.now, index, gaps));
                        dropped |= (self.sack_loss)(index, 0);
                    }
                }
                if !dropped && !black {
                    self.wire.push_back((self.now + self.one_way, false, raw));
                }
            }
        }
    }

    fn read(&mut self) {
        while let Some(event) = self.sender.poll() {
            self.sender_events.push(event);
        }
        while self.receiver.poll().is_some() {}
        let Ok(mut stream) = self.receiver.stream(SI) else {
            return;
        };
        while let Ok(Some(chunks)) = stream.read_sctp() {
            let mut buf = vec![0u8; chunks.len()];
            chunks.read(&mut buf).unwrap();
            let index = u32::from_be_bytes(buf[..4].try_into().unwrap());
            self.delivered.entry(index).or_insert(self.now);
        }
    }

    /// Writes messages `first..first + count`, `len` bytes each, one every
    /// `interval`: media at a steady rate.
    fn stream(&mut self, first: u32, count: u32, interval: Duration, len: usize) {
        for index in first..first + count {
            self.write(index, len);
            self.run_for(interval);
        }
    }

    /// Time from the write of message `index` to its delivery.
    fn latency(&self, index: u32) -> Option<Duration> {
        let delivered = self.delivered.get(&index)?;
        Some(delivered.duration_since(self.written_at[&index]))
    }

    /// Intervals between consecutive transmissions of message `index`.
    fn resend_intervals(&self, index: u32) -> Vec<Duration> {
        let sends = &self.sent_at[&index];
        sends.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Sends pairs of messages, one packet each, without loss so that every
    /// SACK is immediate (every second packet) and the RTT, 2 * ONE_WAY, is
    /// measured.
    fn warm_up(&mut self, pairs: u32) -> u32 {
        for i in 0..pairs {
            self.write(2 * i, 600);
            self.write(2 * i + 1, 600);
            self.run_for(Duration::from_millis(50));
        }
        assert_eq!(self.delivered.len() as u32, 2 * pairs);
        2 * pairs
    }
}

// (a) RTO.Min: a lost lone message (nothing after it to trigger fast
// retransmit) is resent after RTO.Min on a 20 ms path, not after a second.
#[test]
fn lost_tail_message_is_resent_after_rto_min() {
    let mut path = Path::new(
        TransportConfig::default(),
        Box::new(|index, nth| index == 20 && nth == 1),
    );
    let tail = path.warm_up(10);
    assert_eq!(path.sender.rto_mgr.get_rto(), 200, "RTO.Min bounds the RTO");
    path.write(tail, 100);
    path.run_for(Duration::from_secs(3));
    let latency = path.latency(tail).expect("the tail message is delivered");
    assert!(
        latency < Duration::from_millis(300),
        "a lost tail message took {latency:?}"
    );
}

#[test]
fn rto_bounds_are_configurable() {
    let config = TransportConfig::default()
        .with_rto_min(Duration::from_millis(50))
        .with_rto_max(Duration::from_millis(400));
    let mut path = Path::new(config, Box::new(|_, _| false));
    path.warm_up(10);
    let rto = path.sender.rto_mgr.get_rto();
    assert!(
        (50..200).contains(&rto),
        "RTO {rto} ms, below the default RTO.Min"
    );
    for _ in 0..4 {
        path.sender.rto_mgr.backoff();
    }
    assert_eq!(path.sender.rto_mgr.get_rto(), 400);
}

// (a) RTO.Max: the T3-rtx backoff doubles from RTO.Initial (no RTT measured
// yet; 1 s here, RFC 9260's) and stops at 10 s instead of 60 s.
#[test]
fn t3_backoff_is_capped_at_rto_max() {
    let mut path = Path::new(
        TransportConfig::default().with_rto_initial(Duration::from_secs(1)),
        Box::new(|index, nth| index == 0 && nth <= 5),
    );
    path.write(0, 100);
    path.run_for(Duration::from_secs(40));
    let secs: Vec<u64> = path
        .resend_intervals(0)
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(secs, [1, 2, 4, 8, 10]);
    assert_eq!(path.latency(0), Some(Duration::from_secs(25) + ONE_WAY));
}

// (b) Two losses in one window: the first starts Fast Recovery, the second is
// reported missing by the SACKs that arrive during it. RFC 9260 §7.2.4 counts
// those miss indications (HTNA) on every SACK, so the second loss is fast
// retransmitted too instead of waiting for T3-rtx.
#[test]
fn second_loss_in_one_recovery_window_is_fast_retransmitted() {
    let base = 20;
    let mut path = Path::new(
        TransportConfig::default(),
        Box::new(move |index, nth| nth == 1 && (index == base + 2 || index == base + 8)),
    );
    assert_eq!(path.warm_up(base / 2), base);
    let mtu = path.sender.mtu;
    path.sender.cwnd = 30 * mtu;
    path.sender.ssthresh = 30 * mtu;
    for index in base..base + 20 {
        path.write(index, 1000);
    }
    path.run_for(Duration::from_secs(2));
    assert_eq!(path.delivered.len() as u32, base + 20);
    assert_eq!(path.sender.stats.get_num_fast_retrans(), 2);
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 0);
    let latency = path.latency(base + 8).unwrap();
    assert!(
        latency < Duration::from_millis(100),
        "second loss took {latency:?}"
    );
}

// (c) T3-rtx keeps running after Path.Max.Retrans (5) expiries: a path that
// comes back after a 45 s outage still gets the data through.
#[test]
fn t3_keeps_retransmitting_after_five_expiries() {
    let mut path = Path::new(
        TransportConfig::default().with_rto_initial(Duration::from_secs(1)),
        Box::new(|index, nth| index == 0 && nth <= 7),
    );
    path.write(0, 100);
    path.run_for(Duration::from_secs(60));
    assert_eq!(path.sent_at[&0].len(), 8);
    assert_eq!(path.latency(0), Some(Duration::from_secs(45) + ONE_WAY));
}

// (c) ...and when the peer stays unreachable, the association fails after
// Association.Max.Retrans (10) consecutive expiries (RFC 9260 §8.1): closed,
// reported to the application, not left with data in flight and no timer.
#[test]
fn t3_blackout_fails_the_association_after_max_retrans() {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| true));
    path.write(0, 100);
    path.run_for(Duration::from_secs(300));
    assert_eq!(
        path.sent_at[&0].len(),
        11,
        "one send and ten retransmissions"
    );
    assert_eq!(path.sender.state(), AssociationState::Closed);
    assert!(
        path.sender_events.iter().any(|e| matches!(
            e,
            Event::AssociationLost {
                reason: AssociationError::TimedOut,
                ..
            }
        )),
        "{:?}",
        path.sender_events
    );
}

// (d) Initial cwnd of 10 MTU: a ten-packet burst (a small keyframe) leaves in
// the first flight instead of three packets and then slow start.
#[test]
fn ten_packet_burst_goes_out_in_the_first_flight() {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| false));
    for index in 0..10 {
        path.write(index, 1100);
    }
    path.run_for(Duration::from_secs(1));
    for index in 0..10 {
        assert_eq!(path.latency(index), Some(ONE_WAY), "message {index}");
    }
}

// (e) A gap is SACKed at once (RFC 9260 §6.7), not after the 200 ms delay.
#[test]
fn out_of_order_tsn_is_sacked_at_once() {
    let base = 20;
    let mut path = Path::new(
        TransportConfig::default(),
        Box::new(move |index, nth| index == base && nth == 1),
    );
    path.warm_up(base / 2);
    path.write(base, 1000);
    path.write(base + 1, 1000);
    path.run_for(Duration::from_secs(1));
    let arrival = path.sent_at[&(base + 1)][0] + ONE_WAY;
    assert!(
        path.sacks
            .iter()
            .any(|&(at, _, gaps)| at == arrival && gaps == 1),
        "{:?}",
        path.sacks
    );
}

// (e) The retransmission that fills the gap is SACKed at once too, as TCP
// does (RFC 5681 §4.2): after a T3-rtx the sender's cwnd is one MTU, and a
// delayed SACK would hold everything behind it for another 200 ms.
#[test]
fn gap_filling_retransmission_is_sacked_at_once() {
    let base = 20;
    // Without the loss probe, whose I bit would ask for the SACK itself.
    let mut path = Path::new(
        TransportConfig::default().with_max_probe_interval(None),
        Box::new(move |index, nth| index == base && nth == 1),
    );
    path.warm_up(base / 2);
    path.write(base, 1000);
    path.write(base + 1, 1000);
    path.run_for(Duration::from_secs(2));
    // RACK resends it (two messages, no third SACK for fast retransmit).
    assert_eq!(path.sender.stats.get_num_rack_losses(), 1);
    let filled = path.sent_at[&base][1] + ONE_WAY;
    let sack = path.sacks.iter().find(|&&(_, index, _)| index == base + 1);
    assert_eq!(sack.map(|&(at, _, _)| at), Some(filled), "{:?}", path.sacks);
}

// (e) RFC 9260 §6.2: a packet with duplicate DATA and no new DATA MUST be
// SACKed immediately. Here the SACK for a lone message is lost, so T3-rtx
// resends it; the duplicate's SACK must not wait for the delayed-SACK timer.
#[test]
fn duplicate_data_is_sacked_at_once() {
    let base = 20;
    // An RTO well above the 200 ms SACK delay, so that the lost SACK, not
    // the delay, is what makes T3-rtx resend; without the loss probe, whose
    // I bit would ask for the SACK itself.
    let config = TransportConfig::default()
        .with_rto_min(Duration::from_millis(500))
        .with_max_probe_interval(None);
    let mut path = Path::new(config, Box::new(|_, _| false));
    path.warm_up(base / 2);
    let mut sacks_of_base = 0;
    path.sack_loss = Box::new(move |index, _| {
        sacks_of_base += u32::from(index == base);
        index == base && sacks_of_base == 1
    });
    path.write(base, 100);
    path.run_for(Duration::from_secs(2));
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 1);
    let duplicate = path.sent_at[&base][1] + ONE_WAY;
    let sacks: Vec<Instant> = path
        .sacks
        .iter()
        .filter(|&&(_, index, _)| index == base)
        .map(|&(at, _, _)| at)
        .collect();
    assert_eq!(sacks.len(), 2, "{:?}", path.sacks);
    assert_eq!(sacks[1], duplicate);
}

// (f) A keyframe does not wait for the congestion window: with the default
// initial window (64 KiB) a 40-packet burst of 1,200 bytes, what a 2.5 Mbit/s
// video keyframe is, leaves in the first flight.
#[test]
fn keyframe_burst_goes_out_in_the_first_flight() {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| false));
    for index in 0..40 {
        path.write(index, 1200);
    }
    path.run_for(Duration::from_secs(1));
    for index in 0..40 {
        assert_eq!(path.latency(index), Some(ONE_WAY), "message {index}");
    }
}

// (f) ...and a loss still reduces a window that has grown above the floor:
// fast retransmit halves it, but not below the configured floor; a T3-rtx
// expiry leaves it at the floor, not at one MTU.
#[test]
fn loss_reduces_cwnd_down_to_the_configured_floor() {
    let base = 20;
    let config = TransportConfig::default()
        .with_initial_cwnd(Some(100_000))
        .with_min_cwnd(30_000);
    let mut path = Path::new(
        config,
        Box::new(move |index, nth| nth == 1 && index == base),
    );
    path.warm_up(base / 2);
    assert_eq!(path.sender.cwnd, 100_000);
    for index in base..base + 10 {
        path.write(index, 1000);
    }
    path.run_for(Duration::from_millis(100));
    assert_eq!(path.sender.stats.get_num_fast_retrans(), 1);
    assert_eq!(path.sender.cwnd, 50_000, "halved by the loss");

    let mut path = Path::new(
        TransportConfig::default().with_min_cwnd(30_000),
        Box::new(move |index, nth| nth == 1 && index == base),
    );
    path.warm_up(base / 2);
    path.sender.cwnd = 40_000;
    path.write(base, 1000);
    path.write(base + 1, 1000);
    path.write(base + 2, 1000);
    path.write(base + 3, 1000);
    path.run_for(Duration::from_millis(100));
    assert_eq!(path.sender.stats.get_num_fast_retrans(), 1);
    assert_eq!(path.sender.cwnd, 30_000, "20,000 is below the floor");

    // A lone lost message: T3-rtx (without the loss probe, which would
    // find it first).
    let mut path = Path::new(
        TransportConfig::default()
            .with_min_cwnd(30_000)
            .with_max_probe_interval(None),
        Box::new(move |index, nth| nth == 1 && index == base),
    );
    path.warm_up(base / 2);
    path.write(base, 1000);
    path.run_for(Duration::from_millis(250));
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 1);
    assert_eq!(path.sender.cwnd, 30_000, "one MTU without the floor");
}

// (g) RFC 3758 timed reliability: a lost message whose lifetime ends is
// abandoned then, not when it comes up for retransmission, so it stops
// holding the congestion window and the fresh message behind it leaves at
// once. Here the whole window (two messages) is lost, so no SACK reports
// the loss and only T3-rtx (200 ms) would: the message written after the
// lifetime (50 ms) would wait for it, expire in the pending queue, and
// never be delivered.
#[test]
fn expired_timed_message_is_abandoned_at_its_lifetime_and_frees_the_window() {
    let base = 20;
    // Without the loss probe, which would resend the last message once
    // within its lifetime.
    let config = TransportConfig::default()
        .with_initial_cwnd(Some(2_500))
        .with_min_cwnd(0)
        .with_max_probe_interval(None);
    let mut path = Path::new(
        config,
        Box::new(move |index, nth| nth == 1 && (index == base || index == base + 1)),
    );
    path.warm_up(base / 2);
    path.sender.cwnd = 2_500;
    {
        let mut stream = path.sender.stream(SI).unwrap();
        stream
            .set_reliability_params(true, ReliabilityType::Timed, 50)
            .unwrap();
    }
    path.write(base, 1100);
    path.write(base + 1, 1100);
    path.run_for(Duration::from_millis(60));
    path.write(base + 2, 1100);
    path.run_for(Duration::from_millis(500));
    assert_eq!(path.sent_at[&base].len(), 1, "abandoned, never resent");
    assert_eq!(path.sent_at[&(base + 1)].len(), 1, "abandoned, never resent");
    assert_eq!(path.latency(base), None);
    assert_eq!(path.latency(base + 2), Some(ONE_WAY), "fresh message waited");
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 0);
    // The FORWARD TSN moved the receiver past the abandoned messages: it
    // acknowledges the fresh one cumulatively.
    assert!(
        path.sacks.iter().any(|&(_, index, _)| index == base + 2),
        "{:?}",
        path.sacks
    );
}

// (h) RTO.Initial: a lost INIT (or COOKIE ECHO, or the first DATA, the
// DCEP OPEN) is resent after 300 ms, not after RFC 9260's second.
#[test]
fn lost_init_is_resent_after_rto_initial() {
    let now = Instant::now();
    let addr = SocketAddr::from_str("0.0.0.0:0").unwrap();
    let payload = max_payload_size_for_mtu(INITIAL_MTU);
    let config = Arc::new(TransportConfig::default());
    let mut client = Association::new(
        None,
        config,
        payload,
        1,
        addr,
        addr,
        TransportProtocol::UDP,
        now,
    );
    assert!(client.poll_transmit(now).is_some(), "INIT");
    let resend = now + Duration::from_millis(300);
    assert_eq!(client.poll_timeout(), Some(resend));
    client.handle_timeout(resend);
    assert!(client.poll_transmit(resend).is_some(), "INIT resent");
}

// (i) RACK (RFC 8985): a retransmission that is lost too is declared
// lost again once a message sent after it is acknowledged, and resent a
// round trip later. Before, a chunk was fast retransmitted once (RFC 9260
// §7.2.4) and a second loss waited for T3-rtx (200 ms at least).
#[test]
fn lost_retransmission_is_resent_again_without_t3() {
    let base = 20;
    let lost = base + 2;
    // Without the loss probe: RACK alone, driven by the media behind it.
    let mut path = Path::new(
        TransportConfig::default().with_max_probe_interval(None),
        Box::new(move |index, nth| index == lost && nth <= 2),
    );
    path.warm_up(base / 2);
    path.stream(base, 40, Duration::from_millis(10), 1000);
    path.run_for(Duration::from_secs(1));
    assert_eq!(path.delivered.len() as u32, base + 40);
    assert_eq!(path.sent_at[&lost].len(), 3);
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 0);
    assert_eq!(path.sender.stats.get_num_rack_losses(), 2);
    let latency = path.latency(lost).unwrap();
    assert!(
        latency < Duration::from_millis(100),
        "twice lost message took {latency:?}"
    );
}

// (j) Tail loss probe (RFC 8985 §7): the last message of a burst is lost
// and nothing after it can reveal the loss. One PTO (2·SRTT, 40 ms here)
// after the send the sender resends it with the I bit (RFC 7053), and the
// receiver SACKs at once. Before, T3-rtx resent it after RTO.Min.
#[test]
fn lost_tail_is_resent_by_a_loss_probe() {
    let base = 20;
    let mut path = Path::new(
        TransportConfig::default(),
        Box::new(move |index, nth| index == base + 1 && nth == 1),
    );
    path.warm_up(base / 2);
    path.write(base, 1000);
    path.write(base + 1, 1000);
    path.run_for(Duration::from_secs(1));
    assert_eq!(path.sender.stats.get_num_probes(), 1);
    assert_eq!(path.sender.stats.get_num_t3timeouts(), 0);
    assert_eq!(path.latency(base + 1), Some(4 * ONE_WAY + ONE_WAY));
}

// (k) An outage: the path drops everything both ways for 1 s under a
// steady stream of reliable messages. T3-rtx backs off (expiries 0.2, 0.6
// and 1.4 s in, with RTO.Min 200 ms), so before, the path's return was
// noticed 400 ms late, at the third expiry. The loss probes keep going at
// most `DEFAULT_MAX_PROBE_INTERVAL` apart: the next one after the return
// is acknowledged and RACK resends everything it preceded.
#[test]
fn return_from_an_outage_is_found_by_the_next_probe() {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| false));
    let first = path.warm_up(10);
    let down = path.now + Duration::from_millis(200);
    let up = down + Duration::from_secs(1);
    path.down = Some((down, up));
    path.stream(first, 200, Duration::from_millis(10), 1000);
    path.run_for(Duration::from_secs(1));
    assert_eq!(path.sender.state(), AssociationState::Established);
    assert_eq!(
        path.delivered.len() as u32,
        first + 200,
        "reliable: every message"
    );
    let back = *path
        .delivered
        .values()
        .filter(|&&at| at >= up)
        .min()
        .unwrap();
    assert!(
        back <= up + DEFAULT_MAX_PROBE_INTERVAL + 4 * ONE_WAY,
        "first delivery {:?} after the return",
        back - up
    );
    // What the probing cost: about one packet per interval while down.
    let probes = path.sender.stats.get_num_probes();
    let per_second = (1000 / DEFAULT_MAX_PROBE_INTERVAL.as_millis()) as u64;
    assert!(
        (per_second * 4 / 5..=per_second * 13 / 10).contains(&probes),
        "{probes} probes"
    );
    // And a message written 200 ms after the return is on time again.
    let fresh = (first..first + 200)
        .find(|i| path.written_at[i] >= up + Duration::from_millis(200))
        .unwrap();
    for index in fresh..first + 200 {
        assert_eq!(path.latency(index), Some(ONE_WAY), "message {index}");
    }
}

// (l) The same outage under unreliable (maxRetransmits=0) messages at
// 1.8 Mbit/s. A message that is never retransmitted still holds the
// congestion window until it is acknowledged or abandoned; before, only
// T3-rtx abandoned it, so the 64 KiB window filled during the outage, the
// messages behind it waited in the send queue and went out after the
// return, up to half a second old. The loss probe's timeout abandons them
// (RFC 3758 A5, as T3-rtx does), so the window never fills: nothing stale
// is sent after the return, and what is written after it leaves at once.
#[test]
fn unreliable_messages_do_not_queue_behind_an_outage() {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| false));
    let first = path.warm_up(10);
    {
        let mut stream = path.sender.stream(SI).unwrap();
        stream
            .set_reliability_params(true, ReliabilityType::Rexmit, 0)
            .unwrap();
    }
    let down = path.now + Duration::from_millis(200);
    let up = down + Duration::from_secs(1);
    path.down = Some((down, up));
    let count = 400;
    path.stream(first, count, Duration::from_millis(5), 1100);
    path.run_for(Duration::from_secs(1));
    assert_eq!(path.sender.state(), AssociationState::Established);
    let late: Vec<(u32, Duration)> = (first..first + count)
        .filter_map(|i| Some((i, path.latency(i)?)))
        .filter(|&(_, latency)| latency > ONE_WAY)
        .collect();
    assert!(late.is_empty(), "delivered late: {late:?}");
    for index in first..first + count {
        let written = path.written_at[&index];
        if written >= up {
            assert_eq!(path.latency(index), Some(ONE_WAY), "message {index}");
        }
    }
}

/// Loss model for `measure_video_under_loss`: Gilbert with a 100% loss bad
/// state; `p_bad_to_good = 1` makes it independent (random) loss.
struct Gilbert {
    state: u64,
    bad: bool,
    p_good_to_bad: f64,
    p_bad_to_good: f64,
}

impl Gilbert {
    fn new(seed: u64, mean_loss: f64, mean_burst: f64) -> Self {
        let p_bad_to_good = 1.0 / mean_burst;
        Gilbert {
            state: seed.max(1),
            bad: false,
            p_good_to_bad: p_bad_to_good * mean_loss / (1.0 - mean_loss),
            p_bad_to_good,
        }
    }

    fn uniform(&mut self) -> f64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn drops(&mut self) -> bool {
        let flip = if self.bad {
            self.p_bad_to_good
        } else {
            self.p_good_to_bad
        };
        if self.uniform() < flip {
            self.bad = !self.bad;
        }
        self.bad
    }
}

/// Not a pass/fail test: prints one-way latency percentiles of a 2.5 Mbit/s
/// video workload (30 fps, 1,100-byte packets, a keyframe 5x a delta frame
/// every 2 s, 20 s, then 15 s to drain) over the in-memory path (10 ms one
/// way) under the loss patterns. Each direction has its own chain,
/// advanced per DATA packet (forward) and per SACK (reverse); FORWARD TSN
/// and handshake packets are never dropped. The unreliable case is
/// unordered with maxRetransmits=0. Run with
/// `cargo test -p rtc-sctp measure_video_under_loss -- --ignored --nocapture`.
#[test]
#[ignore = "measurement"]
fn measure_video_under_loss() {
    for (name, mean_loss, mean_burst) in [("1% random", 0.01, 1.0), ("5% burst 4", 0.05, 4.0)] {
        for unreliable in [false, true] {
            let mut forward = Gilbert::new(7, mean_loss, mean_burst);
            let mut reverse = Gilbert::new(11, mean_loss, mean_burst);
            let mut path = Path::new(
                TransportConfig::default(),
                Box::new(move |_, _| forward.drops()),
            );
            path.sack_loss = Box::new(move |_, _| reverse.drops());
            if unreliable {
                let mut stream = path.sender.stream(SI).unwrap();
                stream
                    .set_reliability_params(true, ReliabilityType::Rexmit, 0)
                    .unwrap();
            }
            let frame = Duration::from_micros(33_333);
            let mut index = 0;
            for f in 0..600 {
                let packets = if f % 60 == 0 { 44 } else { 9 };
                for _ in 0..packets {
                    path.write(index, 1100);
                    index += 1;
                }
                path.run_for(frame);
            }
            path.run_for(Duration::from_secs(15));
            let mut latencies: Vec<Duration> = (0..index).filter_map(|i| path.latency(i)).collect();
            latencies.sort();
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
            println!(
                "{name:>10} {:>10}: delivered {:6.2}%  p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}  \
                 fast retransmits {}  T3 expiries {}",
                if unreliable { "unreliable" } else { "reliable" },
                100.0 * latencies.len() as f64 / index as f64,
                pct(0.5),
                pct(0.99),
                latencies.last().unwrap(),
                path.sender.stats.get_num_fast_retrans(),
                path.sender.stats.get_num_t3timeouts(),
            );
        }
    }
}


/// 2.5 Mbit/s of video (as in `measure_video_under_loss`, 6 s) over the
/// in-memory path (`one_way` each way), black both ways for 1 s from 2 s in.
/// Returns the path and how long after its return the first message and
/// the first fresh one (at most 150 ms from write to read) arrived, and
/// how many stale ones arrived after it.
fn video_through_an_outage(
    unreliable: bool,
    one_way: Duration,
) -> (Path, Duration, Duration, usize) {
    let mut path = Path::new(TransportConfig::default(), Box::new(|_, _| false));
    path.one_way = one_way;
    if unreliable {
        let mut stream = path.sender.stream(SI).unwrap();
        stream
            .set_reliability_params(true, ReliabilityType::Rexmit, 0)
            .unwrap();
    }
    let start = path.now;
    let up = start + Duration::from_secs(3);
    path.down = Some((start + Duration::from_secs(2), up));
    let frame = Duration::from_micros(33_333);
    let mut index = 0;
    for f in 0..180 {
        let packets = if f % 60 == 0 { 44 } else { 9 };
        for _ in 0..packets {
            path.write(index, 1100);
            index += 1;
        }
        path.run_for(frame);
    }
    path.run_for(Duration::from_secs(5));
    let after: Vec<(Duration, Duration)> = (0..index)
        .filter_map(|i| Some((*path.delivered.get(&i)?, path.latency(i)?)))
        .filter(|&(at, _)| at >= up)
        .map(|(at, latency)| (at - up, latency))
        .collect();
    let stale_after = Duration::from_millis(150);
    let back = after.iter().map(|&(at, _)| at).min().unwrap();
    let fresh = after
        .iter()
        .filter(|&&(_, latency)| latency <= stale_after)
        .map(|&(at, _)| at)
        .min()
        .unwrap();
    let stale = after.iter().filter(|&&(_, l)| l > stale_after).count();
    (path, back, fresh, stale)
}

// (m) After an outage the losses RACK finds among the chunks sent before
// the T3-rtx expiry belong to that expiry's congestion event (RFC 6582
// §3.2's `recover`): T3-rtx already set the window to the floor, so they do
// not also enter Fast Recovery, which would hold the window there for a
// round trip while the backlog of a reliable channel waits. Before, the
// video was fresh again four round trips after the first delivery.
#[test]
fn backlog_after_an_outage_drains_in_two_round_trips() {
    let (mut path, back, fresh, _) = video_through_an_outage(false, ONE_WAY);
    assert!(path.sender.stats.get_num_t3timeouts() >= 1);
    assert!(path.sender.stats.get_num_rack_losses() >= 1);
    assert!(
        fresh <= back + 4 * ONE_WAY,
        "first delivery {back:?} after the return, fresh {fresh:?}"
    );
}

// (n) The same on a 40 ms RTT path (the report's wan-outage). T3-rtx
// expiries during the outage leave cwnd and ssthresh at the window floor,
// so the backlog drains at the floor per round trip, in congestion
// avoidance. With a 64 KiB floor the ~1 s of video waiting behind the
// outage took two more round trips after the first delivery before media
// was fresh again (80 ms here; 215 ms in the report, where the receiver
// acknowledges bursts with fewer SACKs); the 256 KiB floor sends it in the
// first round trip.
#[test]
fn backlog_after_an_outage_leaves_in_the_first_round_trip_on_a_wan_path() {
    let one_way = Duration::from_millis(20);
    let (mut path, back, fresh, _) = video_through_an_outage(false, one_way);
    assert!(path.sender.stats.get_num_t3timeouts() >= 1);
    assert!(
        fresh <= back + 2 * one_way,
        "first delivery {back:?} after the return, fresh {fresh:?}"
    );
}

/// Not a pass/fail test: prints what `video_through_an_outage` shows,
/// reliable and unreliable (maxRetransmits=0), and what the sender did.
/// Run with `cargo test -p rtc-sctp measure_video_through_an_outage --
/// --ignored --nocapture`.
#[test]
#[ignore = "measurement"]
fn measure_video_through_an_outage() {
    for (unreliable, one_way) in [(false, 10), (false, 20), (true, 10), (true, 20)] {
        let one_way = Duration::from_millis(one_way);
        let (mut path, back, fresh, stale) = video_through_an_outage(unreliable, one_way);
        let written = path.written_at.len();
        println!(
            "{:>10} {one_way:?}: back {back:?} fresh {fresh:?} stale {stale} delivered {:.2}% \
             probes {} RACK losses {} T3 expiries {} cwnd {} ssthresh {}",
            if unreliable { "unreliable" } else { "reliable" },
            100.0 * path.delivered.len() as f64 / written as f64,
            path.sender.stats.get_num_probes(),
            path.sender.stats.get_num_rack_losses(),
            path.sender.stats.get_num_t3timeouts(),
            path.sender.cwnd,
            path.sender.ssthresh,
        );
    }
}
