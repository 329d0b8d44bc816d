//! `--mode`, files and directories created with exact modes, and the note on exposed stores.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use convlog::Permissions;

use crate::error::{CliError, CliResult};

/// `--mode` of the commands that write a store.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ModeArg {
    /// The mode of the files this command creates in the store, in octal: 0600 (only you may
    /// read them) by default; 0640 lets your group read them. Directories get it with x
    /// added wherever r is set (0640 gives 0750). Files that exist keep their modes.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<Permissions>,
}

impl ModeArg {
    /// The modes asked for, or owner-only.
    pub fn permissions(self) -> Permissions {
        self.mode.unwrap_or_default()
    }
}

/// Parses `--mode`: an octal file mode within 0666 that gives the owner rw.
pub fn parse_mode(text: &str) -> Result<Permissions, String> {
    text.parse::<Permissions>().map_err(|e| match e {
        convlog::Error::InvalidOption { reason, .. } => reason,
        e => e.to_string(),
    })
}

/// Creates the directory `dir` (and its parents) unless it exists, `dir` itself with exactly
/// the directory mode of `perms`. An existing directory keeps its mode.
pub fn create_dir(dir: &Path, perms: Permissions) -> CliResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mode = perms.dir_mode();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(mode)))
        .map_err(|e| CliError::io("create directory", dir, e))
}

/// Creates the new file `path` (never through a symbolic link: it must not exist) with
/// exactly `mode`.
pub fn create_new(path: &Path, mode: u32) -> CliResult<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CliError::io("create", path, e))?;
    set_mode(&file, path, mode)?;
    Ok(file)
}

/// Opens `path` to write conversations to it: a new file gets exactly `mode`; an existing
/// regular file gets `mode` too and is truncated (in that order, so no conversation is ever
/// written into a file others may read unless `mode` lets them). Anything else (a FIFO, a
/// terminal, `/dev/stdout`) is written as it is.
pub fn create_or_truncate(path: &Path, mode: u32) -> CliResult<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(|e| CliError::io("create", path, e))?;
    let meta = file.metadata().map_err(|e| CliError::io("stat", path, e))?;
    if meta.is_file() {
        set_mode(&file, path, mode)?;
        file.set_len(0)
            .map_err(|e| CliError::io("truncate", path, e))?;
    }
    Ok(file)
}

/// Sets the mode of the open `file` exactly (the umask may have narrowed it at creation).
fn set_mode(file: &File, path: &Path, mode: u32) -> CliResult<()> {
    let current = file.metadata().map_err(|e| CliError::io("stat", path, e))?;
    if current.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| {
            CliError::Message(format!(
                "cannot give {} the mode {mode:04o}: {e}; nothing was written",
                path.display()
            ))
        })
}

/// Says on stderr, once, when the store in `dir` has files or directories that others may
/// read (or write) beyond `allowed`. Silent when it cannot tell. Returns what it found, for
/// `--json` output (`None` when it cannot tell).
pub fn note_exposed(dir: &Path, allowed: Permissions) -> Option<convlog::PermissionReport> {
    let report = convlog::permission_report(dir, allowed).ok()?;
    if let Some(note) = report.note() {
        eprintln!("convlog: note: {note}");
    }
    Some(report)
}

/// The `permissions` field of `--json` output: whether the store is private, the entries
/// that let others in further than `allowed` (path, octal mode, whether a directory); the
/// note itself goes to stderr only. `null` when the modes could not be read.
pub fn report_json(report: Option<&convlog::PermissionReport>) -> serde_json::Value {
    let Some(r) = report else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "private": r.is_private(),
        "file_mode": format!("{:04o}", r.allowed.file_mode()),
        "dir_mode": format!("{:04o}", r.allowed.dir_mode()),
        "exposed": r
            .exposed
            .iter()
            .map(|e| serde_json::json!({
                "path": e.path.to_string_lossy(),
                "mode": format!("{:04o}", e.mode),
                "is_dir": e.is_dir,
            }))
            .collect::<Vec<_>>(),
    })
}
