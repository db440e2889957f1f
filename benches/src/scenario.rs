//! The network conditions of the report, and what is measured under them.

use std::time::Duration;

use relay_core::{Mode, Transport};
use relay_netsim::{DEFAULT_BURST_LENGTH, DEFAULT_QUEUE, GilbertElliott, ImpairmentConfig};

/// A network condition between the two relay ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name (file names, tables).
    pub name: &'static str,
    /// What it is, for people.
    pub title: &'static str,
    /// The impairment in each direction; `None`: no proxy at all, the ends
    /// talk directly.
    pub impairment: Option<ImpairmentConfig>,
    /// A WAN path ([`WAN_DELAY`] each way): runs the paced video workload
    /// only, longer and over several seeds. These judge whether a transport
    /// holds its latency under loss, not what it can carry.
    pub wan: bool,
    /// The path black-holes both ways for a while in the middle of each run.
    pub outage: Option<Outage>,
}

impl Scenario {
    /// The delay the scenario configures (one way, before jitter).
    pub fn configured_delay(&self) -> Duration {
        self.impairment.as_ref().map_or(Duration::ZERO, |i| i.delay)
    }

    /// A scenario of the LAN matrix: no outage, not WAN.
    fn lan(name: &'static str, title: &'static str, impairment: Option<ImpairmentConfig>) -> Scenario {
        Scenario {
            name,
            title,
            impairment,
            wan: false,
            outage: None,
        }
    }

    /// A WAN scenario with this impairment (built on [`wan_path`]).
    fn wan(name: &'static str, title: &'static str, impairment: ImpairmentConfig) -> Scenario {
        Scenario {
            name,
            title,
            impairment: Some(impairment),
            wan: true,
            outage: None,
        }
    }
}

/// A black hole: every packet both ways is lost for `length`, starting so
/// that it sits in the middle of the run's send schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// How long the path is down.
    pub length: Duration,
}

impl Outage {
    /// When the path goes down, from the start of a run of `duration`.
    pub fn starts_at(&self, duration: Duration) -> Duration {
        duration.saturating_sub(self.length) / 2
    }
}

/// Delay scenario: 20 ms ± 5 ms, a continental path with a busy access link.
pub const DELAY: Duration = Duration::from_millis(20);
/// Its jitter (uniform, no reordering).
pub const JITTER: Duration = Duration::from_millis(5);
/// Rate-cap scenario: 50 Mbit/s behind netsim's default 64 KiB drop-tail queue.
pub const RATE_CAP: u64 = 50_000_000;

/// WAN scenarios: 20 ms each way, a 40 ms RTT (two SFUs in neighbouring
/// regions, say Frankfurt and London)...
pub const WAN_DELAY: Duration = Duration::from_millis(20);
/// ...with ±2 ms of jitter (uniform, no reordering): a quiet backbone path.
pub const WAN_JITTER: Duration = Duration::from_millis(2);
/// Mean burst of `wan-burst5`, in time: a short fade or a queue overflow at
/// a busy hop, a few video packets or one audio packet long.
pub const WAN_BURST: Duration = Duration::from_millis(20);
/// How long `wan-outage` black-holes the path: long enough that every
/// transport's retransmission timer backs off several times (a route
/// change, a Wi-Fi roam), short enough that none gives up on the link.
pub const WAN_OUTAGE: Duration = Duration::from_secs(1);

/// The path every WAN scenario shares: [`WAN_DELAY`] ± [`WAN_JITTER`].
pub fn wan_path() -> ImpairmentConfig {
    ImpairmentConfig::default().delay(WAN_DELAY).jitter(WAN_JITTER)
}

/// The report's scenario matrix, in order. Every impairment applies to
/// both directions alike (acknowledgements and retransmissions cross the
/// same network as the media).
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::lan("clean", "clean (no proxy, direct loopback)", None),
        Scenario::lan(
            "loss1",
            "1% random loss",
            Some(ImpairmentConfig::default().loss(0.01)),
        ),
        Scenario::lan(
            "burst5",
            "5% burst loss (Gilbert, mean burst 4 packets)",
            Some(
                ImpairmentConfig::default().burst_loss(
                    GilbertElliott::from_mean_loss(0.05, DEFAULT_BURST_LENGTH)
                        .expect("5% with bursts of 4 is a valid chain"),
                ),
            ),
        ),
        Scenario::lan(
            "delay20",
            "20 ms ± 5 ms delay",
            Some(ImpairmentConfig::default().delay(DELAY).jitter(JITTER)),
        ),
        Scenario::lan(
            "cap50",
            "50 Mbit/s cap, 64 KiB drop-tail queue",
            Some(ImpairmentConfig::default().rate(RATE_CAP, DEFAULT_QUEUE)),
        ),
        Scenario::wan(
            "wan-delay40",
            "WAN: 40 ms RTT (20 ms ± 2 ms each way), no loss",
            wan_path(),
        ),
        Scenario::wan(
            "wan-loss1",
            "WAN: 40 ms RTT, 1% random loss",
            wan_path().loss(0.01),
        ),
        Scenario::wan(
            "wan-burst5",
            "WAN: 40 ms RTT, 5% loss in bursts of 20 ms on average (timed)",
            wan_path().timed_burst_loss(0.05, WAN_BURST),
        ),
        Scenario {
            outage: Some(Outage { length: WAN_OUTAGE }),
            ..Scenario::wan(
                "wan-outage",
                "WAN: 40 ms RTT, the path black-holed for 1 s mid-run",
                wan_path(),
            )
        },
    ]
}

/// What carries the packets in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// Two plain UDP sockets: the baseline, and the harness's own ceiling.
    RawUdp,
    /// A relay link of this transport and mode.
    Link(Transport, Mode),
    /// Two pion peers (`tools/pion-relay`, see [`crate::pion`]) relaying
    /// UDP through a data channel of this mode (reliable or unreliable):
    /// the third-party baseline for our `dc` rows.
    Pion(Mode),
}

impl Subject {
    /// The pion rows, reliable then unreliable.
    pub const PION: [Subject; 2] = [Subject::Pion(Mode::Reliable), Subject::Pion(Mode::Unreliable)];

    /// Every path the report measures: [`Subject::ours`], then the pion
    /// rows.
    pub fn all() -> Vec<Subject> {
        let mut v = Subject::ours();
        v.extend(Subject::PION);
        v
    }

    /// Raw UDP first, then every transport the facade was built with
    /// ([`relay::compiled_transports`]) in each of its modes: the paths
    /// that run in this process.
    pub fn ours() -> Vec<Subject> {
        let mut v = vec![Subject::RawUdp];
        for t in relay::compiled_transports() {
            for &m in t.modes() {
                v.push(Subject::Link(t, m));
            }
        }
        v
    }

    /// `raw-udp`, the transport name, or `pion dc`.
    pub fn transport(&self) -> &'static str {
        match self {
            Subject::RawUdp => "raw-udp",
            Subject::Link(t, _) => t.name(),
            Subject::Pion(_) => "pion dc",
        }
    }

    /// The mode name, `-` for raw UDP.
    pub fn mode(&self) -> &'static str {
        match self {
            Subject::RawUdp => "-",
            Subject::Link(_, m) | Subject::Pion(m) => m.name(),
        }
    }

    /// `transport mode`, or `raw-udp`.
    pub fn label(&self) -> String {
        match self {
            Subject::RawUdp => "raw-udp".into(),
            Subject::Link(t, m) => format!("{t} {m}"),
            Subject::Pion(m) => format!("pion dc {m}"),
        }
    }

    /// Whether every packet must arrive (reliable, stream).
    pub fn is_reliable(&self) -> bool {
        matches!(self, Subject::Link(_, m) | Subject::Pion(m) if m.is_reliable())
    }

    /// The pion row our `dc` path in the same mode is compared with
    /// (`dc unreliable` → `pion dc unreliable`); `None` for every other path.
    pub fn pion_counterpart(&self) -> Option<Subject> {
        match *self {
            Subject::Link(Transport::Dc, m) if matches!(m, Mode::Reliable | Mode::Unreliable) => {
                Some(Subject::Pion(m))
            }
            _ => None,
        }
    }

    /// Whether this is one of the pion rows (a third party, run as child
    /// processes; skipped when Go or pion is missing).
    pub fn is_pion(&self) -> bool {
        matches!(self, Subject::Pion(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_has_the_nine_conditions_with_valid_impairments() {
        let s = scenarios();
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "clean",
                "loss1",
                "burst5",
                "delay20",
                "cap50",
                "wan-delay40",
                "wan-loss1",
                "wan-burst5",
                "wan-outage"
            ]
        );
        for sc in &s {
            assert_eq!(sc.wan, sc.name.starts_with("wan-"), "{}", sc.name);
            assert_eq!(sc.outage.is_some(), sc.name == "wan-outage");
            if sc.wan {
                assert_eq!(sc.configured_delay(), WAN_DELAY);
            }
        }
        let timed = s[7].impairment.as_ref().unwrap().timed_burst_loss.unwrap();
        assert_eq!((timed.mean_loss, timed.mean_burst), (0.05, WAN_BURST));
        let outage = s[8].outage.unwrap();
        assert_eq!(
            outage.starts_at(Duration::from_secs(8)),
            Duration::from_millis(3500)
        );
        for sc in &s {
            if let Some(i) = &sc.impairment {
                i.validate().unwrap();
            }
        }
        assert_eq!(s[3].configured_delay(), DELAY);
        assert_eq!(s[0].configured_delay(), Duration::ZERO);
        let burst = s[2].impairment.as_ref().unwrap().burst_loss.unwrap();
        assert!((burst.mean_loss() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn subjects_start_with_the_baseline_and_cover_every_compiled_mode() {
        let all = Subject::all();
        assert_eq!(all[0], Subject::RawUdp);
        let modes: usize = relay::compiled_transports().iter().map(|t| t.modes().len()).sum();
        assert_eq!(Subject::ours().len(), 1 + modes);
        assert_eq!(all.len(), 1 + modes + 2);
        assert_eq!(all[1 + modes..], Subject::PION);
        assert!(Subject::Pion(Mode::Reliable).is_reliable());
        assert!(!Subject::Pion(Mode::Unreliable).is_reliable());
        assert_eq!(Subject::Pion(Mode::Unreliable).label(), "pion dc unreliable");
        assert_eq!(Subject::Pion(Mode::Reliable).transport(), "pion dc");
        assert_eq!(
            Subject::Link(Transport::Dc, Mode::Unreliable).pion_counterpart(),
            Some(Subject::Pion(Mode::Unreliable))
        );
        assert_eq!(
            Subject::Link(Transport::Quic, Mode::Datagram).pion_counterpart(),
            None
        );
        assert_eq!(Subject::Pion(Mode::Reliable).pion_counterpart(), None);
        assert!(Subject::Link(Transport::Quic, Mode::Stream).is_reliable());
        assert!(!Subject::RawUdp.is_reliable());
        assert_eq!(
            Subject::Link(Transport::Quic, Mode::Datagram).label(),
            "quic datagram"
        );
    }
}
