//! The signaling server's request path, end to end: the input is the whole
//! client side of one HTTP/1.1 connection, run through hyper, the router,
//! the token check, the offer parser and the session registry by
//! `relay_signaling::__fuzz::request` (an in-memory pipe, a fresh server
//! with token `t` and an rtp-udp answerer per call).
//!
//! A panic anywhere on that path aborts (libfuzzer-sys's panic hook sees
//! panics in spawned tasks too). The first response must not be a server
//! error: with fresh state, nothing a client sends is the server's fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(status) = relay_signaling::__fuzz::request(data) {
        assert!(
            (200..500).contains(&status),
            "first response was {status} for {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
