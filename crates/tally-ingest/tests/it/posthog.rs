//! PostHog capture endpoints in every format real SDKs use.

use base64::Engine;
use serde_json::{Value, json};
use tally_core::event::uuid_from_dedup_key;

use crate::harness::{KEY, OTHER_KEY, TENANT, TestServer, gzip};

const PATHS: [&str; 8] = [
    "/capture",
    "/capture/",
    "/e",
    "/e/",
    "/i/v0/e",
    "/i/v0/e/",
    "/batch",
    "/batch/",
];

#[tokio::test]
async fn every_path_accepts_a_single_event() {
    let server = TestServer::start().await;
    for (i, path) in PATHS.iter().enumerate() {
        let (status, body) = server
            .post_json(
                path,
                &json!({"api_key": KEY, "event": "clicked", "distinct_id": format!("u{i}"),
                        "properties": {"button": "buy"}}),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, json!({"status": 1}));
    }
    let batches = server.sink.batches();
    assert_eq!(batches.len(), PATHS.len());
    assert!(batches.iter().all(|b| b.tenant == TENANT));
    let e = &batches[0].events[0];
    assert_eq!(e.event, "clicked");
    assert_eq!(e.distinct_id, "u0");
    assert_eq!(e.properties["button"], "buy");
}

#[tokio::test]
async fn posthog_js_gzip_array_with_token_in_properties() {
    let server = TestServer::start().await;
    let sent_at_ms = chrono::Utc::now().timestamp_millis();
    let payload = json!([
        {"event": "$pageview", "properties": {"token": KEY, "distinct_id": "anon-1",
          "$current_url": "https://x.test/", "$lib": "web", "$lib_version": "1.100.0"},
         "timestamp": tally_core::time::format_micros(sent_at_ms * 1000 - 2_000_000),
         "uuid": "0190b5a4-6d2e-7c3b-8f00-0000000000aa"},
        {"event": "$autocapture", "properties": {"token": KEY, "distinct_id": "anon-1"}}
    ]);
    let body = gzip(payload.to_string().as_bytes());
    let (status, resp) = server
        .post_bytes(
            &format!("/e/?compression=gzip-js&ip=1&_={sent_at_ms}&ver=1.100.0"),
            body,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let events = server.sink.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].distinct_id, "anon-1");
    assert_eq!(
        events[0].uuid.to_string(),
        "0190b5a4-6d2e-7c3b-8f00-0000000000aa"
    );
    assert!(
        !events[0].properties.contains_key("token"),
        "write key is not stored"
    );
    assert!(!events[0].properties.contains_key("distinct_id"));
    assert_eq!(events[0].properties["$lib"], "web");
    // `_` is the send time: the event happened 2 s before it was sent.
    assert_eq!(events[0].timestamp, events[0].received_at - 2_000_000);
}

#[tokio::test]
async fn content_encoding_gzip_and_deflate() {
    let server = TestServer::start().await;
    let payload = json!({"api_key": KEY, "batch": [{"event": "a", "distinct_id": "d"}]});
    let (status, body) = server
        .post_bytes(
            "/batch/",
            gzip(payload.to_string().as_bytes()),
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.sink.events().len(), 1);
}

#[tokio::test]
async fn base64_form_data_and_plain_form_and_get_pixel() {
    let server = TestServer::start().await;
    let event = json!({"token": KEY, "event": "formed", "distinct_id": "f1",
                       "properties": {"plus": "a+b/c=="}});
    let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());

    // Legacy posthog-js: form body, base64 data, compression field.
    let form =
        serde_urlencoded::to_string([("data", b64.as_str()), ("compression", "base64")]).unwrap();
    let form_ct = [("content-type", "application/x-www-form-urlencoded")];
    let (status, body) = server.post_bytes("/e/", form.into_bytes(), &form_ct).await;
    assert_eq!(status, 200, "{body}");

    // Form body whose '+' were not escaped (so became spaces): still decodes.
    let sloppy = format!("data={b64}");
    let (status, body) = server
        .post_bytes("/e/", sloppy.into_bytes(), &form_ct)
        .await;
    assert_eq!(status, 200, "{body}");

    // Form body with plain JSON.
    let plain = serde_urlencoded::to_string([("data", event.to_string())]).unwrap();
    let (status, body) = server.post_bytes("/e/", plain.into_bytes(), &form_ct).await;
    assert_eq!(status, 200, "{body}");

    // Raw base64 body with the hint in the query.
    let (status, body) = server
        .post_bytes(
            "/capture/?compression=base64",
            b64.clone().into_bytes(),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // GET pixel.
    let r = server
        .http
        .get(server.url("/e/"))
        .query(&[("data", b64.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let events = server.sink.events();
    assert_eq!(events.len(), 5);
    for e in &events {
        assert_eq!(e.event, "formed");
        assert_eq!(e.properties["plus"], "a+b/c==");
    }
}

#[tokio::test]
async fn batch_with_identity_events_and_person_properties() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_json(
            "/batch/",
            &json!({
                "api_key": KEY,
                "batch": [
                    {"event": "$identify", "distinct_id": "user-1",
                     "properties": {"$anon_distinct_id": "anon-1", "$set": {"email": "a@b.c", "plan": "free"}},
                     "$set": {"plan": "pro"}, "$set_once": {"first": "x"}},
                    {"event": "$create_alias", "distinct_id": "user-1", "properties": {"alias": "old-1"}},
                    {"event": "$groupidentify", "distinct_id": "user-1",
                     "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"n": 1}}},
                    {"event": "bought", "$distinct_id": 42, "properties": {"$insert_id": "ins-1"}},
                ]
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = server.sink.events();
    assert_eq!(events.len(), 4);
    let identify = &events[0];
    assert_eq!(identify.properties["$anon_distinct_id"], "anon-1");
    assert!(
        !identify.properties.contains_key("$set"),
        "$set hoisted out of properties"
    );
    // Top-level $set wins over the one nested in properties.
    assert_eq!(
        Value::Object(identify.person_set.clone()),
        json!({"email": "a@b.c", "plan": "pro"})
    );
    assert_eq!(
        Value::Object(identify.person_set_once.clone()),
        json!({"first": "x"})
    );
    assert_eq!(events[1].event, "$create_alias");
    assert_eq!(events[1].properties["alias"], "old-1");
    assert_eq!(events[2].properties["$group_key"], "acme");
    assert_eq!(events[3].distinct_id, "42", "numeric ids are stringified");
    assert_eq!(events[3].uuid, uuid_from_dedup_key(TENANT, "ins-1"));
}

#[tokio::test]
async fn invalid_events_are_dropped_and_the_rest_accepted() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_json(
            "/batch/",
            &json!({"api_key": KEY, "batch": [
                {"event": "ok", "distinct_id": "d1"},
                {"event": "no id"},
                {"event": "", "distinct_id": "d2"},
                "not an object",
                {"event": "ok2", "distinct_id": "d3"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<_> = server.sink.events().into_iter().map(|e| e.event).collect();
    assert_eq!(names, ["ok", "ok2"]);

    // All invalid: the first reason comes back as a 400.
    let (status, body) = server
        .post_json(
            "/capture/",
            &json!({"api_key": KEY, "event": "x", "distinct_id": "undefined"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "BAD_REQUEST");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.starts_with("event 0: distinct_id 'undefined'"), "{msg}");
}

#[tokio::test]
async fn keys_and_bad_json() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_json("/capture/", &json!({"event": "x", "distinct_id": "d"}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHENTICATED");
    assert!(body["error"].as_str().unwrap().contains("missing API key"));

    let (status, _) = server
        .post_json(
            "/capture/",
            &json!({"api_key": "nope", "event": "x", "distinct_id": "d"}),
        )
        .await;
    assert_eq!(status, 401);

    let (status, body) = server
        .post_json(
            "/e/",
            &json!([{"token": KEY, "event": "a", "distinct_id": "d"},
                                  {"token": OTHER_KEY, "event": "b", "distinct_id": "d"}]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("different API keys")
    );

    let (status, body) = server
        .post_bytes(
            "/capture/",
            b"{\"api_key\": \"k\",\n \"event\": }".to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("line 2 column"), "serde position in {msg}");

    let (status, body) = server.post_bytes("/capture/", Vec::new(), &[]).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = server
        .post_bytes("/e/?compression=lz64", b"N4Ig".to_vec(), &[])
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("lz64"));
    assert!(server.sink.events().is_empty());
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let server = TestServer::start().await;
    let r = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/e/"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = server
        .http
        .post(server.url("/e/"))
        .header("origin", "https://app.example")
        .json(&json!({"token": KEY, "event": "e", "distinct_id": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}
