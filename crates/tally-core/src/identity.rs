//! Rules about distinct ids shared by ingest validation and identity resolution.

/// Distinct ids that SDKs and buggy integrations send when they have no real id.
/// Events carrying one are refused at ingest, and identity operations naming one are
/// ignored, because merging on them would fuse unrelated people into one person.
/// Compared case-insensitively after trimming.
pub const DENYLISTED_DISTINCT_IDS: &[&str] = &[
    "",
    "null",
    "undefined",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "anonymous",
    "anon",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "true",
    "false",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
];

/// Whether `id` is on the denylist.
pub fn is_denylisted_distinct_id(id: &str) -> bool {
    let trimmed = id.trim();
    DENYLISTED_DISTINCT_IDS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denylist_is_case_and_space_insensitive() {
        assert!(is_denylisted_distinct_id("null"));
        assert!(is_denylisted_distinct_id(" Undefined "));
        assert!(is_denylisted_distinct_id("[object Object]"));
        assert!(is_denylisted_distinct_id(""));
        assert!(!is_denylisted_distinct_id("user-42"));
        assert!(!is_denylisted_distinct_id("nullable"));
    }
}
