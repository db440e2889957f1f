//! Repair mode end to end, through the facade and a lossy netsim path:
//! what plain unreliable loses, repair delivers, each packet once and
//! within the latency budget, and the hop's NACKs never reach the
//! application on either side.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relay::LinkOptions;
use relay::loopback::{LoopbackConfig, establish};
use relay_core::{Mode, Packet, PacketKind, Transport, build_rtp};
use relay_netsim::ImpairmentConfig;

const PACKETS: u16 = 2_000;
const BUDGET: Duration = Duration::from_millis(200);

/// Sends PACKETS RTP packets at 1,000/s through 2% random loss on a 10 ms
/// one-way path; returns (delivered sequence numbers with their one-way
/// latency, RTCP packets the application saw, the receiver's stats, the
/// sender's stats).
async fn through_loss(
    transport: Transport,
    mode: Mode,
) -> (
    Vec<(u16, Duration)>,
    usize,
    relay_core::LinkStats,
    relay_core::LinkStats,
) {
    let options = LinkOptions {
        max_delay: BUDGET,
        ..LinkOptions::default()
    };
    let impairment = ImpairmentConfig::default()
        .delay(Duration::from_millis(10))
        .loss(0.02);
    let pair = establish(
        transport,
        mode,
        &LoopbackConfig::default().link(options).impairment(impairment, 11),
    )
    .await
    .unwrap_or_else(|e| panic!("{transport} {mode}: {e}"));
    let epoch = Instant::now();
    let receiver = pair.answerer.clone();
    let receiving = tokio::spawn(async move {
        let (mut got, mut rtcp) = (Vec::new(), 0);
        while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(800), receiver.recv()).await {
            if p.kind() == PacketKind::Rtcp {
                rtcp += 1;
                continue;
            }
            let sent = u64::from_be_bytes(p.bytes()[12..20].try_into().unwrap());
            let latency = Duration::from_nanos((epoch.elapsed().as_nanos() as u64).saturating_sub(sent));
            got.push((p.sequence_number().unwrap(), latency));
        }
        (got, rtcp)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for seq in 0..PACKETS {
        tick.tick().await;
        let mut payload = vec![0u8; 600];
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        let p = Packet::parse(build_rtp(96, seq, u32::from(seq) * 90, 0xC0FFEE, &payload)).unwrap();
        pair.offerer.send(p).await.unwrap();
    }
    let (got, rtcp) = receiving.await.unwrap();
    let stats = pair.answerer.stats();
    let sender = pair.offerer.stats();
    pair.close().await;
    (got, rtcp, stats, sender)
}

async fn repairs(transport: Transport, mode: Mode) {
    let (got, rtcp, stats, sender) = through_loss(transport, mode).await;
    let unique: HashSet<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "{transport}: a packet was delivered twice"
    );
    assert_eq!(rtcp, 0, "{transport}: the hop's NACKs reached the application");
    // 2% of 2,000 lost one way, and 2% of the repairs and NACKs too: a
    // few packets may need a second ask, none should need a fourth.
    assert!(
        got.len() >= usize::from(PACKETS) - 4,
        "{transport}: delivered {} of {PACKETS}; {:?}",
        got.len(),
        stats.repair
    );
    if transport == Transport::Dc {
        // SCTP repairs inside rtc, which reports no counts; and rtc does
        // not tell the answering end which limit the channel was opened
        // with, so that end reports the channel as unreliable.
        assert_eq!(stats.repair, None);
    } else {
        let repair = stats.repair.expect("a repairing link reports its repairs");
        assert_eq!(stats.mode, mode);
        assert!(repair.repaired >= 10, "{transport}: {repair:?}");
        // Every retransmission went out: none was refused (SRTP will not
        // encrypt an index twice) or missing from the link's own copy.
        assert_eq!(
            (sender.drops.unauthenticated, sender.drops.expired),
            (0, 0),
            "{transport} {mode}: {:?}",
            sender.drops
        );
    }
    let worst = got.iter().map(|(_, l)| *l).max().unwrap();
    assert!(
        worst < BUDGET + Duration::from_millis(50),
        "{transport}: a packet {worst:?} old was delivered"
    );

    // The same path without repair loses its 2%.
    let plain_mode = transport.unrepaired(mode).expect("a repair mode");
    let (plain, _, _, _) = through_loss(transport, plain_mode).await;
    assert!(
        plain.len() < usize::from(PACKETS) - 10,
        "{transport}: the plain mode lost nothing ({} of {PACKETS}): the path is not lossy",
        plain.len()
    );
}

#[cfg(feature = "rtp-udp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_udp_repairs_its_losses_within_the_budget() {
    repairs(Transport::RtpUdp, Mode::Repair).await;
}

/// SRTP with repair: a retransmission is the packet's first SRTP bytes
/// again (protecting the same index twice is refused), and the NACKs are
/// SRTCP, so nothing on the hop is in the clear.
#[cfg(feature = "rtp-udp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_repairs_its_losses_with_the_bytes_it_first_sent() {
    repairs(Transport::RtpUdp, Mode::SrtpRepair).await;
}
#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_repairs_its_datagram_losses_within_the_budget() {
    repairs(Transport::Quic, Mode::Repair).await;
}

#[cfg(feature = "dc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_repairs_within_its_packet_lifetime() {
    repairs(Transport::Dc, Mode::Repair).await;
}
