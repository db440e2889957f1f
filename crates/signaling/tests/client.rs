//! The client against a real server, and the messages an operator sees when
//! things go wrong.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use relay_core::{Mode, OfferRequest, SdpType, Transport, W3cDescription};
use relay_signaling::{ClientError, ServerConfig, SessionState, SignalingClient};
use serde_json::json;

fn client_for(server: &relay_signaling::SignalingServer) -> SignalingClient {
    SignalingClient::new(&format!("http://{}", server.local_addr())).unwrap()
}

fn rtp_offer() -> OfferRequest {
    OfferRequest {
        transport: Transport::RtpUdp,
        mode: None,
        offer: json!({"addr": "127.0.0.1:5004"}),
    }
}

#[tokio::test]
async fn offer_stats_list_delete_round_trip() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(ServerConfig::default(), &[Arc::clone(&rtp)]).await;
    let client = client_for(&server);
    bounded("health", client.health()).await.unwrap();

    let response = bounded("offer", client.offer(&rtp_offer())).await.unwrap();
    assert_eq!(response.answer, json!({"echo": {"addr": "127.0.0.1:5004"}}));
    assert_eq!(server.session_ids(), vec![response.id.clone()]);

    let info = bounded("stats", client.stats(&response.id)).await.unwrap();
    assert_eq!(
        (info.transport, info.mode, info.state),
        (Transport::RtpUdp, Mode::Unreliable, SessionState::Connecting)
    );
    rtp.session(0).come_up();
    let all = bounded("list", client.list()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, SessionState::Up);

    bounded("delete", client.delete(&response.id)).await.unwrap();
    assert_eq!(rtp.session(0).closes(), 1);
    assert!(server.session_ids().is_empty());

    let err = bounded("stats of a deleted session", client.stats(&response.id))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(
        err.to_string(),
        format!(
            "signaling server at http://{} answered 404: no session {}",
            server.local_addr(),
            response.id
        )
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bare_w3c_offer_returns_the_id_and_the_answer() {
    let dc = FakeAnswerer::new(Transport::Dc);
    let server = start(ServerConfig::default(), &[Arc::clone(&dc)]).await;
    let offer = W3cDescription {
        kind: SdpType::Offer,
        sdp: "v=0\r\no=offer\r\n".into(),
    };
    let (id, answer) = bounded("w3c offer", client_for(&server).offer_w3c(&offer))
        .await
        .unwrap();
    assert_eq!(server.session_ids(), vec![id]);
    assert_eq!(answer.kind, SdpType::Answer);
    assert_eq!(answer.sdp, "v=0\r\no=answer\r\n");
    assert_eq!(
        dc.last_call(),
        (
            Mode::Reliable,
            json!({"type": "offer", "sdp": "v=0\r\no=offer\r\n"})
        )
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unauthorized_says_to_pass_the_token() {
    let rtp = FakeAnswerer::new(Transport::RtpUdp);
    let server = start(
        ServerConfig::default().token(Some("s3cret".into())),
        &[Arc::clone(&rtp)],
    )
    .await;
    let base = format!("http://{}", server.local_addr());

    let err = bounded("offer", client_for(&server).offer(&rtp_offer()))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Unauthorized {
            token_sent: false,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!("signaling server at {base} refused the offer: 401 unauthorized; pass --token")
    );

    let wrong = client_for(&server).with_token(Some("guess".into()));
    let err = bounded("offer", wrong.offer(&rtp_offer())).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("401 unauthorized; the --token given was not accepted"),
        "{err}"
    );
    let err = bounded("list", wrong.list()).await.unwrap_err();
    assert!(
        err.to_string().contains("refused the session listing: 401"),
        "{err}"
    );
    bounded("health without a token", wrong.health()).await.unwrap();
    assert!(server.session_ids().is_empty());

    let right = client_for(&server).with_token(Some("s3cret".into()));
    let response = bounded("offer", right.offer(&rtp_offer())).await.unwrap();
    assert_eq!(bounded("list", right.list()).await.unwrap()[0].id, response.id);
    bounded("delete", right.delete(&response.id)).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn refusals_quote_the_server() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    let quic = OfferRequest {
        transport: Transport::Quic,
        mode: None,
        offer: json!({}),
    };
    let err = bounded("offer", client_for(&server).offer(&quic))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "signaling server at http://{} answered 400: transport quic is not available here; \
             this server answers: rtp-udp",
            server.local_addr()
        )
    );
    let err = client_for(&server).delete("../etc").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidSessionId(_)));
    server.shutdown().await;
}

#[tokio::test]
async fn a_path_prefix_is_kept() {
    let server = start(ServerConfig::default(), &[]).await;
    let client = SignalingClient::new(&format!("http://{}/relay/", server.local_addr())).unwrap();
    // The server itself serves at the root, so the prefixed path is unknown to it.
    let err = bounded("health", client.health()).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("answered 404: no such path /relay/healthz"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_says_so() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let err = bounded("offer", SignalingClient::new(&base).unwrap().offer(&rtp_offer()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }));
    assert_eq!(
        err.to_string(),
        format!("cannot reach signaling server at {base}: connection refused")
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts the connection, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = SignalingClient::new(&base)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let err = bounded("offer", client.offer(&rtp_offer())).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }));
    assert_eq!(
        err.to_string(),
        format!("signaling server at {base} did not answer the offer: timed out after 300ms")
    );
    hold.abort();
}

#[tokio::test]
async fn a_server_that_is_not_http_is_an_exchange_error() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let err = bounded("health", SignalingClient::new(&base).unwrap().health())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "signaling exchange with {base} failed during the health check"
        )),
        "{err}"
    );
    serve.abort();
}
