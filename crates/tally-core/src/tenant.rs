//! Tenants: every event, person and query belongs to exactly one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant's numeric id. Small and dense on purpose: it is a partition key in the
/// store, a column in every table, and a metric-free value (never a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub u32);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for TenantId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(TenantId)
    }
}

/// Resolves API keys to tenants. Ingest depends on this trait, not on the metadata
/// store, so that the distributed mode can back it with PostgreSQL plus a cache.
///
/// Implementations are expected to answer from memory on the hot path: ingest calls
/// `tenant_for_write_key` once per request.
#[async_trait::async_trait]
pub trait TenantDirectory: Send + Sync + 'static {
    /// The tenant whose public write key this is, if any.
    async fn tenant_for_write_key(&self, write_key: &str) -> Option<TenantId>;
}
