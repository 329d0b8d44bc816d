//! How `Store`'s writes run: each one registered with the tail cache before it calls the
//! library (so no cached tail of its session is served while it is under way), run without
//! the GIL, and reported to the cache after, whatever its outcome. Three kinds:
//!
//! - an append ([`Store::append_with`]): the session's cached tail is extended with what
//!   was written;
//! - a rewrite ([`Store::rewrite`]: pop, truncate, clear, fork, replace, a keyed append):
//!   the session's cached tail is dropped, and the records the write made are reported
//!   when the log tells which they are (from its last LSN before and after the call);
//! - a metadata write ([`Store::set_meta`](crate::store::Store)): the tail stays.

use pyo3::prelude::*;

use crate::cache::TailCache;
use crate::codec;
use crate::errors::Fail;
use crate::store::{Receipt, Store};

/// The library's receipts as Python ones.
pub(crate) fn receipts(r: Vec<convlog::Receipt>) -> Vec<Receipt> {
    r.into_iter().map(Receipt::from).collect()
}

/// The records of a write that makes at most one (pop, truncate, clear, fork): that one when
/// it `wrote` and the log moved by exactly one record across the call.
pub(crate) fn one_record(before: u64, after: u64, wrote: bool) -> Option<(u64, u64)> {
    (wrote && after == before + 1).then_some((after, after))
}

/// The records a keyed append made, when the log tells: a new keyed unit is its messages,
/// contiguous (the key rides on the first), so when they are exactly the records after
/// `before` every record in `before + 1..=after` is of the session (even if the unit was
/// another writer's and this call its retry). `None` for a retry of an older unit (nothing
/// written).
pub(crate) fn keyed_lsns(before: u64, after: u64, receipts: &[Receipt]) -> Option<(u64, u64)> {
    let (first, last) = (receipts.first()?, receipts.last()?);
    (first.lsn == before + 1 && last.lsn == after).then_some((before + 1, after))
}

/// The records a `replace` made, when the log tells that every record in
/// `before + 1..=after` is of the session. Its unit is a clear (when the session held
/// messages) then the new messages, contiguous, ending at the last receipt (or the clear
/// alone). `had`: the session held messages when read after `before`; if the unit holds no
/// clear, the session was emptied in between, by a record of its own, which can only be the
/// one record before the unit.
pub(crate) fn replaced_lsns(
    before: u64,
    after: u64,
    had: bool,
    receipts: &[Receipt],
) -> Option<(u64, u64)> {
    let ours = match (receipts.first(), receipts.last()) {
        (Some(first), Some(last)) => {
            last.lsn == after && (first.lsn == before + 1 || (had && first.lsn == before + 2))
        }
        _ => had && after == before + 1,
    };
    (ours && after > before).then_some((before + 1, after))
}

impl Store {
    /// Runs the write `f` to `session` without the GIL, registered with the cache for its
    /// duration; `end` then reports it to the cache, given `f`'s output (`None` if it failed).
    pub(crate) fn write<T: Send>(
        &self,
        py: Python<'_>,
        session: &str,
        f: impl FnOnce(&convlog::Store) -> Result<T, Fail> + Send,
        end: impl FnOnce(&TailCache, Option<&T>),
    ) -> PyResult<T> {
        let cache = self.cache();
        if let Some(cache) = &cache {
            cache.begin_write(py, session);
        }
        let r = self.run(py, f);
        if let Some(cache) = &cache {
            end(cache, r.as_ref().ok());
        }
        r
    }

    /// An append of `encoded` to `session`, written by `f`: on success the session's cached
    /// tail (if any) is extended with decoded copies of them.
    pub(crate) fn append_with(
        &self,
        py: Python<'_>,
        session: &str,
        encoded: &[&[u8]],
        f: impl FnOnce(&convlog::Store) -> convlog::Result<Vec<convlog::Receipt>> + Send,
    ) -> PyResult<Vec<Receipt>> {
        let end = |cache: &TailCache, r: Option<&Vec<Receipt>>| match r {
            Some(r) if !r.is_empty() => appended(py, cache, session, r, encoded),
            _ => cache.changed(py, session, None),
        };
        self.write(py, session, |s| Ok(receipts(f(s)?)), end)
    }

    /// [`Store::append_with`] of `encoded` by `try_append_batch_raw`: `None` when the store
    /// was busy (nothing written; the cached tail stays).
    pub(crate) fn try_append_encoded(
        &self,
        py: Python<'_>,
        session: &str,
        encoded: &[&[u8]],
    ) -> PyResult<Option<Vec<Receipt>>> {
        let f = |s: &convlog::Store| match s.try_append_batch_raw(session, encoded) {
            Ok(r) => Ok(Some(receipts(r))),
            Err(convlog::Error::Busy { .. }) => Ok(None),
            Err(e) => Err(Fail::Store(e)),
        };
        let end = |cache: &TailCache, r: Option<&Option<Vec<Receipt>>>| match r {
            Some(Some(r)) if !r.is_empty() => appended(py, cache, session, r, encoded),
            Some(None) => cache.kept(py, session, None),
            _ => cache.changed(py, session, None),
        };
        self.write(py, session, f, end)
    }

    /// A write that changes `session`'s messages other than by an append (or whose bytes
    /// need not be what it was given): its cached tail is dropped, and `lsns(before, after,
    /// &out)` tells which records the write made, from the log's last LSN before and after.
    pub(crate) fn rewrite<T: Send>(
        &self,
        py: Python<'_>,
        session: &str,
        f: impl FnOnce(&convlog::Store) -> Result<T, Fail> + Send,
        lsns: impl FnOnce(u64, u64, &T) -> Option<(u64, u64)> + Send,
    ) -> PyResult<T> {
        let measured = |s: &convlog::Store| {
            let before = s.last_lsn().0;
            let out = f(s)?;
            let after = s.last_lsn().0;
            let made = lsns(before, after, &out);
            Ok((out, made))
        };
        let end = |cache: &TailCache, r: Option<&(T, Option<(u64, u64)>)>| {
            cache.changed(py, session, r.and_then(|(_, made)| *made));
        };
        self.write(py, session, measured, end).map(|(out, _)| out)
    }

    /// A pop, truncate, clear or fork (of `session`, its destination), which logs at most
    /// one record: `f` returns how many messages it removed or shared (0: nothing logged).
    pub(crate) fn cut(
        &self,
        py: Python<'_>,
        session: &str,
        f: impl FnOnce(&convlog::Store) -> convlog::Result<u64> + Send,
    ) -> PyResult<u64> {
        let lsns = |before, after, &n: &u64| one_record(before, after, n > 0);
        self.rewrite(py, session, |s| Ok(f(s)?), lsns)
    }

    /// `messages` (already encoded) appended to `session`, with the idempotency `key` if
    /// any: a keyed append is a rewrite, since a retry writes nothing and the session then
    /// holds the original's bytes, which need not be the retry's.
    pub(crate) fn append_encoded(
        &self,
        py: Python<'_>,
        session: &str,
        messages: &[&[u8]],
        key: Option<&str>,
    ) -> PyResult<Vec<Receipt>> {
        let Some(key) = key else {
            return self.append_with(py, session, messages, |s| {
                s.append_batch_raw(session, messages)
            });
        };
        let f = |s: &convlog::Store| {
            let r = s.append_batch_raw_with_key(session, key, messages)?;
            Ok(receipts(r))
        };
        self.rewrite(py, session, f, |before, after, r| {
            keyed_lsns(before, after, r)
        })
    }
}

/// Tells `cache` that `encoded` was appended to `session` as `receipts` (not empty).
fn appended(
    py: Python<'_>,
    cache: &TailCache,
    session: &str,
    receipts: &[Receipt],
    encoded: &[&[u8]],
) {
    let items = if cache.holds(py, session) {
        codec::decode_all(py, encoded)
            .ok()
            .map(|list| list.iter().map(Bound::unbind).collect())
    } else {
        None
    };
    let (first, last) = (&receipts[0], &receipts[receipts.len() - 1]);
    cache.appended(
        py,
        session,
        first.interaction_id,
        (first.lsn, last.lsn),
        items,
    );
}
