//! Session descriptions: what the signaling exchange carries for each
//! transport (DESIGN.md, "Signaling").
//!
//! The envelope is transport-neutral ([`OfferRequest`] / [`OfferResponse`]);
//! the `offer` and `answer` inside are one of the per-transport types below,
//! parsed by the backend that owns them.

use std::net::SocketAddr;

use crate::{Mode, Transport};

/// Body of `POST /v1/sessions`.
///
/// ```
/// use relay_core::{Mode, OfferRequest, Transport};
/// let req: OfferRequest = serde_json::from_str(
///     r#"{"transport":"rtp-udp","mode":"unreliable","offer":{"addr":"127.0.0.1:5004"}}"#,
/// ).unwrap();
/// assert_eq!(req.transport, Transport::RtpUdp);
/// assert_eq!(req.mode, Some(Mode::Unreliable));
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OfferRequest {
    /// Which backend answers.
    pub transport: Transport,
    /// Delivery mode; the transport's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The transport's offer ([`RtpUdpDescription`], [`QuicOffer`],
    /// [`W3cDescription`]).
    pub offer: serde_json::Value,
}

/// Body of the `201 Created` answer to an [`OfferRequest`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OfferResponse {
    /// Session id; also in the `Location` header.
    pub id: String,
    /// The transport's answer.
    pub answer: serde_json::Value,
}

/// rtp-udp offer and answer: where this side receives, and the SSRCs it
/// intends to send (informational; the relay forwards every SSRC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtpUdpDescription {
    /// The address this side sends from and receives on (one socket, RTCP-mux).
    pub addr: SocketAddr,
    /// SSRCs this side will send, if known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssrcs: Vec<u32>,
    /// In `srtp` mode: the master key this side protects its media with
    /// (the peer unprotects with it), as SDES and mediasoup's PipeTransport
    /// `srtpParameters` carry it. The key travels in signaling, so
    /// signaling must itself be confidential (HTTPS or a trusted network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpParameters>,
}

/// SRTP master key and suite in an [`RtpUdpDescription`].
///
/// ```
/// let p: relay_core::SrtpParameters =
///     serde_json::from_str(r#"{"suite":"AEAD_AES_128_GCM","key":"AAEC"}"#).unwrap();
/// assert_eq!(p.suite, "AEAD_AES_128_GCM");
/// assert!(!format!("{p:?}").contains("AAEC"), "Debug never shows the key");
/// ```
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrtpParameters {
    /// Crypto suite; `"AEAD_AES_128_GCM"` (RFC 7714) is the one supported.
    pub suite: String,
    /// Base64 of master key || master salt (16 + 12 bytes for AES-128-GCM).
    pub key: String,
}

/// Redacts the key, so a logged description never leaks it.
impl std::fmt::Debug for SrtpParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpParameters")
            .field("suite", &self.suite)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// quic offer: the offerer's certificate fingerprint, which the answerer pins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuicOffer {
    /// SHA-256 fingerprint of the offerer's certificate, SDP style
    /// (`"sha-256 AB:CD:…"`).
    pub fingerprint: String,
    /// ALPN the offerer will ask for.
    pub alpn: String,
}

/// quic answer: where to connect and which certificate to expect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuicAnswer {
    /// The answerer's UDP address.
    pub addr: SocketAddr,
    /// ALPN the answerer accepts.
    pub alpn: String,
    /// SHA-256 fingerprint of the answerer's certificate.
    pub fingerprint: String,
}

/// `"offer"` or `"answer"` in a W3C session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// The W3C `RTCSessionDescriptionInit` JSON used by pion, aiortc and
/// browsers: `{"type":"offer","sdp":"v=0…"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct W3cDescription {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
}
