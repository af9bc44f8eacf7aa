//! The seam between the query engine and wherever identities and persons live.
//!
//! The engine resolves `distinct_id -> person_id` at query time and reads person
//! properties for person-property filters, breakdowns and the persons list. It depends
//! on this trait, not on the metadata store: in the single-binary mode
//! `tally_meta::SqliteMeta` implements it, in the distributed mode a PostgreSQL or
//! ClickHouse dictionary will. Both halves are versioned so that the engine can keep
//! an in-memory table per tenant and rebuild it only when the source changed.
//!
//! Errors are plain text: the engine reports them as internal errors and logs them;
//! nothing a client sent can cause one.

use crate::event::Properties;
use crate::tenant::TenantId;

/// One person as the query engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRecord {
    /// The person id as the identity map names it (UUID text for the metadata store).
    pub person_id: String,
    /// The person's current properties.
    pub properties: Properties,
    /// When the person was created (UTC microseconds).
    pub created_at: i64,
}

/// Identity merges and persons of a tenant, versioned for caching.
#[async_trait::async_trait]
pub trait IdentitySource: Send + Sync {
    /// The tenant's identity map `[(distinct_id, person_id)]` and its version (which
    /// changes whenever the map does). Unmapped distinct ids are absent: they are their
    /// own person.
    async fn distinct_id_map(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<(u64, Vec<(String, String)>), String>;

    /// The current version of the tenant's identity map, if the source can tell it
    /// without reading the map: then the engine reads the map only when it changed.
    /// `None` (the default) means "unknown": the engine reads the whole map on every
    /// query and compares the version it comes with.
    async fn identity_version(&self, tenant: TenantId) -> std::result::Result<Option<u64>, String> {
        let _ = tenant;
        Ok(None)
    }

    /// The current version of the tenant's persons: changes whenever a person is
    /// created, merged away or has its properties changed. Cheap: the engine asks on
    /// every query that reads persons.
    async fn persons_version(&self, tenant: TenantId) -> std::result::Result<u64, String>;

    /// Every person of the tenant with the version of that snapshot (the same value
    /// [`IdentitySource::persons_version`] returned at the time it was read).
    async fn persons(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<(u64, Vec<PersonRecord>), String>;
}
