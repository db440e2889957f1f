//! [`LinkStats`]: the serialisable snapshot of one link, with durations in
//! seconds.

use std::time::Duration;

use super::{Drops, RepairStats, SsrcReceived, SsrcSent};
use crate::{Mode, Transport};

/// A point-in-time view of one link, as `GET /v1/sessions/{id}/stats`
/// returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    /// The transport carrying the link.
    pub transport: Transport,
    /// Its delivery mode.
    pub mode: Mode,
    /// Packets handed to the transport (RTP and RTCP). For every packet
    /// the application offers, exactly one of `packets_sent`,
    /// `drops.send_queue_full`, `drops.too_large`, `drops.expired` (past
    /// the latency budget) or (srtp) `drops.unauthenticated` counts it.
    pub packets_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Packets delivered by the transport (before the receive queue).
    pub packets_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// RTCP packets among `packets_sent`.
    pub rtcp_sent: u64,
    /// RTCP packets among `packets_received`.
    pub rtcp_received: u64,
    /// Packets the relay dropped, by cause.
    pub drops: Drops,
    /// Round-trip time, where the transport measures one (JSON
    /// `rtt_seconds`).
    #[serde(rename = "rtt_seconds", with = "opt_seconds")]
    pub rtt: Option<Duration>,
    /// Time from starting to establish the link to it being ready (JSON
    /// `setup_time_seconds`).
    #[serde(rename = "setup_time_seconds", with = "opt_seconds")]
    pub setup_time: Option<Duration>,
    /// Time since the link was created (JSON `uptime_seconds`).
    #[serde(rename = "uptime_seconds", with = "opt_seconds")]
    pub uptime: Option<Duration>,
    /// Per-SSRC send counters, sorted by SSRC.
    pub sent_ssrcs: Vec<SsrcSent>,
    /// Per-SSRC reception statistics, sorted by SSRC.
    pub received_ssrcs: Vec<SsrcReceived>,
    /// SSRCs forgotten (both directions) because more than the cap
    /// ([`DEFAULT_SSRC_CAP`](crate::DEFAULT_SSRC_CAP) per direction) were
    /// seen: a sender cycling SSRCs cannot grow a link's state.
    #[serde(default)]
    pub ssrcs_evicted: u64,
    /// Times the peer's address changed under the link: a latch to a
    /// NAT's mapping, a rebinding, a QUIC path migration.
    #[serde(default)]
    pub peer_address_changes: u64,
    /// The hop's own loss repair (NACK and retransmission within the
    /// latency budget), on links that repair; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairStats>,
}

/// `Option<Duration>` as seconds (`f64`) or `null`.
mod opt_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let seconds = Option::<f64>::deserialize(d)?;
        Ok(seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }
}
