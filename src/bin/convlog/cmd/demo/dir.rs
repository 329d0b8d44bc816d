//! Where `convlog demo` writes: a fresh directory, or one holding only a store the demo may
//! replace; never anything else, and never a store another process has open.

use std::io::{self, Write};
use std::path::Path;

use convlog::{
    COMPACT_FILE, KEYS_FILE, LOCK_FILE, Permissions, SYNC_FILE, SegmentId, WRITERS_FILE,
};

use crate::error::{CliError, CliResult};

const DEMO_MARKER: &str = ".convlog-demo";

/// Empties `dir` (or creates it, with the directory mode of `perms`) for a new demo store and
/// marks it as the demo's (the marker with the file mode); says what was there.
///
/// Only a store's files are ever deleted, and only when the store is the demo's own (it
/// holds [`DEMO_MARKER`]), holds no data (no segment), or `force` is given; never a store
/// another process has open for writing.
pub(super) fn recreate(dir: &Path, force: bool, perms: Permissions) -> CliResult<&'static str> {
    let previous = survey(dir, force)?;
    refuse_if_open(dir)?;
    empty(dir)?;
    crate::perms::create_dir(dir, perms)?;
    let marker = dir.join(DEMO_MARKER);
    crate::perms::create_new(&marker, perms.file_mode())?
        .write_all(
            b"This directory holds a store written by `convlog demo`; the next `convlog demo` \
              with this --dir deletes and rewrites it.\n",
        )
        .map_err(|e| CliError::io("write", &marker, e))?;
    Ok(previous)
}

/// What `dir` holds, said as [`recreate`] reports it, when the demo may replace it: an
/// error when it holds anything but a store's files, or a store with data that is not the
/// demo's (unless `force`).
fn survey(dir: &Path, force: bool) -> CliResult<&'static str> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok("new"),
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err(CliError::Message(format!(
                "--dir {} is a file, not a directory",
                dir.display()
            )));
        }
        Err(e) => return Err(CliError::io("read directory", dir, e)),
        Ok(entries) => entries,
    };
    let (mut marked, mut data, mut any) = (false, false, false);
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        any = true;
        let ours = if is_dir {
            data = true;
            name == convlog::QUARANTINE_DIR
        } else if name == DEMO_MARKER {
            marked = true;
            true
        } else {
            data |= SegmentId::parse_file_name(&name).is_some();
            is_store_file(&name)
        };
        if !ours {
            return Err(CliError::Message(format!(
                "refusing to delete {}: it holds {name:?}, which is not part of a \
                 convlog store (pick another --dir)",
                dir.display()
            )));
        }
    }
    if data && !marked && !force {
        return Err(CliError::Message(format!(
            "refusing to replace {}: it holds a convlog store that `convlog demo` did \
             not write, and the demo would delete its data (pick another --dir, or pass \
             --force to delete it)",
            dir.display()
        )));
    }
    Ok(match (any, marked) {
        (false, _) => "new",
        (true, true) => "replaced the store an earlier demo wrote",
        (true, false) if data => "replaced the store that was there: --force",
        (true, false) => "new",
    })
}

/// Refuses a store some process has open for writing (every writer holds `WRITERS`; a
/// writer of an older build held `LOCK`).
fn refuse_if_open(dir: &Path) -> CliResult<()> {
    let held = |name: &str| {
        std::fs::File::open(dir.join(name))
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    };
    if held(WRITERS_FILE) || held(LOCK_FILE) {
        return Err(CliError::store(
            dir,
            convlog::Error::Locked {
                path: dir.to_owned(),
            },
        ));
    }
    Ok(())
}

/// Deletes everything in `dir`, keeping the directory itself (its owner and permissions).
fn empty(dir: &Path) -> CliResult<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("read directory", dir, e))?;
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| CliError::io("delete", &path, e))?;
    }
    Ok(())
}

/// Whether a file name is one a store keeps (docs/format.md, "Files"): `LOCK`, `WRITERS`,
/// `SYNC`, `COMPACT`, `KEYS`, or `{20 digits}[-{16 hex digits}].ext` (a segment, or a file
/// derived from one: a hint, a compaction's output, a hint being built); or one of these
/// with `.tmp` after it (an atomic replace in progress).
pub(super) fn is_store_file(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    if [LOCK_FILE, WRITERS_FILE, SYNC_FILE, COMPACT_FILE, KEYS_FILE].contains(&name)
        || SegmentId::parse_file_name(name).is_some()
    {
        return true;
    }
    let (digits, rest) = name.split_at_checked(20).unwrap_or((name, ""));
    let ext = match rest.strip_prefix('-') {
        Some(salted) => match salted.split_at_checked(16) {
            Some((salt, ext)) if salt.bytes().all(|b| b.is_ascii_hexdigit()) => ext,
            _ => return false,
        },
        None => rest,
    };
    digits.bytes().all(|b| b.is_ascii_digit())
        && ext.len() > 1
        && ext.starts_with('.')
        && ext[1..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'.')
}
