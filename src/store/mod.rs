//! The store: open and recover, then append, read, change and sync sessions.

mod auto;
mod compact;
mod encrypt;
mod follow;
mod head;
mod hints;
mod json_scan;
mod lock;
mod meta;
mod open;
mod ops;
mod options;
mod read;
mod read_ahead;
mod registry;
mod retention;
mod subscribe;
mod unit;
mod validate;
mod window;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub use auto::AutoCompact;
pub use compact::{COMPACT_FILE, CompactProgress, CompactReport, MAX_COMPACTION_INPUT};
pub use meta::MAX_META_LEN;
pub use options::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Options};
pub use read::{Messages, RawMessages, SessionVersion};
pub use retention::Retention;
pub use subscribe::{CROSS_PROCESS_POLL, LogEvent, Since, Subscription};
pub use validate::MAX_JSON_DEPTH;
pub use window::WindowSpec;

use crate::durability::{Flusher, Syncer};
use crate::error::{Error, Result};
use crate::format::MAX_SESSION_LEN;
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::index::Index;
use crate::recovery::RecoveryReport;
use crate::segment::{Segment, SegmentWriter};

pub use crate::io::{LOCK_FILE, SYNC_FILE, WRITERS_FILE};

/// An open convlog store: one directory of segment files.
///
/// `Store` is a cheap handle (`Clone` shares the same open store) and is `Send + Sync`:
/// readers on any thread work while another thread appends. Writes are serialized inside.
///
/// Any number of processes may open one store for writing (the default): each write takes
/// the store's write lock (`flock` on `LOCK`) for a moment, first folding into this
/// process's index what other processes wrote, and every read first checks, cheaply,
/// whether the log moved. [`Options::exclusive`] instead holds the write lock for the
/// store's lifetime (no other writer can open it; nothing to check). See `docs/durability.md`
/// for the protocol. Lock files are opened close-on-exec, but a child that another thread
/// forks holds a copy until it execs: a drop-and-reopen of an exclusive store racing a
/// process spawn in the same program can briefly see [`Error::Locked`]. A second writable
/// open in the same process returns a handle to the store already open (or
/// [`Error::AlreadyOpen`] if its options differ).
///
/// A handle does not cross `fork()`: in the child, every write (and `sync`) through an
/// inherited handle is [`Error::Forked`], and dropping it leaves the parent's files, locks
/// and threads alone. Reads through it see the log as another process would. The child
/// opens the store again to write, as a process of its own (it does not share the
/// inherited store). A lock that a thread of the parent held at the fork stays held in the
/// child, as with any `fork()` of a threaded program: fork before opening, or from one thread.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Shared by the handles the caller holds; `None` in the handles the store's own
    /// threads make for a moment (a background sync, a compaction). The registry shares an
    /// open store only while a caller's handle lives: once the last one drops, a new open
    /// waits for the close to finish (perhaps on a background thread that still held the
    /// store) instead of finding it open.
    users: Option<Arc<Users>>,
    /// Whether this handle's long reads decrypt ahead ([`Options::decrypt_ahead`]: a
    /// setting of the handle, not of the store, so two opens may differ in it).
    decrypt_ahead: bool,
}

/// The token a store's caller-held handles share (see [`Store`]'s `users`).
#[derive(Debug)]
struct Users;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The process that opened it. A `fork()` child inherits the handle but not the right
    /// to write through it, nor to close it: the locks, the write position and the threads
    /// are the parent's ([`Store::check_process`]).
    pid: u32,
    /// A write found the store's messages not sealed, or the store encrypted: writes may go
    /// on without a key file ([`Store::refuse_if_keys_lost`]).
    plaintext_checked: std::sync::atomic::AtomicBool,
    opts: Options,
    /// Segments and the session index. Readers take it shared; the writer, exclusively and
    /// briefly, after its bytes are written.
    state: RwLock<State>,
    /// The active segment; `None` for a read-only store. Lock order: `writer`, then `state`.
    writer: Mutex<Option<Writer>>,
    syncer: Syncer,
    /// Threads inside a write (for the group-commit leader's short wait).
    appending: std::sync::atomic::AtomicUsize,
    report: RecoveryReport,
    flusher: Arc<Flusher>,
    /// Hints of sealed segments still to be written (see `hints`).
    hints: Arc<hints::Hints>,
    /// Wakes this process's subscriptions after each write.
    appended: subscribe::Appended,
    /// Stops the background compactor, if any.
    auto: Arc<auto::Stopper>,
    /// Whether other processes may write the log (every store but an exclusive one): reads
    /// check whether it moved, and writes catch up under the write lock first.
    follows: bool,
    /// The log's head in `LOCK`: which segment is the newest (see `head`).
    head: head::Head,
    /// A writable store's locks (`None` when read-only).
    locks: Option<lock::Locks>,
    /// An encrypted store's keys.
    crypt: Option<Arc<crate::crypt::Crypt>>,
    /// This store's entry in the process's registry; after `locks`, so it drops after them.
    registration: Option<registry::Registration>,
}

/// What this process knows of the log.
///
/// Invariant: `index` holds exactly the committed units of `segments` up to offset `end` of
/// the last one, whose records run to LSN `next_lsn - 1`; every later byte of the last
/// segment that is not zero was written by a writer after the index was last brought up to
/// date (or is a torn write that the next holder of the write lock cuts).
#[derive(Debug)]
struct State {
    /// Shared with the reads in flight (copy-on-write): a read resolves the positions it
    /// took against the table it took them from, whatever a compaction does meanwhile.
    segments: Arc<Vec<Arc<Segment>>>,
    index: Index,
    end: u64,
    next_lsn: Lsn,
    /// The latest timestamp of a record folded (timestamps never decrease along the log).
    last_ts: Timestamp,
    /// The compaction epoch (see `head`) the segments were read at: when the head names
    /// another, a compaction replaced some of them, and the state is read again.
    epoch: Option<u64>,
}

impl State {
    /// Whether the log holds the segment `id` with `salt` (a compaction's output keeps its
    /// first input's id under a new salt).
    fn holds(&self, id: crate::id::SegmentId, salt: u64) -> bool {
        self.segments.iter().any(|s| s.id == id && s.salt == salt)
    }
}

#[derive(Debug)]
struct Writer {
    active: SegmentWriter,
    ordinal: u32,
    next_lsn: Lsn,
    last_ts: Timestamp,
    last_sync: Instant,
    /// Bytes appended since the last sync or kick of the flusher.
    unsynced: u64,
    /// The active segment was loaded from its hint without a scan: verify it before the
    /// first append, so that new records never go after damage nobody has seen. Until then
    /// nothing was written to it, so its hint is still exact.
    unverified: bool,
    /// Whether anything was written since the open (a close with nothing written leaves
    /// every file as it found it).
    written: bool,
    /// What the last framed unit left of the session's naming in the active segment.
    naming: Option<crate::segment::Naming>,
    /// How many records the last framed unit holds.
    framed_records: u64,
    buf: Vec<u8>,
    /// Scratch space for a sealed payload (an encrypted store).
    sealed: Vec<u8>,
    /// Scratch space for the offsets of the records of the unit being framed.
    offsets: Vec<u32>,
    /// Whether the write under way may wait (for a sync, say); set by its turn.
    wait: lock::Wait,
    /// Whether a catch-up succeeded since the write lock was last taken: while the lease
    /// keeps the lock from then on, no other process can have written, and the next write
    /// skips its catch-up (a failed one leaves this `false`, so the next write repeats it).
    caught_up: bool,
}

/// What an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The message's 1-based position in its session.
    pub interaction_id: u64,
    /// When it was appended.
    pub timestamp: Timestamp,
}

/// A live session, as listed by [`Store::sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// How many messages it holds (its last interaction id).
    pub count: u64,
    /// Timestamp of its first message.
    pub first: Timestamp,
    /// Timestamp of its last message.
    pub last: Timestamp,
}

/// Counters about a store, for operators (`convlog stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Segment files.
    pub segments: usize,
    /// Live sessions.
    pub sessions: usize,
    /// Live messages.
    pub messages: u64,
    /// Idempotency keys the index remembers (one per live keyed append or batch).
    pub keys: u64,
    /// Bytes the session index holds in memory: its heap, plus the hint files it keeps
    /// mapped (it reads the positions of messages loaded from a hint in place), counted whole.
    pub index_bytes: usize,
    /// The last LSN written.
    pub last_lsn: Lsn,
    /// The last LSN known durable.
    pub durable_lsn: Lsn,
    /// Group commits this open store has run: syncs made for writers waiting on durability
    /// (`Always` appends, [`Store::sync`]), each covering every write before it. Appends
    /// under `Always` divided by this is the average group size.
    pub group_commits: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir` with default options.
    ///
    /// # Errors
    /// As [`Options::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Options::default().open(dir)
    }

    /// Options for opening a store.
    pub fn builder() -> Options {
        Options::default()
    }

    /// Starts the background sync thread (see [`Flusher`]).
    pub(super) fn spawn_flusher(&self, every: Option<Duration>) {
        // The thread holds only a weak reference while it waits, so dropping the last
        // `Store` handle closes the store (and releases its lock) at once.
        let weak = Arc::downgrade(&self.inner);
        self.inner.flusher.spawn(every, move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let store = Store {
                inner,
                users: None,
                decrypt_ahead: false,
            };
            !store.inner.syncer.is_poisoned() && store.sync().is_ok()
        });
    }

    /// Whether an I/O failure poisoned this handle: every later write and [`Store::sync`]
    /// fails with [`Error::Poisoned`] until the store is reopened, which re-derives its state
    /// from the files. A write that failed and poisoned the store is indeterminate: the
    /// reopen may find it whole (see [`Store::append`]).
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.syncer.is_poisoned()
    }

    /// The store's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What the open that produced this store recovered.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Whether the store was opened read-only.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.inner.opts.read_only
    }

    /// The number of messages in `session` (its last interaction id); 0 when unknown.
    #[must_use]
    pub fn interaction_count(&self, session: &str) -> u64 {
        self.view().index.count(session)
    }

    /// Whether `session` holds at least one message.
    #[must_use]
    pub fn contains(&self, session: &str) -> bool {
        self.view().index.get(session).is_some()
    }

    /// Every live session with its count and first/last timestamps, sorted by id.
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let state = self.view();
        let mut out: Vec<SessionInfo> = state
            .index
            .iter()
            .map(|(id, s)| SessionInfo {
                id: id.to_owned(),
                count: s.count(),
                first: s.first(),
                last: s.last(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Counters about the store.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        let state = self.view();
        let last_lsn = Lsn(state.next_lsn.0 - 1);
        StoreStats {
            segments: state.segments.len(),
            sessions: state.index.len(),
            messages: state.index.messages(),
            keys: state.index.keys(),
            index_bytes: state.index.memory_bytes(),
            last_lsn,
            durable_lsn: self.inner.syncer.durable(),
            group_commits: self.inner.syncer.group_commits(),
        }
    }

    /// The ids of the store's segment files, oldest first.
    #[must_use]
    pub fn segment_ids(&self) -> Vec<SegmentId> {
        self.view().segments.iter().map(|s| s.id).collect()
    }

    /// The LSN of the last record written (0 for an empty store), by any process.
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.view().next_lsn.0 - 1)
    }

    /// The LSN up to which every record is known to be on stable storage.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.syncer.durable()
    }

    /// The state, brought up to date first with what other processes wrote (see
    /// [`Store::refresh`]): what every read starts from.
    fn view(&self) -> RwLockReadGuard<'_, State> {
        self.refresh();
        self.state()
    }

    /// Folds into the index what other processes wrote since it was last brought up to date,
    /// if the log moved (see `State::moved`: cheap when it did not). Nothing to do for an
    /// exclusive store. A failure (a file that cannot be read) leaves the state as it was:
    /// the next read tries again.
    fn refresh(&self) {
        if !self.inner.follows {
            return;
        }
        let dir = crate::io::Dir::new(&*self.inner.opts.vfs, &self.inner.dir);
        if !self.state().moved(dir, &self.inner.head) {
            return;
        }
        let mut state = self.state_mut();
        let _ = state
            .reload_if_compacted(dir, &self.inner.head)
            .and_then(|_| state.catch_up(dir, false, self.inner.keys()));
    }

    /// Refuses a write through a handle another process opened (see [`Error::Forked`]):
    /// checked before any lock of the store is taken, since a lock a thread of the parent
    /// held at the fork is held for good in the child.
    fn check_process(&self) -> Result<()> {
        if self.inner.pid == crate::io::process_id() {
            return Ok(());
        }
        Err(Error::Forked {
            path: self.inner.dir.clone(),
            opened_by: self.inner.pid,
        })
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Inner {
    /// A clean close: stops the flusher and the hints thread, writes the hints of sealed
    /// segments still due, then syncs the active segment and writes its hint, so the next
    /// open needs no scan. Best effort: if any step fails, the next open scans
    /// the segment instead. Nothing to do if nothing was written since the open: every file
    /// stays as the open found it.
    fn drop(&mut self) {
        if self.pid != crate::io::process_id() {
            // A fork() child: the files, locks and threads are the parent's. Its lease stays
            // the parent's (no unlock), its registry entry too (the child's own open may
            // hold the key by now), and nothing is written, synced or joined.
            if let Some(locks) = self.locks.as_mut() {
                locks.disown_lease();
            }
            std::mem::forget(self.registration.take());
            return;
        }
        self.flusher.stop();
        self.auto.stop();
        let sealed = self.hints.close();
        self.close_log(sealed);
        // Built hints the close did not put in place (it failed, or stopped early): removed.
        let dir = crate::io::Dir::new(&*self.opts.vfs, &self.dir);
        hints::install(dir, self.hints.take_built(), |_, _| false);
    }
}

impl Inner {
    /// An encrypted store's keys, as recovery and a catch-up judge records by them.
    fn keys(&self) -> Option<&dyn crate::recovery::Keys> {
        self.crypt
            .as_deref()
            .map(|c| c as &dyn crate::recovery::Keys)
    }

    /// [`Inner::drop`]'s work on the log: the hints left to write, the active segment
    /// synced and its hint.
    fn close_log(&mut self, sealed: Vec<hints::Job>) {
        if self.syncer.is_poisoned() {
            return;
        }
        let Some(w) = self.writer.get_mut().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        if !w.written {
            return;
        }
        // Beside other writers: under the write lock, once this process knows the whole log
        // (the hint must end where the log does, or the next open finds it stale).
        let Some(locks) = &self.locks else { return };
        let Ok(Some(_write)) = locks.write(&self.dir, lock::Wait::Block) else {
            return;
        };
        if self.follows {
            let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            let dir = crate::io::Dir::new(&*self.opts.vfs, &self.dir);
            let keys = self
                .crypt
                .as_deref()
                .map(|c| c as &dyn crate::recovery::Keys);
            let caught_up = state
                .reload_if_compacted(dir, &self.head)
                .and_then(|_| state.catch_up(dir, true, keys));
            if caught_up.is_err() || w.follow(state, dir).is_err() {
                return;
            }
        }
        let vfs = &*self.opts.vfs;
        let dir = crate::io::Dir::new(vfs, &self.dir);
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        hints::install(dir, self.hints.take_built(), |id, salt| {
            state.holds(id, salt)
        });
        for job in sealed.into_iter().filter(|j| state.holds(j.id, j.salt)) {
            let _ = crate::hint::write(dir, &job.map, job.id, job.salt);
        }
        if sync_segment(self.crypt.as_deref(), &*w.active.file, &w.active.path).is_err() {
            return;
        }
        write_hint(vfs, &self.dir, &w.active);
    }
}

/// Syncs the segment `file` at `path` (records in it may be only in the page cache), and
/// `KEYS` first in an encrypted store (`crypt`): a record may be sealed under a key whose
/// entry went to `KEYS` unsynced, and no record may be acknowledged durable before its key
/// (see `crypt::ring`). Every `fdatasync` of a segment that acknowledges appends goes
/// through here (a cut of a torn write syncs too, acknowledging nothing: see
/// `recovery::keys`).
///
/// # Errors
/// [`Error::Io`] (the caller poisons the store); [`Error::KeyFile`].
fn sync_segment(
    crypt: Option<&crate::crypt::Crypt>,
    file: &dyn crate::io::VfsFile,
    path: &Path,
) -> Result<()> {
    if let Some(crypt) = crypt {
        crypt.sync()?;
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// Writes the hint of a segment that is complete (sealed, or active at a clean close).
/// Best effort: a hint is derived data, and a segment without one is scanned on open.
fn write_hint(vfs: &dyn crate::io::Vfs, dir: &Path, seg: &SegmentWriter) {
    let Ok(map) = seg.file.map() else { return };
    let _ = crate::hint::write(crate::io::Dir::new(vfs, dir), &map, seg.id, seg.salt);
}

/// Checks a message as [`Store::append_raw`] does before it writes anything: exactly one
/// JSON object in UTF-8, nested at most [`MAX_JSON_DEPTH`] levels deep. For a tool that
/// checks a whole input before it appends any of it (`convlog import`).
///
/// # Errors
/// [`Error::InvalidMessage`] (its `session` empty) saying what is wrong and where.
pub fn validate_message(json: &[u8]) -> Result<()> {
    validate::validate_object("", json)
}

/// Checks a session id: 1 to 256 bytes, no control characters.
///
/// # Errors
/// [`Error::InvalidSessionId`] saying which rule it breaks.
pub fn validate_session_id(session: &str) -> Result<()> {
    let reason = if session.is_empty() {
        "empty"
    } else if session.len() > MAX_SESSION_LEN {
        "longer than 256 bytes"
    } else if session.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidSessionId {
        session: session.chars().take(300).collect(),
        reason,
    })
}
