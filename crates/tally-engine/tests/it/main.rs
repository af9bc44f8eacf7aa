//! The engine against `tally_query::reference` on generated event sets.

mod funnel;
mod hostile;
mod listing;
mod operator;
mod retention;
mod trends;
