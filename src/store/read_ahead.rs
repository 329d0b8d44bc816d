//! Decrypting ahead: a long stream of an encrypted store reads every other batch of its
//! messages on a second thread, so opening them (AES-GCM, most of an encrypted read's
//! time) uses two cores instead of one.
//!
//! The stream's own thread reads its batches one message at a time as they are asked for,
//! as any stream does; the helper reads the batch after each into a buffer, which the
//! stream then yields. The items, their order and their errors are exactly those of a
//! stream without it: the helper reads the same snapshot through the same
//! [`RawMessages::entry`], and a batch the helper opened is yielded only while no key of
//! the store can have been destroyed since (the key ring's epoch is the one the batch
//! started under); else the stream reads those messages again itself.
//!
//! Helpers are few: at most one per core but one in the process, so many concurrent
//! streams do not oversubscribe the machine (the others read on their own thread, and
//! try again for a helper once per batch).
//!
//! A rewrite of `KEYS` (a delete or a retention destroying keys, a rekey; this process's
//! or another's) makes the batches read before it stale, and the stream reads them again:
//! new sessions' keys do not.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use super::read::RawMessages;
use crate::crypt::Crypt;
use crate::error::Result;
use crate::message::Entry;

/// Messages a stream yields itself before it starts a helper: a tail, a window or a short
/// session never pays for a thread.
const AHEAD_AFTER: u64 = 256;
/// Messages that must be left to read when it would start one.
const AHEAD_MIN_LEFT: u64 = 1024;
/// Most messages in one batch of the helper's; the stream's own batch after it is as long
/// as the helper's was, so the two share the work evenly whatever the messages' sizes.
const AHEAD_BATCH: u64 = 512;
/// Bytes of messages after which the helper ends its batch early, so what it buffers
/// stays near this whatever the messages' sizes.
const AHEAD_BATCH_BYTES: usize = 1 << 20;

/// Helpers running: the process id in the high 32 bits, how many in the low 32 (a forked
/// child, whose helpers did not come with it, starts again from none). One atomic word,
/// no lock, so a fork can never inherit it held.
static RUNNING: AtomicU64 = AtomicU64::new(0);

/// A helper's batch: the key ring's epoch when it started, and the messages it read,
/// each as the stream would have yielded it.
type Batch = (u64, Vec<Result<Entry<Vec<u8>>>>);

/// What a stream asks its helper for: the ids of its next batch, and the buffers of the
/// last one, handed back to be freed where they were allocated.
///
/// A buffer the helper allocated and the stream's caller freed would cost both threads
/// dearly: the allocator's free goes back to the helper's arena under its lock, against the
/// helper's own allocations (with messages of about 1 KB, the helper spent more time in
/// `malloc` than in AES-GCM). So the stream yields a copy made on its own thread, and the
/// helper frees its buffers itself.
type Ask = (Range<u64>, Vec<Vec<u8>>);

/// A stream's use of a helper thread.
#[derive(Debug)]
pub(super) enum Ahead {
    /// Never: a store without encryption, a short read, or a handle opened with
    /// [`Options::decrypt_ahead`] off.
    ///
    /// [`Options::decrypt_ahead`]: super::Options::decrypt_ahead
    Off,
    /// Once the stream has reached id `at` (far enough), with far enough still to go.
    Eligible {
        /// The id from which to try.
        at: u64,
    },
    /// Started.
    On(Box<ReadAhead>),
}

impl Ahead {
    /// A read of an encrypted store covering ids from `first`: it may start a helper once
    /// it has yielded [`AHEAD_AFTER`] messages.
    pub(super) fn eligible(first: u64) -> Ahead {
        Ahead::Eligible {
            at: first.saturating_add(AHEAD_AFTER),
        }
    }

    /// The message with interaction id `id` (the next `stream` yields) if its helper has
    /// it, starting the helper when `stream` has become long enough; `None` when `stream`
    /// reads it itself.
    pub(super) fn next(&mut self, stream: &RawMessages, id: u64) -> Option<Result<Entry<Vec<u8>>>> {
        if let Ahead::Eligible { at } = *self {
            if id < at {
                return None;
            }
            let (_, last) = stream.covers();
            if last - id < AHEAD_MIN_LEFT {
                *self = Ahead::Off;
                return None;
            }
            *self = match ReadAhead::start(stream.copy_for_helper(), id - 1, last) {
                Some(a) => Ahead::On(Box::new(a)),
                // No helper free (or no thread): try again a batch later.
                None => Ahead::Eligible {
                    at: id.saturating_add(AHEAD_BATCH),
                },
            };
        }
        let Ahead::On(a) = self else {
            return None;
        };
        let item = a.next(id);
        if item.is_none() && a.gone {
            *self = Ahead::Off;
        }
        item
    }
}

/// What a stream knows of its helper.
///
/// Invariant: the ids the stream yields are, in order, its own (up to `own_until`, read
/// on its thread, with `ready`'s first among them), then the batch `asked` (the helper's,
/// not yet received), then its own again; `asked` starts right after `own_until`.
pub(super) struct ReadAhead {
    /// Where to ask for the next batch; `None` only while dropping.
    ask: Option<Sender<Ask>>,
    /// Where the helper's batches come from (behind a lock only so that a stream stays
    /// `Sync`: it is never contended); `None` only while dropping.
    got: Option<Mutex<Receiver<Batch>>>,
    /// The helper's last batch, being yielded, and the epoch it was read under.
    ready: std::vec::IntoIter<Result<Entry<Vec<u8>>>>,
    /// The helper's buffers of messages yielded as copies, to hand back (see [`Ask`]).
    spent: Vec<Vec<u8>>,
    ready_epoch: u64,
    /// The last id the stream reads itself before the helper's next batch.
    own_until: u64,
    /// The ids of the batch the helper reads now (empty when there is none left).
    asked: Range<u64>,
    /// The last id the stream covers.
    last: u64,
    /// The store's keys, whose epoch says whether a batch is still good.
    crypt: std::sync::Arc<Crypt>,
    /// The helper, joined on drop.
    thread: Option<JoinHandle<()>>,
    /// The process that started the helper (a forked child has no helper thread).
    pid: u32,
    /// Whether the helper is gone: the stream reads the rest itself.
    gone: bool,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("own_until", &self.own_until)
            .field("asked", &self.asked)
            .field("ready", &self.ready.len())
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

impl ReadAhead {
    /// Starts a helper reading through `reader` (a copy of the stream's snapshot) for a
    /// stream that has yielded the ids up to `yielded` and covers them up to `last`;
    /// `None` when the process has all the helpers its cores allow, or no thread can be
    /// started (the stream goes on alone).
    fn start(reader: RawMessages, yielded: u64, last: u64) -> Option<ReadAhead> {
        let crypt = reader.crypt()?.clone();
        if !take_slot() {
            return None;
        }
        let (ask, asks) = channel::<Ask>();
        let (give, got) = channel::<Batch>();
        let epoch_of = crypt.clone();
        let spawned = std::thread::Builder::new()
            .name("convlog-ahead".into())
            .spawn(move || help(reader, &epoch_of, &asks, &give));
        let Ok(thread) = spawned else {
            give_slot_back();
            return None;
        };
        let mut ahead = ReadAhead {
            ask: Some(ask),
            got: Some(Mutex::new(got)),
            ready: Vec::new().into_iter(),
            spent: Vec::new(),
            ready_epoch: 0,
            own_until: yielded.saturating_add(AHEAD_BATCH).min(last),
            asked: 0..0,
            last,
            crypt,
            thread: Some(thread),
            pid: crate::io::process_id(),
            gone: false,
        };
        ahead.ask_from(ahead.own_until.saturating_add(1));
        Some(ahead)
    }

    /// Asks the helper for the batch from `first` (nothing when past the end).
    fn ask_from(&mut self, first: u64) {
        let end = first
            .saturating_add(AHEAD_BATCH)
            .min(self.last.saturating_add(1));
        self.asked = first..end.max(first);
        if let Some(ask) = self.ask.as_ref().filter(|_| !self.asked.is_empty()) {
            // A helper that is gone is found when its batch is awaited.
            let spent = std::mem::take(&mut self.spent);
            let _ = ask.send((self.asked.clone(), spent));
        }
    }

    /// The message `id` (the next the stream yields) if the helper read it and it is still
    /// good; `None` when the stream reads it itself (then `gone` says whether it reads the
    /// rest itself too).
    fn next(&mut self, id: u64) -> Option<Result<Entry<Vec<u8>>>> {
        if self.ready.len() > 0 {
            if self.crypt.epoch() == self.ready_epoch {
                return self.ready.next().map(|item| self.copied(item));
            }
            // A key may have been destroyed since the helper opened these: the stream
            // reads them again (they are all before `own_until`).
            self.ready = Vec::new().into_iter();
        }
        if id <= self.own_until || self.asked.is_empty() {
            return None;
        }
        match self.receive(id) {
            Some((epoch, batch)) => {
                // The stream's own batch follows what the helper read, as long as it was,
                // and the helper's next one follows that.
                let n = batch.len() as u64;
                let after = self.asked.start + n;
                self.own_until = after.saturating_add(n - 1).min(self.last);
                self.ask_from(self.own_until.saturating_add(1));
                self.ready = batch.into_iter();
                self.ready_epoch = epoch;
                // Back to the top for the epoch's check; `own_until` now covers `id`,
                // should the batch be stale.
                self.next(id)
            }
            None => {
                self.gone = true;
                None
            }
        }
    }

    /// `item` with its message copied into a buffer of this thread's, the helper's kept to
    /// hand back (see [`Ask`]).
    fn copied(&mut self, item: Result<Entry<Vec<u8>>>) -> Result<Entry<Vec<u8>>> {
        item.map(|mut e| {
            let theirs = std::mem::take(&mut e.message);
            e.message = theirs.as_slice().to_vec();
            self.spent.push(theirs);
            e
        })
    }

    /// The helper's batch for `id`, the first id it was asked for; `None` when it is gone
    /// (or, against the invariant, the batch is not that one).
    fn receive(&self, id: u64) -> Option<Batch> {
        if id != self.asked.start || self.pid != crate::io::process_id() {
            return None;
        }
        let got = self.got.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        let (epoch, batch) = got.recv().ok()?;
        (!batch.is_empty()).then_some((epoch, batch))
    }
}

impl Drop for ReadAhead {
    /// Stops the helper and waits for it (at most the batch it is reading), so the
    /// segments it maps are released when the stream is. A forked child, which has no
    /// helper thread, leaves the channels and the thread alone (a channel the helper was
    /// sending on when the process forked might never be released).
    fn drop(&mut self) {
        if self.pid != crate::io::process_id() {
            std::mem::forget(self.ask.take());
            std::mem::forget(self.got.take());
            std::mem::forget(self.thread.take());
            return;
        }
        drop(self.ask.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            give_slot_back();
        }
    }
}

/// Takes one of the process's helper slots (cores but one, at least one when there are
/// two cores or more); `false` when none is free.
fn take_slot() -> bool {
    static CORES: OnceLock<u64> = OnceLock::new();
    let cores =
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let most = cores.saturating_sub(1).min(u64::from(u32::MAX));
    let pid = u64::from(crate::io::process_id()) << 32;
    RUNNING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            // Another process's count (the parent's, in a forked child) is none here.
            let n = if word & !u64::from(u32::MAX) == pid {
                word & u64::from(u32::MAX)
            } else {
                0
            };
            (n < most).then_some(pid | (n + 1))
        })
        .is_ok()
}

/// Gives back a slot [`take_slot`] took in this process.
fn give_slot_back() {
    let pid = u64::from(crate::io::process_id()) << 32;
    let _ = RUNNING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
        let n = word & u64::from(u32::MAX);
        (word & !u64::from(u32::MAX) == pid && n > 0).then_some(pid | (n - 1))
    });
}

/// The helper: reads each batch asked for, until the stream is gone; each batch carries
/// the epoch of `crypt`'s keys before its first message was opened.
fn help(mut reader: RawMessages, crypt: &Crypt, asks: &Receiver<Ask>, give: &Sender<Batch>) {
    for (ids, spent) in asks {
        drop(spent);
        let epoch = crypt.epoch();
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
        if give.send((epoch, batch)).is_err() {
            return;
        }
    }
}
