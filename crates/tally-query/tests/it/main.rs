//! The crate as its users see it: query JSON in (what `tally query query.json` and the
//! GraphQL layer pass), validation, the reference answer, result JSON out.

mod json;
