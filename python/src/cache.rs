//! The decoded last messages of recently read sessions, so that `tail(session, n)` for a
//! small `n` is answered from memory: no message read, no JSON decoding, no thread hop for
//! async callers (`Store.tail_if_cached`).
//!
//! One cache per open store directory, shared by every writable `Store` object on it (they
//! share one open store). Every write of this module's `Store` updates the cache after the
//! library wrote, under the cache's lock:
//!
//! - an append extends a session's entry when the entry ends right before the new messages,
//!   and drops it otherwise; pop, truncate, clear, replace and fork (of its destination)
//!   drop it, and so does a keyed append (a retry writes nothing, and what the session holds
//!   is the original's bytes, not the retry's); a metadata write keeps it (no message
//!   changed);
//! - a read fills an entry only if no write at all happened in this process since the read
//!   began (the `writes` counter), so a fill never installs a state that a write already
//!   replaced;
//! - a hit is served only while no write to the session is under way (each write registers
//!   before it calls the library, and unregisters with its cache update), and only if the
//!   entry's count is the session's count in the store.
//!
//! **Other processes.** Other processes may write the store too (the library's default:
//! any number of writers), and their writes go through no cache of this process. So the
//! cache is validated against the log itself: `seen` is an LSN such that the entries are
//! exact for the log up to it, and each hit and each fill first compares it with the
//! library's `last_lsn()` (current across processes, at the cost of one cheap check of the
//! log's end). This process's own writes move `seen` along: an append reports the LSNs of
//! its records (its receipts), a pop, truncate or clear the LSN of its one record when it
//! can tell it (the log moved by exactly one record across the call). When the log's last
//! LSN is past `seen`:
//!
//! - while a write of this process is under way (its LSNs not yet reported), the records
//!   after `seen` may be its own: a miss, nothing dropped;
//! - otherwise they are records this process did not write (or whose LSN it could not
//!   tell): every entry is dropped, and `seen` becomes the log's last LSN. The cache then
//!   fills again from reads, each of which saw the log at exactly `seen` (`last_lsn()` the
//!   same before and after the read).
//!
//! So a message another process appended, popped or cut is never hidden by a cached tail:
//! the first read after its write returns to the store. (A process that writes beside
//! others refills its cache more often; an `exclusive` store never sees a foreign record.)
//!
//! Cached objects are never handed out: a hit returns fresh copies of their dicts and lists
//! (sharing only immutable leaves: str, int, float, bool, None).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyList};

/// Messages cached per session: the last ones.
pub(crate) const PER_SESSION: usize = 64;
/// Messages cached per store, over all its sessions (the least recently used go first).
const BUDGET: usize = 8192;
/// Most out-of-order record ranges of this process's own writes kept past `seen`.
const MAX_OWN: usize = 256;

#[derive(Default)]
struct State {
    /// Writes seen since the cache was made.
    writes: u64,
    /// A clock for least-recently-used eviction.
    tick: u64,
    /// Messages held, over all entries.
    held: usize,
    sessions: HashMap<String, Tail>,
    /// Writes under way, by session: between their call into the library and their update.
    in_flight: HashMap<String, usize>,
    /// The entries are exact for the log up to this LSN (see the module doc).
    seen: u64,
    /// LSN ranges (first, last) this process wrote after `seen`, reported out of order.
    own: Vec<(u64, u64)>,
}

impl State {
    /// Ends a write registered by [`TailCache::begin_write`]; `lsns`: the records it wrote,
    /// when known.
    fn end_write(&mut self, session: &str, lsns: Option<(u64, u64)>) {
        self.writes += 1;
        if let Some(n) = self.in_flight.get_mut(session) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(session);
            }
        }
        if let Some((first, last)) = lsns
            && first > self.seen
        {
            self.own.push((first, last));
        }
        self.absorb();
        if self.own.len() > MAX_OWN {
            // A gap before them that no read came to judge: give up what the entries hold
            // rather than keep track forever (a fill will validate afresh).
            self.seen = self
                .own
                .iter()
                .map(|&(_, last)| last)
                .max()
                .unwrap_or(self.seen);
            self.own.clear();
            self.sessions.clear();
            self.held = 0;
        }
    }

    /// Moves `seen` over this process's own records that follow it.
    fn absorb(&mut self) {
        while let Some(i) = self
            .own
            .iter()
            .position(|&(first, _)| first == self.seen + 1)
        {
            self.seen = self.own.swap_remove(i).1;
        }
        let seen = self.seen;
        self.own.retain(|&(first, _)| first > seen);
    }

    /// Whether the entries are exact for the log whose last LSN is `last_lsn`. Drops them all
    /// when the log holds records after `seen` that no write of this process under way can
    /// account for (another process wrote).
    fn validate(&mut self, last_lsn: u64) -> bool {
        self.absorb();
        if self.seen == last_lsn {
            return true;
        }
        if self.seen < last_lsn && self.in_flight.is_empty() {
            self.sessions.clear();
            self.held = 0;
            self.seen = last_lsn;
            self.absorb();
            return self.seen == last_lsn;
        }
        false
    }
}

struct Tail {
    /// The session's count when this entry was last made right: `items` are the messages
    /// with interaction ids `count - items.len() + 1 ..= count`.
    count: u64,
    items: VecDeque<Py<PyAny>>,
    used: u64,
}

/// The cache of one open store directory.
pub(crate) struct TailCache {
    state: Mutex<State>,
}

static CACHES: Mutex<Vec<(PathBuf, Weak<TailCache>)>> = Mutex::new(Vec::new());

impl TailCache {
    /// The cache of the store open in `dir` (by canonical path).
    pub(crate) fn for_dir(dir: &std::path::Path) -> Arc<TailCache> {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        let mut caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|(_, w)| w.strong_count() > 0);
        if let Some(c) = caches
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return c;
        }
        let cache = Arc::new(TailCache {
            state: Mutex::new(State::default()),
        });
        caches.push((key, Arc::downgrade(&cache)));
        cache
    }

    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, State> {
        // Waits without the GIL, so a holder that needs the GIL is never blocked by a waiter.
        self.state
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The last `n` messages of `session` (fresh copies), if the cache holds them, it is
    /// exact for the log whose last LSN is `last_lsn`, and its entry agrees with the store's
    /// `count`.
    pub(crate) fn get<'py>(
        &self,
        py: Python<'py>,
        session: &str,
        n: u64,
        count: u64,
        last_lsn: u64,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let held: Vec<Py<PyAny>> = {
            let mut st = self.lock(py);
            if st.in_flight.contains_key(session) || !st.validate(last_lsn) {
                return Ok(None);
            }
            st.tick += 1;
            let tick = st.tick;
            let Some(tail) = st.sessions.get_mut(session) else {
                return Ok(None);
            };
            let have = tail.items.len() as u64;
            if tail.count != count || (n > have && have < count) {
                return Ok(None);
            }
            tail.used = tick;
            let take = n.min(have) as usize;
            tail.items
                .iter()
                .skip(tail.items.len() - take)
                .map(|o| o.clone_ref(py))
                .collect()
        };
        let fresh = held
            .iter()
            .map(|o| copy(o.bind(py)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Some(PyList::new(py, fresh)?))
    }

    /// The write counter, to pass to [`TailCache::fill`] after a read.
    pub(crate) fn begin_fill(&self, py: Python<'_>) -> u64 {
        self.lock(py).writes
    }

    /// Caches what a read that began at `writes` found: the last messages of `session`
    /// (`items`, fresh objects nobody else holds), which then had `count` messages, in the
    /// log whose last LSN was `last_lsn` (before and after the read; `None` if it moved).
    pub(crate) fn fill(
        &self,
        py: Python<'_>,
        writes: u64,
        last_lsn: Option<u64>,
        session: &str,
        count: u64,
        items: Vec<Py<PyAny>>,
    ) {
        let mut st = self.lock(py);
        let Some(last_lsn) = last_lsn else { return };
        if st.writes != writes || !st.validate(last_lsn) {
            return;
        }
        let mut items: VecDeque<Py<PyAny>> = items.into();
        while items.len() > PER_SESSION {
            items.pop_front();
        }
        st.tick += 1;
        let tail = Tail {
            count,
            items,
            used: st.tick,
        };
        st.held += tail.items.len();
        if let Some(old) = st.sessions.insert(session.to_owned(), tail) {
            st.held -= old.items.len();
        }
        evict(&mut st);
    }

    /// Registers a write to `session` about to be made; [`TailCache::appended`] or
    /// [`TailCache::changed`] must follow, whatever its outcome.
    pub(crate) fn begin_write(&self, py: Python<'_>, session: &str) {
        *self
            .lock(py)
            .in_flight
            .entry(session.to_owned())
            .or_insert(0) += 1;
    }

    /// Whether an entry for `session` exists (so an append should decode what it wrote).
    pub(crate) fn holds(&self, py: Python<'_>, session: &str) -> bool {
        self.lock(py).sessions.contains_key(session)
    }

    /// After an append of messages `first_id..` to `session`, as records `lsns` (first,
    /// last): extends its entry with `items` (decoded copies of them) when the entry ends at
    /// `first_id - 1`, else drops it.
    pub(crate) fn appended(
        &self,
        py: Python<'_>,
        session: &str,
        first_id: u64,
        lsns: (u64, u64),
        items: Option<Vec<Py<PyAny>>>,
    ) {
        let mut st = self.lock(py);
        st.end_write(session, Some(lsns));
        let Some(tail) = st.sessions.get_mut(session) else {
            return;
        };
        match items {
            Some(items) if tail.count + 1 == first_id => {
                let before = tail.items.len();
                tail.count += items.len() as u64;
                tail.items.extend(items);
                while tail.items.len() > PER_SESSION {
                    tail.items.pop_front();
                }
                let after = tail.items.len();
                st.held = st.held + after - before;
                evict(&mut st);
            }
            _ => drop_entry(&mut st, session),
        }
    }

    /// After a write to `session` that changed none of its messages (its metadata): the
    /// entry stays; `lsns`: the records it wrote, when known.
    pub(crate) fn kept(&self, py: Python<'_>, session: &str, lsns: Option<(u64, u64)>) {
        self.lock(py).end_write(session, lsns);
    }

    /// After a pop, truncate, clear, replace or fork of `session`, a keyed append, or a
    /// write that failed; `lsns`: the records it wrote, when known.
    pub(crate) fn changed(&self, py: Python<'_>, session: &str, lsns: Option<(u64, u64)>) {
        let mut st = self.lock(py);
        st.end_write(session, lsns);
        drop_entry(&mut st, session);
    }
}

fn drop_entry(st: &mut State, session: &str) {
    if let Some(old) = st.sessions.remove(session) {
        st.held -= old.items.len();
    }
}

/// Drops the least recently used entries until the cache is within its budget.
fn evict(st: &mut State) {
    while st.held > BUDGET {
        let Some(oldest) = st
            .sessions
            .iter()
            .min_by_key(|(_, t)| t.used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        drop_entry(st, &oldest);
    }
}

/// A fresh copy of a decoded JSON value: new dicts and lists, the same immutable leaves.
pub(crate) fn copy<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        let out = PyDict::new(py);
        for (k, v) in d.iter() {
            out.set_item(k, copy(&v)?)?;
        }
        return Ok(out.into_any());
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        let items = l.iter().map(|v| copy(&v)).collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new(py, items)?.into_any());
    }
    Ok(obj.clone())
}
