//! The manifest: the single source of truth for which files are live.
//!
//! Owns the [`Manifest`] and [`FileMeta`] types, the on-disk layout of data files
//! (`events/tenant=<id>/<partition>/<level>-<id>.parquet`), and the durable-write
//! primitives (write to a temporary name, fsync, rename, fsync the directory) that
//! both data files and metadata files use. It does not decide *when* to publish; the
//! store does, under its publish lock.
//!
//! A file that is not listed in the manifest does not exist as far as queries are
//! concerned, and is deleted at the next `open`. That rule is what makes every
//! multi-step operation (flush, compaction, bulk load) crash-safe: its effect becomes
//! visible in exactly one atomic rename of `manifest.json`.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tally_core::TenantId;

use crate::config::{PartitionGranularity, PartitionStart};
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const EVENTS_DIR: &str = "events";
pub const CATALOG_FILE: &str = "catalog.json";
pub const TMP_SUFFIX: &str = ".tmp";
const FORMAT_VERSION: u32 = 1;

/// One live Parquet file and its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Unique file id (a UUIDv7, so ids sort by creation time).
    pub id: String,
    pub tenant: TenantId,
    pub partition: PartitionStart,
    /// 0: written by a flush or bulk load; 1: merged level-0 files; 2: a full
    /// partition rewrite.
    pub level: u8,
    pub rows: u64,
    pub bytes: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub min_received_at: i64,
    pub max_received_at: i64,
    /// The typed property columns present in the file.
    #[serde(default)]
    pub property_columns: Vec<String>,
    /// When the file was written (UTC microseconds).
    pub created_at: i64,
    /// One more than the highest distinct-id number in the file (0 when empty);
    /// `None` for a file written before distinct ids were numbered, whose
    /// `distinct_id_number` column is missing (`EmbeddedStore::open` rewrites those).
    #[serde(default)]
    pub distinct_id_numbers: Option<u32>,
}

impl FileMeta {
    /// The file's path relative to the store directory.
    pub fn relative_path(&self, granularity: PartitionGranularity) -> PathBuf {
        partition_dir(Path::new(""), granularity, self.tenant, self.partition)
            .join(format!("L{}-{}.parquet", self.level, self.id))
    }
}

/// `DIR/events/tenant=<id>/<partition>`.
pub fn partition_dir(
    root: &Path,
    granularity: PartitionGranularity,
    tenant: TenantId,
    partition: PartitionStart,
) -> PathBuf {
    tenant_dir(root, tenant).join(granularity.dir_name(partition))
}

/// `DIR/events/tenant=<id>`.
pub fn tenant_dir(root: &Path, tenant: TenantId) -> PathBuf {
    root.join(EVENTS_DIR).join(format!("tenant={tenant}"))
}

/// The tenant whose [`tenant_dir`] is named `name` (`tenant=<id>`), if it is one.
pub fn tenant_of_dir_name(name: &str) -> Option<TenantId> {
    name.strip_prefix("tenant=")?.parse().ok().map(TenantId)
}

/// The published state of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Incremented by every publish.
    pub generation: u64,
    pub granularity: PartitionGranularity,
    /// The highest WAL lsn whose events are all in live files, if any.
    pub durable_lsn: Option<u64>,
    pub files: Vec<FileMeta>,
}

impl Manifest {
    pub fn empty(granularity: PartitionGranularity) -> Self {
        Manifest {
            version: FORMAT_VERSION,
            generation: 0,
            granularity,
            durable_lsn: None,
            files: Vec::new(),
        }
    }

    /// Reads `DIR/manifest.json`, or `None` if the store is new.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::CorruptMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if manifest.version != FORMAT_VERSION {
            return Err(Error::CorruptMetadata {
                path,
                reason: format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    manifest.version
                ),
            });
        }
        Ok(Some(manifest))
    }

    /// Atomically replaces `DIR/manifest.json`.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::CorruptMetadata {
            path: dir.join(MANIFEST_FILE),
            reason: format!("cannot encode: {e}"),
        })?;
        write_atomic(&dir.join(MANIFEST_FILE), &bytes)
    }

    /// Relative paths of every live file.
    pub fn live_paths(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .map(|f| f.relative_path(self.granularity))
            .collect()
    }
}

/// `path` with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` so that after a crash the file holds either its old
/// content or the new one, never a mix: temp file, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(file);
    rename_durable(&tmp, path)
}

/// Renames and then fsyncs the destination directory so the rename itself survives a
/// power loss.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
    match to.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates `dir` (and parents) and makes the new directory entries durable, fsyncing
/// every level from `dir` up to `root`.
pub fn create_dir_durable(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let mut current = dir.parent();
    while let Some(parent) = current {
        fsync_dir(parent)?;
        if parent == root || !parent.starts_with(root) {
            break;
        }
        current = parent.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut m = Manifest::empty(PartitionGranularity::Month);
        m.durable_lsn = Some(7);
        m.files.push(FileMeta {
            id: "abc".into(),
            tenant: TenantId(3),
            partition: PartitionStart(0),
            level: 1,
            rows: 10,
            bytes: 100,
            min_timestamp: 1,
            max_timestamp: 2,
            min_received_at: 3,
            max_received_at: 4,
            property_columns: vec!["prop:str:a".into()],
            created_at: 5,
            distinct_id_numbers: Some(6),
        });
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m.clone()));
        assert!(!tmp_path(&dir.path().join(MANIFEST_FILE)).exists());
        assert_eq!(
            tenant_of_dir_name(
                tenant_dir(dir.path(), TenantId(3))
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            ),
            Some(TenantId(3))
        );
        assert_eq!(tenant_of_dir_name("tenant=x"), None);
        assert_eq!(tenant_of_dir_name("month=1970-01"), None);
        assert_eq!(
            m.files[0].relative_path(PartitionGranularity::Month),
            PathBuf::from("events/tenant=3/month=1970-01/L1-abc.parquet")
        );
        fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(Error::CorruptMetadata { .. })
        ));
    }
}
