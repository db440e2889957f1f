//! Both ends of a data-channel link in one process: offer and answer as
//! W3C session descriptions (what a browser's RTCPeerConnection or pion
//! exchange), ICE on loopback, an unreliable channel whose messages live
//! at most the latency budget, and what the receiving end counted. What a
//! media server embedding this crate does, minus the HTTP exchange
//! (relay-signaling carries the descriptions between servers).
//!
//! `cargo run -p dc-relay --example pair`

use std::time::Duration;

use dc_relay::{DcAnswerer, DcConfig, DcOfferer, Mode, Packet, RelayLink, build_rtp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An unreliable channel: SCTP gives up on a message after 200 ms.
    let config = DcConfig::default().max_delay(Duration::from_millis(200));
    let offerer = DcOfferer::bind(config.clone(), Mode::Unreliable).await?;
    let offer = offerer.offer();
    println!("offer SDP: {} lines", offer.sdp.lines().count());
    // The answerer relays the channel the offer announces, in its mode.
    let answerer = DcAnswerer::bind(config, &offer).await?;
    let answer = answerer.answer();
    let (sender, receiver) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;
    println!("channel open: {} {}", receiver.transport(), receiver.mode());

    let packets = 200u16;
    for seq in 0..packets {
        let rtp = build_rtp(111, seq, u32::from(seq) * 960, 0xA0D10, &[0x55; 160]);
        sender.send(Packet::parse(rtp)?).await?;
        // Opus-sized packets every 2 ms: ten times real time, still paced.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = 0u16;
    while got < packets {
        match tokio::time::timeout(Duration::from_secs(2), receiver.recv()).await {
            Ok(Ok(_)) => got += 1,
            _ => break,
        }
    }
    let stats = receiver.stats();
    println!(
        "delivered {got} of {packets}; receiver: {} packets, {} bytes, setup {:?}",
        stats.packets_received, stats.bytes_received, stats.setup_time
    );
    sender.close();
    if got != packets {
        return Err(format!("only {got} of {packets} packets arrived").into());
    }
    Ok(())
}
