//! What the driver does with the connection's events: the relayed channel
//! opening (and the relay mode its type maps to), ICE and connection state
//! changes that close the link, the selected pair's peer address, and the
//! RTT sample.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay_core::{CloseReason, Mode};
use rtc::data_channel::RTCDataChannelId;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::{Driver, Role};
use crate::DcError;
use crate::link::{Channel, lock};

impl Driver {
    pub(super) fn on_event(&mut self, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => self.on_open(id, now),
            RTCPeerConnectionEvent::OnDataChannel(
                RTCDataChannelEvent::OnClose(id) | RTCDataChannelEvent::OnClosing(id),
            ) if self.dc == Some(id) => {
                self.shared.shutdown(CloseReason::PeerClosed);
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                *lock(&self.shared.ice_state) = state.to_string();
                match state {
                    RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed => {
                        let reason = if self.dc.is_some() {
                            CloseReason::LivenessTimeout(self.config.liveness_timeout)
                        } else {
                            CloseReason::Transport(format!("ICE {state} before the channel opened"))
                        };
                        self.shared.shutdown(reason);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Failed) => {
                self.shared.shutdown(CloseReason::Transport(
                    "peer connection failed (DTLS or ICE)".into(),
                ));
            }
            _ => {}
        }
    }

    fn on_open(&mut self, id: RTCDataChannelId, now: Instant) {
        if self.dc.is_some() {
            tracing::warn!(
                channel = id,
                "peer opened a second data channel; relaying only the first"
            );
            return;
        }
        match self.role {
            Role::Offerer(ours) if ours != id => return,
            Role::Offerer(_) => {}
            Role::Answerer => {
                let Some(dc) = self.pc.data_channel(id) else {
                    return;
                };
                let (label, ordered, max_retransmits, max_packet_life_time) = (
                    dc.label().to_string(),
                    dc.ordered(),
                    dc.max_retransmits(),
                    dc.max_packet_life_time(),
                );
                let Some(mode) = mode_of(ordered, max_retransmits, max_packet_life_time) else {
                    self.shared.fail(DcError::UnsupportedChannel {
                        label,
                        ordered,
                        max_retransmits,
                        max_packet_life_time,
                    });
                    return;
                };
                tracing::debug!(%label, %mode, "peer opened data channel");
                let _ = self.shared.channel.set(Channel::new(
                    mode,
                    self.config.send_queue,
                    self.config.receive_queue,
                    self.config.clock_rates.clone(),
                ));
            }
        }
        self.dc = Some(id);
        if let Some(peer_accepts) = self.pc.sctp().and_then(|sctp| sctp.max_message_size()) {
            self.shared.limit_packet_size(peer_accepts as usize);
        }
        self.lock_peer();
        if let Some(ch) = self.shared.channel.get() {
            ch.stats
                .set_setup_time(now.saturating_duration_since(self.started));
        }
        self.shared.ready.send_replace(true);
    }

    /// Learns the remote address of the selected ICE pair, after which
    /// [`verdict`](super::socket::verdict) drops datagrams from anywhere else.
    fn lock_peer(&mut self) {
        if self.peer.is_some() {
            return;
        }
        let pair = self
            .pc
            .sctp()
            .and_then(|sctp| sctp.transport().ice_transport().get_selected_candidate_pair());
        self.peer = pair.and_then(|p| {
            let remote = p.remote();
            let ip: std::net::IpAddr = remote.address.parse().ok()?;
            Some(SocketAddr::new(ip, remote.port))
        });
        match self.peer {
            Some(peer) => tracing::debug!(%peer, "hearing only the selected ICE pair's remote address"),
            None => tracing::warn!(
                "the selected ICE pair's remote address is unknown; datagrams from other addresses are not filtered"
            ),
        }
    }

    pub(super) fn sample_rtt(&mut self, now: Instant) {
        let Some(ch) = self.shared.channel.get() else {
            return;
        };
        if self.dc.is_none() {
            return;
        }
        // The ICE consent checks on the selected pair measure it (RFC 7675).
        let report = self.pc.get_stats(now, StatsSelector::None);
        let rtt = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p) if p.current_round_trip_time > 0.0 => {
                Some(p.current_round_trip_time)
            }
            _ => None,
        });
        if let Some(rtt) = rtt.filter(|r| r.is_finite()) {
            ch.stats.set_rtt(Duration::from_secs_f64(rtt));
        }
    }
}

/// RFC 8832 section 5.1 channel types onto relay modes: ordered and
/// reliable is `reliable`; unordered with maxRetransmits=0 (what pion and
/// browsers open) or with a packet lifetime (timed reliability, what our
/// offerer opens: see `DcConfig::max_delay`) is `unreliable`.
///
/// rtc 0.21.1 reports neither limit for a channel the peer opened
/// (`RTCDataChannelInternal::accept` sets both to `None`; the SCTP stream
/// itself gets the right reliability), so an unordered channel without
/// limits is taken for what relay peers open, maxRetransmits=0, and an
/// ordered partially reliable channel cannot be told from a reliable one.
pub(crate) fn mode_of(
    ordered: bool,
    max_retransmits: Option<u16>,
    max_packet_life_time: Option<u16>,
) -> Option<Mode> {
    match (ordered, max_retransmits, max_packet_life_time) {
        (true, None, None) => Some(Mode::Reliable),
        (false, Some(0) | None, None) | (false, None, Some(_)) => Some(Mode::Unreliable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_types_map_to_relay_modes() {
        assert_eq!(mode_of(true, None, None), Some(Mode::Reliable));
        assert_eq!(mode_of(false, Some(0), None), Some(Mode::Unreliable));
        assert_eq!(mode_of(false, None, None), Some(Mode::Unreliable));
        assert_eq!(mode_of(false, None, Some(200)), Some(Mode::Unreliable));
        // Other partially reliable variants have no relay mode.
        assert_eq!(mode_of(false, Some(3), None), None);
        assert_eq!(mode_of(true, None, Some(100)), None);
        assert_eq!(mode_of(true, Some(0), None), None);
    }
}
