//! The engine against `tally_query::reference` on generated event sets.

mod hostile;
mod trends;
