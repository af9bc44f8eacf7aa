//! The in-memory catalogue of segment files shared by the writer, replay and
//! retention. It records what recovery verified (or the writer synced), never more.

use std::ops::Range;
use std::path::PathBuf;

use crate::Lsn;

#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// The LSN in the file name: the first LSN the segment was created for.
    pub name_lsn: Lsn,
    pub path: PathBuf,
    /// Verified bytes end here: the end of the last kept record for a recovered
    /// segment, the last synced byte for the active one. Replay reads no further.
    pub end: u64,
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
    /// Byte ranges inside the records area that recovery dropped; replay steps over
    /// them. Sorted, disjoint.
    pub skips: Vec<Range<u64>>,
    /// The writer appends here. Never removed by retention.
    pub active: bool,
}
