//! The single-machine ingest pipeline: the [`EventSink`] that `tally serve` hands to
//! the ingest handlers.
//!
//! A submitted batch is serialised into the write-ahead log; once the log's group commit
//! has made it durable, the batch is applied — strictly in log order — to the embedded
//! store's write buffer (where queries see it at once) and, for events with identity
//! effects, queued for the person store. Only then does `submit` return, so an HTTP 200
//! means "durable and visible".
//!
//! Background tasks flush the store's buffer to Parquet, apply identity effects in
//! batches, run compaction, and remove WAL segments that both the store and the person
//! store have made durable on their own. On start, the log is replayed from the lower of
//! their two watermarks; both consumers are idempotent, so replaying a record twice is
//! harmless.
//!
//! This crate owns ordering and the watermarks. It does not own the log format (tally-wal),
//! the storage layout (tally-store) or the identity rules (tally-meta).

mod background;
pub mod record;
mod sequencer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_core::{Event, EventBatch, EventSink, SinkError};
use tally_meta::PersonStore;
use tally_store::EmbeddedStore;
use tally_wal::{Wal, WalConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::background::BackgroundRuntime;
use crate::sequencer::Sequencer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("write-ahead log: {0}")]
    Wal(#[from] tally_wal::Error),
    #[error("store: {0}")]
    Store(#[from] tally_store::Error),
    #[error("person store: {0}")]
    Meta(#[from] tally_meta::Error),
    #[error("starting the background runtime: {0}")]
    BackgroundRuntime(#[source] std::io::Error),
    #[error("undecodable WAL record {lsn}: {source}")]
    Decode { lsn: u64, source: serde_json::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tuning of the pipeline; every field has a documented flag in `tally serve --help`.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub wal: WalConfig,
    /// Unflushed bytes in the store's buffer beyond which `submit` answers "overloaded".
    pub max_buffer_bytes: usize,
    /// How often the store's buffer is flushed to Parquet.
    pub flush_interval: Duration,
    /// Buffer size that triggers a flush before the interval elapses.
    pub flush_bytes: usize,
    /// How often compaction looks for work.
    pub compaction_interval: Duration,
    /// How often identity effects are applied to the person store.
    pub identity_interval: Duration,
    /// Nice value added to the threads that flush and compact (Linux; 0 leaves them
    /// at the request path's priority). See `background.rs` for why.
    pub background_niceness: i32,
}

/// What start-up recovered.
#[derive(Debug, Clone, Default)]
pub struct StartupReport {
    pub wal: String,
    pub replayed_records: u64,
    pub replayed_events: u64,
    pub store_durable_lsn: u64,
    pub identity_applied_lsn: u64,
}

/// The single-machine [`EventSink`]. Cheap to clone.
#[derive(Clone)]
pub struct LocalPipeline {
    inner: Arc<Inner>,
    /// Runs the flush and compaction loops. Held here, not in `Inner`, so that the
    /// loops (which hold `Inner`) never own the runtime they run on.
    background: Arc<BackgroundRuntime>,
}

struct Inner {
    wal: Wal,
    store: Arc<EmbeddedStore>,
    persons: Arc<dyn PersonStore>,
    config: PipelineConfig,
    /// Durable batches with their serialised properties (see [`record`]).
    sequencer: Mutex<Sequencer<(EventBatch, Vec<String>)>>,
    /// Held by the one task applying the sequencer's ready run. Separate from the
    /// sequencer's lock so that tasks parking their batches never wait for an apply.
    applying: Mutex<()>,
    identity_queue: Mutex<IdentityQueue>,
    identity_wakeup: Notify,
    shutdown: watch::Sender<bool>,
}

/// Identity effects waiting for the person store, in log order, with the highest LSN
/// applied to the store so far (so the person store's watermark advances even when no
/// record in between had identity effects).
#[derive(Default)]
struct IdentityQueue {
    batches: Vec<EventBatch>,
    through_lsn: u64,
}

impl LocalPipeline {
    /// Opens the log, replays what the store and the person store have not yet made
    /// durable, and returns a pipeline ready to accept batches. Call
    /// [`LocalPipeline::spawn_background`] next.
    pub async fn open(
        config: PipelineConfig,
        store: Arc<EmbeddedStore>,
        persons: Arc<dyn PersonStore>,
    ) -> Result<(Self, StartupReport)> {
        let (wal, recovery) = Wal::open(config.wal.clone())?;
        let store_lsn = store.durable_lsn();
        let identity_lsn = persons.applied_lsn().await?;
        let from = store_lsn.min(identity_lsn);
        tracing::info!(
            store_lsn,
            identity_lsn,
            last_lsn = wal.last_lsn(),
            "Replaying write-ahead log."
        );

        let mut report = StartupReport {
            wal: format!("{recovery:?}"),
            store_durable_lsn: store_lsn,
            identity_applied_lsn: identity_lsn,
            ..StartupReport::default()
        };
        let mut identity_batches = Vec::new();
        let mut decode_error = None;
        wal.replay(from, |lsn, payload| -> Result<(), Error> {
            let batch: EventBatch = match serde_json::from_slice(payload) {
                Ok(b) => b,
                Err(source) => {
                    // A record that passed its checksum but does not decode was written
                    // by a different version; it cannot be applied, and must not block
                    // the rest. Report it loudly.
                    tracing::error!(lsn, error = %source, "Skipping undecodable WAL record.");
                    decode_error.get_or_insert(Error::Decode { lsn, source });
                    return Ok(());
                }
            };
            report.replayed_records += 1;
            report.replayed_events += batch.events.len() as u64;
            if lsn > store_lsn {
                store.apply(lsn, &batch)?;
            }
            if lsn > identity_lsn
                && let Some(effects) = identity_effects(&batch)
            {
                identity_batches.push(effects);
            }
            Ok(())
        })?;
        let last_lsn = wal.last_lsn();
        if last_lsn > identity_lsn {
            persons.apply_events(last_lsn, &identity_batches).await?;
        }
        if let Some(e) = decode_error {
            tracing::error!(error = %e, "WAL replay skipped records; see earlier errors.");
        }

        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            wal,
            store,
            persons,
            sequencer: Mutex::new(Sequencer::new(last_lsn + 1)),
            applying: Mutex::new(()),
            identity_queue: Mutex::new(IdentityQueue {
                through_lsn: last_lsn,
                ..IdentityQueue::default()
            }),
            identity_wakeup: Notify::new(),
            config,
            shutdown,
        });
        let background = BackgroundRuntime::new(inner.config.background_niceness)
            .map_err(Error::BackgroundRuntime)?;
        Ok((
            LocalPipeline {
                inner,
                background: Arc::new(background),
            },
            report,
        ))
    }

    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.inner.store
    }

    /// Starts the flush, identity and compaction loops. They stop when
    /// [`LocalPipeline::shutdown`] is called. Flushes and compactions run on the
    /// low-priority background runtime; the identity loop (short SQLite writes) on the
    /// caller's.
    pub fn spawn_background(&self) -> Vec<JoinHandle<()>> {
        let flush = {
            let inner = self.inner.clone();
            self.background
                .spawn(async move { inner.flush_loop().await })
        };
        let identity = {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.identity_loop().await })
        };
        let compaction = {
            let inner = self.inner.clone();
            self.background
                .spawn(async move { inner.compaction_loop().await })
        };
        vec![flush, identity, compaction]
    }

    /// Whether the pipeline can accept writes (the log's writer is running).
    pub fn is_ready(&self) -> bool {
        !self.inner.wal.is_stopped()
    }

    /// Flushes everything durable into the store and the person store, then stops the
    /// background loops. New submissions are refused from the moment this is called.
    pub async fn shutdown(&self, background: Vec<JoinHandle<()>>) -> Result<()> {
        let _ = self.inner.shutdown.send(true);
        self.inner.identity_wakeup.notify_one();
        for handle in background {
            let _ = handle.await;
        }
        self.inner.apply_identity_queue().await?;
        self.inner.flush_and_trim().await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventSink for LocalPipeline {
    async fn submit(&self, batch: EventBatch) -> Result<(), SinkError> {
        let inner = &self.inner;
        if *inner.shutdown.borrow() {
            return Err(SinkError::ShuttingDown);
        }
        let buffered = inner.store.buffered_bytes();
        if buffered > inner.config.max_buffer_bytes {
            metrics::counter!("tally_pipeline_backpressure_total", "reason" => "store_buffer")
                .increment(1);
            return Err(SinkError::Overloaded {
                reason: "store buffer full",
                retry_after: Duration::from_secs(2),
            });
        }
        let record::EncodedBatch {
            payload,
            properties_json,
        } = record::encode(&batch).map_err(|e| SinkError::Internal(e.to_string()))?;
        let durable = inner.wal.append(payload).map_err(sink_error_from_wal)?;
        // The rest runs in its own task: if the client disconnects and the handler's
        // future is dropped, the durable record must still be applied, or the store's
        // LSN order would have a hole that nothing fills.
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let lsn = durable.await.map_err(sink_error_from_wal)?;
            let applied = inner
                .sequencer
                .lock()
                .enqueue(lsn, (batch, properties_json));
            inner.drain_sequencer();
            applied
                .await
                .unwrap_or_else(|_| Err(SinkError::Internal("apply dropped".into())))
        });
        task.await
            .map_err(|e| SinkError::Internal(format!("apply task failed: {e}")))?
    }
}

impl Inner {
    /// Applies every batch whose turn has come, in LSN order. One task at a time
    /// applies, taking batches off the sequencer one by one; the sequencer's own lock is
    /// held only to pop, so tasks parking their batches are never stuck behind a store
    /// apply (with the lock held across applies, a runtime worker parking a batch
    /// blocked while the other applied, and ingest used well under the two cores).
    /// The others just wait for their notification.
    fn drain_sequencer(&self) {
        loop {
            let Some(applying) = self.applying.try_lock() else {
                // The applying task will find our batch: it pops until nothing is
                // ready, and checks again after letting go (below).
                return;
            };
            loop {
                let next = self.sequencer.lock().pop_next();
                let Some((lsn, (batch, properties_json), done)) = next else {
                    break;
                };
                self.apply_one(lsn, batch, properties_json, done);
            }
            drop(applying);
            // A batch parked after our last pop but before we let go found the apply
            // lock taken and left: pick it up.
            if !self.sequencer.lock().has_next() {
                return;
            }
        }
    }

    fn apply_one(
        &self,
        lsn: u64,
        batch: EventBatch,
        properties_json: Vec<String>,
        done: tokio::sync::oneshot::Sender<Result<(), SinkError>>,
    ) {
        // Taken before the batch moves into the store (which then needs no copy).
        let effects = identity_effects(&batch);
        let result = self
            .store
            .apply_encoded(lsn, batch, properties_json)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(lsn, error = %e, "Applying a durable batch to the store failed.");
                SinkError::Internal(e.to_string())
            });
        {
            let mut queue = self.identity_queue.lock();
            if let Some(effects) = effects {
                queue.batches.push(effects);
            }
            queue.through_lsn = lsn;
        }
        let _ = done.send(result);
    }

    async fn flush_loop(&self) {
        let mut shutdown = self.shutdown.subscribe();
        let mut last_flush = Instant::now();
        // Poll often, flush when the interval elapsed or the buffer grew past its
        // threshold, so a burst does not have to wait for the timer.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let due = last_flush.elapsed() >= self.config.flush_interval
                || self.store.buffered_bytes() >= self.config.flush_bytes;
            if !due {
                continue;
            }
            last_flush = Instant::now();
            if let Err(e) = self.flush_and_trim().await {
                tracing::error!(error = %e, "Flush failed; events stay in the WAL and will be retried.");
            }
        }
    }

    /// Flushes the store buffer and removes WAL segments both consumers no longer need.
    async fn flush_and_trim(&self) -> Result<()> {
        self.store.flush().await?;
        let store_lsn = self.store.durable_lsn();
        let identity_lsn = self.persons.applied_lsn().await?;
        let safe = store_lsn.min(identity_lsn);
        if safe > 0 {
            let removed = self.wal.remove_segments_before(safe + 1)?;
            if removed > 0 {
                tracing::debug!(removed, safe, "Removed WAL segments.");
            }
        }
        Ok(())
    }

    async fn identity_loop(&self) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.identity_interval) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.apply_identity_queue().await {
                tracing::error!(error = %e, "Applying identity effects failed; they will be retried.");
            }
        }
    }

    async fn apply_identity_queue(&self) -> Result<()> {
        let (batches, through_lsn) = {
            let mut queue = self.identity_queue.lock();
            (std::mem::take(&mut queue.batches), queue.through_lsn)
        };
        if batches.is_empty() && through_lsn <= self.persons.applied_lsn().await? {
            return Ok(());
        }
        let started = Instant::now();
        match self.persons.apply_events(through_lsn, &batches).await {
            Ok(stats) => {
                metrics::histogram!("tally_pipeline_identity_apply_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(?stats, through_lsn, "Applied identity effects.");
                Ok(())
            }
            Err(e) => {
                // Put them back in front, in order, so nothing is skipped.
                let mut queue = self.identity_queue.lock();
                let mut restored = batches;
                restored.append(&mut queue.batches);
                queue.batches = restored;
                Err(e.into())
            }
        }
    }

    async fn compaction_loop(&self) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.compaction_interval) => {}
                _ = shutdown.changed() => return,
            }
            match self.store.compact_once().await {
                Ok(report) => tracing::debug!(?report, "Compaction pass finished."),
                Err(e) => tracing::error!(error = %e, "Compaction failed; inputs are kept."),
            }
        }
    }
}

/// The events of a batch that change persons or groups, if any.
fn identity_effects(batch: &EventBatch) -> Option<EventBatch> {
    let events: Vec<Event> = batch
        .events
        .iter()
        .filter(|e| tally_meta::has_identity_effects(e))
        .cloned()
        .collect();
    (!events.is_empty()).then(|| EventBatch {
        tenant: batch.tenant,
        events,
    })
}

fn sink_error_from_wal(e: tally_wal::Error) -> SinkError {
    match e {
        tally_wal::Error::Backpressure { .. } => {
            metrics::counter!("tally_pipeline_backpressure_total", "reason" => "wal_pending")
                .increment(1);
            SinkError::Overloaded {
                reason: "write-ahead log behind",
                retry_after: Duration::from_secs(1),
            }
        }
        tally_wal::Error::Stopped { .. } => SinkError::Unavailable(e.to_string()),
        other => SinkError::Internal(other.to_string()),
    }
}
