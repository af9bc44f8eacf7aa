//! Logging and metrics set-up for the binary.

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Installs the global `tracing` subscriber: human-readable to stderr by default,
/// one JSON object per line with `--log-format json`.
pub fn init_logging(args: &GlobalArgs, default_filter: &str) -> anyhow::Result<()> {
    let wanted = args.log.as_deref().unwrap_or(default_filter);
    let filter =
        EnvFilter::try_new(wanted).with_context(|| format!("invalid --log filter {wanted:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

/// Installs the Prometheus recorder and returns the handle that renders `/metrics`.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    // Latency histograms get explicit buckets so Prometheus can compute quantiles
    // across instances; the defaults are summaries, which cannot be aggregated.
    let seconds_buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &seconds_buckets,
        )
        .context("configuring metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(handle)
}
