//! Helpers shared by the subcommands: opening stores, output, progress bars, formatting.

use std::borrow::Cow;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use convlog::{
    Durability, KEYS_FILE, LOCK_FILE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Permissions,
    RecoveryMode, SYNC_FILE, SegmentId, Store, Timestamp, WRITERS_FILE,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{CliError, CliResult, InStore};
use crate::keys::{Key, KeyArg};
use crate::perms::ModeArg;

/// Opens the store in `dir` read-only: never creates, locks or changes a file.
///
/// A directory without any segment file is refused: every store has at least one. The
/// master key named by `key` (`--key-file`, `$CONVLOG_KEY_FILE`) opens an encrypted store.
pub fn open_read_only(dir: &Path, mode: RecoveryMode, key: &KeyArg) -> CliResult<Store> {
    require_store(dir)?;
    let key = key.load()?;
    let mut builder = Store::builder().read_only(true).recovery(mode);
    if let Some(k) = &key {
        builder = builder.encryption(k.master.clone());
    }
    builder
        .open(dir)
        .map_err(|e| CliError::opening(dir, e, key.as_ref()))
}

/// Opens the store in `dir` for writing; with `create`, a missing or empty directory becomes
/// a new store. `segment_size` (`--segment-size`) is the size at which this writer seals a
/// segment; the library's default when `None`.
///
/// Directories and files it creates get the modes `perms` (`--mode`; owner-only by default).
/// The master key named by `key` (`--key-file`, `$CONVLOG_KEY_FILE`) opens an encrypted
/// store, and makes a new store encrypted.
///
/// Appends are buffered; callers finish with [`sync`] so one fsync covers all their writes.
/// A torn tail the open cut off is mentioned on stderr.
pub fn open_writable(
    dir: &Path,
    create: bool,
    segment_size: Option<u64>,
    perms: Permissions,
    key: &KeyArg,
) -> CliResult<Store> {
    if !(create && may_create(dir)) {
        require_store(dir)?;
    }
    let key = key.load()?;
    open_writable_with(dir, segment_size, perms, key.as_ref())
}

/// [`open_writable`] of an existing store, with the default segment size: what every
/// subcommand that changes one store (pop, clear, fork, delete, compact) opens.
pub fn open_existing(dir: &Path, mode: &ModeArg, key: &KeyArg) -> CliResult<Store> {
    open_writable(dir, false, None, mode.permissions(), key)
}

/// [`open_existing`], with `options` (`Store::builder()` and what a subcommand adds) as the
/// base the store's options start from.
pub fn open_existing_with(
    dir: &Path,
    options: convlog::Options,
    mode: &ModeArg,
    key: &KeyArg,
) -> CliResult<Store> {
    require_store(dir)?;
    let key = key.load()?;
    open_options(dir, options.permissions(mode.permissions()), key.as_ref())
}

/// [`open_writable`] of an existing store (or one [`may_create`] allowed) with `key`, read.
pub fn open_writable_with(
    dir: &Path,
    segment_size: Option<u64>,
    perms: Permissions,
    key: Option<&Key>,
) -> CliResult<Store> {
    let mut builder = Store::builder().permissions(perms);
    if let Some(bytes) = segment_size {
        builder = builder.segment_size(bytes);
    }
    open_options(dir, builder, key)
}

/// Opens the store in `dir` for writing with `builder`'s options, buffered, under `key`,
/// noting on stderr a torn tail the open cut off.
fn open_options(dir: &Path, builder: convlog::Options, key: Option<&Key>) -> CliResult<Store> {
    let mut builder = builder.durability(Durability::Buffered);
    if let Some(k) = key {
        builder = builder.encryption(k.master.clone());
    }
    let store = builder.open(dir).map_err(|e| open_error(dir, e, key))?;
    let report = store.recovery_report();
    if let Some(t) = &report.torn_tail {
        eprintln!(
            "convlog: note: cut a torn tail of {} bytes at segment {} offset {} in {} \
             (a write that a crash interrupted)",
            t.bytes,
            t.segment,
            t.offset,
            dir.display()
        );
    }
    Ok(store)
}

/// Whether a new store may be made (or its creation finished) in `dir`: it is missing, or a
/// directory holding nothing but what creating a store writes first.
///
/// The library creates a store in steps: the directory, then `WRITERS` and `LOCK` (locked),
/// then the first segment file and its header, and for an encrypted store its key file
/// `KEYS` (written as `KEYS.tmp`, then renamed). A writer killed between them leaves the lock
/// files alone, or with a segment whose header never completed (which recovery removes), and
/// perhaps the key file; a second writer racing the first sees the same. Either may go ahead: the write lock makes
/// one wait for the other. Any other entry means the directory holds something
/// convlog did not write, and it is left alone.
fn may_create(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.into_iter().all(|entry| {
            entry.is_ok_and(|e| {
                let name = e.file_name();
                let is_file = e.file_type().is_ok_and(|t| t.is_file());
                is_file
                    && name.to_str().is_some_and(|n| {
                        n == LOCK_FILE
                            || n == WRITERS_FILE
                            || n == SYNC_FILE
                            || n == KEYS_FILE
                            || n == KEYS_TMP_FILE
                            || SegmentId::parse_file_name(n).is_some()
                    })
            })
        }),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// The temporary name `KEYS` is written under before a rename puts it in place.
const KEYS_TMP_FILE: &str = "KEYS.tmp";

/// A library error from opening the store in `dir` for writing: an out-of-range
/// `--segment-size` (which the library checks before it touches a file) is bad input; a key
/// that does not fit the store is [`CliError::Key`].
pub fn open_error(dir: &Path, e: convlog::Error, key: Option<&Key>) -> CliError {
    match e {
        convlog::Error::InvalidOption {
            option: "segment_size",
            reason,
        } => CliError::Input(format!(
            "invalid --segment-size: {reason} (4K to 1G); nothing was written"
        )),
        e => CliError::opening(dir, e, key),
    }
}

/// Parses `--segment-size`: a number of bytes, optionally with a binary suffix `K`, `M` or
/// `G` (also `KiB`, `MiB`, `GiB`; any case): `65536`, `64K`, `16M`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size: a number of bytes, optionally followed by K, M or G"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size: a number of bytes, optionally followed by K, M or G")
    })?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `--segment-size` as [`parse_size`] does, and checks it is within
/// [`MIN_SEGMENT_SIZE`]`..=`[`MAX_SEGMENT_SIZE`], so that an out-of-range size is a usage
/// error, found before anything is opened.
pub fn parse_segment_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&bytes) {
        return Err(format!(
            "{bytes} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE} (4K to 1G)"
        ));
    }
    Ok(bytes)
}

/// Makes everything written through `store` durable.
pub fn sync(store: &Store) -> CliResult<()> {
    store.sync().map(|_| ()).in_store(store.path())
}

/// Fails with [`convlog::Error::NotAStore`] unless `dir` is a directory holding a segment.
pub fn require_store(dir: &Path) -> CliResult<()> {
    let not_a_store = |reason| {
        CliError::store(
            dir,
            convlog::Error::NotAStore {
                path: dir.to_owned(),
                reason,
            },
        )
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_a_store("no such directory"));
        }
        Err(_) if dir.is_file() => return Err(not_a_store("it is a file, not a directory")),
        Err(e) => return Err(CliError::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("read directory", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .and_then(SegmentId::parse_file_name)
            .is_some()
        {
            return Ok(());
        }
    }
    Err(not_a_store("no segment files in it"))
}

/// Fails unless writing to `out` (created or truncated) leaves every file of the store in
/// `dir` alone: `out` must not lie inside the store directory (after resolving `..` and
/// symbolic links), and must not be an existing file that is one of the store's (a symbolic
/// or hard link to it). Checked before anything is created or truncated.
pub fn require_outside_store(dir: &Path, out: &Path) -> CliResult<()> {
    let store = std::fs::canonicalize(dir).map_err(|e| CliError::io("resolve", dir, e))?;
    let refuse = |why: String| {
        CliError::Message(format!(
            "refusing to write to {}: {why}; nothing was written (pick a file outside {})",
            out.display(),
            dir.display()
        ))
    };
    let target = resolve_output(out)?;
    if target.starts_with(&store) {
        return Err(refuse(format!(
            "it is inside the store directory {}, and writing there could destroy the \
             store's data",
            dir.display()
        )));
    }
    if let Ok(meta) = std::fs::metadata(out) {
        use std::os::unix::fs::MetadataExt;
        let mut stack = vec![store.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(m) = entry.metadata() else { continue };
                if m.is_dir() {
                    stack.push(entry.path());
                } else if m.dev() == meta.dev() && m.ino() == meta.ino() {
                    let name = entry.path();
                    let name = name.strip_prefix(&store).unwrap_or(&name);
                    return Err(refuse(format!(
                        "it is the store's file {} (through a link), and writing it would \
                         destroy the store's data",
                        dir.join(name).display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The absolute path a file created at `path` would get: symbolic links followed (also a
/// dangling one, which creating the file would follow too), `..` resolved.
fn resolve_output(path: &Path) -> CliResult<PathBuf> {
    let mut p = path.to_owned();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p).map_err(|e| CliError::io("read link", &p, e))?;
                p = match p.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
                continue;
            }
            Ok(_) => return std::fs::canonicalize(&p).map_err(|e| CliError::io("resolve", &p, e)),
            Err(_) => {}
        }
        let Some(name) = p.file_name() else {
            return std::fs::canonicalize(&p).map_err(|e| CliError::io("resolve", &p, e));
        };
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let parent = std::fs::canonicalize(parent).map_err(|e| CliError::io("create", path, e))?;
        return Ok(parent.join(name));
    }
    Err(CliError::Message(format!(
        "cannot create {}: too many levels of symbolic links",
        path.display()
    )))
}

/// Checks a session id given on the command line.
pub fn check_session(session: &str) -> CliResult<()> {
    convlog::validate_session_id(session).map_err(|e| CliError::Input(e.to_string()))
}

/// Fails unless `session` holds messages in `store`.
pub fn require_session(store: &Store, session: &str) -> CliResult<()> {
    if store.contains(session) {
        Ok(())
    } else {
        Err(CliError::Message(format!(
            "no session {session:?} in store {}",
            store.path().display()
        )))
    }
}

/// Bytes of the store's segment files on disk.
pub fn disk_bytes(store: &Store) -> CliResult<u64> {
    let mut total = 0;
    for id in store.segment_ids() {
        let path = store.path().join(id.file_name());
        let meta = std::fs::metadata(&path).map_err(|e| CliError::io("stat", &path, e))?;
        total += meta.len();
    }
    Ok(total)
}

/// A message's stored JSON on one line: bytes `\n` and `\r` can only be insignificant
/// whitespace in valid JSON (inside strings they must be escaped), so they are dropped.
/// Anything imported from JSONL has none and comes back unchanged.
pub fn one_line(json: &[u8]) -> Cow<'_, [u8]> {
    if json.iter().any(|&b| b == b'\n' || b == b'\r') {
        Cow::Owned(
            json.iter()
                .copied()
                .filter(|&b| b != b'\n' && b != b'\r')
                .collect(),
        )
    } else {
        Cow::Borrowed(json)
    }
}

/// Buffered output to stdout or a file, with errors that name where.
pub struct Out {
    w: BufWriter<Box<dyn Write>>,
    path: PathBuf,
    /// A regular file's replacement being written (see [`Out::create`]): renamed over
    /// `path` by [`Out::finish`], removed if the `Out` is dropped first.
    replacement: Option<Replacement>,
}

/// The temporary file an [`Out`] writes in place of a regular file, and a handle to sync it.
struct Replacement {
    tmp: PathBuf,
    file: std::fs::File,
}

impl Drop for Out {
    fn drop(&mut self) {
        if let Some(r) = self.replacement.take() {
            // Not finished: the file it was to replace stays as it was.
            let _ = std::fs::remove_file(&r.tmp);
        }
    }
}

impl Out {
    /// Standard output.
    pub fn stdout() -> Out {
        Out {
            w: BufWriter::with_capacity(1 << 16, Box::new(io::stdout().lock())),
            path: PathBuf::from("stdout"),
            replacement: None,
        }
    }

    /// `path`, with exactly `mode` (what it will hold are conversations); `-` is standard
    /// output. A new or regular file is written as a temporary file beside it, synced and
    /// renamed over it by [`Out::finish`]: until then (and for good if the `Out` is dropped
    /// first: an error half-way) `path` holds what it held. Anything else (a FIFO, a
    /// terminal, `/dev/stdout`, a symlink) is written as it is.
    pub fn create(path: &Path, mode: u32) -> CliResult<Out> {
        if path == Path::new("-") {
            return Ok(Out::stdout());
        }
        let replaceable = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta.is_file(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if !replaceable {
            let file = crate::perms::create_or_truncate(path, mode)?;
            return Ok(Out {
                w: BufWriter::with_capacity(1 << 16, Box::new(file)),
                path: path.to_owned(),
                replacement: None,
            });
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp); // a leftover of a killed run with this pid
        let file = crate::perms::create_new(&tmp, mode)?;
        let sync = file
            .try_clone()
            .map_err(|e| CliError::io("open", &tmp, e))?;
        Ok(Out {
            w: BufWriter::with_capacity(1 << 16, Box::new(file)),
            path: path.to_owned(),
            replacement: Some(Replacement { tmp, file: sync }),
        })
    }

    /// Writes raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> CliResult<()> {
        self.w
            .write_all(b)
            .map_err(|e| CliError::io("write", &self.path, e))
    }

    /// Writes text.
    pub fn text(&mut self, s: &str) -> CliResult<()> {
        self.bytes(s.as_bytes())
    }

    /// Writes `value` as pretty JSON and a newline.
    pub fn json_pretty<T: Serialize + ?Sized>(&mut self, value: &T) -> CliResult<()> {
        serde_json::to_writer_pretty(&mut self.w, value).map_err(|e| match e.io_error_kind() {
            Some(kind) => CliError::io("write", &self.path, io::Error::from(kind)),
            None => CliError::Message(format!("cannot encode JSON: {e}")),
        })?;
        self.text("\n")
    }

    /// Flushes what was written so far (a follower's line reaches its reader at once).
    pub fn flush(&mut self) -> CliResult<()> {
        self.w
            .flush()
            .map_err(|e| CliError::io("write", &self.path, e))
    }

    /// Flushes everything written; a replacement file is synced and renamed into place.
    pub fn finish(mut self) -> CliResult<()> {
        self.w
            .flush()
            .map_err(|e| CliError::io("write", &self.path, e))?;
        let Some(r) = &self.replacement else {
            return Ok(());
        };
        r.file
            .sync_all()
            .map_err(|e| CliError::io("fsync", &r.tmp, e))?;
        std::fs::rename(&r.tmp, &self.path).map_err(|e| CliError::io("rename", &r.tmp, e))?;
        self.replacement = None;
        // Best effort: the rename itself durable (the data already is).
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Ok(d) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// What a command that has already changed the store returns when printing fails: the
/// error says the change is done (`done`), so that nobody retries it (which would repeat
/// an append, or pop another message).
pub fn done_but(done: &str, printed: CliResult) -> CliResult {
    printed.map_err(|e| CliError::Message(format!("{done} (done), but {e}")))
}

/// [`print`] for a command that has changed the store: if printing fails, the error says
/// the change is done, in the words of `text`'s first line (see [`done_but`]).
pub fn print_done(text: &str) -> CliResult {
    done_but(text.lines().next().unwrap_or_default(), print(text))
}

/// Prints `text` on stdout (a closed pipe is not an error).
pub fn print(text: &str) -> CliResult<()> {
    let mut out = Out::stdout();
    out.text(text)?;
    out.finish()
}

/// A progress bar on stderr when stderr is a terminal; a hidden one otherwise.
/// `bytes` shows the position as a byte count.
pub fn progress(len: u64, message: &'static str, bytes: bool) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = if bytes {
        "{msg:>9} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:>9} [{wide_bar:.cyan/blue}] {human_pos}/{human_len} eta {eta}"
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A ticking spinner on stderr when stderr is a terminal, for work without a known length.
pub fn spinner(message: String) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The directory entries of `dir` named like segment files (none if it cannot be read).
fn segment_entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(SegmentId::parse_file_name)
                .is_some()
        })
}

/// Sum of the sizes of the segment files in `dir` (for progress before an open).
pub fn segment_bytes_in(dir: &Path) -> u64 {
    segment_entries(dir)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// How many segment files `dir` holds.
pub fn segment_files_in(dir: &Path) -> usize {
    segment_entries(dir).count()
}

/// A timestamp as RFC 3339 UTC with microseconds: `2026-05-01T12:34:56.123456Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    ts.to_string()
}

/// `12345678` as `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and `noun`, plural unless `n` is 1: `1 segment`, `12,000 messages`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// A byte count for people: `512 B`, `3.4 KiB`, `12.9 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A duration for people: `840 ns`, `38 µs`, `14.2 ms`, `1.37 s`.
pub fn human_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{} µs", ns / 1_000)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `records_by_kind` as `append 20,000, pop 312`.
pub fn kinds(by_kind: &std::collections::BTreeMap<convlog::Kind, u64>) -> String {
    if by_kind.is_empty() {
        return "none".into();
    }
    by_kind
        .iter()
        .map(|(k, n)| format!("{} {}", k.name(), thousands(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an open's recovery checked, for people, without calling segments clean that it
/// loaded from their hint files unread: `clean: 2 segments scanned (1.2 MiB)`, or
/// `no damage found: 0 segments scanned (0 B); 1 segment loaded from its hint file without a
/// scan (not checked; `convlog verify DIR` checks every byte)`.
///
/// `segments` is the number of segments the store holds ([`convlog::StoreStats::segments`]).
pub fn recovery_summary(report: &convlog::RecoveryReport, segments: usize, dir: &Path) -> String {
    let from_hints = report.hints_used.min(segments);
    let scanned = report.segments_scanned;
    let status = match report.classification() {
        convlog::Classification::Clean if from_hints > 0 => "no damage found",
        c => c.name(),
    };
    let mut text = format!(
        "{status}: {} scanned ({})",
        plural(scanned as u64, "segment"),
        human_bytes(report.bytes_scanned)
    );
    if from_hints > 0 {
        text.push_str(&format!(
            "; {} loaded from {} without a scan (not checked; `convlog verify {}` checks \
             every byte)",
            plural(from_hints as u64, "segment"),
            if from_hints == 1 {
                "its hint file"
            } else {
                "their hint files"
            },
            dir.display()
        ));
    }
    text
}

/// A recovery report's torn tail, for people.
/// `records_by_kind` keyed by kind name, for JSON output.
pub fn kind_names(
    by_kind: &std::collections::BTreeMap<convlog::Kind, u64>,
) -> std::collections::BTreeMap<&'static str, u64> {
    by_kind.iter().map(|(k, n)| (k.name(), *n)).collect()
}

pub fn torn_tail(t: &convlog::TornTail) -> String {
    let kept = t
        .quarantined
        .as_ref()
        .map_or(String::new(), |p| format!(" (copied to {})", p.display()));
    format!(
        "{} bytes at segment {} offset {}{kept}",
        t.bytes, t.segment, t.offset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("12T").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("-4096").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn one_line_drops_only_newlines() {
        assert!(matches!(one_line(b"{\"a\":1}"), Cow::Borrowed(_)));
        assert_eq!(&*one_line(b"{\n \"a\": 1\r\n}\n"), b"{ \"a\": 1}");
    }
}
