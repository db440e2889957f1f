//! What the `relay` command logs, and what it keeps out of an operator's
//! way.
//!
//! The WebRTC stack under the data channel (`rtc` and its `rtc_*` crates)
//! logs at WARN what is routine for a relay, and repeats some messages every
//! few hundred milliseconds. Unless `RELAY_LOG` asks for something else,
//! [`Quiet`] drops the messages listed in [`BENIGN`] (each with why it is
//! harmless here) and shows any other message from the stack at most once per
//! [`REPEAT_WINDOW`] from the same place. The relay's own messages are never
//! held back.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How often one message from the same place in the WebRTC stack is shown.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Messages of the WebRTC stack that say nothing an operator can act on:
/// (target, start of the message, why it is harmless).
pub const BENIGN: &[(&str, &str, &str)] = &[
    (
        "rtc_dtls::config",
        "conn.remote_addr is empty",
        "DTLS in WebRTC checks the peer's certificate against the fingerprint \
         in its description; the server name it falls back to is never used",
    ),
    (
        "rtc::peer_connection::handler",
        "DtlsHandler.handle_write got error: invalid remote address: 127.0.0.1:65535",
        "rtc keys its one DTLS connection by the placeholder address \
         127.0.0.1:65535; when the far end closes a link (an SCTP ABORT, \
         then DTLS close_notify), this end's SCTP still answers, after the \
         DTLS connection is gone, and rtc drops that answer: nothing is lost \
         that the closed link could have carried",
    ),
];

/// Whether `target` belongs to the WebRTC stack.
fn is_webrtc_stack(target: &str) -> bool {
    target == "rtc" || target.starts_with("rtc::") || target.starts_with("rtc_")
}

/// Most distinct messages [`Quiet`] remembers before it starts over.
const REMEMBERED: usize = 1024;

/// A layer that keeps the WebRTC stack's known-benign and repeated
/// messages out of the log (see the [module](self) docs).
#[derive(Debug, Default)]
pub struct Quiet {
    /// When each message of the stack (by target and text) was last shown.
    shown: Mutex<HashMap<(String, String), Instant>>,
}

impl Quiet {
    /// Whether a message of the stack from `target` is shown at `now`.
    fn admit(&self, target: &str, message: &str, now: Instant) -> bool {
        if BENIGN
            .iter()
            .any(|(t, start, _)| *t == target && message.starts_with(start))
        {
            return false;
        }
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target.to_string(), message.to_string());
        match shown.get(&key) {
            Some(last) if now.saturating_duration_since(*last) < REPEAT_WINDOW => false,
            _ => {
                if shown.len() >= REMEMBERED {
                    shown.clear();
                }
                shown.insert(key, now);
                true
            }
        }
    }
}

/// An event's message and, for a `log` record (the stack logs through
/// the `log` crate, bridged into tracing), the record's own target.
#[derive(Default)]
struct Message {
    text: String,
    log_target: Option<String>,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.text.push_str(value),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Quiet {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        let bridged = metadata.target() == "log";
        if !bridged && !is_webrtc_stack(metadata.target()) {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let target = message.log_target.as_deref().unwrap_or(metadata.target());
        if !is_webrtc_stack(target) {
            return true;
        }
        self.admit(target, &message.text, Instant::now())
    }
}

/// Installs the `relay` command's logger on stderr: `RELAY_LOG` (an
/// `EnvFilter` directive such as `debug` or `relay=debug,rtc_sctp=trace`)
/// when set, showing everything it admits; otherwise `default_level`,
/// with the WebRTC stack kept [`Quiet`].
pub fn init(default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let from_env = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG").ok();
    let quiet = from_env.is_none().then(Quiet::default);
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(filter)
        .with(quiet)
        .with(fmt)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_benign_messages_are_dropped_and_repeats_held_back() {
        let quiet = Quiet::default();
        let now = Instant::now();
        let (target, message, _) = BENIGN[1];
        assert!(!quiet.admit(target, message, now));
        assert!(
            !quiet.admit(target, message, now + REPEAT_WINDOW * 2),
            "never shown"
        );
        // The same words from another part of the stack are not benign.
        assert!(quiet.admit("rtc_ice::agent", message, now));
        // A repeated message: once per window.
        let ping = "pingAllCandidates called with no candidate pairs";
        assert!(quiet.admit("rtc_ice::agent", ping, now));
        assert!(!quiet.admit("rtc_ice::agent", ping, now + Duration::from_millis(200)));
        assert!(quiet.admit("rtc_ice::agent::other", ping, now), "another place");
        assert!(quiet.admit("rtc_ice::agent", ping, now + REPEAT_WINDOW));
    }

    #[test]
    fn only_the_webrtc_stack_is_quieted() {
        assert!(is_webrtc_stack("rtc"));
        assert!(is_webrtc_stack("rtc::peer_connection::handler"));
        assert!(is_webrtc_stack("rtc_sctp::association"));
        assert!(!is_webrtc_stack("relay"));
        assert!(!is_webrtc_stack("rtcp_something"));
        assert!(!is_webrtc_stack("dc_relay::driver"));
    }
}
