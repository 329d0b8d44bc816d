//! The in-memory session index: a fold over the log's events.

mod keys;
mod positions;

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::format::{Kind, RecordKey, RecordMeta};
use crate::id::Timestamp;
use crate::io::Mapping;

use keys::{KeyHasher, Keyed, Keys};
pub(crate) use positions::Snapshot;
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
/// `last` are the timestamps of the first and of the last position.
#[derive(Debug)]
struct SessionState {
    positions: Positions,
    first: Timestamp,
    last: Timestamp,
    /// Idempotency keys of its live messages (most sessions have none).
    keys: Option<Box<Keys>>,
}

impl SessionState {
    /// Remembers the idempotency key `k` (hashed `hash`), which names the next `k.count`
    /// appends.
    fn remember(&mut self, k: NewKey<'_>, hash: u64) {
        let first_id = self.positions.len() + 1;
        let keyed = Keyed {
            first_id,
            last_id: first_id.saturating_add(k.count.saturating_sub(1)),
        };
        self.keys
            .get_or_insert_with(Box::default)
            .insert(k.key, hash, keyed);
    }
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
    /// as a snapshot that later changes to the session do not affect. Index `i` of the
    /// snapshot is interaction id `i + 1`.
    pub(crate) fn snapshot(&self, ids: Range<u64>) -> Snapshot {
        let (from, to) = (ids.start.saturating_sub(1), ids.end.saturating_sub(1));
        self.state.positions.snapshot(self.hints, from, to)
    }

    /// The first interaction id the idempotency key `key`, hashed `hash`
    /// ([`Index::key_hash`]), names in it, if any: a *candidate* (the index keeps keys as
    /// hashes), which the caller confirms against the key block of that append in the log.
    pub(crate) fn key(&self, key: &[u8], hash: u64) -> Option<u64> {
        self.state.keys.as_ref()?.get(key, hash)
    }

    /// The first interaction id every idempotency key it remembers names (the keyed
    /// append).
    pub(crate) fn keyed_ids(&self) -> impl Iterator<Item = u64> + 'a {
        self.state.keys.iter().flat_map(|k| k.first_ids())
    }

    /// Timestamp of its first message.
    pub(crate) fn first(&self) -> Timestamp {
        self.state.first
    }

    /// Timestamp of its last message.
    pub(crate) fn last(&self) -> Timestamp {
        self.state.last
    }
}

/// An idempotency key as the fold takes it: naming `count` appends, from the session's next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewKey<'a> {
    pub(crate) key: &'a [u8],
    /// Its [`Index::key_hash`], when the writer has it already (`None`: the fold hashes it).
    pub(crate) hash: Option<u64>,
    pub(crate) count: u64,
}

/// One change to a session, as the fold ([`Index::apply`]) takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// One message appended, its record at `pos`; a keyed append's key names it and the
    /// appends after it.
    Append {
        pos: Pos,
        ts: Timestamp,
        key: Option<NewKey<'a>>,
    },
    /// `count` messages appended in segment `seg`, whose record offsets are the consecutive
    /// little-endian `u32`s at byte `at` of that segment's hint (given to
    /// [`Index::map_hint`] first); `first` and `last` are their first and last timestamps.
    AppendRun {
        seg: u32,
        at: usize,
        count: u64,
        first: Timestamp,
        last: Timestamp,
    },
    /// The last `n` messages removed (consecutive pops).
    Pop(u64),
    /// All but the first `k` messages removed (truncate; a clear keeps 0).
    Keep(u64),
    /// An idempotency key (from a hint) naming the `count` appends that follow.
    Key { key: NewKey<'a>, ts: Timestamp },
    /// The session becomes the first `at` messages of `src`, shared.
    Fork { src: &'a str, at: u64 },
    /// The session's metadata is the record at `pos`.
    Meta { pos: Pos },
    /// The session is gone: its messages, keys and metadata.
    Delete,
}

impl<'a> Change<'a> {
    /// What the record with `meta`, `key` and `payload` at `pos` does to its session;
    /// `None` for records that change no session (gaps).
    pub(crate) fn of_record(
        meta: &RecordMeta,
        pos: Pos,
        key: Option<RecordKey<'a>>,
        payload: &'a [u8],
    ) -> Option<Change<'a>> {
        Some(match meta.kind {
            Kind::Append => Change::Append {
                pos,
                ts: meta.timestamp,
                key: key.map(|k| NewKey {
                    key: k.key,
                    hash: None,
                    count: u64::from(k.count),
                }),
            },
            Kind::Pop => Change::Pop(1),
            Kind::Truncate => Change::Keep(meta.arg),
            Kind::Clear => Change::Keep(0),
            Kind::Fork => Change::Fork {
                src: std::str::from_utf8(payload).ok()?,
                at: meta.arg,
            },
            Kind::Meta => Change::Meta { pos },
            Kind::Delete => Change::Delete,
            Kind::Gap => return None,
        })
    }
}

/// Session id -> live messages. Sessions with no messages are not kept.
///
/// Positions of segments loaded from their hint files stay in those files, which the index
/// keeps mapped (see `positions`): it holds a few words per (session, segment) on the heap
/// for them, and 8 bytes per message appended (or scanned) since the open.
#[derive(Debug, Default)]
pub(crate) struct Index {
    sessions: SessionMap<SessionState>,
    /// Where each session's latest metadata record is (independent of its messages: a
    /// clear keeps it).
    metas: HashMap<Box<str>, Pos>,
    hints: MappedHints,
    key_hasher: KeyHasher,
    /// Deletes and forks applied: an encrypted store's writer re-derives which key each
    /// session seals under when it moves (see `crypt`).
    resets: u64,
    /// Sessions whose last event is a delete (not used again since): an encrypted store
    /// destroys what keys of theirs a crash left (see `crypt`). Until compaction drops the
    /// delete records, one entry per deleted session.
    deleted: HashSet<Box<str>, SessionHasher>,
}

/// Hashes session ids in the maps an append looks them up in (the index, the active
/// segment's names): foldhash, seeded at random per process, several times faster than
/// SipHash on a 36-byte id. It resists collisions chosen without knowledge of the seed, not
/// an adversary who can study the process for it; idempotency keys, which callers choose
/// freely, keep SipHash (`keys`).
pub(crate) type SessionHasher = foldhash::fast::RandomState;

/// A map keyed by session id, hashed with [`SessionHasher`].
pub(crate) type SessionMap<V> = HashMap<Box<str>, V, SessionHasher>;

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

    /// The hash the index keeps the idempotency key `key` as (see [`Session::key`]). Each index
    /// hashes under its own random key: a hash is only good for the index that made it..
    pub(crate) fn key_hash(&self, key: &[u8]) -> u64 {
        self.key_hasher.hash(key)
    }

    /// Where `session`'s latest metadata record is.
    pub(crate) fn meta(&self, session: &str) -> Option<Pos> {
        self.metas.get(session).copied()
    }

    /// Every session's latest metadata record.
    pub(crate) fn metas(&self) -> impl Iterator<Item = (&str, Pos)> {
        self.metas.iter().map(|(k, p)| (&**k, *p))
    }

    /// How many deletes and forks were applied.
    pub(crate) fn resets(&self) -> u64 {
        self.resets
    }

    /// Whether `session`'s last event is a delete.
    pub(crate) fn is_deleted(&self, session: &str) -> bool {
        self.deleted.contains(session)
    }

    /// Every session whose last event is a delete.
    pub(crate) fn deleted(&self) -> impl Iterator<Item = &str> {
        self.deleted.iter().map(|s| &**s)
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

    /// Calls `f` on the state of `session` (and the mapped hints), created empty if it has
    /// none.
    fn update(
        &mut self,
        session: &str,
        first: Timestamp,
        f: impl FnOnce(&mut SessionState, &MappedHints),
    ) {
        if let Some(s) = self.sessions.get_mut(session) {
            return f(s, &self.hints);
        }
        let mut s = SessionState {
            positions: Positions::default(),
            first,
            last: first,
            keys: None,
        };
        f(&mut s, &self.hints);
        self.sessions.insert(session.into(), s);
    }

    /// Keeps the hint of segment `seg`, validated, for [`Change::AppendRun`]s to borrow from.
    pub(crate) fn map_hint(&mut self, seg: u32, bytes: Mapping) {
        self.hints.insert(seg, bytes);
    }

    /// Makes room for `n` more sessions.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.sessions.reserve(n);
    }

    /// The fold: applies one change to `session`. Every change to the index, whether from a
    /// scanned record, a hint, or a write of this process, goes through here.
    ///
    /// `ts_at` gives the timestamp of the record at a position; it is called only when
    /// messages are removed and some remain (for the new last message's timestamp).
    /// Returns how many messages were removed.
    pub(crate) fn apply(
        &mut self,
        session: &str,
        change: Change<'_>,
        ts_at: impl FnOnce(Pos) -> Timestamp,
    ) -> u64 {
        if !self.deleted.is_empty() && !matches!(change, Change::Pop(_) | Change::Keep(_)) {
            // Used again (or deleted again, below).
            self.deleted.remove(session);
        }
        match change {
            Change::Meta { pos } => {
                self.metas.insert(session.into(), pos);
                0
            }
            Change::Delete => self.delete(session),
            Change::Fork { src, at } => {
                self.fork(session, src, at, ts_at);
                0
            }
            Change::Key { key, ts } => {
                let hash = self.hash_of(&key);
                self.update(session, ts, |s, _| s.remember(key, hash));
                0
            }
            Change::Append { pos, ts, key } => {
                let key = key.map(|k| (k, self.hash_of(&k)));
                self.update(session, ts, |s, _| {
                    if let Some((k, hash)) = key {
                        s.remember(k, hash);
                    }
                    s.positions.push(pos);
                    s.last = ts;
                });
                0
            }
            Change::AppendRun {
                seg,
                at,
                count,
                first,
                last,
            } => {
                if count > 0 {
                    debug_assert!(self.hints.contains(seg), "hint of segment {seg} not mapped");
                    self.update(session, first, |s, hints| {
                        s.positions.push_run(hints, seg, at, count);
                        s.last = last;
                    });
                }
                0
            }
            Change::Pop(n) => {
                let keep = self.count(session).saturating_sub(n);
                self.keep(session, keep, ts_at)
            }
            Change::Keep(k) => self.keep(session, k, ts_at),
        }
    }

    /// [`Change::Delete`] of `session`: how many messages it held.
    fn delete(&mut self, session: &str) -> u64 {
        self.resets += 1;
        self.deleted.insert(session.into());
        self.metas.remove(session);
        self.sessions
            .remove(session)
            .map_or(0, |s| s.positions.len())
    }

    /// [`Change::Fork`]: `session` becomes the first `at` messages of `src` (sharing their
    /// positions), its keys none; nothing when that is no message.
    fn fork(&mut self, session: &str, src: &str, at: u64, ts_at: impl FnOnce(Pos) -> Timestamp) {
        self.resets += 1;
        self.sessions.remove(session);
        let Some(from) = self.sessions.get(src) else {
            return;
        };
        let positions = from.positions.fork(at);
        if positions.len() == 0 {
            return;
        }
        let first = from.first;
        let last = positions
            .get(&self.hints, positions.len() - 1)
            .map_or(from.last, ts_at);
        self.sessions.insert(
            session.into(),
            SessionState {
                positions,
                first,
                last,
                keys: None,
            },
        );
    }

    /// The hash of `k`: the writer's, or computed here.
    fn hash_of(&self, k: &NewKey<'_>) -> u64 {
        k.hash.unwrap_or_else(|| self.key_hasher.hash(k.key))
    }

    /// Keeps the first `keep` messages. Returns how many were removed.
    fn keep(&mut self, session: &str, keep: u64, last_ts: impl FnOnce(Pos) -> Timestamp) -> u64 {
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
        if let Some(keys) = s.keys.as_mut() {
            keys.keep(keep);
        }
        if let Some(p) = s.positions.get(&self.hints, keep - 1) {
            s.last = last_ts(p);
        }
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
                .map(|(k, s)| {
                    k.len()
                        + s.positions.heap_bytes()
                        + s.keys
                            .as_ref()
                            .map_or(0, |keys| size_of::<Keys>() + keys.heap_bytes())
                })
                .sum::<usize>()
            + self.hints.bytes()
            + self.metas.capacity() * (size_of::<(Box<str>, Pos)>() + 1)
            + self.metas.keys().map(|k| k.len()).sum::<usize>()
    }

    /// Idempotency keys remembered, in every session.
    pub(crate) fn keys(&self) -> u64 {
        self.sessions
            .values()
            .filter_map(|s| s.keys.as_ref())
            .map(|k| k.len() as u64)
            .sum()
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
    fn the_fold_appends_pops_keeps_and_clears() {
        let mut ix = Index::default();
        for i in 0..5u32 {
            let pos = Pos {
                seg: 0,
                off: i * 100,
            };
            let ts = Timestamp(u64::from(i));
            ix.apply("s", Change::Append { pos, ts, key: None }, |_| Timestamp(0));
        }
        assert_eq!(
            ix.apply("s", Change::Keep(3), |p| Timestamp(u64::from(p.off / 100))),
            2
        );
        let s = ix.get("s").unwrap();
        assert_eq!(
            (s.count(), s.first(), s.last()),
            (3, Timestamp(0), Timestamp(2))
        );
        assert_eq!(ix.apply("s", Change::Keep(7), |_| Timestamp(0)), 0);
        assert_eq!(ix.apply("s", Change::Pop(1), |_| Timestamp(1)), 1);
        assert_eq!(ix.apply("s", Change::Keep(0), |_| Timestamp(0)), 2);
        assert!(ix.get("s").is_none());
        let pos = Pos { seg: 1, off: 0 };
        ix.apply(
            "s",
            Change::Append {
                pos,
                ts: Timestamp(9),
                key: None,
            },
            |_| Timestamp(0),
        );
        assert_eq!(ix.count("s"), 1);
    }
}
