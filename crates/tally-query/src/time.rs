//! Dates, ranges, buckets and windows in a tenant's time zone.
//!
//! Owns: the date-range vocabulary ([`DateRange`]: absolute, last N units, this and
//! the previous calendar unit), its resolution to a half-open UTC interval
//! ([`TimeRange`]), the "previous period" used by comparisons, conversion windows
//! ([`Window`]), and the [`Calendar`]: how instants fall into local hours, days, weeks
//! and months (week start configurable), including daylight-saving gaps and overlaps.
//!
//! Does not own the clock: "now" is always an argument, so that resolution is a pure
//! function and tests are deterministic.
//!
//! The rules, which every engine follows:
//! - An instant belongs to the local period (hour, day, week, month) its local wall
//!   clock reading falls in. A repeated hour at a daylight-saving fall-back is one
//!   hourly bucket holding two hours; a skipped hour has no bucket.
//! - A period's reported start is the earliest instant whose local time is at or after
//!   the period's wall-clock start (for a day starting in a DST gap: the transition).
//! - Ranges are half-open `[start, end)` in UTC microseconds.

use chrono::{
    Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use tally_core::time::{MICROS_PER_DAY, MICROS_PER_SECOND};

use crate::error::{QueryError, Result};

/// Most buckets one result may hold (per series and breakdown value).
pub const MAX_BUCKETS: usize = 10_000;
/// Largest `count` of a relative date range.
pub const MAX_RELATIVE_COUNT: u32 = 10_000;
/// Longest conversion window: a year.
pub const MAX_WINDOW_MICROS: i64 = 366 * MICROS_PER_DAY;
/// Earliest and latest year a date range may touch; ingest accepts timestamps in
/// 1970..2200 (`tally_core::time::parse_timestamp`).
pub const MIN_YEAR: i32 = 1970;
/// Latest year a date range may touch.
pub const MAX_YEAR: i32 = 2200;

const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;

/// The bucket size of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Local wall-clock hours.
    Hour,
    /// Local calendar days.
    #[default]
    Day,
    /// Local calendar weeks starting on the query's `week_start`.
    Week,
    /// Local calendar months.
    Month,
}

impl Interval {
    /// The interval's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    fn unit(self) -> CalendarUnit {
        match self {
            Interval::Hour => CalendarUnit::Hour,
            Interval::Day => CalendarUnit::Day,
            Interval::Week => CalendarUnit::Week,
            Interval::Month => CalendarUnit::Month,
        }
    }
}

/// The unit of a relative date range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RangeUnit {
    /// Local wall-clock hours.
    Hour,
    /// Local calendar days.
    Day,
    /// Local calendar weeks starting on `week_start`.
    Week,
    /// Local calendar months.
    Month,
    /// Local calendar years.
    Year,
}

impl RangeUnit {
    fn unit(self) -> CalendarUnit {
        match self {
            RangeUnit::Hour => CalendarUnit::Hour,
            RangeUnit::Day => CalendarUnit::Day,
            RangeUnit::Week => CalendarUnit::Week,
            RangeUnit::Month => CalendarUnit::Month,
            RangeUnit::Year => CalendarUnit::Year,
        }
    }
}

/// The first day of a week, for weekly buckets and "this week".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum WeekStart {
    #[default]
    /// Weeks run Monday to Sunday (ISO 8601).
    Monday,
    /// Weeks start on Tuesday.
    Tuesday,
    /// Weeks start on Wednesday.
    Wednesday,
    /// Weeks start on Thursday.
    Thursday,
    /// Weeks start on Friday.
    Friday,
    /// Weeks start on Saturday.
    Saturday,
    /// Weeks run Sunday to Saturday.
    Sunday,
}

impl WeekStart {
    fn weekday(self) -> Weekday {
        match self {
            WeekStart::Monday => Weekday::Mon,
            WeekStart::Tuesday => Weekday::Tue,
            WeekStart::Wednesday => Weekday::Wed,
            WeekStart::Thursday => Weekday::Thu,
            WeekStart::Friday => Weekday::Fri,
            WeekStart::Saturday => Weekday::Sat,
            WeekStart::Sunday => Weekday::Sun,
        }
    }
}

/// Which time the query covers. Resolved against "now" in the query's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DateRange {
    /// The last `count` whole local units, the current one included: "last 7 days" is
    /// today and the six days before it, up to the end of today.
    Last {
        /// How many units, at least 1.
        count: u32,
        /// The unit.
        unit: RangeUnit,
    },
    /// The current local unit, whole: "this month" runs to the end of the month.
    Current {
        /// The unit.
        unit: RangeUnit,
    },
    /// The local unit before the current one: "previous month" is last calendar month.
    Previous {
        /// The unit.
        unit: RangeUnit,
    },
    /// Fixed bounds. Each is a local date `2024-03-01`, a local date and time
    /// `2024-03-01T08:00:00`, or an RFC 3339 instant `2024-03-01T08:00:00Z`. `from` is
    /// inclusive; `to` is inclusive when it is a date (the whole day) and exclusive
    /// when it is a time.
    Absolute {
        /// The start.
        from: String,
        /// The end; absent means "up to the end of today".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

impl DateRange {
    /// Static checks that need neither the clock nor the time zone.
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        match self {
            DateRange::Last { count, .. } => {
                if *count == 0 || *count > MAX_RELATIVE_COUNT {
                    return Err(QueryError::invalid(
                        format!("{field}.count"),
                        format!("must be between 1 and {MAX_RELATIVE_COUNT}, got {count}"),
                    ));
                }
                Ok(())
            }
            DateRange::Current { .. } | DateRange::Previous { .. } => Ok(()),
            DateRange::Absolute { from, to } => {
                parse_bound(&format!("{field}.from"), from)?;
                if let Some(to) = to {
                    parse_bound(&format!("{field}.to"), to)?;
                }
                Ok(())
            }
        }
    }

    /// The UTC interval this range covers, given the current instant.
    pub fn resolve(&self, now: i64, calendar: &Calendar, field: &str) -> Result<TimeRange> {
        self.validate(field)?;
        let now_local = calendar.local(now).ok_or_else(|| {
            QueryError::invalid(field, format!("the current time {now} is out of range"))
        })?;
        let range = match self {
            DateRange::Last { count, unit } => {
                let unit = unit.unit();
                let current = calendar.truncate(now_local, unit);
                let first = calendar.add(current, unit, -(i64::from(*count) - 1));
                TimeRange {
                    start: calendar.period_start(first),
                    end: calendar.period_start(calendar.add(current, unit, 1)),
                }
            }
            DateRange::Current { unit } => {
                let unit = unit.unit();
                let current = calendar.truncate(now_local, unit);
                TimeRange {
                    start: calendar.period_start(current),
                    end: calendar.period_start(calendar.add(current, unit, 1)),
                }
            }
            DateRange::Previous { unit } => {
                let unit = unit.unit();
                let current = calendar.truncate(now_local, unit);
                TimeRange {
                    start: calendar.period_start(calendar.add(current, unit, -1)),
                    end: calendar.period_start(current),
                }
            }
            DateRange::Absolute { from, to } => {
                let start = match parse_bound(&format!("{field}.from"), from)? {
                    Bound::Instant(t) => t,
                    Bound::Local(l) => calendar.period_start(l),
                    Bound::Date(d) => calendar.period_start(d.and_time(NaiveTime::MIN)),
                };
                let end = match to {
                    None => {
                        let today = calendar.truncate(now_local, CalendarUnit::Day);
                        calendar.period_start(calendar.add(today, CalendarUnit::Day, 1))
                    }
                    Some(to) => match parse_bound(&format!("{field}.to"), to)? {
                        Bound::Instant(t) => t,
                        Bound::Local(l) => calendar.period_start(l),
                        Bound::Date(d) => calendar.period_start(
                            d.and_time(NaiveTime::MIN)
                                .checked_add_days(Days::new(1))
                                .unwrap_or(NaiveDateTime::MAX),
                        ),
                    },
                };
                if end <= start {
                    return Err(QueryError::invalid(
                        format!("{field}.to"),
                        format!("must be after `from` ({from}); the range is empty"),
                    ));
                }
                TimeRange { start, end }
            }
        };
        check_years(field, calendar, range)?;
        Ok(range)
    }
}

fn check_years(field: &str, calendar: &Calendar, range: TimeRange) -> Result<()> {
    for t in [range.start, range.end - 1] {
        let year = calendar.local(t).map(|l| l.year());
        if !year.is_some_and(|y| (MIN_YEAR..=MAX_YEAR).contains(&y)) {
            return Err(QueryError::invalid(
                field,
                format!("the range must lie within the years {MIN_YEAR} to {MAX_YEAR}"),
            ));
        }
    }
    Ok(())
}

enum Bound {
    Instant(i64),
    Local(NaiveDateTime),
    Date(NaiveDate),
}

fn parse_bound(field: &str, text: &str) -> Result<Bound> {
    let bound = if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Some(Bound::Date(d))
    } else if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        Some(Bound::Instant(t.timestamp_micros()))
    } else {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .map(Bound::Local)
    };
    let year = match &bound {
        Some(Bound::Date(d)) => d.year(),
        Some(Bound::Local(l)) => l.year(),
        Some(Bound::Instant(t)) => chrono::DateTime::from_timestamp_micros(*t)
            .map(|d| d.year())
            .unwrap_or(i32::MIN),
        None => {
            return Err(QueryError::invalid(
                field,
                format!(
                    "`{text}` is not a date (`2024-03-01`), a local time (`2024-03-01T08:00:00`) or an RFC 3339 instant (`2024-03-01T08:00:00Z`)"
                ),
            ));
        }
    };
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(QueryError::invalid(
            field,
            format!("`{text}` is outside the years {MIN_YEAR} to {MAX_YEAR}"),
        ));
    }
    bound.ok_or_else(|| QueryError::invalid(field, "unparseable"))
}

/// A resolved, half-open interval of UTC microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TimeRange {
    /// First instant covered.
    pub start: i64,
    /// First instant not covered.
    pub end: i64,
}

impl TimeRange {
    /// Whether `t` is inside the range.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    /// The period a comparison is made against: the range of the same calendar length
    /// that ends where this one starts. Month-aligned ranges shift by whole months,
    /// day-aligned ranges by whole local days (so that daylight-saving changes do not
    /// shift the buckets off midnight), anything else by the exact duration.
    pub fn previous(&self, calendar: &Calendar) -> TimeRange {
        let exact = TimeRange {
            start: self.start - (self.end - self.start),
            end: self.start,
        };
        let (Some(start), Some(end)) = (calendar.local(self.start), calendar.local(self.end))
        else {
            return exact;
        };
        let aligned = |unit| {
            calendar.truncate(start, unit) == start
                && calendar.period_start(start) == self.start
                && calendar.truncate(end, unit) == end
                && calendar.period_start(end) == self.end
        };
        if aligned(CalendarUnit::Month) {
            let months =
                (end.year() - start.year()) * 12 + end.month() as i32 - start.month() as i32;
            return TimeRange {
                start: calendar.period_start(calendar.add(
                    start,
                    CalendarUnit::Month,
                    -i64::from(months),
                )),
                end: self.start,
            };
        }
        if aligned(CalendarUnit::Day) {
            let days = (end.date() - start.date()).num_days();
            return TimeRange {
                start: calendar.period_start(calendar.add(start, CalendarUnit::Day, -days)),
                end: self.start,
            };
        }
        exact
    }
}

/// Calendar units the [`Calendar`] can truncate to and step by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalendarUnit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// A time zone and week start: how instants map to local periods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    /// The time zone.
    pub tz: Tz,
    /// The first day of a week.
    pub week_start: WeekStart,
}

impl Calendar {
    /// A calendar in `tz` with weeks starting on `week_start`.
    pub fn new(tz: Tz, week_start: WeekStart) -> Self {
        Calendar { tz, week_start }
    }

    /// UTC, weeks starting on Monday.
    pub fn utc() -> Self {
        Calendar::new(Tz::UTC, WeekStart::Monday)
    }

    /// Parses an optional IANA name; `None` means `default`.
    pub fn from_settings(
        field: &str,
        time_zone: Option<&str>,
        default: Tz,
        week_start: WeekStart,
    ) -> Result<Self> {
        let tz = match time_zone {
            None => default,
            Some(name) => parse_time_zone(field, name)?,
        };
        Ok(Calendar::new(tz, week_start))
    }

    /// The local wall-clock time of an instant (`None` outside chrono's range).
    pub fn local(&self, t: i64) -> Option<NaiveDateTime> {
        chrono::DateTime::from_timestamp_micros(t).map(|d| d.with_timezone(&self.tz).naive_local())
    }

    /// The local calendar date of an instant.
    pub fn local_date(&self, t: i64) -> Option<NaiveDate> {
        self.local(t).map(|l| l.date())
    }

    /// The wall-clock start of the period of `interval` containing local time `l`.
    pub fn period_of(&self, l: NaiveDateTime, interval: Interval) -> NaiveDateTime {
        self.truncate(l, interval.unit())
    }

    /// The wall-clock start of the next period of `interval`.
    pub fn next_period(&self, p: NaiveDateTime, interval: Interval) -> NaiveDateTime {
        self.add(p, interval.unit(), 1)
    }

    /// `p` moved by `n` periods of `interval` (calendar arithmetic: months keep their
    /// day 1, weeks are 7 local days).
    pub fn shift_period(&self, p: NaiveDateTime, interval: Interval, n: i64) -> NaiveDateTime {
        self.add(p, interval.unit(), n)
    }

    pub(crate) fn truncate(&self, l: NaiveDateTime, unit: CalendarUnit) -> NaiveDateTime {
        let day = l.date();
        let date = match unit {
            CalendarUnit::Hour => {
                return day
                    .and_time(NaiveTime::from_hms_opt(l.hour(), 0, 0).unwrap_or(NaiveTime::MIN));
            }
            CalendarUnit::Day => day,
            CalendarUnit::Week => {
                let back = day.weekday().days_since(self.week_start.weekday());
                day.checked_sub_days(Days::new(u64::from(back)))
                    .unwrap_or(day)
            }
            CalendarUnit::Month => day.with_day(1).unwrap_or(day),
            CalendarUnit::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day),
        };
        date.and_time(NaiveTime::MIN)
    }

    /// Wall-clock arithmetic; saturates at chrono's range (far beyond [`MAX_YEAR`]).
    pub(crate) fn add(&self, l: NaiveDateTime, unit: CalendarUnit, n: i64) -> NaiveDateTime {
        let saturate = if n < 0 {
            NaiveDateTime::MIN
        } else {
            NaiveDateTime::MAX
        };
        let result = match unit {
            CalendarUnit::Hour => {
                chrono::Duration::try_hours(n).and_then(|d| l.checked_add_signed(d))
            }
            CalendarUnit::Day => {
                chrono::Duration::try_days(n).and_then(|d| l.checked_add_signed(d))
            }
            CalendarUnit::Week => {
                chrono::Duration::try_weeks(n).and_then(|d| l.checked_add_signed(d))
            }
            CalendarUnit::Month | CalendarUnit::Year => {
                let months = if unit == CalendarUnit::Year {
                    n.saturating_mul(12)
                } else {
                    n
                };
                let magnitude = u32::try_from(months.unsigned_abs()).ok().map(Months::new);
                magnitude.and_then(|m| {
                    if months < 0 {
                        l.checked_sub_months(m)
                    } else {
                        l.checked_add_months(m)
                    }
                })
            }
        };
        result.unwrap_or(saturate)
    }

    /// The earliest instant whose local wall-clock time is at or after `l`: `l`
    /// itself when it exists once, its first occurrence when a fall-back repeats it,
    /// and the end of the gap (the transition instant) when a spring-forward skips it.
    pub fn period_start(&self, l: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&l) {
            chrono::LocalResult::Single(d) => d.timestamp_micros(),
            chrono::LocalResult::Ambiguous(a, b) => a.timestamp_micros().min(b.timestamp_micros()),
            chrono::LocalResult::None => self.gap_end(l),
        }
    }

    fn gap_end(&self, l: NaiveDateTime) -> i64 {
        // Find the first valid wall-clock minute after `l` (gaps last at most a day),
        // then narrow down to the exact transition instant: within that minute's span
        // the local time increases with the instant, so bisection is exact.
        let mut probe = l;
        for _ in 0..=24 * 60 {
            probe = probe
                .checked_add_signed(chrono::Duration::minutes(1))
                .unwrap_or(NaiveDateTime::MAX);
            let found = match self.tz.from_local_datetime(&probe) {
                chrono::LocalResult::Single(d) => Some(d.timestamp_micros()),
                chrono::LocalResult::Ambiguous(a, b) => {
                    Some(a.timestamp_micros().min(b.timestamp_micros()))
                }
                chrono::LocalResult::None => None,
            };
            if let Some(after) = found {
                let (mut lo, mut hi) = (after - MICROS_PER_MINUTE, after);
                // Invariant: local(hi) >= l; local(lo) < l (a minute before the first
                // valid minute after the gap lies before the gap).
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.local(mid).is_some_and(|m| m >= l) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return hi;
            }
        }
        // No time zone has a gap longer than a day; fall back to reading `l` as UTC.
        l.and_utc().timestamp_micros()
    }

    /// The buckets of `interval` that cover `range`, in order. The first may start
    /// before `range.start` (a week starting on Monday for a range starting on
    /// Wednesday); only the part inside the range is counted.
    pub fn buckets(&self, range: TimeRange, interval: Interval) -> Result<Vec<Bucket>> {
        Ok(self
            .periods(range, interval)?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// [`Calendar::buckets`] with each bucket's wall-clock period start.
    pub fn periods(
        &self,
        range: TimeRange,
        interval: Interval,
    ) -> Result<Vec<(NaiveDateTime, Bucket)>> {
        let Some(first) = self.local(range.start) else {
            return Err(QueryError::invalid(
                "date_range",
                "the range start is out of range",
            ));
        };
        let mut p = self.period_of(first, interval);
        let mut out = Vec::new();
        loop {
            let start = self.period_start(p);
            if start >= range.end {
                break;
            }
            let next = self.next_period(p, interval);
            // A period no instant falls into (an hour skipped by daylight saving) has
            // no bucket.
            if self.period_start(next) > start || next == p {
                if out.len() == MAX_BUCKETS {
                    return Err(QueryError::TooManyBuckets {
                        count: self.count_buckets(range, interval),
                        max: MAX_BUCKETS,
                        interval: interval.as_str(),
                    });
                }
                out.push((p, Bucket::new(start, p, interval)));
            }
            if next == p {
                break;
            }
            p = next;
        }
        Ok(out)
    }

    fn count_buckets(&self, range: TimeRange, interval: Interval) -> usize {
        let span = (range.end - range.start).max(0);
        let approx = match interval {
            Interval::Hour => span / MICROS_PER_HOUR,
            Interval::Day => span / MICROS_PER_DAY,
            Interval::Week => span / (7 * MICROS_PER_DAY),
            Interval::Month => span / (30 * MICROS_PER_DAY),
        };
        usize::try_from(approx)
            .unwrap_or(usize::MAX)
            .max(MAX_BUCKETS + 1)
    }
}

/// Parses an IANA time zone name.
pub fn parse_time_zone(field: &str, name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| QueryError::UnknownTimeZone {
        field: field.to_string(),
        name: name.to_string(),
    })
}

/// One time bucket of a result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Bucket {
    /// The bucket's first instant (UTC microseconds), per the period-start rule.
    pub start: i64,
    /// The bucket's local wall-clock start: `2024-03-10` for days, weeks and months,
    /// `2024-03-10T14:00` for hours.
    pub label: String,
}

impl Bucket {
    pub(crate) fn new(start: i64, period: NaiveDateTime, interval: Interval) -> Self {
        let label = match interval {
            Interval::Hour => period.format("%Y-%m-%dT%H:%M").to_string(),
            _ => period.format("%Y-%m-%d").to_string(),
        };
        Bucket { start, label }
    }
}

/// The unit of a conversion window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum WindowUnit {
    /// Exactly 60 seconds.
    Minute,
    /// Exactly 3600 seconds.
    Hour,
    /// Exactly 24 hours (not a calendar day).
    Day,
    /// Exactly 7 × 24 hours.
    Week,
}

/// A conversion window: a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// How many units, at least 1.
    pub value: u32,
    /// The unit.
    pub unit: WindowUnit,
}

impl Window {
    /// A window of `value` minutes.
    pub fn minutes(value: u32) -> Self {
        Window {
            value,
            unit: WindowUnit::Minute,
        }
    }

    /// A window of `value` hours.
    pub fn hours(value: u32) -> Self {
        Window {
            value,
            unit: WindowUnit::Hour,
        }
    }

    /// A window of `value` days.
    pub fn days(value: u32) -> Self {
        Window {
            value,
            unit: WindowUnit::Day,
        }
    }

    /// The window's length in microseconds.
    pub fn micros(&self) -> i64 {
        let unit = match self.unit {
            WindowUnit::Minute => MICROS_PER_MINUTE,
            WindowUnit::Hour => MICROS_PER_HOUR,
            WindowUnit::Day => MICROS_PER_DAY,
            WindowUnit::Week => 7 * MICROS_PER_DAY,
        };
        i64::from(self.value).saturating_mul(unit)
    }

    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        if self.value == 0 {
            return Err(QueryError::invalid(
                format!("{field}.value"),
                "a conversion window must be greater than zero",
            ));
        }
        if self.micros() > MAX_WINDOW_MICROS {
            return Err(QueryError::invalid(
                field,
                "a conversion window may be at most 366 days",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, s: &str) -> i64 {
        let l = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        tz.from_local_datetime(&l)
            .earliest()
            .unwrap()
            .timestamp_micros()
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn relative_ranges_are_whole_local_units_including_the_current_one() {
        let paris = Calendar::new(chrono_tz::Europe::Paris, WeekStart::Monday);
        // Wednesday 2024-03-13 10:00 Paris.
        let now = at(paris.tz, "2024-03-13T10:00:00");
        let r = DateRange::Last {
            count: 7,
            unit: RangeUnit::Day,
        }
        .resolve(now, &paris, "date_range")
        .unwrap();
        assert_eq!(r.start, at(paris.tz, "2024-03-07T00:00:00"));
        assert_eq!(r.end, at(paris.tz, "2024-03-14T00:00:00"));
        let week = DateRange::Current {
            unit: RangeUnit::Week,
        }
        .resolve(now, &paris, "d")
        .unwrap();
        assert_eq!(week.start, at(paris.tz, "2024-03-11T00:00:00"));
        let sunday = Calendar::new(paris.tz, WeekStart::Sunday);
        let week = DateRange::Current {
            unit: RangeUnit::Week,
        }
        .resolve(now, &sunday, "d")
        .unwrap();
        assert_eq!(week.start, at(paris.tz, "2024-03-10T00:00:00"));
        let month = DateRange::Previous {
            unit: RangeUnit::Month,
        }
        .resolve(now, &paris, "d")
        .unwrap();
        assert_eq!(month.start, at(paris.tz, "2024-02-01T00:00:00"));
        assert_eq!(month.end, at(paris.tz, "2024-03-01T00:00:00"));
    }

    #[test]
    fn absolute_dates_are_local_and_inclusive_times_exclusive() {
        let ny = Calendar::new(chrono_tz::America::New_York, WeekStart::Monday);
        let r = DateRange::Absolute {
            from: "2024-03-01".into(),
            to: Some("2024-03-01".into()),
        }
        .resolve(0, &ny, "d")
        .unwrap();
        assert_eq!(r.start, utc("2024-03-01T05:00:00Z"));
        assert_eq!(r.end, utc("2024-03-02T05:00:00Z"));
        let r = DateRange::Absolute {
            from: "2024-03-01T08:00".into(),
            to: Some("2024-03-01T19:30:00Z".into()),
        }
        .resolve(0, &ny, "d")
        .unwrap();
        assert_eq!(r.start, utc("2024-03-01T13:00:00Z"));
        assert_eq!(r.end, utc("2024-03-01T19:30:00Z"));
        let err = DateRange::Absolute {
            from: "2024-03-02".into(),
            to: Some("2024-03-01".into()),
        }
        .resolve(0, &ny, "date_range")
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("date_range.to") && err.contains("empty"),
            "{err}"
        );
        let err = DateRange::Absolute {
            from: "yesterday".into(),
            to: None,
        }
        .validate("date_range")
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("date_range.from") && err.contains("RFC 3339"),
            "{err}"
        );
        let err = DateRange::Absolute {
            from: "1900-01-01".into(),
            to: None,
        }
        .validate("date_range")
        .unwrap_err()
        .to_string();
        assert!(err.contains("1970"), "{err}");
    }

    #[test]
    fn daylight_saving_days_are_23_and_25_hours() {
        let ny = Calendar::new(chrono_tz::America::New_York, WeekStart::Monday);
        let range = TimeRange {
            start: utc("2024-03-09T05:00:00Z"),
            end: utc("2024-03-12T04:00:00Z"),
        };
        let b = ny.buckets(range, Interval::Day).unwrap();
        let starts: Vec<_> = b.iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2024-03-09T05:00:00Z"),
                utc("2024-03-10T05:00:00Z"),
                utc("2024-03-11T04:00:00Z")
            ]
        );
        assert_eq!(b[1].label, "2024-03-10");
        // Hourly: 02:00 does not exist on 2024-03-10 in New York.
        let range = TimeRange {
            start: utc("2024-03-10T05:00:00Z"),
            end: utc("2024-03-10T09:00:00Z"),
        };
        let labels: Vec<_> = ny
            .buckets(range, Interval::Hour)
            .unwrap()
            .into_iter()
            .map(|b| b.label)
            .collect();
        assert_eq!(
            labels,
            [
                "2024-03-10T00:00",
                "2024-03-10T01:00",
                "2024-03-10T03:00",
                "2024-03-10T04:00"
            ]
        );
        // Fall back: 01:00 happens twice and is one bucket of two hours.
        let range = TimeRange {
            start: utc("2024-11-03T04:00:00Z"),
            end: utc("2024-11-03T08:00:00Z"),
        };
        let b = ny.buckets(range, Interval::Hour).unwrap();
        let labels: Vec<_> = b.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            ["2024-11-03T00:00", "2024-11-03T01:00", "2024-11-03T02:00"]
        );
        assert_eq!(b[2].start - b[1].start, 2 * MICROS_PER_HOUR);
    }

    #[test]
    fn a_day_starting_in_a_gap_starts_at_the_transition() {
        // Chile moved clocks from 00:00 to 01:00 on 2023-09-03 (America/Santiago).
        let cl = Calendar::new(chrono_tz::America::Santiago, WeekStart::Monday);
        let day = NaiveDate::from_ymd_opt(2023, 9, 3)
            .unwrap()
            .and_time(NaiveTime::MIN);
        let start = cl.period_start(day);
        assert_eq!(cl.local(start).unwrap().to_string(), "2023-09-03 01:00:00");
        assert!(cl.local(start - 1).unwrap() < day);
    }

    #[test]
    fn previous_period_keeps_calendar_alignment() {
        let ny = Calendar::new(chrono_tz::America::New_York, WeekStart::Monday);
        // March 2024 (contains the DST change) -> February 2024.
        let march = TimeRange {
            start: at(ny.tz, "2024-03-01T00:00:00"),
            end: at(ny.tz, "2024-04-01T00:00:00"),
        };
        let prev = march.previous(&ny);
        assert_eq!(
            prev,
            TimeRange {
                start: at(ny.tz, "2024-02-01T00:00:00"),
                end: march.start
            }
        );
        // 7 days across the DST change -> the 7 local days before.
        let week = TimeRange {
            start: at(ny.tz, "2024-03-08T00:00:00"),
            end: at(ny.tz, "2024-03-15T00:00:00"),
        };
        assert_eq!(week.previous(&ny).start, at(ny.tz, "2024-03-01T00:00:00"));
        // Unaligned -> exact duration.
        let odd = TimeRange {
            start: 1_000,
            end: 5_000,
        };
        assert_eq!(
            odd.previous(&ny),
            TimeRange {
                start: -3_000,
                end: 1_000
            }
        );
    }

    #[test]
    fn too_many_buckets_is_an_actionable_error() {
        let r = TimeRange {
            start: utc("2000-01-01T00:00:00Z"),
            end: utc("2010-01-01T00:00:00Z"),
        };
        let err = Calendar::utc()
            .buckets(r, Interval::Hour)
            .unwrap_err()
            .to_string();
        assert!(err.contains("coarser interval"), "{err}");
        assert_eq!(
            Calendar::utc().buckets(r, Interval::Month).unwrap().len(),
            120
        );
    }

    #[test]
    fn windows_are_bounded() {
        assert!(Window::minutes(0).validate("window").is_err());
        assert!(Window::days(367).validate("window").is_err());
        assert_eq!(Window::days(1).micros(), MICROS_PER_DAY);
    }
}
