//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), in UTC.
//!
//! Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of
//! those. Day-of-week is 0-7 (0 and 7 are Sunday). As in Vixie cron, when both day fields are
//! restricted a day matches if either does. Small enough to own: no time-zone database, no
//! seconds field, no names (`MON`, `JAN`).

use crate::event::TimeMs;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far ahead [`Cron::next_after`] looks before it says "never" (Feb 29 on a Monday fits).
const SEARCH_DAYS_MAX: i64 = 366 * 30;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cron expression: {0} (expected 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 7 * * *\")"
)]
pub struct CronError(String);

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week`.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!("{} fields", fields.len())));
        }
        let weekdays = field(fields[4], 0, 7, "day-of-week")?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Cron {
            minutes: field(fields[0], 0, 59, "minute")?,
            hours: field(fields[1], 0, 23, "hour")?,
            days: field(fields[2], 1, 31, "day-of-month")?,
            months: field(fields[3], 1, 12, "month")?,
            weekdays,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    /// The first matching minute strictly after `after_ms`, or `None` if there is none within
    /// thirty years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after_ms: TimeMs) -> Option<TimeMs> {
        let mut t = (after_ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let last_day = t.div_euclid(DAY_MS) + SEARCH_DAYS_MAX;
        while t.div_euclid(DAY_MS) <= last_day {
            let day = t.div_euclid(DAY_MS);
            if !self.day_matches(day) {
                t = (day + 1) * DAY_MS;
                continue;
            }
            let minute_of_day = (t - day * DAY_MS) / MINUTE_MS;
            let (h0, m0) = (minute_of_day / 60, minute_of_day % 60);
            for h in h0..24 {
                if self.hours & (1 << h) == 0 {
                    continue;
                }
                let from = if h == h0 { m0 } else { 0 };
                if let Some(m) = (from..60).find(|m| self.minutes & (1 << m) != 0) {
                    return Some(day * DAY_MS + (h * 60 + m) * MINUTE_MS);
                }
            }
            t = (day + 1) * DAY_MS;
        }
        None
    }

    fn day_matches(&self, day: i64) -> bool {
        let (_, month, dom) = civil_from_days(day);
        // 1970-01-01 was a Thursday (4).
        let weekday = (day + 4).rem_euclid(7);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom_ok = self.days & (1 << dom) != 0;
        let dow_ok = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom_ok || dow_ok,
            _ => dom_ok && dow_ok,
        }
    }
}

fn field(text: &str, lo: u32, hi: u32, name: &str) -> Result<u64, CronError> {
    let bad = |why: &str| CronError(format!("{name} field {text:?}: {why}"));
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if step == 0 {
                    return Err(bad("the step is 0"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let num = |s: &str| -> Result<u32, CronError> {
            let n: u32 = s.parse().map_err(|_| bad("not a number"))?;
            if n < lo || n > hi {
                return Err(bad(&format!("{n} is outside {lo}-{hi}")));
            }
            Ok(n)
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a)?, num(b)?)
        } else {
            let a = num(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(bad("the range is backwards"));
        }
        bits |= (a..=b)
            .step_by(step as usize)
            .fold(0u64, |acc, v| acc | (1 << v));
    }
    Ok(bits)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z, a Monday.
    const JAN1_2024: TimeMs = 1_704_067_200_000;
    const HOUR: TimeMs = 3_600_000;

    #[test]
    fn every_morning_at_seven() {
        let c = Cron::parse("0 7 * * *").unwrap();
        assert_eq!(c.next_after(JAN1_2024), Some(JAN1_2024 + 7 * HOUR));
        assert_eq!(
            c.next_after(JAN1_2024 + 7 * HOUR),
            Some(JAN1_2024 + DAY_MS + 7 * HOUR)
        );
    }

    #[test]
    fn steps_ranges_lists_and_weekdays() {
        let c = Cron::parse("*/15 9-10 * * 1-5").unwrap();
        assert_eq!(c.next_after(JAN1_2024), Some(JAN1_2024 + 9 * HOUR));
        assert_eq!(
            c.next_after(JAN1_2024 + 9 * HOUR),
            Some(JAN1_2024 + 9 * HOUR + 15 * MINUTE_MS)
        );
        assert_eq!(
            c.next_after(JAN1_2024 + 10 * HOUR + 45 * MINUTE_MS),
            Some(JAN1_2024 + DAY_MS + 9 * HOUR)
        );
        // Saturday 2024-01-06 and Sunday are skipped: Friday 10:45 -> Monday 9:00.
        let friday = JAN1_2024 + 4 * DAY_MS;
        assert_eq!(
            c.next_after(friday + 10 * HOUR + 45 * MINUTE_MS),
            Some(friday + 3 * DAY_MS + 9 * HOUR)
        );
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(sunday.next_after(JAN1_2024), Some(JAN1_2024 + 6 * DAY_MS));
        let list = Cron::parse("5,10 0 1 2 *").unwrap();
        assert_eq!(
            list.next_after(JAN1_2024),
            Some(JAN1_2024 + 31 * DAY_MS + 5 * MINUTE_MS)
        );
    }

    #[test]
    fn day_fields_are_or_when_both_restricted() {
        // The 15th, or any Monday.
        let c = Cron::parse("0 0 15 * 1").unwrap();
        assert_eq!(c.next_after(JAN1_2024), Some(JAN1_2024 + 7 * DAY_MS));
    }

    #[test]
    fn leap_day_and_impossible_dates() {
        let c = Cron::parse("0 0 29 2 *").unwrap();
        // 2024-02-29 is day 59 of 2024.
        assert_eq!(c.next_after(JAN1_2024), Some(JAN1_2024 + 59 * DAY_MS));
        assert_eq!(
            Cron::parse("0 0 31 2 *").unwrap().next_after(JAN1_2024),
            None
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("0 7 * *", "4 fields"),
            ("61 * * * *", "outside 0-59"),
            ("* 24 * * *", "outside 0-23"),
            ("*/0 * * * *", "step is 0"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }
}
