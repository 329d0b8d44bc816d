//! Compaction: the sealed segments are rewritten as one compacted segment that keeps only
//! the records a live session can still reach, then put in their place with one rename.
//!
//! 1. **Plan** (no lock held: appends and reads go on). The inputs are a prefix of the
//!    sealed segments; they never change. Their records are folded (the one fold) into the
//!    index they make at their end, and the records that index reaches are marked: each
//!    live session's messages, the records of its live idempotency keys, its latest
//!    metadata. A session a fork links to another (a *fork family*) is kept whole, every
//!    record of every member, while any member is live: the fork records and the source's
//!    events are what make the shared prefixes.
//! 2. **Write** the marked records, in LSN order, keeping their LSNs, kinds, arguments and
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

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{State, Store};
use crate::error::{Error, Result};
use crate::format::{Kind, RecordMeta, SEGMENT_HEADER_LEN};
use crate::hint;
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::{Index, Pos};
use crate::io::{Dir, LockMode, Mapping, OpenMode};
use crate::segment::{Record, Segment, SegmentBuilder, SegmentData, SegmentReader, Units, Why};

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
    /// The compacted segment, when one was written.
    pub segment: Option<SegmentId>,
    /// How long it took.
    pub duration: Duration,
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
    /// # Errors
    /// [`Error::ReadOnly`]; [`Error::Compacting`] while another compaction of the store
    /// runs; [`Error::Corrupt`] if a sealed segment is damaged (nothing is replaced: repair
    /// it first); [`Error::Io`].
    pub fn compact(&self) -> Result<CompactReport> {
        self.compact_when(0.0, self.inner.opts.retention)
    }

    /// [`Store::compact`], with `retention` deciding which sessions it deletes first instead
    /// of the store's rule ([`super::Options::retention`]).
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_retaining(&self, retention: super::Retention) -> Result<CompactReport> {
        self.compact_when(0.0, retention)
    }

    /// [`Store::compact`] only if at least `dead_ratio` (0 to 1) of the sealed segments'
    /// bytes would be reclaimed (or the retention rule deletes a session): the check costs
    /// one read of the sealed segments, the compaction itself another two.
    ///
    /// # Errors
    /// As [`Store::compact`].
    pub fn compact_if(&self, dead_ratio: f64) -> Result<CompactReport> {
        self.compact_when(dead_ratio.clamp(0.0, 1.0), self.inner.opts.retention)
    }

    fn compact_when(&self, dead_ratio: f64, retention: super::Retention) -> Result<CompactReport> {
        let started = Instant::now();
        let dir = Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
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
        let (inputs, end) = self.inputs();
        if inputs.is_empty() {
            return Ok(finish(report, started));
        }
        let plan = Plan::build(&inputs, end)?;
        let bytes_before: u64 = inputs.iter().map(|s| segment_len(s)).sum();
        let dead = plan.dropped_bytes as f64 / bytes_before.max(1) as f64;
        let worth_it = (plan.dropped > 0 || inputs.len() > 1)
            && (dead >= dead_ratio || !report.sessions_expired.is_empty());
        if !worth_it {
            report.records_kept = plan.kept;
            return Ok(finish(report, started));
        }
        let out = write_output(dir, &inputs, &plan, end)?;
        if let Err(e) = check_output(&self.inner.dir, &plan.state, &out) {
            let _ = dir.remove(&out.path);
            return Err(e);
        }
        report.bytes_before = bytes_before;
        report.bytes_after = out.map.len() as u64;
        report.records_kept = plan.kept;
        report.records_dropped = plan.dropped;
        report.sessions_erased = plan.erased();
        report.segments_rewritten = inputs.len();
        report.segment = Some(inputs[0].id);
        self.switch(dir, &inputs, &out)?;
        Ok(finish(report, started))
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
    fn switch(&self, dir: Dir<'_>, inputs: &[Arc<Segment>], out: &Output) -> Result<()> {
        self.with_write_turn(|w| {
            let first = &inputs[0];
            if let Err(e) = dir.rename(&out.path, &first.path) {
                let _ = dir.remove(&out.path);
                return Err(e);
            }
            // The commit point: from here the compacted segment is in force (the inputs after
            // it are superseded, whether or not their removal below happens).
            dir.sync()?;
            for s in inputs {
                let _ = dir.vfs.remove_file(&hint::path(dir.path, s.id));
            }
            for s in &inputs[1..] {
                dir.remove(&s.path)?;
            }
            dir.sync()?;
            let _ = hint::write(dir, &out.map, first.id, out.salt);
            self.inner.head.bump_epoch(&self.inner.dir)?;
            let mut st = self.state_mut();
            st.reload_if_compacted(dir, &self.inner.head)?;
            st.catch_up(dir, true)?;
            w.follow(&st, dir)
        })
    }
}

fn finish(mut report: CompactReport, started: Instant) -> CompactReport {
    report.duration = started.elapsed();
    report
}

/// A sealed segment's bytes.
fn bytes(s: &Segment) -> Result<Mapping> {
    match &s.data {
        SegmentData::Mapped(m) => Ok(m.clone()),
        SegmentData::File(view) => view.live_map().map_err(|e| Error::io("map", &s.path, e)),
    }
}

fn segment_len(s: &Segment) -> u64 {
    bytes(s).map_or(0, |m| m.len() as u64)
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

/// What the inputs hold at their end, and which of their records to keep.
struct Plan {
    /// The fold of the inputs: what the output must fold to.
    state: State,
    /// Records a live session reaches: (input ordinal, offset).
    keep: HashSet<(u32, u32)>,
    /// `key` records of live keys, by LSN.
    keys: HashSet<u64>,
    /// Sessions kept whole (live fork families).
    whole: HashSet<Box<str>>,
    /// Every session with records in the inputs.
    seen: HashSet<Box<str>>,
    kept: u64,
    dropped: u64,
    /// Framed bytes of the records dropped.
    dropped_bytes: u64,
}

impl Plan {
    fn build(inputs: &[Arc<Segment>], end: Lsn) -> Result<Plan> {
        let mut state = State {
            segments: Arc::new(inputs.to_vec()),
            index: Index::default(),
            end: 0,
            next_lsn: Lsn(inputs[0].id.0),
            last_ts: Timestamp(0),
            epoch: None,
        };
        let mut forks = Families::default();
        let mut seen = HashSet::new();
        for (ordinal, s) in inputs.iter().enumerate() {
            let map = bytes(s)?;
            for_each_unit(s, &map, |unit| {
                for r in unit {
                    if r.meta.kind == Kind::Fork {
                        forks.join(r.session, &String::from_utf8_lossy(r.payload));
                    }
                    if r.meta.kind != Kind::Gap && !seen.contains(r.session) {
                        seen.insert(r.session.into());
                    }
                    let pos = Pos {
                        seg: ordinal as u32,
                        off: r.offset as u32,
                    };
                    state.fold(r.session, &r.meta, pos, r.payload);
                }
                Ok(())
            })?;
        }
        state.next_lsn = end;
        let mut plan = Plan {
            state,
            keep: HashSet::new(),
            keys: HashSet::new(),
            whole: HashSet::new(),
            seen,
            kept: 0,
            dropped: 0,
            dropped_bytes: 0,
        };
        plan.mark(&forks);
        plan.count(inputs)?;
        Ok(plan)
    }

    /// Marks what the live sessions reach.
    fn mark(&mut self, forks: &Families) {
        let index = &self.state.index;
        let mut live_families = HashSet::new();
        for (id, s) in index.iter() {
            if let Some(f) = forks.family(id) {
                live_families.insert(f);
                continue;
            }
            let snapshot = s.snapshot(1..s.count() + 1);
            for i in snapshot.range() {
                if let Some(p) = snapshot.get(i) {
                    self.keep.insert((p.seg, p.off));
                }
            }
            for (_, k) in s.keys() {
                self.keys.insert(k.first_lsn.0 - 1);
            }
        }
        for (id, p) in index.metas() {
            match forks.family(id) {
                Some(f) => {
                    live_families.insert(f);
                }
                None => {
                    self.keep.insert((p.seg, p.off));
                }
            }
        }
        self.whole = forks.members_of(&live_families);
    }

    /// Counts the records kept and dropped (a second pass, so the output is written only
    /// when it gains something).
    fn count(&mut self, inputs: &[Arc<Segment>]) -> Result<()> {
        let (mut kept, mut dropped, mut dropped_bytes) = (0, 0, 0);
        for (ordinal, s) in inputs.iter().enumerate() {
            let map = bytes(s)?;
            for_each_unit(s, &map, |unit| {
                // (A `gap` is no data: the output makes its own where it needs one.)
                for r in unit.iter().filter(|r| r.meta.kind != Kind::Gap) {
                    if self.keeps(ordinal as u32, r) {
                        kept += 1;
                    } else {
                        dropped += 1;
                        dropped_bytes += r.len;
                    }
                }
                Ok(())
            })?;
        }
        (self.kept, self.dropped, self.dropped_bytes) = (kept, dropped, dropped_bytes);
        Ok(())
    }

    fn keeps(&self, ordinal: u32, r: &Record<'_>) -> bool {
        self.whole.contains(r.session)
            || self.keep.contains(&(ordinal, r.offset as u32))
            || (r.meta.kind == Kind::Key && self.keys.contains(&r.meta.lsn.0))
    }

    /// The sessions none of whose records are kept, sorted.
    fn erased(&self) -> Vec<String> {
        let index = &self.state.index;
        let mut erased: Vec<String> = self
            .seen
            .iter()
            .filter(|s| {
                index.get(s).is_none() && index.meta(s).is_none() && !self.whole.contains(&***s)
            })
            .map(|s| s.to_string())
            .collect();
        erased.sort();
        erased
    }
}

/// Sessions linked by fork records (union-find over the sessions that took part in one).
#[derive(Default)]
struct Families {
    ids: HashMap<Box<str>, usize>,
    parent: Vec<usize>,
}

impl Families {
    fn id(&mut self, session: &str) -> usize {
        if let Some(&i) = self.ids.get(session) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.ids.insert(session.into(), i);
        i
    }

    fn root(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: &str, b: &str) {
        let (a, b) = (self.id(a), self.id(b));
        let (ra, rb) = (self.root(a), self.root(b));
        self.parent[ra] = rb;
    }

    /// The family of `session`, if it took part in a fork.
    fn family(&self, session: &str) -> Option<usize> {
        self.ids.get(session).map(|&i| self.root(i))
    }

    fn members_of(&self, families: &HashSet<usize>) -> HashSet<Box<str>> {
        self.ids
            .iter()
            .filter(|(_, i)| families.contains(&self.root(**i)))
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// The compacted segment, written and synced under its temporary name.
struct Output {
    path: PathBuf,
    salt: u64,
    map: Mapping,
}

/// Writes the records the plan keeps, in log order, to `{first}.compact`.
fn write_output(dir: Dir<'_>, inputs: &[Arc<Segment>], plan: &Plan, end: Lsn) -> Result<Output> {
    let first = inputs[0].id;
    let path = dir.join(&format!("{:020}.compact", first.0));
    // A crashed compaction's output (never in force): replaced.
    if dir.vfs.exists(&path) {
        dir.remove(&path)?;
    }
    let file = dir.open(&path, OpenMode::CreateNew)?;
    let io = |e| Error::io("write", &path, e);
    let mut out = SegmentBuilder::new(Lsn(first.0), true, Some(&*file));
    let mut next = Lsn(first.0);
    let mut last_ts = Timestamp(0);
    for (ordinal, s) in inputs.iter().enumerate() {
        let map = bytes(s)?;
        for_each_unit(s, &map, |unit| {
            let kept: Vec<&Record<'_>> = unit
                .iter()
                .filter(|r| plan.keeps(ordinal as u32, r))
                .collect();
            for (i, r) in kept.iter().enumerate() {
                let meta = RecordMeta {
                    first: i == 0,
                    commit: i + 1 == kept.len(),
                    ..r.meta
                };
                out.put(&meta, r.session.as_bytes(), r.payload)
                    .map_err(io)?;
                next = r.meta.next_lsn();
            }
            last_ts = unit
                .last()
                .map_or(last_ts, |r| last_ts.max(r.meta.timestamp));
            Ok(())
        })?;
    }
    if next < end {
        let gap = RecordMeta {
            kind: Kind::Gap,
            first: true,
            commit: true,
            lsn: next,
            arg: end.0 - next.0,
            timestamp: last_ts,
        };
        out.put(&gap, GAP_SESSION, &[]).map_err(io)?;
    }
    let salt = out.salt();
    out.finish().map_err(io)?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    dir.sync()?;
    let map = file.map().map_err(|e| Error::io("map", &path, e))?;
    Ok(Output { path, salt, map })
}

/// Reads the output back and folds it: every session must hold the same messages (by
/// LSN), keys and metadata as the plan's fold of the inputs.
fn check_output(store: &std::path::Path, want: &State, out: &Output) -> Result<()> {
    let seg = Arc::new(Segment {
        id: SegmentId(want.segments[0].id.0),
        salt: out.salt,
        path: out.path.clone(),
        data: SegmentData::Mapped(out.map.clone()),
        compacted: true,
    });
    let mut got = State {
        segments: Arc::new(vec![seg.clone()]),
        index: Index::default(),
        end: 0,
        next_lsn: Lsn(seg.id.0),
        last_ts: Timestamp(0),
        epoch: None,
    };
    let mut next = Lsn(seg.id.0);
    for_each_unit(&seg, &out.map, |unit| {
        for r in unit {
            let pos = Pos {
                seg: 0,
                off: r.offset as u32,
            };
            got.fold(r.session, &r.meta, pos, r.payload);
            next = r.meta.next_lsn();
        }
        Ok(())
    })?;
    let mismatch = |session: &str| Error::CompactionMismatch {
        path: store.to_owned(),
        session: session.to_owned(),
    };
    if next != want.next_lsn {
        return Err(mismatch("-"));
    }
    if got.index.len() != want.index.len()
        || got.index.metas().count() != want.index.metas().count()
    {
        return Err(mismatch("-"));
    }
    for (id, w) in want.index.iter() {
        let g = got.index.get(id).ok_or_else(|| mismatch(id))?;
        let same = g.count() == w.count()
            && g.first() == w.first()
            && g.last() == w.last()
            && same_lsns(&got, g, want, w)
            && same_keys(g, w);
        if !same {
            return Err(mismatch(id));
        }
    }
    for (id, p) in want.index.metas() {
        let same = got
            .index
            .meta(id)
            .is_some_and(|q| lsn_at(&got, q) == lsn_at(want, p) && lsn_at(want, p).is_some());
        if !same {
            return Err(mismatch(id));
        }
    }
    Ok(())
}

fn same_lsns(
    got: &State,
    g: crate::index::Session<'_>,
    want: &State,
    w: crate::index::Session<'_>,
) -> bool {
    let (gs, ws) = (g.snapshot(1..g.count() + 1), w.snapshot(1..w.count() + 1));
    ws.range().all(|i| {
        let (a, b) = (gs.get(i), ws.get(i));
        a.is_some()
            && b.is_some()
            && a.and_then(|p| lsn_at(got, p)) == b.and_then(|p| lsn_at(want, p))
    })
}

fn same_keys(g: crate::index::Session<'_>, w: crate::index::Session<'_>) -> bool {
    let mut a: Vec<_> = g.keys().collect();
    let mut b: Vec<_> = w.keys().collect();
    a.sort_by(|x, y| x.0.cmp(y.0));
    b.sort_by(|x, y| x.0.cmp(y.0));
    a == b
}

/// The LSN of the record at `p`, verified (`None` if it does not verify).
fn lsn_at(state: &State, p: Pos) -> Option<Lsn> {
    let s = state.segments.get(p.seg as usize)?;
    let map = bytes(s).ok()?;
    crate::segment::record_at(&map, s.salt, u64::from(p.off))
        .ok()
        .map(|r| r.meta.lsn)
}
