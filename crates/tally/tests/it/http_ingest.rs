//! Ingest through the real binary: what a 200 promises, and the operational endpoints.

use serde_json::{Value, json};

use crate::harness::{Server, create_tenant, export_events};

#[test]
fn events_acknowledged_by_every_api_are_stored_and_metrics_report_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, write_key, _) = create_tenant(dir.path(), "acme");
    let mut server = Server::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let ok = |r: reqwest::Response| async move {
            let status = r.status();
            let body = r.text().await.unwrap();
            assert!(status.is_success(), "{status}: {body}");
            body
        };
        ok(http
            .post(format!("{}/capture/", server.url()))
            .json(&json!({"api_key": write_key, "event": "ph_event", "distinct_id": "u1", "properties": {"a": 1}}))
            .send()
            .await
            .unwrap())
        .await;
        ok(http
            .post(format!("{}/v1/track", server.url()))
            .basic_auth(&write_key, Some(""))
            .json(&json!({"event": "seg_event", "userId": "u2", "properties": {"b": "x"}}))
            .send()
            .await
            .unwrap())
        .await;
        let body = ok(http
            .post(format!("{}/v1/events/batch", server.url()))
            .bearer_auth(&write_key)
            .json(&json!({"events": [
                {"event": "native_event", "distinct_id": "u3"},
                {"event": "bad", "distinct_id": "null"},
            ]}))
            .send()
            .await
            .unwrap())
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["accepted"], json!(1));
        assert_eq!(v["rejected"][0]["index"], json!(1));

        // A wrong key is a 401, not a 500.
        let r = http
            .post(format!("{}/v1/events/batch", server.url()))
            .bearer_auth("tly_pub_nope")
            .json(&json!({"events": [{"event": "e", "distinct_id": "u"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        let health = http.get(format!("{}/healthz", server.url())).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let metrics = ok(http.get(format!("{}/metrics", server.url())).send().await.unwrap()).await;
        for name in ["tally_ingest_events_total", "tally_wal_fsync_seconds", "tally_store_buffer_rows"] {
            assert!(metrics.contains(name), "{name} missing from /metrics");
        }
    });
    server.stop();
    let events = export_events(dir.path(), "acme");
    let mut names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["native_event", "ph_event", "seg_event"]);
}

#[test]
fn unknown_endpoints_answer_a_json_404_that_browsers_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        for (method, path) in [
            (reqwest::Method::POST, "/s/"),
            (reqwest::Method::GET, "/api/surveys"),
            (reqwest::Method::GET, "/"),
        ] {
            let r = http
                .request(method.clone(), format!("{}{path}", server.url()))
                .header("Origin", "https://app.example.com")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {path}");
            // A browser only shows the page a response it may read.
            assert_eq!(
                r.headers()["access-control-allow-origin"],
                "https://app.example.com",
                "{method} {path}"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "NOT_FOUND", "{body}");
            let message = body["error"].as_str().unwrap();
            assert!(
                message.contains(&format!("{method} {path}"))
                    && message.contains("/v1/events/batch"),
                "{message}"
            );
        }
        // The served routes are unaffected by the fallback.
        for path in ["/healthz", "/graphql/schema.json"] {
            let r = http
                .get(format!("{}{path}", server.url()))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    });
}
