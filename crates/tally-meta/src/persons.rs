//! Persons, distinct ids and groups as seen from outside: the [`PersonStore`] trait and
//! the records it returns.
//!
//! Owns the API; the rules that turn events into identity changes live in
//! `crate::identity`, and their SQLite persistence in `sqlite::persons`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_core::{EventBatch, Properties, TenantId};
use uuid::Uuid;

use crate::error::Result;

/// Largest page that [`PersonStore::persons`] and [`PersonStore::groups`] return,
/// whatever `limit` asks for.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// A person: the set of distinct ids known to be one human, with their properties.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Person {
    /// Stable unless the person is merged into another; a merged-away id still
    /// resolves through [`PersonStore::person_by_id`].
    pub id: Uuid,
    pub properties: Properties,
    /// Sorted.
    pub distinct_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Set by `$identify`: the person is a known user, not just an anonymous device.
    pub is_identified: bool,
}

/// A group (company, team, project, ...) of some group type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub group_type: String,
    pub key: String,
    pub properties: Properties,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What one [`PersonStore::apply_events`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityStats {
    /// Every event passed in, including those without identity effects.
    pub events: u64,
    /// Events that touched persons or groups.
    pub events_with_effects: u64,
    pub persons_created: u64,
    /// Distinct ids newly attached to an existing or new person.
    pub distinct_ids_attached: u64,
    pub merges: u64,
    /// Merges not done because the person to be merged away was already identified.
    pub refused_merges: u64,
    /// Events, or the other id of an `$identify`/`$create_alias`, ignored because the
    /// id is on the denylist ([`tally_core::identity::DENYLISTED_DISTINCT_IDS`]).
    pub ignored_denylisted: u64,
    /// Malformed identity or group events (e.g. `$groupidentify` without a key).
    pub ignored_invalid: u64,
    pub groups_upserted: u64,
    /// The call's log position had already been applied: nothing was changed.
    pub already_applied: bool,
}

/// Identity resolution and person/group properties.
#[async_trait::async_trait]
pub trait PersonStore: Send + Sync {
    /// Applies the identity and person-property effects of events, in order, in one
    /// transaction, and records `lsn` as applied: afterwards every log record up to and
    /// including `lsn` counts as applied. A call whose `lsn` is not above the applied
    /// one is a replay and changes nothing (`already_applied` is set in the stats).
    /// LSN 0 means "before the first record" and may only come with no events.
    async fn apply_events(&self, lsn: u64, batches: &[EventBatch]) -> Result<IdentityStats>;

    /// Applies the effects of events that were never written to the log — bulk loads
    /// of generated demo data — leaving the applied log position unchanged. Unlike
    /// [`PersonStore::apply_events`] this is not guarded against replays: the caller
    /// applies each event exactly once.
    async fn apply_unlogged(&self, batches: &[EventBatch]) -> Result<IdentityStats>;

    /// The log position through which effects have been applied (0: none yet).
    async fn applied_lsn(&self) -> Result<u64>;

    async fn person_for_distinct_id(
        &self,
        tenant: TenantId,
        distinct_id: &str,
    ) -> Result<Option<Person>>;

    /// The person with this id, following merges: a merged-away id yields the person
    /// that absorbed it.
    async fn person_by_id(&self, tenant: TenantId, id: Uuid) -> Result<Option<Person>>;

    /// Persons ordered by id (UUIDv7, so roughly by creation), starting after the
    /// cursor `after` (the last id of the previous page). At most
    /// `min(limit, MAX_PAGE_SIZE)` persons.
    async fn persons(
        &self,
        tenant: TenantId,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Person>>;

    /// Every mapped distinct id of the tenant with its person id, sorted by distinct
    /// id, and the mapping's version. The version changes whenever the mapping does,
    /// so a reader may cache the map and compare [`PersonStore::identity_version`].
    async fn distinct_id_map(&self, tenant: TenantId) -> Result<(u64, Vec<(String, Uuid)>)>;

    /// The current mapping version (0 until the tenant's first mapping).
    async fn identity_version(&self, tenant: TenantId) -> Result<u64>;

    async fn group(&self, tenant: TenantId, group_type: &str, key: &str) -> Result<Option<Group>>;

    /// Groups of one type ordered by key, starting after the key `after`. At most
    /// `min(limit, MAX_PAGE_SIZE)` groups.
    async fn groups(
        &self,
        tenant: TenantId,
        group_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Group>>;

    /// The tenant's group types in first-seen order (PostHog's `$group_0..N` order).
    async fn group_types(&self, tenant: TenantId) -> Result<Vec<String>>;
}
