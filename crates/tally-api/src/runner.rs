//! The seam between the API and whatever executes queries.
//!
//! [`QueryRunner`] is what the GraphQL layer calls; the single-binary mode passes the
//! DataFusion engine ([`EngineRunner`]), and a distributed engine can implement the same
//! trait. A runner says which query kinds it executes, and the GraphQL schema offers
//! exactly those: a kind the engine cannot run is absent from the schema rather than a
//! field that always fails.

use std::sync::Arc;

use tally_core::ErrorClass;
use tally_engine::Engine;
use tally_query::{Query, QueryResult};

use crate::error::RunError;
use crate::model::QueryKind;

/// Executes validated, scoped queries.
#[async_trait::async_trait]
pub trait QueryRunner: Send + Sync + 'static {
    /// The kinds [`QueryRunner::run`] answers.
    fn kinds(&self) -> Vec<QueryKind>;

    /// Answers `query` at instant `now` (UTC microseconds) for a tenant whose time-zone
    /// setting is `tenant_time_zone` (`None` for operator scopes). The query's scope has
    /// been set from the credentials and checked.
    async fn run(
        &self,
        query: &Query,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<QueryResult, RunError>;
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

    async fn run(
        &self,
        query: &Query,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<QueryResult, RunError> {
        let engine = self.engine.clone();
        let query = query.clone();
        let time_zone = tenant_time_zone.map(str::to_string);
        let handle = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            handle.block_on(run_on_engine(&engine, &query, now, time_zone.as_deref()))
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
    now: i64,
    tenant_time_zone: Option<&str>,
) -> Result<QueryResult, RunError> {
    match query {
        Query::Trends(q) => Ok(QueryResult::Trends(
            engine.trends(q, now, tenant_time_zone).await?,
        )),
        Query::Funnel(q) => Ok(QueryResult::Funnel(
            engine.funnel(q, now, tenant_time_zone).await?,
        )),
        Query::Retention(q) => Ok(QueryResult::Retention(
            engine.retention(q, now, tenant_time_zone).await?,
        )),
        Query::Events(q) => Ok(QueryResult::Events(
            engine.events(q, now, tenant_time_zone).await?,
        )),
        // The persons list has no time dimension.
        Query::Persons(q) => Ok(QueryResult::Persons(engine.persons(q).await?)),
        Query::Schema(q) => Ok(QueryResult::Schema(
            engine.schema(q, now, tenant_time_zone).await?,
        )),
    }
}
