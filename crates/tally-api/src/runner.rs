//! The seam between the API and whatever executes queries.
//!
//! [`QueryRunner`] is what the GraphQL layer calls; the single-binary mode passes the
//! DataFusion engine ([`EngineRunner`]), and a distributed engine can implement the same
//! trait. A runner says which query kinds it executes, and the GraphQL schema offers
//! exactly those: a kind the engine cannot run is absent from the schema rather than a
//! field that always fails.

use std::sync::Arc;

use tally_core::ErrorClass;
use tally_engine::{Engine, TenantInfo};
use tally_meta::Tenant;
use tally_query::{Query, QueryResult};

use crate::error::RunError;
use crate::model::QueryKind;

/// What a query runs against besides its own text.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The instant the query's relative date ranges resolve against (UTC
    /// microseconds): the server clock.
    pub now: i64,
    /// The time-zone setting of the query's tenant; `None` for operator scopes, which
    /// use UTC unless the query names a zone.
    pub tenant_time_zone: Option<String>,
    /// For operator scopes, every tenant with its name and attributes: the scope's ids
    /// and tenant filters select among them. Empty for tenant scopes.
    pub tenants: Vec<Tenant>,
}

/// Executes validated, scoped queries.
#[async_trait::async_trait]
pub trait QueryRunner: Send + Sync + 'static {
    /// The kinds [`QueryRunner::run`] answers.
    fn kinds(&self) -> Vec<QueryKind>;

    /// Answers `query`, whose scope has been set from the credentials and checked.
    async fn run(&self, query: &Query, context: &RunContext) -> Result<QueryResult, RunError>;
}

/// The DataFusion engine as a [`QueryRunner`].
///
/// The engine's query futures are not `Send` (its compiled plans borrow a
/// `&dyn tally_sql::Dialect`, which is not `Sync`), while HTTP handlers and GraphQL
/// resolvers must be. Each query therefore runs on tokio's blocking pool, driven by
/// `Handle::block_on`: DataFusion's own tasks still run on the runtime's workers, and
/// the request's future only awaits the join handle.
pub struct EngineRunner {
    engine: Arc<Engine>,
}

impl EngineRunner {
    /// A runner over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        EngineRunner { engine }
    }
}

#[async_trait::async_trait]
impl QueryRunner for EngineRunner {
    fn kinds(&self) -> Vec<QueryKind> {
        vec![
            QueryKind::Trends,
            QueryKind::Funnel,
            QueryKind::Retention,
            QueryKind::Events,
            QueryKind::Persons,
            QueryKind::Schema,
        ]
    }

    async fn run(&self, query: &Query, context: &RunContext) -> Result<QueryResult, RunError> {
        let engine = self.engine.clone();
        let query = query.clone();
        let context = context.clone();
        let handle = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            handle.block_on(run_on_engine(&engine, &query, &context))
        });
        task.await.map_err(|e| RunError::Failed {
            class: ErrorClass::Internal,
            source: format!("the query task failed: {e}").into(),
        })?
    }
}

async fn run_on_engine(
    engine: &Engine,
    query: &Query,
    context: &RunContext,
) -> Result<QueryResult, RunError> {
    let now = context.now;
    let tz = context.tenant_time_zone.as_deref();
    if query.scope().is_operator() {
        let tenants: Vec<TenantInfo> = context
            .tenants
            .iter()
            .map(|t| TenantInfo {
                id: t.id,
                name: t.name.clone(),
                time_zone: t.timezone.clone(),
                attributes: t.attributes.clone(),
            })
            .collect();
        match query {
            Query::Trends(q) => {
                return Ok(QueryResult::Trends(
                    engine.trends_operator(q, now, &tenants).await?,
                ));
            }
            Query::Funnel(q) => {
                return Ok(QueryResult::Funnel(
                    engine.funnel_operator(q, now, &tenants).await?,
                ));
            }
            Query::Retention(q) => {
                return Ok(QueryResult::Retention(
                    engine.retention_operator(q, now, &tenants).await?,
                ));
            }
            // The listings answer operator scopes themselves (or refuse them clearly).
            Query::Events(_) | Query::Persons(_) | Query::Schema(_) => {}
        }
    }
    Ok(match query {
        Query::Trends(q) => QueryResult::Trends(engine.trends(q, now, tz).await?),
        Query::Funnel(q) => QueryResult::Funnel(engine.funnel(q, now, tz).await?),
        Query::Retention(q) => QueryResult::Retention(engine.retention(q, now, tz).await?),
        Query::Events(q) => QueryResult::Events(engine.events(q, now, tz).await?),
        // The persons list has no time dimension.
        Query::Persons(q) => QueryResult::Persons(engine.persons(q).await?),
        Query::Schema(q) => QueryResult::Schema(engine.schema(q, now, tz).await?),
    })
}
