//! The axum router and handlers: read the body under its size cap, decode it,
//! authenticate, normalise each event, hand the valid ones to the sink as one batch,
//! and answer only once the sink has made them durable.
//!
//! Partial batches: on every endpoint, events that fail validation are dropped and
//! the rest are written (PostHog's behaviour), each drop counted in
//! `tally_ingest_rejected_events_total{reason}`. The native endpoint reports the
//! drops per index so a client can retry or fix exactly those. When *every* event of
//! a request is refused, the request fails with the first rejection's 4xx, so a
//! developer trying one event by hand sees why.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value, json};
use tally_core::time::{now_micros, parse_timestamp};
use tally_core::{
    Classify, ErrorClass, Event, EventBatch, EventSink, SinkError, TenantDirectory, TenantId,
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::client_ip::resolve_client_ip;
use crate::config::IngestConfig;
use crate::decode::{self, PostHogQuery};
use crate::enrich::{Enricher, GeoMemo};
use crate::error::{EventRejection, IngestError, Result};
use crate::http_error;
use crate::metrics::{self as m, Endpoint};
use crate::normalize::{self, Draft, RequestContext, not_an_object};
use crate::{posthog, remote_config, segment};

/// Bodies above this size are decoded and normalised on the blocking pool, so one
/// 20 MiB batch does not stall every other request on its runtime worker.
pub(crate) const BLOCKING_THRESHOLD_BYTES: usize = 64 * 1024;

/// What the handlers share.
pub struct IngestState {
    pub sink: Arc<dyn EventSink>,
    pub directory: Arc<dyn TenantDirectory>,
    pub config: IngestConfig,
    pub enricher: Enricher,
}

impl IngestState {
    /// Builds the state, loading the GeoIP database if one is configured.
    pub fn new(
        sink: Arc<dyn EventSink>,
        directory: Arc<dyn TenantDirectory>,
        config: IngestConfig,
    ) -> Result<Self> {
        let enricher = Enricher::new(&config)?;
        Ok(Self {
            sink,
            directory,
            config,
            enricher,
        })
    }
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("config", &self.config)
            .field("enricher", &self.enricher)
            .finish_non_exhaustive()
    }
}

/// The ingest routes. Serve with
/// `axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())`
/// so the handlers learn the peer address; without it events get no `$ip`.
pub fn router(state: Arc<IngestState>) -> Router {
    let posthog_capture = || posthog_route(Endpoint::PostHogCapture);
    let posthog_batch = || posthog_route(Endpoint::PostHogBatch);
    Router::new()
        .route("/capture", posthog_capture())
        .route("/capture/", posthog_capture())
        .route("/e", posthog_capture())
        .route("/e/", posthog_capture())
        .route("/i/v0/e", posthog_capture())
        .route("/i/v0/e/", posthog_capture())
        .route("/track", posthog_capture())
        .route("/track/", posthog_capture())
        .route("/batch", posthog_batch())
        .route("/batch/", posthog_batch())
        .route(
            "/v1/track",
            segment_route(Endpoint::SegmentTrack, Some(segment::Kind::Track)),
        )
        .route(
            "/v1/identify",
            segment_route(Endpoint::SegmentIdentify, Some(segment::Kind::Identify)),
        )
        .route(
            "/v1/alias",
            segment_route(Endpoint::SegmentAlias, Some(segment::Kind::Alias)),
        )
        .route(
            "/v1/group",
            segment_route(Endpoint::SegmentGroup, Some(segment::Kind::Group)),
        )
        .route(
            "/v1/page",
            segment_route(Endpoint::SegmentPage, Some(segment::Kind::Page)),
        )
        .route(
            "/v1/screen",
            segment_route(Endpoint::SegmentScreen, Some(segment::Kind::Screen)),
        )
        .route("/v1/batch", segment_route(Endpoint::SegmentBatch, None))
        .route("/v1/import", segment_route(Endpoint::SegmentBatch, None))
        .route(
            "/v1/events/batch",
            post(
                |State(state): State<Arc<IngestState>>, req: Request| async move {
                    respond(Endpoint::NativeBatch, handle_native(state, req).await)
                },
            ),
        )
        // posthog-js's remote config and flags requests: cross-origin like its
        // captures, so merged before the CORS layer.
        .merge(remote_config::routes())
        // Inside the CORS layer, so that a browser SDK calling an endpoint Tally does
        // not serve sees this 404 and its message, not an opaque CORS failure. (The
        // binary merges the other routers into this one; none has a fallback.)
        .fallback(|req: Request| async move {
            http_error::error_response(&IngestError::UnknownEndpoint {
                method: req.method().to_string(),
                path: req.uri().path().chars().take(200).collect(),
            })
        })
        .layer(middleware::from_fn(cors))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

fn posthog_route(endpoint: Endpoint) -> MethodRouter<Arc<IngestState>> {
    let handler = move |State(state): State<Arc<IngestState>>, req: Request| async move {
        respond(endpoint, handle_posthog(state, req).await)
    };
    get(handler).post(handler)
}

fn segment_route(
    endpoint: Endpoint,
    kind: Option<segment::Kind>,
) -> MethodRouter<Arc<IngestState>> {
    post(
        move |State(state): State<Arc<IngestState>>, req: Request| async move {
            respond(endpoint, handle_segment(state, kind, req).await)
        },
    )
}

/// Counts the request and turns an error into its response.
fn respond(endpoint: Endpoint, result: Result<Response>) -> Response {
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            // Client mistakes and backpressure are routine (and counted by status);
            // logging each at WARN would flood the log exactly when ingest is busiest.
            // Sink failures are logged once in `submit`, internal errors by
            // `http_error`.
            if err.class() != ErrorClass::Internal {
                tracing::debug!(endpoint = endpoint.name(), error = %err, "request refused");
            }
            err.into_response()
        }
    };
    metrics::counter!(
        m::REQUESTS_TOTAL,
        "endpoint" => endpoint.name(),
        "status" => m::status_label(response.status())
    )
    .increment(1);
    response
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        http_error::error_response(&self)
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // A panic is a bug; the panic hook has already printed the payload.
    tracing::error!("ingest handler panicked");
    http_error::error_response(&IngestError::Internal("handler panicked".into()))
}

/// Browser SDKs post cross-origin. posthog-js and analytics.js use "simple" requests
/// (text/plain), but a page may configure custom headers, which triggers a preflight.
async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut response = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(
                "Content-Type, Content-Encoding, Authorization",
            ));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    match origin {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    response
}

/// The parts of a request every format needs.
struct Received {
    headers: HeaderMap,
    query: Option<String>,
    body: bytes::Bytes,
    meta: RequestMeta,
}

/// Per-request facts, owned so that normalisation can move to the blocking pool.
#[derive(Clone)]
struct RequestMeta {
    received_at: i64,
    sent_at: Option<i64>,
    client_ip: Option<IpAddr>,
    user_agent: Option<String>,
}

async fn receive(state: &IngestState, req: Request) -> Result<Received> {
    let received_at = now_micros();
    let (parts, body) = req.into_parts();
    let limits = &state.config.limits;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    // Refuse an announced oversize body before reading a byte of it.
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let body = read_body(body, limits.max_body_bytes).await?;
    metrics::counter!(m::BYTES_TOTAL, "kind" => "compressed").increment(body.len() as u64);
    let client_ip = resolve_client_ip(peer, &parts.headers, &state.config.trusted_proxies);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Received {
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        meta: RequestMeta {
            received_at,
            sent_at: None,
            client_ip,
            user_agent,
        },
    })
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngestError::BodyTooLarge { limit })
        }
        Err(e) => Err(IngestError::BodyRead(e.to_string())),
    }
}

/// Runs CPU-heavy work inline for small requests and on the blocking pool for large.
pub(crate) async fn cpu<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if large {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Internal(format!("decode task failed: {e}")))?
    } else {
        work()
    }
}

/// Decodes a request with `parse` (which also yields the API key to authenticate),
/// authenticates, then normalises with `normalize`. For large bodies all three run on
/// one blocking-pool thread — one hand-off per request, the key check driven from that
/// thread — since a hand-off per phase cost ~3 µs per event in thread wake-ups and
/// cross-thread frees (docs/BENCHMARKS.md); small bodies run inline.
async fn decode_and_normalize<P: Send + 'static>(
    state: &Arc<IngestState>,
    large: bool,
    parse: impl FnOnce() -> Result<(Option<String>, P)> + Send + 'static,
    normalize: impl FnOnce(&IngestState, TenantId, P) -> Result<Outcome> + Send + 'static,
) -> Result<(TenantId, Outcome)> {
    if large {
        let worker = state.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || -> Result<(TenantId, Outcome)> {
            let (key, parsed) = parse()?;
            let tenant = runtime.block_on(authenticate(&worker, key))?;
            let outcome = normalize(&worker, tenant, parsed)?;
            Ok((tenant, outcome))
        })
        .await
        .map_err(|e| IngestError::Internal(format!("decode task failed: {e}")))?
    } else {
        let (key, parsed) = parse()?;
        let tenant = authenticate(state, key).await?;
        let outcome = normalize(state, tenant, parsed)?;
        Ok((tenant, outcome))
    }
}

fn count_decoded(len: usize) {
    metrics::counter!(m::BYTES_TOTAL, "kind" => "decompressed").increment(len as u64);
}

/// The key from `Authorization`: Basic (the username, as Segment sends the write
/// key) or Bearer.
pub(crate) fn header_api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let key = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        match text.split_once(':') {
            Some((user, _password)) => user.to_string(),
            None => text,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_string()
    } else {
        return None;
    };
    let key = key.trim();
    (!key.is_empty()).then(|| key.to_string())
}

pub(crate) async fn authenticate(state: &IngestState, key: Option<String>) -> Result<TenantId> {
    let key = key.ok_or(IngestError::MissingApiKey)?;
    state
        .directory
        .tenant_for_write_key(&key)
        .await
        .ok_or(IngestError::UnknownApiKey)
}

fn check_count(count: usize, state: &IngestState) -> Result<()> {
    let limit = state.config.limits.max_events_per_batch;
    if count == 0 {
        return Err(IngestError::NoEvents);
    }
    if count > limit {
        return Err(IngestError::TooManyEvents { count, limit });
    }
    Ok(())
}

/// The events that passed and the ones that did not.
struct Outcome {
    events: Vec<Event>,
    rejected: Vec<EventRejection>,
}

/// Normalises every event with `to_draft` doing the format-specific translation.
fn normalize_all(
    state: &IngestState,
    tenant: TenantId,
    values: Vec<Value>,
    meta: &RequestMeta,
    to_draft: impl Fn(usize, Map<String, Value>) -> std::result::Result<Draft, EventRejection>,
) -> Outcome {
    let ctx = RequestContext {
        config: &state.config,
        enricher: &state.enricher,
        received_at: meta.received_at,
        sent_at: meta.sent_at,
        client_ip: meta.client_ip,
        user_agent: meta.user_agent.as_deref(),
    };
    let mut memo = GeoMemo::default();
    let mut events = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let result = normalize::check_event_size(index, &value, &state.config.limits)
            .and_then(|()| match value {
                Value::Object(obj) => to_draft(index, obj),
                other => Err(not_an_object(index, &other)),
            })
            .and_then(|draft| normalize::finish(index, tenant, draft, &ctx, &mut memo));
        match result {
            Ok(event) => events.push(event),
            Err(rejection) => {
                metrics::counter!(m::REJECTED_EVENTS_TOTAL, "reason" => rejection.reason.code())
                    .increment(1);
                rejected.push(rejection);
            }
        }
    }
    if !rejected.is_empty() {
        tracing::debug!(
            %tenant,
            accepted = events.len(),
            rejected = rejected.len(),
            first = %rejected[0],
            "dropped invalid events"
        );
    }
    Outcome { events, rejected }
}

/// Hands the batch to the sink and waits for durability.
async fn submit(state: &IngestState, tenant: TenantId, events: Vec<Event>) -> Result<usize> {
    let count = events.len();
    let started = Instant::now();
    let result = state.sink.submit(EventBatch { tenant, events }).await;
    metrics::histogram!(m::ACK_SECONDS).record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics::counter!(m::EVENTS_TOTAL).increment(count as u64);
            Ok(count)
        }
        Err(e @ SinkError::Overloaded { .. }) => Err(e.into()),
        Err(e) => {
            tracing::warn!(%tenant, events = count, error = %e, "sink refused a batch");
            Err(e.into())
        }
    }
}

/// Submits what passed, or fails with the first rejection when nothing did.
async fn accept_all_or_fail(state: &IngestState, tenant: TenantId, outcome: Outcome) -> Result<()> {
    if outcome.events.is_empty() {
        let count = outcome.rejected.len();
        return match outcome.rejected.into_iter().next() {
            Some(first) => Err(IngestError::AllEventsRejected { first, count }),
            None => Err(IngestError::NoEvents),
        };
    }
    submit(state, tenant, outcome.events).await.map(|_| ())
}

async fn handle_posthog(state: Arc<IngestState>, req: Request) -> Result<Response> {
    let Received {
        headers,
        query,
        body,
        mut meta,
    } = receive(&state, req).await?;
    let query = PostHogQuery::parse(query.as_deref());
    let large = body.len() > BLOCKING_THRESHOLD_BYTES;
    let cap = state.config.limits.max_decompressed_bytes;
    let query_sent_at = query.sent_at_micros();
    let header_key = header_api_key(&headers);
    let (tenant, outcome) = decode_and_normalize(
        &state,
        large,
        move || {
            let bytes = decode::decode_posthog_body(&headers, &query, &body, cap)?;
            count_decoded(bytes.len());
            let split = posthog::split_request(decode::parse_json(&bytes)?)?;
            // The body's key first: PostHog SDKs always send one there, while an
            // `Authorization` header on this path may belong to a proxy in front of us.
            let key = posthog::request_api_key(&split)?.or(header_key);
            Ok((key, split))
        },
        move |state, tenant, split| {
            check_count(split.events.len(), state)?;
            meta.sent_at = split.sent_at.or(query_sent_at);
            Ok(normalize_all(
                state,
                tenant,
                split.events,
                &meta,
                posthog::draft,
            ))
        },
    )
    .await?;
    accept_all_or_fail(&state, tenant, outcome).await?;
    Ok((StatusCode::OK, axum::Json(json!({"status": 1}))).into_response())
}

async fn handle_segment(
    state: Arc<IngestState>,
    kind: Option<segment::Kind>,
    req: Request,
) -> Result<Response> {
    let Received {
        headers,
        body,
        mut meta,
        ..
    } = receive(&state, req).await?;
    let large = body.len() > BLOCKING_THRESHOLD_BYTES;
    let cap = state.config.limits.max_decompressed_bytes;
    let header_key = header_api_key(&headers);
    let (tenant, outcome) = decode_and_normalize(
        &state,
        large,
        move || {
            let bytes = decode::decode_plain_body(&headers, &body, cap)?;
            count_decoded(bytes.len());
            let mut split = segment::split_request(decode::parse_json(&bytes)?, kind)?;
            let key = header_key.or(split.write_key.take());
            Ok((key, split))
        },
        move |state, tenant, split| {
            check_count(split.messages.len(), state)?;
            meta.sent_at = split.sent_at.as_ref().and_then(parse_timestamp);
            let context = split.context;
            Ok(normalize_all(
                state,
                tenant,
                split.messages,
                &meta,
                |index, msg| segment::draft_from_batch_message(index, msg, context.as_ref()),
            ))
        },
    )
    .await?;
    accept_all_or_fail(&state, tenant, outcome).await?;
    Ok((StatusCode::OK, axum::Json(json!({"success": true}))).into_response())
}

/// The native body: `{"events": [...], "api_key"?, "historical"?}` → (key, historical, events).
fn parse_native(
    headers: &HeaderMap,
    body: &[u8],
    cap: usize,
) -> Result<(Option<String>, bool, Vec<Value>)> {
    let bytes = decode::decode_plain_body(headers, body, cap)?;
    count_decoded(bytes.len());
    match decode::parse_json(&bytes)? {
        Value::Object(mut obj) => {
            let key = obj
                .get("api_key")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string);
            let historical = match obj.get("historical") {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(other) => {
                    return Err(IngestError::UnexpectedShape(format!(
                        "`historical` must be a boolean, got {}",
                        normalize::json_type(other)
                    )));
                }
            };
            match obj.remove("events") {
                Some(Value::Array(events)) => Ok((key, historical, events)),
                Some(other) => Err(IngestError::UnexpectedShape(format!(
                    "`events` must be an array, got {}",
                    normalize::json_type(&other)
                ))),
                None => Err(IngestError::UnexpectedShape(
                    "expected `{\"events\": [...]}`".to_string(),
                )),
            }
        }
        other => Err(IngestError::UnexpectedShape(format!(
            "expected `{{\"events\": [...]}}`, got {}",
            normalize::json_type(&other)
        ))),
    }
}

/// Checks the count and normalises a native batch for an authenticated tenant.
fn normalize_native(
    state: &IngestState,
    tenant: TenantId,
    events: Vec<Value>,
    historical: bool,
    mut meta: RequestMeta,
) -> Result<Outcome> {
    check_count(events.len(), state)?;
    if historical {
        // A history import (`tally import`) relays events recorded elsewhere: the
        // importing machine's address, user agent and clock say nothing about them.
        meta.client_ip = None;
        meta.user_agent = None;
        meta.sent_at = None;
    }
    Ok(normalize_all(state, tenant, events, &meta, posthog::draft))
}

async fn handle_native(state: Arc<IngestState>, req: Request) -> Result<Response> {
    let Received {
        headers,
        body,
        meta,
        ..
    } = receive(&state, req).await?;
    let cap = state.config.limits.max_decompressed_bytes;
    let header_key = header_api_key(&headers);
    let large = body.len() > BLOCKING_THRESHOLD_BYTES;
    let (tenant, outcome) = decode_and_normalize(
        &state,
        large,
        move || {
            let (body_key, historical, events) = parse_native(&headers, &body, cap)?;
            Ok((header_key.or(body_key), (historical, events)))
        },
        move |state, tenant, (historical, events)| {
            normalize_native(state, tenant, events, historical, meta)
        },
    )
    .await?;
    let rejected: Vec<Value> = outcome
        .rejected
        .iter()
        .map(|r| json!({"index": r.index, "reason": r.detail, "code": r.reason.code()}))
        .collect();
    if outcome.events.is_empty() {
        let count = outcome.rejected.len();
        let Some(first) = outcome.rejected.into_iter().next() else {
            return Err(IngestError::NoEvents);
        };
        let mut extra = Map::new();
        extra.insert("accepted".into(), json!(0));
        extra.insert("rejected".into(), Value::Array(rejected));
        return Ok(http_error::error_response_with(
            &IngestError::AllEventsRejected { first, count },
            extra,
        ));
    }
    let accepted = submit(&state, tenant, outcome.events).await?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({"accepted": accepted, "rejected": rejected})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn authorization_header_forms() {
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("wk_123:");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(header_api_key(&h).as_deref(), Some("wk_123"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  k9 "),
        );
        assert_eq!(header_api_key(&h).as_deref(), Some("k9"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(header_api_key(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(header_api_key(&h), None);
    }
}
