//! Read access: a DataFusion table of one tenant's events.
//!
//! Owns [`EventsTable`], a `TableProvider` over a consistent snapshot of one tenant's
//! live Parquet files plus its buffered (not yet published) events, and the helpers
//! that turn query filters into time bounds for file pruning. It does not own the
//! typed query language (trends, funnels) built on top, and it deliberately offers no
//! cross-tenant table: every read names a tenant.
//!
//! A snapshot holds `Arc`s of the files it lists; the store defers deleting a file
//! that compaction replaced until no snapshot references it. Keep the provider (or
//! the `SessionContext` it is registered in) alive while a query runs.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use tally_core::TenantId;

use crate::error::{Error, Result};
use crate::files::LiveFile;
use crate::schema::columns;

/// The name under which [`crate::EmbeddedStore::session_context_for`] registers the
/// tenant's events.
pub const EVENTS_TABLE: &str = "events";

/// One tenant's events at one instant: published files plus buffered batches, never
/// both for the same event (the store swaps them atomically).
pub(crate) struct TenantSnapshot {
    pub tenant: TenantId,
    pub schema: SchemaRef,
    pub files: Vec<Arc<LiveFile>>,
    /// Buffered events, already shaped to `schema`.
    pub buffered: Vec<RecordBatch>,
}

/// A `TableProvider` for the events of one tenant.
pub struct EventsTable {
    snapshot: Arc<TenantSnapshot>,
}

impl fmt::Debug for EventsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsTable")
            .field("tenant", &self.snapshot.tenant)
            .field("files", &self.snapshot.files.len())
            .field("buffered_batches", &self.snapshot.buffered.len())
            .finish()
    }
}

impl EventsTable {
    pub(crate) fn new(snapshot: TenantSnapshot) -> Self {
        EventsTable {
            snapshot: Arc::new(snapshot),
        }
    }

    pub fn tenant(&self) -> TenantId {
        self.snapshot.tenant
    }

    /// Number of Parquet files in the snapshot (before any pruning).
    pub fn file_count(&self) -> usize {
        self.snapshot.files.len()
    }

    /// Files whose timestamp range overlaps the filters' bounds.
    fn files_for(&self, filters: &[Expr]) -> Vec<Arc<LiveFile>> {
        let bounds = TimeBounds::from_filters(filters);
        self.snapshot
            .files
            .iter()
            .filter(|f| bounds.overlaps(f.meta.min_timestamp, f.meta.max_timestamp))
            .cloned()
            .collect()
    }
}

/// Parquet reading options: keep `Utf8` as `Utf8` (the table schema's type) rather
/// than DataFusion's default view types, so no per-batch cast is needed.
pub(crate) fn parquet_format() -> ParquetFormat {
    let mut options = TableParquetOptions::default();
    options.global.schema_force_view_types = false;
    options.global.pruning = true;
    ParquetFormat::default().with_options(options)
}

/// A listing table over exactly these files, read with `schema` (missing columns
/// read as NULL).
pub(crate) fn listing_table(files: &[Arc<LiveFile>], schema: SchemaRef) -> Result<ListingTable> {
    let urls = files
        .iter()
        .map(|f| {
            let path = f.path.to_str().ok_or_else(|| {
                Error::Config(format!("store path {} is not UTF-8", f.path.display()))
            })?;
            Ok(ListingTableUrl::parse(path)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(parquet_format())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(ListingTable::try_new(config)?)
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        self.snapshot.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: used for pruning files and row groups; DataFusion still applies
        // every filter to the rows that come back.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.snapshot.schema.clone();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let files = self.files_for(filters);
        if !files.is_empty() {
            let table = listing_table(&files, schema.clone())
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        if !self.snapshot.buffered.is_empty() || inputs.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                std::slice::from_ref(&self.snapshot.buffered),
                schema,
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}

/// A SessionContext with the tenant's table registered as [`EVENTS_TABLE`].
pub(crate) fn session_with(table: EventsTable) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table(EVENTS_TABLE, Arc::new(table))?;
    Ok(ctx)
}

/// Inclusive bounds on `timestamp` implied by a conjunction of filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeBounds {
    pub min: i64,
    pub max: i64,
}

impl TimeBounds {
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut bounds = TimeBounds {
            min: i64::MIN,
            max: i64::MAX,
        };
        for f in filters {
            bounds.narrow(f);
        }
        bounds
    }

    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        lo <= self.max && hi >= self.min
    }

    fn narrow(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.narrow(left);
                    self.narrow(right);
                    return;
                }
                let (op, value) = match (is_timestamp(left), is_timestamp(right)) {
                    (true, false) => (*op, micros_of(right)),
                    (false, true) => match op.swap() {
                        Some(swapped) => (swapped, micros_of(left)),
                        None => return,
                    },
                    _ => return,
                };
                let Some(v) = value else { return };
                match op {
                    Operator::Eq => {
                        self.min = self.min.max(v);
                        self.max = self.max.min(v);
                    }
                    Operator::Gt => self.min = self.min.max(v.saturating_add(1)),
                    Operator::GtEq => self.min = self.min.max(v),
                    Operator::Lt => self.max = self.max.min(v.saturating_sub(1)),
                    Operator::LtEq => self.max = self.max.min(v),
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_timestamp(expr) => {
                if let Some(lo) = micros_of(low) {
                    self.min = self.min.max(lo);
                }
                if let Some(hi) = micros_of(high) {
                    self.max = self.max.min(hi);
                }
            }
            _ => {}
        }
    }
}

fn is_timestamp(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == columns::TIMESTAMP)
}

/// A timestamp literal in microseconds, when it converts exactly.
fn micros_of(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        // Rounding a nanosecond bound could cut off an event at the edge, so
        // nanosecond literals do not prune.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_from_comparisons_and_between() {
        let f = [
            col("timestamp").gt_eq(ts(10)),
            ts(50).gt(col("timestamp")),
            col("event").eq(lit("x")),
        ];
        let b = TimeBounds::from_filters(&f);
        assert_eq!(b, TimeBounds { min: 10, max: 49 });
        assert!(b.overlaps(0, 10) && b.overlaps(49, 100) && !b.overlaps(50, 60));
        let between = col("timestamp").between(ts(5), ts(7));
        assert_eq!(
            TimeBounds::from_filters(&[between.and(col("timestamp").lt_eq(ts(6)))]),
            TimeBounds { min: 5, max: 6 }
        );
        // Disjunctions and other columns do not prune.
        let or = col("timestamp").lt(ts(5)).or(col("timestamp").gt(ts(9)));
        assert_eq!(
            TimeBounds::from_filters(&[or, col("received_at").gt(ts(3))]),
            TimeBounds {
                min: i64::MIN,
                max: i64::MAX
            }
        );
    }
}
