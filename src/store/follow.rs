//! Following the log that other processes write: a cheap check of whether it moved, and a
//! catch-up that folds what they wrote into the index, through the one segment reader and
//! the one fold, following segment rotations.
//!
//! A catch-up never reads past the last committed unit. Whether the bytes after it are a
//! write in progress or a torn write of a process that died, only the holder of the write
//! lock can tell (nobody else is writing): a writer judges them before it appends, cutting a
//! torn write (copied aside first, as recovery does) and refusing to append after damage.

use std::sync::Arc;

use super::head::Head;
use super::{State, Writer};
use crate::error::{Error, Result};
use crate::format::{
    FORMAT_VERSION, RECORD_HEADER_LEN, RecordKey, RecordMeta, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::id::SegmentId;
use crate::index::{Change, Pos};
use crate::io::{Dir, OpenMode};
use crate::recovery::{Ending, Keys, cut_tail, ending, lost_unit};
use crate::segment::{ActiveView, Segment, SegmentData, SegmentReader, SegmentWriter, Units, Why};

impl State {
    /// Whether the log may have moved past what the index holds: a record header is being
    /// (or was) written at its end, or the head names a newer segment than the last one.
    /// A compaction since the state was read counts as a move.
    /// Costs three reads of shared memory when nothing changed (plus a `stat` of the next
    /// segment's name when the store has no head yet).
    pub(super) fn moved(&self, dir: Dir<'_>, head: &Head) -> bool {
        let Some(last) = self.segments.last() else {
            return false;
        };
        if head.epoch() != self.epoch {
            return true;
        }
        match &last.data {
            SegmentData::File(view) if view.nonzero_at(self.end, RECORD_HEADER_LEN) => true,
            // A writer records a segment in the head before it creates it.
            _ => match head.get() {
                Some(newest) => newest > last.id,
                // (No head: an older store's empty `LOCK`.) A segment is sealed only once it
                // holds a record: an empty last segment is named by the next LSN itself.
                None => {
                    let next = SegmentId(self.next_lsn.0);
                    next != last.id && dir.vfs.exists(&dir.join(&next.file_name()))
                }
            },
        }
    }

    /// If a compaction replaced segments since the state was read (the head names another
    /// epoch), reads the segments again, as they now are: the index's positions point into
    /// the replaced files. (Reads in flight keep the old table, and its files, until they
    /// end.) Returns whether it did.
    ///
    /// # Errors
    /// As [`crate::recovery::reload`]; the state is then unchanged.
    pub(super) fn reload_if_compacted(&mut self, dir: Dir<'_>, head: &Head) -> Result<bool> {
        let epoch = head.epoch();
        if epoch == self.epoch {
            return Ok(false);
        }
        let rec = crate::recovery::reload(dir.vfs, dir.path)?;
        let end = rec.segments.last().map_or(0, |s| s.valid_end);
        *self = State {
            segments: Arc::new(super::open::table(rec.segments)),
            index: rec.index,
            end,
            next_lsn: rec.next_lsn,
            last_ts: self.last_ts.max(rec.last_ts),
            epoch,
        };
        Ok(true)
    }

    /// Folds into the index every committed unit written after its end, following the log
    /// into the segments other writers created. With `holder` (the caller holds the write
    /// lock, and writes the files), also judges how the log ends: a torn write is cut, a
    /// segment whose creation a writer did not finish is removed, and damage is an error.
    ///
    /// In an encrypted store (`keys`), a unit sealed under a key a power cut took away
    /// ends the log as a torn write does (a read-only open's recovery left it there; see
    /// `recovery::keys`): a holder cuts it.
    ///
    /// # Errors
    /// Holder only: [`Error::Corrupt`] or [`Error::UnknownRecordKind`] for what ends the log
    /// when it is no torn write; [`Error::Io`] (for anyone) when a file cannot be read;
    /// [`Error::KeyFile`] when `KEYS` cannot be read.
    pub(super) fn catch_up(
        &mut self,
        dir: Dir<'_>,
        holder: bool,
        keys: Option<&dyn Keys>,
    ) -> Result<()> {
        loop {
            let Some(last) = self.segments.last().cloned() else {
                return Ok(());
            };
            let SegmentData::File(view) = &last.data else {
                return Ok(());
            };
            let map = view
                .live_map()
                .map_err(|e| Error::io("map", &last.path, e))?;
            let ordinal = (self.segments.len() - 1) as u32;
            let start = self.end;
            let reader = SegmentReader::new(&map, last.salt, start, Some(self.next_lsn));
            let mut units = Units::new(reader.allowing_gaps(last.compacted));
            if let Some(at) = self.fold_units(&mut units, ordinal, keys)? {
                self.end = at;
                if holder {
                    let file = dir.open(&last.path, OpenMode::ReadWrite)?;
                    cut_tail(dir, &*file, &last.path, &map, last.id, at)?;
                    view.invalidate();
                }
                return Ok(());
            }
            self.end = units.committed_end();
            let stop = units.stop().cloned();
            // Stopped because the map is older than the file: map it again, read on.
            if stop.as_ref().is_some_and(|stop| view.outgrown(&map, stop)) {
                view.map_now()
                    .map_err(|e| Error::io("map", &last.path, e))?;
                continue;
            }
            // A zero header right at the end is the end: a writer that died mid-write left a
            // prefix of its write (the kernel copies a write in order), never zeros followed
            // by bytes, so there is nothing to judge, and no need to read the (preallocated,
            // megabytes long) rest of the segment on every write. (After a power cut, an open
            // judges the whole tail.) Without the write lock, what follows the last committed
            // unit is not ours to judge at all (it may be a write in progress).
            let judged = match &stop {
                Some(stop) if !(stop.why == Why::End && stop.at == self.end) => {
                    if !holder {
                        return Ok(());
                    }
                    ending(&map, last.salt, stop, (self.end, self.end), true, false)
                }
                _ => Ending::Clean,
            };
            match judged {
                Ending::Clean => {}
                Ending::Torn => {
                    // (Opened for writing here: a read may have found the segment first.)
                    let file = dir.open(&last.path, OpenMode::ReadWrite)?;
                    cut_tail(dir, &*file, &last.path, &map, last.id, self.end)?;
                    view.invalidate();
                    return Ok(());
                }
                Ending::Damaged { at, damage, .. } => {
                    return Err(Error::Corrupt {
                        segment: last.id,
                        offset: at,
                        damage,
                    });
                }
                Ending::UnknownKind { at, kind } => {
                    return Err(Error::UnknownRecordKind {
                        segment: last.id,
                        offset: at,
                        kind,
                        version: FORMAT_VERSION,
                    });
                }
            }
            if !self.next_segment(dir, holder, map)? {
                return Ok(());
            }
        }
    }

    /// Folds the committed units `units` yields, of segment `ordinal`, until they end or
    /// (in an encrypted store) one is sealed under a key a power cut took: `Some` of where
    /// that unit starts.
    ///
    /// # Errors
    /// [`Error::KeyFile`] or [`Error::Io`] when `KEYS` cannot be read (the index then ends before the unit
    /// that needed it).
    fn fold_units(
        &mut self,
        units: &mut Units<'_>,
        ordinal: u32,
        keys: Option<&dyn Keys>,
    ) -> Result<Option<u64>> {
        while let Some(unit) = units.next_unit() {
            if let Some(keys) = keys {
                match lost_unit(keys, unit, 0) {
                    Ok(None) => {}
                    Ok(Some(at)) => return Ok(Some(at)),
                    Err(e) => {
                        // What came before this unit is folded: the index ends there.
                        self.end = unit.first().map_or(self.end, |r| r.offset);
                        return Err(e);
                    }
                }
            }
            for r in unit {
                let pos = Pos {
                    seg: ordinal,
                    off: r.offset as u32,
                };
                self.fold(r.session, &r.meta, pos, r.key, r.payload, None);
                self.next_lsn = r.meta.next_lsn();
            }
        }
        Ok(None)
    }

    /// Moves the log's end into the segment that follows the last one, if a writer created
    /// it (the last one is then sealed: mapped whole). `false` when there is none yet (or,
    /// without the write lock, only one being created).
    fn next_segment(
        &mut self,
        dir: Dir<'_>,
        holder: bool,
        sealed: crate::io::Mapping,
    ) -> Result<bool> {
        let id = SegmentId(self.next_lsn.0);
        let path = dir.join(&id.file_name());
        if self.segments.last().is_some_and(|s| s.id == id) || !dir.vfs.exists(&path) {
            return Ok(false);
        }
        let mode = if holder {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let file = dir.open(&path, mode)?;
        let head = file.map().map_err(|e| Error::io("map", &path, e))?;
        let header = match SegmentHeader::decode(&head) {
            Ok(h) if h.first_lsn == self.next_lsn => h,
            Ok(h) if holder => {
                return Err(Error::Corrupt {
                    segment: id,
                    offset: 0,
                    damage: crate::error::Damage::SegmentLsnMismatch {
                        expected: id.0,
                        found: h.first_lsn.0,
                    },
                });
            }
            // Being created (its header not written whole yet), or not ours to judge.
            Ok(_) => return Ok(false),
            Err(_) if !holder => return Ok(false),
            Err(_) => {
                // Its creator died before the header was whole (creation holds the write
                // lock): nothing was ever in it. As recovery does, remove it.
                if crate::segment::all_zero(head.get(SEGMENT_HEADER_LEN..).unwrap_or(&[])) {
                    dir.remove(&path)?;
                    dir.sync()?;
                    return Ok(false);
                }
                return Err(Error::Corrupt {
                    segment: id,
                    offset: 0,
                    damage: crate::error::Damage::SegmentHeaderChecksum,
                });
            }
        };
        let segments = Arc::make_mut(&mut self.segments);
        if let Some(slot) = segments.last_mut() {
            *slot = Arc::new(Segment {
                data: SegmentData::Mapped(sealed),
                ..(**slot).clone()
            });
        }
        segments.push(Arc::new(Segment {
            id,
            salt: header.salt,
            path,
            data: SegmentData::File(ActiveView::new(file)),
            compacted: false,
        }));
        self.end = SEGMENT_HEADER_LEN as u64;
        Ok(true)
    }

    /// Folds one committed record into the index: the same fold recovery uses. `pos` is the
    /// record's position (for a record this process just wrote, not in any map yet);
    /// `key_hash`, the hash (from this state's index) of a keyed append's key when the writer
    /// has it (`None`: the fold hashes it).
    pub(super) fn fold(
        &mut self,
        session: &str,
        meta: &RecordMeta,
        pos: Pos,
        key: Option<RecordKey<'_>>,
        payload: &[u8],
        key_hash: Option<u64>,
    ) {
        let Some(mut change) = Change::of_record(meta, pos, key, payload) else {
            return;
        };
        if let Change::Append { key: Some(k), .. } = &mut change {
            k.hash = key_hash;
        }
        self.last_ts = self.last_ts.max(meta.timestamp);
        let segments = &self.segments;
        let fallback = meta.timestamp;
        self.index.apply(session, change, |p| {
            segments
                .get(p.seg as usize)
                .and_then(|s| s.read_at(p.off).ok())
                .map_or(fallback, |r| r.meta.timestamp)
        });
    }
}

impl Writer {
    /// Brings the writer to the end of the log the state holds (after a catch-up): into the
    /// segment another process created, if the log moved there.
    ///
    /// (The segment may have been found by a read, which opened it read-only: the writer
    /// opens it for writing itself.)
    pub(super) fn follow(&mut self, state: &State, dir: Dir<'_>) -> Result<()> {
        let last = (state.segments.len() - 1) as u32;
        let seg = &state.segments[last as usize];
        // By identity, not ordinal: after a compaction the active segment has a new ordinal,
        // and another segment may have the writer's old one.
        if (seg.id, seg.salt) != (self.active.id, self.active.salt) {
            let file = dir.open(&seg.path, OpenMode::ReadWrite)?;
            let allocated = file.len().map_err(|e| Error::io("stat", &seg.path, e))?;
            self.active = SegmentWriter {
                id: seg.id,
                salt: seg.salt,
                path: seg.path.clone(),
                file,
                len: state.end,
                allocated,
                segment_size: self.active.segment_size,
                named: Default::default(),
            };
            // Read whole by the catch-up: nothing left to verify.
            self.unverified = false;
        }
        self.ordinal = last;
        self.active.len = state.end;
        self.active.allocated = self.active.allocated.max(state.end);
        self.next_lsn = state.next_lsn;
        self.last_ts = self.last_ts.max(state.last_ts);
        Ok(())
    }
}
