//! The read path: streaming iterators over a session's messages.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;

use std::sync::Arc;

use super::Store;
use crate::error::{Error, Result};
use crate::message::{ChatMessage, Entry};
use crate::segment::Segment;

impl Store {
    /// Every message of `session`, oldest first, decoded as [`ChatMessage`]s one at a time.
    ///
    /// An unknown session reads as empty. The iterator covers the messages present when it
    /// was made; later appends are not included. If the session is popped, truncated or
    /// cleared while it is read, the iterator yields [`Error::SessionChanged`] (after at most
    /// one chunk of positions it had already fetched, which still name the records as they
    /// were: records are immutable) and stops.
    #[must_use]
    pub fn messages(&self, session: &str) -> Messages<ChatMessage> {
        self.range(session, ..)
    }

    /// The messages of `session` whose interaction ids fall in `ids` (1-based), oldest first.
    #[must_use]
    pub fn range(&self, session: &str, ids: impl RangeBounds<u64>) -> Messages<ChatMessage> {
        let count = self.interaction_count(session);
        let from = match ids.start_bound() {
            Bound::Included(&a) => a.max(1),
            Bound::Excluded(&a) => a.saturating_add(1).max(1),
            Bound::Unbounded => 1,
        };
        let to = match ids.end_bound() {
            Bound::Included(&b) => b.saturating_add(1),
            Bound::Excluded(&b) => b,
            Bound::Unbounded => u64::MAX,
        }
        .min(count + 1);
        Messages::new(RawMessages::new(self.clone(), session, from, to))
    }

    /// The last `n` messages of `session`, oldest first. Costs O(n), whatever the session's
    /// length.
    #[must_use]
    pub fn tail(&self, session: &str, n: u64) -> Messages<ChatMessage> {
        let count = self.interaction_count(session);
        self.range(session, count.saturating_sub(n) + 1..)
    }

    /// One message by interaction id, as raw JSON bytes; `None` when absent.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if its bytes fail their checksums; [`Error::Io`].
    pub fn read_entry(&self, session: &str, interaction_id: u64) -> Result<Option<Entry<Vec<u8>>>> {
        if interaction_id == 0 {
            return Ok(None);
        }
        RawMessages::new(self.clone(), session, interaction_id, interaction_id + 1)
            .next()
            .transpose()
    }
}

/// A streaming iterator over a session's messages as raw JSON bytes, exactly as stored.
///
/// Holds a handle to the store and at most 32 positions at a time (fetched under one
/// short lock): constant memory.
#[derive(Debug)]
pub struct RawMessages {
    store: Store,
    session: String,
    next: u64,
    end: u64,
    epoch: Option<u64>,
    /// Positions fetched ahead: (interaction id, segment, offset), in order.
    ahead: VecDeque<(u64, Arc<Segment>, u32)>,
}

/// How many positions an iterator fetches per lock acquisition.
const CHUNK: u64 = 32;

impl RawMessages {
    fn new(store: Store, session: &str, from: u64, end: u64) -> RawMessages {
        let (epoch, count) = store
            .state()
            .index
            .get(session)
            .map_or((None, 0), |s| (Some(s.epoch()), s.count()));
        let from = from.max(1);
        let end = end.min(count + 1).max(from);
        RawMessages {
            store,
            session: session.to_owned(),
            next: from,
            end,
            epoch,
            // One chunk at a time: allocated once, at its size.
            ahead: VecDeque::with_capacity(CHUNK.min(end - from) as usize),
        }
    }

    /// Decodes each message as `T` instead of yielding raw bytes.
    #[must_use]
    pub fn decode_as<T: DeserializeOwned>(self) -> Messages<T> {
        Messages::new(self)
    }

    /// Fetches the next chunk of positions; `false` if the session changed under us.
    fn fill(&mut self) -> bool {
        let state = self.store.state();
        let Some(s) = state
            .index
            .get(&self.session)
            .filter(|s| Some(s.epoch()) == self.epoch)
        else {
            return false;
        };
        let upto = self.end.min(self.next + CHUNK);
        let mut id = self.next;
        // Internal iteration: `positions` chains borrowed runs and owned positions.
        let fetched: Result<(), ()> = s.positions(self.next..upto).try_for_each(|p| {
            let seg = state.segments.get(p.seg as usize).ok_or(())?;
            self.ahead.push_back((id, seg.clone(), p.off));
            id += 1;
            Ok(())
        });
        if fetched.is_err() || id != upto {
            return false;
        }
        self.next = upto;
        true
    }
}

impl Iterator for RawMessages {
    type Item = Result<Entry<Vec<u8>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ahead.is_empty() {
            if self.next >= self.end {
                return None;
            }
            if !self.fill() {
                self.end = self.next;
                return Some(Err(Error::SessionChanged {
                    session: self.session.clone(),
                }));
            }
        }
        let (id, segment, off) = self.ahead.pop_front()?;
        Some(segment.read_at(off).map(|r| Entry {
            interaction_id: id,
            lsn: r.meta.lsn,
            timestamp: r.meta.timestamp,
            message: r.payload,
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.end - self.next).unwrap_or(usize::MAX) + self.ahead.len();
        (n, Some(n))
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
