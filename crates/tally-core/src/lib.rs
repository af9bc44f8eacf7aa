//! Tally's domain vocabulary, shared by every other crate: tenants, the normalised
//! [`Event`] that every ingest format is translated into, the error classes that the
//! HTTP and GraphQL boundaries map to status codes, and the traits at the seams between
//! ingest, the log, the store and the metadata store.
//!
//! This crate does no IO and has no async runtime: it must stay cheap to depend on and
//! trivially testable. Anything that touches a disk, a socket or a clock lives elsewhere
//! (the one exception is [`time::now_micros`], a thin wrapper kept here so that every
//! crate agrees on the unit).

pub mod error;
pub mod event;
pub mod identity;
pub mod identity_source;
pub mod sink;
pub mod tenant;
pub mod time;

pub use error::{Classify, ErrorClass};
pub use event::{Event, EventBatch, Properties};
pub use identity_source::{IdentitySource, PersonRecord};
pub use sink::{EventSink, SinkError};
pub use tenant::{TenantDirectory, TenantId};
