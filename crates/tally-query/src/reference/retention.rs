//! Retention, by brute force: form cohorts from start events, then look up each
//! cohort member's return periods.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;

use super::eval::{BucketPlan, CompiledMatcher, Key, Prepared, Ranking, Row, breakdown_key};
use super::stats::percent;
use super::{RefContext, RefEvent, Result};
use crate::funnel::PersonKey;
use crate::retention::{
    CohortKind, RetentionBreakdownRow, RetentionCohort, RetentionQuery, RetentionResult, ReturnMode,
};

/// One person's membership of one cohort.
struct Member {
    person: PersonKey,
    /// The cohort's bucket index.
    cohort: usize,
    /// The breakdown key of the start event that formed the membership.
    key: Option<Key>,
}

/// Answers a retention query.
pub fn retention(
    q: &RetentionQuery,
    events: &[RefEvent],
    ctx: &RefContext,
) -> Result<RetentionResult> {
    q.validate()?;
    let prep = Prepared::new(&q.scope, q.time_zone.as_deref(), q.week_start, ctx)?;
    let range = q
        .date_range
        .resolve(ctx.now, &prep.calendar, "date_range")?;
    let interval = q.period.interval();
    let start_matcher = CompiledMatcher::new(&q.start, &q.filters)?;
    let return_matcher = CompiledMatcher::new(&q.return_event, &q.filters)?;
    let scoped = prep.scoped(events);
    let starts: Vec<&RefEvent> = scoped
        .iter()
        .copied()
        .filter(|e| start_matcher.matches(e, prep.tenant_of(e)))
        .collect();
    let plan = BucketPlan::new(&prep, range, interval, &starts)?;
    let key_of = |e: &RefEvent| {
        q.breakdown
            .as_ref()
            .map(|b| breakdown_key(e, prep.tenant_of(e), b))
    };

    // Cohorts. `starts` is in time order, so the first event seen is the earliest.
    let mut members = Vec::new();
    match q.cohort {
        CohortKind::FirstTime => {
            let mut first: BTreeMap<PersonKey, &RefEvent> = BTreeMap::new();
            for e in &starts {
                first.entry(Prepared::person(e)).or_insert(e);
            }
            for (person, e) in first {
                if let Some(cohort) = plan.index_of(&prep, e)? {
                    members.push(Member {
                        person,
                        cohort,
                        key: key_of(e),
                    });
                }
            }
        }
        CohortKind::Recurring => {
            let mut seen: BTreeSet<(PersonKey, usize)> = BTreeSet::new();
            for e in &starts {
                if let Some(cohort) = plan.index_of(&prep, e)? {
                    let person = Prepared::person(e);
                    if seen.insert((person.clone(), cohort)) {
                        members.push(Member {
                            person,
                            cohort,
                            key: key_of(e),
                        });
                    }
                }
            }
        }
    }

    // Every period in which each person returned (all time).
    let mut returns: BTreeMap<PersonKey, BTreeSet<NaiveDateTime>> = BTreeMap::new();
    for e in scoped
        .iter()
        .filter(|e| return_matcher.matches(e, prep.tenant_of(e)))
    {
        returns
            .entry(Prepared::person(e))
            .or_default()
            .insert(prep.period(e, interval)?);
    }

    let table = |row: &Row, ranking: Option<&Ranking>| -> Vec<RetentionCohort> {
        (0..plan.buckets.len())
            .map(|c| {
                let cohort: Vec<&Member> = members
                    .iter()
                    .filter(|m| m.cohort == c)
                    .filter(|m| match (row, ranking, &m.key) {
                        (Row::All, _, _) => true,
                        (row, Some(r), Some(k)) => r.row_of(k) == *row,
                        _ => false,
                    })
                    .collect();
                let size = cohort.len() as u64;
                let values: Vec<Option<u64>> = (0..=q.periods)
                    .map(|n| {
                        if n == 0 {
                            return Some(size);
                        }
                        let target =
                            prep.calendar
                                .shift_period(plan.periods[c], interval, i64::from(n));
                        if prep.calendar.period_start(target) > ctx.now {
                            return None;
                        }
                        let returned = cohort
                            .iter()
                            .filter(|m| {
                                let periods = returns.get(&m.person);
                                match q.mode {
                                    ReturnMode::On => periods.is_some_and(|p| p.contains(&target)),
                                    ReturnMode::OnOrAfter => {
                                        periods.is_some_and(|p| p.range(target..).next().is_some())
                                    }
                                }
                            })
                            .count();
                        Some(returned as u64)
                    })
                    .collect();
                let percentages = values
                    .iter()
                    .map(|v| v.and_then(|v| percent(v, size)))
                    .collect();
                RetentionCohort {
                    period: plan.buckets[c].clone(),
                    size,
                    values,
                    percentages,
                }
            })
            .collect()
    };

    let total = table(&Row::All, None);
    let breakdowns = match &q.breakdown {
        None => Vec::new(),
        Some(b) => {
            let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
            for m in &members {
                if let Some(k) = &m.key {
                    *counts.entry(k.clone()).or_default() += 1;
                }
            }
            let ranking = Ranking::new(counts, b.limit);
            ranking
                .rows(ranking.has_other)
                .iter()
                .filter_map(|row| {
                    Some(RetentionBreakdownRow {
                        breakdown: row.label()?,
                        cohorts: table(row, Some(&ranking)),
                    })
                })
                .collect()
        }
    };
    Ok(RetentionResult { total, breakdowns })
}
