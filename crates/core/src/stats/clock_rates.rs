//! RTP clock rates, which jitter needs: RFC 3551's static payload types
//! ([`static_clock_rate`]) and the configured ones ([`ClockRates`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The RTP clock rate of an RFC 3551 static payload type (tables 4 and 5),
/// or `None` for a reserved, unassigned or dynamic (96–127) one, whose rate
/// only the SDP knows (Opus on 111 runs at 48 kHz, VP8 on 96 at 90 kHz).
///
/// ```
/// use relay_core::static_clock_rate;
/// assert_eq!(static_clock_rate(0), Some(8_000)); // PCMU
/// assert_eq!(static_clock_rate(34), Some(90_000)); // H263
/// assert_eq!(static_clock_rate(111), None); // dynamic: Opus, or anything
/// ```
pub fn static_clock_rate(payload_type: u8) -> Option<u32> {
    match payload_type {
        // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722 (whose RTP clock is
        // 8 kHz although it samples at 16, RFC 3551 section 4.5.2), QCELP,
        // CN, G728, G729.
        0 | 3..=5 | 7..=9 | 12 | 13 | 15 | 18 => Some(8_000),
        6 => Some(16_000),       // DVI4/16000
        10 | 11 => Some(44_100), // L16 stereo, mono
        14 => Some(90_000),      // MPA
        16 => Some(11_025),      // DVI4/11025
        17 => Some(22_050),      // DVI4/22050
        // CelB, JPEG, nv, H261, MPV, MP2T, H263.
        25 | 26 | 28 | 31..=34 => Some(90_000),
        _ => None,
    }
}

/// Largest clock rate [`ClockRate`] accepts. RTP clocks in use top out at
/// 90 kHz (video) and 192 kHz (audio); 10 MHz leaves room and still
/// catches a rate typed with extra zeros.
pub const MAX_CLOCK_RATE: u32 = 10_000_000;

/// One payload type's RTP clock rate, as the SDP's `a=rtpmap` gives it
/// (`a=rtpmap:111 opus/48000/2` is `111=48000`). Parsed from `PT=HZ`.
///
/// ```
/// use relay_core::ClockRate;
/// let opus: ClockRate = "111=48000".parse()?;
/// assert_eq!((opus.payload_type(), opus.hz()), (111, 48_000));
/// assert!("111=0".parse::<ClockRate>().is_err());
/// assert!("128=90000".parse::<ClockRate>().is_err());
/// # Ok::<(), relay_core::InvalidClockRate>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRate {
    payload_type: u8,
    hz: u32,
}

impl ClockRate {
    /// `hz` for `payload_type`: the type must be 0..=127 (7 bits in the
    /// RTP header), the rate 1..=[`MAX_CLOCK_RATE`].
    pub fn new(payload_type: u8, hz: u32) -> Result<ClockRate, InvalidClockRate> {
        if payload_type > 127 {
            return Err(InvalidClockRate::PayloadType(payload_type.to_string()));
        }
        if !(1..=MAX_CLOCK_RATE).contains(&hz) {
            return Err(InvalidClockRate::Rate {
                payload_type,
                hz: hz.to_string(),
            });
        }
        Ok(ClockRate { payload_type, hz })
    }

    /// The payload type.
    pub fn payload_type(self) -> u8 {
        self.payload_type
    }

    /// Its clock rate in Hz.
    pub fn hz(self) -> u32 {
        self.hz
    }
}

impl FromStr for ClockRate {
    type Err = InvalidClockRate;

    fn from_str(s: &str) -> Result<ClockRate, InvalidClockRate> {
        let Some((pt, hz)) = s.split_once('=') else {
            return Err(InvalidClockRate::Syntax(s.to_owned()));
        };
        let (pt, hz) = (pt.trim(), hz.trim());
        let payload_type = pt
            .parse::<u8>()
            .ok()
            .filter(|pt| *pt <= 127)
            .ok_or_else(|| InvalidClockRate::PayloadType(pt.to_owned()))?;
        let rate = |hz: &str| InvalidClockRate::Rate {
            payload_type,
            hz: hz.to_owned(),
        };
        let hz = hz.parse::<u32>().map_err(|_| rate(hz))?;
        ClockRate::new(payload_type, hz)
    }
}

impl fmt::Display for ClockRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.payload_type, self.hz)
    }
}

/// Why a `PT=HZ` clock rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClockRate {
    /// Not of the form `PT=HZ`.
    #[error("clock rate {0:?} is not PT=HZ (for example 111=48000 for Opus)")]
    Syntax(String),
    /// The payload type is not a number from 0 to 127.
    #[error("payload type {0:?} is not an RTP payload type (0 to 127)")]
    PayloadType(String),
    /// The rate is not a whole number of Hz from 1 to [`MAX_CLOCK_RATE`].
    #[error(
        "clock rate {hz:?} for payload type {payload_type} is not a whole number of Hz from 1 to {MAX_CLOCK_RATE} \
         (as in the SDP's a=rtpmap, e.g. 48000 for Opus, 90000 for video)"
    )]
    Rate {
        /// The payload type it was for.
        payload_type: u8,
        /// The rate as given.
        hz: String,
    },
}

/// The RTP clock rate of each payload type on a link, for jitter: the ones
/// configured (from the SDP the relay does not see), then RFC 3551's static
/// ones. Empty by default.
///
/// ```
/// use relay_core::{ClockRate, ClockRates};
/// let rates: ClockRates = ["111=48000", "96=90000"]
///     .iter()
///     .map(|e| e.parse::<ClockRate>())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(rates.get(111), Some(48_000)); // configured
/// assert_eq!(rates.get(0), Some(8_000)); // static PCMU
/// assert_eq!(rates.get(100), None); // dynamic, not configured: unknown
/// # Ok::<(), relay_core::InvalidClockRate>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockRates(BTreeMap<u8, u32>);

impl ClockRates {
    /// No configured rate: only static payload types are known.
    pub fn new() -> ClockRates {
        ClockRates::default()
    }

    /// Adds `rate` (replacing an earlier one for its payload type).
    pub fn with(mut self, rate: ClockRate) -> ClockRates {
        self.insert(rate);
        self
    }

    /// Adds `rate`, returning the rate it replaced for its payload type.
    pub fn insert(&mut self, rate: ClockRate) -> Option<u32> {
        self.0.insert(rate.payload_type, rate.hz)
    }

    /// The clock rate of `payload_type`: configured, else static, else
    /// `None`.
    pub fn get(&self, payload_type: u8) -> Option<u32> {
        self.0
            .get(&payload_type)
            .copied()
            .or_else(|| static_clock_rate(payload_type))
    }

    /// The configured rates, by payload type.
    pub fn iter(&self) -> impl Iterator<Item = ClockRate> + '_ {
        self.0
            .iter()
            .map(|(&payload_type, &hz)| ClockRate { payload_type, hz })
    }

    /// Whether no rate is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<ClockRate> for ClockRates {
    /// Later entries for a payload type replace earlier ones.
    fn from_iter<I: IntoIterator<Item = ClockRate>>(iter: I) -> ClockRates {
        let mut rates = ClockRates::new();
        rates.extend(iter);
        rates
    }
}

impl Extend<ClockRate> for ClockRates {
    fn extend<I: IntoIterator<Item = ClockRate>>(&mut self, iter: I) {
        for rate in iter {
            self.insert(rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_payload_types_are_rfc_3551s() {
        let known: Vec<(u8, u32)> = (0..=127u8)
            .filter_map(|pt| static_clock_rate(pt).map(|hz| (pt, hz)))
            .collect();
        let mut want = vec![(6, 16_000), (10, 44_100), (11, 44_100), (14, 90_000)];
        want.extend([0, 3, 4, 5, 7, 8, 9, 12, 13, 15, 18].map(|pt| (pt, 8_000)));
        want.extend([(16, 11_025), (17, 22_050)]);
        want.extend([25, 26, 28, 31, 32, 33, 34].map(|pt| (pt, 90_000)));
        want.sort();
        assert_eq!(known, want);
    }

    #[test]
    fn a_configured_rate_overrides_a_static_one() {
        let rates = ClockRates::new().with(ClockRate::new(0, 16_000).unwrap());
        assert_eq!(rates.get(0), Some(16_000));
        assert_eq!(rates.get(8), Some(8_000));
    }

    #[test]
    fn clock_rate_entries_parse_or_say_what_is_wrong() {
        let ok: ClockRate = " 111 = 48000 ".parse().unwrap();
        assert_eq!((ok.payload_type(), ok.hz()), (111, 48_000));
        assert_eq!(ok.to_string(), "111=48000");
        assert_eq!("127=10000000".parse::<ClockRate>().unwrap().hz(), MAX_CLOCK_RATE);
        for (entry, want) in [
            ("111", InvalidClockRate::Syntax("111".into())),
            ("opus/48000", InvalidClockRate::Syntax("opus/48000".into())),
            ("128=90000", InvalidClockRate::PayloadType("128".into())),
            ("-1=90000", InvalidClockRate::PayloadType("-1".into())),
            ("=90000", InvalidClockRate::PayloadType("".into())),
            ("opus=48000", InvalidClockRate::PayloadType("opus".into())),
        ] {
            assert_eq!(entry.parse::<ClockRate>(), Err(want), "{entry}");
        }
        for hz in ["0", "-8000", "48k", "", "10000001", "99999999999"] {
            let entry = format!("111={hz}");
            let err = entry.parse::<ClockRate>().unwrap_err();
            assert_eq!(
                err,
                InvalidClockRate::Rate {
                    payload_type: 111,
                    hz: hz.into()
                },
                "{entry}"
            );
            assert!(err.to_string().contains("from 1 to 10000000"), "{err}");
        }
        assert!(ClockRate::new(200, 8_000).is_err());
        assert!(ClockRate::new(0, 0).is_err());
    }

    #[test]
    fn later_entries_for_a_payload_type_win() {
        let rates: ClockRates = ["96=90000", "111=48000", "96=48000"]
            .iter()
            .map(|e| e.parse::<ClockRate>().unwrap())
            .collect();
        assert_eq!(
            rates.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["96=48000", "111=48000"]
        );
    }
}
