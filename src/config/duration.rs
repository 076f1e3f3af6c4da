//! Human durations in config values: `250ms`, `5s`, `2m`, `1h`, `1d`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit ms | s | m | h | d.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 500ms, 5s, 2m, 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(format!("`{s}`: unit must be ms, s, m, h or d")),
    };
    Ok(d)
}
