//! The on-disk format: segment file names, the segment header and record framing.
//!
//! This module owns byte layouts and checksums only. It does no IO and makes no
//! policy decisions: what to do with a frame that fails its checksum is decided by
//! [`crate::recovery`], and when to write or sync is decided by the writer.
//!
//! A segment is a 32-byte header followed by frames, all integers little-endian:
//!
//! ```text
//! header: magic "TALLYWAL" (8) | version u32 | flags u32 (0) | first_lsn u64
//!         | reserved u32 (0) | crc32 of the previous 28 bytes u32
//! frame:  payload_len u32 | crc32 of (payload_len, lsn, payload) u32 | lsn u64 | payload
//! ```
//!
//! The frame checksum covers the length field too, so a flipped length is caught as
//! a checksum mismatch instead of being trusted.

use crate::Lsn;

/// Identifies a Tally WAL segment.
pub(crate) const MAGIC: [u8; 8] = *b"TALLYWAL";
/// The only format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
pub(crate) const FRAME_HEADER_LEN: usize = 16;
/// Segment files end in this; anything else in the directory is not a segment.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// Recovery renames unreadable tail segments to `<name>.wal.corrupt` for an operator
/// to inspect instead of deleting them.
pub(crate) const QUARANTINE_SUFFIX: &str = ".corrupt";
/// A segment being created at open is written under this suffix and renamed into
/// place, so a crash never leaves a half-written header under a real segment name.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Width of the zero-padded LSN in a file name: enough for `u64::MAX`.
const NAME_DIGITS: usize = 20;

/// `00000000000000000042.wal` for a segment whose first record is LSN 42. Zero
/// padding makes lexical and numeric order agree for anyone listing the directory.
pub(crate) fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment file name, or `None` if the name is not exactly
/// one we would have written.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The LSN in the name of a quarantined segment (`<segment name>.corrupt`).
pub(crate) fn parse_quarantined_file_name(name: &str) -> Option<Lsn> {
    parse_segment_file_name(name.strip_suffix(QUARANTINE_SUFFIX)?)
}

pub(crate) fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // [12..16] flags and [24..28] reserved stay zero in version 1.
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid {
        first_lsn: Lsn,
    },
    /// Intact (checksum verified) but written by a different format version.
    UnsupportedVersion {
        version: u32,
    },
    /// Wrong magic or checksum: damaged, or not a WAL segment at all.
    Corrupt,
}

pub(crate) fn check_segment_header(header: &[u8; SEGMENT_HEADER_LEN]) -> HeaderCheck {
    let stored_crc = read_u32(header, 28);
    if header[0..8] != MAGIC || crc32fast::hash(&header[0..28]) != stored_crc {
        return HeaderCheck::Corrupt;
    }
    let version = read_u32(header, 8);
    if version != FORMAT_VERSION {
        return HeaderCheck::UnsupportedVersion { version };
    }
    HeaderCheck::Valid {
        first_lsn: read_u64(header, 16),
    }
}

/// The decoded fixed part of a frame. Nothing in it is trustworthy until the
/// checksum over the payload has been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub lsn: Lsn,
}

impl FrameHeader {
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            payload_len: read_u32(bytes, 0),
            crc: read_u32(bytes, 4),
            lsn: read_u64(bytes, 8),
        }
    }

    /// Total bytes the frame occupies on disk.
    pub(crate) fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_len as usize
            && frame_crc(self.payload_len, self.lsn, payload) == self.crc
    }
}

pub(crate) fn frame_crc(payload_len: u32, lsn: Lsn, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&payload_len.to_le_bytes());
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Encodes the fixed part of a frame. The caller guarantees `payload.len()` fits in
/// a `u32` (the configured record limit is validated against it at open).
pub(crate) fn encode_frame_header(lsn: Lsn, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&payload_len.to_le_bytes());
    header[4..8].copy_from_slice(&frame_crc(payload_len, lsn, payload).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header
}

/// What lies at `offset` in an in-memory segment image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameAt {
    /// A frame whose checksum verifies, ending at `end`.
    Valid { lsn: Lsn, end: usize },
    /// A complete frame (by its length field) whose checksum does not verify.
    ChecksumMismatch { end: usize },
    /// Fewer bytes remain than the frame header, or the length field points past the
    /// end of the data.
    PastEnd,
}

pub(crate) fn frame_at(data: &[u8], offset: usize) -> FrameAt {
    let Some(header_bytes) = data
        .get(offset..)
        .and_then(|rest| rest.first_chunk::<FRAME_HEADER_LEN>())
    else {
        return FrameAt::PastEnd;
    };
    let header = FrameHeader::decode(header_bytes);
    let payload_start = offset + FRAME_HEADER_LEN;
    let Some(end) = payload_start.checked_add(header.payload_len as usize) else {
        return FrameAt::PastEnd;
    };
    let Some(payload) = data.get(payload_start..end) else {
        return FrameAt::PastEnd;
    };
    if header.matches(payload) {
        FrameAt::Valid {
            lsn: header.lsn,
            end,
        }
    } else {
        FrameAt::ChecksumMismatch { end }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_numerically() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        for bad in [
            "42.wal",
            "0000000000000000004x.wal",
            "00000000000000000042.wal.tmp",
            "99999999999999999999.wal", // overflows u64
            "LOCK",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        assert_eq!(
            parse_quarantined_file_name("00000000000000000042.wal.corrupt"),
            Some(42)
        );
    }

    #[test]
    fn header_detects_damage_and_foreign_versions() {
        let header = encode_segment_header(7);
        assert_eq!(
            check_segment_header(&header),
            HeaderCheck::Valid { first_lsn: 7 }
        );
        for byte in 0..SEGMENT_HEADER_LEN {
            let mut damaged = header;
            damaged[byte] ^= 0x10;
            assert_eq!(check_segment_header(&damaged), HeaderCheck::Corrupt);
        }
        let mut future = header;
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&future[0..28]);
        future[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            check_segment_header(&future),
            HeaderCheck::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn frames_verify_and_any_single_bit_flip_is_caught() {
        let payload = b"hello, log".to_vec();
        let mut data = encode_frame_header(5, &payload).to_vec();
        data.extend_from_slice(&payload);
        assert_eq!(
            frame_at(&data, 0),
            FrameAt::Valid {
                lsn: 5,
                end: data.len()
            }
        );
        for bit in 0..data.len() * 8 {
            let mut damaged = data.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(frame_at(&damaged, 0), FrameAt::Valid { .. }),
                "bit {bit}"
            );
        }
        for cut in 0..data.len() {
            assert_eq!(frame_at(&data[..cut], 0), FrameAt::PastEnd, "cut {cut}");
        }
        assert_eq!(frame_at(&data, data.len() + 3), FrameAt::PastEnd);
    }
}
