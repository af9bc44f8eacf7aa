//! The tenant and key model: what a tenant is, and the [`MetaStore`] trait that
//! administers tenants, their keys and operator keys.
//!
//! Owns the shape of the API; the SQLite implementation lives in `sqlite::tenants` and
//! the in-memory write-key cache for ingest in [`crate::directory`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_core::TenantId;

use crate::error::Result;

/// A tenant: one customer's isolated analytics project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    /// A unique slug, `[a-z0-9][a-z0-9_-]{0,62}`.
    pub name: String,
    /// The public ingest key (`tly_pub_...`).
    pub write_key: String,
    pub created_at: DateTime<Utc>,
    /// IANA time zone for day/week bucketing in queries; `"UTC"` unless set.
    pub timezone: String,
    /// Free-form operator-managed settings (plan, owner, retention notes, ...).
    pub attributes: BTreeMap<String, String>,
}

/// A new tenant plus its secret read key. The secret exists in clear text only here:
/// the store keeps its hash, so it cannot be shown again (only rotated).
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub secret_key: String,
}

/// Tenant, key and operator-key administration.
///
/// Implemented by [`crate::SqliteMeta`] for the single-binary mode, and by
/// [`crate::CachedMeta`] which adds the in-memory write-key map that ingest needs.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync {
    /// Creates a tenant with fresh write and secret keys.
    /// Fails with `InvalidTenantName` or `TenantAlreadyExists`.
    async fn create_tenant(&self, name: &str) -> Result<CreatedTenant>;

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;

    async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>>;

    /// The tenant whose public write key this is. Ingest should go through
    /// [`crate::CachedMeta`] (a [`tally_core::TenantDirectory`]) rather than call this
    /// once per request.
    async fn tenant_by_write_key(&self, write_key: &str) -> Result<Option<TenantId>>;

    /// All tenants, ordered by id.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    /// Sets and removes attributes in one step and returns the updated tenant. A key
    /// may not appear in both lists; removing an absent key is not an error.
    async fn set_tenant_attributes(
        &self,
        id: TenantId,
        set: &[(String, String)],
        unset: &[String],
    ) -> Result<Tenant>;

    /// Sets the tenant's IANA time zone (validated against the tz database, stored in
    /// its canonical spelling).
    async fn set_tenant_timezone(&self, id: TenantId, timezone: &str) -> Result<Tenant>;

    /// Replaces the tenant's secret read key; the old one stops working at once.
    /// Returns the new key, which is not stored in clear text anywhere.
    async fn rotate_secret_key(&self, id: TenantId) -> Result<String>;

    /// The tenant that a secret read key belongs to, if any.
    async fn tenant_for_secret_key(&self, secret: &str) -> Result<Option<TenantId>>;

    /// Issues an operator key (cross-tenant query access) with a human label.
    async fn create_operator_key(&self, label: &str) -> Result<String>;

    async fn verify_operator_key(&self, key: &str) -> Result<bool>;

    /// Every operator key that works, oldest first (ids and labels; the keys
    /// themselves are stored only as digests).
    async fn list_operator_keys(&self) -> Result<Vec<OperatorKey>>;

    /// Revokes an operator key by id: it stops working at once, in every process
    /// (verification reads the store each time). Returns the revoked key, `None` when
    /// no key has that id.
    async fn revoke_operator_key(&self, id: i64) -> Result<Option<OperatorKey>>;
}

/// An issued operator key, without the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorKey {
    pub id: i64,
    pub label: String,
    pub created_at: DateTime<Utc>,
}
