//! Operator (cross-tenant) trends, funnels and retention against the reference: the
//! generated events of both tenants, generated queries re-scoped to a selection of
//! tenants (all, listed ids, an unknown id, none left by a tenant filter) with filters
//! and breakdowns on tenant fields and attributes.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_core::TenantId;
use tally_engine::TenantInfo;
use tally_query::reference::{self, RefContext};
use tally_query::testgen::{self, GenConfig};
use tally_query::{
    Breakdown, Filter, FilterValue, FunnelQuery, FunnelResult, Operator, PropertyFilter,
    PropertyRef, PropertySource, Scalar, Scope, TenantSelector, TrendsResult,
};

use crate::retention::assert_same as same_retention;
use crate::trends::{close, consistent_identities, engine_for, runtime};

fn tenants(ctx: &RefContext) -> Vec<TenantInfo> {
    ctx.tenants
        .iter()
        .map(|t| TenantInfo {
            id: t.id,
            name: t.name.clone(),
            time_zone: t.time_zone.clone(),
            attributes: t.attributes.clone(),
        })
        .collect()
}

fn tenant_ref(source: PropertySource, key: &str) -> PropertyRef {
    PropertyRef {
        source,
        key: key.to_string(),
        group_type: None,
    }
}

fn equals(property: PropertyRef, value: Scalar) -> Filter {
    Filter::Property(PropertyFilter {
        property,
        operator: Operator::Equals,
        value: Some(FilterValue::Scalar(value)),
    })
}

/// An operator scope and, maybe, a breakdown on tenant fields, chosen by `knobs`.
fn operator_scope(knobs: u8) -> (Scope, Option<Breakdown>) {
    let ids = match knobs % 5 {
        0 | 1 => Vec::new(),
        2 => vec![TenantId(1)],
        3 => vec![TenantId(2), TenantId(1)],
        _ => vec![TenantId(3)],
    };
    let filters = match (knobs / 5) % 4 {
        1 => vec![equals(
            tenant_ref(PropertySource::TenantAttribute, "plan"),
            Scalar::String("pro".into()),
        )],
        2 => vec![equals(
            tenant_ref(PropertySource::Tenant, "name"),
            Scalar::String("tenant-1".into()),
        )],
        _ => Vec::new(),
    };
    let breakdown = match (knobs / 20) % 4 {
        1 => Some(tenant_ref(PropertySource::TenantAttribute, "plan")),
        2 => Some(tenant_ref(PropertySource::Tenant, "id")),
        3 => Some(tenant_ref(PropertySource::Tenant, "name")),
        _ => None,
    };
    (
        Scope::Operator {
            tenants: TenantSelector { ids, filters },
        },
        breakdown.map(Breakdown::by),
    )
}

fn has_group(filters: &[Filter], breakdown: Option<&Breakdown>) -> bool {
    filters.iter().any(|f| {
        f.predicates()
            .iter()
            .any(|p| p.property.source == PropertySource::Group)
    }) || breakdown.is_some_and(|b| {
        b.properties
            .iter()
            .any(|p| p.source == PropertySource::Group)
    })
}

fn same_trends(e: &TrendsResult, r: &TrendsResult) -> Result<(), String> {
    let rows = |t: &TrendsResult| {
        std::iter::once(&t.current)
            .chain(t.previous.iter())
            .flat_map(|p| p.series.iter().chain(p.formula.iter().flatten()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (er, rr) = (rows(e), rows(r));
    let same = e.current.buckets == r.current.buckets
        && er.len() == rr.len()
        && er.iter().zip(&rr).all(|(x, y)| {
            x.series == y.series
                && x.breakdown == y.breakdown
                && x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(a, b)| close(*a, *b))
        });
    if same {
        Ok(())
    } else {
        Err(format!("engine {er:#?}\nreference {rr:#?}"))
    }
}

fn same_funnel(e: &FunnelResult, r: &FunnelResult) -> Result<(), String> {
    let (x, y) = match (e, r) {
        (FunnelResult::Steps(x), FunnelResult::Steps(y)) => (x, y),
        (FunnelResult::ConversionOverTime(x), FunnelResult::ConversionOverTime(y)) => {
            let points = |a: &[tally_query::funnel::ConversionPoint],
                          b: &[tally_query::funnel::ConversionPoint]| {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(p, q)| {
                        p.entered == q.entered
                            && p.converted == q.converted
                            && close(p.conversion_percent, q.conversion_percent)
                    })
            };
            let same = x.buckets == y.buckets
                && points(&x.total, &y.total)
                && x.breakdowns.len() == y.breakdowns.len()
                && x.breakdowns
                    .iter()
                    .zip(&y.breakdowns)
                    .all(|(a, b)| a.breakdown == b.breakdown && points(&a.points, &b.points));
            return if same {
                Ok(())
            } else {
                Err(format!("engine {x:#?}\nreference {y:#?}"))
            };
        }
        (FunnelResult::TimeToConvert(x), FunnelResult::TimeToConvert(y)) => {
            let same = x.persons == y.persons
                && x.bins.len() == y.bins.len()
                && x.bins.iter().zip(&y.bins).all(|(a, b)| {
                    a.persons == b.persons && close(Some(a.from_seconds), Some(b.from_seconds))
                })
                && close(x.average_seconds, y.average_seconds)
                && close(x.median_seconds, y.median_seconds);
            return if same {
                Ok(())
            } else {
                Err(format!("engine {x:#?}\nreference {y:#?}"))
            };
        }
        (FunnelResult::Persons(x), FunnelResult::Persons(y)) if x == y => return Ok(()),
        _ => return Err(format!("engine {e:#?}\nreference {r:#?}")),
    };
    let steps = |s: &tally_query::funnel::FunnelStepsResult| {
        std::iter::once((None, s.total.clone()))
            .chain(
                s.breakdowns
                    .iter()
                    .map(|b| (Some(b.breakdown.clone()), b.steps.clone())),
            )
            .collect::<Vec<_>>()
    };
    let (xs, ys) = (steps(x), steps(y));
    let same = xs.len() == ys.len()
        && xs.iter().zip(&ys).all(|(a, b)| {
            a.0 == b.0
                && a.1.len() == b.1.len()
                && a.1.iter().zip(&b.1).all(|(p, q)| {
                    p.persons == q.persons
                        && close(
                            p.conversion_from_first_percent,
                            q.conversion_from_first_percent,
                        )
                        && close(
                            p.average_seconds_from_previous,
                            q.average_seconds_from_previous,
                        )
                        && close(
                            p.median_seconds_from_previous,
                            q.median_seconds_from_previous,
                        )
                })
        });
    if same {
        Ok(())
    } else {
        Err(format!("engine {x:#?}\nreference {y:#?}"))
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn operator_trends_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let strategy = (
        testgen::events(&cfg),
        testgen::trends_query(&cfg),
        any::<bool>(),
        any::<u8>(),
    );
    runner(80)
        .run(&strategy, |(events, mut query, flush, knobs)| {
            let (scope, breakdown) = operator_scope(knobs);
            query.scope = scope;
            if breakdown.is_some() {
                query.breakdown = breakdown;
            }
            let series_filters: Vec<Filter> = query
                .series
                .iter()
                .flat_map(|s| s.filters.clone())
                .chain(query.filters.clone())
                .collect();
            prop_assume!(!has_group(&series_filters, query.breakdown.as_ref()));
            prop_assume!(!query.series.iter().any(|s| matches!(
                &s.math,
                tally_query::Math::Property { property, .. } if property.source == PropertySource::Group
            )));
            prop_assume!(consistent_identities(&events));
            let expected = reference::trends::trends(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                engine
                    .trends_operator(&query, ctx.now, &tenants(&ctx))
                    .await
            });
            let actual = actual.map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
            same_trends(&actual, &expected).map_err(|m| {
                TestCaseError::fail(format!(
                    "{m}\nquery: {}",
                    serde_json::to_string(&query).unwrap()
                ))
            })
        })
        .unwrap();
}

#[test]
fn operator_funnels_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let strategy = (
        testgen::events(&cfg),
        testgen::funnel_query(&cfg),
        any::<bool>(),
        any::<u8>(),
    );
    runner(80)
        .run(&strategy, |(events, mut query, flush, knobs)| {
            let (scope, breakdown) = operator_scope(knobs);
            query.scope = scope;
            if breakdown.is_some() {
                query.breakdown = breakdown;
            }
            // Every view but `persons` (refused for operator queries).
            let required = (0..query.steps.len() as u32)
                .filter(|s| {
                    query.order == tally_query::FunnelOrder::AnyOrder
                        || !query.steps[*s as usize].optional
                })
                .count();
            match knobs >> 6 {
                1 => {
                    query.view = tally_query::FunnelView::ConversionOverTime {
                        interval: tally_query::Interval::Day,
                    }
                }
                2 if required >= 2 => {
                    query.breakdown = None;
                    query.view = tally_query::FunnelView::TimeToConvert {
                        from_step: 0,
                        to_step: None,
                        bins: 3,
                    };
                }
                // Persons across tenants, a page of 1 or 2, cursors followed below.
                3 => {
                    query.view = tally_query::FunnelView::Persons {
                        step: 0,
                        status: tally_query::StepStatus::Reached,
                        breakdown: None,
                        limit: 1 + u32::from(knobs & 1),
                        cursor: None,
                    }
                }
                _ => {}
            }
            let filters: Vec<Filter> = query
                .steps
                .iter()
                .flat_map(|s| s.filters.clone())
                .chain(query.exclusions.iter().flat_map(|x| x.filters.clone()))
                .chain(query.filters.clone())
                .collect();
            prop_assume!(!has_group(&filters, query.breakdown.as_ref()));
            prop_assume!(consistent_identities(&events));
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                // Persons: follow the cursors page by page (other views: one page).
                for _page in 0..6 {
                    let expected = reference::funnel::funnel(&query, &events, &ctx).unwrap();
                    let actual = engine
                        .funnel_operator(&query, ctx.now, &tenants(&ctx))
                        .await
                        .map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
                    same_funnel(&actual, &expected).map_err(|m| {
                        TestCaseError::fail(format!(
                            "{m}\nquery: {}",
                            serde_json::to_string(&query).unwrap()
                        ))
                    })?;
                    match (&actual, &mut query.view) {
                        (
                            FunnelResult::Persons(page),
                            tally_query::FunnelView::Persons { cursor, .. },
                        ) if page.next_cursor.is_some() => *cursor = page.next_cursor.clone(),
                        _ => break,
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn operator_retention_matches_the_reference() {
    let cfg = GenConfig {
        max_persons: 6,
        max_events_per_person: 12,
        ..GenConfig::default()
    };
    let ctx = cfg.context();
    let rt = runtime();
    let strategy = (
        testgen::events(&cfg),
        testgen::retention_query(&cfg),
        any::<bool>(),
        any::<u8>(),
    );
    runner(80)
        .run(&strategy, |(events, mut query, flush, knobs)| {
            let (scope, breakdown) = operator_scope(knobs);
            query.scope = scope;
            if breakdown.is_some() {
                query.breakdown = breakdown;
            }
            if knobs & 128 != 0 {
                query.filters.clear();
            }
            let filters: Vec<Filter> = query
                .filters
                .iter()
                .chain(&query.start.filters)
                .chain(&query.return_event.filters)
                .cloned()
                .collect();
            prop_assume!(!has_group(&filters, query.breakdown.as_ref()));
            prop_assume!(consistent_identities(&events));
            let expected = reference::retention::retention(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                engine
                    .retention_operator(&query, ctx.now, &tenants(&ctx))
                    .await
            });
            let actual = actual.map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
            same_retention(&actual, &expected).map_err(|m| {
                TestCaseError::fail(format!(
                    "{m}\nquery: {}",
                    serde_json::to_string(&query).unwrap()
                ))
            })
        })
        .unwrap();
}

#[test]
fn operator_methods_refuse_what_they_cannot_answer() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = engine_for(&[], false, dir.path()).await;
        // A cursor that is not one.
        let funnel: FunnelQuery = serde_json::from_str(
            r#"{"scope":{"operator":{}},"date_range":{"type":"last","count":2,"unit":"day"},
                "steps":[{"event":"a"},{"event":"b"}],
                "view":{"type":"persons","step":1,"status":"reached","limit":10,"cursor":"x"}}"#,
        )
        .unwrap();
        let err = engine
            .funnel_operator(&funnel, ctx.now, &tenants(&ctx))
            .await
            .unwrap_err();
        assert_eq!(
            tally_core::Classify::class(&err),
            tally_core::ErrorClass::BadRequest
        );
        // A tenant scope is not an operator query.
        let tenant = FunnelQuery {
            scope: Scope::Tenant(TenantId(1)),
            view: Default::default(),
            ..funnel
        };
        assert!(
            engine
                .funnel_operator(&tenant, ctx.now, &tenants(&ctx))
                .await
                .is_err()
        );
    });
}

/// The worked example of `docs/QUERY-SEMANTICS.md` (`operator_breakdown_by_tenant_attribute`),
/// with a key one tenant materialises and another keeps only in its JSON (a store
/// capped at one materialised key per tenant): tenant 1 (`plan=free`) has 2
/// `signed_up` by `u1`, tenants 2 and 3 (`plan=pro`) 1 and 3, also by a `u1`.
#[test]
fn operator_worked_example_with_mixed_materialisation() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tally_core::{Event, EventBatch};
    use tally_engine::{Engine, EngineConfig};
    use tally_store::{EmbeddedStore, StoreConfig};

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000_000i64;
    let t0 = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
    let event = |n: u128, props: serde_json::Value| Event {
        uuid: uuid::Uuid::from_u128(n),
        event: "signed_up".into(),
        distinct_id: "u1".into(),
        timestamp: t0 + day + n as i64,
        received_at: t0,
        properties: props.as_object().cloned().unwrap_or_default(),
        person_set: Default::default(),
        person_set_once: Default::default(),
    };
    let tenants: Vec<TenantInfo> = [(1, "free"), (2, "pro"), (3, "pro")]
        .into_iter()
        .map(|(id, plan)| TenantInfo {
            id: TenantId(id),
            name: format!("tenant-{id}"),
            time_zone: "UTC".into(),
            attributes: BTreeMap::from([("plan".to_string(), plan.to_string())]),
        })
        .collect();
    rt.block_on(async {
        let store = EmbeddedStore::open(StoreConfig {
            max_materialized_keys: 1,
            ..StoreConfig::new(dir.path())
        })
        .await
        .unwrap();
        let batches = [
            (1, vec![event(1, serde_json::json!({"source": "ad"})), event(2, serde_json::json!({"source": "ad"}))]),
            (2, vec![event(3, serde_json::json!({"source": "ad"}))]),
            // Tenant 3's first key is `other`, so `source` stays in its JSON.
            (3, vec![event(4, serde_json::json!({"other": 1}))]),
            (3, vec![event(5, serde_json::json!({"source": "ad"})), event(6, serde_json::json!({"source": "ad"}))]),
        ];
        for (lsn, (tenant, events)) in batches.into_iter().enumerate() {
            store
                .apply(lsn as u64 + 1, &EventBatch { tenant: TenantId(tenant), events })
                .unwrap();
        }
        store.flush().await.unwrap();
        assert!(store.property_catalog(TenantId(1)).keys["source"].materialized);
        assert!(!store.property_catalog(TenantId(3)).keys["source"].materialized);
        let engine = Engine::new(
            store,
            Arc::new(crate::trends::MapIdentities {
                maps: BTreeMap::new(),
                persons: BTreeMap::new(),
            }),
            EngineConfig::default(),
        );
        let query = |scope: &str, math: &str| -> tally_query::TrendsQuery {
            serde_json::from_str(&format!(
                r#"{{"scope":{scope},"date_range":{{"type":"absolute","from":"2024-01-01","to":"2024-01-03"}},
                    "interval":"month","series":[{{"event":"signed_up","math":{math},
                    "filters":[{{"type":"property","property":{{"source":"event","key":"source"}},"operator":"equals","value":"ad"}}]}}],
                    "breakdown":{{"properties":[{{"source":"tenant_attribute","key":"plan"}}]}}}}"#
            ))
            .unwrap()
        };
        let rows = |r: &TrendsResult| -> Vec<(String, Option<f64>)> {
            r.current
                .series
                .iter()
                .map(|s| (serde_json::to_string(&s.breakdown).unwrap(), s.values[0]))
                .collect()
        };
        let all = engine
            .trends_operator(&query(r#"{"operator":{}}"#, r#"{"type":"total"}"#), t0 + 10 * day, &tenants)
            .await
            .unwrap();
        // Tenant 3's second and third events carry `source` only in the JSON.
        assert_eq!(
            rows(&all),
            [
                (r#"{"type":"values","values":["pro"]}"#.to_string(), Some(3.0)),
                (r#"{"type":"values","values":["free"]}"#.to_string(), Some(2.0)),
            ]
        );
        let persons = engine
            .trends_operator(&query(r#"{"operator":{}}"#, r#"{"type":"unique_persons"}"#), t0 + 10 * day, &tenants)
            .await
            .unwrap();
        // Three different `u1`s: two pro, one free.
        assert_eq!(persons.current.series[0].values[0], Some(2.0));
        assert_eq!(persons.current.series[1].values[0], Some(1.0));
        let pro = engine
            .trends_operator(
                &query(
                    r#"{"operator":{"tenants":{"filters":[{"type":"property","property":{"source":"tenant_attribute","key":"plan"},"operator":"equals","value":"pro"}]}}}"#,
                    r#"{"type":"total"}"#,
                ),
                t0 + 10 * day,
                &tenants,
            )
            .await
            .unwrap();
        assert_eq!(rows(&pro).len(), 1);
        assert_eq!(pro.current.series[0].values[0], Some(3.0));
    });
}
