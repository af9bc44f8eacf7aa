//! The reference implementation: every query kind answered by brute force over an
//! in-memory list of events, written to be obviously correct rather than fast.
//!
//! Owns the executable form of `docs/QUERY-SEMANTICS.md`. Engines (DataFusion,
//! ClickHouse) are property-tested against it on generated event sets
//! (`crate::testgen`); where an engine and the reference disagree, the reference and
//! the spec decide, or both are changed together.
//!
//! Its input is already resolved: each [`RefEvent`] carries the person id its distinct
//! id maps to *at query time* (merges applied retroactively), the person's current
//! properties and the current properties of its groups. Resolving identities is the
//! metadata store's job, not the query semantics'.
//!
//! Not here: persons listing (persons live in the metadata store, not in events),
//! performance of any kind. Complexity is exponential in the worst case for funnels
//! (every chain of step events is enumerated); keep inputs small.

use std::collections::BTreeMap;

use tally_core::{Properties, TenantId};
use uuid::Uuid;

use crate::error::QueryError;
use crate::query::{Query, QueryResult};

mod eval;
pub mod events;
#[cfg(test)]
mod examples;
pub mod funnel;
#[cfg(test)]
mod proptests;
pub mod retention;
pub mod schema;
mod stats;
pub mod trends;

/// One event, with identities and person/group properties resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RefEvent {
    /// The event's tenant.
    pub tenant: TenantId,
    /// The event's dedup key (unique within a tenant).
    pub uuid: Uuid,
    /// The event name.
    pub event: String,
    /// The distinct id the event was sent with.
    pub distinct_id: String,
    /// The person the distinct id maps to when the query runs (an unmapped distinct id
    /// is its own person: pass the distinct id).
    pub person_id: String,
    /// UTC microseconds.
    pub timestamp: i64,
    /// The event's properties.
    pub properties: Properties,
    /// The person's current properties (identical on all events of a person).
    pub person_properties: Properties,
    /// The event's groups by group type, with their current properties.
    pub groups: BTreeMap<String, RefGroup>,
}

/// A group an event belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct RefGroup {
    /// The group key (e.g. the company id).
    pub key: String,
    /// The group's current properties.
    pub properties: Properties,
}

/// What the reference knows about a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTenant {
    /// The tenant's id.
    pub id: TenantId,
    /// The tenant's slug.
    pub name: String,
    /// IANA time zone used when a query names none.
    pub time_zone: String,
    /// Operator-managed attributes (`plan`, `arr`, ...).
    pub attributes: BTreeMap<String, String>,
}

/// Everything besides the events that a query's answer depends on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RefContext {
    /// The current instant (UTC microseconds): relative date ranges and "not yet
    /// started" retention periods depend on it.
    pub now: i64,
    /// Known tenants. A tenant missing here has time zone UTC, no name and no
    /// attributes.
    pub tenants: Vec<RefTenant>,
}

impl RefContext {
    /// A context with no tenant metadata.
    pub fn at(now: i64) -> Self {
        RefContext {
            now,
            tenants: Vec::new(),
        }
    }

    /// The tenant with this id, if known.
    pub fn tenant(&self, id: TenantId) -> Option<&RefTenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// The reference's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the reference could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The query is invalid.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An event's timestamp cannot be placed on a calendar.
    #[error("event {uuid} has timestamp {timestamp}, outside the representable range")]
    TimestampOutOfRange {
        /// The event.
        uuid: Uuid,
        /// Its timestamp.
        timestamp: i64,
    },
    /// A tenant's configured time zone is not a known IANA name.
    #[error("tenant {tenant} has an unknown time zone `{time_zone}`")]
    TenantTimeZone {
        /// The tenant.
        tenant: TenantId,
        /// Its configured time zone.
        time_zone: String,
    },
    /// The query kind is not answered from events.
    #[error("the reference implementation does not answer {0} queries")]
    Unsupported(&'static str),
}

/// Answers any query the reference supports.
pub fn run(query: &Query, events: &[RefEvent], ctx: &RefContext) -> Result<QueryResult> {
    Ok(match query {
        Query::Trends(q) => QueryResult::Trends(trends::trends(q, events, ctx)?),
        Query::Funnel(q) => QueryResult::Funnel(funnel::funnel(q, events, ctx)?),
        Query::Retention(q) => QueryResult::Retention(retention::retention(q, events, ctx)?),
        Query::Events(q) => QueryResult::Events(events::events(q, events, ctx)?),
        Query::Schema(q) => QueryResult::Schema(schema::schema(q, events, ctx)?),
        Query::Persons(_) => return Err(Error::Unsupported("persons")),
    })
}
