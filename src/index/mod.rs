//! The in-memory session index: a fold over the log's events.

mod positions;

use std::collections::HashMap;
use std::ops::Range;

use crate::hint::Offsets;
use crate::id::Timestamp;
use crate::io::Mapping;

use positions::{MappedHints, Positions};

/// Where a record starts: the segment's ordinal in the store's segment table, and the byte
/// offset in that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) seg: u32,
    pub(crate) off: u32,
}

/// One session's live messages.
///
/// Invariant: position `i` (0-based) is the record of interaction id `i + 1`; `first` and
/// `last` are the timestamps of the first and of the last position. `epoch` changes whenever
/// messages are removed, so a reader can tell its positions went stale.
#[derive(Debug)]
struct SessionState {
    positions: Positions,
    first: Timestamp,
    last: Timestamp,
    epoch: u64,
}

/// A session as the index's readers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session<'a> {
    state: &'a SessionState,
    hints: &'a MappedHints,
}

impl<'a> Session<'a> {
    /// Its number of messages (its last interaction id).
    pub(crate) fn count(&self) -> u64 {
        self.state.positions.len()
    }

    /// Where the messages with interaction ids `ids` (1-based; clamped to the session) are,
    /// in order. Costs O(log runs + what it yields).
    pub(crate) fn positions(&self, ids: Range<u64>) -> impl Iterator<Item = Pos> + 'a {
        let (from, to) = (ids.start.saturating_sub(1), ids.end.saturating_sub(1));
        self.state.positions.range(self.hints, from, to)
    }

    /// Timestamp of its first message.
    pub(crate) fn first(&self) -> Timestamp {
        self.state.first
    }

    /// Timestamp of its last message.
    pub(crate) fn last(&self) -> Timestamp {
        self.state.last
    }

    /// Changes whenever messages are removed from it.
    pub(crate) fn epoch(&self) -> u64 {
        self.state.epoch
    }
}

/// Session id -> live messages. Sessions with no messages are not kept.
///
/// Positions of segments loaded from their hint files stay in those files, which the index
/// keeps mapped (see `positions`): it holds a few words per (session, segment) on the heap
/// for them, and 8 bytes per message appended (or scanned) since the open.
#[derive(Debug, Default)]
pub(crate) struct Index {
    sessions: HashMap<Box<str>, SessionState>,
    hints: MappedHints,
    next_epoch: u64,
}

impl Index {
    pub(crate) fn get(&self, session: &str) -> Option<Session<'_>> {
        self.sessions.get(session).map(|state| self.view(state))
    }

    fn view<'a>(&'a self, state: &'a SessionState) -> Session<'a> {
        Session {
            state,
            hints: &self.hints,
        }
    }

    pub(crate) fn count(&self, session: &str) -> u64 {
        self.get(session).map_or(0, |s| s.count())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Session<'_>)> {
        self.sessions.iter().map(|(k, v)| (&**k, self.view(v)))
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Calls `f` on the state of `session`, created empty (with a fresh epoch) if it has none.
    fn update(&mut self, session: &str, first: Timestamp, f: impl FnOnce(&mut SessionState)) {
        if let Some(s) = self.sessions.get_mut(session) {
            return f(s);
        }
        self.next_epoch += 1;
        let mut s = SessionState {
            positions: Positions::default(),
            first,
            last: first,
            epoch: self.next_epoch,
        };
        f(&mut s);
        self.sessions.insert(session.into(), s);
    }

    pub(crate) fn append(&mut self, session: &str, pos: Pos, ts: Timestamp) {
        self.update(session, ts, |s| {
            s.positions.push(pos);
            s.last = ts;
        });
    }

    /// Keeps the hint of segment `seg`, validated, for the runs of [`Index::append_run`] to
    /// borrow from.
    pub(crate) fn map_hint(&mut self, seg: u32, bytes: Mapping) {
        self.hints.insert(seg, bytes);
    }

    /// Appends a run of messages of segment `seg`, read from its hint (which must have been
    /// given to [`Index::map_hint`]): one lookup, and the offsets stay in the hint.
    pub(crate) fn append_run(
        &mut self,
        session: &str,
        seg: u32,
        offsets: Offsets<'_>,
        first: Timestamp,
        last: Timestamp,
    ) {
        if offsets.len() == 0 {
            return;
        }
        debug_assert!(self.hints.contains(seg), "hint of segment {seg} not mapped");
        self.update(session, first, |s| {
            s.positions.push_run(seg, offsets.at(), offsets);
            s.last = last;
        });
    }

    /// Makes room for `n` more sessions.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.sessions.reserve(n);
    }

    /// Keeps the first `keep` messages. `last_ts` gives the timestamp of a position (needed
    /// for the new last message). Returns how many were removed.
    pub(crate) fn truncate(
        &mut self,
        session: &str,
        keep: u64,
        last_ts: impl FnOnce(Pos) -> Timestamp,
    ) -> u64 {
        let Some(s) = self.sessions.get_mut(session) else {
            return 0;
        };
        let len = s.positions.len();
        if keep >= len {
            return 0;
        }
        if keep == 0 {
            self.sessions.remove(session);
            return len;
        }
        s.positions.truncate(keep);
        if let Some(p) = s.positions.get(&self.hints, keep - 1) {
            s.last = last_ts(p);
        }
        self.next_epoch += 1;
        s.epoch = self.next_epoch;
        len - keep
    }

    /// Bytes the index holds: its heap (position vectors at capacity, runs, keys, per-session
    /// state) plus the hint files it keeps mapped, counted whole (they are file pages in the
    /// page cache, shared and evictable, not heap; but the index keeps them alive).
    pub(crate) fn memory_bytes(&self) -> usize {
        let per_entry = size_of::<(Box<str>, SessionState)>() + 1; // + hashbrown control byte
        self.sessions.capacity() * per_entry
            + self
                .sessions
                .iter()
                .map(|(k, s)| k.len() + s.positions.heap_bytes())
                .sum::<usize>()
            + self.hints.bytes()
    }

    /// Total live messages.
    pub(crate) fn messages(&self) -> u64 {
        self.sessions.values().map(|s| s.positions.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_updates_count_timestamps_and_epoch() {
        let mut ix = Index::default();
        for i in 0..5u32 {
            ix.append(
                "s",
                Pos {
                    seg: 0,
                    off: i * 100,
                },
                Timestamp(u64::from(i)),
            );
        }
        let epoch = ix.get("s").unwrap().epoch();
        assert_eq!(
            ix.truncate("s", 3, |p| Timestamp(u64::from(p.off / 100))),
            2
        );
        let s = ix.get("s").unwrap();
        assert_eq!(
            (s.count(), s.first(), s.last()),
            (3, Timestamp(0), Timestamp(2))
        );
        assert_ne!(s.epoch(), epoch);
        assert_eq!(ix.truncate("s", 7, |_| Timestamp(0)), 0);
        assert_eq!(ix.truncate("s", 0, |_| Timestamp(0)), 3);
        assert!(ix.get("s").is_none());
        ix.append("s", Pos { seg: 1, off: 0 }, Timestamp(9));
        assert!(ix.get("s").unwrap().epoch() > epoch);
    }
}
