//! `--key-file`: where an encrypted store's master key comes from, and reading it.
//!
//! The key is only ever read from a file (named by `--key-file`, or by the environment
//! variable `CONVLOG_KEY_FILE` when the option is absent), never taken as an argument: an
//! argument shows in `ps` and in shell history. No message ever prints a key's bytes.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use convlog::MasterKey;
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};

/// The environment variable that names the key file when `--key-file` is absent.
pub const KEY_FILE_ENV: &str = "CONVLOG_KEY_FILE";

/// The most bytes read from a key file: a key is 32 raw bytes or 64 hex digits and a
/// newline, so anything longer is not one (and `/dev/zero` does not read forever).
const MAX_KEY_FILE_LEN: u64 = 128;

/// `--key-file` of the commands that open a store.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArg {
    /// The file holding the store's master key: 32 raw bytes, or 64 hex digits and a
    /// newline (as `convlog keygen` writes). Default: the file named by $CONVLOG_KEY_FILE.
    /// Given, an encrypted store opens with it (and a new store is created encrypted);
    /// never pass the key itself.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// Where a key file was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option (`--key-file`, `--new-key-file`).
    Option(&'static str),
    /// The environment variable [`KEY_FILE_ENV`].
    Env,
}

/// A key file and where it was named, for messages: `key file k.hex (--key-file)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The file (as given; `None` when printing it could show a key, see [`shown_path`]).
    path: Option<PathBuf>,
    /// Where it was named.
    origin: Origin,
}

impl KeySource {
    /// How to stop giving this key: the option to leave out, or the variable to unset.
    pub fn how_to_drop(&self) -> String {
        match self.origin {
            Origin::Option(name) => format!("leave out {name}"),
            Origin::Env => format!("unset {KEY_FILE_ENV}"),
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = match self.origin {
            Origin::Option(name) => name.to_owned(),
            Origin::Env => format!("${KEY_FILE_ENV}"),
        };
        match &self.path {
            Some(p) => write!(f, "key file {} ({named})", p.display()),
            None => write!(
                f,
                "key file named by {named} (its name is not shown: it looks like a key; \
                 {named} takes the path of a file holding the key, never the key itself)"
            ),
        }
    }
}

/// A master key read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key.
    pub master: MasterKey,
    /// Its file.
    pub source: KeySource,
}

impl KeyArg {
    /// The key file named by `--key-file`, else by `$CONVLOG_KEY_FILE` (set and not empty).
    fn named(&self) -> Option<(PathBuf, Origin)> {
        if let Some(p) = &self.key_file {
            return Some((p.clone(), Origin::Option("--key-file")));
        }
        std::env::var_os(KEY_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), Origin::Env))
    }

    /// Reads the key named, if any.
    ///
    /// # Errors
    /// [`CliError::KeyFile`] when the file cannot be read or holds no key; the message names
    /// the file and says what is wrong, never what it holds.
    pub fn load(&self) -> CliResult<Option<Key>> {
        self.named()
            .map(|(path, origin)| read_key(&path, origin))
            .transpose()
    }
}

/// Reads the key file `path` (named by `origin`). A file that others may read is noted on
/// stderr (the key still works).
pub fn read_key(path: &Path, origin: Origin) -> CliResult<Key> {
    let source = KeySource {
        path: shown_path(path),
        origin,
    };
    let fail = |what: String| CliError::KeyFile(format!("cannot use the {source}: {what}"));
    let mut file = File::open(path).map_err(|e| fail(io_reason(&e)))?;
    let meta = file.metadata().map_err(|e| fail(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(fail("it is a directory, not a file".into()));
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut contents)
        .map_err(|e| fail(io_reason(&e)))?;
    let master = MasterKey::parse(&contents, path).map_err(|e| match e {
        convlog::Error::InvalidMasterKey { reason, .. } => fail(format!(
            "it does not hold a master key ({reason}; `convlog keygen FILE` writes one)"
        )),
        e => fail(e.to_string()),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o077 != 0 {
        eprintln!(
            "convlog: note: the {source} may be read by other users (mode {mode:04o}); \
             chmod 600 it to keep the key yours"
        );
    }
    Ok(Key { master, source })
}

/// The operating system's reason, without the path (the message names the file itself).
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `path` unless printing it could show a key: a name that is itself 64 hex digits (or
/// ends in them), as when a key is passed where its file's path belongs.
fn shown_path(path: &Path) -> Option<PathBuf> {
    let text = path.as_os_str().as_encoded_bytes();
    let hex_run = text
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    (hex_run < 2 * convlog::MASTER_KEY_LEN).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_looks_like_a_key_is_not_shown() {
        let key = "ab".repeat(32);
        assert_eq!(shown_path(Path::new(&key)), None);
        assert_eq!(shown_path(Path::new(&format!("/tmp/{key}"))), None);
        assert_eq!(
            shown_path(Path::new("/etc/convlog/key.hex")),
            Some(PathBuf::from("/etc/convlog/key.hex"))
        );
        let source = KeySource {
            path: None,
            origin: Origin::Env,
        };
        assert!(!source.to_string().contains(&key));
    }
}
