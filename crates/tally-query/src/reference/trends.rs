//! Trends, by brute force: for every series, breakdown row and bucket, select the
//! events and apply the math.

use std::collections::{BTreeMap, BTreeSet};

use super::eval::{
    BucketPlan, CompiledMatcher, Key, Prepared, Ranking, Row, breakdown_key, property_value,
};
use super::stats::{mean, quantile};
use super::{RefContext, RefEvent, Result};
use crate::filter::semantics::as_number;
use crate::formula::Formula;
use crate::funnel::PersonKey;
use crate::time::{Interval, TimeRange};
use crate::trends::{
    Math, PerPersonAggregation, PropertyAggregation, TrendsPeriod, TrendsQuery, TrendsResult,
    TrendsRow,
};
use tally_core::time::MICROS_PER_DAY;

/// One series' matching events (all time: trailing windows reach before the range),
/// each with its breakdown row key.
struct SeriesEvents<'e> {
    events: Vec<(&'e RefEvent, Option<Key>)>,
}

/// Answers a trends query.
pub fn trends(q: &TrendsQuery, events: &[RefEvent], ctx: &RefContext) -> Result<TrendsResult> {
    q.validate()?;
    let prep = Prepared::new(&q.scope, q.time_zone.as_deref(), q.week_start, ctx)?;
    let range = q
        .date_range
        .resolve(ctx.now, &prep.calendar, "date_range")?;
    let formula = q.parsed_formula()?;
    let scoped = prep.scoped(events);

    let mut series_events = Vec::with_capacity(q.series.len());
    for s in &q.series {
        let matcher = CompiledMatcher::new(&s.matcher(), &q.filters)?;
        let matching = scoped
            .iter()
            .copied()
            .filter(|e| matcher.matches(e, prep.tenant_of(e)))
            .map(|e| {
                let key = q
                    .breakdown
                    .as_ref()
                    .map(|b| breakdown_key(e, prep.tenant_of(e), b));
                (e, key)
            })
            .collect();
        series_events.push(SeriesEvents { events: matching });
    }

    let previous = q.compare.then(|| range.previous(&prep.calendar));
    let (ranking, rows) = match &q.breakdown {
        None => (None, vec![Row::All]),
        Some(b) => {
            // Rank on the current period, counting every series' events.
            let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
            for s in &series_events {
                for (e, key) in &s.events {
                    if let (true, Some(key)) = (range.contains(e.timestamp), key) {
                        *counts.entry(key.clone()).or_default() += 1;
                    }
                }
            }
            let ranking = Ranking::new(counts, b.limit);
            // "other" is a row of both periods when either period has events outside
            // the top values, so that the two periods have the same rows.
            let outside = series_events
                .iter()
                .flat_map(|s| &s.events)
                .any(|(e, key)| {
                    let in_period = range.contains(e.timestamp)
                        || previous.is_some_and(|p| p.contains(e.timestamp));
                    in_period && key.as_ref().is_some_and(|k| !ranking.top.contains(k))
                });
            let rows = ranking.rows(outside);
            (Some(ranking), rows)
        }
    };

    let compute = |period: TimeRange| -> Result<TrendsPeriod> {
        let in_period: Vec<&RefEvent> = series_events
            .iter()
            .flat_map(|s| s.events.iter().map(|(e, _)| *e))
            .collect();
        let plan = BucketPlan::new(&prep, period, q.interval, &in_period)?;
        let mut series_rows = Vec::new();
        // values[row][series] = per-bucket values, for the formula.
        let mut by_row: Vec<Vec<Vec<Option<f64>>>> = vec![Vec::new(); rows.len()];
        for (si, s) in q.series.iter().enumerate() {
            for (ri, row) in rows.iter().enumerate() {
                let row_events: Vec<&RefEvent> = series_events[si]
                    .events
                    .iter()
                    .filter(|(_, key)| match (row, key, &ranking) {
                        (Row::All, _, _) => true,
                        (row, Some(key), Some(ranking)) => ranking.row_of(key) == *row,
                        _ => false,
                    })
                    .map(|(e, _)| *e)
                    .collect();
                let values = series_values(&prep, &plan, &s.math, &row_events)?;
                by_row[ri].push(values.clone());
                series_rows.push(TrendsRow {
                    series: Some(si as u32),
                    label: s
                        .label
                        .clone()
                        .or_else(|| s.event.clone())
                        .unwrap_or_else(|| "All events".to_string()),
                    breakdown: row.label(),
                    values,
                });
            }
        }
        let formula_rows = formula
            .as_ref()
            .map(|f| formula_rows(f, q, &rows, &by_row, plan.buckets.len()));
        Ok(TrendsPeriod {
            buckets: plan.buckets,
            series: series_rows,
            formula: formula_rows,
        })
    };

    Ok(TrendsResult {
        current: compute(range)?,
        previous: previous.map(compute).transpose()?,
    })
}

fn formula_rows(
    f: &Formula,
    q: &TrendsQuery,
    rows: &[Row],
    by_row: &[Vec<Vec<Option<f64>>>],
    buckets: usize,
) -> Vec<TrendsRow> {
    rows.iter()
        .zip(by_row)
        .map(|(row, series)| TrendsRow {
            series: None,
            label: q.formula.clone().unwrap_or_default(),
            breakdown: row.label(),
            values: (0..buckets)
                .map(|b| {
                    let at: Vec<Option<f64>> = series.iter().map(|values| values[b]).collect();
                    f.eval(&at)
                })
                .collect(),
        })
        .collect()
}

/// The math of one series and row, per bucket.
fn series_values(
    prep: &Prepared,
    plan: &BucketPlan,
    math: &Math,
    events: &[&RefEvent],
) -> Result<Vec<Option<f64>>> {
    let mut per_bucket: Vec<Vec<&RefEvent>> = vec![Vec::new(); plan.buckets.len()];
    for e in events {
        if let Some(i) = plan.index_of(prep, e)? {
            per_bucket[i].push(e);
        }
    }
    let mut out = Vec::with_capacity(per_bucket.len());
    for (i, bucket_events) in per_bucket.iter().enumerate() {
        let value = match math {
            Math::Total => Some(bucket_events.len() as f64),
            Math::UniquePersons => Some(distinct_persons(bucket_events.iter().copied()) as f64),
            Math::Dau | Math::Wau | Math::Mau => {
                let days = math.active_days().unwrap_or(1);
                let window = active_window(prep, plan, i, days)?;
                let mut active = BTreeSet::new();
                for e in events {
                    if window.contains(prep, e)? {
                        active.insert(Prepared::person(e));
                    }
                }
                Some(active.len() as f64)
            }
            Math::Property {
                aggregation,
                property,
            } => {
                let values: Vec<f64> = bucket_events
                    .iter()
                    .filter_map(|e| {
                        property_value(e, prep.tenant_of(e), property).and_then(|v| as_number(&v))
                    })
                    .collect();
                match aggregation {
                    // A sum over nothing is 0; every other aggregate of nothing has no value.
                    PropertyAggregation::Sum => Some(values.iter().sum()),
                    PropertyAggregation::Avg => mean(&values),
                    PropertyAggregation::Min => values.iter().copied().reduce(f64::min),
                    PropertyAggregation::Max => values.iter().copied().reduce(f64::max),
                    p => p.quantile().and_then(|q| quantile(&values, q)),
                }
            }
            Math::PerPerson { aggregation } => {
                let mut counts: BTreeMap<PersonKey, u64> = BTreeMap::new();
                for e in bucket_events {
                    *counts.entry(Prepared::person(e)).or_default() += 1;
                }
                let counts: Vec<f64> = counts.values().map(|c| *c as f64).collect();
                match aggregation {
                    PerPersonAggregation::Avg => mean(&counts),
                    PerPersonAggregation::Median => quantile(&counts, 0.5),
                    PerPersonAggregation::Max => counts.iter().copied().reduce(f64::max),
                }
            }
        };
        out.push(value);
    }
    Ok(out)
}

fn distinct_persons<'e>(events: impl Iterator<Item = &'e RefEvent>) -> usize {
    events.map(Prepared::person).collect::<BTreeSet<_>>().len()
}

/// The trailing window of DAU/WAU/MAU for bucket `i`.
enum ActiveWindow {
    /// Local dates `[first, last]`, before `end`.
    Days {
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
        end: i64,
    },
    /// Instants `[start, end)` (hourly buckets).
    Instants { start: i64, end: i64 },
}

impl ActiveWindow {
    fn contains(&self, prep: &Prepared, e: &RefEvent) -> Result<bool> {
        Ok(match self {
            ActiveWindow::Days { first, last, end } => {
                let date = prep.local(e)?.date();
                e.timestamp < *end && *first <= date && date <= *last
            }
            ActiveWindow::Instants { start, end } => *start <= e.timestamp && e.timestamp < *end,
        })
    }
}

fn active_window(prep: &Prepared, plan: &BucketPlan, i: usize, days: u32) -> Result<ActiveWindow> {
    let cal = &prep.calendar;
    let period = plan.periods[i];
    let bucket_end = cal.period_start(cal.next_period(period, plan.interval));
    let end = bucket_end.min(plan.range.end);
    Ok(match plan.interval {
        Interval::Hour => ActiveWindow::Instants {
            start: end - i64::from(days) * MICROS_PER_DAY,
            end,
        },
        Interval::Day | Interval::Week | Interval::Month => {
            let last = cal
                .local_date(end - 1)
                .ok_or_else(|| crate::error::QueryError::invalid("date_range", "out of range"))?;
            let first = last - chrono::Days::new(u64::from(days) - 1);
            ActiveWindow::Days { first, last, end }
        }
    })
}
