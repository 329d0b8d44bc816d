//! The write path's API: append, append_batch, append_if, pop, truncate, clear, delete,
//! seal, sync. Each call checks its input, then logs one committed unit (`unit.rs`).

use std::borrow::Cow;

use serde::Serialize;

use super::lock::Wait;
use super::validate::{check_decodable, validate_object};
use super::{Receipt, Store, validate_session_id};
use crate::crypt::SEAL_OVERHEAD;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::format::{DEFAULT_MAX_RECORD_LEN, Kind, SEGMENT_HEADER_LEN};
use crate::id::Lsn;
use crate::message::{ChatMessage, Entry};

/// Most bytes one batch may frame: a batch is written to one segment, whose offsets are 32-bit.
pub const MAX_BATCH_BYTES: u64 = 1 << 30;

/// One event to log for a session; raw JSON is borrowed from the caller, not copied.
pub(super) struct Event<'a> {
    pub(super) kind: Kind,
    pub(super) arg: u64,
    pub(super) payload: Cow<'a, [u8]>,
}

impl Store {
    /// Appends one message to `session`.
    ///
    /// `message` may be any `Serialize` value whose JSON is an object: a [`ChatMessage`],
    /// a `serde_json::Value`, your own struct.
    ///
    /// # Errors
    /// [`Error::InvalidSessionId`], [`Error::InvalidMessage`] (not a JSON object, or nested
    /// deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH)), [`Error::RecordTooLarge`]; [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`].
    /// A failed append changes nothing, with one exception: an I/O error while writing its
    /// records, when wiping what part of them landed fails too (a disk that fails every
    /// write). The store is then poisoned ([`Store::is_poisoned`]), and the append is
    /// indeterminate: the bytes that landed may form whole records (a record's last bytes
    /// can be zeros, as preallocated space is), which a reopen then finds, as a database
    /// may find a transaction whose commit failed with an I/O error.
    pub fn append<T: Serialize + ?Sized>(&self, session: &str, message: &T) -> Result<Receipt> {
        let payload = self.serialize(session, message)?;
        self.append_payloads(session, None, vec![Cow::Owned(payload)])
            .map(|r| r[0])
    }

    /// Appends one message given as raw JSON bytes, stored (and read back) byte for byte.
    ///
    /// # Errors
    /// As [`Store::append`]; [`Error::InvalidMessage`] when the bytes are not one JSON object
    /// in UTF-8, or nest deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH).
    pub fn append_raw(&self, session: &str, json: &[u8]) -> Result<Receipt> {
        validate_object(session, json)?;
        self.append_payloads(session, None, vec![Cow::Borrowed(json)])
            .map(|r| r[0])
    }

    /// Appends `message` only if `session`'s next interaction id is `expected_next_id`
    /// (1 for an empty session): two agents racing on one session never interleave silently.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the next id differs; otherwise as [`Store::append`].
    pub fn append_if<T: Serialize + ?Sized>(
        &self,
        session: &str,
        expected_next_id: u64,
        message: &T,
    ) -> Result<Receipt> {
        let payload = self.serialize(session, message)?;
        self.append_payloads(session, Some(expected_next_id), vec![Cow::Owned(payload)])
            .map(|r| r[0])
    }

    /// [`Store::append_if`] for a raw JSON object, stored (and read back) byte for byte.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the next id differs; otherwise as [`Store::append_raw`].
    pub fn append_raw_if(
        &self,
        session: &str,
        expected_next_id: u64,
        json: &[u8],
    ) -> Result<Receipt> {
        validate_object(session, json)?;
        self.append_payloads(session, Some(expected_next_id), vec![Cow::Borrowed(json)])
            .map(|r| r[0])
    }

    /// Appends `messages` atomically: after a crash a reader sees all of them or none.
    ///
    /// # Errors
    /// As [`Store::append`], for any message of the batch; then nothing is appended.
    pub fn append_batch<T: Serialize>(
        &self,
        session: &str,
        messages: &[T],
    ) -> Result<Vec<Receipt>> {
        let payloads = messages
            .iter()
            .map(|m| self.serialize(session, m).map(Cow::Owned))
            .collect::<Result<Vec<_>>>()?;
        self.append_payloads(session, None, payloads)
    }

    /// [`Store::append_batch`] for raw JSON objects, each stored byte for byte.
    ///
    /// # Errors
    /// As [`Store::append_raw`], for any message of the batch; then nothing is appended.
    pub fn append_batch_raw<B: AsRef<[u8]>>(
        &self,
        session: &str,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        self.append_raw_batch(Wait::Block, session, messages)
    }

    /// [`Store::append_batch_raw`] only if it can go through at once: without waiting for
    /// another writer (a thread of this process, or another process) and without a sync
    /// (under [`Durability::Buffered`], or an [`Durability::Interval`] not yet due).
    /// For callers that must not block, such as an event loop: when this is
    /// [`Error::Busy`], nothing was written, and the same call without `try_` (on a thread
    /// that may wait) goes through.
    ///
    /// It is also busy when the write would seal a full segment (a sync), verify the
    /// active segment first (the first write after an open that loaded it from its hint),
    /// or, in an encrypted store, destroy a deleted session's data keys before it gets a
    /// new one (a sync). A new session's first data key does not make it busy: its entry
    /// goes to `KEYS` unsynced.
    ///
    /// # Errors
    /// [`Error::Busy`]; otherwise as [`Store::append_batch_raw`].
    pub fn try_append_batch_raw<B: AsRef<[u8]>>(
        &self,
        session: &str,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        if self.inner.opts.durability == Durability::Always {
            return Err(self.busy("a sync (durability Always)"));
        }
        self.append_raw_batch(Wait::No, session, messages)
    }

    /// Checks each raw message, then appends them as one unit, waiting or not as `wait` says.
    fn append_raw_batch<B: AsRef<[u8]>>(
        &self,
        wait: Wait,
        session: &str,
        messages: &[B],
    ) -> Result<Vec<Receipt>> {
        for m in messages {
            validate_object(session, m.as_ref())?;
        }
        let payloads = messages.iter().map(|m| Cow::Borrowed(m.as_ref())).collect();
        self.append_payloads_with(wait, session, None, payloads)
    }

    /// Removes and returns the last message of `session` (`None` when it is empty).
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored bytes are not a JSON object (never for a store this
    /// crate wrote: every JSON object decodes as a [`ChatMessage`]); then nothing is removed.
    /// Otherwise as [`Store::truncate`].
    pub fn pop(&self, session: &str) -> Result<Option<Entry<ChatMessage>>> {
        self.pop_with(session, |entry| {
            let message =
                serde_json::from_slice(&entry.message).map_err(|source| Error::Decode {
                    session: session.to_owned(),
                    interaction_id: entry.interaction_id,
                    lsn: entry.lsn,
                    source,
                })?;
            Ok(Entry {
                interaction_id: entry.interaction_id,
                lsn: entry.lsn,
                timestamp: entry.timestamp,
                message,
            })
        })
    }

    /// Removes and returns the last message of `session` as its raw JSON bytes.
    ///
    /// # Errors
    /// As [`Store::truncate`].
    pub fn pop_raw(&self, session: &str) -> Result<Option<Entry<Vec<u8>>>> {
        self.pop_with(session, Ok)
    }

    fn pop_with<T>(
        &self,
        session: &str,
        decode: impl FnOnce(Entry<Vec<u8>>) -> Result<T>,
    ) -> Result<Option<T>> {
        validate_session_id(session)?;
        let mut popped = None;
        self.write_events(session, None, |count| {
            if count == 0 {
                return Ok(Vec::new());
            }
            let Some(entry) = self.read_entry(session, count)? else {
                return Ok(Vec::new());
            };
            popped = Some(decode(entry)?);
            Ok(vec![Event {
                kind: Kind::Pop,
                arg: count,
                payload: Cow::Borrowed(&[]),
            }])
        })?;
        Ok(popped)
    }

    /// Cuts `session` to its first `keep` messages; returns how many were removed.
    /// Nothing is logged when nothing would be removed.
    ///
    /// # Errors
    /// [`Error::InvalidSessionId`]; [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`].
    pub fn truncate(&self, session: &str, keep: u64) -> Result<u64> {
        validate_session_id(session)?;
        let mut removed = 0;
        self.write_events(session, None, |count| {
            if keep >= count {
                return Ok(Vec::new());
            }
            removed = count - keep;
            Ok(vec![Event {
                kind: Kind::Truncate,
                arg: keep,
                payload: Cow::Borrowed(&[]),
            }])
        })?;
        Ok(removed)
    }

    /// Empties `session` (a logged tombstone: it stays empty after a reopen); returns how
    /// many messages were removed.
    ///
    /// # Errors
    /// As [`Store::truncate`].
    pub fn clear(&self, session: &str) -> Result<u64> {
        validate_session_id(session)?;
        let mut removed = 0;
        self.write_events(session, None, |count| {
            removed = count;
            Ok(if count == 0 {
                Vec::new()
            } else {
                vec![Event {
                    kind: Kind::Clear,
                    arg: count,
                    payload: Cow::Borrowed(&[]),
                }]
            })
        })?;
        Ok(removed)
    }

    /// Deletes `session`: its messages, idempotency keys and metadata are gone at once (it
    /// reads as empty and leaves [`Store::sessions`]), as one logged record that a reopen
    /// replays; its bytes leave the disk at the next [`Store::compact`]. Returns whether it
    /// held anything (nothing is logged when it held nothing). The id can be used again
    /// afterwards: it starts empty.
    ///
    /// In an encrypted store it also destroys the session's data key, durably, before it
    /// returns (see `docs/format.md`).
    ///
    /// # Errors
    /// As [`Store::truncate`]. In an encrypted store, also any error from destroying the key
    /// after the delete was logged ([`Error::Io`] rewriting the key file, [`Error::KeyFile`],
    /// [`Error::WrongKey`] after another process's rekey): the session is deleted, the store
    /// is poisoned, and the reopen it asks for destroys the key (so does a compaction by
    /// another process).
    pub fn delete_session(&self, session: &str) -> Result<bool> {
        self.delete_session_if(session, |_| true)
    }

    /// [`Store::delete_session`] if `still(last)` holds, `last` being the timestamp of the
    /// session's last message (`None`: it has none) under the write lock.
    pub(super) fn delete_session_if(
        &self,
        session: &str,
        still: impl FnOnce(Option<crate::id::Timestamp>) -> bool,
    ) -> Result<bool> {
        validate_session_id(session)?;
        let mut existed = false;
        self.write_events(session, None, |count| {
            let state = self.state();
            let last = state.index.get(session).map(|s| s.last());
            existed = (count > 0 || state.index.meta(session).is_some()) && still(last);
            drop(state);
            Ok(if existed {
                vec![Event {
                    kind: Kind::Delete,
                    arg: count,
                    payload: Cow::Borrowed(&[]),
                }]
            } else {
                Vec::new()
            })
        })?;
        if existed && let Some(crypt) = &self.inner.crypt {
            // The delete durable first (a power cut never leaves the session listed with
            // its keys gone), then its keys destroyed, unless the session was used again
            // (another process used the id anew: its first record dropped them). If that
            // fails, the delete is logged but its keys live on: the store poisons itself, so
            // the reopen it asks for sweeps them (as after a crash at this point).
            let destroyed = self.with_write_turn(|w| {
                if self.state().index.is_deleted(session) {
                    crypt.drop_sessions(&[session], || self.durable_now(w))?;
                }
                Ok(())
            });
            if let Err(e) = destroyed {
                self.inner.syncer.poison();
                return Err(e);
            }
        }
        Ok(existed)
    }

    /// Seals the active segment (synced, given its hint) and starts a new one, if it holds
    /// any record: what it held becomes something [`Store::compact`] can rewrite. Returns
    /// whether it sealed one.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`].
    pub fn seal(&self) -> Result<bool> {
        self.with_write_turn(|w| {
            if w.active.len <= SEGMENT_HEADER_LEN as u64 {
                return Ok(false);
            }
            self.rotate(w)?;
            Ok(true)
        })
    }

    /// A barrier: makes everything appended so far durable and returns the durable LSN.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] if the fsync fails (the
    /// store is then poisoned); [`Error::Forked`] in a `fork()` child of the process that
    /// opened it.
    pub fn sync(&self) -> Result<Lsn> {
        self.check_process()?;
        // This process's writes (and what it folded before them), not the log's end as a
        // read sees it: another process's later records are its own to sync.
        let written = match &*self.writer() {
            Some(w) => Lsn(w.next_lsn.0 - 1),
            None => return Ok(self.last_lsn()),
        };
        self.wait_durable(written)
    }

    pub(super) fn serialize<T: Serialize + ?Sized>(
        &self,
        session: &str,
        message: &T,
    ) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(message).map_err(|e| Error::InvalidMessage {
            session: session.to_owned(),
            reason: e.to_string(),
        })?;
        // serde_json writes an object as `{...}` and nothing else starts with `{`.
        if bytes.first() != Some(&b'{') {
            return Err(not_an_object(session));
        }
        // A value built in memory can nest deeper than a reader decodes.
        check_decodable(session, &bytes)?;
        Ok(bytes)
    }

    fn append_payloads(
        &self,
        session: &str,
        expected_next: Option<u64>,
        payloads: Vec<Cow<'_, [u8]>>,
    ) -> Result<Vec<Receipt>> {
        self.append_payloads_with(Wait::Block, session, expected_next, payloads)
    }

    /// [`Store::append_payloads`], waiting for nothing with [`Wait::No`].
    fn append_payloads_with(
        &self,
        wait: Wait,
        session: &str,
        expected_next: Option<u64>,
        payloads: Vec<Cow<'_, [u8]>>,
    ) -> Result<Vec<Receipt>> {
        validate_session_id(session)?;
        self.check_sizes(session, payloads.iter().map(|p| p.len()))?;
        self.write_unit(session, None, wait, |_, count| {
            check_expected(session, expected_next, count)?;
            Ok(appends(count, payloads))
        })
    }

    /// Refuses a payload over the store's `max_record_len`.
    pub(super) fn check_sizes(
        &self,
        session: &str,
        lens: impl Iterator<Item = usize>,
    ) -> Result<()> {
        let mut max = u64::from(self.inner.opts.max_record_len);
        if self.inner.crypt.is_some() {
            // The sealed payload must still fit the decoder's limit.
            max = max.min(u64::from(DEFAULT_MAX_RECORD_LEN) - SEAL_OVERHEAD as u64);
        }
        match lens.map(|l| l as u64).find(|l| *l > max) {
            Some(len) => Err(Error::RecordTooLarge {
                session: session.to_owned(),
                len,
                max,
            }),
            None => Ok(()),
        }
    }
}

/// The append events of `payloads` in a session of `count` messages.
pub(super) fn appends(count: u64, payloads: Vec<Cow<'_, [u8]>>) -> Vec<Event<'_>> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Event {
            kind: Kind::Append,
            arg: count + 1 + i as u64,
            payload,
        })
        .collect()
}

/// `Error::Conflict` unless the session's next interaction id (after `count` messages) is the
/// one the caller expects (if it expects one).
pub(super) fn check_expected(session: &str, expected: Option<u64>, count: u64) -> Result<()> {
    match expected {
        Some(e) if e != count + 1 => Err(Error::Conflict {
            session: session.to_owned(),
            expected: e,
            actual: count + 1,
        }),
        _ => Ok(()),
    }
}

fn not_an_object(session: &str) -> Error {
    Error::InvalidMessage {
        session: session.to_owned(),
        reason: "not a JSON object".into(),
    }
}
