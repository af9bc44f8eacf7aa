//! Ingest over real HTTP: a server on 127.0.0.1:0 serving `tally_ingest::router`,
//! a recording sink, and reqwest as the client.

mod enrichment;
mod harness;
mod limits;
mod mmdb;
mod native;
mod posthog;
mod remote_config;
mod segment;
mod sink_errors;
