//! Executes Tally queries on the embedded store: compiles them with `tally-sql`'s
//! [`DataFusionDialect`], registers exactly the relations the SQL names (the query
//! tenant's events table, its identity map and its persons), runs the statements under
//! a memory limit and a timeout, and assembles `tally_query` results.
//!
//! Owns: per-query DataFusion sessions, the person-map and persons tables (built from
//! an [`IdentitySource`] and cached per tenant by version; [`persons`]), the `tally_*`
//! scalar functions ([`udf`], [`events::tally_uuid_text`]), the `tally_funnel`
//! aggregate ([`funnel`]), breakdown ranking and zero-filling, formulas, and the
//! events, persons and schema listings ([`events`], [`persons`], [`schema`]).
//!
//! Does not own: SQL text (tally-sql), query semantics (tally-query), storage
//! (tally-store). Trends ([`trends`], with a grouped path for breakdowns), funnels
//! (every view) and retention ([`retention`], the `tally_retention` aggregate) are
//! executed for one tenant, and for several at once through [`operator`]
//! (`Engine::*_operator`, views under a reserved tenant; see `docs/QUERY-ENGINE.md`).

pub mod events;
pub mod funnel;
pub mod operator;
pub mod person_key;
pub mod persons;
pub mod retention;
pub mod schema;
pub mod trends;
pub mod udf;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::runtime::SpawnedTask;
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tally_core::{Classify, ErrorClass, TenantId};
use tally_query::filter::semantics::compare_breakdown_values;
use tally_query::funnel::{
    ConversionBreakdownRow, ConversionOverTimeResult, ConversionPoint, FunnelBreakdownRow,
    FunnelPersonsResult, FunnelStepResult, FunnelStepsResult, FunnelView, HistogramBin,
    PersonCursor, PersonKey, StepStatus, TimeToConvertResult,
};
use tally_query::{
    BreakdownValue, FunnelOrder, FunnelQuery, FunnelResult, RetentionQuery, RetentionResult, Scope,
};
use tally_sql::{
    BreakdownKey, CompileContext, DataFusionDialect, FunnelPlan, KeyColumns, PropertyCatalog,
    PropertyValue, compile_funnel,
};
use tally_store::{EmbeddedStore, parse_property_column};

/// Result of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query cannot be compiled (invalid or unsupported).
    #[error(transparent)]
    Compile(#[from] tally_sql::Error),
    /// The store failed to provide the tenant's table.
    #[error("store: {0}")]
    Store(#[from] tally_store::Error),
    /// The identity map could not be read.
    #[error("identity map: {0}")]
    Identities(String),
    /// The query ran out of its memory budget.
    #[error(
        "the query needs more than its memory limit of {limit_bytes} bytes; narrow the date range or filters"
    )]
    MemoryLimit {
        /// The limit.
        limit_bytes: usize,
    },
    /// The query ran longer than its time limit.
    #[error("the query ran longer than its time limit of {0:?}")]
    Timeout(Duration),
    /// A funnel's per-person search exceeded its work budget.
    #[error("{0}")]
    TooComplex(String),
    /// DataFusion failed for another reason.
    #[error("query execution: {0}")]
    Execution(String),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Compile(e) => e.class(),
            Error::MemoryLimit { .. } | Error::TooComplex(_) => ErrorClass::BadRequest,
            Error::Timeout(_) => ErrorClass::BadRequest,
            Error::Store(_) | Error::Identities(_) | Error::Execution(_) => ErrorClass::Internal,
        }
    }
}

/// Where the engine reads identity merges and persons from (defined in tally-core so
/// that the metadata store implements it without depending on DataFusion).
pub use operator::TenantInfo;
use person_key::{NumberedPersonKeys, PersonKeyMap, PersonKeyUdf};
pub use tally_core::{IdentitySource, PersonRecord};

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// DataFusion memory pool size per query.
    pub memory_limit_bytes: usize,
    /// Wall-clock limit per query.
    pub query_timeout: Duration,
    /// DataFusion target partitions (parallelism).
    pub target_partitions: usize,
    /// Parquet footers and page indexes kept across queries (bytes, least recently
    /// used evicted). Files are immutable, so an entry never goes stale.
    pub metadata_cache_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_limit_bytes: 2 << 30,
            query_timeout: Duration::from_secs(30),
            target_partitions: 2,
            metadata_cache_bytes: 128 << 20,
        }
    }
}

/// The identity-map relation statements join (`distinct_id`, `person_id`, both
/// non-null UTF-8) from an [`IdentitySource`]'s pairs.
pub fn person_map_table(pairs: &[(String, String)]) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("distinct_id", DataType::Utf8, false),
        Field::new("person_id", DataType::Utf8, false),
    ]));
    let mut ids = StringBuilder::new();
    let mut persons = StringBuilder::new();
    for (d, p) in pairs {
        ids.append_value(d);
        persons.append_value(p);
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids.finish()), Arc::new(persons.finish())],
    )
    .map_err(|e| Error::Execution(e.to_string()))?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| Error::Execution(e.to_string()))
}

/// A tenant's identity map in the two forms statements use: the table the
/// identity-map join reads, and the person keys `tally_person_key` reads.
#[derive(Clone)]
pub(crate) struct IdentityMap {
    pub table: Arc<MemTable>,
    pub keys: Arc<PersonKeyMap>,
}

/// A tenant's [`NumberedPersonKeys`] and the identity map they were built from (the
/// `Arc` the person-map cache hands out for one version).
struct KeysOfNumbers {
    map: Arc<PersonKeyMap>,
    keys: Arc<NumberedPersonKeys>,
}

/// The query engine over one embedded store.
pub struct Engine {
    store: Arc<EmbeddedStore>,
    identities: Arc<dyn IdentitySource>,
    config: EngineConfig,
    person_maps: Mutex<HashMap<TenantId, (u64, IdentityMap)>>,
    /// Per tenant, the person key of each distinct-id number.
    numbered_keys: Mutex<HashMap<TenantId, KeysOfNumbers>>,
    /// Per tenant, the persons relation and records of the latest persons version.
    persons: Arc<persons::PersonsCache>,
    /// See [`Engine::with_trends_grouped_row_limit`].
    trends_grouped_row_limit: usize,
    /// Parquet footers and page indexes, shared by every query's runtime.
    file_metadata_cache: Arc<FileMetadataCache>,
}

impl Engine {
    /// An engine reading `store` with identities from `identities`.
    pub fn new(
        store: Arc<EmbeddedStore>,
        identities: Arc<dyn IdentitySource>,
        config: EngineConfig,
    ) -> Self {
        let file_metadata_cache: Arc<FileMetadataCache> = Arc::new(
            DefaultCache::new(config.metadata_cache_bytes).with_name("TallyParquetMetadataCache"),
        );
        Engine {
            store,
            persons: Arc::new(persons::PersonsCache::new(identities.clone())),
            identities,
            config,
            person_maps: Mutex::new(HashMap::new()),
            numbered_keys: Mutex::new(HashMap::new()),
            trends_grouped_row_limit: trends::DEFAULT_TRENDS_GROUPED_ROW_LIMIT,
            file_metadata_cache,
        }
    }

    /// Runs one query under the engine's time limit and records
    /// `tally_engine_queries_total{kind,outcome}` and `tally_engine_query_seconds{kind}`.
    /// Every public query method goes through it.
    pub(crate) async fn measured<T>(
        &self,
        kind: &'static str,
        query: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.query_timeout, query)
            .await
            .unwrap_or(Err(Error::Timeout(self.config.query_timeout)));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("tally_engine_queries_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("tally_engine_query_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Answers a retention query at instant `now` (UTC microseconds) for a tenant
    /// whose time-zone setting is `tenant_time_zone` (see [`retention`]).
    pub async fn retention(
        &self,
        query: &RetentionQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<RetentionResult> {
        self.measured(
            "retention",
            retention::run(self, query, now, tenant_time_zone),
        )
        .await
    }

    /// Answers a funnel query, every view, with or without breakdown.
    pub async fn funnel(
        &self,
        query: &FunnelQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<FunnelResult> {
        self.measured("funnel", self.funnel_inner(query, now, tenant_time_zone))
            .await
    }

    async fn funnel_inner(
        &self,
        query: &FunnelQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<FunnelResult> {
        let Scope::Tenant(tenant) = query.scope else {
            // The compiler refuses operator scopes with a clear error.
            let catalog = PropertyCatalog::new();
            let ctx = CompileContext {
                now,
                tenant_time_zone,
                catalog: &catalog,
            };
            compile_funnel(query, &DataFusionDialect, &ctx)?;
            return Err(Error::Execution("operator scope".to_string()));
        };
        let catalog = self.catalog(tenant)?;
        let session = self.session(tenant).await?;
        self.funnel_on(&session, &catalog, query, now, tenant_time_zone)
            .await
    }

    /// A funnel on a prepared session (a tenant's, or an operator query's views).
    async fn funnel_on(
        &self,
        session: &SessionContext,
        catalog: &PropertyCatalog,
        query: &FunnelQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<FunnelResult> {
        let ctx = CompileContext {
            now,
            tenant_time_zone,
            catalog,
        };
        let mut plan = compile_funnel(query, &DataFusionDialect, &ctx)?;
        // The views whose statements read each person's chain without breakdown
        // rows, buckets or ids read them from the engine's grouping.
        if matches!(
            query.view,
            FunnelView::Steps | FunnelView::TimeToConvert { .. }
        ) && let Some(sql) = plan.person_rows_sql()?
        {
            let table = funnel::chains_table(self, session, &sql, &plan.spec).await?;
            session
                .register_table(funnel::CHAINS_TABLE, Arc::new(table))
                .map_err(|e| Error::Execution(e.to_string()))?;
            plan.read_chains_from(funnel::CHAINS_TABLE);
        }
        match &query.view {
            FunnelView::Steps => self.funnel_steps_view(session, &plan).await,
            FunnelView::TimeToConvert {
                from_step,
                to_step,
                bins,
            } => {
                let to = to_step.unwrap_or(query.last_required_step());
                self.time_to_convert(session, &plan, *from_step, to, *bins)
                    .await
            }
            FunnelView::Persons {
                step,
                status,
                breakdown,
                limit,
                cursor,
            } => {
                self.funnel_persons(
                    session,
                    &plan,
                    *step,
                    *status,
                    breakdown.as_ref(),
                    *limit,
                    cursor.as_deref(),
                )
                .await
            }
            FunnelView::ConversionOverTime { interval } => {
                self.conversion_over_time(session, &plan, *interval).await
            }
        }
    }

    /// The ranked first-touch breakdown keys (canonical values) and whether an
    /// "other" row exists.
    async fn funnel_top(
        &self,
        session: &SessionContext,
        plan: &FunnelPlan<'_>,
    ) -> Result<Option<(Vec<Vec<Value>>, bool)>> {
        let (Some(b), Some(sql)) = (&plan.query.breakdown, plan.ranking_sql()?) else {
            return Ok(None);
        };
        let batches = self.run(session, &sql).await?;
        let mut counts: Vec<(Vec<Value>, i64)> = Vec::new();
        for batch in &batches {
            let persons = int_column(batch, batch.num_columns() - 1)?;
            for r in 0..batch.num_rows() {
                let key = (0..b.properties.len())
                    .map(|i| breakdown_value(batch, i, r))
                    .collect::<Result<Vec<_>>>()?;
                let n = persons.value(r);
                match counts.iter_mut().find(|(k, _)| keys_equal(k, &key)) {
                    Some((_, total)) => *total += n,
                    None => counts.push((key, n)),
                }
            }
        }
        counts.sort_by(|(ka, ca), (kb, cb)| cb.cmp(ca).then_with(|| compare_keys(ka, kb)));
        let with_other = counts.len() > b.limit as usize;
        counts.truncate(b.limit as usize);
        Ok(Some((
            counts.into_iter().map(|(k, _)| k).collect(),
            with_other,
        )))
    }

    async fn funnel_steps_view(
        &self,
        session: &SessionContext,
        plan: &FunnelPlan<'_>,
    ) -> Result<FunnelResult> {
        let query = plan.query;
        let batches = self.run(session, &plan.steps_sql(None)?).await?;
        let total = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) => funnel_steps(query, batch, 0, 0)?,
            None => funnel_steps_empty(query),
        };
        let mut breakdowns = Vec::new();
        if let Some((keys, with_other)) = self.funnel_top(session, plan).await? {
            let sql = plan.steps_sql(Some(&to_sql_keys(&keys)))?;
            let batches = self.run(session, &sql).await?;
            let mut rows: Vec<(i64, BreakdownValue)> = keys
                .into_iter()
                .enumerate()
                .map(|(i, values)| (i as i64, BreakdownValue::Values { values }))
                .collect();
            if with_other {
                rows.push((-1, BreakdownValue::Other));
            }
            for (index, label) in rows {
                let mut steps = funnel_steps_empty(query);
                for batch in &batches {
                    let ids = int_column(batch, 0)?;
                    if let Some(r) = (0..batch.num_rows()).find(|&r| ids.value(r) == index) {
                        steps = funnel_steps(query, batch, r, 1)?;
                    }
                }
                breakdowns.push(FunnelBreakdownRow {
                    breakdown: label,
                    steps,
                });
            }
        }
        Ok(FunnelResult::Steps(FunnelStepsResult { total, breakdowns }))
    }

    async fn conversion_over_time(
        &self,
        session: &SessionContext,
        plan: &FunnelPlan<'_>,
        interval: tally_query::Interval,
    ) -> Result<FunnelResult> {
        let (buckets, ranges) = plan.conversion_buckets(interval)?;
        let n = buckets.len();
        let points = |counts: &[(u64, u64)]| -> Vec<ConversionPoint> {
            counts
                .iter()
                .map(|&(entered, converted)| ConversionPoint {
                    entered,
                    converted,
                    conversion_percent: (entered > 0)
                        .then(|| converted as f64 * 100.0 / entered as f64),
                })
                .collect()
        };
        let read =
            |batches: &[RecordBatch], with_row: bool| -> Result<Vec<(i64, usize, u64, u64)>> {
                let mut out = Vec::new();
                for batch in batches {
                    let bucket = int_column(batch, 0)?;
                    let row = if with_row {
                        Some(int_column(batch, 1)?)
                    } else {
                        None
                    };
                    let at = if with_row { 2 } else { 1 };
                    let (entered, converted) = (int_column(batch, at)?, int_column(batch, at + 1)?);
                    for r in 0..batch.num_rows() {
                        let Ok(b) = usize::try_from(bucket.value(r)) else {
                            continue;
                        };
                        out.push((
                            row.as_ref().map_or(0, |c| c.value(r)),
                            b,
                            u64::try_from(entered.value(r)).unwrap_or(0),
                            u64::try_from(converted.value(r)).unwrap_or(0),
                        ));
                    }
                }
                Ok(out)
            };
        let mut total = vec![(0u64, 0u64); n];
        if n > 0 {
            let batches = self
                .run(session, &plan.conversion_sql(&ranges, None)?)
                .await?;
            for (_, b, e, c) in read(&batches, false)? {
                if let Some(slot) = total.get_mut(b) {
                    *slot = (e, c);
                }
            }
        }
        let mut breakdowns = Vec::new();
        if let Some((keys, with_other)) = self.funnel_top(session, plan).await? {
            let mut rows: Vec<(i64, BreakdownValue)> = keys
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, values)| (i as i64, BreakdownValue::Values { values }))
                .collect();
            if with_other {
                rows.push((-1, BreakdownValue::Other));
            }
            let mut counts = vec![vec![(0u64, 0u64); n]; rows.len()];
            if n > 0 && !rows.is_empty() {
                let sql = plan.conversion_sql(&ranges, Some(&to_sql_keys(&keys)))?;
                let batches = self.run(session, &sql).await?;
                for (row, b, e, c) in read(&batches, true)? {
                    if let Some(ri) = rows.iter().position(|(id, _)| *id == row)
                        && let Some(slot) = counts[ri].get_mut(b)
                    {
                        *slot = (e, c);
                    }
                }
            }
            breakdowns = rows
                .into_iter()
                .zip(counts)
                .map(|((_, breakdown), c)| ConversionBreakdownRow {
                    breakdown,
                    points: points(&c),
                })
                .collect();
        }
        Ok(FunnelResult::ConversionOverTime(ConversionOverTimeResult {
            buckets,
            total: points(&total),
            breakdowns,
        }))
    }

    async fn time_to_convert(
        &self,
        session: &SessionContext,
        plan: &FunnelPlan<'_>,
        from_step: u32,
        to_step: u32,
        bins: u32,
    ) -> Result<FunnelResult> {
        let batches = self
            .run(session, &plan.time_to_convert_sql(from_step, to_step)?)
            .await?;
        let mut result = TimeToConvertResult {
            from_step,
            to_step,
            persons: 0,
            bins: Vec::new(),
            average_seconds: None,
            median_seconds: None,
        };
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(FunnelResult::TimeToConvert(result));
        };
        let persons = int_column(batch, 0)?.value(0);
        let (min, max) = (int_column(batch, 1)?, int_column(batch, 2)?);
        if persons <= 0 || min.is_null(0) || max.is_null(0) {
            return Ok(FunnelResult::TimeToConvert(result));
        }
        let (min, max) = (min.value(0), max.value(0));
        let (avg, median) = (float_column(batch, 3)?, float_column(batch, 4)?);
        result.persons = u64::try_from(persons).unwrap_or(0);
        result.average_seconds = avg.is_valid(0).then(|| avg.value(0));
        result.median_seconds = median.is_valid(0).then(|| median.value(0));
        // Exactly `bins` bins of whole microseconds covering [min, max].
        let count = i64::from(bins.max(1));
        let width = (((max - min + 1) + count - 1) / count).max(1);
        let sql = plan.time_to_convert_bins_sql(from_step, to_step, min, width)?;
        let mut per_bin = vec![0u64; count as usize];
        for batch in self.run(session, &sql).await? {
            let (bin, n) = (int_column(&batch, 0)?, int_column(&batch, 1)?);
            for r in 0..batch.num_rows() {
                if let Some(slot) = usize::try_from(bin.value(r))
                    .ok()
                    .and_then(|b| per_bin.get_mut(b))
                {
                    *slot += u64::try_from(n.value(r)).unwrap_or(0);
                }
            }
        }
        result.bins = per_bin
            .into_iter()
            .enumerate()
            .map(|(i, persons)| {
                let from = min + i as i64 * width;
                HistogramBin {
                    from_seconds: from as f64 / 1e6,
                    to_seconds: (from + width) as f64 / 1e6,
                    persons,
                }
            })
            .collect();
        Ok(FunnelResult::TimeToConvert(result))
    }

    #[allow(clippy::too_many_arguments)]
    async fn funnel_persons(
        &self,
        session: &SessionContext,
        plan: &FunnelPlan<'_>,
        step: u32,
        status: StepStatus,
        breakdown: Option<&BreakdownValue>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<FunnelResult> {
        let query = plan.query;
        let empty = || {
            Ok(FunnelResult::Persons(FunnelPersonsResult {
                persons: Vec::new(),
                next_cursor: None,
            }))
        };
        // Persons are ordered by (tenant, person id): a cursor of another tenant is
        // before or after all of this tenant's persons.
        let after = match cursor
            .map(PersonCursor::decode)
            .transpose()
            .map_err(tally_sql::Error::from)?
        {
            Some(c) if c.0.tenant > plan.tenant => return empty(),
            Some(c) if c.0.tenant == plan.tenant => Some(c.0.person_id),
            _ => None,
        };
        let previous = match status {
            StepStatus::Reached => None,
            StepStatus::DroppedOff => {
                let s = step as usize;
                let prev = if query.order == FunnelOrder::AnyOrder {
                    s.checked_sub(1)
                } else {
                    (0..s).rev().find(|p| !query.steps[*p].optional)
                };
                match prev {
                    Some(p) => Some(p as u32),
                    None => return empty(),
                }
            }
        };
        let mut top = None;
        let mut row = None;
        if let Some(wanted) = breakdown
            && let Some((keys, _)) = self.funnel_top(session, plan).await?
        {
            row = Some(match wanted {
                BreakdownValue::Other => -1,
                BreakdownValue::Values { values } => {
                    let canonical: Vec<Value> = values
                        .iter()
                        .map(|v| tally_query::filter::semantics::breakdown_value(Some(v)))
                        .collect();
                    keys.iter()
                        .position(|k| keys_equal(k, &canonical))
                        .map_or(-1, |i| i as i64)
                }
            });
            top = Some(to_sql_keys(&keys));
        }
        let sql = plan.persons_sql(
            step,
            previous,
            top.as_deref(),
            row,
            after.as_deref(),
            limit.saturating_add(1),
        )?;
        let mut ids = Vec::new();
        for batch in self.run(session, &sql).await? {
            let col = string_column(&batch, 0)?;
            for r in 0..batch.num_rows() {
                ids.push(col.value(r).to_string());
            }
        }
        let limit = limit as usize;
        let mut persons: Vec<PersonKey> = ids
            .into_iter()
            .map(|person_id| PersonKey {
                tenant: plan.tenant,
                person_id,
            })
            .collect();
        let next_cursor = (persons.len() > limit && limit > 0)
            .then(|| PersonCursor(persons[limit - 1].clone()).encode());
        persons.truncate(limit);
        Ok(FunnelResult::Persons(FunnelPersonsResult {
            persons,
            next_cursor,
        }))
    }

    /// A session that sees exactly the tenant's events and identity map, under the
    /// memory limit, with the `tally_*` functions.
    async fn session(&self, tenant: TenantId) -> Result<SessionContext> {
        let ctx = self.new_session()?;
        let events = self.store.events_table(tenant)?;
        ctx.register_table(
            DataFusionDialect::events_table_name(tenant),
            Arc::new(events),
        )
        .map_err(|e| Error::Execution(e.to_string()))?;
        let map = self.person_map(tenant).await?;
        ctx.register_table(DataFusionDialect::person_map_table_name(tenant), map.table)
            .map_err(|e| Error::Execution(e.to_string()))?;
        // After the events table: its snapshot's numbers are all keyed.
        let keys = self.numbered_person_keys(tenant, &map.keys);
        ctx.register_udf(PersonKeyUdf::new(keys).into_udf());
        ctx.register_table(
            DataFusionDialect::persons_table_name(tenant),
            Arc::new(persons::LazyPersonsTable::new(self.persons.clone(), tenant)),
        )
        .map_err(|e| Error::Execution(e.to_string()))?;
        Ok(ctx)
    }

    /// A session under the memory limit with the `tally_*` functions and no tables.
    fn new_session(&self) -> Result<SessionContext> {
        // Every query gets its own runtime (its own memory pool) but shares the
        // Parquet metadata cache: without it each query re-read and re-parsed every
        // file's footer and page index (~70 columns' worth per file).
        let caches = CacheManagerConfig::default()
            .with_file_metadata_cache(Some(self.file_metadata_cache.clone()))
            .with_metadata_cache_limit(self.config.metadata_cache_bytes);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_memory_limit(self.config.memory_limit_bytes, 1.0)
            .build_arc()
            .map_err(|e| Error::Execution(e.to_string()))?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.config.target_partitions.max(1));
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        udf::register(&ctx);
        ctx.register_udaf(funnel::tally_funnel());
        ctx.register_udf(funnel::tally_funnel_step());
        ctx.register_udf(events::tally_uuid_text());
        ctx.register_udaf(retention::tally_retention());
        Ok(ctx)
    }

    /// The tenant's identity map as a table and as person keys, rebuilt only when its
    /// version changes.
    async fn person_map(&self, tenant: TenantId) -> Result<IdentityMap> {
        // A source that can tell its version cheaply spares reading the whole map.
        if let Some(current) = self
            .identities
            .identity_version(tenant)
            .await
            .map_err(Error::Identities)?
            && let Some((v, map)) = self.person_maps.lock().get(&tenant)
            && *v == current
        {
            return Ok(map.clone());
        }
        let (version, pairs) = self
            .identities
            .distinct_id_map(tenant)
            .await
            .map_err(Error::Identities)?;
        if let Some((v, map)) = self.person_maps.lock().get(&tenant)
            && *v == version
        {
            return Ok(map.clone());
        }
        let table = Arc::new(person_map_table(&pairs)?);
        let keys = Arc::new(PersonKeyMap::new(
            pairs.iter().map(|(d, p)| (d.as_str(), p.as_str())),
        ));
        let map = IdentityMap { table, keys };
        self.person_maps
            .lock()
            .insert(tenant, (version, map.clone()));
        Ok(map)
    }

    /// The person key of each of the tenant's distinct-id numbers under `map`: cached
    /// while the map is the same, extended by the ids numbered since. Call after
    /// taking the snapshot whose numbers the keys must cover.
    ///
    /// The keys are built outside the cache's lock (a first build looks up every id
    /// of the tenant), so queries of other tenants do not wait for it; two queries
    /// extending at once both build, and the longer result stays cached.
    pub(crate) fn numbered_person_keys(
        &self,
        tenant: TenantId,
        map: &Arc<PersonKeyMap>,
    ) -> Arc<NumberedPersonKeys> {
        let cached = self
            .numbered_keys
            .lock()
            .get(&tenant)
            .filter(|entry| Arc::ptr_eq(&entry.map, map))
            .map(|entry| entry.keys.clone());
        let was_cached = cached.is_some();
        let mut keys = cached.unwrap_or_default();
        let new_ids = self.store.distinct_ids(tenant, keys.len() as u32);
        if new_ids.is_empty() && was_cached {
            return keys;
        }
        // Copies the cached keys (the cache holds them too) and appends the new ones.
        Arc::make_mut(&mut keys).extend(map, &new_ids);
        let mut cache = self.numbered_keys.lock();
        let newer = cache
            .get(&tenant)
            .is_some_and(|entry| Arc::ptr_eq(&entry.map, map) && entry.keys.len() >= keys.len());
        if !newer {
            cache.insert(
                tenant,
                KeysOfNumbers {
                    map: map.clone(),
                    keys: keys.clone(),
                },
            );
        }
        keys
    }

    /// The tenant's materialised keys and their typed columns, from the table schema
    /// (a column exists only if the store materialised the key with that type).
    fn catalog(&self, tenant: TenantId) -> Result<PropertyCatalog> {
        let store_catalog = self.store.property_catalog(tenant);
        let table = self.store.events_table(tenant)?;
        let schema = datafusion::catalog::TableProvider::schema(&table);
        let mut keys: HashMap<String, KeyColumns> = HashMap::new();
        for field in schema.fields() {
            if let Some((ty, key)) = parse_property_column(field.name()) {
                let cols = keys.entry(key.to_string()).or_default();
                match ty {
                    tally_store::PropertyType::Str => cols.string = true,
                    tally_store::PropertyType::Num => cols.number = true,
                    tally_store::PropertyType::Bool => cols.boolean = true,
                }
            }
        }
        let mut catalog = PropertyCatalog::new();
        for (key, stats) in &store_catalog.keys {
            if stats.materialized {
                let mut cols = keys.get(key).copied().unwrap_or_default();
                cols.other = stats.other > 0;
                catalog.insert(key.clone(), cols);
            }
        }
        Ok(catalog)
    }

    async fn run(&self, session: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        tracing::debug!(sql, "running statement");
        let df = session.sql(sql).await.map_err(|e| self.df_error(e))?;
        df.collect().await.map_err(|e| self.df_error(e))
    }

    /// Runs `sql` and folds each partition of its output into its own state on its
    /// own task, beside the scan that feeds it (no channel between them), returning
    /// the states in partition order. `start` makes a partition's empty state (its
    /// memory goes through the query's pool). The tasks are aborted if this future is
    /// dropped (a query timeout).
    async fn fold_partitions<T, Start, Fold>(
        &self,
        session: &SessionContext,
        sql: &str,
        start: Start,
        fold: Fold,
    ) -> Result<Vec<T>>
    where
        T: Send + 'static,
        Start: Fn(&Arc<dyn MemoryPool>) -> T + Send + Sync + Clone + 'static,
        Fold: Fn(&mut T, RecordBatch) -> datafusion::error::Result<()>
            + Send
            + Sync
            + Clone
            + 'static,
    {
        tracing::debug!(sql, "running statement");
        let pool = Arc::clone(&session.runtime_env().memory_pool);
        let df = session.sql(sql).await.map_err(|e| self.df_error(e))?;
        let streams = df
            .execute_stream_partitioned()
            .await
            .map_err(|e| self.df_error(e))?;
        let tasks: Vec<SpawnedTask<datafusion::error::Result<T>>> = streams
            .into_iter()
            .map(|mut stream| {
                let (pool, start, fold) = (Arc::clone(&pool), start.clone(), fold.clone());
                SpawnedTask::spawn(async move {
                    let mut state = start(&pool);
                    while let Some(batch) = stream.next().await {
                        fold(&mut state, batch?)?;
                    }
                    Ok(state)
                })
            })
            .collect();
        let mut states = Vec::with_capacity(tasks.len());
        for task in tasks {
            let state = task
                .join()
                .await
                .map_err(|e| Error::Execution(format!("partition task: {e}")))?
                .map_err(|e| self.df_error(e))?;
            states.push(state);
        }
        Ok(states)
    }

    fn df_error(&self, e: datafusion::error::DataFusionError) -> Error {
        let text = e.to_string();
        if text.contains("Resources exhausted") {
            Error::MemoryLimit {
                limit_bytes: self.config.memory_limit_bytes,
            }
        } else if let Some(at) = text.find(funnel::TOO_COMPLEX) {
            Error::TooComplex(text[at..].to_string())
        } else {
            Error::Execution(text)
        }
    }
}

/// The steps of a funnel from row `r` of a steps statement whose per-step columns
/// (persons, avg, median) start at column `offset`.
fn funnel_steps(
    query: &FunnelQuery,
    batch: &RecordBatch,
    r: usize,
    offset: usize,
) -> Result<Vec<FunnelStepResult>> {
    let n = query.steps.len();
    let mut persons = vec![0u64; n];
    let mut avg = vec![None; n];
    let mut median = vec![None; n];
    for s in 0..n {
        let count = int_column(batch, offset + 3 * s)?;
        persons[s] = u64::try_from(count.value(r)).unwrap_or(0);
        if s > 0 {
            let a = float_column(batch, offset + 3 * s + 1)?;
            let m = float_column(batch, offset + 3 * s + 2)?;
            avg[s] = a.is_valid(r).then(|| a.value(r));
            median[s] = m.is_valid(r).then(|| m.value(r));
        }
    }
    Ok(step_results(query, &persons, &avg, &median))
}

fn funnel_steps_empty(query: &FunnelQuery) -> Vec<FunnelStepResult> {
    let n = query.steps.len();
    step_results(query, &vec![0; n], &vec![None; n], &vec![None; n])
}

fn step_results(
    query: &FunnelQuery,
    persons: &[u64],
    avg: &[Option<f64>],
    median: &[Option<f64>],
) -> Vec<FunnelStepResult> {
    let n = query.steps.len();
    let previous_required = |s: usize| -> Option<usize> {
        if query.order == FunnelOrder::AnyOrder {
            return s.checked_sub(1);
        }
        (0..s).rev().find(|p| !query.steps[*p].optional)
    };
    let percent = |part: u64, whole: u64| (whole > 0).then(|| part as f64 * 100.0 / whole as f64);
    (0..n)
        .map(|s| FunnelStepResult {
            step: s as u32,
            name: if query.order == FunnelOrder::AnyOrder {
                format!("Completed {} of {} steps", s + 1, n)
            } else {
                query.steps[s].display_name()
            },
            optional: query.steps[s].optional,
            persons: persons[s],
            conversion_from_first_percent: percent(persons[s], persons[0]),
            conversion_from_previous_percent: previous_required(s)
                .and_then(|p| percent(persons[s], persons[p])),
            average_seconds_from_previous: avg[s],
            median_seconds_from_previous: median[s],
        })
        .collect()
}

fn int_column(batch: &RecordBatch, i: usize) -> Result<Int64Array> {
    let array =
        cast(batch.column(i), &DataType::Int64).map_err(|e| Error::Execution(e.to_string()))?;
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Error::Execution(format!("column {i} is not an integer")))
}

fn float_column(batch: &RecordBatch, i: usize) -> Result<Float64Array> {
    let array =
        cast(batch.column(i), &DataType::Float64).map_err(|e| Error::Execution(e.to_string()))?;
    array
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Error::Execution(format!("column {i} is not a number")))
}

fn string_column(batch: &RecordBatch, i: usize) -> Result<StringArray> {
    let array =
        cast(batch.column(i), &DataType::Utf8).map_err(|e| Error::Execution(e.to_string()))?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Execution(format!("column {i} is not text")))
}

/// The canonical value of breakdown property `p` on row `r` of a ranking batch
/// (four columns per property: string, number, boolean, other).
fn breakdown_value(batch: &RecordBatch, p: usize, r: usize) -> Result<Value> {
    Ok(BreakdownColumns::new(batch, p * 4, 1)?.value(0, r))
}

/// The breakdown columns of a batch (four per property: string, number, boolean,
/// other), cast once so that reading many rows does not cast a column per row.
pub(crate) struct BreakdownColumns {
    properties: Vec<(StringArray, Float64Array, Option<BooleanArray>, StringArray)>,
}

impl BreakdownColumns {
    /// The columns of `properties` properties starting at column `first`.
    pub(crate) fn new(batch: &RecordBatch, first: usize, properties: usize) -> Result<Self> {
        let properties = (0..properties)
            .map(|p| {
                let base = first + p * 4;
                let boolean = cast(batch.column(base + 2), &DataType::Boolean)
                    .map_err(|e| Error::Execution(e.to_string()))?;
                Ok((
                    string_column(batch, base)?,
                    float_column(batch, base + 1)?,
                    boolean.as_any().downcast_ref::<BooleanArray>().cloned(),
                    string_column(batch, base + 3)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BreakdownColumns { properties })
    }

    /// The canonical value of property `p` on row `r`.
    pub(crate) fn value(&self, p: usize, r: usize) -> Value {
        let Some((s, n, b, o)) = self.properties.get(p) else {
            return Value::Null;
        };
        if !s.is_null(r) {
            return PropertyValue::String(s.value(r).to_string()).to_canonical();
        }
        if !n.is_null(r) {
            return PropertyValue::Number(n.value(r)).to_canonical();
        }
        if let Some(b) = b
            && !b.is_null(r)
        {
            return Value::Bool(b.value(r));
        }
        if !o.is_null(r) {
            return PropertyValue::Other(o.value(r).to_string()).to_canonical();
        }
        Value::Null
    }
}

fn compare_keys(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        match compare_breakdown_values(x, y) {
            std::cmp::Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

fn keys_equal(a: &[Value], b: &[Value]) -> bool {
    compare_keys(a, b) == std::cmp::Ordering::Equal
}

/// Canonical keys back to SQL match values. A canonical string matches a string
/// value or an array/object whose JSON text it is (both canonicalise to it).
fn to_sql_keys(keys: &[Vec<Value>]) -> Vec<BreakdownKey> {
    keys.iter()
        .map(|k| {
            BreakdownKey(
                k.iter()
                    .map(|v| match v {
                        Value::Null => PropertyValue::Null,
                        Value::Bool(b) => PropertyValue::Bool(*b),
                        Value::Number(n) => PropertyValue::Number(n.as_f64().unwrap_or(f64::NAN)),
                        Value::String(s) => PropertyValue::String(s.clone()),
                        other => PropertyValue::Other(other.to_string()),
                    })
                    .collect(),
            )
        })
        .collect()
}
