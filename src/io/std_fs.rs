//! The real file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::oflags::{O_NOFOLLOW, O_NONBLOCK};
use super::perms::{Permissions, set_exact};
use super::{LockMode, Mapping, OpenMode, Vfs, VfsFile, VfsLock, mmap};

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

/// The error for a path that should be a directory and is not (a symbolic link included).
fn not_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a directory (convlog never follows a symbolic link)",
            path.display()
        ),
    )
}

/// An open's error, said plainly when a symbolic link at `path` is the cause: `ELOOP` from
/// `O_NOFOLLOW` (then [`io::ErrorKind::InvalidInput`], as for any file that is not regular),
/// or `EEXIST` from an exclusive create (the kind is kept: the name is taken).
fn link_error(path: &Path, e: io::Error) -> io::Error {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let kind = match e.kind() {
                io::ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
                _ => io::ErrorKind::InvalidInput,
            };
            let what = format!(
                "{} is a symbolic link, not a regular file (convlog never follows one)",
                path.display()
            );
            io::Error::new(kind, what)
        }
        _ => e,
    }
}

/// Opens `path` without waiting on it or following a symbolic link (`O_NOFOLLOW`), and
/// refuses anything but a regular file: checked before the open (without following a
/// symbolic link) and again on the opened file.
fn open_regular(o: &mut OpenOptions, path: &Path, exists: bool) -> io::Result<File> {
    if exists {
        let kind = fs::symlink_metadata(path)?.file_type();
        if !kind.is_file() {
            return Err(not_regular(path, kind));
        }
    }
    let file = o
        .custom_flags(O_NONBLOCK | O_NOFOLLOW)
        .open(path)
        .map_err(|e| link_error(path, e))?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(path, kind));
    }
    Ok(file)
}

/// Creates the file `path`, which must not exist (`O_EXCL`: never through a symbolic link),
/// with exactly `mode`; removes it again if the mode cannot be set.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create_new(true).mode(mode);
    let file = open_regular(&mut o, path, false)?;
    if let Err(e) = set_exact(&file, mode) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// How often [`open_or_create`] tries before giving up on a file that other processes keep
/// creating and removing under it.
const CREATE_ROUNDS: usize = 64;

/// Opens the file `path` for reading and writing, creating it with exactly `mode` when it is
/// missing; never through a symbolic link.
fn open_or_create(path: &Path, mode: u32) -> io::Result<File> {
    for _ in 0..CREATE_ROUNDS {
        match create_new(path, mode) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            made => return made,
        }
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        match open_regular(&mut o, path, true) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            opened => return opened,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} kept vanishing while it was opened", path.display()),
    ))
}

/// Sets the mode of the directory `dir` to exactly `mode`, through a handle that does not
/// follow a symbolic link.
fn set_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK | O_NOFOLLOW)
        .open(dir)
        .map_err(|e| link_error(dir, e))?;
    if !handle.metadata()?.is_dir() {
        return Err(not_dir(dir));
    }
    set_exact(&handle, mode)
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
/// store file is expected is an [`io::ErrorKind::InvalidInput`] error, never a wait; no open
/// follows a symbolic link (`O_NOFOLLOW`, and `O_EXCL` to create).
///
/// It gives the directories and files it creates exactly the modes of its [`Permissions`]
/// (default: owner only, `0700` / `0600`), whatever the umask: the mode is asked for at
/// creation and then set on the open handle, which the umask cannot narrow or widen.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs {
    perms: Permissions,
}

impl StdFs {
    /// The real file system, creating directories and files with the modes of `perms`.
    #[must_use]
    pub const fn new(perms: Permissions) -> StdFs {
        StdFs { perms }
    }

    /// The modes it gives what it creates.
    #[must_use]
    pub const fn permissions(&self) -> Permissions {
        self.perms
    }
}

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
    /// A directory that exists (also through a symbolic link: the store's own path may be
    /// one) is left as it is; missing ones get the directory mode (the umask applies to the
    /// parents; `dir` itself gets it exactly).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mode = self.perms.dir_mode();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)?;
        set_dir_mode(dir, mode)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(not_dir(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mode = self.perms.dir_mode();
        match fs::DirBuilder::new().mode(mode).create(dir) {
            // Made by another process meanwhile: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(not_dir(dir)),
            },
            Err(e) => Err(e),
            Ok(()) => set_dir_mode(dir, mode),
        }
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
            OpenMode::CreateNew => {
                return Ok(Arc::new(StdFile(create_new(path, self.perms.file_mode())?)));
            }
        };
        let file = open_regular(&mut o, path, true)?;
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
        let file = open_or_create(path, self.perms.file_mode())?;
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

    fn with_permissions(&self, perms: Permissions) -> Option<Arc<dyn Vfs>> {
        Some(Arc::new(StdFs::new(perms)))
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
                let err = promptly(move || StdFs::default().open(&p, mode).map(|_| ()))
                    .expect_err("opened a file that is not regular");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
                assert!(err.to_string().contains(what), "{err}");
            }
            let p = path.clone();
            let err = promptly(move || StdFs::default().open(&p, OpenMode::CreateNew).map(|_| ()))
                .expect_err("created over an existing path");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        }
        let lock = dir.path().join("LOCK");
        mkfifo(&lock);
        let p = lock.clone();
        let err = promptly(move || StdFs::default().lock_file(&p).map(|_| ())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // The list holds regular files only.
        assert_eq!(StdFs::default().list(dir.path()).unwrap(), ["file"]);
        // Regular files open as before.
        let f = StdFs::default()
            .open(&regular, OpenMode::ReadWrite)
            .unwrap();
        f.write_all_at(b"yz", 1).unwrap();
        assert_eq!(f.len().unwrap(), 3);
        let new = StdFs::default()
            .open(&dir.path().join("new"), OpenMode::CreateNew)
            .unwrap();
        new.write_all_at(b"n", 0).unwrap();
        let lock = StdFs::default()
            .lock_file(&dir.path().join("LOCK2"))
            .unwrap();
        assert!(lock.try_lock(LockMode::Exclusive).unwrap());
        assert!(lock.is_current().unwrap());
    }
}
