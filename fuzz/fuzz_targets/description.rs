//! Every session-description parser a signaling POST body reaches.
//!
//! The same input goes through each of them, so the corpus can hold
//! envelopes, bare descriptions, SDP and fingerprints side by side:
//!
//! - JSON: `OfferRequest` (the `POST /v1/sessions` envelope), then its
//!   `offer` as the backend for its transport reads it; and the input on
//!   its own as each per-transport type (`RtpUdpDescription`, `QuicOffer`,
//!   `QuicAnswer`, `W3cDescription`, `SrtpParameters`). Whatever parses
//!   must serialise and parse back to the same value.
//! - The second-level parses the backends do on those fields:
//!   `MasterKey::from_signaled` (rtp-udp srtp), `Fingerprint::from_str`
//!   (quic), and the SDP parse dc-relay runs on a remote description
//!   (`RTCSessionDescription::offer` / `::answer` from `rtc`).
//! - The raw input as a fingerprint and as SDP text.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use quic_relay::Fingerprint;
use relay_core::{
    OfferRequest, QuicAnswer, QuicOffer, RtpUdpDescription, SdpType, SrtpParameters, Transport,
    W3cDescription,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtp_udp_relay::srtp::MasterKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = round_trip::<OfferRequest>(data) {
        offer_as_backend_reads_it(&req);
    }
    if let Some(d) = round_trip::<RtpUdpDescription>(data) {
        rtp_udp(&d);
    }
    if let Some(o) = round_trip::<QuicOffer>(data) {
        fingerprint(&o.fingerprint);
    }
    if let Some(a) = round_trip::<QuicAnswer>(data) {
        fingerprint(&a.fingerprint);
    }
    if let Some(w) = round_trip::<W3cDescription>(data) {
        sdp(w.kind, &w.sdp);
    }
    if let Some(p) = round_trip::<SrtpParameters>(data) {
        srtp_key(&p);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        fingerprint(text);
        sdp(SdpType::Offer, text);
        sdp(SdpType::Answer, text);
    }
});

/// Parses `data` as `T`; what parses must survive serialise → parse.
fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + SameAs + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(data).ok()?;
    let text = serde_json::to_string(&value).expect("a parsed description serialises");
    let back: T = serde_json::from_str(&text).expect("a serialised description parses");
    assert!(
        back.same_as(&value),
        "description changed in a JSON round trip: {text}\n{value:?}\n{back:?}"
    );
    Some(value)
}

/// Equality after a JSON round trip.
trait SameAs {
    fn same_as(&self, other: &Self) -> bool;
}

macro_rules! same_as_eq {
    ($($t:ty),*) => {$(
        impl SameAs for $t {
            fn same_as(&self, other: &Self) -> bool {
                self == other
            }
        }
    )*};
}
same_as_eq!(
    RtpUdpDescription,
    QuicOffer,
    QuicAnswer,
    W3cDescription,
    SrtpParameters
);

/// The `offer` is opaque JSON the backend reads later. serde_json (without
/// its `float_roundtrip` feature, as the workspace builds it) may parse a
/// float one ULP away from the exact value, so a float that came back
/// differently is the same if it is within a few ULPs; every other value
/// must be identical.
impl SameAs for OfferRequest {
    fn same_as(&self, other: &Self) -> bool {
        self.transport == other.transport && self.mode == other.mode && same_json(&self.offer, &other.offer)
    }
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The `offer` inside an envelope, read as the backend for its transport
/// reads it (`serde_json::from_value` into its description type).
fn offer_as_backend_reads_it(req: &OfferRequest) {
    match req.transport {
        Transport::RtpUdp => {
            if let Ok(d) = serde_json::from_value::<RtpUdpDescription>(req.offer.clone()) {
                rtp_udp(&d);
            }
        }
        Transport::Quic => {
            if let Ok(o) = serde_json::from_value::<QuicOffer>(req.offer.clone()) {
                fingerprint(&o.fingerprint);
            }
        }
        Transport::Dc => {
            if let Ok(w) = serde_json::from_value::<W3cDescription>(req.offer.clone()) {
                sdp(w.kind, &w.sdp);
            }
        }
    }
}

fn rtp_udp(d: &RtpUdpDescription) {
    if let Some(p) = &d.srtp {
        srtp_key(p);
    }
}

/// `MasterKey::from_signaled`: what it accepts, it signals back identically.
fn srtp_key(p: &SrtpParameters) {
    if let Ok(key) = MasterKey::from_signaled(&p.suite, &p.key) {
        let again = MasterKey::from_signaled(&p.suite, &key.to_base64()).expect("own key parses");
        assert_eq!(again, key);
    }
}

/// `Fingerprint::from_str`: what it accepts prints in canonical form and
/// parses back to the same fingerprint, and ended in 32 colon-separated
/// pairs of hex digits (RFC 8122 section 5), whatever came before them
/// (`sha-256 `, or the other prefixes the parser takes for operators).
fn fingerprint(text: &str) {
    if let Ok(fp) = Fingerprint::from_str(text) {
        let canonical = fp.to_string();
        assert_eq!(
            Fingerprint::from_str(&canonical).expect("canonical form parses"),
            fp
        );
        assert_eq!(canonical.len(), "sha-256 ".len() + 32 * 3 - 1);
        let hex = text
            .trim()
            .rsplit(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or_default();
        let pairs: Vec<&str> = hex.split(':').collect();
        assert_eq!(pairs.len(), 32, "accepted {text:?}");
        for pair in pairs {
            // fuzz/regressions/description/fingerprint-plus-sign: "+A" used
            // to pass as 0A (`u8::from_str_radix` takes a sign).
            assert!(
                pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()),
                "accepted non-hex fingerprint byte {pair:?} in {text:?}"
            );
        }
    }
}

/// The SDP parse dc-relay does on a remote description before it touches
/// the peer connection (`DcAnswerer::bind`, `DcOfferer::connect`).
fn sdp(kind: SdpType, text: &str) {
    let _ = match kind {
        SdpType::Offer => RTCSessionDescription::offer(text.to_owned()),
        SdpType::Answer => RTCSessionDescription::answer(text.to_owned()),
    };
}
