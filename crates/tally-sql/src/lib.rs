//! Tally's query compiler: `tally_query` queries in, SQL text out, for an abstract
//! [`Dialect`] with two implementations, [`DataFusionDialect`] (the embedded engine)
//! and [`ClickHouseDialect`] (the distributed mode).
//!
//! Owns: tenant scoping (every compiled statement reads events, identities and persons
//! only through relations the dialect restricts to the tenant of the query's
//! [`Scope`]; there is no API that takes a tenant separately),
//! quoting (all user text goes through [`Dialect::quote_string`] or
//! [`Dialect::quote_identifier`]), resolution of property references through a
//! [`PropertyCatalog`] (typed columns when materialised, JSON extraction otherwise),
//! identity resolution (`person_id = coalesce(mapped person, distinct_id)` through a
//! join, so merges apply retroactively), and the SQL shape of trends, funnels and
//! retention. Funnels and retention compile to one pass per person through the
//! `tally_funnel` / `tally_retention` aggregates whose contracts are in
//! `docs/QUERY-ENGINE.md`, [`funnel`] and [`retention`].
//!
//! Does not own: IO, execution, the aggregates' implementations, or turning result
//! rows into `tally_query` results (the engine does those). Pure and synchronous.

pub mod catalog;
pub mod dialect;
pub mod events;
mod expr;
pub mod funnel;
pub mod persons;
pub mod retention;
pub mod schema;
pub mod trends;

pub use catalog::{KeyColumns, PropertyCatalog};
pub use dialect::{ClickHouseDialect, DataFusionDialect, Dialect, TenantRelation};
pub use events::{EventsPlan, compile_events};
pub use expr::{BreakdownKey, PropertyValue};
pub use funnel::{FunnelPlan, FunnelSpec, compile_funnel};
pub use persons::{PersonsPlan, compile_persons};
pub use retention::{RetentionPlan, RetentionSpec, compile_retention};
pub use schema::{SchemaPlan, compile_schema};
pub use trends::{PeriodPlan, TrendsPlan, compile_trends};

use tally_core::{Classify, ErrorClass, TenantId};
use tally_query::{QueryError, Scope};

/// Result of compilation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a query cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query is invalid (validation, time zone, date range, formula).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The query is valid but uses something this compiler does not support yet.
    #[error("not supported by the SQL compiler yet: {0}")]
    Unsupported(String),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Query(e) => e.class(),
            Error::Unsupported(_) => ErrorClass::BadRequest,
        }
    }
}

/// The one tenant a compiled query reads: taken from the query's scope, never from a
/// separate argument, so the caller cannot pair a query with another tenant's data.
pub(crate) fn scope_tenant(scope: &Scope) -> Result<TenantId> {
    match scope {
        Scope::Tenant(t) => Ok(*t),
        Scope::Operator { .. } => Err(Error::Unsupported(
            "operator (cross-tenant) queries; run them per tenant".to_string(),
        )),
    }
}

/// What the compiler needs besides the query: the instant relative ranges resolve
/// against, the tenant's default time zone, and which typed property columns exist.
#[derive(Debug, Clone)]
pub struct CompileContext<'a> {
    /// "Now", UTC microseconds.
    pub now: i64,
    /// The tenant's time zone setting (IANA name), used when the query names none.
    pub tenant_time_zone: Option<&'a str>,
    /// The tenant's typed property columns.
    pub catalog: &'a PropertyCatalog,
}
