//! Parsers for the human forms of impairment settings (`2%`, `20ms`,
//! `50mbit`, `64kb`), shared by the command line and benchmark scenarios.
//! Errors say what is wrong with the value; callers add which flag it was.

use std::time::Duration;

use crate::config::QueueLimit;

/// A probability written as a percentage (`2%`, `0.5%`) or a fraction
/// (`0.02`).
///
/// ```
/// assert_eq!(relay_netsim::parse::probability("2%"), Ok(0.02));
/// assert_eq!(relay_netsim::parse::probability("0.02"), Ok(0.02));
/// assert!(relay_netsim::parse::probability("150%").is_err());
/// ```
pub fn probability(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, percent) = match text.strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (text, false),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| "not a percentage like 2% or a fraction like 0.02".to_string())?;
    let p = if percent { value / 100.0 } else { value };
    if !(0.0..=1.0).contains(&p) {
        let hint = if percent {
            ""
        } else {
            " (a number without % is a fraction: 0.02 = 2%)"
        };
        return Err(format!("must be between 0% and 100%{hint}"));
    }
    Ok(p)
}

/// A duration with a unit: `20ms`, `1.5s`, `500us` (or `500µs`), `250ns`;
/// a bare `0` is zero.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(relay_netsim::parse::duration("20ms"), Ok(Duration::from_millis(20)));
/// assert_eq!(relay_netsim::parse::duration("1.5s"), Ok(Duration::from_millis(1500)));
/// ```
pub fn duration(text: &str) -> Result<Duration, String> {
    const FORMS: &str = "not a duration like 20ms, 1.5s or 500us";
    let text = text.trim();
    let (number, unit) = split_unit(text);
    let value: f64 = number.parse().map_err(|_| FORMS.to_string())?;
    if !value.is_finite() || value < 0.0 {
        return Err("must be a duration of 0 or more".to_string());
    }
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "" if value == 0.0 => 0.0,
        "" => return Err("needs a unit: ns, us, ms or s (20ms)".to_string()),
        _ => return Err(FORMS.to_string()),
    };
    let nanos = (value * nanos_per_unit).round();
    if nanos > u64::MAX as f64 {
        return Err("is too long".to_string());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A rate in bits per second: `50mbit`, `2.5Mbps`, `800kbit`, `1gbit`,
/// `64000` (bit/s). Units are case-insensitive and decimal (k = 1,000).
/// Unlike `tc`, where `mbps` means megabytes, here `bps` always means bits
/// per second, as the media world writes it.
///
/// ```
/// assert_eq!(relay_netsim::parse::rate("50mbit"), Ok(50_000_000));
/// assert_eq!(relay_netsim::parse::rate("2.5Mbps"), Ok(2_500_000));
/// ```
pub fn rate(text: &str) -> Result<u64, String> {
    const FORMS: &str = "not a rate like 50mbit, 2.5Mbps or 800kbit";
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = split_unit(&lower);
    let value: f64 = number.parse().map_err(|_| FORMS.to_string())?;
    let scale = match unit {
        "" | "bit" | "bps" => 1.0,
        "k" | "kbit" | "kbps" => 1e3,
        "m" | "mbit" | "mbps" => 1e6,
        "g" | "gbit" | "gbps" => 1e9,
        _ => return Err(FORMS.to_string()),
    };
    let bits = (value * scale).round();
    if !bits.is_finite() || bits < 1.0 {
        return Err("must be at least 1 bit/s (leave --rate out for no cap)".to_string());
    }
    if bits > u64::MAX as f64 {
        return Err("is too large".to_string());
    }
    Ok(bits as u64)
}

/// A queue size: bytes with a unit (`64kb`, `1.5mb`, `1500b`; binary
/// multiples as in `tc`: kb = 1,024 bytes) or packets (`100`, `100p`,
/// `100pkt`, `100packets`).
///
/// ```
/// use relay_netsim::QueueLimit;
/// assert_eq!(relay_netsim::parse::queue("64kb"), Ok(QueueLimit::Bytes(65_536)));
/// assert_eq!(relay_netsim::parse::queue("100"), Ok(QueueLimit::Packets(100)));
/// ```
pub fn queue(text: &str) -> Result<QueueLimit, String> {
    const FORMS: &str = "not a queue size like 64kb, 1500b or 100 (packets)";
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = split_unit(&lower);
    let limit = match unit {
        "" | "p" | "pkt" | "pkts" | "packets" => {
            let packets: usize = number
                .parse()
                .map_err(|_| "a packet count must be a whole number like 100".to_string())?;
            QueueLimit::Packets(packets)
        }
        _ => {
            let scale = match unit {
                "b" => 1.0,
                "k" | "kb" | "kib" => 1024.0,
                "m" | "mb" | "mib" => 1024.0 * 1024.0,
                _ => return Err(FORMS.to_string()),
            };
            let value: f64 = number.parse().map_err(|_| FORMS.to_string())?;
            let bytes = (value * scale).round();
            if !bytes.is_finite() || bytes < 0.0 || bytes > usize::MAX as f64 {
                return Err(FORMS.to_string());
            }
            QueueLimit::Bytes(bytes as usize)
        }
    };
    if matches!(limit, QueueLimit::Bytes(0) | QueueLimit::Packets(0)) {
        return Err("must hold at least one packet or byte".to_string());
    }
    Ok(limit)
}

/// Splits `20ms` into (`20`, `ms`): the number is the leading run of
/// digits, signs, dots and exponents.
fn split_unit(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    let mut end = 0;
    while let Some(&c) = bytes.get(end) {
        // An exponent only when a digit follows (1e3, not the `e` of a unit).
        let exponent = matches!(c, b'e' | b'E')
            && bytes
                .get(end + 1)
                .is_some_and(|d| d.is_ascii_digit() || *d == b'-');
        if !(c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+') || exponent) {
            break;
        }
        end += 1;
    }
    // `end` is at a character boundary: everything before it is ASCII.
    let (number, unit) = text.split_at(end);
    (number.trim(), unit.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities() {
        assert_eq!(probability("2%"), Ok(0.02));
        assert_eq!(probability(" 0.5 % "), Ok(0.005));
        assert_eq!(probability("0.02"), Ok(0.02));
        assert_eq!(probability("100%"), Ok(1.0));
        assert_eq!(probability("0"), Ok(0.0));
        assert_eq!(probability("150%"), Err("must be between 0% and 100%".into()));
        assert!(probability("2").unwrap_err().contains("0.02 = 2%"));
        assert!(probability("-1%").is_err());
        assert!(probability("lots").unwrap_err().contains("like 2%"));
        assert!(probability("nan").is_err());
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(duration("20ms"), Ok(ms(20)));
        assert_eq!(duration("1.5s"), Ok(ms(1500)));
        assert_eq!(duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(duration("500µs"), Ok(Duration::from_micros(500)));
        assert_eq!(duration("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration(" 5 ms"), Ok(ms(5)));
        assert!(duration("20").unwrap_err().contains("needs a unit"));
        assert!(duration("20min").is_err());
        assert!(duration("-5ms").is_err());
        assert!(duration("ms").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(rate("50mbit"), Ok(50_000_000));
        assert_eq!(rate("2.5Mbps"), Ok(2_500_000));
        assert_eq!(rate("800kbit"), Ok(800_000));
        assert_eq!(rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(rate("64000"), Ok(64_000));
        assert_eq!(rate("1e6bit"), Ok(1_000_000));
        assert!(rate("0mbit").unwrap_err().contains("at least 1 bit/s"));
        assert!(rate("50 furlongs").unwrap_err().contains("like 50mbit"));
    }

    #[test]
    fn queues() {
        assert_eq!(queue("64kb"), Ok(QueueLimit::Bytes(65_536)));
        assert_eq!(queue("1500b"), Ok(QueueLimit::Bytes(1500)));
        assert_eq!(queue("1.5mb"), Ok(QueueLimit::Bytes(1_572_864)));
        assert_eq!(queue("100"), Ok(QueueLimit::Packets(100)));
        assert_eq!(queue("100pkt"), Ok(QueueLimit::Packets(100)));
        assert_eq!(queue("100 packets"), Ok(QueueLimit::Packets(100)));
        assert!(queue("0").unwrap_err().contains("at least one"));
        assert!(queue("2.5p").unwrap_err().contains("whole number"));
        assert!(queue("64 bananas").is_err());
    }
}
