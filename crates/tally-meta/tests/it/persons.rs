//! Persons, identity and groups through `PersonStore`, on SQLite.

use serde_json::json;
use tally_core::TenantId;
use tally_meta::{Error, Person, PersonStore, SqliteMeta};

use crate::{alias, batch, group_identify, identify, open_temp, pageview, set, set_once, unset};

const T: TenantId = TenantId(1);

async fn person(meta: &SqliteMeta, distinct_id: &str) -> Person {
    meta.person_for_distinct_id(T, distinct_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no person for {distinct_id}"))
}

/// Everything observable about a tenant's identity state, for before/after equality.
async fn dump(
    meta: &SqliteMeta,
    tenant: TenantId,
) -> (Vec<Person>, u64, Vec<(String, uuid::Uuid)>) {
    let persons = meta.persons(tenant, None, 10_000).await.unwrap();
    let (version, map) = meta.distinct_id_map(tenant).await.unwrap();
    (persons, version, map)
}

#[tokio::test]
async fn plain_events_create_no_persons() {
    let (_dir, meta) = open_temp().await;
    let stats = meta
        .apply_events(
            1,
            &[batch(
                1,
                vec![pageview("a"), pageview("b"), unset("a", &["x"])],
            )],
        )
        .await
        .unwrap();
    assert_eq!(stats.events, 3);
    assert_eq!(stats.persons_created, 0);
    assert!(meta.persons(T, None, 100).await.unwrap().is_empty());
    assert_eq!(meta.distinct_id_map(T).await.unwrap(), (0, vec![]));
    assert_eq!(meta.applied_lsn().await.unwrap(), 1);
}

#[tokio::test]
async fn identify_merges_the_anonymous_person_into_the_user() {
    let (_dir, meta) = open_temp().await;
    // Call 1: an anonymous visitor and, separately, the logged-in user.
    meta.apply_events(
        1,
        &[batch(
            1,
            vec![
                set_once(
                    "anon-1",
                    json!({"initial_referrer": "google", "plan": "free"}),
                ),
                set("user-1", json!({"email": "ada@example.com", "plan": "pro"})),
            ],
        )],
    )
    .await
    .unwrap();
    let anon_before = person(&meta, "anon-1").await;
    let user_before = person(&meta, "user-1").await;
    assert_ne!(anon_before.id, user_before.id);
    let (version_before, _) = meta.distinct_id_map(T).await.unwrap();

    // Call 2: the visitor logs in. Both persons are stored: a stored merge.
    let stats = meta
        .apply_events(2, &[batch(1, vec![identify("user-1", "anon-1")])])
        .await
        .unwrap();
    assert_eq!((stats.merges, stats.refused_merges), (1, 0));

    let merged = person(&meta, "anon-1").await;
    assert_eq!(
        merged.id, user_before.id,
        "the identified user's person survives"
    );
    assert_eq!(merged.distinct_ids, ["anon-1", "user-1"]);
    assert!(merged.is_identified);
    assert_eq!(
        merged.properties["plan"],
        json!("pro"),
        "the survivor's values win"
    );
    assert_eq!(merged.properties["initial_referrer"], json!("google"));
    assert_eq!(merged.properties["email"], json!("ada@example.com"));

    // The merged-away id still resolves, and the map moved with a new version.
    assert_eq!(
        meta.person_by_id(T, anon_before.id).await.unwrap(),
        Some(merged.clone())
    );
    let (version, map) = meta.distinct_id_map(T).await.unwrap();
    assert!(version > version_before);
    assert_eq!(meta.identity_version(T).await.unwrap(), version);
    assert_eq!(
        map,
        vec![("anon-1".into(), merged.id), ("user-1".into(), merged.id)]
    );
    assert_eq!(meta.persons(T, None, 100).await.unwrap(), vec![merged]);
}

#[tokio::test]
async fn merge_chains_resolve_to_the_final_survivor() {
    let (_dir, meta) = open_temp().await;
    meta.apply_events(
        1,
        &[batch(
            1,
            vec![set("a", json!({"n": 1})), set("b", json!({"m": 2}))],
        )],
    )
    .await
    .unwrap();
    let a = person(&meta, "a").await.id;
    let b = person(&meta, "b").await.id;
    // b's person absorbs a's; later d's person absorbs b's (which holds a).
    meta.apply_events(2, &[batch(1, vec![alias("b", "a")])])
        .await
        .unwrap();
    meta.apply_events(3, &[batch(1, vec![set("d", json!({"o": 3}))])])
        .await
        .unwrap();
    let d = person(&meta, "d").await.id;
    meta.apply_events(4, &[batch(1, vec![alias("d", "b")])])
        .await
        .unwrap();

    let survivor = person(&meta, "a").await;
    assert_eq!(survivor.id, d);
    assert_eq!(survivor.distinct_ids, ["a", "b", "d"]);
    assert_eq!(survivor.properties.len(), 3);
    assert!(!survivor.is_identified, "aliasing does not identify");
    for merged_away in [a, b] {
        assert_eq!(
            meta.person_by_id(T, merged_away)
                .await
                .unwrap()
                .map(|p| p.id),
            Some(d)
        );
    }
    assert_eq!(meta.persons(T, None, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn two_identified_persons_are_never_merged() {
    let (_dir, meta) = open_temp().await;
    let stats = meta
        .apply_events(
            1,
            &[batch(
                1,
                vec![
                    identify("alice", "anon-a"),
                    identify("bob", "anon-b"),
                    // Bob's device is later used by Alice: refused, not merged.
                    identify("alice", "bob"),
                    alias("alice", "anon-b"),
                ],
            )],
        )
        .await
        .unwrap();
    assert_eq!(stats.refused_merges, 2);
    assert_eq!(stats.merges, 0);
    let alice = person(&meta, "alice").await;
    let bob = person(&meta, "bob").await;
    assert_ne!(alice.id, bob.id);
    assert_eq!(alice.distinct_ids, ["alice", "anon-a"]);
    assert_eq!(bob.distinct_ids, ["anon-b", "bob"]);
}

#[tokio::test]
async fn identify_attaches_an_unknown_id_to_the_known_person() {
    let (_dir, meta) = open_temp().await;
    meta.apply_events(
        1,
        &[batch(
            1,
            vec![
                // Only the anonymous id has a person: the user id joins it.
                set("visitor", json!({"x": 1})),
                identify("user", "visitor"),
                // Only the user has a person now: a second device joins it.
                identify("user", "anon-2"),
                // Neither id known: one new person for both.
                alias("p", "q"),
                // Denylisted or self-referencing other ids just ensure the person.
                identify("solo", "undefined"),
                identify("self", "self"),
            ],
        )],
    )
    .await
    .unwrap();
    let user = person(&meta, "user").await;
    assert_eq!(user.distinct_ids, ["anon-2", "user", "visitor"]);
    assert!(user.is_identified);
    let p = person(&meta, "q").await;
    assert_eq!(p.distinct_ids, ["p", "q"]);
    assert!(!p.is_identified);
    assert_eq!(person(&meta, "solo").await.distinct_ids, ["solo"]);
    assert!(person(&meta, "self").await.is_identified);
    assert_eq!(
        meta.person_for_distinct_id(T, "undefined").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn property_updates_apply_in_event_order() {
    let (_dir, meta) = open_temp().await;
    let mut both = set("u", json!({"k": "set"}));
    both.person_set_once = json!({"k": "once", "first": "once"})
        .as_object()
        .cloned()
        .unwrap();
    meta.apply_events(
        1,
        &[batch(
            1,
            vec![
                set_once("u", json!({"source": "ad", "gone": 1})),
                set_once("u", json!({"source": "seo"})),
                set("u", json!({"plan": "free"})),
                set("u", json!({"plan": "pro"})),
                unset("u", &["gone", "never-there"]),
                both,
            ],
        )],
    )
    .await
    .unwrap();
    let u = person(&meta, "u").await;
    assert_eq!(
        serde_json::Value::Object(u.properties),
        json!({"source": "ad", "plan": "pro", "k": "set", "first": "once"})
    );
}

#[tokio::test]
async fn denylisted_distinct_ids_are_ignored() {
    let (_dir, meta) = open_temp().await;
    let stats = meta
        .apply_events(
            1,
            &[batch(
                1,
                vec![
                    set("null", json!({"x": 1})),
                    identify("undefined", "visitor"),
                    alias("u", "  Anonymous "),
                ],
            )],
        )
        .await
        .unwrap();
    assert_eq!(stats.ignored_denylisted, 3);
    let (_, map) = meta.distinct_id_map(T).await.unwrap();
    assert_eq!(map.len(), 1, "only `u` has a person: {map:?}");
    assert_eq!(person(&meta, "u").await.distinct_ids, ["u"]);
}

#[tokio::test]
async fn tenants_never_see_each_others_persons_or_groups() {
    let (_dir, meta) = open_temp().await;
    let (t1, t2) = (TenantId(1), TenantId(2));
    meta.apply_events(
        1,
        &[
            batch(
                1,
                vec![
                    set("visitor", json!({"t": 1})),
                    set("user", json!({"u": 1})),
                ],
            ),
            batch(
                2,
                vec![set("visitor", json!({"t": 2})), identify("user", "visitor")],
            ),
            batch(
                1,
                vec![group_identify(
                    "user",
                    "company",
                    json!("acme"),
                    json!({"n": 1}),
                )],
            ),
            batch(
                2,
                vec![group_identify(
                    "user",
                    "team",
                    json!("acme"),
                    json!({"n": 2}),
                )],
            ),
        ],
    )
    .await
    .unwrap();
    // In tenant 2, user and anon are one person; in tenant 1 they stay apart.
    let one_anon = meta
        .person_for_distinct_id(t1, "visitor")
        .await
        .unwrap()
        .unwrap();
    let one_user = meta
        .person_for_distinct_id(t1, "user")
        .await
        .unwrap()
        .unwrap();
    let two_anon = meta
        .person_for_distinct_id(t2, "visitor")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(one_anon.id, one_user.id);
    assert_eq!(one_anon.distinct_ids, ["visitor"]);
    assert_eq!(one_anon.properties["t"], json!(1));
    assert_eq!(two_anon.distinct_ids, ["user", "visitor"]);
    assert_eq!(two_anon.properties["t"], json!(2));
    assert!(!two_anon.properties.contains_key("u"));

    // No cross-tenant resolution by person id either.
    assert_eq!(meta.person_by_id(t2, one_anon.id).await.unwrap(), None);
    assert_eq!(meta.persons(t1, None, 100).await.unwrap().len(), 2);
    assert_eq!(meta.persons(t2, None, 100).await.unwrap().len(), 1);
    let (_, map2) = meta.distinct_id_map(t2).await.unwrap();
    assert!(map2.iter().all(|(_, p)| *p == two_anon.id));

    assert_eq!(meta.group_types(t1).await.unwrap(), ["company"]);
    assert_eq!(meta.group_types(t2).await.unwrap(), ["team"]);
    assert!(meta.group(t2, "company", "acme").await.unwrap().is_none());
    assert!(
        meta.persons(TenantId(3), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn replaying_an_applied_lsn_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let meta = SqliteMeta::open(&path).await.unwrap();
    let events = vec![
        set("visitor", json!({"a": 1})),
        set("user", json!({"u": 1})),
        identify("user", "visitor"),
        set("user", json!({"a": 2})),
        group_identify("user", "company", json!(7), json!({"n": 1})),
    ];
    let first = meta
        .apply_events(5, &[batch(1, events.clone())])
        .await
        .unwrap();
    assert!(!first.already_applied);
    assert_eq!(first.merges, 1);
    let before = dump(&meta, T).await;
    let group_before = meta.group(T, "company", "7").await.unwrap();

    // The crash-replay case: same records, same LSN, even from a reopened store.
    meta.close().await;
    let meta = SqliteMeta::open(&path).await.unwrap();
    assert_eq!(meta.applied_lsn().await.unwrap(), 5);
    for lsn in [5, 3] {
        let again = meta
            .apply_events(lsn, &[batch(1, events.clone())])
            .await
            .unwrap();
        assert!(again.already_applied);
        assert_eq!((again.persons_created, again.merges), (0, 0));
    }
    assert_eq!(dump(&meta, T).await, before);
    assert_eq!(meta.group(T, "company", "7").await.unwrap(), group_before);
    assert_eq!(meta.applied_lsn().await.unwrap(), 5);

    // LSN 0 precedes every record: fine with nothing, an error with events.
    assert!(meta.apply_events(0, &[]).await.unwrap().already_applied);
    let err = meta.apply_events(0, &[batch(1, events)]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidLsn { lsn: 0, .. }), "{err}");
    let err = meta.apply_events(u64::MAX, &[]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidLsn { .. }), "{err}");
}

#[tokio::test]
async fn groups_merge_properties_and_keep_type_order() {
    let (_dir, meta) = open_temp().await;
    meta.apply_events(
        1,
        &[batch(
            1,
            vec![
                group_identify(
                    "u",
                    "company",
                    json!("acme"),
                    json!({"name": "Acme", "size": 10}),
                ),
                group_identify("u", "project", json!(42), json!({})),
                group_identify("u", "company", json!("acme"), json!({"size": 12})),
                group_identify("u", "company", json!("beta"), json!(null)),
            ],
        )],
    )
    .await
    .unwrap();
    meta.apply_events(
        2,
        &[batch(
            1,
            vec![group_identify("u", "team", json!("core"), json!({}))],
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        meta.group_types(T).await.unwrap(),
        ["company", "project", "team"]
    );
    let acme = meta.group(T, "company", "acme").await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(acme.properties),
        json!({"name": "Acme", "size": 12})
    );
    assert!(meta.group(T, "project", "42").await.unwrap().is_some());
    let page = meta.groups(T, "company", None, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].key, "acme");
    let rest = meta.groups(T, "company", Some("acme"), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|g| g.key.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );
    // Groups do not create persons.
    assert_eq!(meta.person_for_distinct_id(T, "u").await.unwrap(), None);
}

#[tokio::test]
async fn persons_page_through_with_a_cursor_and_large_batches_work() {
    let (_dir, meta) = open_temp().await;
    // Enough ids to need several statements per lookup.
    let events: Vec<_> = (0..1_300)
        .map(|i| identify(&format!("user-{i}"), &format!("anon-{i}")))
        .collect();
    let stats = meta.apply_events(1, &[batch(1, events)]).await.unwrap();
    assert_eq!(stats.persons_created, 1_300);
    // The same ids again, all already known: loaded in chunks, nothing new.
    let events: Vec<_> = (0..1_300)
        .map(|i| set(&format!("anon-{i}"), json!({"i": i})))
        .collect();
    let stats = meta.apply_events(2, &[batch(1, events)]).await.unwrap();
    assert_eq!(stats.persons_created, 0);

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = meta.persons(T, cursor, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 1_300);
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        seen.iter()
            .all(|p| p.distinct_ids.len() == 2 && p.properties.len() == 1)
    );
    assert!(meta.persons(T, None, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn unlogged_bulk_apply_changes_persons_but_not_the_watermark() {
    let (_dir, meta) = open_temp().await;
    meta.apply_events(5, &[batch(1, vec![set("u0", json!({"plan": "free"}))])])
        .await
        .unwrap();
    let stats = meta
        .apply_unlogged(&[batch(
            1,
            vec![identify("u1", "anon-1"), set("u1", json!({"plan": "pro"}))],
        )])
        .await
        .unwrap();
    assert_eq!(stats.events_with_effects, 2);
    assert_eq!(
        meta.applied_lsn().await.unwrap(),
        5,
        "bulk loads leave the log position alone"
    );
    let p = person(&meta, "anon-1").await;
    assert_eq!(p.distinct_ids, vec!["anon-1".to_string(), "u1".to_string()]);
    assert_eq!(p.properties["plan"], json!("pro"));
    // Logged applies continue from the watermark as before.
    let s = meta
        .apply_events(6, &[batch(1, vec![set("u1", json!({"seen": true}))])])
        .await
        .unwrap();
    assert!(!s.already_applied);
}
