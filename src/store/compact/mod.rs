//! Compaction: the sealed segments are rewritten as one compacted segment that keeps only
//! the records a live session can still reach, then put in their place with one rename.
//!
//! 1. **Plan** (no lock held: appends and reads go on). The inputs are a prefix of the
//!    sealed segments; they never change. Their records are folded (the one fold) into the
//!    index they make at their end, and the records that index reaches are kept: each live
//!    session's messages (a fork's shared ones included), the records of its live
//!    idempotency keys, its latest metadata. Events are rewritten for the kept records only
//!    (see `plan`).
//! 2. **Write** the kept records and rewritten events, in LSN order, keeping their LSNs, kinds, arguments and
//!    timestamps, into `{first}.compact` under a fresh salt, the header flagged compacted (its
//!    LSNs may skip), ending with a `gap` record so its last record's next LSN is the next
//!    segment's first; `fdatasync`.
//! 3. **Check**: the output is read back through the segment reader and folded; every
//!    session must come out with the same messages (by LSN), keys and metadata as the
//!    inputs gave, or nothing is replaced ([`Error::CompactionMismatch`]).
//! 4. **Switch**, under the write lock: rename the output over the first input (the commit
//!    point), sync the directory, remove the other inputs and every input's hint, sync the
//!    directory; write the output's hint; count one more epoch in `LOCK`; read this
//!    process's state again. A crash after the rename leaves inputs whose LSNs the compacted
//!    segment covers: recovery knows them as superseded and removes them.
//!
//! Other processes see the new epoch on their next read or write and read the segments
//! again; reads in flight keep the old table, whose files stay mapped (never truncated),
//! until they end.

mod output;
mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use output::{Output, check_output, write_output};
use plan::Plan;

use super::Store;
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_LEN;
use crate::hint;
use crate::id::{Lsn, SegmentId};
use crate::io::{Dir, LockMode, Mapping};
use crate::segment::{Record, Segment, SegmentData, SegmentReader, Units, Why};

/// Name of the lock file a compaction holds while it runs (one at a time per store).
pub const COMPACT_FILE: &str = "COMPACT";
/// Most bytes of input one compaction reads (its output, no longer, stays well below the
/// 4 GiB that 32-bit record offsets allow); sealed segments past it wait for the next one.
pub const MAX_COMPACTION_INPUT: u64 = 2 << 30;
/// The session id of the `gap` record that ends a compacted segment (it belongs to none).
const GAP_SESSION: &[u8] = b"-";

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Sealed segments read and replaced (0: there was nothing to reclaim).
    pub segments_rewritten: usize,
    /// Bytes of the segments replaced.
    pub bytes_before: u64,
    /// Bytes of the compacted segment that replaced them.
    pub bytes_after: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Records dropped: removed messages, superseded events, dead keys and metadata (`gap`
    /// records are counted in neither).
    pub records_dropped: u64,
    /// Sessions none of whose records were kept (deleted, cleared): no byte of their
    /// messages in the compacted range remains in any segment or hint.
    pub sessions_erased: Vec<String>,
    /// Sessions the retention rule deleted first (then erased with the others).
    pub sessions_expired: Vec<String>,
    /// Files removed from `quarantine/` afterwards (see [`super::Options::keep_quarantine`]):
    /// a compaction that drops records empties it, unless the store keeps it.
    pub quarantine_purged: usize,
    /// The compacted segment, when one was written.
    pub segment: Option<SegmentId>,
    /// How long it took.
    pub duration: Duration,
}

/// How far a compaction is: bytes of input its passes have read, of `total` (it reads its
/// input twice, to plan and to write; three times under a dead-bytes threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactProgress {
    /// Bytes read so far.
    pub done: u64,
    /// Bytes it will read in all.
    pub total: u64,
}

/// Counts a compaction's progress and reports it.
struct Tracker<'a> {
    report: &'a mut dyn FnMut(CompactProgress),
    done: u64,
    total: u64,
}

impl Tracker<'_> {
    /// One more input segment of `bytes` read by a pass.
    fn advance(&mut self, bytes: u64) {
        self.done = (self.done + bytes).min(self.total);
        (self.report)(CompactProgress {
            done: self.done,
            total: self.total,
        });
    }
}

impl Store {
    /// Rewrites the sealed segments keeping only what a live session (or fork) can reach:
    /// popped, truncated, cleared, replaced and deleted messages and superseded events leave
    /// the disk. Appends and reads go on meanwhile (the write lock is held only for the
    /// final rename); interaction ids and LSNs never change; a crash at any step leaves the
    /// old segments or the new one in force. The active segment is not touched: see
    /// [`Store::seal`] to include what it holds. First, the store's retention rule
    /// ([`super::Options::retention`]) deletes the sessions it selects (and seals the active
    /// segment, so they are erased too): `report.sessions_expired`.
    ///
    /// When it drops records it then empties `quarantine/` (`report.quarantine_purged`),
    /// unless the store was opened with [`super::Options::keep_quarantine`].
    ///
    /// # Errors
    /// [`Error::ReadOnly`]; [`Error::Compacting`] while another compaction of the store
    /// runs; [`Error::Corrupt`] if a sealed segment is damaged (nothing is replaced: repair
    /// it first); [`Error::Io`] (also when the new segments are in force but emptying
    /// `quarantine/` failed: [`Store::purge_quarantine`] again finishes the erasure).
    pub fn compact(&self) -> Result<CompactReport> {
        self.compact_when(0.0, self.inner.opts.retention, &mut |_| {})
    }

    /// [`Store::compact`], with `retention` deciding which sessions it deletes first instead
    /// of the store's rule ([`super::Options::retention`]).
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_retaining(&self, retention: super::Retention) -> Result<CompactReport> {
        self.compact_with(retention, &mut |_| {})
    }

    /// [`Store::compact_retaining`], calling `progress` as it reads its input (for a
    /// progress bar: the CLI's).
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_with(
        &self,
        retention: super::Retention,
        progress: &mut dyn FnMut(CompactProgress),
    ) -> Result<CompactReport> {
        self.compact_when(0.0, retention, progress)
    }

    /// [`Store::compact`] only if at least `dead_ratio` (0 to 1) of the sealed segments'
    /// bytes would be reclaimed (or the retention rule deletes a session): the check costs
    /// one read of the sealed segments, the compaction itself another two.
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_if(&self, dead_ratio: f64) -> Result<CompactReport> {
        self.compact_when(
            dead_ratio.clamp(0.0, 1.0),
            self.inner.opts.retention,
            &mut |_| {},
        )
    }

    fn compact_when(
        &self,
        dead_ratio: f64,
        retention: super::Retention,
        progress: &mut dyn FnMut(CompactProgress),
    ) -> Result<CompactReport> {
        let started = Instant::now();
        let dir = Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
        // Before any file is written: a fork() child's compaction would fail only at its
        // commit, under the write lock.
        self.check_process()?;
        if self.inner.locks.is_none() {
            return Err(Error::ReadOnly {
                path: self.inner.dir.clone(),
            });
        }
        let _turn = self.compaction_turn(dir)?;
        let mut report = CompactReport {
            sessions_expired: self.apply_retention(retention)?,
            ..CompactReport::default()
        };
        if !report.sessions_expired.is_empty() {
            // The deletes go in the range this compaction rewrites.
            self.seal()?;
        }
        // No hint of a segment it may replace is in flight (see `hints`).
        self.inner.hints.wait_idle();
        self.install_built();
        let (inputs, end) = self.inputs();
        if inputs.is_empty() {
            return Ok(finish(report, started));
        }
        let bytes_before: u64 = inputs.iter().map(|s| segment_len(s)).sum();
        let mut tracker = Tracker {
            report: progress,
            done: 0,
            // Planning reads the input twice, writing once more.
            total: if dead_ratio > 0.0 { 3 } else { 2 } * bytes_before,
        };
        // The bytes that would go are counted (one more pass) only against a threshold.
        let plan = Plan::build(&inputs, end, &mut tracker, dead_ratio > 0.0)?;
        let dead = plan.dead_bytes as f64 / bytes_before.max(1) as f64;
        let worth_it = (plan.drops_something() || inputs.len() > 1)
            && (dead >= dead_ratio || !report.sessions_expired.is_empty());
        if !worth_it {
            return Ok(finish(report, started));
        }
        let out = write_output(dir, &inputs, &plan, end, &mut tracker)?;
        if let Err(e) = check_output(&self.inner.dir, &plan.state, &out) {
            let _ = dir.remove(&out.path);
            return Err(e);
        }
        // Its hint, built before the write lock (it reads the whole output) under a name of
        // its own, and put in place by the switch, after the commit point: under the first
        // input's name, whose own hint it replaces. (Written any sooner, a hint of the first
        // input that the hints thread built could be put over it meanwhile.)
        let out_hint = hint::build(&out.map, Lsn(inputs[0].id.0), out.salt).and_then(|h| {
            let tmp = hint::tmp_path(dir.path, inputs[0].id, out.salt);
            dir.write_new(&tmp, &h).ok().map(|()| tmp)
        });
        report.bytes_before = bytes_before;
        report.bytes_after = out.map.len() as u64;
        report.records_kept = out.kept;
        report.records_dropped = out.dropped;
        report.sessions_erased = plan.erased();
        report.segments_rewritten = inputs.len();
        report.segment = Some(inputs[0].id);
        drop(plan);
        if let Err(e) = self.switch(dir, &inputs, &out, out_hint.as_deref()) {
            if let Some(tmp) = &out_hint {
                let _ = dir.vfs.remove_file(tmp);
            }
            return Err(e);
        }
        drop(out);
        if !self.inner.opts.keep_quarantine && report.records_dropped > 0 {
            report.quarantine_purged = self.purge_quarantine()?;
        }
        Ok(finish(report, started))
    }

    /// Removes every file in the store's `quarantine/` directory: the bytes that salvage and
    /// torn-tail cuts set aside (which may hold messages of sessions deleted since). Returns
    /// how many it removed. Under the write lock, so no cut is writing there meanwhile.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`].
    pub fn purge_quarantine(&self) -> Result<usize> {
        let dir = Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
        self.with_write_turn(|_| {
            let qpath = dir.join(crate::recovery::QUARANTINE_DIR);
            if !dir.vfs.is_dir(&qpath) {
                return Ok(0);
            }
            let names = dir
                .vfs
                .list(&qpath)
                .map_err(|e| Error::io("list", &qpath, e))?;
            for name in &names {
                dir.remove(&qpath.join(name))?;
            }
            Dir::new(dir.vfs, &qpath).sync()?;
            Ok(names.len())
        })
    }

    /// This caller's turn to compact: one compaction at a time per store, across processes
    /// (`flock` on `COMPACT`, which the kernel releases if its holder dies).
    fn compaction_turn(&self, dir: Dir<'_>) -> Result<Box<dyn crate::io::VfsLock>> {
        let path = dir.join(COMPACT_FILE);
        let lock = dir
            .vfs
            .lock_file(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match lock.try_lock(LockMode::Exclusive) {
            Ok(true) => Ok(lock),
            Ok(false) => Err(Error::Compacting {
                path: self.inner.dir.clone(),
            }),
            Err(e) => Err(Error::io("lock", &path, e)),
        }
    }

    /// The sealed segments to compact (a prefix of the log, at most
    /// [`MAX_COMPACTION_INPUT`] bytes unless one segment alone is more) and the first LSN
    /// after them.
    fn inputs(&self) -> (Vec<Arc<Segment>>, Lsn) {
        let state = self.view();
        let sealed = &state.segments[..state.segments.len().saturating_sub(1)];
        let mut total = 0;
        let mut inputs = Vec::new();
        for s in sealed {
            let len = segment_len(s);
            if !inputs.is_empty() && total + len > MAX_COMPACTION_INPUT {
                break;
            }
            total += len;
            inputs.push(s.clone());
        }
        let end = state
            .segments
            .get(inputs.len())
            .map_or(state.next_lsn, |s| Lsn(s.id.0));
        (inputs, end)
    }

    /// Puts the checked output in place of the inputs and reads this process's state again
    /// (under the writer's turn and the write lock).
    fn switch(
        &self,
        dir: Dir<'_>,
        inputs: &[Arc<Segment>],
        out: &Output,
        out_hint: Option<&std::path::Path>,
    ) -> Result<()> {
        self.with_write_turn(|w| {
            // The log's files change under the writer: its next write turn catches up (and
            // follows the state) even if this process keeps the write lock. A step after the
            // commit point may fail before the state is reloaded, and a read may reload it
            // later: the writer must never go on with ordinals of the old segment table.
            w.caught_up = false;
            if let Some(crypt) = &self.inner.crypt {
                // Keys that a crash or a failed destruction left to deleted sessions go
                // first: the output may drop their delete records, and an open destroys
                // only the keys of sessions whose delete it still finds.
                let deleted: std::collections::HashSet<Box<str>> =
                    self.state().index.deleted().map(Box::from).collect();
                if !deleted.is_empty()
                    && let Err(e) = crypt.sweep(|s| deleted.contains(s), || self.durable_now(w))
                {
                    let _ = dir.remove(&out.path);
                    return Err(e);
                }
            }
            let first = &inputs[0];
            if let Err(e) = dir.rename(&out.path, &first.path) {
                let _ = dir.remove(&out.path);
                return Err(e);
            }
            // The commit point: from here the compacted segment is in force (the inputs after
            // it are superseded, whether or not their removal below happens).
            dir.sync()?;
            if let Some(tmp) = out_hint {
                let _ = dir.rename(tmp, &hint::path(dir.path, first.id));
            }
            for s in &inputs[1..] {
                let _ = dir.vfs.remove_file(&hint::path(dir.path, s.id));
                dir.remove(&s.path)?;
            }
            dir.sync()?;
            self.inner.head.bump_epoch(&self.inner.dir)?;
            let mut st = self.state_mut();
            st.reload_if_compacted(dir, &self.inner.head)?;
            st.catch_up(dir, true, self.inner.keys())?;
            // Hints' temporary files a crash left name what the compaction may have erased.
            super::hints::sweep_tmp(dir, |id, salt| st.holds(id, salt));
            w.follow(&st, dir)
        })
    }
}

fn finish(mut report: CompactReport, started: Instant) -> CompactReport {
    report.duration = started.elapsed();
    report
}

/// A sealed segment's bytes.
fn map_of(s: &Segment) -> Result<Mapping> {
    match &s.data {
        SegmentData::Mapped(m) => Ok(m.clone()),
        SegmentData::File(view) => view.live_map().map_err(|e| Error::io("map", &s.path, e)),
    }
}

fn segment_len(s: &Segment) -> u64 {
    map_of(s).map_or(0, |m| m.len() as u64)
}

/// Reads every committed unit of a sealed segment through the segment reader, calling
/// `unit` on each; any stop but a clean end is an error (a sealed segment is whole).
fn for_each_unit(
    s: &Segment,
    map: &[u8],
    mut unit: impl FnMut(&[Record<'_>]) -> Result<()>,
) -> Result<()> {
    let start = SEGMENT_HEADER_LEN as u64;
    let reader = SegmentReader::new(map, s.salt, start, Some(Lsn(s.id.0)));
    let mut units = Units::new(reader.allowing_gaps(s.compacted));
    while let Some(u) = units.next_unit() {
        unit(u)?;
    }
    match units.stop() {
        Some(stop) if stop.why == Why::End && stop.at == units.committed_end() => Ok(()),
        None => Ok(()),
        Some(stop) => match stop.why {
            Why::UnknownKind(kind) => Err(Error::UnknownRecordKind {
                segment: s.id,
                offset: stop.at,
                kind,
                version: crate::format::FORMAT_VERSION,
            }),
            _ => Err(Error::Corrupt {
                segment: s.id,
                offset: units.committed_end(),
                damage: stop.damage().unwrap_or(crate::error::Damage::TornTail {
                    len: map.len() as u64 - units.committed_end(),
                }),
            }),
        },
    }
}
