//! Enrichment over HTTP: client IP behind proxies, clock skew, future clamping,
//! user agents and GeoIP; plus the file-import entry point.

use std::net::Ipv4Addr;

use serde_json::json;
use tally_core::TenantId;
use tally_core::time::{format_micros, now_micros};
use tally_ingest::{Enricher, IngestConfig, RequestContext, normalize_json_event};

use crate::harness::{KEY, TestServer};
use crate::mmdb::{city_database, city_record};

async fn capture_with_headers(
    server: &TestServer,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) {
    let mut req = server.http.post(server.url("/capture/")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn ev(extra: serde_json::Value) -> serde_json::Value {
    let mut e = json!({"api_key": KEY, "event": "e", "distinct_id": "d"});
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    e
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let server = TestServer::start().await;
    capture_with_headers(
        &server,
        ev(json!({})),
        &[("x-forwarded-for", "203.0.113.50")],
    )
    .await;
    assert_eq!(server.sink.events()[0].properties["$ip"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_for_is_walked_behind_trusted_proxies() {
    let server = TestServer::with_config(IngestConfig {
        trusted_proxies: vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ],
        ..Default::default()
    })
    .await;
    // The client forged the first entry; 198.51.100.7 is who reached our proxy.
    capture_with_headers(
        &server,
        ev(json!({})),
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")],
    )
    .await;
    // An event's own $ip wins; $geoip_disable suppresses $ip entirely.
    capture_with_headers(
        &server,
        ev(json!({"properties": {"$ip": "192.0.2.1"}})),
        &[],
    )
    .await;
    capture_with_headers(
        &server,
        ev(json!({"properties": {"$geoip_disable": true}})),
        &[],
    )
    .await;
    let events = server.sink.events();
    assert_eq!(events[0].properties["$ip"], "198.51.100.7");
    assert_eq!(events[1].properties["$ip"], "192.0.2.1");
    assert!(!events[2].properties.contains_key("$ip"));
}

#[tokio::test]
async fn clock_skew_is_corrected_and_future_clamped() {
    let server = TestServer::start().await;
    let hour = 3_600_000_000;
    // The client's clock is an hour fast; the event happened 10 s before sending.
    let client_now = now_micros() + hour;
    capture_with_headers(
        &server,
        ev(json!({"timestamp": format_micros(client_now - 10_000_000), "sent_at": format_micros(client_now)})),
        &[],
    )
    .await;
    // Two days in the future with no send time to correct it: clamped.
    let future = now_micros() + 2 * 86_400_000_000;
    capture_with_headers(
        &server,
        ev(json!({"timestamp": format_micros(future)})),
        &[],
    )
    .await;
    // `offset`: 1.5 s ago.
    capture_with_headers(&server, ev(json!({"offset": 1500})), &[]).await;
    // No time at all: received time.
    capture_with_headers(&server, ev(json!({})), &[]).await;

    let events = server.sink.events();
    assert_eq!(events[0].timestamp, events[0].received_at - 10_000_000);
    assert!(
        !events[0]
            .properties
            .contains_key("$tally_clamped_timestamp")
    );
    assert_eq!(events[1].timestamp, events[1].received_at);
    assert_eq!(
        events[1].properties["$tally_clamped_timestamp"],
        format_micros(future)
    );
    assert_eq!(events[2].timestamp, events[2].received_at - 1_500_000);
    assert_eq!(events[3].timestamp, events[3].received_at);
}

#[tokio::test]
async fn user_agent_from_header_or_property() {
    let server = TestServer::start().await;
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                  Chrome/120.0.0.0 Safari/537.36";
    let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                  (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    capture_with_headers(&server, ev(json!({})), &[("user-agent", chrome)]).await;
    capture_with_headers(
        &server,
        ev(json!({"properties": {"$raw_user_agent": iphone, "$browser": "Custom"}})),
        &[("user-agent", chrome)],
    )
    .await;
    let events = server.sink.events();
    let p = &events[0].properties;
    assert_eq!(p["$browser"], "Chrome");
    assert_eq!(p["$browser_version"], "120.0.0.0");
    assert_eq!(p["$os"], "Windows");
    assert_eq!(p["$device_type"], "Desktop");
    let p = &events[1].properties;
    assert_eq!(p["$browser"], "Custom", "SDK-set values are kept");
    assert_eq!(p["$os"], "iOS");
    assert_eq!(p["$device_type"], "Mobile");
}

fn geo_db(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let db = city_database(&[
        (
            Ipv4Addr::new(81, 2, 69, 0),
            24,
            city_record(
                ("GB", "United Kingdom"),
                "London",
                "ENG",
                51.5142,
                -0.0931,
                "Europe/London",
            ),
        ),
        (
            Ipv4Addr::new(89, 160, 0, 0),
            16,
            city_record(
                ("SE", "Sweden"),
                "Linköping",
                "E",
                58.4167,
                15.6167,
                "Europe/Stockholm",
            ),
        ),
    ]);
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, db).unwrap();
    path
}

#[tokio::test]
async fn geoip_properties_from_a_city_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with_config(IngestConfig {
        geoip_db: Some(geo_db(&dir)),
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Default::default()
    })
    .await;
    capture_with_headers(
        &server,
        ev(json!({})),
        &[("x-forwarded-for", "81.2.69.160")],
    )
    .await;
    capture_with_headers(
        &server,
        ev(json!({"properties": {"$ip": "89.160.20.128"}})),
        &[],
    )
    .await;
    capture_with_headers(
        &server,
        ev(json!({"properties": {"$geoip_disable": true}})),
        &[("x-forwarded-for", "81.2.69.160")],
    )
    .await;
    // Unknown and IPv6 addresses: no geo, no error.
    capture_with_headers(
        &server,
        ev(json!({})),
        &[("x-forwarded-for", "2001:db8::1")],
    )
    .await;

    let events = server.sink.events();
    let london = &events[0].properties;
    assert_eq!(london["$geoip_country_code"], "GB");
    assert_eq!(london["$geoip_country_name"], "United Kingdom");
    assert_eq!(london["$geoip_city_name"], "London");
    assert_eq!(london["$geoip_subdivision_1_code"], "ENG");
    assert_eq!(london["$geoip_latitude"], 51.5142);
    assert_eq!(london["$geoip_longitude"], -0.0931);
    assert_eq!(london["$geoip_time_zone"], "Europe/London");
    assert_eq!(london["$geoip_continent_code"], "EU");
    assert_eq!(events[1].properties["$geoip_city_name"], "Linköping");
    assert!(!events[2].properties.contains_key("$geoip_country_code"));
    assert!(!events[3].properties.contains_key("$geoip_country_code"));
    assert_eq!(events[3].properties["$ip"], "2001:db8::1");
}

#[test]
fn enricher_looks_up_directly_and_refuses_a_corrupt_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = IngestConfig {
        geoip_db: Some(geo_db(&dir)),
        ..Default::default()
    };
    let enricher = Enricher::new(&config).unwrap();
    assert!(enricher.has_geoip());
    let geo = enricher.lookup_geo("81.2.69.1".parse().unwrap()).unwrap();
    assert_eq!(geo.city_name.as_deref(), Some("London"));
    assert!(enricher.lookup_geo("8.8.8.8".parse().unwrap()).is_none());

    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"definitely not a database").unwrap();
    let err = Enricher::new(&IngestConfig {
        geoip_db: Some(corrupt),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("corrupt.mmdb"), "{err}");
}

#[test]
fn file_import_uses_the_same_rules() {
    let config = IngestConfig::default();
    let enricher = Enricher::new(&config).unwrap();
    let ctx = RequestContext::detached(&config, &enricher);
    let posthog = normalize_json_event(
        TenantId(3),
        json!({"event": "imported", "distinct_id": "u", "timestamp": "2023-11-14T22:13:20Z",
               "properties": {"$set": {"a": 1}}}),
        &ctx,
    )
    .unwrap();
    assert_eq!(posthog.timestamp, 1_700_000_000_000_000);
    assert_eq!(posthog.person_set["a"], 1);
    assert!(
        !posthog.properties.contains_key("$ip"),
        "no request, no address"
    );

    let segment = normalize_json_event(
        TenantId(3),
        json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "messageId": "m-1",
               "originalTimestamp": "2023-11-14T22:13:20Z"}),
        &ctx,
    )
    .unwrap();
    assert_eq!(segment.event, "$identify");
    assert_eq!(segment.person_set["plan"], "pro");
    assert_eq!(
        segment.uuid,
        tally_core::event::uuid_from_dedup_key(TenantId(3), "m-1")
    );

    let untyped = normalize_json_event(
        TenantId(3),
        json!({"userId": 17, "event": "Exported", "properties": {"k": "v"}}),
        &ctx,
    )
    .unwrap();
    assert_eq!(
        (untyped.event.as_str(), untyped.distinct_id.as_str()),
        ("Exported", "17")
    );

    let err = normalize_json_event(
        TenantId(3),
        json!({"event": "x", "distinct_id": "nil"}),
        &ctx,
    )
    .unwrap_err();
    assert_eq!(err.reason.code(), "denylisted_distinct_id");
}
