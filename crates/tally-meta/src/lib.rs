//! Tally's metadata store: tenants and their API keys, operator keys, and the identity
//! graph (persons, distinct ids, merges, person properties, groups).
//!
//! The API is two traits so that the distributed mode can put PostgreSQL behind them:
//! [`MetaStore`] administers tenants and keys, [`PersonStore`] turns the identity
//! effects of logged events into persons and answers identity queries. [`SqliteMeta`]
//! implements both on one SQLite file for the single-binary mode, and [`CachedMeta`]
//! wraps a [`MetaStore`] with the in-memory write-key map that ingest needs
//! ([`tally_core::TenantDirectory`]).
//!
//! The identity rules are PostHog's and are described, with worked examples, in
//! `docs/IDENTITY.md`. This crate does not store events (tally-store does), decide the
//! order in which events are applied (tally-pipeline does, by log position), or serve
//! HTTP.

mod directory;
mod error;
mod identity;
pub mod keys;
mod persons;
mod sqlite;
mod tenants;

pub use directory::{CachedMeta, DEFAULT_NEGATIVE_TTL};
pub use error::{Error, Result};
pub use identity::{MAX_GROUP_KEY_LEN, MAX_GROUP_TYPE_LEN, UNSET, has_identity_effects};
pub use keys::KeyKind;
pub use persons::{Group, IdentityStats, MAX_PAGE_SIZE, Person, PersonStore};
pub use sqlite::SqliteMeta;
pub use tenants::{CreatedTenant, MetaStore, OperatorKey, Tenant};
