//! `tally tenant ...` and `tally operator-key ...`: tenant and key administration.
//!
//! These commands talk to the metadata database directly. SQLite runs in WAL mode, so
//! they work while `tally serve` is running; the server picks up new tenants on the
//! first request that uses their key.

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;
use tally_meta::{MetaStore, SqliteMeta, Tenant};

use crate::cli::{GlobalArgs, OperatorKeyCommand, TenantCommand};
use crate::datadir::DataDir;

pub async fn open_meta(global: &GlobalArgs) -> anyhow::Result<Arc<SqliteMeta>> {
    let dir = DataDir::new(&global.data_dir)?;
    let meta = SqliteMeta::open(&dir.meta_db())
        .await
        .with_context(|| format!("opening the metadata database in {}", dir.root.display()))?;
    Ok(Arc::new(meta))
}

pub async fn run(global: &GlobalArgs, command: TenantCommand) -> anyhow::Result<()> {
    let meta = open_meta(global).await?;
    match command {
        TenantCommand::Create { name, json } => {
            let created = meta.create_tenant(&name).await?;
            let t = &created.tenant;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "id": t.id,
                        "name": t.name,
                        "write_key": t.write_key,
                        "secret_key": created.secret_key,
                    }))?
                );
            } else {
                println!("Tenant created. The secret key is shown only now: store it safely.\n");
                print_rows(&[
                    ("id", t.id.to_string()),
                    ("name", t.name.clone()),
                    ("write key (public)", t.write_key.clone()),
                    ("secret key (read)", created.secret_key.clone()),
                ]);
            }
        }
        TenantCommand::List { json } => {
            let tenants = meta.list_tenants().await?;
            if json {
                let list: Vec<_> = tenants.iter().map(tenant_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if tenants.is_empty() {
                println!("No tenants yet. Create one with `tally tenant create NAME`.");
            } else {
                println!("{:<6} {:<24} {:<42} ATTRIBUTES", "ID", "NAME", "WRITE KEY");
                for t in &tenants {
                    let attrs: Vec<String> = t
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!(
                        "{:<6} {:<24} {:<42} {}",
                        t.id,
                        t.name,
                        t.write_key,
                        attrs.join(" ")
                    );
                }
            }
        }
        TenantCommand::Show { name, json } => {
            let t = find(&meta, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenant_json(&t))?);
            } else {
                let mut rows = vec![
                    ("id", t.id.to_string()),
                    ("name", t.name.clone()),
                    ("write key (public)", t.write_key.clone()),
                    ("timezone", t.timezone.clone()),
                    ("created", t.created_at.to_rfc3339()),
                ];
                for (k, v) in &t.attributes {
                    rows.push((k.as_str(), v.clone()));
                }
                print_rows(&rows);
            }
        }
        TenantCommand::Set { name, assignments } => {
            let t = find(&meta, &name).await?;
            let mut set = Vec::new();
            let mut unset = Vec::new();
            for a in &assignments {
                let Some((k, v)) = a.split_once('=') else {
                    bail!("expected key=value (or key= to remove), got {a:?}");
                };
                let k = k.trim();
                if k.is_empty() {
                    bail!("attribute name missing in {a:?}");
                }
                if k == "timezone" {
                    meta.set_tenant_timezone(t.id, v.trim()).await?;
                } else if v.is_empty() {
                    unset.push(k.to_string());
                } else {
                    set.push((k.to_string(), v.to_string()));
                }
            }
            let t = meta.set_tenant_attributes(t.id, &set, &unset).await?;
            println!("{}", serde_json::to_string_pretty(&tenant_json(&t))?);
        }
        TenantCommand::RotateSecret { name, json } => {
            let t = find(&meta, &name).await?;
            let secret = meta.rotate_secret_key(t.id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"id": t.id, "name": t.name, "secret_key": secret})
                    )?
                );
            } else {
                println!(
                    "New secret key for {} (the old one no longer works):\n{secret}",
                    t.name
                );
            }
        }
    }
    Ok(())
}

pub async fn run_operator_key(
    global: &GlobalArgs,
    command: OperatorKeyCommand,
) -> anyhow::Result<()> {
    let meta = open_meta(global).await?;
    match command {
        OperatorKeyCommand::Create { label } => {
            let key = meta.create_operator_key(&label).await?;
            println!(
                "Operator key for {label:?} (shown only now; it can query across all tenants):\n{key}"
            );
        }
        OperatorKeyCommand::List { json } => {
            let keys = meta.list_operator_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!(
                    "No operator keys. Create one with `tally operator-key create --label NAME`."
                );
            } else {
                println!("{:<6} {:<32} CREATED", "ID", "LABEL");
                for k in &keys {
                    println!(
                        "{:<6} {:<32} {}",
                        k.id,
                        k.label,
                        k.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
        }
        OperatorKeyCommand::Revoke { id } => match meta.revoke_operator_key(id).await? {
            Some(key) => println!("Revoked operator key {id} ({:?}).", key.label),
            None => bail!("no operator key with id {id}; `tally operator-key list` shows them"),
        },
    }
    Ok(())
}

pub async fn find(meta: &SqliteMeta, name: &str) -> anyhow::Result<Tenant> {
    match meta.tenant_by_name(name).await? {
        Some(t) => Ok(t),
        None => bail!("no tenant named {name:?}; `tally tenant list` shows the tenants"),
    }
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "write_key": t.write_key,
        "timezone": t.timezone,
        "created_at": t.created_at.to_rfc3339(),
        "attributes": t.attributes,
    })
}

fn print_rows(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}
