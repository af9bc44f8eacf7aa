//! [`SqliteMeta`]: the single-binary implementation of [`crate::MetaStore`] and
//! [`crate::PersonStore`] on one SQLite file.
//!
//! Owns the connection setup (WAL journal, busy timeout, full fsync), the schema
//! migrations and the row <-> type conversions. The identity rules are not here
//! (`crate::identity`); this layer loads the state they need and writes back what they
//! changed.
//!
//! Concurrency: `tally serve` and CLI commands such as `tally tenant create` open the
//! same file from different processes. WAL mode lets readers proceed during a write,
//! and every read-modify-write transaction starts with `BEGIN IMMEDIATE`, which takes
//! the write lock up front (waiting up to the busy timeout) instead of failing midway
//! when another process wrote in between.

mod engine_source;
mod persons;
mod tenants;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tally_core::{Properties, TenantId};
use uuid::Uuid;

use crate::error::{Error, Result};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers run concurrently in WAL mode; writers queue on SQLite's lock anyway, so a
/// few connections are plenty.
const MAX_CONNECTIONS: u32 = 4;

/// SQLite's default limit on bound parameters is 32766, PostgreSQL's 65535; staying
/// far below keeps statements small and portable.
const MAX_BINDS_PER_STATEMENT: usize = 500;

/// Schema migrations, in order. Each runs once, inside the same transaction that
/// records it, so a crash mid-migration leaves the previous version intact.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "person_versions",
        include_str!("../../migrations/0002_person_versions.sql"),
    ),
];

/// The metadata store on a local SQLite file. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct SqliteMeta {
    pool: SqlitePool,
    /// Serialises `apply_events` within this process, so concurrent callers queue here
    /// rather than spin on SQLite's busy handler.
    apply_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMeta").finish_non_exhaustive()
    }
}

impl SqliteMeta {
    /// Opens (creating if needed) the database file at `path` and brings its schema
    /// up to date. The parent directory must exist.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a tenant's secret key is shown once, so a created tenant must
            // survive power loss. In WAL mode this is one fsync per commit.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        migrate(&pool).await?;
        tracing::debug!(path = %path.display(), "Opened the metadata database.");
        Ok(SqliteMeta {
            pool,
            apply_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    // Inside one IMMEDIATE transaction, so two processes opening a fresh file at once
    // (the server and a CLI command) cannot both run the same migration.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tally_meta_schema (
            version    BIGINT NOT NULL PRIMARY KEY,
            name       TEXT   NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tally_meta_schema")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0);
    if current > supported {
        return Err(Error::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO tally_meta_schema (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(tally_core::time::now_micros())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, name, "Applied metadata schema migration.");
    }
    tx.commit().await?;
    Ok(())
}

fn tenant_param(id: TenantId) -> i64 {
    i64::from(id.0)
}

fn tenant_from_row(id: i64) -> Result<TenantId> {
    u32::try_from(id)
        .map(TenantId)
        .map_err(|_| Error::corrupt(format!("tenant id {id} is out of range")))
}

fn datetime_from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::corrupt(format!("timestamp {micros} is out of range")))
}

fn uuid_from_row(text: &str) -> Result<Uuid> {
    Uuid::from_str(text).map_err(|_| Error::corrupt(format!("{text:?} is not a UUID")))
}

fn properties_from_row(text: &str) -> Result<Properties> {
    serde_json::from_str(text)
        .map_err(|e| Error::corrupt(format!("stored properties are not a JSON object: {e}")))
}

fn properties_to_row(props: &Properties) -> Result<String> {
    // Cannot fail for a map of JSON values (keys are strings, numbers are finite);
    // reported rather than unwrapped all the same.
    serde_json::to_string(props)
        .map_err(|e| Error::corrupt(format!("cannot serialise properties: {e}")))
}
