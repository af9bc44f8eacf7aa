//! The seam between the API and whatever executes queries.
//!
//! [`QueryRunner`] is what the GraphQL layer calls; the single-binary mode passes the
//! DataFusion engine ([`EngineRunner`]), and a distributed engine can implement the same
//! trait. A runner says which query kinds it executes, and the GraphQL schema offers
//! exactly those: a kind the engine cannot run is absent from the schema rather than a
//! field that always fails.

use std::sync::Arc;
use std::time::Duration;

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

/// At most `max` queries of the inner runner at once, server-wide, so that memory use
/// stays under `max` × the engine's per-query limit however many clients ask. A query
/// that finds every slot taken waits up to `wait`, then is refused as `UNAVAILABLE`
/// with a retry hint rather than queueing without bound.
pub struct ConcurrencyLimit {
    inner: Arc<dyn QueryRunner>,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    wait: Duration,
}

impl ConcurrencyLimit {
    /// Limits `inner` to `max` (at least 1) concurrent queries.
    pub fn new(inner: Arc<dyn QueryRunner>, max: usize, wait: Duration) -> Self {
        let max = max.max(1);
        ConcurrencyLimit {
            inner,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            wait,
        }
    }
}

#[async_trait::async_trait]
impl QueryRunner for ConcurrencyLimit {
    fn kinds(&self) -> Vec<QueryKind> {
        self.inner.kinds()
    }

    async fn run(&self, query: &Query, context: &RunContext) -> Result<QueryResult, RunError> {
        let busy = || RunError::Failed {
            class: ErrorClass::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            source: format!(
                "the server is already running its limit of {} queries; retry shortly",
                self.max
            )
            .into(),
        };
        let _slot = match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            // Timed out, or the semaphore was closed (it never is).
            _ => {
                metrics::counter!("tally_api_queries_refused_busy_total").increment(1);
                return Err(busy());
            }
        };
        self.inner.run(query, context).await
    }
}

#[cfg(test)]
mod tests {
    use tally_core::{Classify, TenantId};
    use tally_query::Scope;

    use super::*;

    /// Holds every query until released.
    struct Gate {
        open: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl QueryRunner for Gate {
        fn kinds(&self) -> Vec<QueryKind> {
            vec![QueryKind::Trends]
        }

        async fn run(&self, _: &Query, _: &RunContext) -> Result<QueryResult, RunError> {
            let _pass = self.open.acquire().await.unwrap();
            Ok(serde_json::from_value(serde_json::json!({
                "kind": "trends", "current": {"buckets": [], "series": []}
            }))
            .unwrap())
        }
    }

    fn query() -> Query {
        serde_json::from_value(serde_json::json!({
            "kind": "trends",
            "scope": Scope::Tenant(TenantId(1)),
            "date_range": {"type": "last", "count": 1, "unit": "day"},
            "series": [{"event": "a"}]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_full_server_refuses_with_a_retry_hint_and_recovers() {
        let gate = Arc::new(Gate {
            open: tokio::sync::Semaphore::new(0),
        });
        let limited = Arc::new(ConcurrencyLimit::new(
            gate.clone(),
            1,
            Duration::from_millis(20),
        ));
        let context = RunContext {
            now: 0,
            tenant_time_zone: None,
            tenants: Vec::new(),
        };
        let first = tokio::spawn({
            let limited = limited.clone();
            let context = context.clone();
            async move { limited.run(&query(), &context).await }
        });
        // Wait until the first query holds the only slot.
        while limited.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = limited.run(&query(), &context).await.unwrap_err();
        assert!(
            matches!(refused.class(), ErrorClass::Unavailable { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("limit of 1"), "{refused}");

        gate.open.add_permits(2);
        first.await.unwrap().unwrap();
        limited.run(&query(), &context).await.unwrap();
        assert_eq!(limited.kinds(), vec![QueryKind::Trends]);
    }
}
