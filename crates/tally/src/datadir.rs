//! The data directory: where each component keeps its files, and the lock that keeps
//! two writers from opening the same log and store at once.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating data directory {}", root.display()))?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.sqlite")
    }

    /// Takes the exclusive writer lock, held for the life of the returned file.
    /// The metadata database is shared (SQLite handles that), but the log and the
    /// store have exactly one writer.
    pub fn lock_writer(&self) -> anyhow::Result<File> {
        let path = self.root.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "the data directory {} is in use by another Tally process (is `tally serve` running?)",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}
