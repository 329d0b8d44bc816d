//! The read path: streaming iterators over a session's messages.

use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeBounds};

use serde::de::DeserializeOwned;

use std::sync::Arc;

use super::read_ahead::Ahead;
use super::{State, Store};
use crate::crypt::{Crypt, KeyCache};
use crate::error::{Error, Result};
use crate::format::{Kind, RecordMeta};
use crate::id::Lsn;
use crate::index::Snapshot;
use crate::message::{ChatMessage, Entry};
use crate::segment::{OwnedRecord, Segment};

impl Store {
    /// Every message of `session`, oldest first, decoded as [`ChatMessage`]s one at a time.
    ///
    /// An unknown session reads as empty. The iterator is a snapshot: it yields exactly the
    /// messages present when it was made, whatever is appended, popped, truncated or cleared
    /// meanwhile (records are immutable, and stay on disk while it reads).
    #[must_use]
    pub fn messages(&self, session: &str) -> Messages<ChatMessage> {
        self.range(session, ..)
    }

    /// The messages of `session` whose interaction ids fall in `ids` (1-based), oldest first;
    /// a snapshot, as [`Store::messages`].
    #[must_use]
    pub fn range(&self, session: &str, ids: impl RangeBounds<u64>) -> Messages<ChatMessage> {
        let from = match ids.start_bound() {
            Bound::Included(&a) => a.max(1),
            Bound::Excluded(&a) => a.saturating_add(1).max(1),
            Bound::Unbounded => 1,
        };
        let to = match ids.end_bound() {
            Bound::Included(&b) => b.saturating_add(1),
            Bound::Excluded(&b) => b,
            Bound::Unbounded => u64::MAX,
        };
        Messages::new(RawMessages::new(self.clone(), session, |_| from..to))
    }

    /// The last `n` messages of `session`, oldest first: a snapshot of exactly
    /// `min(n, count)` messages. Costs O(n), whatever the session's length.
    #[must_use]
    pub fn tail(&self, session: &str, n: u64) -> Messages<ChatMessage> {
        Messages::new(RawMessages::new(self.clone(), session, |count| {
            count.saturating_sub(n) + 1..count + 1
        }))
    }

    /// One message by interaction id, as raw JSON bytes; `None` when absent.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if its bytes fail their checksums; [`Error::Io`].
    pub fn read_entry(&self, session: &str, interaction_id: u64) -> Result<Option<Entry<Vec<u8>>>> {
        if interaction_id == 0 {
            return Ok(None);
        }
        RawMessages::new(self.clone(), session, |_| {
            interaction_id..interaction_id.saturating_add(1)
        })
        .next()
        .transpose()
    }
}

/// A session's version: its next interaction id and the LSN of its last message. Every
/// change of the session (append, pop, truncate, clear, replace, delete) changes it, since
/// messages are removed only from the end and no LSN is ever reused; a compaction or a
/// reopen does not. [`Store::replace_if`] takes one to refuse a session that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionVersion {
    /// The interaction id its next message gets (how many it holds, plus one).
    pub next_id: u64,
    /// The LSN of its last message; `None` when it holds none.
    pub last_lsn: Option<Lsn>,
}

impl Store {
    /// The version of `session` now (its count and its last message's LSN, read under one
    /// guard): see [`SessionVersion`].
    ///
    /// # Errors
    /// [`Error::Corrupt`] if its last record's header fails its checksum; [`Error::Io`].
    pub fn version(&self, session: &str) -> Result<SessionVersion> {
        let last = RawMessages::new(self.clone(), session, |count| count..count + 1);
        let count = last.last_id();
        let last_lsn = last.lsn(count).transpose()?;
        Ok(SessionVersion {
            next_id: count + 1,
            last_lsn,
        })
    }
}

/// A streaming iterator over a session's messages as raw JSON bytes, exactly as stored.
///
/// A snapshot: it holds the positions of the messages it will yield, taken under one guard
/// when it was made (shared with the index, copy-on-write: a few words per 256 messages),
/// and the segment table they point into; it decodes one message at a time. Every item is one message
/// (or the error reading it), so its length is exact.
#[derive(Debug)]
pub struct RawMessages {
    session: String,
    positions: Snapshot,
    /// The index of the next position (interaction id - 1).
    next: u64,
    /// The segment table the positions were taken from (a compaction may replace the
    /// store's while this reads).
    segments: Arc<Vec<Arc<Segment>>>,
    /// An encrypted store's keys, to open the payloads.
    crypt: Option<Arc<Crypt>>,
    /// The data key the last message opened with.
    keys: KeyCache,
    /// Whether a helper thread decrypts batches ahead (see `read_ahead`).
    ahead: Ahead,
}

impl RawMessages {
    /// The messages whose interaction ids `ids(count)` gives, `count` being the session's
    /// count under the same guard that takes their positions.
    fn new(store: Store, session: &str, ids: impl FnOnce(u64) -> Range<u64>) -> RawMessages {
        let state = store.view();
        let mut messages =
            RawMessages::from_state(&state, store.inner.crypt.as_ref(), session, ids);
        drop(state);
        if messages.crypt.is_some() && store.decrypt_ahead {
            messages.ahead = Ahead::eligible(messages.covers().0);
        }
        messages
    }

    /// As [`RawMessages::new`], under a guard the caller holds (to take several reads under
    /// one).
    pub(super) fn from_state(
        state: &State,
        crypt: Option<&Arc<Crypt>>,
        session: &str,
        ids: impl FnOnce(u64) -> Range<u64>,
    ) -> RawMessages {
        let s = state.index.get(session);
        let range = ids(s.map_or(0, |s| s.count()));
        let positions = s.map(|s| s.snapshot(range)).unwrap_or_default();
        RawMessages {
            session: session.to_owned(),
            next: positions.range().start,
            positions,
            segments: state.segments.clone(),
            crypt: crypt.cloned(),
            keys: KeyCache::default(),
            ahead: Ahead::Off,
        }
    }

    /// The interaction id of the last message this read covers (0 if none).
    pub(super) fn last_id(&self) -> u64 {
        self.positions.range().end
    }

    /// The message with interaction id `id`, if this read covers it (random access; the
    /// iterator's position does not move).
    pub(super) fn entry(&mut self, id: u64) -> Option<Result<Entry<Vec<u8>>>> {
        let Some((segment, off)) = locate(&self.positions, &self.segments, id)? else {
            return Some(Err(self.lost()));
        };
        let crypt = self.crypt.as_deref();
        Some(
            read_message(crypt, &mut self.keys, segment, off, Kind::Append).map(|r| Entry {
                interaction_id: id,
                lsn: r.meta.lsn,
                timestamp: r.meta.timestamp,
                message: r.payload,
            }),
        )
    }

    /// As [`RawMessages::entry`], an id this read does not cover being an error.
    pub(super) fn entry_or_lost(&mut self, id: u64) -> Result<Entry<Vec<u8>>> {
        self.entry(id).unwrap_or_else(|| Err(self.lost()))
    }

    /// The first and the last interaction id this read covers.
    pub(super) fn covers(&self) -> (u64, u64) {
        let r = self.positions.range();
        (r.start + 1, r.end)
    }

    /// An encrypted store's keys.
    pub(super) fn crypt(&self) -> Option<&Arc<Crypt>> {
        self.crypt.as_ref()
    }

    /// A reader of the same snapshot, for a helper thread.
    pub(super) fn copy_for_helper(&self) -> RawMessages {
        RawMessages {
            session: self.session.clone(),
            positions: self.positions.clone(),
            next: self.next,
            segments: self.segments.clone(),
            crypt: self.crypt.clone(),
            keys: KeyCache::default(),
            ahead: Ahead::Off,
        }
    }

    /// The LSN of the message with interaction id `id`, if this read covers it: from its
    /// record's header alone (no payload is copied or opened).
    fn lsn(&self, id: u64) -> Option<Result<Lsn>> {
        let Some((segment, off)) = locate(&self.positions, &self.segments, id)? else {
            return Some(Err(self.lost()));
        };
        Some(segment.with_record(off, Kind::Append, false, |meta, _| Ok(meta.lsn)))
    }

    /// Decodes each message as `T` instead of yielding raw bytes.
    #[must_use]
    pub fn decode_as<T: DeserializeOwned>(self) -> Messages<T> {
        Messages::new(self)
    }
}

/// Where the message with interaction id `id` is: `None` when `positions` do not cover it,
/// `Some(None)` when its position or its segment is missing (see [`RawMessages::lost`]).
fn locate<'s>(
    positions: &Snapshot,
    segments: &'s [Arc<Segment>],
    id: u64,
) -> Option<Option<(&'s Segment, u32)>> {
    let i = id.checked_sub(1)?;
    if !positions.range().contains(&i) {
        return None;
    }
    Some(
        positions
            .get(i)
            .and_then(|pos| Some((&**segments.get(pos.seg as usize)?, pos.off))),
    )
}

impl Iterator for RawMessages {
    type Item = Result<Entry<Vec<u8>>>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.next + 1;
        if id > self.last_id() {
            return None;
        }
        // Out of `self` for the call, which reads the rest of `self`.
        let mut ahead = std::mem::replace(&mut self.ahead, Ahead::Off);
        let from_helper = ahead.next(self, id);
        self.ahead = ahead;
        if let Some(item) = from_helper {
            self.next = id;
            return Some(item);
        }
        let entry = self.entry(id)?;
        self.next = id;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.positions.range().end - self.next).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl RawMessages {
    /// A position the snapshot holds could not be resolved (a broken invariant).
    fn lost(&self) -> Error {
        Error::SessionChanged {
            session: self.session.clone(),
        }
    }
}

/// A streaming iterator over a session's messages, each decoded as a `T`.
#[derive(Debug)]
pub struct Messages<T = ChatMessage> {
    raw: RawMessages,
    _decode: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Messages<T> {
    fn new(raw: RawMessages) -> Messages<T> {
        Messages {
            raw,
            _decode: PhantomData,
        }
    }

    /// Yields raw JSON bytes instead, exactly as stored.
    #[must_use]
    pub fn raw(self) -> RawMessages {
        self.raw
    }

    /// Decodes each message as `U` instead.
    #[must_use]
    pub fn decode_as<U: DeserializeOwned>(self) -> Messages<U> {
        Messages::new(self.raw)
    }
}

impl<T: DeserializeOwned> Iterator for Messages<T> {
    type Item = Result<Entry<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.raw.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(
            serde_json::from_slice(&entry.message)
                .map(|message| Entry {
                    interaction_id: entry.interaction_id,
                    lsn: entry.lsn,
                    timestamp: entry.timestamp,
                    message,
                })
                .map_err(|source| Error::Decode {
                    session: self.raw.session.clone(),
                    interaction_id: entry.interaction_id,
                    lsn: entry.lsn,
                    source,
                }),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

impl ExactSizeIterator for RawMessages {}
impl<T: DeserializeOwned> ExactSizeIterator for Messages<T> {}

/// The record of `kind` (a sealed kind) at `offset` of `segment`, its payload the message:
/// opened in an encrypted store (with the key `keys` holds, when it is the one).
///
/// # Errors
/// As [`Segment::read_kind`] and [`unsealed`]; a payload that does not open but fails its
/// CRC too is reported as the damage it is.
pub(super) fn read_message(
    crypt: Option<&Crypt>,
    keys: &mut KeyCache,
    segment: &Segment,
    offset: u32,
    kind: Kind,
) -> Result<OwnedRecord> {
    let Some(c) = crypt else {
        let r = segment.read_kind(offset, kind)?;
        let payload = unsealed(None, segment, offset, &r.meta, r.payload)?;
        return Ok(OwnedRecord { payload, ..r });
    };
    // The tag checks the payload: no CRC on the way, and no copy but the plaintext.
    let opened = segment.with_record(offset, kind, false, |meta, envelope| {
        let payload = c.unseal(keys, segment.id, offset, &meta, envelope)?;
        Ok(OwnedRecord { meta, payload })
    });
    if opened.is_err() {
        segment.read_kind(offset, kind)?;
    }
    opened
}

/// The message a record of a sealed kind holds: its payload, opened in an encrypted store.
///
/// # Errors
/// [`Error::KeyRequired`] for a sealed payload in a store opened without a key (its key
/// file gone); as [`Crypt::unseal`].
pub(super) fn unsealed(
    crypt: Option<&Crypt>,
    segment: &Segment,
    offset: u32,
    meta: &RecordMeta,
    payload: Vec<u8>,
) -> Result<Vec<u8>> {
    match crypt {
        Some(c) => c.unseal(&mut KeyCache::default(), segment.id, offset, meta, &payload),
        None if crate::crypt::is_sealed(&payload) => Err(Error::KeyRequired {
            path: segment.path.parent().unwrap_or(&segment.path).to_owned(),
        }),
        None => Ok(payload),
    }
}
