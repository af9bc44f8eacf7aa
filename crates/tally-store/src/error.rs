//! The store's error type.
//!
//! Every failure the store can report is one [`Error`] variant. Errors that carry an
//! `io::Error` also name the operation and the path, because "No such file or directory"
//! alone is useless to an operator reading a log line at 3 a.m.

use std::path::PathBuf;
use std::time::Duration;

use tally_core::{Classify, ErrorClass};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building or converting Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Planning or executing a DataFusion query failed.
    #[error("query: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The manifest or a catalog file exists but cannot be decoded. The store refuses to
    /// open rather than guess which files are live.
    #[error("corrupt metadata file {path}: {reason}")]
    CorruptMetadata { path: PathBuf, reason: String },
    /// A stored file does not have the shape the store writes (missing fixed column,
    /// wrong type): someone else wrote into the data directory, or a bug.
    #[error("unexpected data in {context}: {reason}")]
    UnexpectedData { context: String, reason: String },
    /// The configuration is invalid or contradicts the data directory.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A blocking task of the store panicked or was cancelled.
    #[error("store background task failed: {0}")]
    TaskFailed(String),
    /// A test-only crash simulation fired (never constructed outside tests).
    #[error("injected fault at {0:?}")]
    InjectedFault(crate::store::FaultPoint),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn unexpected(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::UnexpectedData {
            context: context.into(),
            reason: reason.into(),
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            // Disk trouble (full, read-only remount) is usually transient from a
            // client's point of view: the pipeline backs off and retries.
            Error::Io { .. } => ErrorClass::Unavailable {
                retry_after: Duration::from_secs(5),
            },
            Error::Parquet(_)
            | Error::Arrow(_)
            | Error::DataFusion(_)
            | Error::CorruptMetadata { .. }
            | Error::UnexpectedData { .. }
            | Error::Config(_)
            | Error::TaskFailed(_)
            | Error::InjectedFault(_) => ErrorClass::Internal,
        }
    }
}
