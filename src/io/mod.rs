//! The file-system abstraction every byte of the store goes through.
//!
//! [`StdFs`] is the real file system. Tests plug in a simulated one (see `sim`) that keeps
//! written and durable bytes apart, so crashes can be replayed deterministically.

mod dir;
mod mmap;
mod oflags;
mod perms;
mod process;
// The simulated file system and its fault injection: for tests, not a stable API (hidden).
#[doc(hidden)]
pub mod sim;
mod std_fs;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::id::Timestamp;

pub(crate) use dir::Dir;
pub use dir::{LOCK_FILE, SYNC_FILE, WRITERS_FILE};
pub use perms::{Exposed, PermissionReport, Permissions, permission_report};
pub use process::process_id;
pub use std_fs::StdFs;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// A type only this crate can name: a trait method taking it can be overridden here only.
mod sealed {
    /// See [`super::Vfs::seeded_random`].
    #[derive(Debug, Clone, Copy)]
    pub struct Crate;
}
pub(crate) use sealed::Crate as Sealed;

/// A file system: the operations the store needs, and no more.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents (the store's directory), giving those it creates
    /// this file system's directory mode; an existing one is left as it is.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates the directory `dir` in an existing one (a subdirectory of the store, such as
    /// `quarantine/`) unless it is a directory already. Something else there, a symbolic link
    /// included, is an error: what goes into it is never written through a link.
    ///
    /// The default calls [`Vfs::create_dir_all`] (for a file system without links).
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.create_dir_all(dir)
    }
    /// Whether a directory exists at `dir`.
    fn is_dir(&self, dir: &Path) -> bool;
    /// The names of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file; [`OpenMode::CreateNew`] gives it this file system's file mode.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to` (a symbolic link there is replaced, never
    /// followed).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens the lock file at `path` (created if missing, empty, with this file system's file
    /// mode): a handle that takes and releases its advisory lock. Opening takes no lock.
    fn lock_file(&self, path: &Path) -> io::Result<Box<dyn VfsLock>>;
    /// Whether a file (of any kind) exists at `path`. Creates and changes nothing.
    fn exists(&self, path: &Path) -> bool;
    /// Whether a holder of the advisory lock on `path` would refuse it in `mode` right now:
    /// for [`LockMode::Shared`], whether someone holds it exclusively; for
    /// [`LockMode::Exclusive`], whether anyone holds it. A missing file is not locked.
    /// Creates and changes nothing (the probe holds the lock for an instant at most).
    fn is_locked(&self, path: &Path, mode: LockMode) -> io::Result<bool>;
    /// The operating system's canonical path of the existing directory `dir`, when this file
    /// system is the operating system's: then two writable opens of one directory in a
    /// process share one open store instead of the second failing on the lock.
    ///
    /// `None` (the default) for any other file system: each open stands alone.
    fn canonical_path(&self, dir: &Path) -> Option<PathBuf> {
        let _ = dir;
        None
    }

    /// This file system giving the directories and files it creates the modes of `perms`
    /// ([`crate::Options::permissions`] asks for it on open). `None` (the default) for
    /// a file system without permission bits: the store then uses it as it is.
    fn with_permissions(&self, perms: Permissions) -> Option<Arc<dyn Vfs>> {
        let _ = perms;
        None
    }

    /// Whether every operation must come from the thread that asks for it, in order: a
    /// simulated file system whose crash points must reproduce. The store then does on the
    /// caller's thread what it otherwise leaves to one of its own (writing sealed segments'
    /// hints), and makes no choice on timing that changes which operations it makes (a
    /// shared writer takes and releases the write lock around every write, without a
    /// lease). The default is `false`.
    fn deterministic(&self) -> bool {
        false
    }

    /// The time the store stamps on what it writes now (records, segment headers) and judges
    /// idleness by. The default is the wall clock; a simulated file system keeps a clock of
    /// its own, so that a run on it writes the same bytes every time.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// A new segment's salt (it seeds every record header checksum in the segment, so stale
    /// bytes of an earlier segment of the same name never verify). The default draws a
    /// random one; a simulated file system draws from its seed, for the reason above.
    fn salt(&self) -> u64 {
        crate::segment::random_salt()
    }

    /// Fills `buf` from this file system's own random source and returns `true`, or returns
    /// `false` (the default): then the store draws from the operating system's generator.
    /// What an encrypted store draws at random (data keys and their ids, nonces, the key
    /// file's secret) comes from here. Only the simulated file system, which holds no real
    /// data, has a source of its own (drawn from its seed, so that an encrypted run on it
    /// writes the same bytes every time). Its last argument's type lies in a private module:
    /// no other crate can name it, so no other file system can override this.
    fn seeded_random(&self, buf: &mut [u8], _: sealed::Crate) -> bool {
        let _ = buf;
        false
    }
}

/// An open file. There is no way to shorten one: no store file is ever shortened, because
/// another process may have it mapped (see `docs/format.md`, "Files never shrink").
#[allow(clippy::len_without_is_empty)] // a file's length is an I/O call, not a collection's size
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an error if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only view of the file's current contents (a memory map on the real file system).
    ///
    /// The caller must not truncate away, or change, bytes it reads through the view while the
    /// view lives (see the SAFETY argument in `io/mmap.rs`). A view may be a snapshot (the
    /// simulated file system) or live (a shared memory map): callers must not depend on which.
    fn map(&self) -> io::Result<Mapping>;
    /// Whether views from [`VfsFile::map`] show later writes to the file (a shared memory
    /// map) rather than a snapshot.
    fn map_is_live(&self) -> bool {
        false
    }
}

/// How an advisory lock is held: by any number of shared holders, or by one exclusive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Held together with other shared holders; excludes an exclusive one.
    Shared,
    /// Held alone.
    Exclusive,
}

/// An open lock file: an advisory lock (`flock` on the real file system) belonging to this
/// handle. Holders in other processes exclude it as [`LockMode`] says; the operating system
/// releases it when the holder dies, whatever way. Dropping the handle releases it too.
pub trait VfsLock: Send + Sync + fmt::Debug {
    /// Takes the lock as `mode` without waiting: `false` when another holder excludes it.
    /// Taking it in the other mode while holding it converts the lock.
    fn try_lock(&self, mode: LockMode) -> io::Result<bool>;
    /// Takes the lock exclusively, waiting as long as another holder has it.
    fn lock(&self) -> io::Result<()>;
    /// Releases the lock (nothing happens if it is not held).
    fn unlock(&self) -> io::Result<()>;
    /// Whether the file this handle has open is still the one at its path: not unlinked (or
    /// replaced) since it was opened. A lock on an unlinked file excludes no later opener.
    fn is_current(&self) -> io::Result<bool>;
}

/// A read-only view of a whole file: a memory map, or bytes in memory.
#[derive(Clone)]
pub struct Mapping(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Mapping {
    /// A view of bytes held in memory.
    #[must_use]
    pub fn from_vec(bytes: Vec<u8>) -> Mapping {
        Mapping(Arc::new(bytes))
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping({} bytes)", self.len())
    }
}
