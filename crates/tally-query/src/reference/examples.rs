//! The worked examples of `docs/QUERY-SEMANTICS.md`, one test each, named as in the
//! document. If one of these changes, the document changes with it.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tally_core::TenantId;
use uuid::Uuid;

use super::{RefContext, RefEvent, funnel::funnel, retention::retention, trends::trends};
use crate::breakdown::{Breakdown, BreakdownValue};
use crate::filter::{EventMatcher, PropertyRef};
use crate::funnel::{
    FunnelExclusion, FunnelOrder, FunnelQuery, FunnelResult, FunnelStep, FunnelStepsResult,
    FunnelView,
};
use crate::retention::{CohortKind, RetentionPeriod, RetentionQuery, RetentionResult, ReturnMode};
use crate::scope::Scope;
use crate::time::{DateRange, Interval, RangeUnit, WeekStart, Window};
use crate::trends::{Math, PerPersonAggregation, PropertyAggregation, TrendsQuery, TrendsSeries};

/// UTC instant from `2024-01-01T10:00:00Z`-style text.
fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

/// `2024-01-01` at `hh:mm` UTC.
fn jan(day: u32, hm: &str) -> i64 {
    at(&format!("2024-01-{day:02}T{hm}:00Z"))
}

fn ev(name: &str, person: &str, timestamp: i64) -> RefEvent {
    RefEvent {
        tenant: TenantId(1),
        uuid: Uuid::nil(),
        event: name.to_string(),
        distinct_id: person.to_string(),
        person_id: person.to_string(),
        timestamp,
        properties: Default::default(),
        person_properties: Default::default(),
        groups: BTreeMap::new(),
    }
}

fn with(mut e: RefEvent, key: &str, value: Value) -> RefEvent {
    e.properties.insert(key.to_string(), value);
    e
}

/// Unique uuids in list order.
fn numbered(mut events: Vec<RefEvent>) -> Vec<RefEvent> {
    for (i, e) in events.iter_mut().enumerate() {
        e.uuid = Uuid::from_u128(i as u128 + 1);
    }
    events
}

fn days(from: &str, to: &str) -> DateRange {
    DateRange::Absolute {
        from: from.to_string(),
        to: Some(to.to_string()),
    }
}

fn ctx() -> RefContext {
    RefContext::at(jan(20, "00:00"))
}

// ---------------------------------------------------------------- time

#[test]
fn time_zone_cuts_days_locally() {
    let events = numbered(vec![
        ev("view", "p", at("2024-03-10T04:30:00Z")),
        ev("view", "p", at("2024-03-10T05:00:00Z")),
        ev("view", "p", at("2024-03-11T03:59:00Z")),
        ev("view", "p", at("2024-03-11T04:00:00Z")),
    ]);
    let q = TrendsQuery {
        time_zone: Some("America/New_York".into()),
        ..trends_query(
            days("2024-03-09", "2024-03-10"),
            vec![TrendsSeries::total("view")],
        )
    };
    let r = trends(&q, &events, &ctx()).unwrap();
    let labels: Vec<&str> = r.current.buckets.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["2024-03-09", "2024-03-10"]);
    assert_eq!(r.current.buckets[0].start, at("2024-03-09T05:00:00Z"));
    assert_eq!(r.current.buckets[1].start, at("2024-03-10T05:00:00Z"));
    assert_eq!(r.current.series[0].values, [Some(1.0), Some(2.0)]);
}

// ---------------------------------------------------------------- trends

fn trends_query(date_range: DateRange, series: Vec<TrendsSeries>) -> TrendsQuery {
    TrendsQuery {
        scope: Scope::Tenant(TenantId(1)),
        date_range,
        interval: Interval::Day,
        time_zone: None,
        week_start: WeekStart::Monday,
        filters: vec![],
        series,
        formula: None,
        breakdown: None,
        compare: false,
    }
}

fn series(event: &str, math: Math) -> TrendsSeries {
    TrendsSeries {
        math,
        ..TrendsSeries::total(event)
    }
}

fn one_value(q: &TrendsQuery, events: &[RefEvent]) -> Vec<Option<f64>> {
    let r = trends(q, events, &ctx()).unwrap();
    r.current.series.iter().map(|row| row.values[0]).collect()
}

#[test]
fn total_and_unique_persons() {
    let events = numbered(vec![
        ev("view", "p1", jan(1, "10:00")),
        ev("view", "p1", jan(1, "11:00")),
        ev("view", "p1", jan(1, "12:00")),
        ev("view", "p2", jan(1, "10:00")),
    ]);
    let per_person = |aggregation| series("view", Math::PerPerson { aggregation });
    let q = trends_query(
        days("2024-01-01", "2024-01-01"),
        vec![
            series("view", Math::Total),
            series("view", Math::UniquePersons),
            per_person(PerPersonAggregation::Avg),
            per_person(PerPersonAggregation::Median),
            per_person(PerPersonAggregation::Max),
        ],
    );
    assert_eq!(
        one_value(&q, &events),
        [Some(4.0), Some(2.0), Some(2.0), Some(2.0), Some(3.0)]
    );
}

#[test]
fn property_math_reads_numbers() {
    let events = numbered(vec![
        with(ev("purchase", "p1", jan(1, "10:00")), "amount", json!(1)),
        with(ev("purchase", "p1", jan(1, "11:00")), "amount", json!("3")),
        with(
            ev("purchase", "p2", jan(1, "12:00")),
            "amount",
            json!("n/a"),
        ),
        ev("purchase", "p2", jan(1, "13:00")),
    ]);
    let amount = |aggregation| {
        series(
            "purchase",
            Math::Property {
                aggregation,
                property: PropertyRef::event("amount"),
            },
        )
    };
    let q = trends_query(
        days("2024-01-01", "2024-01-02"),
        vec![
            amount(PropertyAggregation::Sum),
            amount(PropertyAggregation::Avg),
            amount(PropertyAggregation::Median),
            amount(PropertyAggregation::Min),
        ],
    );
    let r = trends(&q, &events, &ctx()).unwrap();
    let values: Vec<_> = r.current.series.iter().map(|s| s.values.clone()).collect();
    assert_eq!(
        values,
        [
            vec![Some(4.0), Some(0.0)],
            vec![Some(2.0), None],
            vec![Some(2.0), None],
            vec![Some(1.0), None]
        ]
    );
}

#[test]
fn active_users_trail_local_days() {
    let events = numbered(vec![
        ev("use", "p1", jan(1, "10:00")),
        ev("use", "p2", jan(3, "10:00")),
    ]);
    let q = trends_query(
        days("2024-01-03", "2024-01-04"),
        vec![
            series("use", Math::Dau),
            series("use", Math::Wau),
            series("use", Math::UniquePersons),
        ],
    );
    let r = trends(&q, &events, &ctx()).unwrap();
    let values: Vec<_> = r.current.series.iter().map(|s| s.values.clone()).collect();
    assert_eq!(
        values,
        [
            vec![Some(1.0), Some(0.0)],
            vec![Some(2.0), Some(2.0)],
            vec![Some(1.0), Some(0.0)]
        ]
    );
}

#[test]
fn breakdown_top_n_and_other() {
    let mut events = Vec::new();
    for (plan, n) in [("a", 3), ("b", 2), ("c", 1)] {
        for i in 0..n {
            events.push(with(
                ev("view", &format!("p{plan}{i}"), jan(1, "10:00")),
                "plan",
                json!(plan),
            ));
        }
    }
    events.push(ev("view", "nobody", jan(1, "10:00")));
    let events = numbered(events);
    let q = TrendsQuery {
        breakdown: Some(Breakdown {
            properties: vec![PropertyRef::event("plan")],
            limit: 2,
        }),
        ..trends_query(
            days("2024-01-01", "2024-01-01"),
            vec![TrendsSeries::total("view")],
        )
    };
    let r = trends(&q, &events, &ctx()).unwrap();
    let rows: Vec<_> = r
        .current
        .series
        .iter()
        .map(|s| (s.breakdown.clone().unwrap(), s.values[0]))
        .collect();
    assert_eq!(
        rows,
        [
            (
                BreakdownValue::Values {
                    values: vec![json!("a")]
                },
                Some(3.0)
            ),
            (
                BreakdownValue::Values {
                    values: vec![json!("b")]
                },
                Some(2.0)
            ),
            (BreakdownValue::Other, Some(2.0)),
        ]
    );
}

#[test]
fn formula_divides_per_bucket() {
    let events = numbered(vec![
        ev("visit", "p1", jan(1, "10:00")),
        ev("visit", "p2", jan(1, "10:00")),
        ev("signup", "p1", jan(1, "10:05")),
    ]);
    let q = TrendsQuery {
        formula: Some("B / A * 100".into()),
        ..trends_query(
            days("2024-01-01", "2024-01-02"),
            vec![TrendsSeries::total("visit"), TrendsSeries::total("signup")],
        )
    };
    let r = trends(&q, &events, &ctx()).unwrap();
    let formula = r.current.formula.unwrap();
    assert_eq!(formula.len(), 1);
    assert_eq!(formula[0].values, [Some(50.0), None]);
    assert_eq!(formula[0].label, "B / A * 100");
}

#[test]
fn compare_uses_previous_local_days() {
    let events = numbered(vec![
        ev("view", "p1", jan(1, "10:00")),
        ev("view", "p1", jan(4, "10:00")),
    ]);
    let q = TrendsQuery {
        compare: true,
        ..trends_query(
            DateRange::Last {
                count: 2,
                unit: RangeUnit::Day,
            },
            vec![TrendsSeries::total("view")],
        )
    };
    let r = trends(&q, &events, &RefContext::at(jan(4, "15:00"))).unwrap();
    let labels = |p: &crate::trends::TrendsPeriod| {
        p.buckets
            .iter()
            .map(|b| b.label.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(labels(&r.current), ["2024-01-03", "2024-01-04"]);
    let previous = r.previous.unwrap();
    assert_eq!(labels(&previous), ["2024-01-01", "2024-01-02"]);
    assert_eq!(r.current.series[0].values, [Some(0.0), Some(1.0)]);
    assert_eq!(previous.series[0].values, [Some(1.0), Some(0.0)]);
}

// ---------------------------------------------------------------- funnels

fn funnel_query(steps: &[&str]) -> FunnelQuery {
    FunnelQuery {
        scope: Scope::Tenant(TenantId(1)),
        date_range: days("2024-01-01", "2024-01-01"),
        time_zone: None,
        week_start: WeekStart::Monday,
        filters: vec![],
        steps: steps.iter().map(|s| FunnelStep::event(*s)).collect(),
        window: Window::hours(1),
        order: FunnelOrder::Ordered,
        exclusions: vec![],
        breakdown: None,
        view: FunnelView::Steps,
    }
}

fn steps(q: &FunnelQuery, events: &[RefEvent]) -> FunnelStepsResult {
    match funnel(q, events, &ctx()).unwrap() {
        FunnelResult::Steps(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

fn counts(q: &FunnelQuery, events: &[RefEvent]) -> Vec<u64> {
    steps(q, events).total.iter().map(|s| s.persons).collect()
}

#[test]
fn window_is_measured_from_the_first_step() {
    let q = funnel_query(&["A", "B", "C"]);
    let late = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("B", "p", jan(1, "10:20")),
        ev("C", "p", jan(1, "11:30")),
    ]);
    assert_eq!(counts(&q, &late), [1, 1, 0]);
    let reentry = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("A", "p", jan(1, "10:40")),
        ev("B", "p", jan(1, "10:50")),
        ev("C", "p", jan(1, "11:30")),
    ]);
    let r = steps(&q, &reentry);
    assert_eq!(
        r.total.iter().map(|s| s.persons).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(r.total[1].average_seconds_from_previous, Some(600.0));
    assert_eq!(r.total[2].average_seconds_from_previous, Some(2400.0));
    let ttc = FunnelQuery {
        view: FunnelView::TimeToConvert {
            from_step: 0,
            to_step: None,
            bins: 1,
        },
        ..q
    };
    match funnel(&ttc, &reentry, &ctx()).unwrap() {
        FunnelResult::TimeToConvert(t) => {
            assert_eq!(t.persons, 1);
            assert_eq!(t.median_seconds, Some(3000.0));
            assert_eq!(t.bins.len(), 1);
            assert_eq!(t.bins[0].from_seconds, 3000.0);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn equal_timestamps_are_in_order() {
    let events = numbered(vec![
        ev("B", "p", jan(1, "10:00")),
        ev("A", "p", jan(1, "10:00")),
    ]);
    for order in [FunnelOrder::Ordered, FunnelOrder::Strict] {
        let q = FunnelQuery {
            order,
            ..funnel_query(&["A", "B"])
        };
        assert_eq!(counts(&q, &events), [1, 1], "{order:?}");
    }
}

#[test]
fn strict_order_forbids_events_between() {
    let between = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("X", "p", jan(1, "10:05")),
        ev("B", "p", jan(1, "10:10")),
    ]);
    let ordered = funnel_query(&["A", "B"]);
    let strict = FunnelQuery {
        order: FunnelOrder::Strict,
        ..ordered.clone()
    };
    assert_eq!(counts(&ordered, &between), [1, 1]);
    assert_eq!(counts(&strict, &between), [1, 0]);
    let tied = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("X", "p", jan(1, "10:00")),
        ev("B", "p", jan(1, "10:10")),
    ]);
    assert_eq!(counts(&strict, &tied), [1, 1]);
}

#[test]
fn one_event_fills_one_step() {
    let q = funnel_query(&["$pageview", "$pageview"]);
    let one = numbered(vec![ev("$pageview", "p", jan(1, "10:00"))]);
    assert_eq!(counts(&q, &one), [1, 0]);
    let two = numbered(vec![
        ev("$pageview", "p", jan(1, "10:00")),
        ev("$pageview", "p", jan(1, "10:00")),
    ]);
    assert_eq!(counts(&q, &two), [1, 1]);
}

#[test]
fn entering_twice_counts_once() {
    let events = numbered(vec![
        ev("A", "p", jan(1, "09:00")),
        ev("A", "p", jan(1, "12:00")),
        ev("B", "p", jan(1, "12:30")),
    ]);
    let r = steps(&funnel_query(&["A", "B"]), &events);
    assert_eq!(r.total[0].persons, 1);
    assert_eq!(r.total[1].persons, 1);
    assert_eq!(r.total[1].median_seconds_from_previous, Some(1800.0));
}

#[test]
fn merged_identities_count_as_one_person() {
    let mut anon = ev("A", "P", jan(1, "10:00"));
    anon.distinct_id = "anon-1".into();
    let mut user = ev("B", "P", jan(1, "10:10"));
    user.distinct_id = "user-1".into();
    assert_eq!(
        counts(&funnel_query(&["A", "B"]), &numbered(vec![anon, user])),
        [1, 1]
    );
}

#[test]
fn exclusions_between_steps() {
    let q = FunnelQuery {
        exclusions: vec![FunnelExclusion {
            event: Some("X".into()),
            filters: vec![],
            from_step: 0,
            to_step: 2,
        }],
        ..funnel_query(&["A", "B", "C"])
    };
    let events = numbered(vec![
        ev("A", "p1", jan(1, "10:00")),
        ev("X", "p1", jan(1, "10:10")),
        ev("B", "p1", jan(1, "10:20")),
        ev("C", "p1", jan(1, "10:30")),
        ev("A", "p2", jan(1, "10:00")),
        ev("X", "p2", jan(1, "10:10")),
        ev("A", "p2", jan(1, "10:15")),
        ev("B", "p2", jan(1, "10:20")),
        ev("C", "p2", jan(1, "10:30")),
        ev("A", "p3", jan(1, "10:00")),
        ev("X", "p3", jan(1, "10:00")),
        ev("B", "p3", jan(1, "10:20")),
        ev("C", "p3", jan(1, "10:30")),
    ]);
    assert_eq!(counts(&q, &events), [3, 3, 2]);
}

#[test]
fn optional_steps_are_skippable() {
    let mut q = funnel_query(&["A", "B", "C"]);
    q.steps[1].optional = true;
    let events = numbered(vec![
        ev("A", "p1", jan(1, "10:00")),
        ev("C", "p1", jan(1, "10:10")),
        ev("A", "p2", jan(1, "10:00")),
        ev("B", "p2", jan(1, "10:05")),
        ev("C", "p2", jan(1, "10:10")),
    ]);
    let r = steps(&q, &events);
    assert_eq!(
        r.total.iter().map(|s| s.persons).collect::<Vec<_>>(),
        [2, 1, 2]
    );
    assert_eq!(r.total[1].conversion_from_previous_percent, Some(50.0));
    assert_eq!(r.total[2].conversion_from_previous_percent, Some(100.0));
}

#[test]
fn any_order_counts_distinct_steps() {
    let q = FunnelQuery {
        order: FunnelOrder::AnyOrder,
        ..funnel_query(&["A", "B", "C"])
    };
    let events = numbered(vec![
        ev("C", "p", jan(1, "10:00")),
        ev("A", "p", jan(1, "10:10")),
    ]);
    let r = steps(&q, &events);
    assert_eq!(
        r.total.iter().map(|s| s.persons).collect::<Vec<_>>(),
        [1, 1, 0]
    );
    assert_eq!(r.total[1].name, "Completed 2 of 3 steps");
}

#[test]
fn per_step_window() {
    let mut q = funnel_query(&["A", "B"]);
    q.steps[1].window = Some(Window::minutes(10));
    let events = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("B", "p", jan(1, "10:15")),
    ]);
    assert_eq!(counts(&q, &events), [1, 0]);
}

#[test]
fn first_touch_breakdown() {
    let q = FunnelQuery {
        breakdown: Some(Breakdown::by(PropertyRef::event("plan"))),
        ..funnel_query(&["A", "B"])
    };
    let events = numbered(vec![
        with(ev("A", "p", jan(1, "10:00")), "plan", json!("free")),
        with(ev("A", "p", jan(1, "11:00")), "plan", json!("pro")),
        ev("B", "p", jan(1, "11:10")),
    ]);
    let r = steps(&q, &events);
    assert_eq!(r.breakdowns.len(), 1);
    assert_eq!(
        r.breakdowns[0].breakdown,
        BreakdownValue::Values {
            values: vec![json!("free")]
        }
    );
    assert_eq!(r.breakdowns[0].steps[1].persons, 1);
}

#[test]
fn conversion_over_time_counts_each_entry_bucket() {
    let q = FunnelQuery {
        date_range: days("2024-01-01", "2024-01-02"),
        view: FunnelView::ConversionOverTime {
            interval: Interval::Day,
        },
        ..funnel_query(&["A", "B"])
    };
    let events = numbered(vec![
        ev("A", "p", jan(1, "10:00")),
        ev("A", "p", jan(2, "10:00")),
        ev("B", "p", jan(2, "10:10")),
    ]);
    match funnel(&q, &events, &ctx()).unwrap() {
        FunnelResult::ConversionOverTime(r) => {
            let points: Vec<_> = r
                .total
                .iter()
                .map(|p| (p.entered, p.converted, p.conversion_percent))
                .collect();
            assert_eq!(points, [(1, 0, Some(0.0)), (1, 1, Some(100.0))]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------- retention

fn retention_query(cohort: CohortKind, mode: ReturnMode) -> RetentionQuery {
    RetentionQuery {
        scope: Scope::Tenant(TenantId(1)),
        date_range: days("2024-01-01", "2024-01-03"),
        time_zone: None,
        week_start: WeekStart::Monday,
        filters: vec![],
        start: EventMatcher::named("start"),
        return_event: EventMatcher::named("return"),
        cohort,
        period: RetentionPeriod::Day,
        periods: 3,
        mode,
        breakdown: None,
    }
}

fn table(r: &RetentionResult) -> Vec<Vec<Option<u64>>> {
    r.total.iter().map(|c| c.values.clone()).collect()
}

#[test]
fn first_time_versus_recurring() {
    let events = numbered(vec![
        ev("start", "p", jan(1, "10:00")),
        ev("start", "p", jan(2, "10:00")),
        ev("return", "p", jan(3, "10:00")),
    ]);
    let first = retention(
        &retention_query(CohortKind::FirstTime, ReturnMode::On),
        &events,
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        table(&first),
        [
            vec![Some(1), Some(0), Some(1), Some(0)],
            vec![Some(0), Some(0), Some(0), Some(0)],
            vec![Some(0), Some(0), Some(0), Some(0)]
        ]
    );
    assert_eq!(
        first.total[0].percentages,
        [Some(100.0), Some(0.0), Some(100.0), Some(0.0)]
    );
    assert_eq!(first.total[1].percentages, [None, None, None, None]);
    let recurring = retention(
        &retention_query(CohortKind::Recurring, ReturnMode::On),
        &events,
        &ctx(),
    )
    .unwrap();
    assert_eq!(table(&recurring)[0], [Some(1), Some(0), Some(1), Some(0)]);
    assert_eq!(table(&recurring)[1], [Some(1), Some(1), Some(0), Some(0)]);
}

#[test]
fn on_or_after_accumulates() {
    let events = numbered(vec![
        ev("start", "p", jan(1, "10:00")),
        ev("return", "p", jan(3, "10:00")),
    ]);
    let on = retention(
        &retention_query(CohortKind::Recurring, ReturnMode::On),
        &events,
        &ctx(),
    )
    .unwrap();
    let after = retention(
        &retention_query(CohortKind::Recurring, ReturnMode::OnOrAfter),
        &events,
        &ctx(),
    )
    .unwrap();
    assert_eq!(table(&on)[0], [Some(1), Some(0), Some(1), Some(0)]);
    assert_eq!(table(&after)[0], [Some(1), Some(1), Some(1), Some(0)]);
}

#[test]
fn first_time_needs_the_first_event_in_range() {
    let events = numbered(vec![
        ev("start", "p", at("2023-12-31T10:00:00Z")),
        ev("start", "p", jan(2, "10:00")),
    ]);
    let first = retention(
        &retention_query(CohortKind::FirstTime, ReturnMode::On),
        &events,
        &ctx(),
    )
    .unwrap();
    assert!(first.total.iter().all(|c| c.size == 0));
    let recurring = retention(
        &retention_query(CohortKind::Recurring, ReturnMode::On),
        &events,
        &ctx(),
    )
    .unwrap();
    let sizes: Vec<u64> = recurring.total.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [0, 1, 0]);
}

#[test]
fn future_periods_are_null() {
    let events = numbered(vec![
        ev("start", "p", jan(1, "10:00")),
        ev("return", "p", jan(2, "08:00")),
    ]);
    let now = RefContext::at(jan(2, "12:00"));
    let r = retention(
        &retention_query(CohortKind::Recurring, ReturnMode::On),
        &events,
        &now,
    )
    .unwrap();
    assert_eq!(table(&r)[0], [Some(1), Some(1), None, None]);
}

// ---------------------------------------------------------------- empty

#[test]
fn empty_tenant_returns_zeros() {
    let none: Vec<RefEvent> = Vec::new();
    let q = TrendsQuery {
        formula: Some("A + B".into()),
        ..trends_query(
            days("2024-01-01", "2024-01-02"),
            vec![
                TrendsSeries::total("view"),
                series(
                    "view",
                    Math::Property {
                        aggregation: PropertyAggregation::Avg,
                        property: PropertyRef::event("amount"),
                    },
                ),
            ],
        )
    };
    let r = trends(&q, &none, &ctx()).unwrap();
    assert_eq!(r.current.series[0].values, [Some(0.0), Some(0.0)]);
    assert_eq!(r.current.series[1].values, [None, None]);
    assert_eq!(r.current.formula.unwrap()[0].values, [None, None]);
    let with_breakdown = TrendsQuery {
        breakdown: Some(Breakdown::by(PropertyRef::event("plan"))),
        formula: None,
        ..q
    };
    assert!(
        trends(&with_breakdown, &none, &ctx())
            .unwrap()
            .current
            .series
            .is_empty()
    );

    let f = steps(&funnel_query(&["A", "B"]), &none);
    assert!(
        f.total
            .iter()
            .all(|s| s.persons == 0 && s.conversion_from_first_percent.is_none())
    );
    assert!(f.breakdowns.is_empty());

    let r = retention(
        &retention_query(CohortKind::FirstTime, ReturnMode::On),
        &none,
        &ctx(),
    )
    .unwrap();
    assert_eq!(r.total.len(), 3);
    assert!(
        r.total
            .iter()
            .all(|c| c.size == 0 && c.percentages.iter().all(Option::is_none))
    );
}

// ---------------------------------------------------------------- operator

#[test]
fn operator_breakdown_by_tenant_attribute() {
    use crate::reference::RefTenant;
    use crate::scope::TenantSelector;
    let tenant = |id: u32, plan: &str| RefTenant {
        id: TenantId(id),
        name: format!("t{id}"),
        time_zone: "UTC".into(),
        attributes: BTreeMap::from([("plan".to_string(), plan.to_string())]),
    };
    let ctx = RefContext {
        now: jan(20, "00:00"),
        tenants: vec![tenant(1, "free"), tenant(2, "pro"), tenant(3, "pro")],
    };
    let mut events = Vec::new();
    for (id, n) in [(1, 2), (2, 1), (3, 3)] {
        for _ in 0..n {
            let mut e = ev("signed_up", "u1", jan(1, "10:00"));
            e.tenant = TenantId(id);
            events.push(e);
        }
    }
    let events = numbered(events);
    let operator = Scope::Operator {
        tenants: TenantSelector::default(),
    };
    let q = TrendsQuery {
        scope: operator.clone(),
        breakdown: Some(Breakdown::by(PropertyRef::tenant_attribute("plan"))),
        ..trends_query(
            days("2024-01-01", "2024-01-01"),
            vec![TrendsSeries::total("signed_up")],
        )
    };
    let r = trends(&q, &events, &ctx).unwrap();
    let rows: Vec<_> = r
        .current
        .series
        .iter()
        .map(|s| (s.breakdown.clone().unwrap(), s.values[0]))
        .collect();
    assert_eq!(
        rows,
        [
            (
                BreakdownValue::Values {
                    values: vec![json!("pro")]
                },
                Some(4.0)
            ),
            (
                BreakdownValue::Values {
                    values: vec![json!("free")]
                },
                Some(2.0)
            ),
        ]
    );
    let unique = TrendsQuery {
        scope: operator,
        ..trends_query(
            days("2024-01-01", "2024-01-01"),
            vec![series("signed_up", Math::UniquePersons)],
        )
    };
    assert_eq!(
        trends(&unique, &events, &ctx).unwrap().current.series[0].values,
        [Some(3.0)]
    );
    let pro_only = TrendsQuery {
        scope: Scope::Operator {
            tenants: TenantSelector {
                ids: vec![],
                filters: vec![crate::filter::Filter::equals(
                    PropertyRef::tenant_attribute("plan"),
                    "pro",
                )],
            },
        },
        ..trends_query(
            days("2024-01-01", "2024-01-01"),
            vec![TrendsSeries::total("signed_up")],
        )
    };
    assert_eq!(
        trends(&pro_only, &events, &ctx).unwrap().current.series[0].values,
        [Some(4.0)]
    );
    // The same query from a tenant key is refused: tenant attributes are operator-only.
    let tenant_scoped = TrendsQuery {
        scope: Scope::Tenant(TenantId(1)),
        ..q
    };
    assert!(trends(&tenant_scoped, &events, &ctx).is_err());
}

/// Every example the spec names in brackets is a test in this file, and the other way
/// round, so the document and the tests cannot drift apart.
#[test]
fn the_spec_names_exactly_these_examples() {
    let spec = include_str!("../../../../docs/QUERY-SEMANTICS.md");
    let this = include_str!("examples.rs");
    let named: std::collections::BTreeSet<&str> = spec
        .split("[`")
        .skip(1)
        .filter_map(|s| s.split_once("`]").map(|(name, _)| name))
        .collect();
    let tests: std::collections::BTreeSet<&str> = this
        .split("#[test]\nfn ")
        .skip(1)
        .filter_map(|s| s.split_once("()").map(|(name, _)| name))
        .filter(|name| *name != "the_spec_names_exactly_these_examples")
        .collect();
    assert!(named.len() >= 20, "{named:?}");
    assert_eq!(named, tests);
}
