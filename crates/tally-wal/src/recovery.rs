//! Recovery at open: scan every segment, verify every frame, decide what to keep, and
//! say exactly what was dropped.
//!
//! This module owns the recovery *policy* and the [`RecoveryReport`]. It does not
//! write records; it only truncates, removes or quarantines damaged tail files and
//! creates (or reuses) the segment the writer will append to.
//!
//! Policy, the same in every segment:
//! - A frame that verifies is kept, unless its LSN is not greater than the previous
//!   kept LSN (dropped: replay promises strictly increasing LSNs). A jump forward is
//!   kept and reported as an [`LsnGap`].
//! - A frame whose checksum fails is dropped alone if the scan can resynchronise:
//!   the frame's length leads exactly to the end of the file or to a frame that
//!   verifies. The checksum covers the length, so a wrong resync needs a 32-bit
//!   checksum collision. Otherwise the rest of the segment is dropped.
//! - A frame running past the end of the file (a torn write) drops the rest.
//! - A damaged header is dropped and the records after it are still scanned; an
//!   intact header of another format version refuses the open.
//!
//! The *tail* of the log (everything after the last kept record) gets physical
//! clean-up, so that the next open reports it no more: the last segment with records
//! is truncated after its last kept record, later segments without records are
//! removed when their only damage is a torn write and quarantined
//! (`<name>.corrupt`) otherwise. Damage before the tail stays on disk, is skipped by
//! replay and is reported again at every open until retention removes it. New
//! records always go to a fresh segment, never after a truncation point.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::Lsn;
use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::format::{
    FORMAT_VERSION, FrameAt, HeaderCheck, QUARANTINE_SUFFIX, SEGMENT_HEADER_LEN, TEMP_SUFFIX,
    check_segment_header, encode_segment_header, frame_at, parse_quarantined_file_name,
    parse_segment_file_name, segment_file_name,
};
use crate::segment::SegmentMeta;

/// What `Wal::open` found and did. Every byte of every segment file it scanned is
/// accounted for: `bytes == header (32 if header_ok) + kept_bytes + dropped bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Each segment scanned, in LSN order, as found (before any clean-up).
    pub segments: Vec<SegmentSummary>,
    pub records_kept: u64,
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
    /// The LSN the next append will get.
    pub next_lsn: Lsn,
    /// Every byte range that was not kept, in log order.
    pub dropped: Vec<DroppedRange>,
    /// Every place where consecutive kept LSNs are not consecutive numbers, whether
    /// or not a drop explains it.
    pub lsn_gaps: Vec<LsnGap>,
    /// Files changed on disk, in the order done.
    pub actions: Vec<RecoveryAction>,
    /// The segment new appends go to.
    pub active_segment: PathBuf,
}

impl RecoveryReport {
    /// Nothing was dropped and the kept LSNs are dense.
    pub fn is_clean(&self) -> bool {
        self.dropped.is_empty() && self.lsn_gaps.is_empty()
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.iter().map(|d| d.bytes).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub path: PathBuf,
    /// The LSN in the file name.
    pub name_lsn: Lsn,
    /// File size as found.
    pub bytes: u64,
    /// The 32-byte header verified.
    pub header_ok: bool,
    pub records_kept: u64,
    /// Bytes of kept frames (framing included).
    pub kept_bytes: u64,
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: DropReason,
    /// Which records were lost with these bytes, inferred from the kept neighbours
    /// and the following segment's name.
    pub lost: LostRecords,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The file is shorter than a segment header (a crash while creating it, or a
    /// file cut short). Reported, with zero bytes, for an empty file too.
    TornHeader,
    /// Wrong magic or header checksum. The records after it were still scanned.
    CorruptHeader,
    /// A frame header or payload runs past the end of the file: the tail of an
    /// interrupted write, or a damaged length field. The rest of the segment.
    Truncated,
    /// A frame failed its checksum and the scan resynchronised on the next frame:
    /// only this frame was dropped.
    ChecksumMismatch,
    /// A frame failed its checksum and the next frame could not be located: the rest
    /// of the segment.
    ChecksumMismatchUnresyncable,
    /// An intact frame whose LSN is not greater than the previous kept one.
    LsnNotIncreasing { lsn: Lsn, previous: Lsn },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostRecords {
    /// The range cannot have held a record the log did not keep elsewhere (a header,
    /// a duplicate LSN, or garbage between two consecutive kept LSNs).
    None,
    /// Exactly these LSNs were lost.
    Lsns { first: Lsn, last: Lsn },
    /// At the end of the log: records from `first` on, if any, were lost; how many
    /// is unknowable. After a crash these are writes that were never acknowledged.
    TailFrom { first: Lsn },
}

impl LostRecords {
    pub fn contains(&self, lsn: Lsn) -> bool {
        match *self {
            LostRecords::None => false,
            LostRecords::Lsns { first, last } => (first..=last).contains(&lsn),
            LostRecords::TailFrom { first } => lsn >= first,
        }
    }
}

/// The kept LSNs jump from `after` to `next` (`next > after + 1`): the LSNs between
/// are not in the log. For the first kept record, `after` is one less than the
/// first segment's name, where the log claims to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsnGap {
    pub after: Lsn,
    pub next: Lsn,
    /// The segment holding `next`.
    pub segment: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Bytes after the last kept record of the log were cut off.
    Truncated {
        segment: PathBuf,
        from_bytes: u64,
        to_bytes: u64,
    },
    /// A tail segment without a valid record, whose only damage was a torn write
    /// (or none), was deleted.
    Removed { segment: PathBuf },
    /// A tail segment without a single valid record was renamed for inspection.
    Quarantined { segment: PathBuf, moved_to: PathBuf },
}

/// The outcome of recovery that the writer and the catalogue start from.
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// Recovered segments with records or damage before the tail, then the active one.
    pub segments: Vec<SegmentMeta>,
    pub active_file: File,
    /// Bytes already in the active segment (its header).
    pub active_len: u64,
    pub next_lsn: Lsn,
}

/// A drop found by the scan whose lost LSNs are not yet fully known.
struct PendingDrop {
    offset: u64,
    bytes: u64,
    reason: DropReason,
    /// `None` for drops that cannot lose a record.
    lost_from: Option<Lsn>,
    /// Filled when a later kept record (or the next segment's name) bounds it.
    lost_to: Option<Option<Lsn>>,
}

struct Scan {
    path: PathBuf,
    name_lsn: Lsn,
    bytes: u64,
    header_ok: bool,
    records_kept: u64,
    kept_bytes: u64,
    first_lsn: Option<Lsn>,
    last_lsn: Option<Lsn>,
    /// Just after the last kept frame (or the header when none was kept).
    last_kept_end: u64,
    drops: Vec<PendingDrop>,
}

impl Scan {
    fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            path: self.path.clone(),
            name_lsn: self.name_lsn,
            bytes: self.bytes,
            header_ok: self.header_ok,
            records_kept: self.records_kept,
            kept_bytes: self.kept_bytes,
            first_lsn: self.first_lsn,
            last_lsn: self.last_lsn,
        }
    }

    /// Everything wrong with it looks like an interrupted write (a short header, a
    /// frame cut off by the end of the file), not like corruption.
    fn damage_is_only_torn_writes(&self) -> bool {
        self.drops
            .iter()
            .all(|d| matches!(d.reason, DropReason::TornHeader | DropReason::Truncated))
    }
}

/// Scans one segment image. `previous` is the last LSN kept in earlier segments and
/// is advanced past every record kept here. `log_start` (at least 1) is the name of
/// the first segment: the first LSN the log claims to hold.
fn scan_segment(
    path: &Path,
    name_lsn: Lsn,
    log_start: Lsn,
    data: &[u8],
    previous: &mut Option<Lsn>,
    gaps: &mut Vec<LsnGap>,
) -> Result<Scan> {
    let mut scan = Scan {
        path: path.to_path_buf(),
        name_lsn,
        bytes: data.len() as u64,
        header_ok: false,
        records_kept: 0,
        kept_bytes: 0,
        first_lsn: None,
        last_lsn: None,
        last_kept_end: (SEGMENT_HEADER_LEN as u64).min(data.len() as u64),
        drops: Vec::new(),
    };
    let Some(header) = data.first_chunk::<SEGMENT_HEADER_LEN>() else {
        // Reported even when the file is empty: a segment file exists only because
        // records were due in it, and those are gone.
        scan.drops.push(PendingDrop {
            offset: 0,
            bytes: data.len() as u64,
            reason: DropReason::TornHeader,
            lost_from: first_lost_lsn(None, *previous, name_lsn),
            lost_to: None,
        });
        return Ok(scan);
    };
    match check_segment_header(header) {
        HeaderCheck::Valid { first_lsn } => {
            scan.header_ok = true;
            if first_lsn != name_lsn {
                // Harmless for reading (records carry their own LSNs) but a sign
                // that someone renamed files.
                tracing::warn!(segment = %path.display(), header_lsn = first_lsn, name_lsn, "WAL segment header disagrees with its file name");
            }
        }
        HeaderCheck::UnsupportedVersion { version } => {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        HeaderCheck::Corrupt => scan.drops.push(PendingDrop {
            offset: 0,
            bytes: SEGMENT_HEADER_LEN as u64,
            reason: DropReason::CorruptHeader,
            lost_from: None,
            lost_to: None,
        }),
    }

    let mut pos = SEGMENT_HEADER_LEN;
    while pos < data.len() {
        let lost_from = first_lost_lsn(scan.last_lsn, *previous, name_lsn);
        let mut drop_here = |end: usize, reason: DropReason, loses: bool| {
            scan.drops.push(PendingDrop {
                offset: pos as u64,
                bytes: (end - pos) as u64,
                reason,
                lost_from: if loses { lost_from } else { None },
                lost_to: None,
            });
        };
        match frame_at(data, pos) {
            FrameAt::Valid { lsn, end } => {
                match *previous {
                    Some(prev) if lsn <= prev => {
                        drop_here(
                            end,
                            DropReason::LsnNotIncreasing {
                                lsn,
                                previous: prev,
                            },
                            false,
                        );
                    }
                    _ => {
                        // Where the log says it starts stands in for the record
                        // before the first one.
                        let after = previous.unwrap_or(log_start - 1);
                        if lsn > after + 1 {
                            gaps.push(LsnGap {
                                after,
                                next: lsn,
                                segment: path.to_path_buf(),
                            });
                        }
                        for pending in scan.drops.iter_mut().filter(|d| d.lost_to.is_none()) {
                            pending.lost_to = Some(lsn.checked_sub(1));
                        }
                        scan.records_kept += 1;
                        scan.kept_bytes += (end - pos) as u64;
                        scan.first_lsn.get_or_insert(lsn);
                        scan.last_lsn = Some(lsn);
                        scan.last_kept_end = end as u64;
                        *previous = Some(lsn);
                    }
                }
                pos = end;
            }
            FrameAt::ChecksumMismatch { end } => {
                let resyncs =
                    end == data.len() || matches!(frame_at(data, end), FrameAt::Valid { .. });
                if resyncs {
                    drop_here(end, DropReason::ChecksumMismatch, true);
                    pos = end;
                } else {
                    drop_here(data.len(), DropReason::ChecksumMismatchUnresyncable, true);
                    break;
                }
            }
            FrameAt::PastEnd => {
                drop_here(data.len(), DropReason::Truncated, true);
                break;
            }
        }
    }
    Ok(scan)
}

/// The first LSN that a record lost at the current scan position could have had:
/// after the last record kept in this segment, else after the last kept before it
/// but no lower than the segment's name.
fn first_lost_lsn(
    last_in_segment: Option<Lsn>,
    previous: Option<Lsn>,
    name_lsn: Lsn,
) -> Option<Lsn> {
    match (last_in_segment, previous) {
        (Some(last), _) => last.checked_add(1),
        (None, Some(prev)) => prev.checked_add(1).map(|next| next.max(name_lsn)),
        (None, None) => Some(name_lsn),
    }
}

fn lost_records(drop: &PendingDrop) -> LostRecords {
    match (drop.lost_from, drop.lost_to) {
        (None, _) => LostRecords::None,
        (Some(first), None) => LostRecords::TailFrom { first },
        (Some(first), Some(Some(last))) if first <= last => LostRecords::Lsns { first, last },
        (Some(_), Some(_)) => LostRecords::None,
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// `<name>.corrupt`, or `<name>.<n>.corrupt` if an earlier quarantine used that.
fn quarantine_path(segment: &Path) -> PathBuf {
    let base = segment.as_os_str().to_owned();
    let mut candidate = base.clone();
    candidate.push(QUARANTINE_SUFFIX);
    let mut n = 1u32;
    while Path::new(&candidate).exists() {
        candidate = base.clone();
        candidate.push(format!(".{n}{QUARANTINE_SUFFIX}"));
        n += 1;
    }
    PathBuf::from(candidate)
}

/// Creates a segment holding only its header, via a temporary name and a rename so
/// that a crash never leaves a partial header under a segment name. The caller
/// fsyncs the directory.
pub(crate) fn create_segment_atomically(dir: &Path, first_lsn: Lsn) -> Result<(PathBuf, File)> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&temp)
        .map_err(|e| Error::io("create segment", &temp, e))?;
    file.write_all(&encode_segment_header(first_lsn))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("write segment header", &temp, e))?;
    fs::rename(&temp, &path).map_err(|e| Error::io("rename segment into place", &temp, e))?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("open segment", &path, e))?;
    Ok((path, file))
}

/// Scans `config.dir` (which must exist) and prepares the active segment.
pub(crate) fn recover(config: &WalConfig) -> Result<Recovered> {
    let dir = &config.dir;
    let mut segment_files: Vec<(Lsn, PathBuf)> = Vec::new();
    // New LSNs must never repeat one that a file (even a quarantined one) was
    // created for.
    let mut highest_quarantined: Option<Lsn> = None;
    let mut stale_temp_files = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if let Some(lsn) = parse_segment_file_name(name) {
            segment_files.push((lsn, entry.path()));
        } else if let Some(lsn) = parse_quarantined_file_name(name) {
            highest_quarantined = highest_quarantined.max(Some(lsn));
        } else if name
            .strip_suffix(TEMP_SUFFIX)
            .and_then(parse_segment_file_name)
            .is_some()
        {
            stale_temp_files.push(entry.path());
        }
    }
    segment_files.sort();
    for temp in &stale_temp_files {
        // A crash between creating and renaming a new segment; it never held records.
        fs::remove_file(temp).map_err(|e| Error::io("remove stale temporary segment", temp, e))?;
    }

    let mut previous: Option<Lsn> = None;
    let mut lsn_gaps = Vec::new();
    let mut scans: Vec<Scan> = Vec::with_capacity(segment_files.len());
    let log_start = segment_files.first().map_or(1, |(lsn, _)| (*lsn).max(1));
    for (name_lsn, path) in &segment_files {
        let data = fs::read(path).map_err(|e| Error::io("read segment", path, e))?;
        scans.push(scan_segment(
            path,
            *name_lsn,
            log_start,
            &data,
            &mut previous,
            &mut lsn_gaps,
        )?);
    }
    // Drops at the end of a segment are bounded by the next segment's first LSN.
    for i in 0..scans.len() {
        let next_name = scans.get(i + 1).map(|s| s.name_lsn);
        for pending in scans[i].drops.iter_mut().filter(|d| d.lost_to.is_none()) {
            if let Some(next_name) = next_name {
                pending.lost_to = Some(next_name.checked_sub(1));
            }
        }
    }

    // The tail: everything after the last kept record.
    let last_with_records = scans.iter().rposition(|s| s.records_kept > 0);
    let tail_start = last_with_records.map_or(0, |i| i + 1);

    let last_kept = previous;
    let exhausted = |last: Lsn| Error::LsnExhausted { last };
    let mut next_lsn = match last_kept {
        Some(last) => last.checked_add(1).ok_or(exhausted(last))?,
        None => 1,
    };
    // Normally a no-op. A tail file's name is an LSN its writer reached (an empty
    // segment left by `remove_segments_before` carries the high-water mark this
    // way); a kept segment's name must not be taken by the new segment even if
    // someone renamed files.
    for (i, scan) in scans.iter().enumerate() {
        let floor = if i < tail_start {
            scan.name_lsn
                .checked_add(1)
                .ok_or(exhausted(scan.name_lsn))?
        } else {
            scan.name_lsn
        };
        next_lsn = next_lsn.max(floor);
    }
    next_lsn = next_lsn.max(highest_quarantined.unwrap_or(1));

    let mut dropped = Vec::new();
    for scan in &scans {
        for pending in &scan.drops {
            dropped.push(DroppedRange {
                segment: scan.path.clone(),
                offset: pending.offset,
                bytes: pending.bytes,
                reason: pending.reason,
                lost: lost_records(pending),
            });
        }
    }

    let mut actions = Vec::new();
    let mut reusable: Option<PathBuf> = None;
    for (i, scan) in scans.iter().enumerate().skip(tail_start) {
        let clean_empty = scan.header_ok && scan.bytes == SEGMENT_HEADER_LEN as u64;
        if clean_empty && i + 1 == scans.len() && scan.name_lsn == next_lsn {
            // Left by an open (or a rollover) that no record followed; trustworthy.
            reusable = Some(scan.path.clone());
        } else if scan.damage_is_only_torn_writes() {
            // Typically a crash during rollover: nothing in it was acknowledged.
            fs::remove_file(&scan.path)
                .map_err(|e| Error::io("remove empty tail segment", &scan.path, e))?;
            actions.push(RecoveryAction::Removed {
                segment: scan.path.clone(),
            });
        } else {
            let moved_to = quarantine_path(&scan.path);
            fs::rename(&scan.path, &moved_to)
                .map_err(|e| Error::io("quarantine segment", &scan.path, e))?;
            tracing::error!(segment = %scan.path.display(), moved_to = %moved_to.display(), "WAL tail segment holds no valid record; quarantined for inspection");
            actions.push(RecoveryAction::Quarantined {
                segment: scan.path.clone(),
                moved_to,
            });
        }
    }
    if let Some(index) = last_with_records {
        let scan = &scans[index];
        if scan.bytes > scan.last_kept_end {
            let file = OpenOptions::new()
                .write(true)
                .open(&scan.path)
                .map_err(|e| Error::io("open segment for truncation", &scan.path, e))?;
            file.set_len(scan.last_kept_end)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("truncate segment", &scan.path, e))?;
            actions.push(RecoveryAction::Truncated {
                segment: scan.path.clone(),
                from_bytes: scan.bytes,
                to_bytes: scan.last_kept_end,
            });
        }
    }

    let (active_path, active_file) = match reusable {
        Some(path) => {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("open segment", &path, e))?;
            (path, file)
        }
        None => create_segment_atomically(dir, next_lsn)?,
    };
    fsync_dir(dir)?;

    let mut segments: Vec<SegmentMeta> = scans[..tail_start]
        .iter()
        .enumerate()
        .map(|(i, scan)| {
            // The last segment with records was truncated after its last record.
            let end = if Some(i) == last_with_records {
                scan.last_kept_end
            } else {
                scan.bytes
            };
            SegmentMeta {
                name_lsn: scan.name_lsn,
                path: scan.path.clone(),
                end,
                first_lsn: scan.first_lsn,
                last_lsn: scan.last_lsn,
                skips: scan
                    .drops
                    .iter()
                    .map(|d| d.offset..d.offset + d.bytes)
                    .filter(|r: &Range<u64>| r.start >= SEGMENT_HEADER_LEN as u64 && r.end <= end)
                    .collect(),
                active: false,
            }
        })
        .collect();
    segments.push(SegmentMeta {
        name_lsn: next_lsn,
        path: active_path.clone(),
        end: SEGMENT_HEADER_LEN as u64,
        first_lsn: None,
        last_lsn: None,
        skips: Vec::new(),
        active: true,
    });

    let report = RecoveryReport {
        segments: scans.iter().map(Scan::summary).collect(),
        records_kept: scans.iter().map(|s| s.records_kept).sum(),
        first_lsn: scans.iter().find_map(|s| s.first_lsn),
        last_lsn: last_kept,
        next_lsn,
        dropped,
        lsn_gaps,
        actions,
        active_segment: active_path,
    };
    log_report(&report);
    Ok(Recovered {
        report,
        segments,
        active_file,
        active_len: SEGMENT_HEADER_LEN as u64,
        next_lsn,
    })
}

fn log_report(report: &RecoveryReport) {
    for drop in &report.dropped {
        // A torn tail is the expected residue of a crash: those writes were never
        // acknowledged. Anything else lost data that may have been acknowledged.
        if matches!(drop.lost, LostRecords::TailFrom { .. })
            || matches!(drop.reason, DropReason::TornHeader)
        {
            tracing::warn!(segment = %drop.segment.display(), offset = drop.offset, bytes = drop.bytes, reason = ?drop.reason, lost = ?drop.lost, "WAL recovery dropped an unfinished write at the end of the log");
        } else {
            tracing::error!(segment = %drop.segment.display(), offset = drop.offset, bytes = drop.bytes, reason = ?drop.reason, lost = ?drop.lost, "WAL recovery dropped damaged bytes");
        }
    }
    for gap in &report.lsn_gaps {
        tracing::warn!(after = gap.after, next = gap.next, segment = %gap.segment.display(), "WAL LSN gap");
    }
    let dropped_bytes = report.dropped_bytes();
    metrics::counter!("tally_wal_recovery_dropped_bytes_total").increment(dropped_bytes);
    tracing::info!(
        segments = report.segments.len(),
        records_kept = report.records_kept,
        last_lsn = report.last_lsn,
        next_lsn = report.next_lsn,
        dropped_bytes,
        lsn_gaps = report.lsn_gaps.len(),
        "WAL recovered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_frame_header;

    fn segment_image(name_lsn: Lsn, records: &[(Lsn, &[u8])]) -> Vec<u8> {
        let mut data = encode_segment_header(name_lsn).to_vec();
        for (lsn, payload) in records {
            data.extend_from_slice(&encode_frame_header(*lsn, payload));
            data.extend_from_slice(payload);
        }
        data
    }

    fn scan_one(data: &[u8], previous: Option<Lsn>) -> (Scan, Vec<LsnGap>) {
        let mut previous = previous;
        let mut gaps = Vec::new();
        let scan = scan_segment(Path::new("seg"), 1, 1, data, &mut previous, &mut gaps).unwrap();
        (scan, gaps)
    }

    #[test]
    fn out_of_order_lsns_are_dropped_and_jumps_reported() {
        let data = segment_image(
            1,
            &[(1, b"a"), (2, b"b"), (2, b"dup"), (1, b"old"), (5, b"e")],
        );
        let (scan, gaps) = scan_one(&data, None);
        assert_eq!(scan.records_kept, 3);
        assert_eq!(scan.last_lsn, Some(5));
        let reasons: Vec<_> = scan.drops.iter().map(|d| d.reason).collect();
        assert_eq!(
            reasons,
            vec![
                DropReason::LsnNotIncreasing {
                    lsn: 2,
                    previous: 2
                },
                DropReason::LsnNotIncreasing {
                    lsn: 1,
                    previous: 2
                },
            ]
        );
        assert!(
            scan.drops
                .iter()
                .all(|d| lost_records(d) == LostRecords::None)
        );
        assert_eq!(
            gaps,
            vec![LsnGap {
                after: 2,
                next: 5,
                segment: PathBuf::from("seg")
            }]
        );
    }

    #[test]
    fn a_damaged_payload_is_dropped_alone_and_its_lsn_inferred() {
        let mut data = segment_image(1, &[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")]);
        let second_payload = SEGMENT_HEADER_LEN + 16 + 4 + 16;
        data[second_payload + 1] ^= 0xff;
        let (scan, gaps) = scan_one(&data, None);
        assert_eq!(scan.records_kept, 2);
        assert_eq!(scan.drops.len(), 1);
        assert_eq!(scan.drops[0].reason, DropReason::ChecksumMismatch);
        assert_eq!(scan.drops[0].offset, (SEGMENT_HEADER_LEN + 20) as u64);
        assert_eq!(scan.drops[0].bytes, 20);
        assert_eq!(
            lost_records(&scan.drops[0]),
            LostRecords::Lsns { first: 2, last: 2 }
        );
        assert_eq!(gaps.len(), 1);
    }

    #[test]
    fn a_damaged_length_drops_the_rest_of_the_segment() {
        let mut data = segment_image(1, &[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")]);
        // Length of the second frame: 4 -> 5, still inside the file.
        data[SEGMENT_HEADER_LEN + 20] = 5;
        let (scan, _) = scan_one(&data, None);
        assert_eq!(scan.records_kept, 1);
        assert_eq!(
            scan.drops[0].reason,
            DropReason::ChecksumMismatchUnresyncable
        );
        assert_eq!(scan.drops[0].bytes, 40);
        assert_eq!(
            lost_records(&scan.drops[0]),
            LostRecords::TailFrom { first: 2 }
        );
    }

    #[test]
    fn a_corrupt_header_does_not_hide_the_records_behind_it() {
        let mut data = segment_image(1, &[(1, b"a"), (2, b"b")]);
        data[3] ^= 1;
        let (scan, _) = scan_one(&data, None);
        assert!(!scan.header_ok);
        assert_eq!(scan.records_kept, 2);
        assert_eq!(scan.drops.len(), 1);
        assert_eq!(scan.drops[0].reason, DropReason::CorruptHeader);
    }

    #[test]
    fn a_foreign_version_refuses_instead_of_dropping() {
        let mut data = segment_image(1, &[(1, b"a")]);
        data[8] = 9;
        let crc = crc32fast::hash(&data[0..28]);
        data[28..32].copy_from_slice(&crc.to_le_bytes());
        let mut previous = None;
        let result = scan_segment(
            Path::new("seg"),
            1,
            1,
            &data,
            &mut previous,
            &mut Vec::new(),
        );
        assert!(matches!(
            result,
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }
}
