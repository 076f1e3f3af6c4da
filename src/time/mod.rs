//! Time, in one place (architecture §6 layer 0): the wall clock and how tests replace it, calendar
//! days, civil date-times, local time in an IANA zone, and the timestamp formats consentgate
//! reads (RFC 3339, `YYYY-MM-DD`).
//!
//! * [`Clock`] is the one source of "now". Production code holds [`Clock::system`]; tests hold
//!   [`Clock::manual`] and move it. A session reads it once per event-loop turn into a [`Now`]
//!   and hands that to everything it calls in the turn (the decision pipeline, the audit log),
//!   so one turn sees one instant and the hot path reads the clock once, not per message.
//! * [`Now`] carries Unix milliseconds; [`Now::utc_day`] gives the calendar day (days since
//!   1970-01-01, UTC) that licence expiry is checked against.
//! * [`Zone`] is an IANA time zone (via `jiff`, with its tz database bundled so a host without
//!   `tzdata` still answers): [`Zone::local`] turns an instant into the subscriber's local day
//!   and minute of the day, daylight-saving changes included.
//! * [`days_from_civil`] / [`civil_from_days`] / [`parse_date`] / [`Civil`]: proleptic
//!   Gregorian calendar arithmetic without allocation (H. Hinnant's algorithms).
//! * [`Calendar`] (`calendar`): working days — holidays and make-up working days from a file —
//!   and the deadline arithmetic of the 12321 complaint loop.
//! * [`parse_timestamp_ms`]: the RFC 3339 subset the source files and the admin API accept.
//!   It is hand-written because it runs once per CSV row of a 100 M-row build.
//!
//! Monotonic time (timeouts, rate limits) stays `std::time::Instant` / `tokio::time::Instant`:
//! it must not jump when the wall clock is stepped.

pub mod calendar;
mod duration;

use std::sync::atomic::{AtomicI64, Ordering};

pub use calendar::{Calendar, CalendarError};
pub use duration::{parse_duration, DurationError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock: the system's, or a manual one for tests. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's real-time clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `unix_ms` until [`Clock::set`] or [`Clock::advance`] moves it.
    pub fn manual(unix_ms: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(unix_ms))) }
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Now {
        match &self.manual {
            None => Now { unix_ms: system_unix_ms(), mono_ms: mono_ms() },
            // A manual clock is monotonic as far as the test moves it forward.
            Some(t) => {
                let unix_ms = t.load(Ordering::Relaxed);
                Now { unix_ms, mono_ms: unix_ms.max(0) as u64 }
            }
        }
    }

    /// Wall-clock Unix milliseconds only, for a caller that keeps its own monotonic count
    /// (a session reads its monotonic clock once per turn anyway; one read, not two).
    #[inline]
    pub fn unix_ms(&self) -> i64 {
        match &self.manual {
            None => system_unix_ms(),
            Some(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock to `unix_ms` (no effect on the system clock).
    pub fn set(&self, unix_ms: i64) {
        if let Some(t) = &self.manual {
            t.store(unix_ms, Ordering::Relaxed);
        }
    }

    /// Moves a manual clock forward by `ms` (no effect on the system clock).
    pub fn advance(&self, ms: i64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

/// One reading of a [`Clock`]: Unix time in milliseconds, and a monotonic millisecond count
/// for durations (TTLs, ages) that must not jump when the wall clock is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    pub unix_ms: i64,
    /// Milliseconds since an arbitrary process-wide origin; never goes backwards.
    pub mono_ms: u64,
}

impl Now {
    /// A reading at Unix time `unix_ms` (the monotonic count set to the same value): for tests
    /// and for evaluating a rule at a given instant.
    pub fn at(unix_ms: i64) -> Now {
        Now { unix_ms, mono_ms: unix_ms.max(0) as u64 }
    }

    /// Unix seconds (floor).
    #[inline]
    pub fn unix_s(self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }

    /// Unix microseconds.
    #[inline]
    pub fn unix_us(self) -> i64 {
        self.unix_ms.saturating_mul(1000)
    }

    /// The UTC calendar day: days since 1970-01-01.
    #[inline]
    pub fn utc_day(self) -> i64 {
        self.unix_ms.div_euclid(86_400_000)
    }
}

fn mono_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

fn system_unix_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Unix microseconds from the system clock, for records that want finer stamps than [`Now`]
/// (the audit log, the capture writer).
pub fn unix_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// The system clock as a `SystemTime`, for comparing with file times (retention, rotation).
/// Everything else reads [`Clock`].
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Unix seconds of a `SystemTime` (negative before 1970).
pub fn unix_s_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// Today (UTC) as days since 1970-01-01, from the system clock.
pub fn today() -> i64 {
    Clock::system().now().utc_day()
}

// ----- calendar ----------------------------------------------------------------------------

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`); the inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if m == 2 && is_leap(y) {
        29
    } else {
        DAYS[(m as usize).clamp(1, 12) - 1]
    }
}

/// A UTC civil date-time, for formatting (file names, log records, SMPP dates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// The UTC date-time of Unix second `secs`.
    pub fn from_unix_s(secs: i64) -> Civil {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400) as u32;
        Civil { year, month, day, hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60 }
    }
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let y = i64::from(y);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

// ----- parsing -----------------------------------------------------------------------------

/// Parses an RFC 3339 timestamp or a `YYYY-MM-DD` date (midnight UTC) into Unix milliseconds.
///
/// Accepted: `2026-05-01`, `2026-05-01T08:00:00Z`, `2026-05-01t08:00:00z`,
/// `2026-05-01 08:00:00+08:00`, `2026-05-01T08:00:00.123456-05:30`. A leap second `:60` is
/// accepted (it equals the next minute's `:00`). Digits past milliseconds are truncated.
pub fn parse_timestamp_ms(s: &[u8]) -> Option<i64> {
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let y = digits(&s[0..4])?;
    let m = digits(&s[5..7])?;
    let d = digits(&s[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(i64::from(y), m) {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    if s.len() == 10 {
        return Some(days * 86_400_000);
    }
    if s.len() < 20 || !matches!(s[10], b'T' | b't' | b' ') || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if s[i] == b'.' {
        i += 1;
        let f = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if f == 0 {
            return None;
        }
        for k in 0..3 {
            frac_ms = frac_ms * 10 + s.get(i + k).filter(|_| k < f).map_or(0, |&c| i64::from(c - b'0'));
        }
        i += f;
    }
    let offset = match &s[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh @ .., b':', m1, m2] if oh.len() == 2 => {
            let (oh, om) = (digits(oh)?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    Some((days * 86_400 + i64::from(hh * 3600 + mm * 60 + ss) - offset) * 1000 + frac_ms)
}

/// [`parse_timestamp_ms`] in Unix seconds (floor).
pub fn parse_timestamp(s: &[u8]) -> Option<i64> {
    parse_timestamp_ms(s).map(|ms| ms.div_euclid(1000))
}

#[inline]
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

// ----- local time --------------------------------------------------------------------------

/// An IANA time zone, e.g. `Asia/Shanghai` or `America/New_York`.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

/// A local reading of an instant in a [`Zone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The local calendar day, days since 1970-01-01.
    pub day: i64,
    /// Minutes since local midnight, 0..1440.
    pub minute_of_day: u32,
    /// The zone's offset from UTC at that instant, in seconds.
    pub offset_s: i32,
}

/// Why a zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{0}` (expected an IANA name such as Asia/Shanghai)")]
pub struct UnknownZone(pub String);

impl Zone {
    /// Looks up an IANA zone name (the system's tz database first, then the bundled copy).
    pub fn get(name: &str) -> Result<Zone, UnknownZone> {
        jiff::tz::TimeZone::get(name).map(|tz| Zone { name: name.to_owned(), tz }).map_err(|_| UnknownZone(name.into()))
    }

    /// UTC.
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: jiff::tz::TimeZone::UTC }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local day and time of `now` in this zone.
    pub fn local(&self, now: Now) -> Local {
        let ts = jiff::Timestamp::from_millisecond(now.unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let offset_s = self.tz.to_offset(ts).seconds();
        let local_ms = now.unix_ms + i64::from(offset_s) * 1000;
        Local {
            day: local_ms.div_euclid(86_400_000),
            minute_of_day: (local_ms.rem_euclid(86_400_000) / 60_000) as u32,
            offset_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        for z in [-800_000, -1, 0, 1, 19_782, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(
            Civil::from_unix_s(1_795_860_900),
            Civil { year: 2026, month: 11, day: 28, hour: 10, minute: 15, second: 0 }
        );
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("2023-1-01"), None);
    }

    #[test]
    fn timestamps_agree_with_jiff() {
        for s in [
            "2026-05-01T08:00:00Z",
            "2026-05-01 08:00:00+08:00",
            "2026-05-01T08:00:00.123456-05:30",
            "1969-12-31T23:59:59.999Z",
            "2000-02-29T12:34:56.7+01:00",
        ] {
            let ours = parse_timestamp_ms(s.as_bytes()).unwrap_or_else(|| panic!("{s}"));
            let theirs: jiff::Timestamp = s.replace(' ', "T").parse().unwrap();
            assert_eq!(ours, theirs.as_millisecond(), "{s}");
        }
        assert_eq!(parse_timestamp_ms(b"2026-05-01"), Some(days_from_civil(2026, 5, 1) * 86_400_000));
        assert_eq!(parse_timestamp(b"1969-12-31T23:59:59.999Z"), Some(-1));
        for bad in ["2026-05-01T08:00:00", "2026-02-30", "2026-05-01T24:00:00Z", "2026-05-01T08:00:00.Z", "x"] {
            assert_eq!(parse_timestamp_ms(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        assert_eq!(c.now().unix_ms, 1_000);
        c.advance(86_400_000);
        assert_eq!(c.now().utc_day(), 1);
        c.set(-1);
        assert_eq!(c.now().utc_day(), -1);
        assert_eq!(c.now().unix_s(), -1);
        assert!(Clock::system().now().unix_ms > 1_700_000_000_000);
    }

    /// America/New_York: EDT (UTC-4) until 2026-11-01 02:00 local, then EST (UTC-5).
    #[test]
    fn local_time_across_a_daylight_saving_change() {
        let ny = Zone::get("America/New_York").unwrap();
        let before = parse_timestamp_ms(b"2026-11-01T05:30:00Z").unwrap(); // 01:30 EDT
        let after = parse_timestamp_ms(b"2026-11-01T06:30:00Z").unwrap(); // 01:30 EST
        let (b, a) = (ny.local(Now::at(before)), ny.local(Now::at(after)));
        assert_eq!((b.offset_s, b.minute_of_day), (-4 * 3600, 90));
        assert_eq!((a.offset_s, a.minute_of_day), (-5 * 3600, 90));
        assert_eq!(a.day, days_from_civil(2026, 11, 1));
        // Local midnight of 2026-11-02 is 05:00Z (EST), not 04:00Z.
        let m = ny.local(Now::at(parse_timestamp_ms(b"2026-11-02T04:59:59Z").unwrap()));
        assert_eq!(m.day, days_from_civil(2026, 11, 1));
        let shanghai = Zone::get("Asia/Shanghai").unwrap();
        let l = shanghai.local(Now::at(parse_timestamp_ms(b"2026-05-01T16:00:00Z").unwrap()));
        assert_eq!((l.day, l.minute_of_day), (days_from_civil(2026, 5, 2), 0));
        assert!(Zone::get("Mars/Olympus").is_err());
    }
}
