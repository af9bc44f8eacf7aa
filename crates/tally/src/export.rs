//! `tally export ...`: reads a tenant's stored events, persons and groups straight from
//! the data directory (the server must be stopped: the store has one writer, and the
//! export first replays the write-ahead log so it sees every acknowledged event).

use std::io::Write;

use anyhow::Context;
use serde_json::json;
use tally_core::Event;
use tally_core::time::format_micros;
use tally_meta::PersonStore;

use crate::cli::{ExportCommand, GlobalArgs};
use crate::datadir::DataDir;
use crate::serve::Engine;

pub async fn run(global: &GlobalArgs, command: ExportCommand) -> anyhow::Result<()> {
    let dir = DataDir::new(&global.data_dir)?;
    let _lock = dir.lock_writer()?;
    let engine = Engine::open(&dir, &global.storage).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        ExportCommand::Events { tenant } => {
            let t = crate::tenant::find(&engine.meta, &tenant).await?;
            let mut events = engine
                .store
                .scan_events(t.id)
                .await
                .context("reading events")?;
            events.sort_by_key(|e| (e.timestamp, e.uuid));
            for e in &events {
                serde_json::to_writer(&mut out, &event_json(e))?;
                out.write_all(b"\n")?;
            }
        }
        ExportCommand::Person {
            tenant,
            distinct_id,
        } => {
            let t = crate::tenant::find(&engine.meta, &tenant).await?;
            let Some(person) = engine
                .meta
                .person_for_distinct_id(t.id, &distinct_id)
                .await?
            else {
                anyhow::bail!("no person has the distinct id {distinct_id:?} in tenant {tenant:?}");
            };
            serde_json::to_writer_pretty(&mut out, &person)?;
            out.write_all(b"\n")?;
        }
        ExportCommand::Groups { tenant } => {
            let t = crate::tenant::find(&engine.meta, &tenant).await?;
            let mut all = Vec::new();
            for group_type in engine.meta.group_types(t.id).await? {
                let mut after: Option<String> = None;
                loop {
                    let page = engine
                        .meta
                        .groups(
                            t.id,
                            &group_type,
                            after.as_deref(),
                            tally_meta::MAX_PAGE_SIZE,
                        )
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.key.clone());
                    all.extend(page);
                }
            }
            serde_json::to_writer_pretty(&mut out, &all)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn event_json(e: &Event) -> serde_json::Value {
    let mut v = json!({
        "uuid": e.uuid.to_string(),
        "event": e.event,
        "distinct_id": e.distinct_id,
        "timestamp": format_micros(e.timestamp),
        "received_at": format_micros(e.received_at),
        "properties": e.properties,
    });
    if !e.person_set.is_empty() {
        v["$set"] = json!(e.person_set);
    }
    if !e.person_set_once.is_empty() {
        v["$set_once"] = json!(e.person_set_once);
    }
    v
}
