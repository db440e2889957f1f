//! Durations on the command line with their unit, `200ms` or `0.2s`: a
//! latency budget is thought of in milliseconds and a bare number would
//! leave the reader guessing which unit it is in.

use std::time::Duration;

/// Longest latency budget `--max-delay` takes: a minute is already far
/// past anything real-time (and data channels carry the budget as a
/// 16-bit millisecond packet lifetime, RFC 8832 section 5.1).
pub const MAX_BUDGET: Duration = Duration::from_secs(60);

/// Parses `--max-delay`: a number with `ms` or `s`, from 1 ms to
/// [`MAX_BUDGET`].
///
/// ```
/// use std::time::Duration;
/// use relay::duration::parse_budget;
/// assert_eq!(parse_budget("200ms"), Ok(Duration::from_millis(200)));
/// assert_eq!(parse_budget("0.5s"), Ok(Duration::from_millis(500)));
/// assert!(parse_budget("200").unwrap_err().contains("unit"));
/// ```
pub fn parse_budget(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!(
            "{text:?} has no unit: write milliseconds as 200ms or seconds as 0.2s"
        ));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 200ms or 0.2s"))?;
    let seconds = value * scale;
    if !(seconds.is_finite() && seconds >= 1e-3) {
        return Err(format!("{text:?}: a latency budget is at least 1ms"));
    }
    let budget = Duration::from_secs_f64(seconds);
    if budget > MAX_BUDGET {
        return Err(format!(
            "{text:?}: a latency budget is at most {}s",
            MAX_BUDGET.as_secs()
        ));
    }
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_need_a_unit_and_a_sane_range() {
        assert_eq!(parse_budget("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_budget(" 60s "), Ok(MAX_BUDGET));
        assert_eq!(parse_budget("2.5ms"), Ok(Duration::from_micros(2500)));
        for bad in [
            "", "ms", "s", "fast", "-5ms", "0ms", "0.5ms", "NaNs", "infs", "61s", "1e9ms", "200",
        ] {
            assert!(parse_budget(bad).is_err(), "{bad:?} was taken");
        }
    }
}
