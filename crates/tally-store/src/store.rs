//! [`EmbeddedStore`]: the single-node columnar event store.
//!
//! Owns the store's in-memory state (live files, write buffers, catalogs), its
//! locking, and the operations that change it: `open` (recovery), `apply`, `flush`,
//! `bulk_write` and the publish step they share. Compaction lives in `compaction`,
//! the Arrow shapes in `schema`, the on-disk formats in `manifest` and `files`.
//!
//! Locks, always taken in this order: the async `publish` mutex (one flush,
//! compaction or bulk load at a time), then `dedup` (held for a whole `apply`, so
//! applies are serialised), then `state` (short critical sections only; never held
//! across file IO).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::prelude::SessionContext;
use parking_lot::{Mutex, RwLock};
use tally_core::time::now_micros;
use tally_core::{Event, EventBatch, TenantId};
use tokio::sync::Notify;

use crate::buffer::{PartitionBuffer, WriteBuffer};
use crate::config::{PartitionStart, StoreConfig};
use crate::dedup::{DedupIndex, PartitionKey};
use crate::distinct_ids::{DISTINCT_IDS_FILE, DistinctIdNumbers, DistinctIdRange, append_chunk};
use crate::error::{Error, Result};
use crate::files::{LiveFile, RollingWriter, read_uuids, remove_written};
use crate::manifest::{
    CATALOG_FILE, EVENTS_DIR, FileMeta, MANIFEST_FILE, Manifest, TMP_SUFFIX, create_dir_durable,
    tenant_dir, tenant_of_dir_name, write_atomic,
};
use crate::query::{EventsTable, TenantSnapshot, session_with};
use crate::schema::{
    PropertyCatalog, TypeCounts, adapt_batch, batch_to_events, columns, count_properties,
    events_schema, parse_property_column, property_columns_of, sort_batches,
};

/// What `apply` did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Events added to the write buffer.
    pub inserted: usize,
    /// Events dropped because their `(tenant, uuid)` is already stored.
    pub duplicates: usize,
    /// The lsn was already covered by published files; nothing was done.
    pub already_durable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    /// `durable_lsn` after the flush.
    pub durable_lsn: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkReport {
    pub rows: u64,
    /// Events dropped as duplicates (within the call or of recently stored events).
    pub duplicates: u64,
    pub files: usize,
    pub bytes: u64,
}

/// Files and bytes at one compaction level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelStats {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub durable_lsn: Option<u64>,
    pub buffered_rows: usize,
    pub buffered_bytes: usize,
    /// Buffers swapped out for a flush that has not published yet.
    pub frozen_buffers: usize,
    pub levels: BTreeMap<u8, LevelStats>,
    pub tenants: usize,
    pub partitions: usize,
    pub recent_dedup_entries: usize,
    pub historic_dedup_uuids: usize,
    /// Files replaced by compaction, waiting for running queries to release them.
    pub obsolete_files: usize,
    pub manifest_generation: u64,
}

/// Points at which tests simulate a crash: the operation stops with
/// [`Error::InjectedFault`] and leaves the disk exactly as a crash there would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Flush wrote its files but did not publish the manifest.
    FlushBeforePublish,
    /// Compaction wrote its output but did not publish the manifest.
    CompactionBeforePublish,
    /// Compaction published the manifest but did not delete its inputs.
    CompactionBeforeDelete,
}

pub(crate) struct State {
    pub generation: u64,
    pub durable_lsn: Option<u64>,
    pub live: BTreeMap<PartitionKey, Vec<Arc<LiveFile>>>,
    pub active: WriteBuffer,
    pub frozen: Vec<Arc<WriteBuffer>>,
    pub catalogs: HashMap<TenantId, PropertyCatalog>,
    /// Tenants whose catalog gained a key or type since it was last written.
    pub catalogs_dirty: HashSet<TenantId>,
    /// When each tenant's catalog.json was last written (UTC micros).
    pub catalogs_written_at: HashMap<TenantId, i64>,
    pub obsolete: Vec<Arc<LiveFile>>,
    /// Per tenant, the numbers of its distinct ids (`distinct_ids.rs`).
    pub distinct_ids: HashMap<TenantId, DistinctIdNumbers>,
}

impl State {
    fn buffered(&self) -> (usize, usize) {
        self.frozen
            .iter()
            .map(|b| (b.rows, b.bytes))
            .fold((self.active.rows, self.active.bytes), |(r, b), (r2, b2)| {
                (r + r2, b + b2)
            })
    }

    fn levels(&self) -> BTreeMap<u8, LevelStats> {
        let mut levels: BTreeMap<u8, LevelStats> = BTreeMap::new();
        for f in self.live.values().flatten() {
            let l = levels.entry(f.meta.level).or_default();
            l.files += 1;
            l.rows += f.meta.rows;
            l.bytes += f.meta.bytes;
        }
        levels
    }

    fn publish_buffer_gauges(&self) {
        let (rows, bytes) = self.buffered();
        metrics::gauge!("tally_store_buffer_rows").set(rows as f64);
        metrics::gauge!("tally_store_buffer_bytes").set(bytes as f64);
    }

    fn publish_file_gauges(&self) {
        let levels = self.levels();
        for level in 0..=2u8 {
            let stats = levels.get(&level).copied().unwrap_or_default();
            let label = level_label(level);
            metrics::gauge!("tally_store_files", "level" => label).set(stats.files as f64);
            metrics::gauge!("tally_store_bytes", "level" => label).set(stats.bytes as f64);
        }
    }
}

pub(crate) fn level_label(level: u8) -> &'static str {
    match level {
        0 => "0",
        1 => "1",
        2 => "2",
        _ => "other",
    }
}

pub(crate) struct Inner {
    pub config: StoreConfig,
    pub root: PathBuf,
    pub state: RwLock<State>,
    pub dedup: Mutex<DedupIndex>,
    pub publish_lock: tokio::sync::Mutex<()>,
    pub flush_wanted: Notify,
    fault: Mutex<Option<FaultPoint>>,
}

/// The embedded columnar store. See the crate documentation for the guarantees.
pub struct EmbeddedStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `config.dir`: loads the manifest, deletes files
    /// it does not list (leftovers of an interrupted flush or compaction) and
    /// temporary files, loads property catalogs and rebuilds the recent dedup index
    /// from files received within the dedup window. The caller then replays the WAL
    /// from [`Self::durable_lsn`].
    pub async fn open(config: StoreConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let inner = blocking(move || Inner::open(config)).await?;
        let store = EmbeddedStore {
            inner: Arc::new(inner),
        };
        store.number_old_files().await?;
        Ok(Arc::new(store))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Adds a committed WAL record's events to the write buffer, where they are
    /// queryable at once. Idempotent: an lsn at or below [`Self::durable_lsn`] is
    /// ignored, and events whose `(tenant, uuid)` the store already holds are dropped
    /// (see docs/STORAGE.md for the exact dedup guarantee). Must be called in lsn
    /// order. Cheap except when an event with an old timestamp needs its partition's
    /// uuid set loaded from disk.
    pub fn apply(&self, lsn: u64, batch: &EventBatch) -> Result<ApplyOutcome> {
        self.inner.apply(lsn, batch.clone(), None)
    }

    /// [`EmbeddedStore::apply`] taking the batch by value, so its events move into the
    /// buffer instead of being cloned (the ingest hot path: a clone of every property
    /// map cost ~5 % of the server's CPU).
    pub fn apply_owned(&self, lsn: u64, batch: EventBatch) -> Result<ApplyOutcome> {
        self.inner.apply(lsn, batch, None)
    }

    /// [`EmbeddedStore::apply_owned`] with each event's properties already serialised
    /// as compact JSON (`properties_json[i]` for `batch.events[i]`, exactly what
    /// `serde_json` writes for the map), as the ingest pipeline has them from encoding
    /// its log record: the store keeps that text for the `properties` column instead
    /// of serialising every map again (~8 % of the server's CPU at full ingest).
    pub fn apply_encoded(
        &self,
        lsn: u64,
        batch: EventBatch,
        properties_json: Vec<String>,
    ) -> Result<ApplyOutcome> {
        if properties_json.len() != batch.events.len() {
            return Err(Error::unexpected(
                "apply_encoded",
                format!(
                    "{} serialised property maps for {} events",
                    properties_json.len(),
                    batch.events.len()
                ),
            ));
        }
        self.inner.apply(lsn, batch, Some(properties_json))
    }

    /// The highest WAL lsn whose events are all in published files (0 if none). WAL
    /// segments wholly at or below it can be deleted; replay starts after it.
    pub fn durable_lsn(&self) -> u64 {
        self.inner.state.read().durable_lsn.unwrap_or(0)
    }

    /// Approximate bytes of buffered events (for backpressure).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.state.read().buffered().1
    }

    /// Writes the write buffer to level-0 Parquet files and publishes them with a new
    /// manifest. Buffered events stay queryable until the moment the manifest that
    /// lists their files replaces them.
    pub async fn flush(&self) -> Result<FlushReport> {
        let _publish = self.inner.publish_lock.lock().await;
        let started = Instant::now();
        let Some((buffers, catalogs)) = self.inner.freeze() else {
            return Ok(FlushReport {
                durable_lsn: self.inner.state.read().durable_lsn,
                ..FlushReport::default()
            });
        };
        let inner = self.inner.clone();
        let report = blocking(move || inner.write_frozen(buffers, catalogs)).await?;
        let retired = {
            let mut dedup = self.inner.dedup.lock();
            dedup.sweep(now_micros());
            dedup.take_retired()
        };
        drop(retired);
        self.inner.reap_obsolete();
        metrics::histogram!("tally_store_flush_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(
            rows = report.rows,
            files = report.files,
            bytes = report.bytes,
            durable_lsn = ?report.durable_lsn,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store flushed"
        );
        Ok(report)
    }

    /// Writes generated events straight to sorted level-0 files, bypassing the WAL and
    /// the write buffer. Dedups within the call and against recently stored events;
    /// compaction removes any other duplicate in a partition. Call with large
    /// batches: every call writes at least one file per (tenant, partition) it touches.
    pub async fn bulk_write(&self, batches: Vec<EventBatch>) -> Result<BulkReport> {
        let _publish = self.inner.publish_lock.lock().await;
        let inner = self.inner.clone();
        blocking(move || inner.bulk_write(batches)).await
    }

    /// A table of one tenant's events: a consistent snapshot of its published files
    /// and buffered events.
    pub fn events_table(&self, tenant: TenantId) -> Result<EventsTable> {
        Ok(EventsTable::new(self.inner.snapshot(tenant)?))
    }

    /// A DataFusion session with [`crate::EVENTS_TABLE`] bound to the tenant's events.
    pub fn session_context_for(&self, tenant: TenantId) -> Result<SessionContext> {
        session_with(self.events_table(tenant)?)
    }

    /// The tenant's distinct ids numbered `from` and up (`distinct_ids.rs`): every
    /// number an event visible to a query taken before this call carries.
    pub fn distinct_ids(&self, tenant: TenantId, from: u32) -> DistinctIdRange {
        self.inner
            .state
            .read()
            .distinct_ids
            .get(&tenant)
            .map(|numbers| numbers.range_from(from))
            .unwrap_or_default()
    }

    /// The tenant's property catalog (keys, types seen, which are materialised).
    pub fn property_catalog(&self, tenant: TenantId) -> PropertyCatalog {
        self.inner
            .state
            .read()
            .catalogs
            .get(&tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Number of stored events of a tenant (files plus buffer).
    pub async fn count_events(&self, tenant: TenantId) -> Result<u64> {
        let ctx = self.session_context_for(tenant)?;
        let batches = ctx
            .sql(&format!("SELECT count(*) FROM {}", crate::EVENTS_TABLE))
            .await?
            .collect()
            .await?;
        let count = batches
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>())
            .filter(|a| !a.is_empty())
            .map(|a| a.value(0))
            .ok_or_else(|| Error::unexpected("count query", "no result row"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Every stored event of a tenant, ordered by (timestamp, uuid). For tests and
    /// tools; real queries go through [`Self::events_table`].
    pub async fn scan_events(&self, tenant: TenantId) -> Result<Vec<Event>> {
        let ctx = self.session_context_for(tenant)?;
        let batches = ctx.table(crate::EVENTS_TABLE).await?.collect().await?;
        let mut events = Vec::new();
        for batch in &batches {
            events.extend(batch_to_events(batch)?);
        }
        events.sort_by_key(|e| (e.timestamp, e.uuid));
        Ok(events)
    }

    pub fn stats(&self) -> StoreStats {
        let (recent, historic) = {
            let dedup = self.inner.dedup.lock();
            (dedup.recent_len(), dedup.historic_uuids())
        };
        let state = self.inner.state.read();
        let (rows, bytes) = state.buffered();
        StoreStats {
            durable_lsn: state.durable_lsn,
            buffered_rows: rows,
            buffered_bytes: bytes,
            frozen_buffers: state.frozen.len(),
            levels: state.levels(),
            tenants: state
                .live
                .keys()
                .map(|(t, _)| *t)
                .collect::<BTreeSet<_>>()
                .len(),
            partitions: state.live.len(),
            recent_dedup_entries: recent,
            historic_dedup_uuids: historic,
            obsolete_files: state.obsolete.len(),
            manifest_generation: state.generation,
        }
    }

    /// Manifest entries of a tenant's live files (for tests, tools and the admin UI).
    pub fn files(&self, tenant: TenantId) -> Vec<FileMeta> {
        let state = self.inner.state.read();
        tenant_files(&state, tenant)
            .map(|f| f.meta.clone())
            .collect()
    }

    /// Arms a simulated crash at `point` (tests only).
    #[cfg(test)]
    pub(crate) fn inject_fault(&self, point: FaultPoint) {
        *self.inner.fault.lock() = Some(point);
    }
}

fn tenant_files(state: &State, tenant: TenantId) -> impl Iterator<Item = &Arc<LiveFile>> {
    state
        .live
        .range((tenant, PartitionStart(i64::MIN))..=(tenant, PartitionStart(i64::MAX)))
        .flat_map(|(_, files)| files.iter())
}

impl Inner {
    fn open(config: StoreConfig) -> Result<Inner> {
        std::fs::create_dir_all(config.dir.join(EVENTS_DIR))
            .map_err(|e| Error::io("create directory", &config.dir, e))?;
        // Absolute, because files are handed to DataFusion as file URLs.
        let root =
            std::fs::canonicalize(&config.dir).map_err(|e| Error::io("resolve", &config.dir, e))?;
        // DataFusion reads `*`, `?` and `[` in a path as a glob, which would make a
        // file URL match other files or none.
        match root.to_str() {
            Some(s) if !s.contains(['*', '?', '[']) => {}
            _ => {
                return Err(Error::Config(format!(
                    "store directory {} must be valid UTF-8 without '*', '?' or '['",
                    root.display()
                )));
            }
        }
        let manifest = match Manifest::load(&root)? {
            Some(m) => m,
            None => {
                let m = Manifest::empty(config.granularity);
                m.store(&root)?;
                m
            }
        };
        if manifest.granularity != config.granularity {
            return Err(Error::Config(format!(
                "{} was created with {:?} partitions; it cannot be opened with {:?}",
                root.display(),
                manifest.granularity,
                config.granularity
            )));
        }
        let removed = remove_orphans(&root, &manifest.live_paths())?;
        if removed > 0 {
            tracing::info!(removed, "removed files not listed in the manifest");
        }

        let mut live: BTreeMap<PartitionKey, Vec<Arc<LiveFile>>> = BTreeMap::new();
        for meta in &manifest.files {
            let path = root.join(meta.relative_path(manifest.granularity));
            if !path.is_file() {
                // The manifest promises this file: its absence is data loss that an
                // operator must look into (restore from backup), not something to
                // paper over.
                tracing::error!(path = %path.display(), "live file listed in the manifest is missing");
                return Err(Error::unexpected(
                    path.display().to_string(),
                    "listed in the manifest but missing",
                ));
            }
            live.entry((meta.tenant, meta.partition))
                .or_default()
                .push(Arc::new(LiveFile {
                    meta: meta.clone(),
                    path,
                }));
        }

        let catalogs = load_catalogs(&root, &manifest)?;
        let distinct_ids = load_distinct_ids(&root, &manifest)?;

        let mut dedup = DedupIndex::new(
            config.dedup_window_micros(),
            config.dedup_max_recent,
            config.dedup_max_historic,
        );
        let cutoff = now_micros().saturating_sub(config.dedup_window_micros());
        let mut rebuilt = 0usize;
        for file in live.values().flatten() {
            if file.meta.max_received_at < cutoff {
                continue;
            }
            let tenant = file.meta.tenant;
            read_uuids(&file.path, |uuid, received_at| {
                if received_at >= cutoff {
                    dedup.insert_recent(tenant, uuid, received_at);
                    rebuilt += 1;
                }
            })?;
        }
        // Nobody else holds the index yet: free what the cap evicted during the rebuild.
        drop(dedup.take_retired());
        tracing::info!(
            files = manifest.files.len(),
            generation = manifest.generation,
            durable_lsn = ?manifest.durable_lsn,
            recent_uuids = rebuilt,
            "store opened"
        );

        let state = State {
            generation: manifest.generation,
            durable_lsn: manifest.durable_lsn,
            live,
            active: WriteBuffer::default(),
            frozen: Vec::new(),
            catalogs,
            catalogs_dirty: HashSet::new(),
            catalogs_written_at: HashMap::new(),
            obsolete: Vec::new(),
            distinct_ids,
        };
        state.publish_buffer_gauges();
        state.publish_file_gauges();
        Ok(Inner {
            config,
            root,
            state: RwLock::new(state),
            dedup: Mutex::new(dedup),
            publish_lock: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            fault: Mutex::new(None),
        })
    }

    pub(crate) fn check_fault(&self, point: FaultPoint) -> Result<()> {
        let mut armed = self.fault.lock();
        if *armed == Some(point) {
            *armed = None;
            return Err(Error::InjectedFault(point));
        }
        Ok(())
    }

    fn apply(
        &self,
        lsn: u64,
        batch: EventBatch,
        properties_json: Option<Vec<String>>,
    ) -> Result<ApplyOutcome> {
        let tenant = batch.tenant;
        let granularity = self.config.granularity;
        let window = self.config.dedup_window_micros();
        let mut dedup = self.dedup.lock();
        if self
            .state
            .read()
            .durable_lsn
            .is_some_and(|durable| lsn <= durable)
        {
            return Ok(ApplyOutcome {
                already_durable: true,
                ..ApplyOutcome::default()
            });
        }

        // Events far older than their receipt (imports, late offline SDK batches) may
        // duplicate events that left the recent index long ago: check them against
        // their partition's full uuid set. Load every set needed before deciding
        // anything, so a failed load leaves no trace.
        let is_historic = |e: &Event| e.timestamp < e.received_at.saturating_sub(window);
        let needed: BTreeSet<PartitionKey> = batch
            .events
            .iter()
            .filter(|e| is_historic(e) && !dedup.contains_recent(tenant, e.uuid.as_u128()))
            .map(|e| (tenant, granularity.partition_of(e.timestamp)))
            .collect();
        // The sets are taken out of the LRU while this batch uses them, so that loading
        // one cannot evict another the batch still needs.
        let mut sets: HashMap<PartitionKey, HashSet<u128>> = HashMap::new();
        for key in needed {
            let set = match dedup.take_historic(&key) {
                Some(set) => set,
                None => self.load_partition_uuids(key)?,
            };
            sets.insert(key, set);
        }

        // Numbered before the dedup index changes, so that a failure (a tenant beyond
        // 2^32 ids) leaves no trace but unused numbers, which are harmless.
        let numbers =
            self.number_ids(tenant, batch.events.iter().map(|e| e.distinct_id.as_str()))?;

        let total = batch.events.len();
        let mut accepted: Vec<(PartitionStart, Event, Option<String>, u32)> =
            Vec::with_capacity(total);
        let mut evicted = 0;
        let mut properties_json = properties_json.map(Vec::into_iter);
        for (event, number) in batch.events.into_iter().zip(numbers) {
            let json = properties_json.as_mut().and_then(Iterator::next);
            let uuid = event.uuid.as_u128();
            let key = (tenant, granularity.partition_of(event.timestamp));
            let duplicate = dedup.contains_recent(tenant, uuid)
                || (is_historic(&event) && sets.get(&key).is_some_and(|s| s.contains(&uuid)));
            if duplicate {
                continue;
            }
            evicted += dedup.insert_recent(tenant, uuid, event.received_at);
            match sets.get_mut(&key) {
                Some(set) => {
                    set.insert(uuid);
                }
                None => dedup.note_historic(&key, uuid),
            }
            accepted.push((key.1, event, json, number));
        }
        for (key, set) in sets {
            dedup.install_historic(key, set);
        }
        if evicted > 0 {
            tracing::warn!(
                evicted,
                oldest_received_at = ?dedup.oldest_recent_received_at(),
                "recent dedup index is full; the exact dedup window is shorter than configured"
            );
        }
        // Evicted generations are freed after the lock is released (below).
        let retired = dedup.take_retired();
        let duplicates = total - accepted.len();
        let inserted = accepted.len();

        let flush_due = {
            let mut guard = self.state.write();
            let state = &mut *guard;
            let catalog = state.catalogs.entry(tenant).or_default();
            // One catalog update per key of the batch, not per event and key.
            let counts = count_properties(accepted.iter().map(|(_, e, _, _)| e));
            let catalog_changed = catalog.observe_counts(counts, self.config.max_materialized_keys);
            for (partition, event, json, number) in accepted {
                state
                    .active
                    .push(tenant, partition, event, json, number, catalog);
            }
            if catalog_changed {
                state.catalogs_dirty.insert(tenant);
            }
            state.active.note_lsn(lsn);
            state.publish_buffer_gauges();
            state.active.rows >= self.config.flush_rows
                || state.active.bytes >= self.config.flush_bytes
        };
        drop(dedup);
        drop(retired);
        if flush_due {
            self.flush_wanted.notify_one();
        }
        if duplicates > 0 {
            metrics::counter!("tally_store_duplicates_dropped_total").increment(duplicates as u64);
        }
        metrics::counter!("tally_store_events_applied_total").increment(inserted as u64);
        Ok(ApplyOutcome {
            inserted,
            duplicates,
            already_durable: false,
        })
    }

    /// Every uuid stored in a tenant partition: its live files plus buffered events.
    fn load_partition_uuids(&self, key: PartitionKey) -> Result<HashSet<u128>> {
        let started = Instant::now();
        let mut set = HashSet::new();
        let files = {
            let state = self.state.read();
            for buffer in std::iter::once(&state.active).chain(state.frozen.iter().map(|b| &**b)) {
                if let Some(group) = buffer.groups.get(&key) {
                    group.for_each_uuid(|u| {
                        set.insert(u);
                    })?;
                }
            }
            state.live.get(&key).cloned().unwrap_or_default()
        };
        // The Arcs keep compaction from deleting these files while they are read.
        for file in &files {
            read_uuids(&file.path, |u, _| {
                set.insert(u);
            })?;
        }
        tracing::debug!(
            tenant = %key.0,
            files = files.len(),
            uuids = set.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded partition uuid set for historic dedup"
        );
        Ok(set)
    }

    /// Swaps the active buffer out for flushing. Returns every frozen buffer (earlier
    /// failed flushes included) and the catalogs of their tenants, or `None` if there
    /// is nothing to do.
    #[allow(clippy::type_complexity)]
    fn freeze(&self) -> Option<(Vec<Arc<WriteBuffer>>, HashMap<TenantId, PropertyCatalog>)> {
        let mut state = self.state.write();
        let lsn_ahead = state
            .active
            .max_lsn
            .is_some_and(|lsn| state.durable_lsn.is_none_or(|d| lsn > d));
        if !state.active.is_empty() || lsn_ahead {
            let buffer = std::mem::take(&mut state.active);
            state.frozen.push(Arc::new(buffer));
        }
        if state.frozen.is_empty() {
            return None;
        }
        let buffers = state.frozen.clone();
        let tenants: BTreeSet<TenantId> = buffers
            .iter()
            .flat_map(|b| b.groups.keys().map(|(t, _)| *t))
            .collect();
        let catalogs = tenants
            .into_iter()
            .map(|t| (t, state.catalogs.get(&t).cloned().unwrap_or_default()))
            .collect();
        Some((buffers, catalogs))
    }

    fn write_frozen(
        &self,
        buffers: Vec<Arc<WriteBuffer>>,
        catalogs: HashMap<TenantId, PropertyCatalog>,
    ) -> Result<FlushReport> {
        let empty = PropertyCatalog::default();
        let mut groups: BTreeMap<PartitionKey, Vec<RecordBatch>> = BTreeMap::new();
        for buffer in &buffers {
            for (key, group) in &buffer.groups {
                let catalog = catalogs.get(&key.0).unwrap_or(&empty);
                groups
                    .entry(*key)
                    .or_default()
                    .extend(group.batches(catalog)?);
            }
        }
        let mut written: Vec<FileMeta> = Vec::new();
        let write_all = |written: &mut Vec<FileMeta>| -> Result<()> {
            for (key, batches) in &groups {
                let columns: BTreeSet<String> = batches
                    .iter()
                    .flat_map(|b| property_columns_of(&b.schema()))
                    .collect();
                let schema = events_schema(&columns);
                let adapted = batches
                    .iter()
                    .map(|b| adapt_batch(b, &schema))
                    .collect::<Result<Vec<_>>>()?;
                let sorted = sort_batches(&schema, &adapted)?;
                let mut writer = RollingWriter::new(
                    &self.root,
                    &self.config,
                    key.0,
                    key.1,
                    0,
                    schema,
                    usize::MAX,
                );
                if let Err(e) = writer.write(&sorted) {
                    writer.abandon();
                    return Err(e);
                }
                written.extend(writer.finish()?);
            }
            Ok(())
        };
        if let Err(e) = write_all(&mut written) {
            remove_written(&self.root, self.config.granularity, &written);
            return Err(e);
        }
        // From here on a failure leaves unpublished files behind on purpose: they are
        // exactly what a crash would leave, and `open` removes them.
        self.check_fault(FaultPoint::FlushBeforePublish)?;
        let lsn = buffers.iter().filter_map(|b| b.max_lsn).max();
        let report = FlushReport {
            rows: written.iter().map(|f| f.rows).sum(),
            files: written.len(),
            bytes: written.iter().map(|f| f.bytes).sum(),
            durable_lsn: None,
        };
        self.publish(written, &HashSet::new(), lsn, buffers.len())?;
        Ok(FlushReport {
            durable_lsn: self.state.read().durable_lsn,
            ..report
        })
    }

    /// Makes a change visible: writes the catalogs of tenants gaining files, then the
    /// new manifest (the commit point), then updates memory in one critical section so
    /// queries see either the old files and buffers or the new files, never both.
    /// Callers hold the publish lock.
    pub(crate) fn publish(
        &self,
        added: Vec<FileMeta>,
        removed: &HashSet<String>,
        durable_lsn: Option<u64>,
        frozen_done: usize,
    ) -> Result<()> {
        let tenants: BTreeSet<TenantId> = added.iter().map(|f| f.tenant).collect();
        let now = now_micros();
        let (manifest, catalogs, numberings) = {
            let mut guard = self.state.write();
            let state = &mut *guard;
            // Catalog files are rewritten when their keys changed, and otherwise at
            // most once a minute (for the counts): a flush touching a thousand
            // tenants must not cost two thousand fsyncs.
            let catalogs: Vec<(TenantId, PropertyCatalog)> = tenants
                .iter()
                .filter(|t| {
                    state.catalogs_dirty.remove(t)
                        || state
                            .catalogs_written_at
                            .get(t)
                            .is_none_or(|at| now.saturating_sub(*at) >= 60_000_000)
                })
                .map(|t| (*t, state.catalogs.get(t).cloned().unwrap_or_default()))
                .collect();
            let mut files: Vec<FileMeta> = state
                .live
                .values()
                .flatten()
                .filter(|f| !removed.contains(&f.meta.id))
                .map(|f| f.meta.clone())
                .collect();
            files.extend(added.iter().cloned());
            let mut manifest = Manifest::empty(self.config.granularity);
            manifest.generation = state.generation + 1;
            manifest.durable_lsn = state.durable_lsn.max(durable_lsn);
            manifest.files = files;
            // Every number in the new files was given before this point, so the
            // pending ids cover them.
            let numberings: Vec<(TenantId, Vec<u8>, usize)> = tenants
                .iter()
                .filter_map(|t| {
                    let (chunk, count) = state.distinct_ids.get(t)?.pending_chunk()?;
                    Some((*t, chunk, count))
                })
                .collect();
            (manifest, catalogs, numberings)
        };
        // The numbers first: a published file may only hold numbers that are durable
        // (the invariant `open` checks).
        for (tenant, chunk, count) in numberings {
            let dir = tenant_dir(&self.root, tenant);
            create_dir_durable(&self.root, &dir)?;
            append_chunk(&dir, &chunk)?;
            if let Some(numbers) = self.state.write().distinct_ids.get_mut(&tenant) {
                numbers.mark_persisted(count);
            }
        }
        // A catalog may run ahead of the files (it also covers buffered events), and
        // is written first so that it does not lag behind them. (`open` also
        // reconciles catalogs with the files' columns, so this is belt and braces.)
        let written = catalogs.iter().try_for_each(|(tenant, catalog)| {
            let dir = tenant_dir(&self.root, *tenant);
            create_dir_durable(&self.root, &dir)?;
            let bytes = serde_json::to_vec(catalog).map_err(|e| Error::CorruptMetadata {
                path: dir.join(CATALOG_FILE),
                reason: format!("cannot encode: {e}"),
            })?;
            write_atomic(&dir.join(CATALOG_FILE), &bytes)
        });
        if let Err(e) = written.and_then(|()| manifest.store(&self.root)) {
            self.state
                .write()
                .catalogs_dirty
                .extend(catalogs.iter().map(|(t, _)| *t));
            return Err(e);
        }

        let mut state = self.state.write();
        for (tenant, _) in &catalogs {
            state.catalogs_written_at.insert(*tenant, now);
        }
        state.generation = manifest.generation;
        state.durable_lsn = manifest.durable_lsn;
        if !removed.is_empty() {
            let mut gone = Vec::new();
            for files in state.live.values_mut() {
                files.retain(|f| {
                    if removed.contains(&f.meta.id) {
                        gone.push(f.clone());
                        false
                    } else {
                        true
                    }
                });
            }
            state.live.retain(|_, files| !files.is_empty());
            state.obsolete.extend(gone);
        }
        for meta in added {
            let path = self.root.join(meta.relative_path(self.config.granularity));
            state
                .live
                .entry((meta.tenant, meta.partition))
                .or_default()
                .push(Arc::new(LiveFile { meta, path }));
        }
        let done = frozen_done.min(state.frozen.len());
        state.frozen.drain(..done);
        state.publish_buffer_gauges();
        state.publish_file_gauges();
        Ok(())
    }

    /// The numbers of `ids` in the tenant's numbering, numbering new ones (under one
    /// hold of the state lock).
    fn number_ids<'a>(
        &self,
        tenant: TenantId,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<u32>> {
        let mut state = self.state.write();
        let distinct_ids = state.distinct_ids.entry(tenant).or_default();
        ids.map(|id| distinct_ids.number_of(id)).collect()
    }

    /// `batch` (of `tenant`, shaped to an events schema) with a number in every row of
    /// its `distinct_id_number` column: rows read from files written before numbering
    /// have none, and get their distinct id's.
    pub(crate) fn number_distinct_ids(
        &self,
        tenant: TenantId,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let column_index = batch
            .schema()
            .index_of(columns::DISTINCT_ID_NUMBER)
            .map_err(|_| Error::unexpected("events batch", "no distinct_id_number column"))?;
        let numbers = batch
            .column(column_index)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| Error::unexpected("events batch", "distinct_id_number is not UInt32"))?;
        if numbers.null_count() == 0 {
            return Ok(batch);
        }
        let ids = batch
            .column_by_name(columns::DISTINCT_ID)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| Error::unexpected("events batch", "distinct_id is not Utf8"))?;
        let missing: Vec<usize> = (0..batch.num_rows())
            .filter(|&row| numbers.is_null(row))
            .collect();
        let assigned = self.number_ids(tenant, missing.iter().map(|&row| ids.value(row)))?;
        let mut filled = numbers.values().to_vec();
        for (row, number) in missing.into_iter().zip(assigned) {
            filled[row] = number;
        }
        let mut arrays = batch.columns().to_vec();
        arrays[column_index] = Arc::new(UInt32Array::from(filled));
        Ok(RecordBatch::try_new(batch.schema(), arrays)?)
    }

    /// Deletes files that are no longer live once no query snapshot holds them.
    pub(crate) fn reap_obsolete(&self) -> usize {
        let doomed: Vec<Arc<LiveFile>> = {
            let mut state = self.state.write();
            let (doomed, kept) = std::mem::take(&mut state.obsolete)
                .into_iter()
                .partition(|f| Arc::strong_count(f) == 1);
            state.obsolete = kept;
            doomed
        };
        for file in &doomed {
            match std::fs::remove_file(&file.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Not data loss: the file is no longer listed, and `open` retries.
                Err(error) => {
                    tracing::warn!(path = %file.path.display(), %error, "could not delete obsolete file")
                }
            }
        }
        doomed.len()
    }

    fn snapshot(&self, tenant: TenantId) -> Result<TenantSnapshot> {
        let (catalog, files, groups) = {
            let state = self.state.read();
            let catalog = state.catalogs.get(&tenant).cloned().unwrap_or_default();
            let files: Vec<Arc<LiveFile>> = tenant_files(&state, tenant).cloned().collect();
            let groups: Vec<PartitionBuffer> = state
                .frozen
                .iter()
                .map(|b| &**b)
                .chain(std::iter::once(&state.active))
                .flat_map(|b| b.tenant_groups(tenant).map(|(_, g)| g.clone()))
                .collect();
            (catalog, files, groups)
        };
        let schema = catalog.schema();
        let mut buffered = Vec::new();
        for group in &groups {
            for batch in group.batches(&catalog)? {
                buffered.push(adapt_batch(&batch, &schema)?);
            }
        }
        Ok(TenantSnapshot {
            tenant,
            schema,
            files,
            buffered,
        })
    }

    fn bulk_write(&self, batches: Vec<EventBatch>) -> Result<BulkReport> {
        let granularity = self.config.granularity;
        let cutoff = now_micros().saturating_sub(self.config.dedup_window_micros());
        let mut groups: BTreeMap<PartitionKey, Vec<(Event, u32)>> = BTreeMap::new();
        let mut duplicates = 0u64;
        {
            let dedup = self.dedup.lock();
            let mut seen: HashSet<(TenantId, u128)> = HashSet::new();
            for batch in batches {
                let numbers = self.number_ids(
                    batch.tenant,
                    batch.events.iter().map(|e| e.distinct_id.as_str()),
                )?;
                for (event, number) in batch.events.into_iter().zip(numbers) {
                    let uuid = event.uuid.as_u128();
                    if !seen.insert((batch.tenant, uuid))
                        || dedup.contains_recent(batch.tenant, uuid)
                    {
                        duplicates += 1;
                        continue;
                    }
                    groups
                        .entry((batch.tenant, granularity.partition_of(event.timestamp)))
                        .or_default()
                        .push((event, number));
                }
            }
        }
        // Count property types per group on every core, then merge per tenant (new
        // keys in name order, so materialisation decisions are deterministic).
        let group_list: Vec<(&PartitionKey, &Vec<(Event, u32)>)> = groups.iter().collect();
        let counted = parallel_map(group_list, |(key, events)| {
            (key.0, count_properties(events.iter().map(|(e, _)| e)))
        });
        let mut per_tenant: BTreeMap<TenantId, BTreeMap<&str, TypeCounts>> = BTreeMap::new();
        for (tenant, counts) in counted {
            let merged = per_tenant.entry(tenant).or_default();
            for (key, c) in counts {
                let slot = merged.entry(key).or_default();
                for i in 0..4 {
                    slot.0[i] += c.0[i];
                }
            }
        }
        let catalogs: HashMap<TenantId, PropertyCatalog> = {
            let mut guard = self.state.write();
            let state = &mut *guard;
            for (tenant, counts) in per_tenant {
                let catalog = state.catalogs.entry(tenant).or_default();
                if catalog.observe_counts(counts, self.config.max_materialized_keys) {
                    state.catalogs_dirty.insert(tenant);
                }
            }
            groups
                .keys()
                .map(|(t, _)| (*t, state.catalogs.get(t).cloned().unwrap_or_default()))
                .collect()
        };
        let recent: Vec<(TenantId, u128, i64)> = groups
            .iter()
            .flat_map(|((t, _), events)| {
                events
                    .iter()
                    .filter(|(e, _)| e.received_at >= cutoff)
                    .map(|(e, _)| (*t, e.uuid.as_u128(), e.received_at))
            })
            .collect();
        let keys: Vec<PartitionKey> = groups.keys().copied().collect();

        // One worker per core, each writing whole partitions.
        let results: Vec<Result<Vec<FileMeta>>> = parallel_map(
            groups.into_iter().collect(),
            |group: (PartitionKey, Vec<(Event, u32)>)| {
                self.write_bulk_share(vec![group], &catalogs)
            },
        );
        let mut written = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(files) => written.extend(files),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            remove_written(&self.root, granularity, &written);
            return Err(e);
        }
        let report = BulkReport {
            rows: written.iter().map(|f| f.rows).sum(),
            duplicates,
            files: written.len(),
            bytes: written.iter().map(|f| f.bytes).sum(),
        };
        // Publishing under the dedup lock: no apply can consult a partition set that
        // misses the new files between the publish and the invalidation.
        let mut dedup = self.dedup.lock();
        self.publish(written, &HashSet::new(), None, 0)?;
        for key in &keys {
            dedup.invalidate(key);
        }
        for (tenant, uuid, received_at) in recent {
            dedup.insert_recent(tenant, uuid, received_at);
        }
        let retired = dedup.take_retired();
        drop(dedup);
        drop(retired);
        if duplicates > 0 {
            metrics::counter!("tally_store_duplicates_dropped_total").increment(duplicates);
        }
        Ok(report)
    }

    fn write_bulk_share(
        &self,
        share: Vec<(PartitionKey, Vec<(Event, u32)>)>,
        catalogs: &HashMap<TenantId, PropertyCatalog>,
    ) -> Result<Vec<FileMeta>> {
        let empty = PropertyCatalog::default();
        let mut written = Vec::new();
        let chunk_rows = self
            .config
            .row_group_rows
            .min(self.config.target_file_rows)
            .max(1);
        for ((tenant, partition), mut events) in share {
            let catalog = catalogs.get(&tenant).unwrap_or(&empty);
            // Sorting the events themselves (not an Arrow batch) lets each chunk be
            // converted and written in order, so files come out globally sorted.
            // The order of `schema::sort_batch`.
            fn sort_key(e: &Event) -> (&str, i64, &str, i64, uuid::Uuid) {
                (
                    &e.event,
                    crate::schema::sort_key_day(e.timestamp),
                    &e.distinct_id,
                    e.timestamp,
                    e.uuid,
                )
            }
            events.sort_unstable_by(|(a, _), (b, _)| sort_key(a).cmp(&sort_key(b)));
            let schema = {
                let columns: BTreeSet<String> = catalog
                    .property_columns()
                    .into_iter()
                    .filter(|c| {
                        parse_property_column(c).is_some_and(|(ty, key)| {
                            events.iter().any(|(e, _)| {
                                e.properties
                                    .get(key)
                                    .and_then(crate::schema::PropertyType::of)
                                    == Some(ty)
                            })
                        })
                    })
                    .collect();
                events_schema(&columns)
            };
            let mut writer = RollingWriter::new(
                &self.root,
                &self.config,
                tenant,
                partition,
                0,
                schema.clone(),
                self.config.target_file_rows,
            );
            let result = (|| {
                for chunk in events.chunks(chunk_rows) {
                    let batch = crate::schema::events_to_batch(
                        chunk.iter().map(|(e, number)| (e, None, *number)),
                        catalog,
                    )?;
                    writer.write(&adapt_batch(&batch, &schema)?)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => written.extend(writer.finish()?),
                Err(e) => {
                    writer.abandon();
                    remove_written(&self.root, self.config.granularity, &written);
                    return Err(e);
                }
            }
        }
        Ok(written)
    }
}

/// Maps `items` on one scoped thread per core (at most one per item), preserving
/// order. For CPU-bound bulk work: the runtime's threads are not involved.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let f = &f;
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let queue = &queue;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let next = queue.lock().next();
                        let Some((i, item)) = next else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Deletes every data or temporary file under the store that the manifest does not
/// list. Returns how many were removed.
fn remove_orphans(root: &Path, live: &BTreeSet<PathBuf>) -> Result<usize> {
    let mut removed = 0;
    let manifest_tmp = root.join(format!("{MANIFEST_FILE}{TMP_SUFFIX}"));
    if manifest_tmp.exists() {
        std::fs::remove_file(&manifest_tmp).map_err(|e| Error::io("remove", &manifest_tmp, e))?;
        removed += 1;
    }
    let mut stack = vec![root.join(EVENTS_DIR)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let orphan = name.ends_with(TMP_SUFFIX)
                || (name.ends_with(".parquet") && !live.contains(&relative));
            if orphan {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Loads the distinct-id numbers of every tenant directory and checks that each
/// published file's numbers are among them.
fn load_distinct_ids(
    root: &Path,
    manifest: &Manifest,
) -> Result<HashMap<TenantId, DistinctIdNumbers>> {
    let events = root.join(EVENTS_DIR);
    let mut numberings = HashMap::new();
    let entries = match std::fs::read_dir(&events) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(numberings),
        Err(e) => return Err(Error::io("list", &events, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &events, e))?;
        let name = entry.file_name();
        let Some(tenant) = name.to_str().and_then(tenant_of_dir_name) else {
            continue;
        };
        let dir = entry.path();
        if dir.join(DISTINCT_IDS_FILE).exists() {
            numberings.insert(tenant, DistinctIdNumbers::load(&dir)?);
        }
    }
    for file in &manifest.files {
        let known = numberings.get(&file.tenant).map_or(0, |n| n.len());
        if let Some(bound) = file.distinct_id_numbers
            && bound as usize > known
        {
            return Err(Error::CorruptMetadata {
                path: tenant_dir(root, file.tenant).join(DISTINCT_IDS_FILE),
                reason: format!(
                    "holds {known} distinct ids, but file {} uses numbers up to {}",
                    file.id,
                    bound - 1
                ),
            });
        }
    }
    Ok(numberings)
}

/// Loads every tenant's catalog and reconciles it with the live files: a typed column
/// present in a file is always in the catalog, whatever happened to catalog.json.
fn load_catalogs(root: &Path, manifest: &Manifest) -> Result<HashMap<TenantId, PropertyCatalog>> {
    let mut catalogs: HashMap<TenantId, PropertyCatalog> = HashMap::new();
    let tenants: BTreeSet<TenantId> = manifest.files.iter().map(|f| f.tenant).collect();
    for tenant in tenants {
        let path = tenant_dir(root, tenant).join(CATALOG_FILE);
        let catalog = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PropertyCatalog::default(),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        catalogs.insert(tenant, catalog);
    }
    for file in &manifest.files {
        let catalog = catalogs.entry(file.tenant).or_default();
        for column in &file.property_columns {
            let Some((ty, key)) = parse_property_column(column) else {
                continue;
            };
            let stats = catalog.keys.entry(key.to_owned()).or_default();
            stats.materialized = true;
            let count = match ty {
                crate::schema::PropertyType::Str => &mut stats.string,
                crate::schema::PropertyType::Num => &mut stats.number,
                crate::schema::PropertyType::Bool => &mut stats.boolean,
            };
            *count = (*count).max(1);
        }
    }
    Ok(catalogs)
}
