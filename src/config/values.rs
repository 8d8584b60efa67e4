//! Config values that check themselves while the file is read, so a bad
//! duration, cron line, glob or time zone is reported at its line and column.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `30s`, `5m`, `2h`, `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `90s`, `30m`, `2h`, `1d`, `1h30m`. Zero is refused: a zero wait,
/// freeze or timeout is always a mistake.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("`{text}` is not a duration; write a number with a unit, such as \"30s\", \"5m\", \"2h\" or \"1d\"")
    })?;
    if d.is_zero() {
        return Err(format!(
            "`{text}` is zero; write a positive duration such as \"5m\""
        ));
    }
    Ok(d)
}

/// A service glob such as `prod/*` or `checkout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobPattern(pub String);

impl<'de> Deserialize<'de> for GlobPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        check_glob(&text)
            .map(|_| GlobPattern(text))
            .map_err(serde::de::Error::custom)
    }
}

/// `["*"]`: what a role grant or freeze window covers when it names no
/// services.
pub fn every_service() -> Vec<GlobPattern> {
    vec![GlobPattern("*".into())]
}

pub fn check_glob(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty service pattern matches nothing; write a name, a glob such as \"prod/*\", or \"*\"".into());
    }
    globset::Glob::new(text).map(|_| ()).map_err(|e| {
        format!(
            "`{text}` is not a valid glob ({}); write a service name, \"ENV/*\" or \"*\"",
            e.kind()
        )
    })
}

/// An IANA time zone name such as `Europe/Berlin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(chrono_tz::UTC)
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        chrono_tz::Tz::from_str(&text).map(TimeZone).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an IANA time zone; write a name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
            ))
        })
    }
}

/// A crontab line (5 fields: minute hour day-of-month month day-of-week,
/// Sunday = 0 or 7), as people and Argo CD sync windows write it.
#[derive(Clone)]
pub struct CronSchedule {
    pub text: String,
    pub schedule: cron::Schedule,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_crontab(&text).map_err(serde::de::Error::custom)
    }
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One field of a crontab line and the values it takes.
struct CrontabField {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names allowed instead of numbers (months, days), the first = `min`.
    names: &'static [&'static str],
}

const CRONTAB_FIELDS: [CrontabField; 5] = [
    CrontabField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    CrontabField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    CrontabField {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    CrontabField {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
    },
    CrontabField {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DAY_NAMES,
    },
];

impl CrontabField {
    fn range(&self) -> String {
        match self.names {
            [] => format!("{}-{}", self.min, self.max),
            n => format!("{}-{} or {}..{}", self.min, self.max, n[0], n[n.len() - 1]),
        }
    }

    /// Checks `*`, `N`, `N-M`, each with an optional `/STEP`, comma-separated.
    fn check(&self, value: &str) -> Result<(), String> {
        // "minute `61` is not in 0-59", or "minute `5,61`: `61` is not in 0-59".
        let bad = |token: &str, what: String| {
            if token == value {
                Err(format!("{} `{value}` {what}", self.name))
            } else {
                Err(format!("{} `{value}`: `{token}` {what}", self.name))
            }
        };
        for part in value.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(s) = step {
                if !s.parse::<u32>().is_ok_and(|n| (1..=self.max).contains(&n)) {
                    return bad(
                        part,
                        format!("has step `{s}`, which is not in 1-{}", self.max),
                    );
                }
            }
            if range == "*" || (range == "?" && self.name.starts_with("day")) {
                continue;
            }
            let ends: Vec<&str> = range.split('-').collect();
            if ends.len() > 2 {
                return bad(range, "is not a value or a range such as 1-5".into());
            }
            let mut numbers = Vec::new();
            for end in &ends {
                match self.value(end) {
                    Some(n) if (self.min..=self.max).contains(&n) => numbers.push(n),
                    _ => return bad(end, format!("is not in {}", self.range())),
                }
            }
            if numbers.len() == 2 && numbers[1] < numbers[0] {
                return bad(
                    range,
                    format!(
                        "runs backwards; write it from low to high in {}",
                        self.range()
                    ),
                );
            }
        }
        Ok(())
    }

    fn value(&self, token: &str) -> Option<u32> {
        if let Some(i) = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))
        {
            return Some(self.min + i as u32);
        }
        token.parse().ok()
    }
}

/// Translates crontab's five fields into the cron crate's form (seconds
/// first, days of the week by name so the numbering cannot be confused).
pub fn parse_crontab(text: &str) -> Result<CronSchedule, String> {
    let hint = "write a crontab line with 5 fields: minute hour day-of-month month day-of-week, \
                for example \"0 18 * * 5\" for Fridays at 18:00 (Sunday is 0 or 7)";
    let fields: Vec<&str> = text.split_whitespace().collect();
    let translated = if fields.len() == 1 && fields[0].starts_with('@') {
        fields[0].to_string()
    } else if fields.len() == 5 {
        // Checked here, in the user's terms: the cron crate's own errors
        // show its 6-field translation and its own wording.
        let wrong: Vec<String> = CRONTAB_FIELDS
            .iter()
            .zip(&fields)
            .filter_map(|(f, value)| f.check(value).err())
            .collect();
        if !wrong.is_empty() {
            return Err(format!("`{text}`: {}; {hint}", wrong.join("; ")));
        }
        let dow = translate_day_of_week(fields[4])
            .map_err(|e| format!("`{text}`: day-of-week {e}; {hint}"))?;
        format!(
            "0 {} {} {} {} {}",
            fields[0], fields[1], fields[2], fields[3], dow
        )
    } else {
        return Err(format!("`{text}` has {} fields; {hint}", fields.len()));
    };
    let schedule = cron::Schedule::from_str(&translated).map_err(|e| {
        // The crate's message repeats its own form of the line above a
        // caret; its last line is the reason.
        let e = e.to_string();
        let why = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        format!("`{text}` is not a valid cron schedule ({why}); {hint}")
    })?;
    Ok(CronSchedule {
        text: text.to_string(),
        schedule,
    })
}

fn day_number(token: &str) -> Result<u32, String> {
    if let Some(i) = DAY_NAMES.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Ok(i as u32);
    }
    match token.parse::<u32>() {
        Ok(n) if n <= 7 => Ok(n % 7),
        _ => Err(format!("`{token}` is not a day (0-7 or Sun..Sat)")),
    }
}

fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step `{s}` is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            // Keep 7 as 7 here so "5-7" (Fri..Sun) is a forward range.
            let a = day_number(a)?;
            let b = if b == "7" { 7 } else { day_number(b)? };
            if b < a {
                return Err(format!("range `{range}` runs backwards"));
            }
            (a, b)
        } else {
            let d = day_number(range)?;
            (d, if step > 1 { 6 } else { d })
        };
        let mut d = lo;
        while d <= hi {
            days.insert(d % 7);
            d += step;
        }
    }
    if days.len() == 7 {
        return Ok("*".into());
    }
    // The cron crate numbers Sunday as 1; names avoid any confusion.
    Ok(days
        .iter()
        .map(|d| DAY_NAMES[*d as usize])
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone as _, Timelike, Utc, Weekday};

    #[test]
    fn friday_at_six_pm_means_friday() {
        let c = parse_crontab("0 18 * * 5").unwrap();
        // 2026-11-29 is a Sunday; the next firing is Friday 2026-12-04 18:00.
        let start = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let next = c.schedule.after(&start).next().unwrap();
        assert_eq!(next.weekday(), Weekday::Fri);
        assert_eq!((next.day(), next.hour(), next.minute()), (4, 18, 0));
    }

    #[test]
    fn sunday_is_zero_and_seven_and_ranges_cross_the_week_end() {
        for line in ["0 9 * * 0", "0 9 * * 7", "0 9 * * sun"] {
            let c = parse_crontab(line).unwrap();
            let start = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap(); // Monday
            assert_eq!(
                c.schedule.after(&start).next().unwrap().weekday(),
                Weekday::Sun,
                "{line}"
            );
        }
        assert_eq!(translate_day_of_week("5-7").unwrap(), "Sun,Fri,Sat");
        assert_eq!(translate_day_of_week("1-5").unwrap(), "Mon,Tue,Wed,Thu,Fri");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "Sun,Tue,Thu,Sat");
        assert_eq!(translate_day_of_week("0-6").unwrap(), "*");
    }

    #[test]
    fn bad_cron_lines_say_what_to_write() {
        let e = parse_crontab("0 0 18 * * 5").unwrap_err();
        assert!(e.contains("6 fields") && e.contains("0 18 * * 5"), "{e}");
        let e = parse_crontab("0 18 * * 9").unwrap_err();
        assert!(
            e.contains("day-of-week `9` is not in 0-7 or Sun..Sat"),
            "{e}"
        );
        let e = parse_crontab("61 18 * * 5").unwrap_err();
        assert!(
            e.starts_with("`61 18 * * 5`: minute `61` is not in 0-59;"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_crontab_line_names_the_users_line_each_field_at_fault_and_its_range() {
        let e = parse_crontab("61 25 * * *").unwrap_err();
        assert!(
            e.starts_with("`61 25 * * *`: minute `61` is not in 0-59; hour `25` is not in 0-23; write a crontab line with 5 fields"),
            "{e}"
        );
        // Nothing of the cron crate's 6-field form or wording.
        assert!(!e.contains("0 61 25") && !e.contains("less than"), "{e}");
        let e = parse_crontab("0 9 0 13 *").unwrap_err();
        assert!(
            e.contains("day-of-month `0` is not in 1-31; month `13` is not in 1-12 or Jan..Dec"),
            "{e}"
        );
        let e = parse_crontab("*/0 9-5 1,32 * *").unwrap_err();
        assert!(
            e.contains("minute `*/0` has step `0`, which is not in 1-59")
                && e.contains("hour `9-5` runs backwards")
                && e.contains("day-of-month `1,32`: `32` is not in 1-31"),
            "{e}"
        );
        // What crontab accepts still reads.
        for line in [
            "*/15 9-17 * * 1-5",
            "0 0 1,15 jan,jul *",
            "30 2 * * sun",
            "0 0 * * 5-7",
        ] {
            assert!(parse_crontab(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("soon").unwrap_err().contains("\"30s\""));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn globs() {
        assert!(check_glob("prod/*").is_ok());
        assert!(check_glob("prod/[a")
            .unwrap_err()
            .contains("not a valid glob"));
        assert!(check_glob("").is_err());
    }
}
