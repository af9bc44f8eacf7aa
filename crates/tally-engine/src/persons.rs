//! Persons on DataFusion: the per-tenant persons relation (`tenant_<t>_persons(person_id,
//! properties)`, what tally-sql joins for person-property filters and breakdowns),
//! cached by the persons version of the [`IdentitySource`] and loaded only when a
//! statement scans it, and [`Engine::persons`], the persons list.
//!
//! Owns the snapshot (records + table built from the same read, so a page's ids and the
//! properties shown with them always agree), the distinct-id lookup through the identity
//! map, and assembling `PersonRow`s. Does not own the filter semantics (compiled by
//! tally-sql over `properties` JSON exactly as for events) or where persons come from
//! (the metadata store).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::Mutex;
use tally_core::{IdentitySource, TenantId};
use tally_query::{PersonRow, PersonsQuery, PersonsResult};
use tally_sql::{DataFusionDialect, compile_persons};

use crate::{Engine, Error, PersonRecord, Result, string_column, udf};

/// One version of a tenant's persons: the records and the relation built from them.
pub(crate) struct PersonsSnapshot {
    /// The source's persons version this was read at.
    pub version: u64,
    /// `(person_id Utf8, properties Utf8 JSON)`.
    pub table: Arc<MemTable>,
    /// The records, ordered as read.
    pub records: Vec<PersonRecord>,
    /// Position in `records` by person id.
    pub by_id: HashMap<String, usize>,
}

impl PersonsSnapshot {
    fn build(version: u64, records: Vec<PersonRecord>) -> Result<Self> {
        let schema = persons_schema();
        let mut ids = StringBuilder::new();
        let mut properties = StringBuilder::new();
        let mut by_id = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            ids.append_value(&r.person_id);
            // A map of JSON values always serialises; reported rather than unwrapped.
            let json = serde_json::to_string(&r.properties)
                .map_err(|e| Error::Identities(format!("person {}: {e}", r.person_id)))?;
            properties.append_value(json);
            by_id.insert(r.person_id.clone(), i);
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids.finish()), Arc::new(properties.finish())],
        )
        .map_err(|e| Error::Execution(e.to_string()))?;
        let table = MemTable::try_new(schema, vec![vec![batch]])
            .map_err(|e| Error::Execution(e.to_string()))?;
        Ok(PersonsSnapshot {
            version,
            table: Arc::new(table),
            records,
            by_id,
        })
    }
}

/// The persons snapshots of every tenant queried so far, by persons version.
pub(crate) struct PersonsCache {
    identities: Arc<dyn IdentitySource>,
    snapshots: Mutex<HashMap<TenantId, Arc<PersonsSnapshot>>>,
}

impl PersonsCache {
    pub(crate) fn new(identities: Arc<dyn IdentitySource>) -> Self {
        PersonsCache {
            identities,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's persons, rebuilt only when the source's persons version moved.
    pub(crate) async fn snapshot(&self, tenant: TenantId) -> Result<Arc<PersonsSnapshot>> {
        let version = self
            .identities
            .persons_version(tenant)
            .await
            .map_err(Error::Identities)?;
        if let Some(snapshot) = self.snapshots.lock().get(&tenant)
            && snapshot.version == version
        {
            return Ok(snapshot.clone());
        }
        let (version, records) = self
            .identities
            .persons(tenant)
            .await
            .map_err(Error::Identities)?;
        let snapshot = Arc::new(PersonsSnapshot::build(version, records)?);
        metrics::counter!("tally_engine_persons_table_builds_total").increment(1);
        self.snapshots.lock().insert(tenant, snapshot.clone());
        Ok(snapshot)
    }
}

/// A session's `tenant_<t>_persons`: registered with every session, read (and loaded
/// from the source, if its version moved) only when a statement scans it, so queries
/// without person properties never touch persons. Loaded once per session, so every
/// statement of one query sees the same persons.
pub(crate) struct LazyPersonsTable {
    cache: Arc<PersonsCache>,
    tenant: TenantId,
    loaded: tokio::sync::OnceCell<Arc<PersonsSnapshot>>,
}

impl LazyPersonsTable {
    pub(crate) fn new(cache: Arc<PersonsCache>, tenant: TenantId) -> Self {
        LazyPersonsTable {
            cache,
            tenant,
            loaded: tokio::sync::OnceCell::new(),
        }
    }
}

impl std::fmt::Debug for LazyPersonsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyPersonsTable")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TableProvider for LazyPersonsTable {
    fn schema(&self) -> SchemaRef {
        persons_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self
            .loaded
            .get_or_try_init(|| self.cache.snapshot(self.tenant))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        snapshot.table.scan(state, projection, filters, limit).await
    }
}

fn persons_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Utf8, false),
        Field::new("properties", DataType::Utf8, false),
    ]))
}

impl Engine {
    /// The tenant's current persons snapshot.
    pub(crate) async fn persons_snapshot(&self, tenant: TenantId) -> Result<Arc<PersonsSnapshot>> {
        self.persons.snapshot(tenant).await
    }

    /// A page of the query tenant's persons with their properties and distinct ids,
    /// filtered on person properties, or the person of one distinct id. Reads the
    /// persons source, never events. Operator scopes are refused.
    pub async fn persons(&self, query: &PersonsQuery) -> Result<PersonsResult> {
        self.measured("persons", self.persons_inner(query)).await
    }

    async fn persons_inner(&self, query: &PersonsQuery) -> Result<PersonsResult> {
        let plan = compile_persons(query, &DataFusionDialect)?;
        let tenant = plan.tenant;
        let (_, map) = self
            .identities
            .distinct_id_map(tenant)
            .await
            .map_err(Error::Identities)?;
        // An unmapped distinct id is its own person (as everywhere in queries).
        let only = query.distinct_id.as_ref().map(|d| {
            map.iter()
                .find(|(mapped, _)| mapped == d)
                .map_or_else(|| d.clone(), |(_, person)| person.clone())
        });
        let empty = PersonsResult {
            persons: Vec::new(),
            next_cursor: None,
        };
        let Some(sql) = plan.page_sql(only.as_deref())? else {
            return Ok(empty);
        };
        let snapshot = self.persons_snapshot(tenant).await?;
        let session = self.persons_session(tenant, &snapshot)?;
        let mut ids = Vec::new();
        for batch in self.run(&session, &sql).await? {
            let col = string_column(&batch, 0)?;
            for r in 0..batch.num_rows() {
                ids.push(col.value(r).to_string());
            }
        }
        let limit = query.limit as usize;
        let next_cursor = (ids.len() > limit && limit > 0).then(|| {
            tally_query::PersonCursor(tally_query::PersonKey {
                tenant,
                person_id: ids[limit - 1].clone(),
            })
            .encode()
        });
        ids.truncate(limit);
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut distinct_ids: HashMap<&str, Vec<String>> = HashMap::new();
        for (distinct_id, person) in &map {
            if wanted.contains(person.as_str()) {
                distinct_ids
                    .entry(person.as_str())
                    .or_default()
                    .push(distinct_id.clone());
            }
        }
        let mut persons = Vec::with_capacity(ids.len());
        for id in &ids {
            let record = snapshot
                .by_id
                .get(id)
                .and_then(|i| snapshot.records.get(*i))
                .ok_or_else(|| Error::Execution(format!("person {id} left the snapshot")))?;
            let mut ids_of_person = distinct_ids.remove(id.as_str()).unwrap_or_default();
            ids_of_person.sort();
            persons.push(PersonRow {
                tenant,
                person_id: id.clone(),
                distinct_ids: ids_of_person,
                properties: record.properties.clone(),
                created_at: record.created_at,
            });
        }
        Ok(PersonsResult {
            persons,
            next_cursor,
        })
    }

    /// A session that sees only the tenant's persons relation (the persons list reads
    /// nothing else), under the memory limit, with the `tally_*` functions.
    fn persons_session(
        &self,
        tenant: TenantId,
        snapshot: &PersonsSnapshot,
    ) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.config.memory_limit_bytes, 1.0)
            .build_arc()
            .map_err(|e| Error::Execution(e.to_string()))?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.config.target_partitions.max(1));
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        udf::register(&ctx);
        ctx.register_table(
            DataFusionDialect::persons_table_name(tenant),
            snapshot.table.clone(),
        )
        .map_err(|e| Error::Execution(e.to_string()))?;
        Ok(ctx)
    }
}
