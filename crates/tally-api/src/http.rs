//! The HTTP face of the API: `POST /graphql` (GraphQL over HTTP, JSON), `GET /graphql`
//! (the GraphiQL explorer page) and `GET /graphql/schema.json` (the query model's JSON
//! Schema).
//!
//! Owns: reading the body and the `Authorization` header, attaching the request's
//! credentials to the GraphQL request, and giving every error of the response a code
//! (errors that async-graphql raises itself, such as syntax errors or the depth limit,
//! carry none). GraphQL-level errors are answered with HTTP 200 and an `errors` list,
//! as GraphQL-over-HTTP clients expect; only a body that is not a GraphQL request at
//! all gets a 4xx. Does not own the schema ([`crate::graphql`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::Api;
use crate::auth::authenticate;
use crate::graphql::{ApiConfig, Authentication, QueryBudget};
use crate::model::JSON_SCHEMA_PATH;

const EXPLORER_HTML: &str = include_str!("explorer.html");

/// Largest GraphQL request body accepted, in bytes. Queries are small; a megabyte
/// leaves room for long filter lists without letting a client make the server buffer
/// arbitrary amounts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's routes, to be merged into the server's router.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/graphql", get(explorer).post(execute))
        .route(JSON_SCHEMA_PATH, get(json_schema))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(api))
}

async fn explorer() -> Html<&'static str> {
    Html(EXPLORER_HTML)
}

async fn json_schema(State(api): State<Arc<Api>>) -> Response {
    (
        [(CONTENT_TYPE, "application/schema+json")],
        api.json_schema.clone(),
    )
        .into_response()
}

async fn execute(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "PAYLOAD_TOO_LARGE"
            } else {
                "BAD_REQUEST"
            };
            return request_error(status, code, &rejection.body_text());
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!(
                    "the body must be a JSON GraphQL request such as {{\"query\": \"{{ tenants {{ id }} }}\", \"variables\": {{}}}}: {e}"
                ),
            );
        }
    };
    // A header that is not visible ASCII cannot be a key; say so rather than "no key".
    let authorization = headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let authentication = match authenticate(api.shared.meta.as_ref(), authorization).await {
        Ok(principal) => Authentication::Valid(principal),
        Err(e) => Authentication::Failed(e),
    };
    let request = request.data(authentication).data(QueryBudget::default());
    let mut response = api.schema.execute(request).await;
    for error in &mut response.errors {
        give_code(error, &api.shared.config);
    }
    // `application/json` (what `axum::Json` sets) rather than
    // `application/graphql-response+json`: with the latter, GraphQL-over-HTTP expects
    // 4xx statuses for requests that fail validation, and we answer those with 200 and
    // `errors` like most servers and clients do.
    axum::Json(response).into_response()
}

/// Errors from our resolvers carry a code; the rest were raised by async-graphql while
/// parsing or validating the document, which is always the client's doing.
fn give_code(error: &mut async_graphql::ServerError, config: &ApiConfig) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_some() {
        return;
    }
    extensions.set("code", "BAD_REQUEST");
    // async-graphql's own texts for its limits do not say what the limits are.
    match error.message.as_str() {
        "Query is nested too deep." => {
            error.message = format!(
                "the query is nested deeper than the limit of {} levels",
                config.max_depth
            );
            extensions.set("limit", "depth");
        }
        "Query is too complex." => {
            error.message = format!(
                "the query selects more than the limit of {} fields",
                config.max_complexity
            );
            extensions.set("limit", "complexity");
        }
        _ => {}
    }
}

fn request_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "errors": [{"message": message, "extensions": {"code": code}}]
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use parking_lot::Mutex;
    use serde_json::Value;
    use tally_core::TenantId;
    use tally_meta::{MetaStore, SqliteMeta};
    use tally_query::{Query, QueryResult, Scope};
    use tower::ServiceExt;

    use super::*;
    use crate::error::RunError;
    use crate::model::QueryKind;
    use crate::runner::{QueryRunner, RunContext};

    /// Answers trends queries with one bucket whose value is the number of series, and
    /// remembers what it was asked.
    #[derive(Default)]
    struct FakeRunner {
        seen: Mutex<Vec<(Scope, Option<String>)>>,
        /// The tenant names each query was given to select from.
        tenants_seen: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl QueryRunner for FakeRunner {
        fn kinds(&self) -> Vec<QueryKind> {
            vec![QueryKind::Trends]
        }

        async fn run(&self, query: &Query, context: &RunContext) -> Result<QueryResult, RunError> {
            let tenant_time_zone = context.tenant_time_zone.as_deref();
            self.tenants_seen
                .lock()
                .push(context.tenants.iter().map(|t| t.name.clone()).collect());
            let Query::Trends(q) = query else {
                panic!("only trends is offered")
            };
            self.seen
                .lock()
                .push((q.scope.clone(), tenant_time_zone.map(str::to_string)));
            if q.series[0].label.as_deref() == Some("slow") {
                return Err(RunError::Timeout {
                    limit: Duration::from_secs(2),
                });
            }
            Ok(serde_json::from_value(json!({
                "kind": "trends",
                "current": {"buckets": [{"start": 0, "label": "1970-01-01"}],
                            "series": [{"series": 0, "label": "x", "values": [q.series.len() as f64]}]}
            }))
            .unwrap())
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        router: Router,
        runner: Arc<FakeRunner>,
        tenant: TenantId,
        secret: String,
        other_tenant: TenantId,
        operator: String,
    }

    async fn fixture(config: ApiConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteMeta::open(&dir.path().join("meta.db")).await.unwrap());
        let acme = meta.create_tenant("acme").await.unwrap();
        meta.set_tenant_timezone(acme.tenant.id, "Europe/Paris")
            .await
            .unwrap();
        meta.set_tenant_attributes(acme.tenant.id, &[("plan".into(), "pro".into())], &[])
            .await
            .unwrap();
        let globex = meta.create_tenant("globex").await.unwrap();
        let operator = meta.create_operator_key("staff").await.unwrap();
        let runner = Arc::new(FakeRunner::default());
        let api = Api::new(meta, runner.clone(), config).unwrap();
        Fixture {
            _dir: dir,
            router: api.router(),
            runner,
            tenant: acme.tenant.id,
            secret: acme.secret_key,
            other_tenant: globex.tenant.id,
            operator,
        }
    }

    async fn post(router: &Router, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        post_raw(router, key, body.to_string()).await
    }

    async fn post_raw(router: &Router, key: Option<&str>, body: String) -> (StatusCode, Value) {
        let mut request = Request::post("/graphql").header(CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn trends(scope: Option<Value>) -> Value {
        let mut q = json!({
            "date_range": {"type": "last", "count": 7, "unit": "day"},
            "series": [{"event": "a"}, {"event": "b"}]
        });
        if let Some(scope) = scope {
            q["scope"] = scope;
        }
        json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": q}})
    }

    fn code(body: &Value) -> &str {
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body}"))
    }

    #[tokio::test]
    async fn tenant_key_runs_its_own_tenant_with_its_time_zone() {
        let f = fixture(ApiConfig::default()).await;
        let (status, body) = post(&f.router, Some(&f.secret), trends(None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            body["data"]["trends"]["current"]["series"][0]["values"],
            json!([2.0])
        );
        let seen = f.runner.seen.lock().clone();
        assert_eq!(
            seen,
            vec![(Scope::Tenant(f.tenant), Some("Europe/Paris".to_string()))]
        );

        // Naming its own scope is fine too.
        let own = json!({"tenant": f.tenant.0});
        let (_, body) = post(&f.router, Some(&f.secret), trends(Some(own))).await;
        assert!(body.get("errors").is_none(), "{body}");
    }

    #[tokio::test]
    async fn tenant_key_cannot_name_another_scope() {
        let f = fixture(ApiConfig::default()).await;
        for scope in [json!({"tenant": f.other_tenant.0}), json!({"operator": {}})] {
            let (status, body) = post(&f.router, Some(&f.secret), trends(Some(scope))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(code(&body), "FORBIDDEN", "{body}");
            assert!(body["data"].is_null(), "{body}");
        }
        assert!(f.runner.seen.lock().is_empty());
        let (_, body) = post(
            &f.router,
            Some(&f.secret),
            json!({"query": "{ tenants { id } }"}),
        )
        .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }

    #[tokio::test]
    async fn operator_key_names_scopes_and_lists_tenants() {
        let f = fixture(ApiConfig::default()).await;
        let scope = json!({"tenant": f.other_tenant.0});
        let (_, body) = post(&f.router, Some(&f.operator), trends(Some(scope))).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            f.runner.seen.lock().clone(),
            vec![(Scope::Tenant(f.other_tenant), Some("UTC".to_string()))]
        );
        let (_, body) = post(&f.router, Some(&f.operator), trends(None)).await;
        assert_eq!(code(&body), "BAD_REQUEST", "{body}");
        // An operator scope runs in UTC over every tenant, which the engine selects from.
        let (_, body) = post(
            &f.router,
            Some(&f.operator),
            trends(Some(json!({"operator": {}}))),
        )
        .await;
        assert!(body.get("errors").is_none(), "{body}");
        let scope_all = Scope::Operator {
            tenants: Default::default(),
        };
        assert_eq!(
            f.runner.seen.lock().last().cloned(),
            Some((scope_all, None))
        );
        assert_eq!(
            f.runner.tenants_seen.lock().clone(),
            vec![vec![], vec!["acme".to_string(), "globex".to_string()]]
        );
        let (_, body) = post(
            &f.router,
            Some(&f.operator),
            trends(Some(json!({"tenant": 999}))),
        )
        .await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");

        let (_, body) = post(
            &f.router,
            Some(&f.operator),
            json!({"query": "{ tenants { id name timezone attributes createdAt } }"}),
        )
        .await;
        let tenants = body["data"]["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 2, "{body}");
        assert_eq!(tenants[0]["name"], "acme");
        assert_eq!(tenants[0]["timezone"], "Europe/Paris");
        assert_eq!(tenants[0]["attributes"], json!({"plan": "pro"}));
        assert_eq!(tenants[1]["attributes"], json!({}));
    }

    #[tokio::test]
    async fn missing_or_unknown_keys_are_unauthenticated_but_introspection_is_open() {
        let f = fixture(ApiConfig::default()).await;
        // A well-formed operator key that was never issued: the real one with its last
        // character changed.
        let mut forged = f.operator.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        for key in [None, Some("tly_sec_nope"), Some(forged.as_str())] {
            let (status, body) = post(&f.router, key, trends(None)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(code(&body), "UNAUTHENTICATED", "{key:?}: {body}");
        }
        // GraphiQL sends explicit nulls for absent variables and operation names.
        let (_, body) = post(
            &f.router,
            None,
            json!({"query": "{ __typename }", "variables": null, "operationName": null}),
        )
        .await;
        assert_eq!(body["data"]["__typename"], "Query", "{body}");
        let (_, body) = post(
            &f.router,
            None,
            json!({"query": "{ __schema { queryType { name } } }"}),
        )
        .await;
        assert_eq!(
            body["data"]["__schema"]["queryType"]["name"], "Query",
            "{body}"
        );
    }

    #[tokio::test]
    async fn client_mistakes_have_codes_and_never_reach_the_runner() {
        let f = fixture(ApiConfig::default()).await;
        let key = Some(f.secret.as_str());
        // Not JSON at all: a 400 with the same error shape.
        let (status, body) = post_raw(&f.router, key, "{nope".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code(&body), "BAD_REQUEST");
        // GraphQL syntax error, unknown field, a kind this runner does not offer.
        for query in ["{ trends(", "{ nope }", "{ funnel(query: {}) }"] {
            let (status, body) = post(&f.router, key, json!({ "query": query })).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(code(&body), "BAD_REQUEST", "{query}: {body}");
        }
        // Not an object; not the model's shape; fails the model's validation.
        let bad = [
            json!(42),
            json!({"series": [{"event": "a"}]}),
            json!({"date_range": {"type": "last", "count": 7, "unit": "day"}, "series": [], "bogus": 1}),
            json!({"date_range": {"type": "last", "count": 7, "unit": "day"}, "series": []}),
        ];
        for q in bad {
            let request = json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": q}});
            let (_, body) = post(&f.router, key, request).await;
            assert_eq!(code(&body), "BAD_REQUEST", "{q}: {body}");
            assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty());
        }
        let misspelt = json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": {
            "date_range": {"type": "last", "count": 7, "unit": "day"},
            "series": [{"event": "a", "math": {"type": "uniq_persons"}}]}}});
        let (_, body) = post(&f.router, key, misspelt).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("at `series[0].math.type`") && message.contains("uniq_persons"),
            "{body}"
        );
        let missing = json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": {"series": [{"event": "a"}]}}});
        let (_, body) = post(&f.router, key, missing).await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("date_range"),
            "{body}"
        );
        assert!(f.runner.seen.lock().is_empty());
    }

    #[tokio::test]
    async fn engine_timeouts_are_timeout() {
        let f = fixture(ApiConfig::default()).await;
        let request = json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": {
            "date_range": {"type": "last", "count": 7, "unit": "day"},
            "series": [{"event": "a", "label": "slow"}]}}});
        let (_, body) = post(&f.router, Some(&f.secret), request).await;
        assert_eq!(code(&body), "TIMEOUT", "{body}");
    }

    #[tokio::test]
    async fn depth_complexity_and_query_count_limits() {
        let f = fixture(ApiConfig {
            max_depth: 4,
            max_complexity: 10,
            max_queries_per_request: 2,
        })
        .await;
        let key = Some(f.operator.as_str());
        let deep = "{ __schema { types { fields { type { ofType { name } } } } } }";
        let (_, body) = post(&f.router, key, json!({ "query": deep })).await;
        assert_eq!(code(&body), "BAD_REQUEST", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["limit"], "depth", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("limit of 4")
        );

        let wide: String = (0..11)
            .map(|i| format!("t{i}: tenants {{ id }} "))
            .collect();
        let (_, body) = post(&f.router, key, json!({ "query": format!("{{ {wide} }}") })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["limit"], "complexity",
            "{body}"
        );

        let scope = json!({"tenant": f.tenant.0});
        let q = json!({"scope": scope, "date_range": {"type": "last", "count": 7, "unit": "day"}, "series": [{"event": "a"}]});
        let request = json!({
            "query": "query($q: TrendsQuery!) { a: trends(query: $q) b: trends(query: $q) c: trends(query: $q) }",
            "variables": {"q": q}
        });
        let (_, body) = post(&f.router, key, request).await;
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{body}");
        assert_eq!(errors[0]["extensions"]["code"], "BAD_REQUEST");
        assert!(
            errors[0]["message"].as_str().unwrap().contains("at most 2"),
            "{body}"
        );
        assert_eq!(f.runner.seen.lock().len(), 2);
    }

    #[tokio::test]
    async fn explorer_and_json_schema_are_served() {
        let f = fixture(ApiConfig::default()).await;
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let page = f.router.clone().oneshot(get("/graphql")).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&html).contains("GraphiQL"));

        let schema = f
            .router
            .clone()
            .oneshot(get(JSON_SCHEMA_PATH))
            .await
            .unwrap();
        assert_eq!(schema.status(), StatusCode::OK);
        let bytes = schema.into_body().collect().await.unwrap().to_bytes();
        let schema: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(schema["$defs"]["TrendsQuery"].is_object());
    }

    #[tokio::test]
    async fn the_default_limits_admit_the_explorers_introspection() {
        let f = fixture(ApiConfig::default()).await;
        let (_, body) = post(&f.router, None, json!({ "query": GRAPHIQL_INTROSPECTION })).await;
        assert!(body.get("errors").is_none(), "{body}");
        let types = body["data"]["__schema"]["types"].as_array().unwrap();
        let trends_query = types.iter().find(|t| t["name"] == "TrendsQuery").unwrap();
        assert_eq!(trends_query["kind"], "SCALAR");
        assert_eq!(
            trends_query["specifiedByURL"],
            format!("{JSON_SCHEMA_PATH}#/$defs/TrendsQuery")
        );
        assert!(
            trends_query["description"]
                .as_str()
                .unwrap()
                .contains("trends query")
        );
    }

    /// GraphiQL 3's introspection query (with `specifiedByURL` and descriptions).
    const GRAPHIQL_INTROSPECTION: &str = r#"
    query IntrospectionQuery {
      __schema {
        queryType { name } mutationType { name } subscriptionType { name }
        types { ...FullType }
        directives { name description locations args { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description specifiedByURL
      fields(includeDeprecated: true) {
        name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
      }
      inputFields { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
    fragment TypeRef on __Type {
      kind name
      ofType { kind name ofType { kind name ofType { kind name ofType { kind name
        ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
    }
    "#;
}
