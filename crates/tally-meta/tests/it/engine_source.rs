//! `SqliteMeta` as the query engine's `tally_core::IdentitySource`: the same map and
//! persons as `PersonStore`, as text, with versions that move exactly when the
//! relation the engine caches changes.

use serde_json::json;
use tally_core::{IdentitySource, TenantId};
use tally_meta::{PersonStore, SqliteMeta};

use crate::{batch, identify, open_temp, pageview, set};

const T: TenantId = TenantId(1);

async fn versions(meta: &SqliteMeta, tenant: TenantId) -> (u64, u64) {
    let (map_version, _) = IdentitySource::distinct_id_map(meta, tenant).await.unwrap();
    // The cheap version agrees with the one the map comes with.
    assert_eq!(
        IdentitySource::identity_version(meta, tenant)
            .await
            .unwrap(),
        Some(map_version)
    );
    let persons_version = IdentitySource::persons_version(meta, tenant).await.unwrap();
    (map_version, persons_version)
}

#[tokio::test]
async fn the_engine_sees_the_person_store_as_text() {
    let (_dir, meta) = open_temp().await;
    assert_eq!(versions(&meta, T).await, (0, 0));
    assert_eq!(
        IdentitySource::persons(&meta, T).await.unwrap(),
        (0, vec![])
    );

    meta.apply_events(
        1,
        &[batch(
            1,
            vec![
                set("anon", json!({"plan": "free", "n": 1})),
                set("user", json!({"email": "u@x.io"})),
                identify("user", "anon"),
            ],
        )],
    )
    .await
    .unwrap();

    let (map_version, map) = IdentitySource::distinct_id_map(&meta, T).await.unwrap();
    let (store_version, store_map) = PersonStore::distinct_id_map(&meta, T).await.unwrap();
    assert_eq!(map_version, store_version);
    let as_text: Vec<(String, String)> = store_map
        .into_iter()
        .map(|(d, p)| (d, p.to_string()))
        .collect();
    assert_eq!(map, as_text);

    let (persons_version, persons) = IdentitySource::persons(&meta, T).await.unwrap();
    assert_eq!(
        persons_version,
        IdentitySource::persons_version(&meta, T).await.unwrap()
    );
    let expected = PersonStore::persons(&meta, T, None, 100).await.unwrap();
    assert_eq!(persons.len(), 1, "the anonymous person was merged away");
    assert_eq!(persons.len(), expected.len());
    for (record, person) in persons.iter().zip(&expected) {
        assert_eq!(record.person_id, person.id.to_string());
        assert_eq!(record.properties, person.properties);
        assert_eq!(record.created_at, person.created_at.timestamp_micros());
    }
    // Every mapped distinct id points at a person the engine can read.
    for (_, person) in &map {
        assert!(persons.iter().any(|p| &p.person_id == person), "{person}");
    }
    assert_eq!(persons[0].properties["email"], json!("u@x.io"));
}

#[tokio::test]
async fn versions_move_only_with_what_they_describe() {
    let (_dir, meta) = open_temp().await;
    meta.apply_events(1, &[batch(1, vec![set("a", json!({"plan": "free"}))])])
        .await
        .unwrap();
    let (map1, persons1) = versions(&meta, T).await;
    assert!(map1 > 0 && persons1 > 0);

    // No identity effects: nothing moves.
    meta.apply_events(2, &[batch(1, vec![pageview("a"), pageview("zz")])])
        .await
        .unwrap();
    assert_eq!(versions(&meta, T).await, (map1, persons1));

    // A property change moves the persons version only.
    meta.apply_events(3, &[batch(1, vec![set("a", json!({"plan": "pro"}))])])
        .await
        .unwrap();
    let (map2, persons2) = versions(&meta, T).await;
    assert_eq!(map2, map1);
    assert!(persons2 > persons1);
    let (_, persons) = IdentitySource::persons(&meta, T).await.unwrap();
    assert_eq!(persons[0].properties["plan"], json!("pro"));

    // A replayed position changes nothing.
    meta.apply_events(3, &[batch(1, vec![set("a", json!({"plan": "team"}))])])
        .await
        .unwrap();
    assert_eq!(versions(&meta, T).await, (map2, persons2));

    // Another tenant's changes are invisible here.
    meta.apply_events(4, &[batch(2, vec![set("a", json!({"plan": "x"}))])])
        .await
        .unwrap();
    assert_eq!(versions(&meta, T).await, (map2, persons2));
    let (_, other) = IdentitySource::persons(&meta, TenantId(2)).await.unwrap();
    let (_, mine) = IdentitySource::persons(&meta, T).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_ne!(other[0].person_id, mine[0].person_id);

    // A merge moves both.
    meta.apply_events(
        5,
        &[batch(
            1,
            vec![set("b", json!({"k": true})), identify("a", "b")],
        )],
    )
    .await
    .unwrap();
    let (map3, persons3) = versions(&meta, T).await;
    assert!(map3 > map2 && persons3 > persons2);
    let (_, persons) = IdentitySource::persons(&meta, T).await.unwrap();
    assert_eq!(persons.len(), 1);
}
