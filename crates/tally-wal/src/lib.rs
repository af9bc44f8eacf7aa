//! Tally's embedded write-ahead log: the durability core of the single-binary mode.
//!
//! Ingest answers a client only after [`Wal::append`] resolves, and that happens only
//! once the record is written *and* `fdatasync`ed. The log stores opaque byte records
//! (the pipeline puts one serialised `EventBatch` in each) under a dense, strictly
//! increasing sequence number ([`Lsn`], starting at 1), in segment files named by
//! their first LSN. A single writer thread does group commit: every append queued
//! during one fsync is written and synced by the next, so many concurrent writers
//! share the cost of each sync.
//!
//! What this crate owns: the on-disk format ([`format`](crate::format) is private;
//! see `docs/WAL.md`), group commit and backpressure, stop-on-failure, recovery with
//! an exact [`RecoveryReport`], replay and whole-segment retention. What it does not
//! own: what a record means, when it is safe to delete a segment (the caller knows
//! what the store has made durable and calls [`Wal::remove_segments_before`]), or
//! deduplication of records replayed twice.

mod config;
mod error;
mod format;
mod recovery;
mod segment;
mod wal;
mod writer;

pub use config::{
    DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, FailNext,
    FaultInjector, WalConfig,
};
pub use error::{Error, Result};
pub use recovery::{
    DropReason, DroppedRange, LostRecords, LsnGap, RecoveryAction, RecoveryReport, SegmentSummary,
};
pub use wal::{AppendFuture, Wal};

/// Log sequence number: 1 for the first record ever appended, then +1 per record.
pub type Lsn = u64;

/// Bytes a segment file header takes; frames follow it.
pub const SEGMENT_HEADER_BYTES: u64 = format::SEGMENT_HEADER_LEN as u64;
/// Bytes of framing per record (length, checksum, LSN) on top of the payload.
pub const FRAME_OVERHEAD_BYTES: u64 = format::FRAME_HEADER_LEN as u64;
