//! One of the crate's two `unsafe` sites (the other registers a fork handler, `io::process`):
//! memory-mapping a file read-only.

use std::fs::File;
use std::io;

use super::Mapping;

/// Maps `file` read-only; an empty file becomes an empty in-memory view (it cannot be mapped).
pub(super) fn map_file(file: &File) -> io::Result<Mapping> {
    if file.metadata()?.len() == 0 {
        return Ok(Mapping::from_vec(Vec::new()));
    }
    // SAFETY: `Mmap::map` is unsafe because the file could be truncated or modified while the
    // map lives: touching a page past the new end raises SIGBUS, and a changed byte under a
    // `&[u8]` breaks Rust's aliasing rules. No convlog code, in any process, ever shortens a
    // store file (there is no such operation on `VfsFile`: a cut is zeroed, preallocated zeros
    // stay), so no page of a map goes away. Bytes a reader reads through a map are written once,
    // before anything points at them: (1) sealed segments are never written again; (2) in the
    // active segment, readers only read records the index holds, below the writer's append
    // point, while the writer writes only above it; (3) hint files are written whole under a
    // temporary name and renamed into place, never changed after (a rename, like a removal,
    // leaves a mapped inode intact). Tampering by a foreign process is outside what any
    // mmap-based reader can defend against.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Mapping(std::sync::Arc::new(map)))
}
