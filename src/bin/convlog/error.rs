//! The CLI's error type: every failure as one line that says what and where.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a subcommand failed.
#[derive(Debug)]
pub enum CliError {
    /// The library failed on the store in `dir`.
    Store {
        /// The store directory.
        dir: PathBuf,
        /// The library's error.
        source: convlog::Error,
    },
    /// `convlog repair` failed on the store in `dir`: phrased without suggesting a repair.
    Repair {
        /// The store directory.
        dir: PathBuf,
        /// The library's error.
        source: convlog::Error,
        /// How many segment files the directory holds.
        segments: usize,
    },
    /// Opening the store in `dir` failed for its master key: none was given for an encrypted
    /// store, the one given does not open it, or one was given for a store without
    /// encryption. Nothing was changed.
    Key {
        /// The store directory.
        dir: PathBuf,
        /// The library's error ([`convlog::Error::KeyRequired`], [`convlog::Error::WrongKey`]
        /// or [`convlog::Error::NotEncrypted`]).
        source: convlog::Error,
        /// The key file given, if any.
        key: Option<crate::keys::KeySource>,
    },
    /// A file (or stdin/stdout) could not be read or written.
    Io {
        /// What was being done ("read", "create", ...).
        op: &'static str,
        /// The file, or `-` / `stdout` / `stdin`.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Bad input (a JSON line, an argument), already phrased with its location.
    Input(String),
    /// A master key file could not be read or holds no key, already phrased with the file
    /// (never with what it holds).
    KeyFile(String),
    /// Any other failure, already phrased.
    Message(String),
    /// The reader of standard output went away (`convlog cat ... | head`): not reported.
    BrokenPipe,
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BrokenPipe => 0,
            _ => 1,
        }
    }

    /// A library error of `convlog repair` on the store in `dir`, which holds `segments`
    /// segment files.
    pub fn repair(dir: &Path, source: convlog::Error, segments: usize) -> CliError {
        CliError::Repair {
            dir: dir.to_owned(),
            source,
            segments,
        }
    }

    /// An I/O error on `path`; a broken pipe becomes [`CliError::BrokenPipe`].
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> CliError {
        if source.kind() == io::ErrorKind::BrokenPipe {
            return CliError::BrokenPipe;
        }
        CliError::Io {
            op,
            path: path.as_ref().to_owned(),
            source,
        }
    }

    /// A library error from opening the store in `dir` with the key from `key` (if any): a
    /// key error becomes [`CliError::Key`], any other [`CliError::Store`].
    pub fn opening(dir: &Path, source: convlog::Error, key: Option<&crate::keys::Key>) -> CliError {
        use convlog::Error as E;
        match source {
            E::KeyRequired { .. } | E::WrongKey { .. } | E::NotEncrypted { .. } => CliError::Key {
                dir: dir.to_owned(),
                source,
                key: key.map(|k| k.source.clone()),
            },
            source => CliError::store(dir, source),
        }
    }

    /// A library error on the store in `dir`.
    pub fn store(dir: &Path, source: convlog::Error) -> CliError {
        CliError::Store {
            dir: dir.to_owned(),
            source,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Store { dir, source } => describe(f, dir, source),
            CliError::Repair {
                dir,
                source,
                segments,
            } => describe_repair(f, dir, source, *segments),
            CliError::Key { dir, source, key } => describe_key(f, dir, source, key.as_ref()),
            CliError::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            CliError::Input(m) | CliError::KeyFile(m) | CliError::Message(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

/// Phrases a library error for an operator. Most of the library's messages already name
/// the file or session; those about bytes inside a segment get the store directory and a
/// hint about `convlog repair`.
fn describe(f: &mut fmt::Formatter<'_>, dir: &Path, e: &convlog::Error) -> fmt::Result {
    use convlog::Error as E;
    let dir = dir.display();
    match e {
        E::Corrupt {
            segment,
            offset,
            damage,
        } => write!(
            f,
            "corrupt store {dir}: segment {segment} at offset {offset}: {damage} \
             (`convlog repair {dir}` salvages every valid record)"
        ),
        E::UnknownRecordKind { .. } | E::KeyDestroyed { .. } => write!(f, "store {dir}: {e}"),
        _ => write!(f, "{e}"),
    }
}

/// Phrases a key that does not fit the store in `dir`, and what to do about it.
fn describe_key(
    f: &mut fmt::Formatter<'_>,
    dir: &Path,
    e: &convlog::Error,
    key: Option<&crate::keys::KeySource>,
) -> fmt::Result {
    use convlog::Error as E;
    let shown = dir.display();
    match (e, key) {
        (E::KeyRequired { .. }, _) => write!(
            f,
            "store {shown} is encrypted: name the file holding its master key with \
             --key-file PATH (or ${}); nothing was changed",
            crate::keys::KEY_FILE_ENV
        ),
        (E::WrongKey { .. }, Some(k)) => write!(
            f,
            "the master key in the {k} does not open store {shown} (wrong key); nothing was \
             changed"
        ),
        (E::NotEncrypted { .. }, Some(k)) => write!(
            f,
            "store {shown} is not encrypted (it has no {} file) and holds records, but a key \
             was given, the {k}: {} to open it; nothing was changed",
            convlog::KEYS_FILE,
            k.how_to_drop()
        ),
        _ => write!(f, "{e}"),
    }
}

/// Phrases a failure of `convlog repair` itself. Salvage keeps every valid record it can
/// reach, so what stops it is damage it cannot read past: a segment whose header is damaged,
/// or that is out of place in the LSN order. Suggesting `convlog repair` again would go in
/// a circle; what helps is moving that segment out of the way by hand.
fn describe_repair(
    f: &mut fmt::Formatter<'_>,
    dir: &Path,
    e: &convlog::Error,
    segments: usize,
) -> fmt::Result {
    use convlog::Error as E;
    let shown = dir.display();
    match e {
        E::Corrupt {
            segment,
            offset,
            damage,
        } => {
            let path = dir.join(segment.file_name());
            let path = path.display();
            write!(
                f,
                "cannot repair {shown}: segment {segment} at offset {offset}: {damage}; \
                 salvage cannot read past this damage. "
            )?;
            if segments > 1 {
                write!(
                    f,
                    "To salvage the other segments, move {path} (and its .hint file, if any) \
                     out of {shown} by hand, keeping it: it is the only copy of its records. \
                     Then run repair again: the other segments' records are kept, and the LSNs \
                     that segment held are logged as a gap"
                )
            } else {
                write!(
                    f,
                    "It is the store's only segment, so there is nothing else to salvage: move \
                     {path} (and its .hint file, if any) out of {shown} by hand to keep it; \
                     `convlog append` or `convlog import` then start a new store there"
                )
            }
        }
        E::UnknownRecordKind { .. } => write!(f, "cannot repair {shown}: {e}"),
        _ => write!(f, "{e}"),
    }
}

/// `Result` with a [`CliError`].
pub type CliResult<T = ()> = Result<T, CliError>;

/// Attaches the store directory to a library result.
pub trait InStore<T> {
    /// Maps the library error to a [`CliError::Store`] naming `dir`.
    fn in_store(self, dir: &Path) -> CliResult<T>;
}

impl<T> InStore<T> for convlog::Result<T> {
    fn in_store(self, dir: &Path) -> CliResult<T> {
        self.map_err(|e| CliError::store(dir, e))
    }
}
