//! The active segment's writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::id::{Lsn, SegmentId, Timestamp};
use crate::io::{OpenMode, Vfs, VfsFile};

/// Appends framed records to the end of the active segment.
///
/// Invariant: `len` is the end of the last record written (or of the header); the bytes of
/// the file past `len` are never read as records by this process.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    pub(crate) id: SegmentId,
    pub(crate) salt: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) len: u64,
}

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
    ) -> std::result::Result<SegmentWriter, (Error, bool)> {
        let id = SegmentId(first_lsn.0);
        let path = dir.join(id.file_name());
        let salt = super::random_salt();
        let file = vfs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| (Error::io("create", &path, e), true))?;
        let header = SegmentHeader {
            first_lsn,
            salt,
            created: Timestamp::now(),
        };
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
        })
    }

    /// Writes `bytes` at the end. On failure the file is cut back to its old length when
    /// possible; `Err((error, undone))` says whether that worked.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::result::Result<(), (Error, bool)> {
        match self.file.write_all_at(bytes, self.len) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let undone = self.file.set_len(self.len).is_ok();
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
