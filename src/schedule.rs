//! Crontab expression → next fire time.
//!
//! This module owns the schedule syntax and its meaning in a time zone. It is
//! pure: no clock and no I/O; callers pass the instant to search from and the
//! zone to read the fields in.
//!
//! # Syntax
//! Ordinary crontab with Vixie cron semantics:
//! - 5 fields: `minute hour day-of-month month day-of-week`; or 6 fields with
//!   seconds first (`*/10 * * * * *`).
//! - Each field is a comma-separated list of `*`, `N`, `N-M`, `*/S`, `N-M/S`
//!   or `N/S` (from `N` to the field's maximum, every `S`).
//! - Months take `jan`–`dec` and weekdays `sun`–`sat`, in any case. Weekdays
//!   count from Sunday = 0, and 7 is Sunday too, so `1-5` is Monday to Friday.
//!   A weekday range may end on Sunday (`fri-sun`, `5-7`).
//! - When both day fields are restricted (neither starts with `*`), a day
//!   matching either fires: `0 0 1 * mon` runs on the 1st and on every
//!   Monday. When either starts with `*`, a day must match both.
//! - Aliases: `@hourly`, `@daily` = `@midnight`, `@weekly` (Sunday 00:00),
//!   `@monthly`, `@yearly` = `@annually`.
//!
//! # Time zones and daylight saving
//! Fields are wall-clock time in the given zone. Clock changes are handled so
//! that no pass runs twice and no day loses its passes:
//! - A schedule whose hour field names particular hours (`30 2 * * *`,
//!   `*/15 9-17 * * *`) fires each matching wall-clock time once, at the first
//!   instant the clock reads that time or later. A time skipped by a
//!   spring-forward gap therefore fires at the first instant after the gap
//!   (02:30 in Berlin on 2026-03-29 fires at 03:00 CEST), several skipped
//!   times fire together once, and a time repeated by fall-back fires at its
//!   first occurrence only.
//! - A schedule that runs every hour (hour field covering 0–23, such as
//!   `*/15 * * * *` or `@hourly`) fires at every real instant whose wall-clock
//!   reading matches, like a job tied to real hours: skipped times do not fire
//!   (the hour after the gap has its own passes), and both occurrences of a
//!   repeated hour fire, as they are different instants an hour apart.
//!
//! The Gregorian calendar, weekdays included, repeats every 400 years, so the
//! search stops there: an expression that never matches (`0 0 30 2 *`) gives
//! `None` after a bounded, fast search.

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc,
};
use chrono_tz::{GapInfo, Tz};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as the user wrote it (surrounding whitespace trimmed),
    /// for log lines and error messages.
    pub text: String,
    /// Matching seconds: bit `s` set for second `s` (0–59). `{0}` for 5 fields.
    seconds: u64,
    /// Matching minutes: bit `m` for minute `m` (0–59).
    minutes: u64,
    /// Matching hours: bit `h` for hour `h` (0–23). All 24 selects the
    /// every-hour daylight-saving rule (see the module docs).
    hours: u64,
    /// Matching days of the month: bit `d` for day `d` (1–31).
    days_of_month: u64,
    /// Matching months: bit `m` for month `m` (1–12).
    months: u64,
    /// Matching weekdays: bit `w` for `w` days after Sunday (0–6); 7 is folded
    /// into 0 at parse time.
    days_of_week: u64,
    /// How the two day fields combine (the Vixie rule).
    day_rule: DayRule,
}

/// How day-of-month and day-of-week combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    /// One of the fields starts with `*`: a day must match both.
    Both,
    /// Both fields are restricted: a day matching either fires.
    Either,
}

/// Why an expression was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// What the field-count error says is valid.
const SHAPES: &str = "expected 5 fields (minute hour day-of-month month day-of-week), \
                      6 fields (seconds first) or @hourly/@daily/@weekly/@monthly/@yearly";

/// Every hour of the day, as an hour bit set.
const ALL_HOURS: u64 = (1 << 24) - 1;

/// How far ahead the search looks: one Gregorian cycle plus a margin, after
/// which dates and weekdays repeat, so nothing found means never.
const HORIZON_YEARS: i32 = 401;

/// Upper bound on wall-clock candidates examined per search. Only reachable
/// through pathological zone data (a day-long repeat at one-second steps);
/// it keeps every call bounded.
const MAX_CANDIDATES: u32 = 200_000;

/// The range and spelling of one crontab field.
struct Field {
    /// Name used in error messages.
    name: &'static str,
    /// Smallest valid number.
    min: u32,
    /// Largest valid number.
    max: u32,
    /// Three-letter names; `names[i]` means `min + i`.
    names: &'static [&'static str],
    /// What a valid value looks like, for error messages.
    valid: &'static str,
    /// Day of week only: a range ending on Sunday (0) ends on 7 instead.
    sunday_is_seven: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    valid: "a number 0-59",
    sunday_is_seven: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    valid: "a number 0-59",
    sunday_is_seven: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    valid: "a number 0-23",
    sunday_is_seven: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    valid: "a number 1-31",
    sunday_is_seven: false,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    valid: "a number 1-12 or a month name (jan-dec)",
    sunday_is_seven: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    valid: "a number 0-7 (0 and 7 are Sunday) or a day name (sun-sat)",
    sunday_is_seven: true,
};

impl Schedule {
    /// Parse a 5-field crontab, a 6-field (seconds first) expression, or an `@alias`.
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let text = expr.trim();
        let fields: Vec<&str> = match text {
            "" => {
                return Err(ScheduleError(format!(
                    "schedule is empty; {SHAPES}, e.g. `0 3 * * *`"
                )))
            }
            alias if alias.starts_with('@') => expand_alias(alias)?.split(' ').collect(),
            _ => text.split_whitespace().collect(),
        };
        let (seconds, minute, hour, dom, month, dow) = match fields[..] {
            [minute, hour, dom, month, dow] => (1, minute, hour, dom, month, dow),
            [second, minute, hour, dom, month, dow] => {
                (parse_field(&SECOND, second)?, minute, hour, dom, month, dow)
            }
            _ => {
                return Err(ScheduleError(format!(
                    "{SHAPES}; got {} fields",
                    fields.len()
                )))
            }
        };
        let mut days_of_week = parse_field(&DAY_OF_WEEK, dow)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        Ok(Self {
            text: text.to_string(),
            seconds,
            minutes: parse_field(&MINUTE, minute)?,
            hours: parse_field(&HOUR, hour)?,
            days_of_month: parse_field(&DAY_OF_MONTH, dom)?,
            months: parse_field(&MONTH, month)?,
            days_of_week,
            day_rule: if dom.starts_with('*') || dow.starts_with('*') {
                DayRule::Both
            } else {
                DayRule::Either
            },
        })
    }

    /// The first fire time strictly after `after`, read in `tz`, or `None` if
    /// the expression never matches again. See the module docs for how
    /// daylight-saving gaps and repeats are handled.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let every_hour = self.hours == ALL_HOURS;
        let offset = tz.offset_from_utc_datetime(&after.naive_utc()).fix();
        // `None` only within hours of the end of chrono's range.
        let wall = after
            .naive_utc()
            .checked_add_offset(offset)?
            .with_nanosecond(0)?;
        let one_second = TimeDelta::seconds(1);

        // Wall times up to `wall` have all fired already, except in one case:
        // `after` lies in the first pass through a repeated hour and the
        // schedule fires in the second pass too. Start that search one
        // repeat-length earlier.
        let mut cursor = match tz.from_local_datetime(&wall) {
            LocalResult::Ambiguous(first, second)
                if every_hour && first.offset().fix() == offset =>
            {
                let repeat = first.offset().fix().local_minus_utc()
                    - second.offset().fix().local_minus_utc();
                wall.checked_sub_signed(TimeDelta::seconds(i64::from(repeat.max(0))))?
            }
            _ => wall.checked_add_signed(one_second)?,
        };

        // Matching wall times come in ascending order. Their first-occurrence
        // instants ascend too, and a second occurrence always follows its first,
        // so once a first occurrence reaches the best instant found, no later
        // wall time can beat it.
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_CANDIDATES {
            let Some(candidate) = self.next_wall_time(cursor) else {
                return best;
            };
            let first = match tz.from_local_datetime(&candidate) {
                LocalResult::Single(at) => at.with_timezone(&Utc),
                LocalResult::Ambiguous(first, second) => {
                    if every_hour {
                        best = earliest_after(best, second.with_timezone(&Utc), after);
                    }
                    first.with_timezone(&Utc)
                }
                LocalResult::None => {
                    let gap_end = GapInfo::new(&candidate, &tz).and_then(|gap| gap.end);
                    match gap_end {
                        Some(end) if !every_hour => end.with_timezone(&Utc),
                        // Every-hour schedules skip the missing wall times.
                        Some(end) if end.naive_local() > candidate => {
                            cursor = end.naive_local();
                            continue;
                        }
                        _ => {
                            cursor = candidate.checked_add_signed(one_second)?;
                            continue;
                        }
                    }
                }
            };
            best = earliest_after(best, first, after);
            if best.is_some_and(|best| first >= best) {
                return best;
            }
            cursor = candidate.checked_add_signed(one_second)?;
        }
        best
    }

    /// The first wall-clock time at or after `from` that the fields match,
    /// ignoring time zones, within the search horizon.
    fn next_wall_time(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = from.date();
        let last_year = start.year().checked_add(HORIZON_YEARS)?;
        let (mut year, mut month) = (start.year(), start.month());
        loop {
            if self.months & (1 << month) != 0 {
                let days = self.day_mask(year, month)?;
                let same_month = year == start.year() && month == start.month();
                let mut day = next_bit(days, if same_month { start.day() } else { 1 });
                while let Some(d) = day {
                    let date = NaiveDate::from_ymd_opt(year, month, d)?;
                    let time_from = if date == start {
                        from.time()
                    } else {
                        NaiveTime::MIN
                    };
                    if let Some(time) = self.first_time_from(time_from) {
                        return Some(date.and_time(time));
                    }
                    day = next_bit(days, d + 1);
                }
            }
            if let Some(next) = next_bit(self.months, month + 1) {
                month = next;
            } else {
                year += 1;
                month = next_bit(self.months, 1)?;
                if year > last_year {
                    return None;
                }
            }
        }
    }

    /// The days of `month` that match, as a bit set (bit `d` for day `d`).
    fn day_mask(&self, year: i32, month: u32) -> Option<u64> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let length = match month {
            2 if first.leap_year() => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let in_month = ((1u64 << length) - 1) << 1;
        // Day `d` falls on weekday (first + d - 1) % 7: build one week starting
        // on day 1, then repeat it across the month.
        let first_weekday = first.weekday().num_days_from_sunday();
        let week = (0..7).fold(0u64, |week, k| {
            if self.days_of_week & (1 << ((first_weekday + k) % 7)) == 0 {
                week
            } else {
                week | 1 << k
            }
        });
        let by_weekday = (week | week << 7 | week << 14 | week << 21 | week << 28) << 1;
        let by_date = self.days_of_month;
        let days = match self.day_rule {
            DayRule::Both => by_date & by_weekday,
            DayRule::Either => by_date | by_weekday,
        };
        Some(days & in_month)
    }

    /// The first matching time of day at or after `from`, if any is left.
    fn first_time_from(&self, from: NaiveTime) -> Option<NaiveTime> {
        let (hour0, minute0, second0) = (from.hour(), from.minute(), from.second());
        let mut hour = next_bit(self.hours, hour0);
        while let Some(h) = hour {
            let mut minute = next_bit(self.minutes, if h == hour0 { minute0 } else { 0 });
            while let Some(m) = minute {
                let second_from = if h == hour0 && m == minute0 {
                    second0
                } else {
                    0
                };
                if let Some(s) = next_bit(self.seconds, second_from) {
                    return NaiveTime::from_hms_opt(h, m, s);
                }
                minute = next_bit(self.minutes, m + 1);
            }
            hour = next_bit(self.hours, h + 1);
        }
        None
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `best` or `at`, whichever is earlier, counting only instants after `after`.
fn earliest_after(
    best: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match best {
        Some(best) if best <= at => Some(best),
        _ if at > after => Some(at),
        _ => best,
    }
}

/// The 5-field expression an `@alias` stands for.
fn expand_alias(alias: &str) -> Result<&'static str, ScheduleError> {
    const VALID: &str = "valid aliases are @hourly, @daily, @midnight, @weekly, @monthly, \
                         @yearly and @annually";
    match alias.to_ascii_lowercase().as_str() {
        "@hourly" => Ok("0 * * * *"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@monthly" => Ok("0 0 1 * *"),
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@reboot" => Err(ScheduleError(format!(
            "`@reboot` is not supported: passes run on a schedule; {VALID}"
        ))),
        _ if alias.split_whitespace().nth(1).is_some() => Err(ScheduleError(format!(
            "`{alias}`: an @alias stands alone, without fields; {VALID}"
        ))),
        _ => Err(ScheduleError(format!("unknown alias `{alias}`; {VALID}"))),
    }
}

/// Parse one field into a bit set of its values.
fn parse_field(field: &Field, text: &str) -> Result<u64, ScheduleError> {
    text.split(',')
        .try_fold(0, |bits, item| Ok(bits | parse_item(field, item)?))
        .map_err(|problem: String| {
            ScheduleError(format!("{} field `{text}`: {problem}", field.name))
        })
}

/// Parse one list item (`*`, `N`, `N-M`, each with an optional `/S`).
fn parse_item(field: &Field, item: &str) -> Result<u64, String> {
    if item.is_empty() {
        return Err("empty list item; separate values with single commas".to_string());
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step)?)),
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        (field.min, field.max)
    } else if let Some((low, high)) = range.split_once('-') {
        let low = parse_value(field, low)?;
        let mut high = parse_value(field, high)?;
        if field.sunday_is_seven && high == 0 && low > 0 {
            // `fri-sun`: Sunday is also 7, so the range runs to the week's end.
            high = 7;
        }
        if low > high {
            return Err(format!(
                "range `{range}` runs backwards; write the smaller value first"
            ));
        }
        (low, high)
    } else {
        let value = parse_value(field, range)?;
        // `N/S` runs from N to the field's maximum, every S.
        (value, if step.is_some() { field.max } else { value })
    };
    let step = step.unwrap_or(1);
    let mut bits = 0;
    let mut value = Some(low);
    while let Some(v) = value.filter(|&v| v <= high) {
        bits |= 1 << v;
        value = v.checked_add(step);
    }
    Ok(bits)
}

/// Parse the `S` of `/S`.
fn parse_step(step: &str) -> Result<u32, String> {
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step `/{step}` is not a whole number of 1 or more"));
    }
    match step.parse::<u32>() {
        Ok(0) => Err("step `/0` must be at least 1".to_string()),
        Ok(step) => Ok(step),
        // Only digits, so too large: it selects just the first value.
        Err(_) => Ok(u32::MAX),
    }
}

/// Parse a number or a name, checking the field's range.
fn parse_value(field: &Field, text: &str) -> Result<u32, String> {
    let (min, max, valid) = (field.min, field.max, field.valid);
    if text.is_empty() {
        return Err(format!("a value is missing; expected {valid}"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(format!("{text} is out of range {min}-{max}")),
        };
    }
    field
        .names
        .iter()
        .zip(min..)
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, value)| value)
        .ok_or_else(|| format!("`{text}` is not {valid}"))
}

/// The smallest set bit at position `from` or above.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= u64::BITS {
        return None;
    }
    let rest = bits & (u64::MAX << from);
    (rest != 0).then(|| rest.trailing_zeros())
}
