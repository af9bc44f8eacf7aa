//! Events, persons and schema queries against the reference (events, schema) or a
//! brute-force listing (persons), on generated event sets; the persons cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use tally_core::{Classify, ErrorClass, Event, EventBatch, PersonRecord, Properties, TenantId};
use tally_engine::{Engine, EngineConfig, IdentitySource};
use tally_query::reference::{self, RefContext, RefEvent};
use tally_query::schema::SchemaRequest;
use tally_query::testgen::{self, GenConfig};
use tally_query::{
    DateRange, EventsQuery, Filter, FilterValue, Math, Operator, PersonsQuery, PropertyRef,
    PropertySource, RangeUnit, Scalar, SchemaQuery, Scope, TenantSelector, TrendsQuery,
    TrendsSeries, WeekStart,
};
use tally_store::{EmbeddedStore, StoreConfig};

use crate::trends::{consistent_identities, engine_for, engine_with_store, runtime};

fn no_group(f: &Filter) -> bool {
    f.predicates()
        .iter()
        .all(|p| p.property.source != PropertySource::Group)
}

fn date_range(cfg: &GenConfig) -> impl Strategy<Value = Option<DateRange>> {
    prop_oneof![
        Just(None),
        Just(Some(cfg.date_range())),
        // Relative to "now", a day after the generated period: cuts it in the middle.
        Just(Some(DateRange::Last {
            count: 4,
            unit: RangeUnit::Day
        })),
    ]
}

/// How many keys the store materialises: none (every key read from the JSON), the
/// first one seen, or all.
fn materialized_keys() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1), Just(1000)]
}

fn store_config(dir: &std::path::Path, max_materialized_keys: usize) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.max_materialized_keys = max_materialized_keys;
    config
}

fn events_query(cfg: &GenConfig) -> impl Strategy<Value = EventsQuery> {
    let names = cfg.event_names.clone();
    (
        date_range(cfg),
        prop::option::of((0..names.len()).prop_map(move |i| names[i].clone())),
        prop::option::of(prop_oneof![
            Just("p0-d0".to_string()),
            Just("person-0".to_string()),
            Just("person-1".to_string()),
            Just("p1-d0".to_string()),
        ]),
        prop::collection::vec(testgen::filter(), 0..=1),
        1u32..6,
    )
        .prop_map(
            |(date_range, event, person_id, filters, limit)| EventsQuery {
                scope: Scope::Tenant(TenantId(1)),
                date_range,
                time_zone: None,
                week_start: WeekStart::Monday,
                event,
                person_id,
                filters,
                limit,
                cursor: None,
            },
        )
}

#[test]
fn events_pages_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 60,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        events_query(&cfg),
        any::<bool>(),
        materialized_keys(),
    );
    runner
        .run(&strategy, |(events, query, flush, cap)| {
            prop_assume!(query.filters.iter().all(no_group));
            prop_assume!(consistent_identities(&events));
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let engine = engine_with_store(&events, flush, store_config(dir.path(), cap)).await;
                let mut q = query.clone();
                // Follow the cursor to the end, page by page.
                for page in 0.. {
                    let expected = reference::events::events(&q, &events, &ctx).unwrap();
                    let actual = engine
                        .events(&q, ctx.now, Some(&cfg.time_zone))
                        .await
                        .map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
                    prop_assert_eq!(
                        &actual,
                        &expected,
                        "page {} of {}",
                        page,
                        serde_json::to_string(&q).unwrap()
                    );
                    match actual.next_cursor {
                        Some(c) => q.cursor = Some(c),
                        None => break,
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

fn schema_request() -> impl Strategy<Value = SchemaRequest> {
    let search = prop::option::of(prop_oneof![
        Just("A".to_string()),
        Just("p".to_string()),
        Just("Co".to_string()),
        Just("1".to_string()),
        Just("pricing".to_string()),
    ]);
    let event = prop::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string())]);
    let property = prop_oneof![
        Just(PropertyRef::event("plan")),
        Just(PropertyRef::event("amount")),
        Just(PropertyRef::event("$current_url")),
        Just(PropertyRef::event("missing")),
        Just(PropertyRef::person("country")),
        Just(PropertyRef::person("number")),
    ];
    prop_oneof![
        (search.clone(), 1u32..5)
            .prop_map(|(search, limit)| SchemaRequest::EventNames { search, limit }),
        (
            prop_oneof![Just(PropertySource::Event), Just(PropertySource::Person)],
            event.clone(),
            search.clone(),
            1u32..5
        )
            .prop_map(|(source, event, search, limit)| {
                SchemaRequest::PropertyNames {
                    source,
                    group_type: None,
                    event,
                    search,
                    limit,
                }
            }),
        (property, event, search, 1u32..6).prop_map(|(property, event, search, limit)| {
            SchemaRequest::PropertyValues {
                property,
                event,
                search,
                limit,
            }
        }),
    ]
}

#[test]
fn schema_matches_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 80,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        date_range(&cfg),
        schema_request(),
        any::<bool>(),
        materialized_keys(),
    );
    runner
        .run(&strategy, |(events, date_range, request, flush, cap)| {
            prop_assume!(consistent_identities(&events));
            let query = SchemaQuery {
                scope: Scope::Tenant(TenantId(1)),
                date_range,
                time_zone: None,
                week_start: WeekStart::Monday,
                request,
            };
            let expected = reference::schema::schema(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_with_store(&events, flush, store_config(dir.path(), cap)).await;
                engine.schema(&query, ctx.now, Some(&cfg.time_zone)).await
            });
            let actual = actual.map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
            prop_assert_eq!(
                actual,
                expected,
                "query {}",
                serde_json::to_string(&query).unwrap()
            );
            Ok(())
        })
        .unwrap();
}

fn person_filter() -> impl Strategy<Value = Filter> {
    let scalar = |s: &str| Some(FilterValue::Scalar(Scalar::String(s.to_string())));
    let leaf = prop_oneof![
        Just(Filter::property(
            PropertyRef::person("country"),
            Operator::Equals,
            scalar("FR")
        )),
        Just(Filter::property(
            PropertyRef::person("country"),
            Operator::NotEquals,
            scalar("fr")
        )),
        Just(Filter::property(
            PropertyRef::person("country"),
            Operator::IsNotSet,
            None
        )),
        Just(Filter::property(
            PropertyRef::person("country"),
            Operator::Contains,
            scalar("u")
        )),
        Just(Filter::property(
            PropertyRef::person("number"),
            Operator::Gte,
            Some(FilterValue::Scalar(Scalar::Number(1.0)))
        )),
        Just(Filter::property(
            PropertyRef::person("number"),
            Operator::Equals,
            scalar("0")
        )),
    ];
    leaf.prop_recursive(2, 4, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|filters| Filter::And { filters }),
            prop::collection::vec(inner, 0..3).prop_map(|filters| Filter::Or { filters }),
        ]
    })
}

/// The persons of a tenant passing `filters`, by brute force: one synthetic event per
/// person carrying the person's properties, through the reference's filter semantics.
fn expected_persons(events: &[RefEvent], tenant: TenantId, filters: &[Filter]) -> Vec<RefEvent> {
    let mut persons: BTreeMap<&str, &RefEvent> = BTreeMap::new();
    for e in events.iter().filter(|e| e.tenant == tenant) {
        persons.entry(e.person_id.as_str()).or_insert(e);
    }
    let synthetic: Vec<RefEvent> = persons
        .values()
        .enumerate()
        .map(|(i, e)| RefEvent {
            uuid: uuid::Uuid::from_u128(i as u128 + 1),
            distinct_id: e.person_id.clone(),
            timestamp: 0,
            properties: Properties::new(),
            ..(*e).clone()
        })
        .collect();
    let q = EventsQuery {
        scope: Scope::Tenant(tenant),
        date_range: None,
        time_zone: None,
        week_start: WeekStart::Monday,
        event: None,
        person_id: None,
        filters: filters.to_vec(),
        limit: 1000,
        cursor: None,
    };
    let passing = reference::events::events(&q, &synthetic, &RefContext::at(0)).unwrap();
    let mut out: Vec<RefEvent> = passing
        .events
        .iter()
        .filter_map(|row| synthetic.iter().find(|e| e.uuid == row.uuid).cloned())
        .collect();
    out.sort_by(|a, b| a.person_id.cmp(&b.person_id));
    out
}

#[test]
fn persons_pages_match_a_brute_force_listing() {
    let cfg = GenConfig::default();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 60,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        prop::collection::vec(person_filter(), 0..=2),
        1u32..4,
    );
    runner
        .run(&strategy, |(events, filters, limit)| {
            prop_assume!(consistent_identities(&events));
            let tenant = TenantId(1);
            let expected = expected_persons(&events, tenant, &filters);
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let engine = engine_for(&events, false, dir.path()).await;
                let mut q = PersonsQuery {
                    scope: Scope::Tenant(tenant),
                    distinct_id: None,
                    filters: filters.clone(),
                    limit,
                    cursor: None,
                };
                let mut listed = Vec::new();
                loop {
                    let page = engine
                        .persons(&q)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
                    prop_assert!(page.persons.len() <= limit as usize);
                    listed.extend(page.persons);
                    match page.next_cursor {
                        Some(c) => q.cursor = Some(c),
                        None => break,
                    }
                }
                let ids: Vec<&str> = listed.iter().map(|p| p.person_id.as_str()).collect();
                let want: Vec<&str> = expected.iter().map(|e| e.person_id.as_str()).collect();
                prop_assert_eq!(
                    ids,
                    want,
                    "filters {}",
                    serde_json::to_string(&filters).unwrap()
                );
                for (row, e) in listed.iter().zip(&expected) {
                    prop_assert_eq!(row.tenant, tenant);
                    prop_assert_eq!(&row.properties, &e.person_properties);
                    // Mapped distinct ids only: an anonymous person's own id is not
                    // in the map.
                    let mut mapped: Vec<String> = events
                        .iter()
                        .filter(|x| {
                            x.tenant == tenant
                                && x.person_id == row.person_id
                                && x.distinct_id != x.person_id
                        })
                        .map(|x| x.distinct_id.clone())
                        .collect();
                    mapped.sort();
                    mapped.dedup();
                    prop_assert_eq!(&row.distinct_ids, &mapped);
                }
                // Every distinct id finds its person.
                for e in events.iter().filter(|e| e.tenant == tenant) {
                    let page = engine
                        .persons(&PersonsQuery {
                            scope: Scope::Tenant(tenant),
                            distinct_id: Some(e.distinct_id.clone()),
                            filters: Vec::new(),
                            limit: 10,
                            cursor: None,
                        })
                        .await
                        .map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
                    let ids: Vec<&str> =
                        page.persons.iter().map(|p| p.person_id.as_str()).collect();
                    prop_assert_eq!(ids, vec![e.person_id.as_str()]);
                }
                Ok(())
            })
        })
        .unwrap();
}

/// A source whose persons the test changes, counting reads.
struct ChangingPersons {
    version: AtomicU64,
    country: parking_lot::Mutex<&'static str>,
    reads: AtomicU64,
    map_reads: AtomicU64,
}

#[async_trait::async_trait]
impl IdentitySource for ChangingPersons {
    async fn distinct_id_map(&self, _: TenantId) -> Result<(u64, Vec<(String, String)>), String> {
        self.map_reads.fetch_add(1, Ordering::SeqCst);
        Ok((1, vec![("anon".to_string(), "user".to_string())]))
    }
    async fn identity_version(&self, _: TenantId) -> Result<Option<u64>, String> {
        Ok(Some(1))
    }
    async fn persons_version(&self, _: TenantId) -> Result<u64, String> {
        Ok(self.version.load(Ordering::SeqCst))
    }
    async fn persons(&self, _: TenantId) -> Result<(u64, Vec<PersonRecord>), String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut properties = Properties::new();
        properties.insert("country".into(), json!(*self.country.lock()));
        Ok((
            self.version.load(Ordering::SeqCst),
            vec![PersonRecord {
                person_id: "user".into(),
                properties,
                created_at: 5,
            }],
        ))
    }
}

#[test]
fn person_properties_are_cached_by_version_and_apply_to_past_events() {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(StoreConfig::new(dir.path()))
            .await
            .unwrap();
        let t0 = 1_700_000_000_000_000;
        let events: Vec<Event> = (0..3)
            .map(|i| Event {
                uuid: uuid::Uuid::from_u128(i + 1),
                event: "view".into(),
                distinct_id: "anon".into(),
                timestamp: t0 + i as i64,
                received_at: t0,
                properties: Properties::new(),
                person_set: Properties::new(),
                person_set_once: Properties::new(),
            })
            .collect();
        store
            .apply(
                1,
                &EventBatch {
                    tenant: TenantId(1),
                    events,
                },
            )
            .unwrap();
        let source = Arc::new(ChangingPersons {
            version: AtomicU64::new(1),
            country: parking_lot::Mutex::new("FR"),
            reads: AtomicU64::new(0),
            map_reads: AtomicU64::new(0),
        });
        let engine = Engine::new(store, source.clone(), EngineConfig::default());
        let query = TrendsQuery {
            scope: Scope::Tenant(TenantId(1)),
            date_range: DateRange::Absolute {
                from: "2023-11-14".into(),
                to: Some("2023-11-14".into()),
            },
            interval: tally_query::Interval::Day,
            time_zone: None,
            week_start: WeekStart::Monday,
            filters: vec![Filter::equals(PropertyRef::person("country"), "FR")],
            series: vec![TrendsSeries {
                event: Some("view".into()),
                filters: Vec::new(),
                math: Math::Total,
                label: None,
            }],
            formula: None,
            breakdown: None,
            compare: false,
        };
        let now = t0 + 86_400_000_000;
        let total = |r: tally_query::TrendsResult| r.current.series[0].values[0];
        // A query without person properties never reads persons.
        let plain = TrendsQuery {
            filters: Vec::new(),
            ..query.clone()
        };
        assert_eq!(
            total(engine.trends(&plain, now, None).await.unwrap()),
            Some(3.0)
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 0);
        assert_eq!(
            total(engine.trends(&query, now, None).await.unwrap()),
            Some(3.0)
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        // Unchanged version: the cached relation answers, even though the source
        // would now say otherwise.
        *source.country.lock() = "US";
        assert_eq!(
            total(engine.trends(&query, now, None).await.unwrap()),
            Some(3.0)
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        // A new version is read and applies to the events already stored.
        source.version.store(2, Ordering::SeqCst);
        assert_eq!(
            total(engine.trends(&query, now, None).await.unwrap()),
            Some(0.0)
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
        // The identity map's version never moved: read once, by the first query.
        assert_eq!(source.map_reads.load(Ordering::SeqCst), 1);

        let persons = engine
            .persons(&PersonsQuery {
                scope: Scope::Tenant(TenantId(1)),
                distinct_id: Some("anon".into()),
                filters: Vec::new(),
                limit: 10,
                cursor: None,
            })
            .await
            .unwrap();
        assert_eq!(persons.persons.len(), 1);
        assert_eq!(persons.persons[0].distinct_ids, ["anon"]);
        assert_eq!(persons.persons[0].created_at, 5);
        assert_eq!(persons.persons[0].properties["country"], json!("US"));
    });
}

#[test]
fn operator_scopes_are_refused_as_bad_requests() {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_for(&[], false, dir.path()).await;
        let scope = Scope::Operator {
            tenants: TenantSelector::default(),
        };
        let events = EventsQuery {
            scope: scope.clone(),
            date_range: None,
            time_zone: None,
            week_start: WeekStart::Monday,
            event: None,
            person_id: None,
            filters: Vec::new(),
            limit: 10,
            cursor: None,
        };
        let err = engine.events(&events, 0, None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::BadRequest, "{err}");
        assert!(err.to_string().contains("operator"), "{err}");
        let persons = PersonsQuery {
            scope: scope.clone(),
            distinct_id: None,
            filters: Vec::new(),
            limit: 10,
            cursor: None,
        };
        let err = engine.persons(&persons).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::BadRequest, "{err}");
        let schema = SchemaQuery {
            scope,
            date_range: None,
            time_zone: None,
            week_start: WeekStart::Monday,
            request: SchemaRequest::EventNames {
                search: None,
                limit: 10,
            },
        };
        let err = engine.schema(&schema, 0, None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::BadRequest, "{err}");
        // Group properties are refused, not answered wrongly.
        let groups = SchemaQuery {
            scope: Scope::Tenant(TenantId(1)),
            date_range: None,
            time_zone: None,
            week_start: WeekStart::Monday,
            request: SchemaRequest::PropertyValues {
                property: PropertyRef::group("company", "tier"),
                event: None,
                search: None,
                limit: 10,
            },
        };
        let err = engine.schema(&groups, 0, None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::BadRequest, "{err}");
        // A tampered cursor is the client's error.
        let bad_cursor = EventsQuery {
            scope: Scope::Tenant(TenantId(1)),
            cursor: Some("e1.x".into()),
            ..events
        };
        let err = engine.events(&bad_cursor, 0, None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::BadRequest, "{err}");
    });
}

/// Every JSON type under keys with and without typed columns, against the reference:
/// key discovery from the JSON (keys past the materialisation cap) must agree with
/// the typed columns.
#[test]
fn schema_agrees_whether_or_not_keys_are_materialised() {
    let rt = runtime();
    let values = [
        json!("pro"),
        json!(2.5),
        json!(true),
        json!([1, "x"]),
        json!({"a": null}),
        serde_json::Value::Null,
        json!("[1,\"x\"]"),
    ];
    let keys = ["plan", "it's", "k:str:x", "unmaterialised"];
    let mut events = Vec::new();
    for (i, value) in values.iter().enumerate() {
        for (k, key) in keys.iter().enumerate().skip(i % 2) {
            let mut properties = Properties::new();
            properties.insert(key.to_string(), value.clone());
            events.push(RefEvent {
                tenant: TenantId(1 + (k % 2 == 1 && i == 0) as u32),
                uuid: uuid::Uuid::from_u128((i * 10 + k) as u128 + 1),
                event: if k == 0 { "a" } else { "b" }.into(),
                distinct_id: format!("d{i}"),
                person_id: format!("d{i}"),
                timestamp: 1_700_000_000_000_000 + i as i64,
                properties,
                person_properties: Properties::new(),
                groups: Default::default(),
            });
        }
    }
    let ctx = RefContext::at(1_800_000_000_000_000);
    let mut requests = vec![
        SchemaRequest::PropertyNames {
            source: PropertySource::Event,
            group_type: None,
            event: None,
            search: None,
            limit: 10,
        },
        SchemaRequest::PropertyNames {
            source: PropertySource::Event,
            group_type: None,
            event: Some("b".into()),
            search: Some("S".into()),
            limit: 2,
        },
    ];
    for key in keys {
        requests.push(SchemaRequest::PropertyValues {
            property: PropertyRef::event(key),
            event: None,
            search: None,
            limit: 10,
        });
    }
    rt.block_on(async {
        for cap in [0, 1, 2, 1000] {
            for flush in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let engine = engine_with_store(&events, flush, store_config(dir.path(), cap)).await;
                for request in &requests {
                    let q = SchemaQuery {
                        scope: Scope::Tenant(TenantId(1)),
                        date_range: None,
                        time_zone: None,
                        week_start: WeekStart::Monday,
                        request: request.clone(),
                    };
                    let expected = reference::schema::schema(&q, &events, &ctx).unwrap();
                    let actual = engine.schema(&q, ctx.now, None).await.unwrap();
                    assert_eq!(actual, expected, "cap {cap}, flush {flush}, {request:?}");
                }
            }
        }
    });
}
