//! The PostHog SDK endpoints that are not capture: remote config
//! (`/array/<key>/config`, `/array/<key>/config.js`) and feature flags (`/flags`,
//! `/decide`).
//!
//! posthog-js asks for these on start-up. It learns from the remote config which
//! compression the server decodes: without an answer it forgets the `gzip-js` it
//! started with and sends plain JSON from then on (more bytes, and a CORS preflight
//! per request). So these routes tell the SDK the truth about Tally: the
//! compressions ingest decodes, the capture path, autocapture allowed, and no
//! feature flags, session recording, surveys, heatmaps or site apps, because Tally
//! has none of them. Every key is checked against the [`TenantDirectory`] like a
//! capture, so an unknown key answers 401 here as it would there.
//!
//! Owns: the response shapes of these endpoints and the checks of their requests.
//! Does not own: body decoding (the capture decoder in `decode` is reused, so a
//! `/flags` body may be gzip, base64 or a form like a capture), CORS (the router's
//! layer covers these routes), or feature-flag evaluation, which Tally does not have:
//! every flag answer is the empty set, never an error, so an SDK's `isFeatureEnabled`
//! returns its "off" value promptly.
//!
//! [`TenantDirectory`]: tally_core::TenantDirectory

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Map, Value, json};
use tally_core::{Classify, ErrorClass};

use crate::decode::{self, PostHogQuery};
use crate::error::IngestError;
use crate::http_error;
use crate::metrics as m;
use crate::server::{self, IngestState};

/// The compressions `decode` undoes for a PostHog capture, in the names posthog-js
/// uses. posthog-js picks `gzip-js` when it is listed; `base64` is listed because it
/// is decoded too, and an SDK that cannot gzip may fall back to it.
pub const SUPPORTED_COMPRESSION: [&str; 3] = ["gzip", "gzip-js", "base64"];

/// The capture path the remote config points SDKs at. posthog-js's own default;
/// every PostHog capture path is served, this one is merely the shortest.
pub const CAPTURE_ENDPOINT: &str = "/e/";

/// Keys longer than this are not keys; refusing them unread keeps a megabyte of path
/// out of the directory lookup (and out of the JavaScript we would echo it into).
const MAX_KEY_BYTES: usize = 256;

/// How long a browser may reuse a config. It only changes when Tally is upgraded;
/// five minutes keeps a page from asking on every navigation while an upgrade still
/// reaches visitors the same session.
const CONFIG_CACHE_CONTROL: &str = "public, max-age=300";

pub type Result<T, E = RemoteConfigError> = std::result::Result<T, E>;

/// Why a remote-config or flags request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    /// The path's key cannot be a key (empty, too long, or characters no key has), so
    /// there is no config at that address.
    #[error(
        "no remote config at this path: the key in `/array/<key>/config` must be 1 to \
         {MAX_KEY_BYTES} letters, digits, `_`, `-` or `.`"
    )]
    MalformedKey,
    /// The `/flags` or `/decide` body is JSON but not an object.
    #[error(
        "expected a JSON object like `{{\"token\": \"...\", \"distinct_id\": \"...\"}}`, got {0}"
    )]
    NotAnObject(&'static str),
    /// Authentication, body size and decoding: the same refusals as a capture.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl Classify for RemoteConfigError {
    fn class(&self) -> ErrorClass {
        match self {
            RemoteConfigError::MalformedKey => ErrorClass::NotFound,
            RemoteConfigError::NotAnObject(_) => ErrorClass::BadRequest,
            RemoteConfigError::Ingest(e) => e.class(),
        }
    }
}

impl IntoResponse for RemoteConfigError {
    fn into_response(self) -> Response {
        http_error::error_response(&self)
    }
}

/// The endpoints, as values of the `endpoint` label of
/// `tally_ingest_requests_total` (the label set stays closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    ConfigJson,
    ConfigJs,
    Flags,
    Decide,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::ConfigJson => "posthog_remote_config",
            Route::ConfigJs => "posthog_remote_config_js",
            Route::Flags => "posthog_flags",
            Route::Decide => "posthog_decide",
        }
    }
}

/// The routes, to be merged into the ingest router before its CORS layer.
pub(crate) fn routes() -> Router<Arc<IngestState>> {
    Router::new()
        .route(
            "/array/{key}/config",
            get(
                |State(state): State<Arc<IngestState>>, Path(key): Path<String>| async move {
                    respond(Route::ConfigJson, config_json(&state, &key).await)
                },
            ),
        )
        .route(
            "/array/{key}/config.js",
            get(
                |State(state): State<Arc<IngestState>>, Path(key): Path<String>| async move {
                    respond(Route::ConfigJs, config_js(&state, &key).await)
                },
            ),
        )
        .route("/flags", flags_route(Route::Flags))
        .route("/flags/", flags_route(Route::Flags))
        .route("/decide", flags_route(Route::Decide))
        .route("/decide/", flags_route(Route::Decide))
}

fn flags_route(route: Route) -> MethodRouter<Arc<IngestState>> {
    let handler = move |State(state): State<Arc<IngestState>>, req: Request| async move {
        respond(route, handle_flags(state, route, req).await)
    };
    get(handler).post(handler)
}

/// Counts the request and turns an error into its response.
fn respond(route: Route, result: Result<Response>) -> Response {
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.class() != ErrorClass::Internal {
                tracing::debug!(endpoint = route.name(), error = %err, "request refused");
            }
            err.into_response()
        }
    };
    metrics::counter!(
        m::REQUESTS_TOTAL,
        "endpoint" => route.name(),
        "status" => m::status_label(response.status())
    )
    .increment(1);
    response
}

/// Whether `key` can be a write key at all.
fn well_formed_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

async fn authenticate_path_key(state: &IngestState, key: &str) -> Result<()> {
    if !well_formed_key(key) {
        return Err(RemoteConfigError::MalformedKey);
    }
    server::authenticate(state, Some(key.to_string())).await?;
    Ok(())
}

/// The remote config for the project `token`: what posthog-js reads from
/// `/array/<token>/config` (the `RemoteConfig` of its type definitions).
pub fn remote_config(token: &str) -> Value {
    json!({
        "token": token,
        "supportedCompression": SUPPORTED_COMPRESSION,
        // `false`, not absent: posthog-js then skips its `/flags` request entirely.
        "hasFeatureFlags": false,
        "autocapture_opt_out": false,
        "autocaptureExceptions": false,
        "captureDeadClicks": false,
        "capturePerformance": false,
        "analytics": {"endpoint": CAPTURE_ENDPOINT},
        // A flat string rather than an array of element objects: smaller on the wire
        // and in storage, and never near the nesting limit.
        "elementsChainAsString": true,
        "sessionRecording": false,
        "heatmaps": false,
        "surveys": false,
        "productTours": false,
        "conversations": false,
        "logs": {"captureConsoleLogs": false},
        "errorTracking": {"autocaptureExceptions": false, "suppressionRules": []},
        // posthog-js's own default, stated so that the SDK does not wait for it.
        "defaultIdentifiedOnly": true,
    })
}

/// The script at `/array/<token>/config.js`: posthog-js loads it with a `<script>`
/// tag and then reads `window._POSTHOG_REMOTE_CONFIG[token].config`.
pub fn remote_config_js(token: &str) -> String {
    let entry = json!({"config": remote_config(token), "siteApps": []});
    format!(
        "(function () {{\n  var all = (window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {{}});\n  all[{}] = {};\n}})();\n",
        script_safe_json(&Value::String(token.to_string())),
        script_safe_json(&entry)
    )
}

/// JSON that is also safe inside a script: `<`, `>`, `&` and the two line separators
/// JavaScript engines before ES2019 refuse in string literals are `\u` escaped, so
/// no value can close a `<script>` element or break the statement. Keys reaching
/// here are well formed, but the function does not rely on it.
fn script_safe_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn with_cache_control(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CONFIG_CACHE_CONTROL),
    );
    response
}

async fn config_json(state: &IngestState, key: &str) -> Result<Response> {
    authenticate_path_key(state, key).await?;
    Ok(with_cache_control(
        (StatusCode::OK, axum::Json(remote_config(key))).into_response(),
    ))
}

async fn config_js(state: &IngestState, key: &str) -> Result<Response> {
    authenticate_path_key(state, key).await?;
    let response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript; charset=utf-8"),
        )],
        remote_config_js(key),
    )
        .into_response();
    Ok(with_cache_control(response))
}

/// Which answer shape a flags request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagsShape {
    /// `/decide` without `v` or `v=1`: `featureFlags` is the list of enabled keys.
    EnabledList,
    /// `/decide?v=2|3`, `/flags` without `v=2`: `featureFlags` maps key to value, with
    /// `featureFlagPayloads` beside it.
    ValueMap,
    /// `/decide?v=4`, `/flags?v=2`: `flags` maps key to a detail object.
    Details,
}

impl FlagsShape {
    /// The shape for the endpoint and its `v` parameter (an unparsable `v` counts as
    /// absent: an SDK sending it still deserves an answer it can read).
    fn for_request(route: Route, version: Option<u32>) -> Self {
        match (route, version) {
            (Route::Decide, None | Some(0 | 1)) => FlagsShape::EnabledList,
            (Route::Decide, Some(2 | 3)) => FlagsShape::ValueMap,
            (Route::Decide, Some(_)) => FlagsShape::Details,
            (_, Some(v)) if v >= 2 => FlagsShape::Details,
            _ => FlagsShape::ValueMap,
        }
    }
}

/// The answer to a flags request for `token`: no flags, no errors computing them, and
/// for `/decide` (or `/flags?config=true`) the remote config fields beside them, as
/// PostHog's `/decide` always carried them.
pub fn flags_response(token: &str, shape: FlagsShape, with_config: bool) -> Value {
    let mut body = Map::new();
    match shape {
        FlagsShape::EnabledList => {
            body.insert("featureFlags".into(), json!([]));
        }
        FlagsShape::ValueMap => {
            body.insert("featureFlags".into(), json!({}));
            body.insert("featureFlagPayloads".into(), json!({}));
        }
        FlagsShape::Details => {
            body.insert("flags".into(), json!({}));
        }
    }
    body.insert("errorsWhileComputingFlags".into(), json!(false));
    body.insert("quotaLimited".into(), json!([]));
    body.insert(
        "requestId".into(),
        json!(uuid::Uuid::now_v7().hyphenated().to_string()),
    );
    if with_config {
        if let Value::Object(config) = remote_config(token) {
            for (k, v) in config {
                body.entry(k).or_insert(v);
            }
        }
        // posthog-js before remote config read autocapture from here.
        body.insert("config".into(), json!({"enable_collect_everything": true}));
        body.insert("siteApps".into(), json!([]));
        body.insert("toolbarParams".into(), json!({}));
        body.insert("isAuthenticated".into(), json!(false));
    }
    Value::Object(body)
}

/// Query parameters of a flags request.
#[derive(Debug, Default)]
struct FlagsQuery {
    version: Option<u32>,
    config: bool,
    /// A key in the query (`token` or `api_key`), for a GET without a body.
    key: Option<String>,
}

impl FlagsQuery {
    fn parse(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = query
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let mut out = FlagsQuery::default();
        for (k, v) in pairs {
            match k.as_str() {
                "v" => out.version = v.trim().parse().ok(),
                "config" => out.config = matches!(v.trim(), "true" | "1"),
                "token" | "api_key" => {
                    let v = v.trim();
                    if !v.is_empty() {
                        out.key = Some(v.to_string());
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The key a flags body carries: `token` (posthog-js, posthog-node) or `api_key`
/// (older SDKs).
fn body_key(body: &Map<String, Value>) -> Option<String> {
    ["token", "api_key", "$token"]
        .iter()
        .filter_map(|k| body.get(*k)?.as_str())
        .map(str::trim)
        .find(|k| !k.is_empty())
        .map(str::to_string)
}

async fn handle_flags(state: Arc<IngestState>, route: Route, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let limits = &state.config.limits;
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        }
        .into());
    }
    let body = server::read_body(body, limits.max_body_bytes).await?;
    let raw_query = parts.uri.query().map(str::to_string);
    let flags_query = FlagsQuery::parse(raw_query.as_deref());
    let capture_query = PostHogQuery::parse(raw_query.as_deref());
    let has_payload = !body.iter().all(u8::is_ascii_whitespace)
        || capture_query.data.as_deref().is_some_and(|d| !d.is_empty());

    // A GET (or an empty POST) has nothing to decode; the key is then in the query
    // or a header.
    let fields = if has_payload {
        let cap = limits.max_decompressed_bytes;
        let headers = parts.headers.clone();
        let large = body.len() > server::BLOCKING_THRESHOLD_BYTES;
        let value = server::cpu(large, move || {
            let bytes = decode::decode_posthog_body(&headers, &capture_query, &body, cap)?;
            decode::parse_json(&bytes)
        })
        .await?;
        match value {
            Value::Object(obj) => obj,
            other => {
                return Err(RemoteConfigError::NotAnObject(crate::normalize::json_type(
                    &other,
                )));
            }
        }
    } else {
        Map::new()
    };
    let key = body_key(&fields)
        .or(flags_query.key)
        .or_else(|| server::header_api_key(&parts.headers));
    server::authenticate(&state, key.clone()).await?;
    let token = key.unwrap_or_default();
    let shape = FlagsShape::for_request(route, flags_query.version);
    let with_config = route == Route::Decide || flags_query.config;
    Ok((
        StatusCode::OK,
        axum::Json(flags_response(&token, shape, with_config)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        assert!(well_formed_key("phc_abc-DEF.123"));
        assert!(well_formed_key(&"k".repeat(MAX_KEY_BYTES)));
        assert!(!well_formed_key(""));
        assert!(!well_formed_key(&"k".repeat(MAX_KEY_BYTES + 1)));
        for bad in ["a b", "a/b", "a<b", "ä", "a'b", "a\"b"] {
            assert!(!well_formed_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn config_tells_the_sdk_what_tally_decodes() {
        let c = remote_config("k1");
        assert_eq!(c["token"], "k1");
        assert_eq!(
            c["supportedCompression"],
            json!(["gzip", "gzip-js", "base64"])
        );
        assert_eq!(c["hasFeatureFlags"], false);
        assert_eq!(c["sessionRecording"], false);
        assert_eq!(c["surveys"], false);
        assert_eq!(c["autocapture_opt_out"], false);
        assert_eq!(c["analytics"]["endpoint"], CAPTURE_ENDPOINT);
    }

    #[test]
    fn config_js_assigns_the_global_by_token() {
        let js = remote_config_js("k1");
        assert!(js.contains("window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {}"));
        // The statement assigning the entry: the token as a string literal, then JSON.
        let (_, rest) = js.split_once("all[\"k1\"] = ").unwrap();
        let json_text = rest.split_once(";\n})();").unwrap().0;
        let entry: Value = serde_json::from_str(json_text).unwrap();
        assert_eq!(entry["config"], remote_config("k1"));
        assert_eq!(entry["siteApps"], json!([]));
    }

    #[test]
    fn script_json_cannot_close_the_script() {
        let v = json!({"x": "</script><script>alert(1)</script>&\u{2028}"});
        let s = script_safe_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        assert!(!s.contains('\u{2028}'));
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn shapes_by_endpoint_and_version() {
        use FlagsShape::*;
        let cases = [
            (Route::Decide, None, EnabledList),
            (Route::Decide, Some(1), EnabledList),
            (Route::Decide, Some(2), ValueMap),
            (Route::Decide, Some(3), ValueMap),
            (Route::Decide, Some(4), Details),
            (Route::Decide, Some(7), Details),
            (Route::Flags, None, ValueMap),
            (Route::Flags, Some(1), ValueMap),
            (Route::Flags, Some(2), Details),
            (Route::Flags, Some(3), Details),
        ];
        for (route, v, want) in cases {
            assert_eq!(FlagsShape::for_request(route, v), want, "{route:?} v={v:?}");
        }
    }

    #[test]
    fn flags_bodies() {
        let v2 = flags_response("k", FlagsShape::Details, false);
        assert_eq!(v2["flags"], json!({}));
        assert_eq!(v2["errorsWhileComputingFlags"], false);
        assert!(v2.get("featureFlags").is_none());
        assert!(v2.get("supportedCompression").is_none());
        assert!(v2["requestId"].as_str().is_some());

        let v3 = flags_response("k", FlagsShape::ValueMap, true);
        assert_eq!(v3["featureFlags"], json!({}));
        assert_eq!(v3["featureFlagPayloads"], json!({}));
        assert_eq!(v3["supportedCompression"], json!(SUPPORTED_COMPRESSION));
        assert_eq!(v3["sessionRecording"], false);
        assert_eq!(v3["siteApps"], json!([]));
        assert_eq!(v3["config"]["enable_collect_everything"], true);

        assert_eq!(
            flags_response("k", FlagsShape::EnabledList, true)["featureFlags"],
            json!([])
        );
    }

    #[test]
    fn flags_query_and_body_keys() {
        let q = FlagsQuery::parse(Some("v=2&config=true&token=%20k%20&ip=1"));
        assert_eq!(q.version, Some(2));
        assert!(q.config);
        assert_eq!(q.key.as_deref(), Some("k"));
        let q = FlagsQuery::parse(Some("v=x"));
        assert_eq!(q.version, None);
        assert!(!q.config);
        assert_eq!(FlagsQuery::parse(Some("%zz")).version, None);

        let body = json!({"api_key": " ", "token": "t"});
        assert_eq!(body_key(body.as_object().unwrap()).as_deref(), Some("t"));
        let body = json!({"api_key": "a"});
        assert_eq!(body_key(body.as_object().unwrap()).as_deref(), Some("a"));
        assert_eq!(body_key(&Map::new()), None);
    }
}
