//! Tally's query API: GraphQL at `/graphql` with an explorer page, and the JSON Schema
//! of the query model at `/graphql/schema.json`.
//!
//! The query model in `tally-query` is the one source of truth. Its serde types parse
//! every query; `schemars` derives the published JSON Schema from the same types
//! ([`model`]); and the GraphQL schema is generated at start-up ([`graphql`]) with one
//! field per query kind the engine runs, taking and returning custom scalars that are
//! those JSON Schema definitions. Nothing about a query's shape is written twice.
//!
//! The API authenticates `Authorization: Bearer <key>` ([`auth`]): a tenant's secret key
//! reads only that tenant (the API sets the query's scope and refuses any other), an
//! operator key may use operator scopes and list tenants. Errors carry a code in
//! `extensions.code` mapped once from [`tally_core::ErrorClass`] ([`error`]).
//!
//! Not here: query semantics (tally-query), execution (tally-engine behind
//! [`QueryRunner`]), key storage (tally-meta), the server process (the `tally` binary).

pub mod auth;
pub mod error;
pub mod graphql;
pub mod http;
pub mod model;
pub mod runner;

use std::sync::Arc;

use tally_meta::MetaStore;

pub use auth::Principal;
pub use error::{Error, Result, RunError};
pub use graphql::ApiConfig;
pub use model::{JSON_SCHEMA_PATH, QueryKind, json_schema};
pub use runner::{ConcurrencyLimit, EngineRunner, QueryRunner, RunContext};

use crate::graphql::Shared;

/// The API over one metadata store and one query runner, ready to serve.
pub struct Api {
    shared: Arc<Shared>,
    schema: async_graphql::dynamic::Schema,
    json_schema: String,
}

impl Api {
    /// Builds the GraphQL schema for the kinds `runner` executes.
    pub fn new(
        meta: Arc<dyn MetaStore>,
        runner: Arc<dyn QueryRunner>,
        config: ApiConfig,
    ) -> Result<Api> {
        let shared = Arc::new(Shared {
            meta,
            runner,
            config,
        });
        let schema =
            graphql::build_schema(shared.clone()).map_err(|e| Error::Schema(e.to_string()))?;
        let json_schema = serde_json::to_string_pretty(&model::json_schema())
            .map_err(|e| Error::Schema(e.to_string()))?;
        Ok(Api {
            shared,
            schema,
            json_schema,
        })
    }

    /// The GraphQL schema in SDL, for documentation and tests.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// The routes `/graphql` and `/graphql/schema.json`.
    pub fn router(self) -> axum::Router {
        http::router(self)
    }
}
