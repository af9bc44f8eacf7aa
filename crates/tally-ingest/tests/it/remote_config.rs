//! posthog-js's non-capture requests: remote config (JSON and script) and the flags
//! endpoints, each with good and bad keys, cross-origin, and in the encodings the
//! SDKs use for their bodies.

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{KEY, TestServer, gzip, read};

const SITE: &str = "https://shop.example";

type Headers = Vec<(&'static str, &'static str)>;

/// Every path of these endpoints, with the method posthog-js uses for it.
fn every_route() -> Vec<(reqwest::Method, String)> {
    let mut routes = vec![
        (reqwest::Method::GET, format!("/array/{KEY}/config")),
        (reqwest::Method::GET, format!("/array/{KEY}/config.js")),
    ];
    for path in ["/flags", "/flags/", "/decide", "/decide/"] {
        routes.push((reqwest::Method::POST, format!("{path}?v=2")));
    }
    routes
}

fn assert_cors(r: &reqwest::Response, what: &str) {
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(SITE),
        "{what}: {:?}",
        r.headers()
    );
    assert_eq!(
        r.headers()["access-control-allow-credentials"],
        "true",
        "{what}"
    );
}

#[tokio::test]
async fn config_json_tells_posthog_js_what_tally_accepts() {
    let server = TestServer::start().await;
    let r = server
        .http
        .get(server.url(&format!("/array/{KEY}/config")))
        .header("origin", SITE)
        .send()
        .await
        .unwrap();
    assert_cors(&r, "config");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.headers().contains_key("cache-control"));
    let (status, body) = read(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], KEY);
    let compression = body["supportedCompression"].as_array().unwrap();
    assert!(compression.contains(&json!("gzip-js")), "{body}");
    assert!(compression.contains(&json!("base64")), "{body}");
    assert_eq!(body["hasFeatureFlags"], false);
    assert_eq!(body["sessionRecording"], false);
    assert_eq!(body["surveys"], false);
    assert_eq!(body["autocapture_opt_out"], false);
    // The capture path the config names is one Tally serves.
    let endpoint = body["analytics"]["endpoint"].as_str().unwrap();
    let (status, _) = server
        .post_json(
            endpoint,
            &json!({"api_key": KEY, "event": "e", "distinct_id": "d"}),
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");
    assert!(server.sink.events().len() == 1);
}

#[tokio::test]
async fn config_js_is_a_script_assigning_the_config_by_token() {
    let server = TestServer::start().await;
    let r = server
        .http
        .get(server.url(&format!("/array/{KEY}/config.js")))
        .header("origin", SITE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_cors(&r, "config.js");
    assert_eq!(
        r.headers()["content-type"],
        "application/javascript; charset=utf-8"
    );
    let js = r.text().await.unwrap();
    assert!(js.contains("window._POSTHOG_REMOTE_CONFIG"), "{js}");
    let assigned = format!("all[\"{KEY}\"] = ");
    let (_, rest) = js.split_once(&assigned).expect("assignment by token");
    let entry: Value = serde_json::from_str(rest.split_once(";\n").unwrap().0).unwrap();
    assert_eq!(entry["config"]["token"], KEY);
    assert_eq!(entry["siteApps"], json!([]));

    // The same config as the JSON route.
    let json_config = server
        .http
        .get(server.url(&format!("/array/{KEY}/config")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(entry["config"], json_config);
}

#[tokio::test]
async fn bad_keys_are_refused_with_a_clear_error_and_cors() {
    let server = TestServer::start().await;
    for suffix in ["config", "config.js"] {
        for (key, want_status, want_code) in [
            ("phc_nobody", 401, "UNAUTHENTICATED"),
            ("not%20a%20key", 404, "NOT_FOUND"),
            ("%3Cscript%3E", 404, "NOT_FOUND"),
        ] {
            let r = server
                .http
                .get(server.url(&format!("/array/{key}/{suffix}")))
                .header("origin", SITE)
                .send()
                .await
                .unwrap();
            assert_cors(&r, key);
            let (status, body) = read(r).await;
            assert_eq!(status, want_status, "{key}/{suffix}: {body}");
            assert_eq!(body["code"], want_code, "{key}/{suffix}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let long = "k".repeat(300);
        let (status, _) = read(
            server
                .http
                .get(server.url(&format!("/array/{long}/{suffix}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404);
    }
    for path in ["/flags/?v=2", "/decide/?v=3"] {
        let (status, body) = server
            .post_json(path, &json!({"token": "phc_nobody", "distinct_id": "d"}))
            .await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unknown API key");
        let (status, body) = server.post_json(path, &json!({"distinct_id": "d"})).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["code"], "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn preflight_and_cors_on_every_route() {
    let server = TestServer::start().await;
    for (method, path) in every_route() {
        let r = server
            .http
            .request(reqwest::Method::OPTIONS, server.url(&path))
            .header("origin", SITE)
            .header("access-control-request-method", method.as_str())
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "preflight {path}");
        assert_cors(&r, &path);
        let allowed = r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(allowed.contains(method.as_str()), "{path}: {allowed}");

        let mut req = server
            .http
            .request(method.clone(), server.url(&path))
            .header("origin", SITE);
        if method == reqwest::Method::POST {
            req = req.json(&json!({"token": KEY, "distinct_id": "d"}));
        }
        let r = req.send().await.unwrap();
        assert_cors(&r, &path);
        assert_eq!(r.status(), 200, "{method} {path}");
    }
}

#[tokio::test]
async fn flags_v2_answers_no_flags() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post_json(
            "/flags/?v=2",
            &json!({"token": KEY, "distinct_id": "anon-1", "groups": {},
                    "person_properties": {"$lib": "web"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flags"], json!({}));
    assert_eq!(body["errorsWhileComputingFlags"], false);
    assert!(body.get("featureFlags").is_none(), "{body}");
    assert!(body.get("supportedCompression").is_none(), "{body}");

    // `config=true` adds the remote config, as PostHog's /flags does.
    let (_, body) = server
        .post_json(
            "/flags/?v=2&config=true",
            &json!({"token": KEY, "distinct_id": "d"}),
        )
        .await;
    assert_eq!(body["flags"], json!({}));
    assert_eq!(body["sessionRecording"], false);
    assert!(body["supportedCompression"].is_array(), "{body}");

    // Without `v`: the older map shape.
    let (_, body) = server
        .post_json("/flags", &json!({"api_key": KEY, "distinct_id": "d"}))
        .await;
    assert_eq!(body["featureFlags"], json!({}));
    assert_eq!(body["featureFlagPayloads"], json!({}));
    // Nothing was captured.
    assert!(server.sink.events().is_empty());
}

#[tokio::test]
async fn decide_answers_by_version_with_the_config() {
    let server = TestServer::start().await;
    let cases = [
        ("/decide/", json!([])),
        ("/decide/?v=2", json!({})),
        ("/decide/?v=3", json!({})),
    ];
    for (path, flags) in cases {
        let (status, body) = server
            .post_json(path, &json!({"token": KEY, "distinct_id": "d"}))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["featureFlags"], flags, "{path}");
        assert_eq!(body["errorsWhileComputingFlags"], false);
        assert_eq!(body["sessionRecording"], false, "{path}");
        assert_eq!(body["siteApps"], json!([]), "{path}");
        assert!(
            body["supportedCompression"]
                .as_array()
                .unwrap()
                .contains(&json!("gzip-js"))
        );
    }
    let (_, body) = server
        .post_json("/decide/?v=4", &json!({"token": KEY, "distinct_id": "d"}))
        .await;
    assert_eq!(body["flags"], json!({}));
    assert!(body.get("featureFlags").is_none(), "{body}");
}

#[tokio::test]
async fn flags_bodies_in_every_sdk_encoding() {
    let server = TestServer::start().await;
    let payload = json!({"token": KEY, "distinct_id": "anon-1"}).to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&payload);
    let form = format!(
        "data={}",
        url_escape(&base64::engine::general_purpose::STANDARD.encode(&payload))
    );
    let cases: Vec<(&str, Vec<u8>, Headers)> = vec![
        // posthog-js once its config says gzip-js.
        (
            "/flags/?v=2&compression=gzip-js&ip=1&_=1700000000000",
            gzip(payload.as_bytes()),
            vec![("content-type", "text/plain")],
        ),
        (
            "/flags/?v=2",
            gzip(payload.as_bytes()),
            vec![("content-encoding", "gzip")],
        ),
        (
            "/decide/?v=3&compression=base64",
            b64.into_bytes(),
            vec![("content-type", "text/plain")],
        ),
        (
            "/decide/?v=3",
            form.into_bytes(),
            vec![("content-type", "application/x-www-form-urlencoded")],
        ),
        (
            "/flags/?v=2",
            payload.clone().into_bytes(),
            vec![("content-type", "application/json")],
        ),
    ];
    for (path, body, headers) in cases {
        let (status, resp) = server.post_bytes(path, body, &headers).await;
        assert_eq!(status, 200, "{path} {headers:?}: {resp}");
        assert_eq!(resp["errorsWhileComputingFlags"], false, "{path}");
    }

    // Bodies that are not what a flags request is.
    let (status, resp) = server
        .post_bytes("/flags/?v=2", b"[1, 2]".to_vec(), &[])
        .await;
    assert_eq!(status, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("array"), "{resp}");
    let (status, resp) = server
        .post_bytes("/flags/?v=2", b"{nope".to_vec(), &[])
        .await;
    assert_eq!(status, 400, "{resp}");
    let (status, resp) = server
        .post_bytes(
            "/flags/?v=2&compression=gzip-js",
            vec![0x1f, 0x8b, 0, 1, 2],
            &[],
        )
        .await;
    assert_eq!(status, 400, "{resp}");
}

#[tokio::test]
async fn flags_get_with_the_key_in_query_or_header() {
    let server = TestServer::start().await;
    let (status, body) = read(
        server
            .http
            .get(server.url(&format!("/flags/?v=2&token={KEY}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flags"], json!({}));
    let (status, _) = read(
        server
            .http
            .get(server.url("/decide/?v=3"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = read(
        server
            .http
            .get(server.url("/decide/?v=3"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn flags_bodies_obey_the_capture_limits() {
    let config = tally_ingest::IngestConfig {
        limits: tally_ingest::Limits {
            max_body_bytes: 1024,
            max_decompressed_bytes: 4096,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::with_config(config).await;
    let big = json!({"token": KEY, "distinct_id": "d", "pad": "x".repeat(2000)});
    let (status, body) = server.post_json("/flags/?v=2", &big).await;
    assert_eq!(status, 413, "{body}");
    // Small on the wire, too large once inflated.
    let bomb = json!({"token": KEY, "distinct_id": "d", "pad": "x".repeat(10_000)});
    let (status, body) = server
        .post_bytes(
            "/flags/?v=2&compression=gzip-js",
            gzip(bomb.to_string().as_bytes()),
            &[],
        )
        .await;
    assert_eq!(status, 413, "{body}");
}

/// Percent-escapes the characters of base64 a form body must not carry raw.
fn url_escape(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}
