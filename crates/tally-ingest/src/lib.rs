//! Tally's HTTP ingest API: PostHog- and Segment-compatible endpoints plus a native
//! batch endpoint, with validation against documented limits and server-side
//! enrichment (clock-skew correction, client IP, user agent, GeoIP).
//!
//! Owns: routing, body decoding (gzip, deflate, `gzip-js`, base64, form `data=`),
//! the PostHog SDKs' remote-config and (empty) feature-flag endpoints
//! ([`remote_config`]), translating every wire format into [`tally_core::Event`],
//! per-event validation, enrichment, and the mapping of errors to HTTP responses
//! ([`http_error`], reusable by other API crates). Does not own durability or
//! storage: handlers hand one [`tally_core::EventBatch`] per request to an
//! [`tally_core::EventSink`] and answer 200 only once it is durable. Does not own API keys either: a
//! [`tally_core::TenantDirectory`] resolves them.
//!
//! See `docs/INGEST.md` for endpoints, payload shapes, limits and enrichment rules.

pub mod client_ip;
pub mod config;
mod decode;
pub mod enrich;
pub mod error;
pub mod http_error;
pub mod metrics;
mod normalize;
mod posthog;
pub mod remote_config;
mod segment;
mod server;

pub use config::{Cidr, CidrParseError, IngestConfig, Limits};
pub use enrich::{Enricher, GeoInfo, UserAgentInfo};
pub use error::{EventRejection, IngestError, RejectReason, Result};
pub use normalize::{RequestContext, json_type, normalize_json_event};
pub use server::{IngestState, router};
