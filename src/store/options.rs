//! Options for opening a store: durability, segment size, limits, recovery mode.

use std::path::Path;
use std::sync::Arc;

use super::Store;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::format::DEFAULT_MAX_RECORD_LEN;
use crate::io::{Permissions, StdFs, Vfs};
use crate::recovery::RecoveryMode;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Smallest segment size accepted (small segments are for tests).
pub const MIN_SEGMENT_SIZE: u64 = 4 << 10;
/// Largest segment size accepted: offsets in the index are 32-bit.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// How to open a [`Store`]. Build with [`Store::builder`], finish with [`Options::open`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) max_record_len: u32,
    pub(crate) recovery: RecoveryMode,
    pub(crate) read_only: bool,
    pub(crate) exclusive: bool,
    pub(crate) permissions: Permissions,
    pub(crate) retention: super::Retention,
    pub(crate) keep_quarantine: bool,
    pub(crate) auto_compact: Option<super::AutoCompact>,
    pub(crate) encryption: Option<crate::crypt::MasterKey>,
    pub(crate) decrypt_ahead: bool,
    pub(crate) vfs: Arc<dyn Vfs>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::default(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            recovery: RecoveryMode::default(),
            read_only: false,
            exclusive: false,
            permissions: Permissions::default(),
            retention: super::Retention::default(),
            keep_quarantine: false,
            auto_compact: None,
            encryption: None,
            decrypt_ahead: true,
            vfs: Arc::new(StdFs::default()),
        }
    }
}

impl Options {
    /// When an append is durable. Default = [`Durability::Buffered`].
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// The size at which the active segment is sealed and a new one started.
    /// Default = 64 MiB; from 4 KiB to 1 GiB.
    pub fn segment_size(mut self, bytes: u64) -> Options {
        self.segment_size = bytes;
        self
    }

    /// The largest message payload accepted, in bytes. Default = 16 MiB, which is also the
    /// most the decoder ever accepts; from 1 byte to 16 MiB.
    pub fn max_record_len(mut self, bytes: u32) -> Options {
        self.max_record_len = bytes;
        self
    }

    /// What to do with damage found on open. Default = [`RecoveryMode::PointInTime`].
    pub fn recovery(mut self, mode: RecoveryMode) -> Options {
        self.recovery = mode;
        self
    }

    /// Opens without any lock and never changes a file; reads still see what writers append.
    /// Default = `false`.
    pub fn read_only(mut self, read_only: bool) -> Options {
        self.read_only = read_only;
        self
    }

    /// Holds the store's write lock for the store's lifetime instead of for each write.
    /// Default = `false`: any number of processes may open the store for writing at once.
    ///
    /// An exclusive store skips the per-write lock and the check, on each read, of whether
    /// another process wrote: for a single process that wants every last microsecond. While
    /// it is open, other writable opens fail with [`Error::Locked`] (and it fails to open
    /// while another writer has the store open); read-only opens work as always. A
    /// [`RecoveryMode::Salvage`] open is always exclusive (it rewrites segments).
    pub fn exclusive(mut self, exclusive: bool) -> Options {
        self.exclusive = exclusive;
        self
    }

    /// The modes of the directories and files the store creates, exactly, whatever the
    /// umask. Default = [`Permissions::OWNER_ONLY`] (`0700` / `0600`);
    /// [`Permissions::GROUP_READABLE`] or [`Permissions::from_file_mode`] widen them.
    /// Existing files keep their modes ([`crate::permission_report`] finds exposed ones).
    pub fn permissions(mut self, permissions: Permissions) -> Options {
        self.permissions = permissions;
        self
    }

    /// Which sessions each compaction deletes first, for their age or the store's size
    /// (see [`super::Retention`]). Default: none.
    pub fn retention(mut self, retention: super::Retention) -> Options {
        self.retention = retention;
        self
    }

    /// Whether a compaction that drops records leaves `quarantine/` as it is. By default
    /// (`false`) it then also empties it ([`Store::purge_quarantine`]): the bytes repairs and
    /// torn-tail cuts set aside there may hold messages of the sessions it erases, and an
    /// erased session leaves no byte in any file of the store. `true` keeps them for an
    /// operator to inspect (then purge them by hand).
    pub fn keep_quarantine(mut self, keep: bool) -> Options {
        self.keep_quarantine = keep;
        self
    }

    /// Compacts in the background when it pays (see [`super::AutoCompact`]). Default: off
    /// ([`Store::compact`] runs only when called).
    pub fn auto_compact(mut self, policy: super::AutoCompact) -> Options {
        self.auto_compact = Some(policy);
        self
    }

    /// Encrypts the store at rest under `master` (see `docs/format.md`, "Encryption"):
    /// each session's messages and metadata are sealed under a data key of its own, kept
    /// in the store's `KEYS` file wrapped by `master`; [`Store::delete_session`] destroys
    /// the session's keys before it returns, so its records are unreadable from then on,
    /// in copies of the segments too. A new store is created encrypted; an existing one
    /// must have been. Default: not encrypted.
    ///
    /// Opening an encrypted store without its key is [`Error::KeyRequired`], with another
    /// key [`Error::WrongKey`], and opening a store written without a key with one
    /// [`Error::NotEncrypted`]; each changes nothing.
    pub fn encryption(mut self, master: crate::crypt::MasterKey) -> Options {
        self.encryption = Some(master);
        self
    }

    /// Whether a long read of an encrypted store (a stream of [`Store::messages`],
    /// [`Store::range`] or [`Store::tail`]) decrypts every other batch of its messages on a
    /// helper thread. It starts after the read's first 256 messages, with at least 1 024
    /// still to read, so short reads never pay for a thread. The process runs at most one
    /// helper per core but one (none on a single core); a read that finds none free stays on
    /// its own thread and tries again a batch later. A helper holds up to two batches of at
    /// most 512 messages or about 1 MiB (plus one message) each, and stops when the read is
    /// dropped. The read yields exactly what it would without it, errors included: a batch
    /// read before a rewrite of `KEYS` (a delete or a retention destroying keys, a rekey,
    /// in this process or another) is read again. It costs about 1.2× the CPU of one
    /// thread, and saves time only when a second core is free. Default: on. A setting of the handle:
    /// another open of the same store in this process may choose otherwise. (No effect
    /// without encryption.)
    ///
    /// [`Store::messages`]: super::Store::messages
    /// [`Store::range`]: super::Store::range
    /// [`Store::tail`]: super::Store::tail
    pub fn decrypt_ahead(mut self, on: bool) -> Options {
        self.decrypt_ahead = on;
        self
    }

    /// The file system to use. Default = the real one ([`StdFs`]).
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Options {
        self.vfs = vfs;
        self
    }

    /// Opens (creating when writable and missing) the store in `dir`, recovering it.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for out-of-range options; [`Error::Locked`] when an
    /// exclusive open meets another writer, or any writable open an exclusive one; [`Error::Corrupt`], [`Error::UnsupportedVersion`] or
    /// [`Error::UnknownRecordKind`] for damage the recovery mode does not repair;
    /// [`Error::NotAStore`] for a read-only open of a missing directory;
    /// [`Error::AlreadyOpen`] when this process has the store open with other options;
    /// [`Error::Io`]. A failed open changes nothing (a `LOCK` file it made is removed).
    pub fn open(mut self, dir: impl AsRef<Path>) -> Result<Store> {
        self.validate()?;
        if let Some(vfs) = self.vfs.with_permissions(self.permissions) {
            self.vfs = vfs;
        }
        Store::open_with(self, dir.as_ref())
    }

    fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(Error::InvalidOption {
                option: "segment_size",
                reason: format!(
                    "{} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                    self.segment_size
                ),
            });
        }
        if !(1..=DEFAULT_MAX_RECORD_LEN).contains(&self.max_record_len) {
            return Err(Error::InvalidOption {
                option: "max_record_len",
                reason: format!(
                    "{} is outside 1..={DEFAULT_MAX_RECORD_LEN}",
                    self.max_record_len
                ),
            });
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(Error::InvalidOption {
                option: "durability",
                reason: "Interval(0) would sync continuously; use Always".into(),
            });
        }
        Ok(())
    }
}
