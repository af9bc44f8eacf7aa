//! Background compaction: many small files of a partition become few large ones,
//! sorted by `(event, day, distinct_id, timestamp, uuid)` (see `schema::sort_batch`)
//! and deduplicated by uuid.
//!
//! Owns the compaction policy (which partitions to merge, into which level), the
//! merge itself (a DataFusion sort that spills to disk beyond a memory budget, then a
//! streaming uuid dedup) and [`CompactionReport`]. Publishing and deleting inputs go
//! through the store's publish step, so a crash at any point loses and duplicates
//! nothing: new files are invisible until the manifest lists them, and old files are
//! deleted only after it no longer does.
//!
//! Policy, per tenant partition:
//! - `compaction_min_l0_files` or more level-0 files: merge the level-0 files into
//!   level 1;
//! - `compaction_max_l1_files` or more level-1 files, or a *cold* partition (no new
//!   file for `compaction_cold_after`) with more than one file: rewrite the whole
//!   partition into level 2, which dedups across the entire partition, unless it has
//!   more than `compaction_max_rows` rows (then only level 0 is merged).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, cast, col, lit};
use futures::StreamExt;

use crate::dedup::PartitionKey;
use crate::error::{Error, Result};
use crate::files::{LiveFile, RollingWriter};
use crate::manifest::FileMeta;
use crate::query::listing_table;
use crate::schema::{adapt_batch, columns, events_schema, uuid_at, uuid_column};
use crate::store::{EmbeddedStore, FaultPoint, Inner, blocking};

/// What one `compact_once` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub partitions: usize,
    pub input_files: usize,
    pub output_files: usize,
    pub input_rows: u64,
    pub output_rows: u64,
    pub duplicates_removed: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Partitions whose compaction failed this round (logged; their inputs stay
    /// live and they are retried next round).
    pub failed_partitions: usize,
}

#[derive(Debug)]
struct Job {
    key: PartitionKey,
    inputs: Vec<Arc<LiveFile>>,
    output_level: u8,
}

impl EmbeddedStore {
    /// Runs one round of compaction over every partition that needs it. A partition
    /// that fails is logged, counted in the report and retried next round; it does not
    /// hold up the others.
    pub async fn compact_once(&self) -> Result<CompactionReport> {
        let _publish = self.inner.publish_lock.lock().await;
        self.inner.reap_obsolete();
        let jobs = self.inner.plan_compaction(tally_core::time::now_micros());
        let mut report = CompactionReport::default();
        for job in jobs {
            let started = Instant::now();
            let inner = self.inner.clone();
            let handle = tokio::runtime::Handle::current();
            let key = job.key;
            let level = job.output_level;
            let input_files = job.inputs.len();
            tracing::info!(tenant = %key.0, level, input_files, generation = self.inner.state.read().generation, "partition compaction started");
            // The merge mixes async DataFusion streams with blocking file writes and
            // fsyncs; running it on a blocking thread keeps the runtime's workers free.
            let outcome = match blocking(move || handle.block_on(inner.run_job(job))).await {
                Ok(outcome) => outcome,
                // A simulated crash stops everything, as a real one would.
                Err(e @ Error::InjectedFault(_)) => return Err(e),
                Err(error) => {
                    tracing::warn!(tenant = %key.0, level, %error, "partition compaction failed");
                    report.failed_partitions += 1;
                    continue;
                }
            };
            let elapsed = started.elapsed();
            metrics::counter!("tally_store_compactions_total").increment(1);
            metrics::histogram!("tally_store_compaction_seconds").record(elapsed.as_secs_f64());
            if outcome.duplicates_removed > 0 {
                metrics::counter!("tally_store_duplicates_dropped_total")
                    .increment(outcome.duplicates_removed);
            }
            tracing::info!(
                tenant = %key.0,
                level,
                input_files,
                output_files = outcome.output_files,
                input_rows = outcome.input_rows,
                output_rows = outcome.output_rows,
                duplicates_removed = outcome.duplicates_removed,
                elapsed_ms = elapsed.as_millis() as u64,
                "partition compacted"
            );
            report.partitions += 1;
            report.input_files += outcome.input_files;
            report.output_files += outcome.output_files;
            report.input_rows += outcome.input_rows;
            report.output_rows += outcome.output_rows;
            report.duplicates_removed += outcome.duplicates_removed;
            report.bytes_read += outcome.bytes_read;
            report.bytes_written += outcome.bytes_written;
        }
        self.inner.reap_obsolete();
        Ok(report)
    }
}

impl EmbeddedStore {
    /// Rewrites the files written before distinct ids were numbered (those without a
    /// `distinct_id_number` column), so that every published row has a number. Runs
    /// once, from `open`, on a store an older Tally wrote; each partition's old files
    /// are merged as a compaction at their highest level.
    pub(crate) async fn number_old_files(&self) -> Result<()> {
        let jobs: Vec<Job> = {
            let state = self.inner.state.read();
            state
                .live
                .iter()
                .filter_map(|(key, files)| {
                    let old: Vec<Arc<LiveFile>> = files
                        .iter()
                        .filter(|f| f.meta.distinct_id_numbers.is_none())
                        .cloned()
                        .collect();
                    let output_level = old.iter().map(|f| f.meta.level).max()?;
                    Some(Job {
                        key: *key,
                        inputs: old,
                        output_level,
                    })
                })
                .collect()
        };
        if jobs.is_empty() {
            return Ok(());
        }
        let _publish = self.inner.publish_lock.lock().await;
        let started = Instant::now();
        let partitions = jobs.len();
        tracing::info!(
            partitions,
            "numbering the distinct ids of files written by an older version"
        );
        for job in jobs {
            let inner = self.inner.clone();
            let handle = tokio::runtime::Handle::current();
            blocking(move || handle.block_on(inner.run_job(job))).await?;
        }
        self.inner.reap_obsolete();
        tracing::info!(
            partitions,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "numbered the distinct ids of older files"
        );
        Ok(())
    }
}

impl Inner {
    fn plan_compaction(&self, now: i64) -> Vec<Job> {
        let config = &self.config;
        let cold_after =
            i64::try_from(config.compaction_cold_after.as_micros()).unwrap_or(i64::MAX);
        let state = self.state.read();
        let mut jobs = Vec::new();
        for (key, files) in &state.live {
            let of_level = |level: u8| -> Vec<Arc<LiveFile>> {
                files
                    .iter()
                    .filter(|f| f.meta.level == level)
                    .cloned()
                    .collect()
            };
            let l0 = of_level(0);
            let l1_count = files.iter().filter(|f| f.meta.level == 1).count();
            let total_rows: u64 = files.iter().map(|f| f.meta.rows).sum();
            let newest = files.iter().map(|f| f.meta.created_at).max().unwrap_or(now);
            let cold = now.saturating_sub(newest) >= cold_after;
            let want_full = l1_count >= config.compaction_max_l1_files
                || (cold && files.len() > 1 && files.iter().any(|f| f.meta.level < 2));
            if want_full && total_rows <= config.compaction_max_rows {
                jobs.push(Job {
                    key: *key,
                    inputs: files.clone(),
                    output_level: 2,
                });
            } else if l0.len() >= config.compaction_min_l0_files || (cold && l0.len() >= 2) {
                jobs.push(Job {
                    key: *key,
                    inputs: l0,
                    output_level: 1,
                });
            }
        }
        jobs
    }

    async fn run_job(&self, job: Job) -> Result<CompactionReport> {
        let (tenant, partition) = job.key;
        let columns_union: BTreeSet<String> = job
            .inputs
            .iter()
            .flat_map(|f| f.meta.property_columns.iter().cloned())
            .collect();
        let schema = events_schema(&columns_union);
        let input_rows: u64 = job.inputs.iter().map(|f| f.meta.rows).sum();

        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(
                self.config.compaction_memory_bytes,
            )))
            .build_arc()?;
        // One partition: compaction runs on the single-threaded, low-priority
        // background runtime, so a second partition adds no parallelism — only a
        // second sorter competing for the same memory budget (with two, large
        // partitions failed with "Resources exhausted" in the final merge). The
        // spill reservation keeps enough memory aside for merging spilled runs.
        let mut session = SessionConfig::new().with_target_partitions(1);
        session.options_mut().execution.sort_spill_reservation_bytes =
            (self.config.compaction_memory_bytes / 8).max(16 << 20);
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        let table = listing_table(&job.inputs, schema.clone())?;
        // The order of `schema::sort_batch`, the day as `sort_key_day` computes it:
        // floor division (SQL's `/` truncates toward zero; `ts - ts mod⁺ day` is the
        // floor multiple, so events before 1970 sort the same way too).
        let micros = cast(col(columns::TIMESTAMP), DataType::Int64);
        let per_day = || lit(tally_core::time::MICROS_PER_DAY);
        let day = (micros.clone() - ((micros % per_day()) + per_day()) % per_day()) / per_day();
        let sorted = ctx.read_table(Arc::new(table))?.sort(vec![
            col(columns::EVENT).sort(true, false),
            day.sort(true, false),
            col(columns::DISTINCT_ID).sort(true, false),
            col(columns::TIMESTAMP).sort(true, false),
            col(columns::UUID).sort(true, false),
        ])?;
        let mut stream = sorted.execute_stream().await?;

        let mut writer = RollingWriter::new(
            &self.root,
            &self.config,
            tenant,
            partition,
            job.output_level,
            schema.clone(),
            self.config.target_file_rows,
        );
        let mut seen: HashSet<u128> = HashSet::with_capacity(input_rows as usize);
        let mut duplicates = 0u64;
        let merged: Result<()> = async {
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let uuids = uuid_column(&batch)?;
                let keep: BooleanArray = (0..batch.num_rows())
                    .map(|row| Some(seen.insert(uuid_at(&uuids, row))))
                    .collect();
                let kept = filter_record_batch(&batch, &keep)?;
                duplicates += (batch.num_rows() - kept.num_rows()) as u64;
                let kept = self.number_distinct_ids(tenant, adapt_batch(&kept, &schema)?)?;
                writer.write(&kept)?;
            }
            Ok(())
        }
        .await;
        let outputs: Vec<FileMeta> = match merged {
            Ok(()) => writer.finish()?,
            Err(e) => {
                writer.abandon();
                return Err(e);
            }
        };
        let report = CompactionReport {
            partitions: 1,
            input_files: job.inputs.len(),
            output_files: outputs.len(),
            input_rows,
            output_rows: outputs.iter().map(|f| f.rows).sum(),
            duplicates_removed: duplicates,
            bytes_read: job.inputs.iter().map(|f| f.meta.bytes).sum(),
            bytes_written: outputs.iter().map(|f| f.bytes).sum(),
            failed_partitions: 0,
        };
        if report.output_rows + duplicates != input_rows {
            // The manifest's row counts and the files disagree: refuse to replace
            // the inputs rather than risk losing rows.
            crate::files::remove_written(&self.root, self.config.granularity, &outputs);
            return Err(Error::unexpected(
                format!("compaction of tenant {tenant}"),
                format!(
                    "read {} rows ({} duplicates) from inputs that the manifest says hold {input_rows}",
                    report.output_rows + duplicates,
                    duplicates
                ),
            ));
        }
        self.check_fault(FaultPoint::CompactionBeforePublish)?;
        let removed: HashSet<String> = job.inputs.iter().map(|f| f.meta.id.clone()).collect();
        drop(job);
        self.publish(outputs, &removed, None, 0)?;
        self.check_fault(FaultPoint::CompactionBeforeDelete)?;
        Ok(report)
    }
}
