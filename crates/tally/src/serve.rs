//! `tally serve`: the single-binary server.
//!
//! Wires the single-machine implementations together — SQLite metadata, the embedded
//! store, the local WAL pipeline — behind the traits the ingest API depends on, adds
//! the operational endpoints and the GraphQL query API (`/graphql`, with the query
//! engine's limits from the command line), and shuts down gracefully on SIGTERM/SIGINT
//! (stop accepting, finish in-flight requests, flush, then exit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tally_core::{EventSink, TenantDirectory};
use tally_ingest::{Cidr, IngestConfig, IngestState, Limits};
use tally_meta::{CachedMeta, MetaStore, PersonStore, SqliteMeta};
use tally_pipeline::{LocalPipeline, PipelineConfig};
use tally_store::{EmbeddedStore, StoreConfig};
use tally_wal::WalConfig;

use crate::cli::{GlobalArgs, LimitArgs, QueryLimitArgs, ServeArgs, StorageArgs};
use crate::datadir::DataDir;

/// The embedded components of one data directory, opened together.
pub struct Engine {
    pub meta: Arc<SqliteMeta>,
    pub store: Arc<EmbeddedStore>,
    pub pipeline: LocalPipeline,
}

impl Engine {
    /// Opens the metadata database, the store and the WAL (replaying it), holding the
    /// data directory's writer lock for as long as `_lock` lives.
    pub async fn open(dir: &DataDir, storage: &StorageArgs) -> anyhow::Result<Engine> {
        let meta = Arc::new(SqliteMeta::open(&dir.meta_db()).await.with_context(|| {
            format!("opening the metadata database {}", dir.meta_db().display())
        })?);
        let store = EmbeddedStore::open(store_config(dir, storage))
            .await
            .context("opening the columnar store")?;
        let persons: Arc<dyn PersonStore> = meta.clone();
        let (pipeline, report) =
            LocalPipeline::open(pipeline_config(dir, storage), store.clone(), persons)
                .await
                .context("replaying the write-ahead log")?;
        tracing::info!(
            replayed_records = report.replayed_records,
            replayed_events = report.replayed_events,
            store_durable_lsn = report.store_durable_lsn,
            identity_applied_lsn = report.identity_applied_lsn,
            wal = %report.wal,
            "Storage recovered."
        );
        Ok(Engine {
            meta,
            store,
            pipeline,
        })
    }
}

pub fn store_config(dir: &DataDir, storage: &StorageArgs) -> StoreConfig {
    let mut config = StoreConfig::new(dir.store());
    config.flush_interval = Duration::from_millis(storage.flush_interval_ms);
    config.compaction_interval = Duration::from_millis(storage.compaction_interval_ms);
    config.compaction_min_l0_files = storage.compaction_min_files;
    config
}

fn pipeline_config(dir: &DataDir, storage: &StorageArgs) -> PipelineConfig {
    let mut wal = WalConfig::new(dir.wal());
    wal.segment_bytes = storage.wal_segment_bytes;
    wal.max_pending_bytes = storage.wal_max_pending_bytes;
    PipelineConfig {
        wal,
        max_buffer_bytes: storage.max_buffer_bytes,
        flush_interval: Duration::from_millis(storage.flush_interval_ms),
        flush_bytes: storage.max_buffer_bytes / 4,
        compaction_interval: Duration::from_millis(storage.compaction_interval_ms),
        identity_interval: Duration::from_millis(200),
        background_niceness: storage.background_niceness,
    }
}

fn ingest_config(args: &ServeArgs) -> anyhow::Result<IngestConfig> {
    let trusted_proxies = args
        .trusted_proxies
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<Cidr>()
                .with_context(|| format!("invalid --trusted-proxies entry {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(IngestConfig {
        limits: limits(&args.limits),
        trusted_proxies,
        geoip_db: args.geoip_db.clone(),
        ..IngestConfig::default()
    })
}

fn limits(l: &LimitArgs) -> Limits {
    Limits {
        max_body_bytes: l.max_body_bytes,
        max_decompressed_bytes: l.max_decompressed_bytes,
        max_events_per_batch: l.max_events_per_batch,
        max_event_bytes: l.max_event_bytes,
        max_properties: l.max_properties,
        max_nesting_depth: l.max_nesting_depth,
        max_key_len: l.max_key_len,
        max_string_value_len: l.max_string_value_len,
        max_distinct_id_len: l.max_distinct_id_len,
        max_event_name_len: l.max_event_name_len,
    }
}

/// The GraphQL query API over the data directory's store and metadata, with the
/// query engine's limits from the command line.
fn query_api(engine: &Engine, args: &QueryLimitArgs) -> anyhow::Result<tally_api::Api> {
    let identities: Arc<dyn tally_engine::IdentitySource> = engine.meta.clone();
    let query_engine = tally_engine::Engine::new(
        engine.store.clone(),
        identities,
        tally_engine::EngineConfig {
            memory_limit_bytes: args.query_memory_limit_bytes,
            query_timeout: Duration::from_secs(args.query_timeout_secs),
            target_partitions: args.query_partitions.max(1),
            ..tally_engine::EngineConfig::default()
        },
    );
    let meta: Arc<dyn MetaStore> = engine.meta.clone();
    let runner = Arc::new(tally_api::ConcurrencyLimit::new(
        Arc::new(tally_api::EngineRunner::new(Arc::new(query_engine))),
        args.max_concurrent_queries,
        Duration::from_secs(args.query_timeout_secs),
    ));
    tally_api::Api::new(
        meta,
        runner,
        tally_api::ApiConfig {
            max_depth: args.graphql_max_depth,
            max_complexity: args.graphql_max_complexity,
            max_queries_per_request: args.graphql_max_queries,
        },
    )
    .context("building the GraphQL API")
}

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    pipeline: LocalPipeline,
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&global.data_dir)?;
    let _lock = dir.lock_writer()?;
    let metrics = crate::telemetry::install_metrics()?;
    let ingest = ingest_config(&args)?;

    let engine = Engine::open(&dir, &global.storage).await?;
    if args.demo {
        crate::demo::ensure_demo(&engine, args.demo_events).await?;
    }
    let background = engine.pipeline.spawn_background();

    let meta_store: Arc<dyn MetaStore> = engine.meta.clone();
    let directory: Arc<dyn TenantDirectory> = Arc::new(
        CachedMeta::new(meta_store)
            .await
            .context("loading tenant keys")?,
    );
    let sink: Arc<dyn EventSink> = Arc::new(engine.pipeline.clone());
    let state = Arc::new(IngestState::new(sink, directory, ingest).context("configuring ingest")?);

    let query_api = query_api(&engine, &args.query)?;

    let ops = OpsState {
        metrics,
        pipeline: engine.pipeline.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(ops)
        .merge(tally_ingest::router(state))
        .merge(query_api.router());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, data_dir = %dir.root.display(), "Tally is listening.");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")?;

    tracing::info!("Shutting down: flushing buffered events.");
    engine
        .pipeline
        .shutdown(background)
        .await
        .context("flushing on shutdown")?;
    engine.meta.close().await;
    tracing::info!("Stopped.");
    Ok(())
}

async fn readyz(State(ops): State<OpsState>) -> impl IntoResponse {
    if ops.pipeline.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the write-ahead log writer has stopped; see the server log",
        )
    }
}

async fn render_metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    ops.metrics.render()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
