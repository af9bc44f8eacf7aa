//! The public handle: open (with recovery), append, replay, retention, shutdown.
//!
//! `Wal` owns the directory lock, the queue shared with the writer thread and the
//! segment catalogue. Group commit itself lives in [`crate::writer`], the recovery
//! policy in [`crate::recovery`].

use std::fs::{self, File, OpenOptions, TryLockError};
use std::future::Future;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::Lsn;
use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::format::{FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN};
use crate::recovery::{self, RecoveryReport};
use crate::segment::SegmentMeta;
use crate::writer::Writer;

/// Name of the lock file inside the WAL directory.
const LOCK_FILE: &str = "LOCK";
/// Replay reads segments through a buffer this large.
const REPLAY_BUFFER_BYTES: usize = 1024 * 1024;

pub(crate) struct PendingAppend {
    pub lsn: Lsn,
    pub payload: Vec<u8>,
    pub done: oneshot::Sender<Result<Lsn>>,
}

pub(crate) struct Queue {
    pub appends: Vec<PendingAppend>,
    /// The LSN the next append gets. Assigned under this lock, so queue order is
    /// LSN order.
    pub next_lsn: Lsn,
    /// Framed bytes queued or being written but not yet synced.
    pub pending_bytes: usize,
    pub stop_reason: Option<Arc<str>>,
    pub shutting_down: bool,
}

pub(crate) struct Shared {
    pub config: WalConfig,
    pub queue: Mutex<Queue>,
    pub work_ready: Condvar,
    pub segments: Mutex<Vec<SegmentMeta>>,
    /// The highest LSN known durable.
    pub durable_lsn: AtomicU64,
    pub stopped: AtomicBool,
}

impl Shared {
    /// Stops the log for good: every queued append and `failed` fails with
    /// `Stopped`, and so does every later append.
    pub(crate) fn stop(&self, reason: Arc<str>, mut failed: Vec<PendingAppend>) {
        let reason = {
            let mut queue = self.queue.lock();
            let reason = queue.stop_reason.get_or_insert(reason).clone();
            self.stopped.store(true, Ordering::Release);
            failed.append(&mut queue.appends);
            queue.pending_bytes = 0;
            metrics::gauge!("tally_wal_pending_bytes").set(0.0);
            reason
        };
        for append in failed {
            let _ = append.done.send(Err(Error::Stopped {
                reason: reason.clone(),
            }));
        }
    }
}

/// An embedded, segmented write-ahead log of opaque records with group commit.
///
/// Dropping it behaves like [`Wal::shutdown`]: queued appends are written and
/// synced, then the writer thread is joined.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// Held (locked) for as long as the log is open.
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.config.dir)
            .field("last_lsn", &self.last_lsn())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir`, recovers it and starts
    /// the writer thread. New appends continue after the last kept LSN, in a fresh
    /// segment.
    pub fn open(config: WalConfig) -> Result<(Wal, RecoveryReport)> {
        config.validate()?;
        create_dir_durably(&config.dir)?;
        let lock = lock_dir(&config.dir)?;
        describe_metrics();
        let recovered = recovery::recover(&config)?;
        let active_path = recovered.report.active_segment.clone();
        let next_lsn = recovered.next_lsn;
        metrics::gauge!("tally_wal_segments").set(recovered.segments.len() as f64);
        metrics::gauge!("tally_wal_pending_bytes").set(0.0);
        let shared = Arc::new(Shared {
            config,
            queue: Mutex::new(Queue {
                appends: Vec::new(),
                next_lsn,
                pending_bytes: 0,
                stop_reason: None,
                shutting_down: false,
            }),
            work_ready: Condvar::new(),
            segments: Mutex::new(recovered.segments),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            stopped: AtomicBool::new(false),
        });
        let writer = Writer::new(
            Arc::clone(&shared),
            recovered.active_file,
            active_path,
            next_lsn,
            recovered.active_len,
        );
        let handle = thread::Builder::new()
            .name("tally-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("spawn writer thread for", &shared.config.dir, e))?;
        let wal = Wal {
            shared,
            writer: Some(handle),
            _lock: lock,
        };
        Ok((wal, recovered.report))
    }

    /// Queues `payload` and returns at once. The returned future resolves to the
    /// record's LSN once it is durable (written and `fdatasync`ed), or to
    /// `Err(Stopped)` if the writer failed first; it never reports success for a
    /// record that was not synced.
    ///
    /// Fails immediately with `RecordTooLarge`, `Backpressure` (too many unsynced
    /// bytes queued; nothing was queued, retry later) or `Stopped`.
    pub fn append(&self, payload: Vec<u8>) -> Result<AppendFuture> {
        let limit = self.shared.config.max_record_bytes;
        if payload.len() > limit {
            return Err(Error::RecordTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let frame_bytes = FRAME_HEADER_LEN + payload.len();
        let (done, receiver) = oneshot::channel();
        let lsn = {
            let mut queue = self.shared.queue.lock();
            if let Some(reason) = &queue.stop_reason {
                return Err(Error::Stopped {
                    reason: reason.clone(),
                });
            }
            let max_pending = self.shared.config.max_pending_bytes;
            if queue.pending_bytes.saturating_add(frame_bytes) > max_pending {
                return Err(Error::Backpressure {
                    pending: queue.pending_bytes,
                    limit: max_pending,
                });
            }
            let lsn = queue.next_lsn;
            queue.next_lsn = lsn
                .checked_add(1)
                .ok_or(Error::LsnExhausted { last: lsn })?;
            queue.pending_bytes += frame_bytes;
            metrics::gauge!("tally_wal_pending_bytes").set(queue.pending_bytes as f64);
            queue.appends.push(PendingAppend { lsn, payload, done });
            lsn
        };
        self.shared.work_ready.notify_one();
        Ok(AppendFuture { lsn, receiver })
    }

    /// Calls `f` with every kept record whose LSN is greater than `after`, in LSN
    /// order, and returns how many it passed. Sees the records that were durable
    /// when it started; appends may continue meanwhile. Records dropped by recovery
    /// are skipped; a segment that no longer matches what was verified fails with
    /// `Corrupt`. The first error of `f` ends the replay and is returned as is; the
    /// log's own errors are converted into the caller's error type.
    pub fn replay<E, F>(&self, after: Lsn, mut f: F) -> Result<u64, E>
    where
        E: From<Error>,
        F: FnMut(Lsn, &[u8]) -> Result<(), E>,
    {
        // Open the files while holding the catalogue, so retention cannot delete one
        // between the snapshot and the open (an open file stays readable).
        let snapshot: Vec<(SegmentMeta, File)> = {
            let segments = self.shared.segments.lock();
            let mut snapshot = Vec::new();
            for meta in segments.iter() {
                if meta.last_lsn.is_some_and(|last| last > after) {
                    let file = File::open(&meta.path)
                        .map_err(|e| Error::io("open segment for replay", &meta.path, e))?;
                    snapshot.push((meta.clone(), file));
                }
            }
            snapshot
        };
        let mut replayed = 0;
        let mut previous: Option<Lsn> = None;
        let mut payload = Vec::new();
        for (meta, file) in snapshot {
            replayed += replay_segment(&meta, file, after, &mut previous, &mut payload, &mut f)?;
        }
        Ok(replayed)
    }

    /// Deletes the oldest segments all of whose records have an LSN below `lsn`
    /// (typically: everything the store has made durable). Only a prefix of the log
    /// is ever deleted, and never the segment being written. Returns how many
    /// segment files were deleted.
    pub fn remove_segments_before(&self, lsn: Lsn) -> Result<usize> {
        let doomed: Vec<SegmentMeta> = {
            let mut segments = self.shared.segments.lock();
            let removable = segments
                .iter()
                .take_while(|m| !m.active && m.last_lsn.is_none_or(|last| last < lsn))
                .count();
            let doomed = segments.drain(..removable).collect();
            metrics::gauge!("tally_wal_segments").set(segments.len() as f64);
            doomed
        };
        for meta in &doomed {
            match fs::remove_file(&meta.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove segment", &meta.path, e)),
            }
            tracing::debug!(segment = %meta.path.display(), last_lsn = meta.last_lsn, "WAL segment removed");
        }
        if !doomed.is_empty() {
            File::open(&self.shared.config.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync directory", &self.shared.config.dir, e))?;
        }
        Ok(doomed.len())
    }

    /// The highest LSN known durable (0 for an empty, never-written log).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Framed bytes queued or being written but not yet synced.
    pub fn pending_bytes(&self) -> usize {
        self.shared.queue.lock().pending_bytes
    }

    /// Whether a write or sync failure stopped the writer.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Why the writer stopped, if it did.
    pub fn stop_reason(&self) -> Option<Arc<str>> {
        self.shared.queue.lock().stop_reason.clone()
    }

    /// Number of segment files in the log (the active one included).
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().len()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// Writes and syncs everything queued, then joins the writer thread. Fails with
    /// `Stopped` if the writer had stopped (then not everything queued is durable).
    pub fn shutdown(mut self) -> Result<()> {
        self.join_writer();
        match self.stop_reason() {
            Some(reason) => Err(Error::Stopped { reason }),
            None => Ok(()),
        }
    }

    fn join_writer(&mut self) {
        let Some(handle) = self.writer.take() else {
            return;
        };
        self.shared.queue.lock().shutting_down = true;
        self.shared.work_ready.notify_all();
        if handle.join().is_err() {
            tracing::error!(dir = %self.shared.config.dir.display(), "WAL writer thread panicked");
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.join_writer();
    }
}

/// Resolves to the LSN of an appended record once it is durable.
#[derive(Debug)]
#[must_use = "an append is only durable once its future resolves"]
pub struct AppendFuture {
    lsn: Lsn,
    receiver: oneshot::Receiver<Result<Lsn>>,
}

impl AppendFuture {
    /// The LSN assigned to the record (not yet a promise of durability).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Blocks the calling thread until the append resolves. For synchronous
    /// callers; async code should `.await` instead.
    pub fn wait(self) -> Result<Lsn> {
        struct Unparker(Thread);
        impl Wake for Unparker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unparker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = self;
        loop {
            if let Poll::Ready(result) = Pin::new(&mut future).poll(&mut cx) {
                return result;
            }
            thread::park();
        }
    }
}

impl Future for AppendFuture {
    type Output = Result<Lsn>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|received| {
            received.unwrap_or_else(|_| {
                Err(Error::Stopped {
                    reason: "the WAL writer exited before completing this append".into(),
                })
            })
        })
    }
}

fn replay_segment<E, F>(
    meta: &SegmentMeta,
    file: File,
    after: Lsn,
    previous: &mut Option<Lsn>,
    payload: &mut Vec<u8>,
    f: &mut F,
) -> Result<u64, E>
where
    E: From<Error>,
    F: FnMut(Lsn, &[u8]) -> Result<(), E>,
{
    let corrupt = |offset: u64, detail: String| Error::Corrupt {
        path: meta.path.clone(),
        offset,
        detail,
    };
    let read_error = |e: io::Error| Error::io("read segment", &meta.path, e);
    let mut reader = BufReader::with_capacity(REPLAY_BUFFER_BYTES, file);
    reader
        .seek_relative(SEGMENT_HEADER_LEN as i64)
        .map_err(read_error)?;
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut skips = meta.skips.iter().peekable();
    let mut replayed = 0;
    while pos < meta.end {
        if let Some(skip) = skips.next_if(|s| s.start == pos) {
            let len = skip.end - skip.start;
            let len = i64::try_from(len).map_err(|_| corrupt(pos, "skip too long".into()))?;
            reader.seek_relative(len).map_err(read_error)?;
            pos = skip.end;
            continue;
        }
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        if meta.end - pos < FRAME_HEADER_LEN as u64 {
            return Err(corrupt(pos, "partial frame header before the verified end".into()).into());
        }
        reader.read_exact(&mut header_bytes).map_err(read_error)?;
        let header = FrameHeader::decode(&header_bytes);
        let frame_end = pos + header.frame_len();
        if frame_end > meta.end || skips.peek().is_some_and(|s| s.start < frame_end) {
            return Err(corrupt(
                pos,
                format!("frame length {} no longer fits", header.payload_len),
            )
            .into());
        }
        payload.clear();
        payload.resize(header.payload_len as usize, 0);
        reader.read_exact(payload).map_err(read_error)?;
        if !header.matches(payload) {
            return Err(corrupt(
                pos,
                "checksum mismatch in a record that verified at open".into(),
            )
            .into());
        }
        if previous.is_some_and(|p| header.lsn <= p) {
            return Err(corrupt(pos, format!("LSN {} does not increase", header.lsn)).into());
        }
        *previous = Some(header.lsn);
        if header.lsn > after {
            f(header.lsn, payload)?;
            replayed += 1;
        }
        pos = frame_end;
    }
    Ok(replayed)
}

/// Creates `dir` if needed; a new directory's entry is synced into its parent so
/// the log does not vanish with it after a crash.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let parent: PathBuf = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", &parent, e))
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

fn describe_metrics() {
    metrics::describe_histogram!(
        "tally_wal_fsync_seconds",
        metrics::Unit::Seconds,
        "Duration of each WAL segment fdatasync"
    );
    metrics::describe_counter!(
        "tally_wal_appended_bytes_total",
        metrics::Unit::Bytes,
        "Bytes (payload plus framing) made durable in the WAL"
    );
    metrics::describe_counter!("tally_wal_records_total", "Records made durable in the WAL");
    metrics::describe_histogram!(
        "tally_wal_group_size",
        "Records made durable by one group commit (one fdatasync)"
    );
    metrics::describe_gauge!(
        "tally_wal_pending_bytes",
        metrics::Unit::Bytes,
        "Bytes queued or being written but not yet synced"
    );
    metrics::describe_gauge!("tally_wal_segments", "WAL segment files on disk");
    metrics::describe_counter!(
        "tally_wal_recovery_dropped_bytes_total",
        metrics::Unit::Bytes,
        "Bytes that WAL recovery could not keep"
    );
    metrics::describe_counter!(
        "tally_wal_writer_failures_total",
        "Write or fsync failures that stopped the WAL writer"
    );
}
