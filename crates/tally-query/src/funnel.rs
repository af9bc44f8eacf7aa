//! Funnels: how many persons go through a sequence of steps within a conversion
//! window, how long they take, and who drops off where.
//!
//! Owns the request ([`FunnelQuery`]: steps, window, order, exclusions, optional steps,
//! breakdown, and the [`FunnelView`] asked for), its validation, the result shapes, and
//! the person-list cursor. The semantics are in `docs/QUERY-SEMANTICS.md` and
//! [`crate::reference::funnel`].

use serde::{Deserialize, Serialize};
use tally_core::TenantId;

use crate::breakdown::{Breakdown, BreakdownValue};
use crate::error::{QueryError, Result};
use crate::filter::{EventMatcher, Filter, validate_event_name, validate_filters};
use crate::scope::Scope;
use crate::time::{Bucket, DateRange, Interval, WeekStart, Window, parse_time_zone};

/// Fewest steps of a funnel.
pub const MIN_STEPS: usize = 2;
/// Most steps of a funnel.
pub const MAX_STEPS: usize = 20;
/// Most exclusions of a funnel.
pub const MAX_EXCLUSIONS: usize = 20;
/// Most bins of a time-to-convert histogram.
pub const MAX_HISTOGRAM_BINS: u32 = 100;
/// Largest page of persons.
pub const MAX_PERSONS_PAGE: u32 = 1000;

fn default_window() -> Window {
    Window::days(14)
}

fn default_bins() -> u32 {
    10
}

fn default_page() -> u32 {
    100
}

/// A funnel query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// The tenants read. Set by the API from the credentials.
    pub scope: Scope,
    /// When persons may enter the funnel (their first step's event); later steps may
    /// happen after the range, within the window.
    pub date_range: DateRange,
    /// IANA time zone for date ranges and buckets; absent means the tenant's setting
    /// (UTC for operator queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First day of a week.
    #[serde(default)]
    pub week_start: WeekStart,
    /// Filters every event considered must pass: step events, exclusion events, and
    /// (strict order) the events that may not come between steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// The steps, 2 to 20, in order (their order does not matter with `any_order`).
    pub steps: Vec<FunnelStep>,
    /// The conversion window, measured from the first step's event: every later step's
    /// event must happen at most this long after it. Default 14 days.
    #[serde(default = "default_window")]
    pub window: Window,
    /// How steps must follow each other.
    #[serde(default)]
    pub order: FunnelOrder,
    /// Events that disqualify a conversion when they happen between two steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<FunnelExclusion>,
    /// Split persons by property values of their first entry (first touch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
    /// What to compute; default `steps`.
    #[serde(default)]
    pub view: FunnelView,
}

/// One funnel step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FunnelStep {
    /// The event name; absent or null for any event.
    #[serde(default)]
    pub event: Option<String>,
    /// Filters the step's event must pass (an implicit AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// An optional step is counted for the persons who do it, but later steps do not
    /// require it. Ordered funnels only; never the first step.
    #[serde(default)]
    pub optional: bool,
    /// The longest time from the previous required step's event to this step's event,
    /// on top of the funnel's window. Never on the first step; not with `any_order`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// A display name; defaults to the event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl FunnelStep {
    /// A required step on events named `event`.
    pub fn event(event: impl Into<String>) -> Self {
        FunnelStep {
            event: Some(event.into()),
            filters: Vec::new(),
            optional: false,
            window: None,
            label: None,
        }
    }

    /// The step's event matcher.
    pub fn matcher(&self) -> EventMatcher {
        EventMatcher {
            event: self.event.clone(),
            filters: self.filters.clone(),
        }
    }

    /// The name shown for the step.
    pub fn display_name(&self) -> String {
        self.label
            .clone()
            .or_else(|| self.event.clone())
            .unwrap_or_else(|| "All events".to_string())
    }
}

/// How steps must follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FunnelOrder {
    /// Steps happen in order; other events may happen between them.
    #[default]
    Ordered,
    /// Steps happen in order with none of the person's other events (that pass the
    /// funnel's filters) between two consecutive steps.
    Strict,
    /// Steps may happen in any order: step k counts the persons who did any k + 1 of
    /// the steps within the window.
    AnyOrder,
}

/// An event that disqualifies a conversion when it happens strictly between the
/// events of two steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FunnelExclusion {
    /// The event name; absent or null for any event.
    #[serde(default)]
    pub event: Option<String>,
    /// Filters the exclusion event must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// The step (0-based) after whose event the exclusion applies.
    pub from_step: u32,
    /// The step (0-based, greater than `from_step`) before whose event it applies.
    pub to_step: u32,
}

impl FunnelExclusion {
    /// The exclusion's event matcher.
    pub fn matcher(&self) -> EventMatcher {
        EventMatcher {
            event: self.event.clone(),
            filters: self.filters.clone(),
        }
    }
}

/// What a funnel query computes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FunnelView {
    /// Persons, conversion rates and times per step.
    #[default]
    Steps,
    /// A histogram of the time from one step to another over the persons who did both.
    TimeToConvert {
        /// The step the time is measured from (0-based).
        #[serde(default)]
        from_step: u32,
        /// The step the time is measured to; default the last step.
        #[serde(default)]
        to_step: Option<u32>,
        /// The number of bins, 1 to 100; default 10.
        #[serde(default = "default_bins")]
        bins: u32,
    },
    /// The conversion rate of the persons who entered in each bucket.
    ConversionOverTime {
        /// The bucket size.
        #[serde(default)]
        interval: Interval,
    },
    /// A page of the persons who reached a step, or dropped off before it.
    Persons {
        /// The step (0-based).
        step: u32,
        /// Reached the step, or reached the previous required step but not this one.
        status: StepStatus,
        /// Only the persons of this breakdown row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        breakdown: Option<BreakdownValue>,
        /// Page size, 1 to 1000; default 100.
        #[serde(default = "default_page")]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
}

/// Whether a person reached a step or dropped off before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Reached the step.
    Reached,
    /// Reached the previous required step but not this one.
    DroppedOff,
}

impl FunnelQuery {
    /// Checks everything that can be checked without the clock or data.
    pub fn validate(&self) -> Result<()> {
        self.scope.validate("scope")?;
        let ctx = self.scope.context();
        self.date_range.validate("date_range")?;
        if let Some(tz) = &self.time_zone {
            parse_time_zone("time_zone", tz)?;
        }
        validate_filters("filters", &self.filters, &ctx)?;
        let n = self.steps.len();
        if !(MIN_STEPS..=MAX_STEPS).contains(&n) {
            return Err(QueryError::invalid(
                "steps",
                format!("a funnel needs {MIN_STEPS} to {MAX_STEPS} steps, got {n}"),
            ));
        }
        self.window.validate("window")?;
        let any_order = self.order == FunnelOrder::AnyOrder;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}]");
            validate_event_name(&format!("{field}.event"), step.event.as_deref())?;
            validate_filters(&format!("{field}.filters"), &step.filters, &ctx)?;
            if step.optional {
                if i == 0 {
                    return Err(QueryError::invalid(
                        format!("{field}.optional"),
                        "the first step cannot be optional: it is where persons enter the funnel",
                    ));
                }
                if self.order != FunnelOrder::Ordered {
                    return Err(QueryError::invalid(
                        format!("{field}.optional"),
                        "optional steps need `order: ordered` (in a strict funnel a skipped step's event would break the sequence; in any order nothing is skipped)",
                    ));
                }
            }
            if let Some(w) = &step.window {
                if i == 0 {
                    return Err(QueryError::invalid(
                        format!("{field}.window"),
                        "the first step has no previous step to measure a window from; set the funnel's `window` instead",
                    ));
                }
                if any_order {
                    return Err(QueryError::invalid(
                        format!("{field}.window"),
                        "per-step windows need an ordered or strict funnel: in any order there is no previous step",
                    ));
                }
                w.validate(&format!("{field}.window"))?;
            }
        }
        if !self.steps.iter().any(|s| !s.optional) {
            return Err(QueryError::invalid(
                "steps",
                "at least one step must be required",
            ));
        }
        if self.exclusions.len() > MAX_EXCLUSIONS {
            return Err(QueryError::invalid(
                "exclusions",
                format!(
                    "at most {MAX_EXCLUSIONS} exclusions, got {}",
                    self.exclusions.len()
                ),
            ));
        }
        for (i, x) in self.exclusions.iter().enumerate() {
            let field = format!("exclusions[{i}]");
            if any_order {
                return Err(QueryError::invalid(
                    &field,
                    "exclusions need an ordered or strict funnel: in any order there is no \"between two steps\"",
                ));
            }
            validate_event_name(&format!("{field}.event"), x.event.as_deref())?;
            validate_filters(&format!("{field}.filters"), &x.filters, &ctx)?;
            self.check_required_step(&format!("{field}.from_step"), x.from_step)?;
            self.check_required_step(&format!("{field}.to_step"), x.to_step)?;
            if x.from_step >= x.to_step {
                return Err(QueryError::invalid(
                    format!("{field}.to_step"),
                    format!(
                        "must be greater than from_step ({}), got {}",
                        x.from_step, x.to_step
                    ),
                ));
            }
        }
        if let Some(b) = &self.breakdown {
            b.validate("breakdown", &ctx)?;
        }
        match &self.view {
            FunnelView::Steps | FunnelView::ConversionOverTime { .. } => {}
            FunnelView::TimeToConvert {
                from_step,
                to_step,
                bins,
            } => {
                let to = to_step.unwrap_or(self.last_required_step());
                self.check_required_step("view.from_step", *from_step)?;
                self.check_required_step("view.to_step", to)?;
                if *from_step >= to {
                    return Err(QueryError::invalid(
                        "view.to_step",
                        format!("must be greater than from_step ({from_step}), got {to}"),
                    ));
                }
                if *bins == 0 || *bins > MAX_HISTOGRAM_BINS {
                    return Err(QueryError::invalid(
                        "view.bins",
                        format!("must be between 1 and {MAX_HISTOGRAM_BINS}, got {bins}"),
                    ));
                }
                if self.breakdown.is_some() {
                    return Err(QueryError::invalid(
                        "breakdown",
                        "the time_to_convert view covers all persons; remove the breakdown",
                    ));
                }
            }
            FunnelView::Persons {
                step,
                status,
                breakdown,
                limit,
                cursor,
            } => {
                self.check_step("view.step", *step)?;
                if *status == StepStatus::DroppedOff && *step == 0 {
                    return Err(QueryError::invalid(
                        "view.status",
                        "nobody drops off before the first step; ask for `reached` at step 0, or `dropped_off` at a later step",
                    ));
                }
                if *limit == 0 || *limit > MAX_PERSONS_PAGE {
                    return Err(QueryError::invalid(
                        "view.limit",
                        format!("must be between 1 and {MAX_PERSONS_PAGE}, got {limit}"),
                    ));
                }
                if let Some(c) = cursor {
                    PersonCursor::decode(c)?;
                }
                match (breakdown, &self.breakdown) {
                    (None, _) => {}
                    (Some(_), None) => {
                        return Err(QueryError::invalid(
                            "view.breakdown",
                            "the query has no breakdown to pick a row of",
                        ));
                    }
                    (Some(BreakdownValue::Other), Some(_)) => {}
                    (Some(BreakdownValue::Values { values }), Some(b)) => {
                        if values.len() != b.properties.len() {
                            return Err(QueryError::invalid(
                                "view.breakdown.values",
                                format!(
                                    "has {} values but the breakdown has {} properties",
                                    values.len(),
                                    b.properties.len()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_step(&self, field: &str, step: u32) -> Result<()> {
        if step as usize >= self.steps.len() {
            return Err(QueryError::invalid(
                field,
                format!(
                    "step {step} does not exist: steps are numbered from 0 to {}",
                    self.steps.len() - 1
                ),
            ));
        }
        Ok(())
    }

    fn check_required_step(&self, field: &str, step: u32) -> Result<()> {
        self.check_step(field, step)?;
        if self.steps[step as usize].optional {
            return Err(QueryError::invalid(
                field,
                format!("step {step} is optional; this needs a required step"),
            ));
        }
        Ok(())
    }

    /// The index of the last required step.
    pub fn last_required_step(&self) -> u32 {
        let last = self.steps.iter().rposition(|s| !s.optional).unwrap_or(0);
        u32::try_from(last).unwrap_or(0)
    }
}

/// A funnel result, one variant per [`FunnelView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FunnelResult {
    /// For [`FunnelView::Steps`].
    Steps(FunnelStepsResult),
    /// For [`FunnelView::TimeToConvert`].
    TimeToConvert(TimeToConvertResult),
    /// For [`FunnelView::ConversionOverTime`].
    ConversionOverTime(ConversionOverTimeResult),
    /// For [`FunnelView::Persons`].
    Persons(FunnelPersonsResult),
}

/// Per-step results, overall and per breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelStepsResult {
    /// All persons.
    pub total: Vec<FunnelStepResult>,
    /// One entry per breakdown row (top values in rank order, then "other"); empty
    /// without a breakdown. Each person is in exactly one row, so persons add up to
    /// `total`.
    pub breakdowns: Vec<FunnelBreakdownRow>,
}

/// The steps of one breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelBreakdownRow {
    /// The row's value.
    pub breakdown: BreakdownValue,
    /// Its steps.
    pub steps: Vec<FunnelStepResult>,
}

/// One step's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelStepResult {
    /// The step index (0-based).
    pub step: u32,
    /// The step's display name.
    pub name: String,
    /// Whether the step is optional.
    pub optional: bool,
    /// Persons who reached the step.
    pub persons: u64,
    /// `persons` as a percentage of step 0's; `null` when nobody entered.
    pub conversion_from_first_percent: Option<f64>,
    /// `persons` as a percentage of the previous required step's; `null` for step 0 or
    /// when nobody reached the previous step.
    pub conversion_from_previous_percent: Option<f64>,
    /// Average seconds from the previous required step's event to this step's, over
    /// the persons who reached the step; `null` for step 0 or nobody.
    pub average_seconds_from_previous: Option<f64>,
    /// Median of the same.
    pub median_seconds_from_previous: Option<f64>,
}

/// A histogram of conversion times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TimeToConvertResult {
    /// The step measured from.
    pub from_step: u32,
    /// The step measured to.
    pub to_step: u32,
    /// Persons who reached `to_step` (and so `from_step`).
    pub persons: u64,
    /// Equal-width bins from the shortest to the longest time; empty when nobody
    /// converted.
    pub bins: Vec<HistogramBin>,
    /// The average conversion time in seconds.
    pub average_seconds: Option<f64>,
    /// The median conversion time in seconds.
    pub median_seconds: Option<f64>,
}

/// One histogram bin, `[from_seconds, to_seconds)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HistogramBin {
    /// The bin's lower bound (inclusive), in seconds.
    pub from_seconds: f64,
    /// The bin's upper bound (exclusive), in seconds.
    pub to_seconds: f64,
    /// Persons whose time falls in the bin.
    pub persons: u64,
}

/// Conversion per entry bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversionOverTimeResult {
    /// The buckets.
    pub buckets: Vec<Bucket>,
    /// All persons, one point per bucket.
    pub total: Vec<ConversionPoint>,
    /// One row per breakdown row; empty without a breakdown.
    pub breakdowns: Vec<ConversionBreakdownRow>,
}

/// The conversion points of one breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversionBreakdownRow {
    /// The row's value.
    pub breakdown: BreakdownValue,
    /// One point per bucket.
    pub points: Vec<ConversionPoint>,
}

/// The funnel of the persons who entered in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversionPoint {
    /// Persons who entered (did step 0) in the bucket.
    pub entered: u64,
    /// Of those, persons who reached the last required step within the window.
    pub converted: u64,
    /// `converted / entered` as a percentage; `null` when nobody entered.
    pub conversion_percent: Option<f64>,
}

/// A page of persons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FunnelPersonsResult {
    /// Persons ordered by tenant, then person id.
    pub persons: Vec<PersonKey>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A person, identified by tenant and person id (the id as resolved at query time:
/// an unmapped distinct id is its own person).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PersonKey {
    /// The person's tenant.
    #[cfg_attr(feature = "schema", schemars(with = "u32"))]
    pub tenant: TenantId,
    /// The person id.
    pub person_id: String,
}

/// The position after the last person of a page, as an opaque string
/// (`p1.<tenant>.<person id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonCursor(pub PersonKey);

impl PersonCursor {
    /// The cursor as the opaque text clients pass back.
    pub fn encode(&self) -> String {
        format!("p1.{}.{}", self.0.tenant, self.0.person_id)
    }

    /// Parses a cursor produced by [`PersonCursor::encode`].
    pub fn decode(cursor: &str) -> Result<Self> {
        let invalid = || QueryError::InvalidCursor {
            cursor: cursor.to_string(),
        };
        let rest = cursor.strip_prefix("p1.").ok_or_else(invalid)?;
        let (tenant, person) = rest.split_once('.').ok_or_else(invalid)?;
        let tenant = tenant.parse::<u32>().map_err(|_| invalid())?;
        Ok(PersonCursor(PersonKey {
            tenant: TenantId(tenant),
            person_id: person.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn funnel(steps: Vec<FunnelStep>) -> FunnelQuery {
        FunnelQuery {
            scope: Scope::Tenant(TenantId(1)),
            date_range: DateRange::Last {
                count: 7,
                unit: crate::time::RangeUnit::Day,
            },
            time_zone: None,
            week_start: WeekStart::Monday,
            filters: vec![],
            steps,
            window: Window::days(14),
            order: FunnelOrder::Ordered,
            exclusions: vec![],
            breakdown: None,
            view: FunnelView::Steps,
        }
    }

    fn error(q: &FunnelQuery) -> String {
        q.validate().unwrap_err().to_string()
    }

    #[test]
    fn step_count_and_window_limits() {
        let mut q = funnel(vec![FunnelStep::event("a")]);
        assert!(error(&q).contains("2 to 20 steps, got 1"));
        q.steps = (0..21)
            .map(|i| FunnelStep::event(format!("e{i}")))
            .collect();
        assert!(error(&q).contains("got 21"));
        q.steps.truncate(3);
        q.validate().unwrap();
        q.window = Window::minutes(0);
        assert!(error(&q).contains("window.value"));
        q.window = Window::days(1);
        q.steps[0].window = Some(Window::hours(1));
        assert!(error(&q).contains("steps[0].window"));
        q.steps[0].window = None;
        q.steps[2].window = Some(Window::hours(0));
        assert!(error(&q).contains("steps[2].window.value"));
    }

    #[test]
    fn optional_steps_and_exclusions_rules() {
        let mut q = funnel(vec![
            FunnelStep::event("a"),
            FunnelStep::event("b"),
            FunnelStep::event("c"),
        ]);
        q.steps[0].optional = true;
        assert!(error(&q).contains("first step cannot be optional"));
        q.steps[0].optional = false;
        q.steps[1].optional = true;
        q.validate().unwrap();
        q.order = FunnelOrder::Strict;
        assert!(error(&q).contains("optional steps need `order: ordered`"));
        q.order = FunnelOrder::Ordered;
        q.exclusions.push(FunnelExclusion {
            event: Some("x".into()),
            filters: vec![],
            from_step: 1,
            to_step: 2,
        });
        assert!(error(&q).contains("step 1 is optional"));
        q.exclusions[0].from_step = 2;
        assert!(error(&q).contains("greater than from_step"));
        q.exclusions[0].from_step = 0;
        q.exclusions[0].to_step = 5;
        assert!(error(&q).contains("0 to 2"));
        q.exclusions[0].to_step = 2;
        q.validate().unwrap();
        q.steps[1].optional = false;
        q.order = FunnelOrder::AnyOrder;
        assert!(error(&q).contains("exclusions need an ordered or strict funnel"));
    }

    #[test]
    fn views_are_checked_against_the_steps() {
        let mut q = funnel(vec![FunnelStep::event("a"), FunnelStep::event("b")]);
        q.view = FunnelView::Persons {
            step: 0,
            status: StepStatus::DroppedOff,
            breakdown: None,
            limit: 10,
            cursor: None,
        };
        assert!(error(&q).contains("nobody drops off"));
        q.view = FunnelView::Persons {
            step: 1,
            status: StepStatus::DroppedOff,
            breakdown: None,
            limit: 10,
            cursor: Some("garbage".into()),
        };
        assert!(error(&q).contains("invalid cursor"));
        q.view = FunnelView::TimeToConvert {
            from_step: 1,
            to_step: None,
            bins: 10,
        };
        assert!(error(&q).contains("greater than from_step"));
        q.view = FunnelView::TimeToConvert {
            from_step: 0,
            to_step: None,
            bins: 0,
        };
        assert!(error(&q).contains("view.bins"));
    }

    #[test]
    fn person_cursor_round_trips_ids_with_dots() {
        let c = PersonCursor(PersonKey {
            tenant: TenantId(7),
            person_id: "a.b.c".into(),
        });
        assert_eq!(PersonCursor::decode(&c.encode()).unwrap(), c);
        assert!(PersonCursor::decode("p1.x.y").is_err());
    }

    #[test]
    fn json_defaults_make_small_queries_small() {
        let q: FunnelQuery = serde_json::from_str(
            r#"{"scope":{"tenant":3},"date_range":{"type":"last","count":30,"unit":"day"},
                "steps":[{"event":"signed_up"},{"event":"purchase","window":{"value":2,"unit":"hour"}}]}"#,
        )
        .unwrap();
        assert_eq!(q.window, Window::days(14));
        assert_eq!(q.order, FunnelOrder::Ordered);
        assert_eq!(q.view, FunnelView::Steps);
        q.validate().unwrap();
    }
}
