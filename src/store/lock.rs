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

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::{LOCK_FILE, LockMode, SYNC_FILE, Vfs, VfsLock, WRITERS_FILE};

/// How long an open waits for a lock that may be held only for an instant (by a read-only
/// open probing it, or by an open that is failing) before it reports [`Error::Locked`].
const PATIENCE: Duration = Duration::from_millis(100);

/// A writable open's locks. Dropping it releases both.
#[derive(Debug)]
pub(super) struct Locks {
    writers: Box<dyn VfsLock>,
    write: Box<dyn VfsLock>,
    /// `SYNC`: shared writers take turns on it to sync (see [`Locks::sync_turn`]).
    sync: Box<dyn VfsLock>,
    exclusive: bool,
    /// Whether this open created the lock files (a failed open removes them again).
    created: bool,
}

/// A lock held until dropped: the write lock or the sync turn of a shared writer (an
/// exclusive one needs neither: this then holds nothing).
#[must_use]
pub(super) struct WriteLock<'a>(Option<&'a dyn VfsLock>);

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.0 {
            // An unlock fails only on a bad descriptor; the lock then goes with the handle.
            let _ = lock.unlock();
        }
    }
}

impl Locks {
    /// Takes the locks of a writable open of `dir` (created if missing): `WRITERS` in the
    /// open's mode, and `LOCK`, held on return so that recovery runs alone (a shared writer
    /// releases it with [`Locks::opened`]).
    ///
    /// # Errors
    /// [`Error::Locked`] when another writer's mode excludes this one; [`Error::Io`].
    pub(super) fn take(vfs: &dyn Vfs, dir: &Path, exclusive: bool) -> Result<Locks> {
        vfs.create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
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
            let write = vfs
                .lock_file(&lock_path)
                .map_err(|e| Error::io("open", &lock_path, e))?;
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
    /// exclusive writer holds it already).
    ///
    /// # Errors
    /// [`Error::Io`] if the lock cannot be taken.
    pub(super) fn write(&self, dir: &Path) -> Result<WriteLock<'_>> {
        if self.exclusive {
            return Ok(WriteLock(None));
        }
        self.write
            .lock()
            .map_err(|e| Error::io("lock", dir.join(LOCK_FILE), e))?;
        Ok(WriteLock(Some(&*self.write)))
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
            return Ok(WriteLock(None));
        }
        self.sync
            .lock()
            .map_err(|e| Error::io("lock", dir.join(SYNC_FILE), e))?;
        Ok(WriteLock(Some(&*self.sync)))
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
