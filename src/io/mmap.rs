//! The crate's one `unsafe` site: memory-mapping a file read-only.

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
    // `&[u8]` breaks Rust's aliasing rules. The store maps (1) *sealed* segments, which no
    // convlog writer ever writes, truncates or deletes while a store is open (the `LOCK` keeps
    // other writers out; salvage replaces a segment by rename, which leaves a mapped inode
    // intact), and (2) the writer's own *active* segment, of which readers only touch records
    // below the append point, while the writer only appends above it and only ever cuts the
    // file above it (trimming preallocated zeros, undoing a failed write): bytes a reader sees
    // are written once, before the index points at them, and never change or go away.
    // (3) Hint files, which are written whole under a temporary name, renamed into place and
    // never changed after (a rename leaves a mapped inode intact); the session index keeps
    // them mapped while the store is open. Recovery drops its scan
    // maps before it truncates a torn tail. Read-only stores map only
    // sealed segments. Tampering by a foreign process is outside what any mmap-based reader
    // can defend against.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Mapping(std::sync::Arc::new(map)))
}
