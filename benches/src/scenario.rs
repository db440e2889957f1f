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
}

impl Scenario {
    /// The delay the scenario configures (one way, before jitter).
    pub fn configured_delay(&self) -> Duration {
        self.impairment.as_ref().map_or(Duration::ZERO, |i| i.delay)
    }
}

/// Delay scenario: 20 ms ± 5 ms, a continental path with a busy access link.
pub const DELAY: Duration = Duration::from_millis(20);
/// Its jitter (uniform, no reordering).
pub const JITTER: Duration = Duration::from_millis(5);
/// Rate-cap scenario: 50 Mbit/s behind netsim's default 64 KiB drop-tail queue.
pub const RATE_CAP: u64 = 50_000_000;

/// The report's scenario matrix, in order. Every impairment applies to
/// both directions alike (acknowledgements and retransmissions cross the
/// same network as the media).
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "clean",
            title: "clean (no proxy, direct loopback)",
            impairment: None,
        },
        Scenario {
            name: "loss1",
            title: "1% random loss",
            impairment: Some(ImpairmentConfig::default().loss(0.01)),
        },
        Scenario {
            name: "burst5",
            title: "5% burst loss (Gilbert, mean burst 4 packets)",
            impairment: Some(
                ImpairmentConfig::default().burst_loss(
                    GilbertElliott::from_mean_loss(0.05, DEFAULT_BURST_LENGTH)
                        .expect("5% with bursts of 4 is a valid chain"),
                ),
            ),
        },
        Scenario {
            name: "delay20",
            title: "20 ms ± 5 ms delay",
            impairment: Some(ImpairmentConfig::default().delay(DELAY).jitter(JITTER)),
        },
        Scenario {
            name: "cap50",
            title: "50 Mbit/s cap, 64 KiB drop-tail queue",
            impairment: Some(ImpairmentConfig::default().rate(RATE_CAP, DEFAULT_QUEUE)),
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
}

impl Subject {
    /// Raw UDP first, then every transport the facade was built with
    /// ([`relay::compiled_transports`]) in each of its modes.
    pub fn all() -> Vec<Subject> {
        let mut v = vec![Subject::RawUdp];
        for t in relay::compiled_transports() {
            for &m in t.modes() {
                v.push(Subject::Link(t, m));
            }
        }
        v
    }

    /// `raw-udp` or the transport name.
    pub fn transport(&self) -> &'static str {
        match self {
            Subject::RawUdp => "raw-udp",
            Subject::Link(t, _) => t.name(),
        }
    }

    /// The mode name, `-` for raw UDP.
    pub fn mode(&self) -> &'static str {
        match self {
            Subject::RawUdp => "-",
            Subject::Link(_, m) => m.name(),
        }
    }

    /// `transport mode`, or `raw-udp`.
    pub fn label(&self) -> String {
        match self {
            Subject::RawUdp => "raw-udp".into(),
            Subject::Link(t, m) => format!("{t} {m}"),
        }
    }

    /// Whether every packet must arrive (reliable, stream).
    pub fn is_reliable(&self) -> bool {
        matches!(self, Subject::Link(_, m) if m.is_reliable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_has_the_five_conditions_with_valid_impairments() {
        let s = scenarios();
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["clean", "loss1", "burst5", "delay20", "cap50"]);
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
        assert_eq!(all.len(), 1 + modes);
        assert!(Subject::Link(Transport::Quic, Mode::Stream).is_reliable());
        assert!(!Subject::RawUdp.is_reliable());
        assert_eq!(
            Subject::Link(Transport::Quic, Mode::Datagram).label(),
            "quic datagram"
        );
    }
}
