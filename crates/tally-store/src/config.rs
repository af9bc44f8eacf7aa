//! Store configuration and the time-partitioning rule.
//!
//! Owns [`StoreConfig`] (every tunable with a production default) and
//! [`PartitionGranularity`], which maps an event timestamp to the partition directory
//! it lives in. It does not own how partitions are laid out on disk beyond their
//! directory name (see `layout`).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Parquet compression codec for files the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// zstd at the given level (1 is the fast end; see docs/STORAGE.md for measurements).
    Zstd(i32),
    /// LZ4 (raw block format), fastest to decode, larger files.
    Lz4,
    /// No compression (tests and benchmarks only).
    Uncompressed,
}

/// How event time is cut into partitions (one directory per tenant and period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionGranularity {
    Day,
    /// ISO weeks starting Monday.
    Week,
    /// Calendar months (the default; docs/STORAGE.md explains why).
    Month,
}

/// A partition: the start of its period in UTC microseconds. Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionStart(pub i64);

impl PartitionGranularity {
    /// The partition that holds an event with this timestamp.
    pub fn partition_of(self, timestamp_micros: i64) -> PartitionStart {
        let date = date_of(timestamp_micros);
        let start = match self {
            PartitionGranularity::Day => date,
            PartitionGranularity::Week => date
                .checked_sub_days(chrono::Days::new(u64::from(
                    date.weekday().num_days_from_monday(),
                )))
                .unwrap_or(date),
            PartitionGranularity::Month => date.with_day(1).unwrap_or(date),
        };
        PartitionStart(micros_of(start))
    }

    /// The first microsecond after the partition (exclusive end).
    pub fn partition_end(self, start: PartitionStart) -> i64 {
        let date = date_of(start.0);
        let end = match self {
            PartitionGranularity::Day => date.checked_add_days(chrono::Days::new(1)),
            PartitionGranularity::Week => date.checked_add_days(chrono::Days::new(7)),
            PartitionGranularity::Month => date.checked_add_months(chrono::Months::new(1)),
        };
        end.map(micros_of).unwrap_or(i64::MAX)
    }

    /// The partition's directory name, e.g. `month=2026-11`, `week=2026-11-23`,
    /// `day=2026-11-27`. Sorting the names sorts the partitions by time.
    pub fn dir_name(self, start: PartitionStart) -> String {
        let date = date_of(start.0);
        match self {
            PartitionGranularity::Day => format!("day={}", date.format("%Y-%m-%d")),
            PartitionGranularity::Week => format!("week={}", date.format("%Y-%m-%d")),
            PartitionGranularity::Month => format!("month={}", date.format("%Y-%m")),
        }
    }
}

// chrono represents a narrower range than i64 microseconds; timestamps outside it are
// clamped into the first or last representable day rather than rejected, because a
// single absurd timestamp must not wedge the ingest pipeline on replay.
fn date_of(micros: i64) -> NaiveDate {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(dt) => dt.date_naive(),
        None if micros < 0 => NaiveDate::MIN,
        None => NaiveDate::MAX,
    }
}

fn micros_of(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map(|dt| dt.and_utc().timestamp_micros())
        .unwrap_or(
            if date < NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() {
                i64::MIN
            } else {
                i64::MAX
            },
        )
}

/// Everything the store can be tuned with. `StoreConfig::new(dir)` gives the
/// production defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory; the store owns everything below it.
    pub dir: PathBuf,
    /// Time partitioning. Fixed for the life of a data directory: opening an existing
    /// directory with a different value is a configuration error.
    pub granularity: PartitionGranularity,
    /// Flush the write buffer when it holds this many events.
    pub flush_rows: usize,
    /// Flush the write buffer when its approximate size exceeds this many bytes.
    pub flush_bytes: usize,
    /// Flush at least this often when anything is buffered (background loop).
    pub flush_interval: Duration,
    /// Exact dedup window, measured on `received_at`.
    pub dedup_window: Duration,
    /// Upper bound on entries in the recent-uuid index (about 48 bytes each). When
    /// exceeded, the oldest entries are evicted early and the exact window shrinks.
    pub dedup_max_recent: usize,
    /// Upper bound on uuids held by the per-partition sets used to dedup historic
    /// events (about 40 bytes each), least recently used partitions evicted first.
    pub dedup_max_historic: usize,
    /// Maximum property keys materialised as typed columns per tenant; later keys are
    /// kept in the JSON `properties` column only.
    pub max_materialized_keys: usize,
    /// Compact a partition's level-0 files once there are this many.
    pub compaction_min_l0_files: usize,
    /// Rewrite a whole partition (all levels, full dedup) once it has this many files
    /// of level 1 or above.
    pub compaction_max_l1_files: usize,
    /// Rewrite a whole partition that has more than one file once no file has been
    /// added to it for this long (cold partitions end up as few, large, sorted files).
    pub compaction_cold_after: Duration,
    /// A full partition rewrite is only attempted up to this many rows; larger
    /// partitions are compacted level 0 into level 1 only (bounds compaction memory).
    pub compaction_max_rows: u64,
    /// Rows per output file of compaction and bulk loads.
    pub target_file_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Memory DataFusion may use to sort during compaction before spilling to disk.
    pub compaction_memory_bytes: usize,
    /// How often the background loop runs compaction.
    pub compaction_interval: Duration,
    pub codec: Codec,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            granularity: PartitionGranularity::Month,
            flush_rows: 200_000,
            flush_bytes: 256 << 20,
            flush_interval: Duration::from_secs(10),
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_max_recent: 20_000_000,
            dedup_max_historic: 10_000_000,
            max_materialized_keys: 1_000,
            compaction_min_l0_files: 8,
            compaction_max_l1_files: 8,
            compaction_cold_after: Duration::from_secs(3600),
            compaction_max_rows: 50_000_000,
            target_file_rows: 4 << 20,
            row_group_rows: 1 << 20,
            compaction_memory_bytes: 1 << 30,
            compaction_interval: Duration::from_secs(60),
            codec: Codec::Zstd(1),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let positive = [
            ("flush_rows", self.flush_rows),
            ("flush_bytes", self.flush_bytes),
            ("compaction_min_l0_files", self.compaction_min_l0_files),
            ("compaction_max_l1_files", self.compaction_max_l1_files),
            ("target_file_rows", self.target_file_rows),
            ("row_group_rows", self.row_group_rows),
            ("compaction_memory_bytes", self.compaction_memory_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if self.compaction_min_l0_files < 2 {
            return Err(Error::Config(
                "compaction_min_l0_files must be at least 2".into(),
            ));
        }
        if let Codec::Zstd(level) = self.codec
            && !(1..=22).contains(&level)
        {
            return Err(Error::Config(format!(
                "zstd level {level} is outside 1..=22"
            )));
        }
        Ok(())
    }

    pub(crate) fn dedup_window_micros(&self) -> i64 {
        i64::try_from(self.dedup_window.as_micros()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::time::parse_timestamp_str;

    fn ts(s: &str) -> i64 {
        parse_timestamp_str(s).unwrap()
    }

    #[test]
    fn month_partitions() {
        let g = PartitionGranularity::Month;
        let p = g.partition_of(ts("2026-11-27T13:00:00Z"));
        assert_eq!(p.0, ts("2026-11-01T00:00:00Z"));
        assert_eq!(g.dir_name(p), "month=2026-11");
        assert_eq!(g.partition_end(p), ts("2026-12-01T00:00:00Z"));
        assert_eq!(g.partition_of(ts("2026-11-30T23:59:59.999999Z")), p);
        assert_ne!(g.partition_of(ts("2026-12-01T00:00:00Z")), p);
    }

    #[test]
    fn week_partitions_start_monday() {
        let g = PartitionGranularity::Week;
        let p = g.partition_of(ts("2026-11-29T23:00:00Z")); // a Sunday
        assert_eq!(g.dir_name(p), "week=2026-11-23");
        assert_eq!(g.partition_end(p), ts("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn absurd_timestamps_do_not_panic() {
        for g in [
            PartitionGranularity::Day,
            PartitionGranularity::Week,
            PartitionGranularity::Month,
        ] {
            for t in [i64::MIN, -1, 0, i64::MAX] {
                let p = g.partition_of(t);
                let _ = g.dir_name(p);
                let _ = g.partition_end(p);
            }
        }
    }
}
