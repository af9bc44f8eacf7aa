//! Retention compiled to one pass per person through the `tally_retention` aggregate.
//!
//! The statement reads the tenant's events once (same scoped `FROM` and filter
//! rendering as trends and funnels) and keeps the rows that are start events inside
//! their bounds (the date range; for first-time cohorts all history before the range
//! end, since a person's *first* start event decides) or return events inside theirs
//! (from the range start up to the end of the last reported period; without an end
//! for `on_or_after`). Each row gets a period index and a mask ([`START_BIT`],
//! [`RETURN_BIT`]):
//!
//! - the period index is computed in SQL from period starts computed here in Rust
//!   (the calendar's local periods, tenant or query time zone, DST-aware, as trends):
//!   global period `k` is the cohort range's first period shifted by `k` periods,
//!   starting at instant `s_k`; a row's index is the largest `k <= L` with
//!   `s_k <= ts` (`L` = the last cohort's index + `periods`, so later `on_or_after`
//!   returns clamp onto `L`, which changes no comparison), or -1 before the range.
//!   Unequal period widths become a balanced `CASE` (binary search, about
//!   log2(L) comparisons per row) rather than one `WHEN` per period.
//! - `tally_retention(period, mask, ts, uuid, row, spec)` grouped by person returns a
//!   `List<Int64>` of *cells*, one per (membership, offset) the person counts in:
//!   `cell = ((cohort * (periods + 1)) + offset) * R + (row + 1)` with `R` =
//!   [`RetentionSpec::row_slots`]. Offset 0 is the membership itself (cohort size).
//! - the outer statement unnests the cells and counts persons per cell, decoding
//!   `cohort`, `period_offset` and `row_index` in SQL.
//!
//! Breakdowns: a ranking statement counts memberships per value of the start event
//! that formed them (first time: the first start event; recurring: the earliest start
//! event of the period, ties by uuid); the engine ranks and passes the top keys back,
//! and the main statement computes each row's `row_index` (a `CASE` over the top
//! keys, -1 = other), which the aggregate takes from the forming start event.
//!
//! Owns: the SQL text, the period starts and the [`RetentionSpec`] literal. Does not
//! own: the aggregate (tally-engine), null cells for periods after "now",
//! percentages and zero-filling (the engine, from [`RetentionPlan::observable`]).

use serde_json::{Value, json};
use tally_core::TenantId;
use tally_query::time::parse_time_zone;
use tally_query::{
    Bucket, Calendar, CohortKind, RetentionQuery, ReturnMode, TimeRange,
    retention::MAX_RETENTION_PERIODS,
};

use crate::dialect::Dialect;
use crate::expr::{BreakdownKey, Scoped, join_bool};
use crate::{CompileContext, Error, Result, scope_tenant};

/// Mask bit: the row is a start event within the start bounds.
pub const START_BIT: i64 = 1;
/// Mask bit: the row is a return event within the return bounds.
pub const RETURN_BIT: i64 = 2;

/// Everything `tally_retention` needs besides the rows, passed as its last argument (a
/// JSON string literal) so that the statement is self-contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSpec {
    /// First-time cohorts (else recurring).
    pub first_time: bool,
    /// `on_or_after` (else `on`).
    pub on_or_after: bool,
    /// Reported periods after the cohort's own.
    pub periods: u32,
    /// The global period index of each cohort, ascending.
    pub cohorts: Vec<i64>,
    /// How many breakdown row slots a cell encodes (row -1 ..= top - 1 and the
    /// constant row 0 without breakdown, so at least 2).
    pub row_slots: i64,
}

impl RetentionSpec {
    /// The spec as compact JSON.
    pub fn encode(&self) -> String {
        json!({
            "first_time": self.first_time,
            "on_or_after": self.on_or_after,
            "periods": self.periods,
            "cohorts": self.cohorts,
            "row_slots": self.row_slots,
        })
        .to_string()
    }

    /// Parses [`RetentionSpec::encode`]'s output, checking what the aggregate relies on
    /// (sizes that keep every cell inside `i64`).
    pub fn decode(text: &str) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("retention spec: {e}"))?;
        let bad = |what: &str| format!("retention spec: bad {what}");
        let flag = |k: &str| v[k].as_bool().ok_or_else(|| bad(k));
        let periods = v["periods"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| (1..=MAX_RETENTION_PERIODS).contains(p))
            .ok_or_else(|| bad("periods"))?;
        let cohorts = v["cohorts"]
            .as_array()
            .ok_or_else(|| bad("cohorts"))?
            .iter()
            .map(|c| c.as_i64().filter(|c| (0..1 << 20).contains(c)))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| bad("cohorts"))?;
        if cohorts.windows(2).any(|w| w[0] >= w[1]) || cohorts.len() > 1 << 20 {
            return Err(bad("cohorts"));
        }
        let row_slots = v["row_slots"]
            .as_i64()
            .filter(|r| (2..1 << 20).contains(r))
            .ok_or_else(|| bad("row_slots"))?;
        Ok(RetentionSpec {
            first_time: flag("first_time")?,
            on_or_after: flag("on_or_after")?,
            periods,
            cohorts,
            row_slots,
        })
    }

    /// The cell of (cohort position, offset, breakdown row).
    pub fn cell(&self, cohort: usize, offset: u32, row: i64) -> i64 {
        ((cohort as i64) * (i64::from(self.periods) + 1) + i64::from(offset)) * self.row_slots
            + (row + 1)
    }
}

/// A compiled retention query.
pub struct RetentionPlan<'a> {
    /// The query.
    pub query: &'a RetentionQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    /// The resolved date range (cohort-forming start events).
    pub range: TimeRange,
    /// The cohorts' periods, in order (every calendar period overlapping the range).
    pub cohorts: Vec<Bucket>,
    /// Global period index of each cohort.
    cohort_index: Vec<i64>,
    /// `s_k`: the first instant of global period `k`, for `k` in `0 ..= L + 1`.
    starts: Vec<i64>,
    aggregate: &'static str,
    dialect: &'a dyn Dialect,
    ctx: CompileContext<'a>,
}

/// Compiles a retention query (with or without breakdown).
pub fn compile_retention<'a>(
    query: &'a RetentionQuery,
    dialect: &'a dyn Dialect,
    ctx: &CompileContext<'a>,
) -> Result<RetentionPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
    // Only the embedded engine implements the aggregate; a ClickHouse rendering
    // (groupArray + array functions) is not written (docs/QUERY-ENGINE.md).
    if dialect.name() != "datafusion" {
        return Err(Error::Unsupported(format!(
            "retention in the {} dialect: Tally's retention aggregate is implemented only for DataFusion",
            dialect.name()
        )));
    }
    let default_tz = match ctx.tenant_time_zone {
        Some(name) => parse_time_zone("tenant.time_zone", name)?,
        None => chrono_tz::Tz::UTC,
    };
    let calendar = Calendar::from_settings(
        "time_zone",
        query.time_zone.as_deref(),
        default_tz,
        query.week_start,
    )?;
    let range = query.date_range.resolve(ctx.now, &calendar, "date_range")?;
    let interval = query.period.interval();
    let periods = calendar.periods(range, interval)?;
    // Global periods: the first cohort's period shifted by k. Cohorts are consecutive
    // calendar periods, except where a whole period has no instant (a skipped day),
    // so each cohort's index is looked up rather than assumed.
    let mut cohort_index = Vec::with_capacity(periods.len());
    let mut cohorts = Vec::with_capacity(periods.len());
    if let Some((first, _)) = periods.first() {
        let mut k = 0i64;
        for (p, bucket) in &periods {
            while calendar.shift_period(*first, interval, k) < *p {
                k += 1;
            }
            cohort_index.push(k);
            cohorts.push(bucket.clone());
        }
    }
    let last = cohort_index.last().copied().unwrap_or(0) + i64::from(query.periods);
    let starts = match periods.first() {
        Some((first, _)) => (0..=last + 1)
            .map(|k| calendar.period_start(calendar.shift_period(*first, interval, k)))
            .collect(),
        None => Vec::new(),
    };
    let plan = RetentionPlan {
        query,
        tenant,
        range,
        cohorts,
        cohort_index,
        starts,
        aggregate: dialect.retention_function(),
        dialect,
        ctx: ctx.clone(),
    };
    // Compile every statement once now so that unsupported properties fail here.
    plan.cells_sql(None)?;
    plan.ranking_sql()?;
    Ok(plan)
}

impl RetentionPlan<'_> {
    fn scoped(&self) -> Scoped<'_> {
        Scoped::new(self.dialect, self.ctx.catalog, self.tenant)
    }

    /// The aggregate's configuration for statements with `top` breakdown keys.
    pub fn spec(&self, top: Option<&[BreakdownKey]>) -> RetentionSpec {
        RetentionSpec {
            first_time: self.query.cohort == CohortKind::FirstTime,
            on_or_after: self.query.mode == ReturnMode::OnOrAfter,
            periods: self.query.periods,
            cohorts: self.cohort_index.clone(),
            row_slots: top.map_or(0, |t| t.len() as i64) + 2,
        }
    }

    /// Whether cell (cohort, offset) is observable at "now": its period has started.
    /// Offset 0 (the cohort itself) always is.
    pub fn observable(&self, cohort: usize, offset: u32) -> bool {
        if offset == 0 {
            return true;
        }
        self.cohort_index
            .get(cohort)
            .and_then(|k| usize::try_from(k + i64::from(offset)).ok())
            .and_then(|k| self.starts.get(k))
            .is_some_and(|start| *start <= self.ctx.now)
    }

    /// The start events' time bounds `[lo, hi)`: the range, or everything before its
    /// end for first-time cohorts.
    fn start_bounds(&self) -> (Option<i64>, Option<i64>) {
        match self.query.cohort {
            CohortKind::FirstTime => (None, Some(self.range.end)),
            CohortKind::Recurring => (Some(self.range.start), Some(self.range.end)),
        }
    }

    /// The return events' time bounds: from the range start to the end of the last
    /// reported period (`on`), or without end (`on_or_after`: any later return counts).
    fn return_bounds(&self) -> (Option<i64>, Option<i64>) {
        let end = match self.query.mode {
            ReturnMode::On => self.starts.last().copied(),
            ReturnMode::OnOrAfter => None,
        };
        (Some(self.range.start), end)
    }

    /// The global period index of the instant `ts` (a BIGINT expression): -1 before
    /// the range, else the largest `k <= L` with `s_k <= ts`.
    fn period_expr(&self, ts: &str) -> String {
        let last = self.starts.len().saturating_sub(2);
        let Some(&first) = self.starts.first() else {
            return "CAST(-1 AS BIGINT)".to_string();
        };
        let widths: Vec<i64> = self.starts.windows(2).map(|w| w[1] - w[0]).collect();
        // Equal widths (UTC or a fixed offset, days or weeks): arithmetic.
        let search = if widths.windows(2).all(|w| w[0] == w[1]) && widths.first() > Some(&0) {
            format!(
                "least(CAST(({ts} - {first}) / {} AS BIGINT), {last})",
                widths[0]
            )
        } else {
            self.search(ts, 0, last)
        };
        format!(
            "CAST(CASE WHEN {ts} < {} THEN -1 ELSE {search} END AS BIGINT)",
            self.range.start
        )
    }

    /// A balanced `CASE` finding the largest `k` in `[lo, hi]` with `s_k <= ts`, given
    /// `s_lo <= ts`.
    fn search(&self, ts: &str, lo: usize, hi: usize) -> String {
        if lo >= hi {
            return lo.to_string();
        }
        let mid = lo + (hi - lo).div_ceil(2);
        format!(
            "CASE WHEN {ts} >= {} THEN {} ELSE {} END",
            self.starts[mid],
            self.search(ts, mid, hi),
            self.search(ts, lo, mid - 1)
        )
    }

    /// With a breakdown: rows of the breakdown columns (`b{i}_{s,n,b,o}` per property,
    /// as in trends) of each membership's forming start event and `memberships`
    /// (BIGINT) with that value.
    pub fn ranking_sql(&self) -> Result<Option<String>> {
        let Some(b) = &self.query.breakdown else {
            return Ok(None);
        };
        let q = self.query;
        let s = self.scoped();
        let cols = s.breakdown_columns(&b.properties)?;
        let (lo, hi) = self.start_bounds();
        let mut conds = s.time_bounds(lo, hi);
        conds.push(s.matcher(&q.start, &q.filters)?);
        let inner: Vec<String> = cols.iter().map(|(e, n)| format!("{e} AS {n}")).collect();
        let names: Vec<&str> = cols.iter().map(|(_, n)| n.as_str()).collect();
        let firsts: Vec<String> = names
            .iter()
            .map(|n| format!("first_value({n} ORDER BY ts, uuid) AS {n}"))
            .collect();
        let ts = s.ts();
        let (period, group, keep) = match q.cohort {
            // The first start event ever forms the membership if it is in the range.
            CohortKind::FirstTime => (
                String::new(),
                "person_id",
                format!(" WHERE first_ts >= {}", self.range.start),
            ),
            // The earliest start event of each period forms one.
            CohortKind::Recurring => (
                format!("{} AS period, ", self.period_expr(&ts)),
                "person_id, period",
                String::new(),
            ),
        };
        Ok(Some(format!(
            "SELECT {names}, CAST(COUNT(*) AS BIGINT) AS memberships FROM (\
             SELECT {firsts}, MIN(ts) AS first_ts FROM (SELECT {ts} AS ts, {uuid} AS uuid, {person} AS person_id, \
             {period}{inner} {from}) t GROUP BY {group}) p{keep} GROUP BY {names}{suffix}",
            names = names.join(", "),
            firsts = firsts.join(", "),
            uuid = s.col("e", "uuid"),
            person = s.person_key(),
            inner = inner.join(", "),
            from = s.scoped_source(&conds),
            suffix = self.dialect.statement_suffix(),
        )))
    }

    /// The highest global period index a row can get (`L`): the last cohort's index
    /// plus the reported periods.
    pub fn last_period(&self) -> i64 {
        // `starts` holds s_0 ..= s_{L+1}.
        self.starts.len() as i64 - 2
    }

    /// Without a breakdown, when the dialect has an integer person key
    /// ([`crate::Dialect::person_key`]) and every period index (-1 ..= `L`) fits a
    /// 64-bit set as bit `period + 1`: one row per matching event with `person_key`,
    /// `period` and `mask` (BIGINT).
    ///
    /// A person's retention then only needs two bit sets, its start periods and its
    /// return periods: the first start event ever is in the lowest start period
    /// (periods grow with time), and which start event forms a membership matters
    /// only for breakdowns. The engine folds the rows into those sets, indexed by
    /// the person key, instead of grouping by person through the aggregate.
    pub fn person_periods_sql(&self) -> Result<Option<String>> {
        let s = self.scoped();
        let fits = (0..64).contains(&(self.last_period() + 1));
        if self.query.breakdown.is_some() || !fits || !s.person_key_is_integer() {
            return Ok(None);
        }
        let rows = self.rows_sql(&s, None)?;
        Ok(Some(format!(
            "SELECT person_id AS person_key, period, mask FROM ({rows}) t{suffix}",
            suffix = self.dialect.statement_suffix(),
        )))
    }

    /// Rows `cohort` (position in [`RetentionPlan::cohorts`]), `period_offset` (0 =
    /// the cohort's size, n = returned in period n / n or later), `row_index` (the
    /// index in `top` of the membership's breakdown value, -1 = other; 0 without
    /// `top`) and `persons` (BIGINT). Cells without persons are missing.
    pub fn cells_sql(&self, top: Option<&[BreakdownKey]>) -> Result<String> {
        let q = self.query;
        let s = self.scoped();
        let spec = self.spec(top);
        let rows = self.rows_sql(&s, top)?;
        let per_person = format!(
            "SELECT person_id, {agg}(period, mask, ts, uuid, row_index, {spec}) AS cells FROM ({rows}) t GROUP BY person_id",
            agg = self.aggregate,
            spec = s.lit(&spec.encode()),
        );
        let slots = spec.row_slots;
        let width = i64::from(q.periods) + 1;
        Ok(format!(
            "SELECT CAST(cell / {slots} / {width} AS BIGINT) AS cohort, \
             CAST((cell / {slots}) % {width} AS BIGINT) AS period_offset, \
             CAST(cell % {slots} - 1 AS BIGINT) AS row_index, CAST(COUNT(*) AS BIGINT) AS persons \
             FROM (SELECT unnest(cells) AS cell FROM ({per_person}) p) c GROUP BY cell{suffix}",
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// One row per start or return event in its bounds: `ts`, `person_id` (the
    /// person key), `period`, `mask`, `uuid` and `row_index` (with `top`: the
    /// breakdown row of the event; else NULL and 0).
    fn rows_sql(&self, s: &Scoped<'_>, top: Option<&[BreakdownKey]>) -> Result<String> {
        let q = self.query;
        let start = s.matcher(&q.start, &[])?;
        let ret = s.matcher(&q.return_event, &[])?;
        let row = match (&q.breakdown, top) {
            (Some(b), Some(top)) => Some(s.breakdown_row(&b.properties, top)?),
            _ => None,
        };
        let global = s.filters(&q.filters)?;
        let bounded = |m: &str, (lo, hi): (Option<i64>, Option<i64>)| {
            let mut parts = vec![m.to_string()];
            parts.extend(s.time_bounds(lo, hi));
            join_bool(&parts, "AND")
        };
        let is_start = bounded(&start, self.start_bounds());
        let is_return = bounded(&ret, self.return_bounds());
        // The whole statement's bounds on the raw column, so that the store prunes.
        let (slo, shi) = self.start_bounds();
        let (rlo, rhi) = self.return_bounds();
        let lo = slo.zip(rlo).map(|(a, b)| a.min(b));
        let hi = shi.zip(rhi).map(|(a, b)| a.max(b));
        let mut conds = s.time_bounds(lo, hi);
        if global != "TRUE" {
            conds.push(global);
        }
        conds.push(format!("({is_start} OR {is_return})"));
        // Before `scoped_source`: grouping by person may join the identity map.
        let person = s.person_key();
        let from = s.scoped_source(&conds);
        let ts = s.ts();
        let (uuid, row) = match row {
            Some(row) => (s.col("e", "uuid"), row),
            // Without a breakdown the forming event's identity does not matter.
            None => ("NULL".to_string(), "CAST(0 AS BIGINT)".to_string()),
        };
        Ok(format!(
            "SELECT {ts} AS ts, {person} AS person_id, {period} AS period, \
             CAST(CASE WHEN {is_start} THEN {START_BIT} ELSE 0 END + CASE WHEN {is_return} THEN {RETURN_BIT} ELSE 0 END AS BIGINT) AS mask, \
             {uuid} AS uuid, {row} AS row_index {from}",
            period = self.period_expr(&ts),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClickHouseDialect, DataFusionDialect, PropertyCatalog};

    fn query(json: &str) -> RetentionQuery {
        serde_json::from_str(json).unwrap()
    }

    /// 2024-01-10T12:00:00Z.
    const NOW: i64 = 1_704_888_000_000_000;
    const DAY: i64 = 86_400_000_000;

    #[test]
    fn spec_round_trips_and_rejects_garbage() {
        let spec = RetentionSpec {
            first_time: true,
            on_or_after: false,
            periods: 3,
            cohorts: vec![0, 1, 3],
            row_slots: 4,
        };
        assert_eq!(RetentionSpec::decode(&spec.encode()).unwrap(), spec);
        assert!(RetentionSpec::decode("{").is_err());
        for (from, to) in [
            ("[0,1,3]", "[1,0]"),
            ("\"periods\":3", "\"periods\":0"),
            ("\"row_slots\":4", "\"row_slots\":1"),
            ("[0,1,3]", "[-1]"),
        ] {
            let broken = spec.encode().replace(from, to);
            assert!(RetentionSpec::decode(&broken).is_err(), "{broken}");
        }
        // Cells are distinct per (cohort, offset, row) and decode back.
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..3 {
            for n in 0..=3 {
                for row in -1..=1 {
                    let cell = spec.cell(c, n, row);
                    assert!(seen.insert(cell));
                    let slots = spec.row_slots;
                    assert_eq!(cell / slots / 4, c as i64);
                    assert_eq!((cell / slots) % 4, i64::from(n));
                    assert_eq!(cell % slots - 1, row);
                }
            }
        }
    }

    #[test]
    fn periods_and_observable_cells_follow_the_calendar() {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: None,
            catalog: &catalog,
        };
        // UTC days 2024-01-08 ..= 2024-01-10, now 01-10 12:00.
        let q = query(
            r#"{"scope":{"tenant":7},"date_range":{"type":"absolute","from":"2024-01-08","to":"2024-01-10"},
                "start":{"event":"a"},"return":{"event":"b"},"period":"day","periods":2}"#,
        );
        let plan = compile_retention(&q, &DataFusionDialect, &ctx).unwrap();
        assert_eq!(plan.cohorts.len(), 3);
        assert_eq!(plan.cohort_index, vec![0, 1, 2]);
        assert_eq!(plan.starts.len(), 6);
        assert_eq!(plan.starts[1] - plan.starts[0], DAY);
        assert!(plan.observable(0, 2)); // 01-10 has started
        assert!(plan.observable(1, 1));
        assert!(!plan.observable(1, 2)); // 01-11 has not
        assert!(plan.observable(2, 0));
        assert!(!plan.observable(2, 1));
        assert!(!plan.observable(5, 1)); // no such cohort: not observable, no panic
        // Equal widths: arithmetic, clamped to L = 4.
        let sql = plan.cells_sql(None).unwrap();
        assert!(sql.contains(&format!("/ {DAY} AS BIGINT), 4)")), "{sql}");
    }

    #[test]
    fn person_periods_only_without_breakdown_and_within_64_periods() {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: None,
            catalog: &catalog,
        };
        let with = |range_days: u32, periods: u32, breakdown: &str| {
            query(&format!(
                r#"{{"scope":{{"tenant":7}},"date_range":{{"type":"last","count":{range_days},"unit":"day"}},
                    "start":{{"event":"a"}},"return":{{"event":"b"}},"period":"day","periods":{periods}{breakdown}}}"#
            ))
        };
        let breakdown = r#","breakdown":{"properties":[{"source":"event","key":"plan"}]}"#;
        // L = 29 + 30: bits up to 60.
        let q = with(30, 30, "");
        let plan = compile_retention(&q, &DataFusionDialect, &ctx).unwrap();
        assert_eq!(plan.last_period(), 59);
        let sql = plan.person_periods_sql().unwrap().expect("fits");
        assert!(
            sql.starts_with("SELECT person_id AS person_key, period, mask FROM"),
            "{sql}"
        );
        assert!(
            sql.contains("tally_person_key(e.\"distinct_id_number\")"),
            "{sql}"
        );
        // L = 62 is the last that fits (period 62 is bit 63).
        for (periods, fits) in [(3, true), (33, true), (34, false)] {
            let q = with(30, periods, "");
            let plan = compile_retention(&q, &DataFusionDialect, &ctx).unwrap();
            assert_eq!(plan.last_period(), 29 + i64::from(periods));
            assert_eq!(
                plan.person_periods_sql().unwrap().is_some(),
                fits,
                "{periods}"
            );
        }
        // A breakdown needs the forming start event: the aggregate.
        let q = with(30, 3, breakdown);
        let plan = compile_retention(&q, &DataFusionDialect, &ctx).unwrap();
        assert!(plan.person_periods_sql().unwrap().is_none());
    }

    #[test]
    fn dst_periods_use_a_balanced_search() {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW + 100 * DAY,
            tenant_time_zone: Some("America/New_York"),
            catalog: &catalog,
        };
        let q = query(
            r#"{"scope":{"tenant":7},"date_range":{"type":"absolute","from":"2024-03-08","to":"2024-03-12"},
                "start":{"event":"a"},"return":{"event":"b"},"period":"day","periods":3}"#,
        );
        let plan = compile_retention(&q, &DataFusionDialect, &ctx).unwrap();
        // 03-10 has 23 hours.
        assert_eq!(plan.starts[3] - plan.starts[2], 23 * 3_600_000_000);
        // The expression finds the right index for instants around every start.
        for (k, s) in plan.starts.iter().enumerate() {
            for t in [s - 1, *s, s + 1] {
                let expected = if t < plan.range.start {
                    -1
                } else {
                    plan.starts
                        .iter()
                        .rposition(|x| *x <= t)
                        .map_or(-1, |i| i.min(plan.starts.len() - 2) as i64)
                };
                assert_eq!(eval_search(&plan, t), expected, "k={k} t={t}");
            }
        }
    }

    /// Evaluates the generated search expression (`CASE WHEN ts >= n THEN a ELSE b
    /// END` nested, or an integer) for `ts = t`, as SQL would.
    fn eval_search(plan: &RetentionPlan<'_>, t: i64) -> i64 {
        if t < plan.range.start {
            return -1;
        }
        fn eval(tokens: &mut std::slice::Iter<'_, &str>, t: i64) -> i64 {
            let head = *tokens.next().unwrap();
            if head != "CASE" {
                return head.parse().unwrap();
            }
            let when: Vec<&str> = tokens.by_ref().take(4).copied().collect();
            assert_eq!(&when[..3], ["WHEN", "ts", ">="]);
            let bound: i64 = when[3].parse().unwrap();
            assert_eq!(*tokens.next().unwrap(), "THEN");
            let then = eval(tokens, t);
            assert_eq!(*tokens.next().unwrap(), "ELSE");
            let otherwise = eval(tokens, t);
            assert_eq!(*tokens.next().unwrap(), "END");
            if t >= bound { then } else { otherwise }
        }
        let sql = plan.search("ts", 0, plan.starts.len() - 2);
        let tokens: Vec<&str> = sql.split_whitespace().collect();
        let mut it = tokens.iter();
        let value = eval(&mut it, t);
        assert!(it.next().is_none(), "trailing tokens in {sql}");
        value
    }

    #[test]
    fn clickhouse_and_operator_scope_are_refused() {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: None,
            catalog: &catalog,
        };
        let q = query(
            r#"{"scope":{"tenant":7},"date_range":{"type":"last","count":3,"unit":"day"},
                "start":{"event":"a"},"return":{"event":"b"}}"#,
        );
        assert!(matches!(
            compile_retention(&q, &ClickHouseDialect, &ctx),
            Err(Error::Unsupported(_))
        ));
        let op = query(
            r#"{"scope":{"operator":{}},"date_range":{"type":"last","count":3,"unit":"day"},
                "start":{"event":"a"},"return":{"event":"b"}}"#,
        );
        assert!(matches!(
            compile_retention(&op, &DataFusionDialect, &ctx),
            Err(Error::Unsupported(_))
        ));
    }

    /// Data-driven snapshots: every `tests/snapshots/retention/<name>.json` (a
    /// `Query` with kind `retention`) compiles, for both dialects, to exactly
    /// `<name>.<dialect>.sql`. `UPDATE_SNAPSHOTS=1` rewrites them (review the diff).
    /// A subdirectory, so the crate's general snapshot test does not read these.
    #[test]
    fn queries_compile_to_the_recorded_sql() {
        use std::path::Path;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/retention");
        let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
        let mut catalog = PropertyCatalog::new();
        catalog.insert(
            "plan",
            crate::KeyColumns {
                string: true,
                ..Default::default()
            },
        );
        catalog.insert(
            "we\"ird'\\key\0:x",
            crate::KeyColumns {
                string: true,
                boolean: true,
                other: true,
                ..Default::default()
            },
        );
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: Some("Europe/Berlin"),
            catalog: &catalog,
        };
        let mut cases: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        cases.sort();
        assert!(cases.len() >= 3, "retention snapshot cases missing");
        let mut failures = Vec::new();
        for case in &cases {
            let text = std::fs::read_to_string(case).unwrap();
            let tally_query::Query::Retention(q) = serde_json::from_str(&text).unwrap() else {
                panic!("{}: not a retention query", case.display());
            };
            for dialect in [&DataFusionDialect as &dyn Dialect, &ClickHouseDialect] {
                let actual = match compile_retention(&q, dialect, &ctx) {
                    Err(e) => format!("-- error: {e}\n"),
                    Ok(plan) => {
                        let mut out = String::new();
                        if let Some(sql) = plan.ranking_sql().unwrap() {
                            out.push_str(&format!("-- ranking\n{sql};\n"));
                        }
                        let sql = plan.cells_sql(None).unwrap();
                        out.push_str(&format!("-- cells\n{sql};\n"));
                        if let Some(sql) = plan.person_periods_sql().unwrap() {
                            out.push_str(&format!("-- person periods\n{sql};\n"));
                        }
                        if let Some(b) = &q.breakdown {
                            let n = b.properties.len();
                            let top = [
                                BreakdownKey(vec![crate::PropertyValue::String("pro".into()); n]),
                                BreakdownKey(vec![crate::PropertyValue::Null; n]),
                            ];
                            let sql = plan.cells_sql(Some(&top)).unwrap();
                            out.push_str(&format!("-- cells by breakdown row\n{sql};\n"));
                        }
                        // Every statement reads tenant 7's events and only tenant 7's
                        // relations (the identity map where the dialect has no person
                        // key).
                        for stmt in out.split(";\n").filter(|s| s.contains("SELECT")) {
                            assert!(stmt.contains("FROM tenant_7_events AS e"), "{stmt}");
                            assert!(
                                stmt.matches("tenant_").count()
                                    == stmt.matches("tenant_7_").count(),
                                "{stmt}"
                            );
                            assert_eq!(
                                stmt.contains("LEFT JOIN tenant_7_person_map AS pm"),
                                dialect.person_key("d").is_none(),
                                "{stmt}"
                            );
                        }
                        out
                    }
                };
                let path = case.with_extension(format!("{}.sql", dialect.name()));
                if update {
                    std::fs::write(&path, &actual).unwrap();
                    continue;
                }
                let expected = std::fs::read_to_string(&path).unwrap_or_default();
                if expected != actual {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                        path.display()
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}
