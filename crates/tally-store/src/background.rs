//! The store's background loop: periodic and size-triggered flushes, and compaction.
//!
//! Owns only scheduling. The pipeline starts it after WAL replay and shuts it down
//! (with a final flush) before exiting; it does not own what a flush or a compaction
//! does.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::store::EmbeddedStore;

/// A running background loop. Dropping it leaves the loop running until the runtime
/// stops; call [`BackgroundHandle::shutdown`] for an orderly stop.
#[derive(Debug)]
pub struct BackgroundHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    store: Arc<EmbeddedStore>,
}

impl BackgroundHandle {
    /// Stops the loop, waits for a flush or compaction in progress, then flushes
    /// whatever is buffered.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::TaskFailed(e.to_string()))?;
        self.store.flush().await.map(|_| ())
    }
}

impl EmbeddedStore {
    /// Starts flushing every `flush_interval` (and as soon as the buffer exceeds
    /// `flush_rows` / `flush_bytes`) and compacting every `compaction_interval`.
    pub fn spawn_background(self: &Arc<Self>) -> BackgroundHandle {
        let (stop, stopped) = watch::channel(false);
        let store = Arc::clone(self);
        let task = tokio::spawn(run(store.clone(), stopped));
        BackgroundHandle { stop, task, store }
    }
}

async fn run(store: Arc<EmbeddedStore>, mut stopped: watch::Receiver<bool>) {
    let config = store.config().clone();
    let mut flush_tick = tokio::time::interval(config.flush_interval);
    let mut compaction_tick = tokio::time::interval(config.compaction_interval);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    compaction_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval fires at once; nothing to do yet.
    flush_tick.tick().await;
    compaction_tick.tick().await;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = flush_tick.tick() => flush(&store).await,
            _ = store.inner.flush_wanted.notified() => flush(&store).await,
            _ = compaction_tick.tick() => {
                if let Err(error) = store.compact_once().await {
                    // Compaction failures lose nothing (inputs stay live); retried next tick.
                    tracing::warn!(%error, "compaction failed");
                }
            }
        }
    }
}

async fn flush(store: &EmbeddedStore) {
    // A flush with nothing buffered returns at once (or just publishes an advanced
    // durable_lsn after all-duplicate batches).
    if let Err(error) = store.flush().await {
        // The events stay buffered (and in the WAL); the next tick retries.
        tracing::warn!(%error, "flush failed");
    }
}
