//! Working days (architecture §7): the 12321 loop counts its deadlines — forwarded within 3, handled
//! within 15, answered within 3 — in working days of the country's official calendar, which
//! moves days off and make-up working days every year (China's State Council publishes them
//! each November). A [`Calendar`] is that list plus a time zone, read from a small TOML file:
//!
//! ```toml
//! timezone = "Asia/Shanghai"
//! through = "2026-12-31"            # optional: the last date the lists are known to be complete
//! holidays = ["2026-10-01", ...]     # days off (a weekend listed here changes nothing)
//! working_weekends = ["2026-10-10"]  # Saturdays / Sundays that are working days
//! ```
//!
//! A day is a working day when it is a weekday not in `holidays`, or in `working_weekends`.
//! Deadlines follow the usual legal count: the day something arrives is not counted, so
//! "within N working days" of a complaint received on day D ends at the end of the N-th
//! working day after D ([`Calendar::add_working_days`]); [`Calendar::end_of_day_ms`] is that
//! instant. Past `through`, only weekends are known: [`Calendar::complete_through`] lets the
//! caller say so.

use std::collections::BTreeSet;

use super::{civil_from_days, days_from_civil, parse_date, Zone};

/// A working-day calendar (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    zone: Zone,
    holidays: BTreeSet<i64>,
    working_weekends: BTreeSet<i64>,
    through: Option<i64>,
}

/// Why a calendar file was refused: the line and key it concerns (line 0 when the problem is
/// the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct CalendarError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    timezone: Option<toml::Spanned<String>>,
    through: Option<toml::Spanned<String>>,
    #[serde(default)]
    holidays: Vec<toml::Spanned<String>>,
    #[serde(default)]
    working_weekends: Vec<toml::Spanned<String>>,
}

/// Days since 1970-01-01 → 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
#[inline]
pub fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

/// `YYYY-MM-DD` of a day.
pub fn fmt_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Calendar {
    /// Weekends only, in `zone` (no file configured).
    pub fn weekends_only(zone: Zone) -> Calendar {
        Calendar { zone, holidays: BTreeSet::new(), working_weekends: BTreeSet::new(), through: None }
    }

    /// Parses a calendar file's text; every error names its line and key.
    pub fn parse(text: &str) -> Result<Calendar, CalendarError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1;
        let raw: RawCalendar = toml::from_str(text).map_err(|e| CalendarError {
            line: e.span().map_or(0, |s| line_of(s.start)),
            field: "calendar".into(),
            message: e.message().to_owned(),
        })?;
        let err = |s: &toml::Spanned<String>, field: &str, message: String| CalendarError {
            line: line_of(s.span().start),
            field: field.into(),
            message,
        };
        let zone = match &raw.timezone {
            None => {
                return Err(CalendarError {
                    line: 0,
                    field: "timezone".into(),
                    message: "required (an IANA name such as Asia/Shanghai)".into(),
                })
            }
            Some(z) => Zone::get(z.get_ref()).map_err(|e| err(z, "timezone", e.to_string()))?,
        };
        let date = |s: &toml::Spanned<String>, field: &str| {
            parse_date(s.get_ref()).ok_or_else(|| err(s, field, format!("`{}`: expected YYYY-MM-DD", s.get_ref())))
        };
        let through = raw.through.as_ref().map(|t| date(t, "through")).transpose()?;
        let mut holidays = BTreeSet::new();
        for h in &raw.holidays {
            holidays.insert(date(h, "holidays")?);
        }
        let mut working_weekends = BTreeSet::new();
        for w in &raw.working_weekends {
            let d = date(w, "working_weekends")?;
            if weekday(d) < 5 {
                return Err(err(w, "working_weekends", format!("{} is a weekday, not a weekend", w.get_ref())));
            }
            if holidays.contains(&d) {
                return Err(err(w, "working_weekends", format!("{} is also listed in holidays", w.get_ref())));
            }
            working_weekends.insert(d);
        }
        Ok(Calendar { zone, holidays, working_weekends, through })
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Whether `day` (days since 1970-01-01, local) is a working day.
    pub fn is_working(&self, day: i64) -> bool {
        if self.working_weekends.contains(&day) {
            return true;
        }
        weekday(day) < 5 && !self.holidays.contains(&day)
    }

    /// The `n`-th working day after `day` (`day` itself not counted); `day` when `n` is 0.
    pub fn add_working_days(&self, day: i64, n: u32) -> i64 {
        let (mut d, mut left) = (day, n);
        while left > 0 {
            d += 1;
            if self.is_working(d) {
                left -= 1;
            }
        }
        d
    }

    /// The local day of an instant (Unix ms).
    pub fn day_of(&self, unix_ms: i64) -> i64 {
        self.zone.local(super::Now::at(unix_ms)).day
    }

    /// The instant (Unix ms) local `day` ends: the next day's local midnight.
    pub fn end_of_day_ms(&self, day: i64) -> i64 {
        self.zone.start_of_day_ms(day + 1)
    }

    /// Whether the lists are known to cover `day` (`through` not set: assumed so).
    pub fn complete_through(&self, day: i64) -> bool {
        self.through.is_none_or(|t| day <= t)
    }

    /// The last date the lists are known to be complete, if the file says.
    pub fn through(&self) -> Option<i64> {
        self.through
    }
}

impl Zone {
    /// The instant (Unix ms) local `day` begins (its first instant, should midnight fall in a
    /// daylight-saving gap).
    pub fn start_of_day_ms(&self, day: i64) -> i64 {
        let (y, m, d) = civil_from_days(day);
        let utc_guess = days_from_civil(y, m, d) * 86_400_000;
        jiff::civil::date(y as i16, m as i8, d as i8)
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(utc_guess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> i64 {
        parse_date(s).unwrap()
    }

    const CN_2026: &str = include_str!("../../config/calendar-cn-2026.toml");

    #[test]
    fn the_bundled_china_2026_calendar() {
        let c = Calendar::parse(CN_2026).unwrap();
        assert_eq!(c.zone().name(), "Asia/Shanghai");
        // National Day week: Oct 1–7 off, Sat Oct 10 and Sun Sep 20 working.
        for d in 1..=7 {
            assert!(!c.is_working(day(&format!("2026-10-0{d}"))), "Oct {d}");
        }
        assert!(c.is_working(day("2026-10-10")) && c.is_working(day("2026-09-20")));
        assert!(!c.is_working(day("2026-10-11")), "an ordinary Sunday");
        // Spring Festival: Feb 15–23 off; Sat Feb 14 and Sat Feb 28 working.
        assert!(c.is_working(day("2026-02-14")) && !c.is_working(day("2026-02-16")));
        assert!(!c.is_working(day("2026-02-23")) && c.is_working(day("2026-02-24")));
        assert!(c.is_working(day("2026-02-28")));
    }

    /// "Within N working days" counted from the day after receipt, against the dates worked
    /// out by hand from the State Council's 2026 notice.
    #[test]
    fn working_day_deadlines_across_holidays_and_make_up_days() {
        let c = Calendar::parse(CN_2026).unwrap();
        let table = [
            // received, N, due
            ("2026-09-24", 3, "2026-09-30"), // Thu: Fri 25 off (Mid-Autumn); Mon 28, 29, 30
            ("2026-09-28", 3, "2026-10-08"), // Mon: 29, 30, (Oct 1–7 off), Thu 8
            ("2026-09-29", 3, "2026-10-09"), // Tue: 30, (Oct 1–7 off), 8, 9
            ("2026-09-30", 3, "2026-10-10"), // Wed: 8, 9, Sat 10 (make-up)
            ("2026-09-30", 15, "2026-10-27"), // 8, 9, Sat 10, then 12 working weekdays
            ("2026-09-18", 1, "2026-09-20"), // Fri: the make-up Sunday is the next working day
            ("2026-02-13", 3, "2026-02-25"), // Fri: Sat 14 (make-up), Tue 24, Wed 25
            ("2026-12-03", 15, "2026-12-24"),
            ("2026-12-03", 0, "2026-12-03"),
        ];
        for (received, n, due) in table {
            assert_eq!(fmt_date(c.add_working_days(day(received), n)), due, "{received} + {n}");
        }
    }

    #[test]
    fn end_of_day_is_local_midnight() {
        let c = Calendar::parse(CN_2026).unwrap();
        let end = c.end_of_day_ms(day("2026-10-09"));
        assert_eq!(end, super::super::parse_timestamp_ms(b"2026-10-09T16:00:00Z").unwrap());
        assert_eq!(c.day_of(end - 1), day("2026-10-09"));
        assert_eq!(c.day_of(end), day("2026-10-10"));
        assert!(c.complete_through(day("2026-12-31")) && !c.complete_through(day("2027-01-04")));
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = Calendar::parse("timezone = \"Asia/Shanghai\"\nholidays = [\"2026-10-01\",\n \"2026-13-01\"]\n")
            .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "holidays"));
        let e = Calendar::parse("timezone = \"Mars/Olympus\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "timezone"));
        let e = Calendar::parse("timezone = \"UTC\"\nworking_weekends = [\"2026-10-09\"]\n").unwrap_err();
        assert!(e.message.contains("weekday"), "{e}");
        let e = Calendar::parse("timezone = \"UTC\"\nholiday = []\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(Calendar::parse("holidays = []\n").unwrap_err().field, "timezone");
    }
}
