//! From one client JSON object to a validated, enriched [`Event`].
//!
//! Format modules ([`crate::posthog`], [`crate::segment`]) translate their shapes into
//! a [`Draft`]; everything after that is shared and lives here: the event-size check,
//! event name and `distinct_id` rules, property limits, `$set`/`$set_once` hoisting,
//! timestamp resolution (clock-skew correction, `offset`, future clamping), the dedup
//! key and enrichment. This module does not read bodies or talk to the sink.

use std::io;
use std::net::IpAddr;

use serde_json::{Map, Value};
use tally_core::event::{names, uuid_from_dedup_key};
use tally_core::identity::is_denylisted_distinct_id;
use tally_core::time::{format_micros, now_micros, parse_timestamp};
use tally_core::{Event, Properties, TenantId};
use uuid::Uuid;

use crate::config::{IngestConfig, Limits};
use crate::enrich::{EnrichInput, Enricher, GeoMemo};
use crate::error::{EventRejection, RejectReason, preview};

/// How many characters of an offending key or value an error message quotes.
const PREVIEW_CHARS: usize = 40;

/// What the request tells us beyond the event itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub config: &'a IngestConfig,
    pub enricher: &'a Enricher,
    /// Server receive time, UTC microseconds.
    pub received_at: i64,
    /// Request-level client send time (PostHog `sent_at` / `?_=`, Segment batch
    /// `sentAt`), used for clock-skew correction when the event has none of its own.
    pub sent_at: Option<i64>,
    /// The resolved client address, see [`crate::client_ip::resolve_client_ip`].
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header.
    pub user_agent: Option<&'a str>,
}

impl<'a> RequestContext<'a> {
    /// A context for events that did not arrive over HTTP (file imports): received
    /// now, no send time, no client address, no user agent.
    pub fn detached(config: &'a IngestConfig, enricher: &'a Enricher) -> Self {
        Self {
            config,
            enricher,
            received_at: now_micros(),
            sent_at: None,
            client_ip: None,
            user_agent: None,
        }
    }
}

/// An event in transit: translated from its wire format, not yet validated.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub event: Option<Value>,
    pub distinct_id: Option<Value>,
    pub properties: Properties,
    pub person_set: Option<Value>,
    pub person_set_once: Option<Value>,
    pub timestamp: Option<Value>,
    /// PostHog: milliseconds before receipt that the event happened.
    pub offset_ms: Option<Value>,
    /// Event-level send time; overrides the request's.
    pub sent_at: Option<Value>,
    pub dedup_key: Option<String>,
}

/// Translates one JSON object in PostHog, native or Segment shape into an [`Event`],
/// with exactly the validation and enrichment the HTTP endpoints apply. Segment shape
/// is recognised by a Segment `type` or by `userId`/`anonymousId`/`messageId`.
pub fn normalize_json_event(
    tenant: TenantId,
    value: Value,
    ctx: &RequestContext<'_>,
) -> Result<Event, EventRejection> {
    let mut memo = GeoMemo::default();
    check_event_size(0, &value, &ctx.config.limits)?;
    let Value::Object(mut obj) = value else {
        return Err(not_an_object(0, &value));
    };
    let draft = if crate::segment::looks_like_segment(&obj) {
        // Hand-written Segment-style records often omit `type`; a record with an
        // event name is a `track`.
        if !obj.contains_key("type") && obj.contains_key("event") {
            obj.insert("type".into(), Value::String("track".into()));
        }
        crate::segment::draft_from_batch_message(0, obj, None)?
    } else {
        crate::posthog::draft(0, obj)?
    };
    finish(0, tenant, draft, ctx, &mut memo)
}

pub(crate) fn not_an_object(index: usize, value: &Value) -> EventRejection {
    EventRejection::new(
        index,
        RejectReason::NotAnObject,
        format!("expected a JSON object, got {}", json_type(value)),
    )
}

/// "a string", "an object", ...: how error messages name a JSON value's type.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An `io::Write` that counts and gives up past a limit, so measuring a huge event
/// costs no more than measuring one just over the limit.
struct SizeCounter {
    written: usize,
    limit: usize,
}

impl io::Write for SizeCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written > self.limit {
            Err(io::Error::other("over limit"))
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Refuses events whose compact JSON serialisation exceeds `max_event_bytes`.
pub(crate) fn check_event_size(
    index: usize,
    value: &Value,
    limits: &Limits,
) -> Result<(), EventRejection> {
    if compact_json_len(value, limits.max_event_bytes).is_none() {
        return Err(EventRejection::new(
            index,
            RejectReason::EventTooLarge,
            format!(
                "event is larger than {} bytes (measured as compact JSON)",
                limits.max_event_bytes
            ),
        ));
    }
    Ok(())
}

/// The length of `serde_json`'s compact serialisation of `value`, or `None` once it
/// passes `limit`. Computed without writing the text: measuring by serialising cost a
/// few percent of the server's CPU at full ingest, for a check nearly every event
/// passes. A property test holds it equal to the serialised length.
fn compact_json_len(value: &Value, limit: usize) -> Option<usize> {
    fn add(total: &mut usize, n: usize, limit: usize) -> Option<()> {
        *total = total.checked_add(n)?;
        (*total <= limit).then_some(())
    }
    fn string_len(s: &str) -> usize {
        let bytes = s.as_bytes();
        // Nearly every string needs no escaping: count the bytes that do with a
        // branch-free sum (vectorised), and look closer only when there are some.
        let special: usize = bytes
            .iter()
            .map(|&b| usize::from(b < 0x20 || b == b'"' || b == b'\\'))
            .sum();
        if special == 0 {
            return 2 + s.len();
        }
        // Quotes, plus what serde_json's escaping adds: `\"` `\\` and the short
        // control escapes take one byte more, other control bytes `\u00XX` five.
        2 + s.len()
            + bytes
                .iter()
                .map(|b| match b {
                    b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 1,
                    0x00..=0x1f => 5,
                    _ => 0,
                })
                .sum::<usize>()
    }
    fn walk(value: &Value, total: &mut usize, limit: usize) -> Option<()> {
        match value {
            Value::Null => add(total, 4, limit),
            Value::Bool(b) => add(total, if *b { 4 } else { 5 }, limit),
            Value::Number(n) if n.is_u64() || n.is_i64() => {
                // Integers: digits (and a sign), as itoa writes them.
                let (negative, magnitude) = match n.as_u64() {
                    Some(u) => (false, u),
                    None => {
                        let i = n.as_i64().unwrap_or(0);
                        (i < 0, i.unsigned_abs())
                    }
                };
                let digits = magnitude.checked_ilog10().map_or(1, |d| d as usize + 1);
                add(total, usize::from(negative) + digits, limit)
            }
            Value::Number(n) => {
                let mut counter = SizeCounter {
                    written: 0,
                    limit: usize::MAX,
                };
                serde_json::to_writer(&mut counter, n).ok()?;
                add(total, counter.written, limit)
            }
            Value::String(s) => add(total, string_len(s), limit),
            Value::Array(items) => {
                // Brackets and the commas between items.
                add(total, 2 + items.len().saturating_sub(1), limit)?;
                items.iter().try_for_each(|v| walk(v, total, limit))
            }
            Value::Object(map) => {
                // Braces, a colon per entry and the commas between entries.
                add(
                    total,
                    2 + map.len() * 2 - usize::from(!map.is_empty()),
                    limit,
                )?;
                map.iter().try_for_each(|(k, v)| {
                    add(total, string_len(k), limit)?;
                    walk(v, total, limit)
                })
            }
        }
    }
    let mut total = 0;
    walk(value, &mut total, limit)?;
    Some(total)
}

/// A JSON object as `Properties`: absent and `null` are empty, anything else but an
/// object is refused.
pub(crate) fn object_or_empty(
    index: usize,
    field: &str,
    value: Option<Value>,
) -> Result<Properties, EventRejection> {
    match value {
        None | Some(Value::Null) => Ok(Properties::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(EventRejection::new(
            index,
            RejectReason::InvalidField,
            format!("`{field}` must be a JSON object, got {}", json_type(&other)),
        )),
    }
}

/// A string or number as an id string (SDKs send numeric user ids unquoted).
pub(crate) fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn event_name(
    index: usize,
    value: Option<Value>,
    limits: &Limits,
) -> Result<String, EventRejection> {
    let name = match value {
        None | Some(Value::Null) => {
            return Err(EventRejection::new(
                index,
                RejectReason::MissingEventName,
                "missing event name (`event`)",
            ));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(EventRejection::new(
                index,
                RejectReason::InvalidEventName,
                format!("event name must be a string, got {}", json_type(&other)),
            ));
        }
    };
    if name.trim().is_empty() {
        return Err(EventRejection::new(
            index,
            RejectReason::MissingEventName,
            "event name is empty",
        ));
    }
    if name.len() > limits.max_event_name_len {
        return Err(EventRejection::new(
            index,
            RejectReason::EventNameTooLong,
            format!(
                "event name longer than {} bytes: '{}'",
                limits.max_event_name_len,
                preview(&name, PREVIEW_CHARS)
            ),
        ));
    }
    Ok(name)
}

fn distinct_id(
    index: usize,
    value: Option<Value>,
    limits: &Limits,
) -> Result<String, EventRejection> {
    let missing = || {
        EventRejection::new(
            index,
            RejectReason::MissingDistinctId,
            "missing distinct_id (send `distinct_id`, or `userId`/`anonymousId` for Segment)",
        )
    };
    let raw = match value {
        None | Some(Value::Null) => return Err(missing()),
        Some(v) => id_string(&v).ok_or_else(|| {
            EventRejection::new(
                index,
                RejectReason::InvalidDistinctId,
                format!(
                    "distinct_id must be a string or number, got {}",
                    json_type(&v)
                ),
            )
        })?,
    };
    let id = raw.trim();
    if id.is_empty() {
        return Err(missing());
    }
    if id.len() > limits.max_distinct_id_len {
        return Err(EventRejection::new(
            index,
            RejectReason::DistinctIdTooLong,
            format!(
                "distinct_id longer than {} bytes: '{}'",
                limits.max_distinct_id_len,
                preview(id, PREVIEW_CHARS)
            ),
        ));
    }
    if is_denylisted_distinct_id(id) {
        return Err(EventRejection::new(
            index,
            RejectReason::DenylistedDistinctId,
            format!(
                "distinct_id '{id}' is a placeholder, not an id; it would merge unrelated users"
            ),
        ));
    }
    Ok(id.to_string())
}

/// Checks one property map against the count, key, string and nesting limits.
fn check_properties(
    index: usize,
    field: &str,
    props: &Properties,
    limits: &Limits,
) -> Result<(), EventRejection> {
    if props.len() > limits.max_properties {
        return Err(EventRejection::new(
            index,
            RejectReason::TooManyProperties,
            format!(
                "`{field}` has {} keys; at most {} are allowed",
                props.len(),
                limits.max_properties
            ),
        ));
    }
    for (key, value) in props {
        check_key(index, field, key, limits)?;
        check_value(index, field, key, value, 0, limits)?;
    }
    Ok(())
}

fn check_key(index: usize, field: &str, key: &str, limits: &Limits) -> Result<(), EventRejection> {
    if key.len() > limits.max_key_len {
        return Err(EventRejection::new(
            index,
            RejectReason::KeyTooLong,
            format!(
                "{} key longer than {} bytes: '{}'",
                field_noun(field),
                limits.max_key_len,
                preview(key, PREVIEW_CHARS)
            ),
        ));
    }
    Ok(())
}

fn field_noun(field: &str) -> &str {
    if field == "properties" {
        "property"
    } else {
        field
    }
}

/// Walks a property value. `depth` is the number of containers already entered
/// below the top-level property; serde_json's own recursion limit (128) bounds the
/// walk, so this recursion cannot overflow the stack.
fn check_value(
    index: usize,
    field: &str,
    top_key: &str,
    value: &Value,
    depth: usize,
    limits: &Limits,
) -> Result<(), EventRejection> {
    let too_deep = || {
        EventRejection::new(
            index,
            RejectReason::NestingTooDeep,
            format!(
                "{} '{}' nests deeper than {} levels",
                field_noun(field),
                preview(top_key, PREVIEW_CHARS),
                limits.max_nesting_depth
            ),
        )
    };
    match value {
        Value::String(s) if s.len() > limits.max_string_value_len => Err(EventRejection::new(
            index,
            RejectReason::StringValueTooLong,
            format!(
                "{} '{}' has a string value longer than {} bytes",
                field_noun(field),
                preview(top_key, PREVIEW_CHARS),
                limits.max_string_value_len
            ),
        )),
        Value::Array(items) => {
            if depth + 1 > limits.max_nesting_depth {
                return Err(too_deep());
            }
            items
                .iter()
                .try_for_each(|v| check_value(index, field, top_key, v, depth + 1, limits))
        }
        Value::Object(map) => {
            if depth + 1 > limits.max_nesting_depth {
                return Err(too_deep());
            }
            for (k, v) in map {
                check_key(index, field, k, limits)?;
                check_value(index, field, top_key, v, depth + 1, limits)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Moves `$set`/`$set_once` found inside properties into the person maps. Top-level
/// values win over those nested in properties.
fn hoist_person_props(
    index: usize,
    properties: &mut Properties,
    key: &str,
    top_level: Option<Value>,
) -> Result<Properties, EventRejection> {
    let mut merged = object_or_empty(index, key, properties.remove(key))?;
    for (k, v) in object_or_empty(index, key, top_level)? {
        merged.insert(k, v);
    }
    Ok(merged)
}

fn truthy(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
        || matches!(v, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"))
}

/// When the event happened, and the claimed time when it was clamped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResolvedTime {
    pub timestamp: i64,
    pub clamped_from: Option<i64>,
}

/// PostHog's rules, in order: `offset` (ms before receipt) wins; else the client
/// `timestamp`, shifted by `received_at - sent_at` when a send time is known (the
/// client's clock error cancels out) unless `$ignore_sent_at`; else the receive time.
/// A result further than `max_future_skew` ahead of receipt is clamped to receipt.
pub(crate) fn resolve_timestamp(
    index: usize,
    timestamp: Option<&Value>,
    offset_ms: Option<&Value>,
    sent_at: Option<i64>,
    received_at: i64,
    max_future_skew_micros: i64,
) -> Result<ResolvedTime, EventRejection> {
    let claimed = match offset_ms {
        Some(Value::Null) | None => None,
        Some(Value::Number(n)) => {
            let ms = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                EventRejection::new(
                    index,
                    RejectReason::InvalidTimestamp,
                    "`offset` is not a finite number",
                )
            })?;
            // Saturating float-to-int casts keep absurd offsets finite; the clamp and
            // the lower bound below then deal with them.
            Some(received_at.saturating_sub((ms * 1000.0) as i64))
        }
        Some(other) => {
            return Err(EventRejection::new(
                index,
                RejectReason::InvalidTimestamp,
                format!(
                    "`offset` must be a number of milliseconds, got {}",
                    json_type(other)
                ),
            ));
        }
    };
    let claimed = match (claimed, timestamp) {
        (Some(from_offset), _) => Some(from_offset),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(s))) if s.trim().is_empty() => None,
        (None, Some(v)) => {
            let client = parse_timestamp(v).ok_or_else(|| {
                EventRejection::new(
                    index,
                    RejectReason::InvalidTimestamp,
                    format!(
                        "timestamp {} is neither ISO 8601 nor epoch milliseconds",
                        preview(&v.to_string(), PREVIEW_CHARS)
                    ),
                )
            })?;
            Some(match sent_at {
                Some(sent) => received_at.saturating_add(client.saturating_sub(sent)),
                None => client,
            })
        }
    };
    let Some(claimed) = claimed else {
        return Ok(ResolvedTime {
            timestamp: received_at,
            clamped_from: None,
        });
    };
    if claimed > received_at.saturating_add(max_future_skew_micros) {
        return Ok(ResolvedTime {
            timestamp: received_at,
            clamped_from: Some(claimed),
        });
    }
    // Skew correction with a wild `sent_at` can push a timestamp before 1970; the
    // store partitions by time and has no use for negative instants.
    Ok(ResolvedTime {
        timestamp: claimed.max(0),
        clamped_from: None,
    })
}

/// Validates, resolves and enriches a draft into the final event.
pub(crate) fn finish(
    index: usize,
    tenant: TenantId,
    draft: Draft,
    ctx: &RequestContext<'_>,
    memo: &mut GeoMemo,
) -> Result<Event, EventRejection> {
    let limits = &ctx.config.limits;
    let Draft {
        event,
        distinct_id: raw_distinct_id,
        mut properties,
        person_set,
        person_set_once,
        timestamp,
        offset_ms,
        sent_at,
        dedup_key,
    } = draft;

    let event = event_name(index, event, limits)?;
    let distinct_id = distinct_id(index, raw_distinct_id, limits)?;
    let person_set = hoist_person_props(index, &mut properties, "$set", person_set)?;
    let person_set_once = hoist_person_props(index, &mut properties, "$set_once", person_set_once)?;
    check_properties(index, "properties", &properties, limits)?;
    check_properties(index, "$set", &person_set, limits)?;
    check_properties(index, "$set_once", &person_set_once, limits)?;

    let sent_at = if truthy(properties.get("$ignore_sent_at")) {
        None
    } else {
        // An unreadable event-level send time is metadata we can do without.
        sent_at.as_ref().and_then(parse_timestamp).or(ctx.sent_at)
    };
    let skew = i64::try_from(ctx.config.max_future_skew.as_micros()).unwrap_or(i64::MAX);
    let time = resolve_timestamp(
        index,
        timestamp.as_ref(),
        offset_ms.as_ref(),
        sent_at,
        ctx.received_at,
        skew,
    )?;
    if let Some(claimed) = time.clamped_from {
        properties.insert(
            names::CLAMPED_TIMESTAMP.to_string(),
            Value::String(format_micros(claimed)),
        );
    }

    ctx.enricher.enrich(
        &mut properties,
        &EnrichInput {
            client_ip: ctx.client_ip,
            header_user_agent: ctx.user_agent,
        },
        memo,
    );

    let dedup_key = dedup_key.filter(|k| !k.trim().is_empty()).or_else(|| {
        properties
            .get("$insert_id")
            .and_then(id_string)
            .filter(|k| !k.trim().is_empty())
    });
    let uuid = match dedup_key {
        Some(key) => uuid_from_dedup_key(tenant, key.trim()),
        None => Uuid::now_v7(),
    };

    Ok(Event {
        uuid,
        event,
        distinct_id,
        timestamp: time.timestamp,
        received_at: ctx.received_at,
        properties,
        person_set,
        person_set_once,
    })
}

/// Convenience for format modules: an object's field as an owned value.
pub(crate) fn take(obj: &mut Map<String, Value>, key: &str) -> Option<Value> {
    obj.remove(key).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;
    const DAY: i64 = 86_400_000_000;

    fn resolve(ts: Option<Value>, offset: Option<Value>, sent: Option<i64>) -> ResolvedTime {
        resolve_timestamp(0, ts.as_ref(), offset.as_ref(), sent, NOW, DAY).unwrap()
    }

    #[test]
    fn timestamp_rules() {
        // Missing: now.
        assert_eq!(resolve(None, None, None).timestamp, NOW);
        // As sent when no send time.
        assert_eq!(
            resolve(Some(json!(format_micros(NOW - 5_000_000))), None, None).timestamp,
            NOW - 5_000_000
        );
        // Skew: client clock 1h fast; event 10s before sending.
        let hour = 3_600_000_000;
        let sent = NOW + hour;
        let ts = sent - 10_000_000;
        assert_eq!(
            resolve(Some(json!(format_micros(ts))), None, Some(sent)).timestamp,
            NOW - 10_000_000
        );
        // Offset wins over timestamp and sent_at.
        assert_eq!(
            resolve(
                Some(json!(format_micros(ts))),
                Some(json!(6000)),
                Some(sent)
            )
            .timestamp,
            NOW - 6_000_000
        );
        // Future beyond the skew: clamped, claim kept.
        let future = NOW + 2 * DAY;
        let r = resolve(Some(json!(format_micros(future))), None, None);
        assert_eq!(
            r,
            ResolvedTime {
                timestamp: NOW,
                clamped_from: Some(future)
            }
        );
        // Exactly at the limit is fine.
        let edge = NOW + DAY;
        assert_eq!(
            resolve(Some(json!(format_micros(edge))), None, None).timestamp,
            edge
        );
        // Garbage is refused with a reason.
        let err =
            resolve_timestamp(0, Some(&json!("yesterday")), None, None, NOW, DAY).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidTimestamp);
        let err = resolve_timestamp(0, None, Some(&json!("5")), None, NOW, DAY).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidTimestamp);
    }

    #[test]
    fn property_limits_name_the_offender() {
        let limits = Limits {
            max_key_len: 5,
            max_nesting_depth: 2,
            max_string_value_len: 3,
            max_properties: 2,
            ..Default::default()
        };
        let props = |v: Value| v.as_object().unwrap().clone();
        assert!(
            check_properties(0, "properties", &props(json!({"a": {"b": [1]}})), &limits).is_ok()
        );
        let e = check_properties(3, "properties", &props(json!({"a": {"b": [[1]]}})), &limits)
            .unwrap_err();
        assert_eq!(e.reason, RejectReason::NestingTooDeep);
        assert_eq!(
            e.to_string(),
            "event 3: property 'a' nests deeper than 2 levels"
        );
        let e =
            check_properties(0, "properties", &props(json!({"abcdef": 1})), &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 0: property key longer than 5 bytes: 'abcdef'"
        );
        let e =
            check_properties(0, "$set", &props(json!({"a": {"abcdef": 1}})), &limits).unwrap_err();
        assert_eq!(e.reason, RejectReason::KeyTooLong);
        let e =
            check_properties(0, "properties", &props(json!({"a": ["abcd"]})), &limits).unwrap_err();
        assert_eq!(e.reason, RejectReason::StringValueTooLong);
        let e = check_properties(
            0,
            "properties",
            &props(json!({"a": 1, "b": 2, "c": 3})),
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.reason, RejectReason::TooManyProperties);
    }

    #[test]
    fn distinct_id_rules() {
        let l = Limits::default();
        assert_eq!(distinct_id(0, Some(json!("  u1 ")), &l).unwrap(), "u1");
        assert_eq!(distinct_id(0, Some(json!(42)), &l).unwrap(), "42");
        for (v, reason) in [
            (json!(null), RejectReason::MissingDistinctId),
            (json!("   "), RejectReason::MissingDistinctId),
            (json!(["a"]), RejectReason::InvalidDistinctId),
            (json!("undefined"), RejectReason::DenylistedDistinctId),
            (json!("x".repeat(201)), RejectReason::DistinctIdTooLong),
        ] {
            assert_eq!(distinct_id(0, Some(v), &l).unwrap_err().reason, reason);
        }
    }

    /// A slow, obviously-correct reference for the nesting depth of a value.
    fn reference_depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(reference_depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(reference_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON with what escaping and number formatting make interesting: quotes,
    /// backslashes, control characters, non-ASCII text, floats, large integers.
    fn arb_escaped_json() -> impl Strategy<Value = Value> {
        let text = "[a\"\\\\\u{0}-\u{1f}\u{7f}é€😀 ]{0,8}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((text, inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn computed_size_is_the_serialised_size(v in arb_escaped_json()) {
            let len = serde_json::to_vec(&v).unwrap().len();
            prop_assert_eq!(compact_json_len(&v, usize::MAX), Some(len));
            prop_assert_eq!(compact_json_len(&v, len), Some(len));
            if len > 0 {
                prop_assert_eq!(compact_json_len(&v, len - 1), None);
            }
        }

        #[test]
        fn nesting_check_matches_reference(v in arb_json(), max in 0usize..6) {
            let limits = Limits { max_nesting_depth: max, ..Default::default() };
            let mut props = Properties::new();
            props.insert("p".into(), v.clone());
            let ok = check_properties(0, "properties", &props, &limits).is_ok();
            prop_assert_eq!(ok, reference_depth(&v) <= max);
        }

        #[test]
        fn size_check_matches_serialisation(v in arb_json(), limit in 0usize..200) {
            let len = serde_json::to_vec(&v).unwrap().len();
            prop_assert_eq!(compact_json_len(&v, usize::MAX), Some(len));
            let limits = Limits { max_event_bytes: limit, ..Default::default() };
            prop_assert_eq!(check_event_size(0, &v, &limits).is_ok(), len <= limit);
        }

        #[test]
        fn normalizing_arbitrary_json_never_panics(v in arb_json()) {
            let config = IngestConfig::default();
            let enricher = Enricher::new(&config).unwrap();
            let ctx = RequestContext::detached(&config, &enricher);
            if let Ok(split) = crate::posthog::split_request(v.clone()) {
                let _ = crate::posthog::request_api_key(&split);
            }
            let _ = crate::segment::split_request(v.clone(), None);
            let _ = crate::segment::split_request(v.clone(), Some(crate::segment::Kind::Group));
            let _ = normalize_json_event(TenantId(1), v, &ctx);
        }

        #[test]
        fn normalizing_event_like_json_never_panics(
            event in arb_json(), id in arb_json(), props in arb_json(), ts in arb_json(),
            offset in arb_json(), set in arb_json(), segment in any::<bool>(),
        ) {
            let config = IngestConfig::default();
            let enricher = Enricher::new(&config).unwrap();
            let ctx = RequestContext::detached(&config, &enricher);
            let v = if segment {
                json!({"type": event, "userId": id, "properties": props, "timestamp": ts,
                       "traits": set, "context": offset, "event": "x"})
            } else {
                json!({"event": event, "distinct_id": id, "properties": props, "timestamp": ts,
                       "offset": offset, "$set": set})
            };
            if let Ok(e) = normalize_json_event(TenantId(1), v, &ctx) {
                prop_assert!(!e.distinct_id.is_empty());
                prop_assert!(e.timestamp <= ctx.received_at + DAY);
            }
        }
    }
}
