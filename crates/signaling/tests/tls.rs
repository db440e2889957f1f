//! https: the offerer pins the answerer's certificate by fingerprint, and
//! every way of getting it wrong is a clear error, never a hang.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use relay_core::{OfferRequest, Transport};
use relay_signaling::{ClientError, Fingerprint, ServerConfig, SignalingClient, TlsError, TlsIdentity};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn offer() -> OfferRequest {
    OfferRequest {
        transport: Transport::RtpUdp,
        mode: None,
        offer: json!({"addr": "127.0.0.1:5004"}),
    }
}

async fn https_server(config: ServerConfig) -> (relay_signaling::SignalingServer, Fingerprint) {
    let identity = TlsIdentity::self_signed().expect("self-signed certificate");
    let fingerprint = identity.fingerprint();
    let server = start(config.tls(identity), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    (server, fingerprint)
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("relay-signaling-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn https_with_the_pinned_fingerprint_serves_the_whole_api() {
    let (server, fingerprint) = https_server(ServerConfig::default().token(Some("s3cret".into()))).await;
    assert!(server.is_https());
    assert_eq!(server.tls_fingerprint(), Some(fingerprint));
    assert_eq!(server.url(), format!("https://{}", server.local_addr()));

    let client = SignalingClient::new(&server.url())
        .unwrap()
        .with_fingerprint(fingerprint)
        .with_token(Some("s3cret".into()));
    bounded("health", client.health()).await.unwrap();
    let answer = bounded("offer", client.offer(&offer())).await.unwrap();
    assert_eq!(answer.answer, json!({"echo": {"addr": "127.0.0.1:5004"}}));
    assert_eq!(server.session_ids(), vec![answer.id.clone()]);
    assert_eq!(bounded("list", client.list()).await.unwrap().len(), 1);
    bounded("delete", client.delete(&answer.id)).await.unwrap();
    assert!(server.session_ids().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_self_signed_server_without_a_fingerprint_is_refused_saying_what_to_pass() {
    // Without a pin the certificate is checked against the system's root
    // store, which no self-signed certificate chains to (or, on a machine
    // without CA certificates, the store itself is missing).
    let (server, _) = https_server(ServerConfig::default()).await;
    let client = SignalingClient::new(&server.url()).unwrap();
    let err = bounded("offer", client.offer(&offer())).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Tls { .. } | ClientError::NoRootStore { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&server.url()) && text.contains("--signal-fingerprint"),
        "{text}"
    );
    assert!(server.session_ids().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_fingerprint_names_both_fingerprints() {
    let (server, actual) = https_server(ServerConfig::default()).await;
    let expected = TlsIdentity::self_signed().unwrap().fingerprint();
    let client = SignalingClient::new(&server.url())
        .unwrap()
        .with_fingerprint(expected);
    let err = bounded("offer", client.offer(&offer())).await.unwrap_err();
    match &err {
        ClientError::FingerprintMismatch {
            expected: e,
            actual: a,
            ..
        } => assert_eq!((*e, *a), (expected, actual)),
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&expected.to_string()) && text.contains(&actual.to_string()),
        "{text}"
    );
    assert!(
        server.session_ids().is_empty(),
        "no session behind a refused certificate"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_the_https_server_is_told_to_use_https() {
    let (server, fingerprint) = https_server(ServerConfig::default()).await;
    let client = SignalingClient::new(&format!("http://{}", server.local_addr()))
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    let err = bounded("offer", client.offer(&offer())).await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST), "{err:?}");
    assert!(err.to_string().contains("speaks https only"), "{err}");

    // A fingerprint with an http:// address is a configuration mistake.
    let err = client.with_fingerprint(fingerprint).health().await.unwrap_err();
    assert!(matches!(err, ClientError::FingerprintOverHttp { .. }), "{err:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_told_to_use_http() {
    let server = start(ServerConfig::default(), &[FakeAnswerer::new(Transport::RtpUdp)]).await;
    assert!(!server.is_https() && server.tls_fingerprint().is_none());
    let started = Instant::now();
    let client = SignalingClient::new(&format!("https://{}", server.local_addr()))
        .unwrap()
        .with_fingerprint(TlsIdentity::self_signed().unwrap().fingerprint())
        .with_timeout(Duration::from_secs(3));
    let err = bounded("offer", client.offer(&offer())).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("use http://"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not a timeout: {:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stalled_or_garbage_handshakes_are_cut_off_without_blocking_others() {
    let timeout = Duration::from_millis(300);
    let (server, fingerprint) = https_server(ServerConfig::default().request_read_timeout(timeout)).await;
    let addr = server.local_addr();

    // One says nothing; one starts a TLS record and never finishes it; one
    // sends bytes that are neither TLS nor HTTP.
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"\x16\x03\x01\x02\x00\x01").await.unwrap();
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0u8, 1, 2, 3, 0xff, 0xfe]).await.unwrap();

    // Meanwhile a real client is served at once.
    let client = SignalingClient::new(&server.url())
        .unwrap()
        .with_fingerprint(fingerprint);
    let started = Instant::now();
    bounded("offer alongside stalled handshakes", client.offer(&offer()))
        .await
        .unwrap();
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());

    let started = Instant::now();
    for (name, mut stream) in [("silent", silent), ("partial", partial), ("garbage", garbage)] {
        let mut out = Vec::new();
        // A reset is as good as a close here.
        let _ = bounded(name, stream.read_to_end(&mut out)).await;
    }
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "cut off after {:?}",
        started.elapsed()
    );
    let metrics = server.metrics();
    assert!(
        metrics.contains("relay_signaling_connections_refused_total{cause=\"tls_handshake\"} 3"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn pem_files_load_and_every_bad_file_is_named() {
    let dir = TempDir::new("pem");
    let generated = rcgen::generate_simple_self_signed(vec!["relay.example".to_owned()]).unwrap();
    let cert = dir.write("cert.pem", generated.cert.pem());
    let key = dir.write("key.pem", generated.signing_key.serialize_pem());

    let identity = TlsIdentity::from_pem_files(&cert, &key).unwrap();
    assert_eq!(identity.fingerprint(), Fingerprint::of_der(generated.cert.der()));

    // Served from the files, pinned by the fingerprint of the file's certificate.
    let server = start(
        ServerConfig::default().tls(identity),
        &[FakeAnswerer::new(Transport::RtpUdp)],
    )
    .await;
    let client = SignalingClient::new(&server.url())
        .unwrap()
        .with_fingerprint(Fingerprint::of_der(generated.cert.der()));
    bounded("offer", client.offer(&offer())).await.unwrap();
    server.shutdown().await;

    let missing = dir.0.join("missing.pem");
    let garbage = dir.write("garbage.pem", "not a certificate\n");
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    let other_key = dir.write("other-key.pem", other.signing_key.serialize_pem());

    let err = TlsIdentity::from_pem_files(&missing, &key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string())
            && err.to_string().contains("certificate chain"),
        "{err}"
    );
    let err = TlsIdentity::from_pem_files(&cert, &missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()) && err.to_string().contains("private key"),
        "{err}"
    );
    let err = TlsIdentity::from_pem_files(&garbage, &key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&garbage.display().to_string())
            && err.to_string().contains("BEGIN CERTIFICATE"),
        "{err}"
    );
    let err = TlsIdentity::from_pem_files(&cert, &garbage).unwrap_err();
    assert!(
        err.to_string().contains(&garbage.display().to_string()) && err.to_string().contains("PRIVATE KEY"),
        "{err}"
    );
    // The certificate file as the key: PEM, but no key in it.
    let err = TlsIdentity::from_pem_files(&cert, &cert).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Pem {
                what: "private key",
                ..
            }
        ),
        "{err:?}"
    );
    let err = TlsIdentity::from_pem_files(&cert, &other_key).unwrap_err();
    assert!(matches!(err, TlsError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&other_key.display().to_string())
            && err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn fingerprint_text_from_the_server_parses_back() {
    let (server, fingerprint) = https_server(ServerConfig::default()).await;
    let printed = server.tls_fingerprint().unwrap().to_string();
    assert_eq!(printed.parse::<Fingerprint>().unwrap(), fingerprint);
    let client = SignalingClient::new(&server.url())
        .unwrap()
        .with_fingerprint(printed.parse().unwrap());
    bounded("health", client.health()).await.unwrap();
    server.shutdown().await;
}
