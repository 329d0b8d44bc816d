//! Segment files: the active one being appended to, and sealed, memory-mapped ones.

mod builder;
mod reader;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub(crate) use builder::SegmentBuilder;
pub(crate) use reader::{
    Record, SegmentReader, Stop, Units, Why, all_zero, find_committed, record_at,
};
pub(crate) use writer::{Naming, SegmentWriter};

use crate::error::{Damage, Error, Result};
use crate::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, MAX_SESSION_LEN, RECORD_HEADER_LEN, RecordMeta, SegmentHeader,
    decode_damage, decode_record, framed_len_from_header,
};
use crate::id::{Lsn, SegmentId};
use crate::io::{Mapping, Vfs, VfsFile};

/// Where a segment's bytes are read from.
#[derive(Debug, Clone)]
pub(crate) enum SegmentData {
    /// A sealed segment: immutable, memory-mapped.
    Mapped(Mapping),
    /// The active segment (or the last one of a read-only store).
    File(Arc<ActiveView>),
}

/// The read side of the active segment: a memory map of its prefix, renewed when a record
/// lies past it, with positioned reads as the fallback.
///
/// Invariant: readers only read records the index holds, which lie below the end of the log
/// (in every process); writers only write above it (appending, zero-filling ahead, zeroing
/// what a failed or torn write left), and no file is ever shortened, so no mapped byte a
/// reader touches changes or goes away. The map is shared: it shows what other processes
/// write to the file, up to the length the file had when it was made.
#[derive(Debug)]
pub(crate) struct ActiveView {
    pub(crate) file: Arc<dyn VfsFile>,
    /// `None` until first needed, and after `invalidate`.
    map: RwLock<Option<Mapping>>,
}

impl ActiveView {
    pub(crate) fn new(file: Arc<dyn VfsFile>) -> Arc<ActiveView> {
        Arc::new(ActiveView {
            file,
            map: RwLock::new(None),
        })
    }

    /// A map to read records the log ends with: the current one when the file system's maps
    /// are live (it shows every later write within its length), else a new one.
    pub(crate) fn live_map(&self) -> std::io::Result<Mapping> {
        if self.file.map_is_live()
            && let Some(map) = self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
        {
            return Ok(map);
        }
        self.map_now()
    }

    /// Whether a reader that stopped at `stop` in `map` (a map of this file) may have stopped
    /// only because the map is older than the file: anything but an all-zero header wholly
    /// inside the map, when the file has grown past the map. (A record another process wrote
    /// across the map's end reads as damaged, or as no bytes left, through it.) Then map the
    /// file again and read on: never judge such a stop.
    pub(crate) fn outgrown(&self, map: &[u8], stop: &Stop) -> bool {
        let len = map.len() as u64;
        let real_end = stop.why == Why::End && stop.at + RECORD_HEADER_LEN as u64 <= len;
        !real_end && self.file.len().is_ok_and(|n| n > len)
    }

    /// A map of the file as it is now (kept for later reads).
    pub(crate) fn map_now(&self) -> std::io::Result<Mapping> {
        let fresh = self.file.map()?;
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Whether any of the `len` bytes at `offset` is not zero: the cheap check of whether
    /// another process wrote there. A read of the shared map when the file system's maps are
    /// live and the map covers the bytes; else one `fstat` (and a new map when the file
    /// grew), or a positioned read. Errs on the side of `true` when the file cannot be read.
    pub(crate) fn nonzero_at(&self, offset: u64, len: usize) -> bool {
        let nonzero = |bytes: &[u8]| {
            let from = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let to = from.saturating_add(len).min(bytes.len());
            !all_zero(&bytes[from..to])
        };
        if self.file.map_is_live() {
            let current = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(map) = &current
                && map.len() as u64 >= offset + len as u64
            {
                return nonzero(map);
            }
            return match self.file.len() {
                Ok(n) if current.as_ref().is_some_and(|m| m.len() as u64 >= n) => {
                    current.as_deref().is_some_and(nonzero)
                }
                Ok(_) => self.map_now().map_or(true, |m| nonzero(&m)),
                Err(_) => true,
            };
        }
        let Ok(file_len) = self.file.len() else {
            return true;
        };
        let n = file_len.saturating_sub(offset).min(len as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_or(true, |()| !all_zero(&buf))
    }

    /// Forgets the map (after a failed write was undone: a map that is a snapshot, as on the
    /// simulated file system, could still show the undone bytes).
    pub(crate) fn invalidate(&self) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A map that holds the whole record at `offset` if any does: the current one when it
    /// reaches the record's end, else the file mapped again as it is now.
    fn map_for(&self, offset: u32) -> Option<Mapping> {
        let current = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(map) = current {
            let at = offset as usize;
            let covered = map
                .get(at..at.checked_add(RECORD_HEADER_LEN)?)
                .and_then(|h| h.try_into().ok())
                .is_some_and(|h| at as u64 + framed_len_from_header(h) <= map.len() as u64);
            if covered {
                return Some(map);
            }
        }
        // The record lies past the map (or no map yet): map the file as it is now.
        self.map_now().ok()
    }
}

/// The record at the start of `bytes`, its payload CRC checked unless `crc` is false (a
/// sealed payload, which its AEAD tag checks).
fn decode_at(bytes: &[u8], salt: u64, crc: bool) -> Decoded<'_> {
    if crc {
        decode_record(bytes, salt, DEFAULT_MAX_RECORD_LEN)
    } else {
        crate::format::decode_record_sealed(bytes, salt, DEFAULT_MAX_RECORD_LEN)
    }
}

/// A segment as the store's read path sees it.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) id: SegmentId,
    pub(crate) salt: u64,
    pub(crate) path: PathBuf,
    pub(crate) data: SegmentData,
    /// Written by compaction: its records' LSNs may skip (see [`SegmentReader::allowing_gaps`]).
    pub(crate) compacted: bool,
}

/// A record read back: its fixed fields and its payload.
#[derive(Debug, Clone)]
pub(crate) struct OwnedRecord {
    pub(crate) meta: RecordMeta,
    pub(crate) payload: Vec<u8>,
}

/// An idempotency key read back from a keyed append's key block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedKey {
    pub(crate) key: Vec<u8>,
    /// How many appends it names (this one and the next ones of its unit).
    pub(crate) count: u32,
}

impl Segment {
    /// The table entry of the segment `w` is starting to write: read through its file
    /// (it grows), never compacted.
    pub(crate) fn active(w: &SegmentWriter) -> Segment {
        Segment {
            id: w.id,
            salt: w.salt,
            path: w.path.clone(),
            data: SegmentData::File(ActiveView::new(w.file.clone())),
            compacted: false,
        }
    }

    /// Reads and re-verifies the record at `offset` (an offset the index holds, so recovery
    /// already verified it once; checksums are checked again on every read).
    pub(crate) fn read_at(&self, offset: u32) -> Result<OwnedRecord> {
        self.read_kind(offset, crate::format::Kind::Append)
    }

    /// [`Segment::read_at`] for a record that must be of `kind` (an index position names a
    /// record of a known kind: if it is another, the index, or a hint it trusted, is wrong).
    pub(crate) fn read_kind(&self, offset: u32, kind: crate::format::Kind) -> Result<OwnedRecord> {
        self.with_record(offset, kind, true, |meta, payload| {
            Ok(OwnedRecord {
                meta,
                payload: payload.to_vec(),
            })
        })
    }

    /// The record at `offset`, which must be of `kind`, handed to `f` as its fixed fields
    /// and its payload borrowed from the map: no copy unless `f` makes one. Its CRC is
    /// checked unless `crc` is false (a sealed payload, which its tag checks: the caller
    /// reads it again with the CRC when it does not open, to tell damage from a wrong or
    /// destroyed key).
    ///
    /// # Errors
    /// As [`Segment::read_kind`], and whatever `f` returns.
    pub(crate) fn with_record<R>(
        &self,
        offset: u32,
        kind: crate::format::Kind,
        crc: bool,
        f: impl FnOnce(RecordMeta, &[u8]) -> Result<R>,
    ) -> Result<R> {
        self.visit(offset, crc, |r| {
            self.check_kind(offset, r.meta.kind, kind)?;
            f(r.meta, r.payload)
        })?
    }

    /// `Error::Corrupt` unless the record at `offset` (an index position) is of `want`: if it
    /// is another, the index, or a hint it trusted, is wrong.
    fn check_kind(
        &self,
        offset: u32,
        found: crate::format::Kind,
        want: crate::format::Kind,
    ) -> Result<()> {
        if found == want {
            return Ok(());
        }
        Err(Error::Corrupt {
            segment: self.id,
            offset: u64::from(offset),
            damage: Damage::BadField {
                field: "kind (an index position names a record of another kind)",
            },
        })
    }

    /// The fixed fields and the idempotency key (if it is a keyed append) of the append at
    /// `offset`, both checksums verified.
    ///
    /// # Errors
    /// As [`Segment::read_kind`].
    pub(crate) fn key_at(&self, offset: u32) -> Result<(RecordMeta, Option<OwnedKey>)> {
        self.visit(offset, true, |r| {
            self.check_kind(offset, r.meta.kind, crate::format::Kind::Append)?;
            Ok((
                r.meta,
                r.key.map(|k| OwnedKey {
                    key: k.key.to_vec(),
                    count: k.count,
                }),
            ))
        })?
    }

    /// Reads and re-verifies the record at `offset`, of any kind, and hands it to `f`.
    fn visit<R>(
        &self,
        offset: u32,
        crc: bool,
        f: impl FnOnce(&crate::format::RecordRef<'_>) -> R,
    ) -> Result<R> {
        let off = u64::from(offset);
        let corrupt = |damage| Error::Corrupt {
            segment: self.id,
            offset: off,
            damage,
        };
        match &self.data {
            SegmentData::Mapped(map) => {
                let rest = map.get(offset as usize..).unwrap_or(&[]);
                match decode_at(rest, self.salt, crc) {
                    Decoded::Record(r) => Ok(f(&r)),
                    other => Err(corrupt(decode_damage(other))),
                }
            }
            SegmentData::File(view) => {
                if let Some(map) = view.map_for(offset)
                    && let Decoded::Record(r) =
                        decode_at(map.get(offset as usize..).unwrap_or(&[]), self.salt, crc)
                {
                    return Ok(f(&r));
                }
                // Positioned reads: a read-only store, or a map that failed.
                let buf = self.read_framed(&view.file, offset)?;
                match decode_at(&buf, self.salt, crc) {
                    Decoded::Record(r) => Ok(f(&r)),
                    other => Err(corrupt(decode_damage(other))),
                }
            }
        }
    }

    /// The bytes of the record at `offset` of `file` by positioned reads: its header, then
    /// as many bytes as its length names (within the bound of any record).
    fn read_framed(&self, file: &Arc<dyn VfsFile>, offset: u32) -> Result<Vec<u8>> {
        let off = u64::from(offset);
        let corrupt = |damage| Error::Corrupt {
            segment: self.id,
            offset: off,
            damage,
        };
        let read = |buf: &mut [u8], len: u64| {
            file.read_exact_at(buf, off).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    // A length (damaged after the index was built) runs past the file.
                    corrupt(Damage::BadLength { len })
                } else {
                    Error::io("read", &self.path, e)
                }
            })
        };
        let mut header = [0u8; RECORD_HEADER_LEN];
        read(&mut header, RECORD_HEADER_LEN as u64)?;
        let len = framed_len_from_header(&header);
        let bound = (RECORD_HEADER_LEN + MAX_SESSION_LEN + crate::format::MAX_KEY_BLOCK_LEN) as u64
            + u64::from(DEFAULT_MAX_RECORD_LEN);
        if len > bound {
            return Err(corrupt(Damage::BadLength { len }));
        }
        let mut buf = vec![0u8; len as usize];
        read(&mut buf, len)?;
        Ok(buf)
    }
}

/// Overwrites `len` bytes of `file` from `offset` with zeros (a clean end to any reader).
/// Files of a store are never shrunk, because another process may have them mapped: what is
/// cut is zeroed instead.
pub(crate) fn zero_range(file: &dyn VfsFile, offset: u64, len: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The header of a new segment: a fresh salt and the creation time, both from `vfs` (see
/// [`Vfs::salt`], [`Vfs::now`]).
pub(crate) fn new_header(vfs: &dyn Vfs, first_lsn: Lsn, compacted: bool) -> SegmentHeader {
    SegmentHeader {
        first_lsn,
        salt: vfs.salt(),
        created: vfs.now(),
        compacted,
    }
}

/// A fresh random salt for a new segment (no crate needed: std's random hasher keys).
pub(crate) fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(crate::id::Timestamp::now().0);
    h.write_u32(std::process::id());
    h.finish()
}
