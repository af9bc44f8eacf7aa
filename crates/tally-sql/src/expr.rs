//! Expressions shared by every query kind: the tenant-scoped `FROM` clause (with the
//! identity join when the statement reads a person), property values, filters and
//! event matchers, breakdown columns.
//!
//! A property value is rendered as up to four nullable expressions, one per JSON type
//! class (string, number, boolean, array-or-object), exactly as the store splits them
//! into typed columns; at most one is non-NULL on any row. The filter semantics of
//! `tally_query::filter::semantics` are then plain boolean SQL over those four, and
//! every predicate is wrapped in `coalesce(.., FALSE)` so that SQL's three-valued
//! logic never leaks into `NOT`.

use std::cell::Cell;

use serde_json::Value;
use tally_core::TenantId;
use tally_query::filter::semantics;
use tally_query::{
    EventMatcher, Filter, FilterValue, Operator, PropertyRef, PropertySource, Scalar,
};

use crate::catalog::PropertyCatalog;
use crate::dialect::{Dialect, TenantRelation, float_literal};
use crate::{Error, Result};

/// One property's value on one row, as a breakdown reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// Unset or JSON null.
    Null,
    /// A JSON string.
    String(String),
    /// A JSON number.
    Number(f64),
    /// A JSON boolean.
    Bool(bool),
    /// An array or object, as compact JSON text.
    Other(String),
}

impl PropertyValue {
    /// The canonical breakdown value (`tally_query::filter::semantics::breakdown_value`).
    pub fn to_canonical(&self) -> Value {
        match self {
            PropertyValue::Null => Value::Null,
            PropertyValue::String(s) | PropertyValue::Other(s) => Value::String(s.clone()),
            PropertyValue::Number(n) => semantics::number_value(*n),
            PropertyValue::Bool(b) => Value::Bool(*b),
        }
    }
}

/// One breakdown row's values, in the order of the breakdown's properties.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownKey(pub Vec<PropertyValue>);

/// The four type-class expressions of a property (`None`: always NULL here).
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueExprs {
    pub string: Option<String>,
    pub number: Option<String>,
    pub boolean: Option<String>,
    pub other: Option<String>,
}

impl ValueExprs {
    /// The value read as a number (a JSON number, or a numeric string).
    pub fn as_number(&self, d: &dyn Dialect) -> Option<String> {
        match (&self.number, &self.string) {
            (Some(n), Some(s)) => Some(format!("coalesce({n}, {})", d.to_number(s))),
            (Some(n), None) => Some(n.clone()),
            (None, Some(s)) => Some(d.to_number(s)),
            (None, None) => None,
        }
    }

    pub fn present(&self) -> impl Iterator<Item = &String> {
        [&self.string, &self.number, &self.boolean, &self.other]
            .into_iter()
            .flatten()
    }
}

/// Suffixes of the four breakdown columns of one property, in [`ValueExprs`] order.
pub(crate) const BREAKDOWN_SUFFIXES: [&str; 4] = ["s", "n", "b", "o"];

/// Compiles expressions for one tenant's query; remembers which optional relations
/// (the identity map, persons) the expressions used so that [`Scoped::scoped_source`]
/// joins exactly those.
pub(crate) struct Scoped<'a> {
    pub dialect: &'a dyn Dialect,
    pub catalog: &'a PropertyCatalog,
    pub tenant: TenantId,
    /// [`Scoped::person`] was called: the statement reads the identity map.
    reads_person: Cell<bool>,
    /// A person property was compiled: the statement reads the persons relation.
    uses_persons: Cell<bool>,
}

impl<'a> Scoped<'a> {
    pub fn new(dialect: &'a dyn Dialect, catalog: &'a PropertyCatalog, tenant: TenantId) -> Self {
        Scoped {
            dialect,
            catalog,
            tenant,
            reads_person: Cell::new(false),
            uses_persons: Cell::new(false),
        }
    }

    pub fn col(&self, alias: &str, column: &str) -> String {
        format!("{alias}.{}", self.dialect.quote_identifier(column))
    }

    pub fn lit(&self, text: &str) -> String {
        self.dialect.quote_string(text)
    }

    /// The event's timestamp in UTC microseconds.
    pub fn ts(&self) -> String {
        self.dialect.timestamp_micros(&self.col("e", "timestamp"))
    }

    /// The event's person: its distinct id's mapped person, or the distinct id itself.
    /// Marks the statement as reading the identity map: call it before
    /// [`Scoped::scoped_source`].
    pub fn person(&self) -> String {
        self.reads_person.set(true);
        format!(
            "coalesce({}, {})",
            self.col("pm", "person_id"),
            self.col("e", "distinct_id")
        )
    }

    /// What grouping or comparing persons needs: equal for two events exactly when
    /// [`Scoped::person`] is. Where the dialect computes it from the distinct id's
    /// number ([`Dialect::person_key`]) the statement needs no identity-map join for
    /// it; otherwise it is the person (and marks the statement as reading the map).
    pub fn person_key(&self) -> String {
        match self.dialect.person_key(&self.distinct_id_number()) {
            Some(key) => key,
            None => self.person(),
        }
    }

    /// Whether [`Scoped::person_key`] is the dialect's integer key (rather than the
    /// person string through the identity map).
    pub fn person_key_is_integer(&self) -> bool {
        self.dialect
            .person_key(&self.distinct_id_number())
            .is_some()
    }

    /// The event's distinct-id number: the store numbers each tenant's distinct ids
    /// (the events relation's `distinct_id_number` column).
    fn distinct_id_number(&self) -> String {
        self.col("e", "distinct_id_number")
    }

    /// `e.timestamp` within `[start, end)`, written on the raw column so that the
    /// store can prune partitions and files by it.
    pub fn time_bounds(&self, start: Option<i64>, end: Option<i64>) -> Vec<String> {
        let ts = self.col("e", "timestamp");
        let mut out = Vec::new();
        if let Some(start) = start {
            out.push(format!("{ts} >= {}", self.dialect.timestamp_literal(start)));
        }
        if let Some(end) = end {
            out.push(format!("{ts} < {}", self.dialect.timestamp_literal(end)));
        }
        out
    }

    /// `FROM` the tenant's events `WHERE` the tenant restriction and `conditions` all
    /// hold, joined to the identity map if any expression compiled so far read a person
    /// ([`Scoped::person`], or a person property, whose join goes through the person)
    /// and to the persons relation if one read a person property. Call after compiling
    /// every expression of the statement.
    ///
    /// The map is left out otherwise because joining it is most of the cost of a
    /// statement that never reads it (hashing every event's `distinct_id`), and its
    /// key is unique, so the `LEFT JOIN` neither adds nor drops an event row.
    pub fn scoped_source(&self, conditions: &[String]) -> String {
        let d = self.dialect;
        let scoped_on = |rel: &TenantRelation, alias: &str| -> String {
            rel.tenant_predicate
                .as_ref()
                .map(|p| format!(" AND {}", p.replace("{alias}", alias)))
                .unwrap_or_default()
        };
        let uses_persons = self.uses_persons.get();
        let reads_map = self.reads_person.get() || uses_persons;
        let events = d.events_relation(self.tenant);
        let mut sql = format!("FROM {} AS e", events.table);
        if reads_map {
            let map = d.person_map_relation(self.tenant);
            sql.push_str(&format!(
                " LEFT JOIN {} AS pm ON {} = {}{}",
                map.table,
                self.col("pm", "distinct_id"),
                self.col("e", "distinct_id"),
                scoped_on(&map, "pm"),
            ));
        }
        if uses_persons {
            let persons = d.persons_relation(self.tenant);
            sql.push_str(&format!(
                " LEFT JOIN {} AS pp ON {} = {}{}",
                persons.table,
                self.col("pp", "person_id"),
                self.person(),
                scoped_on(&persons, "pp"),
            ));
        }
        let mut all: Vec<String> = events
            .tenant_predicate
            .iter()
            .map(|p| p.replace("{alias}", "e"))
            .collect();
        all.extend(conditions.iter().cloned());
        if !all.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&all.join(" AND "));
        }
        sql
    }

    /// `FROM` the tenant's persons (alias `pp`) `WHERE` the tenant restriction and
    /// `conditions` all hold: the source of statements that list persons rather than
    /// events.
    pub fn persons_source(&self, conditions: &[String]) -> String {
        let persons = self.dialect.persons_relation(self.tenant);
        let mut all: Vec<String> = persons
            .tenant_predicate
            .iter()
            .map(|p| p.replace("{alias}", "pp"))
            .collect();
        all.extend(conditions.iter().cloned());
        let mut sql = format!("FROM {} AS pp", persons.table);
        if !all.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&all.join(" AND "));
        }
        sql
    }

    /// ` LEFT JOIN` the tenant's persons `AS pp` on `pp.person_id = person`: for
    /// statements that first reduce events to one row per person (schema discovery),
    /// so person properties are read once per person rather than once per event.
    pub fn persons_join(&self, person: &str) -> String {
        let persons = self.dialect.persons_relation(self.tenant);
        let tenant = persons
            .tenant_predicate
            .as_ref()
            .map(|p| format!(" AND {}", p.replace("{alias}", "pp")))
            .unwrap_or_default();
        format!(
            " LEFT JOIN {} AS pp ON {} = {person}{tenant}",
            persons.table,
            self.col("pp", "person_id"),
        )
    }

    /// The four type-class expressions of a property.
    pub fn property(&self, p: &PropertyRef) -> Result<ValueExprs> {
        let d = self.dialect;
        let key = self.lit(&p.key);
        match p.source {
            PropertySource::Event => {
                let json = self.col("e", "properties");
                Ok(match self.catalog.get(&p.key) {
                    Some(cols) => ValueExprs {
                        string: cols
                            .string
                            .then(|| self.col("e", &format!("prop:str:{}", p.key))),
                        number: cols
                            .number
                            .then(|| self.col("e", &format!("prop:num:{}", p.key))),
                        boolean: cols
                            .boolean
                            .then(|| self.col("e", &format!("prop:bool:{}", p.key))),
                        other: cols.other.then(|| d.json_other(&json, &key)),
                    },
                    None => json_value(d, &json, &key),
                })
            }
            PropertySource::Person => {
                self.uses_persons.set(true);
                Ok(json_value(d, &self.col("pp", "properties"), &key))
            }
            PropertySource::Group => Err(Error::Unsupported(
                "group properties (the store does not index groups yet)".to_string(),
            )),
            PropertySource::Tenant | PropertySource::TenantAttribute => Err(Error::Unsupported(
                "tenant properties (operator queries)".to_string(),
            )),
        }
    }

    /// A filter list (implicit AND) as a boolean expression; `TRUE` when empty.
    pub fn filters(&self, filters: &[Filter]) -> Result<String> {
        let parts = filters
            .iter()
            .map(|f| self.filter(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(join_bool(&parts, "AND"))
    }

    fn filter(&self, f: &Filter) -> Result<String> {
        match f {
            Filter::And { filters } => self.filters(filters),
            Filter::Or { filters } if filters.is_empty() => Ok("TRUE".to_string()),
            Filter::Or { filters } => {
                let parts = filters
                    .iter()
                    .map(|f| self.filter(f))
                    .collect::<Result<Vec<_>>>()?;
                Ok(join_bool(&parts, "OR"))
            }
            Filter::Property(pf) => {
                let v = self.property(&pf.property)?;
                let positive = |op: Operator| self.predicate(&v, op, pf.value.as_ref());
                let expr = match pf.operator {
                    Operator::NotEquals => format!("NOT {}", positive(Operator::Equals)?),
                    Operator::NotContains => format!("NOT {}", positive(Operator::Contains)?),
                    Operator::IsNotSet => format!("NOT {}", positive(Operator::IsSet)?),
                    op => positive(op)?,
                };
                Ok(format!("({expr})"))
            }
        }
    }

    /// A positive operator's predicate, never NULL.
    fn predicate(
        &self,
        v: &ValueExprs,
        op: Operator,
        value: Option<&FilterValue>,
    ) -> Result<String> {
        let d = self.dialect;
        let scalar = || match value {
            Some(FilterValue::Scalar(s)) => Ok(s),
            _ => Err(Error::Unsupported(format!(
                "operator `{}` without a single value (validate the query first)",
                op.as_str()
            ))),
        };
        let string_arg = || match scalar()? {
            Scalar::String(s) => Ok(s.as_str()),
            _ => Err(Error::Unsupported(format!(
                "operator `{}` needs a string (validate the query first)",
                op.as_str()
            ))),
        };
        let number_arg = || match scalar()? {
            Scalar::Number(n) => Ok(*n),
            _ => Err(Error::Unsupported(format!(
                "operator `{}` needs a number (validate the query first)",
                op.as_str()
            ))),
        };
        let expr = match op {
            Operator::IsSet => {
                let parts: Vec<String> = v.present().map(|e| format!("{e} IS NOT NULL")).collect();
                join_bool_or_false(&parts, "OR")
            }
            Operator::Equals => self.loose_eq(v, scalar()?),
            Operator::InList => match value {
                Some(FilterValue::List(list)) => {
                    let parts: Vec<String> = list.iter().map(|s| self.loose_eq(v, s)).collect();
                    join_bool_or_false(&parts, "OR")
                }
                Some(FilterValue::Scalar(s)) => self.loose_eq(v, s),
                None => "FALSE".to_string(),
            },
            Operator::Contains => match &v.string {
                Some(s) => d.contains_ignore_case(s, &self.lit(string_arg()?)),
                None => "FALSE".to_string(),
            },
            Operator::Regex => match &v.string {
                Some(s) => d.regex_match(s, &self.lit(string_arg()?)),
                None => "FALSE".to_string(),
            },
            Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => {
                let sym = match op {
                    Operator::Gt => ">",
                    Operator::Gte => ">=",
                    Operator::Lt => "<",
                    _ => "<=",
                };
                let n = number_arg()?;
                match v.as_number(d) {
                    Some(x) => format!("{x} {sym} {}", float_literal(d, n)),
                    None => "FALSE".to_string(),
                }
            }
            Operator::NotEquals | Operator::NotContains | Operator::IsNotSet => {
                return Err(Error::Unsupported(format!(
                    "negated operator `{}` as a positive predicate",
                    op.as_str()
                )));
            }
        };
        Ok(format!("coalesce({expr}, FALSE)"))
    }

    /// `semantics::loose_eq` over the type classes.
    fn loose_eq(&self, v: &ValueExprs, filter: &Scalar) -> String {
        let d = self.dialect;
        let mut parts = Vec::new();
        match filter {
            Scalar::String(f) => {
                if let Some(s) = &v.string {
                    parts.push(format!("{s} = {}", self.lit(f)));
                }
                // A number property equals a string that Rust parses to it.
                if let (Some(n), Ok(x)) = (&v.number, f.parse::<f64>())
                    && x.is_finite()
                {
                    parts.push(format!("{n} = {}", float_literal(d, x)));
                }
                if let (Some(b), Some(x)) =
                    (&v.boolean, semantics::as_bool(&Value::String(f.clone())))
                {
                    parts.push(format!("{b} = {}", bool_lit(x)));
                }
            }
            Scalar::Number(x) => {
                if let Some(n) = v.as_number(d) {
                    parts.push(format!("{n} = {}", float_literal(d, *x)));
                }
            }
            Scalar::Bool(x) => {
                if let Some(b) = &v.boolean {
                    parts.push(format!("{b} = {}", bool_lit(*x)));
                }
                if let Some(s) = &v.string {
                    parts.push(format!(
                        "{s} = {}",
                        self.lit(if *x { "true" } else { "false" })
                    ));
                }
            }
        }
        join_bool_or_false(&parts, "OR")
    }

    /// Events an [`EventMatcher`] selects, with the query's global filters.
    pub fn matcher(&self, m: &EventMatcher, global: &[Filter]) -> Result<String> {
        let mut parts = Vec::new();
        if let Some(name) = &m.event {
            parts.push(format!("{} = {}", self.col("e", "event"), self.lit(name)));
        }
        let own = self.filters(&m.filters)?;
        if own != "TRUE" {
            parts.push(own);
        }
        let glob = self.filters(global)?;
        if glob != "TRUE" {
            parts.push(glob);
        }
        Ok(join_bool(&parts, "AND"))
    }

    /// The breakdown columns of `properties`: four per property, named `b{i}_{s,n,b,o}`.
    pub fn breakdown_columns(&self, properties: &[PropertyRef]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (i, p) in properties.iter().enumerate() {
            let v = self.property(p)?;
            let typed = [
                (v.string, "string"),
                (v.number, "number"),
                (v.boolean, "boolean"),
                (v.other, "string"),
            ];
            for ((expr, ty), suffix) in typed.into_iter().zip(BREAKDOWN_SUFFIXES) {
                let expr = expr.unwrap_or_else(|| self.dialect.typed_null(ty).to_string());
                out.push((expr, format!("b{i}_{suffix}")));
            }
        }
        Ok(out)
    }

    /// The breakdown row of an event: the index in `top` of its key, or -1 ("other").
    pub fn breakdown_row(
        &self,
        properties: &[PropertyRef],
        top: &[BreakdownKey],
    ) -> Result<String> {
        if top.is_empty() {
            return Ok("CAST(-1 AS BIGINT)".to_string());
        }
        let values = properties
            .iter()
            .map(|p| self.property(p))
            .collect::<Result<Vec<_>>>()?;
        let mut sql = String::from("CASE");
        for (row, key) in top.iter().enumerate() {
            let conds: Vec<String> = values
                .iter()
                .zip(&key.0)
                .map(|(v, k)| self.value_is(v, k))
                .collect();
            sql.push_str(&format!(" WHEN {} THEN {row}", join_bool(&conds, "AND")));
        }
        sql.push_str(" ELSE -1 END");
        Ok(format!("CAST({sql} AS BIGINT)"))
    }

    fn value_is(&self, v: &ValueExprs, k: &PropertyValue) -> String {
        let d = self.dialect;
        let eq = |e: &Option<String>, lit: String| match e {
            Some(e) => format!("coalesce({e} = {lit}, FALSE)"),
            None => "FALSE".to_string(),
        };
        match k {
            PropertyValue::Null => {
                let parts: Vec<String> = v.present().map(|e| format!("{e} IS NULL")).collect();
                join_bool(&parts, "AND")
            }
            // Arrays and objects canonicalise to their JSON text, a string.
            PropertyValue::String(s) => format!(
                "({} OR {})",
                eq(&v.string, self.lit(s)),
                eq(&v.other, self.lit(s))
            ),
            PropertyValue::Number(n) => eq(&v.number, float_literal(d, *n)),
            PropertyValue::Bool(b) => eq(&v.boolean, bool_lit(*b).to_string()),
            PropertyValue::Other(s) => eq(&v.other, self.lit(s)),
        }
    }
}

fn json_value(d: &dyn Dialect, json: &str, key: &str) -> ValueExprs {
    ValueExprs {
        string: Some(d.json_string(json, key)),
        number: Some(d.json_number(json, key)),
        boolean: Some(d.json_bool(json, key)),
        other: Some(d.json_other(json, key)),
    }
}

fn bool_lit(b: bool) -> &'static str {
    if b { "TRUE" } else { "FALSE" }
}

/// Joins boolean SQL with `op`; an empty list is `TRUE` (an empty group imposes no
/// condition, AND and OR alike, per the semantics).
pub(crate) fn join_bool(parts: &[String], op: &str) -> String {
    match parts {
        [] => "TRUE".to_string(),
        [one] => one.clone(),
        many => format!("({})", many.join(&format!(" {op} "))),
    }
}

/// Like [`join_bool`], but an empty list (no type class can match) is `FALSE`.
fn join_bool_or_false(parts: &[String], op: &str) -> String {
    if parts.is_empty() {
        "FALSE".to_string()
    } else {
        join_bool(parts, op)
    }
}
