//! Data-driven snapshot tests: every `tests/snapshots/<name>.json` query compiles,
//! for both dialects, to exactly `<name>.<dialect>.sql`. Run with
//! `UPDATE_SNAPSHOTS=1` to rewrite the expected files after an intended change, then
//! review the diff.

mod snapshots;
