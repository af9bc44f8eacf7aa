//! The normalised event.
//!
//! PostHog, Segment, the native API and file imports are all translated into this one
//! shape at the edge, so the log, the store and the query layer know a single model.
//! The vocabulary is PostHog's (`$identify`, `$create_alias`, `$groupidentify`, `$set`,
//! `$set_once`), because it is the superset: Segment's `identify`, `alias` and `group`
//! calls map onto it one to one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::tenant::TenantId;

/// Event or person properties: a JSON object, in the order the client sent it.
pub type Properties = serde_json::Map<String, serde_json::Value>;

/// Event names with identity or group semantics.
pub mod names {
    pub const IDENTIFY: &str = "$identify";
    pub const CREATE_ALIAS: &str = "$create_alias";
    pub const GROUP_IDENTIFY: &str = "$groupidentify";
    pub const PAGEVIEW: &str = "$pageview";
    pub const SCREEN: &str = "$screen";
    /// Property on `$identify` naming the anonymous id being identified.
    pub const ANON_DISTINCT_ID: &str = "$anon_distinct_id";
    /// Property on `$create_alias` naming the id to alias.
    pub const ALIAS: &str = "alias";
    pub const GROUP_TYPE: &str = "$group_type";
    pub const GROUP_KEY: &str = "$group_key";
    pub const GROUP_SET: &str = "$group_set";
    /// Property added when an event's timestamp was clamped because it lay too far in
    /// the future; its value is the timestamp the client claimed.
    pub const CLAMPED_TIMESTAMP: &str = "$tally_clamped_timestamp";
}

/// One analytics event, validated and enriched, ready for the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The dedup key: the client's `uuid`, Segment `messageId` or `$insert_id`
    /// (hashed into a UUID when it is not one), or a generated UUIDv7.
    pub uuid: Uuid,
    /// The event name, e.g. `$pageview` or `signed_up`.
    pub event: String,
    pub distinct_id: String,
    /// When the event happened, after clock-skew correction (UTC microseconds).
    pub timestamp: i64,
    /// When the server received it (UTC microseconds).
    pub received_at: i64,
    /// Event properties, including server enrichment (`$ip`, `$browser`, `$lib`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: Properties,
    /// Person properties to set (`$set`, Segment identify traits).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub person_set: Properties,
    /// Person properties to set only if absent (`$set_once`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub person_set_once: Properties,
}

impl Event {
    /// The approximate in-memory size of the event, used for buffer accounting.
    pub fn approx_size(&self) -> usize {
        fn props(p: &Properties) -> usize {
            p.iter().map(|(k, v)| k.len() + value_size(v) + 16).sum()
        }
        64 + self.event.len()
            + self.distinct_id.len()
            + props(&self.properties)
            + props(&self.person_set)
            + props(&self.person_set_once)
    }
}

fn value_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len() + 8,
        serde_json::Value::Array(a) => a.iter().map(value_size).sum::<usize>() + 8,
        serde_json::Value::Object(o) => {
            o.iter()
                .map(|(k, v)| k.len() + value_size(v))
                .sum::<usize>()
                + 8
        }
        _ => 8,
    }
}

/// Events of one tenant that travel together: one WAL record, one acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub tenant: TenantId,
    pub events: Vec<Event>,
}

/// Derives a stable UUID from a client-supplied dedup key that is not itself a UUID
/// (Segment `messageId`s such as `ajs-next-...`, Mixpanel `$insert_id`s), so that a
/// resend with the same key dedups. UUIDv5 under a Tally-specific namespace.
pub fn uuid_from_dedup_key(tenant: TenantId, key: &str) -> Uuid {
    if let Ok(u) = Uuid::parse_str(key) {
        return u;
    }
    // Any fixed UUID serves as the namespace; this one is Tally's.
    const NAMESPACE: Uuid = Uuid::from_u128(0x7a11_7a11_5eed_4d0c_9b1e_0000_0000_0001);
    let mut name = Vec::with_capacity(key.len() + 4);
    name.extend_from_slice(&tenant.0.to_be_bytes());
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_key_uuid_is_stable_and_tenant_scoped() {
        let a = uuid_from_dedup_key(TenantId(1), "ajs-next-123");
        assert_eq!(a, uuid_from_dedup_key(TenantId(1), "ajs-next-123"));
        assert_ne!(a, uuid_from_dedup_key(TenantId(2), "ajs-next-123"));
        assert_ne!(a, uuid_from_dedup_key(TenantId(1), "ajs-next-124"));
        let real = "0190b5a4-6d2e-7c3b-8f00-000000000001";
        assert_eq!(uuid_from_dedup_key(TenantId(1), real).to_string(), real);
    }

    #[test]
    fn event_round_trips_through_json() {
        let mut properties = Properties::new();
        properties.insert("plan".into(), serde_json::json!("pro"));
        let e = Event {
            uuid: Uuid::nil(),
            event: "signed_up".into(),
            distinct_id: "u1".into(),
            timestamp: 1,
            received_at: 2,
            properties,
            person_set: Properties::new(),
            person_set_once: Properties::new(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            !text.contains("person_set"),
            "empty maps are omitted: {text}"
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
    }
}
