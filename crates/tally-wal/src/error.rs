//! Errors of the write-ahead log and how they classify at an API boundary.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tally_core::{Classify, ErrorClass};

use crate::Lsn;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload is larger than `WalConfig::max_record_bytes`. Nothing was queued.
    #[error("record of {size} bytes exceeds the WAL record limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },

    /// Accepting the record would push queued-but-unsynced bytes over
    /// `WalConfig::max_pending_bytes`. Nothing was queued; retry later.
    #[error("WAL is behind: {pending} bytes await fsync (limit {limit}); retry later")]
    Backpressure { pending: usize, limit: usize },

    /// A write or fsync failed earlier, so the writer stopped for good: nothing more
    /// is acknowledged until the process restarts and recovers from disk.
    #[error("WAL writer stopped: {reason}")]
    Stopped { reason: Arc<str> },

    #[error("invalid WAL configuration: {0}")]
    InvalidConfig(String),

    /// Another `Wal` (in this or another process) holds the directory.
    #[error("WAL directory {dir} is in use by another writer")]
    Locked { dir: PathBuf },

    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A segment with an intact header written by another format version. Refusing
    /// to open beats silently dropping data a newer build wrote.
    #[error("WAL segment {path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A segment no longer matches what recovery verified when the log was opened
    /// (changed on disk underneath a running process).
    #[error("WAL segment {path} is corrupt at byte {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },

    /// The 64-bit sequence space is used up (only reachable with a hand-made log).
    #[error("WAL sequence numbers exhausted after LSN {last}")]
    LsnExhausted { last: Lsn },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::RecordTooLarge { .. } => ErrorClass::PayloadTooLarge,
            // The writer drains the queue within a few fsyncs; a second is plenty.
            Error::Backpressure { .. } => ErrorClass::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            // An operator has to restart the process; clients should back off longer.
            Error::Stopped { .. } => ErrorClass::Unavailable {
                retry_after: Duration::from_secs(5),
            },
            Error::InvalidConfig(_)
            | Error::Locked { .. }
            | Error::Io { .. }
            | Error::UnsupportedVersion { .. }
            | Error::Corrupt { .. }
            | Error::LsnExhausted { .. } => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_facing_errors_classify_as_retryable_or_too_large() {
        let too_large = Error::RecordTooLarge { size: 2, limit: 1 };
        assert_eq!(too_large.class(), ErrorClass::PayloadTooLarge);
        let behind = Error::Backpressure {
            pending: 2,
            limit: 1,
        };
        assert!(matches!(behind.class(), ErrorClass::Unavailable { .. }));
        let stopped = Error::Stopped {
            reason: "fsync failed".into(),
        };
        assert!(matches!(stopped.class(), ErrorClass::Unavailable { .. }));
        let io = Error::io("open", "/x", io::Error::other("boom"));
        assert_eq!(io.class(), ErrorClass::Internal);
        assert!(io.to_string().contains("/x"));
    }
}
