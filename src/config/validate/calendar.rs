//! `[business_hours]` (SPEC §9): the calendar that `business_hours = true`
//! timers count in — an IANA time zone, working days, daily hours and
//! holidays, each checked at the span of its value.

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{Section, Validator};
use crate::business_hours::{parse_hours, BusinessHours, DAY_NAMES};
use crate::config::raw::RawBusinessHours;

impl Validator<'_, '_> {
    /// `None` without the section, or when a problem was reported.
    pub(super) fn business_hours(
        &mut self,
        section: Section<RawBusinessHours>,
    ) -> Option<BusinessHours> {
        let Section::Read(read) = section else {
            return None;
        };
        let (raw, span, broken) = (read.value, read.span, read.broken);
        let mut ok = true;

        let zone = match &raw.timezone {
            Some(name) => match TimeZone::get(name.get_ref()) {
                Ok(zone) => Some((name.get_ref().clone(), zone)),
                Err(_) => {
                    self.cx.at(
                        name.span(),
                        format!(
                            "unknown time zone \"{}\": write an IANA name such as \
                             \"Europe/Rome\" or \"America/New_York\" (read from the system's \
                             tzdata, /usr/share/zoneinfo)",
                            name.get_ref()
                        ),
                    );
                    None
                }
            },
            None => {
                if !broken.contains("timezone") {
                    self.cx.at(
                        span.clone(),
                        "[business_hours] needs timezone, e.g. timezone = \"Europe/Rome\"",
                    );
                }
                None
            }
        };

        let mut days = [false; 7];
        match &raw.days {
            Some(list) => {
                for day in list.get_ref() {
                    let name = day.get_ref().to_ascii_lowercase();
                    match DAY_NAMES.iter().position(|d| *d == name) {
                        Some(i) => days[i] = true,
                        None => {
                            ok = false;
                            self.cx.at(
                                day.span(),
                                format!(
                                    "unknown day \"{}\" (known: {})",
                                    day.get_ref(),
                                    DAY_NAMES.join(", ")
                                ),
                            );
                        }
                    }
                }
                if ok && !days.contains(&true) {
                    ok = false;
                    self.cx.at(
                        list.span(),
                        "days names no working day, e.g. days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
                    );
                }
            }
            None => days[..5].fill(true),
        }

        let hours = match &raw.hours {
            Some(text) => match parse_hours(text.get_ref()) {
                Ok(hours) => Some(hours),
                Err(message) => {
                    self.cx.at(text.span(), message);
                    None
                }
            },
            None => {
                if !broken.contains("hours") {
                    self.cx.at(
                        span.clone(),
                        "[business_hours] needs hours, e.g. hours = \"09:00-17:30\"",
                    );
                }
                None
            }
        };

        let mut holidays = Vec::new();
        for day in raw.holidays.iter().flatten() {
            match day.get_ref().parse::<Date>() {
                Ok(date) if day.get_ref().len() == 10 => holidays.push(date),
                _ => {
                    ok = false;
                    self.cx.at(
                        day.span(),
                        format!(
                            "holiday \"{}\" is not a date: write it as \"2026-12-25\"",
                            day.get_ref()
                        ),
                    );
                }
            }
        }
        holidays.sort();
        holidays.dedup();

        let ((zone_name, zone), (open, close)) = (zone?, hours?);
        ok.then_some(BusinessHours {
            zone_name,
            zone,
            days,
            open,
            close,
            holidays,
        })
    }
}
