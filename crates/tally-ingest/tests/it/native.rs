//! The native batch endpoint and its per-index partial results.

use serde_json::json;

use crate::harness::{KEY, TENANT, TestServer, read};

#[tokio::test]
async fn partial_batch_reports_each_rejected_index() {
    let server = TestServer::start().await;
    let (status, body) = server
        .native(json!([
            {"event": "ok", "distinct_id": "u1", "uuid": "0190b5a4-6d2e-7c3b-8f00-000000000001",
             "properties": {"a": 1}, "set": {"plan": "pro"}, "set_once": {"first": true}},
            {"event": "bad", "distinct_id": "null"},
            {"distinct_id": "u2"},
            {"event": "ok2", "distinct_id": "u2", "timestamp": "not a time"},
            {"event": "ok3", "distinct_id": "u3", "timestamp": "2024-01-01T00:00:00Z"},
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().unwrap();
    let summary: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "denylisted_distinct_id"),
            (2, "missing_event_name"),
            (3, "invalid_timestamp")
        ]
    );
    assert!(rejected[0]["reason"].as_str().unwrap().contains("'null'"));

    let batches = server.sink.batches();
    assert_eq!(batches.len(), 1, "one sink submission per request");
    assert_eq!(batches[0].tenant, TENANT);
    let e = &batches[0].events[0];
    assert_eq!(e.uuid.to_string(), "0190b5a4-6d2e-7c3b-8f00-000000000001");
    assert_eq!(e.person_set["plan"], "pro");
    assert_eq!(e.person_set_once["first"], true);
    assert_eq!(batches[0].events[1].timestamp, 1_704_067_200_000_000);
}

#[tokio::test]
async fn all_rejected_is_a_4xx_with_the_same_details() {
    let server = TestServer::start().await;
    let (status, body) = server
        .native(json!([{"event": "x"}, {"event": "y", "distinct_id": ""}]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(body["code"], "BAD_REQUEST");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("event 0: missing distinct_id")
    );
    assert!(server.sink.events().is_empty());
}

#[tokio::test]
async fn key_in_body_and_shape_errors() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_json(
            "/v1/events/batch",
            &json!({"api_key": KEY, "events": [{"event": "e", "distinct_id": "d"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"accepted": 1, "rejected": []}));

    let (status, _) = server
        .post_json(
            "/v1/events/batch",
            &json!({"events": [{"event": "e", "distinct_id": "d"}]}),
        )
        .await;
    assert_eq!(status, 401);

    for bad in [
        json!({"api_key": KEY}),
        json!({"api_key": KEY, "events": {}}),
        json!([1]),
    ] {
        let (status, body) = server.post_json("/v1/events/batch", &bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
    let (status, body) = server
        .post_json("/v1/events/batch", &json!({"api_key": KEY, "events": []}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "request contains no events");

    // Wrong method on a known path is axum's 405, not a crash.
    let r = server
        .http
        .get(server.url("/v1/events/batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let (status, _) = read(server.http.post(server.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn historical_imports_take_nothing_from_the_importing_request() {
    let server = TestServer::start().await;
    let body = json!({
        "historical": true,
        "events": [{"event": "old", "distinct_id": "u1", "timestamp": "2024-01-01T00:00:00Z"}],
    });
    let r = server
        .http
        .post(server.url("/v1/events/batch"))
        .bearer_auth(KEY)
        .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, reply) = read(r).await;
    assert_eq!(status, 200, "{reply}");
    let e = &server.sink.batches()[0].events[0];
    assert_eq!(e.timestamp, 1_704_067_200_000_000);
    assert!(!e.properties.contains_key("$ip"), "{:?}", e.properties);
    assert!(!e.properties.contains_key("$browser"), "{:?}", e.properties);

    // The same request without the flag is enriched from the request.
    let mut live = body.clone();
    live["historical"] = json!(false);
    let r = server
        .http
        .post(server.url("/v1/events/batch"))
        .bearer_auth(KEY)
        .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
        .json(&live)
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await.0, 200);
    let e = &server.sink.batches()[1].events[0];
    assert!(e.properties.contains_key("$ip"));
    assert_eq!(e.properties["$browser"], "Chrome");

    let (status, reply) = server
        .post_json(
            "/v1/events/batch",
            &json!({"api_key": KEY, "historical": "yes", "events": []}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
}
