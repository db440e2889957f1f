//! Both ends of a QUIC link in one process: the offerer (the QUIC client)
//! and the answerer (the server, whose certificate the offer pins), RTP one
//! way over datagrams, RTCP back, and what each end counted. What a media
//! server embedding this crate does, minus the HTTP exchange
//! (relay-signaling carries the offer and the answer between servers).
//!
//! `cargo run -p quic-relay --example pair`

use std::time::Duration;

use quic_relay::{Mode, Packet, QuicAnswerer, QuicConfig, QuicOfferer, RelayLink, build_rtp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let offerer = QuicOfferer::bind(QuicConfig::default(), Mode::Datagram).await?;
    let offer = offerer.offer();
    println!("offer:  {}", serde_json::to_string(&offer)?);
    let answerer = QuicAnswerer::bind(QuicConfig::default(), Mode::Datagram, &offer).await?;
    let answer = answerer.answer();
    println!("answer: {}", serde_json::to_string(&answer)?);
    let (client, server) = tokio::try_join!(offerer.connect(&answer), answerer.accept())?;

    // Ten video frames of five packets, one every 33 ms, as a camera sends.
    let mut sent = 0u16;
    for frame in 0..10u32 {
        for _ in 0..5 {
            let rtp = build_rtp(96, sent, frame * 3_000, 0x5EED, &[0xAB; 1_000]);
            client.send(Packet::parse(rtp)?).await?;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    let mut got = 0u16;
    while got < sent {
        match tokio::time::timeout(Duration::from_secs(2), server.recv()).await {
            Ok(Ok(packet)) => got += u16::from(packet.ssrc() == 0x5EED),
            _ => break,
        }
    }
    // The receiving server's feedback goes back the same way: an empty RR.
    let rr = vec![0x80, 201, 0, 1, 0, 0, 0, 0x42];
    server.send(Packet::parse(rr.into())?).await?;
    let feedback = tokio::time::timeout(Duration::from_secs(2), client.recv()).await??;
    let stats = server.stats();
    println!(
        "delivered {got} of {sent}, feedback {} bytes back; server: {} packets, {} bytes; client rtt {:?}",
        feedback.bytes().len(),
        stats.packets_received,
        stats.bytes_received,
        client.stats().rtt
    );
    client.close();
    if got != sent {
        return Err(format!("only {got} of {sent} packets arrived").into());
    }
    Ok(())
}
