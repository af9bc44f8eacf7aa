//! Configuration of a [`crate::Wal`] and the fault-injection hook its writer calls.
//!
//! Validation lives here so that `Wal::open` refuses a nonsensical configuration up
//! front instead of failing on the first append.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_PENDING_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory holding the segments; created if missing. One `Wal` per directory.
    pub dir: PathBuf,
    /// A segment is closed and a new one started before a record would take it past
    /// this size. A single record larger than this gets a segment of its own.
    pub segment_bytes: u64,
    /// Largest accepted payload; larger appends fail with `RecordTooLarge`.
    pub max_record_bytes: usize,
    /// Backpressure: appends fail with `Backpressure` while this many bytes (payload
    /// plus framing) are queued or being written but not yet synced.
    pub max_pending_bytes: usize,
    /// How long the writer waits after the first queued append before writing, to
    /// gather a larger group. Zero (the default) writes as soon as it is free: under
    /// load, appends that arrive during an fsync form the next group anyway.
    pub linger: Duration,
    /// Test hook: consulted before every write and sync. `None` in production.
    pub faults: Option<Arc<dyn FaultInjector>>,
}

impl WalConfig {
    /// A configuration with the defaults (64 MiB segments, 16 MiB records, 128 MiB
    /// of pending bytes, no linger).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            linger: Duration::ZERO,
            faults: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let min_segment = (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64;
        if self.segment_bytes < min_segment {
            return Err(Error::InvalidConfig(format!(
                "segment_bytes must be at least {min_segment}, got {}",
                self.segment_bytes
            )));
        }
        // The frame length field is a u32.
        let format_limit = u32::MAX as usize - FRAME_HEADER_LEN;
        if self.max_record_bytes > format_limit {
            return Err(Error::InvalidConfig(format!(
                "max_record_bytes must be at most {format_limit}, got {}",
                self.max_record_bytes
            )));
        }
        // Otherwise a maximal record could never be admitted.
        let min_pending = self.max_record_bytes + FRAME_HEADER_LEN;
        if self.max_pending_bytes < min_pending {
            return Err(Error::InvalidConfig(format!(
                "max_pending_bytes ({}) must be at least max_record_bytes plus framing ({min_pending})",
                self.max_pending_bytes
            )));
        }
        Ok(())
    }
}

/// Called by the writer thread before its IO, so that tests of this crate and of the
/// crates built on it can simulate a failing disk. An `Err` is treated exactly like
/// the real syscall failing: the writer stops for good.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Before each `write` to `segment`.
    fn before_write(&self, segment: &Path) -> io::Result<()> {
        let _ = segment;
        Ok(())
    }

    /// Before each `fdatasync` of `segment`, or `fsync` of the directory (then
    /// `segment` is the directory).
    fn before_sync(&self, segment: &Path) -> io::Result<()> {
        let _ = segment;
        Ok(())
    }
}

/// A ready-made [`FaultInjector`]: arm it and the next write or sync fails once.
#[derive(Debug, Default)]
pub struct FailNext {
    write: AtomicBool,
    sync: AtomicBool,
}

impl FailNext {
    pub fn new() -> Arc<Self> {
        Arc::new(FailNext::default())
    }

    pub fn fail_next_write(&self) {
        self.write.store(true, Ordering::SeqCst);
    }

    pub fn fail_next_sync(&self) {
        self.sync.store(true, Ordering::SeqCst);
    }
}

impl FaultInjector for FailNext {
    fn before_write(&self, _segment: &Path) -> io::Result<()> {
        if self.write.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected write failure"));
        }
        Ok(())
    }

    fn before_sync(&self, _segment: &Path) -> io::Result<()> {
        if self.sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        WalConfig::new("/tmp/x").validate().unwrap();
        let mut tiny_segments = WalConfig::new("/tmp/x");
        tiny_segments.segment_bytes = 10;
        assert!(matches!(
            tiny_segments.validate(),
            Err(Error::InvalidConfig(_))
        ));
        let mut starved = WalConfig::new("/tmp/x");
        starved.max_pending_bytes = starved.max_record_bytes;
        assert!(matches!(starved.validate(), Err(Error::InvalidConfig(_))));
        let mut huge = WalConfig::new("/tmp/x");
        huge.max_record_bytes = u32::MAX as usize;
        huge.max_pending_bytes = usize::MAX;
        assert!(matches!(huge.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn fail_next_fires_once() {
        let faults = FailNext::new();
        let path = Path::new("/x");
        faults.before_sync(path).unwrap();
        faults.fail_next_sync();
        assert!(faults.before_sync(path).is_err());
        faults.before_sync(path).unwrap();
        faults.fail_next_write();
        assert!(faults.before_write(path).is_err());
        faults.before_write(path).unwrap();
    }
}
