//! Integration tests of `tally-meta` through its public API, on real SQLite files.

mod engine_source;
mod model;
mod persons;
mod tenants;

use serde_json::{Value, json};
use tally_core::{Event, EventBatch, Properties, TenantId};
use tally_meta::SqliteMeta;
use tempfile::TempDir;
use uuid::Uuid;

pub async fn open_temp() -> (TempDir, SqliteMeta) {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMeta::open(&dir.path().join("meta.db")).await.unwrap();
    (dir, meta)
}

fn object(value: Value) -> Properties {
    value.as_object().cloned().unwrap_or_default()
}

pub fn event(name: &str, distinct_id: &str) -> Event {
    Event {
        uuid: Uuid::now_v7(),
        event: name.into(),
        distinct_id: distinct_id.into(),
        timestamp: 1_700_000_000_000_000,
        received_at: 1_700_000_000_000_000,
        properties: Properties::new(),
        person_set: Properties::new(),
        person_set_once: Properties::new(),
    }
}

pub fn pageview(distinct_id: &str) -> Event {
    event("$pageview", distinct_id)
}

pub fn identify(distinct_id: &str, anon: &str) -> Event {
    let mut e = event("$identify", distinct_id);
    e.properties = object(json!({ "$anon_distinct_id": anon }));
    e
}

pub fn alias(distinct_id: &str, alias: &str) -> Event {
    let mut e = event("$create_alias", distinct_id);
    e.properties = object(json!({ "alias": alias }));
    e
}

pub fn set(distinct_id: &str, props: Value) -> Event {
    let mut e = event("signed_up", distinct_id);
    e.person_set = object(props);
    e
}

pub fn set_once(distinct_id: &str, props: Value) -> Event {
    let mut e = event("signed_up", distinct_id);
    e.person_set_once = object(props);
    e
}

pub fn unset(distinct_id: &str, keys: &[&str]) -> Event {
    let mut e = event("settings_changed", distinct_id);
    e.properties = object(json!({ "$unset": keys }));
    e
}

pub fn group_identify(distinct_id: &str, group_type: &str, key: Value, props: Value) -> Event {
    let mut e = event("$groupidentify", distinct_id);
    e.properties = object(json!({
        "$group_type": group_type,
        "$group_key": key,
        "$group_set": props,
    }));
    e
}

pub fn batch(tenant: u32, events: Vec<Event>) -> EventBatch {
    EventBatch {
        tenant: TenantId(tenant),
        events,
    }
}
