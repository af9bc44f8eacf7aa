//! `tally-store`: Tally's embedded columnar event store (single-binary mode).
//!
//! Events arrive from the pipeline as committed WAL records ([`EmbeddedStore::apply`])
//! into an in-memory write buffer that is queryable at once, are flushed to Parquet
//! files partitioned by tenant and time, and are merged by background compaction
//! into large files sorted by `(distinct_id, timestamp)`. A JSON manifest, replaced
//! atomically, is the single source of truth for which files are live and up to
//! which WAL lsn the files are complete ([`EmbeddedStore::durable_lsn`]). Queries get
//! a DataFusion table of one tenant's events ([`EmbeddedStore::events_table`]).
//!
//! This crate knows nothing about HTTP, the WAL format or the query language; it
//! offers no way to read events without naming a tenant. docs/STORAGE.md describes
//! the layout, the typed property columns and the exact dedup guarantee.
//!
//! Guarantees:
//! - an applied event is visible to queries from the moment `apply` returns, and is
//!   never visible twice or not at all while it moves from buffer to file to
//!   compacted file;
//! - a crash at any point loses nothing that `durable_lsn` covers, and leaves no
//!   duplicate: files not listed in the manifest are deleted at `open`;
//! - a resent event (same tenant and uuid) is dropped exactly within the dedup window
//!   and for historic events in their partition, and compaction removes any residual
//!   duplicate within a partition.

mod background;
mod buffer;
mod compaction;
pub mod config;
#[cfg(test)]
mod crash_tests;
mod dedup;
mod distinct_ids;
pub mod error;
mod files;
mod manifest;
mod query;
pub mod schema;
mod store;

pub use background::BackgroundHandle;
pub use compaction::CompactionReport;
pub use config::{Codec, PartitionGranularity, PartitionStart, StoreConfig};
pub use distinct_ids::DistinctIdRange;
pub use error::{Error, Result};
pub use manifest::{FileMeta, Manifest};
pub use query::{EVENTS_TABLE, EventsTable};
pub use schema::{KeyStats, PropertyCatalog, PropertyType, parse_property_column, property_column};
pub use store::{
    ApplyOutcome, BulkReport, EmbeddedStore, FaultPoint, FlushReport, LevelStats, StoreStats,
};
