use std::fs;

use tally_store::{EmbeddedStore, Error, PartitionGranularity};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_recovers_files_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(0..50);
    let files = {
        let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
        store.apply(7, &batch(T1, input.clone())).unwrap();
        store.flush().await.unwrap();
        store.apply(8, &batch(T1, events(50..60))).unwrap(); // never flushed: lost with the process
        store.files(T1)
    };
    // Leftovers of an interrupted flush or compaction.
    let partition_dir = dir
        .path()
        .join(files[0].relative_path(PartitionGranularity::Month))
        .parent()
        .unwrap()
        .to_path_buf();
    let orphan = partition_dir.join("L0-0000orphan.parquet");
    fs::write(&orphan, b"half a file").unwrap();
    let tmp = partition_dir.join("L1-0000partial.parquet.tmp");
    fs::write(&tmp, b"partial").unwrap();
    fs::write(dir.path().join("manifest.json.tmp"), b"{").unwrap();

    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    assert!(!orphan.exists() && !tmp.exists());
    assert!(!dir.path().join("manifest.json.tmp").exists());
    assert_eq!(store.files(T1), files);
    assert_eq!(store.durable_lsn(), 7);
    let mut expected = input.clone();
    expected.sort_by_key(|e| (e.timestamp, e.uuid));
    assert_eq!(store.scan_events(T1).await.unwrap(), expected);
    // The pipeline replays from durable_lsn: 7 is a no-op, 8 is applied.
    assert!(store.apply(7, &batch(T1, input)).unwrap().already_durable);
    let replay = store.apply(8, &batch(T1, events(50..60))).unwrap();
    assert_eq!(replay.inserted, 10);
    assert_eq!(store.count_events(T1).await.unwrap(), 60);
    // The catalog survived.
    assert!(store.property_catalog(T1).keys["plan"].materialized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_different_granularity_and_a_corrupt_manifest() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(config(dir.path())).await.unwrap());
    let mut weekly = config(dir.path());
    weekly.granularity = PartitionGranularity::Week;
    assert!(matches!(
        EmbeddedStore::open(weekly).await,
        Err(Error::Config(_))
    ));
    fs::write(dir.path().join("manifest.json"), b"garbage").unwrap();
    assert!(matches!(
        EmbeddedStore::open(config(dir.path())).await,
        Err(Error::CorruptMetadata { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_live_file_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = {
        let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
        store.apply(1, &batch(T1, events(0..5))).unwrap();
        store.flush().await.unwrap();
        store.files(T1)[0].clone()
    };
    fs::remove_file(
        dir.path()
            .join(file.relative_path(PartitionGranularity::Month)),
    )
    .unwrap();
    assert!(matches!(
        EmbeddedStore::open(config(dir.path())).await,
        Err(Error::UnexpectedData { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_loop_flushes_and_shutdown_flushes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_rows = 10;
    let store = EmbeddedStore::open(cfg).await.unwrap();
    let background = store.spawn_background();
    store.apply(1, &batch(T1, events(0..20))).unwrap(); // over flush_rows: flushes soon
    let mut waited = 0;
    while store.durable_lsn() < 1 && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        waited += 1;
    }
    assert_eq!(
        store.durable_lsn(),
        1,
        "background flush did not happen within 5 s"
    );
    store.apply(2, &batch(T1, events(20..25))).unwrap();
    background.shutdown().await.unwrap();
    assert_eq!(store.durable_lsn(), 2);
    assert_eq!(store.stats().buffered_rows, 0);
}
