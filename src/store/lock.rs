//! The store's two lock files, and what a writer may assume from them.
//!
//! - `WRITERS` says who writes: every writable open holds it for its lifetime, *shared* when
//!   it shares the store with other processes (the default), *exclusively* when it was
//!   opened with [`super::Options::exclusive`]. An exclusive open therefore fails fast while
//!   any other writer is open, and a shared one while an exclusive writer is.
//! - `LOCK` is the write lock. A shared writer holds it exclusively for the moment of one
//!   write (and for its open's recovery and its clean close); an exclusive writer holds it
//!   for its lifetime. Whoever holds it may read the end of the log as final: nobody is in
//!   the middle of a write, so bytes after the last committed unit are a torn write of a
//!   process that died, to cut. Read-only opens never hold either: they probe `WRITERS`
//!   ([`crate::io::Vfs::is_locked`]) to know whether the end of the log is live (a writer
//!   is open: bytes after the last committed unit may be a write in progress), which they
//!   then never judge.
//!
//! Both are `flock(2)` locks: the kernel releases them when their holder dies, however it
//! dies, so a killed writer never blocks the others. See `docs/durability.md`.
//!
//! A shared writer that does not sync every write keeps the write lock across writes that
//! come back to back (a *lease*): it takes it once for a burst instead of once per write,
//! and lets it go once it has been idle for [`LEASE_IDLE`] (a thread of its own sees to
//! that) or at the end of the first write after holding it [`LEASE_MAX`]. A write that
//! follows the one before by more than [`BURST_GAP`] releases the lock at its end, as
//! without a lease (and wakes no thread). Another process therefore waits at most about
//! [`LEASE_MAX`] for a writer that keeps writing, and [`LEASE_IDLE`] for one that stopped.
//! On a deterministic file system there is no lease (see `open`): whether a write finds the
//! lock kept depends on timing, and what it skips then (the catch-up) is file operations,
//! which that file system's crash points count.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::{LOCK_FILE, LockMode, SYNC_FILE, Vfs, VfsLock, WRITERS_FILE};

/// How long an open waits for a lock that may be held only for an instant (by a read-only
/// open probing it, or by an open that is failing) before it reports [`Error::Locked`].
const PATIENCE: Duration = Duration::from_millis(100);

/// How long a leased write lock stays held after a write with no other write.
const LEASE_IDLE: Duration = Duration::from_micros(100);
/// How soon after the one before a write must come to begin a lease: a burst of writes
/// (a loop) comes within microseconds; writes of a caller that does something else between
/// them (an agent framework's call, a thread hop) come later, and keep releasing the lock at
/// their end, waking no thread.
const BURST_GAP: Duration = Duration::from_micros(50);
/// How long a lease lasts at most: the write that ends after it releases the lock.
const LEASE_MAX: Duration = Duration::from_millis(1);

/// Whether taking a turn to write may wait for another writer (or for a sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Wait as long as it takes.
    Block,
    /// Never wait: give up instead, having changed nothing.
    No,
}

/// A writable open's locks. Dropping it releases both.
#[derive(Debug)]
pub(super) struct Locks {
    writers: Box<dyn VfsLock>,
    write: Arc<dyn VfsLock>,
    /// How this writer keeps the write lock across writes, if it does (a shared writer
    /// that does not sync every write).
    lease: Option<Arc<Lease>>,
    /// `SYNC`: shared writers take turns on it to sync (see [`Locks::sync_turn`]).
    sync: Box<dyn VfsLock>,
    exclusive: bool,
    /// Whether this open created the lock files (a failed open removes them again).
    created: bool,
}

/// A lock held until dropped: the write lock or the sync turn of a shared writer (an
/// exclusive one needs neither: this then holds nothing), or a write under the lease.
#[must_use]
pub(super) struct WriteLock<'a>(Held<'a>);

enum Held<'a> {
    Nothing,
    Lock(&'a dyn VfsLock),
    /// Under the lease; `true` when it held the lock already, since an earlier write.
    Leased(&'a Arc<Lease>, &'a Arc<dyn VfsLock>, bool),
}

impl WriteLock<'_> {
    /// Whether the lock was held without a break since an earlier write of this open
    /// (under the lease): then no other process can have written since that write began.
    pub(super) fn kept(&self) -> bool {
        matches!(self.0, Held::Leased(_, _, true))
    }
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        match self.0 {
            Held::Nothing => {}
            // An unlock fails only on a bad descriptor; the lock then goes with the handle.
            Held::Lock(lock) => {
                let _ = lock.unlock();
            }
            Held::Leased(lease, lock, _) => lease.end_write(lock),
        }
    }
}

/// The write lock's lease (see the module docs).
///
/// Invariant: `held` says whether this open holds the write lock under the lease; only a
/// write (taking it) and the end of one or the lease thread (releasing it), each under the
/// mutex, change it, and the lease thread never releases it during a write.
#[derive(Debug, Default)]
pub(super) struct Lease {
    state: Mutex<LeaseState>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct LeaseState {
    held: bool,
    writing: bool,
    /// When the lock was taken, and when the last write under it ended.
    since: Option<Instant>,
    last: Option<Instant>,
    /// The last lease ended at its limit: another process may be waiting, so the next
    /// write lets it run first.
    hogged: bool,
    /// How the write in progress began.
    began: Began,
    closed: bool,
}

/// How a write began, which says what its end does with the lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Began {
    /// Under a lease that holds the lock: keep it.
    #[default]
    Leased,
    /// It took the lock, long after the write before: release it at the end.
    Alone,
    /// It took the lock soon after the write before: a lease begins at its end.
    Burst,
}

impl Lease {
    fn state(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a write: takes the write lock unless the lease holds it. With
    /// [`Wait::No`], `None` (and nothing changed) when another process holds it; else
    /// whether the lease held it already (since an earlier write of this open).
    fn begin_write(&self, lock: &dyn VfsLock, wait: Wait) -> std::io::Result<Option<bool>> {
        let mut s = self.state();
        if !s.held {
            if std::mem::take(&mut s.hogged) {
                // The last lease ended at its limit: another process may be waiting.
                std::thread::yield_now();
            }
            match wait {
                Wait::Block => lock.lock()?,
                Wait::No => {
                    if !lock.try_lock(LockMode::Exclusive)? {
                        return Ok(None);
                    }
                }
            }
            let now = Instant::now();
            s.held = true;
            s.since = Some(now);
            s.began = if s.last.is_some_and(|t| now.duration_since(t) < BURST_GAP) {
                Began::Burst
            } else {
                Began::Alone
            };
        } else {
            s.began = Began::Leased;
        }
        s.writing = true;
        Ok(Some(s.began == Began::Leased))
    }

    /// Ends a write: the lock stays held for the next when writes come back to back,
    /// unless the lease is over; a lone write releases it at once, as without a lease.
    fn end_write(self: &Arc<Lease>, lock: &Arc<dyn VfsLock>) {
        let mut s = self.state();
        s.writing = false;
        let now = Instant::now();
        s.last = Some(now);
        let over = s.since.is_some_and(|t| now.duration_since(t) >= LEASE_MAX);
        if over || s.began == Began::Alone {
            let _ = lock.unlock();
            s.held = false;
            s.hogged = over;
        } else if s.began == Began::Burst {
            // A lease begins: the lease thread times it.
            self.ensure_thread(lock);
            self.wake.notify_one();
        }
    }

    /// Starts the thread that releases the lock when the writes stop, once.
    fn ensure_thread(self: &Arc<Lease>, lock: &Arc<dyn VfsLock>) {
        let mut t = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_none() {
            let (lease, lock) = (Arc::clone(self), Arc::clone(lock));
            *t = std::thread::Builder::new()
                .name("convlog-lease".into())
                .spawn(move || lease.release_when_idle(&*lock))
                .ok();
        }
    }

    /// The lease thread: releases the lock once no write came for [`LEASE_IDLE`].
    fn release_when_idle(&self, lock: &dyn VfsLock) {
        let mut s = self.state();
        while !s.closed {
            if !s.held {
                s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let now = Instant::now();
            let idle_until = s.last.max(s.since).map_or(now, |t| t + LEASE_IDLE);
            if !s.writing && now >= idle_until {
                let _ = lock.unlock();
                s.held = false;
                continue;
            }
            // Mid-write: look again an idle time later (not sooner: on a busy writer this
            // thread must cost next to nothing).
            let wait = if s.writing {
                LEASE_IDLE
            } else {
                idle_until
                    .saturating_duration_since(now)
                    .max(LEASE_IDLE / 4)
            };
            s = self
                .wake
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Ends the lease for good (the open closes): releases the lock, stops the thread.
    fn close(&self, lock: &dyn VfsLock) {
        {
            let mut s = self.state();
            s.closed = true;
            if s.held {
                let _ = lock.unlock();
                s.held = false;
            }
            self.wake.notify_all();
        }
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        if let Some(lease) = &self.lease {
            lease.close(&*self.write);
        }
    }
}

impl Locks {
    /// In a `fork()` child: forgets the lease, whose thread and lock are the parent's, so
    /// that dropping these locks closes the child's copies of the files and nothing else.
    pub(super) fn disown_lease(&mut self) {
        self.lease = None;
    }

    /// Takes the locks of a writable open of `dir` (created if missing): `WRITERS` in the
    /// open's mode, and `LOCK`, held on return so that recovery runs alone (a shared writer
    /// releases it with [`Locks::opened`]).
    ///
    /// # Errors
    /// [`Error::Locked`] when another writer's mode excludes this one; [`Error::Io`].
    /// With `lease`, a shared writer keeps the write lock across back-to-back writes (see
    /// the module docs).
    pub(super) fn take(vfs: &dyn Vfs, dir: &Path, exclusive: bool, lease: bool) -> Result<Locks> {
        vfs.create_dir_all(dir).map_err(|e| {
            let in_the_way = matches!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory
            );
            if in_the_way && vfs.exists(dir) && !vfs.is_dir(dir) {
                Error::NotAStore {
                    path: dir.to_owned(),
                    reason: "it is a file, not a directory",
                }
            } else {
                Error::io("create directory", dir, e)
            }
        })?;
        let writers_path = dir.join(WRITERS_FILE);
        let lock_path = dir.join(LOCK_FILE);
        let mode = if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        loop {
            let created = !vfs.exists(&writers_path) || !vfs.exists(&lock_path);
            let writers = vfs
                .lock_file(&writers_path)
                .map_err(|e| Error::io("open", &writers_path, e))?;
            // Held for an instant by a read-only open probing it, or by an open that is
            // failing: wait those out, briefly.
            if !patiently(PATIENCE, || writers.try_lock(mode))
                .map_err(|e| Error::io("lock", &writers_path, e))?
            {
                return Err(Error::Locked {
                    path: dir.to_owned(),
                });
            }
            let write: Arc<dyn VfsLock> = vfs
                .lock_file(&lock_path)
                .map_err(|e| Error::io("open", &lock_path, e))?
                .into();
            let taken = if exclusive {
                // Only probes (and writers that are dying) can hold it now: wait them out.
                patiently(PATIENCE, || write.try_lock(LockMode::Exclusive))
            } else {
                write.lock().map(|()| true)
            };
            if !taken.map_err(|e| Error::io("lock", &lock_path, e))? {
                return Err(Error::Locked {
                    path: dir.to_owned(),
                });
            }
            // A failed open that created the files removes them (see `remove_created`): a
            // lock on a file unlinked meanwhile excludes nobody, so start again.
            let current = writers
                .is_current()
                .and_then(|w| Ok(w && write.is_current()?));
            if current.map_err(|e| Error::io("stat", &lock_path, e))? {
                let sync_path = dir.join(SYNC_FILE);
                let sync = vfs
                    .lock_file(&sync_path)
                    .map_err(|e| Error::io("open", &sync_path, e))?;
                return Ok(Locks {
                    writers,
                    write,
                    lease: (lease && !exclusive).then(Arc::default),
                    sync,
                    exclusive,
                    created,
                });
            }
        }
    }

    /// Whether this open holds the store exclusively.
    pub(super) fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The open is done: a shared writer releases the write lock it recovered under.
    pub(super) fn opened(&self) {
        if !self.exclusive {
            let _ = self.write.unlock();
        }
    }

    /// Takes the write lock for one write, waiting while another process writes (an
    /// exclusive writer holds it already); with [`Wait::No`], `None` instead of waiting.
    ///
    /// # Errors
    /// [`Error::Io`] if the lock cannot be taken.
    pub(super) fn write(&self, dir: &Path, wait: Wait) -> Result<Option<WriteLock<'_>>> {
        if self.exclusive {
            return Ok(Some(WriteLock(Held::Nothing)));
        }
        let locked = |e| Error::io("lock", dir.join(LOCK_FILE), e);
        if let Some(lease) = &self.lease {
            let taken = lease.begin_write(&*self.write, wait).map_err(locked)?;
            return Ok(taken.map(|kept| WriteLock(Held::Leased(lease, &self.write, kept))));
        }
        match wait {
            Wait::Block => self.write.lock().map_err(locked)?,
            Wait::No => {
                if !self.write.try_lock(LockMode::Exclusive).map_err(locked)? {
                    return Ok(None);
                }
            }
        }
        Ok(Some(WriteLock(Held::Lock(&*self.write))))
    }

    /// Takes this process's turn to `fdatasync`, waiting while another process syncs (a
    /// shared writer; an exclusive one syncs alone anyway): the syncs of several processes
    /// then queue instead of running at once, and one that finds its records already made
    /// durable by the sync before it skips its own (see `Store::wait_durable`).
    ///
    /// # Errors
    /// [`Error::Io`] if the lock cannot be taken.
    pub(super) fn sync_turn(&self, dir: &Path) -> Result<WriteLock<'_>> {
        if self.exclusive {
            return Ok(WriteLock(Held::Nothing));
        }
        self.sync
            .lock()
            .map_err(|e| Error::io("lock", dir.join(SYNC_FILE), e))?;
        Ok(WriteLock(Held::Lock(&*self.sync)))
    }

    /// After a failed open (the write lock still held): removes the lock files if this open
    /// created them and no other writer has them open, so a failed open leaves nothing.
    pub(super) fn remove_created(self, vfs: &dyn Vfs, dir: &Path) {
        if self.created && self.writers.try_lock(LockMode::Exclusive).unwrap_or(false) {
            let _ = vfs.remove_file(&dir.join(WRITERS_FILE));
            let _ = vfs.remove_file(&dir.join(LOCK_FILE));
            let _ = vfs.remove_file(&dir.join(SYNC_FILE));
        }
    }
}

/// Calls `attempt` until it returns `true` or `patience` has passed (at least once).
fn patiently(
    patience: Duration,
    mut attempt: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<bool> {
    let deadline = Instant::now() + patience;
    loop {
        if attempt()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A lock that counts how often it was taken and says whether it is held.
    #[derive(Debug, Default)]
    struct Counting {
        held: AtomicBool,
        taken: AtomicUsize,
    }

    impl VfsLock for Counting {
        fn try_lock(&self, _: LockMode) -> std::io::Result<bool> {
            self.lock().map(|()| true)
        }
        fn lock(&self) -> std::io::Result<()> {
            assert!(!self.held.swap(true, Ordering::SeqCst), "taken twice");
            self.taken.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn unlock(&self) -> std::io::Result<()> {
            self.held.store(false, Ordering::SeqCst);
            Ok(())
        }
        fn is_current(&self) -> std::io::Result<bool> {
            Ok(true)
        }
    }

    #[test]
    fn a_lease_spans_back_to_back_writes_and_ends_when_idle_at_its_limit_or_on_close() {
        let counting = Arc::new(Counting::default());
        let lock: Arc<dyn VfsLock> = counting.clone();
        let lease = Arc::new(Lease::default());
        // Whether the write found the lock kept for it by the lease.
        let write = || {
            let kept = lease.begin_write(&*lock, Wait::Block).unwrap().unwrap();
            lease.end_write(&lock);
            kept
        };
        // A lone write takes the lock and releases it at once.
        std::thread::sleep(LEASE_IDLE * 2);
        assert!(!write());
        assert!(!counting.held.load(Ordering::SeqCst));
        // Back to back: taken once (a few times at most, if this thread was descheduled
        // for longer than the idle time between two writes); every other write finds it kept.
        let before = counting.taken.load(Ordering::SeqCst);
        let kept = (0..100).filter(|_| write()).count();
        let taken = counting.taken.load(Ordering::SeqCst) - before;
        assert!(taken <= 10, "{taken}");
        assert_eq!(kept + taken, 100);
        // Idle: the lease thread lets it go.
        let deadline = Instant::now() + Duration::from_secs(5);
        while counting.held.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "an idle lease was never released"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // At its limit: the write that ends after it releases the lock itself.
        let before = counting.taken.load(Ordering::SeqCst);
        assert!(lease.begin_write(&*lock, Wait::Block).unwrap().is_some());
        std::thread::sleep(LEASE_MAX);
        assert!(
            counting.held.load(Ordering::SeqCst),
            "never released during a write"
        );
        lease.end_write(&lock);
        assert!(!counting.held.load(Ordering::SeqCst));
        assert_eq!(counting.taken.load(Ordering::SeqCst), before + 1);
        // Closing releases a held lease and stops its thread.
        assert!(lease.begin_write(&*lock, Wait::Block).unwrap().is_some());
        assert!(counting.held.load(Ordering::SeqCst));
        lease.close(&*lock);
        assert!(!counting.held.load(Ordering::SeqCst));
        assert!(lease.thread.lock().unwrap().is_none());
    }
}
