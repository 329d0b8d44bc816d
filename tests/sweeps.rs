//! Damage sweeps (issue 3, part 3).
//!
//! A reference log of at least three segments (4 KiB each) is built once on the simulated
//! file system; then, each on a fresh copy of its image:
//!
//! - the last segment is cut at every byte offset (and, separately, cut and refilled with
//!   zeros, and cut and refilled with random bytes, as torn and preallocated tails look);
//! - every bit of every segment header and of every record header is flipped;
//! - a seeded sample of session-id and payload bits is flipped.
//!
//! Zero silent acceptances: every open either fails with `Error::Corrupt` naming the damaged
//! segment and offset, or succeeds holding exactly a state the history passed through (each
//! message byte for byte, with its LSN) without the damaged record. Damage with no valid
//! record after it in the last segment is a torn tail (`report.torn_tail`); damage followed
//! by a valid record, or in a sealed segment, is corruption. In salvage mode every message
//! read back is one that was appended, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{DIR, Harness, Op, Rng, fs_from_image, image, seed_from_env};
use convlog::format::{
    Decoded, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, decode_record,
};
use convlog::{Durability, Error, RecoveryMode, SegmentId, Store};

const SEG: u64 = 4096;

/// One record of the reference image.
#[derive(Debug, Clone, Copy)]
struct Rec {
    seg: usize,
    start: usize,
    end: usize,
    name_len: usize,
    lsn: u64,
    commit: bool,
}

struct Reference {
    h: Harness,
    /// The store's files without hint files (derived data), so every open scans: the sweeps
    /// test recovery's classification.
    files: Vec<(String, Vec<u8>)>,
    /// The hint files, for the variants that check reads through hints.
    hints: Vec<(String, Vec<u8>)>,
    /// Indices into `files` of the segments, oldest first.
    segs: Vec<(usize, SegmentId)>,
    recs: Vec<Rec>,
}

/// Builds the reference log: appends, batches, pops, a truncate and a clear over three
/// sessions, synced, until the store has at least four segments.
fn reference() -> Reference {
    let mut h = Harness::new(7, SEG, Durability::Buffered).unwrap();
    let mut rng = Rng(0x5EED);
    let mut i = 0u32;
    let (mut seen, mut rotated_at) = (0, 0);
    loop {
        let s = (rng.below(3)) as u8;
        let len = 30 + rng.below(260) as u16;
        let op = match i % 17 {
            5 => Op::Batch { s, n: 2, len },
            9 => Op::Pop { s, typed: false },
            13 => Op::Truncate { s, keep: 7 },
            16 if i > 60 => Op::Clear { s: 2 },
            _ => Op::Append {
                s,
                len,
                typed: false,
            },
        };
        h.apply(&op).unwrap();
        i += 1;
        let segs = image(&h.fs)
            .iter()
            .filter(|(n, _)| n.ends_with(".seg"))
            .count();
        // End a while after the last rotation, so that the last segment holds a few units.
        if segs != seen {
            (seen, rotated_at) = (segs, i);
        }
        if segs >= 4 && i >= rotated_at + 8 && i % 17 == 12 {
            break;
        }
    }
    h.apply(&Op::Sync).unwrap();
    h.close();
    let (hints, mut files): (Vec<_>, Vec<_>) = image(&h.fs)
        .into_iter()
        .partition(|(n, _)| n.ends_with(".hint"));
    // Segments keep preallocated zeros after their last record (files never shrink); the
    // sweeps cut and damage the records, so the reference ends each segment at its last
    // record (a state salvage rewrites leave, too). The "zeros" fill puts zeros back.
    for (name, bytes) in &mut files {
        if name.ends_with(".seg") {
            let salt = SegmentHeader::decode(bytes).unwrap().salt;
            let mut end = SEGMENT_HEADER_LEN;
            while let Decoded::Record(r) = decode_record(&bytes[end..], salt, 1 << 24) {
                end += r.framed_len();
            }
            assert!(bytes[end..].iter().all(|b| *b == 0), "{name}: zeros follow");
            bytes.truncate(end);
        }
    }
    let mut segs: Vec<(usize, SegmentId)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, (n, _))| SegmentId::parse_file_name(n).map(|id| (i, id)))
        .collect();
    segs.sort_by_key(|s| s.1);
    let mut recs = Vec::new();
    for (si, &(fi, _)) in segs.iter().enumerate() {
        let bytes = &files[fi].1;
        let salt = SegmentHeader::decode(bytes).unwrap().salt;
        let mut off = SEGMENT_HEADER_LEN;
        while let Decoded::Record(r) = decode_record(&bytes[off..], salt, 1 << 24) {
            recs.push(Rec {
                seg: si,
                start: off,
                end: off + r.framed_len(),
                name_len: r.session.inline_len(),
                lsn: r.meta.lsn.0,
                commit: r.meta.commit,
            });
            off += r.framed_len();
        }
        assert_eq!(
            off,
            bytes.len(),
            "reference segment {si} decodes to its end"
        );
    }
    assert!(segs.len() >= 4, "reference has {} segments", segs.len());
    let last = recs.iter().filter(|r| r.seg == segs.len() - 1).count();
    assert!(last >= 5, "last segment holds {last} records");
    Reference {
        h,
        files,
        hints,
        segs,
        recs,
    }
}

impl Reference {
    fn last_seg(&self) -> usize {
        self.segs.len() - 1
    }

    /// The LSN a point-in-time recovery must end at when the log is valid exactly up to
    /// offset `valid` of the last segment: the last commit record ending there or before.
    fn expected_lsn(&self, valid: usize) -> (u64, usize) {
        let last = self.last_seg();
        let mut lsn = self.segs[last].1.0 - 1;
        let mut end = SEGMENT_HEADER_LEN;
        for r in self.recs.iter().filter(|r| r.seg == last) {
            if r.end <= valid && r.commit {
                lsn = r.lsn;
                end = r.end;
            }
        }
        (lsn, end)
    }

    /// The start of the batch (run of records up to a commit record) holding `rec`.
    fn batch_start(&self, rec: usize) -> usize {
        let mut i = rec;
        while i > 0 && !self.recs[i - 1].commit && self.recs[i - 1].seg == self.recs[rec].seg {
            i -= 1;
        }
        self.recs[i].start
    }

    fn open(&self, files: &[(String, Vec<u8>)], mode: RecoveryMode) -> convlog::Result<Store> {
        Store::builder()
            .vfs(Arc::new(fs_from_image(files)))
            .segment_size(SEG)
            .recovery(mode)
            .open(DIR)
    }

    /// Whether the documented rule (`docs/format.md`, "Recovery") makes damage in record
    /// `rec` of segment `seg` a torn tail: it is in the last segment, and either no valid
    /// record follows it, or the bytes from the start `x` of its uncommitted run to the next
    /// valid record show a zero sector (aligned and starting before that record, or from `x`
    /// to the end of `x`'s sector; either may reach a few bytes into that record).
    fn torn_by_rule(&self, files: &[(String, Vec<u8>)], seg: usize, rec: Option<usize>) -> bool {
        let Some(r) = rec else {
            return false; // a damaged segment header with records after it: corruption
        };
        if seg != self.last_seg() {
            return false;
        }
        let Some(next) = self.recs.get(r + 1) else {
            return true;
        };
        let bytes = &files[self.segs[seg].0].1;
        let (x, y) = (self.batch_start(r), next.start);
        let zero = |a: usize, b: usize| bytes[a..b].iter().all(|v| *v == 0);
        let first = x.div_ceil(512) * 512;
        (first > x && first <= bytes.len() && zero(x, first))
            || (first..y)
                .step_by(512)
                .any(|s| s + 512 <= bytes.len() && zero(s, s + 512))
    }

    /// Opens `files` (the reference with damage in the record `rec` of segment `seg`, or in
    /// the segment header when `rec` is `None`) and checks the outcome against the rule:
    /// corruption named at the damaged record, or a torn tail that recovers exactly the
    /// committed units before it.
    fn check_damage(
        &self,
        files: &[(String, Vec<u8>)],
        seg: usize,
        rec: Option<usize>,
        what: &str,
    ) -> Outcome {
        let seg_id = self.segs[seg].1;
        let torn_expected = self.torn_by_rule(files, seg, rec);
        let followed = rec.is_some_and(|r| r + 1 < self.recs.len());
        match self.open(files, RecoveryMode::PointInTime) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                let want_offset = rec.map_or(0, |r| self.recs[r].start as u64);
                assert!(
                    !torn_expected,
                    "{what}: damage with no valid record after it (or a zero sector before the \
                     next) must be a torn tail, got corruption"
                );
                assert_eq!(
                    (segment, offset),
                    (seg_id, want_offset),
                    "{what}: corruption reported at the wrong place"
                );
                Outcome::Corrupt
            }
            Err(e) => panic!("{what}: open failed with {e:?}, expected Corrupt or Ok"),
            Ok(store) => {
                let k = self
                    .h
                    .check_prefix(&store)
                    .unwrap_or_else(|v| panic!("{what}: silent acceptance: {v}"));
                let r = rec.unwrap_or_else(|| panic!("{what}: a damaged segment header opened"));
                assert!(
                    torn_expected,
                    "{what}: damage followed by a valid record was accepted (recovered {k} units)"
                );
                let torn = store.recovery_report().torn_tail.clone();
                let start = self.batch_start(r);
                assert_eq!(
                    torn.map(|t| (t.segment, t.offset)),
                    Some((seg_id, start as u64)),
                    "{what}: torn tail not reported at the damaged record"
                );
                assert!(
                    store.last_lsn().0 < self.recs[r].lsn,
                    "{what}: the damaged record was recovered"
                );
                if followed {
                    // Valid, committed records after the damage were cut off with it: the
                    // documented price of the zero-sector rule.
                    Outcome::TornByZeros
                } else {
                    Outcome::Torn
                }
            }
        }
    }

    /// Salvage keeps only messages that were appended, byte for byte.
    fn check_salvage(&self, files: &[(String, Vec<u8>)], what: &str) {
        let Ok(store) = self.open(files, RecoveryMode::Salvage) else {
            return;
        };
        self.check_never_altered(&store, false, &format!("{what} (salvage)"));
    }

    /// The same damage with the hint files present: an open that trusts a hint need not see
    /// the damage, but a read must then fail with `Corrupt`, never return altered bytes.
    fn check_with_hints(&self, files: &[(String, Vec<u8>)], what: &str) {
        let mut all = files.to_vec();
        all.extend(self.hints.iter().cloned());
        match self.open(&all, RecoveryMode::PointInTime) {
            Ok(store) => self.check_never_altered(&store, true, &format!("{what} (hints)")),
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("{what} (hints): open failed with {e:?}"),
        }
    }

    /// Every message `store` returns is one appended with that LSN, byte for byte; with
    /// `allow_corrupt`, a read may instead fail with `Corrupt`.
    fn check_never_altered(&self, store: &Store, allow_corrupt: bool, what: &str) {
        for s in store.sessions() {
            for e in store.messages(&s.id).raw() {
                let e = match e {
                    Ok(e) => e,
                    Err(Error::Corrupt { .. }) if allow_corrupt => continue,
                    Err(err) => panic!("{what}: read failed: {err:?}"),
                };
                assert_eq!(
                    self.h.message_at(e.lsn.0),
                    Some((s.id.as_str(), e.message.as_slice())),
                    "{what}: returned a message that was never appended to that session (LSN {})",
                    e.lsn
                );
            }
        }
    }
}

fn store_lsn_after(lsn: u64) -> u64 {
    lsn + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Corrupt,
    /// Damage in the last record: a torn tail.
    Torn,
    /// Damage before the last record, taken for a torn write by the zero-sector rule.
    TornByZeros,
}

fn with_file(files: &[(String, Vec<u8>)], fi: usize, bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let mut out = files.to_vec();
    out[fi].1 = bytes;
    out
}

#[test]
fn undamaged_reference_opens_whole() {
    let r = reference();
    let store = r.open(&r.files, RecoveryMode::Strict).unwrap();
    assert_eq!(r.h.check_prefix(&store).unwrap(), r.h.units());
    assert_eq!(store.recovery_report().torn_tail, None);
}

/// Cuts the last segment at every offset; also refills the cut with zeros and with random
/// bytes. Every cut opens, to exactly the committed records before it.
#[test]
fn truncate_last_segment_at_every_offset() {
    let r = reference();
    let seed = seed_from_env("sweeps/truncate", 0x7A11);
    let mut rng = Rng(seed);
    let (fi, last_id) = r.segs[r.last_seg()];
    let full = r.files[fi].1.clone();
    let mut opens = 0u64;
    for cut in 0..=full.len() {
        for fill in ["none", "zeros", "random"] {
            let mut bytes = full[..cut].to_vec();
            match fill {
                "zeros" => bytes.resize(full.len(), 0),
                "random" => {
                    if cut == full.len() {
                        continue;
                    }
                    bytes.extend((cut..full.len()).map(|_| rng.next_u64() as u8));
                }
                _ => {}
            }
            let what = format!("cut at {cut} of {} (fill {fill})", full.len());
            let fs = fs_from_image(&with_file(&r.files, fi, bytes.clone()));
            let opened = Store::builder()
                .vfs(Arc::new(fs.clone()))
                .segment_size(SEG)
                .open(DIR);
            let store = match opened {
                Ok(s) => s,
                // Random bytes that replace the segment header are not a torn tail.
                Err(Error::Corrupt {
                    segment, offset: 0, ..
                }) if fill == "random" && cut < SEGMENT_HEADER_LEN && segment == last_id => {
                    continue;
                }
                Err(e) => panic!("{what}: open failed: {e:?}"),
            };
            opens += 1;
            let report = store.recovery_report().clone();
            r.h.check_prefix(&store)
                .unwrap_or_else(|v| panic!("{what}: {v}"));
            // Zeros refilled where the image had zeros (the high bytes of a timestamp that
            // ends a record, or of a header CRC: salts are random, so 1 run in 256 has one)
            // restore those bytes: the image is whole up to `intact`.
            let header_intact = bytes.get(..SEGMENT_HEADER_LEN) == full.get(..SEGMENT_HEADER_LEN);
            if cut < SEGMENT_HEADER_LEN && !header_intact {
                assert_eq!(report.removed_segments, vec![last_id], "{what}");
                assert_eq!(store.last_lsn().0, last_id.0 - 1, "{what}");
                continue;
            }
            let intact = cut
                + bytes[cut..]
                    .iter()
                    .zip(&full[cut..])
                    .take_while(|(a, b)| a == b)
                    .count();
            let (want_lsn, valid_end) = r.expected_lsn(intact);
            assert_eq!(
                store.last_lsn().0,
                want_lsn,
                "{what}: recovered to the wrong LSN"
            );
            let torn = report
                .torn_tail
                .as_ref()
                .map(|t| (t.segment, t.offset, t.bytes));
            if bytes[valid_end..].iter().all(|b| *b == 0) {
                // A clean cut, or zeros after it (preallocated space): a clean end.
                assert_eq!(torn, None, "{what}: a clean end reported as a torn tail");
            } else {
                // The torn bytes: up to the last non-zero one (what the cut zeroes).
                let nonzero = bytes[valid_end..].iter().rposition(|b| *b != 0).unwrap() + 1;
                assert_eq!(
                    torn,
                    Some((last_id, valid_end as u64, nonzero as u64)),
                    "{what}: torn tail misreported"
                );
            }
            // The cut store takes new appends, which a reopen finds after the kept prefix.
            if cut % 61 == 0 {
                store
                    .append_raw("after-cut", br#"{"role":"user"}"#)
                    .unwrap();
                drop(store);
                let again = Store::builder()
                    .vfs(Arc::new(fs))
                    .segment_size(SEG)
                    .open(DIR)
                    .unwrap_or_else(|e| panic!("{what}: reopen after an append failed: {e:?}"));
                assert_eq!(again.last_lsn().0, store_lsn_after(want_lsn), "{what}");
                assert_eq!(again.interaction_count("after-cut"), 1, "{what}");
                assert!(again.recovery_report().torn_tail.is_none(), "{what}");
            }
        }
    }
    eprintln!("sweeps/truncate: {opens} opens of cut images, every one a prefix");
}

/// Every bit of every segment header.
#[test]
fn flip_every_segment_header_bit() {
    let r = reference();
    let mut n = 0;
    for (si, &(fi, _)) in r.segs.iter().enumerate() {
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut bytes = r.files[fi].1.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let files = with_file(&r.files, fi, bytes);
            let what = format!("segment {si} header bit {bit}");
            assert_eq!(r.check_damage(&files, si, None, &what), Outcome::Corrupt);
            n += 1;
        }
    }
    eprintln!("sweeps/segment headers: {n} flips, all corruption");
}

/// Every bit of every record header (the fixed 44 bytes), in every segment.
#[test]
fn flip_every_record_header_bit() {
    let r = reference();
    let (mut corrupt, mut torn, mut by_zeros) = (0u64, 0u64, 0u64);
    for (ri, rec) in r.recs.iter().enumerate() {
        let fi = r.segs[rec.seg].0;
        for bit in 0..RECORD_HEADER_LEN * 8 {
            let mut bytes = r.files[fi].1.clone();
            bytes[rec.start + bit / 8] ^= 1 << (bit % 8);
            let files = with_file(&r.files, fi, bytes);
            let what = format!(
                "record {ri} (segment {}, LSN {}) header bit {bit}",
                rec.seg, rec.lsn
            );
            match r.check_damage(&files, rec.seg, Some(ri), &what) {
                Outcome::Corrupt => corrupt += 1,
                Outcome::Torn => torn += 1,
                Outcome::TornByZeros => by_zeros += 1,
            }
            if bit % 61 == 0 {
                r.check_salvage(&files, &what);
            }
            if bit % 8 == 0 {
                r.check_with_hints(&files, &what);
            }
        }
    }
    eprintln!(
        "sweeps/record headers: {} records, {} flips: {corrupt} corruption, {torn} torn tails \
         (last record), {by_zeros} taken for torn writes by the zero-sector rule",
        r.recs.len(),
        r.recs.len() * RECORD_HEADER_LEN * 8
    );
    assert_eq!(
        torn,
        RECORD_HEADER_LEN as u64 * 8,
        "every last-record flip is torn"
    );
}

/// A seeded sample of session-id and payload bits.
#[test]
fn flip_sampled_payload_and_session_bits() {
    let r = reference();
    let seed = seed_from_env("sweeps/payload", 0xB175);
    let mut rng = Rng(seed);
    let samples = common::count_from_env("CONVLOG_SWEEP_SAMPLES", 3000);
    let (mut corrupt, mut torn, mut by_zeros) = (0u64, 0u64, 0u64);
    // Records that carry a name or a payload (a pop that refers to its session is all header).
    let with_body: Vec<usize> = (0..r.recs.len())
        .filter(|&i| r.recs[i].end > r.recs[i].start + RECORD_HEADER_LEN)
        .collect();
    for i in 0..samples {
        // Every tenth sample hits the last record with a body, so torn tails are sampled too.
        let ri = if i % 10 == 0 {
            with_body[with_body.len() - 1]
        } else {
            with_body[rng.below(with_body.len() as u64) as usize]
        };
        let rec = r.recs[ri];
        let body = rec.start + RECORD_HEADER_LEN;
        let at = body + rng.below((rec.end - body) as u64) as usize;
        let bit = rng.below(8);
        let fi = r.segs[rec.seg].0;
        let mut bytes = r.files[fi].1.clone();
        bytes[at] ^= 1 << bit;
        let files = with_file(&r.files, fi, bytes);
        let part = if at < body + rec.name_len {
            "session"
        } else {
            "payload"
        };
        let what = format!(
            "record {ri} (segment {}, LSN {}) {part} byte {} bit {bit} (seed {seed:#x})",
            rec.seg,
            rec.lsn,
            at - rec.start
        );
        match r.check_damage(&files, rec.seg, Some(ri), &what) {
            Outcome::Corrupt => corrupt += 1,
            Outcome::Torn => torn += 1,
            Outcome::TornByZeros => by_zeros += 1,
        }
        if i % 7 == 0 {
            r.check_salvage(&files, &what);
        }
        r.check_with_hints(&files, &what);
    }
    eprintln!(
        "sweeps/payload: {samples} sampled flips: {corrupt} corruption, {torn} torn tails (last \
         record), {by_zeros} taken for torn writes by the zero-sector rule"
    );
}

/// Strict mode refuses even a torn tail; read-only opens report without changing a byte.
#[test]
fn strict_and_read_only_opens_of_a_torn_tail() {
    let r = reference();
    let (fi, last_id) = r.segs[r.last_seg()];
    let full = &r.files[fi].1;
    let cut = full.len() - 3;
    let files = with_file(&r.files, fi, full[..cut].to_vec());
    match r.open(&files, RecoveryMode::Strict) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, last_id),
        other => panic!("strict open of a torn tail: {:?}", other.map(|_| ())),
    }
    let fs = fs_from_image(&files);
    let store = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .read_only(true)
        .open(DIR)
        .unwrap();
    assert!(store.recovery_report().torn_tail.is_some());
    r.h.check_prefix(&store).unwrap();
    drop(store);
    assert_eq!(
        fs.read_file(&common::dir().join(last_id.file_name()))
            .unwrap()
            .len(),
        cut,
        "a read-only open changed the file"
    );
}

/// A store on the simulated file system with `n` messages of `len` bytes in session "s",
/// closed cleanly (so the active segment has a hint). Returns the file system, the first
/// segment's path and bytes, and the offset of its second record.
fn closed_store_and_second_record(
    seed: u64,
    n: u64,
    len: usize,
) -> (convlog::io::sim::SimFs, std::path::PathBuf, Vec<u8>, usize) {
    let fs = convlog::io::sim::SimFs::new(seed);
    let store = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .open(DIR)
        .unwrap();
    for i in 1..=n {
        store.append_raw("s", &common::payload(i, len)).unwrap();
    }
    drop(store); // a clean close writes the active segment's hint
    let seg = common::dir().join(SegmentId(1).file_name());
    let bytes = fs.read_file(&seg).unwrap();
    let salt = SegmentHeader::decode(&bytes).unwrap().salt;
    let Decoded::Record(first) = decode_record(&bytes[SEGMENT_HEADER_LEN..], salt, 1 << 24) else {
        panic!("no first record");
    };
    let second = SEGMENT_HEADER_LEN + first.framed_len();
    (fs, seg, bytes, second)
}

/// Regression (found by `flip_every_record_header_bit`, hint variant): when a hint lets
/// `open` skip scanning a segment, a record whose header was damaged afterwards (here its
/// payload length) must read as `Corrupt`; it read as an I/O error (`UnexpectedEof`), as if
/// the disk had failed.
#[test]
fn damaged_length_behind_a_hint_reads_as_corrupt() {
    let (fs, seg, mut bytes, second) = closed_store_and_second_record(3, 3, 120);
    bytes[second + 10] ^= 0x01; // payload length += 65536: past the end of the file
    fs.write_file(&seg, &bytes);
    let store = match Store::builder().vfs(Arc::new(fs)).open(DIR) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            // Scanned at open (no hint trusted for it): reported at once, which is fine.
            assert_eq!((segment, offset), (SegmentId(1), second as u64));
            return;
        }
        other => other.unwrap(),
    };
    let reads: Vec<_> = store.messages("s").raw().collect();
    assert!(reads[0].is_ok());
    match &reads[1] {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!((*segment, *offset), (SegmentId(1), second as u64));
        }
        other => panic!(
            "damaged record read as {:?} (hints used: {})",
            other.as_ref().map(|e| e.lsn),
            store.recovery_report().hints_used
        ),
    }
}

/// Regression (found by the `decode_record` fuzz target): a segment header whose reserved
/// fields (flags, bytes 12..16; reserved, bytes 40..44) are not zero, with a valid checksum,
/// was accepted, so it did not re-encode to the same bytes, and a segment from a writer that
/// gives those bits a meaning would be read as if they meant nothing. It must be refused.
#[test]
fn segment_header_with_reserved_fields_set_is_refused() {
    let header = SegmentHeader {
        first_lsn: convlog::Lsn(1),
        salt: 42,
        created: convlog::Timestamp(7),
        compacted: false,
    }
    .encode();
    for at in [12usize, 13, 40, 43] {
        let mut b = header;
        b[at] = 4;
        let crc = crc32fast_hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        assert!(
            SegmentHeader::decode(&b).is_err(),
            "reserved byte {at} set: header accepted"
        );
        let fs = convlog::io::sim::SimFs::new(1);
        fs.write_file(&common::dir().join(SegmentId(1).file_name()), &b);
        match Store::builder().vfs(Arc::new(fs)).open(DIR) {
            Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => {}
            other => panic!("reserved byte {at} set: open gave {:?}", other.map(|_| ())),
        }
    }
}

/// CRC-32 (IEEE), as the format uses: computed here so the test needs no extra crate.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Regression (found by the `open_image` fuzz target): a hint let `open` skip scanning the
/// last segment, so damage in it went unseen; the store took new appends after the damage,
/// and the next open (which must scan, the hint being stale) failed with `Corrupt`: a store
/// that opened, accepted writes and closed cleanly could not be opened again. Either the first
/// open reports the damage, or the store stays openable.
#[test]
fn damage_hidden_by_a_hint_does_not_make_the_next_open_fail() {
    let (fs, seg, mut bytes, second) = closed_store_and_second_record(4, 5, 80);
    bytes[second + RECORD_HEADER_LEN + 10] ^= 0x20; // a payload byte of message 2
    fs.write_file(&seg, &bytes);
    let open = || Store::builder().vfs(Arc::new(fs.clone())).open(DIR);
    let store = match open() {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (SegmentId(1), second as u64));
            return; // reported at once: fine
        }
        Err(e) => panic!("open failed with {e:?}"),
        Ok(store) => store,
    };
    // The first append verifies the segment the hint let `open` skip: it refuses to write
    // after damage, naming it, and the store stays openable.
    match store.append_raw("s", &common::payload(6, 80)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, SegmentId(1)),
        other => panic!("an append after hidden damage gave {:?}", other.map(|_| ())),
    }
    drop(store);
    if let Err(e) = open() {
        panic!("opened, refused an append, closed cleanly, then failed to open: {e}");
    }
}

/// Regression (found by the `open_image` fuzz target, second form): the newest segment was
/// an interrupted creation (a short header, then nothing), so recovery removed it and the
/// segment before it became the active one. That segment had been loaded from its hint
/// without a scan, so damage in it went unseen, new appends went after the damage, and the
/// next open failed with `Corrupt`.
#[test]
fn damage_hidden_by_a_hint_then_exposed_by_removing_an_interrupted_segment() {
    let fs = convlog::io::sim::SimFs::new(5);
    let store = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .segment_size(SEG)
        .open(DIR)
        .unwrap();
    let mut i = 0;
    while store.segment_ids().len() < 2 {
        i += 1;
        store.append_raw("s", &common::payload(i, 300)).unwrap();
    }
    drop(store); // every segment now has a hint
    let first = common::dir().join(SegmentId(1).file_name());
    let mut bytes = fs.read_file(&first).unwrap();
    let salt = SegmentHeader::decode(&bytes).unwrap().salt;
    let Decoded::Record(r) = decode_record(&bytes[SEGMENT_HEADER_LEN..], salt, 1 << 24) else {
        panic!("no first record");
    };
    let second = SEGMENT_HEADER_LEN + r.framed_len();
    bytes[second + RECORD_HEADER_LEN + 10] ^= 0x20; // a payload byte of message 2
    fs.write_file(&first, &bytes);
    // Replace the newest segment with an interrupted creation: 9 bytes of a header.
    let ids: Vec<SegmentId> = fs
        .paths()
        .iter()
        .filter_map(|p| SegmentId::parse_file_name(p.file_name()?.to_str()?))
        .collect();
    let newest = common::dir().join(ids.iter().max().unwrap().file_name());
    let head = fs.read_file(&newest).unwrap()[..9].to_vec();
    fs.write_file(&newest, &head);
    let open = || {
        Store::builder()
            .vfs(Arc::new(fs.clone()))
            .segment_size(SEG)
            .open(DIR)
    };
    let store = match open() {
        Err(Error::Corrupt { segment, .. }) => {
            assert_eq!(segment, SegmentId(1));
            return; // reported at once: fine
        }
        Err(e) => panic!("open failed with {e:?}"),
        Ok(store) => store,
    };
    // The first append verifies the segment the hint let `open` skip: it refuses to write
    // after damage, and the store stays openable.
    match store.append_raw("s", &common::payload(1000, 80)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, SegmentId(1)),
        other => panic!("an append after hidden damage gave {:?}", other.map(|_| ())),
    }
    drop(store);
    if let Err(e) = open() {
        panic!("opened, refused an append, closed cleanly, then failed to open: {e}");
    }
}
