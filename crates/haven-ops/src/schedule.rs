//! Cron schedules in UTC: when the daemon's jobs are due.
//!
//! ```text
//! "0 3 * * mon-fri" ──Schedule::parse──> Schedule { one bit set per field }
//! next_after(t)         the first slot strictly after t     (the next run)
//! last_at_or_before(t)  the most recent slot at or before t (catch-up after downtime)
//! ```
//! Accepted forms:
//! - 5 fields: `minute hour day-of-month month day-of-week`;
//! - 6 fields: a leading `second` field (`*/2 * * * * *`), used by tests so that nothing
//!   waits for minutes;
//! - aliases `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//!   `@hourly`.
//!
//! Each field is a comma-separated list of `*`, `N`, `N-M`, `*/S`, `N-M/S` or `N/S` (from
//! N to the field's end). Months take `jan`..`dec`, days of the week `sun`..`sat`; both 0
//! and 7 are Sunday. As in Vixie cron, when both day fields are restricted (neither starts
//! with `*`) a day matches if *either* matches (`0 0 1 * mon`: the 1st and every Monday);
//! otherwise both must match (`0 0 */2 * mon`: odd days that are Mondays).
//!
//! The search skips whole months, days, hours and minutes that cannot match, so finding a
//! slot costs at most a few thousand steps even years away. Times are UTC: there is no
//! daylight-saving gap or repeat. Limits: no `L`, `W`, `#` or `?` (Quartz); no time zones;
//! sub-second parts of the input time are ignored (slots are whole seconds); a slot more
//! than 400 years away is reported as none.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed cron expression. `Display` (and serde) give back the expression as written
/// (whitespace normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
    with_seconds: bool,
}

/// How far the search looks before it gives up: covers every leap-day/weekday combination
/// (they repeat every 400 years in the Gregorian calendar).
const HORIZON_YEARS: i32 = 400;

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is accepted as Sunday and folded onto 0 after parsing.
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parse a cron expression; errors name the field and the problem, e.g.
    /// `field 2 (hour): 25 is out of range 0-23`.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(format!(
                    "unknown alias {trimmed:?}; use @yearly, @monthly, @weekly, @daily or @hourly, or 5 cron fields"
                ))
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (with_seconds, specs): (bool, &[&FieldSpec]) = match fields.len() {
            5 => (false, &[&MINUTE, &HOUR, &DAY, &MONTH, &WEEKDAY]),
            6 => (true, &[&SECOND, &MINUTE, &HOUR, &DAY, &MONTH, &WEEKDAY]),
            n => {
                return Err(format!(
                    "{trimmed:?} has {n} fields; a cron expression has 5 (minute hour day-of-month month day-of-week) or 6 (a leading second field)"
                ))
            }
        };
        let mut bits = [0u64; 6];
        let offset = if with_seconds { 0 } else { 1 };
        bits[0] = 1; // second 0 when there is no second field
        for (i, (field, spec)) in fields.iter().zip(specs).enumerate() {
            bits[i + offset] = parse_field(field, spec)
                .map_err(|why| format!("field {} ({}): {why}", i + 1, spec.name))?;
        }
        let weekdays = {
            let w = bits[5];
            (w | (w >> 7)) & 0x7f
        };
        let day_field = fields[fields.len() - 3];
        let weekday_field = fields[fields.len() - 1];
        let schedule = Schedule {
            expr: if trimmed.starts_with('@') {
                trimmed.to_string()
            } else {
                fields.join(" ")
            },
            seconds: bits[0],
            minutes: bits[1],
            hours: bits[2],
            days: bits[3],
            months: bits[4],
            weekdays,
            days_restricted: !day_field.starts_with('*'),
            weekdays_restricted: !weekday_field.starts_with('*'),
            with_seconds,
        };
        schedule.check_possible()?;
        Ok(schedule)
    }

    /// Whether the expression has a second field (6-field form).
    pub fn has_seconds(&self) -> bool {
        self.with_seconds
    }

    /// The first slot strictly after `t`, or `None` if there is none within 400 years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = t
            .naive_utc()
            .with_nanosecond(0)?
            .checked_add_signed(Duration::seconds(1))?;
        let limit = t.year().checked_add(HORIZON_YEARS)?;
        loop {
            if t.year() > limit {
                return None;
            }
            let date = t.date();
            if !has(self.months, t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = midnight(NaiveDate::from_ymd_opt(y, m, 1)?);
                continue;
            }
            if !self.day_matches(date) {
                t = midnight(date.succ_opt()?);
                continue;
            }
            let Some(h) = next_set(self.hours, t.hour()) else {
                t = midnight(date.succ_opt()?);
                continue;
            };
            if h > t.hour() {
                t = date.and_hms_opt(h, 0, 0)?;
            }
            let Some(m) = next_set(self.minutes, t.minute()) else {
                t = date.and_hms_opt(h, 0, 0)? + Duration::hours(1);
                continue;
            };
            if m > t.minute() {
                t = date.and_hms_opt(h, m, 0)?;
            }
            let Some(s) = next_set(self.seconds, t.second()) else {
                t = date.and_hms_opt(h, m, 0)? + Duration::minutes(1);
                continue;
            };
            return Some(date.and_hms_opt(h, m, s)?.and_utc());
        }
    }

    /// The most recent slot at or before `t`, or `None` if there is none within 400 years.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = t.naive_utc().with_nanosecond(0)?;
        let limit = t.year().checked_sub(HORIZON_YEARS)?;
        let one = Duration::seconds(1);
        loop {
            if t.year() < limit {
                return None;
            }
            let date = t.date();
            if !has(self.months, t.month()) {
                t = midnight(NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?)
                    .checked_sub_signed(one)?;
                continue;
            }
            if !self.day_matches(date) {
                t = midnight(date).checked_sub_signed(one)?;
                continue;
            }
            let Some(h) = prev_set(self.hours, t.hour()) else {
                t = midnight(date).checked_sub_signed(one)?;
                continue;
            };
            if h < t.hour() {
                t = date.and_hms_opt(h, 59, 59)?;
            }
            let Some(m) = prev_set(self.minutes, t.minute()) else {
                t = date.and_hms_opt(h, 0, 0)?.checked_sub_signed(one)?;
                continue;
            };
            if m < t.minute() {
                t = date.and_hms_opt(h, m, 59)?;
            }
            let Some(s) = prev_set(self.seconds, t.second()) else {
                t = date.and_hms_opt(h, m, 0)?.checked_sub_signed(one)?;
                continue;
            };
            return Some(date.and_hms_opt(h, m, s)?.and_utc());
        }
    }

    /// The slot a run is owed for at `now` when the last run was for `last_slot`: the
    /// most recent slot in `(last_slot, now]`, if any. However many slots were missed,
    /// this is one slot: catch-up runs once.
    pub fn due_slot(&self, last_slot: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.last_at_or_before(now).filter(|s| *s > last_slot)
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let day = has(self.days, date.day());
        let weekday = has(self.weekdays, date.weekday().num_days_from_sunday());
        if self.days_restricted && self.weekdays_restricted {
            day || weekday
        } else {
            day && weekday
        }
    }

    /// Refuse expressions that never match (`0 0 30 2 *`), so the daemon does not wait
    /// for a slot that cannot come.
    fn check_possible(&self) -> Result<(), String> {
        if self.days_restricted && self.weekdays_restricted {
            return Ok(()); // every week has the weekday
        }
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let possible = (1..=12u32)
            .filter(|m| has(self.months, *m))
            .any(|m| (1..=LONGEST[m as usize - 1]).any(|d| has(self.days, d)));
        if possible {
            Ok(())
        } else {
            Err(format!(
                "{:?} never matches: none of its days of the month occur in its months",
                self.expr
            ))
        }
    }
}

fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_hms_opt(0, 0, 0).expect("midnight exists")
}

fn has(bits: u64, n: u32) -> bool {
    bits & (1 << n) != 0
}

/// The smallest set bit >= `from`.
fn next_set(bits: u64, from: u32) -> Option<u32> {
    let rest = bits & (!0u64 << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

/// The largest set bit <= `from`.
fn prev_set(bits: u64, from: u32) -> Option<u32> {
    let rest = bits & (!0u64 >> (63 - from));
    (rest != 0).then(|| 63 - rest.leading_zeros())
}

fn parse_value(s: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if spec.names.len() == 12 { 1 } else { 0 });
    }
    let n: u32 = s.parse().map_err(|_| {
        if spec.names.is_empty() {
            format!("{s:?} is not a number")
        } else {
            format!(
                "{s:?} is neither a number nor one of {}",
                spec.names.join(", ")
            )
        }
    })?;
    if n < spec.min || n > spec.max {
        return Err(format!("{n} is out of range {}-{}", spec.min, spec.max));
    }
    Ok(n)
}

fn parse_field(field: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("{field:?} has an empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} in {item:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("step 0 in {item:?}; use a step of 1 or more"));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if a > b {
                return Err(format!(
                    "range {range:?} runs backwards; write it as two ranges"
                ));
            }
            (a, b)
        } else if range == "?" {
            return Err("\"?\" is not supported; use \"*\"".into());
        } else {
            let a = parse_value(range, spec)?;
            // `N/S` means from N to the end of the field, stepping S.
            (a, if step.is_some() { spec.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut n = lo;
        while n <= hi {
            bits |= 1 << n;
            n += step;
        }
    }
    Ok(bits)
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, from: &str) -> String {
        let s = Schedule::parse(expr).unwrap();
        s.next_after(at(from)).unwrap().to_rfc3339()
    }

    fn last(expr: &str, from: &str) -> String {
        let s = Schedule::parse(expr).unwrap();
        s.last_at_or_before(at(from)).unwrap().to_rfc3339()
    }

    #[test]
    fn next_after_is_strictly_after() {
        assert_eq!(
            next("0 3 * * *", "2026-11-21T03:00:00Z"),
            "2026-11-22T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2026-11-21T02:59:59.999Z"),
            "2026-11-21T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2026-12-31T03:00:00Z"),
            "2027-01-01T03:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-21T10:44:10Z"),
            "2026-11-21T10:45:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-21T23:45:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("30 9-17/4 * * *", "2026-11-21T13:31:00Z"),
            "2026-11-21T17:30:00+00:00"
        );
    }

    #[test]
    fn leap_days_and_short_months() {
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        // 2100 is not a leap year.
        assert_eq!(
            next("0 0 29 2 *", "2096-03-01T00:00:00Z"),
            "2104-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 31 * *", "2026-01-31T00:00:00Z"),
            "2026-03-31T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 31 * *", "2026-04-01T00:00:00Z"),
            "2026-05-31T00:00:00+00:00"
        );
        assert_eq!(
            last("0 0 31 * *", "2026-07-15T00:00:00Z"),
            "2026-05-31T00:00:00+00:00"
        );
        assert_eq!(
            last("0 0 29 2 *", "2027-01-01T00:00:00Z"),
            "2024-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-11-21 is a Saturday. Both restricted: the 1st OR a Monday.
        assert_eq!(
            next("0 0 1 * mon", "2026-11-21T00:00:00Z"),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * mon", "2026-11-30T00:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
        // A `*`-prefixed day field: both must match (odd days that are Mondays).
        assert_eq!(
            next("0 0 */2 * mon", "2026-11-23T00:00:00Z"),
            "2026-12-07T00:00:00+00:00"
        );
        // Only the weekday restricted.
        assert_eq!(
            next("0 12 * * mon-fri", "2026-11-21T00:00:00Z"),
            "2026-11-23T12:00:00+00:00"
        );
        // 7 and 0 are Sunday.
        assert_eq!(
            next("0 0 * * 7", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 0", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * fri-7", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
    }

    #[test]
    fn names_lists_seconds_and_aliases() {
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-02-01T00:00:00Z"),
            "2026-07-01T00:00:00+00:00"
        );
        assert_eq!(
            next("*/2 * * * * *", "2026-11-21T00:00:01Z"),
            "2026-11-21T00:00:02+00:00"
        );
        assert_eq!(
            next("*/2 * * * * *", "2026-11-21T00:00:58Z"),
            "2026-11-21T00:01:00+00:00"
        );
        assert_eq!(
            next("10/20 * * * * *", "2026-11-21T00:00:31Z"),
            "2026-11-21T00:00:50+00:00"
        );
        assert_eq!(
            next("@daily", "2026-11-21T05:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("@hourly", "2026-11-21T05:00:00Z"),
            "2026-11-21T06:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "2026-11-21T05:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            last("@monthly", "2026-11-21T05:00:00Z"),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            last("0 3 * * *", "2026-11-21T03:00:00.5Z"),
            "2026-11-21T03:00:00+00:00"
        );
        assert_eq!(
            last("0 3 * * *", "2026-11-21T02:59:59Z"),
            "2026-11-20T03:00:00+00:00"
        );
        assert_eq!(
            last("1-30/2 4 * * *", "2026-11-21T04:28:59Z"),
            "2026-11-21T04:27:00+00:00"
        );
    }

    #[test]
    fn display_gives_back_the_expression() {
        for e in [
            "0 3 * * *",
            "*/2 * * * * *",
            "@daily",
            "0 0 1,15 jan-jun mon-fri",
        ] {
            assert_eq!(Schedule::parse(e).unwrap().to_string(), e);
        }
        assert_eq!(
            Schedule::parse("  0  3 * *   * ").unwrap().to_string(),
            "0 3 * * *"
        );
        let s: Schedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*/5 * * * *\"");
        assert!(serde_json::from_str::<Schedule>("\"61 * * * *\"")
            .unwrap_err()
            .to_string()
            .contains("field 1 (minute): 61 is out of range 0-59"));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |e: &str| Schedule::parse(e).unwrap_err();
        assert_eq!(err("0 25 * * *"), "field 2 (hour): 25 is out of range 0-23");
        assert_eq!(
            err("0 0 0 * *"),
            "field 3 (day-of-month): 0 is out of range 1-31"
        );
        assert_eq!(
            err("* * * * * 8"),
            "field 6 (day-of-week): 8 is out of range 0-7"
        );
        assert!(err("0 0 * foo *").starts_with("field 4 (month): \"foo\" is neither a number"));
        assert!(err("*/0 * * * *").contains("step 0"));
        assert!(err("5-1 * * * *").contains("runs backwards"));
        assert!(err("0 0 * *").contains("has 4 fields"));
        assert!(err("@reboot").contains("unknown alias"));
        assert!(err("0 0 ? * mon").contains("not supported"));
        assert!(err("0 0 30 2 *").contains("never matches"));
        assert!(err("0 0 31 4,6,9,11 *").contains("never matches"));
        assert!(err("1,,2 * * * *").contains("empty list item"));
    }

    /// A tiny deterministic generator: no dependency, reproducible failures.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A slot found by brute force, stepping `step` seconds from the next multiple of it
    /// (only for small gaps).
    fn brute_next(
        s: &Schedule,
        t: DateTime<Utc>,
        step: i64,
        max_steps: i64,
    ) -> Option<DateTime<Utc>> {
        let secs = t.timestamp() + 1;
        let first = secs + (step - secs.rem_euclid(step)) % step;
        let mut c = DateTime::from_timestamp(first, 0).unwrap();
        for _ in 0..max_steps {
            let n = c.naive_utc();
            if has(s.months, n.month())
                && s.day_matches(n.date())
                && has(s.hours, n.hour())
                && has(s.minutes, n.minute())
                && has(s.seconds, n.second())
            {
                return Some(c);
            }
            c += Duration::seconds(step);
        }
        None
    }

    #[test]
    fn last_at_or_before_inverts_next_after_on_random_schedules() {
        let exprs = [
            "0 3 * * *",
            "*/7 * * * * *",
            "0 0 31 * *",
            "0 0 29 2 *",
            "15 14 1 * mon",
            "0 0 */2 * mon",
            "5-50/5 1,13 * jan,apr,dec sat-7",
            "0 0 1 1 *",
            "59 23 28-31 * *",
            "0 */6 * * 1-5",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for expr in exprs {
            let s = Schedule::parse(expr).unwrap();
            for _ in 0..200 {
                // Any time between 1990 and 2110.
                let secs = 631_152_000 + (xorshift(&mut state) % 3_786_825_600) as i64;
                let t = DateTime::from_timestamp(secs, 0).unwrap();
                let n = s.next_after(t).unwrap();
                assert!(n > t, "{expr} from {t}");
                assert_eq!(s.last_at_or_before(n), Some(n), "{expr} from {t}");
                // Nothing in between: the slot before n is at or before t.
                let p = s.last_at_or_before(n - Duration::seconds(1)).unwrap();
                assert!(p <= t, "{expr}: {p} lies between {t} and {n}");
                assert_eq!(s.next_after(p), Some(n), "{expr} from {p}");
            }
        }
    }

    #[test]
    fn agrees_with_brute_force() {
        let dense = [
            "*/7 * * * * *",
            "*/13 */5 * * * *",
            "0 */10 * * * *",
            "3,59 59 * * * *",
        ];
        // Day rules, checked minute by minute over up to 100 days.
        let sparse = [
            "0 0 1 * mon",
            "30 12 */2 * fri",
            "0 0 13 * fri",
            "0 0 31 * *",
            "0 6 * */3 sun",
        ];
        let mut state = 42;
        for (exprs, step, steps, samples) in
            [(&dense[..], 1, 7200, 100), (&sparse[..], 60, 144_000, 20)]
        {
            for expr in exprs {
                let s = Schedule::parse(expr).unwrap();
                for _ in 0..samples {
                    let secs = 1_700_000_000 + (xorshift(&mut state) % 100_000_000) as i64;
                    let t = DateTime::from_timestamp(secs, 0).unwrap();
                    let want = brute_next(&s, t, step, steps);
                    assert!(want.is_some(), "{expr}: widen the brute-force window");
                    assert_eq!(s.next_after(t), want, "{expr} from {t}");
                }
            }
        }
    }

    #[test]
    fn catch_up_is_one_slot_however_many_were_missed() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let last = at("2026-11-20T10:00:00Z");
        assert_eq!(
            s.due_slot(last, at("2026-11-21T05:30:00Z")),
            Some(at("2026-11-21T05:00:00Z"))
        );
        assert_eq!(s.due_slot(last, at("2026-11-20T10:59:59Z")), None);
        assert_eq!(
            s.due_slot(last, at("2026-11-20T11:00:00Z")),
            Some(at("2026-11-20T11:00:00Z"))
        );
    }
}
