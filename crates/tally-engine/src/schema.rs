//! Schema discovery on DataFusion: [`Engine::schema`] lists event names, property keys
//! (with their JSON types and counts) and property values of the query's tenant from
//! the store, through `tally_sql::compile_schema`'s statements.
//!
//! Owns the inputs SQL cannot discover by itself — which keys exist: for event
//! properties the store's property catalog names the materialised keys (counted over
//! their typed columns, a hundred keys per statement) and says whether any key is not
//! materialised (those are discovered in one pass over the properties JSON with the
//! `tally_json_key_classes` function defined here); for person properties the keys of
//! the tenant's persons — and the finishing
//! that follows `tally_query::reference::schema`: keys never seen with a non-null value
//! in the selection are dropped, values are merged by canonical form, searched on their
//! text, ranked by count then key or value, and truncated.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde_json::{Map, Value};
use tally_query::filter::semantics::compare_breakdown_values;
use tally_query::schema::{EventNameInfo, PropertyInfo, PropertyType, ValueCount};
use tally_query::{PropertySource, SchemaQuery, SchemaRequest, SchemaResult, Scope};
use tally_sql::{CompileContext, DataFusionDialect, PropertyCatalog, SchemaPlan, compile_schema};

use crate::{Engine, Result, breakdown_value, int_column, string_column};

/// `tally_json_key_classes(json) -> List<Utf8>`: `<class><key>` for every top-level
/// key of a JSON object whose value is not null, class `s`, `n`, `b` or `o` (array or
/// object) as `Dialect::json_key_classes` specifies. Malformed or non-object JSON has
/// no keys (the store only holds objects it serialised itself).
pub fn tally_json_key_classes() -> ScalarUDF {
    create_udf(
        "tally_json_key_classes",
        vec![DataType::Utf8],
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let input = cast(&args[0].clone().into_array(rows)?, &DataType::Utf8)?;
            let texts = input
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    DataFusionError::Execution("tally_json_key_classes expects text".to_string())
                })?;
            let mut out = ListBuilder::new(StringBuilder::new());
            for text in texts.iter() {
                let object = text.and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok());
                for (key, value) in object.iter().flatten() {
                    let class = match value {
                        Value::Null => continue,
                        Value::String(_) => 's',
                        Value::Number(_) => 'n',
                        Value::Bool(_) => 'b',
                        Value::Array(_) | Value::Object(_) => 'o',
                    };
                    out.values().append_value(format!("{class}{key}"));
                }
                out.append(true);
            }
            let array: ArrayRef = Arc::new(out.finish());
            if matches!(args[0], ColumnarValue::Scalar(_)) {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            } else {
                Ok(ColumnarValue::Array(array))
            }
        }),
    )
}

/// Keys counted per statement: four aggregates each, so a tenant with the full 1,000
/// materialised keys is read in a few passes of moderate width.
const KEYS_PER_STATEMENT: usize = 100;

fn found(text: &str, search: Option<&String>) -> bool {
    search.is_none_or(|s| text.to_lowercase().contains(&s.to_lowercase()))
}

impl Engine {
    /// Answers a schema-discovery query at instant `now` (UTC microseconds) for a
    /// tenant whose time-zone setting is `tenant_time_zone`. Group properties and
    /// operator scopes are refused.
    pub async fn schema(
        &self,
        query: &SchemaQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<SchemaResult> {
        self.measured("schema", self.schema_inner(query, now, tenant_time_zone))
            .await
    }

    async fn schema_inner(
        &self,
        query: &SchemaQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<SchemaResult> {
        let catalog = match query.scope {
            Scope::Tenant(tenant) => self.catalog(tenant)?,
            // The compiler refuses operator scopes with a clear error.
            Scope::Operator { .. } => PropertyCatalog::new(),
        };
        let ctx = CompileContext {
            now,
            tenant_time_zone,
            catalog: &catalog,
        };
        let plan = compile_schema(query, &DataFusionDialect, &ctx)?;
        let session = self.session(plan.tenant).await?;
        match &query.request {
            SchemaRequest::EventNames { .. } => {
                let mut events = Vec::new();
                for batch in self.run(&session, &plan.event_names_sql()?).await? {
                    let (name, count) = (string_column(&batch, 0)?, int_column(&batch, 1)?);
                    let last_seen = int_column(&batch, 2)?;
                    for r in 0..batch.num_rows() {
                        events.push(EventNameInfo {
                            name: name.value(r).to_string(),
                            count: u64::try_from(count.value(r)).unwrap_or(0),
                            last_seen: last_seen.value(r),
                        });
                    }
                }
                Ok(SchemaResult::EventNames { events })
            }
            SchemaRequest::PropertyNames {
                source,
                search,
                limit,
                ..
            } => {
                let mut keys: Vec<String> = match source {
                    PropertySource::Person => {
                        let snapshot = self.persons_snapshot(plan.tenant).await?;
                        let mut keys: Vec<String> = snapshot
                            .records
                            .iter()
                            .flat_map(|p| p.properties.keys().cloned())
                            .collect();
                        keys.sort();
                        keys.dedup();
                        keys
                    }
                    // Group and tenant sources were refused by the compiler.
                    _ => self
                        .store
                        .property_catalog(plan.tenant)
                        .keys
                        .into_iter()
                        .filter(|(_, stats)| stats.materialized)
                        .map(|(key, _)| key)
                        .collect(),
                };
                keys.retain(|k| found(k, search.as_ref()));
                let mut properties = self.property_counts(&session, &plan, &keys).await?;
                if *source == PropertySource::Event {
                    properties.extend(self.json_key_counts(&session, &plan, search).await?);
                }
                properties.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
                properties.truncate(*limit as usize);
                Ok(SchemaResult::PropertyNames { properties })
            }
            SchemaRequest::PropertyValues { search, limit, .. } => {
                let mut counts: Vec<(Value, u64)> = Vec::new();
                for batch in self.run(&session, &plan.property_values_sql()?).await? {
                    let count = int_column(&batch, 4)?;
                    for r in 0..batch.num_rows() {
                        // Arrays and objects canonicalise to their JSON text, so a
                        // string and an array can be one value.
                        let value = breakdown_value(&batch, 0, r)?;
                        let n = u64::try_from(count.value(r)).unwrap_or(0);
                        match counts
                            .iter_mut()
                            .find(|(v, _)| compare_breakdown_values(v, &value).is_eq())
                        {
                            Some((_, total)) => *total += n,
                            None => counts.push((value, n)),
                        }
                    }
                }
                let text = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                counts.retain(|(v, _)| found(&text(v), search.as_ref()));
                counts.sort_by(|(va, ca), (vb, cb)| {
                    cb.cmp(ca).then_with(|| compare_breakdown_values(va, vb))
                });
                counts.truncate(*limit as usize);
                Ok(SchemaResult::PropertyValues {
                    values: counts
                        .into_iter()
                        .map(|(value, count)| ValueCount { value, count })
                        .collect(),
                })
            }
        }
    }

    /// Types and counts of the event keys without typed columns, from one pass over
    /// the properties JSON; nothing when the catalog has no such key.
    async fn json_key_counts(
        &self,
        session: &datafusion::prelude::SessionContext,
        plan: &SchemaPlan<'_>,
        search: &Option<String>,
    ) -> Result<Vec<PropertyInfo>> {
        let wanted: HashSet<String> = self
            .store
            .property_catalog(plan.tenant)
            .keys
            .into_iter()
            .filter(|(key, stats)| !stats.materialized && found(key, search.as_ref()))
            .map(|(key, _)| key)
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        session.register_udf(tally_json_key_classes());
        let mut by_key: BTreeMap<String, (Vec<PropertyType>, u64)> = BTreeMap::new();
        for batch in self.run(session, &plan.json_key_counts_sql()?).await? {
            let (entry, count) = (string_column(&batch, 0)?, int_column(&batch, 1)?);
            for r in 0..batch.num_rows() {
                let text = entry.value(r);
                let mut chars = text.chars();
                let ty = match chars.next() {
                    Some('s') => PropertyType::String,
                    Some('n') => PropertyType::Number,
                    Some('b') => PropertyType::Boolean,
                    Some('o') => PropertyType::Json,
                    _ => continue,
                };
                let key = chars.as_str();
                if !wanted.contains(key) {
                    continue;
                }
                let slot = by_key.entry(key.to_string()).or_default();
                slot.0.push(ty);
                slot.1 += u64::try_from(count.value(r)).unwrap_or(0);
            }
        }
        Ok(by_key
            .into_iter()
            .filter(|(_, (_, count))| *count > 0)
            .map(|(key, (mut types, count))| {
                types.sort();
                types.dedup();
                PropertyInfo { key, types, count }
            })
            .collect())
    }

    /// Types and counts of `keys`, dropping keys with no non-null value selected.
    async fn property_counts(
        &self,
        session: &datafusion::prelude::SessionContext,
        plan: &SchemaPlan<'_>,
        keys: &[String],
    ) -> Result<Vec<PropertyInfo>> {
        let classes = [
            PropertyType::String,
            PropertyType::Number,
            PropertyType::Boolean,
            PropertyType::Json,
        ];
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let Some(sql) = plan.property_counts_sql(chunk)? else {
                continue;
            };
            for batch in self.run(session, &sql).await? {
                for r in 0..batch.num_rows() {
                    for (k, key) in chunk.iter().enumerate() {
                        let mut types = Vec::new();
                        let mut count = 0u64;
                        for (c, ty) in classes.iter().enumerate() {
                            let n = int_column(&batch, k * 4 + c)?.value(r);
                            let n = u64::try_from(n).unwrap_or(0);
                            if n > 0 {
                                types.push(*ty);
                                count += n;
                            }
                        }
                        if count > 0 {
                            types.sort();
                            out.push(PropertyInfo {
                                key: key.clone(),
                                types,
                                count,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
