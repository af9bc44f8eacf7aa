//! Recovery from torn and corrupted logs: exact accounting, never a wrong record.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use tally_wal::{DropReason, LostRecords, Lsn, RecoveryAction, RecoveryReport, Wal, WalConfig};

use crate::{build_log, payload, read_segments, replay_all, small_config, tempdir, write_segments};

const HEADER: u64 = tally_wal::SEGMENT_HEADER_BYTES;
const FRAMING: u64 = tally_wal::FRAME_OVERHEAD_BYTES;

/// A reference log on disk (as bytes) and the records it holds.
struct Reference {
    files: Vec<(String, Vec<u8>)>,
    records: BTreeMap<Lsn, Vec<u8>>,
}

fn config(dir: &Path) -> WalConfig {
    let mut config = small_config(dir);
    config.segment_bytes = 300;
    config
}

/// 30 records of 0..=45 bytes in 300-byte segments: several segments, several
/// records each, and an empty payload among them.
fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let root = tempdir();
        let dir = root.path().join("wal");
        let sizes: Vec<usize> = (0..30).map(|i| (i * 17) % 46).collect();
        let records = build_log(config(&dir), &sizes);
        let mut files = read_segments(&dir);
        // The shutdown left an empty active segment behind; drop it so that the
        // last file holds records.
        files.retain(|(_, bytes)| bytes.len() as u64 > HEADER);
        Reference { files, records }
    })
}

/// Checks everything a recovery must guarantee about `files` (the damaged
/// segments as they were on disk before open), and returns the records kept.
///
/// `files_were_cut`: a file cut exactly at a frame boundary at the end of the log
/// leaves a log indistinguishable from one that was never longer, so records lost
/// that way cannot be reported; anywhere else they show as a drop or a gap.
fn check_recovery(
    report: &RecoveryReport,
    wal: &Wal,
    files: &[(String, Vec<u8>)],
    written: &BTreeMap<Lsn, Vec<u8>>,
    files_were_cut: bool,
) -> Vec<(Lsn, Vec<u8>)> {
    let kept = replay_all(wal);
    // Never a record that differs from what was written.
    for (lsn, bytes) in &kept {
        assert_eq!(written.get(lsn), Some(bytes), "lsn {lsn} came back altered");
    }
    assert_eq!(report.records_kept, kept.len() as u64);
    assert_eq!(report.last_lsn, kept.last().map(|(lsn, _)| *lsn));
    // Every byte accounted for, per segment, against the files as they were.
    assert_eq!(report.segments.len(), files.len());
    for (summary, (name, bytes)) in report.segments.iter().zip(files) {
        assert!(summary.path.ends_with(name));
        assert_eq!(summary.bytes, bytes.len() as u64, "{name}");
        let dropped: u64 = report
            .dropped
            .iter()
            .filter(|d| d.segment == summary.path)
            .map(|d| d.bytes)
            .sum();
        let header = if summary.header_ok { HEADER } else { 0 };
        assert_eq!(
            header + summary.kept_bytes + dropped,
            summary.bytes,
            "byte accounting of {name}: {report:#?}"
        );
    }
    let kept_bytes: u64 = kept.iter().map(|(_, b)| FRAMING + b.len() as u64).sum();
    assert_eq!(
        kept_bytes,
        report.segments.iter().map(|s| s.kept_bytes).sum::<u64>()
    );
    // Every written record that was not kept is named as lost by some drop, or
    // lies in a reported gap.
    let kept_lsns: std::collections::BTreeSet<Lsn> = kept.iter().map(|(lsn, _)| *lsn).collect();
    let last_kept = report.last_lsn.unwrap_or(0);
    for lsn in written
        .keys()
        .copied()
        .filter(|lsn| !kept_lsns.contains(lsn))
    {
        let accounted = report.dropped.iter().any(|d| d.lost.contains(lsn))
            || report
                .lsn_gaps
                .iter()
                .any(|g| g.after < lsn && lsn < g.next)
            || (files_were_cut && lsn > last_kept);
        assert!(
            accounted,
            "lsn {lsn} vanished without a report: {report:#?}"
        );
    }
    // Gaps list exactly the discontinuities of the kept sequence, which starts
    // where the first segment's name says.
    let log_start = report.segments.first().map_or(1, |s| s.name_lsn);
    let mut sequence = vec![log_start - 1];
    sequence.extend(kept.iter().map(|(lsn, _)| *lsn));
    let gaps: Vec<(Lsn, Lsn)> = sequence
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    let reported: Vec<(Lsn, Lsn)> = report.lsn_gaps.iter().map(|g| (g.after, g.next)).collect();
    assert_eq!(gaps, reported);
    assert!(report.next_lsn > report.last_lsn.unwrap_or(0));
    kept
}

#[test]
fn truncation_at_every_offset_of_the_last_records_keeps_exactly_the_complete_ones() {
    let reference = reference();
    let (last_name, last_bytes) = reference.files.last().unwrap();
    let last_first_lsn: Lsn = last_name.trim_end_matches(".wal").parse().unwrap();
    // Frame boundaries inside the last segment.
    let mut boundaries = vec![HEADER];
    for (lsn, bytes) in reference.records.range(last_first_lsn..) {
        let end = boundaries.last().unwrap() + FRAMING + bytes.len() as u64;
        boundaries.push(end);
        assert!(*lsn >= last_first_lsn);
    }
    assert_eq!(*boundaries.last().unwrap(), last_bytes.len() as u64);
    assert!(
        boundaries.len() >= 4,
        "the last segment holds several records"
    );

    for cut in 0..=last_bytes.len() as u64 {
        let root = tempdir();
        let dir = root.path().join("wal");
        fs::create_dir(&dir).unwrap();
        let mut files = reference.files.clone();
        files.last_mut().unwrap().1.truncate(cut as usize);
        write_segments(&dir, &files);

        let (wal, report) = Wal::open(config(&dir)).unwrap();
        let kept = check_recovery(&report, &wal, &files, &reference.records, true);

        let complete_in_last = boundaries
            .iter()
            .filter(|&&b| b <= cut)
            .count()
            .saturating_sub(1);
        let expected_last = last_first_lsn - 1 + complete_in_last as Lsn;
        assert_eq!(kept.len() as Lsn, expected_last, "cut {cut}");
        assert_eq!(report.next_lsn, expected_last + 1, "cut {cut}");
        let boundary = boundaries
            .iter()
            .copied()
            .filter(|&b| b <= cut)
            .max()
            .unwrap_or(0);
        let expected_dropped = cut - boundary;
        assert_eq!(
            report.dropped_bytes(),
            expected_dropped,
            "cut {cut}: {report:#?}"
        );
        match report.dropped.as_slice() {
            // Cut at a frame boundary: a shorter log, but a consistent one.
            [] => assert!(expected_dropped == 0 && cut >= HEADER),
            [drop] => {
                let expected_reason = if cut < HEADER {
                    DropReason::TornHeader
                } else {
                    DropReason::Truncated
                };
                assert_eq!(drop.reason, expected_reason, "cut {cut}");
                assert_eq!(drop.offset, boundary);
                assert_eq!(
                    drop.lost,
                    LostRecords::TailFrom {
                        first: expected_last + 1
                    }
                );
            }
            more => panic!("cut {cut}: one drop expected, got {more:#?}"),
        }
        assert!(report.lsn_gaps.is_empty());
        // Clean-up: a torn write is cut off or, if it left no record in its
        // segment (a crash during rollover), the file is deleted; nothing is
        // quarantined.
        let last_path = dir.join(last_name);
        let expected_actions = if cut == HEADER {
            vec![] // a clean empty segment, reused
        } else if cut < boundaries[1] {
            vec![RecoveryAction::Removed { segment: last_path }]
        } else if expected_dropped > 0 {
            vec![RecoveryAction::Truncated {
                segment: last_path,
                from_bytes: cut,
                to_bytes: boundary,
            }]
        } else {
            vec![]
        };
        assert_eq!(report.actions, expected_actions, "cut {cut}");

        // The log continues right after the last complete record.
        assert_eq!(
            wal.append(b"resumed".to_vec()).unwrap().wait().unwrap(),
            expected_last + 1
        );
        drop(wal);
        let (wal, again) = Wal::open(config(&dir)).unwrap();
        assert!(
            again.is_clean(),
            "cut {cut}: clean-up makes the next open clean: {again:#?}"
        );
        assert_eq!(again.records_kept, expected_last + 1);
        drop(wal);
    }
}

#[test]
fn damage_in_an_older_segment_loses_only_the_damaged_record() {
    let reference = reference();
    let root = tempdir();
    let dir = root.path().join("wal");
    fs::create_dir(&dir).unwrap();
    let mut files = reference.files.clone();
    // The second record of the first segment: flip a byte of its payload.
    let first_len = reference.records[&1].len();
    let second_payload = HEADER as usize + 16 + first_len + 16;
    assert!(!reference.records[&2].is_empty());
    files[0].1[second_payload] ^= 0x40;
    write_segments(&dir, &files);

    let (wal, report) = Wal::open(config(&dir)).unwrap();
    let kept = check_recovery(&report, &wal, &files, &reference.records, false);
    assert_eq!(kept.len(), reference.records.len() - 1);
    assert_eq!(report.dropped.len(), 1);
    assert_eq!(report.dropped[0].reason, DropReason::ChecksumMismatch);
    assert_eq!(
        report.dropped[0].lost,
        LostRecords::Lsns { first: 2, last: 2 }
    );
    assert_eq!(report.lsn_gaps.len(), 1);
    assert!(
        report.actions.is_empty(),
        "nothing before the tail is touched"
    );
    drop(wal);
    // Still reported at the next open: the damaged bytes stay until retention.
    let (_wal, again) = Wal::open(config(&dir)).unwrap();
    assert_eq!(again.dropped, report.dropped);
}

#[test]
fn a_tail_segment_without_valid_records_is_quarantined_and_its_lsns_not_reused() {
    let reference = reference();
    let root = tempdir();
    let dir = root.path().join("wal");
    fs::create_dir(&dir).unwrap();
    let mut files = reference.files.clone();
    let (last_name, last_bytes) = files.last_mut().unwrap();
    let last_name = last_name.clone();
    let last_first_lsn: Lsn = last_name.trim_end_matches(".wal").parse().unwrap();
    // Damage the checksum of every frame: nothing in the segment verifies, but
    // nothing looks like a torn write either.
    let mut offset = HEADER as usize;
    for (_, record) in reference.records.range(last_first_lsn..) {
        last_bytes[offset + 4] ^= 0xFF;
        offset += FRAMING as usize + record.len();
    }
    write_segments(&dir, &files);

    let (wal, report) = Wal::open(config(&dir)).unwrap();
    check_recovery(&report, &wal, &files, &reference.records, false);
    assert_eq!(report.last_lsn, Some(last_first_lsn - 1));
    assert_eq!(report.next_lsn, last_first_lsn);
    let moved_to = dir.join(format!("{last_name}.corrupt"));
    assert_eq!(
        report.actions,
        vec![RecoveryAction::Quarantined {
            segment: dir.join(&last_name),
            moved_to: moved_to.clone()
        }]
    );
    assert!(moved_to.exists());
    drop(wal);
    let (_wal, again) = Wal::open(config(&dir)).unwrap();
    assert!(again.is_clean());
    assert_eq!(again.next_lsn, last_first_lsn);
}

#[test]
fn an_empty_directory_of_foreign_files_recovers_to_an_empty_log() {
    let root = tempdir();
    let dir = root.path().join("wal");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("README"), b"not a segment").unwrap();
    fs::write(dir.join("00000000000000000007.wal"), b"").unwrap();
    let (wal, report) = Wal::open(config(&dir)).unwrap();
    assert_eq!(report.records_kept, 0);
    assert_eq!(
        report.next_lsn, 7,
        "an LSN a file was named for is never reused"
    );
    assert_eq!(wal.append(payload(1, 3)).unwrap().wait().unwrap(), 7);
    assert!(dir.join("README").exists());
}

/// A mutation of a segment file.
#[derive(Debug, Clone)]
enum Damage {
    FlipBit {
        file: prop::sample::Index,
        offset: prop::sample::Index,
        bit: u8,
    },
    Truncate {
        file: prop::sample::Index,
        keep: prop::sample::Index,
    },
    /// Like sectors that never reached the disk.
    Zero {
        file: prop::sample::Index,
        start: prop::sample::Index,
        len: usize,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        8 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..8)
            .prop_map(|(file, offset, bit)| Damage::FlipBit { file, offset, bit }),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(file, keep)| Damage::Truncate { file, keep }),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1usize..64)
            .prop_map(|(file, start, len)| Damage::Zero { file, start, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn random_damage_never_yields_a_wrong_record_and_is_fully_reported(
        damages in prop::collection::vec(damage(), 1..6)
    ) {
        let reference = reference();
        let mut files = reference.files.clone();
        for damage in &damages {
            match damage {
                Damage::FlipBit { file, offset, bit } => {
                    let bytes = &mut files[file.index(reference.files.len())].1;
                    if !bytes.is_empty() {
                        let at = offset.index(bytes.len());
                        bytes[at] ^= 1 << bit;
                    }
                }
                Damage::Zero { file, start, len } => {
                    let bytes = &mut files[file.index(reference.files.len())].1;
                    if !bytes.is_empty() {
                        let start = start.index(bytes.len());
                        let end = (start + len).min(bytes.len());
                        bytes[start..end].fill(0);
                    }
                }
                Damage::Truncate { file, keep } => {
                    let bytes = &mut files[file.index(reference.files.len())].1;
                    let keep = keep.index(bytes.len() + 1);
                    bytes.truncate(keep);
                }
            }
        }
        let root = tempdir();
        let dir = root.path().join("wal");
        fs::create_dir(&dir).unwrap();
        write_segments(&dir, &files);

        let (wal, report) = Wal::open(config(&dir)).unwrap();
        let was_cut = damages.iter().any(|d| matches!(d, Damage::Truncate { .. }));
        let kept = check_recovery(&report, &wal, &files, &reference.records, was_cut);
        let next = wal.append(b"after".to_vec()).unwrap().wait().unwrap();
        prop_assert_eq!(next, report.next_lsn);
        drop(wal);

        // A second open keeps the same records (plus the new one).
        let (wal, _) = Wal::open(config(&dir)).unwrap();
        let mut again = replay_all(&wal);
        prop_assert_eq!(again.pop(), Some((next, b"after".to_vec())));
        prop_assert_eq!(again, kept);
    }
}

#[test]
fn a_renamed_segment_is_never_overwritten_by_the_new_one() {
    let root = tempdir();
    let dir = root.path().join("wal");
    let records = build_log(config(&dir), &[5, 6, 7]);
    // Someone renamed the segment holding LSNs 1..=3 to a later name, and removed
    // the empty active segment.
    for (name, bytes) in read_segments(&dir) {
        fs::remove_file(dir.join(&name)).unwrap();
        if bytes.len() as u64 > HEADER {
            fs::write(dir.join("00000000000000000100.wal"), bytes).unwrap();
        }
    }
    let (wal, report) = Wal::open(config(&dir)).unwrap();
    assert_eq!(report.records_kept, 3);
    assert_eq!(report.next_lsn, 101);
    assert_eq!(wal.append(b"new".to_vec()).unwrap().wait().unwrap(), 101);
    let kept = replay_all(&wal);
    assert_eq!(kept.len(), 4);
    for (lsn, bytes) in &kept[..3] {
        assert_eq!(&records[lsn], bytes);
    }
}
