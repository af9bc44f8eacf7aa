//! What the client sees when the sink cannot take the batch.

use serde_json::json;

use crate::harness::{Failure, KEY, TestServer};

#[tokio::test]
async fn overload_is_503_with_retry_after_on_every_api() {
    let server = TestServer::start().await;
    server.sink.fail_with(Failure::Overloaded);
    let requests = [
        (
            "/capture/",
            json!({"api_key": KEY, "event": "e", "distinct_id": "d"}),
        ),
        (
            "/v1/track",
            json!({"writeKey": KEY, "event": "e", "userId": "d"}),
        ),
        (
            "/v1/events/batch",
            json!({"api_key": KEY, "events": [{"event": "e", "distinct_id": "d"}]}),
        ),
    ];
    for (path, body) in &requests {
        let r = server
            .http
            .post(server.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "3", "2.5 s rounds up");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "UNAVAILABLE");
        assert!(body["error"].as_str().unwrap().contains("overloaded"));
    }
    assert!(server.sink.events().is_empty());

    // Once the sink recovers, the same request succeeds.
    server.sink.fail_with(Failure::None);
    let (status, _) = server.post_json(requests[0].0, &requests[0].1).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn internal_sink_errors_hide_their_details() {
    let server = TestServer::start().await;
    server.sink.fail_with(Failure::Internal);
    let (status, body) = server
        .post_json(
            "/capture/",
            &json!({"api_key": KEY, "event": "e", "distinct_id": "d"}),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["code"], "INTERNAL");
    assert!(
        !body["error"].as_str().unwrap().contains("/var/x"),
        "{body}"
    );
}

#[tokio::test]
async fn a_panic_below_the_handler_is_a_500_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    server.sink.fail_with(Failure::Panic);
    let event = json!({"api_key": KEY, "event": "e", "distinct_id": "d"});
    let (status, body) = server.post_json("/capture/", &event).await;
    assert_eq!(status, 500);
    assert_eq!(body["code"], "INTERNAL");
    server.sink.fail_with(Failure::None);
    let (status, _) = server.post_json("/capture/", &event).await;
    assert_eq!(status, 200);
}
