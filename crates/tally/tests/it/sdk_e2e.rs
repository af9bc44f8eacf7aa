//! End-to-end with the real SDKs: the unmodified `posthog-node` and
//! `@segment/analytics-node` packages from npm (installed by scripts/setup-e2e.sh) send
//! to a running `tally serve`; then the events, identities and properties that landed
//! are checked.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Server, create_tenant, export_events, tally};

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e")
}

#[test]
fn posthog_and_segment_sdks_deliver_events_identities_and_properties() {
    let e2e = e2e_dir();
    assert!(
        e2e.join("node_modules/posthog-node").exists()
            && e2e.join("node_modules/@segment/analytics-node").exists(),
        "SDK packages missing: run ./scripts/setup-e2e.sh (the test command does)"
    );
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
