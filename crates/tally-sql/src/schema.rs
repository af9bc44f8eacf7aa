//! Schema discovery compiled to SQL over the tenant's events: event names with counts
//! and last-seen instants, property keys with the type classes they were seen with
//! and how many events (or persons) carry them, and a property's values with counts.
//!
//! Event properties are read through the same four type-class expressions as filters
//! (typed columns for materialised keys, JSON extraction otherwise), so a key's types
//! and counts are `COUNT` over those expressions. Person properties are counted once
//! per person seen on the selected events, as the semantics define: the events are
//! first reduced to their distinct persons, which are then joined to the persons
//! relation, so each person's JSON is read once rather than once per event. Which keys exist is the caller's input (the store's property
//! catalog lists event keys; the persons source lists person keys): SQL cannot name
//! columns it does not know.
//!
//! Does not own: merging values with the same canonical form, searching values,
//! ordering and truncating property lists (the engine does those on the counted rows).

use tally_core::TenantId;
use tally_query::filter::PropertyRef;
use tally_query::{PropertySource, SchemaQuery, SchemaRequest, TimeRange};

use crate::dialect::Dialect;
use crate::events::resolve_range;
use crate::expr::{BREAKDOWN_SUFFIXES, Scoped, ValueExprs, join_bool};
use crate::{CompileContext, Error, Result, scope_tenant};

/// A compiled schema query.
pub struct SchemaPlan<'a> {
    /// The query.
    pub query: &'a SchemaQuery,
    /// The tenant, from the query's scope.
    pub tenant: TenantId,
    /// The resolved date range, when the query has one.
    pub range: Option<TimeRange>,
    dialect: &'a dyn Dialect,
    ctx: CompileContext<'a>,
}

/// Compiles a schema query: validates it and refuses sources the store cannot answer
/// (groups: the store does not index them yet).
pub fn compile_schema<'a>(
    query: &'a SchemaQuery,
    dialect: &'a dyn Dialect,
    ctx: &CompileContext<'a>,
) -> Result<SchemaPlan<'a>> {
    query.validate()?;
    let tenant = scope_tenant(&query.scope)?;
    let range = resolve_range(
        query.date_range.as_ref(),
        query.time_zone.as_deref(),
        query.week_start,
        ctx,
    )?;
    let plan = SchemaPlan {
        query,
        tenant,
        range,
        dialect,
        ctx: ctx.clone(),
    };
    match &query.request {
        SchemaRequest::EventNames { .. } => {
            plan.event_names_sql()?;
        }
        SchemaRequest::PropertyNames { .. } => {
            plan.property_counts_sql(&["key".to_string()])?;
        }
        SchemaRequest::PropertyValues { .. } => {
            plan.property_values_sql()?;
        }
    }
    Ok(plan)
}

impl SchemaPlan<'_> {
    fn scoped(&self) -> Scoped<'_> {
        Scoped::new(self.dialect, self.ctx.catalog, self.tenant)
    }

    /// The date range and the event-name restriction.
    fn conditions(&self, s: &Scoped<'_>, event: Option<&str>) -> Vec<String> {
        let mut conds = match self.range {
            Some(r) => s.time_bounds(Some(r.start), Some(r.end)),
            None => Vec::new(),
        };
        if let Some(name) = event {
            conds.push(format!("{} = {}", s.col("e", "event"), s.lit(name)));
        }
        conds
    }

    /// For [`SchemaRequest::EventNames`]: `(row_name, row_count BIGINT, row_last_seen
    /// BIGINT µs)`, most frequent first, then by name, at most `limit` rows.
    pub fn event_names_sql(&self) -> Result<String> {
        let SchemaRequest::EventNames { search, limit } = &self.query.request else {
            return Err(wrong_request("event names"));
        };
        let s = self.scoped();
        let event = s.col("e", "event");
        let mut conds = self.conditions(&s, None);
        if let Some(text) = search {
            conds.push(self.dialect.contains_ignore_case(&event, &s.lit(text)));
        }
        Ok(format!(
            "SELECT {event} AS row_name, CAST(COUNT(*) AS BIGINT) AS row_count, MAX({ts}) AS row_last_seen \
             {from} GROUP BY {event} ORDER BY row_count DESC, row_name ASC LIMIT {limit}{suffix}",
            ts = s.ts(),
            from = s.scoped_source(&conds),
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// For [`SchemaRequest::PropertyNames`]: one row with, per key `i` of `keys`, four
    /// BIGINT columns `k{i}_s`, `k{i}_n`, `k{i}_b`, `k{i}_o`: the events (or persons)
    /// carrying the key as a string, number, boolean, array or object. `None` when
    /// `keys` is empty.
    pub fn property_counts_sql(&self, keys: &[String]) -> Result<Option<String>> {
        let SchemaRequest::PropertyNames { source, event, .. } = &self.query.request else {
            return Err(wrong_request("property names"));
        };
        if keys.is_empty() {
            return Ok(None);
        }
        let s = self.scoped();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let property = PropertyRef {
                source: *source,
                key: key.clone(),
                group_type: None,
            };
            values.push(s.property(&property)?);
        }
        let zero = "CAST(0 AS BIGINT)";
        let mut outer = Vec::new();
        for (i, v) in values.iter().enumerate() {
            for (expr, suffix) in classes(v).into_iter().zip(BREAKDOWN_SUFFIXES) {
                let name = format!("k{i}_{suffix}");
                outer.push(match expr {
                    Some(e) => format!("CAST(COUNT({e}) AS BIGINT) AS {name}"),
                    None => format!("{zero} AS {name}"),
                });
            }
        }
        let sql = if *source == PropertySource::Person {
            format!(
                "SELECT {} {}",
                outer.join(", "),
                self.distinct_persons(event.as_deref())
            )
        } else {
            let conds = self.conditions(&s, event.as_deref());
            format!("SELECT {} {}", outer.join(", "), s.scoped_source(&conds))
        };
        Ok(Some(format!("{sql}{}", self.dialect.statement_suffix())))
    }

    /// For [`SchemaRequest::PropertyNames`] of event properties: `(row_entry,
    /// row_count BIGINT)`, the events carrying each `<class><key>` (see
    /// [`Dialect::json_key_classes`]) in their properties JSON, in one pass. For keys
    /// without typed columns, of which a tenant may have thousands.
    pub fn json_key_counts_sql(&self) -> Result<String> {
        let SchemaRequest::PropertyNames { source, event, .. } = &self.query.request else {
            return Err(wrong_request("property names"));
        };
        if *source != PropertySource::Event {
            return Err(Error::Unsupported(format!(
                "key discovery from event JSON for {} properties",
                source.as_str()
            )));
        }
        let s = self.scoped();
        let conds = self.conditions(&s, event.as_deref());
        Ok(format!(
            "SELECT entry AS row_entry, CAST(COUNT(*) AS BIGINT) AS row_count \
             FROM (SELECT {expand} AS entry {from}) t GROUP BY entry{suffix}",
            expand = self.dialect.json_key_classes(&s.col("e", "properties")),
            from = s.scoped_source(&conds),
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// For [`SchemaRequest::PropertyValues`]: `(v_s, v_n, v_b, v_o, row_count BIGINT)`,
    /// one row per distinct non-null value (in its type class column) with the events
    /// (or persons) carrying it. Unordered: canonical merging and ranking are the
    /// caller's.
    pub fn property_values_sql(&self) -> Result<String> {
        let SchemaRequest::PropertyValues {
            property, event, ..
        } = &self.query.request
        else {
            return Err(wrong_request("property values"));
        };
        let s = self.scoped();
        let v = s.property(property)?;
        let mut inner = Vec::new();
        let mut set = Vec::new();
        for ((expr, suffix), ty) in classes(&v)
            .into_iter()
            .zip(BREAKDOWN_SUFFIXES)
            .zip(["string", "number", "boolean", "string"])
        {
            let name = format!("v_{suffix}");
            if expr.is_some() {
                set.push(format!("{name} IS NOT NULL"));
            }
            let expr = expr.unwrap_or_else(|| self.dialect.typed_null(ty).to_string());
            inner.push(format!("{expr} AS {name}"));
        }
        let from = if property.source == PropertySource::Person {
            self.distinct_persons(event.as_deref())
        } else {
            let conds = self.conditions(&s, event.as_deref());
            s.scoped_source(&conds)
        };
        Ok(format!(
            "SELECT v_s, v_n, v_b, v_o, CAST(COUNT(*) AS BIGINT) AS row_count \
             FROM (SELECT {inner} {from}) t WHERE {set} GROUP BY v_s, v_n, v_b, v_o{suffix}",
            inner = inner.join(", "),
            set = join_bool(&set, "OR"),
            suffix = self.dialect.statement_suffix(),
        ))
    }

    /// `FROM` the persons seen on the selected events, one row each, joined to their
    /// properties (`pp`): person properties are then read once per person.
    fn distinct_persons(&self, event: Option<&str>) -> String {
        // A fresh compiler: the inner statement must not join persons itself.
        let s = self.scoped();
        let conds = self.conditions(&s, event);
        format!(
            "FROM (SELECT DISTINCT {} AS row_person {}) x{}",
            s.person(),
            s.scoped_source(&conds),
            s.persons_join("x.row_person"),
        )
    }
}

fn classes(v: &ValueExprs) -> [Option<String>; 4] {
    [
        v.string.clone(),
        v.number.clone(),
        v.boolean.clone(),
        v.other.clone(),
    ]
}

fn wrong_request(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} statement for a schema query that asks for something else"
    ))
}
