//! `tally query`: runs a query file against a running server's GraphQL API.
//!
//! The file holds the query envelope of the model (`{"kind": "trends", ...}`, the
//! query's fields beside its kind, as in `/graphql/schema.json`), or
//! `{"kind": "trends", "query": {...}}`. The command sends it as the variable of the
//! kind's GraphQL field, so the server parses and validates it exactly as it would any
//! API client's query, and prints the result as JSON or, with `--table`, as a table.
//! It owns no query logic: every check beyond "is this JSON with a known kind" is the
//! server's.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use tally_api::QueryKind;

use crate::cli::QueryArgs;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let text = read_file(&args)?;
    let (kind, query) = parse_envelope(&text)
        .with_context(|| format!("invalid query file {}", args.file.display()))?;
    let result = send(&args, kind, query).await?;
    if args.table {
        print!("{}", render_table(kind, &result));
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

fn read_file(args: &QueryArgs) -> anyhow::Result<String> {
    if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the query from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the query file {}", args.file.display()))
}

/// Splits a query file into its kind and the query object.
fn parse_envelope(text: &str) -> anyhow::Result<(QueryKind, Value)> {
    let value: Value = serde_json::from_str(text).context("not JSON")?;
    let Value::Object(mut object) = value else {
        bail!(
            "expected a JSON object such as {{\"kind\": \"trends\", \"date_range\": ..., \"series\": [...]}}"
        );
    };
    let kinds = || {
        QueryKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = match object.remove("kind") {
        Some(Value::String(name)) => QueryKind::from_name(&name)
            .with_context(|| format!("unknown kind {name:?}; use one of {}", kinds()))?,
        Some(other) => bail!("`kind` must be a string, one of {}; got {other}", kinds()),
        None => bail!("missing `kind`: one of {}", kinds()),
    };
    let query = if object.len() == 1 && object.get("query").is_some_and(Value::is_object) {
        object.remove("query").unwrap_or_default()
    } else {
        Value::Object(object)
    };
    Ok((kind, query))
}

async fn send(args: &QueryArgs, kind: QueryKind, query: Value) -> anyhow::Result<Value> {
    let url = format!("{}/graphql", args.server.trim_end_matches('/'));
    let document = format!(
        "query($q: {}!) {{ {}(query: $q) }}",
        kind.query_type(),
        kind.name()
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&args.key)
        .json(&json!({"query": document, "variables": {"q": query}}))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the Tally server at {url}; is `tally serve` running?")
        })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        bail!(
            "{url} answered {status} with something other than JSON: {}",
            truncate(&body)
        );
    };
    if let Some(errors) = body
        .get("errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        let mut message = String::new();
        for error in errors {
            let code = error["extensions"]["code"].as_str().unwrap_or("ERROR");
            let text = error["message"].as_str().unwrap_or("(no message)");
            let _ = write!(message, "\n  [{code}] {text}");
        }
        if errors.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("Unknown field"))
        }) {
            message.push_str(&format!(
                "\n  (this server does not offer {} queries)",
                kind.name()
            ));
        }
        bail!("the server refused the query:{message}");
    }
    match body.get("data").and_then(|d| d.get(kind.name())) {
        Some(result) if !result.is_null() => Ok(result.clone()),
        _ => bail!(
            "{url} answered {status} without a result: {}",
            truncate(&body.to_string())
        ),
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// A result as a plain-text table. Trends and funnels have tables shaped for them;
/// other kinds list the first array of records they contain.
fn render_table(kind: QueryKind, result: &Value) -> String {
    match kind {
        QueryKind::Trends => trends_table(result),
        QueryKind::Funnel => funnel_table(result),
        QueryKind::Retention => retention_table(result),
        _ => records_table(result),
    }
}

/// One row per bucket, one column per line of the chart (series, breakdown value,
/// formula), per period.
fn trends_table(result: &Value) -> String {
    let mut out = String::new();
    for (period, title) in [("current", None), ("previous", Some("previous period"))] {
        let Some(data) = result.get(period).filter(|p| p.is_object()) else {
            continue;
        };
        if let Some(title) = title {
            let _ = writeln!(out, "\n{title}:");
        }
        let lines: Vec<&Value> = data["series"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(data["formula"].as_array().into_iter().flatten())
            .collect();
        let mut header = vec!["bucket".to_string()];
        header.extend(lines.iter().map(|line| {
            // Series rows are named by their formula letter too: two series of the same
            // event with different maths share a label.
            let label = match line["series"].as_u64().and_then(|i| u8::try_from(i).ok()) {
                Some(i) if i < 26 => format!(
                    "{}: {}",
                    char::from(b'A' + i),
                    line["label"].as_str().unwrap_or("")
                ),
                _ => line["label"].as_str().unwrap_or("").to_string(),
            };
            match line.get("breakdown") {
                Some(b) => format!("{label} / {}", breakdown_label(b)),
                None => label,
            }
        }));
        let rows = data["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, bucket)| {
                let mut row = vec![bucket["label"].as_str().unwrap_or("").to_string()];
                row.extend(lines.iter().map(|line| cell(&line["values"][i])));
                row
            })
            .collect();
        out.push_str(&table(header, rows));
    }
    out
}

fn funnel_table(result: &Value) -> String {
    match result["type"].as_str() {
        Some("steps") => {
            let header = [
                "breakdown",
                "step",
                "name",
                "persons",
                "% of first",
                "% of previous",
                "avg s from previous",
                "median s from previous",
            ]
            .map(str::to_string)
            .to_vec();
            let mut rows = Vec::new();
            let mut push = |breakdown: String, steps: &Value| {
                for step in steps.as_array().into_iter().flatten() {
                    rows.push(vec![
                        breakdown.clone(),
                        cell(&step["step"]),
                        cell(&step["name"]),
                        cell(&step["persons"]),
                        cell(&step["conversion_from_first_percent"]),
                        cell(&step["conversion_from_previous_percent"]),
                        cell(&step["average_seconds_from_previous"]),
                        cell(&step["median_seconds_from_previous"]),
                    ]);
                }
            };
            push("(all)".to_string(), &result["total"]);
            for row in result["breakdowns"].as_array().into_iter().flatten() {
                push(breakdown_label(&row["breakdown"]), &row["steps"]);
            }
            table(header, rows)
        }
        Some("conversion_over_time") => {
            let header = ["bucket", "entered", "converted", "conversion %"]
                .map(str::to_string)
                .to_vec();
            let rows = result["buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, bucket)| {
                    let point = &result["total"][i];
                    vec![
                        cell(&bucket["label"]),
                        cell(&point["entered"]),
                        cell(&point["converted"]),
                        cell(&point["conversion_percent"]),
                    ]
                })
                .collect();
            table(header, rows)
        }
        _ => records_table(result),
    }
}

/// One row per cohort (per breakdown row), one column per period after it.
fn retention_table(result: &Value) -> String {
    let mut cohorts: Vec<(String, &Value)> = result["total"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ("(all)".to_string(), c))
        .collect();
    for row in result["breakdowns"].as_array().into_iter().flatten() {
        let label = breakdown_label(&row["breakdown"]);
        cohorts.extend(
            row["cohorts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (label.clone(), c)),
        );
    }
    let periods = cohorts
        .iter()
        .map(|(_, c)| c["values"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut header = vec![
        "breakdown".to_string(),
        "cohort".to_string(),
        "size".to_string(),
    ];
    header.extend((0..periods).map(|n| format!("period {n}")));
    let rows = cohorts
        .iter()
        .map(|(label, cohort)| {
            let mut row = vec![
                label.clone(),
                cell(&cohort["period"]["label"]),
                cell(&cohort["size"]),
            ];
            row.extend((0..periods).map(|n| cell(&cohort["values"][n])));
            row
        })
        .collect();
    table(header, rows)
}

fn breakdown_label(breakdown: &Value) -> String {
    match breakdown["type"].as_str() {
        Some("values") => breakdown["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
        None => cell(breakdown),
    }
}

/// The first array of objects in the result (depth first, in field order), one row
/// per object and one column per field; the result's scalar fields come first as
/// `name: value` lines.
fn records_table(result: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(fields) = result {
        for (name, value) in fields {
            if !value.is_array() && !value.is_object() && !value.is_null() {
                let _ = writeln!(out, "{name}: {}", cell(value));
            }
        }
    }
    match first_records(result) {
        Some(records) if !records.is_empty() => {
            let mut header: Vec<String> = Vec::new();
            for record in &records {
                for name in record.keys() {
                    if !header.contains(name) {
                        header.push(name.clone());
                    }
                }
            }
            let rows = records
                .iter()
                .map(|record| {
                    header
                        .iter()
                        .map(|name| record.get(name).map(cell).unwrap_or_default())
                        .collect()
                })
                .collect();
            out.push_str(&table(header, rows));
        }
        Some(_) => out.push_str("(no rows)\n"),
        None => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(result).unwrap_or_default()
            );
        }
    }
    out
}

fn first_records(value: &Value) -> Option<Vec<&Map<String, Value>>> {
    match value {
        Value::Array(items) => {
            let records: Vec<_> = items.iter().filter_map(Value::as_object).collect();
            (records.len() == items.len()).then_some(records)
        }
        Value::Object(fields) => fields.values().find_map(first_records),
        _ => None,
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            // Whole numbers without a trailing `.0`; fractions to two places.
            Some(f) if n.is_f64() && f.fract() != 0.0 => format!("{f:.2}"),
            Some(f) if n.is_f64() => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; numbers right-aligned.
fn table(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, value) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(value.chars().count());
        }
    }
    let numeric = |s: &str| s == "-" || s.parse::<f64>().is_ok();
    let line = |cells: &[String], out: &mut String| {
        let mut text = String::new();
        for (i, value) in cells.iter().enumerate().take(columns) {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(value.chars().count());
            if numeric(value) {
                text.push_str(&" ".repeat(pad));
                text.push_str(value);
            } else {
                text.push_str(value);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let mut out = String::new();
    line(&header, &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in &rows {
        line(row, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_in_both_shapes() {
        let (kind, q) = parse_envelope(r#"{"kind": "funnel", "steps": []}"#).unwrap();
        assert_eq!(kind, QueryKind::Funnel);
        assert_eq!(q, json!({"steps": []}));
        let (kind, q) = parse_envelope(r#"{"kind": "trends", "query": {"series": []}}"#).unwrap();
        assert_eq!(kind, QueryKind::Trends);
        assert_eq!(q, json!({"series": []}));
        for bad in ["[]", "{}", r#"{"kind": "pie"}"#, r#"{"kind": 3}"#, "{nope"] {
            assert!(parse_envelope(bad).is_err(), "{bad}");
        }
        let unknown = parse_envelope(r#"{"kind": "pie"}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("trends, funnel"), "{unknown}");
    }

    #[test]
    fn trends_table_has_a_row_per_bucket_and_a_column_per_line() {
        let result = json!({"current": {
        "buckets": [{"start": 0, "label": "2024-03-01"}, {"start": 1, "label": "2024-03-02"}],
        "series": [
            {"series": 0, "label": "$pageview", "values": [3.0, 1.5]},
            {"series": 0, "label": "$pageview", "breakdown": {"type": "values", "values": ["Chrome"]}, "values": [2.0, null]}
        ]}});
        let text = trends_table(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("bucket") && lines[0].contains("A: $pageview / Chrome"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("2024-03-01") && lines[2].ends_with('2'),
            "{text}"
        );
        assert!(
            lines[3].contains("1.50") && lines[3].ends_with('-'),
            "{text}"
        );
    }

    #[test]
    fn retention_table_has_a_row_per_cohort_and_a_column_per_period() {
        let result = json!({"total": [
            {"period": {"start": 0, "label": "2024-03-01"}, "size": 2, "values": [2, 1, null]}
        ], "breakdowns": []});
        let text = retention_table(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("period 2"), "{text}");
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, ["(all)", "2024-03-01", "2", "2", "1", "-"], "{text}");
    }

    #[test]
    fn records_table_lists_the_first_array_of_objects() {
        let text =
            records_table(&json!({"next_cursor": "c1", "rows": [{"a": 1, "b": "x"}, {"a": 22}]}));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            ["next_cursor: c1", "a   b", "--  -", " 1  x", "22"],
            "{text}"
        );
    }
}
