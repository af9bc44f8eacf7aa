//! The writer thread: group commit.
//!
//! One dedicated thread owns the active segment file. It takes every append queued
//! since its last sync as one group, writes the group with as few `write` calls as
//! the chunk size allows, `fdatasync`s once (plus the directory after creating a
//! segment), publishes the new durable state, and only then completes the waiters.
//! Appends that arrive during an fsync form the next group, so the group size grows
//! with load and the fsync cost is shared.
//!
//! A failed write or sync stops the writer for good: after a failed `fsync` the page
//! cache may have dropped the dirty pages and marked them clean ("fsyncgate"), so a
//! retry could report success for data that is not on disk. Every waiting and every
//! later append fails with `Error::Stopped`. This module does not decide what is
//! kept after a restart; recovery does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::Lsn;
use crate::error::{Error, Result};
use crate::format::{
    FRAME_HEADER_LEN, encode_frame_header, encode_segment_header, segment_file_name,
};
use crate::segment::SegmentMeta;
use crate::wal::{PendingAppend, Shared};

/// Bytes gathered before a `write` call inside a group. Bounds the copy buffer
/// without costing throughput: a few MiB per syscall is far past the point where
/// syscall overhead matters.
const WRITE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The segment the writer appends to, as the writer sees it (including bytes
/// written but not yet synced).
struct ActiveSegment {
    file: File,
    path: PathBuf,
    name_lsn: Lsn,
    /// Bytes handed to `write` so far.
    written: u64,
    first_lsn: Option<Lsn>,
    last_lsn: Option<Lsn>,
}

/// A segment's durable state after a group, to publish to the catalogue.
struct SyncedSegment {
    name_lsn: Lsn,
    path: PathBuf,
    end: u64,
    first_lsn: Option<Lsn>,
    last_lsn: Option<Lsn>,
    active: bool,
}

impl ActiveSegment {
    fn synced(&self, active: bool) -> SyncedSegment {
        SyncedSegment {
            name_lsn: self.name_lsn,
            path: self.path.clone(),
            end: self.written,
            first_lsn: self.first_lsn,
            last_lsn: self.last_lsn,
            active,
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    buffer: Vec<u8>,
    /// The emptied vector of the previous group, swapped into the queue to reuse its
    /// capacity.
    spare: Vec<PendingAppend>,
}

/// Marks the log stopped if the writer thread ends any way other than a clean
/// shutdown (a panic is a bug, but must not leave appends waiting forever).
struct StopOnExit {
    shared: Arc<Shared>,
    clean: bool,
}

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if !self.clean {
            self.shared.stop(
                "the WAL writer thread exited unexpectedly".into(),
                Vec::new(),
            );
        }
    }
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        file: File,
        path: PathBuf,
        name_lsn: Lsn,
        written: u64,
    ) -> Self {
        Writer {
            shared,
            active: ActiveSegment {
                file,
                path,
                name_lsn,
                written,
                first_lsn: None,
                last_lsn: None,
            },
            buffer: Vec::with_capacity(WRITE_CHUNK_BYTES),
            spare: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) {
        let mut guard = StopOnExit {
            shared: Arc::clone(&self.shared),
            clean: false,
        };
        while let Some(mut group) = self.next_group() {
            match self.write_group(&group) {
                Ok(synced) => {
                    self.complete(&mut group, synced);
                    self.spare = group;
                }
                Err(error) => {
                    let reason: Arc<str> = error.to_string().into();
                    tracing::error!(error = %error, "WAL write or fsync failed; the writer stops and acknowledges nothing more until a restart recovers from disk");
                    metrics::counter!("tally_wal_writer_failures_total").increment(1);
                    guard.clean = true;
                    self.shared.stop(reason, group);
                    return;
                }
            }
        }
        guard.clean = true;
    }

    /// Blocks until appends are queued (or shutdown with an empty queue: `None`).
    fn next_group(&mut self) -> Option<Vec<PendingAppend>> {
        let shared = &self.shared;
        let mut queue = shared.queue.lock();
        while queue.appends.is_empty() {
            if queue.shutting_down {
                return None;
            }
            shared.work_ready.wait(&mut queue);
        }
        let linger = shared.config.linger;
        if !linger.is_zero() {
            let deadline = Instant::now() + linger;
            while !queue.shutting_down
                && !shared
                    .work_ready
                    .wait_until(&mut queue, deadline)
                    .timed_out()
            {}
        }
        let mut group = std::mem::take(&mut self.spare);
        group.clear();
        std::mem::swap(&mut queue.appends, &mut group);
        Some(group)
    }

    /// Writes and syncs the group. Returns the durable state of every segment it
    /// touched, oldest first; the last one is the (new) active segment.
    fn write_group(&mut self, group: &[PendingAppend]) -> Result<Vec<SyncedSegment>> {
        let segment_bytes = self.shared.config.segment_bytes;
        let mut synced = Vec::new();
        let mut created_segment = false;
        self.buffer.clear();
        for append in group {
            let frame_len = (FRAME_HEADER_LEN + append.payload.len()) as u64;
            let used = self.active.written + self.buffer.len() as u64;
            // Roll before a record would overflow the segment, unless the segment
            // has no record yet: an oversized record gets a segment of its own.
            if self.active.last_lsn.is_some() && used + frame_len > segment_bytes {
                self.flush_buffer()?;
                self.sync_active()?;
                synced.push(self.active.synced(false));
                self.roll(append.lsn)?;
                created_segment = true;
            }
            self.buffer
                .extend_from_slice(&encode_frame_header(append.lsn, &append.payload));
            self.buffer.extend_from_slice(&append.payload);
            self.active.first_lsn.get_or_insert(append.lsn);
            self.active.last_lsn = Some(append.lsn);
            if self.buffer.len() >= WRITE_CHUNK_BYTES {
                self.flush_buffer()?;
            }
        }
        self.flush_buffer()?;
        self.sync_active()?;
        if created_segment {
            // The new file's directory entry must be durable before its records are
            // acknowledged, or a crash could lose the whole file.
            sync_dir(&self.shared, &self.shared.config.dir)?;
        }
        synced.push(self.active.synced(true));
        if self.buffer.capacity() > 2 * WRITE_CHUNK_BYTES {
            // One huge record grew it; do not keep that much idle memory.
            self.buffer = Vec::with_capacity(WRITE_CHUNK_BYTES);
        }
        Ok(synced)
    }

    fn flush_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let path = &self.active.path;
        if let Some(faults) = &self.shared.config.faults {
            faults
                .before_write(path)
                .map_err(|e| Error::io("write segment", path, e))?;
        }
        self.active
            .file
            .write_all(&self.buffer)
            .map_err(|e| Error::io("write segment", path, e))?;
        self.active.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        let path = &self.active.path;
        if let Some(faults) = &self.shared.config.faults {
            faults
                .before_sync(path)
                .map_err(|e| Error::io("fdatasync segment", path, e))?;
        }
        let started = Instant::now();
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io("fdatasync segment", path, e))?;
        metrics::histogram!("tally_wal_fsync_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Starts a new segment whose first record will be `first_lsn`. Its header goes
    /// into the buffer, so it is written together with the records.
    fn roll(&mut self, first_lsn: Lsn) -> Result<()> {
        let path = self.shared.config.dir.join(segment_file_name(first_lsn));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        tracing::info!(segment = %path.display(), first_lsn, "WAL rolled to a new segment");
        self.active = ActiveSegment {
            file,
            path,
            name_lsn: first_lsn,
            written: 0,
            first_lsn: None,
            last_lsn: None,
        };
        self.buffer
            .extend_from_slice(&encode_segment_header(first_lsn));
        Ok(())
    }

    fn complete(&mut self, group: &mut Vec<PendingAppend>, synced: Vec<SyncedSegment>) {
        let records = group.len();
        let frame_bytes: usize = group
            .iter()
            .map(|a| FRAME_HEADER_LEN + a.payload.len())
            .sum();
        let last_lsn = group.last().map(|a| a.lsn);
        self.shared.publish(synced);
        if let Some(lsn) = last_lsn {
            self.shared.durable_lsn.store(lsn, Ordering::Release);
        }
        {
            let mut queue = self.shared.queue.lock();
            queue.pending_bytes = queue.pending_bytes.saturating_sub(frame_bytes);
            metrics::gauge!("tally_wal_pending_bytes").set(queue.pending_bytes as f64);
        }
        metrics::counter!("tally_wal_records_total").increment(records as u64);
        metrics::counter!("tally_wal_appended_bytes_total").increment(frame_bytes as u64);
        metrics::histogram!("tally_wal_group_size").record(records as f64);
        for append in group.drain(..) {
            // A dropped future just means nobody waits for the answer any more.
            let _ = append.done.send(Ok(append.lsn));
        }
    }
}

fn sync_dir(shared: &Shared, dir: &Path) -> Result<()> {
    if let Some(faults) = &shared.config.faults {
        faults
            .before_sync(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

impl Shared {
    /// Records what a group made durable in the catalogue that replay and retention
    /// read.
    fn publish(&self, synced: Vec<SyncedSegment>) {
        let mut segments = self.segments.lock();
        for state in synced {
            match segments
                .iter_mut()
                .rev()
                .find(|m| m.name_lsn == state.name_lsn)
            {
                Some(meta) => {
                    meta.end = state.end;
                    meta.first_lsn = state.first_lsn;
                    meta.last_lsn = state.last_lsn;
                    meta.active = state.active;
                }
                None => segments.push(SegmentMeta {
                    name_lsn: state.name_lsn,
                    path: state.path,
                    end: state.end,
                    first_lsn: state.first_lsn,
                    last_lsn: state.last_lsn,
                    skips: Vec::new(),
                    active: state.active,
                }),
            }
        }
        metrics::gauge!("tally_wal_segments").set(segments.len() as f64);
    }
}
