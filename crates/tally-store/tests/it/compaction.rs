use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use datafusion::prelude::SessionContext;
use tally_store::{EmbeddedStore, PartitionGranularity};

use crate::*;

/// Reads a data file in its stored order.
/// Each row's sort key `(event, day, distinct_id, timestamp)` (the store's file order,
/// `tally_store::sort_batch`, less the uuid tiebreak), in file order.
async fn file_rows(path: &std::path::Path) -> Vec<(String, i64, String, i64)> {
    let ctx = SessionContext::new();
    let df = ctx
        .read_parquet(path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let text = |b: &arrow::array::RecordBatch, name: &str| {
        arrow::compute::cast(
            b.column_by_name(name).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap()
    };
    let mut rows = Vec::new();
    for b in df.collect().await.unwrap() {
        let e = text(&b, "event");
        let e = e.as_any().downcast_ref::<StringArray>().unwrap();
        let d = text(&b, "distinct_id");
        let d = d.as_any().downcast_ref::<StringArray>().unwrap();
        let t = b
            .column_by_name("timestamp")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            let ts = t.value(i);
            rows.push((
                e.value(i).to_owned(),
                ts.div_euclid(tally_core::time::MICROS_PER_DAY),
                d.value(i).to_owned(),
                ts,
            ));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_sorts_dedups_levels_up_and_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let now = anchor();
    // Several flushes of interleaved people into one partition.
    let mut all = Vec::new();
    for round in 0..4u128 {
        let evs: Vec<_> = (round * 100..round * 100 + 100)
            .map(|n| event(n, now - (n as i64 * 7919) % 1_000_000_000))
            .collect();
        store
            .apply(round as u64 + 1, &batch(T1, evs.clone()))
            .unwrap();
        store.flush().await.unwrap();
        all.extend(evs);
    }
    assert_eq!(store.stats().levels[&0].files, 4);
    let report = store.compact_once().await.unwrap();
    assert_eq!(report.input_files, 4);
    assert_eq!(report.input_rows, 400);
    assert_eq!(report.output_rows, 400);
    assert_eq!(report.duplicates_removed, 0);
    let stats = store.stats();
    assert!(!stats.levels.contains_key(&0));
    assert_eq!(stats.levels[&1].rows, 400);
    assert_eq!(stats.levels[&1].files, 2, "target_file_rows = 256");
    // Files are sorted by (event, day, distinct_id, timestamp), also across the file
    // boundary.
    let mut concatenated = Vec::new();
    let mut files = store.files(T1);
    files.sort_by(|a, b| a.id.cmp(&b.id));
    for f in &files {
        concatenated.extend(
            file_rows(
                &dir.path()
                    .join(f.relative_path(PartitionGranularity::Month)),
            )
            .await,
        );
    }
    let mut sorted = concatenated.clone();
    sorted.sort();
    assert_eq!(concatenated, sorted);
    assert_eq!(uuids(&store.scan_events(T1).await.unwrap()), uuids(&all));
    // Inputs are gone from disk.
    let parquet_files = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(parquet_files, 2);

    // Two more rounds produce a second level-1 file set; with 2+ L1 files the next
    // compaction rewrites the whole partition into level 2.
    for round in 4..6u128 {
        let evs: Vec<_> = (round * 100..round * 100 + 100)
            .map(|n| event(n, now - n as i64))
            .collect();
        store
            .apply(round as u64 + 1, &batch(T1, evs.clone()))
            .unwrap();
        store.flush().await.unwrap();
        all.extend(evs);
    }
    store.compact_once().await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.levels.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(stats.levels[&2].rows, 600);
    assert_eq!(store.count_events(T1).await.unwrap(), 600);
    assert_eq!(
        store.compact_once().await.unwrap().partitions,
        0,
        "nothing left to do"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_keeps_compacted_files_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    for lsn in 1..=2u64 {
        let n = lsn as u128 * 100;
        store.apply(lsn, &batch(T1, events(n..n + 50))).unwrap();
        store.flush().await.unwrap();
    }
    let ctx = store.session_context_for(T1).unwrap(); // snapshot of the two L0 files
    store.compact_once().await.unwrap();
    assert_eq!(store.stats().obsolete_files, 2, "held by the snapshot");
    let rows = ctx
        .sql("SELECT count(*) FROM events")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows[0].num_rows(), 1);
    drop(rows);
    drop(ctx);
    store.compact_once().await.unwrap(); // reaps
    assert_eq!(store.stats().obsolete_files, 0);
    assert_eq!(
        walk(dir.path())
            .iter()
            .filter(|p| p.ends_with(".parquet"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_write_produces_sorted_queryable_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let started = std::time::Instant::now();
    let n = 3_000u128;
    let t1 = events(0..n);
    let t2 = events(0..n / 3);
    let r = store
        .bulk_write(vec![batch(T1, t1.clone()), batch(T2, t2.clone())])
        .await
        .unwrap();
    eprintln!(
        "bulk_write: {} events in {:?} (debug build)",
        n + n / 3,
        started.elapsed()
    );
    assert_eq!(r.rows as u128, n + n / 3);
    assert_eq!(store.count_events(T1).await.unwrap() as u128, n);
    assert_eq!(uuids(&store.scan_events(T2).await.unwrap()), uuids(&t2));
    for f in store.files(T1) {
        let rows = file_rows(
            &dir.path()
                .join(f.relative_path(PartitionGranularity::Month)),
        )
        .await;
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows, sorted);
        assert!(f.rows <= 256);
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Other crates' tests run the store on a current-thread runtime; compaction (which
/// drives DataFusion from a blocking thread) must work there too.
#[tokio::test]
async fn compaction_works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    for lsn in 1..=3u64 {
        let n = lsn as u128 * 1000;
        store.apply(lsn, &batch(T1, events(n..n + 300))).unwrap();
        store.flush().await.unwrap();
    }
    let report = store.compact_once().await.unwrap();
    assert_eq!(report.output_rows, 900);
    assert_eq!(store.count_events(T1).await.unwrap(), 900);
}

/// While flushes and compactions move events from the buffer to files and between
/// files, a concurrent reader always sees every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_events_vanish_or_double_during_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let mut expected = 0u64;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for lsn in 1..=12u64 {
                let n = lsn as u128 * 1000;
                store.apply(lsn, &batch(T1, events(n..n + 100))).unwrap();
                store.flush().await.unwrap();
                store.compact_once().await.unwrap();
            }
        })
    };
    let mut observations = 0;
    while !writer.is_finished() || observations == 0 {
        let seen = store.count_events(T1).await.unwrap();
        // Applies are atomic per batch of 100; any other count is a vanished or
        // doubled event.
        assert_eq!(seen % 100, 0, "saw {seen} events");
        assert!(
            seen >= expected,
            "count went back from {expected} to {seen}"
        );
        expected = seen;
        observations += 1;
    }
    writer.await.unwrap();
    assert_eq!(store.count_events(T1).await.unwrap(), 1200);
}

/// A partition that cannot be compacted (here: a damaged file) is reported and
/// skipped; other partitions are still compacted and nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_does_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    for lsn in 1..=2u64 {
        let n = lsn as u128 * 100;
        store.apply(lsn * 2, &batch(T1, events(n..n + 10))).unwrap();
        store
            .apply(lsn * 2 + 1, &batch(T2, events(n..n + 10)))
            .unwrap();
        store.flush().await.unwrap();
    }
    let t1_files = store.files(T1);
    let victim = dir
        .path()
        .join(t1_files[0].relative_path(PartitionGranularity::Month));
    std::fs::write(&victim, b"not parquet").unwrap();
    let report = store.compact_once().await.unwrap();
    assert_eq!(report.failed_partitions, 1);
    assert_eq!(report.partitions, 1);
    assert_eq!(
        store.files(T1),
        t1_files,
        "the failed partition is untouched"
    );
    assert_eq!(store.files(T2).len(), 1);
    assert_eq!(store.count_events(T2).await.unwrap(), 20);
}
