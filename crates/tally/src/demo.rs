//! `tally demo` and `tally serve --demo`: demo tenants with generated behaviour.
//!
//! Generated events are historic by nature, so they do not go through the WAL: a
//! generator thread produces each tenant's events in day order, and the store writes
//! them straight to sorted Parquet files (durable before this returns). Their identity
//! effects (`$identify`, `$set`, groups) go to the person store as an unlogged bulk
//! apply. 100 million events are practical this way; see docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tally_core::{EventBatch, TenantId};
use tally_demo::{DemoConfig, TenantPlan};
use tally_meta::{MetaStore, PersonStore};

use crate::cli::{DemoArgs, GlobalArgs};
use crate::datadir::DataDir;
use crate::serve::Engine;

/// Events handed to one `bulk_write` call: large enough for big sorted files,
/// small enough that the in-memory events (~1.5 KB each as JSON maps) stay bounded.
const EVENTS_PER_WRITE: usize = 400_000;
/// Identity-effect events applied per person-store transaction.
const EFFECTS_PER_APPLY: usize = 50_000;
/// Events per generated chunk (the generator is fastest around a thousand).
const CHUNK: usize = 2_000;

/// What the demo created for one tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoTenantReport {
    pub name: String,
    pub id: TenantId,
    pub write_key: String,
    /// Only known when the tenant was created by this run (secrets are stored hashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    pub events: u64,
    pub persons: u64,
}

pub async fn run(global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&global.data_dir)?;
    let _lock = dir.lock_writer()?;
    let engine = Engine::open(&dir, &global.storage).await?;
    let mut config = DemoConfig::ending_now(args.events, args.tenants, args.seed);
    config.days = args.days;
    config.validate().context("invalid demo settings")?;
    let started = Instant::now();
    let reports = generate(&engine, &config, !args.json).await?;
    let seconds = started.elapsed().as_secs_f64();
    let total: u64 = reports.iter().map(|r| r.events).sum();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"tenants": reports, "events": total, "seconds": seconds})
            )?
        );
    } else {
        print_reports(&reports);
        println!(
            "\n{total} events in {seconds:.1} s ({:.0} events/s)",
            total as f64 / seconds.max(1e-9)
        );
    }
    engine.pipeline.shutdown(Vec::new()).await?;
    Ok(())
}

/// Creates the demo tenants and their data unless a demo tenant already exists (a
/// restart of `tally serve --demo` must not generate everything again).
pub async fn ensure_demo(engine: &Engine, events: u64) -> anyhow::Result<()> {
    let config = DemoConfig::ending_now(events, 5, 42);
    let first = &config.tenants[0].name;
    if let Some(existing) = engine.meta.tenant_by_name(first).await? {
        tracing::info!(tenant = %existing.name, "Demo tenants already exist; not generating again.");
        println!("Demo tenants (write keys):");
        for t in engine.meta.list_tenants().await? {
            println!("  {:<20} {}", t.name, t.write_key);
        }
        return Ok(());
    }
    tracing::info!(events, "Generating demo data.");
    let started = Instant::now();
    let reports = generate(engine, &config, true).await?;
    print_reports(&reports);
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "Demo data ready."
    );
    Ok(())
}

fn print_reports(reports: &[DemoTenantReport]) {
    println!(
        "{:<6} {:<20} {:>12} {:>10}  {:<42} SECRET KEY",
        "ID", "TENANT", "EVENTS", "PERSONS", "WRITE KEY"
    );
    for r in reports {
        println!(
            "{:<6} {:<20} {:>12} {:>10}  {:<42} {}",
            r.id,
            r.name,
            r.events,
            r.persons,
            r.write_key,
            r.secret_key.as_deref().unwrap_or("-")
        );
    }
}

async fn generate(
    engine: &Engine,
    config: &DemoConfig,
    show_progress: bool,
) -> anyhow::Result<Vec<DemoTenantReport>> {
    let mut reports = Vec::new();
    for (index, demo_tenant) in config.tenants.iter().enumerate() {
        let created = engine
            .meta
            .create_tenant(&demo_tenant.name)
            .await
            .with_context(|| format!("creating demo tenant {:?}", demo_tenant.name))?;
        let tenant = created.tenant.id;
        engine
            .meta
            .set_tenant_attributes(
                tenant,
                &[
                    ("plan".into(), demo_tenant.plan.clone()),
                    ("demo".into(), "true".into()),
                ],
                &[],
            )
            .await?;
        let plan = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || TenantPlan::new(&config, index)).await??
        };
        let events = load_tenant(engine, &plan, tenant, show_progress).await?;
        reports.push(DemoTenantReport {
            name: created.tenant.name.clone(),
            id: tenant,
            write_key: created.tenant.write_key.clone(),
            secret_key: Some(created.secret_key),
            events,
            persons: plan.persons(),
        });
    }
    Ok(reports)
}

/// Streams one tenant's generated events into the store and the person store. The
/// generator runs on its own thread, a bounded channel ahead of the writer, so
/// generation and Parquet encoding overlap on the two cores.
async fn load_tenant(
    engine: &Engine,
    plan: &TenantPlan,
    tenant: TenantId,
    show_progress: bool,
) -> anyhow::Result<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EventBatch>(64);
    let generator = {
        let plan = plan.clone();
        std::thread::spawn(move || -> Result<(), tally_demo::Error> {
            for batch in plan.events_iter(tenant, CHUNK)? {
                if tx.blocking_send(batch).is_err() {
                    break; // the writer failed and stopped listening
                }
            }
            Ok(())
        })
    };
    let progress = if show_progress {
        let bar = indicatif::ProgressBar::new(plan.events());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<12} [{bar:30}] {pos}/{len} events ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(plan.tenant().name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let persons: Arc<dyn PersonStore> = engine.meta.clone();
    let mut pending: Vec<EventBatch> = Vec::new();
    let mut pending_events = 0usize;
    let mut effects: Vec<tally_core::Event> = Vec::new();
    let mut written = 0u64;
    while let Some(batch) = rx.recv().await {
        effects.extend(
            batch
                .events
                .iter()
                .filter(|e| tally_meta::has_identity_effects(e))
                .cloned(),
        );
        pending_events += batch.events.len();
        pending.push(batch);
        if pending_events >= EVENTS_PER_WRITE {
            written += write(engine, std::mem::take(&mut pending)).await?;
            pending_events = 0;
            progress.set_position(written);
        }
        if effects.len() >= EFFECTS_PER_APPLY {
            persons
                .apply_unlogged(&[EventBatch {
                    tenant,
                    events: std::mem::take(&mut effects),
                }])
                .await?;
        }
    }
    written += write(engine, pending).await?;
    if !effects.is_empty() {
        persons
            .apply_unlogged(&[EventBatch {
                tenant,
                events: effects,
            }])
            .await?;
    }
    progress.finish_and_clear();
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the demo generator thread panicked"))?
        .context("generating demo events")?;
    Ok(written)
}

async fn write(engine: &Engine, batches: Vec<EventBatch>) -> anyhow::Result<u64> {
    if batches.is_empty() {
        return Ok(0);
    }
    let report = engine
        .store
        .bulk_write(batches)
        .await
        .context("writing demo events")?;
    Ok(report.rows)
}
