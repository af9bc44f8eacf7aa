//! Measures bulk loading, compaction and a typical query on generated events shaped
//! like the demo's (~25 properties each).
//!
//! `cargo run -p tally-store --example bulk_load -- [events] [zstd1|zstd3|lz4]`
//! (debug profile numbers understate release throughput severalfold).

use std::time::Instant;

use serde_json::json;
use tally_core::time::{MICROS_PER_DAY, now_micros};
use tally_core::{Event, EventBatch, Properties, TenantId};
use tally_store::{Codec, EmbeddedStore, StoreConfig};

const TENANTS: u32 = 5;
const DAYS: i64 = 90;

fn generate(tenant: u32, count: usize, seed: u64) -> Vec<Event> {
    let now = now_micros();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = [
        "$pageview",
        "$autocapture",
        "signed_up",
        "purchase",
        "$screen",
        "invite_sent",
    ];
    let browsers = ["Chrome", "Safari", "Firefox", "Edge"];
    let countries = ["US", "DE", "FR", "IN", "BR", "JP", "GB"];
    (0..count)
        .map(|_| {
            let r = next();
            let person = r % 20_000;
            let mut p = Properties::new();
            p.insert(
                "$browser".into(),
                json!(browsers[(r >> 8) as usize % browsers.len()]),
            );
            p.insert(
                "$os".into(),
                json!(if r & 1 == 0 { "Mac OS X" } else { "Windows" }),
            );
            p.insert("$device_type".into(), json!("Desktop"));
            p.insert(
                "$current_url".into(),
                json!(format!("https://app.example.com/page/{}", (r >> 12) % 500)),
            );
            p.insert(
                "$pathname".into(),
                json!(format!("/page/{}", (r >> 12) % 500)),
            );
            p.insert("$host".into(), json!("app.example.com"));
            p.insert("$referrer".into(), json!("https://google.com/"));
            p.insert("$lib".into(), json!("web"));
            p.insert("$lib_version".into(), json!("1.130.0"));
            p.insert("$screen_width".into(), json!(1440 + (r % 4) * 160));
            p.insert("$screen_height".into(), json!(900));
            p.insert(
                "$geoip_country_code".into(),
                json!(countries[(r >> 20) as usize % countries.len()]),
            );
            p.insert(
                "$geoip_city_name".into(),
                json!(format!("City {}", (r >> 24) % 300)),
            );
            p.insert(
                "$ip".into(),
                json!(format!(
                    "10.{}.{}.{}",
                    (r >> 8) % 256,
                    (r >> 16) % 256,
                    (r >> 24) % 256
                )),
            );
            p.insert(
                "$session_id".into(),
                json!(format!("s-{person}-{}", (r >> 30) % 50)),
            );
            p.insert(
                "plan".into(),
                json!(["free", "pro", "enterprise"][(person % 3) as usize]),
            );
            p.insert("amount".into(), json!(((r >> 33) % 10_000) as f64 / 100.0));
            p.insert("quantity".into(), json!((r >> 40) % 10));
            p.insert("is_trial".into(), json!(r & 2 == 0));
            p.insert(
                "experiment".into(),
                json!(if r & 4 == 0 { "control" } else { "variant" }),
            );
            p.insert(
                "utm_source".into(),
                json!(["google", "twitter", "newsletter"][(r >> 44) as usize % 3]),
            );
            p.insert(
                "utm_campaign".into(),
                json!(format!("spring-{}", (r >> 46) % 12)),
            );
            p.insert("button_text".into(), json!("Get started"));
            p.insert("$el_text".into(), json!("Sign up"));
            p.insert("cart".into(), json!({"items": (r >> 50) % 5}));
            let timestamp = now - ((r >> 3) as i64 % (DAYS * MICROS_PER_DAY));
            Event {
                uuid: uuid::Uuid::now_v7(),
                event: names[(r >> 4) as usize % names.len()].into(),
                distinct_id: format!("user-{tenant}-{person}"),
                timestamp,
                received_at: timestamp,
                properties: p,
                person_set: Properties::new(),
                person_set_once: Properties::new(),
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let codec = match args.get(2).map(String::as_str) {
        None | Some("zstd1") => Codec::Zstd(1),
        Some("zstd3") => Codec::Zstd(3),
        Some("lz4") => Codec::Lz4,
        Some(other) => return Err(format!("unknown codec {other}").into()),
    };
    let dir = tempfile::tempdir()?;
    let mut config = StoreConfig::new(dir.path());
    config.codec = codec;
    let store = EmbeddedStore::open(config).await?;

    let per_tenant = total / TENANTS as usize;
    // Eight calls per tenant: eight level-0 files per partition, enough to trigger
    // compaction with the default thresholds.
    let chunk = (per_tenant / 8).max(1);
    let mut generate_time = std::time::Duration::ZERO;
    let started = Instant::now();
    for tenant in 1..=TENANTS {
        let mut done = 0;
        while done < per_tenant {
            let n = chunk.min(per_tenant - done);
            let g = Instant::now();
            let events = generate(tenant, n, (tenant as u64) << 32 | done as u64);
            generate_time += g.elapsed();
            store
                .bulk_write(vec![EventBatch {
                    tenant: TenantId(tenant),
                    events,
                }])
                .await?;
            done += n;
        }
    }
    let load = started.elapsed() - generate_time;
    let stats = store.stats();
    let bytes: u64 = stats.levels.values().map(|l| l.bytes).sum();
    let rows: u64 = stats.levels.values().map(|l| l.rows).sum();
    println!(
        "codec {codec:?}: bulk_write {rows} events in {:.2}s ({:.0} events/s, generation excluded), {} files, {:.1} bytes/event",
        load.as_secs_f64(),
        rows as f64 / load.as_secs_f64(),
        stats.levels.values().map(|l| l.files).sum::<usize>(),
        bytes as f64 / rows as f64
    );

    let started = Instant::now();
    let report = store.compact_once().await?;
    println!(
        "compact_once: {} partitions, {} -> {} files, {} rows in {:.2}s ({:.0} rows/s), {:.1} bytes/event after",
        report.partitions,
        report.input_files,
        report.output_files,
        report.output_rows,
        started.elapsed().as_secs_f64(),
        report.output_rows as f64 / started.elapsed().as_secs_f64(),
        report.bytes_written as f64 / report.output_rows.max(1) as f64,
    );

    // The ingest path: apply WAL-sized batches of live events, then flush.
    let live_dir = tempfile::tempdir()?;
    let live = EmbeddedStore::open(StoreConfig::new(live_dir.path())).await?;
    let mut batches = Vec::new();
    for (i, chunk) in generate(1, per_tenant, 7).chunks(100).enumerate() {
        let mut events = chunk.to_vec();
        for e in &mut events {
            e.received_at = now_micros();
        }
        batches.push((
            i as u64 + 1,
            EventBatch {
                tenant: TenantId(1),
                events,
            },
        ));
    }
    let started = Instant::now();
    for (lsn, batch) in &batches {
        live.apply(*lsn, batch)?;
    }
    let applied = started.elapsed();
    let started = Instant::now();
    let flushed = live.flush().await?;
    println!(
        "apply: {per_tenant} events in batches of 100 in {:.2}s ({:.0} events/s); flush of {} rows to {} files in {:.2}s",
        applied.as_secs_f64(),
        per_tenant as f64 / applied.as_secs_f64(),
        flushed.rows,
        flushed.files,
        started.elapsed().as_secs_f64()
    );

    let ctx = store.session_context_for(TenantId(1))?;
    let since = now_micros() - 30 * MICROS_PER_DAY;
    let sql = format!(
        r#"SELECT event, "prop:str:$browser" AS browser, count(*) AS n
           FROM events
           WHERE timestamp >= arrow_cast({since}, 'Timestamp(Microsecond, Some("UTC"))')
             AND "prop:str:plan" = 'pro'
           GROUP BY 1, 2 ORDER BY 3 DESC"#
    );
    for attempt in 0..2 {
        let started = Instant::now();
        let batches = ctx.sql(&sql).await?.collect().await?;
        let groups: usize = batches.iter().map(|b| b.num_rows()).sum();
        println!(
            "trend-like query on tenant 1 ({} events), run {attempt}: {groups} groups in {:.0} ms",
            per_tenant,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
