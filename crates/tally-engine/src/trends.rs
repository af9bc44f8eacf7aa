//! Trends execution: compiles a [`TrendsQuery`] with `tally-sql`, runs its statements
//! on a prepared session, ranks breakdown keys, zero-fills buckets and rows, and
//! evaluates formulas.
//!
//! A breakdown is answered one of two ways:
//!
//! - **Grouped**, when every series' maths folds (total, sum, avg, min, max; see
//!   [`TrendsPlan::is_foldable`]): one statement per (series, period) grouped by bucket
//!   and the raw breakdown columns ([`TrendsPlan::series_grouped_sql`]). Ranking, the
//!   top-N cut, the "other" row and folding raw keys into rows happen here, on the
//!   grouped rows, which are far fewer than the events.
//! - **Three statements** otherwise: a ranking statement, an "other" count, and per
//!   (series, period) a statement whose row index compares each event with the top
//!   keys. Also the fallback when the grouped rows (keys × buckets) exceed the
//!   engine's budget ([`Engine::with_trends_grouped_row_limit`]).
//!
//! Both give the same result (the tests prove it against `tally_query::reference`).
//!
//! Does not own: SQL text (tally-sql), the semantics (tally-query), sessions and
//! statement execution (the crate root).

use std::collections::HashMap;

use datafusion::arrow::array::Array;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::Value;
use tally_query::trends::{TrendsPeriod, TrendsRow};
use tally_query::{
    BreakdownValue, Math, PropertyAggregation, Scope, TrendsQuery, TrendsResult, TrendsSeries,
};
use tally_sql::{
    BreakdownKey, CompileContext, DataFusionDialect, PeriodPlan, PropertyCatalog, TrendsPlan,
    compile_trends,
};

use crate::{
    BreakdownColumns, Engine, Error, Result, compare_keys, float_column, int_column, to_sql_keys,
};

/// The default budget of grouped rows (summed over a query's grouped statements)
/// before a trends query falls back to the three-statement path.
pub const DEFAULT_TRENDS_GROUPED_ROW_LIMIT: usize = 1_000_000;

impl Engine {
    /// Answers a trends query at instant `now` (UTC microseconds) for a tenant whose
    /// time-zone setting is `tenant_time_zone`.
    pub async fn trends(
        &self,
        query: &TrendsQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<TrendsResult> {
        self.measured("trends", self.trends_inner(query, now, tenant_time_zone))
            .await
    }

    /// The most grouped rows a breakdown trends query reads on the grouped path
    /// before it falls back to the three-statement path (default
    /// [`DEFAULT_TRENDS_GROUPED_ROW_LIMIT`]).
    ///
    /// The grouped rows are keys × buckets: with a high-cardinality breakdown (user
    /// ids, URLs) they approach the events, and holding them all in memory to rank
    /// a top 25 costs more than ranking in SQL. Both paths give the same result.
    pub fn with_trends_grouped_row_limit(mut self, limit: usize) -> Self {
        self.trends_grouped_row_limit = limit;
        self
    }

    async fn trends_inner(
        &self,
        query: &TrendsQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<TrendsResult> {
        let Scope::Tenant(tenant) = query.scope else {
            // The compiler refuses operator scopes with a clear error.
            let catalog = PropertyCatalog::new();
            let ctx = CompileContext {
                now,
                tenant_time_zone,
                catalog: &catalog,
            };
            compile_trends(query, &DataFusionDialect, &ctx)?;
            return Err(Error::Execution("operator scope".to_string()));
        };
        let session = self.session(tenant).await?;
        let catalog = self.catalog(tenant)?;
        self.trends_on(&session, &catalog, query, now, tenant_time_zone)
            .await
    }

    /// Trends on a prepared session (a tenant's, or an operator query's views).
    pub(crate) async fn trends_on(
        &self,
        session: &SessionContext,
        catalog: &PropertyCatalog,
        query: &TrendsQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<TrendsResult> {
        let ctx = CompileContext {
            now,
            tenant_time_zone,
            catalog,
        };
        let plan = compile_trends(query, &DataFusionDialect, &ctx)?;
        let path = match grouped_statements(&plan)? {
            Some(statements) => match self.trends_grouped(session, &plan, &statements).await? {
                Some(result) => {
                    record_path("grouped");
                    return Ok(result);
                }
                None => {
                    tracing::info!(
                        limit = self.trends_grouped_row_limit,
                        "breakdown has more grouped rows than the limit; ranking in SQL instead"
                    );
                    "grouped_fallback"
                }
            },
            None => "statements",
        };
        record_path(path);
        self.trends_statements(session, &plan).await
    }

    /// The grouped path: `statements[period][series]` from [`grouped_statements`].
    /// `None` when the grouped rows exceed the budget.
    async fn trends_grouped(
        &self,
        session: &SessionContext,
        plan: &TrendsPlan<'_>,
        statements: &[Vec<String>],
    ) -> Result<Option<TrendsResult>> {
        let q = plan.query;
        let Some(breakdown) = &q.breakdown else {
            return Err(Error::Execution(
                "grouped trends statements without a breakdown".to_string(),
            ));
        };
        let periods: Vec<&PeriodPlan> = std::iter::once(&plan.current)
            .chain(plan.previous.as_ref())
            .collect();
        let mut keys = KeyTable::default();
        let mut budget = self.trends_grouped_row_limit;
        // groups[period][series]
        let mut groups: Vec<Vec<Vec<Group>>> = Vec::with_capacity(periods.len());
        for period_statements in statements {
            let mut per_series = Vec::with_capacity(period_statements.len());
            for sql in period_statements {
                let read = self
                    .read_groups(
                        session,
                        sql,
                        breakdown.properties.len(),
                        &mut keys,
                        &mut budget,
                    )
                    .await?;
                let Some(read) = read else {
                    return Ok(None);
                };
                per_series.push(read);
            }
            groups.push(per_series);
        }

        // Weight: matching events of all series in the current period, an event
        // counted once per series it matches (as `ranking_sql` does).
        let mut weight = vec![0i64; keys.len()];
        for group in groups.first().into_iter().flatten().flatten() {
            weight[group.key] += group.n;
        }
        let ranked = rank(&keys, &weight, breakdown.limit);
        let mut row_of: Vec<Option<usize>> = vec![None; keys.len()];
        for (row, &key) in ranked.iter().enumerate() {
            row_of[key] = Some(row);
        }
        // "Other" exists when an event outside the top matched in either period (as
        // `other_count_sql` counts).
        let with_other = groups
            .iter()
            .flatten()
            .flatten()
            .any(|g| g.n > 0 && row_of[g.key].is_none());
        let top: Vec<Vec<Value>> = ranked.iter().map(|&k| keys.values[k].clone()).collect();
        let labels = row_labels(Some(&top), with_other);
        let other_row = with_other.then_some(top.len());

        let mut out = Vec::with_capacity(periods.len());
        for (period, period_groups) in periods.iter().zip(&groups) {
            let buckets = period.buckets.len();
            let mut values = Vec::with_capacity(q.series.len());
            for (series, series_groups) in q.series.iter().zip(period_groups) {
                let mut folded = vec![vec![Folded::default(); buckets]; labels.len()];
                for g in series_groups {
                    let Some(row) = row_of[g.key].or(other_row) else {
                        continue;
                    };
                    let Some(slot) = usize::try_from(g.bucket)
                        .ok()
                        .and_then(|b| folded[row].get_mut(b))
                    else {
                        continue;
                    };
                    slot.add(g);
                }
                let empty = TrendsPlan::empty_metric(&series.math);
                let series_values = folded
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|f| f.metric(&series.math).map(|m| m.or(empty)))
                            .collect::<Result<Vec<_>>>()
                    })
                    .collect::<Result<Vec<_>>>()?;
                values.push(series_values);
            }
            out.push(assemble_period(plan, period, &labels, values)?);
        }
        let mut out = out.into_iter();
        let Some(current) = out.next() else {
            return Err(Error::Execution("no current trends period".to_string()));
        };
        Ok(Some(TrendsResult {
            current,
            previous: out.next(),
        }))
    }

    /// Streams one grouped statement into [`Group`]s, interning keys in `keys`.
    /// `None` (and the statement cancelled) once more rows arrive than `budget` has
    /// left.
    async fn read_groups(
        &self,
        session: &SessionContext,
        sql: &str,
        properties: usize,
        keys: &mut KeyTable,
        budget: &mut usize,
    ) -> Result<Option<Vec<Group>>> {
        tracing::debug!(sql, "running grouped statement");
        let df = session.sql(sql).await.map_err(|e| self.df_error(e))?;
        let mut stream = df.execute_stream().await.map_err(|e| self.df_error(e))?;
        let mut out = Vec::new();
        // Columns: bucket_index, four per property, n, c, s, lo, hi.
        let first = 1 + 4 * properties;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.df_error(e))?;
            let rows = batch.num_rows();
            let Some(left) = budget.checked_sub(rows) else {
                return Ok(None);
            };
            *budget = left;
            if rows == 0 {
                continue;
            }
            let key_columns = BreakdownColumns::new(&batch, 1, properties)?;
            let bucket = int_column(&batch, 0)?;
            let n = int_column(&batch, first)?;
            let c = int_column(&batch, first + 1)?;
            let s = float_column(&batch, first + 2)?;
            let lo = float_column(&batch, first + 3)?;
            let hi = float_column(&batch, first + 4)?;
            let value = |a: &datafusion::arrow::array::Float64Array, r: usize| {
                a.is_valid(r).then(|| a.value(r))
            };
            out.reserve(rows);
            for r in 0..rows {
                let key: Vec<Value> = (0..properties).map(|p| key_columns.value(p, r)).collect();
                out.push(Group {
                    key: keys.intern(key),
                    bucket: bucket.value(r),
                    n: n.value(r),
                    c: c.value(r),
                    sum: value(&s, r),
                    lo: value(&lo, r),
                    hi: value(&hi, r),
                });
            }
        }
        Ok(Some(out))
    }

    /// The three-statement path: rank in SQL, count "other" in SQL, then one
    /// statement per (series, period) with the top keys as a row CASE.
    async fn trends_statements(
        &self,
        session: &SessionContext,
        plan: &TrendsPlan<'_>,
    ) -> Result<TrendsResult> {
        let query = plan.query;
        // Breakdown: rank keys on the current period, merged by canonical value.
        let mut top: Option<Vec<Vec<Value>>> = None;
        let mut with_other = false;
        if let (Some(b), Some(sql)) = (&query.breakdown, plan.ranking_sql()?) {
            let batches = self.run(session, &sql).await?;
            // Hashing and casting each batch once: this path is also the fallback for
            // breakdowns with too many keys for the grouped one.
            let mut table = KeyTable::default();
            let mut weights: Vec<i64> = Vec::new();
            for batch in &batches {
                let key_columns = BreakdownColumns::new(batch, 0, b.properties.len())?;
                let weight = int_column(batch, batch.num_columns() - 1)?;
                for r in 0..batch.num_rows() {
                    let key = (0..b.properties.len())
                        .map(|p| key_columns.value(p, r))
                        .collect();
                    let k = table.intern(key);
                    if k == weights.len() {
                        weights.push(0);
                    }
                    weights[k] += weight.value(r);
                }
            }
            let keys: Vec<Vec<Value>> = rank(&table, &weights, b.limit)
                .into_iter()
                .map(|k| table.values[k].clone())
                .collect();
            let sql_keys = to_sql_keys(&keys);
            if let Some(sql) = plan.other_count_sql(&sql_keys)? {
                let batches = self.run(session, &sql).await?;
                with_other = batches
                    .iter()
                    .any(|b| b.num_rows() > 0 && int_column(b, 0).is_ok_and(|c| c.value(0) > 0));
            }
            top = Some(keys);
        }
        let sql_top = top.as_ref().map(|k| to_sql_keys(k));
        let labels = row_labels(top.as_deref(), with_other);

        let current = self
            .period(session, plan, &plan.current, sql_top.as_deref(), &labels)
            .await?;
        let previous = match &plan.previous {
            Some(p) => Some(
                self.period(session, plan, p, sql_top.as_deref(), &labels)
                    .await?,
            ),
            None => None,
        };
        Ok(TrendsResult { current, previous })
    }

    /// One period of the three-statement path. `labels` are the rows: all (no
    /// breakdown), or the top keys then "other"; the statements number them 0.. for
    /// the top keys and -1 for "other".
    async fn period(
        &self,
        session: &SessionContext,
        plan: &TrendsPlan<'_>,
        period: &PeriodPlan,
        sql_top: Option<&[BreakdownKey]>,
        labels: &[Option<BreakdownValue>],
    ) -> Result<TrendsPeriod> {
        let q = plan.query;
        let row_index = |id: i64| -> Option<usize> {
            if id == -1 {
                return labels
                    .iter()
                    .position(|l| matches!(l, Some(BreakdownValue::Other)));
            }
            let i = usize::try_from(id).ok()?;
            labels
                .get(i)
                .is_some_and(|l| !matches!(l, Some(BreakdownValue::Other)))
                .then_some(i)
        };
        let buckets = period.buckets.len();
        let mut values = Vec::with_capacity(q.series.len());
        for (si, s) in q.series.iter().enumerate() {
            let sql = plan.series_sql(si, period, sql_top)?;
            let batches = self.run(session, &sql).await?;
            let empty = TrendsPlan::empty_metric(&s.math);
            let mut series_values = vec![vec![empty; buckets]; labels.len()];
            for batch in &batches {
                let bucket = int_column(batch, 0)?;
                let row = int_column(batch, 1)?;
                let metric = float_column(batch, 2)?;
                for r in 0..batch.num_rows() {
                    let Some(ri) = row_index(row.value(r)) else {
                        continue;
                    };
                    let Ok(b) = usize::try_from(bucket.value(r)) else {
                        continue;
                    };
                    if b < buckets {
                        series_values[ri][b] = if metric.is_null(r) {
                            empty
                        } else {
                            Some(metric.value(r))
                        };
                    }
                }
            }
            values.push(series_values);
        }
        assemble_period(plan, period, labels, values)
    }
}

/// The top `limit` keys of `keys` (indices) by weight descending, then canonical
/// value ascending (the semantics' ranking). Keys without weight (seen only in the
/// previous period) are not ranked.
fn rank(keys: &KeyTable, weights: &[i64], limit: u32) -> Vec<usize> {
    let weight = |k: usize| weights.get(k).copied().unwrap_or(0);
    let mut ranked: Vec<usize> = (0..keys.len()).filter(|&k| weight(k) > 0).collect();
    ranked.sort_by(|&a, &b| {
        weight(b)
            .cmp(&weight(a))
            .then_with(|| compare_keys(&keys.values[a], &keys.values[b]))
    });
    ranked.truncate(limit as usize);
    ranked
}

fn record_path(path: &'static str) {
    metrics::counter!("tally_engine_trends_path_total", "path" => path).increment(1);
}

/// The grouped statements, `[period][series]` (current first, then previous), when
/// the query has a breakdown and every series folds; `None` otherwise.
fn grouped_statements(plan: &TrendsPlan<'_>) -> Result<Option<Vec<Vec<String>>>> {
    let periods = std::iter::once(&plan.current).chain(plan.previous.as_ref());
    let mut out = Vec::new();
    for period in periods {
        let mut per_series = Vec::with_capacity(plan.query.series.len());
        for series in 0..plan.query.series.len() {
            match plan.series_grouped_sql(series, period)? {
                Some(sql) => per_series.push(sql),
                None => return Ok(None),
            }
        }
        out.push(per_series);
    }
    Ok(Some(out))
}

/// The rows of a period: one unlabelled row without a breakdown; with one, the top
/// keys, then "other" if it exists.
fn row_labels(top: Option<&[Vec<Value>]>, with_other: bool) -> Vec<Option<BreakdownValue>> {
    let Some(keys) = top else {
        return vec![None];
    };
    let mut rows: Vec<Option<BreakdownValue>> = keys
        .iter()
        .map(|k| Some(BreakdownValue::Values { values: k.clone() }))
        .collect();
    if with_other {
        rows.push(Some(BreakdownValue::Other));
    }
    rows
}

fn series_label(s: &TrendsSeries) -> String {
    s.label
        .clone()
        .or_else(|| s.event.clone())
        .unwrap_or_else(|| "All events".to_string())
}

/// A period's result from `values[series][row][bucket]`: the series rows (series
/// major, rows in `labels` order) and the formula, evaluated per row and bucket.
fn assemble_period(
    plan: &TrendsPlan<'_>,
    period: &PeriodPlan,
    labels: &[Option<BreakdownValue>],
    values: Vec<Vec<Vec<Option<f64>>>>,
) -> Result<TrendsPeriod> {
    let q = plan.query;
    let buckets = period.buckets.len();
    let mut series_rows = Vec::with_capacity(values.len() * labels.len());
    for (si, (s, rows)) in q.series.iter().zip(&values).enumerate() {
        for (label, row) in labels.iter().zip(rows) {
            series_rows.push(TrendsRow {
                series: Some(si as u32),
                label: series_label(s),
                breakdown: label.clone(),
                values: row.clone(),
            });
        }
    }
    let formula = q
        .parsed_formula()
        .map_err(tally_sql::Error::from)?
        .map(|f| {
            labels
                .iter()
                .enumerate()
                .map(|(ri, label)| TrendsRow {
                    series: None,
                    label: q.formula.clone().unwrap_or_default(),
                    breakdown: label.clone(),
                    values: (0..buckets)
                        .map(|b| {
                            let at: Vec<Option<f64>> = values
                                .iter()
                                .map(|rows| rows.get(ri).and_then(|r| r.get(b)).copied().flatten())
                                .collect();
                            f.eval(&at)
                        })
                        .collect(),
                })
                .collect()
        });
    Ok(TrendsPeriod {
        buckets: period.buckets.clone(),
        series: series_rows,
        formula,
    })
}

/// One grouped row: a (bucket, raw breakdown value) of one series in one period.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// Index in the [`KeyTable`].
    key: usize,
    bucket: i64,
    /// Matching events.
    n: i64,
    /// Of those, events whose property reads as a number.
    c: i64,
    sum: Option<f64>,
    lo: Option<f64>,
    hi: Option<f64>,
}

/// The groups of one (row, bucket) folded together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Folded {
    n: i64,
    c: i64,
    sum: f64,
    lo: Option<f64>,
    hi: Option<f64>,
}

impl Folded {
    fn add(&mut self, g: &Group) {
        self.n += g.n;
        // A group without numbers contributes its events to `n` only: the
        // statements of the three-statement path drop NULL values before
        // aggregating.
        if g.c <= 0 {
            return;
        }
        self.c += g.c;
        self.sum += g.sum.unwrap_or(0.0);
        if let Some(v) = g.lo {
            self.lo = Some(self.lo.map_or(v, |lo| lo.min(v)));
        }
        if let Some(v) = g.hi {
            self.hi = Some(self.hi.map_or(v, |hi| hi.max(v)));
        }
    }

    /// The metric of `math`; `Ok(None)` where the three-statement path has no row
    /// (the caller substitutes [`TrendsPlan::empty_metric`]).
    fn metric(&self, math: &Math) -> Result<Option<f64>> {
        let numbers = self.c > 0;
        Ok(match math {
            Math::Total => (self.n > 0).then_some(self.n as f64),
            Math::Property { aggregation, .. } => match aggregation {
                PropertyAggregation::Sum => numbers.then_some(self.sum),
                PropertyAggregation::Avg => numbers.then(|| self.sum / self.c as f64),
                PropertyAggregation::Min => self.lo.filter(|_| numbers),
                PropertyAggregation::Max => self.hi.filter(|_| numbers),
                other => {
                    return Err(Error::Execution(format!(
                        "aggregation {other:?} does not fold from grouped rows"
                    )));
                }
            },
            other => {
                return Err(Error::Execution(format!(
                    "maths {other:?} does not fold from grouped rows"
                )));
            }
        })
    }
}

/// Canonical breakdown keys, each stored once, found by hash.
#[derive(Default)]
struct KeyTable {
    values: Vec<Vec<Value>>,
    index: HashMap<CanonicalKey, usize>,
}

impl KeyTable {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn intern(&mut self, key: Vec<Value>) -> usize {
        let key = CanonicalKey(key);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.values.len();
        self.values.push(key.0.clone());
        self.index.insert(key, i);
        i
    }
}

/// A canonical breakdown key that is equal to another exactly when `keys_equal`
/// says so, with a hash that agrees: the kind of each value, a number's `f64` bits
/// (`compare_breakdown_values` compares numbers with `total_cmp`, equal only for
/// the same bits), a string's bytes; arrays and objects (which canonical values
/// never are) compare equal by kind.
struct CanonicalKey(Vec<Value>);

impl PartialEq for CanonicalKey {
    fn eq(&self, other: &Self) -> bool {
        compare_keys(&self.0, &other.0) == std::cmp::Ordering::Equal
    }
}

impl Eq for CanonicalKey {}

impl std::hash::Hash for CanonicalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
        for v in &self.0 {
            match v {
                Value::Null => 0u8.hash(state),
                Value::Bool(b) => (1u8, b).hash(state),
                Value::Number(n) => (2u8, n.as_f64().unwrap_or(0.0).to_bits()).hash(state),
                Value::String(s) => (3u8, s).hash(state),
                Value::Array(_) => 4u8.hash(state),
                Value::Object(_) => 5u8.hash(state),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tally_query::PropertyRef;

    use super::*;
    use crate::keys_equal;

    #[test]
    fn canonical_keys_are_equal_exactly_when_keys_are_and_hash_alike() {
        let values = [
            json!(null),
            json!(false),
            json!(true),
            json!(0),
            json!(1),
            json!(1.5),
            json!(-2),
            json!(u64::MAX),
            json!("1"),
            json!(""),
            json!("a"),
            json!([1]),
            json!({"a": 1}),
        ];
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        for a in &values {
            for b in &values {
                let (ka, kb) = (vec![a.clone()], vec![b.clone()]);
                let (ca, cb) = (CanonicalKey(ka.clone()), CanonicalKey(kb.clone()));
                assert_eq!(ca == cb, keys_equal(&ka, &kb), "{a} vs {b}");
                if ca == cb {
                    assert_eq!(state.hash_one(&ca), state.hash_one(&cb), "{a} vs {b}");
                }
            }
        }
        let mut table = KeyTable::default();
        let one = table.intern(vec![json!(1), json!("x")]);
        assert_eq!(table.intern(vec![json!(1.0), json!("x")]), one);
        assert_ne!(table.intern(vec![json!("1"), json!("x")]), one);
        assert_ne!(table.intern(vec![json!(1)]), one);
        assert_eq!(table.len(), 3);
    }

    fn group(n: i64, c: i64, sum: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> Group {
        Group {
            key: 0,
            bucket: 0,
            n,
            c,
            sum,
            lo,
            hi,
        }
    }

    fn property(aggregation: PropertyAggregation) -> Math {
        Math::Property {
            aggregation,
            property: PropertyRef::event("amount"),
        }
    }

    #[test]
    fn folding_matches_aggregating_the_events() {
        // Events with values [3, 1] in one raw key, [None, None] in another, [10] in
        // a third: the row's count is 5, its numbers 3, 1 and 10.
        let mut f = Folded::default();
        f.add(&group(2, 2, Some(4.0), Some(1.0), Some(3.0)));
        f.add(&group(2, 0, None, None, None));
        f.add(&group(1, 1, Some(10.0), Some(10.0), Some(10.0)));
        assert_eq!(f.metric(&Math::Total).unwrap(), Some(5.0));
        assert_eq!(
            f.metric(&property(PropertyAggregation::Sum)).unwrap(),
            Some(14.0)
        );
        let avg = f.metric(&property(PropertyAggregation::Avg)).unwrap();
        assert_eq!(avg, Some(14.0 / 3.0));
        assert_eq!(
            f.metric(&property(PropertyAggregation::Min)).unwrap(),
            Some(1.0)
        );
        assert_eq!(
            f.metric(&property(PropertyAggregation::Max)).unwrap(),
            Some(10.0)
        );

        // Only events without numbers: no value, as where the statements' `x IS
        // NOT NULL` leaves no row.
        let mut none = Folded::default();
        none.add(&group(3, 0, None, None, None));
        assert_eq!(none.metric(&Math::Total).unwrap(), Some(3.0));
        for agg in [
            PropertyAggregation::Sum,
            PropertyAggregation::Avg,
            PropertyAggregation::Min,
            PropertyAggregation::Max,
        ] {
            assert_eq!(none.metric(&property(agg)).unwrap(), None, "{agg:?}");
        }
        assert!(none.metric(&property(PropertyAggregation::P90)).is_err());
        assert!(none.metric(&Math::UniquePersons).is_err());
    }
}
