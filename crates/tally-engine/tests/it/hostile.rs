//! Hostile property keys and values go through the whole path: store columns, SQL
//! quoting, DataFusion's parser, results.

use std::sync::Arc;

use serde_json::json;
use tally_core::{Event, EventBatch, TenantId};
use tally_engine::{Engine, EngineConfig, IdentitySource, PersonRecord};
use tally_query::{BreakdownValue, TrendsQuery};
use tally_store::{EmbeddedStore, StoreConfig};

struct NoIdentities;

#[async_trait::async_trait]
impl IdentitySource for NoIdentities {
    async fn distinct_id_map(&self, _: TenantId) -> Result<(u64, Vec<(String, String)>), String> {
        Ok((0, Vec::new()))
    }
    async fn persons_version(&self, _: TenantId) -> Result<u64, String> {
        Ok(0)
    }
    async fn persons(&self, _: TenantId) -> Result<(u64, Vec<PersonRecord>), String> {
        Ok((0, Vec::new()))
    }
}

const KEYS: &[&str] = &[
    "it's",
    "a\"b",
    "back\\slash",
    "nul\0key",
    "日本 🎉",
    "prop:str:x",
];
const VALUE: &str = "v'; DROP TABLE x; -- \\ \" \0 ü";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_values_filter_and_break_down() {
    for flush in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(StoreConfig::new(dir.path()))
            .await
            .unwrap();
        let t0 = 1_704_103_200_000_000; // 2024-01-01T10:00Z
        let mut events = Vec::new();
        for (i, key) in KEYS.iter().enumerate() {
            let mut props = serde_json::Map::new();
            props.insert(key.to_string(), json!(VALUE));
            events.push(Event {
                uuid: uuid::Uuid::from_u128(i as u128 + 1),
                event: "e'\"\\".to_string(),
                distinct_id: format!("d{i}"),
                timestamp: t0 + i as i64,
                received_at: t0,
                properties: props,
                person_set: Default::default(),
                person_set_once: Default::default(),
            });
        }
        store
            .apply(
                1,
                &EventBatch {
                    tenant: TenantId(3),
                    events,
                },
            )
            .unwrap();
        if flush {
            store.flush().await.unwrap();
        }
        let engine = Engine::new(store, Arc::new(NoIdentities), EngineConfig::default());
        for key in KEYS {
            let q: TrendsQuery = serde_json::from_value(json!({
                "scope": {"tenant": 3},
                "date_range": {"type": "absolute", "from": "2024-01-01", "to": "2024-01-01"},
                "time_zone": "UTC",
                "series": [{"event": "e'\"\\", "filters": [
                    {"type": "property", "property": {"source": "event", "key": key}, "operator": "equals", "value": VALUE}]}],
                "breakdown": {"properties": [{"source": "event", "key": key}]}
            }))
            .unwrap();
            let r = engine.trends(&q, t0, None).await.unwrap();
            let rows = &r.current.series;
            assert_eq!(rows.len(), 1, "{key:?}: {rows:?}");
            assert_eq!(rows[0].values, vec![Some(1.0)], "{key:?}");
            assert_eq!(
                rows[0].breakdown,
                Some(BreakdownValue::Values {
                    values: vec![json!(VALUE)]
                }),
                "{key:?}"
            );
        }
    }
}
