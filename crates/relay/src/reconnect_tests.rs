//! `relay offer --reconnect` against a black-holed path: the same loop the
//! command runs, over real HTTP signaling to the real answerers, with a
//! netsim proxy in the media path that drops everything for a while.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use relay_core::{OfferRequest, OfferResponse, build_rtp};
use relay_netsim::{ImpairmentConfig, Proxy};
use relay_signaling::{ServerConfig, SignalingClient, SignalingServer};
use tokio::net::UdpSocket;

use super::*;
use crate::Established;
use crate::pipe::{Continuity, Pipe, PipeCounters, PipeOptions, Side, StreamSpec};

/// HTTP signaling with a netsim proxy placed in every session's media
/// path; `set` changes the impairment of every proxy, now and later.
struct Impaired {
    client: SignalingClient,
    impairment: Mutex<ImpairmentConfig>,
    proxies: Mutex<Vec<Proxy>>,
}

impl Impaired {
    fn set(&self, config: ImpairmentConfig) {
        for p in self.proxies.lock().unwrap().iter() {
            p.set_config(config.clone()).unwrap();
        }
        *self.impairment.lock().unwrap() = config;
    }
}

#[async_trait]
impl Exchange for Impaired {
    async fn exchange(&self, request: OfferRequest) -> Result<OfferResponse, RelayError> {
        let impairment = self.impairment.lock().unwrap().clone();
        let forward = |offer: serde_json::Value| async {
            let response = self
                .client
                .offer(&OfferRequest {
                    offer,
                    ..request.clone()
                })
                .await?;
            Ok((response.answer, response.id))
        };
        let (answer, id, proxy) = crate::loopback::exchange_via_proxy(
            request.transport,
            request.offer.clone(),
            &impairment,
            7,
            forward,
        )
        .await?;
        self.proxies.lock().unwrap().push(proxy);
        Ok(OfferResponse { id, answer })
    }

    async fn release(&self, id: &str) {
        self.client.release(id).await;
    }
}

async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Sends 4,000 RTP packets at 1,000/s into the offerer's `--in` while the
/// media path is black-holed from packet 1,000 to 2,500, and checks that
/// the offerer reconnects, the stream resumes, and every packet is either
/// delivered or counted missing across a bounded gap.
async fn black_hole(transport: Transport, mode: Mode) {
    let liveness = Duration::from_millis(800);
    let options = LinkOptions {
        liveness_timeout: liveness,
        ..LinkOptions::default()
    };
    // Answering side: what `relay answer` does with each link.
    let out = udp().await;
    let out_addr = out.local_addr().unwrap();
    let continuity = Arc::new(Continuity::default());
    let c = continuity.clone();
    let next_session = Arc::new(AtomicU64::new(0));
    let sink: crate::LinkSink = Arc::new(move |e: Established| {
        let (c, session) = (c.clone(), next_session.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move {
            let out = [StreamSpec::muxed(out_addr)];
            let pipe = Pipe::bind(
                Side::Answer,
                &out,
                PipeOptions::default(),
                Arc::new(PipeCounters::default()),
            )
            .unwrap()
            .with_continuity(c, session);
            pipe.carry(e.link).await;
        });
    });
    let server = SignalingServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        crate::answerers(&options, sink),
    )
    .await
    .unwrap();
    let exchange = Impaired {
        client: SignalingClient::new(&format!("http://{}", server.local_addr())).unwrap(),
        impairment: Mutex::new(ImpairmentConfig::default()),
        proxies: Mutex::new(Vec::new()),
    };

    // Offering side: `relay offer --reconnect`.
    let counters = Arc::new(PipeCounters::default());
    let input = [StreamSpec::muxed("127.0.0.1:0".parse().unwrap())];
    let pipe = Pipe::bind(Side::Offer, &input, PipeOptions::default(), counters.clone()).unwrap();
    let in_addr: SocketAddr = pipe.local_addrs()[0].0;
    let state = OfferState::default();
    let plan = OfferPlan {
        transport,
        mode,
        options,
        reconnect: Some(ReconnectPolicy::default()),
    };
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let offering = run(&exchange, &plan, &pipe, &state, |event| {
        if let LinkEvent::Up { session } = event {
            let _ = up_tx.send(session.to_string());
        }
    });

    let total: u16 = 4_000;
    let (cut_at, restore_at) = (1_000u16, 2_500u16);
    let media = async {
        let first = tokio::time::timeout(Duration::from_secs(10), up_rx.recv()).await;
        assert!(first.is_ok(), "{transport}/{mode}: first link never came up");
        let sender = udp().await;
        let mut received = BTreeSet::new();
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for seq in 0..total {
            tick.tick().await;
            if seq == cut_at {
                exchange.set(ImpairmentConfig::default().loss(1.0));
            }
            if seq == restore_at {
                exchange.set(ImpairmentConfig::default());
            }
            let packet = build_rtp(96, seq, u32::from(seq) * 90, 0x5EED, &[seq as u8; 200]);
            sender.send_to(&packet, in_addr).await.unwrap();
            while let Ok((n, _)) = out.try_recv_from(&mut buf) {
                received.insert(u16::from_be_bytes([buf[2], buf[3]]));
                assert_eq!(n, 212);
            }
        }
        let drain = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok((_, _))) = tokio::time::timeout_at(drain, out.recv_from(&mut buf)).await {
            received.insert(u16::from_be_bytes([buf[2], buf[3]]));
        }
        received
    };
    let received = tokio::select! {
        r = media => r,
        r = offering => panic!("{transport}/{mode}: the reconnect loop ended: {r:?}"),
    };

    let (outages, last_outage, _) = state.outages();
    let missing = continuity.missing();
    let (gap, _) = continuity.gaps();
    eprintln!(
        "{transport}/{mode}: received {} of {total}, links {}, failed attempts {}, outage {:?}, \
         stream gap {:?} with {missing} missing, {} dropped with no link up",
        received.len(),
        state.links_established(),
        state.attempts_failed(),
        last_outage,
        gap,
        counters.no_link.load(Ordering::Relaxed),
    );
    // Flowing up to the cut (the last few may be in flight when it starts).
    assert!(
        received.range(cut_at - 100..cut_at).count() > 0,
        "{transport}/{mode}: nothing delivered just before the black hole"
    );
    assert!(
        received.contains(&(total - 1)),
        "{transport}/{mode}: the stream did not resume after the path came back"
    );
    assert!(
        outages >= 1 && state.links_established() >= 2,
        "{transport}/{mode}: never reconnected"
    );
    // Every packet is either delivered or counted missing across the gap.
    assert_eq!(
        received.len() as u64 + missing,
        u64::from(total),
        "{transport}/{mode}: losses not all accounted for"
    );
    // The gap covers the black hole and is bounded by it plus detection
    // (liveness), one backoff step and setup.
    let hole = Duration::from_millis(u64::from(restore_at - cut_at));
    assert!(
        gap >= hole.mul_f64(0.9),
        "{transport}/{mode}: gap {gap:?} shorter than the black hole"
    );
    assert!(
        gap <= hole + liveness + ReconnectPolicy::default().max_backoff + Duration::from_secs(1),
        "{transport}/{mode}: gap {gap:?} not bounded"
    );
    // The dead session was ended on the answering side; only the live one remains.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.session_ids().len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.session_ids().len(),
        1,
        "{transport}/{mode}: sessions left half-open"
    );
    if let Some((_, link)) = state.current() {
        link.close();
    }
    server.shutdown().await;
}

#[cfg(feature = "rtp-udp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_udp_reconnects_after_a_black_hole_and_counts_the_gap() {
    black_hole(Transport::RtpUdp, Mode::Unreliable).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_reconnects_after_a_black_hole_and_counts_the_gap() {
    black_hole(Transport::Quic, Mode::Datagram).await;
}

#[cfg(feature = "dc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_reconnects_after_a_black_hole_and_counts_the_gap() {
    black_hole(Transport::Dc, Mode::Unreliable).await;
}
