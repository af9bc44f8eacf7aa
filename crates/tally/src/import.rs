//! `tally import`: loads history exports into a tenant through a running server.
//!
//! Files are read here and sent to the server's native batch endpoint as `historical`
//! batches, so imported events take exactly the ingest path live events take: the same
//! validation, the write-ahead log, dedup, identity processing. Each event's dedup key
//! is its own id when the file has one, else an id derived from the line's or row's
//! content, so importing the same file twice adds nothing the second time.
//!
//! Formats: NDJSON in PostHog or Segment shape (detected per line), Parquet and CSV
//! tables with one row per event (the event, distinct id, timestamp and uuid columns
//! are named by flags; every other column becomes a property). `.gz` files are
//! decompressed. Bad lines are counted and reported with their line numbers; the
//! command fails if there were any, after importing everything else.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use tally_core::event::uuid_from_dedup_key;
use tally_core::time::format_micros;
use tally_core::{Event, TenantId};
use tally_ingest::{Enricher, IngestConfig, RequestContext, json_type, normalize_json_event};

use crate::cli::{GlobalArgs, ImportArgs, ImportFormat};

/// How many bad lines are printed; the rest are only counted.
const MAX_REPORTED: usize = 100;

/// One event on its way to the server, with where it came from.
struct Pending {
    origin: String,
    event: Value,
}

struct Importer {
    tenant: TenantId,
    write_key: String,
    endpoint: String,
    http: reqwest::Client,
    batch_size: usize,
    ingest_config: IngestConfig,
    enricher: Enricher,
    pending: Vec<Pending>,
    imported: u64,
    bad: Vec<String>,
    bad_count: u64,
    progress: ProgressBar,
}

pub async fn run(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<()> {
    let meta = crate::tenant::open_meta(global).await?;
    let tenant = crate::tenant::find(&meta, &args.tenant).await?;
    meta.close().await;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos} events imported ({per_sec}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let ingest_config = IngestConfig::default();
    let enricher = Enricher::new(&ingest_config).context("setting up event normalisation")?;
    let mut importer = Importer {
        tenant: tenant.id,
        write_key: tenant.write_key.clone(),
        endpoint: format!("{}/v1/events/batch", args.url.trim_end_matches('/')),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        batch_size: args.batch_size,
        ingest_config,
        enricher,
        pending: Vec::new(),
        imported: 0,
        bad: Vec::new(),
        bad_count: 0,
        progress,
    };

    for path in &args.files {
        let format = match args.format {
            ImportFormat::Auto => guess_format(path)?,
            f => f,
        };
        importer.progress.set_message(path.display().to_string());
        match format {
            ImportFormat::Ndjson => importer.import_ndjson(path).await,
            ImportFormat::Csv => importer.import_csv(path, &args).await,
            ImportFormat::Parquet => importer.import_parquet(path, &args).await,
            ImportFormat::Auto => unreachable!("resolved above"),
        }
        .with_context(|| format!("importing {}", path.display()))?;
    }
    importer.flush().await?;
    importer.progress.finish_and_clear();

    let summary = format!(
        "imported {} events into {} from {} file(s); {} bad",
        importer.imported,
        args.tenant,
        args.files.len(),
        importer.bad_count
    );
    println!("{summary}");
    if importer.bad_count > 0 {
        for line in &importer.bad {
            eprintln!("{line}");
        }
        if importer.bad_count as usize > importer.bad.len() {
            eprintln!(
                "... and {} more",
                importer.bad_count as usize - importer.bad.len()
            );
        }
        bail!(
            "{} events could not be imported (listed above); the others were",
            importer.bad_count
        );
    }
    Ok(())
}

fn guess_format(path: &Path) -> anyhow::Result<ImportFormat> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    Ok(if name.ends_with(".parquet") {
        ImportFormat::Parquet
    } else if name.ends_with(".csv") {
        ImportFormat::Csv
    } else if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
        ImportFormat::Ndjson
    } else {
        bail!(
            "cannot tell the format of {} from its name; pass --format",
            path.display()
        )
    })
}

/// Opens a file, decompressing it when its name ends in `.gz`.
fn open_maybe_gzip(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

impl Importer {
    fn report_bad(&mut self, origin: &str, reason: impl std::fmt::Display) {
        self.bad_count += 1;
        if self.bad.len() < MAX_REPORTED {
            self.bad.push(format!("{origin}: {reason}"));
        }
    }

    /// Normalises one object (PostHog, Segment or native shape) and queues it.
    async fn push_object(
        &mut self,
        origin: String,
        mut object: Map<String, Value>,
        content_key: &str,
    ) -> anyhow::Result<()> {
        let has_key = ["uuid", "messageId", "message_id"]
            .iter()
            .any(|k| object.get(*k).is_some_and(|v| !v.is_null()))
            || object
                .get("properties")
                .and_then(|p| p.get("$insert_id"))
                .is_some_and(|v| !v.is_null());
        if !has_key {
            let derived = uuid_from_dedup_key(self.tenant, &format!("import:{content_key}"));
            object.insert("uuid".into(), json!(derived.to_string()));
            if object.contains_key("type")
                || object.contains_key("userId")
                || object.contains_key("anonymousId")
            {
                object.insert("messageId".into(), json!(derived.to_string()));
            }
        }
        let ctx = RequestContext::detached(&self.ingest_config, &self.enricher);
        match normalize_json_event(self.tenant, Value::Object(object), &ctx) {
            Ok(event) => {
                self.pending.push(Pending {
                    origin,
                    event: native_json(&event),
                });
                if self.pending.len() >= self.batch_size {
                    self.flush().await?;
                }
            }
            Err(rejection) => self.report_bad(&origin, rejection.detail),
        }
        Ok(())
    }

    async fn import_ndjson(&mut self, path: &Path) -> anyhow::Result<()> {
        let reader = BufReader::with_capacity(1 << 20, open_maybe_gzip(path)?);
        let name = path.display().to_string();
        for (i, line) in reader.lines().enumerate() {
            let origin = format!("{name}: line {}", i + 1);
            let line = match line {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.report_bad(&origin, "not valid UTF-8");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {origin}")),
            };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(object)) => self.push_object(origin, object, &line).await?,
                Ok(other) => self.report_bad(
                    &origin,
                    format!("expected a JSON object, got {}", json_type(&other)),
                ),
                Err(e) => self.report_bad(&origin, format!("invalid JSON: {e}")),
            }
        }
        Ok(())
    }

    async fn import_csv(&mut self, path: &Path, args: &ImportArgs) -> anyhow::Result<()> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(open_maybe_gzip(path)?);
        let headers = reader.headers().context("reading the CSV header")?.clone();
        let columns = TableColumns::find(headers.iter(), args)?;
        let name = path.display().to_string();
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(e.into());
                    }
                    let at = e.position().map(|p| p.line()).unwrap_or(line);
                    self.report_bad(&format!("{name}: line {at}"), e);
                    continue;
                }
            }
            let origin = format!(
                "{name}: line {}",
                record.position().map(|p| p.line()).unwrap_or(line)
            );
            let values = record.iter().map(csv_value).collect::<Vec<_>>();
            let content: Vec<&str> = record.iter().collect();
            let object = columns.to_object(headers.iter(), values);
            self.push_object(origin, object, &content.join("\u{1f}"))
                .await?;
        }
        Ok(())
    }

    async fn import_parquet(&mut self, path: &Path, args: &ImportArgs) -> anyhow::Result<()> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .context("reading the Parquet footer")?;
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let columns = TableColumns::find(names.iter().copied(), args)?;
        let reader = builder
            .with_batch_size(8192)
            .build()
            .context("reading Parquet")?;
        let name = path.display().to_string();
        let mut row_number = 0usize;
        for batch in reader {
            let batch = batch.context("reading a Parquet row group")?;
            for row in 0..batch.num_rows() {
                row_number += 1;
                let values: Vec<Value> = batch
                    .columns()
                    .iter()
                    .map(|c| arrow_value(c.as_ref(), row))
                    .collect();
                let content = serde_json::to_string(&values)?;
                let object = columns.to_object(names.iter().copied(), values);
                self.push_object(format!("{name}: row {row_number}"), object, &content)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends the queued events, retrying while the server is unavailable (the same
    /// ids make retries harmless), and maps rejections back to lines.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let body = json!({
            "historical": true,
            "events": pending.iter().map(|p| &p.event).collect::<Vec<_>>(),
        })
        .to_string();
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0;
        let reply: Value = loop {
            attempts += 1;
            let result = self
                .http
                .post(&self.endpoint)
                .bearer_auth(&self.write_key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(r)
                    if r.status().is_success()
                        || r.status() == reqwest::StatusCode::BAD_REQUEST =>
                {
                    let status = r.status();
                    let v: Value = r.json().await.context("reading the server's answer")?;
                    if status.is_success() || v.get("rejected").is_some() {
                        break v;
                    }
                    bail!(
                        "the server refused the batch: {}",
                        v["error"].as_str().unwrap_or("bad request")
                    );
                }
                Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                    bail!(
                        "the server does not know this tenant's write key; is it using the same data directory?"
                    )
                }
                Ok(r) if r.status().is_server_error() && attempts < 30 => {
                    tracing::debug!(status = %r.status(), "Server unavailable; retrying.");
                }
                Ok(r) => {
                    let status = r.status();
                    bail!(
                        "the server answered {status}: {}",
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(e) if attempts < 30 => {
                    if attempts == 1 && e.is_connect() {
                        bail!(
                            "cannot reach Tally at {} ({e}); start `tally serve` or pass --url",
                            self.endpoint
                        )
                    }
                    tracing::debug!(error = %e, "Request failed; retrying.");
                }
                Err(e) => return Err(e).context("sending events"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        let accepted = reply["accepted"].as_u64().unwrap_or(0);
        self.imported += accepted;
        self.progress.inc(accepted);
        for r in reply["rejected"].as_array().into_iter().flatten() {
            let index = r["index"].as_u64().unwrap_or(u64::MAX) as usize;
            let origin = pending
                .get(index)
                .map(|p| p.origin.as_str())
                .unwrap_or("unknown line");
            self.report_bad(
                origin,
                r["reason"].as_str().unwrap_or("rejected by the server"),
            );
        }
        Ok(())
    }
}

/// Positions of the special columns of a table import.
struct TableColumns {
    event: usize,
    distinct_id: usize,
    timestamp: Option<usize>,
    uuid: Option<usize>,
}

impl TableColumns {
    fn find<'a>(names: impl Iterator<Item = &'a str>, args: &ImportArgs) -> anyhow::Result<Self> {
        let names: Vec<&str> = names.collect();
        let position = |wanted: &str| names.iter().position(|n| *n == wanted);
        let required = |wanted: &str, flag: &str| {
            position(wanted).with_context(|| {
                format!(
                    "no column {wanted:?} (columns: {}); name it with {flag}",
                    names.join(", ")
                )
            })
        };
        Ok(TableColumns {
            event: required(&args.event_column, "--event-column")?,
            distinct_id: required(&args.distinct_id_column, "--distinct-id-column")?,
            timestamp: position(&args.timestamp_column),
            uuid: position(&args.uuid_column),
        })
    }

    /// Builds a PostHog-shaped object from one row: special columns by position, every
    /// other non-null column a property.
    fn to_object<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        values: Vec<Value>,
    ) -> Map<String, Value> {
        let mut object = Map::new();
        let mut properties = Map::new();
        for (i, (name, value)) in names.zip(values).enumerate() {
            if i == self.event {
                object.insert("event".into(), value);
            } else if i == self.distinct_id {
                object.insert("distinct_id".into(), stringify(value));
            } else if Some(i) == self.timestamp {
                object.insert("timestamp".into(), value);
            } else if Some(i) == self.uuid {
                if !value.is_null() {
                    object.insert("uuid".into(), stringify(value));
                }
            } else if !value.is_null() {
                properties.insert(name.to_string(), value);
            }
        }
        object.insert("properties".into(), Value::Object(properties));
        object
    }
}

fn stringify(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        other => other,
    }
}

/// A CSV field as JSON: empty is absent, numbers and booleans are typed, the rest text.
fn csv_value(field: &str) -> Value {
    let trimmed = field.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = trimmed.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = trimmed.parse::<f64>()
        && f.is_finite()
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return json!(f);
    }
    match trimmed {
        "true" | "TRUE" | "True" => Value::Bool(true),
        "false" | "FALSE" | "False" => Value::Bool(false),
        _ => Value::String(field.to_string()),
    }
}

/// One Arrow cell as JSON. Timestamps become RFC 3339 text; types without a natural
/// JSON form use Arrow's display format.
fn arrow_value(array: &dyn Array, row: usize) -> Value {
    use arrow::datatypes::*;
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json!(array.as_string::<i64>().value(row)),
        DataType::Utf8View => json!(array.as_string_view().value(row)),
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int8 => json!(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => finite(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => finite(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(row) / 1000
                }
            };
            json!(format_micros(v))
        }
        _ => {
            let options = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(array, &options) {
                Ok(f) => json!(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

fn finite(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// An event in the native endpoint's shape, carrying everything normalisation produced.
fn native_json(e: &Event) -> Value {
    let mut v = json!({
        "uuid": e.uuid.to_string(),
        "event": e.event,
        "distinct_id": e.distinct_id,
        "timestamp": format_micros(e.timestamp),
        "properties": e.properties,
    });
    if !e.person_set.is_empty() {
        v["set"] = json!(e.person_set);
    }
    if !e.person_set_once.is_empty() {
        v["set_once"] = json!(e.person_set_once);
    }
    v
}
