//! Writing the compacted segment, and reading it back to check it before it replaces
//! anything.

use std::path::PathBuf;
use std::sync::Arc;

use super::plan::{Plan, Rewrite, empty_state, fold};
use super::{GAP_SESSION, Tracker, for_each_unit, map_of};
use crate::error::{Error, Result};
use crate::format::{Kind, RecordMeta};
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::Pos;
use crate::io::{Dir, Mapping, OpenMode};
use crate::segment::{Record, Segment, SegmentBuilder, SegmentData};
use crate::store::State;

/// The compacted segment, written and synced under its temporary name.
pub(super) struct Output {
    pub(super) path: PathBuf,
    pub(super) salt: u64,
    pub(super) map: Mapping,
    /// Records written (`gap` records aside) and records dropped.
    pub(super) kept: u64,
    pub(super) dropped: u64,
}

/// Writes the records the plan keeps and the events it rewrites, in log order, to
/// `{first}.compact`.
pub(super) fn write_output(
    dir: Dir<'_>,
    inputs: &[Arc<Segment>],
    plan: &Plan,
    end: Lsn,
    tracker: &mut Tracker<'_>,
) -> Result<Output> {
    let first = inputs[0].id;
    let path = dir.join(&format!("{:020}.compact", first.0));
    // A crashed compaction's output (never in force): replaced.
    if dir.vfs.exists(&path) {
        dir.remove(&path)?;
    }
    let file = dir.open(&path, OpenMode::CreateNew)?;
    let io = |e| Error::io("write", &path, e);
    let mut out = SegmentBuilder::new(dir.vfs, Lsn(first.0), true, Some(&*file));
    let mut next = Lsn(first.0);
    let mut last_ts = Timestamp(0);
    let mut rewrite = Rewrite::new(plan, inputs);
    let (mut kept, mut dropped) = (0, 0);
    for (ordinal, s) in inputs.iter().enumerate() {
        let map = map_of(s)?;
        for_each_unit(s, &map, |unit| {
            let written: Vec<(RecordMeta, &Record<'_>)> = unit
                .iter()
                .filter_map(|r| rewrite.next(ordinal, r).map(|m| (m, r)))
                .collect();
            let data = unit.iter().filter(|r| r.meta.kind != Kind::Gap).count();
            kept += written.len() as u64;
            dropped += (data - written.len()) as u64;
            for (i, (meta, r)) in written.iter().enumerate() {
                let meta = RecordMeta {
                    first: i == 0,
                    commit: i + 1 == written.len(),
                    ..*meta
                };
                out.put(
                    &meta,
                    r.session.as_bytes(),
                    plan.key_of(ordinal, r),
                    r.payload,
                )
                .map_err(io)?;
                next = r.meta.next_lsn();
            }
            last_ts = unit
                .last()
                .map_or(last_ts, |r| last_ts.max(r.meta.timestamp));
            Ok(())
        })?;
        tracker.advance(map.len() as u64);
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
        out.put(&gap, GAP_SESSION, None, &[]).map_err(io)?;
    }
    let salt = out.salt();
    out.finish().map_err(io)?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    dir.sync()?;
    let map = file.map().map_err(|e| Error::io("map", &path, e))?;
    Ok(Output {
        path,
        salt,
        map,
        kept,
        dropped,
    })
}

/// Reads the output back and folds it: every session must hold the same messages (by
/// LSN), keys and metadata as the plan's fold of the inputs.
pub(super) fn check_output(store: &std::path::Path, want: &State, out: &Output) -> Result<()> {
    let seg = Arc::new(Segment {
        id: SegmentId(want.segments[0].id.0),
        salt: out.salt,
        path: out.path.clone(),
        data: SegmentData::Mapped(out.map.clone()),
        compacted: true,
    });
    let mut got = empty_state(vec![seg.clone()]);
    let mut next = Lsn(seg.id.0);
    for_each_unit(&seg, &out.map, |unit| {
        for r in unit {
            fold(&mut got, 0, r);
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
            && same_keys(g, w);
        if !same || !same_lsns(&got, g, want, w)? {
            return Err(mismatch(id));
        }
    }
    for (id, p) in want.index.metas() {
        let wanted = lsn_at(want, p)?;
        let found = match got.index.meta(id) {
            Some(q) => lsn_at(&got, q)?,
            None => None,
        };
        if wanted.is_none() || found != wanted {
            return Err(mismatch(id));
        }
    }
    Ok(())
}

/// Whether the two sessions' messages are the same records (by LSN).
///
/// # Errors
/// As [`lsn_at`].
fn same_lsns(
    got: &State,
    g: crate::index::Session<'_>,
    want: &State,
    w: crate::index::Session<'_>,
) -> Result<bool> {
    let (gs, ws) = (g.snapshot(1..g.count() + 1), w.snapshot(1..w.count() + 1));
    for i in ws.range() {
        let (Some(a), Some(b)) = (gs.get(i), ws.get(i)) else {
            return Ok(false);
        };
        if lsn_at(got, a)? != lsn_at(want, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_keys(g: crate::index::Session<'_>, w: crate::index::Session<'_>) -> bool {
    let mut a: Vec<_> = g.keyed_ids().collect();
    let mut b: Vec<_> = w.keyed_ids().collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// The LSN of the record at `p`, verified (`None` if it does not verify, or `p` names no
/// segment).
///
/// # Errors
/// [`Error::Io`] when its segment cannot be mapped: a failed read, which says nothing of
/// whether the output matches (it fails the compaction as such, not as a mismatch).
fn lsn_at(state: &State, p: Pos) -> Result<Option<Lsn>> {
    let Some(s) = state.segments.get(p.seg as usize) else {
        return Ok(None);
    };
    let map = map_of(s)?;
    Ok(crate::segment::record_at(&map, s.salt, u64::from(p.off))
        .ok()
        .map(|r| r.meta.lsn))
}
