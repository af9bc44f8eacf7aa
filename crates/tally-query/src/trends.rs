//! Trends: counts and aggregates of events over time, per series, with formulas,
//! breakdowns and comparison with the previous period.
//!
//! Owns the request ([`TrendsQuery`]), its validation and the result shape
//! ([`TrendsResult`]). The meaning of every math is in `docs/QUERY-SEMANTICS.md` and
//! in [`crate::reference::trends`].

use serde::{Deserialize, Serialize};

use crate::breakdown::{Breakdown, BreakdownValue};
use crate::error::{QueryError, Result};
use crate::filter::{EventMatcher, Filter, PropertyRef, validate_event_name, validate_filters};
use crate::formula::Formula;
use crate::scope::Scope;
use crate::time::{Bucket, DateRange, Interval, WeekStart, parse_time_zone};

/// Most series in one trends query (one per formula letter).
pub const MAX_SERIES: usize = 26;

/// A trends query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TrendsQuery {
    /// The tenants read. Set by the API from the credentials.
    pub scope: Scope,
    /// The time covered.
    pub date_range: DateRange,
    /// The bucket size.
    #[serde(default)]
    pub interval: Interval,
    /// IANA time zone for buckets and date ranges; absent means the tenant's setting
    /// (UTC for operator queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First day of a week.
    #[serde(default)]
    pub week_start: WeekStart,
    /// Filters every series' events must pass, in addition to their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// The series, 1 to 26, named A, B, ... in formulas.
    pub series: Vec<TrendsSeries>,
    /// Arithmetic across series evaluated per bucket, e.g. `B / A * 100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Split every series by property values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
    /// Also compute the previous period of the same calendar length.
    #[serde(default)]
    pub compare: bool,
}

/// One series: which events, and what to compute over them per bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TrendsSeries {
    /// The event name; absent or null for any event.
    #[serde(default)]
    pub event: Option<String>,
    /// Filters the series' events must pass (an implicit AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// What to compute; default `total`.
    #[serde(default)]
    pub math: Math,
    /// A display name; defaults to the event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl TrendsSeries {
    /// Total count of events named `event`.
    pub fn total(event: impl Into<String>) -> Self {
        TrendsSeries {
            event: Some(event.into()),
            filters: Vec::new(),
            math: Math::Total,
            label: None,
        }
    }

    /// The series' event matcher.
    pub fn matcher(&self) -> EventMatcher {
        EventMatcher {
            event: self.event.clone(),
            filters: self.filters.clone(),
        }
    }
}

/// What a series computes per bucket.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Math {
    /// The number of events.
    #[default]
    Total,
    /// The number of distinct persons with an event.
    UniquePersons,
    /// Distinct persons active in the trailing 1 local day ending with the bucket.
    Dau,
    /// ... in the trailing 7 local days.
    Wau,
    /// ... in the trailing 30 local days.
    Mau,
    /// An aggregate of a numeric property over the bucket's events.
    Property {
        /// The aggregate.
        aggregation: PropertyAggregation,
        /// The property, read as a number; events where it is not a number are skipped.
        property: PropertyRef,
    },
    /// An aggregate, over the persons with an event in the bucket, of each person's
    /// event count.
    PerPerson {
        /// The aggregate.
        aggregation: PerPersonAggregation,
    },
}

impl Math {
    /// The trailing window in days of DAU/WAU/MAU.
    pub fn active_days(&self) -> Option<u32> {
        match self {
            Math::Dau => Some(1),
            Math::Wau => Some(7),
            Math::Mau => Some(30),
            _ => None,
        }
    }
}

/// Aggregates of a numeric property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PropertyAggregation {
    /// The sum (0 over no values).
    Sum,
    /// The arithmetic mean.
    Avg,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The exact median (mean of the two middle values for an even count).
    Median,
    /// The exact 90th percentile (linear interpolation).
    P90,
    /// The exact 95th percentile (linear interpolation).
    P95,
    /// The exact 99th percentile (linear interpolation).
    P99,
}

impl PropertyAggregation {
    /// The quantile for the percentile aggregates.
    pub fn quantile(self) -> Option<f64> {
        match self {
            PropertyAggregation::Median => Some(0.5),
            PropertyAggregation::P90 => Some(0.9),
            PropertyAggregation::P95 => Some(0.95),
            PropertyAggregation::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// Aggregates of per-person event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PerPersonAggregation {
    /// The mean count per person.
    Avg,
    /// The median count per person.
    Median,
    /// The largest count of one person.
    Max,
}

impl TrendsQuery {
    /// Checks everything that can be checked without the clock or data.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate("scope")?;
        let ctx = self.scope.context();
        self.date_range.validate("date_range")?;
        if let Some(tz) = &self.time_zone {
            parse_time_zone("time_zone", tz)?;
        }
        validate_filters("filters", &self.filters, &ctx)?;
        if self.series.is_empty() || self.series.len() > MAX_SERIES {
            return Err(QueryError::invalid(
                "series",
                format!(
                    "a trends query needs 1 to {MAX_SERIES} series, got {}",
                    self.series.len()
                ),
            ));
        }
        for (i, s) in self.series.iter().enumerate() {
            let field = format!("series[{i}]");
            validate_event_name(&format!("{field}.event"), s.event.as_deref())?;
            validate_filters(&format!("{field}.filters"), &s.filters, &ctx)?;
            match &s.math {
                Math::Property { property, .. } => {
                    property.validate(&format!("{field}.math.property"), &ctx)?
                }
                Math::PerPerson { .. }
                | Math::Dau
                | Math::Wau
                | Math::Mau
                | Math::Total
                | Math::UniquePersons => {}
            }
        }
        if let Some(formula) = &self.formula {
            Formula::parse(formula, self.series.len())?;
        }
        if let Some(b) = &self.breakdown {
            b.validate("breakdown", &ctx)?;
        }
        Ok(())
    }

    /// The parsed formula, if any.
    pub fn parsed_formula(&self) -> Result<Option<Formula>> {
        self.formula
            .as_deref()
            .map(|f| Formula::parse(f, self.series.len()))
            .transpose()
    }
}

/// A trends result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TrendsResult {
    /// The query's period.
    pub current: TrendsPeriod,
    /// The previous period, when `compare` was set. Its rows are the current period's
    /// rows (same breakdown values, ranked on the current period), bucket by bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<TrendsPeriod>,
}

/// The series of one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TrendsPeriod {
    /// The buckets, in time order; every row's `values` has one entry per bucket.
    pub buckets: Vec<Bucket>,
    /// One row per series and breakdown value: series in query order, within a series
    /// breakdown values in rank order, "other" last.
    pub series: Vec<TrendsRow>,
    /// One row per breakdown value (one row without a breakdown): the formula
    /// evaluated on that value's series. Absent without a formula.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<Vec<TrendsRow>>,
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TrendsRow {
    /// The series index (`0` = A); absent on formula rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<u32>,
    /// The series label: its `label`, else its event name, else "All events"; the
    /// formula text on formula rows.
    pub label: String,
    /// The breakdown value; absent without a breakdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<BreakdownValue>,
    /// One value per bucket; `null` where the math has no value (an average over no
    /// events, a division by zero in a formula).
    pub values: Vec<Option<f64>>,
}

#[cfg(test)]
mod tests {
    use tally_core::Classify;

    use super::*;
    use crate::time::RangeUnit;

    fn query() -> TrendsQuery {
        serde_json::from_str(
            r#"{"scope":{"tenant":1},"date_range":{"type":"last","count":30,"unit":"day"},
                "series":[{"event":"$pageview"},{"event":"signed_up","math":{"type":"unique_persons"}}],
                "formula":"B / A * 100",
                "breakdown":{"properties":[{"source":"event","key":"$browser"}]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn json_defaults_and_round_trip() {
        let q = query();
        q.validate().unwrap();
        assert_eq!(q.interval, Interval::Day);
        assert_eq!(q.series[0].math, Math::Total);
        assert_eq!(q.breakdown.as_ref().unwrap().limit, 25);
        assert_eq!(
            q.date_range,
            DateRange::Last {
                count: 30,
                unit: RangeUnit::Day
            }
        );
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<TrendsQuery>(&text).unwrap(), q);
    }

    #[test]
    fn validation_errors_name_the_field() {
        let mut q = query();
        q.formula = Some("B / C".into());
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("series C does not exist")
        );
        q.formula = None;
        q.series.clear();
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("1 to 26 series, got 0")
        );
        let mut q = query();
        q.series[1].event = Some(String::new());
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("series[1].event")
        );
        let mut q = query();
        q.breakdown.as_mut().unwrap().properties = vec![PropertyRef::event("a"); 4];
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("1 to 3 properties")
        );
        let mut q = query();
        q.breakdown.as_mut().unwrap().limit = 0;
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("breakdown.limit")
        );
        let mut q = query();
        q.time_zone = Some("Mars/Olympus".into());
        assert!(matches!(
            q.validate(),
            Err(QueryError::UnknownTimeZone { .. })
        ));
        let mut q = query();
        q.series[0].math = Math::Property {
            aggregation: PropertyAggregation::P95,
            property: PropertyRef::tenant_attribute("arr"),
        };
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("series[0].math.property.source")
        );
        q.scope = Scope::Operator {
            tenants: Default::default(),
        };
        q.validate().unwrap();
        let mut q = query();
        q.date_range = DateRange::Last {
            count: 0,
            unit: RangeUnit::Day,
        };
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("date_range.count")
        );
        assert_eq!(
            q.validate().unwrap_err().class(),
            tally_core::ErrorClass::BadRequest
        );
    }
}
