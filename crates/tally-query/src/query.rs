//! The envelope of every query kind: what the CLI reads from `query.json` and what the
//! API dispatches on.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::events::{EventsQuery, EventsResult};
use crate::funnel::{FunnelQuery, FunnelResult};
use crate::persons::{PersonsQuery, PersonsResult};
use crate::retention::{RetentionQuery, RetentionResult};
use crate::schema::{SchemaQuery, SchemaResult};
use crate::scope::Scope;
use crate::trends::{TrendsQuery, TrendsResult};

/// Any query, tagged by `kind`: `{"kind": "trends", "scope": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    /// A [`TrendsQuery`].
    Trends(TrendsQuery),
    /// A [`FunnelQuery`].
    Funnel(FunnelQuery),
    /// A [`RetentionQuery`].
    Retention(RetentionQuery),
    /// An [`EventsQuery`].
    Events(EventsQuery),
    /// A [`PersonsQuery`].
    Persons(PersonsQuery),
    /// A [`SchemaQuery`].
    Schema(SchemaQuery),
}

impl Query {
    /// The tenants the query reads.
    pub fn scope(&self) -> &Scope {
        match self {
            Query::Trends(q) => &q.scope,
            Query::Funnel(q) => &q.scope,
            Query::Retention(q) => &q.scope,
            Query::Events(q) => &q.scope,
            Query::Persons(q) => &q.scope,
            Query::Schema(q) => &q.scope,
        }
    }

    /// Replaces the scope: the API sets it from the credentials, whatever the client
    /// wrote.
    pub fn set_scope(&mut self, scope: Scope) {
        match self {
            Query::Trends(q) => q.scope = scope,
            Query::Funnel(q) => q.scope = scope,
            Query::Retention(q) => q.scope = scope,
            Query::Events(q) => q.scope = scope,
            Query::Persons(q) => q.scope = scope,
            Query::Schema(q) => q.scope = scope,
        }
    }

    /// Checks everything that can be checked without the clock or data.
    pub fn validate(&self) -> Result<()> {
        match self {
            Query::Trends(q) => q.validate(),
            Query::Funnel(q) => q.validate(),
            Query::Retention(q) => q.validate(),
            Query::Events(q) => q.validate(),
            Query::Persons(q) => q.validate(),
            Query::Schema(q) => q.validate(),
        }
    }
}

/// The answer to a [`Query`], tagged like it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryResult {
    /// Answers [`Query::Trends`].
    Trends(TrendsResult),
    /// Answers [`Query::Funnel`].
    Funnel(FunnelResult),
    /// Answers [`Query::Retention`].
    Retention(RetentionResult),
    /// Answers [`Query::Events`].
    Events(EventsResult),
    /// Answers [`Query::Persons`].
    Persons(PersonsResult),
    /// Answers [`Query::Schema`].
    Schema(SchemaResult),
}
