//! PostHog's capture payloads (and the native batch, which uses the same event
//! shape): splitting a request into events and finding its API key, and translating
//! one event object into a [`Draft`].
//!
//! Request shapes, all accepted on every PostHog path: a single event
//! `{api_key|token, event, distinct_id, properties, timestamp, uuid, $set, ...}`, a
//! batch `{api_key, batch: [...], sent_at}`, or a bare array of events (posthog-js).
//! The API key may sit on the batch, on each event, or in `properties.token`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use tally_core::time::parse_timestamp;

use crate::error::{EventRejection, IngestError, Result};
use crate::normalize::{Draft, id_string, json_type, object_or_empty, take};

/// A PostHog request, split into its parts.
#[derive(Debug)]
pub(crate) struct SplitRequest {
    /// The batch-level key, when the request has one.
    pub api_key: Option<String>,
    /// The batch-level `sent_at`.
    pub sent_at: Option<i64>,
    pub events: Vec<Value>,
}

pub(crate) fn split_request(value: Value) -> Result<SplitRequest> {
    match value {
        Value::Array(events) => Ok(SplitRequest {
            api_key: None,
            sent_at: None,
            events,
        }),
        Value::Object(mut obj) if obj.contains_key("batch") => {
            let events = match obj.remove("batch") {
                Some(Value::Array(events)) => events,
                Some(other) => {
                    return Err(IngestError::UnexpectedShape(format!(
                        "`batch` must be an array of events, got {}",
                        json_type(&other)
                    )));
                }
                None => Vec::new(),
            };
            let api_key = ["api_key", "token"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(non_empty_str));
            let sent_at = obj.get("sent_at").and_then(parse_timestamp);
            Ok(SplitRequest {
                api_key,
                sent_at,
                events,
            })
        }
        Value::Object(obj) => Ok(SplitRequest {
            api_key: None,
            sent_at: None,
            events: vec![Value::Object(obj)],
        }),
        other => Err(IngestError::UnexpectedShape(format!(
            "expected an event object, a `batch` object or an array of events, got {}",
            json_type(&other)
        ))),
    }
}

fn non_empty_str(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The key an individual event carries: `api_key`, `token`, `$token` or
/// `properties.token`.
pub(crate) fn event_api_key(event: &Value) -> Option<String> {
    let obj = event.as_object()?;
    ["api_key", "token", "$token"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(non_empty_str))
        .or_else(|| {
            obj.get("properties")
                .and_then(|p| p.get("token"))
                .and_then(non_empty_str)
        })
}

/// The request's one API key: the batch's, else the one every keyed event agrees on.
pub(crate) fn request_api_key(split: &SplitRequest) -> Result<Option<String>> {
    if let Some(key) = &split.api_key {
        return Ok(Some(key.clone()));
    }
    let keys: BTreeSet<String> = split.events.iter().filter_map(event_api_key).collect();
    if keys.len() > 1 {
        return Err(IngestError::ConflictingApiKeys);
    }
    Ok(keys.into_iter().next())
}

/// Translates one PostHog (or native) event object.
pub(crate) fn draft(
    index: usize,
    mut obj: Map<String, Value>,
) -> std::result::Result<Draft, EventRejection> {
    let mut properties = object_or_empty(index, "properties", obj.remove("properties"))?;
    // The write key and distinct id have their own columns; copies in every row's
    // properties would only cost space.
    properties.remove("token");
    let from_props = properties.remove("distinct_id");
    let distinct_id = take(&mut obj, "distinct_id")
        .or_else(|| take(&mut obj, "$distinct_id"))
        .or(from_props.filter(|v| !v.is_null()));
    let dedup_key = take(&mut obj, "uuid").and_then(|v| id_string(&v));
    Ok(Draft {
        event: take(&mut obj, "event"),
        distinct_id,
        properties,
        person_set: take(&mut obj, "$set").or_else(|| take(&mut obj, "set")),
        person_set_once: take(&mut obj, "$set_once").or_else(|| take(&mut obj, "set_once")),
        timestamp: take(&mut obj, "timestamp"),
        offset_ms: take(&mut obj, "offset"),
        sent_at: take(&mut obj, "sent_at"),
        dedup_key,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_and_keys() {
        let single = split_request(json!({"api_key": "k", "event": "e"})).unwrap();
        assert_eq!(single.events.len(), 1);
        assert_eq!(request_api_key(&single).unwrap().as_deref(), Some("k"));

        let batch = split_request(json!({
            "api_key": "b", "sent_at": "2023-11-14T22:13:20Z",
            "batch": [{"event": "e", "token": "other"}]
        }))
        .unwrap();
        assert_eq!(request_api_key(&batch).unwrap().as_deref(), Some("b"));
        assert_eq!(batch.sent_at, Some(1_700_000_000_000_000));

        let array = split_request(json!([
            {"event": "a", "properties": {"token": "t"}},
            {"event": "b", "properties": {"token": "t"}},
            {"event": "c"}
        ]))
        .unwrap();
        assert_eq!(request_api_key(&array).unwrap().as_deref(), Some("t"));

        let conflicting = split_request(json!([{"token": "a"}, {"token": "b"}])).unwrap();
        assert!(matches!(
            request_api_key(&conflicting),
            Err(IngestError::ConflictingApiKeys)
        ));
        assert!(split_request(json!("hello")).is_err());
        assert!(split_request(json!({"batch": 5})).is_err());
    }

    #[test]
    fn draft_reads_posthog_fields() {
        let d = draft(
            0,
            json!({
                "event": "e", "properties": {"distinct_id": "p", "token": "k", "a": 1},
                "$set": {"x": 1}, "uuid": "u-1", "offset": 5
            })
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        assert_eq!(d.distinct_id, Some(json!("p")));
        assert_eq!(d.properties, *json!({"a": 1}).as_object().unwrap());
        assert_eq!(d.person_set, Some(json!({"x": 1})));
        assert_eq!(d.dedup_key.as_deref(), Some("u-1"));
        assert_eq!(d.offset_ms, Some(json!(5)));
    }
}
