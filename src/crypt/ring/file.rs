//! [`Crypt`]'s reads and writes of `KEYS`: reading it (whole, or what other processes
//! appended since), appending an entry, syncing it before a segment, rewriting it whole,
//! and setting a torn append aside. The layout is `keyfile.rs`'s.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Crypt, Ring, new_header};
use crate::crypt::envelope;
use crate::crypt::keyfile::{self, Entry, Header, KEYS_FILE, KEYS_HEADER_LEN};
use crate::crypt::master::MasterKey;
use crate::error::{Error, Result};
use crate::id::Lsn;
use crate::io::{Dir, OpenMode, VfsFile};

/// Longest `KEYS` file read (millions of data keys' entries). A longer one is refused, not
/// read into memory.
pub(crate) const MAX_KEYS_LEN: u64 = 1 << 30;

impl Crypt {
    /// The bytes of `KEYS` from offset `from` to its end.
    pub(super) fn read(&self, from: u64) -> Result<Vec<u8>> {
        let f = self.open_read()?;
        let len = self.len_of(&*f)?;
        self.read_of(&*f, len, from)
    }

    /// The length of `f` (`KEYS`, opened).
    pub(super) fn len_of(&self, f: &dyn VfsFile) -> Result<u64> {
        f.len().map_err(|e| Error::io("stat", &self.path, e))
    }

    /// The bytes of `f` (`KEYS`, opened, `len` bytes long) from offset `from` to its end.
    ///
    /// # Errors
    /// [`Error::KeyFile`] for a file longer than [`MAX_KEYS_LEN`] (nothing this crate
    /// writes: a sparse or damaged file is not read into memory whole); [`Error::Io`].
    pub(super) fn read_of(&self, f: &dyn VfsFile, len: u64, from: u64) -> Result<Vec<u8>> {
        if len > MAX_KEYS_LEN {
            return Err(Error::KeyFile {
                path: self.path.clone(),
                offset: MAX_KEYS_LEN,
                reason: "longer than 1 GiB: no key file this crate writes is",
            });
        }
        let mut buf = vec![0u8; len.saturating_sub(from) as usize];
        f.read_exact_at(&mut buf, from.min(len))
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(buf)
    }

    /// The ring a whole file's bytes make.
    pub(super) fn parse(&self, bytes: &[u8]) -> Result<Ring> {
        let header = Header::decode(bytes, &self.path)?;
        let secret = envelope::unwrap(self.master().bytes(), &header.binding(), &header.secret)
            .ok_or_else(|| Error::WrongKey {
                path: self.dir.clone(),
            })?;
        let mut ring = Ring::new(&header, secret);
        let (entries, end, tail) = keyfile::entries(bytes, header.len(), 0);
        self.check_tail(tail, end as u64)?;
        for e in entries {
            ring.apply(e);
        }
        ring.valid_len = end as u64;
        Ok(ring)
    }

    /// `Error::KeyFile` for damage after the valid entries (a torn append is no damage).
    pub(super) fn check_tail(&self, tail: keyfile::Tail, at: u64) -> Result<()> {
        let reason = match tail {
            keyfile::Tail::Clean | keyfile::Tail::Torn => return Ok(()),
            keyfile::Tail::Damaged => "an entry fails its checksum with entries after it",
            keyfile::Tail::Unverifiable => {
                "the bytes after its last valid entry frame more entries than a torn append \
                 can: damage, not a torn append"
            }
        };
        Err(Error::KeyFile {
            path: self.path.clone(),
            offset: at,
            reason,
        })
    }

    /// Whether bytes follow the entries that verify (read as a torn append, which they
    /// are unless the log proves otherwise: [`Crypt::check_tail_against`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the file's length cannot be read.
    pub(crate) fn has_unread_tail(&self) -> Result<bool> {
        let f = self.open_read()?;
        Ok(self.len_of(&*f)? > self.ring().valid_len)
    }

    /// Rewrites a version 1 `KEYS` as version 2, with `durable_end` (the log's end, all of
    /// it durable): what a writable open does before it appends an entry unsynced. A
    /// version 1 file's writers synced each entry, so none of its keys was lost.
    ///
    /// # Errors
    /// As [`Crypt::rekey`].
    pub(crate) fn upgrade(&self, durable_end: Lsn) -> Result<()> {
        // Read before the write lock was taken: another process may have upgraded it (and
        // changed it) since.
        self.refresh()?;
        if self.ring().durable_end.is_some() {
            return Ok(());
        }
        let (entries, _) = self.ring().without(&HashSet::new());
        self.rewrite(&self.master(), entries, durable_end)
    }

    /// Replaces `KEYS` with a new file (new file id) holding `entries`, under `master`,
    /// whose durable end is the greater of the file's and `durable_end` (it only grows:
    /// every key destroyed so far was destroyed before it).
    pub(super) fn rewrite(
        &self,
        master: &MasterKey,
        entries: Vec<Entry>,
        durable_end: Lsn,
    ) -> Result<()> {
        self.keep_torn_tail()?;
        let end = self.ring().durable_end.unwrap_or(0).max(durable_end.0);
        let header = new_header(&*self.vfs, master, &self.ring().secret, end)?;
        let mut bytes = header.encode();
        for e in &entries {
            e.encode(&mut bytes);
        }
        Dir::new(&*self.vfs, &self.dir).atomic_write(&self.path, &bytes)?;
        let mut fresh = Ring::new(&header, self.ring().secret.clone());
        fresh.resets = self.ring().resets;
        for e in entries {
            fresh.apply(e);
        }
        fresh.valid_len = bytes.len() as u64;
        self.note_synced(header.file_id, fresh.valid_len);
        *self.ring_mut() = fresh;
        Ok(())
    }
}

impl crate::recovery::Keys for Crypt {
    fn durable_end(&self) -> Option<Lsn> {
        self.ring().durable_end.map(Lsn)
    }

    fn holds(&self, id: u64) -> Result<bool> {
        if self.ring().keys.contains_key(&id) {
            return Ok(true);
        }
        // Another process may have appended it since this one read the file.
        self.refresh()?;
        Ok(self.ring().keys.contains_key(&id))
    }
}

impl Crypt {
    /// Checks a tail that reads as a torn append against the log. A record becomes durable
    /// only once its key's entry is ([`Crypt::sync`]), and recovery has cut the log at
    /// the first record past its durable point whose key is missing, so a record the log
    /// still holds under a key `KEYS` lacks proves the entry was durable once: the bad tail
    /// is damage (the last entry's bytes changed since), not a torn append, and taking it
    /// for one would lose that key (and with it every record sealed under it) at the next
    /// key's append. `sealed_under` lists the key ids of records the live sessions reach.
    ///
    /// # Errors
    /// [`Error::KeyFile`] for such damage (`KEYS` read again first: another process may
    /// have appended the entry since); as [`Crypt::refresh`].
    pub(crate) fn check_tail_against(&self, sealed_under: &[u64]) -> Result<()> {
        let missing = |ring: &Ring| sealed_under.iter().any(|id| !ring.keys.contains_key(id));
        if !missing(&self.ring()) {
            return Ok(());
        }
        self.refresh()?;
        let r = self.ring();
        if missing(&r) {
            return Err(Error::KeyFile {
                path: self.path.clone(),
                offset: r.valid_len,
                reason: "its last entry fails its checksum, yet the log holds records sealed \
                         under a key only that entry can hold: damage, not a torn append",
            });
        }
        Ok(())
    }

    /// Brings the ring up to date with `KEYS`: entries other processes appended, or a
    /// rewrite (a new file id).
    pub(super) fn refresh(&self) -> Result<()> {
        let f = self.open_read()?;
        self.refresh_from(&*f)
    }

    /// [`Crypt::refresh`] through `f`, `KEYS` opened. What it read is installed only over
    /// the ring it started from: a thread of this process that changed the ring meanwhile
    /// (a rewrite, an append, another refresh) knew the file as well or better.
    pub(super) fn refresh_from(&self, f: &dyn VfsFile) -> Result<()> {
        let len = self.len_of(f)?;
        let head = self.read_prefix_of(f, len, KEYS_HEADER_LEN)?; // (a version 1 header is shorter)
        let header = Header::decode(&head, &self.path)?;
        let (seen, from) = {
            let r = self.ring();
            (r.file_id, r.valid_len)
        };
        let unchanged = |r: &Ring| r.file_id == seen && r.valid_len == from;
        if seen != header.file_id {
            // A rewrite: read whole, through the path (`f` may be a file renamed over since).
            let bytes = self.read(0)?;
            let fresh = self.parse(&bytes)?;
            let mut r = self.ring_mut();
            if unchanged(&r) {
                *r = fresh;
            }
            return Ok(());
        }
        let tail = self.read_of(f, len, from)?;
        let (entries, end, rest) = keyfile::entries(&tail, 0, from);
        self.check_tail(rest, from + end as u64)?;
        if end == 0 {
            return Ok(());
        }
        let mut r = self.ring_keeping_keys();
        if unchanged(&r) {
            let mut replaced = false;
            for e in entries {
                replaced |= r.apply(e);
            }
            r.valid_len = from + end as u64;
            if replaced {
                self.keys_changed();
            }
        }
        Ok(())
    }

    /// Up to `n` bytes from the start of `f` (`len` bytes long: fewer if it is shorter).
    pub(super) fn read_prefix_of(&self, f: &dyn VfsFile, len: u64, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n.min(usize::try_from(len).unwrap_or(usize::MAX))];
        f.read_exact_at(&mut buf, 0).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::KeyFile {
                    path: self.path.clone(),
                    offset: 0,
                    reason: "shorter than its header",
                }
            } else {
                Error::io("read", &self.path, e)
            }
        })?;
        Ok(buf)
    }

    /// Appends `entry` to `KEYS` through `f` (opened for writing, under the write lock, so
    /// no other process renames a rewrite over it meanwhile), synced when `sync` (else the
    /// next [`Crypt::sync`] makes it durable). A torn append a crash left at the end is set
    /// aside first (copied to `quarantine/`, then the file rewritten without it), so entries
    /// only ever go at the end of a file whose entries all verify.
    pub(super) fn append_to(
        &self,
        mut f: Arc<dyn VfsFile>,
        entry: Entry,
        sync: bool,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        entry.encode(&mut bytes);
        let len = self.len_of(&*f)?;
        let at = self.ring().valid_len;
        if len != at {
            self.set_torn_aside()?;
            f = self.open_rw()?;
        }
        let at = self.ring().valid_len;
        f.write_all_at(&bytes, at)
            .map_err(|e| Error::io("write", &self.path, e))?;
        let end = at + bytes.len() as u64;
        if sync {
            f.sync_data()
                .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        }
        let mut r = self.ring_keeping_keys();
        // (A reader's refresh may have read the entry and applied it already.)
        if r.valid_len == at {
            if r.apply(entry) {
                self.keys_changed();
            }
            r.valid_len = end;
        }
        if sync {
            self.note_synced(r.file_id, end);
        }
        Ok(())
    }

    /// Makes every entry of `KEYS` durable, this process's and other processes' (a dead
    /// one's too): called before every `fdatasync` of a segment, so that no record becomes
    /// durable before the key it is sealed under. The `fdatasync` (which flushes the
    /// device's cache even when the file is clean) is skipped while the file is the one this
    /// process last made durable, at the same length: entries only ever go at its end, and
    /// a rewrite is a new file (a new id), synced whole before it is renamed in place.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::KeyFile`] if the file is shorter than its header.
    pub(crate) fn sync(&self) -> Result<()> {
        let f = self.open_rw()?;
        let len = self.len_of(&*f)?;
        let head = self.read_prefix_of(&*f, len, KEYS_HEADER_LEN)?;
        let file_id = Header::decode(&head, &self.path)?.file_id;
        if *self.synced.lock().unwrap_or_else(|e| e.into_inner()) == (file_id, len) {
            return Ok(());
        }
        f.sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        self.note_synced(file_id, len);
        Ok(())
    }

    pub(super) fn note_synced(&self, file_id: u64, len: u64) {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = (file_id, len);
    }

    pub(super) fn open_read(&self) -> Result<Arc<dyn VfsFile>> {
        self.vfs
            .open(&self.path, OpenMode::Read)
            .map_err(|e| Error::io("open", &self.path, e))
    }

    pub(super) fn open_rw(&self) -> Result<Arc<dyn VfsFile>> {
        self.vfs
            .open(&self.path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &self.path, e))
    }

    /// Rewrites `KEYS` without the torn append at its end ([`Crypt::rewrite`] sets its
    /// bytes aside first). The torn entries' keys were never durable: the durable end stays.
    pub(super) fn set_torn_aside(&self) -> Result<()> {
        let (entries, _) = self.ring().without(&HashSet::new());
        self.rewrite(&self.master(), entries, Lsn(0))
    }

    /// Copies the bytes after the entries that verify (a torn append, which a rewrite drops)
    /// to `quarantine/` (synced): nothing is destroyed.
    pub(super) fn keep_torn_tail(&self) -> Result<()> {
        let from = self.ring().valid_len;
        let torn = self.read(from)?;
        if torn.is_empty() {
            return Ok(());
        }
        let dir = Dir::new(&*self.vfs, &self.dir);
        let quarantine = dir.join("quarantine");
        dir.create_dir(&quarantine)?;
        let qdir = Dir::new(&*self.vfs, &quarantine);
        qdir.write_unique(&format!("{KEYS_FILE}-{from:012}.torn"), &torn)?;
        qdir.sync()
    }
}
