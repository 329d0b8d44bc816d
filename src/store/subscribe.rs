//! Live tail: a subscription reads the log in LSN order, from where it was asked to start,
//! and blocks for what any process appends next.
//!
//! It reads committed units only, through the one segment reader, and never past the end of
//! the log the store's index holds (brought up to date first, as every read is), so it
//! yields exactly what reads see, in the order they saw it. Appends in this process wake it
//! at once; appends in another process within [`CROSS_PROCESS_POLL`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{RawMessages, State, Store};
use crate::error::{Error, Result};
use crate::format::{Kind, SEGMENT_HEADER_LEN};
use crate::id::{Lsn, SegmentId};
use crate::message::Entry;
use crate::segment::{Record, SegmentData, SegmentReader, Units};

/// How often a waiting subscription checks whether another process appended.
pub const CROSS_PROCESS_POLL: Duration = Duration::from_millis(10);
/// Most events a subscription decodes ahead of what it has yielded.
const READ_AHEAD: usize = 1024;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Since {
    /// From the record with this LSN on (or the first one after it).
    Lsn(Lsn),
    /// From the next record written.
    Now,
}

/// A change to a session, as the log recorded it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LogEvent {
    /// A message was appended.
    Message {
        /// The session.
        session: String,
        /// The message, as its raw JSON bytes, with its interaction id, LSN and timestamp.
        entry: Entry<Vec<u8>>,
    },
    /// The session was cut to its first `keep` messages: a pop (`keep` is the count before,
    /// minus one), a truncate, a clear or a delete (0), or the first step of a replace.
    Cut {
        /// The session.
        session: String,
        /// The record's LSN.
        lsn: Lsn,
        /// How many messages the session holds after it.
        keep: u64,
    },
    /// The session became the first `at` messages of `from` (a fork).
    Forked {
        /// The new session.
        session: String,
        /// The record's LSN.
        lsn: Lsn,
        /// The session it shares its prefix with.
        from: String,
        /// How many messages it shares.
        at: u64,
    },
}

impl LogEvent {
    /// The session the event changed.
    #[must_use]
    pub fn session(&self) -> &str {
        match self {
            LogEvent::Message { session, .. }
            | LogEvent::Cut { session, .. }
            | LogEvent::Forked { session, .. } => session,
        }
    }

    /// The LSN of the record that logged it.
    #[must_use]
    pub fn lsn(&self) -> Lsn {
        match self {
            LogEvent::Message { entry, .. } => entry.lsn,
            LogEvent::Cut { lsn, .. } | LogEvent::Forked { lsn, .. } => *lsn,
        }
    }

    /// The event a committed record stands for (`None` for records that change no
    /// session's messages: keys, metadata, gaps).
    fn of_record(r: &Record<'_>) -> Option<LogEvent> {
        let session = r.session.to_owned();
        let lsn = r.meta.lsn;
        Some(match r.meta.kind {
            Kind::Append => LogEvent::Message {
                session,
                entry: Entry {
                    interaction_id: r.meta.arg,
                    lsn,
                    timestamp: r.meta.timestamp,
                    message: r.payload.to_vec(),
                },
            },
            Kind::Pop => LogEvent::Cut {
                session,
                lsn,
                keep: r.meta.arg.saturating_sub(1),
            },
            Kind::Truncate => LogEvent::Cut {
                session,
                lsn,
                keep: r.meta.arg,
            },
            Kind::Clear | Kind::Delete => LogEvent::Cut {
                session,
                lsn,
                keep: 0,
            },
            Kind::Fork => LogEvent::Forked {
                session,
                lsn,
                from: String::from_utf8_lossy(r.payload).into_owned(),
                at: r.meta.arg,
            },
            Kind::Meta | Kind::Gap => return None,
        })
    }
}

/// Wakes this process's subscriptions when a write lands (a generation counter and its
/// condition variable).
#[derive(Debug, Default)]
pub(super) struct Appended {
    generation: Mutex<u64>,
    changed: Condvar,
    /// Subscriptions waiting now (a write with none to wake costs one atomic load).
    waiting: AtomicUsize,
}

impl Appended {
    pub(super) fn notify(&self) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }

    fn current(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a subscription as waiting, before it looks for events one last time (so a
    /// write that lands after that look wakes it); the count goes when the guard does.
    fn arm(&self) -> Armed<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Armed {
            appended: self,
            seen: self.current(),
        }
    }
}

/// A subscription counted as waiting (see [`Appended::arm`]).
struct Armed<'a> {
    appended: &'a Appended,
    seen: u64,
}

impl Armed<'_> {
    /// Waits until a write lands after the guard was made, or `timeout` passes.
    fn wait(self, timeout: Duration) {
        let a = self.appended;
        let g = a.generation.lock().unwrap_or_else(|e| e.into_inner());
        let _ = a
            .changed
            .wait_timeout_while(g, timeout, |g| *g == self.seen)
            .unwrap_or_else(|e| e.into_inner());
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.appended.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A live tail of the log: an iterator of [`LogEvent`]s that blocks for the next one.
///
/// It holds a handle to the store (which stays open while it lives). `next` blocks until an
/// event comes; [`Subscription::next_timeout`] waits at most as long as it is told.
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    /// The segment (by ordinal) and offset the next unit is read from, and its first LSN.
    seg: usize,
    offset: u64,
    next_lsn: Lsn,
    /// Events before this LSN are skipped (a start inside a segment).
    from: Lsn,
    /// The compaction epoch of the segment table `seg` indexes, and the identity (id,
    /// salt) of the segment it names: after a compaction, the cursor is found again by it,
    /// or by LSN when compaction replaced that segment.
    epoch: Option<u64>,
    identity: Option<(SegmentId, u64)>,
    /// Only this session's events, when set.
    session: Option<String>,
    /// The session's messages that were in the store when a session subscription began.
    backlog: Option<RawMessages>,
    pending: VecDeque<LogEvent>,
}

impl Store {
    /// A live tail of the whole log from `since`: every message appended, and every cut and
    /// fork, in LSN order, by any process. See [`Subscription`].
    #[must_use]
    pub fn subscribe(&self, since: Since) -> Subscription {
        let state = self.view();
        let (seg, offset, next_lsn, from) = match since {
            Since::Now => (
                state.segments.len() - 1,
                state.end,
                state.next_lsn,
                state.next_lsn,
            ),
            Since::Lsn(lsn) => {
                let seg = state
                    .segments
                    .iter()
                    .rposition(|s| s.id.0 <= lsn.0)
                    .unwrap_or(0);
                let id = state.segments.get(seg).map_or(Lsn(1), |s| Lsn(s.id.0));
                (seg, SEGMENT_HEADER_LEN as u64, id, lsn)
            }
        };
        drop(state);
        Subscription::at(self, (seg, offset, next_lsn), from, None)
    }

    /// A live tail of one session: its messages from interaction id `from_id` on (those in
    /// the store now, then each one appended), and its cuts and forks after now.
    #[must_use]
    pub fn subscribe_session(&self, session: &str, from_id: u64) -> Subscription {
        let state = self.view();
        let backlog =
            RawMessages::from_state(&state, self.inner.crypt.as_ref(), session, |count| {
                from_id.max(1)..count.saturating_add(1)
            });
        let cursor = (state.segments.len() - 1, state.end, state.next_lsn);
        drop(state);
        Subscription::at(self, cursor, cursor.2, Some((session.to_owned(), backlog)))
    }
}

impl Subscription {
    /// A subscription reading from `cursor` (segment ordinal, offset, its first LSN), keeping
    /// events from LSN `from` on; with a session, only that session's, after its backlog.
    fn at(
        store: &Store,
        (seg, offset, next_lsn): (usize, u64, Lsn),
        from: Lsn,
        session: Option<(String, RawMessages)>,
    ) -> Subscription {
        let (session, backlog) = session.unzip();
        let (epoch, identity) = {
            let state = store.state();
            let identity = state.segments.get(seg).map(|s| (s.id, s.salt));
            (state.epoch, identity)
        };
        Subscription {
            store: store.clone(),
            seg,
            offset,
            next_lsn,
            from,
            epoch,
            identity,
            session,
            backlog,
            pending: VecDeque::new(),
        }
    }

    /// The next event, waiting at most `timeout` for one; `Ok(None)` when none came.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the log is damaged where it reads; [`Error::Io`].
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LogEvent>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(backlog) = &mut self.backlog {
                match backlog.next() {
                    Some(entry) => return self.backlog_event(entry).map(Some),
                    None => self.backlog = None,
                }
            }
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let store = self.store.clone();
            let armed = store.inner.appended.arm();
            self.fill()?;
            if !self.pending.is_empty() {
                continue;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(None);
            }
            armed.wait(left.min(CROSS_PROCESS_POLL));
        }
    }

    /// The LSN the next record read will carry (where a new subscription would resume).
    #[must_use]
    pub fn position(&self) -> Lsn {
        self.next_lsn
    }

    fn backlog_event(&self, entry: Result<Entry<Vec<u8>>>) -> Result<LogEvent> {
        Ok(LogEvent::Message {
            session: self.session.clone().unwrap_or_default(),
            entry: entry?,
        })
    }

    /// Reads the committed units after the cursor, up to the end of the log the store's
    /// index holds, into `pending` (at most about [`READ_AHEAD`] events).
    fn fill(&mut self) -> Result<()> {
        self.store.refresh();
        let store = self.store.clone();
        let state = store.state();
        if state.epoch != self.epoch {
            self.relocate(&state);
        }
        let last = state.segments.len() - 1;
        while self.pending.len() < READ_AHEAD {
            let Some(seg) = state.segments.get(self.seg) else {
                return Ok(());
            };
            self.identity = Some((seg.id, seg.salt));
            let limit = (self.seg == last).then_some(state.end);
            if limit.is_some_and(|l| self.offset >= l) {
                return Ok(());
            }
            let map = match &seg.data {
                SegmentData::Mapped(m) => m.clone(),
                SegmentData::File(view) => view
                    .live_map()
                    .map_err(|e| Error::io("map", &seg.path, e))?,
            };
            let reader = SegmentReader::new(&map, seg.salt, self.offset, Some(self.next_lsn));
            let mut units = Units::new(reader.allowing_gaps(seg.compacted));
            while self.pending.len() < READ_AHEAD {
                let Some(unit) = units.next_unit() else { break };
                let end = unit.last().map_or(self.offset, Record::end);
                if limit.is_some_and(|l| end > l) {
                    break;
                }
                for r in unit {
                    let keep = r.meta.lsn >= self.from
                        && self.session.as_deref().is_none_or(|s| s == r.session);
                    let event = LogEvent::of_record(r).filter(|_| keep);
                    if let Some(e) = opened(store.inner.crypt.as_deref(), seg, r, event)? {
                        self.pending.push_back(e);
                    }
                    self.next_lsn = r.meta.next_lsn();
                }
                self.offset = end;
            }
            let Some(stop) = units.stop().cloned() else {
                return Ok(()); // read ahead enough for now
            };
            // Stopped because the map is older than the file: map it again, read on.
            if let SegmentData::File(view) = &seg.data
                && view.outgrown(&map, &stop)
            {
                view.map_now().map_err(|e| Error::io("map", &seg.path, e))?;
                continue;
            }
            if limit.is_some() {
                return Ok(());
            }
            if let Some(damage) = stop.damage() {
                return Err(Error::Corrupt {
                    segment: seg.id,
                    offset: stop.at,
                    damage,
                });
            }
            // A sealed segment read to its end: on to the next one.
            self.seg += 1;
            self.offset = SEGMENT_HEADER_LEN as u64;
        }
        Ok(())
    }
}

impl Subscription {
    /// A compaction replaced segments: finds the cursor's segment in the new table (the
    /// same file, by id and salt), or, if compaction rewrote it, the compacted segment that
    /// holds its LSN, read from its start with the events before the cursor skipped.
    fn relocate(&mut self, state: &State) {
        self.epoch = state.epoch;
        let same = state
            .segments
            .iter()
            .position(|s| Some((s.id, s.salt)) == self.identity);
        if let Some(i) = same {
            self.seg = i;
            return;
        }
        let i = state
            .segments
            .iter()
            .rposition(|s| s.id.0 <= self.next_lsn.0)
            .unwrap_or(0);
        self.seg = i;
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.from = self.from.max(self.next_lsn);
        self.next_lsn = state.segments.get(i).map_or(Lsn(1), |s| Lsn(s.id.0));
    }
}

impl Iterator for Subscription {
    type Item = Result<LogEvent>;

    /// Blocks until the next event.
    fn next(&mut self) -> Option<Result<LogEvent>> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// `event` (of record `r` of `seg`) with its message opened in an encrypted store; `None`
/// for a message whose key was destroyed: erased (its session was deleted, and the delete
/// follows in the log), as a compaction would have dropped it.
fn opened(
    crypt: Option<&crate::crypt::Crypt>,
    seg: &crate::segment::Segment,
    r: &Record<'_>,
    event: Option<LogEvent>,
) -> Result<Option<LogEvent>> {
    let Some(mut e) = event else {
        return Ok(None);
    };
    if let LogEvent::Message { entry, .. } = &mut e {
        let payload = std::mem::take(&mut entry.message);
        match super::read::unsealed(crypt, seg, r.offset as u32, &r.meta, payload) {
            Ok(m) => entry.message = m,
            Err(Error::KeyDestroyed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(e))
}
