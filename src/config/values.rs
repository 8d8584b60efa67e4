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

/// Translates crontab's five fields into the cron crate's form (seconds
/// first, days of the week by name so the numbering cannot be confused).
pub fn parse_crontab(text: &str) -> Result<CronSchedule, String> {
    let hint = "write a crontab line with 5 fields: minute hour day-of-month month day-of-week, \
                for example \"0 18 * * 5\" for Fridays at 18:00 (Sunday is 0 or 7)";
    let fields: Vec<&str> = text.split_whitespace().collect();
    let translated = if fields.len() == 1 && fields[0].starts_with('@') {
        fields[0].to_string()
    } else if fields.len() == 5 {
        let dow = translate_day_of_week(fields[4])
            .map_err(|e| format!("`{text}`: day-of-week {e}; {hint}"))?;
        format!(
            "0 {} {} {} {} {}",
            fields[0], fields[1], fields[2], fields[3], dow
        )
    } else {
        return Err(format!("`{text}` has {} fields; {hint}", fields.len()));
    };
    let schedule = cron::Schedule::from_str(&translated)
        .map_err(|e| format!("`{text}` is not a valid cron schedule ({e}); {hint}"))?;
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
        assert!(e.contains("`9` is not a day"), "{e}");
        let e = parse_crontab("61 18 * * 5").unwrap_err();
        assert!(e.contains("not a valid cron schedule"), "{e}");
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
