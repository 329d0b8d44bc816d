//! The crate's one `unsafe` site: memory-mapping a file read-only.

use std::fs::File;
use std::io;

use super::Mapping;

/// Maps `file` read-only; an empty file becomes an empty in-memory view (it cannot be mapped).
pub(super) fn map_file(file: &File) -> io::Result<Mapping> {
    if file.metadata()?.len() == 0 {
        return Ok(Mapping::from_vec(Vec::new()));
    }
    // SAFETY: `Mmap::map` is unsafe because another process or thread could truncate or
    // modify the file while the map lives, which is undefined behaviour (or SIGBUS). The
    // store maps only *sealed* segments, which no convlog writer ever writes, truncates or
    // deletes while a store is open (the write lock keeps other convlog writers out, salvage
    // replaces a segment by rename, which leaves the mapped inode intact), and recovery drops
    // its scan map of the active segment before truncating it. Tampering by a foreign process
    // is outside what any mmap-based reader can defend against.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Mapping(std::sync::Arc::new(map)))
}
