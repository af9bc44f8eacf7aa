//! Persons, distinct ids, merges and groups in SQLite: loading the state the identity
//! rules need, writing back what they changed, and the read queries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use tally_core::{EventBatch, TenantId};
use uuid::Uuid;

use super::{
    MAX_BINDS_PER_STATEMENT, SqliteMeta, datetime_from_micros, properties_from_row,
    properties_to_row, tenant_param, uuid_from_row,
};
use crate::error::{Error, Result};
use crate::identity::{
    Effect, StoredGroup, StoredPerson, TenantWork, distinct_ids_to_load, extract, groups_to_load,
};
use crate::persons::{Group, IdentityStats, MAX_PAGE_SIZE, Person, PersonStore};

type PersonRow = (String, String, bool, i64);
type GroupRow = (String, String, String, i64, i64);

const SELECT_PERSON: &str = "SELECT id, properties, is_identified, created_at FROM persons";
const SELECT_GROUP: &str =
    "SELECT group_type, group_key, properties, created_at, updated_at FROM groups";

fn stored_person(row: PersonRow) -> Result<StoredPerson> {
    let (id, properties, is_identified, created_at) = row;
    Ok(StoredPerson {
        id: uuid_from_row(&id)?,
        properties: properties_from_row(&properties)?,
        is_identified,
        created_at,
    })
}

fn group_from_row(row: GroupRow) -> Result<Group> {
    let (group_type, key, properties, created_at, updated_at) = row;
    Ok(Group {
        group_type,
        key,
        properties: properties_from_row(&properties)?,
        created_at: datetime_from_micros(created_at)?,
        updated_at: datetime_from_micros(updated_at)?,
    })
}

fn page_size(limit: usize) -> i64 {
    // MAX_PAGE_SIZE fits an i64 by a wide margin.
    i64::try_from(limit.min(MAX_PAGE_SIZE)).unwrap_or(0)
}

/// Loads the slice of a tenant's state that `effects` can touch.
async fn load_work(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    effects: &[Effect<'_>],
) -> Result<TenantWork> {
    let t = tenant_param(tenant);

    let mut mappings = Vec::new();
    for chunk in distinct_ids_to_load(effects).chunks(MAX_BINDS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT distinct_id, person_id FROM person_distinct_ids WHERE tenant_id = ",
        );
        query.push_bind(t).push(" AND distinct_id IN (");
        let mut ids = query.separated(", ");
        for id in chunk {
            ids.push_bind(*id);
        }
        query.push(")");
        let rows: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *conn).await?;
        for (distinct_id, person) in rows {
            mappings.push((distinct_id, uuid_from_row(&person)?));
        }
    }

    let person_ids: Vec<String> = mappings
        .iter()
        .map(|(_, p)| *p)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    let mut persons = Vec::with_capacity(person_ids.len());
    for chunk in person_ids.chunks(MAX_BINDS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_PERSON);
        query
            .push(" WHERE tenant_id = ")
            .push_bind(t)
            .push(" AND id IN (");
        let mut ids = query.separated(", ");
        for id in chunk {
            ids.push_bind(id.as_str());
        }
        query.push(")");
        let rows: Vec<PersonRow> = query.build_query_as().fetch_all(&mut *conn).await?;
        for row in rows {
            persons.push(stored_person(row)?);
        }
    }

    let group_keys = groups_to_load(effects);
    let mut groups = Vec::new();
    // Two binds per group.
    for chunk in group_keys.chunks(MAX_BINDS_PER_STATEMENT / 2) {
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_GROUP);
        query
            .push(" WHERE tenant_id = ")
            .push_bind(t)
            .push(" AND (");
        for (i, (group_type, key)) in chunk.iter().enumerate() {
            if i > 0 {
                query.push(" OR ");
            }
            query
                .push("(group_type = ")
                .push_bind(*group_type)
                .push(" AND group_key = ")
                .push_bind(*key)
                .push(")");
        }
        query.push(")");
        let rows: Vec<GroupRow> = query.build_query_as().fetch_all(&mut *conn).await?;
        for (group_type, key, properties, created_at, updated_at) in rows {
            groups.push(StoredGroup {
                group_type,
                key,
                properties: properties_from_row(&properties)?,
                created_at,
                updated_at,
            });
        }
    }
    let group_types = if group_keys.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(
            "SELECT group_type FROM group_types WHERE tenant_id = ? ORDER BY type_index",
        )
        .bind(t)
        .fetch_all(&mut *conn)
        .await?
    };

    TenantWork::new(tenant, mappings, persons, groups, group_types)
}

/// Writes back everything `work` changed.
async fn write_work(conn: &mut SqliteConnection, work: &TenantWork, now: i64) -> Result<()> {
    let t = tenant_param(work.tenant());

    for (source, survivor) in work.stored_merges() {
        let (source, survivor) = (source.to_string(), survivor.to_string());
        // Distinct ids that were not loaded move here, in bulk.
        sqlx::query(
            "UPDATE person_distinct_ids SET person_id = ? WHERE tenant_id = ? AND person_id = ?",
        )
        .bind(&survivor)
        .bind(t)
        .bind(&source)
        .execute(&mut *conn)
        .await?;
        // Persons merged into `source` earlier now resolve straight to the survivor.
        sqlx::query(
            "UPDATE person_merges SET survivor_id = ? WHERE tenant_id = ? AND survivor_id = ?",
        )
        .bind(&survivor)
        .bind(t)
        .bind(&source)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO person_merges (tenant_id, merged_id, survivor_id, merged_at)
             VALUES (?, ?, ?, ?)",
        )
        .bind(t)
        .bind(&source)
        .bind(&survivor)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM persons WHERE tenant_id = ? AND id = ?")
            .bind(t)
            .bind(&source)
            .execute(&mut *conn)
            .await?;
    }

    for (distinct_id, person) in work.new_mappings() {
        sqlx::query(
            "INSERT INTO person_distinct_ids (tenant_id, distinct_id, person_id) VALUES (?, ?, ?)",
        )
        .bind(t)
        .bind(distinct_id)
        .bind(person.to_string())
        .execute(&mut *conn)
        .await?;
    }

    for (id, person) in work.dirty_persons() {
        let properties = properties_to_row(&person.properties)?;
        let sql = if person.is_new {
            "INSERT INTO persons (properties, is_identified, created_at, tenant_id, id)
             VALUES (?, ?, ?, ?, ?)"
        } else {
            "UPDATE persons SET properties = ?, is_identified = ?, created_at = ?
             WHERE tenant_id = ? AND id = ?"
        };
        sqlx::query(sql)
            .bind(properties)
            .bind(person.is_identified)
            .bind(person.created_at)
            .bind(t)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }

    // Merged-away persons are deleted and dirty ones rewritten: either changes the
    // persons relation the query engine caches.
    if work.dirty_persons().next().is_some() || work.stored_merges().next().is_some() {
        sqlx::query(
            "INSERT INTO person_versions (tenant_id, version) VALUES (?, 1)
             ON CONFLICT (tenant_id) DO UPDATE SET version = person_versions.version + 1",
        )
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }

    if work.mapping_changed() {
        sqlx::query(
            "INSERT INTO identity_versions (tenant_id, version) VALUES (?, 1)
             ON CONFLICT (tenant_id) DO UPDATE SET version = identity_versions.version + 1",
        )
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }

    for (group_type, index) in work.new_group_types() {
        sqlx::query(
            "INSERT INTO group_types (tenant_id, group_type, type_index, created_at)
             VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, group_type) DO NOTHING",
        )
        .bind(t)
        .bind(group_type)
        .bind(i64::try_from(index).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }

    for (group_type, key, group) in work.groups() {
        sqlx::query(
            "INSERT INTO groups (tenant_id, group_type, group_key, properties, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, group_type, group_key)
             DO UPDATE SET properties = excluded.properties, updated_at = excluded.updated_at",
        )
        .bind(t)
        .bind(group_type)
        .bind(key)
        .bind(properties_to_row(&group.properties)?)
        .bind(group.created_at)
        .bind(group.updated_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn read_applied_lsn(conn: &mut SqliteConnection) -> Result<u64> {
    let lsn: i64 = sqlx::query_scalar("SELECT applied_lsn FROM identity_watermark WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    u64::try_from(lsn).map_err(|_| Error::corrupt(format!("applied LSN {lsn} is negative")))
}

async fn load_person(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: &str,
) -> Result<Option<Person>> {
    let t = tenant_param(tenant);
    let row: Option<PersonRow> =
        sqlx::query_as(&format!("{SELECT_PERSON} WHERE tenant_id = ? AND id = ?"))
            .bind(t)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let distinct_ids: Vec<String> = sqlx::query_scalar(
        "SELECT distinct_id FROM person_distinct_ids
         WHERE tenant_id = ? AND person_id = ? ORDER BY distinct_id",
    )
    .bind(t)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    person_from_parts(stored_person(row)?, distinct_ids).map(Some)
}

fn person_from_parts(stored: StoredPerson, distinct_ids: Vec<String>) -> Result<Person> {
    Ok(Person {
        id: stored.id,
        properties: stored.properties,
        distinct_ids,
        created_at: datetime_from_micros(stored.created_at)?,
        is_identified: stored.is_identified,
    })
}

#[async_trait::async_trait]
impl PersonStore for SqliteMeta {
    async fn apply_events(&self, lsn: u64, batches: &[EventBatch]) -> Result<IdentityStats> {
        let lsn_param = i64::try_from(lsn).map_err(|_| Error::InvalidLsn {
            lsn,
            reason: "log positions above 2^63-1 cannot be stored",
        })?;
        self.apply_batches(batches, Some((lsn, lsn_param))).await
    }

    async fn apply_unlogged(&self, batches: &[EventBatch]) -> Result<IdentityStats> {
        self.apply_batches(batches, None).await
    }

    async fn applied_lsn(&self) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        read_applied_lsn(&mut conn).await
    }

    async fn person_for_distinct_id(
        &self,
        tenant: TenantId,
        distinct_id: &str,
    ) -> Result<Option<Person>> {
        let mut tx = self.pool.begin().await?;
        let person: Option<String> = sqlx::query_scalar(
            "SELECT person_id FROM person_distinct_ids WHERE tenant_id = ? AND distinct_id = ?",
        )
        .bind(tenant_param(tenant))
        .bind(distinct_id)
        .fetch_optional(&mut *tx)
        .await?;
        let result = match person {
            Some(id) => load_person(&mut tx, tenant, &id).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn person_by_id(&self, tenant: TenantId, id: Uuid) -> Result<Option<Person>> {
        let mut tx = self.pool.begin().await?;
        let mut person = load_person(&mut tx, tenant, &id.to_string()).await?;
        if person.is_none() {
            let survivor: Option<String> = sqlx::query_scalar(
                "SELECT survivor_id FROM person_merges WHERE tenant_id = ? AND merged_id = ?",
            )
            .bind(tenant_param(tenant))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(survivor) = survivor {
                person = load_person(&mut tx, tenant, &survivor).await?;
            }
        }
        tx.commit().await?;
        Ok(person)
    }

    async fn persons(
        &self,
        tenant: TenantId,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Person>> {
        let t = tenant_param(tenant);
        let mut tx = self.pool.begin().await?;
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_PERSON);
        query.push(" WHERE tenant_id = ").push_bind(t);
        if let Some(after) = after {
            query.push(" AND id > ").push_bind(after.to_string());
        }
        query
            .push(" ORDER BY id LIMIT ")
            .push_bind(page_size(limit));
        let rows: Vec<PersonRow> = query.build_query_as().fetch_all(&mut *tx).await?;

        let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let mut distinct_ids: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in ids.chunks(MAX_BINDS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT person_id, distinct_id FROM person_distinct_ids WHERE tenant_id = ",
            );
            query.push_bind(t).push(" AND person_id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(") ORDER BY person_id, distinct_id");
            let mapped: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *tx).await?;
            for (person, distinct_id) in mapped {
                distinct_ids.entry(person).or_default().push(distinct_id);
            }
        }
        tx.commit().await?;

        rows.into_iter()
            .map(|row| {
                let ids = distinct_ids.remove(&row.0).unwrap_or_default();
                person_from_parts(stored_person(row)?, ids)
            })
            .collect()
    }

    async fn distinct_id_map(&self, tenant: TenantId) -> Result<(u64, Vec<(String, Uuid)>)> {
        // One read transaction: the version and the rows are the same snapshot.
        let mut tx = self.pool.begin().await?;
        let version = read_identity_version(&mut tx, tenant).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT distinct_id, person_id FROM person_distinct_ids
             WHERE tenant_id = ? ORDER BY distinct_id",
        )
        .bind(tenant_param(tenant))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let map = rows
            .into_iter()
            .map(|(distinct_id, person)| Ok((distinct_id, uuid_from_row(&person)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((version, map))
    }

    async fn identity_version(&self, tenant: TenantId) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        read_identity_version(&mut conn, tenant).await
    }

    async fn group(&self, tenant: TenantId, group_type: &str, key: &str) -> Result<Option<Group>> {
        let row: Option<GroupRow> = sqlx::query_as(&format!(
            "{SELECT_GROUP} WHERE tenant_id = ? AND group_type = ? AND group_key = ?"
        ))
        .bind(tenant_param(tenant))
        .bind(group_type)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(group_from_row).transpose()
    }

    async fn groups(
        &self,
        tenant: TenantId,
        group_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Group>> {
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_GROUP);
        query
            .push(" WHERE tenant_id = ")
            .push_bind(tenant_param(tenant))
            .push(" AND group_type = ")
            .push_bind(group_type);
        if let Some(after) = after {
            query.push(" AND group_key > ").push_bind(after);
        }
        query
            .push(" ORDER BY group_key LIMIT ")
            .push_bind(page_size(limit));
        let rows: Vec<GroupRow> = query.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(group_from_row).collect()
    }

    async fn group_types(&self, tenant: TenantId) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT group_type FROM group_types WHERE tenant_id = ? ORDER BY type_index",
        )
        .bind(tenant_param(tenant))
        .fetch_all(&self.pool)
        .await?)
    }
}

async fn read_identity_version(conn: &mut SqliteConnection, tenant: TenantId) -> Result<u64> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM identity_versions WHERE tenant_id = ?")
            .bind(tenant_param(tenant))
            .fetch_optional(&mut *conn)
            .await?;
    let version = version.unwrap_or(0);
    u64::try_from(version)
        .map_err(|_| Error::corrupt(format!("identity version {version} is negative")))
}

impl SqliteMeta {
    /// Applies the identity effects of `batches` in one transaction. With a log
    /// position, records it as applied and skips the call if it was already applied
    /// (a replay); without one (bulk loads that bypass the log) the watermark is left
    /// alone.
    async fn apply_batches(
        &self,
        batches: &[EventBatch],
        lsn: Option<(u64, i64)>,
    ) -> Result<IdentityStats> {
        let started = Instant::now();

        // Pure Rust first: most events have no identity effects and stop here.
        let mut stats = IdentityStats::default();
        let mut effects_by_tenant: BTreeMap<TenantId, Vec<Effect<'_>>> = BTreeMap::new();
        for batch in batches {
            for event in &batch.events {
                stats.events += 1;
                if let Some(effect) = extract(event, &mut stats) {
                    effects_by_tenant
                        .entry(batch.tenant)
                        .or_default()
                        .push(effect);
                }
            }
        }
        if let Some((0, _)) = lsn
            && stats.events > 0
        {
            return Err(Error::InvalidLsn {
                lsn: 0,
                reason: "0 precedes every log record, so events cannot be applied at it",
            });
        }

        let _serial = self.apply_lock.lock().await;
        let mut tx = self.begin_write().await?;
        if let Some((lsn, _)) = lsn {
            let applied = read_applied_lsn(&mut tx).await?;
            if lsn <= applied {
                // A replay after a crash: the transaction that recorded `applied` also
                // committed these effects. Dropping `tx` rolls back the empty transaction.
                tracing::debug!(lsn, applied, "Skipping already applied identity effects.");
                return Ok(IdentityStats {
                    events: stats.events,
                    already_applied: true,
                    ..IdentityStats::default()
                });
            }
        }
        let now = tally_core::time::now_micros();
        // Tenants are independent, so applying them one after another preserves the
        // only order that matters: the order of each tenant's own events.
        for (tenant, effects) in &effects_by_tenant {
            let mut work = load_work(&mut tx, *tenant, effects).await?;
            for effect in effects {
                work.apply(effect, &mut stats);
            }
            write_work(&mut tx, &work, now).await?;
        }
        if let Some((_, lsn_param)) = lsn {
            sqlx::query("UPDATE identity_watermark SET applied_lsn = ? WHERE id = 1")
                .bind(lsn_param)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;

        metrics::histogram!("tally_meta_identity_apply_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("tally_meta_identity_events_total").increment(stats.events_with_effects);
        metrics::counter!("tally_meta_persons_created_total").increment(stats.persons_created);
        metrics::counter!("tally_meta_person_merges_total", "outcome" => "merged")
            .increment(stats.merges);
        metrics::counter!("tally_meta_person_merges_total", "outcome" => "refused")
            .increment(stats.refused_merges);
        metrics::counter!("tally_meta_identity_ignored_total", "reason" => "denylisted")
            .increment(stats.ignored_denylisted);
        metrics::counter!("tally_meta_identity_ignored_total", "reason" => "invalid")
            .increment(stats.ignored_invalid);
        Ok(stats)
    }
}
