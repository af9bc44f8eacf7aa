use std::path::{Path, PathBuf};

use tally_query::Query;
use tally_sql::{
    BreakdownKey, ClickHouseDialect, CompileContext, DataFusionDialect, Dialect, KeyColumns,
    PropertyCatalog, PropertyValue, compile_events, compile_funnel, compile_persons,
    compile_schema, compile_trends,
};

/// 2024-01-10T12:00:00Z.
const NOW: i64 = 1_704_888_000_000_000;

fn catalog() -> PropertyCatalog {
    let mut c = PropertyCatalog::new();
    c.insert(
        "plan",
        KeyColumns {
            string: true,
            ..KeyColumns::default()
        },
    );
    c.insert(
        "amount",
        KeyColumns {
            string: true,
            number: true,
            ..KeyColumns::default()
        },
    );
    // A hostile materialised key: quotes, backslash, NUL, the column separator.
    c.insert(
        "we\"ird'\\key\0:x",
        KeyColumns {
            string: true,
            boolean: true,
            other: true,
            ..KeyColumns::default()
        },
    );
    c
}

fn render(query: &Query, dialect: &dyn Dialect) -> String {
    let catalog = catalog();
    let ctx = CompileContext {
        now: NOW,
        tenant_time_zone: Some("Europe/Berlin"),
        catalog: &catalog,
    };
    let mut out = String::new();
    match query {
        Query::Trends(q) => {
            let plan = match compile_trends(q, dialect, &ctx) {
                Ok(plan) => plan,
                Err(e) => return format!("-- error: {e}\n"),
            };
            let top = vec![
                BreakdownKey(vec![
                    PropertyValue::String("pro".into());
                    q.breakdown.as_ref().map_or(0, |b| b.properties.len())
                ]),
                BreakdownKey(vec![
                    PropertyValue::Null;
                    q.breakdown.as_ref().map_or(0, |b| b.properties.len())
                ]),
            ];
            if let Some(sql) = plan.ranking_sql().unwrap() {
                out.push_str(&format!("-- ranking\n{sql};\n"));
            }
            if let Some(sql) = plan.other_count_sql(&top).unwrap() {
                out.push_str(&format!("-- other\n{sql};\n"));
            }
            let top = q.breakdown.as_ref().map(|_| top.as_slice());
            for i in 0..q.series.len() {
                let sql = plan.series_sql(i, &plan.current, top).unwrap();
                out.push_str(&format!("-- series {i}, current\n{sql};\n"));
                if let Some(prev) = &plan.previous {
                    let sql = plan.series_sql(i, prev, top).unwrap();
                    out.push_str(&format!("-- series {i}, previous\n{sql};\n"));
                }
            }
            for i in 0..q.series.len() {
                if let Some(sql) = plan.series_grouped_sql(i, &plan.current).unwrap() {
                    out.push_str(&format!("-- series {i} grouped, current\n{sql};\n"));
                }
                if let Some(prev) = &plan.previous
                    && let Some(sql) = plan.series_grouped_sql(i, prev).unwrap()
                {
                    out.push_str(&format!("-- series {i} grouped, previous\n{sql};\n"));
                }
            }
        }
        Query::Funnel(q) => match compile_funnel(q, dialect, &ctx) {
            Ok(plan) => {
                if let Some(sql) = plan.ranking_sql().unwrap() {
                    out.push_str(&format!("-- ranking\n{sql};\n"));
                }
                let sql = plan.steps_sql(None).unwrap();
                out.push_str(&format!("-- steps\n{sql};\n"));
                match &q.view {
                    tally_query::FunnelView::TimeToConvert { from_step, .. } => {
                        let to = q.last_required_step();
                        let sql = plan.time_to_convert_sql(*from_step, to).unwrap();
                        out.push_str(&format!("-- time to convert\n{sql};\n"));
                        let sql = plan
                            .time_to_convert_bins_sql(*from_step, to, 5_000_000, 60_000_000)
                            .unwrap();
                        out.push_str(&format!("-- time to convert bins\n{sql};\n"));
                    }
                    tally_query::FunnelView::Persons { step, limit, .. } => {
                        let top = q.breakdown.as_ref().map(|b| {
                            vec![BreakdownKey(vec![
                                PropertyValue::String("pro".into());
                                b.properties.len()
                            ])]
                        });
                        let sql = plan
                            .persons_sql(
                                *step,
                                Some(0),
                                top.as_deref(),
                                Some(-1),
                                Some("it's"),
                                *limit + 1,
                            )
                            .unwrap();
                        out.push_str(&format!("-- persons\n{sql};\n"));
                    }
                    tally_query::FunnelView::ConversionOverTime { interval } => {
                        let (_, ranges) = plan.conversion_buckets(*interval).unwrap();
                        let sql = plan.conversion_sql(&ranges, None).unwrap();
                        out.push_str(&format!("-- conversion over time\n{sql};\n"));
                        if let Some(b) = &q.breakdown {
                            let top =
                                vec![BreakdownKey(vec![PropertyValue::Null; b.properties.len()])];
                            let sql = plan.conversion_sql(&ranges, Some(&top)).unwrap();
                            out.push_str(&format!(
                                "-- conversion over time by breakdown row\n{sql};\n"
                            ));
                        }
                    }
                    _ => {}
                }
                if let Some(b) = &q.breakdown {
                    let top = vec![BreakdownKey(vec![
                        PropertyValue::String("pro".into());
                        b.properties.len()
                    ])];
                    let sql = plan.steps_sql(Some(&top)).unwrap();
                    out.push_str(&format!("-- steps by breakdown row\n{sql};\n"));
                }
                if let Some(sql) = plan.person_rows_sql().unwrap() {
                    out.push_str(&format!("-- person rows\n{sql};\n"));
                    let mut plan = plan;
                    plan.read_chains_from("funnel_chains");
                    let sql = plan.steps_sql(None).unwrap();
                    out.push_str(&format!("-- steps over the engine's chains\n{sql};\n"));
                }
            }
            Err(e) => out.push_str(&format!("-- error: {e}\n")),
        },
        Query::Events(q) => match compile_events(q, dialect, &ctx) {
            Ok(plan) => out.push_str(&format!("-- page\n{};\n", plan.page_sql().unwrap())),
            Err(e) => out.push_str(&format!("-- error: {e}\n")),
        },
        Query::Persons(q) => match compile_persons(q, dialect) {
            Ok(plan) => {
                for only in [None, Some("it's")] {
                    match plan.page_sql(only).unwrap() {
                        Some(sql) => out.push_str(&format!("-- page, only {only:?}\n{sql};\n")),
                        None => out.push_str("-- empty page (cursor past the tenant)\n"),
                    }
                }
            }
            Err(e) => out.push_str(&format!("-- error: {e}\n")),
        },
        Query::Schema(q) => match compile_schema(q, dialect, &ctx) {
            Ok(plan) => {
                let sql = match &q.request {
                    tally_query::SchemaRequest::EventNames { .. } => plan.event_names_sql(),
                    tally_query::SchemaRequest::PropertyNames { source, .. } => plan
                        .property_counts_sql(&["plan".into(), "amount".into(), "free'text".into()])
                        .map(|s| s.unwrap_or_default())
                        .and_then(|counts| {
                            if *source != tally_query::PropertySource::Event {
                                return Ok(counts);
                            }
                            let keys = plan.json_key_counts_sql()?;
                            Ok(format!("{counts};\n-- keys from JSON\n{keys}"))
                        }),
                    tally_query::SchemaRequest::PropertyValues { .. } => plan.property_values_sql(),
                };
                out.push_str(&format!("-- schema\n{};\n", sql.unwrap()));
            }
            Err(e) => out.push_str(&format!("-- error: {e}\n")),
        },
        other => out.push_str(&format!(
            "-- not compiled here: {:?}\n",
            std::mem::discriminant(other)
        )),
    }
    out
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

#[test]
fn queries_compile_to_the_recorded_sql() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "snapshot cases missing");
    let mut failures = Vec::new();
    for case in &cases {
        let query: Query = serde_json::from_str(&std::fs::read_to_string(case).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        for dialect in [&DataFusionDialect as &dyn Dialect, &ClickHouseDialect] {
            let actual = render(&query, dialect);
            let expected_path = case.with_extension(format!("{}.sql", dialect.name()));
            if update {
                std::fs::write(&expected_path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != actual {
                failures.push(format!(
                    "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                    expected_path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_statement_is_scoped_to_the_query_tenant() {
    for case in std::fs::read_dir(snapshot_dir()).unwrap() {
        let path = case.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".datafusion.sql") {
            let text = std::fs::read_to_string(&path).unwrap();
            for stmt in text.split(";\n").filter(|s| s.contains("SELECT")) {
                // Persons lists read the persons relation alone; funnel statements
                // over the engine's chains read only that table (which the engine
                // derives from the scoped "person rows" statement).
                let over_chains = stmt.contains("FROM funnel_chains") && !stmt.contains("tenant_");
                assert!(
                    over_chains
                        || stmt.contains("FROM tenant_7_events AS e")
                        || (name.starts_with("persons_")
                            && stmt.contains("FROM tenant_7_persons AS pp")),
                    "{name}: {stmt}"
                );
                // The identity map is joined exactly when the statement reads it.
                assert_eq!(
                    stmt.contains("pm."),
                    stmt.contains("LEFT JOIN tenant_7_person_map AS pm ON"),
                    "{name}: {stmt}"
                );
                assert!(!stmt.contains("tenant_8"), "{name}");
            }
        } else if name.ends_with(".clickhouse.sql") {
            let text = std::fs::read_to_string(&path).unwrap();
            for stmt in text.split(";\n").filter(|s| s.contains("SELECT")) {
                if name.starts_with("persons_") {
                    assert!(stmt.contains("WHERE pp.tenant_id = 7"), "{name}: {stmt}");
                    continue;
                }
                assert!(stmt.contains("WHERE e.tenant_id = 7"), "{name}: {stmt}");
                // The identity map, when joined, is scoped too.
                assert!(
                    !stmt.contains("pm.") || stmt.contains("AND pm.tenant_id = 7"),
                    "{name}: {stmt}"
                );
            }
        }
    }
}
