//! The in-memory session index: a fold over the log's events.

use std::collections::HashMap;

use crate::id::Timestamp;

/// Where a record starts: the segment's ordinal in the store's segment table, and the byte
/// offset in that segment. 8 bytes per message; with `Vec`'s doubling growth, a session's
/// positions hold at most 16 bytes per message once it has a few messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) seg: u32,
    pub(crate) off: u32,
}

/// One session's live messages.
///
/// Invariant: `positions[i]` is the record of interaction id `i + 1`; `first` and `last` are
/// the timestamps of `positions[0]` and of the last position. `epoch` changes whenever
/// messages are removed, so a reader can tell its positions went stale.
#[derive(Debug, Clone)]
pub(crate) struct SessionState {
    pub(crate) positions: Vec<Pos>,
    pub(crate) first: Timestamp,
    pub(crate) last: Timestamp,
    pub(crate) epoch: u64,
}

/// Session id -> live messages. Sessions with no messages are not kept.
#[derive(Debug, Default)]
pub(crate) struct Index {
    sessions: HashMap<Box<str>, SessionState>,
    next_epoch: u64,
}

impl Index {
    pub(crate) fn get(&self, session: &str) -> Option<&SessionState> {
        self.sessions.get(session)
    }

    pub(crate) fn count(&self, session: &str) -> u64 {
        self.get(session).map_or(0, |s| s.positions.len() as u64)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &SessionState)> {
        self.sessions.iter().map(|(k, v)| (&**k, v))
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn append(&mut self, session: &str, pos: Pos, ts: Timestamp) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.positions.push(pos);
            s.last = ts;
            return;
        }
        self.next_epoch += 1;
        self.sessions.insert(
            session.into(),
            SessionState {
                positions: vec![pos],
                first: ts,
                last: ts,
                epoch: self.next_epoch,
            },
        );
    }

    /// Appends a run of messages of one segment (from a hint): one lookup, no copy of the
    /// offsets but into the session's positions.
    pub(crate) fn append_run(
        &mut self,
        session: &str,
        seg: u32,
        offsets: impl ExactSizeIterator<Item = u32>,
        first: Timestamp,
        last: Timestamp,
    ) {
        if offsets.len() == 0 {
            return;
        }
        let s = match self.sessions.get_mut(session) {
            Some(s) => s,
            None => {
                self.next_epoch += 1;
                self.sessions.entry(session.into()).or_insert(SessionState {
                    positions: Vec::new(),
                    first,
                    last,
                    epoch: self.next_epoch,
                })
            }
        };
        s.positions.extend(offsets.map(|off| Pos { seg, off }));
        s.last = last;
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
        let len = s.positions.len() as u64;
        if keep >= len {
            return 0;
        }
        if keep == 0 {
            self.sessions.remove(session);
            return len;
        }
        s.positions.truncate(keep as usize);
        s.positions.shrink_to(s.positions.len().saturating_mul(2));
        if let Some(p) = s.positions.last() {
            s.last = last_ts(*p);
        }
        self.next_epoch += 1;
        s.epoch = self.next_epoch;
        len - keep
    }

    /// Bytes of heap the index holds (position vectors at capacity, keys, per-session state).
    pub(crate) fn heap_bytes(&self) -> usize {
        let per_entry = size_of::<(Box<str>, SessionState)>() + 1; // + hashbrown control byte
        self.sessions.capacity() * per_entry
            + self
                .sessions
                .iter()
                .map(|(k, s)| k.len() + s.positions.capacity() * size_of::<Pos>())
                .sum::<usize>()
    }

    /// Total live messages.
    pub(crate) fn messages(&self) -> u64 {
        self.sessions
            .values()
            .map(|s| s.positions.len() as u64)
            .sum()
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
        let epoch = ix.get("s").unwrap().epoch;
        assert_eq!(
            ix.truncate("s", 3, |p| Timestamp(u64::from(p.off / 100))),
            2
        );
        let s = ix.get("s").unwrap();
        assert_eq!(
            (s.positions.len(), s.first, s.last),
            (3, Timestamp(0), Timestamp(2))
        );
        assert_ne!(s.epoch, epoch);
        assert_eq!(ix.truncate("s", 7, |_| Timestamp(0)), 0);
        assert_eq!(ix.truncate("s", 0, |_| Timestamp(0)), 3);
        assert!(ix.get("s").is_none());
        ix.append("s", Pos { seg: 1, off: 0 }, Timestamp(9));
        assert!(ix.get("s").unwrap().epoch > epoch);
    }
}
