//! Measures `apply_events` and write-key lookups on a temporary database.
//!
//! `cargo run -p tally-meta --example identity_throughput [calls] [events_per_call]`
//!
//! The event mix imitates a web app: most events are plain pageviews, a few carry
//! `$set`/`$set_once`, and some are `$identify` calls that merge an anonymous visitor
//! into a user. Prints rates; asserts nothing.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tally_core::{Event, EventBatch, Properties, TenantDirectory, TenantId};
use tally_meta::{CachedMeta, MetaStore, PersonStore, SqliteMeta};
use uuid::Uuid;

fn event(name: &str, distinct_id: String, props: serde_json::Value) -> Event {
    Event {
        uuid: Uuid::now_v7(),
        event: name.into(),
        distinct_id,
        timestamp: 1_700_000_000_000_000,
        received_at: 1_700_000_000_000_000,
        properties: props.as_object().cloned().unwrap_or_default(),
        person_set: Properties::new(),
        person_set_once: Properties::new(),
    }
}

/// Event `i` of the stream: 90% pageviews, 5% `$set` on a user, 3% `$identify`
/// (merging visitor i into user i/3), 2% `$set_once` on a visitor.
fn nth_event(i: usize) -> Event {
    let user = format!("user-{}", i / 3 % 50_000);
    let visitor = format!("visitor-{i}");
    match i % 100 {
        0..=89 => event("$pageview", visitor, json!({"$current_url": "/pricing"})),
        90..=94 => {
            let mut e = event("plan_changed", user, json!({}));
            e.person_set.insert("plan".into(), json!(i % 7));
            e
        }
        95..=97 => event("$identify", user, json!({"$anon_distinct_id": visitor})),
        _ => {
            let mut e = event("$pageview", visitor, json!({}));
            e.person_set_once
                .insert("initial_referrer".into(), json!("ads"));
            e
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let per_call: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);

    let dir = tempfile::tempdir()?;
    let meta = SqliteMeta::open(&dir.path().join("meta.db")).await?;

    let mut i = 0;
    let mut effects = 0;
    let mut apply_time = std::time::Duration::ZERO;
    for call in 0..calls {
        // Ten batches per call, like one WAL group commit of ten requests.
        let batches: Vec<EventBatch> = (0..10)
            .map(|_| EventBatch {
                tenant: TenantId(1),
                events: (0..per_call / 10)
                    .map(|_| {
                        i += 1;
                        nth_event(i)
                    })
                    .collect(),
            })
            .collect();
        let started = Instant::now();
        let stats = meta.apply_events(call as u64 + 1, &batches).await?;
        apply_time += started.elapsed();
        effects += stats.events_with_effects;
    }
    let secs = apply_time.as_secs_f64();
    println!(
        "apply_events: {calls} calls x {per_call} events ({effects} with effects) in {secs:.2} s: \
         {:.0} events/s, {:.0} effect events/s, {:.2} ms/call",
        (calls * per_call) as f64 / secs,
        effects as f64 / secs,
        secs * 1000.0 / calls as f64
    );

    // A call without identity effects still records its LSN (one small commit).
    let empty_calls = 200;
    let started = Instant::now();
    for n in 0..empty_calls {
        meta.apply_events((calls + 1 + n) as u64, &[]).await?;
    }
    println!(
        "apply_events without effects: {:.2} ms/call",
        started.elapsed().as_secs_f64() * 1000.0 / empty_calls as f64
    );

    let tenant = meta.create_tenant("bench").await?.tenant;
    let directory = CachedMeta::new(Arc::new(meta.clone())).await?;
    let lookups = 1_000_000;
    let started = Instant::now();
    for _ in 0..lookups {
        std::hint::black_box(directory.tenant_for_write_key(&tenant.write_key).await);
    }
    println!(
        "cached write-key lookup: {:.0} ns",
        started.elapsed().as_nanos() as f64 / lookups as f64
    );
    Ok(())
}
