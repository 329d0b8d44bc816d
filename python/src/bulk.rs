//! Reading many messages at once (`tail()` of a whole session, say): a helper thread reads
//! them from the store, without the GIL, a chunk at a time, while the calling thread decodes
//! the chunks already read into Python objects, with the GIL. Reading then costs next to no
//! time of its own on a machine with two cores or more, where reading everything first and
//! decoding it after adds the two up.

use std::sync::mpsc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::codec;
use crate::decode::Decoder;
use crate::errors::Fail;

/// Messages the helper thread sends at a time.
const CHUNK: usize = 512;
/// Up to this many messages, everything is read first, then decoded (a thread would cost
/// more than it saves).
const ALONE_UP_TO: usize = 2 * CHUNK;

/// The stored JSON of every message of `iter`, with the last interaction id read.
pub(crate) fn stored(iter: convlog::RawMessages) -> convlog::Result<(Vec<Vec<u8>>, u64)> {
    let mut out = Vec::with_capacity(iter.len());
    let mut last = 0;
    for entry in iter {
        let entry = entry?;
        out.push(entry.message);
        last = entry.interaction_id;
    }
    Ok((out, last))
}

/// Stored messages one after another, as one text, and where each ends in it.
struct Chunk {
    text: String,
    ends: Vec<usize>,
}

/// Every message `read` gives, decoded into a list of fresh Python objects. Called with the
/// GIL. `read` is called once, on this thread without the GIL, then (for more than
/// [`ALONE_UP_TO`] messages) again on a helper thread, with a sink for what it reads: it
/// gives the messages to its argument while it holds the store's read lock.
///
/// The lock is never held by the thread that holds the GIL: decoding may run Python code
/// (a signal handler) that closes the store, and `close` waits for the lock. The helper
/// never waits for the decoding either (its channel is unbounded: what it reads ahead is
/// raw bytes, smaller than the objects they become), so a `close` meanwhile waits only for
/// the read to end.
pub(crate) fn read_decoded<R>(py: Python<'_>, read: R) -> PyResult<Py<PyList>>
where
    R: Fn(&mut dyn FnMut(convlog::RawMessages) -> Result<(), Fail>) -> Result<(), Fail> + Sync,
{
    // Few messages: read them all (lock held, no GIL), then decode.
    let small = py
        .detach(|| {
            let mut small = None;
            read(&mut |iter| {
                if iter.len() <= ALONE_UP_TO {
                    small = Some(stored(iter)?.0);
                }
                Ok(())
            })?;
            Ok::<_, Fail>(small)
        })
        .map_err(|e| e.into_py_err(py))?;
    if let Some(all) = small {
        return Ok(codec::decode_all(py, &all)?.unbind());
    }
    std::thread::scope(|scope| {
        // Made inside the scope: on an error, `rx` is dropped before the scope joins the
        // helper, whose next send then fails and ends it.
        let (tx, rx) = mpsc::channel();
        let read = &read;
        scope.spawn(move || {
            let sent = read(&mut |iter| {
                send_chunks(iter, &tx);
                Ok(())
            });
            if let Err(e) = sent {
                let _ = tx.send(Err(e));
            }
        });
        codec::gc_paused(py, true, || {
            let decoder = Decoder::new(py);
            let mut items = Vec::new();
            for chunk in rx.iter() {
                let chunk = chunk.map_err(|e| e.into_py_err(py))?;
                decoder.decode_run(&chunk.text, &chunk.ends, &mut items)?;
            }
            Ok(PyList::new(py, items)?.unbind())
        })
    })
}

/// Sends the messages of `iter` in chunks, then a failed read, if any, as the last one.
fn send_chunks(mut iter: convlog::RawMessages, tx: &mpsc::Sender<Result<Chunk, Fail>>) {
    loop {
        let chunk = next_chunk(&mut iter);
        let last = chunk.as_ref().map_or(true, |c| c.ends.len() < CHUNK);
        let empty = chunk.as_ref().is_ok_and(|c| c.ends.is_empty());
        if (!empty && tx.send(chunk).is_err()) || last {
            return;
        }
    }
}

/// The next (at most) [`CHUNK`] messages of `iter`, checked to be UTF-8 (as every stored
/// message is: it was checked to be JSON).
fn next_chunk(iter: &mut convlog::RawMessages) -> Result<Chunk, Fail> {
    let mut bytes = Vec::new();
    let mut ends = Vec::with_capacity(CHUNK);
    for entry in iter.by_ref().take(CHUNK) {
        bytes.extend_from_slice(&entry?.message);
        ends.push(bytes.len());
    }
    let text = String::from_utf8(bytes).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Chunk { text, ends })
}
