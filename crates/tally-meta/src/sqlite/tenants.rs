//! Tenants, tenant attributes and keys in SQLite.

use std::collections::{BTreeMap, HashSet};

use sqlx::SqliteConnection;
use tally_core::TenantId;

use super::{SqliteMeta, datetime_from_micros, tenant_from_row, tenant_param};
use crate::error::{Error, Result};
use crate::keys::{
    KeyKind, canonical_timezone, hash_secret, validate_attribute, validate_label,
    validate_tenant_name,
};
use crate::tenants::{CreatedTenant, MetaStore, OperatorKey, Tenant};

type TenantRow = (i64, String, String, String, i64);

const SELECT_TENANT: &str = "SELECT id, name, write_key, timezone, created_at FROM tenants";

enum TenantFilter<'a> {
    Id(TenantId),
    Name(&'a str),
}

fn tenant_from_parts(row: TenantRow, attributes: BTreeMap<String, String>) -> Result<Tenant> {
    let (id, name, write_key, timezone, created_at) = row;
    Ok(Tenant {
        id: tenant_from_row(id)?,
        name,
        write_key,
        created_at: datetime_from_micros(created_at)?,
        timezone,
        attributes,
    })
}

async fn fetch_tenant(
    conn: &mut SqliteConnection,
    filter: TenantFilter<'_>,
) -> Result<Option<Tenant>> {
    let row: Option<TenantRow> = match filter {
        TenantFilter::Id(id) => {
            sqlx::query_as(&format!("{SELECT_TENANT} WHERE id = ?"))
                .bind(tenant_param(id))
                .fetch_optional(&mut *conn)
                .await?
        }
        TenantFilter::Name(name) => {
            sqlx::query_as(&format!("{SELECT_TENANT} WHERE name = ?"))
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let Some(row) = row else {
        return Ok(None);
    };
    let attributes: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM tenant_attributes WHERE tenant_id = ?")
            .bind(row.0)
            .fetch_all(&mut *conn)
            .await?;
    tenant_from_parts(row, attributes.into_iter().collect()).map(Some)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait::async_trait]
impl MetaStore for SqliteMeta {
    async fn create_tenant(&self, name: &str) -> Result<CreatedTenant> {
        validate_tenant_name(name)?;
        let write_key = KeyKind::Write.generate();
        let secret_key = KeyKind::Secret.generate();
        let created_at = tally_core::time::now_micros();

        let mut tx = self.begin_write().await?;
        // Checked first (under the write lock) so the common conflict gets a precise
        // error; the UNIQUE constraint remains the real guarantee.
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(Error::TenantAlreadyExists { name: name.into() });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tenants (name, write_key, secret_key_hash, timezone, created_at)
             VALUES (?, ?, ?, 'UTC', ?) RETURNING id",
        )
        .bind(name)
        .bind(&write_key)
        .bind(hash_secret(&secret_key))
        .bind(created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::TenantAlreadyExists { name: name.into() }
            } else {
                e.into()
            }
        })?;
        let id = u32::try_from(id).map_err(|_| Error::TenantIdsExhausted)?;
        tx.commit().await?;

        metrics::counter!("tally_meta_tenants_created_total").increment(1);
        tracing::info!(tenant = id, name, "Created tenant.");
        Ok(CreatedTenant {
            tenant: Tenant {
                id: TenantId(id),
                name: name.to_string(),
                write_key,
                created_at: datetime_from_micros(created_at)?,
                timezone: "UTC".to_string(),
                attributes: BTreeMap::new(),
            },
            secret_key,
        })
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        // A read transaction, so the tenant row and its attributes are one snapshot.
        let mut tx = self.pool.begin().await?;
        let tenant = fetch_tenant(&mut tx, TenantFilter::Name(name)).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>> {
        let mut tx = self.pool.begin().await?;
        let tenant = fetch_tenant(&mut tx, TenantFilter::Id(id)).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant_by_write_key(&self, write_key: &str) -> Result<Option<TenantId>> {
        if !KeyKind::Write.matches_format(write_key) {
            return Ok(None);
        }
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM tenants WHERE write_key = ?")
            .bind(write_key)
            .fetch_optional(&self.pool)
            .await?;
        id.map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<TenantRow> = sqlx::query_as(&format!("{SELECT_TENANT} ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?;
        let attribute_rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT tenant_id, key, value FROM tenant_attributes")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut attributes: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
        for (tenant, key, value) in attribute_rows {
            attributes.entry(tenant).or_default().insert(key, value);
        }
        rows.into_iter()
            .map(|row| {
                let attrs = attributes.remove(&row.0).unwrap_or_default();
                tenant_from_parts(row, attrs)
            })
            .collect()
    }

    async fn set_tenant_attributes(
        &self,
        id: TenantId,
        set: &[(String, String)],
        unset: &[String],
    ) -> Result<Tenant> {
        for (key, value) in set {
            validate_attribute(key, Some(value))?;
        }
        for key in unset {
            validate_attribute(key, None)?;
        }
        let set_keys: HashSet<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
        if let Some(both) = unset.iter().find(|k| set_keys.contains(k.as_str())) {
            return Err(Error::InvalidAttribute {
                key: both.clone(),
                reason: "it is both set and removed in one request",
            });
        }

        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM tenants WHERE id = ?")
            .bind(tenant_param(id))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::TenantNotFound(id));
        }
        for (key, value) in set {
            sqlx::query(
                "INSERT INTO tenant_attributes (tenant_id, key, value) VALUES (?, ?, ?)
                 ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(tenant_param(id))
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        for key in unset {
            sqlx::query("DELETE FROM tenant_attributes WHERE tenant_id = ? AND key = ?")
                .bind(tenant_param(id))
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        let tenant = fetch_tenant(&mut tx, TenantFilter::Id(id))
            .await?
            .ok_or(Error::TenantNotFound(id))?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn set_tenant_timezone(&self, id: TenantId, timezone: &str) -> Result<Tenant> {
        let timezone = canonical_timezone(timezone)?;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE tenants SET timezone = ? WHERE id = ?")
            .bind(&timezone)
            .bind(tenant_param(id))
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::TenantNotFound(id));
        }
        let tenant = fetch_tenant(&mut tx, TenantFilter::Id(id))
            .await?
            .ok_or(Error::TenantNotFound(id))?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn rotate_secret_key(&self, id: TenantId) -> Result<String> {
        let secret_key = KeyKind::Secret.generate();
        let updated = sqlx::query("UPDATE tenants SET secret_key_hash = ? WHERE id = ?")
            .bind(hash_secret(&secret_key))
            .bind(tenant_param(id))
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::TenantNotFound(id));
        }
        tracing::info!(tenant = %id, "Rotated tenant secret key.");
        Ok(secret_key)
    }

    async fn tenant_for_secret_key(&self, secret: &str) -> Result<Option<TenantId>> {
        if !KeyKind::Secret.matches_format(secret) {
            return Ok(None);
        }
        // Looking the digest up through an index is not a timing oracle worth
        // worrying about: learning which digest prefixes exist does not help to find
        // a preimage of a 238-bit random key.
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM tenants WHERE secret_key_hash = ?")
                .bind(hash_secret(secret))
                .fetch_optional(&self.pool)
                .await?;
        id.map(tenant_from_row).transpose()
    }

    async fn create_operator_key(&self, label: &str) -> Result<String> {
        validate_label(label)?;
        let key = KeyKind::Operator.generate();
        sqlx::query("INSERT INTO operator_keys (label, key_hash, created_at) VALUES (?, ?, ?)")
            .bind(label)
            .bind(hash_secret(&key))
            .bind(tally_core::time::now_micros())
            .execute(&self.pool)
            .await?;
        tracing::info!(label, "Created operator key.");
        Ok(key)
    }

    async fn verify_operator_key(&self, key: &str) -> Result<bool> {
        if !KeyKind::Operator.matches_format(key) {
            return Ok(false);
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM operator_keys WHERE key_hash = ?")
                .bind(hash_secret(key))
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn list_operator_keys(&self) -> Result<Vec<OperatorKey>> {
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT id, label, created_at FROM operator_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(operator_key_from_row).collect()
    }

    async fn revoke_operator_key(&self, id: i64) -> Result<Option<OperatorKey>> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "DELETE FROM operator_keys WHERE id = ? RETURNING id, label, created_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let revoked = row.map(operator_key_from_row).transpose()?;
        if let Some(key) = &revoked {
            tracing::info!(id, label = %key.label, "Revoked operator key.");
        }
        Ok(revoked)
    }
}

fn operator_key_from_row((id, label, created_at): (i64, String, i64)) -> Result<OperatorKey> {
    Ok(OperatorKey {
        id,
        label,
        created_at: datetime_from_micros(created_at)?,
    })
}
