//! Recovery: scan every segment, classify damage, cut torn tails, salvage, rebuild the index.
//!
//! Rules (DESIGN §5, `docs/format.md`):
//! - records must verify (both CRCs) and carry contiguous LSNs across the whole store;
//! - a run of records without a COMMIT flag is not applied until its commit record is seen;
//! - the first point `x` in a segment that is not a valid record ends it *cleanly* when
//!   every byte from `x` on is zero; otherwise it is a *torn tail* when it is in the last
//!   segment and either no valid record header follows `x`, or the bytes between `x` and the
//!   next valid header show a sector that never reached the disk: an aligned all-zero 512-byte
//!   sector (the etcd rule), or zeros from `x` to the end of its sector; anything else is
//!   *corruption*, and so is a record whose checksums hold but that is invalid (a bad session
//!   reference, an LSN out of order): a whole record is never a torn write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Damage, Error, Result};
use crate::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, Kind, RECORD_HEADER_LEN, RecordMeta, RecordRef,
    SEGMENT_HEADER_LEN, SegmentHeader, SegmentHeaderError, SessionField, decode_record,
    encode_record, header_verifies, resolve_session,
};
use crate::hint::{self, EventRef, LoadedHint};
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::{Index, Pos};
use crate::io::{Mapping, OpenMode, Vfs, VfsFile};
use crate::options::RecoveryMode;
use crate::segment::random_salt;

/// The session id of the `gap` records salvage writes (they belong to no session).
const GAP_SESSION: &[u8] = b"-";
/// Sector size assumed by the torn-write rule.
pub const SECTOR: usize = 512;
/// Directory (inside the store) where salvage keeps the bytes it dropped.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What the last open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Committed records replayed into the index.
    pub records: u64,
    /// Those records by kind (`"append"`, `"pop"`, `"truncate"`, `"clear"`, `"gap"`).
    pub records_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes of segment files scanned record by record.
    pub bytes_scanned: u64,
    /// Segments whose hint file was used instead of a scan.
    pub hints_used: usize,
    /// The last LSN recovered (0 for an empty store).
    pub last_lsn: Lsn,
    /// The torn tail found in the last segment, if any (cut off unless read-only or strict).
    pub torn_tail: Option<TornTail>,
    /// Last segments whose creation a crash interrupted (header never completed): removed.
    pub removed_segments: Vec<SegmentId>,
    /// Damaged ranges salvage dropped.
    pub dropped: Vec<DroppedRange>,
    /// Time the open's recovery took.
    pub duration: Duration,
}

impl RecoveryReport {
    /// `"clean"`, `"torn tail"` or `"salvaged"`.
    #[must_use]
    pub fn classification(&self) -> &'static str {
        if !self.dropped.is_empty() {
            "salvaged"
        } else if self.torn_tail.is_some() || !self.removed_segments.is_empty() {
            "torn tail"
        } else {
            "clean"
        }
    }
}

/// Bytes at the end of the last segment that were not a whole committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: SegmentId,
    /// Where the valid log ends (the cut point).
    pub offset: u64,
    /// How many bytes followed it.
    pub bytes: u64,
    /// Whether any of them was non-zero.
    pub nonzero: bool,
}

/// A damaged range that salvage dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// The segment.
    pub segment: SegmentId,
    /// Offset of the first dropped byte.
    pub offset: u64,
    /// Bytes dropped.
    pub len: u64,
    /// What was wrong at `offset`.
    pub damage: Damage,
    /// Where the dropped bytes were copied (`None` on a read-only open).
    pub quarantined: Option<PathBuf>,
}

/// A recovered segment, ready for the store.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    pub(crate) id: SegmentId,
    pub(crate) salt: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) map: Option<Mapping>,
    /// End of the last committed record (the append point of the last segment).
    pub(crate) valid_end: u64,
    /// Whether it was loaded from its hint, unscanned.
    pub(crate) from_hint: bool,
}

/// Everything recovery rebuilt.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: Vec<RecoveredSegment>,
    pub(crate) index: Index,
    pub(crate) next_lsn: Lsn,
    pub(crate) last_ts: Timestamp,
    pub(crate) report: RecoveryReport,
}

/// One step of a salvage rewrite plan for a segment.
#[derive(Debug, Clone, Copy)]
enum PlanItem {
    Keep(u64),
    Gap { lsn: u64, count: u64 },
}

#[derive(Debug, Default)]
struct SegmentPlan {
    items: Vec<PlanItem>,
    rewrite: bool,
}

/// A verified record of a batch whose commit has not been seen yet.
struct Pending<'m> {
    off: u64,
    meta: RecordMeta,
    /// Its session id, borrowed from the segment's map.
    session: &'m str,
}

struct Scanner<'a> {
    vfs: &'a dyn Vfs,
    dir: &'a Path,
    mode: RecoveryMode,
    read_only: bool,
    segments: Vec<RecoveredSegment>,
    plans: Vec<SegmentPlan>,
    index: Index,
    /// The LSN the next record must carry (`None` before the first segment).
    expected: Option<Lsn>,
    last_ts: Timestamp,
    /// Salt of the segment being scanned.
    current_salt: u64,
    report: RecoveryReport,
}

/// Recovers the store in `dir`: returns the index and segments, or a typed error.
pub(crate) fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    mode: RecoveryMode,
    read_only: bool,
) -> Result<Recovered> {
    let started = Instant::now();
    let mut ids: Vec<SegmentId> = vfs
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .iter()
        .filter_map(|n| SegmentId::parse_file_name(n))
        .collect();
    ids.sort();
    let mut s = Scanner {
        vfs,
        dir,
        mode,
        read_only,
        segments: Vec::new(),
        plans: Vec::new(),
        index: Index::default(),
        expected: None,
        last_ts: Timestamp(0),
        current_salt: 0,
        report: RecoveryReport::default(),
    };
    for (i, id) in ids.iter().enumerate() {
        s.segment(*id, i + 1 == ids.len())?;
    }
    if mode == RecoveryMode::Salvage && !read_only && s.plans.iter().any(|p| p.rewrite) {
        let dropped = s.rewrite_damaged()?;
        let torn_tail = s.report.torn_tail;
        drop(s);
        let mut again = recover(vfs, dir, RecoveryMode::PointInTime, false)?;
        again.report.dropped = dropped;
        // A torn tail in a rewritten last segment is gone from the second pass's view.
        again.report.torn_tail = again.report.torn_tail.or(torn_tail);
        again.report.duration = started.elapsed();
        return Ok(again);
    }
    let next_lsn = s.expected.unwrap_or(Lsn::FIRST);
    s.report.last_lsn = Lsn(next_lsn.0.saturating_sub(1));
    s.report.duration = started.elapsed();
    Ok(Recovered {
        segments: s.segments,
        index: s.index,
        next_lsn,
        last_ts: s.last_ts,
        report: s.report,
    })
}

impl Scanner<'_> {
    fn corrupt(&self, segment: SegmentId, offset: u64, damage: Damage) -> Error {
        Error::Corrupt {
            segment,
            offset,
            damage,
        }
    }

    fn segment(&mut self, id: SegmentId, is_last: bool) -> Result<()> {
        let path = self.dir.join(id.file_name());
        let mode = if is_last && !self.read_only {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let file = self
            .vfs
            .open(&path, mode)
            .map_err(|e| Error::io("open", &path, e))?;
        let map = file.map().map_err(|e| Error::io("map", &path, e))?;
        self.report.segments_scanned += 1;

        let header = match SegmentHeader::decode(&map) {
            Ok(h) => h,
            Err(SegmentHeaderError::Version(found)) => {
                return Err(Error::UnsupportedVersion {
                    path,
                    found,
                    supported: crate::format::FORMAT_VERSION,
                });
            }
            Err(e)
                if is_last
                    && e != SegmentHeaderError::Reserved
                    && all_zero(map.get(SEGMENT_HEADER_LEN..).unwrap_or(&[])) =>
            {
                // A crash interrupted the segment's creation: nothing was ever in it.
                if self.mode == RecoveryMode::Strict {
                    return Err(self.corrupt(id, 0, header_damage(&e)));
                }
                self.report.removed_segments.push(id);
                // The previous segment becomes the last: read it as the active one.
                if let Some(prev) = self.segments.last_mut() {
                    prev.map = None;
                    if !self.read_only {
                        prev.file = self
                            .vfs
                            .open(&prev.path, OpenMode::ReadWrite)
                            .map_err(|e| Error::io("open", &prev.path, e))?;
                    }
                }
                if !self.read_only {
                    drop(map);
                    drop(file);
                    self.vfs
                        .remove_file(&path)
                        .map_err(|e| Error::io("remove", &path, e))?;
                    self.vfs
                        .sync_dir(self.dir)
                        .map_err(|e| Error::io("fsync directory", self.dir, e))?;
                }
                return Ok(());
            }
            Err(e) => return Err(self.corrupt(id, 0, header_damage(&e))),
        };
        if header.first_lsn.0 != id.0 {
            return Err(self.corrupt(
                id,
                0,
                Damage::SegmentLsnMismatch {
                    expected: id.0,
                    found: header.first_lsn.0,
                },
            ));
        }
        match self.expected {
            Some(exp) if exp.0 > id.0 => {
                return Err(self.corrupt(
                    id,
                    0,
                    Damage::LsnGap {
                        expected: exp.0,
                        found: id.0,
                    },
                ));
            }
            Some(exp) if exp.0 < id.0 => {
                let damage = Damage::LsnGap {
                    expected: exp.0,
                    found: id.0,
                };
                if self.mode != RecoveryMode::Salvage {
                    return Err(self.corrupt(id, 0, damage));
                }
                // Records between the previous segment and this one are missing: the
                // previous segment's rewrite ends with a gap record covering them.
                let prev = self.segments.last().map_or(id, |s| s.id);
                self.report.dropped.push(DroppedRange {
                    segment: prev,
                    offset: self.segments.last().map_or(0, |s| s.valid_end),
                    len: 0,
                    damage,
                    quarantined: None,
                });
                if let Some(plan) = self.plans.last_mut() {
                    plan.items.push(PlanItem::Gap {
                        lsn: exp.0,
                        count: id.0 - exp.0,
                    });
                    plan.rewrite = true;
                }
            }
            _ => {}
        }
        self.expected = Some(header.first_lsn);
        let ordinal = self.segments.len() as u32;
        self.current_salt = header.salt;
        let hint = (self.mode == RecoveryMode::PointInTime)
            .then(|| hint::load(self.vfs, self.dir, id))
            .flatten()
            .filter(|h| {
                h.header.first_lsn == header.first_lsn
                    && h.header.salt == header.salt
                    && h.header.valid_len == map.len() as u64
            });
        let from_hint = hint.is_some();
        let valid_end = match hint {
            Some(h) => {
                self.apply_hint(ordinal, &h, &map);
                self.report.hints_used += 1;
                h.header.valid_len
            }
            None => {
                let end = self.records(id, ordinal, header.salt, &map, is_last)?;
                // A sealed segment without a valid hint: write it now (best effort), so the
                // next open need not scan it again.
                if self.mode == RecoveryMode::PointInTime
                    && !self.read_only
                    && !is_last
                    && let Some(h) = hint::build(&map, header.first_lsn, header.salt)
                {
                    let _ = hint::store(self.vfs, self.dir, id, &h);
                }
                end
            }
        };
        let keep_map = !is_last;
        self.segments.push(RecoveredSegment {
            id,
            salt: header.salt,
            path,
            file,
            map: keep_map.then_some(map),
            valid_end,
            from_hint,
        });
        Ok(())
    }

    /// Scans the records of one segment, applying committed ones. Returns the valid end.
    fn records(
        &mut self,
        id: SegmentId,
        ordinal: u32,
        salt: u64,
        map: &Mapping,
        is_last: bool,
    ) -> Result<u64> {
        let salvage = self.mode == RecoveryMode::Salvage;
        self.report.bytes_scanned += map.len() as u64;
        let mut plan = SegmentPlan::default();
        let mut pending: Vec<Pending> = Vec::new();
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut committed_end = off;
        let mut expected = self.expected.unwrap_or(Lsn::FIRST);
        let mut committed_next = expected;
        let len = map.len() as u64;
        loop {
            let rest = map.get(off as usize..).unwrap_or(&[]);
            // The length of a record whose checksums hold but that is invalid all the same.
            let mut whole = None;
            let damage = match decode_record(rest, salt, DEFAULT_MAX_RECORD_LEN) {
                Decoded::Record(r) => match session_str(map, off, &r, salt).and_then(|session| {
                    if r.meta.lsn.0 < expected.0 || (r.meta.lsn.0 > expected.0 && !salvage) {
                        Err(Damage::LsnGap {
                            expected: expected.0,
                            found: r.meta.lsn.0,
                        })
                    } else {
                        Ok(session)
                    }
                }) {
                    Err(d) => {
                        whole = Some(r.framed_len() as u64);
                        d
                    }
                    Ok(session) => {
                        if r.meta.lsn.0 > expected.0 {
                            // Salvage: LSNs lost before this record (dropped earlier).
                            plan.items.push(PlanItem::Gap {
                                lsn: expected.0,
                                count: r.meta.lsn.0 - expected.0,
                            });
                            plan.rewrite = true;
                        }
                        let covered = if r.meta.kind == Kind::Gap {
                            r.meta.arg.max(1)
                        } else {
                            1
                        };
                        expected = Lsn(r.meta.lsn.0.saturating_add(covered));
                        pending.push(Pending {
                            off,
                            meta: r.meta,
                            session,
                        });
                        off += r.framed_len() as u64;
                        if r.meta.commit {
                            for p in pending.drain(..) {
                                plan.items.push(PlanItem::Keep(p.off));
                                self.apply(ordinal, &p, map);
                            }
                            committed_end = off;
                            committed_next = expected;
                        }
                        continue;
                    }
                },
                Decoded::UnknownKind(kind) => {
                    return Err(Error::UnknownRecordKind {
                        segment: id,
                        offset: off,
                        kind,
                        version: crate::format::FORMAT_VERSION,
                    });
                }
                Decoded::End if all_zero(rest) => {
                    // Clean end. An uncommitted run before it is torn (last) or damage.
                    if pending.is_empty() {
                        break;
                    }
                    Damage::UncommittedBatch
                }
                Decoded::End => Damage::BadField {
                    field: "zero header",
                },
                Decoded::Damaged(d) => d,
            };
            // `off` is not a valid record: classify from the start of the uncommitted run. A
            // record whose checksums hold was written whole, so it is never a torn write.
            let x = committed_end;
            let next = match whole {
                Some(n) => Some(off + n).filter(|end| *end < len),
                None => find_header(map, off + 1, salt),
            };
            let torn = is_last
                && whole.is_none()
                && match next {
                    None => true,
                    Some(y) => has_zero_sector(map, x, y),
                };
            if torn {
                pending.clear();
                break;
            }
            if !salvage {
                return Err(self.corrupt(id, off, damage));
            }
            let resume = next.unwrap_or(len);
            pending.clear();
            expected = committed_next;
            plan.rewrite = true;
            match self.report.dropped.last_mut() {
                // Adjacent damage (records that lost their session with the one naming it,
                // say) makes one range, named by its first damage.
                Some(d) if d.segment == id && d.offset + d.len == x => d.len = resume - d.offset,
                _ => self.report.dropped.push(DroppedRange {
                    segment: id,
                    offset: x,
                    len: resume - x,
                    damage,
                    quarantined: None,
                }),
            }
            off = resume;
            committed_end = resume;
            if resume >= len {
                break;
            }
        }
        // Non-zero bytes after the valid end of the last segment are a torn tail (zeros are
        // preallocated space: a clean end).
        let tail = map.get(committed_end as usize..).unwrap_or(&[]);
        if is_last && !all_zero(tail) {
            let nonzero = true;
            if self.mode == RecoveryMode::Strict {
                return Err(self.corrupt(
                    id,
                    committed_end,
                    Damage::TornTail {
                        len: len - committed_end,
                    },
                ));
            }
            self.report.torn_tail = Some(TornTail {
                segment: id,
                offset: committed_end,
                bytes: len - committed_end,
                nonzero,
            });
        }
        self.expected = Some(committed_next);
        self.plans.push(plan);
        Ok(committed_end)
    }

    fn apply_hint(&mut self, ordinal: u32, h: &LoadedHint, map: &Mapping) {
        for (kind, n) in Kind::ALL.iter().zip(h.header.kinds) {
            if n > 0 {
                *self.report.records_by_kind.entry(kind.name()).or_default() += n;
                self.report.records += n;
            }
        }
        let salt = h.header.salt;
        if ordinal == 0 {
            self.index.reserve(h.header.sessions as usize);
        }
        // The index keeps the hint mapped: runs of appends stay in it, uncopied.
        self.index.map_hint(ordinal, h.bytes().clone());
        let segments = &self.segments;
        let index = &mut self.index;
        let mut last_ts = self.last_ts;
        h.for_each(|session, event| {
            let keep = match event {
                EventRef::Appends {
                    first,
                    last,
                    offsets,
                } => {
                    index.append_run(session, ordinal, offsets, first, last);
                    last_ts = last_ts.max(last);
                    return;
                }
                EventRef::Pop(n) => index.count(session).saturating_sub(n),
                EventRef::Truncate(k) => k,
            };
            index.truncate(session, keep, |q| {
                timestamp_at(segments, ordinal, map, salt, q)
            });
        });
        self.last_ts = last_ts;
        self.expected = Some(h.header.next_lsn);
        self.plans.push(SegmentPlan::default());
    }

    fn apply(&mut self, ordinal: u32, p: &Pending<'_>, map: &Mapping) {
        let pos = Pos {
            seg: ordinal,
            off: p.off as u32,
        };
        self.report.records += 1;
        *self
            .report
            .records_by_kind
            .entry(p.meta.kind.name())
            .or_default() += 1;
        self.last_ts = self.last_ts.max(p.meta.timestamp);
        let segments = &self.segments;
        let own_salt = self.current_salt;
        let ts_of = |q: Pos| timestamp_at(segments, ordinal, map, own_salt, q);
        match p.meta.kind {
            Kind::Append => self.index.append(p.session, pos, p.meta.timestamp),
            Kind::Pop => {
                let keep = self.index.count(p.session).saturating_sub(1);
                self.index.truncate(p.session, keep, ts_of);
            }
            Kind::Truncate => {
                self.index.truncate(p.session, p.meta.arg, ts_of);
            }
            Kind::Clear => {
                self.index.truncate(p.session, 0, ts_of);
            }
            Kind::Gap => {}
        }
    }

    /// Salvage: copies dropped ranges to `quarantine/`, rewrites each damaged segment
    /// without them (atomically, by rename) and returns the ranges with their copies' paths.
    fn rewrite_damaged(&mut self) -> Result<Vec<DroppedRange>> {
        let qdir = self.dir.join(QUARANTINE_DIR);
        self.vfs
            .create_dir_all(&qdir)
            .map_err(|e| Error::io("create directory", &qdir, e))?;
        let mut dropped = std::mem::take(&mut self.report.dropped);
        for d in dropped.iter_mut().filter(|d| d.len > 0) {
            let Some(seg) = self.segments.iter().find(|s| s.id == d.segment) else {
                continue;
            };
            let bytes = read_range(seg, d.offset, d.len)?;
            let path = qdir.join(format!("{:020}-{:012}.bin", d.segment.0, d.offset));
            write_new_file(self.vfs, &path, &bytes)?;
            d.quarantined = Some(path);
        }
        self.vfs
            .sync_dir(&qdir)
            .map_err(|e| Error::io("fsync directory", &qdir, e))?;
        for (seg, plan) in self.segments.iter().zip(&self.plans) {
            if !plan.rewrite {
                continue;
            }
            let whole = seg.file.map().map_err(|e| Error::io("map", &seg.path, e))?;
            let salt = random_salt();
            let mut out = SegmentHeader {
                first_lsn: Lsn(seg.id.0),
                salt,
                created: Timestamp::now(),
            }
            .encode()
            .to_vec();
            // Kept records are re-encoded under the new salt, and their sessions named
            // afresh: the records that named them may be among the dropped ones.
            let mut named: HashMap<&[u8], u32> = HashMap::new();
            let mut put = |out: &mut Vec<u8>, meta: &RecordMeta, session, payload: &[u8]| {
                let field = match named.get(session) {
                    Some(&at) => SessionField::Ref(at),
                    None => {
                        named.insert(session, out.len() as u32);
                        SessionField::Named(session)
                    }
                };
                encode_record(out, salt, meta, field, payload);
            };
            for item in &plan.items {
                match *item {
                    PlanItem::Keep(off) => {
                        // The scan verified this record; if it no longer does, the file changed
                        // under us: stop before renaming anything over it.
                        let rest = whole.get(off as usize..).unwrap_or(&[]);
                        let (r, session) =
                            match decode_record(rest, seg.salt, DEFAULT_MAX_RECORD_LEN) {
                                Decoded::Record(r) => resolve_session(&whole, off, &r, seg.salt)
                                    .map(|session| (r, session)),
                                other => Err(crate::format::decode_damage(other)),
                            }
                            .map_err(|damage| Error::Corrupt {
                                segment: seg.id,
                                offset: off,
                                damage,
                            })?;
                        put(&mut out, &r.meta, session, r.payload);
                    }
                    PlanItem::Gap { lsn, count } => {
                        let meta = RecordMeta {
                            kind: Kind::Gap,
                            commit: true,
                            lsn: Lsn(lsn),
                            arg: count,
                            timestamp: Timestamp::now(),
                        };
                        put(&mut out, &meta, GAP_SESSION, &[]);
                    }
                }
            }
            let tmp = seg.path.with_extension("seg.salvage");
            let _ = self.vfs.remove_file(&tmp);
            write_new_file(self.vfs, &tmp, &out)?;
            self.vfs
                .rename(&tmp, &seg.path)
                .map_err(|e| Error::io("rename", &tmp, e))?;
            self.vfs
                .sync_dir(self.dir)
                .map_err(|e| Error::io("fsync directory", self.dir, e))?;
            // The old hint names the old salt and is ignored; give the new file its own
            // (best effort, as every hint: without it the segment is scanned).
            if let Some(h) = hint::build(&out, Lsn(seg.id.0), salt) {
                let _ = hint::store(self.vfs, self.dir, seg.id, &h);
            }
        }
        Ok(dropped)
    }
}

/// The timestamp of the record at `pos`: in the segment being recovered (`ordinal`, not yet
/// in `segments`) or in an earlier one. 0 if it cannot be read (it was verified before).
fn timestamp_at(
    segments: &[RecoveredSegment],
    ordinal: u32,
    map: &[u8],
    salt: u64,
    pos: Pos,
) -> Timestamp {
    let (bytes, salt): (&[u8], u64) = if pos.seg == ordinal {
        (map, salt)
    } else {
        match segments.get(pos.seg as usize) {
            Some(s) => (s.map.as_deref().unwrap_or(&[]), s.salt),
            None => (&[], 0),
        }
    };
    match decode_record(
        bytes.get(pos.off as usize..).unwrap_or(&[]),
        salt,
        DEFAULT_MAX_RECORD_LEN,
    ) {
        Decoded::Record(r) => r.meta.timestamp,
        _ => Timestamp(0),
    }
}

/// Verifies every record of `bytes[SEGMENT_HEADER_LEN..end]` (both CRCs, contiguous LSNs
/// from `first_lsn`, the last record committed): the scan a hint let `open` skip, run before
/// the first append to that segment so that new records never go after hidden damage.
pub(crate) fn verify_records(bytes: &[u8], id: SegmentId, salt: u64, end: u64) -> Result<()> {
    let mut off = SEGMENT_HEADER_LEN as u64;
    let mut expected = id.0;
    let mut committed = true;
    while off < end {
        let rest = bytes.get(off as usize..end as usize).unwrap_or(&[]);
        let damage = match decode_record(rest, salt, DEFAULT_MAX_RECORD_LEN) {
            Decoded::Record(r) if r.meta.lsn.0 == expected => {
                match session_str(bytes, off, &r, salt) {
                    Err(d) => d,
                    Ok(_) => {
                        expected += if r.meta.kind == Kind::Gap {
                            r.meta.arg.max(1)
                        } else {
                            1
                        };
                        committed = r.meta.commit;
                        off += r.framed_len() as u64;
                        continue;
                    }
                }
            }
            Decoded::Record(r) => Damage::LsnGap {
                expected,
                found: r.meta.lsn.0,
            },
            Decoded::Damaged(d) => d,
            Decoded::End | Decoded::UnknownKind(_) => Damage::BadField { field: "record" },
        };
        return Err(Error::Corrupt {
            segment: id,
            offset: off,
            damage,
        });
    }
    if !committed {
        return Err(Error::Corrupt {
            segment: id,
            offset: end,
            damage: Damage::UncommittedBatch,
        });
    }
    Ok(())
}

fn header_damage(e: &SegmentHeaderError) -> Damage {
    match e {
        SegmentHeaderError::Short => Damage::ShortSegment,
        SegmentHeaderError::BadMagic => Damage::BadMagic,
        SegmentHeaderError::Checksum | SegmentHeaderError::Version(_) => {
            Damage::SegmentHeaderChecksum
        }
        SegmentHeaderError::Reserved => Damage::BadField {
            field: "segment header reserved field",
        },
    }
}

fn read_range(seg: &RecoveredSegment, offset: u64, len: u64) -> Result<Vec<u8>> {
    let map = seg.file.map().map_err(|e| Error::io("map", &seg.path, e))?;
    Ok(map
        .get(offset as usize..(offset + len) as usize)
        .unwrap_or(&[])
        .to_vec())
}

fn write_new_file(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> Result<()> {
    let _ = vfs.remove_file(path);
    let f = vfs
        .open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", path, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", path, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", path, e))
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// The first offset at or after `from` where a record header with a valid checksum starts.
fn find_header(map: &[u8], from: u64, salt: u64) -> Option<u64> {
    let last = map.len().checked_sub(RECORD_HEADER_LEN)?;
    (from as usize..=last)
        .find(|&off| header_verifies(&map[off..], salt))
        .map(|o| o as u64)
}

/// The session id of `r`, decoded at `off` of `map`: resolved and checked to be UTF-8.
fn session_str<'m>(
    map: &'m [u8],
    off: u64,
    r: &RecordRef<'m>,
    salt: u64,
) -> Result<&'m str, Damage> {
    let bytes = resolve_session(map, off, r, salt)?;
    std::str::from_utf8(bytes).map_err(|_| Damage::BadField {
        field: "session id",
    })
}

/// Whether `[from, to)` shows a sector that never reached the disk: an aligned all-zero
/// sector wholly inside it, or zeros from `from` to the end of `from`'s sector (the sector
/// that held the durable end kept its old content: the durable prefix, then zeros).
fn has_zero_sector(map: &[u8], from: u64, to: u64) -> bool {
    let from = from as usize;
    let end = (to as usize).min(map.len());
    let first = from.div_ceil(SECTOR) * SECTOR;
    if first > from && first <= end && all_zero(&map[from..first]) {
        return true;
    }
    (first..end)
        .step_by(SECTOR)
        .any(|s| s + SECTOR <= end && all_zero(&map[s..s + SECTOR]))
}
