//! Segment HTTP Tracking API endpoints.

use serde_json::{Value, json};
use tally_core::event::uuid_from_dedup_key;

use crate::harness::{KEY, TENANT, TestServer, gzip, read};

async fn basic(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .post(server.url(path))
        .basic_auth(KEY, Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    read(r).await
}

#[tokio::test]
async fn single_calls_with_basic_auth() {
    let server = TestServer::start().await;
    let calls = [
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"},
                             "messageId": "ajs-1", "context": {"library": {"name": "analytics.js", "version": "2.0"}}}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "anonymousId": "a1", "traits": {"email": "x@y.z"}}),
        ),
        ("/v1/alias", json!({"userId": "u1", "previousId": "old"})),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "a1", "name": "Home", "properties": {"url": "https://x.test/"}}),
        ),
        ("/v1/screen", json!({"userId": "u1", "name": "Settings"})),
    ];
    for (path, body) in calls {
        let (status, resp) = basic(&server, path, body).await;
        assert_eq!(status, 200, "{path}: {resp}");
        assert_eq!(resp, json!({"success": true}));
    }
    let events = server.sink.events();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "Signed Up",
            "$identify",
            "$create_alias",
            "$groupidentify",
            "$pageview",
            "$screen"
        ]
    );
    let track = &events[0];
    assert_eq!(track.uuid, uuid_from_dedup_key(TENANT, "ajs-1"));
    assert_eq!(track.properties["$lib"], "analytics.js");
    assert_eq!(track.properties["$lib_version"], "2.0");
    let identify = &events[1];
    assert_eq!(identify.distinct_id, "u1");
    assert_eq!(identify.properties["$anon_distinct_id"], "a1");
    assert_eq!(identify.person_set["email"], "x@y.z");
    assert_eq!(events[2].properties["alias"], "old");
    assert_eq!(events[3].properties["$group_type"], "company");
    assert_eq!(events[3].properties["$group_key"], "g1");
    assert_eq!(events[3].properties["$group_set"], json!({"name": "Acme"}));
    assert_eq!(events[4].distinct_id, "a1");
    assert_eq!(events[4].properties["$current_url"], "https://x.test/");
    assert_eq!(events[5].properties["$screen_name"], "Settings");
}

#[tokio::test]
async fn batch_of_mixed_types_with_write_key_in_body() {
    let server = TestServer::start().await;
    let now = chrono::Utc::now();
    let body = json!({
        "writeKey": KEY,
        "sentAt": now.to_rfc3339(),
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
        "batch": [
            {"type": "track", "userId": "u", "event": "A",
             "timestamp": (now - chrono::Duration::seconds(30)).to_rfc3339()},
            {"type": "identify", "userId": "u", "traits": {"plan": "team"}},
            {"type": "page", "userId": "u", "name": "Pricing"},
            {"type": "unknown_type", "userId": "u"},
            {"type": "group", "userId": "u", "groupId": 5, "traits": {"group_type": "team"}},
        ]
    });
    // analytics.js posts text/plain; the body is JSON regardless.
    let (status, resp) = server
        .post_bytes(
            "/v1/batch",
            body.to_string().into_bytes(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let events = server.sink.take_events();
    assert_eq!(
        events.len(),
        4,
        "the unknown type is dropped, the rest kept"
    );
    assert!(
        events
            .iter()
            .all(|e| e.properties["$lib"] == "analytics-node")
    );
    // Sent 30 s after it happened, by the client's clock.
    assert_eq!(events[0].timestamp, events[0].received_at - 30_000_000);
    assert_eq!(events[3].properties["$group_type"], "team");

    // /v1/import is the same thing, and gzip works.
    let (status, resp) = server
        .post_bytes(
            "/v1/import",
            gzip(json!({"writeKey": KEY, "batch": [{"type": "track", "anonymousId": "x", "event": "B"}]})
                .to_string()
                .as_bytes()),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(server.sink.take_events().len(), 1);
}

#[tokio::test]
async fn segment_refusals() {
    let server = TestServer::start().await;
    // No key at all.
    let (status, _) = server
        .post_json("/v1/track", &json!({"userId": "u", "event": "e"}))
        .await;
    assert_eq!(status, 401);
    // No user.
    let (status, body) = basic(&server, "/v1/track", json!({"event": "e"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing distinct_id"),
        "{body}"
    );
    // Alias without previousId.
    let (status, body) = basic(&server, "/v1/alias", json!({"userId": "u"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("previousId"),
        "{body}"
    );
    // Batch that is not a batch.
    let (status, _) = basic(&server, "/v1/batch", json!({"type": "track"})).await;
    assert_eq!(status, 400);
    assert!(server.sink.events().is_empty());
}
