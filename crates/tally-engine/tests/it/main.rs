//! The engine against `tally_query::reference` on generated event sets.

mod funnel;
mod hostile;
mod listing;
mod retention;
mod trends;
