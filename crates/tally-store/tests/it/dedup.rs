use tally_core::time::{MICROS_PER_DAY, now_micros};
use tally_store::EmbeddedStore;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_are_dropped_across_apply_flush_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(0..40);
    {
        let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
        // Within one batch.
        let mut doubled = input[..10].to_vec();
        doubled.extend(input[..10].iter().cloned());
        let o = store.apply(1, &batch(T1, doubled)).unwrap();
        assert_eq!((o.inserted, o.duplicates), (10, 10));
        // Against the buffer.
        let o = store.apply(2, &batch(T1, input[..20].to_vec())).unwrap();
        assert_eq!((o.inserted, o.duplicates), (10, 10));
        store.flush().await.unwrap();
        // Against flushed files.
        let o = store.apply(3, &batch(T1, input[..30].to_vec())).unwrap();
        assert_eq!((o.inserted, o.duplicates), (10, 20));
        store.flush().await.unwrap();
        store.compact_once().await.unwrap();
        // Against compacted files.
        let o = store.apply(4, &batch(T1, input.clone())).unwrap();
        assert_eq!((o.inserted, o.duplicates), (10, 30));
        store.flush().await.unwrap();
        assert_eq!(store.stats().recent_dedup_entries, 40);
    }
    // After a restart (recent index rebuilt from files), with a new lsn.
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let o = store.apply(5, &batch(T1, input.clone())).unwrap();
    assert_eq!((o.inserted, o.duplicates), (0, 40));
    assert_eq!(uuids(&store.scan_events(T1).await.unwrap()), uuids(&input));
}

/// Re-running a file import after the dedup window adds nothing: the historic
/// events are checked against their partitions' stored uuids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_import_after_the_window_dedups_against_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_micros();
    let import = |received_at: i64| -> Vec<tally_core::Event> {
        (0..30u128)
            .map(|n| {
                let mut e = event(n, now - (100 + n as i64 % 60) * MICROS_PER_DAY);
                e.received_at = received_at;
                e
            })
            .collect()
    };
    {
        let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
        // The first run was received three days ago: outside the 24 h window.
        store
            .apply(1, &batch(T1, import(now - 3 * MICROS_PER_DAY)))
            .unwrap();
        store.flush().await.unwrap();
    }
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    assert_eq!(store.stats().recent_dedup_entries, 0, "nothing is recent");
    let o = store.apply(2, &batch(T1, import(now))).unwrap();
    assert_eq!((o.inserted, o.duplicates), (0, 30));
    assert!(store.stats().historic_dedup_uuids >= 30);
    // A genuinely new historic event in the same partitions still goes in.
    let mut fresh = import(now)[0].clone();
    fresh.uuid = uuid::Uuid::from_u128(999);
    assert_eq!(store.apply(3, &batch(T1, vec![fresh])).unwrap().inserted, 1);
    assert_eq!(store.count_events(T1).await.unwrap(), 31);
}

/// Bulk loads dedup within the call and against recent events; residual duplicates
/// (here: the same generated file loaded twice long after the window) are removed by
/// compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_removes_residual_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let old = now_micros() - 10 * MICROS_PER_DAY;
    let generated: Vec<_> = (0..300u128)
        .map(|n| {
            let mut e = event(n, old + n as i64);
            e.received_at = old;
            e
        })
        .collect();
    let mut twice = generated.clone();
    twice.extend(generated[..5].iter().cloned());
    let r = store.bulk_write(vec![batch(T1, twice)]).await.unwrap();
    assert_eq!((r.rows, r.duplicates), (300, 5));
    let r = store
        .bulk_write(vec![batch(T1, generated.clone())])
        .await
        .unwrap();
    assert_eq!(r.rows, 300, "old received_at: not in the recent index");
    assert_eq!(store.count_events(T1).await.unwrap(), 600);
    let report = store.compact_once().await.unwrap();
    assert_eq!(report.duplicates_removed, 300);
    assert_eq!(report.output_rows, 300);
    assert_eq!(store.count_events(T1).await.unwrap(), 300);
    assert_eq!(
        uuids(&store.scan_events(T1).await.unwrap()),
        uuids(&generated)
    );
}

/// A bulk load into a partition whose uuid set is cached must not leave the cache
/// stale: a historic resend of a bulk-loaded event is still a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_invalidates_cached_partition_sets() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let now = now_micros();
    let old = |n: u128| {
        let mut e = event(n, now - 200 * MICROS_PER_DAY);
        e.received_at = now - 100 * MICROS_PER_DAY; // not in the recent index
        e
    };
    let mut first = old(1);
    first.received_at = now;
    assert_eq!(store.apply(1, &batch(T1, vec![first])).unwrap().inserted, 1); // caches the set
    store
        .bulk_write(vec![batch(T1, vec![old(2)])])
        .await
        .unwrap();
    let mut resend = old(2);
    resend.received_at = now;
    assert_eq!(
        store.apply(2, &batch(T1, vec![resend])).unwrap().duplicates,
        1
    );
    assert_eq!(store.count_events(T1).await.unwrap(), 2);
}

/// A batch whose historic events span more partitions than the uuid budget holds
/// still dedups against every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historic_dedup_holds_when_one_batch_exceeds_the_cache_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.dedup_max_historic = 1;
    let now = now_micros();
    let import = |received_at: i64| -> Vec<tally_core::Event> {
        (0..12u128)
            .map(|n| {
                // One event per month, a year back.
                let mut e = event(n, now - (40 + 31 * n as i64) * MICROS_PER_DAY);
                e.received_at = received_at;
                e
            })
            .collect()
    };
    {
        let store = EmbeddedStore::open(cfg.clone()).await.unwrap();
        store
            .apply(1, &batch(T1, import(now - 5 * MICROS_PER_DAY)))
            .unwrap();
        store.flush().await.unwrap();
    }
    let store = EmbeddedStore::open(cfg).await.unwrap();
    let o = store.apply(2, &batch(T1, import(now))).unwrap();
    assert_eq!((o.inserted, o.duplicates), (0, 12));
    assert!(
        store.stats().historic_dedup_uuids <= 1,
        "the budget holds after the batch"
    );
}
