//! Distinct-id numbers: per tenant, every distinct id the store has seen gets a
//! dense number (0, 1, 2, … in order of first sight) that every stored event carries
//! in its `distinct_id_number` column.
//!
//! Grouping by person is the heart of unique-person trends, DAU, funnels and
//! retention. With the numbers, a query maps an event to its person with one array
//! index (the engine builds `number → person key` once per identity-map version)
//! instead of decoding the distinct-id string and probing a hash map with it (on the
//! benchmark: funnel 24 %, retention 45 % faster; docs/BENCHMARKS.md). The number depends on the distinct
//! id only, never on the identity map, so merges stay retroactive: they change the
//! engine's array, not the stored events.
//!
//! Owns [`DistinctIdNumbers`] (the in-memory numbering: the ids' text once plus ~14
//! bytes per id, an 8-byte end offset and a 4-byte number in the hash table) and its
//! file, `events/tenant=<id>/distinct_ids.bin`: an append-only sequence of checksummed chunks, each holding the ids numbered since the
//! chunk before. Invariant (checked at open): every number in a published file is
//! below the number of ids in the tenant's file, because the store appends and fsyncs
//! the pending ids before it publishes a manifest listing new files (see
//! `Inner::publish`). A torn last chunk can only hold ids no published file uses, so
//! it is cut off at open.

use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::manifest::fsync_dir;

/// The numbering file's name inside a tenant's directory.
pub const DISTINCT_IDS_FILE: &str = "distinct_ids.bin";

/// Bytes before each chunk's payload: payload length and CRC-32 of the payload.
const CHUNK_HEADER: usize = 8;

/// One tenant's distinct ids, numbered in order of first sight.
#[derive(Debug, Default)]
pub(crate) struct DistinctIdNumbers {
    /// Every id's bytes, concatenated in number order.
    text: String,
    /// `ends[n]` is where id `n` ends in `text` (it starts where id `n - 1` ends).
    ends: Vec<usize>,
    /// Numbers, found by their id's hash.
    index: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
    /// Ids `0..persisted` are durable in the tenant's file.
    persisted: usize,
}

/// Ids `first..first + len()` of one tenant, copied out of the store.
#[derive(Debug, Default, Clone)]
pub struct DistinctIdRange {
    pub first: u32,
    text: String,
    ends: Vec<usize>,
}

impl DistinctIdRange {
    /// The range of `ids` numbered from `first` (for tests and tools; the store's
    /// ranges come from `EmbeddedStore::distinct_ids`).
    pub fn from_ids(first: u32, ids: &[&str]) -> Self {
        let mut range = DistinctIdRange {
            first,
            ..DistinctIdRange::default()
        };
        for id in ids {
            range.text.push_str(id);
            range.ends.push(range.text.len());
        }
        range
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The ids in number order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }
}

fn id_of<'a>(text: &'a str, ends: &[usize], number: u32) -> &'a str {
    let n = number as usize;
    let start = if n == 0 { 0 } else { ends[n - 1] };
    &text[start..ends[n]]
}

impl DistinctIdNumbers {
    /// Number of ids numbered so far; every number is below it.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The id numbered `number`, if any.
    #[cfg(test)]
    pub fn id(&self, number: u32) -> Option<&str> {
        ((number as usize) < self.len()).then(|| id_of(&self.text, &self.ends, number))
    }

    /// The number of `id`, if it has one.
    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        let (text, ends) = (&self.text, &self.ends);
        self.index
            .find(hash, |&n| id_of(text, ends, n) == id)
            .copied()
    }

    /// The number of `id`, numbering it if it is new.
    pub fn number_of(&mut self, id: &str) -> Result<u32> {
        let hash = self.hasher.hash_one(id);
        let DistinctIdNumbers {
            text,
            ends,
            index,
            hasher,
            ..
        } = self;
        if let Some(&n) = index.find(hash, |&n| id_of(text, ends, n) == id) {
            return Ok(n);
        }
        let number = u32::try_from(ends.len())
            .ok()
            .filter(|&n| n < u32::MAX)
            .ok_or_else(|| {
                Error::unexpected(
                    "distinct-id numbering",
                    "a tenant has more than 4,294,967,294 distinct ids",
                )
            })?;
        text.push_str(id);
        ends.push(text.len());
        index.insert_unique(hash, number, |&n| hasher.hash_one(id_of(text, ends, n)));
        Ok(number)
    }

    /// Ids `from..` (none if `from` is past the end).
    pub fn range_from(&self, from: u32) -> DistinctIdRange {
        let from = (from as usize).min(self.len());
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        DistinctIdRange {
            first: from as u32,
            text: self.text[start..].to_owned(),
            ends: self.ends[from..].iter().map(|e| e - start).collect(),
        }
    }

    /// The chunk that makes ids `persisted..len()` durable, and the count it makes
    /// durable; `None` when every id is durable. Encoding under the caller's lock and
    /// writing outside it keeps `apply` from waiting on an fsync.
    pub fn pending_chunk(&self) -> Option<(Vec<u8>, usize)> {
        if self.persisted == self.len() {
            return None;
        }
        let start = if self.persisted == 0 {
            0
        } else {
            self.ends[self.persisted - 1]
        };
        let ids = self.len() - self.persisted;
        let mut payload = Vec::with_capacity(ids * 4 + self.text.len() - start);
        let mut previous = start;
        for &end in &self.ends[self.persisted..] {
            payload.extend_from_slice(&((end - previous) as u32).to_le_bytes());
            payload.extend_from_slice(&self.text.as_bytes()[previous..end]);
            previous = end;
        }
        let mut chunk = Vec::with_capacity(CHUNK_HEADER + payload.len());
        chunk.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        chunk.extend_from_slice(&payload);
        Some((chunk, self.len()))
    }

    /// Records that ids `0..count` are durable (after [`append_chunk`] of a
    /// [`DistinctIdNumbers::pending_chunk`]).
    pub fn mark_persisted(&mut self, count: usize) {
        self.persisted = self.persisted.max(count.min(self.len()));
    }

    /// Loads a tenant's numbering from `dir`; empty if it has no file. A torn last
    /// chunk (a crash while appending it) is cut off.
    pub fn load(dir: &Path) -> Result<DistinctIdNumbers> {
        let path = dir.join(DISTINCT_IDS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DistinctIdNumbers::default());
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let corrupt = |reason: String| Error::CorruptMetadata {
            path: path.clone(),
            reason,
        };
        let mut numbers = DistinctIdNumbers::default();
        let mut at = 0;
        while at < bytes.len() {
            let header = bytes.get(at..at + CHUNK_HEADER);
            let Some(header) = header else { break };
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let Some(payload) = bytes.get(at + CHUNK_HEADER..at + CHUNK_HEADER + len) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                if at + CHUNK_HEADER + len == bytes.len() {
                    break; // the last chunk, torn
                }
                return Err(corrupt(format!("chunk at byte {at} fails its checksum")));
            }
            let mut p = 0;
            while p < payload.len() {
                let id_len = payload
                    .get(p..p + 4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(|| corrupt(format!("chunk at byte {at} ends inside a length")))?;
                let id = payload
                    .get(p + 4..p + 4 + id_len)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .ok_or_else(|| corrupt(format!("chunk at byte {at} holds a bad id")))?;
                let before = numbers.len();
                if numbers.number_of(id)? as usize != before {
                    return Err(corrupt(format!("id {id:?} is numbered twice")));
                }
                p += 4 + id_len;
            }
            at += CHUNK_HEADER + len;
        }
        if at < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - at,
                "cutting off a torn last chunk of distinct-id numbers"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            file.set_len(at as u64)
                .map_err(|e| Error::io("truncate", &path, e))?;
            file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
        }
        numbers.persisted = numbers.len();
        Ok(numbers)
    }
}

/// Appends a [`DistinctIdNumbers::pending_chunk`] to the numbering file in `dir`
/// (which must exist) and fsyncs it. On failure the file is cut back to its old
/// length, so that a later append does not follow a half-written chunk.
pub fn append_chunk(dir: &Path, chunk: &[u8]) -> Result<()> {
    let path: PathBuf = dir.join(DISTINCT_IDS_FILE);
    let created = !path.exists();
    let mut file: File = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let before = file
        .metadata()
        .map_err(|e| Error::io("stat", &path, e))?
        .len();
    let written = file
        .write_all(chunk)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("append", &path, e));
    if let Err(e) = written {
        if let Err(error) = file.set_len(before).and_then(|()| file.sync_data()) {
            tracing::error!(path = %path.display(), %error, "could not cut back a failed append");
        }
        return Err(e);
    }
    if created {
        fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numbered(ids: &[&str]) -> DistinctIdNumbers {
        let mut n = DistinctIdNumbers::default();
        for id in ids {
            n.number_of(id).unwrap();
        }
        n
    }

    #[test]
    fn numbers_ids_in_order_of_first_sight() {
        let mut n = DistinctIdNumbers::default();
        assert_eq!(n.number_of("b").unwrap(), 0);
        assert_eq!(n.number_of("").unwrap(), 1);
        assert_eq!(n.number_of("a").unwrap(), 2);
        assert_eq!(n.number_of("b").unwrap(), 0);
        assert_eq!(n.get(""), Some(1));
        assert_eq!(n.get("c"), None);
        assert_eq!(n.id(2), Some("a"));
        assert_eq!(n.id(3), None);
        let range = n.range_from(1);
        assert_eq!(range.iter().collect::<Vec<_>>(), ["", "a"]);
        assert_eq!(n.range_from(1).first, 1);
        assert!(n.range_from(9).is_empty());
    }

    #[test]
    fn chunks_persist_and_reload_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = numbered(&["user-1", "ünï", "user-2"]);
        let (chunk, count) = n.pending_chunk().unwrap();
        append_chunk(dir.path(), &chunk).unwrap();
        n.mark_persisted(count);
        assert!(n.pending_chunk().is_none());
        n.number_of("late").unwrap();
        let (chunk, count) = n.pending_chunk().unwrap();
        append_chunk(dir.path(), &chunk).unwrap();
        n.mark_persisted(count);

        let loaded = DistinctIdNumbers::load(dir.path()).unwrap();
        assert_eq!(
            loaded.range_from(0).iter().collect::<Vec<_>>(),
            ["user-1", "ünï", "user-2", "late"]
        );
        assert!(loaded.pending_chunk().is_none());

        // A crash halfway through a third append.
        let mut more = loaded;
        more.number_of("lost").unwrap();
        let (chunk, _) = more.pending_chunk().unwrap();
        let path = dir.path().join(DISTINCT_IDS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len() - 2]);
        std::fs::write(&path, &bytes).unwrap();
        let reloaded = DistinctIdNumbers::load(dir.path()).unwrap();
        assert_eq!(reloaded.len(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);

        // Damage before the last chunk is corruption, not a torn tail.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[CHUNK_HEADER + 5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            DistinctIdNumbers::load(dir.path()),
            Err(Error::CorruptMetadata { .. })
        ));
    }

    proptest! {
        /// Against a plain vector: the same numbers, whatever the ids and however
        /// the persisting is split.
        #[test]
        fn matches_a_vector_of_ids(
            ids in proptest::collection::vec("[a-c]{0,3}|[\\PC]{0,6}", 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut numbers = DistinctIdNumbers::default();
            let mut reference: Vec<&str> = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let expected = match reference.iter().position(|r| r == id) {
                    Some(p) => p,
                    None => { reference.push(id); reference.len() - 1 }
                };
                prop_assert_eq!(numbers.number_of(id).unwrap() as usize, expected);
                if cuts.contains(&i) && let Some((chunk, count)) = numbers.pending_chunk() {
                    append_chunk(dir.path(), &chunk).unwrap();
                    numbers.mark_persisted(count);
                }
            }
            if let Some((chunk, count)) = numbers.pending_chunk() {
                append_chunk(dir.path(), &chunk).unwrap();
                numbers.mark_persisted(count);
            }
            let loaded = DistinctIdNumbers::load(dir.path()).unwrap();
            let all = loaded.range_from(0);
            prop_assert_eq!(all.iter().collect::<Vec<_>>(), reference.clone());
            for (n, id) in reference.iter().enumerate() {
                prop_assert_eq!(loaded.get(id), Some(n as u32));
            }
        }
    }
}
