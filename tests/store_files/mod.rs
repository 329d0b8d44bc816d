//! Helpers for tests that look at (and damage) a store's files on disk.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use convlog::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, SEGMENT_HEADER_LEN, SegmentHeader, SessionField,
    decode_record, encode_record, resolve_session,
};

/// Every file under `dir`, recursively, read whole (for marker searches).
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files of `dir` with extension `ext`, sorted (for segments and hints: in LSN order).
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The segment files of `dir`, in LSN order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files(dir, "seg")
}

/// Removes the hint files, so that open scans every segment (hints skip the scan of segments
/// that a clean close or a seal summarized).
pub fn drop_hints(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "hint") {
            fs::remove_file(p).unwrap();
        }
    }
}

/// What `convlog verify` does: a strict, read-only open (every record of every segment read).
pub fn verify(dir: &Path) -> convlog::Result<convlog::Store> {
    convlog::Store::builder()
        .recovery(convlog::RecoveryMode::Strict)
        .read_only(true)
        .open(dir)
}

/// One record of a segment file, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub off: u64,
    pub len: u64,
    /// Whether the record names its session (rather than referring to one that does).
    pub named: bool,
    pub session: String,
}

/// Every record of a segment file up to its first invalid one, sessions resolved.
pub fn records(seg: &Path) -> Vec<Rec> {
    let bytes = fs::read(seg).unwrap();
    let salt = SegmentHeader::decode(&bytes).unwrap().salt;
    let mut off = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Decoded::Record(r) = decode_record(&bytes[off..], salt, DEFAULT_MAX_RECORD_LEN) {
        let Ok(name) = resolve_session(&bytes, off as u64, &r, salt) else {
            break;
        };
        out.push(Rec {
            off: off as u64,
            len: r.framed_len() as u64,
            named: matches!(r.session, SessionField::Named(_)),
            session: String::from_utf8(name.to_vec()).unwrap(),
        });
        off += r.framed_len();
    }
    out
}

/// Where a segment's valid records end (decoded, not guessed from the last non-zero byte: a
/// record may end in zero bytes).
pub fn records_end(seg: &Path) -> u64 {
    records(seg)
        .last()
        .map_or(SEGMENT_HEADER_LEN as u64, |r| r.off + r.len)
}

/// Rewrites the referring record at `off` of `seg` to refer to offset `at` instead, with
/// valid checksums: damage only the session resolution can find.
pub fn rewrite_ref(seg: &Path, off: u64, at: u32) {
    let mut bytes = fs::read(seg).unwrap();
    let salt = SegmentHeader::decode(&bytes).unwrap().salt;
    let off = off as usize;
    let Decoded::Record(r) = decode_record(&bytes[off..], salt, DEFAULT_MAX_RECORD_LEN) else {
        panic!("no record at {off}");
    };
    assert!(matches!(r.session, SessionField::Ref(_)), "not a reference");
    let mut out = Vec::new();
    encode_record(
        &mut out,
        salt,
        &r.meta,
        SessionField::Ref(at),
        r.key,
        r.payload,
    );
    assert_eq!(out.len(), r.framed_len());
    bytes[off..off + out.len()].copy_from_slice(&out);
    fs::write(seg, bytes).unwrap();
}
