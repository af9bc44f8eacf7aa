//! The Python SDKs, `posthog` and `segment-analytics-python` from PyPI (pinned in
//! `tests/e2e/python/requirements.txt`, installed into `tests/e2e/.venv`), driven by
//! `tests/e2e/python/send_with_sdks.py` through a proxy that loses the response to each
//! SDK's first upload after Tally stored it. Both SDKs retry that upload; the events
//! must land exactly once.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Value, json};
use tally_core::TenantId;
use tally_core::event::uuid_from_dedup_key;

use super::{distinct_ids, e2e_dir, export_person, run_driver, tools_present};
use crate::harness::{Server, create_tenant, export_events, tally};

/// What the venv lacks for this test, if anything.
fn missing_python_sdks() -> Vec<String> {
    let python = e2e_dir().join(".venv/bin/python");
    if !python.exists() {
        return vec![format!("no Python venv at {}", python.display())];
    }
    let imports = Command::new(&python)
        .args(["-c", "import posthog, segment.analytics"])
        .output();
    match imports {
        Ok(out) if out.status.success() => Vec::new(),
        Ok(out) => vec![format!(
            "the venv cannot import posthog / segment.analytics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )],
        Err(e) => vec![format!("cannot run {}: {e}", python.display())],
    }
}

/// The events an SDK sent, by `$lib`.
fn by_lib<'a>(events: &'a [Value], lib: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["properties"]["$lib"] == json!(lib))
        .collect()
}

fn named<'a>(events: &[&'a Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .copied()
        .filter(|e| e["event"] == json!(name))
        .collect()
}

/// Checks what the proxy saw of one SDK: at least two uploads (the lost one and its
/// retry), every one answered 200 by Tally, gzip as configured, and the retry carrying
/// every event of the lost upload again. Returns the lost upload's dedup ids.
fn check_retried(summary: &Value, sdk: &str, user_agent_prefix: &str) -> Vec<String> {
    let seen = &summary["proxy"][sdk];
    assert!(
        seen["uploads"].as_u64().unwrap_or(0) >= 2,
        "{sdk}: expected the lost upload and a retry, proxy saw {seen}"
    );
    for status in seen["statuses"].as_array().expect("statuses") {
        assert_eq!(
            status,
            &json!(200),
            "{sdk}: Tally refused an upload: {seen}"
        );
    }
    for encoding in seen["content_encodings"].as_array().expect("encodings") {
        assert_eq!(
            encoding,
            &json!("gzip"),
            "{sdk}: gzip=True was not sent: {seen}"
        );
    }
    for agent in seen["user_agents"].as_array().expect("user agents") {
        assert!(
            agent.as_str().unwrap_or("").starts_with(user_agent_prefix),
            "{sdk}: unexpected User-Agent {agent}"
        );
    }
    let lost: Vec<String> = seen["lost_upload_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{sdk}: the proxy lost no upload: {seen}"))
        .iter()
        .map(|id| id.as_str().expect("dedup id").to_string())
        .collect();
    assert!(!lost.is_empty(), "{sdk}: the lost upload held no events");
    let retried: Vec<&str> = seen["retried_ids"]
        .as_array()
        .expect("retried ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for id in &lost {
        assert!(
            retried.contains(&id.as_str()),
            "{sdk}: {id} from the lost upload was never retried: {seen}"
        );
    }
    lost
}

#[test]
fn python_sdks_deliver_each_event_once_through_a_lost_response() {
    if !tools_present("python SDK e2e", &missing_python_sdks()) {
        return;
    }
    let e2e = e2e_dir();
    let dir = tempfile::tempdir().unwrap();
    let (tenant_id, write_key, _) = create_tenant(dir.path(), "py");
    let tenant = TenantId(u32::try_from(tenant_id).unwrap());
    let mut server = Server::start(dir.path(), &[]);
    let run = "p1";
    let summary = run_driver(
        Command::new(e2e.join(".venv/bin/python"))
            .arg(e2e.join("python/send_with_sdks.py"))
            .env("TALLY_URL", server.url())
            .env("TALLY_WRITE_KEY", &write_key)
            .env("RUN_ID", run),
    );
    server.stop();
    eprintln!(
        "python SDKs: posthog {} / segment-analytics-python {}",
        summary["sdk_versions"]["posthog"], summary["sdk_versions"]["segment"]
    );

    let events = export_events(dir.path(), "py");

    // Dedup: each SDK's lost upload was stored, then retried in full; every event
    // in it is stored exactly once, and nothing at all is stored twice.
    let mut count_by_uuid: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *count_by_uuid
            .entry(e["uuid"].as_str().expect("uuid"))
            .or_default() += 1;
    }
    let doubled: Vec<_> = count_by_uuid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
    for (sdk, agent) in [
        ("posthog", "posthog-python/"),
        ("segment", "analytics-python/"),
    ] {
        for id in check_retried(&summary, sdk, agent) {
            // Tally's dedup key: the id itself when it is a UUID, else its v5 hash.
            let uuid = uuid_from_dedup_key(tenant, &id).to_string();
            assert_eq!(
                count_by_uuid.get(uuid.as_str()).copied(),
                Some(1),
                "{sdk} event {id} (uuid {uuid}) of the lost upload"
            );
        }
    }

    // --- posthog (Python): capture, $identify, set/set_once, alias, group_identify.
    let ph = by_lib(&events, "posthog-python");
    assert_eq!(ph.len(), 8, "posthog-python events: {ph:#?}");
    for e in &ph {
        assert_eq!(
            e["properties"]["$lib_version"], summary["sdk_versions"]["posthog"],
            "{e}"
        );
        // posthog-python sets $geoip_disable, so the server adds no $ip.
        assert_eq!(e["properties"]["$geoip_disable"], json!(true), "{e}");
        assert!(e["properties"].get("$ip").is_none(), "{e}");
    }
    let pageview = named(&ph, "$pageview");
    assert_eq!(pageview.len(), 1);
    assert_eq!(pageview[0]["distinct_id"], json!("py-anon-p1"));
    assert_eq!(
        pageview[0]["properties"]["$current_url"],
        json!("https://example.com/pricing")
    );
    let signup = named(&ph, "clicked_signup");
    assert_eq!(signup.len(), 1);
    assert_eq!(signup[0]["properties"]["amount"], json!(12.5));
    assert_eq!(signup[0]["properties"]["tags"], json!(["a", "b"]));
    assert_eq!(signup[0]["properties"]["nested"], json!({"depth": 1}));
    let identify = named(&ph, "$identify");
    assert_eq!(identify.len(), 1);
    assert_eq!(identify[0]["distinct_id"], json!("py-user-p1"));
    assert_eq!(
        identify[0]["properties"]["$anon_distinct_id"],
        json!("py-anon-p1")
    );
    // $set / $set_once sent inside properties are stored as the event's person updates.
    assert_eq!(identify[0]["$set"]["email"], json!("p1@example.com"));
    assert_eq!(identify[0]["$set_once"]["first_seen_via"], json!("python"));
    assert_eq!(named(&ph, "$set")[0]["$set"]["plan"], json!("pro"));
    assert_eq!(
        named(&ph, "$create_alias")[0]["properties"]["alias"],
        json!("py-alias-p1")
    );
    let purchase = named(&ph, "purchase");
    assert_eq!(purchase.len(), 1);
    assert_eq!(purchase[0]["properties"]["amount"], json!(99.9));
    assert_eq!(
        purchase[0]["properties"]["$groups"]["company"],
        json!("py-co-p1")
    );
    assert_eq!(
        named(&ph, "$groupidentify")[0]["properties"]["$group_key"],
        json!("py-co-p1")
    );

    let person = export_person(dir.path(), "py", "py-anon-p1");
    let ids = distinct_ids(&person);
    for id in ["py-anon-p1", "py-user-p1", "py-alias-p1"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    assert_eq!(person["properties"]["email"], json!("p1@example.com"));
    assert_eq!(person["properties"]["plan"], json!("pro"));
    // set_once after the $identify's $set_once does not overwrite it.
    assert_eq!(person["properties"]["first_seen_via"], json!("python"));
    assert_eq!(person["is_identified"], json!(true));

    // --- segment-analytics-python: track, identify, alias, group, page, screen.
    let seg = by_lib(&events, "analytics-python");
    assert_eq!(seg.len(), 7, "analytics-python events: {seg:#?}");
    for e in &seg {
        assert_eq!(
            e["properties"]["$lib_version"], summary["sdk_versions"]["segment"],
            "{e}"
        );
        assert_eq!(e["properties"]["$ip"], json!("127.0.0.1"), "{e}");
    }
    let docs = named(&seg, "Viewed Docs");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["distinct_id"], json!("py-seg-anon-p1"));
    assert_eq!(docs[0]["properties"]["section"], json!("api"));
    let order = named(&seg, "Order Completed");
    assert_eq!(order.len(), 1);
    assert_eq!(order[0]["properties"]["revenue"], json!(49));
    assert_eq!(
        order[0]["uuid"],
        json!(uuid_from_dedup_key(tenant, "py-seg-msg-p1").to_string()),
        "a messageId that is not a UUID is hashed into the dedup uuid"
    );
    let page = named(&seg, "$pageview");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["distinct_id"], json!("py-seg-user-p1"));
    assert_eq!(
        page[0]["properties"]["$current_url"],
        json!("https://example.com/pricing")
    );
    assert_eq!(page[0]["properties"]["$pathname"], json!("/pricing"));
    assert_eq!(
        named(&seg, "$screen")[0]["properties"]["$screen_name"],
        json!("Home")
    );
    let seg_identify = named(&seg, "$identify");
    assert_eq!(
        seg_identify[0]["properties"]["$anon_distinct_id"],
        json!("py-seg-anon-p1")
    );
    assert_eq!(seg_identify[0]["$set"]["plan"], json!("team"));

    let seg_person = export_person(dir.path(), "py", "py-seg-old-p1");
    let ids = distinct_ids(&seg_person);
    for id in ["py-seg-anon-p1", "py-seg-user-p1", "py-seg-old-p1"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    assert_eq!(seg_person["properties"]["plan"], json!("team"));
    assert_eq!(
        seg_person["properties"]["email"],
        json!("py-seg-p1@example.com")
    );

    // Groups from both SDKs.
    let groups: Value =
        serde_json::from_str(&tally(dir.path(), &["export", "groups", "--tenant", "py"])).unwrap();
    let group = |key: &str| -> Value {
        groups
            .as_array()
            .expect("groups array")
            .iter()
            .find(|g| g["key"] == json!(key))
            .cloned()
            .unwrap_or_else(|| panic!("group {key} missing: {groups}"))
    };
    let initech = group("py-co-p1");
    assert_eq!(initech["group_type"], json!("company"));
    assert_eq!(initech["properties"]["name"], json!("Initech"));
    assert_eq!(initech["properties"]["employees"], json!(7));
    assert_eq!(group("py-seg-co-p1")["properties"]["name"], json!("Hooli"));
}
