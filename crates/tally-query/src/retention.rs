//! Retention: of the persons who did a start event in a period, how many came back
//! (did a return event) in each later period.
//!
//! Owns the request ([`RetentionQuery`]), its validation and the cohort table
//! ([`RetentionResult`]). Semantics: `docs/QUERY-SEMANTICS.md` and
//! [`crate::reference::retention`].

use serde::{Deserialize, Serialize};

use crate::breakdown::{Breakdown, BreakdownValue};
use crate::error::{QueryError, Result};
use crate::filter::{EventMatcher, Filter, validate_filters};
use crate::scope::Scope;
use crate::time::{Bucket, DateRange, Interval, WeekStart, parse_time_zone};

/// Most return periods of a retention table.
pub const MAX_RETENTION_PERIODS: u32 = 366;

fn default_periods() -> u32 {
    10
}

/// A retention query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RetentionQuery {
    /// The tenants read. Set by the API from the credentials.
    pub scope: Scope,
    /// The cohort periods: every period of `period` size that overlaps the range is a
    /// cohort, formed by start events inside the range. Return events may come later.
    pub date_range: DateRange,
    /// IANA time zone for periods and date ranges; absent means the tenant's setting
    /// (UTC for operator queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First day of a week.
    #[serde(default)]
    pub week_start: WeekStart,
    /// Filters every start and return event must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// The event that puts a person into a cohort.
    pub start: EventMatcher,
    /// The event that counts as coming back.
    #[serde(rename = "return")]
    pub return_event: EventMatcher,
    /// First-time or recurring cohorts.
    #[serde(default)]
    pub cohort: CohortKind,
    /// The period size.
    #[serde(default)]
    pub period: RetentionPeriod,
    /// How many periods after the cohort's own to report, 1 to 366; default 10.
    #[serde(default = "default_periods")]
    pub periods: u32,
    /// Whether period N counts returns in exactly that period, or in it or later.
    #[serde(default)]
    pub mode: ReturnMode,
    /// Split cohorts by property values of the start event that formed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
}

/// Which start events form cohorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CohortKind {
    /// A person belongs to the cohort of the period of their first start event ever
    /// (when that event is in the date range): one cohort per person.
    FirstTime,
    /// A person belongs to the cohort of every period in which they did a start event.
    #[default]
    Recurring,
}

/// The period size of a retention table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetentionPeriod {
    /// Local calendar days.
    Day,
    #[default]
    /// Local calendar weeks starting on `week_start`.
    Week,
    /// Local calendar months.
    Month,
}

impl RetentionPeriod {
    /// The equivalent bucket interval.
    pub fn interval(self) -> Interval {
        match self {
            RetentionPeriod::Day => Interval::Day,
            RetentionPeriod::Week => Interval::Week,
            RetentionPeriod::Month => Interval::Month,
        }
    }
}

/// How a return in period N is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReturnMode {
    /// Returned in exactly period N.
    #[default]
    On,
    /// Returned in period N or any later period.
    OnOrAfter,
}

impl RetentionQuery {
    /// Checks everything that can be checked without the clock or data.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate("scope")?;
        let ctx = self.scope.context();
        self.date_range.validate("date_range")?;
        if let Some(tz) = &self.time_zone {
            parse_time_zone("time_zone", tz)?;
        }
        validate_filters("filters", &self.filters, &ctx)?;
        self.start.validate("start", &ctx)?;
        self.return_event.validate("return", &ctx)?;
        if self.periods == 0 || self.periods > MAX_RETENTION_PERIODS {
            return Err(QueryError::invalid(
                "periods",
                format!(
                    "must be between 1 and {MAX_RETENTION_PERIODS}, got {}",
                    self.periods
                ),
            ));
        }
        if let Some(b) = &self.breakdown {
            b.validate("breakdown", &ctx)?;
        }
        Ok(())
    }
}

/// A retention result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetentionResult {
    /// All persons: one row per cohort period, in time order.
    pub total: Vec<RetentionCohort>,
    /// One table per breakdown row (top values in rank order, then "other"); empty
    /// without a breakdown.
    pub breakdowns: Vec<RetentionBreakdownRow>,
}

/// The cohort table of one breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetentionBreakdownRow {
    /// The row's value.
    pub breakdown: BreakdownValue,
    /// One cohort per period, in time order.
    pub cohorts: Vec<RetentionCohort>,
}

/// One cohort: its size and how many of it came back in each later period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetentionCohort {
    /// The cohort's period.
    pub period: Bucket,
    /// Persons in the cohort.
    pub size: u64,
    /// `values[n]` for n = 0 ..= periods: persons of the cohort who returned in period
    /// n (`on`) or in period n or later (`on_or_after`). `values[0]` is the cohort
    /// size. `null` for periods that have not started yet.
    pub values: Vec<Option<u64>>,
    /// `values[n] / size` as percentages; `null` where the value is, or the cohort is
    /// empty.
    pub percentages: Vec<Option<f64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_and_limits() {
        let q: RetentionQuery = serde_json::from_str(
            r#"{"scope":{"tenant":1},"date_range":{"type":"previous","unit":"month"},
                "start":{"event":"signed_up"},"return":{"event":null,"filters":[]},
                "cohort":"first_time","period":"day","periods":30,"mode":"on_or_after"}"#,
        )
        .unwrap();
        q.validate().unwrap();
        assert_eq!(q.return_event.event, None);
        let text = serde_json::to_string(&q).unwrap();
        assert!(text.contains(r#""return":"#), "{text}");
        assert_eq!(serde_json::from_str::<RetentionQuery>(&text).unwrap(), q);
        let too_many = RetentionQuery {
            periods: MAX_RETENTION_PERIODS + 1,
            ..q.clone()
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .to_string()
                .contains("periods")
        );
        let none = RetentionQuery { periods: 0, ..q };
        assert!(none.validate().is_err());
    }
}
