//! The `relay` command's failure paths: every one is a single clear line
//! on stderr and a non-zero exit, never a hang or a panic.

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Guard, RELAY, free_udp_addr};

/// Runs `relay args` to completion (bounded) and returns (exit ok, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let mut child = Guard(
        Command::new(RELAY)
            .args(args)
            .env_remove("RELAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            child
                .0
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .ok();
            child
                .0
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .ok();
            return (status.success(), out, err);
        }
        assert!(
            Instant::now() < deadline,
            "relay {args:?} did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

/// Starts `relay answer` towards a throwaway `--out`.
fn answer(extra: &[&str]) -> (Guard, String) {
    common::answer(&free_udp_addr(), extra)
}

#[test]
fn transports_lists_compiled_backends_with_modes() {
    let (ok, out, _) = run(&["transports"]);
    assert!(ok);
    assert!(out.lines().any(|l| l == "rtp-udp unreliable"), "{out}");
}

#[test]
fn unknown_transport_names_the_known_ones() {
    let (ok, _, err) = run(&[
        "offer",
        "--signal",
        "http://127.0.0.1:9",
        "--transport",
        "sctp",
        "--in",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown transport \"sctp\""), "{err}");
    assert!(err.contains("rtp-udp"), "{err}");
}

#[test]
fn wrong_mode_for_the_transport_is_refused() {
    let (ok, _, err) = run(&[
        "offer",
        "--signal",
        "http://127.0.0.1:9",
        "--transport",
        "rtp-udp",
        "--mode",
        "stream",
        "--in",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert_eq!(
        last_line(&err),
        "relay: transport rtp-udp has no mode stream; its modes: unreliable, srtp, repair, srtp-repair"
    );
}

#[test]
fn unreachable_signaling_is_one_clear_line() {
    // A port nobody listens on: bind, read it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (ok, _, err) = run(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        "rtp-udp",
        "--in",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    let line = last_line(&err);
    assert!(line.starts_with("relay: "), "{err}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("refused") || line.contains("reach"), "{line}");
}

#[test]
fn wrong_token_tells_the_operator_to_pass_one() {
    let (_answer, url) = answer(&["--token", "s3cret"]);
    let (ok, _, err) = run(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        "rtp-udp",
        "--in",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    let line = last_line(&err);
    assert!(line.contains("401") && line.contains("--token"), "{line}");
    let (ok, _, err) = run(&[
        "offer",
        "--signal",
        &url,
        "--transport",
        "rtp-udp",
        "--in",
        "127.0.0.1:0",
        "--token",
        "wrong",
    ]);
    assert!(!ok);
    assert!(last_line(&err).contains("401"), "{err}");
}

#[test]
fn input_address_in_use_is_reported() {
    let (_answer, url) = answer(&[]);
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, err) = run(&["offer", "--signal", &url, "--transport", "rtp-udp", "--in", &addr]);
    assert!(!ok);
    let line = last_line(&err);
    assert!(
        line.contains(&format!(
            "cannot listen on --in: cannot open the RTP socket {addr}"
        )),
        "{line}"
    );
}

#[test]
fn signaling_address_in_use_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, err) = run(&["answer", "--signal-listen", &addr, "--out", "127.0.0.1:5006"]);
    assert!(!ok);
    let line = last_line(&err);
    assert!(line.starts_with("relay: ") && line.contains(&addr), "{line}");
}

#[test]
fn bad_liveness_timeout_is_refused() {
    let (ok, _, err) = run(&[
        "answer",
        "--signal-listen",
        "127.0.0.1:0",
        "--out",
        "127.0.0.1:5006",
        "--liveness-timeout",
        "0",
    ]);
    assert!(!ok);
    assert!(last_line(&err).contains("--liveness-timeout"), "{err}");
}

#[test]
fn a_reorder_window_past_the_budget_is_refused() {
    let (ok, _, err) = run(&[
        "answer",
        "--signal-listen",
        "127.0.0.1:0",
        "--out",
        "127.0.0.1:5006",
        "--max-delay",
        "100ms",
        "--reorder-window",
        "150ms",
    ]);
    assert!(!ok);
    assert!(
        last_line(&err).contains("--reorder-window 150 ms must be below --max-delay 100 ms"),
        "{err}"
    );
}

#[test]
fn bad_media_ports_and_advertise_are_refused_by_name() {
    for (flag, value, says) in [
        ("--media-ports", "40100-40000", "low to high"),
        ("--media-ports", "forty", "like 40000-40099"),
        ("--advertise", "203.0.113.7:0", "IP or IP:PORT"),
        ("--advertise", "relay.example", "IP or IP:PORT"),
    ] {
        let (ok, _, err) = run(&[
            "answer",
            "--signal-listen",
            "127.0.0.1:0",
            "--out",
            "127.0.0.1:5006",
            flag,
            value,
        ]);
        assert!(!ok, "{flag} {value}");
        assert!(err.contains(flag) && err.contains(says), "{flag} {value}: {err}");
    }
}

/// The raw response to `request` (a whole HTTP/1.1 request) at `url`.
fn http_raw(url: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect signaling");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

#[test]
fn cors_origin_lets_that_page_signal_and_refuses_others() {
    let (_answer, url) = answer(&["--cors-origin", "https://app.example"]);
    let host = url.trim_start_matches("http://");
    let preflight = |origin: &str| {
        http_raw(
            &url,
            &format!(
                "OPTIONS /v1/sessions HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let allowed = preflight("https://app.example").to_ascii_lowercase();
    assert!(allowed.starts_with("http/1.1 204"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://app.example"),
        "{allowed}"
    );
    assert!(allowed.contains("authorization"), "{allowed}");
    let refused = preflight("https://evil.example");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // A "simple" cross-origin POST from elsewhere: refused, and no session left behind.
    let body = r#"{"type":"offer","sdp":"v=0"}"#;
    let post = http_raw(
        &url,
        &format!(
            "POST /v1/sessions HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(post.starts_with("HTTP/1.1 403"), "{post}");
    let sessions = common::http_get_body(&url, "/v1/sessions");
    assert!(!sessions.contains("\"id\""), "{sessions}");
}
