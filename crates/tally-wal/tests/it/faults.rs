//! Backpressure and the stop-on-failure contract.

use tally_core::{Classify, ErrorClass};
use tally_wal::{Error, FailNext, Wal, WalConfig};

use crate::{SyncGate, payload, replay_all, small_config, tempdir, wal_dir};

#[test]
fn appends_beyond_max_pending_bytes_are_refused_until_the_writer_catches_up() {
    let root = tempdir();
    let gate = SyncGate::closed();
    let mut config = WalConfig::new(wal_dir(&root));
    config.max_record_bytes = 84;
    config.max_pending_bytes = 1000; // ten 100-byte frames
    config.faults = Some(gate.clone());
    let (wal, _) = Wal::open(config).unwrap();

    let mut accepted = vec![wal.append(payload(1, 84)).unwrap()];
    gate.wait_entered(1); // the writer is stuck syncing record 1
    for i in 2..=10 {
        accepted.push(wal.append(payload(i, 84)).unwrap());
    }
    assert_eq!(wal.pending_bytes(), 1000);
    let refused = wal.append(payload(11, 84)).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Backpressure {
                pending: 1000,
                limit: 1000
            }
        ),
        "{refused:?}"
    );
    assert!(matches!(refused.class(), ErrorClass::Unavailable { .. }));
    // Even an empty record needs room for its framing.
    assert!(matches!(
        wal.append(Vec::new()),
        Err(Error::Backpressure { .. })
    ));

    gate.open();
    for (i, future) in accepted.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap(), i as u64 + 1);
    }
    assert_eq!(wal.pending_bytes(), 0);
    // Refused appends consumed no LSN.
    assert_eq!(wal.append(payload(11, 84)).unwrap().wait().unwrap(), 11);
}

#[test]
fn a_failed_fsync_stops_the_writer_for_waiters_and_later_appends() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let faults = FailNext::new();
    let mut config = small_config(&dir);
    config.faults = Some(faults.clone());
    let (wal, _) = Wal::open(config).unwrap();
    assert_eq!(wal.append(b"durable".to_vec()).unwrap().wait().unwrap(), 1);

    faults.fail_next_sync();
    let doomed = wal.append(b"never acknowledged".to_vec()).unwrap();
    let error = doomed.wait().unwrap_err();
    assert!(
        matches!(&error, Error::Stopped { reason } if reason.contains("injected fsync failure")),
        "{error}"
    );
    assert!(wal.is_stopped());
    assert!(wal.stop_reason().is_some());
    assert_eq!(
        wal.last_lsn(),
        1,
        "nothing after the failure counts as durable"
    );
    assert_eq!(wal.pending_bytes(), 0);
    // Not retried: later appends fail at once, even though the disk "works" again.
    let later = wal.append(b"later".to_vec()).unwrap_err();
    assert!(matches!(later, Error::Stopped { .. }));
    assert!(matches!(later.class(), ErrorClass::Unavailable { .. }));
    assert!(matches!(wal.shutdown(), Err(Error::Stopped { .. })));

    // A restart recovers: the acknowledged record is there, and the log continues.
    let (wal, report) = Wal::open(small_config(&dir)).unwrap();
    let records = replay_all(&wal);
    assert_eq!(records[0], (1, b"durable".to_vec()));
    // The unsynced record may or may not have reached the disk; either is allowed.
    assert!(report.records_kept == 1 || report.records_kept == 2);
    let next = wal
        .append(b"after restart".to_vec())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(next, report.next_lsn);
}

#[test]
fn a_failed_write_fails_the_whole_group_and_everything_queued_behind_it() {
    let root = tempdir();
    let gate = std::sync::Arc::new(GateThenFail {
        gate: SyncGate::closed(),
        fail: FailNext::default(),
    });
    let mut config = small_config(&wal_dir(&root));
    config.faults = Some(gate.clone());
    let (wal, _) = Wal::open(config).unwrap();
    let first = wal.append(b"one".to_vec()).unwrap();
    gate.gate.wait_entered(1);
    let queued: Vec<_> = (0..20)
        .map(|i| wal.append(payload(i, 50)).unwrap())
        .collect();
    gate.fail.fail_next_write();
    gate.gate.open();
    assert_eq!(first.wait().unwrap(), 1);
    for future in queued {
        assert!(matches!(future.wait(), Err(Error::Stopped { .. })));
    }
    assert!(wal.is_stopped());
    assert!(matches!(
        wal.append(b"x".to_vec()),
        Err(Error::Stopped { .. })
    ));
}

#[test]
fn a_failed_directory_sync_after_rollover_stops_the_writer() {
    let root = tempdir();
    let dir = wal_dir(&root);
    let faults = std::sync::Arc::new(FailDirSync { dir: dir.clone() });
    let mut config = small_config(&dir);
    config.faults = Some(faults);
    let (wal, _) = Wal::open(config).unwrap();
    // 300-byte records: the second one rolls over to a new segment.
    assert_eq!(wal.append(payload(1, 300)).unwrap().wait().unwrap(), 1);
    let rolled = wal.append(payload(2, 300)).unwrap().wait();
    assert!(matches!(rolled, Err(Error::Stopped { reason }) if reason.contains("fsync directory")));
    assert_eq!(wal.last_lsn(), 1);
}

/// Holds the first sync, and can fail the next write.
#[derive(Debug)]
struct GateThenFail {
    gate: std::sync::Arc<SyncGate>,
    fail: FailNext,
}

impl tally_wal::FaultInjector for GateThenFail {
    fn before_write(&self, segment: &std::path::Path) -> std::io::Result<()> {
        self.fail.before_write(segment)
    }
    fn before_sync(&self, segment: &std::path::Path) -> std::io::Result<()> {
        self.gate.before_sync(segment)
    }
}

/// Fails every fsync of the directory itself.
#[derive(Debug)]
struct FailDirSync {
    dir: std::path::PathBuf,
}

impl tally_wal::FaultInjector for FailDirSync {
    fn before_sync(&self, target: &std::path::Path) -> std::io::Result<()> {
        if target == self.dir {
            return Err(std::io::Error::other("injected directory fsync failure"));
        }
        Ok(())
    }
}
