//! The active segment's writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{NAME_EVERY, SEGMENT_HEADER_LEN, SessionField};
use crate::id::{Lsn, SegmentId};
use crate::io::{OpenMode, Vfs, VfsFile};

/// Appends framed records to the end of the active segment.
///
/// Invariant: `len` is the end of the last record written (or of the header); the bytes of
/// the file from `len` to `allocated` are zeros (preallocated space, a clean end to any
/// reader), and the file is at least `allocated` bytes long (other processes writing the
/// segment may have made it longer). Beside other writers, it holds only while this
/// process holds the write lock and has caught up with the log. The file never shrinks (another process
/// may have it mapped, and a mapped page past a file's end faults): bytes taken back are
/// zeroed, and preallocation stops at the segment size, so a sealed segment keeps less than
/// one unit of zeros at its end. Every `Naming` in `named` is at a record
/// below `len` that names its key.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    pub(crate) id: SegmentId,
    pub(crate) salt: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) len: u64,
    pub(crate) allocated: u64,
    /// The store's segment size: preallocation never runs further ahead than this.
    pub(crate) segment_size: u64,
    /// Where this segment's latest record naming each session is, for later records of the
    /// session to refer to. Empty for a segment reopened after a close: its sessions are
    /// named again on their next record (a name may appear more than once in a segment).
    pub(crate) named: crate::index::SessionMap<Naming>,
}

/// Where a session is named in the active segment, and how many records refer there since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Naming {
    at: u32,
    refs: u32,
}

impl Naming {
    /// The session field of the next record of `session`, which starts at offset `at`:
    /// a reference to the record naming it, or the name itself when the session is not named
    /// in this segment yet or [`NAME_EVERY`] records already refer to that one. Updates
    /// `naming` to what holds after that record.
    pub(crate) fn next<'a>(
        naming: &mut Option<Naming>,
        session: &'a [u8],
        at: u32,
    ) -> SessionField<'a> {
        match naming {
            Some(n) if n.refs < NAME_EVERY => {
                n.refs += 1;
                SessionField::Ref(n.at)
            }
            _ => {
                *naming = Some(Naming { at, refs: 0 });
                SessionField::Named(session)
            }
        }
    }
}

/// How far ahead of the append point the writer zero-fills, so that steady-state
/// `fdatasync`s write data only (not file-size metadata), and one map of the active segment
/// covers many appends.
/// At most this far: the chunk is the segment's current length, from
/// [`MIN_PREALLOCATE_CHUNK`] up to this, so a small store stays small on disk (its files
/// never shrink) and a large one preallocates a megabyte at a time.
pub const PREALLOCATE_CHUNK: u64 = 1 << 20;
/// The least the writer zero-fills ahead at a time.
pub const MIN_PREALLOCATE_CHUNK: u64 = 64 << 10;

impl SegmentWriter {
    /// Creates a segment whose first record will have `first_lsn`: writes and syncs its
    /// header, then syncs the directory, so the segment is durable before anything is in it.
    ///
    /// On failure a half-made file is removed again; `Err((error, clean))` says whether the
    /// directory is back as it was (when not, the caller must poison the store: a stray
    /// segment would later read as an LSN regression).
    pub(crate) fn create(
        vfs: &dyn Vfs,
        dir: &Path,
        first_lsn: Lsn,
        segment_size: u64,
    ) -> std::result::Result<SegmentWriter, (Error, bool)> {
        let id = SegmentId(first_lsn.0);
        let path = dir.join(id.file_name());
        let file = vfs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| (Error::io("create", &path, e), true))?;
        let header = super::new_header(vfs, first_lsn, false);
        let salt = header.salt;
        let made = file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io("write", &path, e))
            .and_then(|()| {
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", &path, e))
            })
            .and_then(|()| {
                vfs.sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))
            });
        if let Err(e) = made {
            let clean = vfs.remove_file(&path).is_ok() && vfs.sync_dir(dir).is_ok();
            return Err((e, clean));
        }
        Ok(SegmentWriter {
            id,
            salt,
            path,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            allocated: SEGMENT_HEADER_LEN as u64,
            segment_size,
            named: Default::default(),
        })
    }

    /// Records what `Naming::next` left for `session`, once its records are written.
    pub(crate) fn set_naming(&mut self, session: &str, naming: Naming) {
        match self.named.get_mut(session) {
            Some(n) => *n = naming,
            None => {
                self.named.insert(session.into(), naming);
            }
        }
    }

    /// Writes `bytes` at the end. On failure the file is cut back to its old length when
    /// possible; `Err((error, undone))` says whether that worked.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::result::Result<(), (Error, bool)> {
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            // Another process writing this segment may have zero-filled further already.
            if let Ok(n) = self.file.len() {
                self.allocated = self.allocated.max(n);
            }
        }
        if end > self.allocated {
            let chunk = self.len.clamp(MIN_PREALLOCATE_CHUNK, PREALLOCATE_CHUNK);
            let target = (end + chunk).min(self.segment_size.max(end));
            if let Err(e) = super::zero_range(&*self.file, self.allocated, target - self.allocated)
            {
                // Zeros past the last record read as a clean end whatever part of them
                // landed: nothing to undo.
                return Err((Error::io("preallocate", &self.path, e), true));
            }
            self.allocated = target;
        }
        match self.file.write_all_at(bytes, self.len) {
            Ok(()) => {
                self.len = end;
                self.allocated = self.allocated.max(end);
                Ok(())
            }
            Err(e) => {
                // Undo by zeroing what part of the write may have landed (the space is
                // preallocated, so this needs no new blocks). If that fails too, the partial
                // write is a torn tail for recovery, and the caller poisons the store.
                let undone = super::zero_range(&*self.file, self.len, bytes.len() as u64).is_ok();
                Err((Error::io("write", &self.path, e), undone))
            }
        }
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }
}
