//! Distinct-id numbers: one number per (tenant, distinct id), kept through flushes,
//! compaction, bulk loads and restarts, and given to files an older version wrote.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt32Type;
use tally_core::TenantId;
use tally_store::{EmbeddedStore, Error};

use crate::*;

/// Every `(distinct_id, distinct_id_number)` pair the tenant's events hold.
async fn pairs(store: &EmbeddedStore, tenant: TenantId) -> Vec<(String, u32)> {
    let ctx = store.session_context_for(tenant).unwrap();
    let batches = ctx
        .sql("SELECT DISTINCT CAST(distinct_id AS VARCHAR), distinct_id_number FROM events")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = ids.as_string::<i32>();
        let numbers = b.column(1).as_primitive::<UInt32Type>();
        assert_eq!(numbers.null_count(), 0);
        for row in 0..b.num_rows() {
            out.push((ids.value(row).to_owned(), numbers.value(row)));
        }
    }
    out.sort();
    out
}

/// Asserts that the tenant's events number each distinct id once, with the number
/// the store's numbering gives it, and returns id → number.
async fn check_numbering(store: &EmbeddedStore, tenant: TenantId) -> HashMap<String, u32> {
    let pairs = pairs(store, tenant).await;
    let numbering: Vec<String> = store
        .distinct_ids(tenant, 0)
        .iter()
        .map(str::to_owned)
        .collect();
    let mut by_id = HashMap::new();
    for (id, number) in pairs {
        assert_eq!(
            by_id.insert(id.clone(), number),
            None,
            "{id} has two numbers"
        );
        assert_eq!(numbering.get(number as usize), Some(&id));
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_hold_through_flush_compaction_bulk_load_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    store.apply(1, &batch(T1, events(0..300))).unwrap();
    store.apply(2, &batch(T2, events(5..40))).unwrap();
    let buffered = check_numbering(&store, T1).await;
    assert_eq!(buffered.len(), 7, "user-0 ..= user-6");
    let mut numbers: Vec<u32> = buffered.values().copied().collect();
    numbers.sort();
    assert_eq!(numbers, (0..7).collect::<Vec<_>>(), "dense, from 0");
    // Numbering is per tenant: T2 saw user-5 first.
    assert_eq!(check_numbering(&store, T2).await["user-5"], 0);

    store.flush().await.unwrap();
    assert_eq!(check_numbering(&store, T1).await, buffered);
    for f in store.files(T1) {
        assert_eq!(f.distinct_id_numbers, Some(7));
    }
    store.apply(3, &batch(T1, events(300..600))).unwrap();
    store.flush().await.unwrap();
    store.compact_once().await.unwrap();
    assert_eq!(check_numbering(&store, T1).await, buffered);

    // A bulk load with ids old and new.
    let mut bulk = events(600..700);
    for e in &mut bulk[..10] {
        e.distinct_id = format!("bulk-{}", e.uuid.as_u128());
    }
    store.bulk_write(vec![batch(T1, bulk)]).await.unwrap();
    let grown = check_numbering(&store, T1).await;
    assert_eq!(grown.len(), 17);
    assert!(buffered.iter().all(|(id, n)| grown[id] == *n));
    drop(store);

    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    assert_eq!(check_numbering(&store, T1).await, grown);
    // New ids after the restart continue the numbering.
    let mut late = events(700..701);
    late[0].distinct_id = "late".into();
    store.apply(4, &batch(T1, late)).unwrap();
    assert_eq!(check_numbering(&store, T1).await["late"], 17);
}

/// Rewrites every data file without its `distinct_id_number` column and removes the
/// numbering from the manifest and the disk: the store as a version before
/// numbering left it.
fn make_old_format(dir: &std::path::Path) {
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for file in manifest["files"].as_array_mut().unwrap() {
        file.as_object_mut().unwrap().remove("distinct_id_numbers");
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let mut stack = vec![dir.join("events")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() == "distinct_ids.bin" {
                std::fs::remove_file(&path).unwrap();
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap();
                let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
                let schema = batches[0].schema();
                let keep: Vec<usize> = (0..schema.fields().len())
                    .filter(|&i| schema.field(i).name() != "distinct_id_number")
                    .collect();
                assert_eq!(keep.len() + 1, schema.fields().len());
                let old: Vec<RecordBatch> =
                    batches.iter().map(|b| b.project(&keep).unwrap()).collect();
                let file = std::fs::File::create(&path).unwrap();
                let mut writer =
                    parquet::arrow::ArrowWriter::try_new(file, old[0].schema(), None).unwrap();
                for b in &old {
                    writer.write(b).unwrap();
                }
                writer.close().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_before_numbering_are_numbered_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let input = events(0..500);
    store.apply(1, &batch(T1, input[..250].to_vec())).unwrap();
    store.apply(2, &batch(T2, events(0..50))).unwrap();
    store.flush().await.unwrap();
    store.apply(3, &batch(T1, input[250..].to_vec())).unwrap();
    store.flush().await.unwrap();
    let files_before = store.files(T1).len();
    assert!(files_before > 1, "several files to number");
    drop(store);
    make_old_format(dir.path());

    let store = Arc::new(EmbeddedStore::open(config(dir.path())).await.unwrap());
    for tenant in [T1, T2] {
        assert!(
            store
                .files(tenant)
                .iter()
                .all(|f| f.distinct_id_numbers.is_some())
        );
        assert_eq!(check_numbering(&store, tenant).await.len(), 7);
    }
    let mut expected = input;
    expected.sort_by_key(|e| (e.timestamp, e.uuid));
    assert_eq!(
        store.scan_events(T1).await.unwrap(),
        expected,
        "no event lost"
    );
    drop(store);
    // Numbered for good: the next open has nothing to do and finds the same.
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    assert_eq!(check_numbering(&store, T1).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_files_use_numbers_it_lacks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    store.apply(1, &batch(T1, events(0..50))).unwrap();
    store.flush().await.unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("events/tenant=1/distinct_ids.bin")).unwrap();
    let err = EmbeddedStore::open(config(dir.path())).await.unwrap_err();
    assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
    assert!(err.to_string().contains("uses numbers up to 6"), "{err}");
}
