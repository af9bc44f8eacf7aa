//! Integration tests of the write-ahead log through its public API, against real
//! files in temporary directories.

mod appends;
mod faults;
mod recovery;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};
use tally_wal::{FaultInjector, Lsn, Wal, WalConfig};

/// A small-segment configuration so that tests roll over often.
pub fn small_config(dir: &Path) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.segment_bytes = 512;
    config.max_record_bytes = 4096;
    config.max_pending_bytes = 1 << 20;
    config
}

/// A payload that identifies its record: `seed` in the first bytes, then a pattern.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (seed as usize * 31 + i * 7) as u8)
        .collect();
    let tag = seed.to_le_bytes();
    let n = len.min(tag.len());
    bytes[..n].copy_from_slice(&tag[..n]);
    bytes
}

pub fn replay_all(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    let mut records = Vec::new();
    wal.replay(0, |lsn, bytes| {
        records.push((lsn, bytes.to_vec()));
        Ok::<(), tally_wal::Error>(())
    })
    .unwrap();
    records
}

/// Segment files (`*.wal`) of a directory, sorted by name, with their contents.
pub fn read_segments(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

pub fn write_segments(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes `sizes.len()` records (LSN i+1 gets `payload(i+1, sizes[i])`) into a fresh
/// log, shuts it down and returns the reference records by LSN.
pub fn build_log(config: WalConfig, sizes: &[usize]) -> BTreeMap<Lsn, Vec<u8>> {
    let (wal, report) = Wal::open(config).unwrap();
    assert!(report.is_clean());
    let mut reference = BTreeMap::new();
    let futures: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let record = payload(i as u64 + 1, len);
            reference.insert(i as Lsn + 1, record.clone());
            wal.append(record).unwrap()
        })
        .collect();
    for (i, future) in futures.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap(), i as Lsn + 1);
    }
    wal.shutdown().unwrap();
    reference
}

/// A fault injector that can hold the writer inside `before_sync` (so that appends
/// pile up behind it deterministically) and counts syncs.
#[derive(Debug, Default)]
pub struct SyncGate {
    closed: Mutex<bool>,
    changed: Condvar,
    /// Syncs that have entered the hook.
    pub entered: AtomicUsize,
}

impl SyncGate {
    pub fn closed() -> Arc<Self> {
        let gate = SyncGate::default();
        *gate.closed.lock() = true;
        Arc::new(gate)
    }

    pub fn open(&self) {
        *self.closed.lock() = false;
        self.changed.notify_all();
    }

    /// Blocks until at least `n` syncs have entered the hook.
    pub fn wait_entered(&self, n: usize) {
        let mut closed = self.closed.lock();
        while self.entered.load(Ordering::SeqCst) < n {
            self.changed.wait(&mut closed);
        }
    }
}

impl FaultInjector for SyncGate {
    fn before_sync(&self, _segment: &Path) -> std::io::Result<()> {
        let mut closed = self.closed.lock();
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_all();
        while *closed {
            self.changed.wait(&mut closed);
        }
        Ok(())
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn wal_dir(root: &tempfile::TempDir) -> PathBuf {
    root.path().join("wal")
}
