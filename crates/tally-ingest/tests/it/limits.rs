//! Every limit at exactly N (accepted) and N+1 (refused), over HTTP.

use serde_json::{Value, json};
use tally_ingest::{IngestConfig, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{KEY, TestServer, gzip};

async fn server_with(limits: Limits) -> TestServer {
    TestServer::with_config(IngestConfig {
        limits,
        ..Default::default()
    })
    .await
}

fn event(props: Value) -> Value {
    json!({"event": "e", "distinct_id": "d", "properties": props})
}

/// Sends one event to the native endpoint and returns (status, code of the
/// rejection or "ok").
async fn one(server: &TestServer, event: Value) -> (u16, String) {
    let (status, body) = server.native(json!([event])).await;
    let code = if status == 200 {
        assert_eq!(body["accepted"], 1, "{body}");
        "ok".to_string()
    } else {
        body["rejected"][0]["code"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    (status, code)
}

#[tokio::test]
async fn event_name_length() {
    let s = server_with(Limits {
        max_event_name_len: 8,
        ..Default::default()
    })
    .await;
    let ok = json!({"event": "abcdefgh", "distinct_id": "d"});
    assert_eq!(one(&s, ok).await, (200, "ok".into()));
    let (status, body) = s
        .native(json!([{"event": "abcdefghi", "distinct_id": "d"}]))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["rejected"][0]["code"], "event_name_too_long");
    assert_eq!(
        body["error"],
        "event 0: event name longer than 8 bytes: 'abcdefghi'"
    );
}

#[tokio::test]
async fn distinct_id_length() {
    let s = server_with(Limits {
        max_distinct_id_len: 12,
        ..Default::default()
    })
    .await;
    let id = |n: usize| format!("  {}  ", "x".repeat(n));
    assert_eq!(
        one(&s, json!({"event": "e", "distinct_id": id(12)})).await,
        (200, "ok".into())
    );
    assert_eq!(
        one(&s, json!({"event": "e", "distinct_id": id(13)})).await,
        (400, "distinct_id_too_long".into())
    );
    assert_eq!(s.sink.events()[0].distinct_id, "x".repeat(12), "trimmed");
}

#[tokio::test]
async fn key_length() {
    let s = server_with(Limits {
        max_key_len: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(
        one(&s, event(json!({"k".repeat(10): 1}))).await,
        (200, "ok".into())
    );
    let (status, body) = s.native(json!([event(json!({"k".repeat(11): 1}))])).await;
    assert_eq!(status, 400);
    assert_eq!(body["rejected"][0]["code"], "key_too_long");
    assert_eq!(
        body["rejected"][0]["reason"],
        format!("property key longer than 10 bytes: '{}'", "k".repeat(11))
    );
    // Nested keys and $set keys count too.
    assert_eq!(
        one(&s, event(json!({"a": {"k".repeat(11): 1}}))).await,
        (400, "key_too_long".into())
    );
    assert_eq!(
        one(
            &s,
            json!({"event": "e", "distinct_id": "d", "set": {"k".repeat(11): 1}})
        )
        .await,
        (400, "key_too_long".into())
    );
}

#[tokio::test]
async fn string_value_length() {
    let s = server_with(Limits {
        max_string_value_len: 20,
        ..Default::default()
    })
    .await;
    assert_eq!(
        one(&s, event(json!({"s": "v".repeat(20)}))).await,
        (200, "ok".into())
    );
    assert_eq!(
        one(&s, event(json!({"s": "v".repeat(21)}))).await,
        (400, "string_value_too_long".into())
    );
    // Multi-byte characters are measured in bytes: 7 × 3 = 21.
    assert_eq!(
        one(&s, event(json!({"s": ["€".repeat(7)]}))).await,
        (400, "string_value_too_long".into())
    );
}

#[tokio::test]
async fn property_count() {
    let s = server_with(Limits {
        max_properties: 5,
        ..Default::default()
    })
    .await;
    let props = |n: usize| Value::Object((0..n).map(|i| (format!("p{i}"), json!(i))).collect());
    assert_eq!(one(&s, event(props(5))).await, (200, "ok".into()));
    assert_eq!(
        one(&s, event(props(6))).await,
        (400, "too_many_properties".into())
    );
}

#[tokio::test]
async fn nesting_depth() {
    let s = server_with(Limits {
        max_nesting_depth: 3,
        ..Default::default()
    })
    .await;
    assert_eq!(
        one(&s, event(json!({"p": [[[1]]]}))).await,
        (200, "ok".into())
    );
    assert_eq!(
        one(&s, event(json!({"p": {"a": {"b": {"c": 1}}}}))).await,
        (200, "ok".into())
    );
    assert_eq!(
        one(&s, event(json!({"p": [[[[1]]]]}))).await,
        (400, "nesting_too_deep".into())
    );
    assert_eq!(
        one(&s, event(json!({"p": {"a": {"b": {"c": {"d": 1}}}}}))).await,
        (400, "nesting_too_deep".into())
    );
}

#[tokio::test]
async fn event_size() {
    let limit = 300;
    let s = server_with(Limits {
        max_event_bytes: limit,
        ..Default::default()
    })
    .await;
    let sized = |total: usize| {
        let base = serde_json::to_vec(&event(json!({"pad": ""})))
            .unwrap()
            .len();
        event(json!({"pad": "x".repeat(total - base)}))
    };
    assert_eq!(serde_json::to_vec(&sized(limit)).unwrap().len(), limit);
    assert_eq!(one(&s, sized(limit)).await, (200, "ok".into()));
    let (status, body) = s.native(json!([sized(limit + 1)])).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["rejected"][0]["code"], "event_too_large");
    // In a batch, only the big one is dropped.
    let (status, body) = s.native(json!([sized(limit + 1), sized(limit)])).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1);
}

#[tokio::test]
async fn events_per_batch() {
    let s = server_with(Limits {
        max_events_per_batch: 3,
        ..Default::default()
    })
    .await;
    let batch = |n: usize| json!((0..n).map(|_| event(json!({}))).collect::<Vec<_>>());
    let (status, _) = s.native(batch(3)).await;
    assert_eq!(status, 200);
    let (status, body) = s.native(batch(4)).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(
        body["error"],
        "request contains 4 events; at most 3 are allowed per request"
    );
    // Same rule on the PostHog and Segment batch paths.
    let (status, _) = s
        .post_json(
            "/batch/",
            &json!({"api_key": KEY, "batch": (0..4).map(|_| event(json!({}))).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(s.sink.events().len(), 3);
}

/// A native request body padded with trailing whitespace to exactly `len` bytes.
fn padded_body(len: usize) -> Vec<u8> {
    let mut body = json!({"api_key": KEY, "events": [event(json!({}))]})
        .to_string()
        .into_bytes();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn body_size() {
    let s = server_with(Limits {
        max_body_bytes: 2000,
        ..Default::default()
    })
    .await;
    let (status, body) = s
        .post_bytes("/v1/events/batch", padded_body(2000), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post_bytes("/v1/events/batch", padded_body(2001), &[])
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "request body is larger than 2000 bytes");
}

/// A chunked body announces no length: the cap must hold while streaming.
#[tokio::test]
async fn chunked_body_over_the_cap_is_refused() {
    let s = server_with(Limits {
        max_body_bytes: 2000,
        ..Default::default()
    })
    .await;
    let addr = s.url.trim_start_matches("http://").to_string();
    for (len, expected) in [(2000, "200 OK"), (2001, "413 Payload Too Large")] {
        let body = padded_body(len);
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut request = format!(
            "POST /v1/events/batch HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for chunk in body.chunks(500) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {expected}")),
            "{len}: {response}"
        );
    }
}

#[tokio::test]
async fn decompressed_size() {
    let s = server_with(Limits {
        max_decompressed_bytes: 3000,
        ..Default::default()
    })
    .await;
    let headers = [("content-encoding", "gzip")];
    let (status, body) = s
        .post_bytes("/v1/events/batch", gzip(&padded_body(3000)), &headers)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post_bytes("/v1/events/batch", gzip(&padded_body(3001)), &headers)
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        body["error"],
        "request payload decodes to more than 3000 bytes"
    );
    // gzip-js on the PostHog path obeys the same cap.
    let mut big = json!({"api_key": KEY, "event": "e", "distinct_id": "d"})
        .to_string()
        .into_bytes();
    big.resize(3001, b' ');
    let (status, _) = s
        .post_bytes("/e/?compression=gzip-js", gzip(&big), &[])
        .await;
    assert_eq!(status, 413);
    assert_eq!(s.sink.events().len(), 1);
}

#[tokio::test]
async fn gzip_bomb_is_refused() {
    let s = server_with(Limits {
        max_decompressed_bytes: 1 << 20,
        ..Default::default()
    })
    .await;
    // 1 GiB of zeros, about 1 MiB compressed at the best level. (The size at a given
    // level depends on which deflate backend feature unification picks for the
    // workspace: zlib-rs at level 1 gives ~10 MiB.)
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &chunk).unwrap();
    }
    let bomb = enc.finish().unwrap();
    // Below the 20 MiB compressed-body limit, so the refusal must come from the
    // decompression cap, not the body size.
    assert!(bomb.len() < 16 << 20, "bomb is {} bytes", bomb.len());
    for (path, headers) in [
        ("/v1/events/batch", vec![("content-encoding", "gzip")]),
        ("/e/?compression=gzip-js", vec![]),
        ("/v1/batch", vec![]),
    ] {
        let (status, body) = s.post_bytes(path, bomb.clone(), &headers).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    }
}
