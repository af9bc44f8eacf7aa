//! Segment's HTTP Tracking API messages (`track`, `identify`, `alias`, `group`,
//! `page`, `screen`, and `batch` of any mix), translated into PostHog's vocabulary.
//!
//! Mapping: `track` keeps its event name; `identify` is `$identify` with traits as
//! `$set`; `alias` is `$create_alias` (`alias` = `previousId`); `group` is
//! `$groupidentify`; `page` is `$pageview`; `screen` is `$screen`. `distinct_id` is
//! `userId`, else `anonymousId`. `messageId` is the dedup key. The client time is
//! `originalTimestamp`, else `timestamp`, corrected by `sentAt`. `context` fields
//! become PostHog's `$`-properties where one exists; the rest are kept under
//! `$segment_context`. This module only translates; validation happens in
//! [`crate::normalize`].

use serde_json::{Map, Value, json};
use tally_core::event::names;

use crate::error::{EventRejection, IngestError, RejectReason, Result};
use crate::normalize::{Draft, id_string, json_type, object_or_empty, take};

/// A Segment call type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Track,
    Identify,
    Alias,
    Group,
    Page,
    Screen,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "track" => Kind::Track,
            "identify" => Kind::Identify,
            "alias" => Kind::Alias,
            "group" => Kind::Group,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            _ => return None,
        })
    }
}

/// Whether a lone JSON object (file import) is a Segment message rather than a
/// PostHog event.
pub(crate) fn looks_like_segment(obj: &Map<String, Value>) -> bool {
    obj.get("type")
        .and_then(Value::as_str)
        .and_then(Kind::parse)
        .is_some()
        || ["userId", "anonymousId", "messageId"]
            .iter()
            .any(|k| obj.contains_key(*k))
}

/// A Segment request split into messages.
#[derive(Debug)]
pub(crate) struct SplitRequest {
    pub write_key: Option<String>,
    /// Batch-level `context`, merged under each message's own.
    pub context: Option<Map<String, Value>>,
    /// Batch-level `sentAt`.
    pub sent_at: Option<Value>,
    pub messages: Vec<Value>,
}

/// Splits a request body. `single` is the call type of a single-message endpoint
/// (`/v1/track`...), `None` for `/v1/batch` and `/v1/import`.
pub(crate) fn split_request(value: Value, single: Option<Kind>) -> Result<SplitRequest> {
    let Value::Object(mut obj) = value else {
        return Err(IngestError::UnexpectedShape(format!(
            "expected a JSON object, got {}",
            json_type(&value)
        )));
    };
    let write_key = obj
        .get("writeKey")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    match single {
        Some(kind) => {
            // The path decides the type, whatever the body says.
            obj.insert("type".into(), json!(kind_name(kind)));
            Ok(SplitRequest {
                write_key,
                context: None,
                sent_at: None,
                messages: vec![Value::Object(obj)],
            })
        }
        None => {
            let messages = match obj.remove("batch") {
                Some(Value::Array(messages)) => messages,
                Some(other) => {
                    return Err(IngestError::UnexpectedShape(format!(
                        "`batch` must be an array of messages, got {}",
                        json_type(&other)
                    )));
                }
                None => {
                    return Err(IngestError::UnexpectedShape(
                        "expected `{\"batch\": [...]}`".to_string(),
                    ));
                }
            };
            let context = match obj.remove("context") {
                Some(Value::Object(c)) => Some(c),
                _ => None,
            };
            Ok(SplitRequest {
                write_key,
                context,
                sent_at: take(&mut obj, "sentAt"),
                messages,
            })
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Track => "track",
        Kind::Identify => "identify",
        Kind::Alias => "alias",
        Kind::Group => "group",
        Kind::Page => "page",
        Kind::Screen => "screen",
    }
}

fn invalid(index: usize, detail: impl Into<String>) -> EventRejection {
    EventRejection::new(index, RejectReason::InvalidField, detail)
}

/// Translates one message of a batch (or of a single-call endpoint, whose `type` was
/// set from the path).
pub(crate) fn draft_from_batch_message(
    index: usize,
    mut msg: Map<String, Value>,
    batch_context: Option<&Map<String, Value>>,
) -> std::result::Result<Draft, EventRejection> {
    let kind = match msg.get("type") {
        Some(Value::String(s)) => Kind::parse(s).ok_or_else(|| {
            EventRejection::new(
                index,
                RejectReason::UnknownMessageType,
                format!(
                    "unknown Segment message type '{}': expected track, identify, alias, \
                     group, page or screen",
                    crate::error::preview(s, 40)
                ),
            )
        })?,
        _ => {
            return Err(EventRejection::new(
                index,
                RejectReason::UnknownMessageType,
                "Segment message without a `type`",
            ));
        }
    };

    let user_id = take(&mut msg, "userId").and_then(|v| id_string(&v));
    let anonymous_id = take(&mut msg, "anonymousId").and_then(|v| id_string(&v));
    let non_empty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let user_id = non_empty(&user_id);
    let anonymous_id = non_empty(&anonymous_id);

    let mut context = batch_context.cloned().unwrap_or_default();
    for (k, v) in object_or_empty(index, "context", msg.remove("context"))? {
        context.insert(k, v);
    }
    let mut properties = object_or_empty(index, "properties", msg.remove("properties"))?;
    let traits = object_or_empty(index, "traits", msg.remove("traits"))?;

    let mut person_set = None;
    let (event, distinct_id) = match kind {
        Kind::Track => (
            take(&mut msg, "event"),
            user_id.clone().or(anonymous_id.clone()),
        ),
        Kind::Identify => {
            if let (Some(_), Some(anon)) = (&user_id, &anonymous_id) {
                properties.insert(names::ANON_DISTINCT_ID.into(), json!(anon));
            }
            person_set = Some(Value::Object(traits));
            (
                Some(json!(names::IDENTIFY)),
                user_id.clone().or(anonymous_id.clone()),
            )
        }
        Kind::Alias => {
            let previous = take(&mut msg, "previousId")
                .and_then(|v| id_string(&v))
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| invalid(index, "alias requires `previousId`"))?;
            if user_id.is_none() {
                return Err(EventRejection::new(
                    index,
                    RejectReason::MissingDistinctId,
                    "alias requires `userId`",
                ));
            }
            properties.insert(names::ALIAS.into(), json!(previous.trim()));
            (Some(json!(names::CREATE_ALIAS)), user_id.clone())
        }
        Kind::Group => {
            let group_key = take(&mut msg, "groupId")
                .and_then(|v| id_string(&v))
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| invalid(index, "group requires `groupId`"))?;
            let mut group_set = traits;
            let group_type = group_set
                .remove("group_type")
                .or_else(|| properties.remove("group_type"))
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "company".to_string());
            properties.insert(names::GROUP_TYPE.into(), json!(group_type));
            properties.insert(names::GROUP_KEY.into(), json!(group_key.trim()));
            properties.insert(names::GROUP_SET.into(), Value::Object(group_set));
            (
                Some(json!(names::GROUP_IDENTIFY)),
                user_id.clone().or(anonymous_id.clone()),
            )
        }
        Kind::Page => {
            for field in ["name", "category"] {
                if let Some(v) = take(&mut msg, field) {
                    properties.entry(field).or_insert(v);
                }
            }
            for (from, to) in [
                ("url", "$current_url"),
                ("path", "$pathname"),
                ("referrer", "$referrer"),
            ] {
                if let Some(v) = properties.get(from).cloned() {
                    properties.entry(to).or_insert(v);
                }
            }
            (
                Some(json!(names::PAGEVIEW)),
                user_id.clone().or(anonymous_id.clone()),
            )
        }
        Kind::Screen => {
            if let Some(name) = take(&mut msg, "name") {
                properties.entry("$screen_name").or_insert(name);
            }
            (
                Some(json!(names::SCREEN)),
                user_id.clone().or(anonymous_id.clone()),
            )
        }
    };

    map_context(context, &mut properties);

    Ok(Draft {
        event,
        distinct_id: distinct_id.map(Value::String),
        properties,
        person_set,
        person_set_once: None,
        timestamp: take(&mut msg, "originalTimestamp").or_else(|| take(&mut msg, "timestamp")),
        offset_ms: None,
        sent_at: take(&mut msg, "sentAt"),
        dedup_key: take(&mut msg, "messageId").and_then(|v| id_string(&v)),
    })
}

/// Copies Segment `context` fields into PostHog property names (never overwriting
/// what the message's properties already say) and keeps the unmapped remainder under
/// `$segment_context`.
fn map_context(mut context: Map<String, Value>, props: &mut Map<String, Value>) {
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            props.entry(key).or_insert(v);
        }
    };
    let nested = |obj: &Map<String, Value>, key: &str| obj.get(key).cloned();

    if let Some(v) = context.remove("ip") {
        set("$ip", Some(v));
    }
    if let Some(v) = context.remove("userAgent") {
        set("$raw_user_agent", Some(v));
    }
    if let Some(v) = context.remove("locale") {
        set("$locale", Some(v));
    }
    if let Some(v) = context.remove("timezone") {
        set("$timezone", Some(v));
    }
    let table: &[(&str, &[(&str, &str)])] = &[
        ("library", &[("name", "$lib"), ("version", "$lib_version")]),
        (
            "page",
            &[
                ("url", "$current_url"),
                ("path", "$pathname"),
                ("referrer", "$referrer"),
                ("title", "title"),
                ("search", "$search"),
            ],
        ),
        (
            "campaign",
            &[
                ("name", "utm_campaign"),
                ("source", "utm_source"),
                ("medium", "utm_medium"),
                ("term", "utm_term"),
                ("content", "utm_content"),
            ],
        ),
        (
            "device",
            &[
                ("id", "$device_id"),
                ("manufacturer", "$device_manufacturer"),
                ("model", "$device_model"),
                ("name", "$device_name"),
            ],
        ),
        ("os", &[("name", "$os"), ("version", "$os_version")]),
        (
            "app",
            &[
                ("name", "$app_name"),
                ("version", "$app_version"),
                ("build", "$app_build"),
                ("namespace", "$app_namespace"),
            ],
        ),
        (
            "screen",
            &[
                ("width", "$screen_width"),
                ("height", "$screen_height"),
                ("density", "$screen_density"),
            ],
        ),
        (
            "network",
            &[
                ("wifi", "$network_wifi"),
                ("carrier", "$network_carrier"),
                ("cellular", "$network_cellular"),
                ("bluetooth", "$network_bluetooth"),
            ],
        ),
    ];
    for (section, fields) in table {
        let Some(Value::Object(obj)) = context.get(*section) else {
            continue;
        };
        let mut rest = obj.clone();
        for (from, to) in *fields {
            set(to, nested(obj, from));
            rest.remove(*from);
        }
        if rest.is_empty() {
            context.remove(*section);
        } else {
            context.insert((*section).to_string(), Value::Object(rest));
        }
    }
    if !context.is_empty() {
        props
            .entry("$segment_context")
            .or_insert(Value::Object(context));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn identify_maps_traits_and_anonymous_id() {
        let d = draft_from_batch_message(
            0,
            msg(
                json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                       "traits": {"email": "x@y"}, "messageId": "m1"}),
            ),
            None,
        )
        .unwrap();
        assert_eq!(d.event, Some(json!("$identify")));
        assert_eq!(d.distinct_id, Some(json!("u1")));
        assert_eq!(d.properties["$anon_distinct_id"], "a1");
        assert_eq!(d.person_set, Some(json!({"email": "x@y"})));
        assert_eq!(d.dedup_key.as_deref(), Some("m1"));
    }

    #[test]
    fn alias_group_page_screen() {
        let d = draft_from_batch_message(
            0,
            msg(json!({"type": "alias", "userId": "new", "previousId": "old"})),
            None,
        )
        .unwrap();
        assert_eq!(d.event, Some(json!("$create_alias")));
        assert_eq!(d.properties["alias"], "old");

        let e = draft_from_batch_message(0, msg(json!({"type": "alias", "userId": "new"})), None)
            .unwrap_err();
        assert_eq!(e.reason, RejectReason::InvalidField);

        let d = draft_from_batch_message(
            0,
            msg(json!({"type": "group", "userId": "u", "groupId": 42,
                       "traits": {"name": "Acme", "group_type": "org"}})),
            None,
        )
        .unwrap();
        assert_eq!(d.properties["$group_type"], "org");
        assert_eq!(d.properties["$group_key"], "42");
        assert_eq!(d.properties["$group_set"], json!({"name": "Acme"}));

        let d = draft_from_batch_message(
            0,
            msg(
                json!({"type": "page", "anonymousId": "a", "name": "Pricing",
                       "properties": {"url": "https://x.test/p"}}),
            ),
            None,
        )
        .unwrap();
        assert_eq!(d.event, Some(json!("$pageview")));
        assert_eq!(d.properties["$current_url"], "https://x.test/p");
        assert_eq!(d.properties["name"], "Pricing");

        let d = draft_from_batch_message(
            0,
            msg(json!({"type": "screen", "userId": "u", "name": "Home"})),
            None,
        )
        .unwrap();
        assert_eq!(d.properties["$screen_name"], "Home");

        let e = draft_from_batch_message(0, msg(json!({"type": "dance"})), None).unwrap_err();
        assert_eq!(e.reason, RejectReason::UnknownMessageType);
    }

    #[test]
    fn context_becomes_dollar_properties() {
        let batch_ctx = msg(json!({"library": {"name": "analytics-node", "version": "1.0"}}));
        let d = draft_from_batch_message(
            0,
            msg(json!({
                "type": "track", "event": "Signed Up", "userId": "u",
                "properties": {"$os": "Mine"},
                "context": {
                    "ip": "1.2.3.4", "userAgent": "UA",
                    "campaign": {"name": "spring", "source": "news"},
                    "os": {"name": "iOS", "version": "17"},
                    "device": {"model": "iPhone15,2", "advertisingId": "ad"},
                    "traits": {"plan": "pro"}
                }
            })),
            Some(&batch_ctx),
        )
        .unwrap();
        let p = &d.properties;
        assert_eq!(p["$ip"], "1.2.3.4");
        assert_eq!(p["$raw_user_agent"], "UA");
        assert_eq!(p["utm_campaign"], "spring");
        assert_eq!(p["utm_source"], "news");
        assert_eq!(p["$os"], "Mine", "message properties win");
        assert_eq!(p["$os_version"], "17");
        assert_eq!(p["$device_model"], "iPhone15,2");
        assert_eq!(p["$lib"], "analytics-node");
        assert_eq!(
            p["$segment_context"],
            json!({"device": {"advertisingId": "ad"}, "traits": {"plan": "pro"}})
        );
    }

    #[test]
    fn batch_split() {
        let s = split_request(
            json!({"writeKey": "wk", "batch": [{"type": "track"}], "sentAt": "2024-01-01T00:00:00Z"}),
            None,
        )
        .unwrap();
        assert_eq!(s.write_key.as_deref(), Some("wk"));
        assert_eq!(s.messages.len(), 1);
        assert!(s.sent_at.is_some());
        assert!(split_request(json!({"type": "track"}), None).is_err());
        let s =
            split_request(json!({"type": "identify", "event": "x"}), Some(Kind::Track)).unwrap();
        assert_eq!(s.messages[0]["type"], "track");
    }
}
