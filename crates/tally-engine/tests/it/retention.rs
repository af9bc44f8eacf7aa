//! Retention against the reference: generated events (two tenants, New York time with
//! the spring-forward change, identity merges, ties, events just outside the range,
//! empty tenants) and generated retention queries (first-time and recurring cohorts,
//! `on` and `on_or_after`, day, week and month periods, breakdowns, event and person
//! property filters; group properties are skipped), at a "now" after the range or
//! inside it (future cells are null).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_query::reference::{self, RefContext};
use tally_query::retention::RetentionCohort;
use tally_query::testgen::{self, GenConfig};
use tally_query::{
    Breakdown, DateRange, Filter, PropertyRef, PropertySource, RetentionPeriod, RetentionQuery,
    RetentionResult,
};

use crate::trends::{close, consistent_identities, engine_for, runtime};

fn uses_unsupported_source(q: &RetentionQuery) -> bool {
    let bad = |f: &Filter| {
        f.predicates()
            .iter()
            .any(|p| p.property.source == PropertySource::Group)
    };
    q.filters.iter().any(bad)
        || q.start.filters.iter().any(bad)
        || q.return_event.filters.iter().any(bad)
        || q.breakdown.as_ref().is_some_and(|b| {
            b.properties
                .iter()
                .any(|p| p.source == PropertySource::Group)
        })
}

fn same_cohorts(e: &[RetentionCohort], r: &[RetentionCohort]) -> bool {
    e.len() == r.len()
        && e.iter().zip(r).all(|(x, y)| {
            x.period == y.period
                && x.size == y.size
                && x.values == y.values
                && x.percentages.len() == y.percentages.len()
                && x.percentages
                    .iter()
                    .zip(&y.percentages)
                    .all(|(a, b)| close(*a, *b))
        })
}

pub(crate) fn assert_same(e: &RetentionResult, r: &RetentionResult) -> Result<(), String> {
    let same = same_cohorts(&e.total, &r.total)
        && e.breakdowns.len() == r.breakdowns.len()
        && e.breakdowns
            .iter()
            .zip(&r.breakdowns)
            .all(|(a, b)| a.breakdown == b.breakdown && same_cohorts(&a.cohorts, &b.cohorts));
    if same {
        Ok(())
    } else {
        Err(format!("engine {e:#?}\nreference {r:#?}"))
    }
}

/// Varies what the generator leaves fixed: month periods, fewer filters (so that
/// cohorts are not all empty), a shorter range and "now" inside the range.
fn vary(q: &mut RetentionQuery, ctx: &mut RefContext, cfg: &GenConfig, knobs: u8, more: u8) {
    if knobs & 3 == 3 {
        q.period = RetentionPeriod::Month;
    }
    if knobs & 4 != 0 || more & 4 != 0 {
        q.filters.clear();
    }
    // Breakdowns by event properties of every JSON type, with few rows (so "other"
    // is common).
    match more & 3 {
        1 => {
            q.breakdown = Some(Breakdown {
                properties: vec![PropertyRef::event("plan")],
                limit: 1,
            })
        }
        2 => {
            q.breakdown = Some(Breakdown {
                properties: vec![PropertyRef::event("plan"), PropertyRef::event("amount")],
                limit: 3,
            })
        }
        _ => {}
    }
    // A shorter range, so that many returns (and `on` returns in the last reported
    // period) fall after it.
    if knobs & 32 != 0 {
        q.date_range = DateRange::Absolute {
            from: "2024-03-08".to_string(),
            to: Some("2024-03-10".to_string()),
        };
        if knobs & 64 != 0 || knobs & 1 != 0 {
            q.periods = q.periods.min(2);
        }
    }
    // Any event returns: more returns, on more days.
    if knobs & 128 != 0 {
        q.return_event.event = None;
        q.return_event.filters.clear();
    }
    let range = cfg.range();
    let day = 86_400_000_000;
    match (knobs >> 3) & 3 {
        // Mid-range: later cells are null, the current one counts so far.
        1 => ctx.now = range.start + 2 * day + day / 2,
        // The instant a period starts: that period is observable.
        2 => ctx.now = range.start + 3 * day,
        _ => {}
    }
}

#[test]
fn retention_matches_the_reference() {
    // Denser than the default: retention needs the same person on several days.
    let cfg = GenConfig {
        max_persons: 6,
        max_events_per_person: 12,
        ..GenConfig::default()
    };
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        testgen::retention_query(&cfg),
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
    );
    runner
        .run(&strategy, |(events, mut query, flush, knobs, more)| {
            let mut ctx = cfg.context();
            vary(&mut query, &mut ctx, &cfg, knobs, more);
            prop_assume!(!uses_unsupported_source(&query));
            prop_assume!(consistent_identities(&events));
            let expected = reference::retention::retention(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                engine
                    .retention(&query, ctx.now, Some(&cfg.time_zone))
                    .await
            });
            let actual = actual.map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
            assert_same(&actual, &expected).map_err(|m| {
                TestCaseError::fail(format!(
                    "{m}\nquery: {}\nnow: {}",
                    serde_json::to_string(&query).unwrap(),
                    ctx.now
                ))
            })
        })
        .unwrap();
}
