//! Opening a store: take the write lock, recover, and assemble the segments and the writer.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::lock::Locks;
use super::{Inner, Options, State, Store, Writer, registry};
use crate::crypt::Crypt;
use crate::durability::{Durability, Flusher, Syncer};
use crate::error::{Error, Result};
use crate::id::{Lsn, Timestamp};
use crate::io::Dir;
use crate::recovery::{self, Recovered};
use crate::segment::{ActiveView, Segment, SegmentData, SegmentWriter};

impl Store {
    pub(crate) fn open_with(opts: Options, dir: &Path) -> Result<Store> {
        let registration = match registry::claim(&opts, dir)? {
            registry::Claim::Shared(store) => return Ok(store),
            registry::Claim::Open(registration) => registration,
        };
        let vfs = opts.vfs.clone();
        // Before anything is created or locked: a key missing or wrong changes nothing.
        let keys = open_keys(&opts, dir)?;
        let locks = take_locks(&opts, dir)?;
        // A crashed process's records may be only in the page cache, and so may the entries
        // of their keys: `KEYS` is synced before recovery syncs a segment (a cut, the active
        // segment), so that no record becomes durable before its key.
        let synced = match (&keys, opts.read_only) {
            (Some(k), false) => k.sync(),
            _ => Ok(()),
        };
        let judge = keys.as_ref().map(|k| k as &dyn recovery::Keys);
        let opened = synced
            .and_then(|()| recovery::recover(&*vfs, dir, opts.recovery, opts.read_only, judge))
            .and_then(|rec| assemble(&opts, dir, rec))
            .and_then(|parts| {
                let crypt = finish_keys(&opts, dir, keys, &parts.0, parts.3)?;
                Ok((parts, crypt))
            });
        let ((state, writer, rec_report, next_lsn), crypt) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                // A failed open changes nothing: not even the lock files it made (removed while
                // the write lock is still held, so no other opener can hold it meanwhile).
                if let Some(l) = locks {
                    l.remove_created(&*vfs, dir);
                }
                return Err(e);
            }
        };
        let head = super::head::Head::open(&*vfs, dir, !opts.read_only);
        let mut state = state;
        if let Some(l) = &locks {
            // Still under the write lock: the head names the last segment.
            if let Some(last) = state.segments.last() {
                head.set(dir, last.id)?;
            }
            head.cap_durable(dir, Lsn(next_lsn.0.saturating_sub(1)))?;
            head.ensure_epoch(dir)?;
            l.opened();
        }
        // (A read-only open that a compaction raced reads the old segments: still the same
        // messages, through the files it holds open, until the next compaction.)
        state.epoch = head.epoch();
        let durable = Lsn(next_lsn.0.saturating_sub(1));
        let decrypt_ahead = opts.decrypt_ahead;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                pid: crate::io::process_id(),
                plaintext_checked: std::sync::atomic::AtomicBool::new(false),
                state: RwLock::new(state),
                writer: Mutex::new(writer),
                syncer: Syncer::new(durable),
                appending: std::sync::atomic::AtomicUsize::new(0),
                report: rec_report,
                flusher: Arc::new(Flusher::default()),
                hints: Default::default(),
                appended: Default::default(),
                auto: Default::default(),
                head,
                follows: locks.as_ref().is_none_or(|l| !l.is_exclusive()),
                locks,
                crypt,
                registration,
                opts,
            }),
            users: Some(Arc::new(super::Users)),
            decrypt_ahead,
        };
        registry::Registration::publish(&store);
        store.start_threads();
        Ok(store)
    }

    /// Starts the threads a writable store's options ask for from the start: automatic
    /// compaction, and `Interval`'s flusher (`Buffered` starts it at its first kick).
    fn start_threads(&self) {
        let opts = &self.inner.opts;
        if opts.read_only {
            return;
        }
        if let Some(policy) = opts.auto_compact {
            self.spawn_auto_compact(policy);
        }
        if let Durability::Interval(every) = opts.durability {
            self.spawn_flusher(Some(every));
        }
    }
}

/// The write lock (and the lock files) for a writable open; `None` for a read-only one,
/// which takes no lock.
///
/// # Errors
/// [`Error::NotAStore`] for a read-only open of a missing directory; what
/// [`Locks::take`] returns.
fn take_locks(opts: &Options, dir: &Path) -> Result<Option<Locks>> {
    let vfs = &*opts.vfs;
    if opts.read_only {
        if !vfs.is_dir(dir) {
            return Err(Error::NotAStore {
                path: dir.to_owned(),
                reason: "no such directory",
            });
        }
        return Ok(None);
    }
    // Salvage rewrites segments other writers could have open: it runs alone.
    let exclusive = opts.exclusive || opts.recovery == recovery::RecoveryMode::Salvage;
    // A writer that syncs every write gains nothing from keeping the write lock between
    // writes: its syncs dominate. Nor does one on a deterministic file system (see
    // `Vfs::deterministic` and `lock`).
    let lease = !matches!(opts.durability, Durability::Always) && !vfs.deterministic();
    Locks::take(vfs, dir, exclusive, lease).map(Some)
}

type Assembled = (State, Option<Writer>, recovery::RecoveryReport, Lsn);

/// An encrypted store's keys, read before anything else: `Error::KeyRequired` when the
/// store has a key file and no key was given, `Error::WrongKey` when the key does not open
/// it. `None` when it has no key file.
fn open_keys(opts: &Options, dir: &Path) -> Result<Option<Crypt>> {
    let path = dir.join(crate::crypt::KEYS_FILE);
    if !opts.vfs.exists(&path) {
        return Ok(None);
    }
    let Some(master) = &opts.encryption else {
        return Err(Error::KeyRequired {
            path: dir.to_owned(),
        });
    };
    Crypt::load(opts.vfs.clone(), dir, master).map(Some)
}

/// The store's keys once recovery has read it: a writable open drops the references of
/// deleted sessions (a crash between a delete and its keys' destruction); a
/// key given for a store without a key file creates one if the store holds no record yet,
/// and is `Error::NotEncrypted` otherwise.
fn finish_keys(
    opts: &Options,
    dir: &Path,
    keys: Option<Crypt>,
    state: &State,
    next_lsn: Lsn,
) -> Result<Option<Arc<Crypt>>> {
    match (&opts.encryption, keys) {
        (_, Some(crypt)) => {
            if crypt.has_unread_tail()? {
                crypt.check_tail_against(&sealed_under(state))?;
            }
            if !opts.read_only {
                // What an open recovered is durable: it synced `KEYS`, then the active segment
                // (recovery cut any record whose key a power cut took).
                crypt.upgrade(next_lsn)?;
                crypt.sweep(|s| state.index.is_deleted(s), || Ok(next_lsn))?;
            }
            Ok(Some(Arc::new(crypt)))
        }
        (Some(_), None) if next_lsn.0 > 1 => Err(Error::NotEncrypted {
            path: dir.to_owned(),
        }),
        (Some(master), None) if !opts.read_only => Ok(Some(Arc::new(Crypt::create(
            opts.vfs.clone(),
            dir,
            master,
            next_lsn,
        )?))),
        _ => Ok(None),
    }
}

/// The keys that the first and the last record of every live session, and every session's
/// latest metadata, are sealed under (a session's records reach its keys in that order: its
/// source's, through a fork, then its own, newest last). Read only when `KEYS` ends in bytes
/// that do not verify.
fn sealed_under(state: &State) -> Vec<u64> {
    let mut ids: Vec<u64> = state
        .index
        .metas()
        .filter_map(|(_, p)| {
            let s = state.segments.get(p.seg as usize)?;
            let r = s.read_kind(p.off, crate::format::Kind::Meta).ok()?;
            crate::crypt::envelope_key(&r.payload)
        })
        .collect();
    for (_, s) in state.index.iter() {
        let n = s.count();
        let snapshot = s.snapshot(1..n + 1);
        for i in [0, n.saturating_sub(1)] {
            let record = snapshot
                .get(i)
                .and_then(|p| state.segments.get(p.seg as usize)?.read_at(p.off).ok());
            if let Some(id) = record.and_then(|r| crate::crypt::envelope_key(&r.payload)) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The store's segments and (when writable) its writer, from what recovery rebuilt.
fn assemble(opts: &Options, dir: &Path, rec: Recovered) -> Result<Assembled> {
    if opts.read_only && rec.segments.is_empty() {
        // A writable open always leaves at least one segment: this is no store.
        return Err(Error::NotAStore {
            path: dir.to_owned(),
            reason: "no segment files in it",
        });
    }
    let last_end = rec.segments.last().map_or(0, |s| s.valid_end);
    let resumed = match rec.segments.last() {
        Some(last) if !opts.read_only => resume(opts, last)?,
        _ => None,
    };
    let mut segments = table(rec.segments);
    let writer = if opts.read_only {
        None
    } else {
        let (active, unverified) = match resumed {
            Some(resumed) => resumed,
            None => (
                start_segment(opts, dir, rec.next_lsn, &mut segments)?,
                false,
            ),
        };
        let ordinal = (segments.len() - 1) as u32;
        Some(Writer::new(
            active,
            ordinal,
            rec.next_lsn,
            rec.last_ts,
            unverified,
        ))
    };
    // What recovery read may still be only in the page cache (a process crash does not
    // lose it, but a power cut could): sync the active segment before calling it durable.
    // Sealed segments were synced before their successors were created, and a segment
    // loaded from its hint was synced by the clean close that wrote the hint.
    // The directory too: a crash may have come between creating a segment (or removing
    // one) and the directory fsync, and new records must not go into a file whose
    // directory entry a power cut could still take away. (Not after a clean close: it
    // synced the directory last, when it renamed the active segment's hint into place.)
    if let Some(w) = writer.as_ref().filter(|w| !w.unverified) {
        w.active.sync()?;
        Dir::new(&*opts.vfs, dir).sync()?;
    }
    let end = writer.as_ref().map_or(last_end, |w: &Writer| w.active.len);
    let state = State {
        segments: Arc::new(segments),
        epoch: None,
        index: rec.index,
        end,
        next_lsn: rec.next_lsn,
        last_ts: rec.last_ts,
    };
    Ok((state, writer, rec.report, rec.next_lsn))
}

/// The writer of the last segment recovery read, to append to it again, with whether it
/// was loaded from its hint (unverified); `None` when it is a compacted segment, which is
/// never appended to (its LSNs may skip): its successor's creation never became durable,
/// and a new segment starts.
fn resume(
    opts: &Options,
    last: &crate::recovery::RecoveredSegment,
) -> Result<Option<(SegmentWriter, bool)>> {
    if last.compacted {
        return Ok(None);
    }
    // Recovery already made any cut of a torn tail physical and durable.
    let allocated = last
        .file
        .len()
        .map_err(|e| Error::io("stat", &last.path, e))?;
    let writer = SegmentWriter {
        id: last.id,
        salt: last.salt,
        path: last.path.clone(),
        file: last.file.clone(),
        len: last.valid_end,
        allocated: allocated.max(last.valid_end),
        segment_size: opts.segment_size,
        named: Default::default(),
    };
    Ok(Some((writer, last.from_hint)))
}

/// Creates the segment a writable open appends to when no recovered one can take appends
/// (a new store, or a last segment that is compacted), and adds it to `segments`.
fn start_segment(
    opts: &Options,
    dir: &Path,
    next_lsn: Lsn,
    segments: &mut Vec<Arc<Segment>>,
) -> Result<SegmentWriter> {
    let w =
        SegmentWriter::create(&*opts.vfs, dir, next_lsn, opts.segment_size).map_err(|(e, _)| e)?;
    segments.push(Arc::new(Segment::active(&w)));
    Ok(w)
}

impl Writer {
    /// The writer of a store just opened: appending to `active`, the `ordinal`-th segment
    /// of the table, at `next_lsn`; `unverified` when `active` was loaded from its hint.
    fn new(
        active: SegmentWriter,
        ordinal: u32,
        next_lsn: Lsn,
        last_ts: Timestamp,
        unverified: bool,
    ) -> Writer {
        Writer {
            ordinal,
            active,
            next_lsn,
            last_ts,
            last_sync: Instant::now(),
            unsynced: 0,
            unverified,
            written: false,
            naming: None,
            framed_records: 0,
            buf: Vec::new(),
            sealed: Vec::new(),
            offsets: Vec::new(),
            wait: super::lock::Wait::Block,
            caught_up: false,
        }
    }
}

/// The segment table of what recovery read: sealed segments mapped, the last one read
/// through its file (it may be growing).
pub(super) fn table(recovered: Vec<crate::recovery::RecoveredSegment>) -> Vec<Arc<Segment>> {
    let last = recovered.len().checked_sub(1);
    recovered
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let data = match s.map {
                Some(map) if Some(i) != last => SegmentData::Mapped(map),
                _ => SegmentData::File(ActiveView::new(s.file)),
            };
            Arc::new(Segment {
                id: s.id,
                salt: s.salt,
                path: s.path,
                data,
                compacted: s.compacted,
            })
        })
        .collect()
}
