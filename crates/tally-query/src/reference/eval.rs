//! Shared machinery of the reference: scoping, filter evaluation, breakdown keys and
//! ranking, bucket lookup.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde_json::Value;

use super::{Error, RefContext, RefEvent, RefTenant, Result};
use crate::breakdown::{Breakdown, BreakdownValue};
use crate::filter::semantics::{
    self, as_number, compare_breakdown_values, contains_ignore_case, loose_eq,
};
use crate::filter::{
    EventMatcher, Filter, FilterValue, Operator, PropertyRef, PropertySource, Scalar, compile_regex,
};
use crate::funnel::PersonKey;
use crate::scope::Scope;
use crate::time::{Bucket, Calendar, Interval, TimeRange, WeekStart, parse_time_zone};

/// The scope and calendar of one query.
pub(crate) struct Prepared<'a> {
    pub ctx: &'a RefContext,
    pub calendar: Calendar,
    scope: &'a Scope,
    selector: Vec<CompiledFilter>,
}

impl<'a> Prepared<'a> {
    pub fn new(
        scope: &'a Scope,
        time_zone: Option<&str>,
        week_start: WeekStart,
        ctx: &'a RefContext,
    ) -> Result<Self> {
        let tz = match (time_zone, scope) {
            (Some(name), _) => parse_time_zone("time_zone", name)?,
            (None, Scope::Tenant(id)) => match ctx.tenant(*id) {
                Some(t) => t
                    .time_zone
                    .parse::<Tz>()
                    .map_err(|_| Error::TenantTimeZone {
                        tenant: *id,
                        time_zone: t.time_zone.clone(),
                    })?,
                None => Tz::UTC,
            },
            (None, Scope::Operator { .. }) => Tz::UTC,
        };
        let selector = match scope {
            Scope::Tenant(_) => Vec::new(),
            Scope::Operator { tenants } => compile_filters(&tenants.filters)?,
        };
        Ok(Prepared {
            ctx,
            calendar: Calendar::new(tz, week_start),
            scope,
            selector,
        })
    }

    pub fn tenant_of(&self, e: &RefEvent) -> Option<&'a RefTenant> {
        self.ctx.tenant(e.tenant)
    }

    /// Whether the event belongs to a tenant the query reads.
    pub fn in_scope(&self, e: &RefEvent) -> bool {
        match self.scope {
            Scope::Tenant(id) => e.tenant == *id,
            Scope::Operator { tenants } => {
                (tenants.ids.is_empty() || tenants.ids.contains(&e.tenant))
                    && self
                        .selector
                        .iter()
                        .all(|f| f.matches(e, self.tenant_of(e)))
            }
        }
    }

    /// The query's events, in (timestamp, uuid) order.
    pub fn scoped<'e>(&self, events: &'e [RefEvent]) -> Vec<&'e RefEvent> {
        let mut out: Vec<&RefEvent> = events.iter().filter(|e| self.in_scope(e)).collect();
        out.sort_by_key(|e| (e.timestamp, e.tenant, e.uuid));
        out
    }

    pub fn person(e: &RefEvent) -> PersonKey {
        PersonKey {
            tenant: e.tenant,
            person_id: e.person_id.clone(),
        }
    }

    pub fn local(&self, e: &RefEvent) -> Result<NaiveDateTime> {
        self.calendar
            .local(e.timestamp)
            .ok_or(Error::TimestampOutOfRange {
                uuid: e.uuid,
                timestamp: e.timestamp,
            })
    }

    pub fn period(&self, e: &RefEvent, interval: Interval) -> Result<NaiveDateTime> {
        Ok(self.calendar.period_of(self.local(e)?, interval))
    }
}

/// A property's value on an event; `None` when absent or null.
pub(crate) fn property_value<'e>(
    e: &'e RefEvent,
    tenant: Option<&'e RefTenant>,
    p: &PropertyRef,
) -> Option<Cow<'e, Value>> {
    let found = match p.source {
        PropertySource::Event => e.properties.get(&p.key).map(Cow::Borrowed),
        PropertySource::Person => e.person_properties.get(&p.key).map(Cow::Borrowed),
        PropertySource::Group => p
            .group_type
            .as_ref()
            .and_then(|t| e.groups.get(t))
            .and_then(|g| g.properties.get(&p.key))
            .map(Cow::Borrowed),
        PropertySource::TenantAttribute => tenant
            .and_then(|t| t.attributes.get(&p.key))
            .map(|v| Cow::Owned(Value::String(v.clone()))),
        PropertySource::Tenant => match p.key.as_str() {
            "id" => Some(Cow::Owned(Value::from(e.tenant.0))),
            "name" => tenant.map(|t| Cow::Owned(Value::String(t.name.clone()))),
            _ => None,
        },
    };
    found.filter(|v| !v.is_null())
}

/// A filter with its regexes compiled.
pub(crate) enum CompiledFilter {
    Predicate { property: PropertyRef, test: Test },
    And(Vec<CompiledFilter>),
    Or(Vec<CompiledFilter>),
}

pub(crate) enum Test {
    Equals(Scalar),
    NotEquals(Scalar),
    Contains(String),
    NotContains(String),
    Regex(regex::Regex),
    Compare(Operator, f64),
    IsSet,
    IsNotSet,
    InList(Vec<Scalar>),
}

pub(crate) fn compile_filters(filters: &[Filter]) -> Result<Vec<CompiledFilter>> {
    filters.iter().map(compile_filter).collect()
}

fn compile_filter(f: &Filter) -> Result<CompiledFilter> {
    Ok(match f {
        Filter::And { filters } => CompiledFilter::And(compile_filters(filters)?),
        Filter::Or { filters } => CompiledFilter::Or(compile_filters(filters)?),
        Filter::Property(p) => {
            let scalar = || match &p.value {
                Some(FilterValue::Scalar(s)) => Ok(s.clone()),
                _ => Err(QueryErrorShape::new(p.operator)),
            };
            let text = || match scalar()? {
                Scalar::String(s) => Ok(s),
                _ => Err(QueryErrorShape::new(p.operator)),
            };
            let test = match p.operator {
                Operator::Equals => Test::Equals(scalar()?),
                Operator::NotEquals => Test::NotEquals(scalar()?),
                Operator::Contains => Test::Contains(text()?),
                Operator::NotContains => Test::NotContains(text()?),
                Operator::Regex => Test::Regex(compile_regex("value", &text()?)?),
                Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => match scalar()? {
                    Scalar::Number(n) => Test::Compare(p.operator, n),
                    _ => return Err(QueryErrorShape::new(p.operator).into()),
                },
                Operator::IsSet => Test::IsSet,
                Operator::IsNotSet => Test::IsNotSet,
                Operator::InList => match &p.value {
                    Some(FilterValue::List(values)) => Test::InList(values.clone()),
                    _ => return Err(QueryErrorShape::new(p.operator).into()),
                },
            };
            CompiledFilter::Predicate {
                property: p.property.clone(),
                test,
            }
        }
    })
}

/// A filter whose value does not fit its operator. Validation refuses these before the
/// reference runs; this keeps the reference total if it is called on an unvalidated
/// query.
struct QueryErrorShape(Operator);

impl QueryErrorShape {
    fn new(op: Operator) -> Self {
        QueryErrorShape(op)
    }
}

impl From<QueryErrorShape> for Error {
    fn from(e: QueryErrorShape) -> Self {
        Error::Query(crate::error::QueryError::invalid(
            "filters",
            format!("operator `{}` has a value of the wrong shape", e.0.as_str()),
        ))
    }
}

impl CompiledFilter {
    pub fn matches(&self, e: &RefEvent, tenant: Option<&RefTenant>) -> bool {
        match self {
            // Empty groups impose no condition, AND and OR alike.
            CompiledFilter::And(fs) => fs.iter().all(|f| f.matches(e, tenant)),
            CompiledFilter::Or(fs) => fs.is_empty() || fs.iter().any(|f| f.matches(e, tenant)),
            CompiledFilter::Predicate { property, test } => {
                let value = property_value(e, tenant, property);
                let value = value.as_deref();
                match test {
                    Test::Equals(s) => value.is_some_and(|v| loose_eq(v, s)),
                    Test::NotEquals(s) => !value.is_some_and(|v| loose_eq(v, s)),
                    Test::Contains(n) => value.is_some_and(|v| contains_ignore_case(v, n)),
                    Test::NotContains(n) => !value.is_some_and(|v| contains_ignore_case(v, n)),
                    Test::Regex(re) => matches!(value, Some(Value::String(s)) if re.is_match(s)),
                    Test::Compare(op, x) => value.and_then(as_number).is_some_and(|n| match op {
                        Operator::Gt => n > *x,
                        Operator::Gte => n >= *x,
                        Operator::Lt => n < *x,
                        _ => n <= *x,
                    }),
                    Test::IsSet => value.is_some(),
                    Test::IsNotSet => value.is_none(),
                    Test::InList(list) => {
                        value.is_some_and(|v| list.iter().any(|s| loose_eq(v, s)))
                    }
                }
            }
        }
    }
}

/// An event matcher combined with the query's global filters.
pub(crate) struct CompiledMatcher {
    event: Option<String>,
    filters: Vec<CompiledFilter>,
}

impl CompiledMatcher {
    pub fn new(matcher: &EventMatcher, global: &[Filter]) -> Result<Self> {
        let mut filters = compile_filters(global)?;
        filters.extend(compile_filters(&matcher.filters)?);
        Ok(CompiledMatcher {
            event: matcher.event.clone(),
            filters,
        })
    }

    pub fn matches(&self, e: &RefEvent, tenant: Option<&RefTenant>) -> bool {
        self.event.as_ref().is_none_or(|name| *name == e.event)
            && self.filters.iter().all(|f| f.matches(e, tenant))
    }
}

/// A breakdown key: the canonical values of the breakdown properties, ordered by
/// [`compare_breakdown_values`] element by element.
#[derive(Debug, Clone)]
pub(crate) struct Key(pub Vec<Value>);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            match compare_breakdown_values(a, b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

pub(crate) fn breakdown_key(e: &RefEvent, tenant: Option<&RefTenant>, b: &Breakdown) -> Key {
    Key(b
        .properties
        .iter()
        .map(|p| semantics::breakdown_value(property_value(e, tenant, p).as_deref()))
        .collect())
}

/// A result row: everything, one breakdown value, or "other".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Row {
    All,
    Value(Key),
    Other,
}

impl Row {
    pub fn label(&self) -> Option<BreakdownValue> {
        match self {
            Row::All => None,
            Row::Value(k) => Some(BreakdownValue::Values {
                values: k.0.clone(),
            }),
            Row::Other => Some(BreakdownValue::Other),
        }
    }
}

/// The ranking of breakdown keys: most counted first, ties by key ascending.
pub(crate) struct Ranking {
    pub top: Vec<Key>,
    /// Whether some counted key fell outside the top.
    pub has_other: bool,
}

impl Ranking {
    pub fn new(counts: BTreeMap<Key, u64>, limit: u32) -> Self {
        let mut ranked: Vec<(Key, u64)> = counts.into_iter().collect();
        ranked.sort_by(|(ka, ca), (kb, cb)| cb.cmp(ca).then_with(|| ka.cmp(kb)));
        let limit = limit as usize;
        let has_other = ranked.len() > limit;
        ranked.truncate(limit);
        Ranking {
            top: ranked.into_iter().map(|(k, _)| k).collect(),
            has_other,
        }
    }

    /// The row a key belongs to.
    pub fn row_of(&self, key: &Key) -> Row {
        if self.top.contains(key) {
            Row::Value(key.clone())
        } else {
            Row::Other
        }
    }

    /// The rows, in rank order, "other" last when `with_other`.
    pub fn rows(&self, with_other: bool) -> Vec<Row> {
        let mut rows: Vec<Row> = self.top.iter().cloned().map(Row::Value).collect();
        if with_other {
            rows.push(Row::Other);
        }
        rows
    }
}

/// The buckets of one period and the lookup from an event to its bucket.
pub(crate) struct BucketPlan {
    pub interval: Interval,
    pub range: TimeRange,
    pub periods: Vec<NaiveDateTime>,
    pub buckets: Vec<Bucket>,
}

impl BucketPlan {
    /// The calendar's buckets for `range`, plus any period an in-range event falls into
    /// that the enumeration missed (possible only where local time runs backwards
    /// across a period boundary).
    pub fn new(
        prep: &Prepared,
        range: TimeRange,
        interval: Interval,
        events: &[&RefEvent],
    ) -> Result<Self> {
        let cal = &prep.calendar;
        let mut by_period: BTreeMap<NaiveDateTime, Bucket> =
            cal.periods(range, interval)?.into_iter().collect();
        for e in events.iter().filter(|e| range.contains(e.timestamp)) {
            let p = prep.period(e, interval)?;
            by_period
                .entry(p)
                .or_insert_with(|| Bucket::new(cal.period_start(p), p, interval));
        }
        let (periods, buckets) = by_period.into_iter().unzip();
        Ok(BucketPlan {
            interval,
            range,
            periods,
            buckets,
        })
    }

    /// The bucket of an event, if it is in the range.
    pub fn index_of(&self, prep: &Prepared, e: &RefEvent) -> Result<Option<usize>> {
        if !self.range.contains(e.timestamp) {
            return Ok(None);
        }
        let p = prep.period(e, self.interval)?;
        Ok(self.periods.binary_search(&p).ok())
    }
}
