//! Command-line interface: every flag has a long name, an environment-variable twin
//! and a documented default, so that the same binary is configured the same way on a
//! laptop, in systemd and in Kubernetes.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Tally: self-hosted, multi-tenant product analytics",
    long_about = "Tally ingests events from PostHog and Segment SDKs, stores them durably in an embedded \
                  columnar store and answers product-analytics questions over them.\n\n\
                  Start with `tally serve --demo`, then open http://127.0.0.1:8000."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global")]
pub struct GlobalArgs {
    /// Directory holding the write-ahead log, the columnar store and the metadata database.
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Log format: `human` for terminals, `json` for log shippers.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` env-filter syntax, e.g. `info,tally_store=debug`.
    /// Default: `info` for `serve`, `warn` for the other commands.
    #[arg(long, env = "TALLY_LOG", global = true)]
    pub log: Option<String>,

    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: ingest API, write-ahead log, columnar store and metrics.
    Serve(Box<ServeArgs>),
    /// Manage tenants and their keys.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage operator keys (cross-tenant query access for the operator's staff).
    #[command(subcommand, name = "operator-key")]
    OperatorKey(OperatorKeyCommand),
    /// Load a history export (PostHog or Segment NDJSON, Parquet or CSV) into a tenant
    /// through a running server.
    Import(ImportArgs),
    /// Create demo tenants with realistic generated behaviour (the server must be stopped).
    Demo(DemoArgs),
    /// Write a tenant's stored events, a person or its groups to stdout as JSON (the
    /// server must be stopped).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Run a query file (`{"kind": "trends", ...}`) against a running server's GraphQL
    /// API and print the result as JSON or a table.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// JSON file holding one query: `{"kind": "trends", "date_range": ..., ...}` (the
    /// query's fields next to its kind) or `{"kind": "trends", "query": {...}}`; `-`
    /// reads standard input. `scope` may be omitted with a tenant's secret key.
    pub file: PathBuf,
    /// API key: the tenant's secret key (tly_sec_...) or an operator key (tly_op_...).
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub key: String,
    /// URL of the running Tally server.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Print a readable table instead of JSON.
    #[arg(long)]
    pub table: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every stored event of the tenant, one JSON object per line, oldest first.
    Events {
        #[arg(long)]
        tenant: String,
    },
    /// The person a distinct id belongs to, with its properties and all its distinct ids.
    Person {
        #[arg(long)]
        tenant: String,
        distinct_id: String,
    },
    /// The tenant's groups with their properties, as a JSON array.
    Groups {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the HTTP server listens on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Create the demo tenants with generated data on first start (if they do not exist yet).
    #[arg(long, env = "TALLY_DEMO")]
    pub demo: bool,

    /// Number of events the demo generates with `--demo`.
    #[arg(long, env = "TALLY_DEMO_EVENTS", default_value_t = 2_000_000)]
    pub demo_events: u64,

    /// Proxies (IP addresses or CIDR ranges, comma separated) whose `X-Forwarded-For`
    /// header is trusted for the client IP. Empty: the socket peer is the client.
    #[arg(long, env = "TALLY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// MaxMind-format (GeoLite2/GeoIP2 City) database used to add `$geoip_*` properties.
    #[arg(long, env = "TALLY_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub query: QueryLimitArgs,
}

/// Limits of the query API. A query over its time or memory limit fails with a clear
/// error (`TIMEOUT`, `BAD_REQUEST`) instead of slowing the server down for everyone.
#[derive(Debug, Args)]
#[command(next_help_heading = "Query limits")]
pub struct QueryLimitArgs {
    /// Wall-clock limit of one analytics query, in seconds.
    #[arg(long, env = "TALLY_QUERY_TIMEOUT_SECS", default_value_t = 30)]
    pub query_timeout_secs: u64,
    /// Memory one analytics query may use for joins, sorts and aggregations, in bytes.
    #[arg(long, env = "TALLY_QUERY_MEMORY_LIMIT_BYTES", default_value_t = 2 << 30)]
    pub query_memory_limit_bytes: usize,
    /// Most analytics queries running at once, server-wide (memory use stays under this
    /// times the per-query limit). A query finding them all busy waits up to the query
    /// time limit, then fails with `UNAVAILABLE` and a retry hint.
    #[arg(long, env = "TALLY_MAX_CONCURRENT_QUERIES", default_value_t = 4)]
    pub max_concurrent_queries: usize,
    /// Parallelism of one analytics query (DataFusion target partitions).
    #[arg(long, env = "TALLY_QUERY_PARTITIONS", default_value_t = 2)]
    pub query_partitions: usize,
    /// Deepest selection nesting of a GraphQL request.
    #[arg(long, env = "TALLY_GRAPHQL_MAX_DEPTH", default_value_t = 16)]
    pub graphql_max_depth: usize,
    /// Most fields in a GraphQL request, counted with fragments expanded.
    #[arg(long, env = "TALLY_GRAPHQL_MAX_COMPLEXITY", default_value_t = 500)]
    pub graphql_max_complexity: usize,
    /// Most analytics queries (aliased fields) in one GraphQL request.
    #[arg(long, env = "TALLY_GRAPHQL_MAX_QUERIES", default_value_t = 8)]
    pub graphql_max_queries: usize,
}

/// Ingest validation limits. Each one answers with a 4xx naming the limit when exceeded.
#[derive(Debug, Args)]
#[command(next_help_heading = "Ingest limits")]
pub struct LimitArgs {
    /// Largest accepted request body as sent (compressed), in bytes.
    #[arg(long, env = "TALLY_MAX_BODY_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest accepted request body after decompression, in bytes.
    #[arg(long, env = "TALLY_MAX_DECOMPRESSED_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_decompressed_bytes: usize,
    /// Most events accepted in one request.
    #[arg(long, env = "TALLY_MAX_EVENTS_PER_BATCH", default_value_t = 10_000)]
    pub max_events_per_batch: usize,
    /// Largest accepted single event, in bytes of JSON.
    #[arg(long, env = "TALLY_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,
    /// Most properties on one event.
    #[arg(long, env = "TALLY_MAX_PROPERTIES", default_value_t = 1000)]
    pub max_properties: usize,
    /// Deepest nesting of objects and arrays inside properties.
    #[arg(long, env = "TALLY_MAX_NESTING_DEPTH", default_value_t = 10)]
    pub max_nesting_depth: usize,
    /// Longest property key, in bytes.
    #[arg(long, env = "TALLY_MAX_KEY_LEN", default_value_t = 200)]
    pub max_key_len: usize,
    /// Longest string property value, in bytes.
    #[arg(long, env = "TALLY_MAX_STRING_VALUE_LEN", default_value_t = 64 * 1024)]
    pub max_string_value_len: usize,
    /// Longest distinct_id, in bytes.
    #[arg(long, env = "TALLY_MAX_DISTINCT_ID_LEN", default_value_t = 200)]
    pub max_distinct_id_len: usize,
    /// Longest event name, in bytes.
    #[arg(long, env = "TALLY_MAX_EVENT_NAME_LEN", default_value_t = 200)]
    pub max_event_name_len: usize,
}

/// Write-ahead log and store tuning.
#[derive(Debug, Args)]
#[command(next_help_heading = "Storage")]
pub struct StorageArgs {
    /// Size at which a write-ahead-log segment is closed and a new one started, in bytes.
    #[arg(long, global = true, env = "TALLY_WAL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_bytes: u64,
    /// Bytes waiting for fsync beyond which ingest answers 503 + Retry-After.
    #[arg(long, global = true, env = "TALLY_WAL_MAX_PENDING_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub wal_max_pending_bytes: usize,
    /// In-memory (not yet flushed to Parquet) bytes beyond which ingest answers 503 + Retry-After.
    #[arg(long, global = true, env = "TALLY_MAX_BUFFER_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_buffer_bytes: usize,
    /// How often the in-memory buffer is flushed to Parquet, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_FLUSH_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub flush_interval_ms: u64,
    /// How often background compaction looks for work, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_COMPACTION_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub compaction_interval_ms: u64,
    /// Number of small (level-0) files in a partition that triggers its compaction.
    #[arg(
        long,
        global = true,
        env = "TALLY_COMPACTION_MIN_FILES",
        default_value_t = 8
    )]
    pub compaction_min_files: usize,
    /// Nice value of the threads that flush and compact (Linux): a higher value lets
    /// ingest requests take the CPU first, so flushes and compactions do not show up
    /// in acknowledgement latency. 0 runs them at normal priority.
    #[arg(
        long,
        global = true,
        env = "TALLY_BACKGROUND_NICENESS",
        default_value_t = 10,
        value_parser = clap::value_parser!(i32).range(0..=19)
    )]
    pub background_niceness: i32,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id, public write key and secret read key.
    Create {
        /// Tenant name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Set (`key=value`) or unset (`key=`) tenant attributes such as plan, ARR, region or owner.
    Set {
        name: String,
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Replace the tenant's secret read key and print the new one.
    RotateSecret {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorKeyCommand {
    /// Create an operator key and print it (shown once).
    Create {
        /// A label saying whose key this is.
        #[arg(long, default_value = "operator")]
        label: String,
    },
    /// List the operator keys that work: id, label, creation time (never the keys).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an operator key by the id `list` shows; it stops working at once, also
    /// in a running server.
    Revoke {
        /// The key's id.
        id: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Guess from the file name: .ndjson/.jsonl/.json(.gz), .parquet, .csv(.gz).
    Auto,
    /// One JSON event per line, PostHog or Segment shape (detected per line).
    Ndjson,
    Parquet,
    Csv,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Tenant name to import into.
    #[arg(long)]
    pub tenant: String,
    /// Files to import; `.gz` files are decompressed.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
    pub format: ImportFormat,
    /// URL of the running Tally server.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Table imports: column holding the event name.
    #[arg(long, default_value = "event")]
    pub event_column: String,
    /// Table imports: column holding the distinct id.
    #[arg(long, default_value = "distinct_id")]
    pub distinct_id_column: String,
    /// Table imports: column holding the timestamp (RFC 3339 text, epoch milliseconds or a timestamp type).
    #[arg(long, default_value = "timestamp")]
    pub timestamp_column: String,
    /// Table imports: column holding the event's unique id (used for dedup). Without
    /// it, an id is derived from the row's content, so re-importing the file adds nothing.
    #[arg(long, default_value = "uuid")]
    pub uuid_column: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Total number of events to generate across all demo tenants.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Number of demo tenants (sizes are skewed; the largest holds ~14% of events).
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Days of history to generate, ending now.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Random seed; the same seed generates the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}
