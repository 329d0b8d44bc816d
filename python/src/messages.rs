//! `Store.messages()`: a lazy iterator over a session's messages, a snapshot read and
//! decoded a chunk at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
    /// Its `Store` was closed first.
    Closed,
    /// A read failed after the messages before it were read: raised next.
    Failed(Option<convlog::Error>),
}

pub(crate) type Slot = Arc<Mutex<Cursor>>;

/// A lazy iterator over a session's messages: a snapshot, read and decoded a chunk at a time.
#[pyclass(module = "convlog", name = "Messages")]
pub struct Messages {
    slot: Slot,
    buffer: VecDeque<Py<PyAny>>,
    json: bool,
}

impl Messages {
    /// An iterator over `slot`, yielding JSON text (`json`) or decoded messages.
    pub(crate) fn new(slot: Slot, json: bool) -> Messages {
        Messages {
            slot,
            buffer: VecDeque::new(),
            json,
        }
    }
}

/// Reads the next chunk of raw messages; `None` at the end.
fn next_chunk(slot: &Slot) -> Result<Option<Vec<Vec<u8>>>, Fail> {
    let mut cursor = lock(slot);
    let raw = match &mut *cursor {
        Cursor::Live(raw) => raw,
        Cursor::Done => return Ok(None),
        Cursor::Closed => return Err(Fail::Closed),
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

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if let Some(m) = self.buffer.pop_front() {
            return Ok(Some(m));
        }
        let slot = self.slot.clone();
        let Some(chunk) = py
            .detach(move || next_chunk(&slot))
            .map_err(|e| e.into_py_err(py))?
        else {
            return Ok(None);
        };
        if self.json {
            for m in &chunk {
                self.buffer
                    .push_back(codec::text(py, m)?.into_any().unbind());
            }
        } else {
            let list = codec::decode_all(py, &chunk)?;
            for m in list.iter() {
                self.buffer.push_back(m.unbind());
            }
        }
        Ok(self.buffer.pop_front())
    }

    /// How many messages are left (a hint for `list()`).
    fn __length_hint__(&self, py: Python<'_>) -> usize {
        let slot = self.slot.clone();
        let left = py.detach(move || match &*lock(&slot) {
            Cursor::Live(raw) => raw.len(),
            _ => 0,
        });
        left + self.buffer.len()
    }
}
