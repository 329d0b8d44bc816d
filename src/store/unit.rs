//! One committed unit of the write path: the write turn (this process's writer, the write
//! lock, the log caught up), the unit framed and written at the end of the active segment,
//! folded into the index, and waited for as the durability mode says; the active segment's
//! rotation and the syncs behind it.

use std::sync::Arc;

use super::lock::Wait;
use super::write::{Event, MAX_BATCH_BYTES};
use super::{Receipt, Store, Writer};
use crate::crypt::{Crypt, DataKey, SEAL_OVERHEAD, sealed_kind};
use crate::durability::{Appending, Durability, WRITEBACK_BYTES, gather_group};
use crate::error::{Error, Result};
use crate::format::{
    Kind, NAME_EVERY, RECORD_HEADER_LEN, RecordKey, RecordMeta, SEGMENT_HEADER_LEN, encode_record,
};
use crate::id::{Lsn, Timestamp};
use crate::index::Pos;
use crate::segment::{Naming, Segment, SegmentData, SegmentWriter};

impl Store {
    /// Runs `f` on the writer with this thread's turn to write: the writer's lock, the
    /// poison check, the write lock, and (beside other writers) the log caught up first.
    ///
    /// # Errors
    /// [`Error::Forked`], [`Error::ReadOnly`], [`Error::Poisoned`], [`Error::Io`]; `f`'s.
    pub(super) fn with_write_turn<R>(&self, f: impl FnOnce(&mut Writer) -> Result<R>) -> Result<R> {
        self.take_write_turn(Wait::Block, f)
    }

    /// [`Store::with_write_turn`], which with [`Wait::No`] takes the turn only if no other
    /// writer has it, and tells `f` (through `w.wait`) not to wait either.
    ///
    /// # Errors
    /// As [`Store::with_write_turn`]; [`Error::Busy`] when the turn is not free.
    fn take_write_turn<R>(
        &self,
        wait: Wait,
        f: impl FnOnce(&mut Writer) -> Result<R>,
    ) -> Result<R> {
        self.check_process()?;
        let mut guard = match wait {
            Wait::Block => self.writer(),
            Wait::No => match self.inner.writer.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(self.busy("another thread's write"));
                }
            },
        };
        let Some(w) = guard.as_mut() else {
            return Err(Error::ReadOnly {
                path: self.inner.dir.clone(),
            });
        };
        if self.inner.syncer.is_poisoned() {
            return Err(self.poisoned());
        }
        let locks = self.inner.locks.as_ref().ok_or_else(|| Error::ReadOnly {
            path: self.inner.dir.clone(),
        })?;
        let Some(write_lock) = locks.write(&self.inner.dir, wait)? else {
            return Err(self.busy("another process's write"));
        };
        w.wait = wait;
        // Held without a break since a write that caught up: nobody else wrote since.
        let caught_up = if self.inner.follows && !(write_lock.kept() && w.caught_up) {
            w.caught_up = false;
            self.catch_up(w).map(|()| w.caught_up = true)
        } else {
            Ok(())
        };
        let r = caught_up.and_then(|()| {
            // Once the state knows what other processes' compactions removed (see `hints`).
            if self.inner.hints.has_built() {
                self.install_built_in(w);
            }
            // On the state as it is now, caught up: nothing for the check to refresh.
            self.refuse_if_keys_lost()?;
            f(w)
        });
        w.wait = Wait::Block;
        r
    }

    /// [`Error::Busy`]: a write that may not wait would wait for `reason`.
    pub(super) fn busy(&self, reason: &'static str) -> Error {
        Error::Busy {
            path: self.inner.dir.clone(),
            reason,
        }
    }

    /// Logs the events `plan` makes from the session's current count, as one committed
    /// unit, then applies them to the index and waits as the durability mode says.
    ///
    /// With an idempotency `key`: if the session already holds the appends it names, their
    /// receipts come back and nothing is written; else the unit's first append carries the key.
    pub(super) fn write_events<'p>(
        &self,
        session: &str,
        key: Option<&'p [u8]>,
        plan: impl FnOnce(u64) -> Result<Vec<Event<'p>>>,
    ) -> Result<Vec<Receipt>> {
        self.write_events_with(session, key, |_, count| plan(count))
    }

    /// [`Store::write_events`] with a `plan` that may use the writer (under the turn).
    pub(super) fn write_events_with<'p>(
        &self,
        session: &str,
        key: Option<&'p [u8]>,
        plan: impl FnOnce(&mut Writer, u64) -> Result<Vec<Event<'p>>>,
    ) -> Result<Vec<Receipt>> {
        self.write_unit(session, key, Wait::Block, plan)
    }

    /// [`Store::write_events_with`], waiting for nothing with [`Wait::No`] (see
    /// [`Store::try_append_batch_raw`]).
    pub(super) fn write_unit<'p>(
        &self,
        session: &str,
        key: Option<&'p [u8]>,
        wait: Wait,
        plan: impl FnOnce(&mut Writer, u64) -> Result<Vec<Event<'p>>>,
    ) -> Result<Vec<Receipt>> {
        let appending = Appending::enter(&self.inner.appending);
        // `None` beside the receipts: nothing was written.
        let (receipts, written) = self.take_write_turn(wait, |w| {
            let (count, logged, key_hash) = {
                let state = self.state();
                let s = state.index.get(session);
                // Hashed once: for the lookup and for the fold (under this write turn, so the
                // index, whose random key the hash is under, is not replaced meanwhile).
                let key_hash = key.map(|k| state.index.key_hash(k));
                let logged = match (key.zip(key_hash), s) {
                    (Some((k, h)), Some(s)) => match s.key(k, h) {
                        Some(first_id) => {
                            super::ops::logged_receipts(&state, session, k, first_id)?
                        }
                        None => None,
                    },
                    _ => None,
                };
                (s.map_or(0, |s| s.count()), logged, key_hash)
            };
            if let Some(receipts) = logged {
                return Ok((receipts, None));
            }
            let events = plan(w, count)?;
            if events.is_empty() {
                return Ok((Vec::new(), None));
            }
            let sealer = self.sealer(w, session, &events)?;
            // The key rides on the unit's first append, naming every append of the unit.
            let key = key.map(|key| RecordKey {
                key,
                count: u32::try_from(events.len()).unwrap_or(u32::MAX),
            });
            debug_assert!(key.is_none() || events.iter().all(|e| e.kind == Kind::Append));
            self.make_room(w, session, &events, key, sealer.is_some())?;
            let sync_due = match self.inner.opts.durability {
                Durability::Always => true,
                Durability::Interval(every) => w.last_sync.elapsed() >= every,
                Durability::Buffered => false,
            };
            if sync_due && w.wait == Wait::No {
                return Err(self.busy("a sync (its interval is due)"));
            }
            let sealer = sealer.as_ref().zip(self.inner.crypt.as_deref());
            let now = self.inner.opts.vfs.now();
            let (receipts, offsets) = frame(w, session, now, &events, key, sealer)?;
            self.write(w)?;
            self.apply(w, session, &events, &offsets, &receipts, key.zip(key_hash));
            w.offsets = offsets;
            Ok((receipts, Some((Lsn(w.next_lsn.0 - 1), sync_due))))
        })?;
        let Some((last, sync_due)) = written else {
            return Ok(receipts);
        };
        self.inner.appended.notify();
        drop(appending);
        if sync_due {
            self.wait_durable(last)?;
        }
        Ok(receipts)
    }

    /// In an encrypted store, the data key the unit's sealed payloads go under (created
    /// when the session has none); `None` when nothing in it is sealed. Under the write
    /// lock, after the catch-up.
    fn sealer(
        &self,
        w: &mut Writer,
        session: &str,
        events: &[Event<'_>],
    ) -> Result<Option<DataKey>> {
        let Some(crypt) = &self.inner.crypt else {
            return Ok(None);
        };
        if !events.iter().any(|e| sealed_kind(e.kind)) {
            return Ok(None);
        }
        let deleted = {
            let state = self.state();
            crypt.note_resets(state.index.resets());
            state.index.is_deleted(session)
        };
        // A new key's entry goes to `KEYS` unsynced; a deleted session's keys are destroyed
        // first, once the log is durable (a sync).
        if w.wait == Wait::No && deleted && !crypt.has_current(session) {
            return Err(self.busy("destroying a deleted session's data keys (a sync)"));
        }
        crypt
            .key_for(session, deleted, || self.durable_now(w))
            .map(Some)
    }

    /// Makes every record written so far durable, under the write turn (the active
    /// segment synced: earlier ones were synced when sealed), and returns the LSN after
    /// the last of them. A failure poisons the store.
    pub(super) fn durable_now(&self, w: &mut Writer) -> Result<Lsn> {
        if let Err(e) =
            super::sync_segment(self.inner.crypt.as_deref(), &*w.active.file, &w.active.path)
        {
            self.inner.syncer.poison();
            return Err(e);
        }
        self.inner.syncer.mark_durable(Lsn(w.next_lsn.0 - 1));
        Ok(w.next_lsn)
    }

    /// Before a unit goes in the active segment: checks its size, verifies a segment that
    /// was loaded from its hint (new records never go after damage nobody has seen), and
    /// seals the segment if the unit does not fit.
    fn make_room(
        &self,
        w: &mut Writer,
        session: &str,
        events: &[Event<'_>],
        key: Option<RecordKey<'_>>,
        sealed: bool,
    ) -> Result<()> {
        // An upper bound: the name goes in the first record and then once every
        // `NAME_EVERY + 1` records at most (see `Naming::next`).
        let names = events.len() as u64 / (u64::from(NAME_EVERY) + 1) + 1;
        let key_block = key.map_or(0, |k| k.block_len() as u64);
        let framed: u64 = events
            .iter()
            .map(|e| {
                let seal = if sealed && sealed_kind(e.kind) {
                    SEAL_OVERHEAD
                } else {
                    0
                };
                (RECORD_HEADER_LEN + e.payload.len() + seal) as u64
            })
            .sum::<u64>()
            + names * session.len() as u64
            + key_block;
        if framed > MAX_BATCH_BYTES {
            return Err(Error::RecordTooLarge {
                session: session.to_owned(),
                len: framed,
                max: MAX_BATCH_BYTES,
            });
        }
        let full = w.active.len > SEGMENT_HEADER_LEN as u64
            && w.active.len + framed > self.inner.opts.segment_size;
        if w.wait == Wait::No && (full || w.unverified) {
            return Err(self.busy(if full {
                "sealing a full segment (a sync)"
            } else {
                "verifying the active segment"
            }));
        }
        if w.unverified {
            let a = &w.active;
            let map = a.file.map().map_err(|e| Error::io("map", &a.path, e))?;
            crate::recovery::verify_segment(&map, a.id, a.salt, a.len, w.next_lsn)?;
            let dir = crate::io::Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
            if let Err(e) = crate::recovery::cut_tail(dir, &*a.file, &a.path, &map, a.id, a.len) {
                // The cut may have reached the page cache but not the disk: never append
                // after it. A reopen re-derives the truth.
                self.inner.syncer.poison();
                return Err(e);
            }
            w.unverified = false;
        }
        if full {
            self.rotate(w)?;
        }
        Ok(())
    }

    /// Writes the framed unit in `w.buf` at the end of the active segment. On failure the
    /// store stays as it was (or is poisoned when the write could not be undone).
    fn write(&self, w: &mut Writer) -> Result<()> {
        let written = w.active.append(&w.buf);
        if let Err((e, undone)) = written {
            if !undone {
                self.inner.syncer.poison();
            }
            if let Some(SegmentData::File(view)) = self
                .state()
                .segments
                .get(w.ordinal as usize)
                .map(|s| &s.data)
            {
                view.invalidate();
            }
            return Err(e);
        }
        w.written = true;
        w.next_lsn = Lsn(w.next_lsn.0 + w.framed_records);
        w.unsynced += w.buf.len() as u64;
        if w.unsynced >= WRITEBACK_BYTES {
            w.unsynced = 0;
            if self.inner.opts.durability != Durability::Always && self.inner.flusher.kick() {
                self.spawn_flusher(None);
            }
        }
        Ok(())
    }

    /// Under the write lock, before anything is read or planned: folds what other processes
    /// wrote into the index (judging the end of the log: see `State::catch_up`), and brings
    /// the writer to the log's end.
    fn catch_up(&self, w: &mut Writer) -> Result<()> {
        let dir = crate::io::Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
        let mut st = self.state_mut();
        if st.moved(dir, &self.inner.head) {
            if w.wait == Wait::No && self.inner.head.epoch() != st.epoch {
                return Err(self.busy("reading the segments another process compacted"));
            }
            st.reload_if_compacted(dir, &self.inner.head)?;
            st.catch_up(dir, true, self.inner.keys())?;
            // A head beyond the last segment (its creator died first) is set back.
            if let Some(last) = st.segments.last() {
                self.inner.head.set(&self.inner.dir, last.id)?;
            }
        }
        w.follow(&st, dir)
    }

    /// Folds the unit just written into the index: the same fold recovery uses. (Unless a
    /// read in this process folded it already: it may see the bytes before this does.)
    fn apply(
        &self,
        w: &mut Writer,
        session: &str,
        events: &[Event<'_>],
        offsets: &[u32],
        receipts: &[Receipt],
        key: Option<(RecordKey<'_>, u64)>,
    ) {
        if let Some(naming) = w.naming {
            w.active.set_naming(session, naming);
        }
        let mut st = self.state_mut();
        if let Some(r) = receipts.last() {
            w.last_ts = r.timestamp;
        }
        let start = offsets.first().map_or(w.active.len, |&o| u64::from(o));
        if st.end != start {
            return;
        }
        for (i, ((e, &off), r)) in events.iter().zip(offsets).zip(receipts).enumerate() {
            let meta = RecordMeta {
                kind: e.kind,
                first: false,
                commit: true,
                lsn: r.lsn,
                arg: e.arg,
                timestamp: r.timestamp,
            };
            let pos = Pos {
                seg: w.ordinal,
                off,
            };
            let (key, hash) = key.filter(|_| i == 0).unzip();
            st.fold(session, &meta, pos, key, &e.payload, hash);
        }
        st.end = w.active.len;
        st.next_lsn = w.next_lsn;
    }

    /// Seals the active segment (synced, then mapped) and starts a new one.
    pub(super) fn rotate(&self, w: &mut Writer) -> Result<()> {
        if let Err(e) =
            super::sync_segment(self.inner.crypt.as_deref(), &*w.active.file, &w.active.path)
        {
            self.inner.syncer.poison();
            return Err(e);
        }
        self.inner.syncer.mark_durable(Lsn(w.next_lsn.0 - 1));
        w.unsynced = 0;
        let vfs = &*self.inner.opts.vfs;
        // The head first: every segment that exists is at most the head (see `head`).
        self.inner
            .head
            .set(&self.inner.dir, crate::id::SegmentId(w.next_lsn.0))?;
        let new = SegmentWriter::create(vfs, &self.inner.dir, w.next_lsn, w.active.segment_size)
            .map_err(|(e, clean)| {
                if !clean {
                    self.inner.syncer.poison();
                }
                e
            })?;
        let sealed = w.active.file.map().ok();
        let mut st = self.state_mut();
        let segments = Arc::make_mut(&mut st.segments);
        // A read in this process may have found the new segment first (its catch-up follows
        // the head): then it is in the table already, and the sealed one mapped.
        let found = segments.last().is_some_and(|s| s.id == new.id);
        if let (Some(map), Some(slot), false) =
            (&sealed, segments.get_mut(w.ordinal as usize), found)
        {
            *slot = Arc::new(Segment {
                data: SegmentData::Mapped(map.clone()),
                ..(**slot).clone()
            });
        }
        if !found {
            segments.push(Arc::new(Segment::active(&new)));
        }
        st.end = new.len;
        w.ordinal = (st.segments.len() - 1) as u32;
        drop(st);
        // Files changed: the close has hints to write, whether or not a record follows.
        w.written = true;
        let old = std::mem::replace(&mut w.active, new);
        if let Some(map) = sealed {
            self.write_sealed_hint(super::hints::Job {
                id: old.id,
                salt: old.salt,
                map,
            });
        }
        Ok(())
    }

    pub(super) fn wait_durable(&self, lsn: Lsn) -> Result<Lsn> {
        self.check_process()?;
        self.inner
            .syncer
            .wait_durable(lsn, || self.sync_now(lsn), || self.poisoned())
    }

    /// The group-commit leader's sync: syncs the last segment and returns the LSN that covered.
    ///
    /// Beside other writers, syncs take turns (`SYNC`) and cover the whole log as this
    /// process sees it just before (brought up to date first): one sync then makes several
    /// processes' records durable, and a process whose records the previous turn covered
    /// (the durable LSN in `LOCK`, see `head`) skips its own. Records in segments before the
    /// last were synced when those were sealed.
    fn sync_now(&self, lsn: Lsn) -> Result<Lsn> {
        gather_group(&self.inner.appending);
        let dir = &self.inner.dir;
        let turn = match &self.inner.locks {
            Some(locks) if self.inner.follows => {
                let turn = locks.sync_turn(dir)?;
                if let Some(durable) = self.inner.head.durable().filter(|d| *d >= lsn) {
                    return Ok(durable);
                }
                self.refresh();
                Some(turn)
            }
            _ => None,
        };
        let (file, path, covered) = {
            let st = self.state();
            let Some(last) = st.segments.last() else {
                return Ok(lsn);
            };
            let SegmentData::File(view) = &last.data else {
                return Ok(lsn);
            };
            (view.file.clone(), last.path.clone(), Lsn(st.next_lsn.0 - 1))
        };
        super::sync_segment(self.inner.crypt.as_deref(), &*file, &path)?;
        if turn.is_some() {
            // Best effort: it only spares other processes a sync.
            let _ = self.inner.head.set_durable(dir, covered);
        }
        drop(turn);
        if matches!(self.inner.opts.durability, Durability::Interval(_))
            && let Some(w) = self.writer().as_mut()
        {
            w.last_sync = std::time::Instant::now();
        }
        Ok(covered)
    }

    fn poisoned(&self) -> Error {
        Error::Poisoned {
            path: self.inner.dir.clone(),
        }
    }
}

/// Frames `events` as one unit of records of `session` into `w.buf`, at the end of the
/// active segment: the first record carries `FIRST`, the last `COMMIT`; each record refers
/// to the record naming the session in this segment, or names it. `key` goes in the first
/// record (an append). With a `sealer`, the payloads of sealed kinds go in sealed under its
/// key. The records are stamped `now` (or the last stamp, if the clock went back). Returns
/// the receipts and the records' offsets (in `w.offsets`'s buffer, for the caller to put
/// back); `w.naming` and `w.framed_records` say what the unit leaves behind.
fn frame(
    w: &mut Writer,
    session: &str,
    now: Timestamp,
    events: &[Event<'_>],
    key: Option<RecordKey<'_>>,
    sealer: Option<(&DataKey, &Crypt)>,
) -> Result<(Vec<Receipt>, Vec<u32>)> {
    let ts = now.max(w.last_ts);
    let start = w.active.len;
    w.buf.clear();
    let mut sealed = std::mem::take(&mut w.sealed);
    let mut receipts = Vec::with_capacity(events.len());
    let mut offsets = std::mem::take(&mut w.offsets);
    offsets.clear();
    let mut naming = w.active.named.get(session).copied();
    for (i, e) in events.iter().enumerate() {
        let lsn = Lsn(w.next_lsn.0 + i as u64);
        let at = (start + w.buf.len() as u64) as u32;
        offsets.push(at);
        let meta = RecordMeta {
            kind: e.kind,
            first: i == 0,
            commit: i + 1 == events.len(),
            lsn,
            arg: e.arg,
            timestamp: ts,
        };
        let field = Naming::next(&mut naming, session.as_bytes(), at);
        let payload: &[u8] = match sealer {
            Some((key, crypt)) if sealed_kind(e.kind) => {
                sealed.clear();
                key.seal(&mut sealed, &meta, crypt.nonce()?, &e.payload);
                &sealed
            }
            _ => &e.payload,
        };
        let key = key.filter(|_| i == 0);
        encode_record(&mut w.buf, w.active.salt, &meta, field, key, payload);
        receipts.push(Receipt {
            lsn,
            interaction_id: e.arg,
            timestamp: ts,
        });
    }
    w.sealed = sealed;
    w.naming = naming;
    w.framed_records = events.len() as u64;
    Ok((receipts, offsets))
}
