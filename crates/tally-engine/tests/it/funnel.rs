//! Funnels (steps view) against the reference: generated events with ties, window
//! edges, a DST change and identity merges; generated ordered, strict and any-order
//! funnels with per-step windows, exclusions and optional steps.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_query::funnel::FunnelStepResult;
use tally_query::reference;
use tally_query::testgen::{self, GenConfig};
use tally_query::{
    Filter, FunnelExclusion, FunnelOrder, FunnelQuery, FunnelResult, PropertySource, Window,
};

use crate::trends::{close, consistent_identities, engine_for};

fn uses_unsupported_source(q: &FunnelQuery) -> bool {
    let bad = |f: &Filter| {
        f.predicates()
            .iter()
            .any(|p| p.property.source != PropertySource::Event)
    };
    q.filters.iter().any(bad)
        || q.steps.iter().any(|s| s.filters.iter().any(bad))
        || q.exclusions.iter().any(|x| x.filters.iter().any(bad))
        || q.breakdown.as_ref().is_some_and(|b| {
            b.properties
                .iter()
                .any(|p| p.source != PropertySource::Event)
        })
}

fn assert_same(engine: &FunnelResult, reference: &FunnelResult) -> Result<(), String> {
    let (FunnelResult::Steps(e), FunnelResult::Steps(r)) = (engine, reference) else {
        return Err("not a steps result".into());
    };
    let rows = |s: &tally_query::funnel::FunnelStepsResult| {
        std::iter::once((None, s.total.clone()))
            .chain(
                s.breakdowns
                    .iter()
                    .map(|b| (Some(b.breakdown.clone()), b.steps.clone())),
            )
            .collect::<Vec<_>>()
    };
    let (er, rr) = (rows(e), rows(r));
    if er.len() != rr.len() || er.iter().zip(&rr).any(|(a, b)| a.0 != b.0) {
        return Err(format!("rows differ:\nengine {e:#?}\nreference {r:#?}"));
    }
    let steps = |rows: &[(Option<tally_query::BreakdownValue>, Vec<_>)]| {
        rows.iter()
            .flat_map(|r| r.1.clone())
            .collect::<Vec<FunnelStepResult>>()
    };
    let (es, rs) = (steps(&er), steps(&rr));
    if es.len() != rs.len() {
        return Err("step counts differ".into());
    }
    for (x, y) in es.iter().zip(&rs) {
        let same = x.step == y.step
            && x.name == y.name
            && x.optional == y.optional
            && x.persons == y.persons
            && close(
                x.conversion_from_first_percent,
                y.conversion_from_first_percent,
            )
            && close(
                x.conversion_from_previous_percent,
                y.conversion_from_previous_percent,
            )
            && close(
                x.average_seconds_from_previous,
                y.average_seconds_from_previous,
            )
            && close(
                x.median_seconds_from_previous,
                y.median_seconds_from_previous,
            );
        if !same {
            return Err(format!("step differs:\nengine    {x:?}\nreference {y:?}"));
        }
    }
    Ok(())
}

/// Moves generated funnels onto the generator's time edges more often: per-step
/// windows of exactly half the funnel window (events are placed at window/2
/// offsets), and an exclusion between the first two required steps.
fn sharpen(q: &mut FunnelQuery, knobs: u8) {
    if q.order == FunnelOrder::AnyOrder {
        return;
    }
    if knobs & 1 != 0 {
        let half = Window::minutes(30);
        for step in q.steps.iter_mut().skip(1) {
            step.window = Some(half);
        }
    }
    if knobs & 2 != 0 && q.exclusions.is_empty() {
        let required: Vec<u32> = (0..q.steps.len() as u32)
            .filter(|s| !q.steps[*s as usize].optional)
            .collect();
        if let [from, to, ..] = required[..] {
            q.exclusions.push(FunnelExclusion {
                event: Some(if knobs & 4 != 0 { "x" } else { "b" }.to_string()),
                filters: Vec::new(),
                from_step: from,
                to_step: to,
            });
        }
    }
}

#[test]
fn funnel_steps_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        testgen::funnel_query(&cfg),
        any::<bool>(),
        any::<u8>(),
    );
    runner
        .run(&strategy, |(events, mut query, flush, knobs)| {
            sharpen(&mut query, knobs);
            prop_assume!(!uses_unsupported_source(&query));
            prop_assume!(consistent_identities(&events));
            let expected = reference::funnel::funnel(&query, &events, &ctx).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let actual = rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                engine.funnel(&query, ctx.now, Some(&cfg.time_zone)).await
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
