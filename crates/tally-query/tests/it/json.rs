use serde_json::{Value, json};
use tally_core::{Classify, ErrorClass, TenantId};
use tally_query::reference::{self, RefContext, RefEvent};
use tally_query::{Query, QueryResult, Scope};

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

fn events() -> Vec<RefEvent> {
    let raw = [
        (
            "$pageview",
            "anon-1",
            "u1",
            "2024-05-01T09:00:00Z",
            json!({"$browser": "Chrome", "$current_url": "https://x.io/pricing"}),
        ),
        (
            "signed_up",
            "user-1",
            "u1",
            "2024-05-01T09:10:00Z",
            json!({"plan": "free"}),
        ),
        (
            "purchase",
            "user-1",
            "u1",
            "2024-05-02T09:00:00Z",
            json!({"amount": 49}),
        ),
        (
            "$pageview",
            "anon-2",
            "anon-2",
            "2024-05-01T12:00:00Z",
            json!({"$browser": "Firefox"}),
        ),
        (
            "signed_up",
            "user-3",
            "u3",
            "2024-05-03T08:00:00Z",
            json!({"plan": "pro"}),
        ),
        (
            "$pageview",
            "user-3",
            "u3",
            "2024-05-08T08:00:00Z",
            json!({"$browser": "Chrome"}),
        ),
    ];
    raw.into_iter()
        .enumerate()
        .map(|(i, (event, distinct_id, person_id, ts, props))| RefEvent {
            tenant: TenantId(1),
            uuid: uuid::Uuid::from_u128(i as u128 + 1),
            event: event.into(),
            distinct_id: distinct_id.into(),
            person_id: person_id.into(),
            timestamp: at(ts),
            properties: props.as_object().cloned().unwrap(),
            person_properties: Default::default(),
            groups: Default::default(),
        })
        .collect()
}

fn ctx() -> RefContext {
    RefContext::at(at("2024-05-20T00:00:00Z"))
}

fn run(query: Value) -> Value {
    let q: Query = serde_json::from_value(query).unwrap();
    q.validate().unwrap();
    let result = reference::run(&q, &events(), &ctx()).unwrap();
    let text = serde_json::to_value(&result).unwrap();
    // The result JSON reads back into the same value.
    assert_eq!(
        serde_json::from_value::<QueryResult>(text.clone()).unwrap(),
        result
    );
    text
}

#[test]
fn trends_from_json() {
    let r = run(json!({
        "kind": "trends",
        "scope": {"tenant": 1},
        "date_range": {"type": "absolute", "from": "2024-05-01", "to": "2024-05-03"},
        "series": [
            {"event": "$pageview"},
            {"event": "signed_up", "math": {"type": "unique_persons"}}
        ],
        "formula": "B / A * 100"
    }));
    assert_eq!(r["kind"], "trends");
    assert_eq!(r["current"]["buckets"][0]["label"], "2024-05-01");
    assert_eq!(r["current"]["series"][0]["values"], json!([2.0, 0.0, 0.0]));
    assert_eq!(r["current"]["series"][1]["values"], json!([1.0, 0.0, 1.0]));
    assert_eq!(
        r["current"]["formula"][0]["values"],
        json!([50.0, null, null])
    );
}

#[test]
fn funnel_from_json_with_merged_identity() {
    let r = run(json!({
        "kind": "funnel",
        "scope": {"tenant": 1},
        "date_range": {"type": "absolute", "from": "2024-05-01", "to": "2024-05-07"},
        "steps": [
            {"event": "$pageview", "filters": [{"type": "property", "property": {"source": "event", "key": "$current_url"}, "operator": "contains", "value": "PRICING"}]},
            {"event": "signed_up"},
            {"event": "purchase"}
        ],
        "window": {"value": 2, "unit": "day"}
    }));
    assert_eq!(r["type"], "steps");
    let persons: Vec<u64> = r["total"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["persons"].as_u64().unwrap())
        .collect();
    // anon-1 and user-1 are one person (u1): the chain crosses the identity merge.
    assert_eq!(persons, [1, 1, 1]);
    assert_eq!(
        r["total"][2]["average_seconds_from_previous"],
        json!(85_800.0)
    );
}

#[test]
fn funnel_persons_pages() {
    let page = |cursor: Value| {
        run(json!({
            "kind": "funnel",
            "scope": {"tenant": 1},
            "date_range": {"type": "absolute", "from": "2024-05-01", "to": "2024-05-07"},
            "steps": [{"event": null}, {"event": "purchase"}],
            "view": {"type": "persons", "step": 1, "status": "dropped_off", "limit": 1, "cursor": cursor}
        }))
    };
    let first = page(Value::Null);
    assert_eq!(
        first["persons"],
        json!([{"tenant": 1, "person_id": "anon-2"}])
    );
    let second = page(first["next_cursor"].clone());
    assert_eq!(second["persons"], json!([{"tenant": 1, "person_id": "u3"}]));
    assert!(second.get("next_cursor").is_none());
}

#[test]
fn retention_from_json() {
    let r = run(json!({
        "kind": "retention",
        "scope": {"tenant": 1},
        "date_range": {"type": "absolute", "from": "2024-05-01", "to": "2024-05-07"},
        "start": {"event": "signed_up"},
        "return": {},
        "cohort": "first_time",
        "period": "week",
        "periods": 2
    }));
    let cohorts = r["total"].as_array().unwrap();
    // 2024-05-01 is a Wednesday: the first weekly cohort is labelled with its Monday.
    assert_eq!(cohorts[0]["period"]["label"], "2024-04-29");
    assert_eq!(cohorts[0]["size"], 2);
    assert_eq!(cohorts[0]["values"], json!([2, 1, 0]));
    assert_eq!(cohorts[0]["percentages"], json!([100.0, 50.0, 0.0]));
}

#[test]
fn events_and_schema_from_json() {
    let r =
        run(json!({"kind": "events", "scope": {"tenant": 1}, "event": "$pageview", "limit": 2}));
    let listed: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["distinct_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["user-3", "anon-2"]);
    assert!(r["next_cursor"].is_string());
    let r = run(json!({
        "kind": "schema",
        "scope": {"tenant": 1},
        "request": {"type": "property_values", "property": {"source": "event", "key": "$browser"}}
    }));
    assert_eq!(
        r["values"],
        json!([{"value": "Chrome", "count": 2}, {"value": "Firefox", "count": 1}])
    );
}

#[test]
fn mistakes_are_bad_requests_with_a_location() {
    let typo = serde_json::from_value::<Query>(json!({
        "kind": "funnel", "scope": {"tenant": 1},
        "date_range": {"type": "last", "count": 7, "unit": "day"},
        "stpes": []
    }));
    assert!(typo.unwrap_err().to_string().contains("stpes"));
    let q: Query = serde_json::from_value(json!({
        "kind": "funnel", "scope": {"tenant": 1},
        "date_range": {"type": "last", "count": 7, "unit": "day"},
        "steps": [{"event": "a"}, {"event": "b", "filters": [
            {"type": "property", "property": {"source": "event", "key": "url"}, "operator": "regex", "value": "(["}
        ]}]
    }))
    .unwrap();
    let err = q.validate().unwrap_err();
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert!(
        err.to_string().contains("steps[1].filters[0].value"),
        "{err}"
    );
}

#[test]
fn the_api_overrides_the_scope() {
    let mut q: Query =
        serde_json::from_value(json!({"kind": "events", "scope": {"tenant": 2}})).unwrap();
    q.set_scope(Scope::Tenant(TenantId(1)));
    assert_eq!(q.scope(), &Scope::Tenant(TenantId(1)));
    let QueryResult::Events(r) = reference::run(&q, &events(), &ctx()).unwrap() else {
        panic!()
    };
    assert_eq!(r.events.len(), 6);
}

#[test]
fn persons_are_not_answered_from_events() {
    let q: Query =
        serde_json::from_value(json!({"kind": "persons", "scope": {"tenant": 1}})).unwrap();
    q.validate().unwrap();
    assert!(matches!(
        reference::run(&q, &events(), &ctx()),
        Err(reference::Error::Unsupported("persons"))
    ));
}
