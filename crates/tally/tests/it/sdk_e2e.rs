//! End-to-end with the real SDKs, unmodified, as published: they send to a running
//! `tally serve`, then the events, identities and properties that landed are checked
//! through `tally export`.
//!
//! - this module: `posthog-node` and `@segment/analytics-node` from npm;
//! - [`python`]: `posthog` and `segment-analytics-python` from PyPI, through a proxy
//!   that loses a response so the SDKs retry (dedup);
//! - [`browser`]: `posthog-js` in headless Chromium driven by `playwright-core`.
//!
//! `scripts/setup-e2e.sh` installs all of it (`scripts/test.sh` runs it first). Outside
//! CI a test whose tools are missing prints why and passes without running; in CI
//! (`CI=true`) a missing tool fails it, so CI can never go green without the SDKs.
//! The driver scripts live in `tests/e2e/`; each prints a one-line JSON summary of
//! what it sent and saw on the wire, which the tests check alongside the export.

mod browser;
mod python;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{Server, create_tenant, export_events, tally};

/// `tests/e2e/`: the driver scripts and the SDK packages installed beside them.
fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e")
}

/// CI sets `CI=true` (`.ci/run`); there a missing SDK is a broken setup, not a skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `test` can run: `missing` lists what is absent. Outside CI a missing tool
/// skips the test with the reason printed; in CI it fails the test.
fn tools_present(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join("; ");
    assert!(
        !in_ci(),
        "{test}: {reason}. CI=true, so this is a failure, not a skip: \
         scripts/setup-e2e.sh must install it"
    );
    eprintln!(
        "SKIPPED {test}: {reason}. Run ./scripts/setup-e2e.sh (scripts/test.sh does) \
         to install the SDKs and run it."
    );
    false
}

/// Whether `program args...` runs and exits 0 (a tool is on PATH and works).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Node packages of `tests/e2e/node_modules` that are not installed.
fn missing_node_packages(packages: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if !runs("node", &["--version"]) {
        missing.push("`node` is not on PATH".to_string());
    }
    for package in packages {
        if !e2e_dir().join("node_modules").join(package).exists() {
            missing.push(format!(
                "npm package {package} is not in tests/e2e/node_modules"
            ));
        }
    }
    missing
}

/// Runs a driver script to completion and returns its summary, the last line it
/// printed on stdout; panics with both streams if it fails.
fn run_driver(command: &mut Command) -> Value {
    let out = command.output().expect("spawning the SDK driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK driver {command:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let summary = last.and_then(|l| serde_json::from_str(l).ok());
    summary.unwrap_or_else(|| {
        panic!("SDK driver printed no JSON summary:\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}

/// A person's distinct ids, as exported.
fn distinct_ids(person: &Value) -> Vec<String> {
    person["distinct_ids"]
        .as_array()
        .expect("person has distinct_ids")
        .iter()
        .map(|v| v.as_str().expect("distinct id is a string").to_string())
        .collect()
}

/// The person a distinct id belongs to (the server must be stopped).
fn export_person(data_dir: &std::path::Path, tenant: &str, distinct_id: &str) -> Value {
    serde_json::from_str(&tally(
        data_dir,
        &["export", "person", "--tenant", tenant, distinct_id],
    ))
    .expect("person JSON")
}

#[test]
fn posthog_and_segment_sdks_deliver_events_identities_and_properties() {
    let e2e = e2e_dir();
    let missing = missing_node_packages(&["posthog-node", "@segment/analytics-node"]);
    if !tools_present("node SDK e2e", &missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, write_key, _) = create_tenant(dir.path(), "sdk");
    let mut server = Server::start(dir.path(), &[]);
    let run = "r1";
    let out = Command::new("node")
        .arg(e2e.join("send_with_sdks.mjs"))
        .env("TALLY_URL", server.url())
        .env("TALLY_WRITE_KEY", &write_key)
        .env("RUN_ID", run)
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();

    let events = export_events(dir.path(), "sdk");
    let by_name = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["event"] == json!(name))
            .collect()
    };

    // PostHog: capture with properties, library enrichment, $set on identify.
    let pageview = by_name("$pageview");
    let ph_pageview = pageview
        .iter()
        .find(|e| e["distinct_id"] == json!("ph-anon-r1"))
        .expect("posthog pageview");
    assert_eq!(
        ph_pageview["properties"]["$current_url"],
        json!("https://example.com/pricing")
    );
    assert_eq!(ph_pageview["properties"]["$lib"], json!("posthog-node"));
    let signup = by_name("clicked_signup");
    assert_eq!(signup.len(), 1);
    assert_eq!(signup[0]["properties"]["amount"], json!(12.5));
    let purchase = by_name("purchase");
    assert_eq!(purchase.len(), 1);
    assert_eq!(purchase[0]["distinct_id"], json!("ph-user-r1"));
    assert_eq!(
        purchase[0]["properties"]["$groups"]["company"],
        json!("co-r1")
    );
    assert_eq!(by_name("$identify").len(), 2, "one identify from each SDK");
    assert_eq!(by_name("$create_alias").len(), 2);
    assert_eq!(by_name("$groupidentify").len(), 2);

    // Segment: track, page, screen, with messageId as the dedup key.
    let order = by_name("Order Completed");
    assert_eq!(order.len(), 1);
    assert_eq!(order[0]["properties"]["revenue"], json!(49));
    assert_eq!(
        order[0]["uuid"],
        json!(
            tally_core::event::uuid_from_dedup_key(tally_core::TenantId(1), "seg-msg-r1")
                .to_string()
        )
    );
    assert_eq!(
        order[0]["properties"]["$lib"],
        json!("@segment/analytics-node")
    );
    assert_eq!(
        by_name("Viewed Docs")[0]["distinct_id"],
        json!("seg-anon-r1")
    );
    assert!(
        pageview
            .iter()
            .any(|e| e["distinct_id"] == json!("seg-user-r1")),
        "segment page -> $pageview"
    );
    assert_eq!(
        by_name("$screen")[0]["properties"]["$screen_name"],
        json!("Home")
    );

    // Identities: the anonymous ids and aliases point at the identified person.
    let ph: Value = serde_json::from_str(&tally(
        dir.path(),
        &["export", "person", "--tenant", "sdk", "ph-anon-r1"],
    ))
    .unwrap();
    let ids: Vec<&str> = ph["distinct_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in ["ph-anon-r1", "ph-user-r1", "ph-alias-r1"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert_eq!(ph["properties"]["email"], json!("r1@example.com"));
    assert_eq!(ph["properties"]["plan"], json!("pro"));
    assert_eq!(ph["properties"]["first_seen_via"], json!("sdk"));
    assert_eq!(ph["is_identified"], json!(true));

    let seg: Value = serde_json::from_str(&tally(
        dir.path(),
        &["export", "person", "--tenant", "sdk", "seg-old-r1"],
    ))
    .unwrap();
    let ids: Vec<&str> = seg["distinct_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in ["seg-anon-r1", "seg-user-r1", "seg-old-r1"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert_eq!(seg["properties"]["plan"], json!("team"));

    // Groups.
    let groups: Value =
        serde_json::from_str(&tally(dir.path(), &["export", "groups", "--tenant", "sdk"])).unwrap();
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["properties"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Acme Inc") && names.contains(&"Globex"),
        "groups: {groups}"
    );
}
