//! Property tests of the reference's invariants on generated event sets, plus one
//! cross-check against an independent (greedy, `windowFunnel`-style) funnel algorithm
//! on the cases where greedy is provably optimal.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{
    RefContext, RefEvent, events::events as list_events, funnel::funnel, retention::retention,
    trends::trends,
};
use crate::breakdown::{Breakdown, BreakdownValue};
use crate::events::EventsQuery;
use crate::filter::PropertyRef;
use crate::funnel::{FunnelOrder, FunnelQuery, FunnelResult, FunnelStep, FunnelView};
use crate::query::Query;
use crate::retention::{CohortKind, ReturnMode};
use crate::scope::Scope;
use crate::testgen::{self, GenConfig};
use crate::time::{Calendar, Interval, TimeRange, WeekStart, Window};
use crate::trends::Math;
use tally_core::TenantId;

fn config() -> Config {
    Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    }
}

fn step_counts(q: &FunnelQuery, events: &[RefEvent], ctx: &RefContext) -> Vec<u64> {
    match funnel(q, events, ctx).unwrap() {
        FunnelResult::Steps(s) => s.total.iter().map(|s| s.persons).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

fn plain(mut q: FunnelQuery, order: FunnelOrder) -> FunnelQuery {
    for s in &mut q.steps {
        s.optional = false;
        s.window = None;
    }
    q.exclusions.clear();
    q.order = order;
    q
}

/// The level a `windowFunnel`-style greedy scan reaches: for each entry, take the
/// earliest event of each next step. Optimal when every step has its own event name
/// (so no event can serve two steps) and there are no filters, exclusions, optional
/// steps or per-step windows.
fn greedy_levels(q: &FunnelQuery, events: &[RefEvent], range: TimeRange) -> Vec<u64> {
    let window = q.window.micros();
    let mut by_person: BTreeMap<(TenantId, &str), Vec<&RefEvent>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.tenant == TenantId(1)) {
        by_person
            .entry((e.tenant, e.person_id.as_str()))
            .or_default()
            .push(e);
    }
    let name = |s: usize| q.steps[s].event.clone().unwrap_or_default();
    let mut counts = vec![0u64; q.steps.len()];
    for events in by_person.values() {
        let mut best: Option<usize> = None;
        for entry in events
            .iter()
            .filter(|e| e.event == name(0) && range.contains(e.timestamp))
        {
            let mut level = 0;
            let mut last = entry.timestamp;
            for s in 1..q.steps.len() {
                let next = events
                    .iter()
                    .filter(|e| {
                        e.event == name(s)
                            && e.timestamp >= last
                            && e.timestamp - entry.timestamp <= window
                    })
                    .map(|e| e.timestamp)
                    .min();
                match next {
                    Some(t) => {
                        level = s;
                        last = t;
                    }
                    None => break,
                }
            }
            best = Some(best.map_or(level, |b| b.max(level)));
        }
        if let Some(level) = best {
            for c in counts.iter_mut().take(level + 1) {
                *c += 1;
            }
        }
    }
    counts
}

fn distinct_steps() -> impl Strategy<Value = Vec<String>> {
    Just(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        .prop_shuffle()
        .prop_flat_map(|names| (Just(names), 2usize..=3))
        .prop_map(|(names, n)| names.into_iter().take(n).collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn funnel_counts_never_increase_and_breakdowns_add_up(
        events in testgen::events(&GenConfig::default()),
        q in testgen::funnel_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let result = match funnel(&q, &events, &ctx).unwrap() {
            FunnelResult::Steps(s) => s,
            other => panic!("unexpected {other:?}"),
        };
        let required: Vec<u64> = result
            .total
            .iter()
            .filter(|s| !s.optional)
            .map(|s| s.persons)
            .collect();
        prop_assert!(required.windows(2).all(|w| w[0] >= w[1]), "{required:?}");
        for s in &result.total {
            prop_assert!(s.persons <= result.total[0].persons);
        }
        if q.breakdown.is_some() {
            for (i, step) in result.total.iter().enumerate() {
                let sum: u64 = result.breakdowns.iter().map(|b| b.steps[i].persons).sum();
                prop_assert_eq!(sum, step.persons);
            }
        } else {
            prop_assert!(result.breakdowns.is_empty());
        }
    }

    #[test]
    fn any_order_reaches_at_least_ordered_which_reaches_at_least_strict(
        events in testgen::events(&GenConfig::default()),
        q in testgen::funnel_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let any = step_counts(&plain(q.clone(), FunnelOrder::AnyOrder), &events, &ctx);
        let ordered = step_counts(&plain(q.clone(), FunnelOrder::Ordered), &events, &ctx);
        let strict = step_counts(&plain(q, FunnelOrder::Strict), &events, &ctx);
        for i in 0..any.len() {
            prop_assert!(any[i] >= ordered[i] && ordered[i] >= strict[i], "{any:?} {ordered:?} {strict:?}");
        }
    }

    #[test]
    fn wider_windows_and_fewer_exclusions_never_lose_conversions(
        events in testgen::events(&GenConfig::default()),
        q in testgen::funnel_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let base = step_counts(&q, &events, &ctx);
        let wider = FunnelQuery { window: Window::hours(3), ..q.clone() };
        let without_exclusions = FunnelQuery { exclusions: vec![], ..q };
        let (wider, free) = (step_counts(&wider, &events, &ctx), step_counts(&without_exclusions, &events, &ctx));
        for i in 0..base.len() {
            prop_assert!(wider[i] >= base[i] && free[i] >= base[i], "{base:?} {wider:?} {free:?}");
        }
    }

    #[test]
    fn ordered_funnels_agree_with_a_greedy_scan(
        events in testgen::events(&GenConfig::default()),
        names in distinct_steps(),
        window in prop_oneof![Just(Window::minutes(30)), Just(Window::hours(1)), Just(Window::days(1))],
    ) {
        let cfg = GenConfig::default();
        let mut q = testgen_funnel_base(&cfg);
        q.steps = names.iter().map(FunnelStep::event).collect();
        q.window = window;
        let expected = greedy_levels(&q, &events, cfg.range());
        prop_assert_eq!(step_counts(&q, &events, &cfg.context()), expected);
    }

    #[test]
    fn trends_invariants(
        events in testgen::events(&GenConfig::default()),
        q in testgen::trends_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let result = trends(&q, &events, &ctx).unwrap();
        let buckets = result.current.buckets.len();
        for row in &result.current.series {
            prop_assert_eq!(row.values.len(), buckets);
        }
        prop_assert!(result.current.buckets.windows(2).all(|w| w[0].start < w[1].start));
        // One series, four maths over the same events: unique <= total, DAU <= WAU <= MAU.
        let mut series = q.series[0].clone();
        let mut values = Vec::new();
        for math in [Math::Total, Math::UniquePersons, Math::Dau, Math::Wau, Math::Mau] {
            series.math = math;
            let single = crate::trends::TrendsQuery { series: vec![series.clone()], formula: None, breakdown: None, ..q.clone() };
            values.push(trends(&single, &events, &ctx).unwrap().current.series[0].values.clone());
        }
        for b in 0..buckets {
            let v: Vec<f64> = values.iter().map(|row| row[b].unwrap_or(f64::NAN)).collect();
            prop_assert!(v[1] <= v[0] && v[2] <= v[3] && v[3] <= v[4], "{v:?}");
        }
        // Breakdown rows of a total add up to the total, bucket by bucket.
        series.math = Math::Total;
        let total = crate::trends::TrendsQuery { series: vec![series.clone()], formula: None, breakdown: None, compare: false, ..q.clone() };
        let split = crate::trends::TrendsQuery {
            breakdown: Some(Breakdown { properties: vec![PropertyRef::event("plan")], limit: 2 }),
            ..total.clone()
        };
        let total = trends(&total, &events, &ctx).unwrap().current.series[0].values.clone();
        let split = trends(&split, &events, &ctx).unwrap().current.series;
        prop_assert_eq!(total.len(), buckets);
        for (b, expected) in total.iter().enumerate() {
            let sum: f64 = split.iter().map(|row| row.values[b].unwrap_or(0.0)).sum();
            prop_assert_eq!(Some(sum), *expected);
        }
        prop_assert!(split.iter().filter(|r| r.breakdown == Some(BreakdownValue::Other)).count() <= 1);
    }

    #[test]
    fn retention_invariants(
        events in testgen::events(&GenConfig::default()),
        q in testgen::retention_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let on = retention(&crate::retention::RetentionQuery { mode: ReturnMode::On, ..q.clone() }, &events, &ctx).unwrap();
        let after = retention(&crate::retention::RetentionQuery { mode: ReturnMode::OnOrAfter, ..q.clone() }, &events, &ctx).unwrap();
        for (a, b) in on.total.iter().zip(&after.total) {
            prop_assert_eq!(a.size, b.size);
            for n in 0..a.values.len() {
                let (x, y) = (a.values[n].unwrap_or(0), b.values[n].unwrap_or(0));
                prop_assert!(x <= y && y <= a.size, "{:?} {:?}", a.values, b.values);
            }
            let after_values: Vec<u64> = b.values.iter().skip(1).map(|v| v.unwrap_or(0)).collect();
            prop_assert!(after_values.windows(2).all(|w| w[0] >= w[1]), "{after_values:?}");
        }
        let first = retention(&crate::retention::RetentionQuery { cohort: CohortKind::FirstTime, ..q.clone() }, &events, &ctx).unwrap();
        let recurring = retention(&crate::retention::RetentionQuery { cohort: CohortKind::Recurring, ..q.clone() }, &events, &ctx).unwrap();
        for (f, r) in first.total.iter().zip(&recurring.total) {
            prop_assert!(f.size <= r.size);
        }
        if q.breakdown.is_some() {
            for (i, cohort) in on.total.iter().enumerate() {
                let sum: u64 = on.breakdowns.iter().map(|b| b.cohorts[i].size).sum();
                prop_assert_eq!(sum, cohort.size);
            }
        }
    }

    #[test]
    fn answers_ignore_input_order_and_other_tenants(
        events in testgen::events(&GenConfig::default()),
        f in testgen::funnel_query(&GenConfig::default()),
        t in testgen::trends_query(&GenConfig::default()),
        r in testgen::retention_query(&GenConfig::default()),
    ) {
        let ctx = GenConfig::default().context();
        let mut reversed = events.clone();
        reversed.reverse();
        let own: Vec<RefEvent> = events.iter().filter(|e| e.tenant == TenantId(1)).cloned().collect();
        for q in [Query::Funnel(f), Query::Trends(t), Query::Retention(r)] {
            let expected = super::run(&q, &events, &ctx).unwrap();
            prop_assert_eq!(&super::run(&q, &reversed, &ctx).unwrap(), &expected);
            prop_assert_eq!(&super::run(&q, &own, &ctx).unwrap(), &expected);
        }
    }

    #[test]
    fn queries_round_trip_through_json(
        f in testgen::funnel_query(&GenConfig::default()),
        t in testgen::trends_query(&GenConfig::default()),
        r in testgen::retention_query(&GenConfig::default()),
    ) {
        for q in [Query::Funnel(f), Query::Trends(t), Query::Retention(r)] {
            let text = serde_json::to_string(&q).unwrap();
            let back: Query = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, q);
        }
    }

    #[test]
    fn event_pages_cover_everything_once(
        events in testgen::events(&GenConfig::default()),
        limit in 1u32..5,
    ) {
        let ctx = GenConfig::default().context();
        let mut q = EventsQuery {
            scope: Scope::Operator { tenants: Default::default() },
            date_range: None,
            time_zone: None,
            week_start: WeekStart::Monday,
            event: None,
            person_id: None,
            filters: vec![],
            limit,
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = list_events(&q, &events, &ctx).unwrap();
            prop_assert!(page.events.len() <= limit as usize);
            seen.extend(page.events.iter().map(|e| (e.timestamp, e.tenant, e.uuid)));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let mut expected: Vec<_> = events.iter().map(|e| (e.timestamp, e.tenant, e.uuid)).collect();
        expected.sort();
        expected.reverse();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn every_instant_falls_in_exactly_one_listed_bucket(
        zone in prop::sample::select(vec![
            "UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu",
            "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "America/St_Johns",
        ]),
        start in 1_672_531_200_000_000i64..1_735_689_600_000_000i64, // 2023 ..= 2024
        span_hours in 1i64..(24 * 70),
        interval in prop_oneof![Just(Interval::Hour), Just(Interval::Day), Just(Interval::Week), Just(Interval::Month)],
        week_start in prop_oneof![Just(WeekStart::Monday), Just(WeekStart::Sunday), Just(WeekStart::Saturday)],
        probes in prop::collection::vec(0.0f64..1.0, 1..20),
    ) {
        let calendar = Calendar::new(zone.parse().unwrap(), week_start);
        let range = TimeRange { start, end: start + span_hours * 3_600_000_000 };
        let periods = calendar.periods(range, interval).unwrap();
        prop_assert!(periods.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1.start < w[1].1.start));
        for p in probes {
            let t = range.start + ((range.end - range.start) as f64 * p) as i64;
            let period = calendar.period_of(calendar.local(t).unwrap(), interval);
            let found: Vec<_> = periods.iter().filter(|(q, _)| *q == period).collect();
            prop_assert_eq!(found.len(), 1, "instant {} in {}", t, zone);
            prop_assert!(found[0].1.start <= t);
        }
    }
}

fn testgen_funnel_base(cfg: &GenConfig) -> FunnelQuery {
    FunnelQuery {
        scope: Scope::Tenant(TenantId(1)),
        date_range: cfg.date_range(),
        time_zone: None,
        week_start: WeekStart::Monday,
        filters: vec![],
        steps: vec![],
        window: cfg.window,
        order: FunnelOrder::Ordered,
        exclusions: vec![],
        breakdown: None,
        view: FunnelView::Steps,
    }
}
