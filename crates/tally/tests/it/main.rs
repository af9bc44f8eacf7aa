//! Full-stack tests of the `tally` binary: real processes, real HTTP, real files.

mod harness;

mod cli;
mod crash;
mod graphql;
mod http_ingest;
mod sdk_e2e;
