//! What a `POST /v1/sessions` body means: either the [`OfferRequest`]
//! envelope or a bare W3C offer. Pure: bytes in, a parsed offer or a
//! message for the offerer out.
//!
//! [`OfferRequest`]: relay_core::OfferRequest

use relay_core::{Mode, SdpType, Transport, W3cDescription};
use serde_json::Value;

/// An offer the server can hand to an [`Answerer`](crate::Answerer).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedOffer {
    pub transport: Transport,
    pub mode: Mode,
    pub offer: Value,
    /// The body was a bare W3C offer: answer with the bare answer.
    pub bare_w3c: bool,
}

/// Parses a `POST /v1/sessions` body for a server that answers `served`.
/// The error is the message for the `400` body.
pub(crate) fn parse_offer(body: &[u8], served: &[Transport]) -> Result<ParsedOffer, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("request body must be a JSON object".into());
    };

    if !fields.contains_key("transport") {
        if !(fields.contains_key("type") && fields.contains_key("sdp")) {
            return Err(format!(
                "missing field \"transport\" (this server answers: {}); \
                 or post a bare W3C offer {{\"type\":\"offer\",\"sdp\":\"...\"}}",
                names(served)
            ));
        }
        // A bare W3C description, as pion, aiortc and browsers post it:
        // a data-channel offer (DESIGN.md, "Signaling").
        let whole = Value::Object(fields);
        let desc: W3cDescription = serde_json::from_value(whole.clone())
            .map_err(|e| format!("not a W3C session description: {e}"))?;
        if desc.kind != SdpType::Offer {
            return Err("expected a W3C offer (\"type\":\"offer\"), got an answer".into());
        }
        if !served.contains(&Transport::Dc) {
            return Err(format!(
                "a bare W3C offer is a dc offer, but transport dc is not available here; \
                 this server answers: {}",
                names(served)
            ));
        }
        return Ok(ParsedOffer {
            transport: Transport::Dc,
            mode: Transport::Dc.default_mode(),
            offer: whole,
            bare_w3c: true,
        });
    }

    let transport = match fields.get("transport") {
        Some(Value::String(name)) => name.parse::<Transport>().map_err(|_| {
            format!(
                "unknown transport {name:?}; this server answers: {}",
                names(served)
            )
        })?,
        _ => {
            return Err(format!(
                "\"transport\" must be a string, one of: {}",
                names(served)
            ));
        }
    };
    if !served.contains(&transport) {
        return Err(format!(
            "transport {transport} is not available here; this server answers: {}",
            names(served)
        ));
    }

    let mode = match fields.get("mode") {
        None | Some(Value::Null) => transport.default_mode(),
        Some(Value::String(name)) => {
            let mode = name.parse::<Mode>().map_err(|_| {
                format!(
                    "unknown mode {name:?}; {transport} supports: {}",
                    names(transport.modes())
                )
            })?;
            if !transport.modes().contains(&mode) {
                return Err(format!(
                    "mode {mode} is not valid for {transport}; {transport} supports: {}",
                    names(transport.modes())
                ));
            }
            mode
        }
        Some(_) => {
            return Err(format!(
                "\"mode\" must be a string; {transport} supports: {}",
                names(transport.modes())
            ));
        }
    };

    let offer = match fields.remove("offer") {
        None | Some(Value::Null) => return Err(format!("missing field \"offer\" (the {transport} offer)")),
        Some(offer) => offer,
    };

    Ok(ParsedOffer {
        transport,
        mode,
        offer,
        bare_w3c: false,
    })
}

/// `"dc, rtp-udp"`, or `"(none)"`.
pub(crate) fn names<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Transport] = &Transport::ALL;

    fn parse(body: Value, served: &[Transport]) -> Result<ParsedOffer, String> {
        parse_offer(body.to_string().as_bytes(), served)
    }

    #[test]
    fn envelope_with_and_without_mode() {
        let p = parse(json!({"transport":"quic","mode":"stream","offer":{"x":1}}), ALL).unwrap();
        assert_eq!(
            (p.transport, p.mode, p.bare_w3c),
            (Transport::Quic, Mode::Stream, false)
        );
        assert_eq!(p.offer, json!({"x":1}));

        let p = parse(json!({"transport":"quic","offer":{}}), ALL).unwrap();
        assert_eq!(p.mode, Transport::Quic.default_mode());
        let p = parse(json!({"transport":"rtp-udp","mode":null,"offer":{}}), ALL).unwrap();
        assert_eq!(p.mode, Mode::Unreliable);
    }

    #[test]
    fn bare_w3c_offer_is_a_dc_offer_passed_whole() {
        let body = json!({"type":"offer","sdp":"v=0\r\n"});
        let p = parse(body.clone(), ALL).unwrap();
        assert_eq!(p.transport, Transport::Dc);
        assert_eq!(p.mode, Transport::Dc.default_mode());
        assert!(p.bare_w3c);
        assert_eq!(p.offer, body);
    }

    #[test]
    fn bare_w3c_rejections_name_what_is_served() {
        let e = parse(json!({"type":"offer","sdp":"v=0"}), &[Transport::RtpUdp]).unwrap_err();
        assert!(
            e.contains("dc is not available") && e.ends_with("answers: rtp-udp"),
            "{e}"
        );
        let e = parse(json!({"type":"answer","sdp":"v=0"}), ALL).unwrap_err();
        assert!(e.contains("expected a W3C offer"), "{e}");
        let e = parse(json!({"type":"pranswer","sdp":"v=0"}), ALL).unwrap_err();
        assert!(e.contains("not a W3C session description"), "{e}");
        let e = parse(json!({"type":"offer","sdp":5}), ALL).unwrap_err();
        assert!(e.contains("not a W3C session description"), "{e}");
    }

    #[test]
    fn malformed_bodies() {
        for (body, want) in [
            (&b"{"[..], "not valid JSON"),
            (b"", "not valid JSON"),
            (b"\xff\xfe", "not valid JSON"),
            (b"[1,2]", "must be a JSON object"),
            (b"\"dc\"", "must be a JSON object"),
            (b"{}", "missing field \"transport\""),
            (br#"{"transport":"dc"}"#, "missing field \"offer\""),
            (br#"{"transport":"dc","offer":null}"#, "missing field \"offer\""),
            (br#"{"transport":7,"offer":{}}"#, "\"transport\" must be a string"),
            (
                br#"{"transport":"dc","mode":1,"offer":{}}"#,
                "\"mode\" must be a string",
            ),
        ] {
            let e = parse_offer(body, ALL).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn transport_and_mode_rejections_name_the_supported_ones() {
        let served = [Transport::Dc, Transport::RtpUdp];
        let e = parse(json!({"transport":"sctp","offer":{}}), &served).unwrap_err();
        assert_eq!(e, "unknown transport \"sctp\"; this server answers: dc, rtp-udp");
        let e = parse(json!({"transport":"quic","offer":{}}), &[Transport::RtpUdp]).unwrap_err();
        assert_eq!(
            e,
            "transport quic is not available here; this server answers: rtp-udp"
        );
        let e = parse(json!({"transport":"quic","offer":{}}), &[]).unwrap_err();
        assert!(e.ends_with("answers: (none)"), "{e}");
        let e = parse(json!({"transport":"quic","mode":"fast","offer":{}}), ALL).unwrap_err();
        assert_eq!(
            e,
            "unknown mode \"fast\"; quic supports: datagram, stream, repair"
        );
        let e = parse(json!({"transport":"quic","mode":"reliable","offer":{}}), ALL).unwrap_err();
        assert_eq!(
            e,
            "mode reliable is not valid for quic; quic supports: datagram, stream, repair"
        );
    }
}
