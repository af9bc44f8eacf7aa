//! Load generator for the ingest benchmark.
//!
//! Sends batches of realistic events (~25 properties, ~1 KB each) to Tally's native
//! batch endpoint from many concurrent connections and reports acknowledged events per
//! second and acknowledgement latency percentiles. With `--rate` it paces requests at a
//! fixed rate and measures latency from each request's *scheduled* start, so a stalled
//! server cannot hide its stall by slowing the client down (coordinated omission).
//!
//! The client shares the machine with the server, so it avoids per-event work: request
//! bodies are built once from a template, and only each event's uuid (a fixed-width slot)
//! is rewritten per request, which keeps every event unique (the server dedups by uuid).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::Rng;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Tally base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The tenant's public write key.
    #[arg(long)]
    write_key: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Target events per second across all connections; 0 sends as fast as acks allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of warm-up excluded from the figures.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
}

/// A request body with the byte offsets of each event's 36-character uuid.
struct Template {
    body: Vec<u8>,
    uuid_offsets: Vec<usize>,
}

const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const SOURCES: [&str; 4] = ["google", "newsletter", "twitter", "direct"];
const UUID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

fn build_templates(batch_size: usize, count: usize) -> Vec<Template> {
    let mut rng = rand::rng();
    let browsers = ["Chrome", "Safari", "Firefox", "Edge"];
    let countries = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "NL"];
    let events = [
        "$pageview",
        "$pageview",
        "$pageview",
        "clicked_button",
        "signed_up",
        "purchase",
        "$autocapture",
    ];
    let paths = [
        "/",
        "/pricing",
        "/docs/getting-started",
        "/blog/launch",
        "/app/dashboard",
        "/app/settings",
    ];
    (0..count)
        .map(|_| {
            let batch: Vec<_> = (0..batch_size)
                .map(|i| {
                    let path = paths[rng.random_range(0..paths.len())];
                    json!({
                        "uuid": UUID_PLACEHOLDER,
                        "event": events[rng.random_range(0..events.len())],
                        "distinct_id": format!("user-{}", rng.random_range(0..200_000)),
                        "properties": {
                            "$current_url": format!("https://app.example.com{path}?ref=nav&i={i}"),
                            "$pathname": path,
                            "$host": "app.example.com",
                            "$referrer": "https://www.google.com/",
                            "$referring_domain": "www.google.com",
                            "$browser": browsers[rng.random_range(0..browsers.len())],
                            "$browser_version": rng.random_range(100..130),
                            "$os": "Mac OS X",
                            "$os_version": "14.4.1",
                            "$device_type": "Desktop",
                            "$screen_height": 1117,
                            "$screen_width": 1728,
                            "$viewport_height": 970,
                            "$viewport_width": 1728,
                            "$lib": "web",
                            "$lib_version": "1.130.0",
                            "$session_id": format!("0190b5a4-6d2e-7c3b-8f00-{:012x}", rng.random_range(0..1u64 << 40)),
                            "$window_id": format!("0190b5a4-6d2e-7c3b-9f00-{:012x}", rng.random_range(0..1u64 << 40)),
                            "$geoip_country_code": countries[rng.random_range(0..countries.len())],
                            "plan": PLANS[rng.random_range(0..PLANS.len())],
                            "utm_source": SOURCES[rng.random_range(0..SOURCES.len())],
                            "utm_campaign": "autumn-launch",
                            "amount": (rng.random_range(100..100_000) as f64) / 100.0,
                            "items": rng.random_range(1..10),
                            "is_trial": rng.random_bool(0.3),
                        }
                    })
                })
                .collect();
            let body = serde_json::to_vec(&json!({ "events": batch })).expect("serialising a JSON value cannot fail");
            let needle = UUID_PLACEHOLDER.as_bytes();
            let uuid_offsets = body.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
            Template { body, uuid_offsets }
        })
        .collect()
}

#[derive(Default)]
struct Counters {
    acked_events: AtomicU64,
    requests_ok: AtomicU64,
    requests_503: AtomicU64,
    requests_failed: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch_size == 0 || args.concurrency == 0 {
        bail!("--batch-size and --concurrency must be positive");
    }
    let templates = Arc::new(build_templates(args.batch_size, 64));
    let avg_event_bytes = templates[0].body.len() / args.batch_size;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let endpoint = format!("{}/v1/events/batch", args.url.trim_end_matches('/'));
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let end = start + warmup + Duration::from_secs(args.seconds);
    // Requests per second per connection when paced.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.concurrency as f64 * args.batch_size as f64 / args.rate as f64)
    });

    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let key = args.write_key.clone();
        let templates = templates.clone();
        let counters = counters.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut next = start
                + interval
                    .map(|i| i.mul_f64(worker as f64 / 64.0))
                    .unwrap_or_default();
            let mut n = worker;
            while Instant::now() < end {
                let scheduled = match interval {
                    Some(i) => {
                        tokio::time::sleep_until(next.into()).await;
                        let s = next;
                        next += i;
                        s
                    }
                    None => Instant::now(),
                };
                let template = &templates[n % templates.len()];
                n += 1;
                let mut body = template.body.clone();
                for &offset in &template.uuid_offsets {
                    let id = uuid::Uuid::now_v7();
                    id.hyphenated().encode_lower(&mut body[offset..offset + 36]);
                }
                let response = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .bearer_auth(&key)
                    .body(body)
                    .send()
                    .await;
                let measured = scheduled >= start + warmup;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        if measured {
                            latencies.push(scheduled.elapsed());
                            counters
                                .acked_events
                                .fetch_add(template.uuid_offsets.len() as u64, Ordering::Relaxed);
                            counters.requests_ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) if r.status().as_u16() == 503 => {
                        counters.requests_503.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => {
                        counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        eprintln!("request failed: {status} {text}");
                    }
                    Err(e) => {
                        counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request error: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.context("worker panicked")?);
    }
    let measured_secs = (Instant::now() - start - warmup).as_secs_f64();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    let acked = counters.acked_events.load(Ordering::Relaxed);
    let report = json!({
        "target_rate": args.rate,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "avg_event_bytes": avg_event_bytes,
        "seconds": measured_secs,
        "acked_events": acked,
        "events_per_second": (acked as f64 / measured_secs).round(),
        "requests_ok": counters.requests_ok.load(Ordering::Relaxed),
        "requests_503": counters.requests_503.load(Ordering::Relaxed),
        "requests_failed": counters.requests_failed.load(Ordering::Relaxed),
        "latency_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
