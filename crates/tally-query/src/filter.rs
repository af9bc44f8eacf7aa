//! Property references, filters and event matchers, and the exact meaning of every
//! filter operator on JSON values.
//!
//! Owns: which properties a query can name ([`PropertyRef`]), the filter tree
//! ([`Filter`]: property predicates inside nested AND/OR groups), the "which events"
//! part shared by series, funnel steps, exclusions and retention events
//! ([`EventMatcher`]), their validation, and the value-level semantics in
//! [`semantics`] (equality with type coercion, numeric parsing, contains, regex, the
//! canonical form of breakdown values). Both the reference implementation and the
//! engines must follow [`semantics`]; the engines compile it to SQL, the reference
//! calls it directly.
//!
//! Does not own: where property values come from (the store's columns, the person
//! table, the reference's in-memory events). That is the caller's business.

use serde::{Deserialize, Serialize};

use crate::error::{QueryError, Result};

/// Longest accepted property key or event name, in bytes. Ingest refuses longer keys
/// and names (200 bytes), so a longer one can only be a mistake; the margin leaves room
/// for a future increase of the ingest limit.
pub const MAX_NAME_LEN: usize = 1024;
/// Deepest accepted nesting of AND/OR groups.
pub const MAX_FILTER_DEPTH: usize = 5;
/// Most property predicates in one filter list (all levels counted).
pub const MAX_FILTER_PREDICATES: usize = 100;
/// Most values in one `in_list` filter.
pub const MAX_IN_LIST_VALUES: usize = 1000;
/// Longest accepted regex pattern, in bytes.
pub const MAX_REGEX_LEN: usize = 1000;
/// Compiled size limit of one regex: a pattern like `a{1000}{1000}` compiles to
/// gigabytes; this turns it into a clear error instead.
pub const MAX_REGEX_COMPILED_BYTES: usize = 1 << 20;
/// Longest accepted string filter value, in bytes.
pub const MAX_FILTER_VALUE_LEN: usize = 64 * 1024;

/// Where a property lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PropertySource {
    /// A property sent with the event (`properties` in the capture API).
    Event,
    /// A property of the event's person, as it is when the query runs (not as it was
    /// when the event happened), after identity merges.
    Person,
    /// A property of the group of type `group_type` that the event belongs to (its
    /// `$groups`), as it is when the query runs.
    Group,
    /// A tenant attribute set by the operator (`tally tenant set acme plan=pro`).
    /// Operator queries only.
    TenantAttribute,
    /// A built-in field of the tenant: `id` (its number) or `name` (its slug).
    /// Operator queries only.
    Tenant,
}

impl PropertySource {
    /// The source's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertySource::Event => "event",
            PropertySource::Person => "person",
            PropertySource::Group => "group",
            PropertySource::TenantAttribute => "tenant_attribute",
            PropertySource::Tenant => "tenant",
        }
    }

    /// Whether only operator (cross-tenant) queries may name this source.
    pub fn is_operator_only(self) -> bool {
        matches!(
            self,
            PropertySource::TenantAttribute | PropertySource::Tenant
        )
    }
}

/// The built-in tenant fields that [`PropertySource::Tenant`] can name.
pub const TENANT_FIELDS: &[&str] = &["id", "name"];

/// A property, named by where it lives and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PropertyRef {
    /// Where the property lives.
    pub source: PropertySource,
    /// The property's key, e.g. `$browser` or `plan`. Top-level keys only: a nested
    /// object is one value.
    pub key: String,
    /// The group type (e.g. `company`) when `source` is `group`; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_type: Option<String>,
}

impl PropertyRef {
    /// An event property.
    pub fn event(key: impl Into<String>) -> Self {
        PropertyRef {
            source: PropertySource::Event,
            key: key.into(),
            group_type: None,
        }
    }

    /// A person property.
    pub fn person(key: impl Into<String>) -> Self {
        PropertyRef {
            source: PropertySource::Person,
            key: key.into(),
            group_type: None,
        }
    }

    /// A property of the event's group of type `group_type`.
    pub fn group(group_type: impl Into<String>, key: impl Into<String>) -> Self {
        PropertyRef {
            source: PropertySource::Group,
            key: key.into(),
            group_type: Some(group_type.into()),
        }
    }

    /// A tenant attribute (operator queries).
    pub fn tenant_attribute(key: impl Into<String>) -> Self {
        PropertyRef {
            source: PropertySource::TenantAttribute,
            key: key.into(),
            group_type: None,
        }
    }

    /// A built-in tenant field, `id` or `name` (operator queries).
    pub fn tenant(field: impl Into<String>) -> Self {
        PropertyRef {
            source: PropertySource::Tenant,
            key: field.into(),
            group_type: None,
        }
    }

    pub(crate) fn validate(&self, field: &str, ctx: &ValidationContext) -> Result<()> {
        validate_name(&format!("{field}.key"), &self.key)?;
        match (self.source, &self.group_type) {
            (PropertySource::Group, None) => {
                return Err(QueryError::invalid(
                    format!("{field}.group_type"),
                    "a group property needs the group type (e.g. \"company\")",
                ));
            }
            (PropertySource::Group, Some(group_type)) => {
                validate_name(&format!("{field}.group_type"), group_type)?;
            }
            (source, Some(_)) => {
                return Err(QueryError::invalid(
                    format!("{field}.group_type"),
                    format!(
                        "only group properties have a group type; remove it or set source to \"group\" (source is \"{}\")",
                        source.as_str()
                    ),
                ));
            }
            (_, None) => {}
        }
        if self.source.is_operator_only() && !ctx.operator {
            return Err(QueryError::invalid(
                format!("{field}.source"),
                format!(
                    "\"{}\" properties are available to operator (cross-tenant) queries only",
                    self.source.as_str()
                ),
            ));
        }
        if self.source == PropertySource::Tenant && !TENANT_FIELDS.contains(&self.key.as_str()) {
            return Err(QueryError::invalid(
                format!("{field}.key"),
                format!(
                    "the tenant's built-in fields are \"id\" and \"name\", not \"{}\"; for an attribute use source \"tenant_attribute\"",
                    self.key
                ),
            ));
        }
        Ok(())
    }
}

/// A filter comparison value: a JSON string, number or boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Scalar {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number.
    Number(f64),
    /// A JSON string.
    String(String),
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::String(s.to_string())
    }
}

impl From<f64> for Scalar {
    fn from(n: f64) -> Self {
        Scalar::Number(n)
    }
}

impl From<bool> for Scalar {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}

impl Scalar {
    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
            Scalar::Number(n) => semantics::number_value(*n),
            Scalar::String(s) => serde_json::Value::String(s.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Number(n) => n.to_string(),
            Scalar::String(s) => format!("{s:?}"),
        }
    }
}

/// The right-hand side of a property filter: one value, or a list for `in_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum FilterValue {
    /// One value.
    Scalar(Scalar),
    /// Several values (`in_list`).
    List(Vec<Scalar>),
}

/// A comparison operator. See [`semantics`] for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Equal, with string/number/boolean coercion ([`semantics::loose_eq`]).
    Equals,
    /// Not `equals`; also true when the property is not set.
    NotEquals,
    /// The property is a string containing the value, ignoring case.
    Contains,
    /// Not `contains`; also true when the property is not set or not a string.
    NotContains,
    /// The property is a string in which the pattern (Rust `regex` syntax) matches
    /// somewhere (not anchored; use `^...$` for a full match).
    Regex,
    /// The property, read as a number, is greater than the value.
    Gt,
    /// ... greater than or equal to the value.
    Gte,
    /// ... less than the value.
    Lt,
    /// ... less than or equal to the value.
    Lte,
    /// The property is present and not null.
    IsSet,
    /// The property is absent or null.
    IsNotSet,
    /// The property `equals` one of the listed values.
    InList,
}

impl Operator {
    /// The operator's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "not_equals",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::Regex => "regex",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::IsSet => "is_set",
            Operator::IsNotSet => "is_not_set",
            Operator::InList => "in_list",
        }
    }
}

/// One predicate on one property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    /// The property compared.
    pub property: PropertyRef,
    /// The comparison.
    pub operator: Operator,
    /// What the property is compared with: a string, number or boolean; a list of
    /// them for `in_list`; absent for `is_set` and `is_not_set`. `contains`,
    /// `not_contains` and `regex` take a string, `gt`/`gte`/`lt`/`lte` a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<FilterValue>,
}

/// A filter: a property predicate, or an AND/OR group of filters.
///
/// A group with no filters imposes no condition, whether AND or OR: query builders
/// produce empty groups while a user is still editing, and "match nothing" would turn
/// a chart blank for no visible reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    /// A predicate on one property.
    Property(PropertyFilter),
    /// True when every filter in the list is true.
    And {
        /// The filters combined.
        filters: Vec<Filter>,
    },
    /// True when at least one filter in the list is true.
    Or {
        /// The filters combined.
        filters: Vec<Filter>,
    },
}

impl Filter {
    /// A property predicate.
    pub fn property(property: PropertyRef, operator: Operator, value: Option<FilterValue>) -> Self {
        Filter::Property(PropertyFilter {
            property,
            operator,
            value,
        })
    }

    /// `property equals value`.
    pub fn equals(property: PropertyRef, value: impl Into<Scalar>) -> Self {
        Filter::property(
            property,
            Operator::Equals,
            Some(FilterValue::Scalar(value.into())),
        )
    }

    /// Every property predicate in this filter, depth first.
    pub fn predicates(&self) -> Vec<&PropertyFilter> {
        let mut out = Vec::new();
        fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a PropertyFilter>) {
            match f {
                Filter::Property(p) => out.push(p),
                Filter::And { filters } | Filter::Or { filters } => {
                    filters.iter().for_each(|f| walk(f, out))
                }
            }
        }
        walk(self, &mut out);
        out
    }
}

/// Which events something counts: an event name (or any event) and filters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EventMatcher {
    /// The event name, e.g. `$pageview`; absent or null for any event.
    #[serde(default)]
    pub event: Option<String>,
    /// Filters the event must pass, all of them (an implicit AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

impl EventMatcher {
    /// Events named `name`, unfiltered.
    pub fn named(name: impl Into<String>) -> Self {
        EventMatcher {
            event: Some(name.into()),
            filters: Vec::new(),
        }
    }

    /// Any event, unfiltered.
    pub fn any() -> Self {
        EventMatcher::default()
    }

    pub(crate) fn validate(&self, field: &str, ctx: &ValidationContext) -> Result<()> {
        validate_event_name(&format!("{field}.event"), self.event.as_deref())?;
        validate_filters(&format!("{field}.filters"), &self.filters, ctx)
    }
}

/// What validation needs to know about the query around a filter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidationContext {
    /// Whether the query is an operator (cross-tenant) query.
    pub operator: bool,
}

pub(crate) fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(QueryError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(QueryError::invalid(
            field,
            format!(
                "is {} bytes long, longer than the limit of {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn validate_event_name(field: &str, name: Option<&str>) -> Result<()> {
    match name {
        Some(name) => validate_name(field, name),
        None => Ok(()),
    }
}

/// Validates a filter list (implicitly ANDed): shapes, limits, regexes.
pub(crate) fn validate_filters(
    field: &str,
    filters: &[Filter],
    ctx: &ValidationContext,
) -> Result<()> {
    let mut predicates = 0;
    for (i, f) in filters.iter().enumerate() {
        validate_filter(&format!("{field}[{i}]"), f, 1, &mut predicates, ctx)?;
    }
    if predicates > MAX_FILTER_PREDICATES {
        return Err(QueryError::invalid(
            field,
            format!(
                "has {predicates} property filters, more than the limit of {MAX_FILTER_PREDICATES}"
            ),
        ));
    }
    Ok(())
}

fn validate_filter(
    field: &str,
    filter: &Filter,
    depth: usize,
    predicates: &mut usize,
    ctx: &ValidationContext,
) -> Result<()> {
    match filter {
        Filter::Property(p) => {
            *predicates += 1;
            validate_predicate(field, p, ctx)
        }
        Filter::And { filters } | Filter::Or { filters } => {
            if depth >= MAX_FILTER_DEPTH {
                return Err(QueryError::invalid(
                    field,
                    format!(
                        "AND/OR groups are nested deeper than {MAX_FILTER_DEPTH} levels; flatten the filter"
                    ),
                ));
            }
            for (i, f) in filters.iter().enumerate() {
                validate_filter(
                    &format!("{field}.filters[{i}]"),
                    f,
                    depth + 1,
                    predicates,
                    ctx,
                )?;
            }
            Ok(())
        }
    }
}

fn validate_predicate(field: &str, p: &PropertyFilter, ctx: &ValidationContext) -> Result<()> {
    p.property.validate(&format!("{field}.property"), ctx)?;
    let value_field = format!("{field}.value");
    let op = p.operator.as_str();
    let check_string = |s: &str| -> Result<()> {
        if s.len() > MAX_FILTER_VALUE_LEN {
            return Err(QueryError::invalid(
                &value_field,
                format!("is longer than the limit of {MAX_FILTER_VALUE_LEN} bytes"),
            ));
        }
        Ok(())
    };
    match (p.operator, &p.value) {
        (Operator::IsSet | Operator::IsNotSet, None) => Ok(()),
        (Operator::IsSet | Operator::IsNotSet, Some(_)) => Err(QueryError::invalid(
            &value_field,
            format!("operator `{op}` takes no value; remove it"),
        )),
        (_, None) => Err(QueryError::invalid(
            &value_field,
            format!("operator `{op}` needs a value"),
        )),
        (Operator::InList, Some(FilterValue::List(values))) => {
            if values.is_empty() {
                return Err(QueryError::invalid(
                    &value_field,
                    "`in_list` needs at least one value",
                ));
            }
            if values.len() > MAX_IN_LIST_VALUES {
                return Err(QueryError::invalid(
                    &value_field,
                    format!(
                        "has {} values, more than the limit of {MAX_IN_LIST_VALUES}",
                        values.len()
                    ),
                ));
            }
            for v in values {
                if let Scalar::String(s) = v {
                    check_string(s)?;
                }
            }
            Ok(())
        }
        (Operator::InList, Some(FilterValue::Scalar(_))) => Err(QueryError::invalid(
            &value_field,
            "`in_list` takes a list of values, e.g. [\"a\", \"b\"]",
        )),
        (_, Some(FilterValue::List(_))) => Err(QueryError::invalid(
            &value_field,
            format!("operator `{op}` takes a single value; use `in_list` to match any of several"),
        )),
        (Operator::Equals | Operator::NotEquals, Some(FilterValue::Scalar(v))) => {
            if let Scalar::String(s) = v {
                check_string(s)?;
            }
            Ok(())
        }
        (Operator::Contains | Operator::NotContains, Some(FilterValue::Scalar(v))) => match v {
            Scalar::String(s) => check_string(s),
            other => Err(QueryError::invalid(
                &value_field,
                format!(
                    "operator `{op}` matches text and takes a string, not {}",
                    other.describe()
                ),
            )),
        },
        (Operator::Regex, Some(FilterValue::Scalar(v))) => match v {
            Scalar::String(pattern) => compile_regex(&value_field, pattern).map(|_| ()),
            other => Err(QueryError::invalid(
                &value_field,
                format!("`regex` takes a pattern string, not {}", other.describe()),
            )),
        },
        (
            Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte,
            Some(FilterValue::Scalar(v)),
        ) => match v {
            Scalar::Number(_) => Ok(()),
            other => Err(QueryError::invalid(
                &value_field,
                format!(
                    "operator `{op}` compares numbers and takes a JSON number, not {}",
                    other.describe()
                ),
            )),
        },
    }
}

/// Compiles a filter regex the way every engine must: Rust `regex` syntax, unanchored,
/// with a bound on the compiled size.
pub fn compile_regex(field: &str, pattern: &str) -> Result<regex::Regex> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(QueryError::invalid(
            field,
            format!(
                "the pattern is {} bytes long, longer than the limit of {MAX_REGEX_LEN}",
                pattern.len()
            ),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_COMPILED_BYTES)
        .build()
        .map_err(|e| {
            QueryError::invalid(
                field,
                format!("the pattern is not a valid regular expression: {e}"),
            )
        })
}

/// The value-level rules every engine follows. Properties are JSON values; "unset"
/// means the key is absent or its value is `null` (callers pass `None` for both).
pub mod semantics {
    use std::cmp::Ordering;

    use serde_json::Value;

    use super::Scalar;

    /// A property read as a number: a JSON number, or a string that Rust's `f64`
    /// parser accepts (`"42"`, `"-1.5"`, `"2e3"`; no surrounding spaces) and that is
    /// finite. Booleans, null, arrays and objects are not numbers.
    pub fn as_number(value: &Value) -> Option<f64> {
        match value {
            Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
            Value::String(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    /// A property read as a boolean: a JSON boolean, or the strings `"true"` and
    /// `"false"` (exactly, lower case).
    pub fn as_bool(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => None,
        }
    }

    /// `equals`: two strings are equal when identical (case-sensitive). If either side
    /// is a number, both are read as numbers ([`as_number`]) and compared numerically,
    /// so `"42"` equals `42` and `42.0`. If either side is a boolean, both are read as
    /// booleans ([`as_bool`]). Null, arrays and objects equal nothing.
    pub fn loose_eq(property: &Value, filter: &Scalar) -> bool {
        match (property, filter) {
            (Value::String(p), Scalar::String(f)) => p == f,
            (_, Scalar::Number(f)) => as_number(property) == Some(*f),
            (Value::Number(_), Scalar::String(f)) => {
                as_number(property).is_some_and(|p| f.parse::<f64>().ok() == Some(p))
            }
            (_, Scalar::Bool(f)) => as_bool(property) == Some(*f),
            (Value::Bool(p), Scalar::String(f)) => as_bool(&Value::String(f.clone())) == Some(*p),
            _ => false,
        }
    }

    /// `contains`: the property is a string that contains `needle`, compared after
    /// Unicode lower-casing both (`str::to_lowercase`). Numbers and booleans are not
    /// text and contain nothing.
    pub fn contains_ignore_case(property: &Value, needle: &str) -> bool {
        match property {
            Value::String(s) => s.to_lowercase().contains(&needle.to_lowercase()),
            _ => false,
        }
    }

    /// A JSON number for `n`: integral values within ±2^53 become JSON integers
    /// (`3`, not `3.0`), so that equal numbers always serialise identically.
    pub fn number_value(n: f64) -> Value {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if n.fract() == 0.0 && n.abs() <= EXACT {
            // -0.0 becomes 0.
            Value::from(n as i64)
        } else {
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
    }

    /// The canonical breakdown value of a property: `null` when unset; strings,
    /// booleans as they are; numbers through [`number_value`] (so `1` and `1.0` are one
    /// breakdown value, while the string `"1"` is another); arrays and objects as
    /// their compact JSON text (a string).
    pub fn breakdown_value(property: Option<&Value>) -> Value {
        match property {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Number(n)) => n.as_f64().map(number_value).unwrap_or(Value::Null),
            Some(v @ (Value::String(_) | Value::Bool(_))) => v.clone(),
            Some(v @ (Value::Array(_) | Value::Object(_))) => Value::String(v.to_string()),
        }
    }

    /// The total order of canonical breakdown values used to break ranking ties:
    /// null < false < true < numbers (ascending) < strings (by bytes).
    pub fn compare_breakdown_values(a: &Value, b: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Number(_) => 2,
                Value::String(_) => 3,
                Value::Array(_) => 4,
                Value::Object(_) => 5,
            }
        }
        match (a, b) {
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.total_cmp(&y)
            }
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => rank(a).cmp(&rank(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::semantics::*;
    use super::*;

    fn tenant_ctx() -> ValidationContext {
        ValidationContext { operator: false }
    }

    #[test]
    fn equality_coerces_numbers_and_booleans_but_not_case() {
        assert!(loose_eq(&json!("pro"), &"pro".into()));
        assert!(!loose_eq(&json!("Pro"), &"pro".into()));
        assert!(loose_eq(&json!(42), &Scalar::Number(42.0)));
        assert!(loose_eq(&json!("42"), &Scalar::Number(42.0)));
        assert!(loose_eq(&json!(42.0), &"42".into()));
        assert!(loose_eq(&json!(42), &"42.0".into()));
        assert!(
            !loose_eq(&json!("42.0"), &"42".into()),
            "two strings compare as text"
        );
        assert!(loose_eq(&json!(true), &"true".into()));
        assert!(loose_eq(&json!("false"), &Scalar::Bool(false)));
        assert!(!loose_eq(&json!(1), &Scalar::Bool(true)));
        assert!(!loose_eq(&json!(null), &"null".into()));
        assert!(!loose_eq(&json!(["a"]), &"a".into()));
        assert!(!loose_eq(&json!("abc"), &Scalar::Number(0.0)));
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(as_number(&json!("2e3")), Some(2000.0));
        assert_eq!(as_number(&json!(" 2")), None);
        assert_eq!(as_number(&json!("NaN")), None);
        assert_eq!(as_number(&json!("inf")), None);
        assert_eq!(as_number(&json!(true)), None);
    }

    #[test]
    fn contains_ignores_unicode_case_and_only_matches_text() {
        assert!(contains_ignore_case(&json!("Straße in MÜNCHEN"), "münchen"));
        assert!(!contains_ignore_case(&json!(123), "2"));
    }

    #[test]
    fn breakdown_values_are_canonical() {
        assert_eq!(breakdown_value(Some(&json!(1.0))), json!(1));
        assert_eq!(breakdown_value(Some(&json!(-0.0))), json!(0));
        assert_eq!(breakdown_value(Some(&json!(1.5))), json!(1.5));
        assert_eq!(breakdown_value(Some(&json!("1"))), json!("1"));
        assert_eq!(breakdown_value(Some(&json!({"a": 1}))), json!("{\"a\":1}"));
        assert_eq!(breakdown_value(None), json!(null));
        assert_eq!(breakdown_value(Some(&json!(null))), json!(null));
    }

    #[test]
    fn filters_round_trip_through_json() {
        let text = r#"{"type":"or","filters":[
            {"type":"property","property":{"source":"event","key":"$browser"},"operator":"in_list","value":["Chrome","Firefox"]},
            {"type":"and","filters":[
                {"type":"property","property":{"source":"person","key":"age"},"operator":"gte","value":18},
                {"type":"property","property":{"source":"group","key":"plan","group_type":"company"},"operator":"is_set"}
            ]}
        ]}"#;
        let f: Filter = serde_json::from_str(text).unwrap();
        assert_eq!(f.predicates().len(), 3);
        let back: Filter = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        validate_filters("filters", &[f], &tenant_ctx()).unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = r#"{"type":"property","property":{"source":"event","key":"a"},"operator":"equals","valeu":1}"#;
        let err = serde_json::from_str::<Filter>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("valeu"), "{err}");
    }

    fn check(filter: Filter) -> String {
        validate_filters("filters", &[filter], &tenant_ctx())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn validation_explains_operator_value_mismatches() {
        let p = PropertyRef::event("n");
        let msg = check(Filter::property(
            p.clone(),
            Operator::Gt,
            Some(FilterValue::Scalar("10".into())),
        ));
        assert!(
            msg.contains("filters[0].value") && msg.contains("JSON number"),
            "{msg}"
        );
        let msg = check(Filter::property(
            p.clone(),
            Operator::IsSet,
            Some(FilterValue::Scalar(true.into())),
        ));
        assert!(msg.contains("takes no value"), "{msg}");
        let msg = check(Filter::property(p.clone(), Operator::Equals, None));
        assert!(msg.contains("needs a value"), "{msg}");
        let msg = check(Filter::property(
            p.clone(),
            Operator::InList,
            Some(FilterValue::List(vec![])),
        ));
        assert!(msg.contains("at least one"), "{msg}");
        let msg = check(Filter::property(
            p.clone(),
            Operator::Equals,
            Some(FilterValue::List(vec!["a".into()])),
        ));
        assert!(msg.contains("in_list"), "{msg}");
        let msg = check(Filter::property(
            p.clone(),
            Operator::Regex,
            Some(FilterValue::Scalar("(unclosed".into())),
        ));
        assert!(msg.contains("not a valid regular expression"), "{msg}");
        let msg = check(Filter::property(
            p,
            Operator::Regex,
            Some(FilterValue::Scalar("a{1000}{1000}".into())),
        ));
        assert!(msg.contains("not a valid regular expression"), "{msg}");
    }

    #[test]
    fn validation_enforces_property_reference_rules() {
        let msg = check(Filter::equals(
            PropertyRef {
                source: PropertySource::Group,
                key: "plan".into(),
                group_type: None,
            },
            "x",
        ));
        assert!(msg.contains("group type"), "{msg}");
        let msg = check(Filter::equals(PropertyRef::tenant_attribute("plan"), "pro"));
        assert!(msg.contains("operator"), "{msg}");
        let operator = ValidationContext { operator: true };
        validate_filters(
            "f",
            &[Filter::equals(PropertyRef::tenant_attribute("plan"), "pro")],
            &operator,
        )
        .unwrap();
        let msg = validate_filters(
            "f",
            &[Filter::equals(PropertyRef::tenant("plan"), "pro")],
            &operator,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("tenant_attribute"), "{msg}");
        let msg = check(Filter::equals(PropertyRef::event(""), "x"));
        assert!(
            msg.contains("property.key") && msg.contains("empty"),
            "{msg}"
        );
    }

    #[test]
    fn validation_bounds_nesting_and_size() {
        let mut f = Filter::equals(PropertyRef::event("a"), "b");
        for _ in 0..MAX_FILTER_DEPTH {
            f = Filter::And { filters: vec![f] };
        }
        assert!(check(f).contains("nested deeper"));
        let many: Vec<Filter> = (0..=MAX_FILTER_PREDICATES)
            .map(|i| Filter::equals(PropertyRef::event(format!("k{i}")), "v"))
            .collect();
        let msg = validate_filters("filters", &many, &tenant_ctx())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("more than the limit"), "{msg}");
    }

    #[test]
    fn user_regexes_may_ignore_case() {
        let re = compile_regex("v", "(?i)pricing").unwrap();
        assert!(re.is_match("/PRICING/page"));
        assert!(re.is_match("/prÍcing".replace('Í', "I").as_str()));
    }
}
