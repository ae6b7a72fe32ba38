//! PURE: business hours (SPEC §9) — the working days, the daily hours and
//! the holidays of one IANA time zone, and the one sum a timer needs:
//! "this much working time after that instant".
//!
//! Local times are turned into instants by the time-zone database (jiff,
//! reading the system's tzdata), never by a hand-kept offset: a day on
//! which daylight saving starts or ends keeps its opening hours in local
//! time. A local time that does not exist (in the hour the clocks skip) is
//! taken as the instant just after the gap; one that exists twice (in the
//! hour they repeat), as the earlier — jiff's "compatible" choice, the one
//! RFC 5545 and most calendars make.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::clock::Millis;

/// How far ahead [`BusinessHours::add`] looks for working time before it
/// gives up (a calendar whose holidays cover every working day).
const HORIZON_DAYS: usize = 3 * 366;

#[derive(Debug, Clone)]
pub struct BusinessHours {
    /// The IANA name as configured (`Europe/Rome`).
    pub zone_name: String,
    pub zone: TimeZone,
    /// Working days, Monday first.
    pub days: [bool; 7],
    pub open: Time,
    /// `None`: the day ends at midnight (`hours = "09:00-24:00"`).
    pub close: Option<Time>,
    /// Local dates with no working time, sorted.
    pub holidays: Vec<Date>,
}

impl BusinessHours {
    /// The instant `working_ms` of working time after `start`. `None` if
    /// the calendar has no working time within three years of `start`, or
    /// the instant is outside the range the time-zone database handles.
    pub fn add(&self, start: Millis, working_ms: i64) -> Option<Millis> {
        let mut left = working_ms.max(0);
        let mut cursor = Timestamp::from_millisecond(start).ok()?;
        let mut day = self.zone.to_datetime(cursor).date();
        for _ in 0..HORIZON_DAYS {
            if self.is_working_day(day) {
                let open = self.instant(day, self.open)?;
                let close = match self.close {
                    Some(close) => self.instant(day, close)?,
                    None => self.instant(day.tomorrow().ok()?, Time::midnight())?,
                };
                let from = cursor.max(open);
                if from < close {
                    let span = close.as_millisecond() - from.as_millisecond();
                    if left <= span {
                        return Some(from.as_millisecond() + left);
                    }
                    left -= span;
                    cursor = close;
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    pub fn is_working_day(&self, day: Date) -> bool {
        self.days[weekday_index(day.weekday())] && self.holidays.binary_search(&day).is_err()
    }

    fn instant(&self, day: Date, time: Time) -> Option<Timestamp> {
        self.zone
            .to_ambiguous_timestamp(day.to_datetime(time))
            .compatible()
            .ok()
    }
}

/// Monday = 0.
fn weekday_index(day: Weekday) -> usize {
    day.to_monday_zero_offset() as usize
}

/// The short names `days` is written in, Monday first.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `"09:00-17:30"` → the opening and closing times (`24:00` closes at
/// midnight). The error says what is wrong, for `postdesk check`.
pub fn parse_hours(text: &str) -> Result<(Time, Option<Time>), String> {
    let example = "write the hours as \"09:00-17:30\" (24-hour clock, opening before closing)";
    let Some((open, close)) = text.split_once('-') else {
        return Err(format!("hours \"{text}\" is not a range: {example}"));
    };
    let clock = |s: &str| -> Result<(i8, i8), String> {
        let s = s.trim();
        let (h, m) = s
            .split_once(':')
            .filter(|(h, m)| (1..=2).contains(&h.len()) && m.len() == 2)
            .ok_or_else(|| format!("\"{s}\" is not a time of day: {example}"))?;
        let number = |n: &str| {
            n.parse::<i8>()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
        };
        match (number(h), number(m)) {
            (Some(h), Some(m)) if (0..=24).contains(&h) && (0..60).contains(&m) => Ok((h, m)),
            _ => Err(format!("\"{s}\" is not a time of day: {example}")),
        }
    };
    let (oh, om) = clock(open)?;
    let (ch, cm) = clock(close)?;
    if oh == 24 || (ch == 24 && cm != 0) {
        return Err(format!(
            "hours \"{text}\": only the closing time may be 24:00"
        ));
    }
    let open = Time::new(oh, om, 0, 0).map_err(|e| e.to_string())?;
    let close = if ch == 24 {
        None
    } else {
        Some(Time::new(ch, cm, 0, 0).map_err(|e| e.to_string())?)
    };
    if close.is_some_and(|c| c <= open) {
        return Err(format!(
            "hours \"{text}\" close before they open: a working day is one range within the day, \
             e.g. \"09:00-17:30\" (use \"00:00-24:00\" for the whole day)"
        ));
    }
    Ok((open, close))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    fn hours(zone: &str, text: &str, holidays: &[&str]) -> BusinessHours {
        let (open, close) = parse_hours(text).unwrap();
        let mut holidays: Vec<Date> = holidays.iter().map(|d| d.parse().unwrap()).collect();
        holidays.sort();
        BusinessHours {
            zone_name: zone.to_string(),
            zone: TimeZone::get(zone).unwrap(),
            days: [true, true, true, true, true, false, false],
            open,
            close,
            holidays,
        }
    }

    /// An instant written as local time in `zone` (`2027-03-26T17:00`).
    fn at(zone: &str, local: &str) -> Millis {
        let dt: jiff::civil::DateTime = local.parse().unwrap();
        TimeZone::get(zone)
            .unwrap()
            .to_ambiguous_timestamp(dt)
            .compatible()
            .unwrap()
            .as_millisecond()
    }

    /// `ms` as local time in `zone`, to the minute.
    fn local(zone: &str, ms: Millis) -> String {
        let ts = Timestamp::from_millisecond(ms).unwrap();
        TimeZone::get(zone)
            .unwrap()
            .to_datetime(ts)
            .strftime("%a %Y-%m-%d %H:%M")
            .to_string()
    }

    #[test]
    fn inside_one_working_day() {
        let bh = hours("Europe/Rome", "09:00-17:30", &[]);
        let start = at("Europe/Rome", "2027-02-03T10:15"); // a Wednesday
        assert_eq!(
            local("Europe/Rome", bh.add(start, 4 * H).unwrap()),
            "Wed 2027-02-03 14:15"
        );
    }

    #[test]
    fn a_night_is_skipped_and_an_early_start_waits_for_opening() {
        let bh = hours("Europe/Rome", "09:00-17:30", &[]);
        let start = at("Europe/Rome", "2027-02-03T16:30");
        assert_eq!(
            local("Europe/Rome", bh.add(start, 4 * H).unwrap()),
            "Thu 2027-02-04 12:00"
        );
        let early = at("Europe/Rome", "2027-02-03T06:00");
        assert_eq!(
            local("Europe/Rome", bh.add(early, 30 * M).unwrap()),
            "Wed 2027-02-03 09:30"
        );
    }

    #[test]
    fn a_weekend_is_skipped() {
        let bh = hours("America/New_York", "09:00-17:00", &[]);
        let friday = at("America/New_York", "2027-02-05T15:00");
        assert_eq!(
            local("America/New_York", bh.add(friday, 4 * H).unwrap()),
            "Mon 2027-02-08 11:00"
        );
        let saturday = at("America/New_York", "2027-02-06T12:00");
        assert_eq!(
            local("America/New_York", bh.add(saturday, H).unwrap()),
            "Mon 2027-02-08 10:00"
        );
    }

    #[test]
    fn a_holiday_is_skipped() {
        let bh = hours("Europe/Rome", "09:00-17:30", &["2026-12-25", "2027-01-01"]);
        // Thursday 24 December, 16:00: 1.5 h left that day, then Friday
        // the 25th is a holiday and the weekend follows.
        let start = at("Europe/Rome", "2026-12-24T16:00");
        assert_eq!(
            local("Europe/Rome", bh.add(start, 4 * H).unwrap()),
            "Mon 2026-12-28 11:30"
        );
    }

    #[test]
    fn daylight_saving_start_and_end_in_rome() {
        let bh = hours("Europe/Rome", "09:00-17:30", &[]);
        // Clocks go forward on Sunday 28 March 2027 (CET → CEST): Friday
        // 17:00 + 1 h is Monday 09:30 local, 63.5 h later in real time,
        // not 62.5 h.
        let start = at("Europe/Rome", "2027-03-26T17:00");
        let due = bh.add(start, H).unwrap();
        assert_eq!(local("Europe/Rome", due), "Mon 2027-03-29 09:30");
        assert_eq!(due - start, 63 * H + 30 * M);
        // Clocks go back on Sunday 31 October 2027: 65.5 h of real time.
        let start = at("Europe/Rome", "2027-10-29T17:00");
        let due = bh.add(start, H).unwrap();
        assert_eq!(local("Europe/Rome", due), "Mon 2027-11-01 09:30");
        assert_eq!(due - start, 65 * H + 30 * M);
    }

    #[test]
    fn daylight_saving_start_and_end_in_new_york() {
        let mut bh = hours("America/New_York", "00:00-24:00", &[]);
        bh.days = [true; 7];
        // Sunday 14 March 2027 has 23 hours, Sunday 7 November 2027 has
        // 25: whole days of working time are real hours, not local ones.
        let start = at("America/New_York", "2027-03-14T00:00");
        assert_eq!(
            local("America/New_York", bh.add(start, 24 * H).unwrap()),
            "Mon 2027-03-15 01:00"
        );
        let start = at("America/New_York", "2027-11-07T00:00");
        assert_eq!(
            local("America/New_York", bh.add(start, 24 * H).unwrap()),
            "Sun 2027-11-07 23:00"
        );
        // Office hours that are the same local times either side.
        let bh = hours("America/New_York", "09:00-17:00", &[]);
        let start = at("America/New_York", "2027-11-05T16:00");
        let due = bh.add(start, 2 * H).unwrap();
        assert_eq!(local("America/New_York", due), "Mon 2027-11-08 10:00");
        assert_eq!(due - start, 67 * H);
    }

    #[test]
    fn zero_is_the_next_working_instant_and_no_working_time_is_none() {
        let bh = hours("Europe/Rome", "09:00-17:30", &[]);
        let sunday = at("Europe/Rome", "2027-02-07T12:00");
        assert_eq!(
            local("Europe/Rome", bh.add(sunday, 0).unwrap()),
            "Mon 2027-02-08 09:00"
        );
        let mut never = bh.clone();
        never.days = [false; 7];
        assert_eq!(never.add(sunday, H), None);
    }

    #[test]
    fn hours_are_parsed_or_explained() {
        assert!(parse_hours("09:00-17:30").is_ok());
        assert_eq!(parse_hours("8:00 - 24:00").unwrap().1, None);
        for bad in [
            "9-17",
            "09:00",
            "17:00-09:00",
            "09:00-09:00",
            "25:00-26:00",
            "09:60-10:00",
            "24:00-24:00",
            "+9:00-10:00",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
    }
}
