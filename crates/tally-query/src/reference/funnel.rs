//! Funnels, by brute force: for every person, enumerate every chain of step events
//! that satisfies the rules, and keep the best.
//!
//! The rules (`docs/QUERY-SEMANTICS.md`, "Funnels"), as checked here:
//! - A chain starts with a step-0 event inside the entry range (the date range, or one
//!   bucket of it), and takes one distinct event per step.
//! - Ordered and strict: each required step's event is at or after the previous one's
//!   (equal timestamps allowed), at most `window` after the first, and at most the
//!   step's own window after the previous required step's event. Strict: no other
//!   event of the person strictly between two consecutive chain events. Exclusion
//!   (i, j): no exclusion event strictly between the chain's events of steps i and j.
//! - Reaching required step k means some chain covers every required step up to k;
//!   reaching optional step k means some chain of the required steps before k can be
//!   extended by an event of step k (same window rules).
//! - Any order: reaching step k means k + 1 distinct steps done by distinct events, all
//!   within `window` of the earliest of them, which must be in the entry range.
//! - A person's best chain: furthest step reached, then earliest completion, then the
//!   latest earlier events (shortest times). Times come from it.

use std::collections::BTreeMap;

use super::eval::{BucketPlan, CompiledMatcher, Key, Prepared, Ranking, Row, breakdown_key};
use super::stats::{mean, percent, quantile};
use super::{RefContext, RefEvent, Result};
use crate::breakdown::BreakdownValue;
use crate::filter::EventMatcher;
use crate::funnel::{
    ConversionBreakdownRow, ConversionOverTimeResult, ConversionPoint, FunnelBreakdownRow,
    FunnelOrder, FunnelPersonsResult, FunnelQuery, FunnelResult, FunnelStepResult,
    FunnelStepsResult, FunnelView, HistogramBin, PersonCursor, PersonKey, StepStatus,
    TimeToConvertResult,
};

/// Answers a funnel query.
pub fn funnel(q: &FunnelQuery, events: &[RefEvent], ctx: &RefContext) -> Result<FunnelResult> {
    q.validate()?;
    let prep = Prepared::new(&q.scope, q.time_zone.as_deref(), q.week_start, ctx)?;
    let range = q
        .date_range
        .resolve(ctx.now, &prep.calendar, "date_range")?;
    let funnel = Funnel::new(q, &prep, events)?;
    let in_range = |e: &RefEvent| range.contains(e.timestamp);
    match &q.view {
        FunnelView::Steps => {
            let outcomes = funnel.outcomes(&in_range);
            let (ranking, rows) = funnel.rows(&outcomes);
            let total = funnel.step_results(outcomes.iter().map(|(_, o)| o));
            let breakdowns = rows
                .iter()
                .filter_map(|row| {
                    let label = row.label()?;
                    let members = outcomes
                        .iter()
                        .filter(|(p, o)| funnel.row_of(p, o, ranking.as_ref()) == *row)
                        .map(|(_, o)| o);
                    Some(FunnelBreakdownRow {
                        breakdown: label,
                        steps: funnel.step_results(members),
                    })
                })
                .collect();
            Ok(FunnelResult::Steps(FunnelStepsResult { total, breakdowns }))
        }
        FunnelView::TimeToConvert {
            from_step,
            to_step,
            bins,
        } => {
            let from = *from_step as usize;
            let to = to_step.unwrap_or(q.last_required_step()) as usize;
            let outcomes = funnel.outcomes(&in_range);
            let times: Vec<i64> = outcomes
                .iter()
                .filter_map(|(_, o)| Some(o.at[to]? - o.at[from]?))
                .collect();
            Ok(FunnelResult::TimeToConvert(histogram(
                from as u32,
                to as u32,
                &times,
                *bins,
            )))
        }
        FunnelView::ConversionOverTime { interval } => {
            let entries: Vec<&RefEvent> = funnel
                .people
                .iter()
                .flat_map(|p| p.events.iter().copied())
                .collect();
            let plan = BucketPlan::new(&prep, range, *interval, &entries)?;
            let whole = funnel.outcomes(&in_range);
            let (ranking, rows) = funnel.rows(&whole);
            let last = funnel.last_required();
            let point = |members: &mut dyn Iterator<Item = &Outcome>| {
                let (mut entered, mut converted) = (0, 0);
                for o in members {
                    entered += u64::from(o.reached[0]);
                    converted += u64::from(o.reached[last]);
                }
                ConversionPoint {
                    entered,
                    converted,
                    conversion_percent: percent(converted, entered),
                }
            };
            let mut total = Vec::new();
            let mut by_row: Vec<Vec<ConversionPoint>> = vec![Vec::new(); rows.len()];
            for b in 0..plan.buckets.len() {
                let in_bucket =
                    |e: &RefEvent| matches!(plan.index_of(&prep, e), Ok(Some(i)) if i == b);
                let outcomes = funnel.outcomes(&in_bucket);
                total.push(point(&mut outcomes.iter().map(|(_, o)| o)));
                for (ri, row) in rows.iter().enumerate() {
                    let mut members = outcomes
                        .iter()
                        .filter(|(p, o)| funnel.row_of(p, o, ranking.as_ref()) == *row)
                        .map(|(_, o)| o);
                    by_row[ri].push(point(&mut members));
                }
            }
            let breakdowns = rows
                .iter()
                .zip(by_row)
                .filter_map(|(row, points)| {
                    Some(ConversionBreakdownRow {
                        breakdown: row.label()?,
                        points,
                    })
                })
                .collect();
            Ok(FunnelResult::ConversionOverTime(ConversionOverTimeResult {
                buckets: plan.buckets,
                total,
                breakdowns,
            }))
        }
        FunnelView::Persons {
            step,
            status,
            breakdown,
            limit,
            cursor,
        } => {
            let step = *step as usize;
            let outcomes = funnel.outcomes(&in_range);
            let (ranking, _) = funnel.rows(&outcomes);
            let wanted_row = breakdown.as_ref().map(|b| match b {
                BreakdownValue::Values { values } => match &ranking {
                    Some(r) => r.row_of(&Key(values
                        .iter()
                        .map(|v| crate::filter::semantics::breakdown_value(Some(v)))
                        .collect())),
                    None => Row::All,
                },
                BreakdownValue::Other => Row::Other,
            });
            let after = cursor
                .as_deref()
                .map(PersonCursor::decode)
                .transpose()?
                .map(|c| c.0);
            let prev = funnel.previous_required(step);
            let mut selected: Vec<PersonKey> = outcomes
                .iter()
                .filter(|(_, o)| match status {
                    StepStatus::Reached => o.reached[step],
                    StepStatus::DroppedOff => {
                        prev.is_some_and(|prev| o.reached[prev]) && !o.reached[step]
                    }
                })
                .filter(|(p, o)| {
                    wanted_row
                        .as_ref()
                        .is_none_or(|row| funnel.row_of(p, o, ranking.as_ref()) == *row)
                })
                .map(|(p, _)| p.key.clone())
                .filter(|k| after.as_ref().is_none_or(|a| k > a))
                .collect();
            selected.sort();
            let limit = *limit as usize;
            let next_cursor = (selected.len() > limit)
                .then(|| PersonCursor(selected[limit - 1].clone()).encode());
            selected.truncate(limit);
            Ok(FunnelResult::Persons(FunnelPersonsResult {
                persons: selected,
                next_cursor,
            }))
        }
    }
}

/// A person's events that pass the global filters, in time order, with what each
/// matches.
struct PersonEvents<'e> {
    key: PersonKey,
    events: Vec<&'e RefEvent>,
    /// `steps[i][s]`: event i matches step s.
    steps: Vec<Vec<bool>>,
    /// `exclusions[i][x]`: event i matches exclusion x.
    exclusions: Vec<Vec<bool>>,
}

/// A person's result.
#[derive(Debug, Clone)]
struct Outcome {
    /// Per step: reached.
    reached: Vec<bool>,
    /// Per step: when the best chain did it (required steps; levels in any order).
    at: Vec<Option<i64>>,
    /// Per step: microseconds from the previous required step (best chain; optional
    /// steps: their own best chain).
    from_previous: Vec<Option<i64>>,
    /// The first-touch event: the earliest entry event.
    first_touch: Option<usize>,
}

struct Funnel<'q, 'e, 'p> {
    q: &'q FunnelQuery,
    prep: &'p Prepared<'p>,
    people: Vec<PersonEvents<'e>>,
    required: Vec<usize>,
    window: i64,
}

/// A candidate best chain: (level, completion, earlier instants).
type Rank = (usize, i64, Vec<i64>);

fn better(candidate: &Rank, best: &Option<Rank>) -> bool {
    match best {
        None => true,
        Some((level, completion, earlier)) => {
            candidate.0 > *level
                || (candidate.0 == *level
                    && (candidate.1 < *completion
                        || (candidate.1 == *completion && candidate.2 > *earlier)))
        }
    }
}

impl<'q, 'e, 'p> Funnel<'q, 'e, 'p> {
    fn new(q: &'q FunnelQuery, prep: &'p Prepared<'p>, events: &'e [RefEvent]) -> Result<Self> {
        let global = CompiledMatcher::new(&EventMatcher::any(), &q.filters)?;
        let steps = q
            .steps
            .iter()
            .map(|s| CompiledMatcher::new(&s.matcher(), &q.filters))
            .collect::<Result<Vec<_>>>()?;
        let exclusions = q
            .exclusions
            .iter()
            .map(|x| CompiledMatcher::new(&x.matcher(), &q.filters))
            .collect::<Result<Vec<_>>>()?;
        let mut by_person: BTreeMap<PersonKey, Vec<&RefEvent>> = BTreeMap::new();
        for e in prep.scoped(events) {
            if global.matches(e, prep.tenant_of(e)) {
                by_person.entry(Prepared::person(e)).or_default().push(e);
            }
        }
        let people = by_person
            .into_iter()
            .map(|(key, events)| {
                let steps_matched = events
                    .iter()
                    .map(|e| {
                        steps
                            .iter()
                            .map(|m| m.matches(e, prep.tenant_of(e)))
                            .collect()
                    })
                    .collect();
                let excluded = events
                    .iter()
                    .map(|e| {
                        exclusions
                            .iter()
                            .map(|m| m.matches(e, prep.tenant_of(e)))
                            .collect()
                    })
                    .collect();
                PersonEvents {
                    key,
                    events,
                    steps: steps_matched,
                    exclusions: excluded,
                }
            })
            .collect();
        let required = (0..q.steps.len())
            .filter(|s| !q.steps[*s].optional)
            .collect();
        Ok(Funnel {
            q,
            prep,
            people,
            required,
            window: q.window.micros(),
        })
    }

    fn last_required(&self) -> usize {
        self.required.last().copied().unwrap_or(0)
    }

    fn previous_required(&self, step: usize) -> Option<usize> {
        if self.q.order == FunnelOrder::AnyOrder {
            return step.checked_sub(1);
        }
        (0..step).rev().find(|s| !self.q.steps[*s].optional)
    }

    /// Every person's outcome, for entries accepted by `entry`; persons who never
    /// entered are left out.
    fn outcomes(&self, entry: &dyn Fn(&RefEvent) -> bool) -> Vec<(&PersonEvents<'e>, Outcome)> {
        self.people
            .iter()
            .filter_map(|p| {
                let o = match self.q.order {
                    FunnelOrder::AnyOrder => self.any_order(p, entry),
                    FunnelOrder::Ordered | FunnelOrder::Strict => self.sequential(p, entry),
                };
                o.filter(|o| o.reached[0]).map(|o| (p, o))
            })
            .collect()
    }

    fn sequential(&self, p: &PersonEvents, entry: &dyn Fn(&RefEvent) -> bool) -> Option<Outcome> {
        let n = self.q.steps.len();
        let mut best: Option<(Rank, Vec<usize>)> = None;
        // Per optional step: the best own chain as (completion, earlier, time from
        // the previous required step).
        let mut optional_best: Vec<Option<(Rank, i64)>> = vec![None; n];
        let mut first_touch = None;
        for (i, e) in p.events.iter().enumerate() {
            if p.steps[i][0] && entry(e) {
                first_touch.get_or_insert(i);
                let mut path = vec![i];
                self.extend(p, &mut path, &mut best, &mut optional_best);
            }
        }
        let (_, path) = best?;
        let mut out = Outcome {
            reached: vec![false; n],
            at: vec![None; n],
            from_previous: vec![None; n],
            first_touch,
        };
        for (level, &event) in path.iter().enumerate() {
            let step = self.required[level];
            let t = p.events[event].timestamp;
            out.reached[step] = true;
            out.at[step] = Some(t);
            if level > 0 {
                out.from_previous[step] = Some(t - p.events[path[level - 1]].timestamp);
            }
        }
        for (step, own) in optional_best.into_iter().enumerate() {
            if let Some((_, time)) = own {
                out.reached[step] = true;
                out.from_previous[step] = Some(time);
            }
        }
        Some(out)
    }

    /// Depth-first over every valid extension of `path` (indices into the person's
    /// events, one per required step so far).
    fn extend(
        &self,
        p: &PersonEvents,
        path: &mut Vec<usize>,
        best: &mut Option<(Rank, Vec<usize>)>,
        optional_best: &mut [Option<(Rank, i64)>],
    ) {
        let t = |i: usize| p.events[i].timestamp;
        let level = path.len() - 1;
        let last = path[level];
        let rank: Rank = (
            level,
            t(last),
            path[..level].iter().map(|&i| t(i)).collect(),
        );
        if better(&rank, &best.as_ref().map(|(r, _)| r.clone())) {
            *best = Some((rank, path.clone()));
        }
        let this_step = self.required[level];
        let next_required = self
            .required
            .get(level + 1)
            .copied()
            .unwrap_or(self.q.steps.len());
        // Optional steps between this required step and the next one.
        for (step, own_best) in optional_best
            .iter_mut()
            .enumerate()
            .take(next_required)
            .skip(this_step + 1)
        {
            for x in 0..p.events.len() {
                if !p.steps[x][step] || path.contains(&x) || !self.fits(p, path, x, step) {
                    continue;
                }
                let time = t(x) - t(last);
                let rank: Rank = (0, t(x), path.iter().map(|&i| t(i)).collect());
                let current = own_best.as_ref().map(|(r, _)| r.clone());
                if better(&rank, &current) {
                    *own_best = Some((rank, time));
                }
            }
        }
        if next_required == self.q.steps.len() {
            return;
        }
        for x in 0..p.events.len() {
            if p.steps[x][next_required]
                && !path.contains(&x)
                && self.fits(p, path, x, next_required)
            {
                path.push(x);
                self.extend(p, path, best, optional_best);
                path.pop();
            }
        }
    }

    /// Whether event `x` can be the next chain event, for `step`, after `path`.
    fn fits(&self, p: &PersonEvents, path: &[usize], x: usize, step: usize) -> bool {
        let t = |i: usize| p.events[i].timestamp;
        let prev = path[path.len() - 1];
        let (tp, tx) = (t(prev), t(x));
        if tx < tp || tx - t(path[0]) > self.window {
            return false;
        }
        if let Some(w) = &self.q.steps[step].window
            && tx - tp > w.micros()
        {
            return false;
        }
        if self.q.order == FunnelOrder::Strict {
            let intervening =
                (0..p.events.len()).any(|y| y != prev && y != x && tp < t(y) && t(y) < tx);
            if intervening {
                return false;
            }
        }
        if !self.q.steps[step].optional {
            for (xi, exclusion) in self.q.exclusions.iter().enumerate() {
                if exclusion.to_step as usize != step {
                    continue;
                }
                let Some(from_level) = self
                    .required
                    .iter()
                    .position(|s| *s == exclusion.from_step as usize)
                else {
                    continue;
                };
                let from = t(path[from_level]);
                let excluded =
                    (0..p.events.len()).any(|y| p.exclusions[y][xi] && from < t(y) && t(y) < tx);
                if excluded {
                    return false;
                }
            }
        }
        true
    }

    fn any_order(&self, p: &PersonEvents, entry: &dyn Fn(&RefEvent) -> bool) -> Option<Outcome> {
        let n = self.q.steps.len();
        let mut best: Option<(Rank, Vec<i64>)> = None;
        let mut reached = vec![false; n];
        let mut first_touch = None;
        for (e, event) in p.events.iter().enumerate() {
            if !p.steps[e].iter().any(|m| *m) || !entry(event) {
                continue;
            }
            first_touch.get_or_insert(e);
            let start = event.timestamp;
            let candidates: Vec<usize> = (0..p.events.len())
                .filter(|&x| {
                    let t = p.events[x].timestamp;
                    start <= t && t - start <= self.window
                })
                .collect();
            // completed[k]: the earliest instant by which k + 1 distinct steps are done.
            let mut completed: Vec<i64> = Vec::new();
            for end in 0..candidates.len() {
                let pool: Vec<usize> = candidates[..=end]
                    .iter()
                    .copied()
                    .filter(|&x| x != e)
                    .collect();
                let size = forced_matching(p, e, &pool, n);
                while completed.len() < size {
                    completed.push(p.events[candidates[end]].timestamp);
                }
            }
            let Some(&completion) = completed.last() else {
                continue;
            };
            let level = completed.len() - 1;
            for r in reached.iter_mut().take(level + 1) {
                *r = true;
            }
            let rank: Rank = (level, completion, completed[..level].to_vec());
            if better(&rank, &best.as_ref().map(|(r, _)| r.clone())) {
                best = Some((rank, completed));
            }
        }
        let (_, completed) = best?;
        let mut out = Outcome {
            reached,
            at: vec![None; n],
            from_previous: vec![None; n],
            first_touch,
        };
        for (k, &t) in completed.iter().enumerate() {
            out.at[k] = Some(t);
            if k > 0 {
                out.from_previous[k] = Some(t - completed[k - 1]);
            }
        }
        Some(out)
    }

    /// The breakdown ranking (by persons) and the rows to report.
    fn rows(&self, outcomes: &[(&PersonEvents, Outcome)]) -> (Option<Ranking>, Vec<Row>) {
        let Some(b) = &self.q.breakdown else {
            return (None, vec![Row::All]);
        };
        let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
        for (p, o) in outcomes {
            if let Some(key) = self.key_of(p, o) {
                *counts.entry(key).or_default() += 1;
            }
        }
        let ranking = Ranking::new(counts, b.limit);
        let rows = ranking.rows(ranking.has_other);
        (Some(ranking), rows)
    }

    fn key_of(&self, p: &PersonEvents, o: &Outcome) -> Option<Key> {
        let b = self.q.breakdown.as_ref()?;
        let e = p.events[o.first_touch?];
        Some(breakdown_key(e, self.prep.tenant_of(e), b))
    }

    fn row_of(&self, p: &PersonEvents, o: &Outcome, ranking: Option<&Ranking>) -> Row {
        match (ranking, self.key_of(p, o)) {
            (Some(ranking), Some(key)) => ranking.row_of(&key),
            _ => Row::All,
        }
    }

    fn step_results<'o>(
        &self,
        outcomes: impl Iterator<Item = &'o Outcome>,
    ) -> Vec<FunnelStepResult> {
        let outcomes: Vec<&Outcome> = outcomes.collect();
        let n = self.q.steps.len();
        let persons: Vec<u64> = (0..n)
            .map(|s| outcomes.iter().filter(|o| o.reached[s]).count() as u64)
            .collect();
        (0..n)
            .map(|s| {
                let seconds: Vec<f64> = outcomes
                    .iter()
                    .filter_map(|o| o.from_previous[s])
                    .map(|us| us as f64 / 1e6)
                    .collect();
                let name = if self.q.order == FunnelOrder::AnyOrder {
                    format!("Completed {} of {} steps", s + 1, n)
                } else {
                    self.q.steps[s].display_name()
                };
                FunnelStepResult {
                    step: s as u32,
                    name,
                    optional: self.q.steps[s].optional,
                    persons: persons[s],
                    conversion_from_first_percent: percent(persons[s], persons[0]),
                    conversion_from_previous_percent: self
                        .previous_required(s)
                        .and_then(|prev| percent(persons[s], persons[prev])),
                    average_seconds_from_previous: mean(&seconds),
                    median_seconds_from_previous: quantile(&seconds, 0.5),
                }
            })
            .collect()
    }
}

/// The most distinct steps that `e` (forced to cover one of its steps) and the events
/// of `pool` can cover, one step per event (maximum bipartite matching, Kuhn's
/// augmenting paths).
fn forced_matching(p: &PersonEvents, e: usize, pool: &[usize], steps: usize) -> usize {
    let mut best = 0;
    for forced in (0..steps).filter(|&s| p.steps[e][s]) {
        // owner[s] = index into pool of the event covering step s.
        let mut owner: Vec<Option<usize>> = vec![None; steps];
        let mut size = 1;
        for (pi, &x) in pool.iter().enumerate() {
            let mut seen = vec![false; steps];
            if augment(p, pool, pi, x, forced, &mut owner, &mut seen) {
                size += 1;
            }
        }
        best = best.max(size);
    }
    best
}

fn augment(
    p: &PersonEvents,
    pool: &[usize],
    pi: usize,
    x: usize,
    forced: usize,
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for s in 0..owner.len() {
        if s == forced || !p.steps[x][s] || seen[s] {
            continue;
        }
        seen[s] = true;
        let free = match owner[s] {
            None => true,
            Some(other) => augment(p, pool, other, pool[other], forced, owner, seen),
        };
        if free {
            owner[s] = Some(pi);
            return true;
        }
    }
    false
}

fn histogram(from_step: u32, to_step: u32, times: &[i64], bins: u32) -> TimeToConvertResult {
    let seconds: Vec<f64> = times.iter().map(|us| *us as f64 / 1e6).collect();
    let bins_out = match (times.iter().min(), times.iter().max()) {
        (Some(&min), Some(&max)) => {
            let bins = i64::from(bins.max(1));
            // Width in whole microseconds such that `bins` bins cover [min, max].
            let width = ((max - min + 1) + bins - 1) / bins;
            let width = width.max(1);
            (0..bins)
                .map(|i| {
                    let from = min + i * width;
                    let to = from + width;
                    HistogramBin {
                        from_seconds: from as f64 / 1e6,
                        to_seconds: to as f64 / 1e6,
                        persons: times.iter().filter(|t| from <= **t && **t < to).count() as u64,
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    };
    TimeToConvertResult {
        from_step,
        to_step,
        persons: times.len() as u64,
        bins: bins_out,
        average_seconds: mean(&seconds),
        median_seconds: quantile(&seconds, 0.5),
    }
}
