//! `Store.messages()`: a lazy iterator over a session's messages, a snapshot read and
//! decoded a chunk at a time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::{PyRecursionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::codec;
use crate::errors::Fail;
use crate::store::lock;

/// How many messages an iterator reads (and decodes) at a time.
const CHUNK: usize = 64;

/// What one `messages()` iterator reads from.
pub(crate) enum Cursor {
    Live(convlog::RawMessages),
    /// Every message was yielded.
    Done,
    /// Its `Store` was closed first; `drained`: every message had been read (into the
    /// iterator's buffer) by then.
    Closed {
        drained: bool,
    },
    /// A read failed after the messages before it were read: raised next.
    Failed(Option<convlog::Error>),
}

pub(crate) type Slot = Arc<Mutex<Cursor>>;

/// A lazy iterator over a session's messages: a snapshot, read and decoded a chunk at a time.
///
/// Threads may share one: their `next()` calls take turns (on `state`), so each message is
/// yielded once, in order. A thread waits for its turn with the GIL released, and the one
/// whose turn it is never waits for anything holding the GIL, so the GIL and `state` cannot
/// deadlock.
///
/// A `next()` called on the thread already inside `next()` (from a `__del__` or a garbage
/// collector callback that decoding set off) would wait for itself: it raises
/// `RuntimeError` instead (`owner` tells).
#[pyclass(module = "convlog", name = "Messages", frozen)]
pub struct Messages {
    slot: Slot,
    state: Mutex<State>,
    /// The thread whose turn it is ([`this_thread`]), 0 for none.
    owner: AtomicUsize,
    json: bool,
}

thread_local! {
    /// A byte per thread, whose address names the thread while it runs.
    static THREAD: u8 = const { 0 };
}

/// This thread's name for [`Messages::owner`]: never 0, and no other live thread's.
fn this_thread() -> usize {
    THREAD.with(|t| std::ptr::from_ref(t) as usize)
}

/// A thread's turn at a [`Messages`]: its state, held; `owner` names the thread meanwhile.
struct Turn<'a> {
    state: MutexGuard<'a, State>,
    owner: &'a AtomicUsize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Before the lock is released (the guard drops after this).
        self.owner.store(0, Ordering::Release);
    }
}

/// What `next()` changes.
#[derive(Default)]
struct State {
    /// Read, not yet yielded: each message decoded, or why it could not be.
    buffer: VecDeque<PyResult<Py<PyAny>>>,
    /// It said it was exhausted (`StopIteration`): it says so for good, closed or not.
    ended: bool,
}

impl Messages {
    /// An iterator over `slot`, yielding JSON text (`json`) or decoded messages.
    pub(crate) fn new(slot: Slot, json: bool) -> Messages {
        Messages {
            slot,
            state: Mutex::new(State::default()),
            owner: AtomicUsize::new(0),
            json,
        }
    }

    /// This thread's turn at `state`: taken at once if free, else waited for without the
    /// GIL; `RuntimeError` if this thread already has it (a re-entered `next()`).
    fn turn(&self, py: Python<'_>) -> PyResult<Turn<'_>> {
        loop {
            let state = match self.state.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    if self.owner.load(Ordering::Acquire) == this_thread() {
                        return Err(PyRuntimeError::new_err(
                            "Messages iterator re-entered: next() called from inside its own \
                             next() (by a __del__ or a garbage collector callback?)",
                        ));
                    }
                    // Wait until the thread in `next()` leaves it, then try again with the GIL.
                    py.detach(|| drop(lock(&self.state)));
                    continue;
                }
            };
            self.owner.store(this_thread(), Ordering::Release);
            return Ok(Turn {
                state,
                owner: &self.owner,
            });
        }
    }

    /// The next message, on this thread's turn (`state`).
    fn next_in_turn(&self, py: Python<'_>, state: &mut State) -> PyResult<Option<Py<PyAny>>> {
        if state.ended {
            return Ok(None);
        }
        let closed = match &*lock(&self.slot) {
            Cursor::Closed { drained } => Some(*drained),
            _ => None,
        };
        if let Some(drained) = closed {
            // What it read ahead before the close is not yielded after it: an iterator
            // not yet exhausted raises Closed; one with nothing left is exhausted.
            let unread = !state.buffer.is_empty();
            state.buffer.clear();
            if drained && !unread {
                state.ended = true;
                return Ok(None);
            }
            return Err(Fail::Closed.into_py_err(py));
        }
        if let Some(m) = state.buffer.pop_front() {
            return m.map(Some);
        }
        let slot = self.slot.clone();
        let Some(chunk) = py
            .detach(move || next_chunk(&slot))
            .map_err(|e| e.into_py_err(py))?
        else {
            state.ended = true;
            return Ok(None);
        };
        if self.json {
            for m in &chunk {
                let text = codec::text(py, m).map(|t| t.into_any().unbind());
                state.buffer.push_back(text);
            }
        } else {
            match codec::decode_all(py, &chunk) {
                Ok(list) => state.buffer.extend(list.iter().map(|m| Ok(m.unbind()))),
                // A message that does not decode: each is decoded on its own, so that its
                // error is raised in its place and the messages after it still follow.
                // (Anything else, a KeyboardInterrupt say, is raised now.)
                Err(e)
                    if e.is_instance_of::<PyValueError>(py)
                        || e.is_instance_of::<PyRecursionError>(py) =>
                {
                    for m in &chunk {
                        let decoded = codec::decode(py, m).map(Bound::unbind);
                        state.buffer.push_back(decoded);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        state.buffer.pop_front().transpose()
    }
}

/// Reads the next chunk of raw messages; `None` at the end.
fn next_chunk(slot: &Slot) -> Result<Option<Vec<Vec<u8>>>, Fail> {
    let mut cursor = lock(slot);
    let raw = match &mut *cursor {
        Cursor::Live(raw) => raw,
        Cursor::Done => return Ok(None),
        Cursor::Closed { .. } => return Err(Fail::Closed),
        Cursor::Failed(e) => {
            let e = e.take();
            *cursor = Cursor::Done;
            return e.map_or(Ok(None), |e| Err(Fail::Store(e)));
        }
    };
    let mut out = Vec::with_capacity(CHUNK.min(raw.len()));
    while out.len() < CHUNK {
        match raw.next() {
            Some(Ok(entry)) => out.push(entry.message),
            Some(Err(e)) if out.is_empty() => {
                *cursor = Cursor::Done;
                return Err(Fail::Store(e));
            }
            Some(Err(e)) => {
                *cursor = Cursor::Failed(Some(e));
                return Ok(Some(out));
            }
            None => break,
        }
    }
    if raw.len() == 0 {
        // Drop the snapshot (and its handle on the store) as soon as it is read.
        *cursor = Cursor::Done;
    }
    Ok((!out.is_empty()).then_some(out))
}

#[pymethods]
impl Messages {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut turn = self.turn(py)?;
        self.next_in_turn(py, &mut turn.state)
    }

    /// How many messages are left (a hint for `list()`).
    fn __length_hint__(&self, py: Python<'_>) -> usize {
        // A thread inside `next()` holds the buffer: then it is not counted (a hint).
        let buffered = match self.state.try_lock() {
            Ok(state) => state.buffer.len(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().buffer.len(),
            Err(TryLockError::WouldBlock) => 0,
        };
        let slot = self.slot.clone();
        let left = py.detach(move || match &*lock(&slot) {
            Cursor::Live(raw) => Some(raw.len()),
            Cursor::Closed { .. } => None,
            _ => Some(0),
        });
        left.map_or(0, |left| left + buffered)
    }
}
