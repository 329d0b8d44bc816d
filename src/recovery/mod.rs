//! Recovery: read every segment through the one segment reader, classify what it stops at,
//! cut torn tails, salvage, and rebuild the index through the one fold.
//!
//! - [`scan`] reads the segments in LSN order, applies committed units (or a segment's hint)
//!   to the index, and classifies each stop: a clean end, a torn tail, or corruption;
//! - [`salvage`] (in [`RecoveryMode::Salvage`]) sets damaged bytes and unreadable files
//!   aside in `quarantine/` and rewrites the damaged segments without them.
//!
//! The rules are in `docs/format.md` ("Recovery").

mod keys;
mod salvage;
mod scan;

pub(crate) use keys::{Keys, lost_unit};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Damage, Result};
use crate::format::Kind;
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::Index;
use crate::io::{Dir, LOCK_FILE, LockMode, Mapping, Vfs, VfsFile, WRITERS_FILE};
use crate::segment::{Stop, Why, all_zero, find_committed};

/// Sector size assumed by the torn-write rule.
pub const SECTOR: usize = 512;
/// Directory (inside the store) where recovery keeps the bytes it cut or dropped.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What `open` does with damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any damage, even a torn tail, fails the open with [`crate::Error::Corrupt`]; nothing
    /// is changed. Every segment is read in full (hints are not trusted).
    Strict,
    /// A torn tail (damage in the last segment, past its last known durable point, after
    /// which no whole record follows, or only after a sector that never reached the disk) is
    /// cut off, its bytes kept in `quarantine/`; any other damage fails the open with
    /// [`crate::Error::Corrupt`]. The default.
    #[default]
    PointInTime,
    /// Keeps every valid record and never half a unit (batch). Damaged bytes, and files that
    /// are not readable segments, are moved or copied to `quarantine/` and, on a writable
    /// open, each damaged segment is rewritten without them (a `gap` record stands in for
    /// lost LSNs). The report lists what was dropped. **Data in the damaged ranges is lost**
    /// to the store (but kept aside).
    Salvage,
}

/// How an open found the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Classification {
    /// Every record read was valid and the log ended cleanly.
    Clean,
    /// A write that a crash interrupted was found at the end of the log (and cut off, on a
    /// writable open).
    TornTail,
    /// Salvage dropped damaged ranges or set files aside.
    Salvaged,
}

impl Classification {
    /// `"clean"`, `"torn tail"` or `"salvaged"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Classification::Clean => "clean",
            Classification::TornTail => "torn tail",
            Classification::Salvaged => "salvaged",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the last open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files read record by record.
    pub segments_scanned: usize,
    /// Segments loaded from their hint files instead: **not checked** by this open (every
    /// read checks the records it returns; `Strict` opens, as `convlog verify`, check all).
    pub hints_used: usize,
    /// Committed records replayed into the index (from scans and hints).
    pub records: u64,
    /// Those records by kind.
    pub records_by_kind: BTreeMap<Kind, u64>,
    /// Bytes of segment files scanned record by record.
    pub bytes_scanned: u64,
    /// The last LSN recovered (0 for an empty store).
    pub last_lsn: Lsn,
    /// The torn tail found in the last segment, if any (cut off unless read-only or strict).
    pub torn_tail: Option<TornTail>,
    /// A read-only open that found another process holding the write lock: the last segment
    /// was read up to its last committed unit, and the bytes after it (the writer's, not yet
    /// written whole) were left unclassified: this many.
    pub live_tail: Option<u64>,
    /// Last segments whose creation a crash interrupted (header never completed): removed.
    pub removed_segments: Vec<SegmentId>,
    /// Damaged ranges salvage dropped (and files it set aside).
    pub dropped: Vec<DroppedRange>,
    /// Segments a compaction replaced that a crash left behind, after the compacted
    /// segment that holds what they held: ignored (and removed, on a writable open).
    pub superseded: Vec<SegmentId>,
    /// Time the open's recovery took.
    pub duration: Duration,
}

impl RecoveryReport {
    /// How the open found the store.
    #[must_use]
    pub fn classification(&self) -> Classification {
        if !self.dropped.is_empty() {
            Classification::Salvaged
        } else if self.torn_tail.is_some() || !self.removed_segments.is_empty() {
            Classification::TornTail
        } else {
            Classification::Clean
        }
    }

    fn count(&mut self, kind: Kind, n: u64) {
        if n > 0 {
            let by_kind = self.records_by_kind.entry(kind).or_default();
            *by_kind = by_kind.saturating_add(n);
            self.records = self.records.saturating_add(n);
        }
    }
}

/// Bytes at the end of the last segment that were not a whole committed unit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment.
    pub segment: SegmentId,
    /// Where the valid log ends (the cut point).
    pub offset: u64,
    /// How many bytes from there on were not zero (what the cut overwrote with zeros).
    pub bytes: u64,
    /// Where those bytes were copied before the cut (`None` when the open changed nothing).
    pub quarantined: Option<PathBuf>,
}

/// A damaged range that salvage dropped, or a file it set aside whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedRange {
    /// The segment (for a file set aside: the segment its name claims).
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
    /// Whether compaction wrote it (its LSNs may skip).
    pub(crate) compacted: bool,
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

/// Recovers the store in `dir`: returns the index and segments, or a typed error.
pub(crate) fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    mode: RecoveryMode,
    read_only: bool,
    keys: Option<&dyn Keys>,
) -> Result<Recovered> {
    let started = Instant::now();
    let dir = Dir::new(vfs, dir);
    let mut scan = scan_consistent(dir, mode, read_only, keys)?;
    if mode == RecoveryMode::Salvage && !read_only && scan.needs_rewrite() {
        let (dropped, torn_tail) = salvage::rewrite(&mut scan)?;
        drop(scan);
        let mut again = recover(vfs, dir.path, RecoveryMode::PointInTime, false, keys)?;
        again.report.dropped = dropped;
        // A torn tail in a rewritten last segment is gone from the second pass's view.
        again.report.torn_tail = again.report.torn_tail.or(torn_tail);
        again.report.duration = started.elapsed();
        return Ok(again);
    }
    let mut rec = scan.finish()?;
    rec.report.duration = started.elapsed();
    Ok(rec)
}

/// Reads the store's segments again, changing nothing and judging nothing past the last
/// committed unit (as a read-only open beside a live writer does): what an open store does
/// when a compaction replaced segments under it.
///
/// # Errors
/// As a read-only open: [`Error::Corrupt`], [`Error::Io`], ... (a directory that changed
/// while it was read, too: the caller tries again later).
pub(crate) fn reload(vfs: &dyn Vfs, dir: &Path) -> Result<Recovered> {
    let mut scan = scan::Scan::new(Dir::new(vfs, dir), RecoveryMode::PointInTime, true, true)?;
    scan.run()?;
    scan.finish()
}

/// Reads the store once. A read-only open beside a writer may list the directory while the
/// writer creates a segment (a listing is no snapshot: it can miss a new file and show a
/// newer one) and then see a gap that is not there, or start before a writer does and then
/// see its unfinished write: when a read-only scan fails (or finds a torn tail) and the
/// segment files listed have changed since, or a writer has started, it reads again (a few
/// times at most).
fn scan_consistent<'a>(
    dir: Dir<'a>,
    mode: RecoveryMode,
    read_only: bool,
    keys: Option<&'a dyn Keys>,
) -> Result<scan::Scan<'a>> {
    const ATTEMPTS: usize = 5;
    // A writer is open (any writer holds `WRITERS`), or writing (`LOCK`, for a writer of
    // an older build that took only that).
    let is_live = || {
        let held = |name, mode| dir.vfs.is_locked(&dir.join(name), mode).unwrap_or(false);
        read_only && (held(WRITERS_FILE, LockMode::Exclusive) || held(LOCK_FILE, LockMode::Shared))
    };
    let mut attempt = 1;
    loop {
        // A read-only open beside a live writer must not take the writer's unfinished bytes
        // for damage: it reads the last segment up to its last committed unit.
        let live = is_live();
        let mut scan = scan::Scan::new(dir, mode, read_only, live)?.with_keys(keys);
        let listed = scan.listed().to_vec();
        let result = scan.run();
        let suspect = result.is_err() || scan.report.torn_tail.is_some();
        if !read_only || !suspect || attempt == ATTEMPTS {
            return result.map(|()| scan);
        }
        // Read again if the directory changed under the scan, or a writer started during it
        // (then what looked damaged may be its unfinished write).
        let relisted = scan::Scan::new(dir, mode, read_only, live).map(|s| s.listed().to_vec());
        let changed = relisted.is_ok_and(|l| l != listed) || (!live && is_live());
        if !changed {
            return result.map(|()| scan);
        }
        attempt += 1;
    }
}

/// How the records of a segment end, judged from where the reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Zeros from the last committed unit on (or nothing): a clean end.
    Clean,
    /// A write that a crash (or a killed writer) interrupted, from the last committed unit
    /// on: to be cut.
    Torn,
    /// Damage at `at` that is no torn write; `whole` is the framed length of a record whose
    /// checksums hold but that is invalid all the same.
    Damaged {
        at: u64,
        damage: Damage,
        whole: Option<u64>,
    },
    /// A checksummed record of a kind this build does not know (a newer writer's), at `at`.
    UnknownKind { at: u64, kind: u8 },
}

/// Judges where a segment's records end. `committed` is the end of its last committed unit,
/// `durable` the offset below which its bytes are known durable (damage there is never a
/// torn write), `is_last` whether it is the log's last segment (the only one a crash can
/// tear). An unknown kind is reported as such unless `unknown_is_damage` (salvage).
///
/// A record whose checksums hold was written whole, so it is never a torn write; nor is
/// damage after which whole committed records follow, unless a sector that never reached the
/// disk lies between (then the records after it were written after the torn one, and were
/// never acknowledged as durable either).
pub(crate) fn ending(
    map: &[u8],
    salt: u64,
    stop: &Stop,
    (committed, durable): (u64, u64),
    is_last: bool,
    unknown_is_damage: bool,
) -> Ending {
    let rest = map.get(stop.at as usize..).unwrap_or(&[]);
    if stop.why == Why::End && stop.at == committed && all_zero(rest) {
        // Records that end before the last segment's durable point lost bytes a sync
        // acknowledged (zeroed, or the file cut short): corruption, not an end.
        if is_last && committed < durable {
            return Ending::Damaged {
                at: committed,
                damage: Damage::DurableLost { end: durable },
                whole: None,
            };
        }
        return Ending::Clean;
    }
    let (damage, whole) = match &stop.why {
        Why::End if stop.at > committed => (Damage::UncommittedBatch, None),
        Why::End => (
            Damage::BadField {
                field: "zero header",
            },
            None,
        ),
        Why::Damaged(d) => (d.clone(), None),
        Why::Invalid { damage, len } => (damage.clone(), Some(*len)),
        Why::UnknownKind(kind) if !unknown_is_damage => {
            return Ending::UnknownKind {
                at: stop.at,
                kind: *kind,
            };
        }
        Why::UnknownKind(_) => (Damage::BadField { field: "kind" }, None),
    };
    let len = map.len() as u64;
    let next = match whole {
        Some(n) => Some(stop.at + n).filter(|end| *end < len),
        None => find_committed(map, stop.at + 1, salt),
    };
    let torn = is_last
        && whole.is_none()
        && committed >= durable
        && next.is_none_or(|y| has_zero_sector(map, committed, y));
    if torn {
        Ending::Torn
    } else {
        Ending::Damaged {
            at: stop.at,
            damage,
            whole,
        }
    }
}

/// Whether the bytes from `from` up to the valid record at `to` show a sector that never
/// reached the disk: an aligned all-zero sector starting in `[from, to)`, or zeros from
/// `from` to the end of `from`'s sector (the sector that held the durable end kept its old
/// content: the durable prefix, then zeros).
///
/// Either may end past `to`: a record header whose checksum begins with a zero byte
/// verifies although the sector holding that byte kept its old zeros (`ops_crash` found a
/// power cut that tore a unit so, and the open called it corruption). It can reach only a
/// few bytes past `to`, since a record whose header is zero from its kind on never verifies.
fn has_zero_sector(map: &[u8], from: u64, to: u64) -> bool {
    has_zero_sector_in(map, 0, from, to)
}

/// [`has_zero_sector`] over `bytes`, a file's bytes from offset `base` on (sectors are
/// aligned in the file; `from` and `to` are file offsets, at least `base`). `KEYS` takes
/// its appends that a crash tore by the same rule.
pub(crate) fn has_zero_sector_in(bytes: &[u8], base: u64, from: u64, to: u64) -> bool {
    let rel = |o: u64| usize::try_from(o.saturating_sub(base)).unwrap_or(usize::MAX);
    let from = rel(from).min(bytes.len());
    let end = rel(to).min(bytes.len());
    // The first sector boundary at or after `from`, relative to `base`.
    let abs = base + from as u64;
    let first = from + (abs.div_ceil(SECTOR as u64) * SECTOR as u64 - abs) as usize;
    if first > from && bytes.get(from..first).is_some_and(all_zero) {
        return true;
    }
    (first..end)
        .step_by(SECTOR)
        .any(|s| bytes.get(s..s + SECTOR).is_some_and(all_zero))
}

/// Cuts a torn tail off the last segment, physically, before anything new is appended:
/// copies the non-zero bytes from `offset` on to `quarantine/` (nothing is destroyed), then
/// overwrites them with zeros and syncs. The file never shrinks: another process may have it
/// mapped. `None` when every byte from `offset` on is already zero.
pub(crate) fn cut_tail(
    dir: Dir<'_>,
    file: &dyn VfsFile,
    path: &Path,
    map: &[u8],
    segment: SegmentId,
    offset: u64,
) -> Result<Option<TornTail>> {
    let bytes = scan::nonzero_extent(map, offset);
    let from = usize::try_from(offset).unwrap_or(usize::MAX);
    let Some(torn) = map.get(from..from.saturating_add(bytes as usize)) else {
        return Ok(None);
    };
    if bytes == 0 {
        return Ok(None);
    }
    let qdir_path = dir.join(QUARANTINE_DIR);
    dir.create_dir(&qdir_path)?;
    let qdir = Dir::new(dir.vfs, &qdir_path);
    let copy = qdir.write_unique(&format!("{:020}-{offset:012}.torn", segment.0), torn)?;
    qdir.sync()?;
    dir.sync()?;
    crate::segment::zero_range(file, offset, bytes)
        .map_err(|e| crate::Error::io("write", path, e))?;
    file.sync_data()
        .map_err(|e| crate::Error::io("fdatasync", path, e))?;
    Ok(Some(TornTail {
        segment,
        offset,
        bytes,
        quarantined: Some(copy),
    }))
}

/// Verifies every record of a segment (both CRCs, contiguous LSNs from its first, units
/// whole) up to `end`: the scan a hint let `open` skip, run before the first append to that
/// segment so that new records never go after damage nobody has seen. (Non-zero bytes after
/// `end` are past the durable point the hint records: a torn tail, for [`cut_tail`].)
pub(crate) fn verify_segment(
    bytes: &[u8],
    id: SegmentId,
    salt: u64,
    end: u64,
    next_lsn: Lsn,
) -> Result<()> {
    use crate::segment::{SegmentReader, Units};
    let start = crate::format::SEGMENT_HEADER_LEN as u64;
    let mut units = Units::new(SegmentReader::new(bytes, salt, start, Some(Lsn(id.0))));
    let mut next = Lsn(id.0);
    while let Some(unit) = units.next_unit() {
        next = unit.last().map_or(next, |r| r.meta.next_lsn());
        if units.committed_end() >= end {
            break;
        }
    }
    let corrupt = |offset, damage| crate::Error::Corrupt {
        segment: id,
        offset,
        damage,
    };
    if units.committed_end() != end {
        let stop = units.stop().cloned();
        let at = stop.as_ref().map_or(end, |s| s.at);
        let damage = stop
            .and_then(|s| s.damage())
            .unwrap_or(Damage::UncommittedBatch);
        return Err(corrupt(at, damage));
    }
    if next != next_lsn {
        // The hint the open trusted disagrees with the records.
        return Err(corrupt(
            end,
            Damage::LsnGap {
                expected: next_lsn.0,
                found: next.0,
            },
        ));
    }
    Ok(())
}
