use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_core::{Event, EventBatch, TenantId};
use tally_engine::{Engine, EngineConfig, IdentitySource, PersonRecord};
use tally_query::reference::{self, RefEvent};
use tally_query::testgen::{self, GenConfig};
use tally_query::{Filter, Math, PropertySource, TrendsQuery, TrendsResult};
use tally_store::{EmbeddedStore, StoreConfig};

/// Identities and persons of generated events: the map of merged distinct ids and,
/// per tenant, every person with the properties the events carry.
pub(crate) struct MapIdentities {
    pub maps: BTreeMap<TenantId, Vec<(String, String)>>,
    pub persons: BTreeMap<TenantId, Vec<PersonRecord>>,
}

#[async_trait::async_trait]
impl IdentitySource for MapIdentities {
    async fn distinct_id_map(
        &self,
        tenant: TenantId,
    ) -> Result<(u64, Vec<(String, String)>), String> {
        Ok((1, self.maps.get(&tenant).cloned().unwrap_or_default()))
    }
    async fn persons_version(&self, _: TenantId) -> Result<u64, String> {
        Ok(1)
    }
    async fn persons(&self, tenant: TenantId) -> Result<(u64, Vec<PersonRecord>), String> {
        Ok((1, self.persons.get(&tenant).cloned().unwrap_or_default()))
    }
}

/// Group properties: the store does not index groups, so the compiler refuses them.
fn uses_unsupported_source(q: &TrendsQuery) -> bool {
    let bad = |f: &Filter| {
        f.predicates()
            .iter()
            .any(|p| p.property.source == PropertySource::Group)
    };
    q.filters.iter().any(bad)
        || q.series.iter().any(|s| {
            s.filters.iter().any(bad)
                || matches!(&s.math, Math::Property { property, .. } if property.source == PropertySource::Group)
        })
        || q.breakdown
            .as_ref()
            .is_some_and(|b| b.properties.iter().any(|p| p.source == PropertySource::Group))
}

/// The runtime the property tests drive the engine on: two workers, as the
/// server's default partitions.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn engine_for(events: &[RefEvent], flush: bool, dir: &std::path::Path) -> Engine {
    engine_with_store(events, flush, StoreConfig::new(dir)).await
}

/// [`engine_for`] with a chosen store configuration (e.g. fewer materialised keys).
pub(crate) async fn engine_with_store(
    events: &[RefEvent],
    flush: bool,
    config: StoreConfig,
) -> Engine {
    let store = EmbeddedStore::open(config).await.unwrap();
    let mut by_tenant: BTreeMap<TenantId, Vec<Event>> = BTreeMap::new();
    let mut identities: BTreeMap<TenantId, BTreeMap<String, String>> = BTreeMap::new();
    let mut persons: BTreeMap<TenantId, BTreeMap<String, PersonRecord>> = BTreeMap::new();
    for e in events {
        persons
            .entry(e.tenant)
            .or_default()
            .entry(e.person_id.clone())
            .or_insert_with(|| PersonRecord {
                person_id: e.person_id.clone(),
                properties: e.person_properties.clone(),
                created_at: 0,
            });
        by_tenant.entry(e.tenant).or_default().push(Event {
            uuid: e.uuid,
            event: e.event.clone(),
            distinct_id: e.distinct_id.clone(),
            timestamp: e.timestamp,
            received_at: e.timestamp,
            properties: e.properties.clone(),
            person_set: Default::default(),
            person_set_once: Default::default(),
        });
        if e.person_id != e.distinct_id {
            identities
                .entry(e.tenant)
                .or_default()
                .insert(e.distinct_id.clone(), e.person_id.clone());
        }
    }
    for (lsn, (tenant, events)) in by_tenant.into_iter().enumerate() {
        store
            .apply(lsn as u64 + 1, &EventBatch { tenant, events })
            .unwrap();
    }
    if flush {
        store.flush().await.unwrap();
    }
    let identities = identities
        .into_iter()
        .map(|(t, m)| (t, m.into_iter().collect()))
        .collect();
    let persons = persons
        .into_iter()
        .map(|(t, p)| (t, p.into_values().collect()))
        .collect();
    Engine::new(
        store,
        Arc::new(MapIdentities {
            maps: identities,
            persons,
        }),
        EngineConfig::default(),
    )
}

/// Shrinking can give one distinct id two persons, or one person two sets of
/// properties, which no identity map or persons table can express.
pub(crate) fn consistent_identities(events: &[RefEvent]) -> bool {
    let mut seen: BTreeMap<(TenantId, &str), &str> = BTreeMap::new();
    let mut persons: BTreeMap<(TenantId, &str), &tally_core::Properties> = BTreeMap::new();
    events.iter().all(|e| {
        *seen
            .entry((e.tenant, e.distinct_id.as_str()))
            .or_insert(e.person_id.as_str())
            == e.person_id
            && *persons
                .entry((e.tenant, e.person_id.as_str()))
                .or_insert(&e.person_properties)
                == &e.person_properties
    })
}

pub(crate) fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

fn assert_same(engine: &TrendsResult, reference: &TrendsResult) -> Result<(), String> {
    let periods = [(&engine.current, &reference.current)]
        .into_iter()
        .chain(engine.previous.iter().zip(reference.previous.iter()));
    if engine.previous.is_some() != reference.previous.is_some() {
        return Err("previous period presence differs".into());
    }
    for (e, r) in periods {
        if e.buckets != r.buckets {
            return Err(format!(
                "buckets differ: {:?} vs {:?}",
                e.buckets, r.buckets
            ));
        }
        let rows = |p: &tally_query::trends::TrendsPeriod| {
            p.series
                .iter()
                .chain(p.formula.iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        };
        let (er, rr) = (rows(e), rows(r));
        if er.len() != rr.len() {
            return Err(format!(
                "row count differs:\nengine {er:#?}\nreference {rr:#?}"
            ));
        }
        for (x, y) in er.iter().zip(&rr) {
            let same = x.series == y.series
                && x.label == y.label
                && x.breakdown == y.breakdown
                && x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(a, b)| close(*a, *b));
            if !same {
                return Err(format!("row differs:\nengine    {x:?}\nreference {y:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn trends_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        testgen::trends_query(&cfg),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(events, query, flush)| {
            prop_assume!(!uses_unsupported_source(&query));
            // Shrinking can give one distinct id two persons, which no identity map
            // can express.
            prop_assume!(consistent_identities(&events));
            let expected = reference::trends::trends(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                engine.trends(&query, ctx.now, Some(&cfg.time_zone)).await
            });
            let actual = actual.map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
            assert_same(&actual, &expected).map_err(|m| {
                TestCaseError::fail(format!(
                    "{m}\nquery: {}",
                    serde_json::to_string(&query).unwrap()
                ))
            })
        })
        .unwrap();
}

/// A property value of the grouped-path cases: unset, null, and the same key sent
/// as a string, a number, a boolean and an array (whose canonical value is its JSON
/// text, equal to the string `["a"]`).
fn mixed_value() -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::json;
    prop_oneof![
        Just(None),
        Just(Some(json!(null))),
        Just(Some(json!("pro"))),
        Just(Some(json!("free"))),
        Just(Some(json!("1"))),
        Just(Some(json!(1))),
        Just(Some(json!(1.0))),
        Just(Some(json!(true))),
        Just(Some(json!(["a"]))),
        Just(Some(json!("[\"a\"]"))),
    ]
}

/// Amounts: numbers, numeric and other strings, booleans, null, unset.
fn amount_value() -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::json;
    prop_oneof![
        Just(None),
        Just(Some(json!(null))),
        Just(Some(json!(3))),
        Just(Some(json!(-1.5))),
        Just(Some(json!(0.1))),
        Just(Some(json!("4"))),
        Just(Some(json!("abc"))),
        Just(Some(json!(false))),
    ]
}

/// Events of tenant 1 over the generated period and the one before it (so that
/// `compare` has a previous period with data).
fn grouped_events(cfg: &GenConfig) -> impl Strategy<Value = Vec<RefEvent>> {
    let range = cfg.range();
    let start = range.start - (range.end - range.start);
    let end = range.end;
    let event = (
        prop_oneof![Just("a"), Just("b")],
        0usize..4,
        start..end,
        mixed_value(),
        prop_oneof![Just(None), Just(Some("mac")), Just(Some("win"))],
        amount_value(),
    );
    prop::collection::vec(event, 0..60).prop_map(|events| {
        events
            .into_iter()
            .enumerate()
            .map(|(i, (name, user, timestamp, plan, os, amount))| {
                let mut properties = tally_core::Properties::new();
                if let Some(v) = plan {
                    properties.insert("plan".into(), v);
                }
                if let Some(v) = os {
                    properties.insert("os".into(), serde_json::json!(v));
                }
                if let Some(v) = amount {
                    properties.insert("amount".into(), v);
                }
                RefEvent {
                    tenant: TenantId(1),
                    uuid: uuid::Uuid::from_u128(0x6000 + i as u128),
                    event: name.to_string(),
                    distinct_id: format!("u{user}"),
                    person_id: format!("u{user}"),
                    timestamp,
                    properties,
                    person_properties: Default::default(),
                    groups: Default::default(),
                }
            })
            .collect()
    })
}

/// Breakdown queries whose every series folds: total, sum, avg, min, max, by one or
/// two properties, with a small limit so that "other" appears, and `compare`.
fn grouped_query(cfg: &GenConfig) -> impl Strategy<Value = TrendsQuery> {
    use tally_query::{
        Breakdown, Interval, PropertyAggregation, PropertyRef, Scope, TrendsSeries, WeekStart,
    };
    let math = prop_oneof![
        Just(Math::Total),
        (
            prop_oneof![
                Just(PropertyAggregation::Sum),
                Just(PropertyAggregation::Avg),
                Just(PropertyAggregation::Min),
                Just(PropertyAggregation::Max),
            ],
            prop_oneof![3 => Just("amount"), 1 => Just("plan")],
        )
            .prop_map(|(aggregation, key)| Math::Property {
                aggregation,
                property: PropertyRef::event(key),
            }),
    ];
    let series = (
        prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))],
        math,
    )
        .prop_map(|(event, math)| TrendsSeries {
            event: event.map(String::from),
            filters: Vec::new(),
            math,
            label: None,
        });
    let date_range = cfg.date_range();
    (
        prop::collection::vec(series, 1..=3),
        prop_oneof![Just(Interval::Day), Just(Interval::Week)],
        any::<bool>(),
        1u32..=4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(series, interval, two_properties, limit, compare, formula)| {
                let mut properties = vec![PropertyRef::event("plan")];
                if two_properties {
                    properties.push(PropertyRef::event("os"));
                }
                TrendsQuery {
                    scope: Scope::Tenant(TenantId(1)),
                    date_range: date_range.clone(),
                    interval,
                    time_zone: None,
                    week_start: WeekStart::Monday,
                    filters: Vec::new(),
                    formula: (formula && series.len() >= 2).then(|| "A + B * 2".to_string()),
                    series,
                    breakdown: Some(Breakdown { properties, limit }),
                    compare,
                }
            },
        )
}

/// The grouped path (every series folds) and the three-statement path it falls back
/// to past its row budget both match the reference, and each other.
#[test]
fn grouped_breakdowns_match_the_reference_and_the_statements() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    // Cases that had an "other" row and a previous period: the generator must reach
    // them for the comparison to mean anything.
    let with_other = std::sync::atomic::AtomicUsize::new(0);
    let compared = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        grouped_events(&cfg),
        grouped_query(&cfg),
        any::<bool>(),
        // The fallback budget: none at all, or exhausted part-way through the
        // grouped statements.
        prop_oneof![Just(0usize), 1usize..20],
    );
    runner
        .run(&strategy, |(events, query, flush, budget)| {
            let expected = reference::trends::trends(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let (grouped, statements) = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                let grouped = engine.trends(&query, ctx.now, Some(&cfg.time_zone)).await;
                let engine = engine.with_trends_grouped_row_limit(budget);
                let statements = engine.trends(&query, ctx.now, Some(&cfg.time_zone)).await;
                (grouped, statements)
            });
            let fail = |path: &str, m: String| {
                TestCaseError::fail(format!(
                    "{path}: {m}\nquery: {}",
                    serde_json::to_string(&query).unwrap()
                ))
            };
            let grouped = grouped.map_err(|e| fail("grouped", e.to_string()))?;
            let statements = statements.map_err(|e| fail("fallback", e.to_string()))?;
            assert_same(&grouped, &expected).map_err(|m| fail("grouped", m))?;
            assert_same(&statements, &expected).map_err(|m| fail("fallback", m))?;
            assert_same(&grouped, &statements).map_err(|m| fail("grouped vs fallback", m))?;
            let other = Some(tally_query::BreakdownValue::Other);
            if grouped.current.series.iter().any(|r| r.breakdown == other) {
                with_other.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if grouped
                .previous
                .as_ref()
                .is_some_and(|p| !p.series.is_empty())
            {
                compared.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert!(
        with_other.into_inner() > 5,
        "too few cases with an other row"
    );
    assert!(
        compared.into_inner() > 5,
        "too few cases with a previous period"
    );
}

/// An identity map that changes between queries.
struct ChangingIdentities(parking_lot::Mutex<(u64, Vec<(String, String)>)>);

#[async_trait::async_trait]
impl IdentitySource for ChangingIdentities {
    async fn distinct_id_map(
        &self,
        _tenant: TenantId,
    ) -> Result<(u64, Vec<(String, String)>), String> {
        Ok(self.0.lock().clone())
    }
    async fn persons_version(&self, _: TenantId) -> Result<u64, String> {
        Ok(1)
    }
    async fn persons(&self, _: TenantId) -> Result<(u64, Vec<PersonRecord>), String> {
        Ok((1, Vec::new()))
    }
}

/// Person keys are cached per identity-map version and extended as the store numbers
/// new distinct ids: persons arriving after a query, and merges after it, count.
#[test]
fn unique_persons_follow_new_distinct_ids_and_new_identity_versions() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(StoreConfig::new(dir.path()))
            .await
            .unwrap();
        let identities = Arc::new(ChangingIdentities(parking_lot::Mutex::new((
            1,
            vec![("anon-b".to_string(), "alice".to_string())],
        ))));
        let engine = Engine::new(store.clone(), identities.clone(), EngineConfig::default());
        let now = tally_core::time::now_micros();
        let mut lsn = 0;
        let mut send = |ids: &[&str]| {
            lsn += 1;
            let events = ids
                .iter()
                .map(|id| Event {
                    uuid: uuid::Uuid::new_v4(),
                    event: "$pageview".into(),
                    distinct_id: id.to_string(),
                    timestamp: now - 60_000_000,
                    received_at: now,
                    properties: Default::default(),
                    person_set: Default::default(),
                    person_set_once: Default::default(),
                })
                .collect();
            let batch = EventBatch {
                tenant: TenantId(1),
                events,
            };
            store.apply(lsn, &batch).unwrap();
        };
        let query: TrendsQuery = serde_json::from_str(
            r#"{"scope":{"tenant":1},"date_range":{"type":"last","count":1,"unit":"day"},
                "interval":"day","series":[{"event":"$pageview","math":{"type":"unique_persons"}}]}"#,
        )
        .unwrap();
        let persons = |result: TrendsResult| -> f64 {
            result.current.series[0].values.iter().flatten().sum()
        };

        send(&["alice", "anon-b", "bob"]);
        assert_eq!(persons(engine.trends(&query, now, None).await.unwrap()), 2.0);
        // New ids, same identity version: the cached keys are extended.
        send(&["carol", "anon-d", "bob"]);
        assert_eq!(persons(engine.trends(&query, now, None).await.unwrap()), 4.0);
        store.flush().await.unwrap();
        assert_eq!(persons(engine.trends(&query, now, None).await.unwrap()), 4.0);
        // A merge (new version): anon-d is carol.
        *identities.0.lock() = (
            2,
            vec![
                ("anon-b".to_string(), "alice".to_string()),
                ("anon-d".to_string(), "carol".to_string()),
            ],
        );
        assert_eq!(persons(engine.trends(&query, now, None).await.unwrap()), 3.0);
        send(&["dave"]);
        assert_eq!(persons(engine.trends(&query, now, None).await.unwrap()), 4.0);
    });
}
