//! Trends compiled to plain SQL: one statement per (series, period), each returning
//! rows `(bucket_index BIGINT, row_index BIGINT, metric DOUBLE)`, plus, with a
//! breakdown, a ranking statement and an "is there an other row" statement.
//!
//! The caller (the engine) runs the ranking statement first, ranks the keys by the
//! semantics (weight descending, canonical value ascending), passes the top keys back
//! in, and zero-fills buckets and rows the statements did not return
//! ([`TrendsPlan::empty_metric`]). Formulas are evaluated by the caller per bucket.
//!
//! With a breakdown and only foldable maths (counts, sums, averages, minima, maxima)
//! the caller can instead run one grouped statement per (series, period)
//! ([`TrendsPlan::series_grouped_sql`]: partials per bucket and raw breakdown value)
//! and rank, cut and fold the rows itself; this module only writes the SQL.

use chrono::{Days, NaiveDateTime};
use tally_core::TenantId;
use tally_core::time::MICROS_PER_DAY;
use tally_query::time::parse_time_zone;
use tally_query::{
    Bucket, Calendar, Interval, Math, PerPersonAggregation, PropertyAggregation, TimeRange,
    TrendsQuery,
};

use crate::dialect::Dialect;
use crate::expr::{BreakdownKey, Scoped, join_bool};
use crate::{CompileContext, Result, scope_tenant};

/// The buckets of one period (current or previous).
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodPlan {
    /// The resolved range.
    pub range: TimeRange,
    /// Its buckets, in order; `bucket_index` in the statements indexes this.
    pub buckets: Vec<Bucket>,
    /// Each bucket's end (the next bucket's start; for the last, its period's end).
    pub ends: Vec<i64>,
    periods: Vec<NaiveDateTime>,
}

impl PeriodPlan {
    pub(crate) fn new(calendar: &Calendar, range: TimeRange, interval: Interval) -> Result<Self> {
        let periods = calendar.periods(range, interval)?;
        let mut ends = Vec::with_capacity(periods.len());
        for (i, (p, _)) in periods.iter().enumerate() {
            ends.push(match periods.get(i + 1) {
                Some((_, next)) => next.start,
                None => calendar.period_start(calendar.next_period(*p, interval)),
            });
        }
        let (periods, buckets) = periods.into_iter().unzip();
        Ok(PeriodPlan {
            range,
            buckets,
            ends,
            periods,
        })
    }

    /// The bucket index of the instant `ts` (assumed inside the range).
    fn bucket_expr(&self, ts: &str) -> String {
        let starts: Vec<i64> = self.buckets.iter().map(|b| b.start).collect();
        let Some(&first) = starts.first() else {
            return "CAST(0 AS BIGINT)".to_string();
        };
        let widths: Vec<i64> = starts.iter().zip(&self.ends).map(|(s, e)| e - s).collect();
        // Equal widths (UTC, fixed offsets, no DST change in the range): arithmetic
        // instead of a CASE per bucket.
        if widths.windows(2).all(|w| w[0] == w[1]) && widths[0] > 0 {
            return format!("CAST(({ts} - {first}) / {} AS BIGINT)", widths[0]);
        }
        let mut sql = String::from("CASE");
        for (i, s) in starts.iter().enumerate().skip(1).rev() {
            sql.push_str(&format!(" WHEN {ts} >= {s} THEN {i}"));
        }
        sql.push_str(" ELSE 0 END");
        format!("CAST({sql} AS BIGINT)")
    }

    /// Whether `windows` (one per bucket, from [`PeriodPlan::active_windows`]) are
    /// exactly the buckets: window `i` is `[start of bucket i, its end clipped to the
    /// range)`. Then the windows tile `[first bucket's start, range end)` and an
    /// event's window is its bucket, found by [`PeriodPlan::bucket_expr`].
    fn windows_are_buckets(&self, windows: &[(i64, i64)]) -> bool {
        windows.len() == self.buckets.len()
            && windows.iter().zip(self.buckets.iter().zip(&self.ends)).all(
                |(&(lo, hi), (bucket, &end))| lo == bucket.start && hi == end.min(self.range.end),
            )
    }

    /// The trailing window `[lo, hi)` of each bucket for DAU/WAU/MAU over `days`.
    fn active_windows(
        &self,
        calendar: &Calendar,
        interval: Interval,
        days: u32,
    ) -> Vec<(i64, i64)> {
        self.ends
            .iter()
            .map(|&end| {
                let e = end.min(self.range.end);
                if interval == Interval::Hour {
                    return (e - i64::from(days) * MICROS_PER_DAY, e);
                }
                let lo = calendar
                    .local_date(e - 1)
                    .and_then(|d| d.checked_sub_days(Days::new(u64::from(days - 1))))
                    .map(|d| calendar.period_start(d.and_time(chrono::NaiveTime::MIN)))
                    .unwrap_or(i64::MIN);
                (lo, e)
            })
            .collect()
    }
}

/// A compiled trends query.
pub struct TrendsPlan<'a> {
    /// The query.
    pub query: &'a TrendsQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    /// The calendar buckets are cut in.
    pub calendar: Calendar,
    /// The requested period.
    pub current: PeriodPlan,
    /// The previous period, when the query compares.
    pub previous: Option<PeriodPlan>,
    dialect: &'a dyn Dialect,
    ctx: CompileContext<'a>,
}

/// Compiles a trends query: validates it, resolves its range and buckets.
pub fn compile_trends<'a>(
    query: &'a TrendsQuery,
    dialect: &'a dyn Dialect,
    ctx: &CompileContext<'a>,
) -> Result<TrendsPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
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
    let current = PeriodPlan::new(&calendar, range, query.interval)?;
    let previous = query
        .compare
        .then(|| PeriodPlan::new(&calendar, range.previous(&calendar), query.interval))
        .transpose()?;
    // Compile every series once now so that unsupported properties fail here, not
    // half-way through execution.
    let plan = TrendsPlan {
        query,
        tenant,
        calendar,
        current,
        previous,
        dialect,
        ctx: ctx.clone(),
    };
    for i in 0..query.series.len() {
        plan.series_sql(i, &plan.current, None)?;
        plan.series_grouped_sql(i, &plan.current)?;
    }
    plan.ranking_sql()?;
    Ok(plan)
}

impl TrendsPlan<'_> {
    fn scoped(&self) -> Scoped<'_> {
        Scoped::new(self.dialect, self.ctx.catalog, self.tenant)
    }

    /// The metric of a bucket with no rows: 0 for counts and sums, NULL otherwise.
    pub fn empty_metric(math: &Math) -> Option<f64> {
        match math {
            Math::Total | Math::UniquePersons | Math::Dau | Math::Wau | Math::Mau => Some(0.0),
            Math::Property {
                aggregation: PropertyAggregation::Sum,
                ..
            } => Some(0.0),
            Math::Property { .. } | Math::PerPerson { .. } => None,
        }
    }

    /// With a breakdown: rows of the breakdown columns (`b{i}_s`, `b{i}_n`, `b{i}_b`,
    /// `b{i}_o` per property: the value when it is a string, number, boolean, array or
    /// object) and `weight` (BIGINT), the number of matching events of all series in
    /// the current period.
    pub fn ranking_sql(&self) -> Result<Option<String>> {
        let Some(b) = &self.query.breakdown else {
            return Ok(None);
        };
        let s = self.scoped();
        let cols = s.breakdown_columns(&b.properties)?;
        let matchers = self.matchers(&s)?;
        let weight: Vec<String> = matchers
            .iter()
            .map(|m| format!("CASE WHEN {m} THEN 1 ELSE 0 END"))
            .collect();
        let mut conds = s.time_bounds(Some(self.current.range.start), Some(self.current.range.end));
        conds.push(join_bool(&matchers, "OR"));
        let inner_cols: Vec<String> = cols.iter().map(|(e, n)| format!("{e} AS {n}")).collect();
        let names: Vec<&str> = cols.iter().map(|(_, n)| n.as_str()).collect();
        Ok(Some(format!(
            "SELECT {names}, CAST(SUM(w) AS BIGINT) AS weight FROM (SELECT {inner}, {weight} AS w {from}) t GROUP BY {names}{suffix}",
            names = names.join(", "),
            inner = inner_cols.join(", "),
            weight = weight.join(" + "),
            from = s.scoped_source(&conds),
            suffix = self.dialect.statement_suffix(),
        )))
    }

    /// With a breakdown: one row `n` (BIGINT), the number of matching events in the
    /// current or previous period outside `top`. The "other" row exists when it is
    /// positive.
    pub fn other_count_sql(&self, top: &[BreakdownKey]) -> Result<Option<String>> {
        let Some(b) = &self.query.breakdown else {
            return Ok(None);
        };
        let s = self.scoped();
        let row = s.breakdown_row(&b.properties, top)?;
        let matchers = self.matchers(&s)?;
        let in_period = |p: &PeriodPlan| {
            join_bool(
                &s.time_bounds(Some(p.range.start), Some(p.range.end)),
                "AND",
            )
        };
        let mut periods = vec![in_period(&self.current)];
        if let Some(prev) = &self.previous {
            periods.push(in_period(prev));
        }
        let conds = vec![
            join_bool(&periods, "OR"),
            join_bool(&matchers, "OR"),
            format!("{row} = -1"),
        ];
        Ok(Some(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n {}{}",
            s.scoped_source(&conds),
            self.dialect.statement_suffix()
        )))
    }

    fn matchers(&self, s: &Scoped<'_>) -> Result<Vec<String>> {
        self.query
            .series
            .iter()
            .map(|series| s.matcher(&series.matcher(), &self.query.filters))
            .collect()
    }

    /// Series `series` over `period`: rows `(bucket_index, row_index, metric)`.
    /// `row_index` is 0 without a breakdown; with one, the index in `top` or -1 for
    /// "other". Buckets and rows without events may be missing.
    pub fn series_sql(
        &self,
        series: usize,
        period: &PeriodPlan,
        top: Option<&[BreakdownKey]>,
    ) -> Result<String> {
        let d = self.dialect;
        let q = self.query;
        let Some(sr) = q.series.get(series) else {
            return Err(crate::Error::Unsupported(format!(
                "series index {series} out of range"
            )));
        };
        let s = self.scoped();
        let matcher = s.matcher(&sr.matcher(), &q.filters)?;
        let row = match (&q.breakdown, top) {
            (Some(b), Some(top)) => s.breakdown_row(&b.properties, top)?,
            _ => "CAST(0 AS BIGINT)".to_string(),
        };
        let ts = s.ts();
        let double = d.double_type();
        let suffix = d.statement_suffix();

        // Breakdown rows are -1 ("other") to top.len() - 1.
        let row_count = top.map_or(1, |t| t.len() + 1);
        if let Some(days) = sr.math.active_days() {
            return self.active_sql(&s, period, days, matcher, &row, row_count);
        }
        // Only maths over persons read the person (and so join the identity map):
        // totals and property maths never look at who did the event.
        let person = match &sr.math {
            Math::UniquePersons | Math::PerPerson { .. } => {
                format!(", {} AS person_id", s.person_key())
            }
            _ => String::new(),
        };
        let bucket = period.bucket_expr(&ts);
        let value = match &sr.math {
            Math::Property { property, .. } => s
                .property(property)?
                .as_number(d)
                .unwrap_or_else(|| d.typed_null("number").to_string()),
            _ => format!("CAST(NULL AS {double})"),
        };
        let mut conds = s.time_bounds(Some(period.range.start), Some(period.range.end));
        conds.push(matcher);
        let from = s.scoped_source(&conds);
        let inner = format!(
            "SELECT {bucket} AS bucket_index, {row} AS row_index{person}, {value} AS x {from}"
        );
        let agg_x = |agg: PropertyAggregation| match agg {
            PropertyAggregation::Sum => "SUM(x)".to_string(),
            PropertyAggregation::Avg => "AVG(x)".to_string(),
            PropertyAggregation::Min => "MIN(x)".to_string(),
            PropertyAggregation::Max => "MAX(x)".to_string(),
            q => d.quantile("x", q.quantile().unwrap_or(0.5)),
        };
        Ok(match &sr.math {
            Math::Total => format!(
                "SELECT bucket_index, row_index, CAST(COUNT(*) AS {double}) AS metric FROM ({inner}) t GROUP BY bucket_index, row_index{suffix}"
            ),
            Math::UniquePersons => {
                self.distinct_persons_sql(&inner, period.buckets.len(), row_count)
            }
            Math::Property { aggregation, .. } => format!(
                "SELECT bucket_index, row_index, CAST({} AS {double}) AS metric FROM ({inner}) t WHERE x IS NOT NULL GROUP BY bucket_index, row_index{suffix}",
                agg_x(*aggregation)
            ),
            Math::PerPerson { aggregation } => {
                let agg = match aggregation {
                    PerPersonAggregation::Avg => "AVG(x)".to_string(),
                    PerPersonAggregation::Max => "MAX(x)".to_string(),
                    PerPersonAggregation::Median => d.quantile("x", 0.5),
                };
                format!(
                    "SELECT bucket_index, row_index, CAST({agg} AS {double}) AS metric FROM (\
                     SELECT bucket_index, row_index, person_id, CAST(COUNT(*) AS {double}) AS x FROM ({inner}) t0 \
                     GROUP BY bucket_index, row_index, person_id) t GROUP BY bucket_index, row_index{suffix}"
                )
            }
            // Answered by `active_sql` before `matcher` was used here.
            Math::Dau | Math::Wau | Math::Mau => {
                return Err(crate::Error::Unsupported("active-persons math".to_string()));
            }
        })
    }

    /// Whether series maths `math` folds: its value for a (bucket, breakdown row) can
    /// be computed from per-(bucket, raw key) partials ([`TrendsPlan::series_grouped_sql`]).
    /// Counts, sums, averages, minima and maxima do; quantiles and anything over
    /// persons (a person's events can span several raw keys of one row) do not.
    pub fn is_foldable(math: &Math) -> bool {
        match math {
            Math::Total => true,
            Math::Property { aggregation, .. } => matches!(
                aggregation,
                PropertyAggregation::Sum
                    | PropertyAggregation::Avg
                    | PropertyAggregation::Min
                    | PropertyAggregation::Max
            ),
            Math::UniquePersons | Math::Dau | Math::Wau | Math::Mau | Math::PerPerson { .. } => {
                false
            }
        }
    }

    /// With a breakdown and a foldable maths ([`TrendsPlan::is_foldable`]): series
    /// `series` over `period` grouped by bucket and raw breakdown value, so that the
    /// caller ranks keys, cuts the top and folds the "other" row itself instead of
    /// running [`TrendsPlan::ranking_sql`], [`TrendsPlan::other_count_sql`] and a
    /// [`TrendsPlan::series_sql`] whose row index compares every event with every top
    /// key.
    ///
    /// Rows: `bucket_index` (BIGINT), the breakdown columns as
    /// [`TrendsPlan::ranking_sql`] names them, `n` (BIGINT, matching events, whether
    /// or not the maths' property is set), `c` (BIGINT, events whose property reads
    /// as a number), `s`, `lo`, `hi` (DOUBLE: sum, minimum, maximum of those
    /// numbers). Columns a maths does not need are constants (`c` 0, the others
    /// NULL), so every series has the same shape. `None` without a breakdown or for
    /// other maths.
    pub fn series_grouped_sql(&self, series: usize, period: &PeriodPlan) -> Result<Option<String>> {
        let d = self.dialect;
        let q = self.query;
        let Some(sr) = q.series.get(series) else {
            return Err(crate::Error::Unsupported(format!(
                "series index {series} out of range"
            )));
        };
        let Some(b) = &q.breakdown else {
            return Ok(None);
        };
        if !Self::is_foldable(&sr.math) {
            return Ok(None);
        }
        let s = self.scoped();
        let cols = s.breakdown_columns(&b.properties)?;
        let matcher = s.matcher(&sr.matcher(), &q.filters)?;
        let null = d.typed_null("number");
        let zero = "CAST(0 AS BIGINT)";
        let (value, partials) = match &sr.math {
            Math::Property {
                property,
                aggregation,
            } => {
                let value = s
                    .property(property)?
                    .as_number(d)
                    .unwrap_or_else(|| null.to_string());
                let count = "CAST(COUNT(x) AS BIGINT)".to_string();
                // `x` is already a double. No CAST: a group whose values are all NULL
                // aggregates to NULL, which ClickHouse refuses to cast to a
                // non-nullable type (the statements of `series_sql` filter NULLs
                // out; here the group must stay, it still counts towards `n`).
                let of = |agg: &str| format!("{agg}(x)");
                // Only the partials the aggregation folds from: each one costs an
                // accumulator per group.
                let [c, sum, lo, hi] = match aggregation {
                    PropertyAggregation::Sum | PropertyAggregation::Avg => {
                        [count, of("SUM"), null.to_string(), null.to_string()]
                    }
                    PropertyAggregation::Min => {
                        [count, null.to_string(), of("MIN"), null.to_string()]
                    }
                    PropertyAggregation::Max => {
                        [count, null.to_string(), null.to_string(), of("MAX")]
                    }
                    // Refused by `is_foldable` above.
                    _ => return Ok(None),
                };
                (format!(", {value} AS x"), [c, sum, lo, hi])
            }
            _ => (
                String::new(),
                [
                    zero.to_string(),
                    null.to_string(),
                    null.to_string(),
                    null.to_string(),
                ],
            ),
        };
        let [c, sum, lo, hi] = partials;
        let mut conds = s.time_bounds(Some(period.range.start), Some(period.range.end));
        conds.push(matcher);
        let bucket = period.bucket_expr(&s.ts());
        let inner_cols: Vec<String> = cols.iter().map(|(e, n)| format!("{e} AS {n}")).collect();
        let names: Vec<&str> = cols.iter().map(|(_, n)| n.as_str()).collect();
        Ok(Some(format!(
            "SELECT bucket_index, {names}, CAST(COUNT(*) AS BIGINT) AS n, {c} AS c, {sum} AS s, {lo} AS lo, {hi} AS hi \
             FROM (SELECT {bucket} AS bucket_index, {inner}{value} {from}) t GROUP BY bucket_index, {names}{suffix}",
            names = names.join(", "),
            inner = inner_cols.join(", "),
            from = s.scoped_source(&conds),
            suffix = d.statement_suffix(),
        )))
    }

    /// Distinct persons per `(bucket_index, row_index)` of `inner` (which selects
    /// those two and `person_id`; buckets `0..buckets`, rows `-1..row_count - 1`).
    ///
    /// Where persons are integer keys ([`Dialect::person_key`]) the three are packed
    /// into one integer and deduplicated with a one-column `DISTINCT`, then counted
    /// per unpacked bucket and row: a hash of one integer per event instead of a
    /// composite key, and the count over the (far fewer) distinct triples. Otherwise
    /// `COUNT(DISTINCT person_id)`.
    fn distinct_persons_sql(&self, inner: &str, buckets: usize, row_count: usize) -> String {
        let d = self.dialect;
        let double = d.double_type();
        let suffix = d.statement_suffix();
        if d.person_key("e.distinct_id_number").is_none() {
            return format!(
                "SELECT bucket_index, row_index, CAST(COUNT(DISTINCT person_id) AS {double}) AS metric \
                 FROM ({inner}) t GROUP BY bucket_index, row_index{suffix}"
            );
        }
        let nb = buckets.max(1);
        let nr = row_count + 1;
        format!(
            "SELECT bucket_index, row_index, CAST(COUNT(*) AS {double}) AS metric FROM (\
             SELECT k % {nb} AS bucket_index, (k / {nb}) % {nr} - 1 AS row_index FROM (\
             SELECT DISTINCT (person_id * {nr} + row_index + 1) * {nb} + bucket_index AS k FROM ({inner}) t\
             ) d WHERE k IS NOT NULL) p GROUP BY bucket_index, row_index{suffix}"
        )
    }

    /// DAU/WAU/MAU: distinct persons per bucket over the bucket's trailing window.
    ///
    /// When every bucket's window is exactly the bucket (DAU on daily buckets, WAU on
    /// weekly ones, the first bucket starting on its period's start) each event
    /// belongs to one window, its bucket, and this is `unique_persons` with the first
    /// bucket read from its period's start. Otherwise windows overlap several buckets
    /// (WAU/MAU on days, DAU on hours or weeks) and each event joins the literal
    /// table of the windows that hold it.
    fn active_sql(
        &self,
        s: &Scoped<'_>,
        period: &PeriodPlan,
        days: u32,
        matcher: String,
        row: &str,
        row_count: usize,
    ) -> Result<String> {
        let d = self.dialect;
        let q = self.query;
        let ts = s.ts();
        let person = s.person_key();
        let double = d.double_type();
        let suffix = d.statement_suffix();
        let windows = period.active_windows(&self.calendar, q.interval, days);
        let lo = windows
            .iter()
            .map(|w| w.0)
            .min()
            .unwrap_or(period.range.start);
        let mut conds = s.time_bounds(Some(lo), Some(period.range.end));
        conds.push(matcher);
        let from = s.scoped_source(&conds);
        if period.windows_are_buckets(&windows) {
            // The inequality join costs events × buckets comparisons; the bucket
            // index is one expression per event.
            let bucket = period.bucket_expr(&ts);
            let inner = format!(
                "SELECT {bucket} AS bucket_index, {row} AS row_index, {person} AS person_id {from}"
            );
            return Ok(self.distinct_persons_sql(&inner, period.buckets.len(), row_count));
        }
        let rows: Vec<Vec<i64>> = windows
            .iter()
            .enumerate()
            .map(|(i, (lo, hi))| vec![i as i64, *lo, *hi])
            .collect();
        Ok(format!(
            "SELECT w.bucket_index, t.row_index, CAST(COUNT(DISTINCT t.person_id) AS {double}) AS metric \
                 FROM (SELECT {ts} AS ts, {row} AS row_index, {person} AS person_id {from}) t \
                 CROSS JOIN {values} WHERE t.ts >= w.lo AND t.ts < w.hi \
                 GROUP BY w.bucket_index, t.row_index{suffix}",
            values = d.values_table("w", &["bucket_index", "lo", "hi"], &rows),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataFusionDialect, PropertyCatalog};

    /// 2024-01-10T12:00:00Z.
    const NOW: i64 = 1_704_888_000_000_000;

    /// Every statement of `query` (JSON), series over the current period, in the
    /// DataFusion dialect with the tenant in `time_zone`.
    fn statements(query: &str, time_zone: &str) -> Vec<String> {
        let tally_query::Query::Trends(q) = serde_json::from_str(query).unwrap() else {
            panic!("not a trends query: {query}");
        };
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: Some(time_zone),
            catalog: &catalog,
        };
        let plan = compile_trends(&q, &DataFusionDialect, &ctx).unwrap();
        let top = q.breakdown.as_ref().map(|b| {
            vec![BreakdownKey(vec![
                crate::PropertyValue::Null;
                b.properties.len()
            ])]
        });
        let mut out: Vec<String> = plan.ranking_sql().unwrap().into_iter().collect();
        if let Some(top) = &top {
            out.extend(plan.other_count_sql(top).unwrap());
        }
        for i in 0..q.series.len() {
            out.push(plan.series_sql(i, &plan.current, top.as_deref()).unwrap());
        }
        out
    }

    fn query(math: &str, interval: &str, range: &str) -> String {
        format!(
            r#"{{"kind":"trends","scope":{{"tenant":3}},"date_range":{range},"interval":"{interval}",
               "series":[{{"event":"$pageview","math":{math}}}]}}"#
        )
    }

    const DST_WEEK: &str = r#"{"type":"absolute","from":"2023-10-23","to":"2023-10-31"}"#;
    /// Two whole weeks (Monday to Sunday), the first with the end of summer time.
    const TWO_WEEKS: &str = r#"{"type":"absolute","from":"2023-10-23","to":"2023-11-05"}"#;

    #[test]
    fn statements_join_the_identity_map_only_when_they_read_a_person() {
        let by_event_property = r#"{"kind":"trends","scope":{"tenant":3},
            "date_range":{"type":"last","count":7,"unit":"day"},
            "series":[{"event":"$pageview"},
                      {"event":"buy","math":{"type":"property","aggregation":"sum","property":{"source":"event","key":"amount"}}},
                      {"event":"buy","math":{"type":"property","aggregation":"p90","property":{"source":"event","key":"amount"}}}],
            "breakdown":{"properties":[{"source":"event","key":"$browser"}]}}"#;
        let stmts = statements(by_event_property, "UTC");
        assert_eq!(stmts.len(), 5);
        for stmt in &stmts {
            assert!(!stmt.contains("person_map"), "{stmt}");
            assert!(!stmt.contains("pm."), "{stmt}");
        }

        // Maths that group persons read the person key in the DataFusion dialect (no
        // join), and the person itself, through the map, in ClickHouse's.
        let reading_persons = [
            r#"{"type":"unique_persons"}"#,
            r#"{"type":"per_person","aggregation":"median"}"#,
            r#"{"type":"dau"}"#,
            r#"{"type":"mau"}"#,
        ];
        for math in reading_persons {
            let q = query(math, "day", DST_WEEK);
            for stmt in statements(&q, "UTC") {
                assert!(
                    stmt.contains(r#"tally_person_key(e."distinct_id_number")"#),
                    "{math}: {stmt}"
                );
                assert!(!stmt.contains("person_map"), "{math}: {stmt}");
            }
            let tally_query::Query::Trends(parsed) = serde_json::from_str(&q).unwrap() else {
                unreachable!()
            };
            let catalog = PropertyCatalog::new();
            let ctx = CompileContext {
                now: NOW,
                tenant_time_zone: Some("UTC"),
                catalog: &catalog,
            };
            let plan = compile_trends(&parsed, &crate::ClickHouseDialect, &ctx).unwrap();
            let stmt = plan.series_sql(0, &plan.current, None).unwrap();
            assert!(stmt.contains("LEFT JOIN"), "{math}: {stmt}");
            assert!(stmt.contains("person_map"), "{math}: {stmt}");
        }

        // A person property reaches the persons relation through the person.
        let person_filter = r#"{"kind":"trends","scope":{"tenant":3},
            "date_range":{"type":"last","count":7,"unit":"day"},
            "series":[{"event":"$pageview"}],
            "filters":[{"type":"property","property":{"source":"person","key":"plan"},"operator":"equals","value":"pro"}],
            "breakdown":{"properties":[{"source":"person","key":"plan"}]}}"#;
        for stmt in statements(person_filter, "UTC") {
            assert!(
                stmt.contains("LEFT JOIN tenant_3_person_map AS pm ON")
                    && stmt.contains("LEFT JOIN tenant_3_persons AS pp ON"),
                "{stmt}"
            );
        }
    }

    #[test]
    fn grouped_statements_exist_only_for_breakdowns_of_foldable_maths() {
        let catalog = PropertyCatalog::new();
        let ctx = CompileContext {
            now: NOW,
            tenant_time_zone: Some("UTC"),
            catalog: &catalog,
        };
        let of_amount = |aggregation: &str| {
            format!(
                r#"{{"type":"property","aggregation":"{aggregation}","property":{{"source":"event","key":"amount"}}}}"#
            )
        };
        let cases = [
            (r#"{"type":"total"}"#.to_string(), true),
            (of_amount("sum"), true),
            (of_amount("avg"), true),
            (of_amount("min"), true),
            (of_amount("max"), true),
            (of_amount("median"), false),
            (of_amount("p99"), false),
            (r#"{"type":"unique_persons"}"#.to_string(), false),
            (r#"{"type":"dau"}"#.to_string(), false),
            (
                r#"{"type":"per_person","aggregation":"avg"}"#.to_string(),
                false,
            ),
        ];
        for (math, foldable) in cases {
            let without = query(&math, "day", DST_WEEK);
            let with = without.replacen(
                r#""series""#,
                r#""breakdown":{"properties":[{"source":"event","key":"$browser"}]},"series""#,
                1,
            );
            for (text, breakdown) in [(without, false), (with, true)] {
                let tally_query::Query::Trends(q) = serde_json::from_str(&text).unwrap() else {
                    panic!("not a trends query: {text}");
                };
                let plan = compile_trends(&q, &DataFusionDialect, &ctx).unwrap();
                let sql = plan.series_grouped_sql(0, &plan.current).unwrap();
                assert_eq!(sql.is_some(), foldable && breakdown, "{math}: {sql:?}");
                if let Some(sql) = sql {
                    // Nothing reads the person: no identity map, no row CASE.
                    assert!(!sql.contains("person_map"), "{sql}");
                    assert!(!sql.contains("CASE"), "{sql}");
                    assert!(sql.contains("GROUP BY bucket_index, b0_s, b0_n, b0_b, b0_o"));
                    assert_eq!(sql.contains("COUNT(x)"), math.contains("property"), "{sql}");
                }
                assert!(plan.series_grouped_sql(1, &plan.current).is_err());
            }
        }
    }

    #[test]
    fn active_persons_join_the_windows_only_where_they_are_not_the_buckets() {
        let mid_day = r#"{"type":"absolute","from":"2024-01-03T12:30","to":"2024-01-06T08:00"}"#;
        let cases = [
            // (math, interval, range, time zone, windows are the buckets)
            (r#"{"type":"dau"}"#, "day", DST_WEEK, "Europe/Berlin", true),
            (r#"{"type":"dau"}"#, "day", DST_WEEK, "UTC", true),
            // The first window starts at midnight, before the range: so does the bucket.
            (r#"{"type":"dau"}"#, "day", mid_day, "UTC", true),
            (r#"{"type":"dau"}"#, "hour", DST_WEEK, "UTC", false),
            (r#"{"type":"dau"}"#, "week", DST_WEEK, "UTC", false),
            (r#"{"type":"wau"}"#, "day", DST_WEEK, "Europe/Berlin", false),
            (
                r#"{"type":"wau"}"#,
                "week",
                TWO_WEEKS,
                "Europe/Berlin",
                true,
            ),
            // The last week ends with the range, mid-week: its window starts before it.
            (
                r#"{"type":"wau"}"#,
                "week",
                DST_WEEK,
                "Europe/Berlin",
                false,
            ),
            (r#"{"type":"mau"}"#, "day", DST_WEEK, "UTC", false),
            (r#"{"type":"mau"}"#, "month", DST_WEEK, "UTC", false),
        ];
        for (math, interval, range, tz, tiled) in cases {
            let q = query(math, interval, range);
            let stmts = statements(&q, tz);
            let [stmt] = stmts.as_slice() else {
                panic!("{stmts:?}")
            };
            assert_eq!(
                !stmt.contains("CROSS JOIN"),
                tiled,
                "{math} by {interval} in {tz}: {stmt}"
            );
            // Tiled windows count packed (person, row, bucket) keys; windows
            // spanning buckets count distinct persons per window.
            let distinct = if tiled {
                "SELECT DISTINCT (person_id * 2 + row_index + 1)"
            } else {
                "COUNT(DISTINCT t.person_id)"
            };
            assert!(stmt.contains(distinct), "{stmt}");
        }
    }

    #[test]
    fn windows_are_buckets_compares_every_bucket() {
        let calendar = Calendar::from_settings(
            "time_zone",
            Some("Europe/Berlin"),
            chrono_tz::Tz::UTC,
            tally_query::WeekStart::Monday,
        )
        .unwrap();
        // 2023-10-28 ..= 2023-10-30 local: the middle day has 25 hours.
        let range = TimeRange {
            start: 1_698_444_000_000_000,
            end: 1_698_706_800_000_000,
        };
        let plan = PeriodPlan::new(&calendar, range, Interval::Day).unwrap();
        assert_eq!(plan.buckets.len(), 3);
        let windows = plan.active_windows(&calendar, Interval::Day, 1);
        assert!(plan.windows_are_buckets(&windows));
        // The arithmetic index would be wrong across the 25-hour day: a CASE it is.
        assert!(plan.bucket_expr("ts").starts_with("CAST(CASE"));

        let mut shifted = windows.clone();
        shifted[1].0 -= 1;
        assert!(!plan.windows_are_buckets(&shifted));
        assert!(!plan.windows_are_buckets(&windows[..2]));
        let wau = plan.active_windows(&calendar, Interval::Day, 7);
        assert!(!plan.windows_are_buckets(&wau));
    }
}
