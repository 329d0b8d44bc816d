//! Reads the segments in order through the segment reader, folds committed units (or hints)
//! into the index, and classifies where each segment's records stop.

use std::path::PathBuf;

use super::keys::{Keys, lost_unit};
use super::{
    DroppedRange, Ending, Recovered, RecoveredSegment, RecoveryMode, RecoveryReport, TornTail,
    ending,
};
use crate::error::{Damage, Error, Result};
use crate::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, FORMAT_VERSION, Kind, SEGMENT_HEADER_LEN, SegmentHeader,
    SegmentHeaderError, decode_record,
};
use crate::hint::{self, EventRef, LoadedHint};
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::{Change, Index, NewKey, Pos};
use crate::io::{Dir, Mapping, OpenMode, VfsFile};
use crate::segment::{Record, SegmentReader, Stop, Units, Why, all_zero};

/// One step of a salvage rewrite of a segment.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    /// Keep the record at this offset.
    Keep(u64),
    /// A gap record standing for `count` lost LSNs from `lsn`.
    Gap { lsn: u64, count: u64 },
}

/// What salvage would write in place of a segment.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) items: Vec<Item>,
    pub(super) rewrite: bool,
}

/// A file salvage moves to quarantine whole (a segment it cannot read or place).
#[derive(Debug)]
pub(super) struct SetAside {
    pub(super) path: PathBuf,
    pub(super) range: DroppedRange,
}

/// The state of a recovery pass over the store's segments.
pub(super) struct Scan<'a> {
    pub(super) dir: Dir<'a>,
    mode: RecoveryMode,
    read_only: bool,
    /// A writer holds the lock (read-only opens only): the last segment's end is live.
    live: bool,
    ids: Vec<SegmentId>,
    pub(super) segments: Vec<RecoveredSegment>,
    /// One per entry of `segments`.
    pub(super) plans: Vec<Plan>,
    pub(super) set_aside: Vec<SetAside>,
    /// Salvage: the store's first segment is missing; its LSNs `1..=n` are lost.
    pub(super) missing_start: Option<u64>,
    index: Index,
    /// The LSN the next record must carry.
    expected: Lsn,
    last_ts: Timestamp,
    pub(super) report: RecoveryReport,
    /// An encrypted store's keys: the first unit of the last segment sealed under a key a
    /// power cut took away ends its log (see [`super::keys`]).
    keys: Option<&'a dyn Keys>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(
        dir: Dir<'a>,
        mode: RecoveryMode,
        read_only: bool,
        live: bool,
    ) -> Result<Scan<'a>> {
        let mut ids: Vec<SegmentId> = dir
            .vfs
            .list(dir.path)
            .map_err(|e| Error::io("list", dir.path, e))?
            .iter()
            .filter_map(|n| SegmentId::parse_file_name(n))
            .collect();
        ids.sort();
        Ok(Scan {
            dir,
            mode,
            read_only,
            live,
            ids,
            segments: Vec::new(),
            plans: Vec::new(),
            set_aside: Vec::new(),
            missing_start: None,
            index: Index::default(),
            // The log starts at LSN 1: a store knows where it starts, so a missing first
            // segment is a gap like any other.
            expected: Lsn::FIRST,
            last_ts: Timestamp(0),
            report: RecoveryReport::default(),
            keys: None,
        })
    }

    /// Judges the last segment's records against an encrypted store's keys.
    pub(super) fn with_keys(mut self, keys: Option<&'a dyn Keys>) -> Scan<'a> {
        self.keys = keys;
        self
    }

    /// The segment files the directory listed when this scan began.
    pub(super) fn listed(&self) -> &[SegmentId] {
        &self.ids
    }

    pub(super) fn run(&mut self) -> Result<()> {
        let ids = self.ids.clone();
        for (i, id) in ids.iter().enumerate() {
            self.segment(*id, i + 1 == ids.len())?;
        }
        Ok(())
    }

    pub(super) fn needs_rewrite(&self) -> bool {
        self.plans.iter().any(|p| p.rewrite)
            || !self.set_aside.is_empty()
            || self.missing_start.is_some()
    }

    pub(super) fn finish(mut self) -> Result<Recovered> {
        self.report.last_lsn = Lsn(self.expected.0.saturating_sub(1));
        Ok(Recovered {
            segments: self.segments,
            index: self.index,
            next_lsn: self.expected,
            last_ts: self.last_ts,
            report: self.report,
        })
    }

    fn salvage(&self) -> bool {
        self.mode == RecoveryMode::Salvage
    }

    fn segment(&mut self, id: SegmentId, is_last: bool) -> Result<()> {
        let path = self.dir.join(&id.file_name());
        let mode = if is_last && !self.read_only {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let file = self.dir.open(&path, mode)?;
        let map = file.map().map_err(|e| Error::io("map", &path, e))?;
        let len = map.len() as u64;
        let head = read_small::<SEGMENT_HEADER_LEN>(file.as_ref(), len, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        let Some(header) = self.header(id, &path, &head, &map, is_last)? else {
            return Ok(());
        };
        self.chain(id)?;
        let ordinal = self.segments.len() as u32;
        // A hint of this segment (same first LSN and salt) whose fields are sane.
        let hint = hint::load(self.dir.vfs, self.dir.path, id).filter(|h| {
            h.header.first_lsn == header.first_lsn
                && h.header.salt == header.salt
                && h.header.next_lsn >= h.header.first_lsn
                && h.header.valid_len >= SEGMENT_HEADER_LEN as u64
        });
        // Everything below the watermark is known durable, so damage there is never a torn
        // write: all of a sealed segment, and a last segment up to where its hint (written
        // after a sync, at a clean close) says it ended, even when the file is now shorter
        // (then durable bytes were lost: corruption).
        let watermark = match (&hint, is_last) {
            (_, false) => len,
            (Some(h), true) => h.header.valid_len,
            (None, true) => SEGMENT_HEADER_LEN as u64,
        };
        let usable = hint.filter(|h| {
            self.mode == RecoveryMode::PointInTime
                && h.header.valid_len <= len
                && ends_at(file.as_ref(), len, h.header.valid_len)
        });
        let from_hint = usable.is_some();
        let valid_end = match usable {
            Some(h) => {
                self.apply_hint(ordinal, &h, &map);
                h.header.valid_len
            }
            None => {
                let end = self.records(ordinal, id, &header, &map, is_last, watermark)?;
                if self.mode == RecoveryMode::PointInTime && !self.read_only && !is_last {
                    // Best effort: the next open need not scan this sealed segment again.
                    let _ = hint::write(self.dir, &map, id, header.salt);
                }
                end
            }
        };
        if is_last && !self.read_only && self.mode != RecoveryMode::Strict {
            self.cut_torn_tail(&file, &path, &map)?;
        }
        self.segments.push(RecoveredSegment {
            id,
            salt: header.salt,
            path,
            file,
            map: (!is_last).then_some(map),
            valid_end,
            from_hint,
            compacted: header.compacted,
        });
        Ok(())
    }

    /// The segment's header, decoded from `head` (the file's first bytes), or `None` when the
    /// file is not part of the log: a last segment whose creation a crash interrupted
    /// (removed), or, in salvage, a file that is no readable segment in its place (set aside).
    fn header(
        &mut self,
        id: SegmentId,
        path: &std::path::Path,
        head: &[u8],
        map: &[u8],
        is_last: bool,
    ) -> Result<Option<SegmentHeader>> {
        let damage = match SegmentHeader::decode(head) {
            Ok(h) if h.first_lsn.0 != id.0 => Damage::SegmentLsnMismatch {
                expected: id.0,
                found: h.first_lsn.0,
            },
            Ok(_)
                if id.0 < self.expected.0 && self.segments.last().is_some_and(|s| s.compacted) =>
            {
                self.superseded(id, path)?;
                return Ok(None);
            }
            Ok(h) if id.0 < self.expected.0 => Damage::LsnGap {
                expected: self.expected.0,
                found: h.first_lsn.0,
            },
            Ok(h) => return Ok(Some(h)),
            Err(SegmentHeaderError::Version(found)) => {
                return Err(Error::UnsupportedVersion {
                    path: path.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Err(e)
                if is_last
                    && e != SegmentHeaderError::Reserved
                    && all_zero(map.get(SEGMENT_HEADER_LEN..).unwrap_or(&[])) =>
            {
                // (Beside a live writer, a segment being created: not part of the log yet.)
                if self.mode == RecoveryMode::Strict && !self.live {
                    return Err(corrupt(id, 0, header_damage(&e)));
                }
                self.interrupted_creation(id, path)?;
                return Ok(None);
            }
            Err(e) => header_damage(&e),
        };
        if !self.salvage() {
            return Err(corrupt(id, 0, damage));
        }
        self.set_aside.push(SetAside {
            path: path.to_owned(),
            range: DroppedRange {
                segment: id,
                offset: 0,
                len: map.len() as u64,
                damage,
                quarantined: None,
            },
        });
        Ok(None)
    }

    /// Segment `id` lies inside the range the compacted segment before it covers: a
    /// compaction replaced it, and a crash came before it was removed. What it held is in
    /// the compacted segment; a writable open finishes the removal.
    fn superseded(&mut self, id: SegmentId, path: &std::path::Path) -> Result<()> {
        self.report.superseded.push(id);
        if !self.read_only {
            let _ = self.dir.vfs.remove_file(&hint::path(self.dir.path, id));
            self.dir.remove(path)?;
            self.dir.sync()?;
        }
        Ok(())
    }

    /// A crash interrupted the creation of the last segment: nothing was ever in it. The
    /// previous segment (if any) becomes the last, read as the active one.
    fn interrupted_creation(&mut self, id: SegmentId, path: &std::path::Path) -> Result<()> {
        self.report.removed_segments.push(id);
        if let Some(prev) = self.segments.last_mut() {
            prev.map = None;
            if !self.read_only {
                prev.file = self.dir.open(&prev.path, OpenMode::ReadWrite)?;
            }
        }
        if !self.read_only {
            self.dir.remove(path)?;
            self.dir.sync()?;
        }
        Ok(())
    }

    /// Checks that segment `id` starts where the log so far ends; in salvage, a gap (lost
    /// segments) is planned as a gap record instead.
    fn chain(&mut self, id: SegmentId) -> Result<()> {
        let expected = self.expected.0;
        if id.0 == expected {
            return Ok(());
        }
        let damage = Damage::LsnGap {
            expected,
            found: id.0,
        };
        if !self.salvage() {
            return Err(corrupt(id, 0, damage));
        }
        let count = id.0 - expected;
        let (segment, offset) = self
            .segments
            .last()
            .map_or((SegmentId(expected), 0), |s| (s.id, s.valid_end));
        self.report.dropped.push(DroppedRange {
            segment,
            offset,
            len: 0,
            damage,
            quarantined: None,
        });
        match self.plans.last_mut() {
            Some(plan) => {
                plan.items.push(Item::Gap {
                    lsn: expected,
                    count,
                });
                plan.rewrite = true;
            }
            None => self.missing_start = Some(count),
        }
        self.expected = Lsn(id.0);
        Ok(())
    }

    /// Reads one segment's records, folding committed units into the index, and returns
    /// where its log ends.
    fn records(
        &mut self,
        ordinal: u32,
        id: SegmentId,
        header: &SegmentHeader,
        map: &Mapping,
        is_last: bool,
        watermark: u64,
    ) -> Result<u64> {
        let (salt, compacted) = (header.salt, header.compacted);
        let len = map.len() as u64;
        self.report.segments_scanned += 1;
        self.report.bytes_scanned += len;
        let mut plan = Plan::default();
        let start = SEGMENT_HEADER_LEN as u64;
        let reader = SegmentReader::new(map, salt, start, Some(self.expected));
        let mut units = Units::new(reader.allowing_gaps(compacted));
        let judge = self.keys.filter(|_| self.judges_keys(is_last, compacted));
        let end = loop {
            let mut cut = None;
            while let Some(unit) = units.next_unit() {
                // (Not a stale copy salvage drops: its LSNs go back.)
                let judged =
                    judge.filter(|_| unit.first().is_some_and(|r| r.meta.lsn >= self.expected));
                if let Some(keys) = judged {
                    cut = lost_unit(keys, unit, watermark)?;
                    if cut.is_some() {
                        break;
                    }
                }
                self.keep_unit((ordinal, id, salt, compacted), unit, map, &mut plan);
            }
            if let Some(c) = cut {
                // Records sealed under keys a power cut took away (see `super::keys`).
                break self.torn_tail_at(id, map, c)?;
            }
            let stop = units.stop().cloned().unwrap_or(Stop {
                at: len,
                why: Why::End,
            });
            let x = units.committed_end();
            let judged = ending(map, salt, &stop, (x, watermark), is_last, self.salvage());
            if judged == Ending::Clean {
                break x;
            }
            if is_last && self.live {
                self.report.live_tail = Some(nonzero_extent(map, x));
                break x;
            }
            let (damage, whole) = match judged {
                Ending::Clean => break x,
                Ending::Torn => break self.torn_tail_at(id, map, x)?,
                Ending::UnknownKind { at, kind } => {
                    return Err(Error::UnknownRecordKind {
                        segment: id,
                        offset: at,
                        kind,
                        version: FORMAT_VERSION,
                    });
                }
                Ending::Damaged { damage, whole, .. } => (damage, whole),
            };
            if !self.salvage() {
                return Err(corrupt(id, stop.at, damage));
            }
            // Salvage: drop from the start of the broken unit to the next record that starts
            // a unit (records in between belong to the broken unit and stop the reader
            // again, widening the range).
            plan.rewrite = true;
            let Some(resume) = units.records_mut().resync() else {
                // Nothing valid follows: drop up to the last non-zero byte (zeros after it
                // are preallocated space, not data).
                let end = (stop.at + whole.unwrap_or(0)).max(x + nonzero_extent(map, x));
                self.drop_range(id, x, end - x, damage);
                break x;
            };
            units.restart();
            self.drop_range(id, x, resume - x, damage);
        };
        self.plans.push(plan);
        Ok(end)
    }

    /// Ends segment `id`'s log at `at`, a torn tail (`map` its bytes): reported, and cut
    /// later on a writable open; in [`RecoveryMode::Strict`], `Error::Corrupt` instead.
    fn torn_tail_at(&mut self, id: SegmentId, map: &Mapping, at: u64) -> Result<u64> {
        let len = map.len() as u64;
        if self.mode == RecoveryMode::Strict {
            return Err(corrupt(id, at, Damage::TornTail { len: len - at }));
        }
        self.report.torn_tail = Some(TornTail {
            segment: id,
            offset: at,
            bytes: nonzero_extent(map, at),
            quarantined: None,
        });
        Ok(at)
    }

    /// Whether this segment's records are judged against the store's keys: the last one, in
    /// a store no writer holds (a live writer's keys are all in `KEYS`, if unsynced), not a
    /// compaction's output (synced whole, its keys first).
    fn judges_keys(&self, is_last: bool, compacted: bool) -> bool {
        is_last && !self.live && !compacted
    }

    /// Folds one committed unit into the index (salvage: after a resynchronization, a unit
    /// whose LSNs go back is a stale copy, dropped; one that jumps ahead leaves a gap, unless
    /// the segment is compacted: its LSNs may skip).
    fn keep_unit(
        &mut self,
        (ordinal, id, salt, compacted): (u32, SegmentId, u64, bool),
        unit: &[Record<'_>],
        map: &Mapping,
        plan: &mut Plan,
    ) {
        let (Some(first), Some(last)) = (unit.first(), unit.last()) else {
            return;
        };
        if first.meta.lsn < self.expected {
            plan.rewrite = true;
            self.drop_range(
                id,
                first.offset,
                last.end() - first.offset,
                Damage::LsnGap {
                    expected: self.expected.0,
                    found: first.meta.lsn.0,
                },
            );
            return;
        }
        if first.meta.lsn > self.expected && !compacted {
            plan.items.push(Item::Gap {
                lsn: self.expected.0,
                count: first.meta.lsn.0 - self.expected.0,
            });
            plan.rewrite = true;
        }
        for r in unit {
            plan.items.push(Item::Keep(r.offset));
            self.apply(ordinal, salt, r, map);
        }
        self.expected = last.meta.next_lsn();
    }

    /// Records a dropped range, merged with the previous one when adjacent (records that lost
    /// their session or unit with the damaged one make one range, named by its first damage).
    fn drop_range(&mut self, segment: SegmentId, offset: u64, len: u64, damage: Damage) {
        match self.report.dropped.last_mut() {
            Some(d) if d.segment == segment && d.offset + d.len == offset => d.len += len,
            _ => self.report.dropped.push(DroppedRange {
                segment,
                offset,
                len,
                damage,
                quarantined: None,
            }),
        }
    }

    fn apply(&mut self, ordinal: u32, salt: u64, r: &Record<'_>, map: &Mapping) {
        self.report.count(r.meta.kind, 1);
        self.last_ts = self.last_ts.max(r.meta.timestamp);
        let pos = Pos {
            seg: ordinal,
            off: r.offset as u32,
        };
        let Some(change) = Change::of_record(&r.meta, pos, r.key, r.payload) else {
            return;
        };
        let segments = &self.segments;
        self.index.apply(r.session, change, |q| {
            timestamp_at(segments, ordinal, map, salt, q)
        });
    }

    fn apply_hint(&mut self, ordinal: u32, h: &LoadedHint, map: &Mapping) {
        // Slot `i` counts kind code `i + 1` (a code no kind has now counts nothing).
        for (code, n) in (1u8..).zip(h.header.kinds) {
            if let Some(kind) = Kind::from_code(code) {
                self.report.count(kind, n);
            }
        }
        self.report.hints_used += 1;
        if ordinal == 0 {
            self.index.reserve(h.header.sessions as usize);
        }
        // The index keeps the hint mapped: runs of appends stay in it, uncopied.
        self.index.map_hint(ordinal, h.bytes().clone());
        let (segments, index) = (&self.segments, &mut self.index);
        let salt = h.header.salt;
        let mut last_ts = self.last_ts;
        h.for_each(|session, event| {
            let change = match event {
                EventRef::Appends {
                    first,
                    last,
                    offsets,
                } => {
                    last_ts = last_ts.max(last);
                    Change::AppendRun {
                        seg: ordinal,
                        at: offsets.at(),
                        count: offsets.len() as u64,
                        first,
                        last,
                    }
                }
                EventRef::Pop(n) => Change::Pop(n),
                EventRef::Truncate(k) => Change::Keep(k),
                EventRef::Meta(off) => Change::Meta {
                    pos: Pos { seg: ordinal, off },
                },
                EventRef::Delete => Change::Delete,
                EventRef::Key { key, ts, count } => Change::Key {
                    key: NewKey {
                        key,
                        hash: None,
                        count,
                    },
                    ts,
                },
            };
            index.apply(session, change, |q| {
                timestamp_at(segments, ordinal, map, salt, q)
            });
        });
        self.last_ts = last_ts;
        self.expected = h.header.next_lsn;
        self.plans.push(Plan::default());
    }

    /// Makes the cut of the torn tail found in the last segment physical (see
    /// [`super::cut_tail`]).
    fn cut_torn_tail(
        &mut self,
        file: &std::sync::Arc<dyn crate::io::VfsFile>,
        path: &std::path::Path,
        map: &Mapping,
    ) -> Result<()> {
        let Some(t) = self.report.torn_tail.as_mut() else {
            return Ok(());
        };
        if let Some(cut) = super::cut_tail(self.dir, file.as_ref(), path, map, t.segment, t.offset)?
        {
            *t = cut;
        }
        Ok(())
    }
}

/// Up to `N` bytes of a segment file of `len` bytes from `at` (fewer where it ends), read
/// with one positioned read rather than through the segment's map. A page fault on a map
/// reads around it as much as the device's read-ahead (8 MiB on some virtual disks), where a
/// small read reads a few pages: an open touches a few bytes of each sealed segment (its
/// header, where its hint says its records end), so on a cold cache it reads only those.
fn read_small<const N: usize>(file: &dyn VfsFile, len: u64, at: u64) -> std::io::Result<Vec<u8>> {
    let n = len.saturating_sub(at).min(N as u64) as usize;
    let mut buf = vec![0u8; n];
    if n > 0 {
        file.read_exact_at(&mut buf, at)?;
    }
    Ok(buf)
}

/// Whether the records of a segment file of `len` bytes end at `at`: the file ends there or
/// an all-zero header follows (preallocated space). A hint whose end is followed by anything
/// else is stale (as is one that cannot be checked).
fn ends_at(file: &dyn VfsFile, len: u64, at: u64) -> bool {
    at <= len
        && read_small::<{ crate::format::RECORD_HEADER_LEN }>(file, len, at)
            .is_ok_and(|b| all_zero(&b))
}

/// How many bytes from `from` to the last non-zero byte of `map`.
pub(super) fn nonzero_extent(map: &[u8], from: u64) -> u64 {
    let rest = map.get(from as usize..).unwrap_or(&[]);
    rest.iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn corrupt(segment: SegmentId, offset: u64, damage: Damage) -> Error {
    Error::Corrupt {
        segment,
        offset,
        damage,
    }
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
