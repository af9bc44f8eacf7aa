//! Appending, ordering, concurrency, group commit, rollover, retention, locking.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use tally_core::{Classify, ErrorClass};
use tally_wal::{Error, Lsn, Wal, WalConfig};

use crate::{SyncGate, build_log, payload, replay_all, small_config, tempdir, wal_dir};

#[test]
fn records_round_trip_in_order_and_survive_reopen() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let (wal, report) = Wal::open(WalConfig::new(&dir)).unwrap();
    assert!(report.is_clean());
    assert_eq!(report.next_lsn, 1);
    assert_eq!(wal.last_lsn(), 0);

    for i in 1..=50u64 {
        let lsn = wal
            .append(payload(i, i as usize * 3))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(lsn, i);
    }
    assert_eq!(wal.last_lsn(), 50);
    assert_eq!(wal.pending_bytes(), 0);
    let records = replay_all(&wal);
    assert_eq!(records.len(), 50);
    for (i, (lsn, bytes)) in records.iter().enumerate() {
        assert_eq!(*lsn, i as Lsn + 1);
        assert_eq!(*bytes, payload(*lsn, *lsn as usize * 3));
    }
    let mut after_40 = Vec::new();
    let count = wal
        .replay(40, |lsn, _| {
            after_40.push(lsn);
            Ok::<(), Error>(())
        })
        .unwrap();
    assert_eq!(count, 10);
    assert_eq!(after_40, (41..=50).collect::<Vec<_>>());
    // The callback's first error ends the replay and comes back unchanged.
    let mut seen = 0;
    let failed = wal.replay(0, |lsn, _| {
        seen += 1;
        if lsn == 3 {
            return Err(Error::InvalidConfig("callback gave up".into()));
        }
        Ok(())
    });
    assert!(matches!(failed, Err(Error::InvalidConfig(m)) if m == "callback gave up"));
    assert_eq!(seen, 3);
    wal.shutdown().unwrap();

    let (wal, report) = Wal::open(WalConfig::new(&dir)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records_kept, 50);
    assert_eq!((report.first_lsn, report.last_lsn), (Some(1), Some(50)));
    assert_eq!(report.next_lsn, 51);
    assert_eq!(wal.last_lsn(), 50);
    assert_eq!(wal.append(b"next".to_vec()).unwrap().wait().unwrap(), 51);
    assert_eq!(replay_all(&wal).len(), 51);
}

#[test]
fn empty_and_maximal_records_are_accepted_and_oversized_refused() {
    let root = tempdir();
    let mut config = small_config(&wal_dir(&root));
    config.max_record_bytes = 1000;
    let (wal, _) = Wal::open(config).unwrap();
    assert_eq!(wal.append(Vec::new()).unwrap().wait().unwrap(), 1);
    // Larger than a whole segment: it gets one of its own.
    assert_eq!(wal.append(payload(2, 1000)).unwrap().wait().unwrap(), 2);
    let too_large = wal.append(vec![0; 1001]).unwrap_err();
    assert!(matches!(
        too_large,
        Error::RecordTooLarge {
            size: 1001,
            limit: 1000
        }
    ));
    assert_eq!(too_large.class(), ErrorClass::PayloadTooLarge);
    // The refused record did not consume an LSN.
    assert_eq!(wal.append(b"x".to_vec()).unwrap().wait().unwrap(), 3);
    let records = replay_all(&wal);
    assert_eq!(records[0], (1, Vec::new()));
    assert_eq!(records[1], (2, payload(2, 1000)));
}

fn assert_dense_and_intact(wal: &Wal, lsns: &[Lsn], expected_payload: impl Fn(&[u8]) -> bool) {
    let unique: BTreeSet<Lsn> = lsns.iter().copied().collect();
    assert_eq!(unique.len(), lsns.len(), "LSNs are unique");
    assert_eq!(
        unique.into_iter().collect::<Vec<_>>(),
        (1..=lsns.len() as Lsn).collect::<Vec<_>>(),
        "LSNs are dense from 1"
    );
    let records = replay_all(wal);
    assert_eq!(records.len(), lsns.len());
    assert!(records.iter().all(|(_, bytes)| expected_payload(bytes)));
}

#[test]
fn many_threads_appending_concurrently_all_resolve_with_dense_lsns() {
    let root = tempdir();
    let (wal, _) = Wal::open(small_config(&wal_dir(&root))).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            thread::spawn(move || {
                (0..150u64)
                    .map(|i| {
                        let record = payload(t * 1000 + i, 24);
                        let future = wal.append(record).unwrap();
                        let assigned = future.lsn();
                        let lsn = future.wait().unwrap();
                        assert_eq!(lsn, assigned);
                        lsn
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let lsns: Vec<Lsn> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_dense_and_intact(&wal, &lsns, |bytes| bytes.len() == 24);
    // Each LSN carries the record its appender sent.
    for (lsn, bytes) in replay_all(&wal) {
        let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(bytes, payload(seed, 24), "lsn {lsn}");
    }
}

#[test]
fn many_tokio_tasks_appending_concurrently_all_resolve_with_dense_lsns() {
    let root = tempdir();
    let (wal, _) = Wal::open(small_config(&wal_dir(&root))).unwrap();
    let wal = Arc::new(wal);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let lsns = runtime.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|t| {
                let wal = Arc::clone(&wal);
                tokio::spawn(async move {
                    let mut lsns = Vec::new();
                    for i in 0..10u64 {
                        lsns.push(wal.append(payload(t * 100 + i, 40)).unwrap().await.unwrap());
                    }
                    lsns
                })
            })
            .collect();
        let mut lsns = Vec::new();
        for task in tasks {
            lsns.extend(task.await.unwrap());
        }
        lsns
    });
    assert_dense_and_intact(&wal, &lsns, |bytes| bytes.len() == 40);
}

#[test]
fn one_sync_makes_everything_queued_during_the_previous_sync_durable() {
    let root = tempdir();
    let gate = SyncGate::closed();
    let mut config = WalConfig::new(wal_dir(&root));
    config.faults = Some(gate.clone());
    let (wal, _) = Wal::open(config).unwrap();
    let first = wal.append(b"first".to_vec()).unwrap();
    gate.wait_entered(1); // the writer holds record 1 in its sync
    let queued: Vec<_> = (0..99)
        .map(|i| wal.append(payload(i, 10)).unwrap())
        .collect();
    assert_eq!(wal.pending_bytes(), 100 * 16 + 5 + 99 * 10);
    gate.open();
    assert_eq!(first.wait().unwrap(), 1);
    for (i, future) in queued.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap(), i as Lsn + 2);
    }
    assert_eq!(
        gate.entered.load(Ordering::SeqCst),
        2,
        "two groups, two syncs"
    );
    assert_eq!(wal.pending_bytes(), 0);
}

#[test]
fn segments_roll_over_are_named_by_first_lsn_and_reopen_cleanly() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let sizes: Vec<usize> = (0..60).map(|i| i % 50).collect();
    let reference = build_log(small_config(&dir), &sizes);
    let names: Vec<String> = crate::read_segments(&dir)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.len() > 3, "{names:?}");
    assert_eq!(names[0], "00000000000000000001.wal");

    let (wal, report) = Wal::open(small_config(&dir)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records_kept, 60);
    // Every segment's records start at the LSN in its name.
    for segment in &report.segments {
        if let Some(first) = segment.first_lsn {
            assert_eq!(first, segment.name_lsn);
            assert!(segment.bytes <= 512 || segment.records_kept == 1);
        }
    }
    let records = replay_all(&wal);
    assert_eq!(records.len(), 60);
    for (lsn, bytes) in &records {
        assert_eq!(&reference[lsn], bytes);
    }
    // A fresh segment continues the sequence.
    assert_eq!(wal.append(b"more".to_vec()).unwrap().wait().unwrap(), 61);
    assert!(dir.join("00000000000000000061.wal").exists());
}

#[test]
fn remove_segments_before_deletes_only_fully_covered_prefix_segments() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let sizes = vec![100; 40]; // four records of 116 bytes per 512-byte segment
    build_log(small_config(&dir), &sizes);
    let (wal, report) = Wal::open(small_config(&dir)).unwrap();
    let segments_before = wal.segment_count();
    let covered = report
        .segments
        .iter()
        .filter(|s| s.last_lsn.is_some_and(|last| last < 22))
        .count();
    assert!(covered >= 2);
    assert_eq!(wal.remove_segments_before(22).unwrap(), covered);
    assert_eq!(wal.segment_count(), segments_before - covered);
    let remaining = replay_all(&wal);
    let first = remaining[0].0;
    assert!(first <= 22 && first > 1, "first kept {first}");
    assert_eq!(remaining.last().unwrap().0, 40);
    // Nothing more is covered; repeating is a no-op.
    assert_eq!(wal.remove_segments_before(22).unwrap(), 0);
    // Everything: only the active segment stays.
    let removed = wal.remove_segments_before(u64::MAX).unwrap();
    assert!(removed > 0);
    assert_eq!(wal.segment_count(), 1);
    assert!(replay_all(&wal).is_empty());
    drop(wal);

    // The active (empty) segment carries the LSN high-water mark across restarts.
    let (wal, report) = Wal::open(small_config(&dir)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.next_lsn, 41);
    assert_eq!(wal.append(b"x".to_vec()).unwrap().wait().unwrap(), 41);
}

#[test]
fn a_directory_is_opened_by_one_wal_at_a_time() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let (wal, _) = Wal::open(WalConfig::new(&dir)).unwrap();
    assert!(matches!(
        Wal::open(WalConfig::new(&dir)),
        Err(Error::Locked { .. })
    ));
    drop(wal);
    let (_wal, report) = Wal::open(WalConfig::new(&dir)).unwrap();
    assert!(report.is_clean());
}

#[test]
fn linger_still_completes_every_append() {
    let root = tempdir();
    let mut config = small_config(&wal_dir(&root));
    config.linger = std::time::Duration::from_millis(2);
    let (wal, _) = Wal::open(config).unwrap();
    let futures: Vec<_> = (0..20)
        .map(|i| wal.append(payload(i, 8)).unwrap())
        .collect();
    let lsns: Vec<Lsn> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
}

#[test]
fn dropping_the_wal_flushes_queued_appends() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let (wal, _) = Wal::open(small_config(&dir)).unwrap();
    let futures: Vec<_> = (0..30)
        .map(|i| wal.append(payload(i, 30)).unwrap())
        .collect();
    drop(wal);
    for (i, future) in futures.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap(), i as Lsn + 1);
    }
    let (_wal, report) = Wal::open(small_config(&dir)).unwrap();
    assert_eq!(report.records_kept, 30);
}

#[test]
fn replay_during_appends_sees_a_dense_durable_prefix() {
    let root = tempdir();
    let (wal, _) = Wal::open(small_config(&wal_dir(&root))).unwrap();
    let wal = Arc::new(wal);
    let appender = {
        let wal = Arc::clone(&wal);
        thread::spawn(move || {
            for i in 1..=400u64 {
                wal.append(payload(i, (i % 60) as usize))
                    .unwrap()
                    .wait()
                    .unwrap();
            }
        })
    };
    let mut longest = 0;
    while longest < 400 {
        let durable_before = wal.last_lsn();
        let records = replay_all(&wal);
        assert!(
            records.len() as u64 >= durable_before,
            "replay sees every durable record"
        );
        for (i, (lsn, bytes)) in records.iter().enumerate() {
            assert_eq!(*lsn, i as Lsn + 1);
            assert_eq!(*bytes, payload(*lsn, (*lsn % 60) as usize));
        }
        longest = records.len();
    }
    appender.join().unwrap();
}
