//! The events list on DataFusion: [`Engine::events`] runs `tally_sql::compile_events`'s
//! page statement and turns its rows into `EventRow`s and a next-page cursor; and the
//! `tally_uuid_text` function the statement orders and compares uuids with.
//!
//! Owns the row decoding and the cursor of the last kept row. Does not own the filter,
//! range or cursor semantics (compiled by tally-sql, specified by tally-query), and
//! reads persons only through the session's identity map (person ids resolved at query
//! time).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use tally_core::Properties;
use tally_query::{EventRow, EventsCursor, EventsQuery, EventsResult, Scope};
use tally_sql::{CompileContext, DataFusionDialect, PropertyCatalog, compile_events};
use uuid::Uuid;

use crate::{Engine, Error, Result, int_column, string_column};

/// `tally_uuid_text(FixedSizeBinary(16)) -> Utf8`: the uuid as lower-case hyphenated
/// text, whose string order is the byte order (`Dialect::uuid_text`).
pub fn tally_uuid_text() -> ScalarUDF {
    create_udf(
        "tally_uuid_text",
        vec![DataType::FixedSizeBinary(16)],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let input = args[0].clone().into_array(rows)?;
            let bytes = input
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| {
                    DataFusionError::Execution(
                        "tally_uuid_text expects FixedSizeBinary(16)".to_string(),
                    )
                })?;
            let mut out = StringBuilder::with_capacity(rows, rows * 36);
            for value in bytes.iter() {
                out.append_option(
                    value
                        .and_then(|b| Uuid::from_slice(b).ok())
                        .map(|u| u.hyphenated().to_string()),
                );
            }
            let array: ArrayRef = Arc::new(out.finish());
            if matches!(args[0], ColumnarValue::Scalar(_)) {
                Ok(ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::try_from_array(&array, 0)?,
                ))
            } else {
                Ok(ColumnarValue::Array(array))
            }
        }),
    )
}

impl Engine {
    /// The latest events of the query's tenant, newest first, one page at instant
    /// `now` (UTC microseconds; relative date ranges resolve against it) for a tenant
    /// whose time-zone setting is `tenant_time_zone`. Operator scopes are refused.
    pub async fn events(
        &self,
        query: &EventsQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<EventsResult> {
        self.measured("events", self.events_inner(query, now, tenant_time_zone))
            .await
    }

    async fn events_inner(
        &self,
        query: &EventsQuery,
        now: i64,
        tenant_time_zone: Option<&str>,
    ) -> Result<EventsResult> {
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
        let plan = compile_events(query, &DataFusionDialect, &ctx)?;
        let session = self.session(plan.tenant).await?;
        let mut events = Vec::new();
        for batch in self.run(&session, &plan.page_sql()?).await? {
            let uuid = string_column(&batch, 0)?;
            let name = string_column(&batch, 1)?;
            let distinct_id = string_column(&batch, 2)?;
            let person_id = string_column(&batch, 3)?;
            let timestamp = int_column(&batch, 4)?;
            let properties = string_column(&batch, 5)?;
            for r in 0..batch.num_rows() {
                let id = Uuid::parse_str(uuid.value(r)).map_err(|e| {
                    Error::Execution(format!("stored event uuid {:?}: {e}", uuid.value(r)))
                })?;
                // The store serialised these itself; anything else is corruption.
                let props: Properties = if properties.is_null(r) {
                    Properties::new()
                } else {
                    serde_json::from_str(properties.value(r)).map_err(|e| {
                        Error::Execution(format!("stored properties of event {id}: {e}"))
                    })?
                };
                events.push(EventRow {
                    tenant: plan.tenant,
                    uuid: id,
                    event: name.value(r).to_string(),
                    distinct_id: distinct_id.value(r).to_string(),
                    person_id: person_id.value(r).to_string(),
                    timestamp: timestamp.value(r),
                    properties: props,
                });
            }
        }
        // The statement returns one row more than the page: its presence means there
        // is a next page, which starts after the last row kept.
        let limit = query.limit as usize;
        let next_cursor = (events.len() > limit && limit > 0).then(|| {
            let last = &events[limit - 1];
            EventsCursor {
                timestamp: last.timestamp,
                tenant: last.tenant,
                uuid: last.uuid,
            }
            .encode()
        });
        events.truncate(limit);
        Ok(EventsResult {
            events,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn uuid_text_sorts_like_the_bytes() {
        let ctx = SessionContext::new();
        ctx.register_udf(tally_uuid_text());
        let uuids = [
            Uuid::from_u128(0x00ff_0000_0000_0000_0000_0000_0000_0000),
            Uuid::from_u128(0x0100_0000_0000_0000_0000_0000_0000_0001),
            Uuid::from_u128(u128::MAX),
            Uuid::nil(),
        ];
        let array =
            FixedSizeBinaryArray::try_from_iter(uuids.iter().map(|u| u.as_bytes())).unwrap();
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter([(
            "u",
            Arc::new(array) as ArrayRef,
        )])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let out = ctx
            .sql("SELECT tally_uuid_text(u) AS s FROM t ORDER BY s")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let texts: Vec<String> = out
            .iter()
            .flat_map(|b| {
                let col = string_column(b, 0).unwrap();
                (0..b.num_rows())
                    .map(|r| col.value(r).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut expected = uuids.to_vec();
        expected.sort();
        let expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
        assert_eq!(texts, expected);
    }
}
