//! Writing a whole segment in one pass, for the rewrites that make one: salvage (in memory)
//! and compaction (streamed to a file).

use std::collections::HashMap;

use super::Naming;
use crate::format::{RecordKey, RecordMeta, encode_record};
use crate::id::Lsn;
use crate::io::{Vfs, VfsFile};

/// Bytes buffered before a streaming builder writes them out.
const FLUSH_AT: usize = 1 << 20;

/// A segment being written from its first byte to its last, under a fresh salt, each
/// session named afresh on its first record (the records that named it may be gone) and
/// again every `NAME_EVERY` references, as the writer does.
pub(crate) struct SegmentBuilder<'f> {
    salt: u64,
    buf: Vec<u8>,
    /// Bytes already written to `file` (the offset of `buf[0]`).
    flushed: u64,
    named: HashMap<Vec<u8>, Option<Naming>>,
    /// Where the bytes go; `None`: they stay in memory.
    file: Option<&'f dyn VfsFile>,
}

impl<'f> SegmentBuilder<'f> {
    /// A segment whose header names `first_lsn` (and says whether compaction wrote it),
    /// streamed to `file` when given.
    pub(crate) fn new(
        vfs: &dyn Vfs,
        first_lsn: Lsn,
        compacted: bool,
        file: Option<&'f dyn VfsFile>,
    ) -> SegmentBuilder<'f> {
        let header = super::new_header(vfs, first_lsn, compacted);
        SegmentBuilder {
            salt: header.salt,
            buf: header.encode().to_vec(),
            flushed: 0,
            named: HashMap::new(),
            file,
        }
    }

    /// The segment's salt.
    pub(crate) fn salt(&self) -> u64 {
        self.salt
    }

    /// Its length so far.
    pub(crate) fn len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Appends one record (with `key`, a keyed append).
    ///
    /// # Errors
    /// The file's write error, when streaming.
    pub(crate) fn put(
        &mut self,
        meta: &RecordMeta,
        session: &[u8],
        key: Option<RecordKey<'_>>,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let at = u32::try_from(self.len()).unwrap_or(u32::MAX);
        let naming = self.named.entry(session.to_vec()).or_default();
        let field = Naming::next(naming, session, at);
        encode_record(&mut self.buf, self.salt, meta, field, key, payload);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file else {
            return Ok(());
        };
        file.write_all_at(&self.buf, self.flushed)?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Ends the segment: the bytes (empty when streamed: then they are all in the file, not
    /// yet synced).
    ///
    /// # Errors
    /// The file's write error, when streaming.
    pub(crate) fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.flush()?;
        Ok(self.buf)
    }
}
