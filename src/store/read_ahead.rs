//! Decrypting ahead: a long stream of an encrypted store reads every other batch of its
//! messages on a second thread, so opening them (AES-GCM, most of an encrypted read's
//! time) uses two cores instead of one.
//!
//! The stream's own thread reads its batches one message at a time as they are asked for,
//! as any stream does; the helper reads the batch after each into a buffer, which the
//! stream then yields. The items, their order and their errors are exactly those of a
//! stream without it: the helper reads the same snapshot through the same
//! [`RawMessages::entry`].

use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use super::read::RawMessages;
use crate::error::Result;
use crate::message::Entry;

/// Messages a stream yields itself before it starts a helper: a tail, a window or a short
/// session never pays for a thread.
pub(super) const AHEAD_AFTER: u64 = 256;
/// Messages that must be left to read when it would start one.
pub(super) const AHEAD_MIN_LEFT: u64 = 1024;
/// Messages in one batch (the stream's and the helper's).
pub(super) const AHEAD_BATCH: u64 = 512;
/// Bytes of messages after which the helper ends its batch early: what it buffers stays
/// near this whatever the messages' sizes.
pub(super) const AHEAD_BATCH_BYTES: usize = 1 << 20;

/// A helper's batch: the messages it read, each as the stream would have yielded it.
type Batch = Vec<Result<Entry<Vec<u8>>>>;

/// What a stream knows of its helper.
///
/// Invariant: the ids the stream yields are, in order, its own (up to `own_until`), then
/// `ready`'s, then the batch `asked` (the helper's, not yet received), then its own
/// again. `asked` starts right after `own_until`.
pub(super) struct ReadAhead {
    /// Where to ask for the next batch; `None` only while dropping.
    ask: Option<Sender<Range<u64>>>,
    got: Receiver<Batch>,
    /// The helper's last batch, being yielded.
    ready: std::vec::IntoIter<Result<Entry<Vec<u8>>>>,
    /// The last id of the stream's own batch.
    own_until: u64,
    /// The ids of the batch the helper reads now (empty when there is none left).
    asked: Range<u64>,
    /// The last id the stream covers.
    last: u64,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("own_until", &self.own_until)
            .field("asked", &self.asked)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

/// What a stream does with the next id, its helper consulted.
pub(super) enum Next {
    /// The helper read it: yield this.
    Ready(Result<Entry<Vec<u8>>>),
    /// The stream reads it itself.
    Own,
    /// The helper is gone (it could not be reached): read it, and the rest, without one.
    Gone,
}

impl ReadAhead {
    /// Starts a helper reading through `reader` (a copy of the stream's snapshot) for a
    /// stream that has yielded the ids up to `yielded` and covers them up to `last`;
    /// `None` when no thread can be started (the stream goes on alone).
    pub(super) fn start(reader: RawMessages, yielded: u64, last: u64) -> Option<ReadAhead> {
        let (ask, asks) = channel::<Range<u64>>();
        let (give, got) = channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("convlog-ahead".into())
            .spawn(move || help(reader, &asks, &give))
            .ok()?;
        let own_until = yielded.saturating_add(AHEAD_BATCH).min(last);
        let mut ahead = ReadAhead {
            ask: Some(ask),
            got,
            ready: Vec::new().into_iter(),
            own_until,
            asked: 0..0,
            last,
            thread: Some(thread),
        };
        ahead.ask_from(own_until + 1);
        Some(ahead)
    }

    /// Asks the helper for the batch from `first` (nothing when past the end).
    fn ask_from(&mut self, first: u64) {
        let end = first.saturating_add(AHEAD_BATCH).min(self.last + 1);
        self.asked = first..end.max(first);
        if let Some(ask) = self.ask.as_ref().filter(|_| !self.asked.is_empty()) {
            // A helper that is gone is found when its batch is awaited.
            let _ = ask.send(self.asked.clone());
        }
    }

    /// What to do for id `id`, the next the stream yields.
    pub(super) fn next(&mut self, id: u64) -> Next {
        if let Some(item) = self.ready.next() {
            return Next::Ready(item);
        }
        if id <= self.own_until || self.asked.is_empty() {
            return Next::Own;
        }
        if id != self.asked.start {
            // Not the batch asked for (a broken invariant): go on without the helper.
            return Next::Gone;
        }
        let Ok(batch) = self.got.recv() else {
            return Next::Gone;
        };
        let Ok(n) = u64::try_from(batch.len()) else {
            return Next::Gone;
        };
        if n == 0 {
            return Next::Gone;
        }
        // The helper may have ended early (its byte budget): the stream's own batch
        // follows what it read, and the helper's next one follows that.
        let after = self.asked.start + n;
        self.own_until = after.saturating_add(AHEAD_BATCH - 1).min(self.last);
        self.ask_from(self.own_until + 1);
        self.ready = batch.into_iter();
        match self.ready.next() {
            Some(item) => Next::Ready(item),
            None => Next::Gone,
        }
    }
}

impl Drop for ReadAhead {
    /// Stops the helper and waits for it (at most the batch it is reading), so the
    /// segments it maps are released when the stream is.
    fn drop(&mut self) {
        drop(self.ask.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The helper: reads each batch asked for, until the stream is gone.
fn help(mut reader: RawMessages, asks: &Receiver<Range<u64>>, give: &Sender<Batch>) {
    for ids in asks {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for id in ids {
            let item = reader.entry_or_lost(id);
            bytes += item.as_ref().map_or(0, |e| e.message.len());
            batch.push(item);
            if bytes >= AHEAD_BATCH_BYTES {
                break;
            }
        }
        if give.send(batch).is_err() {
            return;
        }
    }
}
