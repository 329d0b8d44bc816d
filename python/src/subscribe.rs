//! `Store.subscribe`: a live tail of the log, as a blocking iterator (and, through
//! `convlog._subscription`, an async one).
//!
//! A `Subscription` wraps the library's `Subscription` (which holds a handle on the store,
//! so `Store.close()` closes every subscription it made, as it does its iterators). Waiting
//! never holds the GIL: a wait is a series of slices of at most [`SLICE`], each a
//! `next_timeout` of the library with the GIL released; between slices a blocking wait
//! checks for signals (so Ctrl-C interrupts `for event in sub:`) and whether the
//! subscription was closed.
//!
//! Two locks: `reader` is held for a slice (by one waiting thread at a time), `ready` only
//! for a moment, so that taking an event already read (`_take`, on an event loop's thread)
//! never waits for a slice. Events read go to `ready` first, and are converted to Python
//! `Event`s by whoever takes them, with the GIL.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::codec;
use crate::errors::Fail;
use crate::store::lock;

/// The longest a thread waits at once (without the GIL) before it checks for signals and
/// for `close()`.
const SLICE: Duration = Duration::from_millis(100);

const LIVE: u8 = 0;
/// `close()` was called on the subscription: iteration ends.
const CLOSED: u8 = 1;
/// Its `Store` was closed: `Closed` is raised.
const STORE_CLOSED: u8 = 2;

/// What a subscription reads from.
struct Reader {
    sub: convlog::Subscription,
    /// Only this session's events (a log subscription from an LSN, for one session).
    filter: Option<String>,
}

/// The state a Python `Subscription` shares with its `Store` (which closes it).
pub(crate) struct SubSlot {
    /// `None` once closed (which drops the library's subscription and its store handle).
    reader: Mutex<Option<Reader>>,
    /// Events read and not yet taken, oldest first.
    ready: Mutex<VecDeque<convlog::LogEvent>>,
    state: AtomicU8,
    /// The process that subscribed: in a `fork()` child the locks above may be held for
    /// good (by a parent's thread that waited in a slice), so the child never takes them.
    pid: u32,
}

impl SubSlot {
    /// Marks the subscription closed, by its user or (`store_closed`) by its store's
    /// `close()` (a subscription its user closed stays so): no wait starts another slice.
    pub(crate) fn mark_closed(&self, store_closed: bool) {
        let how = if store_closed { STORE_CLOSED } else { CLOSED };
        let _ = self
            .state
            .compare_exchange(LIVE, how, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Drops the library's subscription (and its store handle), after [`SubSlot::mark_closed`]:
    /// waits for a slice under way. Without the GIL.
    pub(crate) fn release(&self) {
        if self.pid != convlog::io::process_id() {
            return; // a fork() child: the locks may be the parent's for good (see `pid`)
        }
        let reader = lock(&self.reader).take();
        lock(&self.ready).clear();
        drop(reader);
    }

    fn check(&self) -> Result<bool, Fail> {
        if self.pid != convlog::io::process_id() {
            return Err(Fail::Py(pyo3::exceptions::PyRuntimeError::new_err(
                "this subscription was made before os.fork(), by the parent process: \
                 subscribe again in this process",
            )));
        }
        match self.state.load(Ordering::SeqCst) {
            LIVE => Ok(true),
            CLOSED => Ok(false),
            _ => Err(Fail::Closed),
        }
    }

    /// Waits at most `timeout` (in slices) until an event is ready, or the subscription is
    /// closed. Without the GIL.
    fn wait(&self, timeout: Duration) -> Result<(), Fail> {
        let deadline = Instant::now().checked_add(timeout);
        let mut first = true;
        loop {
            if !self.check()? || !lock(&self.ready).is_empty() {
                return Ok(());
            }
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() && !first {
                return Ok(());
            }
            first = false;
            self.slice(left.min(SLICE))?;
        }
    }

    /// One slice: reads the next event (waiting at most `timeout`) into `ready`.
    fn slice(&self, timeout: Duration) -> Result<(), Fail> {
        let mut guard = lock(&self.reader);
        // Another thread's slice may have read one while this one waited for the lock.
        if !lock(&self.ready).is_empty() {
            return Ok(());
        }
        let Some(reader) = guard.as_mut() else {
            return self.check().map(drop);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reader.sub.next_timeout(left)? {
                Some(e) if reader.filter.as_deref().is_none_or(|s| s == e.session()) => {
                    lock(&self.ready).push_back(e);
                    return Ok(());
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
    }
}

/// One change to the log, as a subscription yields it.
#[pyclass(module = "convlog", name = "Event", frozen)]
pub struct Event {
    kind: &'static str,
    session: String,
    lsn: u64,
    interaction_id: Option<u64>,
    timestamp: Option<u64>,
    message: Option<Py<PyAny>>,
    raw: Option<Vec<u8>>,
    keep: Option<u64>,
    source: Option<String>,
    at: Option<u64>,
}

impl Event {
    /// The Python event for `e` (`None` for a kind this package does not know yet).
    fn of(py: Python<'_>, e: convlog::LogEvent) -> PyResult<Option<Event>> {
        let blank = |kind, session: String, lsn| Event {
            kind,
            session,
            lsn,
            interaction_id: None,
            timestamp: None,
            message: None,
            raw: None,
            keep: None,
            source: None,
            at: None,
        };
        Ok(Some(match e {
            convlog::LogEvent::Message { session, entry } => Event {
                interaction_id: Some(entry.interaction_id),
                timestamp: Some(entry.timestamp.as_micros()),
                message: Some(codec::decode(py, &entry.message)?.unbind()),
                raw: Some(entry.message),
                ..blank("message", session, entry.lsn.0)
            },
            convlog::LogEvent::Cut { session, lsn, keep } => Event {
                keep: Some(keep),
                ..blank("cut", session, lsn.0)
            },
            convlog::LogEvent::Forked {
                session,
                lsn,
                from,
                at,
            } => Event {
                source: Some(from),
                at: Some(at),
                ..blank("fork", session, lsn.0)
            },
            _ => return Ok(None),
        }))
    }
}

#[pymethods]
impl Event {
    /// `"message"`, `"cut"` or `"fork"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The session the event changed.
    #[getter]
    fn session(&self) -> &str {
        &self.session
    }

    /// The LSN of the record that logged it.
    #[getter]
    fn lsn(&self) -> u64 {
        self.lsn
    }

    /// A message's interaction id (else None).
    #[getter]
    fn interaction_id(&self) -> Option<u64> {
        self.interaction_id
    }

    /// When a message was appended, in microseconds since the Unix epoch (else None).
    #[getter]
    fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// The message, decoded (as `tail()` returns it), or None for a cut or a fork.
    #[getter]
    fn message(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.message.as_ref().map(|m| m.clone_ref(py))
    }

    /// The message's JSON text as stored, or None for a cut or a fork.
    #[getter]
    fn message_json<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        self.raw.as_deref().map(|m| codec::text(py, m)).transpose()
    }

    /// A cut's count of messages the session keeps (else None).
    #[getter]
    fn keep(&self) -> Option<u64> {
        self.keep
    }

    /// A fork's source session (else None).
    #[getter]
    fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// How many messages of `source` a fork shares (else None).
    #[getter]
    fn at(&self) -> Option<u64> {
        self.at
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let r = |s: &str| -> PyResult<String> { Ok(PyString::new(py, s).repr()?.to_string()) };
        let detail = match self.kind {
            "message" => format!(
                ", interaction_id={}",
                self.interaction_id.unwrap_or_default()
            ),
            "cut" => format!(", keep={}", self.keep.unwrap_or_default()),
            _ => format!(
                ", source={}, at={}",
                r(self.source.as_deref().unwrap_or_default())?,
                self.at.unwrap_or_default()
            ),
        };
        Ok(format!(
            "Event(kind={}, session={}, lsn={}{detail})",
            r(self.kind)?,
            r(&self.session)?,
            self.lsn
        ))
    }
}

/// A live tail of the log (see `convlog/_convlog.pyi` for the Python documentation).
#[pyclass(module = "convlog", name = "Subscription", frozen)]
pub struct Subscription {
    slot: Arc<SubSlot>,
    /// The LSN right after the last event yielded, or where it started.
    position: AtomicU64,
}

impl Subscription {
    /// A subscription reading `sub` (only `filter`'s events, if given), starting at
    /// `position`; with the slot its store keeps to close it.
    pub(crate) fn new(
        sub: convlog::Subscription,
        filter: Option<String>,
        position: u64,
    ) -> (Subscription, Arc<SubSlot>) {
        let slot = Arc::new(SubSlot {
            reader: Mutex::new(Some(Reader { sub, filter })),
            ready: Mutex::new(VecDeque::new()),
            state: AtomicU8::new(LIVE),
            pid: convlog::io::process_id(),
        });
        let me = Subscription {
            slot: slot.clone(),
            position: AtomicU64::new(position),
        };
        (me, slot)
    }

    /// The next event ready, if any (no waiting; `Ok(None)` also once closed).
    fn take(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        loop {
            if !self.slot.check().map_err(|e| e.into_py_err(py))? {
                return Ok(None);
            }
            let Some(e) = lock(&self.slot.ready).pop_front() else {
                return Ok(None);
            };
            self.position.store(e.lsn().0 + 1, Ordering::SeqCst);
            if let Some(event) = Event::of(py, e)? {
                return Ok(Some(event));
            }
        }
    }

    /// The next event, waiting until `deadline` (for ever when `None`): `None` at the
    /// deadline, or once closed.
    fn next_until(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<Option<Event>> {
        let slot = &self.slot;
        loop {
            if let Some(e) = self.take(py)? {
                return Ok(Some(e));
            }
            if !slot.check().map_err(|e| e.into_py_err(py))? {
                return Ok(None);
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    left.min(SLICE)
                }
                None => SLICE,
            };
            py.detach(|| slot.wait(left))
                .map_err(|e| e.into_py_err(py))?;
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.take(py);
            }
        }
    }
}

fn timeout_of(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(secs) = timeout else {
        return Ok(None);
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "a timeout is a number of seconds, 0 or more, or None, not {secs}"
        )));
    }
    // Beyond what an Instant holds: for ever.
    Ok(Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

#[pymethods]
impl Subscription {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Blocks (without the GIL) until the next event; ends once `close()` was called.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        self.next_until(py, None)
    }

    /// The next event, waiting at most `timeout` seconds (for ever when None); None when
    /// none came in time, or once closed.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        let deadline = timeout_of(timeout)?;
        if timeout.is_some() && deadline.is_none() {
            return self.next_until(py, None);
        }
        self.next_until(py, deadline)
    }

    /// An event already read, without waiting (for the async iterator, on the loop's thread).
    fn _take(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        self.take(py)
    }

    /// Waits at most `timeout` seconds (without the GIL) until an event is ready for
    /// `_take`, or the subscription is closed (for the async iterator, in a thread).
    fn _wait(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(SLICE);
        let slot = &self.slot;
        py.detach(|| slot.wait(timeout))
            .map_err(|e| e.into_py_err(py))
    }

    fn __aiter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("convlog._subscription")?
            .getattr("AsyncEvents")?
            .call1((slf,))?
            .unbind())
    }

    /// Where a new subscription would resume right after the last event yielded: that
    /// event's LSN + 1 (before the first, where this one started reading the log).
    #[getter]
    fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    /// Whether `close()` was called (on it or on its store).
    #[getter]
    fn closed(&self) -> bool {
        self.slot.state.load(Ordering::SeqCst) != LIVE
    }

    /// Stops the subscription (idempotent): iteration ends, and its handle on the store is
    /// released. Waits for a wait slice under way in another thread (at most 100 ms).
    fn close(&self, py: Python<'_>) {
        let slot = &self.slot;
        py.detach(|| {
            slot.mark_closed(false);
            slot.release();
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

    fn __repr__(&self) -> String {
        let state = match self.slot.state.load(Ordering::SeqCst) {
            LIVE => "open",
            _ => "closed",
        };
        format!(
            "<convlog.Subscription at LSN {} {state}>",
            self.position.load(Ordering::SeqCst)
        )
    }
}
