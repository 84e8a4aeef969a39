//! Schedule parsing and next-fire computation: crontab semantics, daylight
//! saving, errors, and property tests against an independent brute-force model.

use std::time::{Duration, Instant};

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
    Weekday,
};
use chrono_tz::Tz;
use imagegc::schedule::Schedule;
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn schedule(expr: &str) -> Schedule {
    Schedule::parse(expr).unwrap_or_else(|e| panic!("`{expr}` should parse: {e}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn wall(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_opt(h, mi, s)
        .unwrap()
}

/// Every fire strictly after `from` and up to `until`, in order.
fn fires(expr: &str, tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let schedule = schedule(expr);
    let mut out = Vec::new();
    let mut at = from;
    while let Some(next) = schedule.next_after(at, tz) {
        assert!(
            next > at,
            "`{expr}`: next_after({at}) = {next} is not later"
        );
        if next > until {
            break;
        }
        out.push(next);
        at = next;
    }
    out
}

/// Fires as wall-clock times in `tz`.
fn local_fires(
    expr: &str,
    tz: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<NaiveDateTime> {
    fires(expr, tz, from, until)
        .into_iter()
        .map(|at| at.with_timezone(&tz).naive_local())
        .collect()
}

/// Does `next_after` agree for two spellings, fire by fire, over a year?
fn same_fires(a: &str, b: &str) {
    let (from, until) = (utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0));
    assert_eq!(
        fires(a, Tz::UTC, from, until),
        fires(b, Tz::UTC, from, until),
        "`{a}` and `{b}` should fire at the same times"
    );
}

// ---------------------------------------------------------------- crontab semantics

#[test]
fn every_fifteen_minutes_fires_on_the_quarter_hours() {
    let got = fires(
        "*/15 * * * *",
        Tz::UTC,
        utc(2026, 5, 4, 9, 7, 30),
        utc(2026, 5, 4, 10, 30, 0),
    );
    let want = [
        utc(2026, 5, 4, 9, 15, 0),
        utc(2026, 5, 4, 9, 30, 0),
        utc(2026, 5, 4, 9, 45, 0),
        utc(2026, 5, 4, 10, 0, 0),
        utc(2026, 5, 4, 10, 15, 0),
        utc(2026, 5, 4, 10, 30, 0),
    ];
    assert_eq!(got, want);
}

#[test]
fn a_fire_time_itself_is_not_returned_again() {
    let every_quarter = schedule("*/15 * * * *");
    let at = utc(2026, 5, 4, 9, 15, 0);
    assert_eq!(
        every_quarter.next_after(at, Tz::UTC),
        Some(utc(2026, 5, 4, 9, 30, 0))
    );
    let just_before = at - TimeDelta::nanoseconds(1);
    assert_eq!(every_quarter.next_after(just_before, Tz::UTC), Some(at));
}

#[test]
fn weekday_mornings_fire_monday_to_friday_at_three_only() {
    // 2026-11-28 is a Saturday.
    assert_eq!(
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap().weekday(),
        Weekday::Sat
    );
    let got = fires(
        "0 3 * * 1-5",
        Tz::UTC,
        utc(2026, 11, 28, 0, 0, 0),
        utc(2026, 12, 5, 23, 59, 59),
    );
    let want: Vec<_> = (30..=30)
        .map(|d| utc(2026, 11, d, 3, 0, 0))
        .chain((1..=4).map(|d| utc(2026, 12, d, 3, 0, 0)))
        .collect();
    assert_eq!(
        got, want,
        "Mon 30 Nov to Fri 4 Dec, nothing on the weekends"
    );
}

#[test]
fn both_day_fields_restricted_fires_on_either_day() {
    // June 2026: Monday 1st, then Mondays 8, 15, 22, 29; July 1st is a Wednesday.
    let got = fires(
        "0 0 1 * 1",
        Tz::UTC,
        utc(2026, 5, 31, 0, 0, 0),
        utc(2026, 7, 7, 0, 0, 0),
    );
    let want: Vec<_> = [(6, 1), (6, 8), (6, 15), (6, 22), (6, 29), (7, 1), (7, 6)]
        .iter()
        .map(|&(m, d)| utc(2026, m, d, 0, 0, 0))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_day_field_starting_with_star_makes_both_day_fields_required() {
    // `*/2` counts as unrestricted (Vixie): only odd days that are Mondays.
    let got = fires(
        "0 0 */2 * mon",
        Tz::UTC,
        utc(2026, 6, 1, 0, 0, 0),
        utc(2026, 7, 1, 0, 0, 0),
    );
    assert_eq!(got, [utc(2026, 6, 15, 0, 0, 0), utc(2026, 6, 29, 0, 0, 0)]);
    // Spelled without the star, the same days combine with OR.
    let either = fires(
        "0 0 1-31/2 * mon",
        Tz::UTC,
        utc(2026, 6, 1, 0, 0, 0),
        utc(2026, 7, 1, 0, 0, 0),
    );
    assert_eq!(either.len(), 15 + 2, "15 odd days plus Mondays 8 and 22");
}

#[test]
fn sunday_is_both_zero_and_seven() {
    same_fires("0 0 * * 0", "0 0 * * 7");
    same_fires("0 0 * * 0", "0 0 * * sun");
    let sundays = fires(
        "0 0 * * 7",
        Tz::UTC,
        utc(2026, 1, 1, 0, 0, 0),
        utc(2027, 1, 1, 0, 0, 0),
    );
    assert_eq!(sundays.len(), 52);
    assert!(sundays.iter().all(|at| at.weekday() == Weekday::Sun));
}

#[test]
fn day_names_work_in_any_case_and_in_ranges() {
    same_fires("0 3 * * mon-fri", "0 3 * * 1-5");
    same_fires("0 3 * * MON-Fri", "0 3 * * 1-5");
    same_fires("0 3 * * Sat,sun", "0 3 * * 6,0");
    same_fires("0 3 * * fri-sun", "0 3 * * 5-7");
    same_fires("0 3 * * 0-7", "0 3 * * *");
}

#[test]
fn month_names_select_months() {
    same_fires("0 0 1 jan,JUL *", "0 0 1 1,7 *");
    same_fires("0 0 1 Mar-may *", "0 0 1 3-5 *");
    let got = fires(
        "0 0 1 jan,jul *",
        Tz::UTC,
        utc(2026, 1, 1, 0, 0, 0),
        utc(2027, 12, 31, 0, 0, 0),
    );
    assert_eq!(
        got,
        [
            utc(2026, 7, 1, 0, 0, 0),
            utc(2027, 1, 1, 0, 0, 0),
            utc(2027, 7, 1, 0, 0, 0)
        ]
    );
}

#[test]
fn steps_count_from_the_start_of_their_range() {
    let minutes = |expr: &str| -> Vec<u32> {
        fires(
            expr,
            Tz::UTC,
            utc(2026, 1, 1, 0, 0, 0) - TimeDelta::seconds(1),
            utc(2026, 1, 1, 0, 59, 59),
        )
        .iter()
        .map(Timelike::minute)
        .collect()
    };
    assert_eq!(minutes("5/10 * * * *"), [5, 15, 25, 35, 45, 55]);
    assert_eq!(minutes("1-30/5 * * * *"), [1, 6, 11, 16, 21, 26]);
    assert_eq!(minutes("*/20 * * * *"), [0, 20, 40]);
    assert_eq!(minutes("0,7,50-52 * * * *"), [0, 7, 50, 51, 52]);
    assert_eq!(minutes("*/90 * * * *"), [0], "a step wider than the field");
}

#[test]
fn six_fields_put_seconds_first() {
    let got = fires(
        "*/10 * * * * *",
        Tz::UTC,
        utc(2026, 5, 4, 9, 0, 45),
        utc(2026, 5, 4, 9, 1, 30),
    );
    let want = [
        utc(2026, 5, 4, 9, 0, 50),
        utc(2026, 5, 4, 9, 1, 0),
        utc(2026, 5, 4, 9, 1, 10),
        utc(2026, 5, 4, 9, 1, 20),
        utc(2026, 5, 4, 9, 1, 30),
    ];
    assert_eq!(got, want);
    same_fires("0 30 4 * * *", "30 4 * * *");
}

#[test]
fn aliases_fire_like_their_expansions() {
    same_fires("@hourly", "0 * * * *");
    same_fires("@daily", "0 0 * * *");
    same_fires("@midnight", "0 0 * * *");
    same_fires("@weekly", "0 0 * * 0");
    same_fires("@monthly", "0 0 1 * *");
    same_fires("@yearly", "0 0 1 1 *");
    same_fires("@annually", "0 0 1 1 *");
    same_fires("@Daily", "0 0 * * *");
    let weekly = schedule("@weekly");
    assert_eq!(
        weekly.next_after(utc(2026, 11, 28, 12, 0, 0), Tz::UTC),
        Some(utc(2026, 11, 29, 0, 0, 0)),
        "Saturday noon → Sunday midnight"
    );
}

#[test]
fn fields_are_read_in_the_given_time_zone() {
    let three_am = schedule("0 3 * * *");
    let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
    // 03:00 in Tokyo (UTC+9) is 18:00 UTC the day before.
    assert_eq!(
        three_am.next_after(utc(2026, 5, 4, 0, 0, 0), tokyo),
        Some(utc(2026, 5, 4, 18, 0, 0))
    );
}

#[test]
fn display_shows_what_the_user_wrote() {
    assert_eq!(schedule("*/15 * * * *").to_string(), "*/15 * * * *");
    assert_eq!(schedule("  @daily ").to_string(), "@daily");
    assert_eq!(schedule("0 3 * * MON-FRI").text, "0 3 * * MON-FRI");
}

// ---------------------------------------------------------------- daylight saving

#[test]
fn a_time_skipped_by_spring_forward_fires_once_at_the_end_of_the_gap() {
    let berlin = chrono_tz::Europe::Berlin;
    // 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    let got = local_fires(
        "30 2 * * *",
        berlin,
        utc(2026, 3, 27, 12, 0, 0),
        utc(2026, 3, 31, 12, 0, 0),
    );
    assert_eq!(
        got,
        [
            wall(2026, 3, 28, 2, 30, 0),
            wall(2026, 3, 29, 3, 0, 0),
            wall(2026, 3, 30, 2, 30, 0),
            wall(2026, 3, 31, 2, 30, 0),
        ]
    );
    // Several skipped times collapse into one fire.
    let got = local_fires(
        "*/20 2 * * *",
        berlin,
        utc(2026, 3, 28, 12, 0, 0),
        utc(2026, 3, 29, 23, 0, 0),
    );
    assert_eq!(got, [wall(2026, 3, 29, 3, 0, 0)]);
}

#[test]
fn a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
    let berlin = chrono_tz::Europe::Berlin;
    // 2026-10-25 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    let got = fires(
        "30 2 * * *",
        berlin,
        utc(2026, 10, 23, 12, 0, 0),
        utc(2026, 10, 27, 12, 0, 0),
    );
    assert_eq!(
        got,
        [
            utc(2026, 10, 24, 0, 30, 0),
            utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST, the first one
            utc(2026, 10, 26, 1, 30, 0),
            utc(2026, 10, 27, 1, 30, 0),
        ]
    );
    // Asking from inside the repeated hour does not fire the second 02:30.
    let second_pass = utc(2026, 10, 25, 1, 10, 0); // 02:10 CET
    assert_eq!(
        schedule("30 2 * * *").next_after(second_pass, berlin),
        Some(utc(2026, 10, 26, 1, 30, 0))
    );
}

#[test]
fn a_daily_job_in_new_york_fires_every_day_exactly_once_at_three_through_both_changes() {
    let new_york = chrono_tz::America::New_York;
    // 2026: spring forward on 8 March, fall back on 1 November.
    let got = local_fires(
        "0 3 * * *",
        new_york,
        utc(2026, 1, 1, 12, 0, 0),
        utc(2027, 1, 1, 0, 0, 0),
    );
    let want: Vec<_> = NaiveDate::from_ymd_opt(2026, 1, 2)
        .unwrap()
        .iter_days()
        .take_while(|d| d.year() == 2026)
        .map(|d| d.and_hms_opt(3, 0, 0).unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn an_every_hour_schedule_follows_real_hours_through_both_changes() {
    let berlin = chrono_tz::Europe::Berlin;
    let count_on = |day: u32, month: u32| {
        local_fires(
            "@hourly",
            berlin,
            utc(2026, month, day - 1, 12, 0, 0),
            utc(2026, month, day + 1, 12, 0, 0),
        )
        .iter()
        .filter(|at| at.day() == day)
        .count()
    };
    assert_eq!(count_on(29, 3), 23, "spring-forward day has 23 hours");
    assert_eq!(count_on(25, 10), 25, "fall-back day has 25 hours");

    // Every quarter hour stays exactly 15 real minutes apart.
    for (from, until) in [
        (utc(2026, 3, 28, 22, 0, 0), utc(2026, 3, 29, 4, 0, 0)),
        (utc(2026, 10, 24, 22, 0, 0), utc(2026, 10, 25, 4, 0, 0)),
    ] {
        let got = fires("*/15 * * * *", berlin, from, until);
        assert!(got
            .windows(2)
            .all(|pair| pair[1] - pair[0] == TimeDelta::minutes(15)));
        assert_eq!(got.len(), 6 * 4);
    }
}

#[test]
fn schedules_with_fixed_hours_fire_every_local_day_and_never_repeat_a_wall_time() {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",    // changes at midnight
        "Australia/Lord_Howe", // 30-minute shift
        "Pacific/Chatham",     // shifts at 02:45
        "America/Havana",      // changes at midnight
        "Asia/Kolkata",
        "UTC",
    ];
    // (expression, fires per ordinary day)
    let expressions = [
        ("0 0 * * *", 1),
        ("30 0 * * *", 1),
        ("30 2 * * *", 1),
        ("45 2 * * *", 1),
        ("0 3 * * *", 1),
        ("59 23 * * *", 1),
        ("*/15 2 * * *", 4),
        ("0 0-3 * * *", 4),
    ];
    for zone in zones {
        let tz: Tz = zone.parse().unwrap();
        for (expr, per_day) in expressions {
            let got = local_fires(
                expr,
                tz,
                utc(2025, 12, 31, 0, 0, 0),
                utc(2027, 1, 2, 0, 0, 0),
            );
            assert!(
                got.windows(2).all(|pair| pair[0] < pair[1]),
                "{zone} `{expr}`: a wall time fired twice"
            );
            let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            while day.year() == 2026 {
                let count = got.iter().filter(|at| at.date() == day).count();
                assert!(
                    (1..=per_day).contains(&count),
                    "{zone} `{expr}` fired {count} times on {day}"
                );
                if per_day == 1 {
                    assert_eq!(count, 1, "{zone} `{expr}` on {day}");
                }
                day = day.succ_opt().unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------- limits and errors

#[test]
fn an_impossible_date_gives_none_quickly() {
    let started = Instant::now();
    for expr in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"] {
        assert_eq!(
            schedule(expr).next_after(utc(2026, 1, 1, 0, 0, 0), chrono_tz::Europe::Berlin),
            None,
            "`{expr}`"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_rare_date_is_found_years_ahead() {
    // No leap day between 2096 and 2104.
    assert_eq!(
        schedule("0 0 29 2 *").next_after(utc(2096, 3, 1, 0, 0, 0), Tz::UTC),
        Some(utc(2104, 2, 29, 0, 0, 0))
    );
    // With `*/31` (only the 1st) the weekday is required too: a Friday the 1st.
    assert_eq!(
        schedule("0 0 */31 * fri").next_after(utc(2026, 3, 14, 0, 0, 0), Tz::UTC),
        Some(utc(2026, 5, 1, 0, 0, 0))
    );
}

#[test]
fn extreme_instants_do_not_panic() {
    let zones = [
        Tz::UTC,
        chrono_tz::Pacific::Kiritimati,
        chrono_tz::Pacific::Pago_Pago,
        chrono_tz::America::Sitka,
    ];
    for expr in ["* * * * * *", "0 0 29 2 *", "0 * * * *", "0 0 30 2 *"] {
        for tz in zones {
            for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let next = schedule(expr).next_after(at, tz);
                assert!(next.is_none_or(|next| next > at));
            }
        }
    }
}

#[test]
fn bad_expressions_are_refused_with_a_reason() {
    let cases = [
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("* * *", "expected 5 fields (minute hour day-of-month month day-of-week), 6 fields (seconds first) or @hourly/@daily/@weekly/@monthly/@yearly; got 3 fields"),
        ("* * * * * * *", "got 7 fields"),
        ("61 * * * *", "minute field `61`: 61 is out of range 0-59"),
        ("* 24 * * *", "hour field `24`: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field `0`: 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month field `32`: 32 is out of range 1-31"),
        ("* * * 13 *", "month field `13`: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field `8`: 8 is out of range 0-7"),
        ("60 * * * * *", "second field `60`: 60 is out of range 0-59"),
        ("* * * foo *", "month field `foo`: `foo` is not a number 1-12 or a month name (jan-dec)"),
        ("* * * * mon-fry", "`fry` is not a number 0-7 (0 and 7 are Sunday) or a day name (sun-sat)"),
        ("* * * * monday", "`monday` is not a number 0-7"),
        ("jan * * * *", "minute field `jan`: `jan` is not a number 0-59"),
        ("*/0 * * * *", "minute field `*/0`: step `/0` must be at least 1"),
        ("*/x * * * *", "step `/x` is not a whole number"),
        ("*/ * * * *", "step `/` is not a whole number"),
        ("1/2/3 * * * *", "step `/2/3` is not a whole number"),
        ("30-10 * * * *", "range `30-10` runs backwards; write the smaller value first"),
        ("1,,2 * * * *", "minute field `1,,2`: empty list item"),
        ("1, * * * *", "empty list item"),
        ("-5 * * * *", "a value is missing; expected a number 0-59"),
        ("5- * * * *", "a value is missing"),
        ("1-2-3 * * * *", "`2-3` is not a number 0-59"),
        ("? * * * *", "`?` is not a number 0-59"),
        ("* * L * *", "`L` is not a number 1-31"),
        ("* * * * 5#3", "`5#3` is not a number 0-7"),
        ("+5 * * * *", "`+5` is not a number 0-59"),
        ("99999999999 * * * *", "99999999999 is out of range 0-59"),
        ("@reboot", "`@reboot` is not supported"),
        ("@fortnightly", "unknown alias `@fortnightly`; valid aliases are @hourly, @daily, @midnight, @weekly, @monthly, @yearly and @annually"),
        ("@daily 3", "an @alias stands alone"),
    ];
    for (expr, want) in cases {
        match Schedule::parse(expr) {
            Ok(parsed) => panic!("`{expr}` should be refused, got {parsed:?}"),
            Err(e) => assert!(
                e.to_string().contains(want),
                "`{expr}`: error {:?} should contain {want:?}",
                e.to_string()
            ),
        }
    }
}

// ---------------------------------------------------------------- property tests
//
// Expressions are generated from parts whose meaning the test computes itself,
// so the checks do not rely on the parser under test.

#[derive(Debug, Clone)]
enum Item {
    Star,
    StarStep(u32),
    Value(u32),
    Range(u32, u32),
    RangeStep(u32, u32, u32),
    ValueStep(u32, u32),
}

/// One generated field: its text and the values it means.
#[derive(Debug, Clone)]
struct FieldModel {
    text: String,
    values: u64,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["Sun", "mon", "TUE", "wed", "thu", "Fri", "sat"];

fn item(min: u32, max: u32) -> impl Strategy<Value = Item> {
    let pair = (min..=max, min..=max).prop_map(|(a, b)| (a.min(b), a.max(b)));
    prop_oneof![
        Just(Item::Star),
        (1..=max).prop_map(Item::StarStep),
        (min..=max).prop_map(Item::Value),
        pair.clone().prop_map(|(a, b)| Item::Range(a, b)),
        (pair, 1..=max).prop_map(|((a, b), s)| Item::RangeStep(a, b, s)),
        (min..=max, 1..=max).prop_map(|(a, s)| Item::ValueStep(a, s)),
    ]
}

/// A field over `min..=max`; `names` spells values as names where it can.
fn field(min: u32, max: u32, names: &'static [&'static str]) -> impl Strategy<Value = FieldModel> {
    (prop::collection::vec(item(min, max), 1..=3), any::<bool>()).prop_map(
        move |(items, use_names)| {
            let spell = |v: u32| -> String {
                match names.get((v - min) as usize) {
                    Some(name) if use_names => (*name).to_string(),
                    _ => v.to_string(),
                }
            };
            let mut values = 0u64;
            let mut add = |from: u32, to: u32, step: u32| {
                for v in (from..=to).step_by(step as usize) {
                    values |= 1 << v;
                }
            };
            let texts: Vec<String> = items
                .iter()
                .map(|item| match *item {
                    Item::Star => {
                        add(min, max, 1);
                        "*".to_string()
                    }
                    Item::StarStep(s) => {
                        add(min, max, s);
                        format!("*/{s}")
                    }
                    Item::Value(v) => {
                        add(v, v, 1);
                        spell(v)
                    }
                    Item::Range(a, b) => {
                        add(a, b, 1);
                        format!("{}-{}", spell(a), spell(b))
                    }
                    Item::RangeStep(a, b, s) => {
                        add(a, b, s);
                        format!("{}-{}/{s}", spell(a), spell(b))
                    }
                    Item::ValueStep(a, s) => {
                        add(a, max, s);
                        format!("{}/{s}", spell(a))
                    }
                })
                .collect();
            FieldModel {
                text: texts.join(","),
                values,
            }
        },
    )
}

/// Mostly `*`, sometimes a generated field: keeps fires frequent enough for
/// a bounded brute-force scan to see them.
fn mostly_star(
    min: u32,
    max: u32,
    names: &'static [&'static str],
) -> impl Strategy<Value = FieldModel> {
    prop_oneof![
        2 => Just(FieldModel { text: "*".to_string(), values: (min..=max).fold(0, |b, v| b | 1 << v) }),
        1 => field(min, max, names),
    ]
}

#[derive(Debug, Clone)]
struct Model {
    seconds: Option<FieldModel>,
    minute: FieldModel,
    hour: FieldModel,
    dom: FieldModel,
    month: FieldModel,
    dow: FieldModel,
}

impl Model {
    fn text(&self) -> String {
        let fields = [&self.minute, &self.hour, &self.dom, &self.month, &self.dow];
        let five = fields
            .iter()
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        match &self.seconds {
            Some(seconds) => format!("{} {five}", seconds.text),
            None => five,
        }
    }

    fn every_hour(&self) -> bool {
        self.hour.values == (1 << 24) - 1
    }

    /// Does this date match, by the Vixie rules?
    fn matches_day(&self, date: NaiveDate) -> bool {
        let weekday = date.weekday().num_days_from_sunday();
        let dom = has(&self.dom, date.day());
        let dow = has(&self.dow, weekday) || (weekday == 0 && has(&self.dow, 7));
        let day = if self.dom.text.starts_with('*') || self.dow.text.starts_with('*') {
            dom && dow
        } else {
            dom || dow
        };
        day && has(&self.month, date.month())
    }

    /// Does this wall-clock time match?
    fn matches(&self, at: NaiveDateTime) -> bool {
        let second = self
            .seconds
            .as_ref()
            .map_or(at.second() == 0, |s| has(s, at.second()));
        second
            && has(&self.minute, at.minute())
            && has(&self.hour, at.hour())
            && self.matches_day(at.date())
    }
}

fn has(field: &FieldModel, value: u32) -> bool {
    field.values & (1 << value) != 0
}

fn five_fields() -> impl Strategy<Value = Model> {
    (
        field(0, 59, &[]),
        mostly_star(0, 23, &[]),
        mostly_star(1, 31, &[]),
        mostly_star(1, 12, &MONTHS),
        mostly_star(0, 7, &DAYS),
    )
        .prop_map(|(minute, hour, dom, month, dow)| Model {
            seconds: None,
            minute,
            hour,
            dom,
            month,
            dow,
        })
}

/// Five fields whose hours often sit around the night-time clock changes.
fn five_fields_near_night() -> impl Strategy<Value = Model> {
    let hours = prop_oneof![
        2 => Just(FieldModel { text: "*".to_string(), values: (1 << 24) - 1 }),
        2 => (0u32..=4).prop_map(|h| FieldModel { text: h.to_string(), values: 1 << h }),
        1 => (21u32..=23).prop_map(|h| FieldModel { text: format!("{h}-23,0-2"), values: (h..=23).chain(0..=2).fold(0, |b, v| b | 1 << v) }),
        1 => field(0, 23, &[]),
    ];
    (
        field(0, 59, &[]),
        hours,
        mostly_star(1, 31, &[]),
        mostly_star(1, 12, &MONTHS),
        mostly_star(0, 7, &DAYS),
    )
        .prop_map(|(minute, hour, dom, month, dow)| Model {
            seconds: None,
            minute,
            hour,
            dom,
            month,
            dow,
        })
}

fn six_fields() -> impl Strategy<Value = Model> {
    (field(0, 59, &[]), mostly_star(0, 59, &[]), five_fields()).prop_map(
        |(seconds, minute, rest)| Model {
            seconds: Some(seconds),
            minute,
            ..rest
        },
    )
}

/// An instant between 2000 and 2040, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..2_208_988_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::America::Santiago,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Pacific::Chatham,
    ])
}

/// The first match strictly after `after`, scanning in `step` increments up
/// to `window`, in UTC.
fn scan(
    model: &Model,
    after: DateTime<Utc>,
    step: TimeDelta,
    window: TimeDelta,
) -> Option<DateTime<Utc>> {
    let step_secs = step.num_seconds();
    let floor = after.timestamp().div_euclid(step_secs) * step_secs;
    let mut at = DateTime::from_timestamp(floor, 0).unwrap() + step;
    while at <= after + window {
        if model.matches(at.naive_utc()) {
            return Some(at);
        }
        at += step;
    }
    None
}

/// Daylight-saving transitions (UTC instants) in zones with unusual rules,
/// 2024-2028, found by scanning offsets.
fn transitions() -> &'static [(Tz, DateTime<Utc>)] {
    static FOUND: std::sync::OnceLock<Vec<(Tz, DateTime<Utc>)>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let zones = [
            chrono_tz::Europe::Berlin,
            chrono_tz::America::New_York,
            chrono_tz::America::Santiago,
            chrono_tz::America::Havana,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Pacific::Chatham,
        ];
        let offset = |tz: Tz, at: DateTime<Utc>| tz.offset_from_utc_datetime(&at.naive_utc()).fix();
        let mut found = Vec::new();
        for tz in zones {
            let mut at = utc(2024, 1, 1, 0, 0, 0);
            while at < utc(2029, 1, 1, 0, 0, 0) {
                let next = at + TimeDelta::hours(1);
                if offset(tz, at) != offset(tz, next) {
                    let mut minute = at;
                    while offset(tz, minute) == offset(tz, at) {
                        minute += TimeDelta::minutes(1);
                    }
                    found.push((tz, minute));
                }
                at = next;
            }
        }
        found
    })
}

/// The first fire strictly after `after` by the documented daylight-saving
/// rule, found by walking real minutes (offsets here are whole minutes).
///
/// Every-hour schedules fire at each minute whose wall time matches. Others
/// fire at the first minute whose wall time reaches a matching wall time not
/// reached before: normally that time itself; after a gap, the first minute
/// after it; in a repeat, never again.
fn scan_local(
    model: &Model,
    tz: Tz,
    after: DateTime<Utc>,
    window: TimeDelta,
) -> Option<DateTime<Utc>> {
    let wall = |at: DateTime<Utc>| at.with_timezone(&tz).naive_local();
    let floor = after.timestamp().div_euclid(60) * 60;
    let start = DateTime::from_timestamp(floor, 0).unwrap();
    // Highest wall time reached so far, from a day back.
    let mut reached = (0..=24 * 60)
        .map(|m| wall(start - TimeDelta::minutes(m)))
        .max()
        .unwrap();
    let mut at = start + TimeDelta::minutes(1);
    while at <= after + window {
        let now = wall(at);
        let fires = if model.every_hour() {
            model.matches(now)
        } else if now > reached {
            let mut w = reached + TimeDelta::minutes(1);
            let mut any = false;
            while w <= now {
                any |= model.matches(w);
                w += TimeDelta::minutes(1);
            }
            any
        } else {
            false
        };
        reached = reached.max(now);
        if fires {
            return Some(at);
        }
        at += TimeDelta::minutes(1);
    }
    None
}

/// An instant within hours of a daylight-saving transition.
fn near_transition() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (
        prop::sample::select(transitions().to_vec()),
        -6 * 3600i64..3 * 3600,
        0u32..1_000_000_000,
    )
        .prop_map(|((tz, at), shift, nanos)| {
            (
                tz,
                at + TimeDelta::seconds(shift) + TimeDelta::nanoseconds(i64::from(nanos)),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn five_fields_in_utc_agree_with_a_minute_by_minute_scan(model in five_fields(), after in instant()) {
        let parsed = Schedule::parse(&model.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let window = TimeDelta::days(3);
        let next = parsed.next_after(after, Tz::UTC);
        match scan(&model, after, TimeDelta::minutes(1), window) {
            Some(want) => prop_assert_eq!(next, Some(want), "`{}`", model.text()),
            None => prop_assert!(next.is_none_or(|next| next > after + window), "`{}` gave {:?}", model.text(), next),
        }
    }

    #[test]
    fn six_fields_in_utc_agree_with_a_second_by_second_scan(model in six_fields(), after in instant()) {
        let parsed = Schedule::parse(&model.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let window = TimeDelta::hours(3);
        let next = parsed.next_after(after, Tz::UTC);
        match scan(&model, after, TimeDelta::seconds(1), window) {
            Some(want) => prop_assert_eq!(next, Some(want), "`{}`", model.text()),
            None => prop_assert!(next.is_none_or(|next| next > after + window), "`{}` gave {:?}", model.text(), next),
        }
    }

    #[test]
    fn next_after_is_later_consistent_and_matches_in_any_zone(
        model in prop_oneof![3 => five_fields(), 1 => six_fields()],
        after in instant(),
        tz in zone(),
        fraction in 0.0f64..1.0,
    ) {
        let text = model.text();
        let parsed = Schedule::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(first) = parsed.next_after(after, tz) else {
            // Only expressions that never match may give None. The calendar
            // repeats every 400 years, so a matching day in 2000-2030 would
            // recur within the search horizon of any instant up to 2040.
            let mut day = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
            while day.year() <= 2030 {
                prop_assert!(!model.matches_day(day), "`{}` gave None but matches on {}", text, day);
                day = day.succ_opt().unwrap();
            }
            return Ok(());
        };
        prop_assert!(first > after);

        // Nothing fires in between: any instant in [after, first) leads to `first`.
        let between = after + TimeDelta::nanoseconds(((first - after).num_nanoseconds().unwrap_or(i64::MAX) as f64 * fraction) as i64);
        prop_assert_eq!(parsed.next_after(between, tz), Some(first), "`{}` from {}", text, between);

        // Each fire is a matching wall time, or, for fixed-hour schedules,
        // the end of a daylight-saving gap standing in for skipped times.
        let mut at = first;
        let mut previous_wall: Option<NaiveDateTime> = None;
        for _ in 0..5 {
            let local = at.with_timezone(&tz);
            let wall = local.naive_local();
            let just_before = (at - TimeDelta::seconds(1)).with_timezone(&tz);
            let gap_end = just_before.offset().fix() != local.offset().fix()
                && wall - just_before.naive_local() > TimeDelta::seconds(1);
            prop_assert!(
                model.matches(wall) || (!model.every_hour() && gap_end),
                "`{}` in {} fired at {} ({})", text, tz, at, wall
            );
            if !model.every_hour() {
                prop_assert!(previous_wall.is_none_or(|p| p < wall), "`{}` in {} repeated wall time {}", text, tz, wall);
            }
            previous_wall = Some(wall);
            let Some(next) = parsed.next_after(at, tz) else { break };
            prop_assert!(next > at);
            at = next;
        }
    }

    #[test]
    fn near_clock_changes_fires_follow_the_documented_rule(
        model in five_fields_near_night(),
        (tz, after) in near_transition(),
    ) {
        let parsed = Schedule::parse(&model.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let window = TimeDelta::hours(12);
        let next = parsed.next_after(after, tz);
        match scan_local(&model, tz, after, window) {
            Some(want) => prop_assert_eq!(next, Some(want), "`{}` in {} after {}", model.text(), tz, after),
            None => prop_assert!(next.is_none_or(|next| next > after + window), "`{}` in {} gave {:?}", model.text(), tz, next),
        }
    }

    #[test]
    fn next_after_never_goes_backwards(
        model in prop_oneof![five_fields(), six_fields()],
        a in instant(),
        b in instant(),
        tz in zone(),
    ) {
        let parsed = Schedule::parse(&model.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (early, late) = if a <= b { (a, b) } else { (b, a) };
        match (parsed.next_after(early, tz), parsed.next_after(late, tz)) {
            (Some(x), Some(y)) => prop_assert!(x <= y, "`{}`: {} → {}, {} → {}", model.text(), early, x, late, y),
            (None, Some(y)) => prop_assert!(false, "`{}`: None from {} but {} from {}", model.text(), early, y, late),
            _ => {}
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,40}", after in instant(), tz in zone()) {
        if let Ok(parsed) = Schedule::parse(&text) {
            prop_assert!(parsed.next_after(after, tz).is_none_or(|next| next > after));
        }
    }

    #[test]
    fn parse_never_panics_on_crontab_like_text(text in "[0-9*/,a-zA-Z@ -]{0,30}") {
        let _ = Schedule::parse(&text);
    }
}
