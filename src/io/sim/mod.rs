//! A deterministic simulated file system for crash testing.
//!
//! **For convlog's own tests, fuzzers and tools; not a stable API.** It is public only so
//! that they can reach it, hidden from the documentation, and may change in any release.
//!
//! [`SimFs`] keeps, like redb's crash-test backend, what has been *written* apart from what
//! is *durable*:
//!
//! - Files are inodes, so a rename or remove leaves open handles valid. Each inode holds
//!   `written` bytes (what reads see) and `durable` bytes (what survives a power cut);
//!   [`VfsFile::sync_data`] copies the first to the second.
//! - Directory entries live in two maps, path to inode: the *live* one, which every
//!   operation sees and changes, and the *durable* one, which [`Vfs::sync_dir`] brings level
//!   with the live one for the entries directly in that directory. Directories themselves
//!   are always durable.
//! - [`SimFs::crash`] builds a new, independent file system from the durable state alone,
//!   optionally tearing unsynced writes at sector granularity (see [`Tear`]).
//! - Every [`Vfs`] and [`VfsFile`] call is numbered 1, 2, 3, ... from the creation of the
//!   `SimFs` (see [`SimFs::ops`]); [`SimFs::fail_at`] and [`SimFs::fail_sticky`] make chosen
//!   calls fail with `EIO` or `ENOSPC` instead of running.
//!
//! Everything is deterministic: randomness (torn writes, torn sectors) comes from a seeded
//! splitmix64 generator, and maps are ordered, so the same seed and the same sequence of
//! calls give the same result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LockMode, Mapping, OpenMode, Permissions, Vfs, VfsFile, VfsLock};
use crate::id::Timestamp;

/// A failure to inject into an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An I/O error (`EIO`).
    Io,
    /// The device is full (`ENOSPC`).
    NoSpace,
    /// The process is gone (a kill, as the crash harness plays it: the store's close code
    /// runs against a file system where nothing it does takes effect). Fails as `EIO`, and
    /// a write lands no byte, where [`Fault::Io`] may land a prefix.
    Dead,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Io | Fault::Dead => io::Error::from_raw_os_error(5),
            Fault::NoSpace => io::Error::from_raw_os_error(28),
        }
    }
}

/// What a crash does to file contents that were written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Every unsynced byte is lost: a file keeps exactly its durable bytes.
    DropUnsynced,
    /// Each aligned sector of this many bytes (512 or 4096) holding unsynced changes
    /// independently keeps either its new or its old content, and the file's length is
    /// either its durable or its written length.
    Sectors(usize),
}

/// Where a simulated file system's clock starts: 2026-01-01T00:00:00Z, in microseconds.
pub const CLOCK_START: u64 = 1_767_225_600_000_000;

/// SplitMix64: a small deterministic generator, with no dependency. The simulated file system
/// draws its torn writes from it; the tests, fuzz targets, demo and benchmark draw their
/// reproducible data from it. The field is the state: `SplitMix(seed)` starts a stream.
#[derive(Debug, Clone, Default)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, by modulo; 0 when `n` is 0 (and the stream does not advance).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// A file's bytes.
#[derive(Clone, Default)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// The permission bits it was created with (recorded only; nothing checks them).
    mode: u32,
}

impl fmt::Debug for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Inode(written {} bytes, durable {} bytes)",
            self.written.len(),
            self.durable.len()
        )
    }
}

/// An advisory lock's holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Shared(u32),
    Exclusive,
}

#[derive(Debug, Default)]
struct State {
    rng: SplitMix,
    ops: u64,
    fail_at: BTreeMap<u64, Fault>,
    sticky: Option<(u64, Fault)>,
    next_sync: Option<Fault>,
    /// Every inode ever made: handles may outlive the entries that named them.
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// The permission bits each directory was created with.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Advisory locks held, by path: how many shared holders, or one exclusive one.
    locks: BTreeMap<PathBuf, Held>,
    /// The simulated clock, in microseconds since the Unix epoch (see [`Vfs::now`]).
    clock: u64,
    /// Where new segments' salts come from (apart from `rng`, so that drawing one does not
    /// change what a torn write keeps).
    salts: SplitMix,
    /// Where an encrypted store's random bytes come from (see [`Vfs::seeded_random`]).
    random: SplitMix,
}

impl State {
    fn new(seed: u64) -> State {
        State {
            rng: SplitMix(seed),
            clock: CLOCK_START,
            salts: SplitMix(seed ^ 0x5A17_5A17_5A17_5A17),
            random: SplitMix(seed ^ 0x0BAD_5EED_0BAD_5EED),
            ..State::default()
        }
    }

    /// Numbers the next operation and returns the fault it must fail with, if any.
    fn begin(&mut self, is_sync: bool) -> Option<Fault> {
        self.ops += 1;
        let n = self.ops;
        self.fail_at
            .remove(&n)
            .or(match self.sticky {
                Some((from, fault)) if n >= from => Some(fault),
                _ => None,
            })
            .or_else(|| if is_sync { self.next_sync.take() } else { None })
    }

    /// Numbers the next operation, failing it if a fault is due.
    fn gate(&mut self, is_sync: bool) -> io::Result<()> {
        self.begin(is_sync)
            .map_or(Ok(()), |fault| Err(fault.error()))
    }

    fn new_inode(&mut self, inode: Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Whether the directory that would hold `path` exists.
    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => self.dirs.contains(dir),
            _ => true,
        }
    }

    /// Records the directory `dir`, with `mode` if it is new.
    fn add_dir(&mut self, dir: &Path, mode: u32) {
        if self.dirs.insert(dir.to_path_buf()) {
            self.dir_modes.insert(dir.to_path_buf(), mode);
        }
    }

    /// Checks that a file may be created at `path`.
    fn check_creatable(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !self.parent_exists(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(())
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The byte range `offset..offset + len` as indices.
fn span(offset: u64, len: usize) -> io::Result<(usize, usize)> {
    let start = to_usize(offset)?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok((start, end))
}

/// Writes `buf` at `offset`, zero-filling any gap past the end.
fn write_at(bytes: &mut Vec<u8>, buf: &[u8], offset: u64) -> io::Result<()> {
    let (start, end) = span(offset, buf.len())?;
    if end > bytes.len() {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(buf);
    Ok(())
}

/// What survives a crash of one file under `tear`.
fn torn(inode: &Inode, tear: Tear, rng: &mut SplitMix) -> Vec<u8> {
    let (old, new) = (&inode.durable, &inode.written);
    let Tear::Sectors(sector) = tear else {
        return old.clone();
    };
    let sector = sector.max(1);
    let mut out = old.clone();
    if out.len() < new.len() {
        out.resize(new.len(), 0);
    }
    for start in (0..new.len()).step_by(sector) {
        let end = (start + sector).min(new.len());
        let fresh = &new[start..end];
        if out[start..end] != *fresh && rng.coin() {
            out[start..end].copy_from_slice(fresh);
        }
    }
    let len = if old.len() != new.len() && rng.coin() {
        new.len()
    } else {
        old.len()
    };
    out.resize(len, 0);
    out
}

/// A deterministic simulated file system; clones share the same state. Each handle carries
/// the [`Permissions`] it records on what it creates (see [`SimFs::mode`]).
#[derive(Clone, Debug)]
pub struct SimFs(Arc<Mutex<State>>, Permissions);

impl SimFs {
    /// An empty file system whose randomness derives from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SimFs {
        SimFs(
            Arc::new(Mutex::new(State::new(seed))),
            Permissions::default(),
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the simulated clock forward by `by` (it also moves by a microsecond at every
    /// reading, so that stamps differ as a real clock's would).
    pub fn advance(&self, by: std::time::Duration) {
        let mut s = self.state();
        s.clock = s
            .clock
            .saturating_add(u64::try_from(by.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many operations have run (or failed) so far; the next one is numbered `ops() + 1`.
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Makes operation number `n` (counted from 1 since creation) fail with `fault`.
    ///
    /// An index already passed never fires. A failing operation does not run, except that a
    /// failing write may first apply a random prefix of its bytes.
    pub fn fail_at(&self, n: u64, fault: Fault) {
        self.state().fail_at.insert(n, fault);
    }

    /// Makes every operation numbered `from_op` or later fail with `fault`.
    pub fn fail_sticky(&self, from_op: u64, fault: Fault) {
        self.state().sticky = Some((from_op, fault));
    }

    /// Makes the next `sync_data` or `sync_dir` fail with `fault`.
    pub fn fail_next_sync(&self, fault: Fault) {
        self.state().next_sync = Some(fault);
    }

    /// Cancels every pending fault.
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.fail_at.clear();
        s.sticky = None;
        s.next_sync = None;
    }

    /// A new, independent file system holding what would survive a power cut now.
    ///
    /// Only durable directory entries survive; each surviving file holds its durable bytes,
    /// torn with its unsynced ones as `tear` says. In the result, written and durable bytes
    /// agree, no lock is held, no fault is pending and the operation count restarts at 0.
    /// `self` is left untouched, so crashing twice at the same point gives the same result.
    #[must_use]
    pub fn crash(&self, tear: Tear) -> SimFs {
        let s = self.state();
        // A private generator, so `self` stays untouched; mixing in the op count makes
        // crashes at different points tear differently.
        let mut rng = SplitMix(s.rng.0 ^ s.ops.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut next = State::new(0);
        next.dirs = s.dirs.clone();
        next.dir_modes = s.dir_modes.clone();
        let mut renumbered = BTreeMap::new();
        let survivors: BTreeSet<u64> = s.durable.values().copied().collect();
        for ino in survivors {
            if let Some(inode) = s.inodes.get(&ino) {
                let bytes = torn(inode, tear, &mut rng);
                let fresh = next.new_inode(Inode {
                    written: bytes.clone(),
                    durable: bytes,
                    mode: inode.mode,
                });
                renumbered.insert(ino, fresh);
            }
        }
        for (path, ino) in &s.durable {
            if let Some(&fresh) = renumbered.get(ino) {
                next.live.insert(path.clone(), fresh);
                next.durable.insert(path.clone(), fresh);
            }
        }
        next.rng = SplitMix(rng.next_u64());
        // Time goes on across a power cut; salts keep coming from a stream of their own.
        next.clock = s.clock;
        next.salts = SplitMix(rng.next_u64());
        next.random = SplitMix(rng.next_u64());
        SimFs(Arc::new(Mutex::new(next)), self.1)
    }

    /// The bytes a read of the file at `path` would see, if it exists.
    #[must_use]
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        let ino = s.live.get(path)?;
        s.inodes.get(ino).map(|inode| inode.written.clone())
    }

    /// Creates or overwrites the file at `path`, already durable, with `bytes`.
    ///
    /// Missing parent directories are created. Meant for building directory images; it is
    /// not counted as an operation and never fails.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.state();
        if let Some(dir) = path.parent() {
            for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
                s.add_dir(d, self.1.dir_mode());
            }
        }
        let inode = Inode {
            written: bytes.to_vec(),
            durable: bytes.to_vec(),
            mode: self.1.file_mode(),
        };
        let existing = s.live.get(path).copied();
        let ino = match existing.and_then(|ino| s.inodes.get_mut(&ino).map(|i| (ino, i))) {
            Some((ino, slot)) => {
                *slot = inode;
                ino
            }
            None => s.new_inode(inode),
        };
        s.live.insert(path.to_path_buf(), ino);
        s.durable.insert(path.to_path_buf(), ino);
    }

    /// The durable length of the file live at `path`, if it exists.
    #[must_use]
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let s = self.state();
        let ino = s.live.get(path)?;
        s.inodes.get(ino).map(|inode| inode.durable.len() as u64)
    }

    /// The permission bits the live file or directory at `path` was created with.
    #[must_use]
    pub fn mode(&self, path: &Path) -> Option<u32> {
        let s = self.state();
        match s.live.get(path) {
            Some(ino) => s.inodes.get(ino).map(|inode| inode.mode),
            None => s.dir_modes.get(path).copied(),
        }
    }

    /// The paths of all live files, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state().live.keys().cloned().collect()
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.gate(false)?;
        let chain: Vec<&Path> = dir
            .ancestors()
            .filter(|d| !d.as_os_str().is_empty())
            .collect();
        if chain.iter().any(|d| s.live.contains_key(*d)) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        for d in chain {
            s.add_dir(d, self.1.dir_mode());
        }
        Ok(())
    }

    /// Counted as an operation; a fault makes it answer `false`, as `Path::is_dir` does on error.
    fn is_dir(&self, dir: &Path) -> bool {
        let mut s = self.state();
        s.begin(false).is_none() && s.dirs.contains(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state();
        s.gate(false)?;
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let names = s.live.keys().filter(|p| p.parent() == Some(dir));
        Ok(names
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut s = self.state();
        s.gate(false)?;
        let ino = match (mode, s.live.get(path).copied()) {
            (OpenMode::CreateNew, Some(_)) => return Err(io::ErrorKind::AlreadyExists.into()),
            (OpenMode::CreateNew, None) => {
                s.check_creatable(path)?;
                let ino = s.new_inode(Inode {
                    mode: self.1.file_mode(),
                    ..Inode::default()
                });
                s.live.insert(path.to_path_buf(), ino);
                ino
            }
            (_, Some(ino)) => ino,
            (_, None) if s.dirs.contains(path) => return Err(io::ErrorKind::IsADirectory.into()),
            (_, None) => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.gate(false)?;
        match s.live.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.gate(false)?;
        let Some(&ino) = s.live.get(from) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        if from == to {
            return Ok(());
        }
        if s.dirs.contains(to) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        if !s.parent_exists(to) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.live.remove(from);
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.gate(true)?;
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable.retain(|p, _| !in_dir(p));
        let live: Vec<(PathBuf, u64)> = s
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        s.durable.extend(live);
        Ok(())
    }

    fn lock_file(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        let mut s = self.state();
        s.gate(false)?;
        if !s.live.contains_key(path) {
            s.check_creatable(path)?;
            let ino = s.new_inode(Inode {
                mode: self.1.file_mode(),
                ..Inode::default()
            });
            s.live.insert(path.to_path_buf(), ino);
        }
        let ino = s.live.get(path).copied();
        Ok(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            ino,
            held: Mutex::new(None),
        }))
    }

    fn with_permissions(&self, perms: Permissions) -> Option<Arc<dyn Vfs>> {
        Some(Arc::new(SimFs(self.0.clone(), perms)))
    }

    /// Crash points count operations: they must all come from the caller's thread.
    fn deterministic(&self) -> bool {
        true
    }

    /// The simulated clock, which a reading moves by a microsecond (not counted as an
    /// operation: reading the clock changes no crash point).
    fn now(&self) -> Timestamp {
        let mut s = self.state();
        let t = s.clock;
        s.clock = s.clock.saturating_add(1);
        Timestamp(t)
    }

    fn salt(&self) -> u64 {
        self.state().salts.next_u64()
    }

    /// Seeded bytes: a simulated file system holds no real data (see the trait's docs), and
    /// an encrypted store on it hides nothing from anyone who knows the seed.
    fn seeded_random(&self, buf: &mut [u8], _: super::sealed::Crate) -> bool {
        let mut s = self.state();
        for chunk in buf.chunks_mut(8) {
            let bytes = s.random.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        true
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state();
        s.live.contains_key(path) || s.dirs.contains(path)
    }

    fn is_locked(&self, path: &Path, mode: LockMode) -> io::Result<bool> {
        Ok(match (self.state().locks.get(path), mode) {
            (None, _) => false,
            (Some(Held::Shared(_)), LockMode::Shared) => false,
            (Some(_), _) => true,
        })
    }
}

/// A [`SimFs`] lock file handle: its lock is released when it is dropped. (Locks are by
/// path; taking or releasing one is not a numbered operation and never fails.)
#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
    ino: Option<u64>,
    held: Mutex<Option<LockMode>>,
}

impl SimLock {
    fn held(&self) -> MutexGuard<'_, Option<LockMode>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl VfsLock for SimLock {
    fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        let mut held = self.held();
        if *held == Some(mode) {
            return Ok(true);
        }
        let mut s = self.fs.state();
        // What the others hold, without this handle's own part.
        let others = match (s.locks.get(&self.path).copied(), *held) {
            (Some(Held::Shared(n)), Some(LockMode::Shared)) if n > 1 => Some(Held::Shared(n - 1)),
            (Some(_), Some(_)) | (None, _) => None,
            (Some(h), None) => Some(h),
        };
        let next = match (others, mode) {
            (None, LockMode::Exclusive) => Held::Exclusive,
            (None, LockMode::Shared) => Held::Shared(1),
            (Some(Held::Shared(n)), LockMode::Shared) => Held::Shared(n + 1),
            (Some(_), _) => return Ok(false),
        };
        s.locks.insert(self.path.clone(), next);
        *held = Some(mode);
        Ok(true)
    }

    fn lock(&self) -> io::Result<()> {
        while !self.try_lock(LockMode::Exclusive)? {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        Ok(())
    }

    fn unlock(&self) -> io::Result<()> {
        let mut held = self.held();
        if held.take().is_none() {
            return Ok(());
        }
        let mut s = self.fs.state();
        match s.locks.get(&self.path).copied() {
            Some(Held::Shared(n)) if n > 1 => {
                s.locks.insert(self.path.clone(), Held::Shared(n - 1));
            }
            _ => {
                s.locks.remove(&self.path);
            }
        }
        Ok(())
    }

    fn is_current(&self) -> io::Result<bool> {
        Ok(self.fs.state().live.get(&self.path).copied() == self.ino)
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

/// An open [`SimFs`] file: a handle on an inode.
struct SimFile {
    fs: SimFs,
    ino: u64,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile(inode {}, writable {})", self.ino, self.writable)
    }
}

impl SimFile {
    /// Runs `op` on this file's inode as one numbered operation.
    fn run<T>(&self, op: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.fs.state();
        s.gate(false)?;
        op(s.inode(self.ino)?)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::ErrorKind::PermissionDenied.into())
        }
    }
}

impl VfsFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.run(|inode| Ok(inode.written.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.run(|inode| {
            let (start, end) = span(offset, buf.len())?;
            let src = inode
                .written
                .get(start..end)
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        if let Some(fault) = s.begin(false) {
            if self.writable && fault != Fault::Dead {
                // A short write: some prefix may have landed before the error.
                // Below `buf.len()`, so it fits back in a usize.
                let prefix = usize::try_from(s.rng.below(buf.len() as u64)).unwrap_or(0);
                if prefix > 0 {
                    write_at(&mut s.inode(self.ino)?.written, &buf[..prefix], offset)?;
                }
            }
            return Err(fault.error());
        }
        self.check_writable()?;
        write_at(&mut s.inode(self.ino)?.written, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.state();
        if let Some(fault) = s.begin(true) {
            // fsyncgate: the data may never reach the disk.
            return Err(fault.error());
        }
        let inode = s.inode(self.ino)?;
        inode.durable.clone_from(&inode.written);
        Ok(())
    }

    fn map(&self) -> io::Result<Mapping> {
        self.run(|inode| Ok(Mapping::from_vec(inode.written.clone())))
    }
}

#[cfg(test)]
mod tests;
