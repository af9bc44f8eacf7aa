//! Writing and reading the store's Parquet files.
//!
//! Owns the Parquet writer settings, the durable write of one data file (temporary
//! name, fsync, rename, fsync directory), the per-file statistics recorded in the
//! manifest, and the narrow reads the dedup index needs (uuid and received_at columns
//! only). It does not decide which files to write or publish them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use tally_core::TenantId;

use crate::config::{Codec, PartitionGranularity, PartitionStart, StoreConfig};
use crate::error::{Error, Result};
use crate::manifest::{FileMeta, create_dir_durable, partition_dir, rename_durable, tmp_path};
use crate::schema::{columns, property_columns_of, uuid_at, uuid_column};

/// A live file: its manifest entry and absolute path. Shared by `Arc` between the
/// store's live set and query snapshots; the store deletes a file it no longer lists
/// only once no snapshot holds it (see `State::reap_obsolete`).
#[derive(Debug)]
pub struct LiveFile {
    pub meta: FileMeta,
    pub path: PathBuf,
}

pub(crate) fn writer_properties(config: &StoreConfig) -> WriterProperties {
    let compression = match config.codec {
        Codec::Zstd(level) => Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default()),
        Codec::Lz4 => Compression::LZ4_RAW,
        Codec::Uncompressed => Compression::UNCOMPRESSED,
    };
    // Files are sorted by `(event, day, distinct_id, timestamp, uuid)` (see
    // `schema::sort_batch`); the day is computed, so only the event column (index 1
    // in `schema::fixed_fields`) can be declared as the sorted prefix.
    let sorting = vec![SortingColumn {
        column_idx: 1,
        descending: false,
        nulls_first: false,
    }];
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(compression)
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)))
        // Page-level min/max lets DataFusion skip pages of a sorted file, not just row
        // groups: with rows ordered by event and day, a question about a few events
        // over a few days reads only their pages.
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        // Dictionary encoding is on by default and pays for event names, property
        // values and distinct_ids alike; uuids are random, so a dictionary for them is
        // pure overhead.
        .set_column_dictionary_enabled(ColumnPath::from(columns::UUID), false)
        .set_column_dictionary_enabled(ColumnPath::from(columns::PROPERTIES), false)
        .build()
}

/// Row count and time ranges accumulated while writing a file.
#[derive(Debug, Clone, Copy)]
struct Ranges {
    rows: u64,
    min_timestamp: i64,
    max_timestamp: i64,
    min_received_at: i64,
    max_received_at: i64,
    /// One more than the highest distinct-id number.
    distinct_id_numbers: u32,
}

impl Ranges {
    fn new() -> Self {
        Ranges {
            rows: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            min_received_at: i64::MAX,
            max_received_at: i64::MIN,
            distinct_id_numbers: 0,
        }
    }

    fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        fn min_max(batch: &RecordBatch, name: &str) -> Result<Option<(i64, i64)>> {
            let array = batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| Error::unexpected("file write", format!("bad column {name}")))?;
            Ok(arrow::compute::min(array).zip(arrow::compute::max(array)))
        }
        self.rows += batch.num_rows() as u64;
        if let Some((lo, hi)) = min_max(batch, columns::TIMESTAMP)? {
            self.min_timestamp = self.min_timestamp.min(lo);
            self.max_timestamp = self.max_timestamp.max(hi);
        }
        if let Some((lo, hi)) = min_max(batch, columns::RECEIVED_AT)? {
            self.min_received_at = self.min_received_at.min(lo);
            self.max_received_at = self.max_received_at.max(hi);
        }
        // Every file the store writes numbers every row (compaction fills in rows
        // from files that predate numbering before writing them).
        let numbers = batch
            .column_by_name(columns::DISTINCT_ID_NUMBER)
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| {
                Error::unexpected("file write", "distinct_id_number is missing or has nulls")
            })?;
        if let Some(max) = arrow::compute::max(numbers) {
            self.distinct_id_numbers = self.distinct_id_numbers.max(max + 1);
        }
        Ok(())
    }
}

/// Writes one data file of a tenant's partition, durably, and returns its manifest
/// entry. The file is invisible until the caller publishes a manifest listing it.
pub(crate) struct FileWriter {
    writer: ArrowWriter<File>,
    meta: FileMeta,
    tmp: PathBuf,
    path: PathBuf,
    ranges: Ranges,
}

impl FileWriter {
    pub(crate) fn create(
        root: &Path,
        config: &StoreConfig,
        tenant: TenantId,
        partition: PartitionStart,
        level: u8,
        schema: SchemaRef,
    ) -> Result<Self> {
        let granularity = config.granularity;
        create_dir_durable(root, &partition_dir(root, granularity, tenant, partition))?;
        let meta = FileMeta {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant,
            partition,
            level,
            rows: 0,
            bytes: 0,
            min_timestamp: 0,
            max_timestamp: 0,
            min_received_at: 0,
            max_received_at: 0,
            property_columns: property_columns_of(&schema),
            created_at: tally_core::time::now_micros(),
            distinct_id_numbers: None,
        };
        let path = root.join(meta.relative_path(granularity));
        let tmp = tmp_path(&path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let writer = ArrowWriter::try_new(file, schema, Some(writer_properties(config)))?;
        Ok(FileWriter {
            writer,
            meta,
            tmp,
            path,
            ranges: Ranges::new(),
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.ranges.observe(batch)?;
        self.writer.write(batch)?;
        Ok(())
    }

    pub(crate) fn rows(&self) -> u64 {
        self.ranges.rows
    }

    /// Closes, fsyncs and renames the file into place.
    pub(crate) fn finish(self) -> Result<FileMeta> {
        let FileWriter {
            writer,
            mut meta,
            tmp,
            path,
            ranges,
        } = self;
        let file = writer.into_inner()?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("stat", &tmp, e))?
            .len();
        drop(file);
        rename_durable(&tmp, &path)?;
        meta.rows = ranges.rows;
        meta.bytes = bytes;
        meta.min_timestamp = ranges.min_timestamp;
        meta.max_timestamp = ranges.max_timestamp;
        meta.min_received_at = ranges.min_received_at;
        meta.max_received_at = ranges.max_received_at;
        meta.distinct_id_numbers = Some(ranges.distinct_id_numbers);
        Ok(meta)
    }

    /// Gives up on the file, removing the temporary (best effort; `open` removes any
    /// leftover).
    pub(crate) fn abandon(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes sorted batches of one tenant partition into consecutive files of at most
/// `max_rows` rows each, so a globally sorted input gives files with disjoint
/// `distinct_id` ranges.
pub(crate) struct RollingWriter<'a> {
    root: &'a Path,
    config: &'a StoreConfig,
    tenant: TenantId,
    partition: PartitionStart,
    level: u8,
    schema: SchemaRef,
    max_rows: usize,
    current: Option<FileWriter>,
    written: Vec<FileMeta>,
}

impl<'a> RollingWriter<'a> {
    pub(crate) fn new(
        root: &'a Path,
        config: &'a StoreConfig,
        tenant: TenantId,
        partition: PartitionStart,
        level: u8,
        schema: SchemaRef,
        max_rows: usize,
    ) -> Self {
        RollingWriter {
            root,
            config,
            tenant,
            partition,
            level,
            schema,
            max_rows: max_rows.max(1),
            current: None,
            written: Vec::new(),
        }
    }

    /// Writes a batch that has exactly the writer's schema.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let writer = match self.current.as_mut() {
                Some(w) => w,
                None => self.current.insert(FileWriter::create(
                    self.root,
                    self.config,
                    self.tenant,
                    self.partition,
                    self.level,
                    self.schema.clone(),
                )?),
            };
            let room = self.max_rows.saturating_sub(writer.rows() as usize).max(1);
            let take = room.min(batch.num_rows() - offset);
            writer.write(&batch.slice(offset, take))?;
            offset += take;
            if writer.rows() as usize >= self.max_rows
                && let Some(w) = self.current.take()
            {
                self.written.push(w.finish()?);
            }
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<FileMeta>> {
        if let Some(w) = self.current.take() {
            self.written.push(w.finish()?);
        }
        Ok(std::mem::take(&mut self.written))
    }

    /// Removes everything written so far (the caller will not publish it).
    pub(crate) fn abandon(mut self) {
        if let Some(w) = self.current.take() {
            w.abandon();
        }
        remove_written(self.root, self.config.granularity, &self.written);
    }
}

/// Writes `batches` (sorted, of `schema`) with a [`RollingWriter`]; on error nothing
/// written is left behind.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_files(
    root: &Path,
    config: &StoreConfig,
    tenant: TenantId,
    partition: PartitionStart,
    level: u8,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_rows: usize,
) -> Result<Vec<FileMeta>> {
    let mut writer = RollingWriter::new(
        root,
        config,
        tenant,
        partition,
        level,
        schema.clone(),
        max_rows,
    );
    for batch in batches {
        if let Err(e) = writer.write(batch) {
            writer.abandon();
            return Err(e);
        }
    }
    writer.finish()
}

/// Best-effort removal of files that were written but will not be published.
pub(crate) fn remove_written(root: &Path, granularity: PartitionGranularity, files: &[FileMeta]) {
    for f in files {
        let _ = std::fs::remove_file(root.join(f.relative_path(granularity)));
    }
}

/// Reads the `uuid` and `received_at` columns of a file.
pub(crate) fn read_uuids(path: &Path, mut each: impl FnMut(u128, i64)) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.parquet_schema();
    let indices: Vec<usize> = [columns::UUID, columns::RECEIVED_AT]
        .iter()
        .map(|name| {
            schema
                .root_schema()
                .get_fields()
                .iter()
                .position(|f| f.name() == *name)
                .ok_or_else(|| {
                    Error::unexpected(path.display().to_string(), format!("no column {name}"))
                })
        })
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::roots(schema, indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?;
    for batch in reader {
        let batch = batch?;
        let uuids = uuid_column(&batch)?;
        let received = batch
            .column_by_name(columns::RECEIVED_AT)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| Error::unexpected(path.display().to_string(), "bad received_at"))?;
        for row in 0..batch.num_rows() {
            each(uuid_at(&uuids, row), received.value(row));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PropertyCatalog, events_to_batch};
    use tally_core::{Event, Properties};

    #[test]
    fn writes_rolls_and_reads_back_uuids() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let events: Vec<Event> = (0..10u128)
            .map(|n| Event {
                uuid: uuid::Uuid::from_u128(n),
                event: "e".into(),
                distinct_id: "d".into(),
                timestamp: n as i64,
                received_at: 100 + n as i64,
                properties: Properties::new(),
                person_set: Properties::new(),
                person_set_once: Properties::new(),
            })
            .collect();
        let batch = events_to_batch(
            events.iter().map(|e| (e, None, 0)),
            &PropertyCatalog::default(),
        )
        .unwrap();
        let metas = write_files(
            dir.path(),
            &config,
            TenantId(1),
            PartitionStart(0),
            0,
            &batch.schema(),
            &[batch],
            4,
        )
        .unwrap();
        assert_eq!(
            metas.iter().map(|m| m.rows).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!((metas[1].min_timestamp, metas[1].max_timestamp), (4, 7));
        assert_eq!(
            (metas[2].min_received_at, metas[2].max_received_at),
            (108, 109)
        );
        let mut seen = Vec::new();
        for m in &metas {
            let path = dir.path().join(m.relative_path(config.granularity));
            read_uuids(&path, |u, r| seen.push((u, r))).unwrap();
            assert!(!tmp_path(&path).exists());
        }
        assert_eq!(
            seen,
            (0..10).map(|n| (n, 100 + n as i64)).collect::<Vec<_>>()
        );
    }
}
