//! The browser SDK: `posthog-js` (its `dist/array.js`, the build a `<script>` tag
//! loads) on a page served from a second localhost origin, in headless Debian
//! Chromium driven by `playwright-core`, by `tests/e2e/browser/drive_posthog_js.mjs`.
//! Every request is a real cross-origin one (CORS, a preflight for JSON bodies),
//! encoded however posthog-js chooses; the user-agent properties are left to Tally to
//! parse. posthog-js also fetches its remote config (`/array/<key>/config.js`) from
//! Tally: the test checks that it is answered, that nothing the page asked for failed,
//! and that posthog-js, told that Tally decodes `gzip-js`, gzips every capture.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::{
    distinct_ids, e2e_dir, export_person, missing_node_packages, run_driver, runs, tools_present,
};
use crate::harness::{Server, create_tenant, export_events};

/// The Chromium binary: `$CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn missing_browser_tools() -> Vec<String> {
    let mut missing = missing_node_packages(&["posthog-js", "playwright-core"]);
    let chromium = chromium();
    if !runs(&chromium.to_string_lossy(), &["--version"]) {
        missing.push(format!(
            "no runnable Chromium at {} (Debian package `chromium`; or set CHROMIUM)",
            chromium.display()
        ));
    }
    missing
}

/// The first dot-separated component of a version string.
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

#[test]
fn posthog_js_in_chromium_delivers_enriched_events_and_merges_the_visitor() {
    if !tools_present("browser SDK e2e", &missing_browser_tools()) {
        return;
    }
    let e2e = e2e_dir();
    let dir = tempfile::tempdir().unwrap();
    let (_, write_key, _) = create_tenant(dir.path(), "web");
    let mut server = Server::start(dir.path(), &[]);
    let run = "b1";
    let summary = run_driver(
        Command::new("node")
            .arg(e2e.join("browser/drive_posthog_js.mjs"))
            .env("TALLY_URL", server.url())
            .env("TALLY_WRITE_KEY", &write_key)
            .env("RUN_ID", run)
            .env("CHROMIUM", chromium()),
    );
    server.stop();

    let sdk_version = summary["posthog_js_version"].as_str().expect("version");
    let browser_version = summary["browser_version"].as_str().expect("browser");
    let site = summary["site_origin"].as_str().expect("site origin");
    let anon = summary["anon_distinct_id"].as_str().expect("anonymous id");
    let user_agent = summary["user_agent"].as_str().expect("user agent");
    assert_eq!(summary["identified_distinct_id"], json!("web-user-b1"));
    assert_eq!(summary["page_errors"], json!([]), "the page threw");

    // What the page saw fail: no 4xx/5xx on any of its requests (the remote config
    // script included), no failed request, no console error (posthog-js logs a failed
    // config or flags request there).
    assert_eq!(
        summary["http_errors"],
        json!([]),
        "requests failed in the page"
    );
    assert_eq!(
        summary["console_errors"],
        json!([]),
        "the page logged errors"
    );
    // posthog-js adopted the compression the remote config offered.
    assert_eq!(summary["sdk_compression"], json!("gzip-js"), "{summary}");

    // The wire, as the driver's tap between the browser and Tally saw it; logged for
    // the reader of the test output (which encodings posthog-js chose).
    let requests = summary["requests"].as_array().expect("requests");
    let mut wire_uuids: Vec<&str> = Vec::new();
    let mut config_answered_ms: Option<u64> = None;
    for r in requests {
        eprintln!(
            "posthog-js {sdk_version} in Chromium {browser_version}: {} {}{} ({}) \
             content-type={} compression={} body={} -> {} cors={} events={}",
            r["method"].as_str().unwrap_or("?"),
            r["path"].as_str().unwrap_or("?"),
            r["query"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or("?"),
            r["content_type"],
            r["compression"],
            r["body_encoding"],
            r["status"],
            r["cors_allow_origin"],
            r["events"]
        );
        assert!(
            r.get("failure").is_none(),
            "the tap could not reach Tally: {r}"
        );
        let events = r["events"].as_array().expect("events");
        if r["method"] == json!("OPTIONS") {
            // The preflight of a JSON capture: answered, and the page's origin allowed.
            assert_eq!(r["status"], json!(204), "preflight {r}");
            assert_eq!(r["origin"], json!(site), "{r}");
            assert_eq!(r["cors_allow_origin"], json!(site), "CORS on {r}");
            continue;
        }
        if r["kind"] != json!("capture") {
            // Remote config and flags: answered, with CORS. The config script is a
            // plain `<script src>` load, which sends no Origin and gets `*`.
            assert_eq!(r["status"], json!(200), "{r}");
            let allowed = if r["origin"].is_null() {
                json!("*")
            } else {
                json!(site)
            };
            assert_eq!(r["cors_allow_origin"], allowed, "CORS on {r}");
            if r["method"] == json!("POST") {
                // The flags request posthog-js sends after identify: gzip like captures.
                assert_eq!(
                    r["compression"],
                    json!("gzip"),
                    "flags body not gzipped: {r}"
                );
            }
            if r["kind"] == json!("remote_config") {
                let answered = r["answered_ms"].as_u64().expect("answered_ms");
                config_answered_ms = Some(config_answered_ms.map_or(answered, |t| t.min(answered)));
            }
            continue;
        }
        assert!(!events.is_empty(), "a capture with no events: {r}");
        assert_eq!(r["status"], json!(200), "capture refused: {r}");
        // posthog-js starts out with gzip and keeps it once the config confirms it, so
        // every capture is gzip — the unload sendBeacon too, which falls back to base64
        // only when posthog-js has no compression (as it had when the config was 404).
        assert_eq!(r["compression"], json!("gzip"), "capture not gzipped: {r}");
        assert_eq!(r["origin"], json!(site), "captures are cross-origin: {r}");
        assert_eq!(r["cors_allow_origin"], json!(site), "CORS on {r}");
        assert!(r.get("decode_error").is_none(), "{r}");
        for e in events {
            assert_eq!(
                e["ua_properties_sent"],
                json!([]),
                "posthog-js sent user-agent properties despite property_denylist: {e}"
            );
            wire_uuids.push(e["uuid"].as_str().expect("posthog-js sends a uuid"));
        }
    }

    let config_answered_ms =
        config_answered_ms.expect("posthog-js never fetched its remote config");
    // The config says `hasFeatureFlags: false`, so posthog-js skips flags at start-up,
    // but `identify()` reloads them: one `/flags/?v=2`, answered above with no flags.
    assert!(
        requests
            .iter()
            .any(|r| r["kind"] == json!("flags") && r["status"] == json!(200)),
        "posthog-js's flags reload after identify did not reach Tally: {requests:#?}"
    );
    let captures_after_config = requests
        .iter()
        .filter(|r| r["kind"] == json!("capture") && r["method"] == json!("POST"))
        .filter(|r| {
            r["arrived_ms"]
                .as_u64()
                .is_some_and(|t| t > config_answered_ms)
        })
        .count();
    assert!(
        captures_after_config > 0,
        "no capture was sent after the remote config arrived: {requests:#?}"
    );

    let events = export_events(dir.path(), "web");
    let web: Vec<&Value> = events
        .iter()
        .filter(|e| e["properties"]["$lib"] == json!("web"))
        .collect();
    assert_eq!(web.len(), events.len(), "only posthog-js sent: {events:#?}");

    // Each event the browser sent is stored once, under the uuid it sent.
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for e in &web {
        *stored.entry(e["uuid"].as_str().expect("uuid")).or_default() += 1;
    }
    for uuid in &wire_uuids {
        assert_eq!(stored.get(uuid).copied(), Some(1), "event {uuid}");
    }
    assert_eq!(stored.len(), wire_uuids.len(), "stored {stored:?}");

    // Server-side enrichment, from the browser's own User-Agent: posthog-js sent none
    // of these (checked above), so they are Tally's parse.
    for e in &web {
        let p = &e["properties"];
        assert_eq!(p["$lib_version"], json!(sdk_version), "{e}");
        assert_eq!(p["$raw_user_agent"], json!(user_agent), "{e}");
        assert_eq!(p["$browser"], json!("Chrome"), "{e}");
        assert_eq!(
            p["$browser_version"].as_str().map(major),
            Some(major(browser_version)),
            "{e}"
        );
        assert_eq!(p["$os"], json!("Linux"), "{e}");
        assert_eq!(p["$device_type"], json!("Desktop"), "{e}");
        assert_eq!(p["$ip"], json!("127.0.0.1"), "{e}");
    }

    let named = |name: &str| -> Vec<&Value> {
        web.iter()
            .copied()
            .filter(|e| e["event"] == json!(name))
            .collect()
    };
    let pageview = named("$pageview");
    assert_eq!(pageview.len(), 1, "{pageview:#?}");
    assert_eq!(pageview[0]["distinct_id"], json!(anon));
    let page_url = format!("{site}/pricing?utm_source=e2e");
    assert_eq!(pageview[0]["properties"]["$current_url"], json!(page_url));
    assert_eq!(pageview[0]["properties"]["$pathname"], json!("/pricing"));
    assert_eq!(pageview[0]["properties"]["utm_source"], json!("e2e"));
    assert_eq!(pageview[0]["properties"]["title"], json!("Tally e2e b1"));

    let cta = named("clicked_cta");
    assert_eq!(cta.len(), 1);
    assert_eq!(cta[0]["distinct_id"], json!(anon));
    assert_eq!(cta[0]["properties"]["plan"], json!("pro"));
    assert_eq!(cta[0]["properties"]["price"], json!(12.5));

    let identify = named("$identify");
    assert_eq!(identify.len(), 1);
    assert_eq!(identify[0]["distinct_id"], json!("web-user-b1"));
    assert_eq!(identify[0]["properties"]["$anon_distinct_id"], json!(anon));
    assert_eq!(identify[0]["$set"]["email"], json!("web-b1@example.com"));
    assert_eq!(identify[0]["$set_once"]["first_touch"], json!("browser"));

    let purchase = named("purchase_completed");
    assert_eq!(purchase.len(), 1);
    assert_eq!(purchase[0]["distinct_id"], json!("web-user-b1"));
    assert_eq!(purchase[0]["properties"]["amount"], json!(99.9));

    // Sent while the page unloaded (posthog-js flushes its queue with sendBeacon).
    let left = named("left_pricing");
    assert_eq!(left.len(), 1, "the unload flush did not land");
    assert_eq!(left[0]["distinct_id"], json!("web-user-b1"));
    assert_eq!(left[0]["properties"]["reason"], json!("navigated"));

    // The anonymous visitor and the identified user are one person.
    let person = export_person(dir.path(), "web", anon);
    let ids = distinct_ids(&person);
    assert!(
        ids.iter().any(|i| i == anon) && ids.iter().any(|i| i == "web-user-b1"),
        "anonymous and identified ids not merged: {ids:?}"
    );
    assert_eq!(person["is_identified"], json!(true));
    assert_eq!(person["properties"]["email"], json!("web-b1@example.com"));
    assert_eq!(person["properties"]["first_touch"], json!("browser"));
    // posthog-js's own $set_once of the first page, kept from the identify.
    assert_eq!(
        person["properties"]["$initial_current_url"],
        json!(page_url)
    );
}
