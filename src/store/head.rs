//! The log's head, kept in the `LOCK` file: which segment is the newest one a writer has
//! begun to create, so that finding out whether the log moved to a new segment is a read of
//! shared memory instead of a `stat` of a path.
//!
//! Layout (little-endian), at offset 0 of `LOCK`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CVLGHEAD` |
//! | 8 | 8 | first LSN of the newest segment (its id) |
//! | 16 | 4 | CRC-32 of bytes 0..16 |
//! | 20 | 4 | zero |
//! | 24 | 8 | the durable LSN: every record up to it was covered by a completed `fdatasync` |
//! | 32 | 4 | CRC-32 of bytes 24..32 |
//! | 36 | 4 | zero |
//! | 40 | 8 | the epoch: how many compactions have replaced segments of this store |
//! | 48 | 4 | CRC-32 of bytes 40..48 |
//! | 52 | 4 | zero |
//!
//! A compaction replaces sealed segments whose records other processes' indexes point at:
//! it bumps the epoch (under the write lock, after the switch), and an open store that sees
//! a new epoch rebuilds its index from the segments as they now are (see
//! `State::reload_if_compacted`). Segment ids never change, only their contents: the head's
//! segment id keeps its meaning.
//!
//! Writers beside each other write the durable LSN after each `fdatasync` (taking turns on
//! `SYNC`), so a writer whose records another process's sync already covered skips its own.
//! It only ever grows while processes run, and nothing relies on it after a crash: recovery
//! never reads it.
//!
//! Invariant: a writer writes the head, under the write lock, *before* it creates a segment,
//! so every segment that exists has an id at most the head's. The converse need not hold (a
//! writer may die between the two): a head beyond the last segment only sends a reader to
//! look for a segment that is not there, and the next writer sets it back. A head that is
//! missing or fails its checksum (an empty `LOCK` of an older store, a torn write) makes the
//! check fall back to looking for the next segment's file.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::id::{Lsn, SegmentId};
use crate::io::{LOCK_FILE, Mapping, OpenMode, Vfs, VfsFile};

/// Magic at the start of the head.
const HEAD_MAGIC: [u8; 8] = *b"CVLGHEAD";
/// Bytes of the head.
pub const HEAD_LEN: usize = 24;

/// The head of one store's log, as this process sees it.
#[derive(Debug, Default)]
pub(super) struct Head {
    file: Option<Arc<dyn VfsFile>>,
    /// A shared map of `LOCK` (when the file system's maps are live and it holds a head).
    map: RwLock<Option<Mapping>>,
}

impl Head {
    /// Opens the head in `dir`'s `LOCK` file (for writing when `writable`). A missing or
    /// unreadable `LOCK` gives a head that is never known (every check falls back).
    pub(super) fn open(vfs: &dyn Vfs, dir: &Path, writable: bool) -> Head {
        let mode = if writable {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        Head {
            file: vfs.open(&dir.join(LOCK_FILE), mode).ok(),
            map: RwLock::new(None),
        }
    }

    /// The newest segment a writer has begun to create, if the head is known.
    pub(super) fn get(&self) -> Option<SegmentId> {
        let file = self.file.as_ref()?;
        if file.map_is_live() {
            if let Some(map) = self.map.read().unwrap_or_else(|e| e.into_inner()).as_ref()
                && map.len() >= HEAD_LEN
            {
                return decode(map);
            }
            // Not mapped yet, or mapped while the file was still empty.
            if file.len().ok()? < HEAD_LEN as u64 {
                return None;
            }
            let map = file.map().ok()?;
            let head = decode(&map);
            *self.map.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
            return head;
        }
        let mut buf = [0u8; HEAD_LEN];
        file.read_exact_at(&mut buf, 0).ok()?;
        decode(&buf)
    }

    /// Records `id` as the newest segment (under the write lock, before creating it).
    ///
    /// # Errors
    /// [`Error::Io`] if `LOCK` cannot be written.
    pub(super) fn set(&self, dir: &Path, id: SegmentId) -> Result<()> {
        if self.get() == Some(id) {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.write_all_at(&encode(id), 0)
            .map_err(|e| Error::io("write", dir.join(LOCK_FILE), e))
    }
}

/// Where the epoch is in `LOCK`, and its bytes; `LOCK` is this long once a writer of this
/// version opened the store.
const EPOCH_AT: usize = 40;
const EPOCH_LEN: usize = 16;
/// The length of `LOCK`'s contents.
pub const LOCK_CONTENT_LEN: usize = EPOCH_AT + EPOCH_LEN;

impl Head {
    /// How many compactions replaced segments of this store; `None` when `LOCK` holds no
    /// epoch (no writer of this version opened it) or it fails its checksum. A read of
    /// shared memory once mapped.
    pub(super) fn epoch(&self) -> Option<u64> {
        let file = self.file.as_ref()?;
        if file.map_is_live() {
            if let Some(map) = self.map.read().unwrap_or_else(|e| e.into_inner()).as_ref()
                && map.len() >= LOCK_CONTENT_LEN
            {
                return decode_counter(&map[EPOCH_AT..LOCK_CONTENT_LEN]);
            }
            if file.len().ok()? >= LOCK_CONTENT_LEN as u64 {
                let map = file.map().ok()?;
                // (The file may have shrunk since its length was read.)
                let epoch = decode_counter(map.get(EPOCH_AT..LOCK_CONTENT_LEN)?);
                *self.map.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
                return epoch;
            }
        }
        let mut b = [0u8; EPOCH_LEN];
        file.read_exact_at(&mut b, EPOCH_AT as u64).ok()?;
        decode_counter(&b)
    }

    /// At a writable open, under the write lock: gives `LOCK` an epoch (0) if it has none,
    /// so that it has its whole length before anyone maps it.
    ///
    /// # Errors
    /// [`Error::Io`] if `LOCK` cannot be written.
    pub(super) fn ensure_epoch(&self, dir: &Path) -> Result<()> {
        if self.epoch().is_some() {
            return Ok(());
        }
        self.write_epoch(dir, 0)
    }

    /// Counts one more compaction (under the write lock, once its segments are in place).
    ///
    /// # Errors
    /// [`Error::Io`] if `LOCK` cannot be written.
    pub(super) fn bump_epoch(&self, dir: &Path) -> Result<u64> {
        let next = self.epoch().unwrap_or(0).wrapping_add(1);
        self.write_epoch(dir, next)?;
        Ok(next)
    }

    fn write_epoch(&self, dir: &Path, epoch: u64) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.write_all_at(&encode_counter(epoch), EPOCH_AT as u64)
            .map_err(|e| Error::io("write", dir.join(LOCK_FILE), e))
    }
}

/// A counter as `LOCK` keeps it: the value, its CRC-32, 4 zero bytes.
fn encode_counter(value: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&b[..8]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_counter(b: &[u8]) -> Option<u64> {
    let value: [u8; 8] = b.get(..8)?.try_into().ok()?;
    let crc = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
    (crc32fast::hash(&value) == crc).then(|| u64::from_le_bytes(value))
}

/// Where the durable LSN is in `LOCK`, and its bytes.
const DURABLE_AT: u64 = HEAD_LEN as u64;
const DURABLE_LEN: usize = 16;

impl Head {
    /// The durable LSN other processes' syncs recorded, if any (one positioned read: it is
    /// read only before a sync, which costs far more).
    pub(super) fn durable(&self) -> Option<Lsn> {
        let mut b = [0u8; DURABLE_LEN];
        self.file.as_ref()?.read_exact_at(&mut b, DURABLE_AT).ok()?;
        decode_counter(&b).map(Lsn)
    }

    /// Records that every record up to `lsn` is durable (taking the greater of it and what is
    /// there). Call with the sync turn held.
    ///
    /// # Errors
    /// [`Error::Io`] if `LOCK` cannot be written.
    pub(super) fn set_durable(&self, dir: &Path, lsn: Lsn) -> Result<()> {
        let lsn = self.durable().map_or(lsn, |d| d.max(lsn));
        self.write_durable(dir, lsn)
    }

    /// At a writable open, under the write lock: a durable LSN beyond the log's last record
    /// (the segments were restored from an older copy, or salvage cut them) would let a
    /// later sync be skipped for records nobody synced; it comes back to `last`.
    ///
    /// # Errors
    /// [`Error::Io`] if `LOCK` cannot be written.
    pub(super) fn cap_durable(&self, dir: &Path, last: Lsn) -> Result<()> {
        match self.durable() {
            Some(d) if d > last => self.write_durable(dir, last),
            _ => Ok(()),
        }
    }

    fn write_durable(&self, dir: &Path, lsn: Lsn) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.write_all_at(&encode_counter(lsn.0), DURABLE_AT)
            .map_err(|e| Error::io("write", dir.join(LOCK_FILE), e))
    }
}

fn encode(id: SegmentId) -> [u8; HEAD_LEN] {
    let mut b = [0u8; HEAD_LEN];
    b[..8].copy_from_slice(&HEAD_MAGIC);
    b[8..16].copy_from_slice(&id.0.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<SegmentId> {
    let b = b.get(..HEAD_LEN)?;
    let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
    (b[..8] == HEAD_MAGIC && crc32fast::hash(&b[..16]) == crc)
        .then(|| SegmentId(u64::from_le_bytes(b[8..16].try_into().unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips_and_any_damage_makes_it_unknown() {
        let b = encode(SegmentId(12345));
        assert_eq!(decode(&b), Some(SegmentId(12345)));
        for i in 0..20 {
            let mut d = b;
            d[i] ^= 1;
            assert_eq!(decode(&d), None, "byte {i}");
        }
        assert_eq!(decode(&b[..HEAD_LEN - 1]), None);
        assert_eq!(decode(&[]), None);
    }
}
