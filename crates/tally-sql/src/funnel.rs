//! Funnels compiled to one pass per person through the `tally_funnel` aggregate.
//!
//! The statement reads the tenant's events once (same scoped `FROM` and filter
//! rendering as trends), keeps those passing the global filters within
//! `[range start, range end + window)`, and gives each a bitmask of what it matches
//! ([`STEP_BIT`], [`EXCLUSION_SHIFT`], [`ENTRY_BIT`]). `tally_funnel(ts, mask, spec)`
//! grouped by person returns, per person who entered, one list element per step: the
//! microseconds from the previous required step's event to this step's (0 for step
//! 0) on the person's best chain, or NULL when the step was not reached; NULL for
//! persons who never entered. The outer query aggregates per step, reading elements
//! with [`STEP_FUNCTION`].
//!
//! Owns: the SQL text and the [`FunnelSpec`] literal the aggregate is configured
//! with. Does not own: the aggregate (tally-engine implements it) or the chain rules
//! (`docs/QUERY-SEMANTICS.md`).

use serde_json::{Value, json};
use tally_core::TenantId;
use tally_query::time::parse_time_zone;
use tally_query::{Bucket, Calendar, FunnelOrder, FunnelQuery, Interval, TimeRange};

use crate::dialect::Dialect;
use crate::expr::{BreakdownKey, Scoped, join_bool};
use crate::trends::PeriodPlan;
use crate::{CompileContext, Error, Result, scope_tenant};

/// Mask bit of step `s` is `STEP_BIT << s` (steps 0..20).
pub const STEP_BIT: i64 = 1;
/// Mask bit of exclusion `x` is `1 << (EXCLUSION_SHIFT + x)` (exclusions 0..20).
pub const EXCLUSION_SHIFT: u32 = 20;
/// `tally_funnel_step(list, i)`: element `i` (0-based) of the aggregate's list, NULL
/// when absent (the engine implements it next to the aggregate).
pub const STEP_FUNCTION: &str = "tally_funnel_step";
/// Set on events inside the date range: only those may enter the funnel.
pub const ENTRY_BIT: i64 = 1 << 40;

/// One step as the aggregate needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Optional step.
    pub optional: bool,
    /// The step's own window from the previous required step, microseconds.
    pub window: Option<i64>,
}

/// Everything `tally_funnel` needs besides the rows, passed as its third argument (a
/// JSON string literal) so that the statement is self-contained.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelSpec {
    /// Step order.
    pub order: FunnelOrder,
    /// The conversion window, microseconds (inclusive).
    pub window: i64,
    /// The steps.
    pub steps: Vec<StepSpec>,
    /// Exclusions as (from step, to step); exclusion `x` is mask bit
    /// `EXCLUSION_SHIFT + x`.
    pub exclusions: Vec<(usize, usize)>,
}

impl FunnelSpec {
    /// The spec of a (validated) query.
    pub fn of(q: &FunnelQuery) -> Self {
        FunnelSpec {
            order: q.order,
            window: q.window.micros(),
            steps: q
                .steps
                .iter()
                .map(|s| StepSpec {
                    optional: s.optional,
                    window: s.window.as_ref().map(|w| w.micros()),
                })
                .collect(),
            exclusions: q
                .exclusions
                .iter()
                .map(|x| (x.from_step as usize, x.to_step as usize))
                .collect(),
        }
    }

    /// The spec as compact JSON.
    pub fn encode(&self) -> String {
        let order = match self.order {
            FunnelOrder::Ordered => "ordered",
            FunnelOrder::Strict => "strict",
            FunnelOrder::AnyOrder => "any_order",
        };
        json!({
            "order": order,
            "window": self.window,
            "steps": self.steps.iter().map(|s| json!([s.optional, s.window])).collect::<Vec<_>>(),
            "exclusions": self.exclusions.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Parses [`FunnelSpec::encode`]'s output, checking what the aggregate relies on.
    pub fn decode(text: &str) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("funnel spec: {e}"))?;
        let bad = |what: &str| format!("funnel spec: bad {what}");
        let order = match v["order"].as_str() {
            Some("ordered") => FunnelOrder::Ordered,
            Some("strict") => FunnelOrder::Strict,
            Some("any_order") => FunnelOrder::AnyOrder,
            _ => return Err(bad("order")),
        };
        let window = v["window"].as_i64().ok_or_else(|| bad("window"))?;
        let steps = v["steps"]
            .as_array()
            .ok_or_else(|| bad("steps"))?
            .iter()
            .map(|s| {
                Ok(StepSpec {
                    optional: s[0].as_bool().ok_or_else(|| bad("step"))?,
                    window: match &s[1] {
                        Value::Null => None,
                        w => Some(w.as_i64().ok_or_else(|| bad("step window"))?),
                    },
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let exclusions = v["exclusions"]
            .as_array()
            .ok_or_else(|| bad("exclusions"))?
            .iter()
            .map(|x| {
                let step = |i: usize| {
                    x[i].as_u64()
                        .and_then(|s| usize::try_from(s).ok())
                        .filter(|s| *s < steps.len())
                        .ok_or_else(|| bad("exclusion"))
                };
                Ok((step(0)?, step(1)?))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let max = tally_query::funnel::MAX_STEPS;
        if steps.is_empty() || steps.len() > max || exclusions.len() > max || window < 0 {
            return Err(bad("sizes"));
        }
        Ok(FunnelSpec {
            order,
            window,
            steps,
            exclusions,
        })
    }
}

/// The `conversion_over_time` buckets and each one's entry range `[lo, hi)`.
pub type ConversionBuckets = (Vec<Bucket>, Vec<(i64, i64)>);

/// A compiled funnel query.
pub struct FunnelPlan<'a> {
    /// The query.
    pub query: &'a FunnelQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    /// The resolved date range (entries).
    pub range: TimeRange,
    /// The aggregate's configuration.
    pub spec: FunnelSpec,
    calendar: Calendar,
    aggregate: &'static str,
    dialect: &'a dyn Dialect,
    ctx: CompileContext<'a>,
    /// See [`FunnelPlan::read_chains_from`].
    chains_table: Option<String>,
}

/// Compiles a funnel query (every view, with or without breakdown).
pub fn compile_funnel<'a>(
    query: &'a FunnelQuery,
    dialect: &'a dyn Dialect,
    ctx: &CompileContext<'a>,
) -> Result<FunnelPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
    let Some(aggregate) = dialect.funnel_aggregate() else {
        return Err(Error::Unsupported(format!(
            "funnels in the {} dialect: it has no aggregate with Tally's funnel semantics",
            dialect.name()
        )));
    };
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
    let plan = FunnelPlan {
        query,
        tenant,
        range,
        spec: FunnelSpec::of(query),
        calendar,
        aggregate,
        dialect,
        ctx: ctx.clone(),
        chains_table: None,
    };
    // Compile every statement once now so that unsupported properties fail here.
    plan.steps_sql(None)?;
    plan.ranking_sql()?;
    Ok(plan)
}

impl FunnelPlan<'_> {
    fn scoped(&self) -> Scoped<'_> {
        Scoped::new(self.dialect, self.ctx.catalog, self.tenant)
    }

    fn entry_mask(&self) -> i64 {
        if self.query.order == FunnelOrder::AnyOrder {
            (STEP_BIT << self.query.steps.len()) - 1
        } else {
            STEP_BIT
        }
    }

    /// With a breakdown: rows of the breakdown columns (`b{i}_{s,n,b,o}` per property,
    /// as in trends) of each entered person's first-touch event (earliest entry event,
    /// ties by uuid) and `persons` (BIGINT) with that value.
    pub fn ranking_sql(&self) -> Result<Option<String>> {
        let Some(b) = &self.query.breakdown else {
            return Ok(None);
        };
        let s = self.scoped();
        let cols = s.breakdown_columns(&b.properties)?;
        let entry_steps: Vec<String> = self
            .query
            .steps
            .iter()
            .take(if self.query.order == FunnelOrder::AnyOrder {
                self.query.steps.len()
            } else {
                1
            })
            .map(|step| s.matcher(&step.matcher(), &self.query.filters))
            .collect::<Result<_>>()?;
        let mut conds = s.time_bounds(Some(self.range.start), Some(self.range.end));
        conds.push(join_bool(&entry_steps, "OR"));
        let inner: Vec<String> = cols.iter().map(|(e, n)| format!("{e} AS {n}")).collect();
        let names: Vec<&str> = cols.iter().map(|(_, n)| n.as_str()).collect();
        let firsts: Vec<String> = names
            .iter()
            .map(|n| format!("first_value({n} ORDER BY ts, uuid) AS {n}"))
            .collect();
        Ok(Some(format!(
            "SELECT {names}, CAST(COUNT(*) AS BIGINT) AS persons FROM (\
             SELECT {firsts} FROM (SELECT {ts} AS ts, {uuid} AS uuid, {person} AS person_id, {inner} {from}) t \
             GROUP BY person_id) p GROUP BY {names}{suffix}",
            names = names.join(", "),
            firsts = firsts.join(", "),
            ts = s.ts(),
            uuid = s.col("e", "uuid"),
            person = s.person_key(),
            inner = inner.join(", "),
            from = s.scoped_source(&conds),
            suffix = self.dialect.statement_suffix(),
        )))
    }

    /// Per step `i`, `persons_{i}` (BIGINT), `avg_{i}` and `median_{i}` (DOUBLE
    /// seconds from the previous required step; meaningless for step 0). Without
    /// `top`: one row over all persons. With `top` (the ranked breakdown keys): a
    /// leading `row_index` column, the index in `top` of the person's first-touch
    /// value or -1 for "other", one row per index that has persons.
    pub fn steps_sql(&self, top: Option<&[BreakdownKey]>) -> Result<String> {
        let d = self.dialect;
        let double = d.double_type();
        let mut cols = Vec::new();
        for i in 0..self.query.steps.len() {
            let el = format!("{STEP_FUNCTION}(f, {i})");
            cols.push(format!("CAST(COUNT({el}) AS BIGINT) AS persons_{i}"));
            let seconds = format!("CAST({el} AS {double}) / 1000000.0");
            cols.push(format!("AVG({seconds}) AS avg_{i}"));
            cols.push(format!("{} AS median_{i}", d.quantile(&seconds, 0.5)));
        }
        let per_person = self.per_person_sql(top, None, false)?;
        let (row_out, group) = if per_person.1 {
            ("row_index, ", " GROUP BY row_index")
        } else {
            ("", "")
        };
        Ok(format!(
            "SELECT {row_out}{cols} FROM ({inner}) p{group}{suffix}",
            cols = cols.join(", "),
            inner = per_person.0,
            suffix = d.statement_suffix(),
        ))
    }

    /// The µs from `from_step`'s event to `to_step`'s on a person's best chain (both
    /// required), as an expression over `f`: the sum of the steps' times from their
    /// previous required step.
    fn conversion_time(&self, from_step: u32, to_step: u32) -> String {
        let q = self.query;
        let parts: Vec<String> = (from_step as usize + 1..=to_step as usize)
            .filter(|&s| q.order == FunnelOrder::AnyOrder || !q.steps[s].optional)
            .map(|s| format!("{STEP_FUNCTION}(f, {s})"))
            .collect();
        if parts.is_empty() {
            "CAST(NULL AS BIGINT)".to_string()
        } else {
            parts.join(" + ")
        }
    }

    /// The `time_to_convert` view's summary: one row `persons` (BIGINT), `min_us`,
    /// `max_us` (BIGINT), `avg_seconds`, `median_seconds` (DOUBLE) over the persons
    /// whose best chain reaches `to_step`.
    pub fn time_to_convert_sql(&self, from_step: u32, to_step: u32) -> Result<String> {
        let d = self.dialect;
        let double = d.double_type();
        let seconds = format!("CAST(x AS {double}) / 1000000.0");
        Ok(format!(
            "SELECT CAST(COUNT(x) AS BIGINT) AS persons, MIN(x) AS min_us, MAX(x) AS max_us, \
             AVG({seconds}) AS avg_seconds, {median} AS median_seconds \
             FROM (SELECT {x} AS x FROM ({inner}) p) q WHERE x IS NOT NULL{suffix}",
            median = d.quantile(&seconds, 0.5),
            x = self.conversion_time(from_step, to_step),
            inner = self.per_person_sql(None, None, false)?.0,
            suffix = d.statement_suffix(),
        ))
    }

    /// The `time_to_convert` view's bins: rows `bin` (BIGINT, `(time - min_us) /
    /// width_us`) and `persons` (BIGINT), for bins that have persons.
    pub fn time_to_convert_bins_sql(
        &self,
        from_step: u32,
        to_step: u32,
        min_us: i64,
        width_us: i64,
    ) -> Result<String> {
        Ok(format!(
            "SELECT CAST((x - {min_us}) / {width} AS BIGINT) AS bin, CAST(COUNT(*) AS BIGINT) AS persons \
             FROM (SELECT {x} AS x FROM ({inner}) p) q WHERE x IS NOT NULL \
             GROUP BY CAST((x - {min_us}) / {width} AS BIGINT){suffix}",
            width = width_us.max(1),
            x = self.conversion_time(from_step, to_step),
            inner = self.per_person_sql(None, None, false)?.0,
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// The `persons` view: rows `person_id` (text) of the persons who reached `step`
    /// (`dropped_off`: reached `previous` but not `step`), restricted to breakdown row
    /// `row` (an index into `top`, -1 for "other") when given, with id greater than
    /// `after` when given, ascending, at most `limit` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn persons_sql(
        &self,
        step: u32,
        previous: Option<u32>,
        top: Option<&[BreakdownKey]>,
        row: Option<i64>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<String> {
        let (inner, has_rows) = self.per_person_sql(top, None, true)?;
        let mut conds = vec![format!("{STEP_FUNCTION}(f, {step}) IS NOT NULL")];
        if let Some(prev) = previous {
            conds = vec![
                format!("{STEP_FUNCTION}(f, {prev}) IS NOT NULL"),
                format!("{STEP_FUNCTION}(f, {step}) IS NULL"),
            ];
        }
        if let (Some(row), true) = (row, has_rows) {
            conds.push(format!("row_index = {row}"));
        }
        if let Some(after) = after {
            conds.push(format!("person_id > {}", self.dialect.quote_string(after)));
        }
        Ok(format!(
            "SELECT person_id FROM ({inner}) p WHERE {conds} ORDER BY person_id LIMIT {limit}{suffix}",
            conds = conds.join(" AND "),
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// The `conversion_over_time` buckets (the calendar's periods of the range) and
    /// each one's entry range, clipped to the date range.
    pub fn conversion_buckets(&self, interval: Interval) -> Result<ConversionBuckets> {
        let plan = PeriodPlan::new(&self.calendar, self.range, interval)?;
        let ranges = plan
            .buckets
            .iter()
            .zip(&plan.ends)
            .map(|(b, end)| (b.start.max(self.range.start), (*end).min(self.range.end)))
            .collect();
        Ok((plan.buckets, ranges))
    }

    /// The `conversion_over_time` view: rows `bucket_index` (BIGINT; with `top`, then
    /// `row_index` as in [`FunnelPlan::steps_sql`]), `entered` and `converted` (BIGINT:
    /// persons with an entry in the bucket, and of them those reaching the last
    /// required step from an entry in the bucket). Empty groups are missing.
    pub fn conversion_sql(
        &self,
        buckets: &[(i64, i64)],
        top: Option<&[BreakdownKey]>,
    ) -> Result<String> {
        if buckets.is_empty() {
            return Err(Error::Unsupported(
                "conversion over time without buckets".to_string(),
            ));
        }
        let (inner, has_rows) = self.per_person_sql(top, Some(buckets), false)?;
        let last = self.query.last_required_step();
        let (row_out, group) = if has_rows {
            ("row_index, ", "bucket_index, row_index")
        } else {
            ("", "bucket_index")
        };
        Ok(format!(
            "SELECT bucket_index, {row_out}CAST(COUNT({STEP_FUNCTION}(f, 0)) AS BIGINT) AS entered, \
             CAST(COUNT({STEP_FUNCTION}(f, {last})) AS BIGINT) AS converted FROM ({inner}) p GROUP BY {group}{suffix}",
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// Per person: `person_id`, `f` (the aggregate's list, NULL for persons who did
    /// not enter) and, with a breakdown and `top`, `row_index` of the first touch (the
    /// bool says whether it is there).
    /// `person_id` is the person's id when `ids` (a persons list shows them), and
    /// otherwise only a key that groups like it ([`Scoped::person_key`]).
    fn per_person_sql(
        &self,
        top: Option<&[BreakdownKey]>,
        buckets: Option<&[(i64, i64)]>,
        ids: bool,
    ) -> Result<(String, bool)> {
        if let (None, None, false, Some(table)) = (top, buckets, ids, &self.chains_table) {
            return Ok((format!("SELECT person_id, f FROM {table}"), false));
        }
        let s = self.scoped();
        let PersonRows {
            rows,
            has_row,
            first_touch,
        } = self.person_rows(&s, top, buckets.is_none(), ids)?;
        let spec = s.lit(&self.spec.encode());
        let aggregate = self.aggregate;
        let Some(buckets) = buckets else {
            return Ok((
                format!(
                    "SELECT person_id, {aggregate}(ts, mask, {spec}) AS f{first_touch} FROM ({rows}) t GROUP BY person_id"
                ),
                has_row,
            ));
        };
        // Each event joins the buckets whose entries' chains could include it:
        // [bucket start, bucket end + window).
        let table: Vec<Vec<i64>> = buckets
            .iter()
            .enumerate()
            .map(|(i, (lo, hi))| vec![i as i64, *lo, *hi])
            .collect();
        let window = self.spec.window;
        let first_touch = first_touch.replace("mask", "m");
        Ok((
            format!(
                "SELECT bucket_index, person_id, {aggregate}(ts, m, {spec}) AS f{first_touch} FROM (\
                 SELECT w.bucket_index, t.*, t.mask + CASE WHEN t.ts >= w.lo AND t.ts < w.hi THEN {ENTRY_BIT} ELSE 0 END AS m \
                 FROM ({rows}) t CROSS JOIN {values} WHERE t.ts >= w.lo AND t.ts < w.hi + {window}\
                 ) b GROUP BY bucket_index, person_id",
                values = self
                    .dialect
                    .values_table("w", &["bucket_index", "lo", "hi"], &table),
            ),
            has_row,
        ))
    }

    /// Without a breakdown, when the dialect has an integer person key: one row per
    /// event the funnel reads, `person_key`, `ts` and `mask` (BIGINT), for an engine
    /// that groups events by person itself (the key is dense) and runs the per-person
    /// chain search on each group. It then hands the chains back with
    /// [`FunnelPlan::read_chains_from`].
    pub fn person_rows_sql(&self) -> Result<Option<String>> {
        let s = self.scoped();
        if self.query.breakdown.is_some() || !s.person_key_is_integer() {
            return Ok(None);
        }
        let rows = self.person_rows(&s, None, true, false)?.rows;
        Ok(Some(format!(
            "SELECT person_id AS person_key, ts, mask FROM ({rows}) t{suffix}",
            suffix = self.dialect.statement_suffix(),
        )))
    }

    /// Makes the statements without breakdown rows, conversion buckets or person
    /// ids ([`FunnelPlan::steps_sql`] without `top`, the time-to-convert statements)
    /// read each person's chain from `table` (columns `person_id` and `f`, the
    /// aggregate's list; one row per person with events in
    /// [`FunnelPlan::person_rows_sql`]) instead of aggregating the events. The table
    /// is the engine's, derived from that scoped statement, so it holds only this
    /// query's tenant.
    pub fn read_chains_from(&mut self, table: &str) {
        self.chains_table = Some(table.to_string());
    }

    /// The rows every per-person statement reads; see [`PersonRows`].
    fn person_rows(
        &self,
        s: &Scoped<'_>,
        top: Option<&[BreakdownKey]>,
        with_entry_bit: bool,
        ids: bool,
    ) -> Result<PersonRows> {
        let q = self.query;
        // What each event matches; the global filters are in WHERE once.
        let mut parts = Vec::new();
        let mut any = Vec::new();
        for (i, step) in q.steps.iter().enumerate() {
            let m = s.matcher(&step.matcher(), &[])?;
            parts.push(format!("CASE WHEN {m} THEN {} ELSE 0 END", STEP_BIT << i));
            any.push(m);
        }
        for (i, x) in q.exclusions.iter().enumerate() {
            let m = s.matcher(&x.matcher(), &[])?;
            parts.push(format!(
                "CASE WHEN {m} THEN {} ELSE 0 END",
                1i64 << (EXCLUSION_SHIFT + i as u32)
            ));
            any.push(m);
        }
        let entry = join_bool(
            &s.time_bounds(Some(self.range.start), Some(self.range.end)),
            "AND",
        );
        // Per bucket, entries are the events in the bucket: the entry bit is added
        // after the join with the buckets.
        if with_entry_bit {
            parts.push(format!("CASE WHEN {entry} THEN {ENTRY_BIT} ELSE 0 END"));
        }
        let row = match (&q.breakdown, top) {
            (Some(b), Some(top)) => Some(s.breakdown_row(&b.properties, top)?),
            _ => None,
        };
        let global = s.filters(&q.filters)?;
        // Every chain event (and every event that could interrupt or exclude) is at
        // or after an entry, so within [start, end + window).
        let end = self.range.end.saturating_add(self.spec.window);
        let mut conds = s.time_bounds(Some(self.range.start), Some(end));
        if global != "TRUE" {
            conds.push(global);
        }
        // Strict funnels need every event passing the global filters: any of them
        // interrupts a sequence.
        if q.order != FunnelOrder::Strict {
            conds.push(join_bool(&any, "OR"));
        }
        // Before `scoped_source`: reading the person is what joins the identity map.
        let person = if ids { s.person() } else { s.person_key() };
        let from = s.scoped_source(&conds);
        let (row_col, first_touch) = match &row {
            Some(row) => {
                let entry = ENTRY_BIT | self.entry_mask();
                let is_entry = if q.order == FunnelOrder::AnyOrder {
                    format!(
                        "(mask & {ENTRY_BIT}) <> 0 AND (mask & {}) <> 0",
                        self.entry_mask()
                    )
                } else {
                    format!("(mask & {entry}) = {entry}")
                };
                (
                    format!(", {row} AS row_index, {} AS uuid", s.col("e", "uuid")),
                    format!(
                        ", first_value(row_index ORDER BY CASE WHEN {is_entry} THEN 0 ELSE 1 END, ts, uuid) AS row_index"
                    ),
                )
            }
            None => Default::default(),
        };
        let rows = format!(
            "SELECT {ts} AS ts, {person} AS person_id, CAST({mask} AS BIGINT) AS mask{row_col} {from}",
            ts = s.ts(),
            mask = parts.join(" + "),
        );
        Ok(PersonRows {
            rows,
            has_row: row.is_some(),
            first_touch,
        })
    }
}

/// The events a funnel reads, one row each: `ts`, `person_id` and `mask`, plus
/// `row_index` and `uuid` with a breakdown's `top`.
struct PersonRows {
    rows: String,
    /// Whether `row_index` is there.
    has_row: bool,
    /// The per-person select item computing the first-touch `row_index` (empty
    /// without it).
    first_touch: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_rejects_garbage() {
        let spec = FunnelSpec {
            order: FunnelOrder::Strict,
            window: 3_600_000_000,
            steps: vec![
                StepSpec {
                    optional: false,
                    window: None,
                },
                StepSpec {
                    optional: true,
                    window: Some(60_000_000),
                },
            ],
            exclusions: vec![(0, 1)],
        };
        assert_eq!(FunnelSpec::decode(&spec.encode()).unwrap(), spec);
        assert!(FunnelSpec::decode("{").is_err());
        assert!(
            FunnelSpec::decode(r#"{"order":"x","window":1,"steps":[],"exclusions":[]}"#).is_err()
        );
        let out_of_range = spec.encode().replace("[[0,1]]", "[[0,5]]");
        assert!(FunnelSpec::decode(&out_of_range).is_err());
    }
}
