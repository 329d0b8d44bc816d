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
/// Chunks it reads ahead of the decoding.
const AHEAD: usize = 8;
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

/// Every message of `iter`, decoded into a list of fresh Python objects. Called inside a
/// store call, without the GIL (which it takes for the decoding).
pub(crate) fn read_decoded(iter: convlog::RawMessages) -> Result<Py<PyList>, Fail> {
    if iter.len() <= ALONE_UP_TO {
        let (all, _) = stored(iter)?;
        return Python::attach(|py| Ok(codec::decode_all(py, &all)?.unbind()));
    }
    let len = iter.len();
    let (tx, rx) = mpsc::sync_channel(AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || send_chunks(iter, &tx));
        // The GIL is held until every chunk is decoded; the helper never needs it.
        Python::attach(|py| {
            codec::gc_paused(py, true, || {
                let decoder = Decoder::new(py);
                let mut items = Vec::with_capacity(len);
                for chunk in rx.iter() {
                    let chunk = chunk?;
                    decoder.decode_run(&chunk.text, &chunk.ends, &mut items)?;
                }
                Ok(PyList::new(py, items)?.unbind())
            })
        })
        // On an error `rx` is dropped here, so the helper stops at its next send.
    })
}

/// Sends the messages of `iter` in chunks, then a failed read, if any, as the last one.
fn send_chunks(mut iter: convlog::RawMessages, tx: &mpsc::SyncSender<Result<Chunk, Fail>>) {
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
