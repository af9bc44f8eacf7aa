//! [`CachedMeta`]: a [`MetaStore`] wrapper that answers ingest's write-key lookups from
//! memory, and so implements [`tally_core::TenantDirectory`].
//!
//! Ingest resolves the write key once per HTTP request, so the lookup must not touch
//! SQLite in the common case. The cache holds every tenant's write key: it is filled
//! at start, updated when a tenant is created through this wrapper, and on a miss
//! re-reads SQLite, because another process (the `tally tenant create` CLI) may have
//! created the tenant since. Misses are remembered for a short time so a client
//! hammering with a bad key costs one query per TTL, and keys that cannot be write keys
//! at all are refused without a query.
//!
//! Tenants are never deleted and write keys never change, so positive entries never
//! go stale. Owns nothing but the cache; every other call passes straight through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tally_core::{TenantDirectory, TenantId};

use crate::error::Result;
use crate::keys::KeyKind;
use crate::tenants::{CreatedTenant, MetaStore, OperatorKey, Tenant};

/// How long an unknown write key is answered "unknown" without asking SQLite. Short,
/// because a tenant created by the CLI should start working within seconds.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// At most this many unknown keys are remembered; beyond it the oldest half of the
/// memory is dropped, so random keys cannot grow the cache without bound.
const MAX_NEGATIVE_ENTRIES: usize = 10_000;

pub struct CachedMeta {
    inner: Arc<dyn MetaStore>,
    write_keys: RwLock<HashMap<String, TenantId>>,
    unknown_keys: Mutex<HashMap<String, Instant>>,
    negative_ttl: Duration,
}

impl CachedMeta {
    /// Wraps `inner` and loads every tenant's write key.
    pub async fn new(inner: Arc<dyn MetaStore>) -> Result<Self> {
        Self::with_negative_ttl(inner, DEFAULT_NEGATIVE_TTL).await
    }

    pub async fn with_negative_ttl(
        inner: Arc<dyn MetaStore>,
        negative_ttl: Duration,
    ) -> Result<Self> {
        let tenants = inner.list_tenants().await?;
        let write_keys = tenants.into_iter().map(|t| (t.write_key, t.id)).collect();
        Ok(CachedMeta {
            inner,
            write_keys: RwLock::new(write_keys),
            unknown_keys: Mutex::new(HashMap::new()),
            negative_ttl,
        })
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn MetaStore> {
        &self.inner
    }

    fn remember(&self, write_key: &str, tenant: TenantId) {
        self.write_keys
            .write()
            .insert(write_key.to_string(), tenant);
        self.unknown_keys.lock().remove(write_key);
    }

    /// Whether `write_key` was looked up and not found less than a TTL ago.
    fn recently_unknown(&self, write_key: &str, now: Instant) -> bool {
        self.unknown_keys
            .lock()
            .get(write_key)
            .is_some_and(|since| now.duration_since(*since) < self.negative_ttl)
    }

    fn remember_unknown(&self, write_key: &str, now: Instant) {
        let mut unknown = self.unknown_keys.lock();
        if unknown.len() >= MAX_NEGATIVE_ENTRIES {
            let ttl = self.negative_ttl;
            unknown.retain(|_, since| now.duration_since(*since) < ttl);
            if unknown.len() >= MAX_NEGATIVE_ENTRIES / 2 {
                // Still full of fresh entries: a flood of distinct keys. Forgetting
                // them only costs one query each the next time they come.
                unknown.clear();
            }
        }
        unknown.insert(write_key.to_string(), now);
    }

    async fn lookup(&self, write_key: &str) -> Result<Option<TenantId>> {
        let outcome = |name: &'static str| {
            metrics::counter!("tally_meta_write_key_lookups_total", "outcome" => name).increment(1);
        };
        if let Some(tenant) = self.write_keys.read().get(write_key) {
            outcome("cached");
            return Ok(Some(*tenant));
        }
        if !KeyKind::Write.matches_format(write_key) {
            outcome("malformed");
            return Ok(None);
        }
        let now = Instant::now();
        if self.recently_unknown(write_key, now) {
            outcome("negative_cached");
            return Ok(None);
        }
        match self.inner.tenant_by_write_key(write_key).await {
            Ok(Some(tenant)) => {
                outcome("loaded");
                self.remember(write_key, tenant);
                Ok(Some(tenant))
            }
            Ok(None) => {
                outcome("unknown");
                self.remember_unknown(write_key, now);
                Ok(None)
            }
            Err(error) => {
                // Not remembered: the next request asks again.
                outcome("error");
                Err(error)
            }
        }
    }
}

#[async_trait::async_trait]
impl TenantDirectory for CachedMeta {
    async fn tenant_for_write_key(&self, write_key: &str) -> Option<TenantId> {
        match self.lookup(write_key).await {
            Ok(tenant) => tenant,
            Err(error) => {
                // The trait has no error channel: the client sees an unknown key for
                // this one request (and may retry); the operator sees this warning.
                tracing::warn!(%error, "Write key lookup failed.");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for CachedMeta {
    async fn create_tenant(&self, name: &str) -> Result<CreatedTenant> {
        let created = self.inner.create_tenant(name).await?;
        self.remember(&created.tenant.write_key, created.tenant.id);
        Ok(created)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        self.inner.tenant_by_name(name).await
    }

    async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.inner.tenant_by_id(id).await
    }

    async fn tenant_by_write_key(&self, write_key: &str) -> Result<Option<TenantId>> {
        self.lookup(write_key).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.inner.list_tenants().await
    }

    async fn set_tenant_attributes(
        &self,
        id: TenantId,
        set: &[(String, String)],
        unset: &[String],
    ) -> Result<Tenant> {
        self.inner.set_tenant_attributes(id, set, unset).await
    }

    async fn set_tenant_timezone(&self, id: TenantId, timezone: &str) -> Result<Tenant> {
        self.inner.set_tenant_timezone(id, timezone).await
    }

    async fn rotate_secret_key(&self, id: TenantId) -> Result<String> {
        self.inner.rotate_secret_key(id).await
    }

    async fn tenant_for_secret_key(&self, secret: &str) -> Result<Option<TenantId>> {
        self.inner.tenant_for_secret_key(secret).await
    }

    async fn create_operator_key(&self, label: &str) -> Result<String> {
        self.inner.create_operator_key(label).await
    }

    async fn verify_operator_key(&self, key: &str) -> Result<bool> {
        self.inner.verify_operator_key(key).await
    }

    async fn list_operator_keys(&self) -> Result<Vec<OperatorKey>> {
        self.inner.list_operator_keys().await
    }

    async fn revoke_operator_key(&self, id: i64) -> Result<Option<OperatorKey>> {
        self.inner.revoke_operator_key(id).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the lookups that reach the "database".
    #[derive(Default)]
    struct CountingStore {
        tenants: Mutex<HashMap<String, TenantId>>,
        lookups: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl MetaStore for CountingStore {
        async fn create_tenant(&self, _: &str) -> Result<CreatedTenant> {
            unreachable!("not used by these tests")
        }
        async fn tenant_by_name(&self, _: &str) -> Result<Option<Tenant>> {
            unreachable!("not used by these tests")
        }
        async fn tenant_by_id(&self, _: TenantId) -> Result<Option<Tenant>> {
            unreachable!("not used by these tests")
        }
        async fn tenant_by_write_key(&self, write_key: &str) -> Result<Option<TenantId>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.tenants.lock().get(write_key).copied())
        }
        async fn list_tenants(&self) -> Result<Vec<Tenant>> {
            Ok(Vec::new())
        }
        async fn set_tenant_attributes(
            &self,
            _: TenantId,
            _: &[(String, String)],
            _: &[String],
        ) -> Result<Tenant> {
            unreachable!("not used by these tests")
        }
        async fn set_tenant_timezone(&self, _: TenantId, _: &str) -> Result<Tenant> {
            unreachable!("not used by these tests")
        }
        async fn rotate_secret_key(&self, _: TenantId) -> Result<String> {
            unreachable!("not used by these tests")
        }
        async fn tenant_for_secret_key(&self, _: &str) -> Result<Option<TenantId>> {
            unreachable!("not used by these tests")
        }
        async fn create_operator_key(&self, _: &str) -> Result<String> {
            unreachable!("not used by these tests")
        }
        async fn verify_operator_key(&self, _: &str) -> Result<bool> {
            unreachable!("not used by these tests")
        }
        async fn list_operator_keys(&self) -> Result<Vec<OperatorKey>> {
            unreachable!("not used by these tests")
        }
        async fn revoke_operator_key(&self, _: i64) -> Result<Option<OperatorKey>> {
            unreachable!("not used by these tests")
        }
    }

    #[tokio::test]
    async fn unknown_keys_are_negatively_cached_until_the_ttl_passes() {
        let store = Arc::new(CountingStore::default());
        // A TTL long enough never to expire during the first phase of the test.
        let cache = CachedMeta::with_negative_ttl(store.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let key = KeyKind::Write.generate();
        for _ in 0..100 {
            assert_eq!(cache.tenant_for_write_key(&key).await, None);
        }
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1, "one query per TTL");

        // Keys that cannot be write keys never reach the store.
        for bad in ["", "phc_123", "tly_sec_x", &KeyKind::Secret.generate()] {
            assert_eq!(cache.tenant_for_write_key(bad).await, None);
        }
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);

        // With a zero TTL the miss is re-checked, finds the tenant another process
        // created, and from then on answers from memory.
        let cache = CachedMeta::with_negative_ttl(store.clone(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(cache.tenant_for_write_key(&key).await, None);
        store.tenants.lock().insert(key.clone(), TenantId(9));
        assert_eq!(cache.tenant_for_write_key(&key).await, Some(TenantId(9)));
        let before = store.lookups.load(Ordering::SeqCst);
        assert_eq!(cache.tenant_for_write_key(&key).await, Some(TenantId(9)));
        assert_eq!(store.lookups.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn a_flood_of_distinct_unknown_keys_keeps_the_negative_cache_bounded() {
        let store = Arc::new(CountingStore::default());
        let cache = CachedMeta::with_negative_ttl(store.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        for _ in 0..(MAX_NEGATIVE_ENTRIES * 2 + 10) {
            cache.tenant_for_write_key(&KeyKind::Write.generate()).await;
            assert!(cache.unknown_keys.lock().len() <= MAX_NEGATIVE_ENTRIES);
        }
    }
}
