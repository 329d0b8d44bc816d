//! The real file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LockMode, Mapping, OpenMode, Vfs, VfsFile, VfsLock, mmap};

/// `O_NONBLOCK`: opening a FIFO (or a device) then returns at once instead of waiting for a
/// peer. It changes nothing for a regular file, the only kind [`StdFs::open`] accepts.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6"
    )
))]
const O_NONBLOCK: i32 = 0x80;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(target_arch = "sparc", target_arch = "sparc64")
))]
const O_NONBLOCK: i32 = 0x4000;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
const O_NONBLOCK: i32 = 0x0004;
/// Elsewhere, no flag: the checks before and after the open still refuse what is not a
/// regular file, but a FIFO swapped in between them could block the open.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
const O_NONBLOCK: i32 = 0;

/// The error for a path that is not a regular file (a FIFO, socket, device, directory or
/// symbolic link): convlog never opens one.
fn not_regular(path: &Path, kind: fs::FileType) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}, not a regular file", path.display()),
    )
}

/// Opens `path` without waiting on it, and refuses anything but a regular file: checked
/// before the open (without following a symbolic link) and again on the opened file.
fn open_regular(o: &mut OpenOptions, path: &Path, exists: bool) -> io::Result<File> {
    if exists {
        let kind = fs::symlink_metadata(path)?.file_type();
        if !kind.is_file() {
            return Err(not_regular(path, kind));
        }
    }
    let file = o.custom_flags(O_NONBLOCK).open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(path, kind));
    }
    Ok(file)
}

/// Whether `file` is the file at `path` (same device and inode), not one unlinked since.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a, b),
        (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// The operating system's file system (Unix).
///
/// It opens regular files only: a FIFO, socket, device, directory or symbolic link where a
/// store file is expected is an [`io::ErrorKind::InvalidInput`] error, never a wait.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

/// A lock file open on the real file system: `flock(2)` through std's `File::lock` family.
#[derive(Debug)]
struct StdLock {
    file: File,
    path: PathBuf,
}

impl VfsLock for StdLock {
    fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        let taken = match mode {
            LockMode::Shared => self.file.try_lock_shared(),
            LockMode::Exclusive => self.file.try_lock(),
        };
        match taken {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn lock(&self) -> io::Result<()> {
        self.file.lock()
    }

    fn unlock(&self) -> io::Result<()> {
        self.file.unlock()
    }

    fn is_current(&self) -> io::Result<bool> {
        same_file(&self.file, &self.path)
    }
}

impl Vfs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
        };
        let file = open_regular(&mut o, path, mode != OpenMode::CreateNew)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_file(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        let file = open_regular(&mut o, path, path.symlink_metadata().is_ok())?;
        Ok(Box::new(StdLock {
            file,
            path: path.to_owned(),
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn is_locked(&self, path: &Path, mode: LockMode) -> io::Result<bool> {
        let mut o = OpenOptions::new();
        o.read(true);
        let file = match open_regular(&mut o, path, true) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let probe = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match probe {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn canonical_path(&self, dir: &Path) -> Option<PathBuf> {
        fs::canonicalize(dir).ok()
    }
}

impl VfsFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn map(&self) -> io::Result<Mapping> {
        mmap::map_file(&self.0)
    }

    fn map_is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    }

    /// Runs `f` on a thread; panics if it takes over 10 s (a blocking open would hang).
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the open blocked")
    }

    #[test]
    fn opens_only_regular_files_and_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("00000000000000000001.hint");
        mkfifo(&fifo);
        let regular = dir.path().join("file");
        fs::write(&regular, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&link, "a symbolic link"),
            (&sub, "a directory"),
        ] {
            for mode in [OpenMode::Read, OpenMode::ReadWrite] {
                let p = path.clone();
                let err = promptly(move || StdFs.open(&p, mode).map(|_| ()))
                    .expect_err("opened a file that is not regular");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
                assert!(err.to_string().contains(what), "{err}");
            }
            let p = path.clone();
            let err = promptly(move || StdFs.open(&p, OpenMode::CreateNew).map(|_| ()))
                .expect_err("created over an existing path");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        }
        let lock = dir.path().join("LOCK");
        mkfifo(&lock);
        let p = lock.clone();
        let err = promptly(move || StdFs.lock_file(&p).map(|_| ())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // The list holds regular files only.
        assert_eq!(StdFs.list(dir.path()).unwrap(), ["file"]);
        // Regular files open as before.
        let f = StdFs.open(&regular, OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"yz", 1).unwrap();
        assert_eq!(f.len().unwrap(), 3);
        let new = StdFs
            .open(&dir.path().join("new"), OpenMode::CreateNew)
            .unwrap();
        new.write_all_at(b"n", 0).unwrap();
        let lock = StdFs.lock_file(&dir.path().join("LOCK2")).unwrap();
        assert!(lock.try_lock(LockMode::Exclusive).unwrap());
        assert!(lock.is_current().unwrap());
    }
}
