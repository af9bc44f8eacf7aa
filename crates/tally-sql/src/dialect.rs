//! The rendering differences between SQL engines, behind one [`Dialect`] trait.
//!
//! Owns: quoting of identifiers and string literals (the only two ways a user-supplied
//! text reaches SQL), the per-tenant relations events and identities are read through,
//! timestamp bucketing, JSON extraction of non-materialised properties, the string
//! functions filters need, quantiles, and the spelling of Tally's own funnel and
//! retention aggregates. Everything else the compiler emits is plain SQL both engines
//! accept.
//!
//! Does not own: which expressions a query needs (the compiler) or how the functions
//! named here are implemented (the engine registers `tally_*` functions for DataFusion;
//! ClickHouse renders its native equivalents).

use tally_core::TenantId;

/// A relation a compiled query reads, already restricted to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRelation {
    /// The `FROM` item (a table name, quoted if needed).
    pub table: String,
    /// A condition on the relation's alias restricting it to the tenant, when the
    /// relation itself is shared by tenants (`{alias}` is replaced by the alias).
    pub tenant_predicate: Option<String>,
}

/// How one SQL engine spells what the compiler needs.
pub trait Dialect {
    /// A short name for logs and snapshot file names.
    fn name(&self) -> &'static str;

    /// `ident` as a quoted identifier. Any text is accepted: property keys can contain
    /// quotes, backslashes, NUL and anything else.
    fn quote_identifier(&self, ident: &str) -> String;

    /// `value` as a string literal. Any text is accepted.
    fn quote_string(&self, value: &str) -> String;

    /// The tenant's events (columns as in `docs/STORAGE.md`).
    fn events_relation(&self, tenant: TenantId) -> TenantRelation;

    /// The tenant's identity map: `(distinct_id, person_id)`, one row per mapped
    /// distinct id; unmapped distinct ids are absent.
    fn person_map_relation(&self, tenant: TenantId) -> TenantRelation;

    /// The tenant's persons: `(person_id, properties)` with `properties` a JSON object.
    fn persons_relation(&self, tenant: TenantId) -> TenantRelation;

    /// The timestamp column `column` as a BIGINT of UTC microseconds.
    fn timestamp_micros(&self, column: &str) -> String;

    /// The event uuid column `column` as lower-case hyphenated text, whose text order
    /// is the order of the uuid's bytes (the order events lists and cursors use).
    fn uuid_text(&self, column: &str) -> String;

    /// The value of top-level `key` (a rendered string literal) in the JSON object
    /// `json`, when it is a JSON string; NULL otherwise.
    fn json_string(&self, json: &str, key: &str) -> String;
    /// ... when it is a JSON number, as a DOUBLE; NULL otherwise.
    fn json_number(&self, json: &str, key: &str) -> String;
    /// ... when it is a JSON boolean; NULL otherwise.
    fn json_bool(&self, json: &str, key: &str) -> String;
    /// ... when it is an array or object, as compact JSON text; NULL otherwise.
    fn json_other(&self, json: &str, key: &str) -> String;

    /// One row per top-level key of the JSON object `json` whose value is not null, as
    /// the text `<class><key>` with class `s` (string), `n` (number), `b` (boolean) or
    /// `o` (array or object): a set-returning expression for a `SELECT` list, so one
    /// pass discovers keys that have no typed columns.
    fn json_key_classes(&self, json: &str) -> String;

    /// A string read as a number by Tally's rule (Rust's `f64` parser, finite only);
    /// NULL when it is not one.
    fn to_number(&self, expr: &str) -> String;

    /// Whether `expr` contains `needle` (a rendered literal) ignoring case (Unicode
    /// lower-casing).
    fn contains_ignore_case(&self, expr: &str, needle: &str) -> String;

    /// Whether the regex `pattern` (a rendered literal) matches somewhere in `expr`.
    fn regex_match(&self, expr: &str, pattern: &str) -> String;

    /// The exact quantile `q` of `expr` (linear interpolation between closest ranks).
    fn quantile(&self, expr: &str, q: f64) -> String;

    /// `a` and `b` are equal or both NULL.
    fn null_safe_eq(&self, a: &str, b: &str) -> String;

    /// The SQL type name of a 64-bit float.
    fn double_type(&self) -> &'static str;

    /// A NULL of the type class `ty` (`"string"`, `"number"` or `"boolean"`).
    fn typed_null(&self, ty: &str) -> &'static str;

    /// An instant (UTC microseconds) as a timestamp literal comparable with the
    /// events' `timestamp` column.
    fn timestamp_literal(&self, micros: i64) -> String;

    /// Appended to every statement (session settings the semantics rely on).
    fn statement_suffix(&self) -> &'static str;

    /// The name of the per-person funnel aggregate (contract in [`crate::funnel`]), or
    /// `None` when the dialect has no aggregate with exactly those semantics.
    fn funnel_aggregate(&self) -> Option<&'static str>;

    /// A literal table `alias(columns...)` of BIGINT rows, to be `CROSS JOIN`ed.
    fn values_table(&self, alias: &str, columns: &[&str], rows: &[Vec<i64>]) -> String;

    /// The name of Tally's retention aggregate (contract in `docs/QUERY-ENGINE.md`).
    fn retention_function(&self) -> &'static str;

    /// A BIGINT computed from the distinct id's number (the events relation's
    /// `distinct_id_number`, which the store gives each of a tenant's distinct ids)
    /// that is equal for two events exactly when their persons
    /// (`coalesce(map.person_id, distinct_id)`) are, for statements that only group
    /// or compare persons; `None` when the dialect has no such function (then those
    /// statements use the person itself, through the identity-map join). The keys of
    /// one statement are small and dense (numbered from 0), so the engine may index
    /// arrays by them.
    fn person_key(&self, _distinct_id_number: &str) -> Option<String> {
        None
    }
}

/// Renders a finite `f64` so that it parses back to exactly the same value.
pub(crate) fn float_literal(dialect: &dyn Dialect, value: f64) -> String {
    // `{:?}` is Rust's shortest round-tripping form (`0.1`, `1e300`, `-2.5`).
    let text = if value.is_finite() {
        format!("{value:?}")
    } else {
        // The query model only admits JSON numbers, which are finite; keep the SQL
        // valid and matching nothing anyway.
        return "NULL".to_string();
    };
    format!("CAST({text} AS {})", dialect.double_type())
}

/// DataFusion's generic SQL dialect, for the embedded engine.
///
/// Each tenant's events are registered as their own table named by
/// [`DataFusionDialect::events_table_name`]; the engine registers exactly the tables
/// the compiled SQL names, so a query can only ever see its tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataFusionDialect;

impl DataFusionDialect {
    /// The table name under which the engine must register `tenant`'s events.
    pub fn events_table_name(tenant: TenantId) -> String {
        format!("tenant_{}_events", tenant.0)
    }
    /// The table name of `tenant`'s identity map.
    pub fn person_map_table_name(tenant: TenantId) -> String {
        format!("tenant_{}_person_map", tenant.0)
    }
    /// The table name of `tenant`'s persons.
    pub fn persons_table_name(tenant: TenantId) -> String {
        format!("tenant_{}_persons", tenant.0)
    }
}

/// Quotes as standard SQL does: wrap in `q`, double every `q`. Everything else,
/// backslashes and NUL included, is literal in DataFusion's generic dialect.
fn quote_doubling(text: &str, q: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(q);
    for c in text.chars() {
        if c == q {
            out.push(q);
        }
        out.push(c);
    }
    out.push(q);
    out
}

impl Dialect for DataFusionDialect {
    fn name(&self) -> &'static str {
        "datafusion"
    }
    fn quote_identifier(&self, ident: &str) -> String {
        quote_doubling(ident, '"')
    }
    fn quote_string(&self, value: &str) -> String {
        quote_doubling(value, '\'')
    }
    fn events_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: Self::events_table_name(tenant),
            tenant_predicate: None,
        }
    }
    fn person_map_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: Self::person_map_table_name(tenant),
            tenant_predicate: None,
        }
    }
    fn persons_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: Self::persons_table_name(tenant),
            tenant_predicate: None,
        }
    }
    fn timestamp_micros(&self, column: &str) -> String {
        format!("CAST({column} AS BIGINT)")
    }
    fn uuid_text(&self, column: &str) -> String {
        // The store keeps uuids as FixedSizeBinary(16); the engine's UDF formats them.
        format!("tally_uuid_text({column})")
    }
    fn json_string(&self, json: &str, key: &str) -> String {
        format!("tally_json_string({json}, {key})")
    }
    fn json_number(&self, json: &str, key: &str) -> String {
        format!("tally_json_number({json}, {key})")
    }
    fn json_bool(&self, json: &str, key: &str) -> String {
        format!("tally_json_bool({json}, {key})")
    }
    fn json_other(&self, json: &str, key: &str) -> String {
        format!("tally_json_other({json}, {key})")
    }
    fn json_key_classes(&self, json: &str) -> String {
        format!("unnest(tally_json_key_classes({json}))")
    }
    fn to_number(&self, expr: &str) -> String {
        format!("tally_to_number({expr})")
    }
    fn contains_ignore_case(&self, expr: &str, needle: &str) -> String {
        // `lower` is Rust's Unicode `to_lowercase`, as the semantics require.
        format!("(strpos(lower({expr}), lower({needle})) > 0)")
    }
    fn regex_match(&self, expr: &str, pattern: &str) -> String {
        // DataFusion's regexes are Rust `regex`, the syntax the model validates.
        format!("regexp_like({expr}, {pattern})")
    }
    fn quantile(&self, expr: &str, q: f64) -> String {
        format!("percentile_cont({q:?}) WITHIN GROUP (ORDER BY {expr})")
    }
    fn null_safe_eq(&self, a: &str, b: &str) -> String {
        format!("({a} IS NOT DISTINCT FROM {b})")
    }
    fn double_type(&self) -> &'static str {
        "DOUBLE"
    }
    fn typed_null(&self, ty: &str) -> &'static str {
        match ty {
            "number" => "CAST(NULL AS DOUBLE)",
            "boolean" => "CAST(NULL AS BOOLEAN)",
            _ => "CAST(NULL AS VARCHAR)",
        }
    }
    fn timestamp_literal(&self, micros: i64) -> String {
        // Folded to a literal before the scan, so the store prunes files by it.
        format!("to_timestamp_micros({micros})")
    }
    fn person_key(&self, distinct_id_number: &str) -> Option<String> {
        // Implemented by the engine (`tally_engine::person_key`) per query session.
        Some(format!("tally_person_key({distinct_id_number})"))
    }
    fn funnel_aggregate(&self) -> Option<&'static str> {
        Some("tally_funnel")
    }
    fn statement_suffix(&self) -> &'static str {
        ""
    }
    fn values_table(&self, alias: &str, columns: &[&str], rows: &[Vec<i64>]) -> String {
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r.iter().map(|v| format!("CAST({v} AS BIGINT)")).collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        format!(
            "(VALUES {}) AS {alias}({})",
            rows.join(", "),
            columns.join(", ")
        )
    }
    fn retention_function(&self) -> &'static str {
        "tally_retention"
    }
}

/// ClickHouse, for the distributed mode: one shared `events` table with a
/// `tenant_id` column (ordered like PostHog's), filtered by the compiler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClickHouseDialect;

impl Dialect for ClickHouseDialect {
    fn name(&self) -> &'static str {
        "clickhouse"
    }
    fn quote_identifier(&self, ident: &str) -> String {
        format!("`{}`", escape_clickhouse(ident, '`'))
    }
    fn quote_string(&self, value: &str) -> String {
        format!("'{}'", escape_clickhouse(value, '\''))
    }
    fn events_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: "events".to_string(),
            tenant_predicate: Some(format!("{{alias}}.tenant_id = {}", tenant.0)),
        }
    }
    fn person_map_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: "person_map".to_string(),
            tenant_predicate: Some(format!("{{alias}}.tenant_id = {}", tenant.0)),
        }
    }
    fn persons_relation(&self, tenant: TenantId) -> TenantRelation {
        TenantRelation {
            table: "persons".to_string(),
            tenant_predicate: Some(format!("{{alias}}.tenant_id = {}", tenant.0)),
        }
    }
    fn timestamp_micros(&self, column: &str) -> String {
        format!("toUnixTimestamp64Micro({column})")
    }
    fn uuid_text(&self, column: &str) -> String {
        // ClickHouse orders UUID values by their two 64-bit halves, not byte order;
        // the canonical text sorts like the bytes.
        format!("toString({column})")
    }
    fn json_string(&self, json: &str, key: &str) -> String {
        format!("if(JSONType({json}, {key}) = 'String', JSONExtractString({json}, {key}), NULL)")
    }
    fn json_number(&self, json: &str, key: &str) -> String {
        format!(
            "if(JSONType({json}, {key}) IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat({json}, {key}), NULL)"
        )
    }
    fn json_bool(&self, json: &str, key: &str) -> String {
        format!("if(JSONType({json}, {key}) = 'Bool', JSONExtractBool({json}, {key}) = 1, NULL)")
    }
    fn json_other(&self, json: &str, key: &str) -> String {
        format!(
            "if(JSONType({json}, {key}) IN ('Array', 'Object'), JSONExtractRaw({json}, {key}), NULL)"
        )
    }
    fn json_key_classes(&self, json: &str) -> String {
        // The raw value's first character decides its class; nulls are dropped.
        format!(
            "arrayJoin(arrayFilter(x -> x != '', arrayMap(kv -> if(kv.2 = 'null', '', \
             concat(multiIf(startsWith(kv.2, '\"'), 's', kv.2 IN ('true', 'false'), 'b', \
             startsWith(kv.2, '[') OR startsWith(kv.2, '{{'), 'o', 'n'), kv.1)), \
             JSONExtractKeysAndValuesRaw({json}))))"
        )
    }
    fn to_number(&self, expr: &str) -> String {
        // toFloat64OrNull accepts "inf" and "nan"; Tally's rule does not.
        format!("if(isFinite(toFloat64OrNull({expr})), toFloat64OrNull({expr}), NULL)")
    }
    fn contains_ignore_case(&self, expr: &str, needle: &str) -> String {
        format!("(positionCaseInsensitiveUTF8({expr}, {needle}) > 0)")
    }
    fn regex_match(&self, expr: &str, pattern: &str) -> String {
        // RE2; the model's Rust-regex syntax is RE2-compatible.
        format!("match({expr}, {pattern})")
    }
    fn quantile(&self, expr: &str, q: f64) -> String {
        format!("quantileExactInclusive({q:?})({expr})")
    }
    fn null_safe_eq(&self, a: &str, b: &str) -> String {
        format!("isNotDistinctFrom({a}, {b})")
    }
    fn double_type(&self) -> &'static str {
        "Float64"
    }
    fn typed_null(&self, ty: &str) -> &'static str {
        match ty {
            "number" => "CAST(NULL AS Nullable(Float64))",
            "boolean" => "CAST(NULL AS Nullable(Bool))",
            _ => "CAST(NULL AS Nullable(String))",
        }
    }
    fn timestamp_literal(&self, micros: i64) -> String {
        format!("fromUnixTimestamp64Micro(CAST({micros} AS Int64), 'UTC')")
    }
    fn funnel_aggregate(&self) -> Option<&'static str> {
        // `windowFunnel` lets one event advance several steps, treats ties and
        // exclusions differently and has no optional steps or per-step windows, so it
        // cannot answer Tally's funnels exactly (docs/QUERY-ENGINE.md).
        None
    }
    fn statement_suffix(&self) -> &'static str {
        // Unmatched LEFT JOIN columns must be NULL (not '') for coalesce(person, distinct_id).
        " SETTINGS join_use_nulls = 1"
    }
    fn values_table(&self, alias: &str, columns: &[&str], rows: &[Vec<i64>]) -> String {
        let structure: Vec<String> = columns.iter().map(|c| format!("{c} Int64")).collect();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r.iter().map(i64::to_string).collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        format!(
            "values('{}', {}) AS {alias}",
            structure.join(", "),
            rows.join(", ")
        )
    }
    fn retention_function(&self) -> &'static str {
        "tally_retention"
    }
}

/// ClickHouse string and quoted-identifier escaping: backslash escapes for the quote,
/// the backslash itself and control characters, so that no byte can end the literal.
fn escape_clickhouse(text: &str, q: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads back a DataFusion (standard SQL) quoted token: the inverse of quoting,
    /// failing if the quote ends early.
    fn unquote_doubling(lit: &str, q: char) -> Option<String> {
        let inner = lit.strip_prefix(q)?.strip_suffix(q)?;
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if c == q {
                // A lone quote inside would end the literal.
                if chars.next() != Some(q) {
                    return None;
                }
            }
            out.push(c);
        }
        Some(out)
    }

    fn unquote_clickhouse(lit: &str, q: char) -> Option<String> {
        let inner = lit.strip_prefix(q)?.strip_suffix(q)?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    '0' => out.push('\0'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c if c == q => out.push(c),
                    _ => return None,
                },
                c if c == q => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    const HOSTILE: &[&str] = &[
        "",
        "'",
        "''",
        "\"",
        "`",
        "\\",
        "\\'",
        "a'); DROP TABLE events; --",
        "\0",
        "x\0y",
        "line\nbreak\r\t",
        "prop:str:plan",
        "日本語 ✓ 🎉",
        "\u{1}\u{1f}\u{7f}",
        "\\\\'\\",
    ];

    #[test]
    fn hostile_strings_round_trip_through_both_dialects() {
        for s in HOSTILE {
            let df = DataFusionDialect.quote_string(s);
            assert_eq!(unquote_doubling(&df, '\'').as_deref(), Some(*s), "{df}");
            let di = DataFusionDialect.quote_identifier(s);
            assert_eq!(unquote_doubling(&di, '"').as_deref(), Some(*s), "{di}");
            let ch = ClickHouseDialect.quote_string(s);
            assert_eq!(unquote_clickhouse(&ch, '\'').as_deref(), Some(*s), "{ch}");
            assert!(!ch.contains('\0'), "NUL must be escaped: {ch:?}");
            let ci = ClickHouseDialect.quote_identifier(s);
            assert_eq!(unquote_clickhouse(&ci, '`').as_deref(), Some(*s), "{ci}");
        }
    }

    #[test]
    fn exact_renderings() {
        assert_eq!(DataFusionDialect.quote_string("it's"), "'it''s'");
        assert_eq!(DataFusionDialect.quote_string("a\\b"), "'a\\b'");
        assert_eq!(DataFusionDialect.quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(ClickHouseDialect.quote_string("it's\\"), "'it\\'s\\\\'");
        assert_eq!(ClickHouseDialect.quote_identifier("a`b"), "`a\\`b`");
        assert_eq!(ClickHouseDialect.quote_string("\0"), "'\\0'");
    }

    #[test]
    fn float_literals_round_trip() {
        for v in [0.0, -0.0, 0.1, 1e300, -2.5, 9_007_199_254_740_993.0, 5e-324] {
            let lit = float_literal(&DataFusionDialect, v);
            let inner = lit
                .strip_prefix("CAST(")
                .and_then(|s| s.strip_suffix(" AS DOUBLE)"))
                .unwrap();
            assert_eq!(
                inner.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{lit}"
            );
        }
        assert_eq!(float_literal(&DataFusionDialect, f64::NAN), "NULL");
    }

    proptest! {
        #[test]
        fn any_text_round_trips(s in any::<String>()) {
            prop_assert_eq!(unquote_doubling(&DataFusionDialect.quote_string(&s), '\''), Some(s.clone()));
            prop_assert_eq!(unquote_doubling(&DataFusionDialect.quote_identifier(&s), '"'), Some(s.clone()));
            prop_assert_eq!(unquote_clickhouse(&ClickHouseDialect.quote_string(&s), '\''), Some(s.clone()));
            prop_assert_eq!(unquote_clickhouse(&ClickHouseDialect.quote_identifier(&s), '`'), Some(s));
        }
    }
}
