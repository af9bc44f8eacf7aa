//! The seam between ingest and everything after it.
//!
//! Ingest handlers validate and enrich, then hand an [`EventBatch`] to an [`EventSink`]
//! and answer the client only when `submit` returns. In the single-binary mode the sink
//! is the local pipeline (write-ahead log with group commit, then the embedded store);
//! in the distributed mode it will be a Kafka producer. Handlers never know which.

use std::time::Duration;

use crate::error::{Classify, ErrorClass};
use crate::event::EventBatch;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The writer is behind; the client should retry later. Nothing was written.
    #[error("ingest is overloaded ({reason}); retry after {retry_after:?}")]
    Overloaded {
        reason: &'static str,
        retry_after: Duration,
    },
    /// The log cannot make data durable (for example a failed fsync stopped the
    /// writer). Nothing from this request is acknowledged; an operator must act.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Overloaded { retry_after, .. } => ErrorClass::Unavailable {
                retry_after: *retry_after,
            },
            SinkError::Unavailable(_) | SinkError::ShuttingDown => ErrorClass::Unavailable {
                retry_after: Duration::from_secs(5),
            },
            SinkError::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Accepts batches and resolves once they are durable.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Makes the batch durable. `Ok` is a promise that the events survive a crash of
    /// the process (and, for the local WAL, of the machine, given honest fsync).
    /// Duplicate event uuids are accepted and absorbed downstream.
    async fn submit(&self, batch: EventBatch) -> Result<(), SinkError>;
}
