//! The permission bits convlog gives what it creates, and a check of an existing store's.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The modes (Unix permission bits) convlog gives the directories and files it creates in a
/// store, exactly, whatever the process umask. Existing files and directories keep theirs.
///
/// The default is [`Permissions::OWNER_ONLY`]: conversations hold what users tell agents,
/// so nobody but the store's owner may read them unless the owner says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    dir: u32,
    file: u32,
}

impl Default for Permissions {
    fn default() -> Permissions {
        Permissions::OWNER_ONLY
    }
}

impl Permissions {
    /// Only the owner may read, write or list: directories `0700`, files `0600`. The default.
    pub const OWNER_ONLY: Permissions = Permissions {
        dir: 0o700,
        file: 0o600,
    };
    /// The owner's group may read and list too: directories `0750`, files `0640`.
    pub const GROUP_READABLE: Permissions = Permissions {
        dir: 0o750,
        file: 0o640,
    };

    /// Explicit modes: `dir` for directories, `file` for files.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] unless `dir` lies within `0o777` and gives the owner `rwx`,
    /// and `file` lies within `0o666` and gives the owner `rw` (convlog must use what it
    /// creates; its files are data, never executable; no setuid, setgid or sticky bit).
    pub fn new(dir: u32, file: u32) -> Result<Permissions> {
        if file & !0o666 != 0 || file & 0o600 != 0o600 {
            return Err(invalid(format!(
                "file mode {file:04o} must lie within 0666 and include 0600"
            )));
        }
        if dir & !0o777 != 0 || dir & 0o700 != 0o700 {
            return Err(invalid(format!(
                "directory mode {dir:04o} must lie within 0777 and include 0700"
            )));
        }
        Ok(Permissions { dir, file })
    }

    /// Files get `file`; directories get it with `x` added wherever `r` is set (`0640` gives
    /// directories `0750`, `0644` gives `0755`, `0600` gives `0700`).
    ///
    /// # Errors
    /// As [`Permissions::new`].
    pub fn from_file_mode(file: u32) -> Result<Permissions> {
        Permissions::new(file | ((file & 0o444) >> 2), file)
    }

    /// The mode of the directories convlog creates.
    #[must_use]
    pub const fn dir_mode(self) -> u32 {
        self.dir
    }

    /// The mode of the files convlog creates.
    #[must_use]
    pub const fn file_mode(self) -> u32 {
        self.file
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidOption {
        option: "permissions",
        reason,
    }
}

/// Parses a file mode in octal (`0640`, `640` or `0o640`), as [`Permissions::from_file_mode`].
impl FromStr for Permissions {
    type Err = Error;

    fn from_str(text: &str) -> Result<Permissions> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let ok =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let mode = u32::from_str_radix(digits, 8)
            .ok()
            .filter(|_| ok)
            .ok_or_else(|| {
                invalid(format!(
                    "{text:?} is not an octal file mode such as 0600 or 0640"
                ))
            })?;
        Permissions::from_file_mode(mode)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "files {:04o}, directories {:04o}", self.file, self.dir)
    }
}

/// Sets the mode of the open `file` to exactly `mode` unless it has it already (the umask
/// may have narrowed the mode asked for at creation).
pub(crate) fn set_exact(file: &fs::File, mode: u32) -> io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o7777 != mode {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// A directory or file of a store whose mode lets other users in further than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// Its path.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// Whether it is a directory (the store's, or `quarantine/`).
    pub is_dir: bool,
}

/// What [`permission_report`] found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionReport {
    /// The store directory.
    pub dir: PathBuf,
    /// The modes checked against.
    pub allowed: Permissions,
    /// The directory itself and the entries in it (and in its subdirectories) that give
    /// their group or other users a permission `allowed` does not: in the order found.
    pub exposed: Vec<Exposed>,
}

/// Checks the modes of the store directory `dir`, the regular files and directories in it,
/// and those in its subdirectories (`quarantine/`), against `allowed`: which of them give
/// their group or other users more than `allowed` does. Symbolic links and other foreign
/// entries are not followed. Reads metadata only; changes nothing.
///
/// # Errors
/// [`Error::Io`] when `dir` cannot be read. Entries that vanish meanwhile are skipped.
pub fn permission_report(dir: &Path, allowed: Permissions) -> Result<PermissionReport> {
    let mut report = PermissionReport {
        dir: dir.to_owned(),
        allowed,
        exposed: Vec::new(),
    };
    let meta = fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    report.check(dir, &meta);
    for entry in read_dir(dir)? {
        report.check(&entry.0, &entry.1);
        if entry.1.is_dir() {
            for inner in read_dir(&entry.0).unwrap_or_default() {
                report.check(&inner.0, &inner.1);
            }
        }
    }
    Ok(report)
}

/// The entries of `dir`, with their metadata (not following links).
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), fs::symlink_metadata(e.path()).ok()?)))
        .collect())
}

impl PermissionReport {
    /// The group and other bits of `mode` that the allowed mode does not give.
    fn excess(&self, mode: u32, is_dir: bool) -> u32 {
        let allowed = if is_dir {
            self.allowed.dir
        } else {
            self.allowed.file
        };
        mode & 0o077 & !allowed
    }

    /// Records `path` if its mode grants group or others more than allowed.
    fn check(&mut self, path: &Path, meta: &fs::Metadata) {
        if !meta.is_dir() && !meta.is_file() {
            return;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if self.excess(mode, meta.is_dir()) != 0 {
            self.exposed.push(Exposed {
                path: path.to_owned(),
                mode,
                is_dir: meta.is_dir(),
            });
        }
    }

    /// Whether nothing gives others more than allowed.
    #[must_use]
    pub fn is_private(&self) -> bool {
        self.exposed.is_empty()
    }

    /// One plain line for an operator, when something is exposed: what, how, and the fix.
    #[must_use]
    pub fn note(&self) -> Option<String> {
        if self.exposed.is_empty() {
            return None;
        }
        let (dirs, files): (Vec<&Exposed>, Vec<&Exposed>) =
            self.exposed.iter().partition(|e| e.is_dir);
        let subjects: Vec<String> = [(files, "file", "files"), (dirs, "directory", "directories")]
            .into_iter()
            .filter(|(list, ..)| !list.is_empty())
            .map(|(list, one, many)| counted(&list, one, many))
            .collect();
        let verb = if self.exposed.len() == 1 { "is" } else { "are" };
        let d = self.dir.display();
        let fix = if self.allowed == Permissions::OWNER_ONLY {
            format!("chmod -R go-rwx {d} to fix")
        } else {
            format!(
                "chmod its files to {:04o} and its directories to {:04o} to fix",
                self.allowed.file, self.allowed.dir
            )
        };
        Some(format!(
            "{} of the store {d} {verb} {} by other users; convlog creates {:04o} files and \
             {:04o} directories; {fix}",
            subjects.join(" and "),
            access(
                self.exposed
                    .iter()
                    .fold(0, |m, e| m | self.excess(e.mode, e.is_dir))
            ),
            self.allowed.file,
            self.allowed.dir,
        ))
    }
}

/// "3 files (mode 0644)", "2 directories (modes 0755, 0775)".
fn counted(list: &[&Exposed], one: &str, many: &str) -> String {
    let mut modes: Vec<u32> = list.iter().map(|e| e.mode).collect();
    modes.sort_unstable();
    modes.dedup();
    let shown: Vec<String> = modes.iter().map(|m| format!("{m:04o}")).collect();
    let noun = if list.len() == 1 { one } else { many };
    let label = if modes.len() == 1 { "mode" } else { "modes" };
    format!("{} {noun} ({label} {})", list.len(), shown.join(", "))
}

/// What the group/other bits `bits` let others do, in words.
fn access(bits: u32) -> &'static str {
    match (bits & 0o044 != 0, bits & 0o022 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        (false, true) => "writable",
        (false, false) => "accessible",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_derive_directories() {
        let p: Permissions = "0640".parse().unwrap();
        assert_eq!((p.dir_mode(), p.file_mode()), (0o750, 0o640));
        assert_eq!(p, Permissions::GROUP_READABLE);
        assert_eq!(
            "600".parse::<Permissions>().unwrap(),
            Permissions::OWNER_ONLY
        );
        assert_eq!("0o644".parse::<Permissions>().unwrap().dir_mode(), 0o755);
        assert_eq!(Permissions::default(), Permissions::OWNER_ONLY);
        for bad in [
            "", "0", "0400", "0755", "8", "06400", "rw", "-600", "0o", "04600",
        ] {
            let err = bad.parse::<Permissions>().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidOption {
                        option: "permissions",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert!(matches!(
            Permissions::new(0o600, 0o600),
            Err(Error::InvalidOption { .. })
        ));
        assert_eq!(Permissions::new(0o711, 0o600).unwrap().dir_mode(), 0o711);
    }

    #[test]
    fn the_note_names_counts_modes_and_the_fix() {
        let exposed = |path: &str, mode, is_dir| Exposed {
            path: PathBuf::from(path),
            mode,
            is_dir,
        };
        let mut r = PermissionReport {
            dir: PathBuf::from("/s"),
            allowed: Permissions::OWNER_ONLY,
            exposed: Vec::new(),
        };
        assert!(r.is_private() && r.note().is_none());
        r.exposed = vec![
            exposed("/s", 0o755, true),
            exposed("/s/a", 0o644, false),
            exposed("/s/b", 0o644, false),
            exposed("/s/c", 0o664, false),
        ];
        assert_eq!(
            r.note().unwrap(),
            "3 files (modes 0644, 0664) and 1 directory (mode 0755) of the store /s are \
             readable and writable by other users; convlog creates 0600 files and 0700 \
             directories; chmod -R go-rwx /s to fix"
        );
        r.exposed.truncate(2);
        r.exposed.remove(0);
        assert_eq!(
            r.note().unwrap(),
            "1 file (mode 0644) of the store /s is readable by other users; convlog creates \
             0600 files and 0700 directories; chmod -R go-rwx /s to fix"
        );
    }
}
