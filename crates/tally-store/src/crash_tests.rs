//! Crash simulation: an armed [`FaultPoint`] stops an operation exactly where a crash
//! could, leaving the disk as the crash would; the store is then dropped (losing all
//! memory, like a dead process) and reopened.

use std::path::Path;

use serde_json::json;
use tally_core::time::now_micros;
use tally_core::{Event, EventBatch, Properties, TenantId};

use crate::{EmbeddedStore, Error, FaultPoint, StoreConfig};

const T: TenantId = TenantId(9);

fn batch(range: std::ops::Range<u128>) -> EventBatch {
    let now = now_micros();
    let events = range
        .map(|n| {
            let mut properties = Properties::new();
            properties.insert("n".into(), json!(n as u64));
            Event {
                uuid: uuid::Uuid::from_u128(n),
                event: "e".into(),
                distinct_id: format!("d{}", n % 4),
                timestamp: now - n as i64,
                received_at: now,
                properties,
                person_set: Properties::new(),
                person_set_once: Properties::new(),
            }
        })
        .collect();
    EventBatch { tenant: T, events }
}

fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.compaction_min_l0_files = 2;
    c
}

fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(".parquet") {
                out.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn injected(result: crate::Result<impl std::fmt::Debug>, point: FaultPoint) {
    match result {
        Err(Error::InjectedFault(p)) => assert_eq!(p, point),
        other => panic!("expected injected fault at {point:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_flush_wrote_files_but_before_publish() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
        store.apply(1, &batch(0..10)).unwrap();
        store.inject_fault(FaultPoint::FlushBeforePublish);
        injected(store.flush().await, FaultPoint::FlushBeforePublish);
        assert_eq!(parquet_files(dir.path()).len(), 1, "the unpublished file");
        assert_eq!(store.durable_lsn(), 0);
        // Still queryable, exactly once, from the frozen buffer.
        assert_eq!(store.count_events(T).await.unwrap(), 10);
    }
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    assert!(
        parquet_files(dir.path()).is_empty(),
        "orphan removed at open"
    );
    assert_eq!(store.durable_lsn(), 0);
    store.apply(1, &batch(0..10)).unwrap(); // WAL replay
    store.flush().await.unwrap();
    assert_eq!(store.count_events(T).await.unwrap(), 10);
    assert_eq!(store.durable_lsn(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_retried_without_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    store.apply(1, &batch(0..10)).unwrap();
    store.inject_fault(FaultPoint::FlushBeforePublish);
    injected(store.flush().await, FaultPoint::FlushBeforePublish);
    store.apply(2, &batch(10..15)).unwrap();
    let report = store.flush().await.unwrap();
    assert_eq!(
        report.rows, 15,
        "the frozen buffer is written again with the new one"
    );
    assert_eq!(store.durable_lsn(), 2);
    assert_eq!(store.count_events(T).await.unwrap(), 15);
    assert_eq!(store.stats().frozen_buffers, 0);
}

async fn two_flushed_files(dir: &Path) -> std::sync::Arc<EmbeddedStore> {
    let store = EmbeddedStore::open(config(dir)).await.unwrap();
    store.apply(1, &batch(0..10)).unwrap();
    store.flush().await.unwrap();
    store.apply(2, &batch(5..20)).unwrap(); // 5 resent
    store.flush().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_compaction_wrote_output_but_before_publish() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = two_flushed_files(dir.path()).await;
        store.inject_fault(FaultPoint::CompactionBeforePublish);
        injected(
            store.compact_once().await,
            FaultPoint::CompactionBeforePublish,
        );
        assert_eq!(
            parquet_files(dir.path()).len(),
            3,
            "two inputs and the unpublished output"
        );
        assert_eq!(store.count_events(T).await.unwrap(), 20);
    }
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.starts_with("L0-")), "{files:?}");
    assert_eq!(store.count_events(T).await.unwrap(), 20);
    let report = store.compact_once().await.unwrap();
    assert_eq!(report.output_rows, 20);
    assert_eq!(store.count_events(T).await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_compaction_published_but_before_deleting_inputs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = two_flushed_files(dir.path()).await;
        store.inject_fault(FaultPoint::CompactionBeforeDelete);
        injected(
            store.compact_once().await,
            FaultPoint::CompactionBeforeDelete,
        );
        assert_eq!(parquet_files(dir.path()).len(), 3, "inputs not yet deleted");
        assert_eq!(
            store.count_events(T).await.unwrap(),
            20,
            "only the output is live"
        );
    }
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with("L1-"), "{files:?}");
    assert_eq!(store.count_events(T).await.unwrap(), 20);
    assert_eq!(store.durable_lsn(), 2);
}
