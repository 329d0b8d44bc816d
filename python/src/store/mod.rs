//! `convlog.Store`: one open store, shared by every `Store` object on its path in the process.
//!
//! Every call into the library runs with the GIL released (`Python::detach`). The open store
//! sits behind a read-write lock: calls take it shared for their duration, `close()` takes it
//! exclusively (so `close()` waits for calls under way, then nothing else runs). Every lock is
//! taken without the GIL, so a thread waiting for one never holds the GIL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::bulk;
use crate::cache::{self, TailCache};
use crate::codec;
use crate::count::{self, Count, Exact};
use crate::errors::Fail;
use crate::messages::{Cursor, Messages, Slot};
use crate::sid::Sid;
use crate::subscribe::{SubSlot, Subscription};
use crate::writes;
use options::{durability, master_key, permissions};
pub use results::{CompactReport, Receipt, SessionInfo};

mod options;
mod results;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state a `Store` object shares with nothing else but its own iterators' slots.
struct Shared {
    /// `None` once closed. Declared before `temp`: the store closes before its directory goes.
    store: RwLock<Option<convlog::Store>>,
    /// The iterators made by this object, closed with it.
    iters: Mutex<Vec<Weak<Mutex<Cursor>>>>,
    /// The subscriptions made by this object, closed with it.
    subs: Mutex<Vec<Weak<SubSlot>>>,
    /// The private directory of a `":memory:"` store, removed on close.
    temp: Mutex<Option<tempfile::TempDir>>,
    /// The store's cache of recently read session tails (writable stores only).
    cache: Mutex<Option<Arc<TailCache>>>,
    /// What `store` was opened with, to open it again in a `fork()` child.
    opts: convlog::Options,
    dir: PathBuf,
    /// The process `store` was opened by.
    pid: AtomicU32,
}

impl Shared {
    /// The open store (`None` once closed). In a `fork()` child, first opened again, as a
    /// process of its own: the library refuses writes through a handle a parent opened.
    fn read(&self) -> RwLockReadGuard<'_, Option<convlog::Store>> {
        if self.pid.load(Ordering::Acquire) != convlog::io::process_id() {
            self.reopen_in_child();
        }
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the parent's handle by one this process opens. If that fails (an
    /// exclusive store, which the parent holds), the parent's handle stays: reads go on
    /// through it, and writes raise `convlog.Error` (the library's `Forked`), saying why.
    fn reopen_in_child(&self) {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let pid = convlog::io::process_id();
        if self.pid.load(Ordering::Acquire) == pid {
            return; // another thread of this process did it
        }
        // A ":memory:" store's directory is the parent's to remove.
        std::mem::forget(lock(&self.temp).take());
        if store.is_none() {
            self.pid.store(pid, Ordering::Release);
        } else if let Ok(mine) = self.opts.clone().open(&self.dir) {
            *store = Some(mine);
            self.pid.store(pid, Ordering::Release);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if *self.pid.get_mut() != convlog::io::process_id() {
            // A fork() child that never used it: the temporary directory is the parent's.
            std::mem::forget(lock(&self.temp).take());
        }
    }
}

/// An open convlog store (see `convlog/__init__.pyi` for the Python documentation).
#[pyclass(module = "convlog", name = "Store", frozen)]
pub struct Store {
    shared: Arc<Shared>,
    path: PathBuf,
    read_only: bool,
    memory: bool,
}

/// A JSON value (any Python value `json` encodes) as serde_json's, for `sessions_where`.
/// One that a `serde_json::Value` cannot hold (a lone surrogate, an int past a float's
/// range) is a `ValueError` that says so: no stored value compares equal to it.
fn json_value(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let py = value.py();
    let text = PyModule::import(py, "convlog._codec")?
        .getattr("dumps")?
        .call1((value,))?;
    let cannot = |why: String| {
        PyValueError::new_err(format!(
            "sessions_where cannot compare this value: {why} (a lone surrogate, or a number \
             past a float's range, has no form it compares)"
        ))
    };
    let text = text.cast::<PyString>()?;
    let text = text.to_str().map_err(|e| cannot(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| cannot(e.to_string()))
}

/// An idempotency key argument as text: one with a lone surrogate (no UTF-8 form, so no
/// key) is `InvalidKey`, as the library's other refusals of a key are.
fn key_str<'a>(
    py: Python<'_>,
    session: &str,
    key: Option<&'a Bound<'_, PyString>>,
) -> PyResult<Option<&'a str>> {
    key.map(|k| {
        k.to_str().map_err(|_| {
            let e = convlog::Error::InvalidKey {
                session: session.to_owned(),
                reason: "it holds a lone surrogate, which no UTF-8 text can",
            };
            Fail::from(e).into_py_err(py)
        })
    })
    .transpose()
}

/// Refuses a session id no session can have (reads too: a typo must not read as an empty
/// session).
fn check_session(py: Python<'_>, session: &str) -> PyResult<()> {
    convlog::validate_session_id(session).map_err(|e| Fail::from(e).into_py_err(py))
}

impl Store {
    /// Runs `f` on the open store without the GIL.
    pub(crate) fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&convlog::Store) -> Result<T, Fail> + Send,
    ) -> PyResult<T> {
        py.detach(|| match self.shared.read().as_ref() {
            Some(store) => f(store),
            None => Err(Fail::Closed),
        })
        .map_err(|e| e.into_py_err(py))
    }

    pub(crate) fn cache(&self) -> Option<Arc<TailCache>> {
        lock(&self.shared.cache).clone()
    }

    /// The last `n` messages from the cache, without I/O; `None` on a miss.
    fn cached<'py>(
        &self,
        py: Python<'py>,
        cache: &TailCache,
        session: &str,
        n: u64,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        // Both current across processes (each checks, cheaply, whether the log moved).
        let (count, last_lsn) =
            self.run(py, |s| Ok((s.interaction_count(session), s.last_lsn().0)))?;
        cache.get(py, session, n, count, last_lsn)
    }

    /// The stored JSON of one message, or `None`.
    fn read_entry(&self, py: Python<'_>, session: &str, id: u64) -> PyResult<Option<Vec<u8>>> {
        check_session(py, session)?;
        let found = self.run(py, |s| Ok(s.read_entry(session, id)?))?;
        Ok(found.map(|e| e.message))
    }

    /// Removes the last message of `session`; its stored JSON, or `None` when it was empty.
    fn pop_entry(&self, py: Python<'_>, session: &str) -> PyResult<Option<Vec<u8>>> {
        let lsns = |before, after, e: &Option<_>| writes::one_record(before, after, e.is_some());
        let popped = self.rewrite(py, session, |s| Ok(s.pop_raw(session)?), lsns)?;
        Ok(popped.map(|e| e.message))
    }

    fn iter(
        &self,
        py: Python<'_>,
        session: &str,
        start: Option<u64>,
        stop: Option<u64>,
        json: bool,
    ) -> PyResult<Messages> {
        check_session(py, session)?;
        let start = start.unwrap_or(1);
        let shared = &self.shared;
        let slot = self.run(py, |store| {
            let raw = match stop {
                Some(stop) => store.range(session, start..stop).raw(),
                None => store.range(session, start..).raw(),
            };
            let slot: Slot = Arc::new(Mutex::new(Cursor::Live(raw)));
            let mut iters = lock(&shared.iters);
            iters.retain(|w| w.strong_count() > 0);
            iters.push(Arc::downgrade(&slot));
            Ok(slot)
        })?;
        Ok(Messages::new(slot, json))
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (path, *, durability=None, read_only=false, segment_size=None, max_record_len=None, exclusive=false, mode=None, key=None, key_file=None, decrypt_ahead=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        durability: Option<&Bound<'_, PyAny>>,
        read_only: bool,
        segment_size: Option<u64>,
        max_record_len: Option<u32>,
        exclusive: bool,
        mode: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        key_file: Option<&Bound<'_, PyAny>>,
        decrypt_ahead: bool,
    ) -> PyResult<Store> {
        let mut opts = convlog::Store::builder()
            .durability(self::durability(durability)?)
            .read_only(read_only)
            .exclusive(exclusive)
            .decrypt_ahead(decrypt_ahead);
        // The key goes to the library's options only (kept to open the store again in a
        // fork() child): no other field of this object holds it.
        if let Some(k) = master_key(py, key, key_file, ("key", "key_file"))? {
            opts = opts.encryption(k);
        }
        if let Some(p) = permissions(mode)? {
            opts = opts.permissions(p);
        }
        if let Some(n) = segment_size {
            opts = opts.segment_size(n);
        }
        if let Some(n) = max_record_len {
            opts = opts.max_record_len(n);
        }
        let memory = path.as_os_str() == ":memory:";
        let (dir, temp) = if memory {
            if read_only {
                return Err(PyValueError::new_err(
                    "a \":memory:\" store is private and new: it cannot be read-only",
                ));
            }
            let temp = tempfile::Builder::new()
                .prefix("convlog-memory-")
                .tempdir()
                .map_err(PyErr::from)?;
            (temp.path().to_owned(), Some(temp))
        } else {
            (path, None)
        };
        let store = py
            .detach(|| opts.clone().open(&dir))
            .map_err(|e| Fail::from(e).into_py_err(py))?;
        Ok(Store {
            shared: Arc::new(Shared {
                store: RwLock::new(Some(store)),
                iters: Mutex::new(Vec::new()),
                subs: Mutex::new(Vec::new()),
                temp: Mutex::new(temp),
                cache: Mutex::new((!read_only).then(|| TailCache::for_dir(&dir))),
                opts,
                dir: dir.clone(),
                pid: AtomicU32::new(convlog::io::process_id()),
            }),
            path: dir,
            read_only,
            memory,
        })
    }

    /// The store's directory (for `":memory:"`, its private temporary directory).
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.shared.read().is_none())
    }

    /// Whether the store was opened read-only.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the store is encrypted (opened with its master key).
    #[getter]
    fn is_encrypted(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |s| Ok(s.is_encrypted()))
    }

    /// Whether an I/O failure poisoned the store: every later write and `sync()` raises
    /// `Poisoned` until the store is closed and opened again.
    #[getter]
    fn is_poisoned(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |s| Ok(s.is_poisoned()))
    }

    /// Wraps every data key of the store anew under the new master key (`new_key=` or
    /// `new_key_file=`, exactly one); returns how many data keys it rewrapped.
    #[pyo3(signature = (new_key=None, new_key_file=None))]
    fn rekey(
        &self,
        py: Python<'_>,
        new_key: Option<&Bound<'_, PyAny>>,
        new_key_file: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let Some(new) = master_key(py, new_key, new_key_file, ("new_key", "new_key_file"))? else {
            return Err(PyValueError::new_err(
                "rekey needs the new master key: new_key or new_key_file",
            ));
        };
        self.run(py, |s| Ok(s.rekey(&new)?))
    }

    /// The LSN of the last record written.
    #[getter]
    fn last_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |s| Ok(s.last_lsn().0))
    }

    /// The LSN up to which every record is on stable storage.
    #[getter]
    fn durable_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |s| Ok(s.durable_lsn().0))
    }

    #[pyo3(signature = (session, message, *, key=None))]
    fn append(
        &self,
        py: Python<'_>,
        session: Sid,
        message: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Receipt> {
        let session: &str = &session;
        let key = key_str(py, session, key)?;
        let encoded = codec::encode(session, message)?;
        let bytes = [codec::bytes_of(&encoded)?];
        let mut r = self.append_encoded(py, session, &bytes, key)?;
        Ok(r.remove(0))
    }

    fn append_if(
        &self,
        py: Python<'_>,
        session: Sid,
        expected_next_id: Exact,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<Receipt> {
        let session: &str = &session;
        let encoded = codec::encode(session, message)?;
        let bytes = [codec::bytes_of(&encoded)?];
        let mut r = self.append_with(py, session, &bytes, |s| {
            Ok(vec![s.append_raw_if(
                session,
                expected_next_id.0,
                bytes[0],
            )?])
        })?;
        Ok(r.remove(0))
    }

    #[pyo3(signature = (session, messages, *, key=None))]
    fn append_batch(
        &self,
        py: Python<'_>,
        session: Sid,
        messages: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Vec<Receipt>> {
        let session: &str = &session;
        let key = key_str(py, session, key)?;
        let encoded = codec::encode_all(session, messages, "append_batch")?;
        let bytes = codec::all_bytes(&encoded)?;
        self.append_encoded(py, session, &bytes, key)
    }

    /// `append_batch` only if it goes through at once: without waiting for another writer
    /// (thread or process) and without a sync. Its receipts, or None when nothing was
    /// written (then `append_batch`, on a thread that may wait, goes through). For an
    /// event loop's thread.
    #[pyo3(signature = (session, messages))]
    fn try_append_batch(
        &self,
        py: Python<'_>,
        session: Sid,
        messages: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Vec<Receipt>>> {
        let session: &str = &session;
        let encoded = codec::encode_all(session, messages, "try_append_batch")?;
        let bytes = codec::all_bytes(&encoded)?;
        self.try_append_encoded(py, session, &bytes)
    }

    #[pyo3(signature = (session, n=None))]
    fn tail<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        n: Option<Count>,
    ) -> PyResult<Bound<'py, PyList>> {
        let session: &str = &session;
        check_session(py, session)?;
        let n = count::opt(n);
        let cache = self.cache();
        let Some((cache, n)) = cache
            .zip(n)
            .filter(|(_, n)| (1..=cache::PER_SESSION as u64).contains(n))
        else {
            let n = n.unwrap_or(u64::MAX);
            let all = bulk::read_decoded(py, |sink| match self.shared.read().as_ref() {
                Some(store) => sink(store.tail(session, n).raw()),
                None => Err(Fail::Closed),
            })?;
            return Ok(all.into_bound(py));
        };
        if let Some(hit) = self.cached(py, &cache, session, n)? {
            return Ok(hit);
        }
        let writes = cache.begin_fill(py);
        let (all, last, lsn) = self.run(py, |s| {
            let before = s.last_lsn().0;
            let (all, last) = bulk::stored(s.tail(session, n).raw())?;
            // The read saw the log at exactly `before` if nobody wrote meanwhile.
            Ok((all, last, (s.last_lsn().0 == before).then_some(before)))
        })?;
        let decoded = codec::decode_all(py, &all)?;
        let fresh = decoded
            .iter()
            .map(|o| cache::copy(&o))
            .collect::<PyResult<Vec<_>>>()?;
        cache.fill(
            py,
            writes,
            lsn,
            session,
            last,
            decoded.iter().map(Bound::unbind).collect(),
        );
        PyList::new(py, fresh)
    }

    /// `tail(session, n)` if the cache holds those messages (no I/O at all), else `None`.
    fn tail_if_cached<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        n: Count,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let session: &str = &session;
        check_session(py, session)?;
        match self.cache() {
            Some(cache) if (1..=cache::PER_SESSION as u64).contains(&n.0) => {
                self.cached(py, &cache, session, n.0)
            }
            _ if self.closed(py) => Err(Fail::Closed.into_py_err(py)),
            _ => Ok(None),
        }
    }

    #[pyo3(signature = (session, n=None))]
    fn tail_json<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        n: Option<Count>,
    ) -> PyResult<Vec<Bound<'py, PyString>>> {
        let session: &str = &session;
        check_session(py, session)?;
        let n = count::opt(n).unwrap_or(u64::MAX);
        let (all, _) = self.run(py, |s| Ok(bulk::stored(s.tail(session, n).raw())?))?;
        all.iter().map(|m| codec::text(py, m)).collect()
    }

    #[pyo3(signature = (session, start=None, stop=None))]
    fn messages(
        &self,
        py: Python<'_>,
        session: Sid,
        start: Option<Count>,
        stop: Option<Count>,
    ) -> PyResult<Messages> {
        let session: &str = &session;
        self.iter(py, session, count::opt(start), count::opt(stop), false)
    }

    #[pyo3(signature = (session, start=None, stop=None))]
    fn messages_json(
        &self,
        py: Python<'_>,
        session: Sid,
        start: Option<Count>,
        stop: Option<Count>,
    ) -> PyResult<Messages> {
        let session: &str = &session;
        self.iter(py, session, count::opt(start), count::opt(stop), true)
    }

    fn get<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        interaction_id: Count,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let session: &str = &session;
        let found = self.read_entry(py, session, interaction_id.0)?;
        found.map(|m| codec::decode(py, &m)).transpose()
    }

    fn get_json<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        interaction_id: Count,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let session: &str = &session;
        let found = self.read_entry(py, session, interaction_id.0)?;
        found.map(|m| codec::text(py, &m)).transpose()
    }

    fn count(&self, py: Python<'_>, session: Sid) -> PyResult<u64> {
        let session: &str = &session;
        self.run(py, |s| {
            convlog::validate_session_id(session)?;
            Ok(s.interaction_count(session))
        })
    }

    /// `(next_id, last_lsn)`: the session's version (`last_lsn` None when empty); any
    /// change of the session changes it. For `replace(..., expected_version=)`.
    fn version(&self, py: Python<'_>, session: Sid) -> PyResult<(u64, Option<u64>)> {
        let session: &str = &session;
        check_session(py, session)?;
        self.run(py, |s| {
            let v = s.version(session)?;
            Ok((v.next_id, v.last_lsn.map(|l| l.0)))
        })
    }

    /// Whether `session` holds messages: a `str` that no session can have (a lone surrogate,
    /// say) is not in the store, as for any container.
    fn __contains__(&self, py: Python<'_>, session: &Bound<'_, PyString>) -> PyResult<bool> {
        let Ok(session) = session.to_str() else {
            return Ok(false);
        };
        self.run(py, |s| Ok(s.contains(session)))
    }

    fn sessions(&self, py: Python<'_>) -> PyResult<Vec<SessionInfo>> {
        self.run(py, |s| {
            Ok(s.sessions().into_iter().map(SessionInfo::from).collect())
        })
    }

    fn pop<'py>(&self, py: Python<'py>, session: Sid) -> PyResult<Option<Bound<'py, PyAny>>> {
        let session: &str = &session;
        let popped = self.pop_entry(py, session)?;
        popped.map(|m| codec::decode(py, &m)).transpose()
    }

    fn pop_json<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let session: &str = &session;
        let popped = self.pop_entry(py, session)?;
        popped.map(|m| codec::text(py, &m)).transpose()
    }

    fn truncate(&self, py: Python<'_>, session: Sid, keep: Count) -> PyResult<u64> {
        let session: &str = &session;
        self.cut(py, session, |s| s.truncate(session, keep.0))
    }

    fn clear(&self, py: Python<'_>, session: Sid) -> PyResult<u64> {
        let session: &str = &session;
        self.cut(py, session, |s| s.clear(session))
    }

    /// Starts `dst` as the first `at` messages of `src` (all with `None`), shared.
    #[pyo3(signature = (src, dst, at=None))]
    fn fork(&self, py: Python<'_>, src: Sid, dst: Sid, at: Option<Count>) -> PyResult<u64> {
        let src: &str = &src;
        let dst: &str = &dst;
        let at = count::opt(at);
        // One Fork record for `dst` (none when nothing is shared); `dst` was empty.
        self.cut(py, dst, |s| s.fork(src, dst, at))
    }

    /// Makes `session` exactly `messages`, atomically.
    #[pyo3(signature = (session, messages, *, expected_next_id=None, expected_version=None))]
    fn replace(
        &self,
        py: Python<'_>,
        session: Sid,
        messages: &Bound<'_, PyAny>,
        expected_next_id: Option<Exact>,
        expected_version: Option<(Exact, Option<Exact>)>,
    ) -> PyResult<Vec<Receipt>> {
        let session: &str = &session;
        let expected_next_id = expected_next_id.map(|e| e.0);
        if expected_next_id.is_some() && expected_version.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "give expected_next_id or expected_version, not both",
            ));
        }
        let encoded = codec::encode_all(session, messages, "replace")?;
        let bytes = codec::all_bytes(&encoded)?;
        let f = |s: &convlog::Store| {
            let had = s.interaction_count(session) > 0;
            let r = match expected_version {
                Some((Exact(next_id), last)) => {
                    let v = convlog::SessionVersion {
                        next_id,
                        last_lsn: last.map(|l| convlog::Lsn(l.0)),
                    };
                    s.replace_if(session, v, &bytes)?
                }
                None => s.replace(session, expected_next_id, &bytes)?,
            };
            Ok((writes::receipts(r), had))
        };
        // The session changed wholesale: its entry goes.
        let lsns = |before, after, (r, had): &(Vec<Receipt>, bool)| {
            writes::replaced_lsns(before, after, *had, r)
        };
        self.rewrite(py, session, f, lsns).map(|(r, _)| r)
    }

    /// The longest recent suffix of `session` within the budget, never splitting a tool call
    /// from its result.
    #[pyo3(signature = (session, *, max_messages=None, max_bytes=None, keep_system=false))]
    fn window<'py>(
        &self,
        py: Python<'py>,
        session: Sid,
        max_messages: Option<Count>,
        max_bytes: Option<Count>,
        keep_system: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let session: &str = &session;
        check_session(py, session)?;
        let (max_messages, max_bytes) = (count::opt(max_messages), count::opt(max_bytes));
        let mut spec = convlog::WindowSpec::new().keep_system(keep_system);
        if let Some(n) = max_messages {
            spec = spec.max_messages(n);
        }
        if let Some(n) = max_bytes {
            spec = spec.max_bytes(n);
        }
        let entries = self.run(py, |s| Ok(s.window(session, &spec)?))?;
        let messages: Vec<&[u8]> = entries.iter().map(|e| e.message.as_slice()).collect();
        codec::decode_all(py, &messages)
    }

    /// Sets `session`'s metadata (a JSON object); returns the record's LSN.
    fn set_meta(&self, py: Python<'_>, session: Sid, meta: &Bound<'_, PyAny>) -> PyResult<u64> {
        let session: &str = &session;
        let encoded = codec::encode(session, meta)?;
        let bytes = codec::bytes_of(&encoded)?;
        // No message changed: the session's entry stays; the one record is reported.
        let end = |cache: &TailCache, lsn: Option<&u64>| {
            cache.kept(py, session, lsn.map(|&lsn| (lsn, lsn)));
        };
        self.write(py, session, |s| Ok(s.set_meta_raw(session, bytes)?.0), end)
    }

    /// `session`'s metadata, or `None`.
    fn meta<'py>(&self, py: Python<'py>, session: Sid) -> PyResult<Option<Bound<'py, PyAny>>> {
        let session: &str = &session;
        check_session(py, session)?;
        let found = self.run(py, |s| Ok(s.meta(session)?))?;
        found.map(|m| codec::decode(py, &m)).transpose()
    }

    /// The live sessions whose metadata has `key` equal to `value`.
    fn sessions_where(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<SessionInfo>> {
        let key = key.to_str().map_err(|_| {
            PyValueError::new_err("sessions_where cannot compare a key with a lone surrogate")
        })?;
        let value = json_value(value)?;
        self.run(py, |s| {
            Ok(s.sessions_where(key, &value)?
                .into_iter()
                .map(SessionInfo::from)
                .collect())
        })
    }

    /// A live tail of the log: see `Subscription` in the stubs.
    #[pyo3(signature = (since=None, *, session=None, from_id=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        since: Option<&Bound<'_, PyAny>>,
        session: Option<Sid>,
        from_id: Option<Count>,
    ) -> PyResult<Subscription> {
        let session = session.map(|s| s.to_owned());
        let from_id = count::opt(from_id);
        let since = match since {
            None => None,
            Some(v) if v.is_none() => None,
            Some(v) => Some(match v.cast::<PyString>() {
                Ok(s) if s.to_str().is_ok_and(|s| s == "now") => convlog::Since::Now,
                Ok(s) => {
                    return Err(PyValueError::new_err(format!(
                        "since is \"now\" or an LSN (an int), not {}",
                        s.repr()?
                    )));
                }
                Err(_) if v.is_instance_of::<pyo3::types::PyBool>() => {
                    return Err(PyTypeError::new_err(
                        "since is \"now\" or an LSN (an int), not a bool",
                    ));
                }
                Err(_) => convlog::Since::Lsn(convlog::Lsn(v.extract::<Count>()?.0)),
            }),
        };
        if let Some(s) = &session {
            convlog::validate_session_id(s).map_err(|e| Fail::Store(e).into_py_err(py))?;
        }
        if from_id.is_some() && (session.is_none() || since.is_some()) {
            return Err(PyValueError::new_err(
                "from_id is for a session subscription without since: subscribe(session=..., from_id=...)",
            ));
        }
        let shared = &self.shared;
        self.run(py, |store| {
            let (sub, filter, position) = match (since, session) {
                (None | Some(convlog::Since::Now), None) => {
                    let sub = store.subscribe(convlog::Since::Now);
                    let at = sub.position().0;
                    (sub, None, at)
                }
                (Some(convlog::Since::Lsn(lsn)), filter) => {
                    (store.subscribe(convlog::Since::Lsn(lsn)), filter, lsn.0)
                }
                (Some(_), Some(session)) => {
                    // From now on only: no message already in the session.
                    let sub = store.subscribe_session(&session, u64::MAX);
                    let at = sub.position().0;
                    (sub, None, at)
                }
                (None, Some(session)) => {
                    let sub = store.subscribe_session(&session, from_id.unwrap_or(1));
                    let at = sub.position().0;
                    (sub, None, at)
                }
                (Some(_), None) => {
                    let sub = store.subscribe(convlog::Since::Now);
                    let at = sub.position().0;
                    (sub, None, at)
                }
            };
            let (sub, slot) = Subscription::new(sub, filter, position);
            let mut subs = lock(&shared.subs);
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(&slot));
            Ok(sub)
        })
    }

    /// Deletes `session`: its messages, idempotency keys and metadata (one logged record);
    /// whether it held any. The id may be used again, from interaction id 1.
    fn delete_session(&self, py: Python<'_>, session: Sid) -> PyResult<bool> {
        let session: &str = &session;
        // The session's entry goes; the one record is reported when the log tells.
        let lsns = |before, after, &existed: &bool| writes::one_record(before, after, existed);
        self.rewrite(py, session, |s| Ok(s.delete_session(session)?), lsns)
    }

    /// Seals the active segment if it holds any record; whether it did.
    fn seal(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |s| Ok(s.seal()?))
    }

    /// Rewrites the sealed segments keeping only what a live session can reach (`seal`
    /// first: the active segment too). No message, id or LSN changes, so the tail cache
    /// stays.
    #[pyo3(signature = (*, seal=false))]
    fn compact(&self, py: Python<'_>, seal: bool) -> PyResult<CompactReport> {
        self.run(py, |s| {
            if seal {
                s.seal()?;
            }
            Ok(CompactReport::from(s.compact()?))
        })
    }

    fn sync(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |s| Ok(s.sync()?.0))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.run(py, |s| Ok(s.stats()))?;
        let d = PyDict::new(py);
        d.set_item("segments", st.segments)?;
        d.set_item("sessions", st.sessions)?;
        d.set_item("messages", st.messages)?;
        d.set_item("index_bytes", st.index_bytes)?;
        d.set_item("last_lsn", st.last_lsn.0)?;
        d.set_item("durable_lsn", st.durable_lsn.0)?;
        Ok(d)
    }

    fn close(&self, py: Python<'_>) {
        let cache = lock(&self.shared.cache).take();
        drop(cache);
        py.detach(|| {
            let store = self
                .shared
                .store
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let iters = std::mem::take(&mut *lock(&self.shared.iters));
            for slot in iters.iter().filter_map(Weak::upgrade) {
                let mut cursor = lock(&slot);
                // (Done and Failed too: what it read ahead is not yielded after the close.)
                let drained = matches!(*cursor, Cursor::Done);
                *cursor = Cursor::Closed { drained };
            }
            // Each subscription holds a handle on the store: released here.
            // All marked first, so that waits under way end together (within one slice).
            let subs: Vec<_> = std::mem::take(&mut *lock(&self.shared.subs))
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for slot in &subs {
                slot.mark_closed(true);
            }
            for slot in &subs {
                slot.release();
            }
            // The last handle in the process closes the store: sync, hint, unlock.
            drop(store);
            drop(lock(&self.shared.temp).take());
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.closed(py) {
            "closed"
        } else if self.read_only {
            "read-only"
        } else {
            "open"
        };
        let path = if self.memory {
            ":memory:".to_owned()
        } else {
            self.path.display().to_string()
        };
        format!("<convlog.Store {path:?} {state}>")
    }
}
