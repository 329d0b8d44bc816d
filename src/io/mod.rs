//! The file-system abstraction every byte of the store goes through.
//!
//! [`StdFs`] is the real file system. Tests plug in a simulated one (see `sim`) that keeps
//! written and durable bytes apart, so crashes can be replayed deterministically.

mod dir;
mod mmap;
// The simulated file system and its fault injection: for tests, not a stable API (hidden).
#[doc(hidden)]
pub mod sim;
mod std_fs;

use std::any::Any;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use dir::Dir;
pub use dir::LOCK_FILE;
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

/// A file system: the operations the store needs, and no more.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether a directory exists at `dir`.
    fn is_dir(&self, dir: &Path) -> bool;
    /// The names of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `path` (created if missing) without waiting.
    ///
    /// `Ok(None)` when another holder has it. The lock lives as long as the returned guard.
    /// Holders that only probe it ([`Vfs::is_locked`]) are waited out, briefly.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;
    /// Whether someone holds the advisory lock on `path` right now (a missing file is not
    /// locked). Creates and changes nothing.
    fn is_locked(&self, path: &Path) -> io::Result<bool>;
    /// The operating system's canonical path of the existing directory `dir`, when this file
    /// system is the operating system's: then two writable opens of one directory in a
    /// process share one open store instead of the second failing on the lock.
    ///
    /// `None` (the default) for any other file system: each open stands alone.
    fn canonical_path(&self, dir: &Path) -> Option<PathBuf> {
        let _ = dir;
        None
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
