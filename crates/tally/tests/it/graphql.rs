//! The GraphQL query API and `tally query` through the real binary: events ingested
//! over HTTP, queried over HTTP, with the numbers worked out by hand.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Server, create_tenant, tally, tally_bin};

/// Two tenants with known events on 2024-03-01..03 (UTC), an operator key, and a
/// running server.
struct World {
    _dir: tempfile::TempDir,
    server: Server,
    acme: (u64, String),
    globex: (u64, String),
    operator: String,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (acme_id, acme_write, acme_secret) = create_tenant(dir.path(), "acme");
    let (globex_id, globex_write, globex_secret) = create_tenant(dir.path(), "globex");
    tally(dir.path(), &["tenant", "set", "acme", "plan=pro"]);
    let operator = operator_key(dir.path());
    let server = Server::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ev = |event: &str, who: &str, ts: &str| json!({"event": event, "distinct_id": who, "timestamp": ts});
    rt.block_on(async {
        // acme: pageviews 3 (u1 twice, u2) on the 1st, 1 (u3) on the 3rd; a funnel
        // signed_up -> purchased that u1 completes, u2 does not, u3 skips step one.
        ingest(
            &server,
            &acme_write,
            vec![
                ev("$pageview", "u1", "2024-03-01T09:00:00Z"),
                ev("$pageview", "u1", "2024-03-01T10:00:00Z"),
                ev("$pageview", "u2", "2024-03-01T11:00:00Z"),
                ev("$pageview", "u3", "2024-03-03T12:00:00Z"),
                ev("signed_up", "u1", "2024-03-02T10:00:00Z"),
                ev("purchased", "u1", "2024-03-02T11:00:00Z"),
                ev("signed_up", "u2", "2024-03-02T10:00:00Z"),
                ev("purchased", "u3", "2024-03-02T10:30:00Z"),
            ],
        )
        .await;
        // globex: one pageview, so that a leak of either tenant into the other shows.
        ingest(
            &server,
            &globex_write,
            vec![ev("$pageview", "g1", "2024-03-02T09:00:00Z")],
        )
        .await;
    });
    World {
        _dir: dir,
        server,
        acme: (acme_id, acme_secret),
        globex: (globex_id, globex_secret),
        operator,
        rt,
    }
}

fn operator_key(dir: &Path) -> String {
    let out = tally(dir, &["operator-key", "create", "--label", "tests"]);
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("tly_op_"))
        .unwrap_or_else(|| panic!("no operator key in {out}"))
        .to_string()
}

async fn ingest(server: &Server, write_key: &str, events: Vec<Value>) {
    let count = events.len();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events/batch", server.url()))
        .bearer_auth(write_key)
        .json(&json!({"historical": true, "events": events}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(body["accepted"], json!(count), "{body}");
}

impl World {
    fn graphql(&self, key: Option<&str>, body: Value) -> Value {
        self.rt.block_on(async {
            let mut request = reqwest::Client::new()
                .post(format!("{}/graphql", self.server.url()))
                .json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json().await.unwrap()
        })
    }

    fn run(&self, key: &str, kind: &str, scalar: &str, query: Value) -> Value {
        self.graphql(
            Some(key),
            json!({
                "query": format!("query($q: {scalar}!) {{ {kind}(query: $q) }}"),
                "variables": {"q": query},
            }),
        )
    }
}

fn pageviews(scope: Option<Value>) -> Value {
    let mut q = json!({
        "date_range": {"type": "absolute", "from": "2024-03-01", "to": "2024-03-03"},
        "interval": "day",
        "series": [{"event": "$pageview"}, {"event": "$pageview", "math": {"type": "unique_persons"}}]
    });
    if let Some(scope) = scope {
        q["scope"] = scope;
    }
    q
}

fn funnel() -> Value {
    json!({
        "date_range": {"type": "absolute", "from": "2024-03-01", "to": "2024-03-03"},
        "steps": [{"event": "signed_up"}, {"event": "purchased"}]
    })
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn values(body: &Value, kind: &str, row: usize) -> Value {
    body["data"][kind]["current"]["series"][row]["values"].clone()
}

#[test]
fn graphql_answers_trends_and_funnels_per_tenant_and_for_operators() {
    let w = world();
    let (acme, acme_key) = (&w.acme.0, w.acme.1.as_str());
    let (globex, globex_key) = (&w.globex.0, w.globex.1.as_str());

    // Trends: counts and unique persons per day.
    let body = w.run(acme_key, "trends", "TrendsQuery", pageviews(None));
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(values(&body, "trends", 0), json!([3.0, 0.0, 1.0]), "{body}");
    assert_eq!(values(&body, "trends", 1), json!([2.0, 0.0, 1.0]), "{body}");
    let labels: Vec<&str> = body["data"]["trends"]["current"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["2024-03-01", "2024-03-02", "2024-03-03"]);

    // Funnel: two entered, one converted.
    let body = w.run(acme_key, "funnel", "FunnelQuery", funnel());
    assert!(body.get("errors").is_none(), "{body}");
    let steps = &body["data"]["funnel"]["total"];
    assert_eq!(body["data"]["funnel"]["type"], "steps");
    assert_eq!(steps[0]["persons"], json!(2), "{body}");
    assert_eq!(steps[1]["persons"], json!(1), "{body}");
    assert_eq!(steps[1]["conversion_from_first_percent"], json!(50.0));

    // Isolation: globex's key sees only globex, and cannot name acme's scope.
    let body = w.run(globex_key, "trends", "TrendsQuery", pageviews(None));
    assert_eq!(values(&body, "trends", 0), json!([0.0, 1.0, 0.0]), "{body}");
    for scope in [json!({"tenant": acme}), json!({"operator": {}})] {
        let body = w.run(globex_key, "trends", "TrendsQuery", pageviews(Some(scope)));
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    let body = w.graphql(Some(globex_key), json!({"query": "{ tenants { id } }"}));
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    // The operator reads any tenant by naming it, and lists tenants with attributes.
    let body = w.run(
        &w.operator,
        "trends",
        "TrendsQuery",
        pageviews(Some(json!({"tenant": acme}))),
    );
    assert_eq!(values(&body, "trends", 0), json!([3.0, 0.0, 1.0]), "{body}");
    let body = w.run(
        &w.operator,
        "trends",
        "TrendsQuery",
        pageviews(Some(json!({"tenant": globex}))),
    );
    assert_eq!(values(&body, "trends", 0), json!([0.0, 1.0, 0.0]), "{body}");
    // Operator scopes: all tenants summed, or those whose attributes match.
    let all = json!({"operator": {}});
    let body = w.run(&w.operator, "trends", "TrendsQuery", pageviews(Some(all)));
    assert_eq!(values(&body, "trends", 0), json!([3.0, 1.0, 1.0]), "{body}");
    let pro = json!({"operator": {"tenants": {"filters": [{"type": "property",
        "property": {"source": "tenant_attribute", "key": "plan"}, "operator": "equals", "value": "pro"}]}}});
    let body = w.run(&w.operator, "trends", "TrendsQuery", pageviews(Some(pro)));
    assert_eq!(values(&body, "trends", 0), json!([3.0, 0.0, 1.0]), "{body}");
    let mut globex_funnel = funnel();
    globex_funnel["scope"] = json!({"operator": {"tenants": {"ids": [globex]}}});
    let body = w.run(&w.operator, "funnel", "FunnelQuery", globex_funnel);
    assert_eq!(
        body["data"]["funnel"]["total"][0]["persons"],
        json!(0),
        "{body}"
    );

    let body = w.graphql(
        Some(&w.operator),
        json!({"query": "{ tenants { id name attributes } }"}),
    );
    assert_eq!(
        body["data"]["tenants"],
        json!([
            {"id": acme, "name": "acme", "attributes": {"plan": "pro"}},
            {"id": globex, "name": "globex", "attributes": {}}
        ]),
        "{body}"
    );

    // Keys that identify nobody.
    for key in [
        None,
        Some("tly_sec_0000000000000000000000000000000000000000"),
    ] {
        let body = w.graphql(key, json!({"query": "{ tenants { id } }"}));
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    }
}

#[test]
fn a_revoked_operator_key_stops_working_in_the_running_server() {
    let w = world();
    let dir = w._dir.path();
    let body = w.graphql(Some(&w.operator), json!({"query": "{ tenants { id } }"}));
    assert!(body["errors"].is_null(), "{body}");

    let listed: Value =
        serde_json::from_str(&tally(dir, &["operator-key", "list", "--json"])).unwrap();
    let keys = listed.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(keys[0]["label"], "tests", "{listed}");
    assert!(
        !listed.to_string().contains(&w.operator),
        "the list shows no key"
    );
    let id = keys[0]["id"].as_i64().unwrap().to_string();
    let table = tally(dir, &["operator-key", "list"]);
    assert!(table.contains("tests") && table.contains(&id), "{table}");

    let out = tally(dir, &["operator-key", "revoke", &id]);
    assert!(out.contains("Revoked"), "{out}");
    let body = w.graphql(Some(&w.operator), json!({"query": "{ tenants { id } }"}));
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    // The tenants' own keys are untouched.
    let body = w.graphql(Some(&w.acme.1), json!({"query": "{ tenants { id } }"}));
    assert_ne!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // Revoking it again is a clear error, not a silent success.
    let out = Command::new(tally_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["operator-key", "revoke", &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no operator key with id"), "{stderr}");
    assert_eq!(tally(dir, &["operator-key", "list", "--json"]).trim(), "[]");
}

#[test]
fn graphql_limits_and_malformed_queries_have_codes() {
    let w = world();
    let key = Some(w.acme.1.as_str());

    // Twice the default depth limit of 16.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(28),
        "} ".repeat(28)
    );
    let body = w.graphql(key, json!({ "query": deep }));
    assert_eq!(code(&body), "BAD_REQUEST", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "depth", "{body}");

    // 3 fields per alias, 900 in all: past the default limit of 500.
    let wide: String = (0..300)
        .map(|i| format!("s{i}: __schema {{ queryType {{ name }} }} "))
        .collect();
    let body = w.graphql(key, json!({ "query": format!("{{ {wide} }}") }));
    assert_eq!(
        body["errors"][0]["extensions"]["limit"], "complexity",
        "{body}"
    );

    for bad in [
        json!({"query": "{ trends(query: "}),
        json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": {"series": "nope"}}}),
        json!({"query": "query($q: TrendsQuery!) { trends(query: $q) }", "variables": {"q": [1, 2]}}),
    ] {
        let body = w.graphql(key, bad.clone());
        assert_eq!(code(&body), "BAD_REQUEST", "{bad}: {body}");
    }
    // The model's own validation, naming the field.
    let mut q = pageviews(None);
    q["series"] = json!([]);
    let body = w.run(&w.acme.1, "trends", "TrendsQuery", q);
    assert_eq!(code(&body), "BAD_REQUEST", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("series"),
        "{body}"
    );

    // The explorer page, the JSON Schema and the API's metrics are served.
    w.rt.block_on(async {
        let metrics = reqwest::get(format!("{}/metrics", w.server.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("tally_api_queries_total") && metrics.contains("code=\"BAD_REQUEST\""),
            "{metrics}"
        );
        let page = reqwest::get(format!("{}/graphql", w.server.url()))
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("GraphiQL"));
        let schema: Value = reqwest::get(format!("{}/graphql/schema.json", w.server.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(schema["$defs"]["FunnelQuery"].is_object());
    });
}

#[test]
fn tally_query_prints_json_and_tables() {
    let w = world();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, v: Value| {
        let path = files.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_string_lossy().to_string()
    };
    let mut trends = pageviews(None);
    trends["kind"] = json!("trends");
    let trends_file = write("trends.json", trends);
    let funnel_file = write("funnel.json", json!({"kind": "funnel", "query": funnel()}));
    let url = w.server.url();
    let query = |args: &[&str]| {
        Command::new(tally_bin())
            .arg("query")
            .args(["--server", &url])
            .args(args)
            .env("TALLY_LOG", "warn")
            .output()
            .unwrap()
    };

    let out = query(&["--key", &w.acme.1, &trends_file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["current"]["series"][0]["values"],
        json!([3.0, 0.0, 1.0])
    );

    // `-` reads the query from standard input.
    let mut child = Command::new(tally_bin())
        .args(["query", "--server", &url, "--key", &w.acme.1, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(std::fs::read(&funnel_file).unwrap().as_slice())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["total"][1]["persons"], json!(1), "{printed}");

    let out = query(&["--key", &w.acme.1, "--table", &trends_file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("bucket") && lines[0].contains("B: $pageview"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{table}");
    let first: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(first, ["2024-03-01", "3", "2"], "{table}");

    let out = query(&["--key", &w.acme.1, "--table", &funnel_file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("signed_up") && table.contains("purchased"),
        "{table}"
    );
    let purchased = table.lines().find(|l| l.contains("purchased")).unwrap();
    assert!(
        purchased.contains(" 1 ") && purchased.contains("50"),
        "{table}"
    );

    // Mistakes: a bad key, a scope of another tenant, a missing file, an unknown kind.
    let out = query(&["--key", "tly_sec_nope", &trends_file]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    let mut foreign = pageviews(Some(json!({"tenant": w.globex.0})));
    foreign["kind"] = json!("trends");
    let foreign_file = write("foreign.json", foreign);
    let out = query(&["--key", &w.acme.1, &foreign_file]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FORBIDDEN"));
    let out = query(&["--key", &w.acme.1, "/nonexistent/query.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/query.json"));
    let pie = write("pie.json", json!({"kind": "pie"}));
    let out = query(&["--key", &w.acme.1, &pie]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
}

#[test]
fn graphql_lists_events_persons_and_event_names() {
    let w = world();
    let key = w.acme.1.as_str();

    // Newest first, paged by cursor, only the tenant's own events.
    let body = w.run(
        key,
        "events",
        "EventsQuery",
        json!({"event": "$pageview", "limit": 3}),
    );
    assert!(body.get("errors").is_none(), "{body}");
    let page = &body["data"]["events"];
    let who: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["distinct_id"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["u3", "u2", "u1"], "{body}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let body = w.run(
        key,
        "events",
        "EventsQuery",
        json!({"event": "$pageview", "limit": 3, "cursor": cursor}),
    );
    let rest = body["data"]["events"]["events"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{body}");
    assert_eq!(
        rest[0]["timestamp"],
        json!(1_709_283_600_000_000i64),
        "{body}"
    );

    let body = w.run(
        key,
        "schema",
        "SchemaQuery",
        json!({"request": {"type": "event_names"}}),
    );
    assert!(body.get("errors").is_none(), "{body}");
    let names: Vec<(String, u64)> = body["data"]["schema"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("$pageview".to_string(), 4),
            ("purchased".to_string(), 2),
            ("signed_up".to_string(), 2)
        ],
        "{body}"
    );

    // Retention: the 1 March pageview cohort (u1, u2) both signed up on the 2nd.
    let retention = json!({
        "date_range": {"type": "absolute", "from": "2024-03-01", "to": "2024-03-03"},
        "start": {"event": "$pageview"},
        "return": {"event": "signed_up"},
        "period": "day",
        "periods": 2
    });
    let body = w.run(key, "retention", "RetentionQuery", retention);
    assert!(body.get("errors").is_none(), "{body}");
    let first = &body["data"]["retention"]["total"][0];
    assert_eq!(first["period"]["label"], "2024-03-01", "{body}");
    assert_eq!(first["size"], json!(2), "{body}");
    assert_eq!(first["values"], json!([2, 2, 0]), "{body}");

    let body = w.run(key, "persons", "PersonsQuery", json!({}));
    assert!(body.get("errors").is_none(), "{body}");
    assert!(body["data"]["persons"]["persons"].is_array(), "{body}");
    // Another tenant's key cannot list acme's persons.
    let body = w.run(
        &w.globex.1,
        "persons",
        "PersonsQuery",
        json!({"scope": {"tenant": w.acme.0}}),
    );
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
}

#[test]
fn serve_flags_set_the_query_limits() {
    // Each limit is a flag with an environment twin.
    let help = Command::new(tally_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, env) in [
        ("--query-timeout-secs", "TALLY_QUERY_TIMEOUT_SECS"),
        (
            "--query-memory-limit-bytes",
            "TALLY_QUERY_MEMORY_LIMIT_BYTES",
        ),
        ("--query-partitions", "TALLY_QUERY_PARTITIONS"),
        ("--max-concurrent-queries", "TALLY_MAX_CONCURRENT_QUERIES"),
        ("--graphql-max-depth", "TALLY_GRAPHQL_MAX_DEPTH"),
        ("--graphql-max-complexity", "TALLY_GRAPHQL_MAX_COMPLEXITY"),
        ("--graphql-max-queries", "TALLY_GRAPHQL_MAX_QUERIES"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing:\n{help}"
        );
    }

    // And reaches the API: a depth of 3 refuses what the default accepts.
    let dir = tempfile::tempdir().unwrap();
    let (_, _, secret) = create_tenant(dir.path(), "acme");
    let server = Server::start(
        dir.path(),
        &["--graphql-max-depth", "3", "--graphql-max-queries", "1"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = |query: &str| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/graphql", server.url()))
                .bearer_auth(&secret)
                .json(&json!({"query": query, "variables": {"q": pageviews(None)}}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    let body = post("{ __schema { types { fields { name } } } }");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "depth", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3"),
        "{body}"
    );
    let body = post("query($q: TrendsQuery!) { a: trends(query: $q) b: trends(query: $q) }");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("at most 1"),
        "{body}"
    );
}
