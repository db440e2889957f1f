//! Certificates as operators have them, through the `relay` command:
//!
//! - an answerer with a CA-signed certificate is trusted by an offerer
//!   that gives no fingerprint, through the system's root store (here the
//!   test's own CA, named by `SSL_CERT_FILE` as OpenSSL and
//!   rustls-native-certs read it), and refused, with what to do, when the
//!   store does not hold that CA;
//! - `--signal-self-signed PATH` keeps its identity in a file, so a
//!   restarted answerer prints the same fingerprint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

mod common;

use common::{Guard, RELAY, field, first_line, free_udp_addr, spawn};

/// A directory of the test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sfu-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and a certificate for 127.0.0.1 it signed: writes ca.pem,
/// cert.pem and key.pem into `dir`.
fn ca_signed(dir: &Dir) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sfu-relay test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.file("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.file("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.file("key.pem"), key.serialize_pem()).unwrap();
}

/// `relay offer` to `url` with SSL_CERT_FILE set (or not): its first
/// stdout line, or its stderr if it exits first.
fn offer_with(url: &str, cert_file: Option<&Path>) -> Result<String, String> {
    let mut command = Command::new(RELAY);
    command
        .args([
            "offer",
            "--signal",
            url,
            "--transport",
            "rtp-udp",
            "--in",
            &free_udp_addr(),
        ])
        .env_remove("RELAY_TOKEN")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match cert_file {
        Some(f) => command.env("SSL_CERT_FILE", f),
        None => command.env_remove("SSL_CERT_FILE"),
    };
    let mut child = Guard(command.spawn().expect("spawn relay offer"));
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let line = first_line(&mut out);
    if line.starts_with("ready ") {
        return Ok(line);
    }
    child.wait_exit(Duration::from_secs(30));
    let mut err = String::new();
    use std::io::Read;
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    Err(err)
}

#[test]
fn a_ca_signed_answerer_needs_no_fingerprint_when_the_root_store_has_its_ca() {
    let dir = Dir::new("ca");
    ca_signed(&dir);
    let (cert, key) = (dir.file("cert.pem"), dir.file("key.pem"));
    let (_answerer, mut out) = spawn(&[
        "answer",
        "--signal-listen",
        "127.0.0.1:0",
        "--out",
        &free_udp_addr(),
        "--no-token",
        "--signal-cert",
        cert.to_str().unwrap(),
        "--signal-key",
        key.to_str().unwrap(),
    ]);
    let url = field(&first_line(&mut out), "signal").to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let ready = offer_with(&url, Some(&dir.file("ca.pem"))).expect("trusted through SSL_CERT_FILE");
    assert!(ready.contains("transport=rtp-udp"), "{ready}");

    // An empty store (a bundle without our CA): refused, saying why and
    // what to do instead.
    let other = Dir::new("other-ca");
    ca_signed(&other);
    let err = offer_with(&url, Some(&other.file("ca.pem"))).expect_err("an unknown CA");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("root store") && last.contains("--signal-fingerprint"),
        "{err}"
    );
}

#[test]
fn a_kept_self_signed_identity_keeps_its_fingerprint_across_restarts() {
    let dir = Dir::new("kept");
    let path = dir.file("identity.pem");
    // An answering relay with a generated identity, kept at `path` if
    // given; its child and the fingerprint it prints.
    let start = |path: Option<&std::path::Path>| {
        let out_addr = free_udp_addr();
        let mut args = vec![
            "answer",
            "--signal-listen",
            "127.0.0.1:0",
            "--out",
            &out_addr,
            "--no-token",
            "--signal-self-signed",
        ];
        args.extend(path.map(|p| p.to_str().unwrap()));
        let (child, mut out) = spawn(&args);
        let line = first_line(&mut out);
        (child, field(&line, "signal_fingerprint").to_string())
    };
    let (first, fingerprint) = start(Some(&path));
    drop(first);
    assert!(path.exists(), "the identity was written");
    let (_second, again) = start(Some(&path));
    assert_eq!(fingerprint, again);
    // Without a PATH every start is a new identity.
    let (_fresh, fresh) = start(None);
    assert_ne!(fresh, fingerprint);
}
