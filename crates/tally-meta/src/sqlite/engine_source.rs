//! [`tally_core::IdentitySource`] for [`SqliteMeta`]: what the query engine reads to
//! resolve distinct ids to persons and to filter and break down on person properties.
//!
//! Owns the adapter only: person ids are rendered as the lower-case hyphenated UUID
//! text the identity map stores, versions come from `identity_versions` and
//! `person_versions`, and each answer is one read transaction so a version always
//! describes exactly the rows returned with it. The identity rules and the writes are
//! elsewhere (`crate::identity`, `super::persons`).

use sqlx::SqliteConnection;
use tally_core::{IdentitySource, PersonRecord, TenantId};

use super::{SqliteMeta, properties_from_row, tenant_param};
use crate::error::{Error, Result};
use crate::persons::PersonStore;

async fn read_persons_version(conn: &mut SqliteConnection, tenant: TenantId) -> Result<u64> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM person_versions WHERE tenant_id = ?")
            .bind(tenant_param(tenant))
            .fetch_optional(&mut *conn)
            .await?;
    let version = version.unwrap_or(0);
    u64::try_from(version)
        .map_err(|_| Error::corrupt(format!("person version {version} is negative")))
}

impl SqliteMeta {
    /// Every person of `tenant`, ordered by id, with the persons version of the same
    /// snapshot.
    pub async fn person_records(&self, tenant: TenantId) -> Result<(u64, Vec<PersonRecord>)> {
        let mut tx = self.pool.begin().await?;
        let version = read_persons_version(&mut tx, tenant).await?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, properties, created_at FROM persons WHERE tenant_id = ? ORDER BY id",
        )
        .bind(tenant_param(tenant))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let persons = rows
            .into_iter()
            .map(|(person_id, properties, created_at)| {
                Ok(PersonRecord {
                    person_id,
                    properties: properties_from_row(&properties)?,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((version, persons))
    }

    /// The persons version of `tenant` (0 before its first person).
    pub async fn persons_version_of(&self, tenant: TenantId) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        read_persons_version(&mut conn, tenant).await
    }
}

#[async_trait::async_trait]
impl IdentitySource for SqliteMeta {
    async fn distinct_id_map(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<(u64, Vec<(String, String)>), String> {
        let (version, map) = PersonStore::distinct_id_map(self, tenant)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            version,
            map.into_iter()
                .map(|(distinct_id, person)| (distinct_id, person.to_string()))
                .collect(),
        ))
    }

    async fn identity_version(&self, tenant: TenantId) -> std::result::Result<Option<u64>, String> {
        PersonStore::identity_version(self, tenant)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    async fn persons_version(&self, tenant: TenantId) -> std::result::Result<u64, String> {
        self.persons_version_of(tenant)
            .await
            .map_err(|e| e.to_string())
    }

    async fn persons(
        &self,
        tenant: TenantId,
    ) -> std::result::Result<(u64, Vec<PersonRecord>), String> {
        self.person_records(tenant).await.map_err(|e| e.to_string())
    }
}
