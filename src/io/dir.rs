//! A store directory on a [`Vfs`]: the file operations the store makes, each with its error
//! context (operation and path), and the one atomic-replace routine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{OpenMode, Vfs, VfsFile};
use crate::error::{Error, Result};

/// Name of the write lock file in a store directory (see `docs/durability.md`).
pub const LOCK_FILE: &str = "LOCK";
/// Name of the lock file that every writable open of a store holds for its lifetime: shared
/// beside other writers, exclusively for an exclusive open (see `docs/durability.md`).
pub const WRITERS_FILE: &str = "WRITERS";
/// Name of the lock file writers beside each other take turns on to `fdatasync`, so that one
/// sync covers the records of several processes (see `docs/durability.md`).
pub const SYNC_FILE: &str = "SYNC";

/// A directory of the store, and the file system it is on.
#[derive(Clone, Copy)]
pub(crate) struct Dir<'a> {
    pub(crate) vfs: &'a dyn Vfs,
    pub(crate) path: &'a Path,
}

impl<'a> Dir<'a> {
    pub(crate) fn new(vfs: &'a dyn Vfs, path: &'a Path) -> Dir<'a> {
        Dir { vfs, path }
    }

    /// The path of `name` in this directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.vfs
            .sync_dir(self.path)
            .map_err(|e| Error::io("fsync directory", self.path, e))
    }

    pub(crate) fn open(&self, path: &Path, mode: OpenMode) -> Result<Arc<dyn VfsFile>> {
        let op = if mode == OpenMode::CreateNew {
            "create"
        } else {
            "open"
        };
        self.vfs
            .open(path, mode)
            .map_err(|e| Error::io(op, path, e))
    }

    pub(crate) fn remove(&self, path: &Path) -> Result<()> {
        self.vfs
            .remove_file(path)
            .map_err(|e| Error::io("remove", path, e))
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.vfs
            .rename(from, to)
            .map_err(|e| Error::io("rename", from, e))
    }

    /// Creates the subdirectory `path` unless it is one already; never through a link.
    pub(crate) fn create_dir(&self, path: &Path) -> Result<()> {
        self.vfs
            .create_dir(path)
            .map_err(|e| Error::io("create directory", path, e))
    }

    /// Writes `bytes` to a new file at `path` (replacing a leftover one) and syncs it; the
    /// caller syncs the directory.
    pub(crate) fn write_new(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let _ = self.vfs.remove_file(path);
        let f = self.open(path, OpenMode::CreateNew)?;
        f.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write", path, e))?;
        f.sync_data().map_err(|e| Error::io("fdatasync", path, e))
    }

    /// Writes `bytes` to a new file named `name` in this directory, or `name.2`, `name.3`, ...
    /// if that exists (nothing kept aside is ever replaced), and syncs it; returns its path.
    /// The caller syncs the directory.
    pub(crate) fn write_unique(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let mut path = self.join(name);
        let mut n = 1u64;
        loop {
            match self.vfs.open(&path, OpenMode::CreateNew) {
                Ok(f) => {
                    f.write_all_at(bytes, 0)
                        .map_err(|e| Error::io("write", &path, e))?;
                    f.sync_data()
                        .map_err(|e| Error::io("fdatasync", &path, e))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = self.join(&format!("{name}.{n}"));
                }
                Err(e) => return Err(Error::io("create", &path, e)),
            }
        }
    }

    /// Replaces `dest` with `bytes` atomically: a temporary file beside it (`<dest>.tmp`),
    /// `fdatasync`, rename over `dest`, directory fsync. A reader sees the old file or the
    /// new one, whole; a file mapped before keeps its old inode.
    pub(crate) fn atomic_write(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        self.write_new(&tmp, bytes)?;
        self.rename(&tmp, dest)?;
        self.sync()
    }
}
