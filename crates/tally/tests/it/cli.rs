//! The command-line workflows a newcomer follows in the README.

use std::io::Write;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Server, create_tenant, export_events, tally, tally_bin};

#[test]
fn tenant_create_prints_keys_as_json_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let (id, write_key, secret) = create_tenant(dir.path(), "acme");
    assert_eq!(id, 1);
    assert!(write_key.starts_with("tly_pub_"), "{write_key}");
    assert!(secret.starts_with("tly_sec_"), "{secret}");

    let table = tally(dir.path(), &["tenant", "create", "globex"]);
    assert!(
        table.contains("write key") && table.contains("tly_pub_") && table.contains("tly_sec_"),
        "{table}"
    );

    // Names are unique and validated, with a clear error.
    let out = Command::new(tally_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["tenant", "create", "acme"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("acme"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(tally_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["tenant", "create", "Bad Name!"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Attributes for operator breakdowns.
    let shown: Value = serde_json::from_str(&tally(
        dir.path(),
        &["tenant", "set", "acme", "plan=pro", "region=eu"],
    ))
    .unwrap();
    assert_eq!(shown["attributes"], json!({"plan": "pro", "region": "eu"}));
    let shown: Value =
        serde_json::from_str(&tally(dir.path(), &["tenant", "set", "acme", "region="])).unwrap();
    assert_eq!(shown["attributes"], json!({"plan": "pro"}));
    let list: Value =
        serde_json::from_str(&tally(dir.path(), &["tenant", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn import_reports_bad_lines_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    create_tenant(dir.path(), "acme");
    let mut server = Server::start(dir.path(), &[]);
    let file = dir.path().join("export.ndjson.gz");
    {
        let f = std::fs::File::create(&file).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        // PostHog shape.
        writeln!(gz, r#"{{"event":"$pageview","distinct_id":"u1","timestamp":"2026-10-01T10:00:00Z","properties":{{"$current_url":"/a"}}}}"#).unwrap();
        writeln!(gz, r#"{{"uuid":"0190b5a4-6d2e-7c3b-8f00-000000000001","event":"signed_up","distinct_id":"u1","timestamp":"2026-10-01T10:05:00Z","properties":{{"plan":"pro"}}}}"#).unwrap();
        // Segment shape.
        writeln!(gz, r#"{{"type":"track","event":"Order Completed","userId":"u2","messageId":"m-1","timestamp":"2026-10-02T09:00:00Z","properties":{{"revenue":10}}}}"#).unwrap();
        writeln!(gz, r#"{{"type":"identify","userId":"u3","anonymousId":"a3","traits":{{"email":"u3@example.com"}},"timestamp":"2026-10-02T09:00:00Z"}}"#).unwrap();
        // Bad lines: not JSON, no distinct id, denylisted id.
        writeln!(gz, "this is not json").unwrap();
        writeln!(gz, r#"{{"event":"x","timestamp":"2026-10-02T09:00:00Z"}}"#).unwrap();
        writeln!(gz, r#"{{"event":"x","distinct_id":"undefined"}}"#).unwrap();
        writeln!(gz).unwrap();
        gz.finish().unwrap();
    }
    let run_import = || {
        Command::new(tally_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "import",
                "--tenant",
                "acme",
                "--quiet",
                "--url",
                &server.url(),
            ])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run_import();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // Bad lines make the command fail loudly, after importing the good ones.
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("imported 4") || stderr.contains("imported 4"),
        "{stdout}\n{stderr}"
    );
    for line in ["line 5", "line 6", "line 7"] {
        assert!(stderr.contains(line), "{line} not reported:\n{stderr}");
    }
    assert!(
        !stderr.contains("line 8"),
        "a blank line is not an error:\n{stderr}"
    );
    // Again: nothing is added twice.
    let out = run_import();
    assert!(!out.status.success());
    server.stop();
    let events = export_events(dir.path(), "acme");
    assert_eq!(events.len(), 4, "{events:#?}");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for n in ["$pageview", "signed_up", "Order Completed", "$identify"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    // Historic timestamps are kept, not replaced by the import time.
    let pv = events
        .iter()
        .find(|e| e["event"] == json!("$pageview"))
        .unwrap();
    assert_eq!(pv["timestamp"], json!("2026-10-01T10:00:00.000000Z"));
}

#[test]
fn import_csv_names_columns_by_flags() {
    let dir = tempfile::tempdir().unwrap();
    create_tenant(dir.path(), "acme");
    let mut server = Server::start(dir.path(), &[]);
    let file = dir.path().join("events.csv");
    std::fs::write(
        &file,
        "name,who,at,plan,amount\nsigned_up,u1,2026-10-01T10:00:00Z,pro,12.5\npurchase,u1,2026-10-03T10:00:00Z,pro,99\n",
    )
    .unwrap();
    let args = [
        "--event-column",
        "name",
        "--distinct-id-column",
        "who",
        "--timestamp-column",
        "at",
        "--quiet",
    ];
    for _ in 0..2 {
        let out = Command::new(tally_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["import", "--tenant", "acme", "--url", &server.url()])
            .args(args)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.stop();
    let events = export_events(dir.path(), "acme");
    assert_eq!(events.len(), 2, "re-importing adds nothing: {events:#?}");
    let purchase = events
        .iter()
        .find(|e| e["event"] == json!("purchase"))
        .unwrap();
    assert_eq!(purchase["distinct_id"], json!("u1"));
    assert_eq!(purchase["properties"]["plan"], json!("pro"));
    assert_eq!(purchase["properties"]["amount"], json!(99));
}

#[test]
fn demo_creates_tenants_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let out: Value = serde_json::from_str(&tally(
        dir.path(),
        &["demo", "--events", "20000", "--tenants", "3", "--json"],
    ))
    .unwrap();
    let tenants = out["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 3);
    let total: u64 = tenants.iter().map(|t| t["events"].as_u64().unwrap()).sum();
    assert!((19_000..=21_000).contains(&total), "{out}");
    let name = tenants[0]["name"].as_str().unwrap();
    let events = export_events(dir.path(), name);
    assert_eq!(events.len() as u64, tenants[0]["events"].as_u64().unwrap());
    assert!(events.iter().any(|e| e["event"] == json!("$identify")));
}

#[test]
fn import_parquet_turns_other_columns_into_typed_properties() {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };

    let dir = tempfile::tempdir().unwrap();
    create_tenant(dir.path(), "acme");
    let mut server = Server::start(dir.path(), &[]);
    let file = dir.path().join("events.parquet");
    {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "event",
                Arc::new(StringArray::from(vec!["signed_up", "purchase", "purchase"])),
            ),
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u1", "u1", "undefined"])),
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_790_000_000_000_000,
                        1_790_000_100_000_000,
                        1_790_000_200_000_000,
                    ])
                    .with_timezone("UTC"),
                ),
            ),
            (
                "plan",
                Arc::new(StringArray::from(vec![Some("pro"), None, Some("pro")])),
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![None, Some(99.5), Some(1.0)])),
            ),
            (
                "is_trial",
                Arc::new(BooleanArray::from(vec![true, false, false])),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&file).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    for _ in 0..2 {
        let out = Command::new(tally_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "import",
                "--tenant",
                "acme",
                "--quiet",
                "--distinct-id-column",
                "user_id",
                "--url",
                &server.url(),
            ])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Row 3 has a placeholder distinct id: reported with its row number, the rest imported.
        assert!(!out.status.success());
        assert!(stderr.contains("row 3"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("imported 2"),
            "{stderr}"
        );
    }
    server.stop();
    let events = export_events(dir.path(), "acme");
    assert_eq!(events.len(), 2, "re-importing adds nothing: {events:#?}");
    let purchase = events
        .iter()
        .find(|e| e["event"] == json!("purchase"))
        .unwrap();
    assert_eq!(purchase["properties"]["amount"], json!(99.5));
    assert_eq!(purchase["properties"]["is_trial"], json!(false));
    assert!(
        purchase["properties"].get("plan").is_none(),
        "null cells are absent: {purchase}"
    );
    let signup = events
        .iter()
        .find(|e| e["event"] == json!("signed_up"))
        .unwrap();
    assert_eq!(signup["timestamp"], json!("2026-09-21T14:13:20.000000Z"));
    assert_eq!(signup["properties"]["plan"], json!("pro"));
}
