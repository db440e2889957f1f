//! Both ends of an srtp link in one process: offer, answer, a thousand RTP
//! packets one way and the link's statistics. What a media server embedding
//! this crate does, minus the HTTP exchange (relay-signaling carries the
//! offer and the answer between two servers).
//!
//! `cargo run -p rtp-udp-relay --example pair`

use std::time::Duration;

use rtp_udp_relay::{Mode, Packet, RelayLink, RtpUdpAnswerer, RtpUdpConfig, RtpUdpOfferer, build_rtp};

const PACKETS: u16 = 1_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let offerer = RtpUdpOfferer::bind(RtpUdpConfig::default(), Mode::Srtp).await?;
    let offer = offerer.offer();
    println!("offer:  {}", serde_json::to_string(&offer)?);
    let answerer = RtpUdpAnswerer::bind(RtpUdpConfig::default(), Mode::Srtp, &offer).await?;
    let answer = answerer.answer();
    println!("answer: {}", serde_json::to_string(&answer)?);
    let (sender, receiver) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;

    let receiving = tokio::spawn(async move {
        let mut got = 0u16;
        while got < PACKETS {
            match tokio::time::timeout(Duration::from_secs(2), receiver.recv()).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        (got, receiver)
    });
    for seq in 0..PACKETS {
        let rtp = build_rtp(96, seq, u32::from(seq) * 3_000, 0x5EED, &[0xAB; 1_000]);
        sender.send(Packet::parse(rtp)?).await?;
        if seq % 100 == 99 {
            // Paced like media, so nothing waits in a socket buffer.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (got, receiver) = receiving.await?;
    let stats = receiver.stats();
    println!(
        "delivered {got} of {PACKETS}; receiver: {} packets, {} bytes, lost {}, rtt {:?}",
        stats.packets_received,
        stats.bytes_received,
        stats.received_ssrcs.iter().map(|s| s.lost).sum::<i64>(),
        stats.rtt
    );
    sender.close();
    if got != PACKETS {
        return Err(format!("only {got} of {PACKETS} packets arrived").into());
    }
    Ok(())
}
