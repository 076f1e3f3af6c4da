//! Human durations in config values and CLI flags: `250ms`, `5s`, `2m`, `1h`, `1d`.

use std::time::Duration;

/// A duration that could not be read; the message names the text and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses `<integer><unit>` with unit ms | s | m | h | d. Values too large for a `Duration`
/// are refused, not wrapped.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| DurationError(format!("`{s}` is not a duration like 500ms, 5s, 2m, 1h")))?;
    let secs = |mul: u64| {
        n.checked_mul(mul).map(Duration::from_secs).ok_or_else(|| DurationError(format!("`{s}` is too large")))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(DurationError(format!("`{s}`: unit must be ms, s, m, h or d"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_overflow() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("150d").unwrap(), Duration::from_secs(150 * 86_400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x5s").is_err());
        assert!(parse_duration("99999999999999999d").unwrap_err().to_string().contains("too large"));
    }
}
