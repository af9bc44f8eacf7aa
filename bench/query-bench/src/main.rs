//! Runs Tally's query engine in-process on a data directory, for the query benchmark
//! (`bench/query/run.sh`, docs/BENCHMARKS.md "Queries").
//!
//! It opens the data directory the way `tally serve` does — the metadata database
//! through `tally_meta::SqliteMeta`, the columnar store through
//! `tally_store::EmbeddedStore` — but starts no write-ahead log, ingest or background
//! flush/compaction, and holds the directory's writer lock so that it never reads a
//! store another process is writing. Then it answers query files
//! (`bench/query/queries/*.json`: the query model's JSON with `kind` and an optional
//! `title` beside it, the scope left out) for one tenant at a fixed `now`, in-process
//! like DuckDB's and chdb's Python APIs, so the comparison measures query execution
//! and nothing of HTTP or GraphQL.
//!
//! Two modes: by default it runs every file `--warmup` + `--runs` times and prints one
//! JSON object per file (timings, result digest, result) and a last line with the
//! process's peak resident memory. With `--serve` it reads commands from standard input
//! (`run FILE`, `reset_peak`, `peak`, `quit`), one JSON line per answer, so the
//! benchmark driver can interleave Tally with the other engines query by query.
//!
//! With `--sql FILE` it runs raw SQL statements (separated by `;` at a line end) on a
//! session holding the tenant's events and identity map under the compiler's names
//! (`tenant_<id>_events`, `tenant_<id>_person_map`) and `tally_person_key` over that
//! map, with the engine's memory limit and partitions, and prints each one's time and
//! output: `EXPLAIN ANALYZE` of a compiled
//! statement, or a variant of it, shows where a query's time goes.
//!
//! It owns no query semantics (tally-query), SQL (tally-sql) or execution
//! (tally-engine); it only times them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tally_core::TenantId;
use tally_engine::{Engine, EngineConfig, IdentitySource};
use tally_meta::SqliteMeta;
use tally_query::{FunnelQuery, RetentionQuery, TrendsQuery};
use tally_store::{EmbeddedStore, StoreConfig};

/// The same allocator as the `tally` binary, so timings are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator settings of `tally` (crates/tally/src/main.rs, `configure_allocator`:
/// freed memory is kept 10 s before it goes back to the OS), so that the benchmark
/// measures what the server runs.
fn configure_allocator() {
    // mimalloc's `mi_option_purge_delay` (see crates/tally/src/main.rs).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const _: () = assert!(MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes);
    // SAFETY: sets a plain integer option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

#[derive(Debug, Parser)]
#[command(about = "Times Tally queries in-process on a data directory")]
struct Args {
    /// The data directory (as given to `tally --data-dir`); no server may be using it.
    #[arg(long)]
    data_dir: PathBuf,
    /// The tenant every query is scoped to.
    #[arg(long)]
    tenant: u32,
    /// The queries' "now", UTC microseconds since the epoch: fixes relative date
    /// ranges ("last 30 days") to the data set's end.
    #[arg(long)]
    now: i64,
    /// Timed runs per query (one-shot mode).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Untimed runs before the timed ones (one-shot mode).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Memory limit of one query (DataFusion memory pool), bytes.
    #[arg(long, default_value_t = EngineConfig::default().memory_limit_bytes)]
    memory_limit_bytes: usize,
    /// DataFusion target partitions (the server's default is 2).
    #[arg(long, default_value_t = EngineConfig::default().target_partitions)]
    partitions: usize,
    /// Time limit of one query, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Read commands from standard input instead of running the files.
    #[arg(long)]
    serve: bool,
    /// Run the SQL statements of this file instead (see the crate doc).
    #[arg(long)]
    sql: Option<PathBuf>,
    /// Query files (one-shot mode).
    files: Vec<PathBuf>,
}

/// A parsed query file.
#[derive(Debug, Clone)]
enum Query {
    Trends(Box<TrendsQuery>),
    Funnel(Box<FunnelQuery>),
    Retention(Box<RetentionQuery>),
}

impl Query {
    fn kind(&self) -> &'static str {
        match self {
            Query::Trends(_) => "trends",
            Query::Funnel(_) => "funnel",
            Query::Retention(_) => "retention",
        }
    }
}

/// A query file's contents: the query with the tenant's scope, and its title.
#[derive(Debug, Clone)]
struct QueryFile {
    query: Query,
    title: String,
}

/// Parses a query file's text: `{"kind": ..., "title": ..., <query fields>}` with the
/// scope left out (the benchmark sets it to `tenant`).
fn parse_query(text: &str, tenant: TenantId) -> anyhow::Result<QueryFile> {
    let value: Value = serde_json::from_str(text).context("not JSON")?;
    let Value::Object(mut object) = value else {
        bail!("expected a JSON object with `kind` and the query's fields");
    };
    let kind = match object.remove("kind") {
        Some(Value::String(kind)) => kind,
        _ => bail!("missing `kind` (trends, funnel or retention)"),
    };
    let title = match object.remove("title") {
        Some(Value::String(title)) => title,
        None => String::new(),
        Some(other) => bail!("`title` must be a string, got {other}"),
    };
    if object.contains_key("scope") {
        bail!("leave `scope` out: the benchmark scopes every query to --tenant");
    }
    object.insert("scope".into(), json!({ "tenant": tenant.0 }));
    let body = Value::Object(object);
    let query = match kind.as_str() {
        "trends" => {
            let q: TrendsQuery = serde_json::from_value(body).context("invalid trends query")?;
            q.validate()?;
            Query::Trends(Box::new(q))
        }
        "funnel" => {
            let q: FunnelQuery = serde_json::from_value(body).context("invalid funnel query")?;
            q.validate()?;
            Query::Funnel(Box::new(q))
        }
        "retention" => {
            let q: RetentionQuery =
                serde_json::from_value(body).context("invalid retention query")?;
            q.validate()?;
            Query::Retention(Box::new(q))
        }
        other => bail!("unknown kind {other:?}: use trends, funnel or retention"),
    };
    Ok(QueryFile { query, title })
}

fn read_query(path: &Path, tenant: TenantId) -> anyhow::Result<QueryFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the query file {}", path.display()))?;
    parse_query(&text, tenant).with_context(|| format!("in {}", path.display()))
}

/// Runs one query; returns its wall time and its result as JSON.
async fn run_query(engine: &Engine, query: &Query, now: i64) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let result = match query {
        Query::Trends(q) => serde_json::to_value(engine.trends(q, now, None).await?),
        Query::Funnel(q) => serde_json::to_value(engine.funnel(q, now, None).await?),
        Query::Retention(q) => serde_json::to_value(engine.retention(q, now, None).await?),
    };
    // The clock stops when the engine has answered; turning the typed result into
    // JSON is the benchmark's business, not the engine's. `to_value` cannot fail for
    // these types, but a failure is reported rather than assumed away.
    let elapsed = started.elapsed();
    Ok((elapsed, result.context("serialising the result")?))
}

/// A short, stable fingerprint of a result: equal results have equal digests.
fn digest(result: &Value) -> String {
    let text = result.to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Median of the timings in milliseconds (mean of the middle two for an even count).
fn median_ms(times: &[Duration]) -> Option<f64> {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(ms[n / 2]),
        _ => Some((ms[n / 2 - 1] + ms[n / 2]) / 2.0),
    }
}

/// Peak resident set size of this process (`VmHWM`), in bytes, where Linux tells it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` 5), so the
/// peak of the query phase can be told apart from the peak of opening the data.
fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("writing /proc/self/clear_refs")
}

/// Takes the data directory's writer lock, as `tally serve` and `tally demo` do:
/// opening the store deletes files its manifest does not list, which must never
/// happen under a running writer.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another Tally process (a server or `tally demo`)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

async fn open_engine(args: &Args) -> anyhow::Result<Engine> {
    let meta_path = args.data_dir.join("meta.sqlite");
    if !meta_path.exists() {
        bail!(
            "{} has no metadata database; generate data with `tally --data-dir {} demo` first",
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
    let meta = Arc::new(
        SqliteMeta::open(&meta_path)
            .await
            .with_context(|| format!("opening {}", meta_path.display()))?,
    );
    let store = EmbeddedStore::open(StoreConfig::new(args.data_dir.join("store")))
        .await
        .context("opening the columnar store")?;
    let identities: Arc<dyn IdentitySource> = meta;
    Ok(Engine::new(
        store,
        identities,
        EngineConfig {
            memory_limit_bytes: args.memory_limit_bytes,
            query_timeout: Duration::from_secs(args.timeout_secs),
            target_partitions: args.partitions.max(1),
            ..EngineConfig::default()
        },
    ))
}

async fn one_shot(args: &Args, engine: &Engine, out: &mut impl Write) -> anyhow::Result<()> {
    let tenant = TenantId(args.tenant);
    for path in &args.files {
        let file = read_query(path, tenant)?;
        for _ in 0..args.warmup {
            run_query(engine, &file.query, args.now).await?;
        }
        let mut times = Vec::with_capacity(args.runs);
        let mut last = Value::Null;
        for _ in 0..args.runs {
            let (elapsed, result) = run_query(engine, &file.query, args.now).await?;
            times.push(elapsed);
            last = result;
        }
        let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        let line = json!({
            "file": path.display().to_string(),
            "kind": file.query.kind(),
            "title": file.title,
            "runs_ms": ms,
            "median_ms": median_ms(&times),
            "min_ms": ms.iter().copied().reduce(f64::min),
            "max_ms": ms.iter().copied().reduce(f64::max),
            "digest": digest(&last),
            "result": last,
        });
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{}", json!({ "peak_rss_bytes": peak_rss_bytes() }))?;
    Ok(())
}

/// The line protocol of `--serve`: one command per line, one JSON line per answer.
/// Errors of a command are answered (`{"error": ...}`) and the loop goes on.
async fn serve(args: &Args, engine: &Engine, out: &mut impl Write) -> anyhow::Result<()> {
    let tenant = TenantId(args.tenant);
    let mut parsed: HashMap<PathBuf, QueryFile> = HashMap::new();
    writeln!(
        out,
        "{}",
        json!({ "ready": true, "peak_rss_bytes": peak_rss_bytes() })
    )?;
    out.flush()?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading a command")?;
        let line = line.trim();
        let answer = match line.split_once(' ').unwrap_or((line, "")) {
            ("", _) => continue,
            ("quit", _) => break,
            ("peak", _) => json!({ "peak_rss_bytes": peak_rss_bytes() }),
            ("reset_peak", _) => match reset_peak_rss() {
                Ok(()) => json!({ "peak_rss_bytes": peak_rss_bytes() }),
                Err(e) => json!({ "error": format!("{e:#}") }),
            },
            ("run", path) => {
                let path = PathBuf::from(path.trim());
                let file = match parsed.get(&path) {
                    Some(file) => Ok(file.clone()),
                    None => read_query(&path, tenant).inspect(|file| {
                        parsed.insert(path.clone(), file.clone());
                    }),
                };
                match file {
                    Ok(file) => match run_query(engine, &file.query, args.now).await {
                        Ok((elapsed, result)) => json!({
                            "ms": elapsed.as_secs_f64() * 1e3,
                            "kind": file.query.kind(),
                            "digest": digest(&result),
                            "result": result,
                        }),
                        Err(e) => json!({ "error": format!("{e:#}") }),
                    },
                    Err(e) => json!({ "error": format!("{e:#}") }),
                }
            }
            (other, _) => {
                json!({ "error": format!("unknown command {other:?}: use run FILE, reset_peak, peak or quit") })
            }
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// Splits a SQL file into statements at `;` ending a line; `--` comment lines are
/// dropped.
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_string();
            if !statement.is_empty() {
                statements.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

/// `--sql`: runs raw statements on the tenant's events and identity map.
async fn run_sql(args: &Args, path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use tally_sql::DataFusionDialect;

    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the SQL file {}", path.display()))?;
    let statements = split_statements(&text);
    if statements.is_empty() {
        bail!("{} holds no SQL statement", path.display());
    }
    let tenant = TenantId(args.tenant);
    let meta = SqliteMeta::open(&args.data_dir.join("meta.sqlite"))
        .await
        .context("opening the metadata database")?;
    let store = EmbeddedStore::open(StoreConfig::new(args.data_dir.join("store")))
        .await
        .context("opening the columnar store")?;
    let (_, pairs) = IdentitySource::distinct_id_map(&meta, tenant)
        .await
        .map_err(|e| anyhow::anyhow!("reading the identity map: {e}"))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(args.memory_limit_bytes, 1.0)
        .build_arc()?;
    let config = SessionConfig::new().with_target_partitions(args.partitions.max(1));
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_table(
        DataFusionDialect::events_table_name(tenant),
        Arc::new(store.events_table(tenant)?),
    )?;
    ctx.register_table(
        DataFusionDialect::person_map_table_name(tenant),
        Arc::new(tally_engine::person_map_table(&pairs)?),
    )?;
    // Compiled statements that group persons read `tally_person_key` (registered
    // after the events table, so its keys cover every number of the snapshot).
    let map = tally_engine::person_key::PersonKeyMap::new(
        pairs.iter().map(|(d, p)| (d.as_str(), p.as_str())),
    );
    let mut keys = tally_engine::person_key::NumberedPersonKeys::default();
    keys.extend(&map, &store.distinct_ids(tenant, 0));
    ctx.register_udf(tally_engine::person_key::PersonKeyUdf::new(Arc::new(keys)).into_udf());
    for statement in statements {
        let started = Instant::now();
        let batches = ctx.sql(&statement).await?.collect().await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        writeln!(
            out,
            "-- {ms:.0} ms: {}",
            statement.lines().next().unwrap_or("")
        )?;
        writeln!(out, "{}", pretty_format_batches(&batches)?)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    configure_allocator();
    let args = Args::parse();
    if let Some(path) = &args.sql {
        let _lock = lock_data_dir(&args.data_dir)?;
        let stdout = std::io::stdout();
        return run_sql(&args, path, &mut stdout.lock()).await;
    }
    if !args.serve && args.files.is_empty() {
        bail!("give query files to run, --serve or --sql FILE");
    }
    if !args.serve && args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let _lock = lock_data_dir(&args.data_dir)?;
    let engine = open_engine(&args).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.serve {
        serve(&args, &engine, &mut out).await
    } else {
        one_shot(&args, &engine, &mut out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNNEL: &str = r#"{"kind": "funnel", "title": "t",
        "date_range": {"type": "last", "count": 90, "unit": "day"},
        "steps": [{"event": "a"}, {"event": "b"}]}"#;

    #[test]
    fn query_files_get_the_tenant_scope() {
        let file = parse_query(FUNNEL, TenantId(7)).unwrap();
        assert_eq!(file.title, "t");
        let Query::Funnel(q) = file.query else {
            panic!("not a funnel")
        };
        assert_eq!(q.scope, tally_query::Scope::Tenant(TenantId(7)));
    }

    #[test]
    fn bad_query_files_are_refused_with_a_reason() {
        let err = |text: &str| format!("{:#}", parse_query(text, TenantId(1)).unwrap_err());
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"date_range": {}}"#).contains("missing `kind`"));
        assert!(err(r#"{"kind": "sql"}"#).contains("unknown kind"));
        assert!(
            err(&FUNNEL.replace("\"title\"", "\"scope\": {\"tenant\": 2}, \"x\""))
                .contains("scope")
        );
        // The model's own validation runs: one step is not a funnel.
        assert!(parse_query(&FUNNEL.replace(r#", {"event": "b"}"#, ""), TenantId(1)).is_err());
        // Every shipped benchmark query parses.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../query/queries");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            read_query(&path, TenantId(1)).unwrap();
            seen += 1;
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn sql_files_split_into_statements() {
        let text = "-- a comment\nSELECT 1;\nSELECT ';'\n  FROM t;\n\nEXPLAIN SELECT 2";
        assert_eq!(
            split_statements(text),
            vec!["SELECT 1", "SELECT ';'\n  FROM t", "EXPLAIN SELECT 2"]
        );
        assert!(split_statements("-- only\n\n").is_empty());
    }

    #[test]
    fn medians_and_peak_memory() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median_ms(&ms(&[5, 1, 3])), Some(3.0));
        assert_eq!(median_ms(&ms(&[4, 1, 3, 2])), Some(2.5));
        assert_eq!(median_ms(&[]), None);
        let status = "Name:\tx\nVmPeak:\t 10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB"), None);
        assert_ne!(digest(&json!({"a": 1})), digest(&json!({"a": 2})));
    }

    #[tokio::test]
    async fn refuses_a_locked_or_empty_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from([
            "query-bench",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tenant",
            "1",
            "--now",
            "0",
            "--serve",
        ]);
        let err = open_engine(&args).await.err().unwrap();
        assert!(format!("{err:#}").contains("no metadata database"));
        let _held = lock_data_dir(dir.path()).unwrap();
        let second = lock_data_dir(dir.path()).unwrap_err();
        assert!(second.to_string().contains("in use"));
    }
}
