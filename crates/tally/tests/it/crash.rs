//! The crash test: acknowledged events survive SIGKILL exactly once.
//!
//! A client sends 200,000 events in batches and retries every failure with the same
//! event ids, while the server is killed with SIGKILL at random moments at least ten
//! times. Flushes and compactions run every few hundred milliseconds, so kills land in
//! the middle of them too. Afterwards every acknowledged event is stored exactly once
//! and nothing is stored that was not sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::harness::{Server, create_tenant, export_events};

const EVENTS: usize = 200_000;
const BATCH: usize = 500;
const MIN_KILLS: usize = 10;

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, write_key, _) = create_tenant(dir.path(), "crash");
    let mut server = Server::start(
        dir.path(),
        &[
            "--flush-interval-ms",
            "300",
            "--compaction-interval-ms",
            "500",
            "--compaction-min-files",
            "2",
        ],
    );
    let url = format!("{}/v1/events/batch", server.url());

    let uuids: Vec<String> = (0..EVENTS)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let bodies: Vec<String> = uuids
        .chunks(BATCH)
        .enumerate()
        .map(|(b, ids)| {
            let events: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    json!({
                        "uuid": id,
                        "event": if i % 7 == 0 { "signed_up" } else { "$pageview" },
                        "distinct_id": format!("user-{}", (b * BATCH + i) % 5000),
                        "timestamp": format!("2026-11-{:02}T10:00:00Z", 1 + (b % 20)),
                        "properties": { "batch": b, "i": i, "plan": if i % 2 == 0 { "free" } else { "pro" } },
                    })
                })
                .collect();
            json!({ "events": events }).to_string()
        })
        .collect();
    let batches = bodies.len();

    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<parking_lot::Mutex<HashSet<usize>>> = Default::default();
    let client = {
        let (done, acked) = (done.clone(), acked.clone());
        let write_key = write_key.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                // Four batches in flight at a time, each retried until acknowledged.
                let next = Arc::new(AtomicUsize::new(0));
                let mut workers = Vec::new();
                for _ in 0..4 {
                    let (http, next, bodies) = (http.clone(), next.clone(), bodies.clone());
                    let (acked, key) = (acked.clone(), write_key.clone());
                    let url = url.clone();
                    workers.push(tokio::spawn(async move {
                        loop {
                            let b = next.fetch_add(1, Ordering::SeqCst);
                            if b >= bodies.len() {
                                return;
                            }
                            loop {
                                let r = http
                                    .post(&url)
                                    .bearer_auth(&key)
                                    .header("content-type", "application/json")
                                    .body(bodies[b].clone())
                                    .send()
                                    .await;
                                match r {
                                    Ok(r) if r.status().is_success() => {
                                        let v: serde_json::Value =
                                            r.json().await.unwrap_or_default();
                                        assert_eq!(v["accepted"], json!(BATCH), "batch {b}: {v}");
                                        acked.lock().insert(b);
                                        break;
                                    }
                                    Ok(r) => {
                                        let status = r.status();
                                        assert!(
                                            status.is_server_error(),
                                            "batch {b}: unexpected {status}: {}",
                                            r.text().await.unwrap_or_default()
                                        );
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                                }
                            }
                        }
                    }));
                }
                for w in workers {
                    w.await.unwrap();
                }
            });
            done.store(true, Ordering::SeqCst);
        })
    };

    // Kill at random moments. The server lives 0.1-1.5 s after each start, so kills
    // land during requests, flushes (every 300 ms) and compactions (every 500 ms), and
    // they go on until the client is done and at least MIN_KILLS have happened.
    let mut rng = rand::rng();
    let mut kills = 0;
    while !done.load(Ordering::SeqCst) || kills < MIN_KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
        server.kill();
        kills += 1;
        server.restart();
    }
    client.join().expect("client thread");
    // One last kill with no chance to flush, then read what is on disk.
    server.kill();
    assert!(kills >= MIN_KILLS, "only {kills} kills");

    let acked = acked.lock().clone();
    assert_eq!(
        acked.len(),
        batches,
        "every batch is eventually acknowledged"
    );
    let stored = export_events(dir.path(), "crash");
    let sent: HashSet<&str> = uuids.iter().map(String::as_str).collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &stored {
        let id = e["uuid"].as_str().expect("uuid").to_string();
        assert!(
            sent.contains(id.as_str()),
            "stored an event that was never sent: {id}"
        );
        *counts.entry(id).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "events stored more than once: {duplicated:?}"
    );
    let missing = uuids.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged events are missing after {kills} kills"
    );
    assert_eq!(stored.len(), EVENTS);
    // Properties survive intact, not just ids.
    let sample = stored
        .iter()
        .find(|e| e["properties"]["i"] == json!(3))
        .expect("an event with i=3");
    assert_eq!(sample["properties"]["plan"], json!("pro"));
}
