//! What a compaction keeps, and how it rewrites the events it keeps.
//!
//! The inputs are folded once (the one fold) into the index they make at their end: every
//! record a live session's messages point at is *kept* (a keyed append with its key block
//! while the key is live, without it once the key is forgotten), with each live session's
//! latest `meta` record. Then the output is the inputs' records in
//! log order, each kept record as it was, and each event rewritten for the kept records
//! only, so that at every point of the log
//!
//! > each session's messages in the output = its messages in the inputs, without the
//! > records that are not kept
//!
//! (by induction over the log: a second fold of the inputs, run beside the writing, gives
//! each event's state before it). A pop is written if the message it removes is kept; a
//! truncate or a clear, with the number of kept messages it keeps or removes, if it removes
//! a kept one; a fork, with the number of kept messages of the source it shares; a delete,
//! if the output holds anything of the session. At the end every live message is kept, so
//! the output folds to the same sessions, which `check` verifies before anything is
//! replaced. Forks keep sharing their prefixes; a deleted fork source loses every message
//! no fork shares.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Tracker, for_each_unit, map_of};
use crate::error::Result;
use crate::format::{Kind, RecordKey, RecordMeta};
use crate::id::{Lsn, Timestamp};
use crate::index::{Index, Pos};
use crate::segment::{Record, Segment};
use crate::store::State;

/// What the inputs hold at their end, and which of their records to keep.
pub(super) struct Plan {
    /// The fold of the inputs: what the output must fold to.
    pub(super) state: State,
    /// Records a live session reaches (messages, latest metadata): (input ordinal, offset).
    keep: HashSet<(u32, u32)>,
    /// Keyed appends whose key is live: (input ordinal, offset).
    keys: HashSet<(u32, u32)>,
    /// Every session with records in the inputs.
    seen: HashSet<Box<str>>,
    /// Framed bytes of the records that are neither kept nor (possibly) rewritten events
    /// (counted only when asked).
    pub(super) dead_bytes: u64,
    /// Records in the inputs (`gap` records aside).
    records: u64,
}

/// An empty state over `segments`, to fold them into.
pub(super) fn empty_state(segments: Vec<Arc<Segment>>) -> State {
    let next_lsn = Lsn(segments.first().map_or(1, |s| s.id.0));
    State {
        segments: Arc::new(segments),
        index: Index::default(),
        end: 0,
        next_lsn,
        last_ts: Timestamp(0),
        epoch: None,
    }
}

/// Folds one record read from input `ordinal` into `state`.
pub(super) fn fold(state: &mut State, ordinal: usize, r: &Record<'_>) {
    let pos = Pos {
        seg: ordinal as u32,
        off: r.offset as u32,
    };
    state.fold(r.session, &r.meta, pos, r.key, r.payload, None);
}

impl Plan {
    pub(super) fn build(
        inputs: &[Arc<Segment>],
        end: Lsn,
        tracker: &mut Tracker<'_>,
        count_dead: bool,
    ) -> Result<Plan> {
        let mut state = empty_state(inputs.to_vec());
        let mut seen = HashSet::new();
        let mut records = 0;
        for (ordinal, s) in inputs.iter().enumerate() {
            let map = map_of(s)?;
            for_each_unit(s, &map, |unit| {
                for r in unit {
                    if r.meta.kind != Kind::Gap {
                        records += 1;
                        if !seen.contains(r.session) {
                            seen.insert(r.session.into());
                        }
                    }
                    fold(&mut state, ordinal, r);
                }
                Ok(())
            })?;
            tracker.advance(map.len() as u64);
        }
        state.next_lsn = end;
        let mut plan = Plan {
            state,
            keep: HashSet::new(),
            keys: HashSet::new(),
            seen,
            dead_bytes: 0,
            records,
        };
        plan.mark();
        if count_dead {
            plan.dead_bytes = plan.dead(inputs, tracker)?;
        }
        Ok(plan)
    }

    /// Whether the output would lack a record of the inputs: more records than those kept
    /// for what the live sessions reach (every event, at least, is rewritten or dropped).
    pub(super) fn drops_something(&self) -> bool {
        self.records > self.keep.len() as u64
    }

    /// Marks what the live sessions reach.
    fn mark(&mut self) {
        let index = &self.state.index;
        for (_, s) in index.iter() {
            let snapshot = s.snapshot(1..s.count() + 1);
            for i in snapshot.range() {
                if let Some(p) = snapshot.get(i) {
                    self.keep.insert((p.seg, p.off));
                }
            }
            for id in s.keyed_ids() {
                if let Some(p) = snapshot.get(id - 1) {
                    self.keys.insert((p.seg, p.off));
                }
            }
        }
        for (_, p) in index.metas() {
            self.keep.insert((p.seg, p.off));
        }
    }

    /// Bytes of the records that are certainly dropped: appends and metadata nobody reaches
    /// (events are counted as kept: some are rewritten, most are not).
    fn dead(&self, inputs: &[Arc<Segment>], tracker: &mut Tracker<'_>) -> Result<u64> {
        let mut dead = 0;
        for (ordinal, s) in inputs.iter().enumerate() {
            let map = map_of(s)?;
            for_each_unit(s, &map, |unit| {
                for r in unit {
                    let data = matches!(r.meta.kind, Kind::Append | Kind::Meta);
                    if data && !self.kept(ordinal as u32, r) {
                        dead += r.len;
                    }
                }
                Ok(())
            })?;
            tracker.advance(map.len() as u64);
        }
        Ok(dead)
    }

    /// Whether `r`, an append or meta record of input `ordinal`, is kept.
    fn kept(&self, ordinal: u32, r: &Record<'_>) -> bool {
        self.keep.contains(&(ordinal, r.offset as u32))
    }

    /// The key block a kept record `r` keeps: its own while its key is live, else none.
    pub(super) fn key_of<'r>(&self, ordinal: usize, r: &Record<'r>) -> Option<RecordKey<'r>> {
        r.key
            .filter(|_| self.keys.contains(&(ordinal as u32, r.offset as u32)))
    }

    /// The sessions none of whose messages or metadata are kept, sorted.
    pub(super) fn erased(&self) -> Vec<String> {
        let index = &self.state.index;
        let mut erased: Vec<String> = self
            .seen
            .iter()
            .filter(|s| index.get(s).is_none() && index.meta(s).is_none())
            .map(|s| s.to_string())
            .collect();
        erased.sort();
        erased
    }
}

/// The second fold, run beside the writing: rewrites each record for the kept ones.
pub(super) struct Rewrite<'p> {
    plan: &'p Plan,
    /// The inputs folded up to the record being rewritten.
    state: State,
    /// Sessions the output holds a record of.
    written: HashSet<Box<str>>,
}

impl<'p> Rewrite<'p> {
    pub(super) fn new(plan: &'p Plan, inputs: &[Arc<Segment>]) -> Rewrite<'p> {
        Rewrite {
            plan,
            state: empty_state(inputs.to_vec()),
            written: HashSet::new(),
        }
    }

    /// What the output holds in place of `r` (of input `ordinal`): `r` itself, `r` with
    /// another argument, or nothing. Then folds `r`.
    pub(super) fn next(&mut self, ordinal: usize, r: &Record<'_>) -> Option<RecordMeta> {
        let out = self.rewrite(ordinal as u32, r);
        if out.is_some() && !self.written.contains(r.session) {
            self.written.insert(r.session.into());
        }
        fold(&mut self.state, ordinal, r);
        out
    }

    fn rewrite(&self, ordinal: u32, r: &Record<'_>) -> Option<RecordMeta> {
        let with = |arg| Some(RecordMeta { arg, ..r.meta });
        let s = r.session;
        match r.meta.kind {
            Kind::Append | Kind::Meta => self.plan.kept(ordinal, r).then_some(r.meta),
            Kind::Gap => None,
            Kind::Pop => {
                let n = self.count(s);
                let last = self.position(s, n)?;
                self.is_kept(last)
                    .then(|| self.kept_prefix(s, n))
                    .and_then(with)
            }
            Kind::Truncate | Kind::Clear => {
                let keep = if r.meta.kind == Kind::Clear {
                    0
                } else {
                    r.meta.arg
                };
                let (kept_before, kept_after) =
                    (self.kept_prefix(s, u64::MAX), self.kept_prefix(s, keep));
                if kept_after >= kept_before {
                    return None;
                }
                with(if r.meta.kind == Kind::Clear {
                    kept_before
                } else {
                    kept_after
                })
            }
            Kind::Delete => self
                .written
                .contains(s)
                .then(|| self.kept_prefix(s, u64::MAX))
                .and_then(with),
            Kind::Fork => {
                let src = std::str::from_utf8(r.payload).ok()?;
                let shared = self.kept_prefix(src, r.meta.arg);
                (shared > 0 || self.written.contains(s))
                    .then_some(shared)
                    .and_then(with)
            }
        }
    }

    fn count(&self, session: &str) -> u64 {
        self.state.index.count(session)
    }

    /// The position of `session`'s message `id` (1-based), as the inputs hold it now.
    fn position(&self, session: &str, id: u64) -> Option<Pos> {
        let s = self.state.index.get(session)?;
        s.snapshot(id..id + 1).get(id.checked_sub(1)?)
    }

    fn is_kept(&self, p: Pos) -> bool {
        self.plan.keep.contains(&(p.seg, p.off))
    }

    /// How many of `session`'s first `n` messages (as the inputs hold it now) are kept.
    fn kept_prefix(&self, session: &str, n: u64) -> u64 {
        let Some(s) = self.state.index.get(session) else {
            return 0;
        };
        let snapshot = s.snapshot(1..n.min(s.count()).saturating_add(1));
        snapshot
            .range()
            .filter(|&i| snapshot.get(i).is_some_and(|p| self.is_kept(p)))
            .count() as u64
    }
}
