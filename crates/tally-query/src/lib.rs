//! Tally's analytics query model, its exact semantics, and an obviously-correct
//! reference implementation of them.
//!
//! This crate is the single source of truth for what a query *is* and what its answer
//! *means*: trends, funnels, retention, the events and persons lists, schema discovery,
//! and operator (cross-tenant) variants of them. The types are plain serde structs and
//! enums (snake_case JSON, doc comments on every public item, enforced by
//! `missing_docs`) so that the GraphQL input types and a JSON Schema can be derived from
//! them. Unions are tagged by `type`, except the [`Query`]/[`QueryResult`] envelopes,
//! tagged by `kind` because they wrap `type`-tagged results, and [`Scope`], written
//! `{"tenant": 7}` or `{"operator": {...}}`. Filter values ([`Scalar`]) and breakdown
//! values are JSON scalars (a custom scalar in GraphQL). Every query carries its
//! [`Scope`] and validates itself ([`Query::validate`]) with errors that name the
//! offending field ([`QueryError`], a `BadRequest`).
//!
//! [`reference`](mod@reference) answers trends, funnels, retention, events and schema queries over an
//! in-memory list of events by brute force. It is the oracle the engines are
//! property-tested against, with event sets from `testgen` (feature `testgen`).
//! The written specification with worked examples is `docs/QUERY-SEMANTICS.md`; its
//! examples are unit tests of the reference.
//!
//! Not here: IO, async, SQL, DataFusion, ClickHouse. The compiler from this model to
//! plans, the engines' operators and the GraphQL API live in other crates. This crate
//! must build in seconds.

#![warn(missing_docs)]

pub mod breakdown;
pub mod error;
pub mod events;
pub mod filter;
pub mod formula;
pub mod funnel;
pub mod persons;
pub mod query;
pub mod reference;
pub mod retention;
pub mod schema;
pub mod scope;
#[cfg(any(test, feature = "testgen"))]
pub mod testgen;
pub mod time;
pub mod trends;

pub use breakdown::{Breakdown, BreakdownValue};
pub use error::{QueryError, Result};
pub use events::{EventRow, EventsCursor, EventsQuery, EventsResult};
pub use filter::{
    EventMatcher, Filter, FilterValue, Operator, PropertyFilter, PropertyRef, PropertySource,
    Scalar,
};
pub use formula::Formula;
pub use funnel::{
    FunnelExclusion, FunnelOrder, FunnelQuery, FunnelResult, FunnelStep, FunnelView, PersonCursor,
    PersonKey, StepStatus,
};
pub use persons::{PersonRow, PersonsQuery, PersonsResult};
pub use query::{Query, QueryResult};
pub use retention::{CohortKind, RetentionPeriod, RetentionQuery, RetentionResult, ReturnMode};
pub use schema::{SchemaQuery, SchemaRequest, SchemaResult};
pub use scope::{Scope, TenantSelector};
pub use time::{
    Bucket, Calendar, DateRange, Interval, RangeUnit, TimeRange, WeekStart, Window, WindowUnit,
};
pub use trends::{
    Math, PerPersonAggregation, PropertyAggregation, TrendsQuery, TrendsResult, TrendsSeries,
};
