//! `convlog keygen FILE`: writes a new random master key to a new file, as 64 hex digits and
//! a newline, readable by its owner only (mode 0600). It never overwrites a file: a key file
//! may be the only way to read a store.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use convlog::MasterKey;

use crate::error::{CliError, CliResult};
use crate::util::print;

/// Arguments of `convlog keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The key file to create (it must not exist). Keep it apart from the store: not in its
    /// directory.
    pub file: PathBuf,
}

/// Writes the key and says where.
pub fn run(args: Args) -> CliResult {
    let path = &args.file;
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.join(convlog::KEYS_FILE).exists() || crate::util::require_store(parent).is_ok() {
        return Err(CliError::Message(format!(
            "refusing to write a key to {shown}: {} holds a convlog store, and a key kept \
             beside the data it protects protects nothing (pick a file elsewhere); nothing \
             was written",
            parent.display()
        )));
    }
    let key = MasterKey::generate()
        .map_err(|e| CliError::Message(format!("cannot generate a master key: {e}")))?;
    let mut file = crate::perms::create_new(path, 0o600).map_err(|e| match e {
        CliError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
            CliError::Message(format!(
                "refusing to overwrite {shown}: it exists (it may be the only key to a \
                 store); nothing was written"
            ))
        }
        e => e,
    })?;
    let mut text = key.to_hex();
    text.push('\n');
    if let Err(e) = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CliError::io("write", path, e));
    }
    drop(file);
    if let Ok(d) = std::fs::File::open(parent) {
        // The new name survives a crash too (best effort: some systems cannot sync a directory).
        let _ = d.sync_all();
    }
    print(&format!(
        "wrote a new master key to {shown} (mode 0600): keep it safe; a store encrypted \
         under it cannot be read without it\n"
    ))
}
