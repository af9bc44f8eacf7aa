//! Funnels (steps view) against the reference: generated events with ties, window
//! edges, a DST change and identity merges; generated ordered, strict and any-order
//! funnels with per-step windows, exclusions and optional steps.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tally_query::funnel::{FunnelStepResult, FunnelView, StepStatus};
use tally_query::reference;
use tally_query::testgen::{self, GenConfig};
use tally_query::{
    BreakdownValue, Filter, FunnelExclusion, FunnelOrder, FunnelQuery, FunnelResult, Interval,
    PropertySource, Window,
};

use crate::trends::{close, consistent_identities, engine_for, runtime};

fn uses_unsupported_source(q: &FunnelQuery) -> bool {
    let bad = |f: &Filter| {
        f.predicates()
            .iter()
            .any(|p| p.property.source == PropertySource::Group)
    };
    q.filters.iter().any(bad)
        || q.steps.iter().any(|s| s.filters.iter().any(bad))
        || q.exclusions.iter().any(|x| x.filters.iter().any(bad))
        || q.breakdown.as_ref().is_some_and(|b| {
            b.properties
                .iter()
                .any(|p| p.source == PropertySource::Group)
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
    let rt = runtime();
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

/// A `time_to_convert` or `persons` view for `q`, chosen by `pick`.
fn other_view(q: &mut FunnelQuery, pick: u8) {
    // Generated filters leave few converters; the views need several.
    if pick & 16 == 0 {
        q.filters.clear();
        q.steps.iter_mut().for_each(|s| s.filters.clear());
        q.exclusions.clear();
    }
    let n = q.steps.len() as u32;
    let required: Vec<u32> = (0..n)
        .filter(|s| q.order == FunnelOrder::AnyOrder || !q.steps[*s as usize].optional)
        .collect();
    if pick % 4 == 3 {
        q.view = FunnelView::ConversionOverTime {
            interval: [Interval::Hour, Interval::Day, Interval::Week][usize::from(pick / 4) % 3],
        };
    } else if pick.is_multiple_of(2) && required.len() >= 2 {
        q.breakdown = None;
        let from = required[(pick as usize / 2) % (required.len() - 1)];
        q.view = FunnelView::TimeToConvert {
            from_step: from,
            to_step: (pick & 8 != 0).then(|| *required.last().unwrap()),
            bins: 1 + u32::from(pick % 5),
        };
    } else {
        let step = u32::from(pick / 2) % n;
        let status = if step > 0 && pick & 4 != 0 {
            StepStatus::DroppedOff
        } else {
            StepStatus::Reached
        };
        let breakdown = match (&q.breakdown, pick % 3) {
            (Some(_), 0) => Some(BreakdownValue::Other),
            (Some(b), 1) => Some(BreakdownValue::Values {
                values: vec![serde_json::Value::String("pro".into()); b.properties.len()],
            }),
            _ => None,
        };
        q.view = FunnelView::Persons {
            step,
            status,
            breakdown,
            limit: 1 + u32::from(pick % 3),
            cursor: None,
        };
    }
}

fn same_view(e: &FunnelResult, r: &FunnelResult) -> Result<(), String> {
    match (e, r) {
        (FunnelResult::TimeToConvert(x), FunnelResult::TimeToConvert(y)) => {
            let bins_same = x.bins.len() == y.bins.len()
                && x.bins.iter().zip(&y.bins).all(|(a, b)| {
                    a.persons == b.persons
                        && close(Some(a.from_seconds), Some(b.from_seconds))
                        && close(Some(a.to_seconds), Some(b.to_seconds))
                });
            let same = x.from_step == y.from_step
                && x.to_step == y.to_step
                && x.persons == y.persons
                && bins_same
                && close(x.average_seconds, y.average_seconds)
                && close(x.median_seconds, y.median_seconds);
            if same {
                Ok(())
            } else {
                Err(format!("engine {x:#?}\nreference {y:#?}"))
            }
        }
        (FunnelResult::Persons(x), FunnelResult::Persons(y)) if x == y => Ok(()),
        (FunnelResult::ConversionOverTime(x), FunnelResult::ConversionOverTime(y)) => {
            let same_points =
                |a: &[tally_query::funnel::ConversionPoint],
                 b: &[tally_query::funnel::ConversionPoint]| {
                    a.len() == b.len()
                        && a.iter().zip(b).all(|(p, q)| {
                            p.entered == q.entered
                                && p.converted == q.converted
                                && close(p.conversion_percent, q.conversion_percent)
                        })
                };
            let same = x.buckets == y.buckets
                && same_points(&x.total, &y.total)
                && x.breakdowns.len() == y.breakdowns.len()
                && x.breakdowns
                    .iter()
                    .zip(&y.breakdowns)
                    .all(|(a, b)| a.breakdown == b.breakdown && same_points(&a.points, &b.points));
            if same {
                Ok(())
            } else {
                Err(format!("engine {x:#?}\nreference {y:#?}"))
            }
        }
        _ => Err(format!("engine {e:#?}\nreference {r:#?}")),
    }
}

#[test]
fn funnel_views_match_the_reference() {
    let cfg = GenConfig::default();
    let ctx = cfg.context();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: 240,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        testgen::events(&cfg),
        testgen::funnel_query(&cfg),
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
    );
    runner
        .run(&strategy, |(events, mut query, flush, knobs, pick)| {
            sharpen(&mut query, knobs);
            other_view(&mut query, pick);
            prop_assume!(!uses_unsupported_source(&query));
            prop_assume!(consistent_identities(&events));
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let engine = engine_for(&events, flush, dir.path()).await;
                // Persons: follow the cursors page by page.
                for _page in 0..4 {
                    let expected = reference::funnel::funnel(&query, &events, &ctx).unwrap();
                    let actual = engine
                        .funnel(&query, ctx.now, Some(&cfg.time_zone))
                        .await
                        .map_err(|e| TestCaseError::fail(format!("engine error: {e}")))?;
                    same_view(&actual, &expected).map_err(|m| {
                        TestCaseError::fail(format!(
                            "{m}\nquery: {}",
                            serde_json::to_string(&query).unwrap()
                        ))
                    })?;
                    let next = match (&actual, &mut query.view) {
                        (FunnelResult::Persons(p), FunnelView::Persons { cursor, .. })
                            if p.next_cursor.is_some() =>
                        {
                            *cursor = p.next_cursor.clone();
                            true
                        }
                        _ => false,
                    };
                    if !next {
                        break;
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}
