//! `convlog import DIR FILE`: JSONL in, batched. Each line is one message,
//! `{"session": "...", "message": {...}}`, or one conversation,
//! `{"session": "...", "messages": [...]}` (a session id is generated when absent).
//!
//! Each message's JSON is stored byte for byte as it appears in the line. By default the
//! whole file is checked first and an invalid line stops the import before anything is
//! appended; `--skip-invalid` appends every valid line and lists the invalid ones.
//!
//! Resumable: lines are read in chunks of 1,000; at a chunk's end each session's messages
//! from it go in as atomic batches, each under an idempotency key derived from its lines
//! (their numbers, and the size and a checksum of the messages' bytes). A kill mid-import
//! leaves whole batches (every chunk before some point, and some sessions' batches of the
//! chunk in progress), never half of one; running the same import again skips every batch
//! already in the store and appends the rest, without duplicates. Generated session ids are
//! derived from the line (its number and a checksum of its bytes), so a rerun generates the
//! same ones.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use convlog::Store;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{CliError, CliResult, InStore};
use crate::jsonl::{Source, check_message, json_error, json_kind};
use crate::util::{
    Out, human_duration, open_writable, plural, print_done, progress, sync, thousands,
};

/// Most messages appended in one batch.
const BATCH_MESSAGES: usize = 1000;
/// Most payload bytes appended in one batch.
const BATCH_BYTES: usize = 64 << 20;
/// Lines are appended in chunks of this many (lines 1 to 1000, 1001 to 2000, ...), and no
/// batch holds messages of two chunks: batch boundaries, and so their keys, depend only on
/// the chunk's own lines, and a file that holds a prefix of whole chunks of another is
/// imported as the same batches.
const CHUNK_LINES: usize = 1000;

/// Arguments of `convlog import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory (created when missing).
    pub dir: PathBuf,
    /// The JSONL file; `-` reads stdin.
    pub file: PathBuf,
    /// Append every valid line and list the invalid ones, instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// The size at which a segment is sealed and the next one started, in bytes, or with a
    /// suffix: 64K, 16M, 1G (4K to 1G; default 64M). It applies to the segments this run
    /// writes; the store does not record it.
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_segment_size)]
    pub segment_size: Option<u64>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// One input line, borrowing the message bytes from it.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    session: Option<String>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
}

/// A checked line: the session and the messages to append to it.
struct Parsed<'a> {
    session: String,
    generated: bool,
    messages: Vec<&'a RawValue>,
}

/// What an import did.
#[derive(Default)]
struct Summary {
    /// Messages appended by this run.
    messages: u64,
    /// Messages skipped because an earlier run appended them (their batch's key was known).
    skipped: u64,
    /// Messages the input holds (counted by the checking pass, which appends nothing).
    found: u64,
    /// Sessions this run appended to.
    sessions: HashSet<String>,
    generated: Vec<String>,
    invalid: Vec<(usize, String)>,
}

/// Imports the file.
pub fn run(args: Args) -> CliResult {
    let started = Instant::now();
    let source = Source::open(&args.file, crate::jsonl::CONVERSATION_LINE)?;
    if !args.skip_invalid {
        let bar = progress(source.len(), "checking", true);
        let checked = apply(&source, None, false, &bar);
        bar.finish_and_clear();
        if checked?.found == 0 {
            // Nothing to append: no store is opened, so none is created.
            let mut out = Out::stdout();
            out.text(&format!(
                "nothing to import: {} holds no message; the store was not opened\n",
                source.name()
            ))?;
            return out.finish();
        }
    }
    let store = open_writable(
        &args.dir,
        true,
        args.segment_size,
        args.mode.permissions(),
        &args.master,
    )?;
    let bar = progress(source.len(), "importing", true);
    let summary = apply(&source, Some(&store), args.skip_invalid, &bar);
    bar.finish_and_clear();
    let summary = summary?;
    sync(&store)?;

    for (n, reason) in &summary.invalid {
        eprintln!("convlog: {} line {n}: {reason} (skipped)", source.name());
    }
    let elapsed = started.elapsed();
    let mut text = format!(
        "imported {} into {} from {} in {} ({} messages/s)\n",
        plural(summary.messages, "message"),
        plural(summary.sessions.len() as u64, "session"),
        source.name(),
        human_duration(elapsed),
        thousands((summary.messages as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
    );
    if summary.skipped > 0 {
        text.push_str(&format!(
            "skipped {} already imported (by an earlier run of this import)\n",
            plural(summary.skipped, "message")
        ));
    }
    if let Some(first) = summary.generated.first() {
        text.push_str(&format!(
            "generated session ids for {} without one ({first}{})\n",
            plural(summary.generated.len() as u64, "conversation"),
            if summary.generated.len() > 1 {
                ", ..."
            } else {
                ""
            }
        ));
    }
    if !summary.invalid.is_empty() {
        const LISTED: usize = 20;
        let mut lines: Vec<String> = summary
            .invalid
            .iter()
            .take(LISTED)
            .map(|(n, _)| n.to_string())
            .collect();
        if summary.invalid.len() > LISTED {
            lines.push("...".into());
        }
        text.push_str(&format!(
            "skipped {}: {}\n",
            plural(summary.invalid.len() as u64, "invalid line"),
            lines.join(", ")
        ));
    }
    print_done(&text)
}

/// Reads every line of `source`; appends the valid ones to `store` when given. An invalid
/// line fails the pass unless `skip_invalid`, when it is listed in the summary instead.
fn apply(
    source: &Source,
    store: Option<&Store>,
    skip_invalid: bool,
    bar: &ProgressBar,
) -> CliResult<Summary> {
    let mut summary = Summary::default();
    let mut chunk = Chunk::default();
    let limit = crate::jsonl::CONVERSATION_LINE;
    let mut lines = source.lines()?.at_most(limit.max, limit.why);
    while let Some((n, line)) = lines.next_line()? {
        let parsed = match parse_line(line, n) {
            Ok(p) => p,
            Err(reason) if skip_invalid => {
                summary.invalid.push((n, reason));
                continue;
            }
            Err(reason) => {
                // The first pass checked every line; a line can only go bad in the second
                // if the file changed in between.
                let outcome = if store.is_some() {
                    format!(
                        "the file changed during the import; the lines before line {} (where \
                         its chunk of {CHUNK_LINES} lines starts) were imported",
                        chunk_start(n)
                    )
                } else {
                    "nothing was imported".to_owned()
                };
                return Err(CliError::Input(format!(
                    "{} line {n}: {reason}; {outcome}",
                    lines.name()
                )));
            }
        };
        summary.found += parsed.messages.len() as u64;
        if let Some(store) = store {
            for (i, m) in parsed.messages.iter().enumerate() {
                let at = (n, i + 1);
                chunk.push(store, &parsed.session, at, m.get().as_bytes(), &mut summary)?;
            }
            // (A conversation of no messages makes no session: none to name.)
            if parsed.generated && !parsed.messages.is_empty() {
                summary.generated.push(parsed.session);
            }
        }
        if n.is_multiple_of(256) {
            bar.set_position(lines.bytes());
        }
    }
    if let Some(store) = store {
        chunk.flush(store, &mut summary)?;
    }
    bar.set_position(lines.bytes());
    Ok(summary)
}

/// Parses and checks one line.
fn parse_line<'a>(line: &'a [u8], n: usize) -> Result<Parsed<'a>, String> {
    let parsed: Line<'a> = serde_json::from_slice(line).map_err(|e| {
        let first = line.iter().find(|b| !b.is_ascii_whitespace());
        match (e.classify(), first) {
            (serde_json::error::Category::Data, Some(&b)) if b != b'{' => {
                let kind = std::str::from_utf8(line).map_or("not JSON", |s| json_kind(s.trim()));
                format!(
                    "a line must be a JSON object with \"session\" and \"message\" or \
                     \"messages\", not {kind}"
                )
            }
            _ => json_error(line, &e),
        }
    })?;
    let (messages, one) = match (parsed.message, parsed.messages) {
        (Some(m), None) => (vec![m], true),
        (None, Some(ms)) => (ms, false),
        (Some(_), Some(_)) => {
            return Err("a line holds either \"message\" or \"messages\", not both".into());
        }
        (None, None) => return Err("a line needs \"message\" or \"messages\"".into()),
    };
    for (i, m) in messages.iter().enumerate() {
        check_message(m).map_err(|e| {
            if one {
                format!("\"message\": {e}")
            } else {
                format!("\"messages\"[{i}]: {e}")
            }
        })?;
    }
    let (session, generated) = match parsed.session {
        Some(s) => {
            convlog::validate_session_id(&s).map_err(|e| e.to_string())?;
            (s, false)
        }
        None if one => {
            return Err("a \"message\" line needs a \"session\"".into());
        }
        None => (generated_session(line, n), true),
    };
    Ok(Parsed {
        session,
        generated,
        messages,
    })
}

/// The session id generated for conversation line `n` without one:
/// `import-<crc32 of the line's bytes, hex>-<n>`, the same in every run over the same line.
fn generated_session(line: &[u8], n: usize) -> String {
    format!("import-{:08x}-{n}", crc32fast::hash(line))
}

/// Where a message is in the input: its line number and its 1-based position in the line.
type At = (usize, usize);

/// The messages read from one chunk of [`CHUNK_LINES`] lines and not yet appended, grouped
/// by session (sessions in the order they first appear, each session's messages in file
/// order). At the chunk's end each session's messages go in as atomic batches, each under a
/// key derived from them, so input that alternates sessions line by line still makes few
/// batches (and few keys for the index to remember).
///
/// What is appended, and where batches start and end, depends only on the chunk's own lines,
/// so the same lines give the same batches and keys in every run.
#[derive(Default)]
struct Chunk {
    /// Which chunk: `(line - 1) / CHUNK_LINES`.
    index: usize,
    groups: Vec<Group>,
    by_session: HashMap<String, usize>,
    bytes: usize,
}

/// One session's messages in a [`Chunk`].
struct Group {
    session: String,
    messages: Vec<(At, Vec<u8>)>,
}

impl Chunk {
    /// Adds the message at `at`, first appending what the chunk holds when `at` is in the
    /// next chunk or the chunk would hold more than [`BATCH_BYTES`].
    fn push(
        &mut self,
        store: &Store,
        session: &str,
        at: At,
        message: &[u8],
        summary: &mut Summary,
    ) -> CliResult {
        let index = chunk(at);
        if !self.groups.is_empty()
            && (index != self.index || self.bytes + message.len() > BATCH_BYTES)
        {
            self.flush(store, summary)?;
        }
        self.index = index;
        let g = match self.by_session.get(session) {
            Some(&g) => g,
            None => {
                self.by_session
                    .insert(session.to_owned(), self.groups.len());
                self.groups.push(Group {
                    session: session.to_owned(),
                    messages: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups[g].messages.push((at, message.to_vec()));
        self.bytes += message.len();
        Ok(())
    }

    /// Appends every session's messages, in batches of at most [`BATCH_MESSAGES`] messages
    /// and [`BATCH_BYTES`] bytes.
    fn flush(&mut self, store: &Store, summary: &mut Summary) -> CliResult {
        for group in self.groups.drain(..) {
            let mut rest = group.messages.as_slice();
            while !rest.is_empty() {
                let len = batch_len(rest);
                append_batch(store, &group.session, &rest[..len], summary)?;
                rest = &rest[len..];
            }
        }
        self.by_session.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// How many of `messages` (at least one) the next batch takes.
fn batch_len(messages: &[(At, Vec<u8>)]) -> usize {
    let mut bytes = 0;
    for (i, (_, m)) in messages.iter().enumerate() {
        if i > 0 && (i >= BATCH_MESSAGES || bytes + m.len() > BATCH_BYTES) {
            return i;
        }
        bytes += m.len();
    }
    messages.len()
}

/// Appends `batch` (not empty) to `session` under its key; a key the session already holds
/// (an earlier run appended this batch) appends nothing and counts the messages as skipped.
fn append_batch(
    store: &Store,
    session: &str,
    batch: &[(At, Vec<u8>)],
    summary: &mut Summary,
) -> CliResult {
    let messages: Vec<&[u8]> = batch.iter().map(|(_, m)| m.as_slice()).collect();
    let before = store.last_lsn();
    let receipts = store
        .append_batch_raw_with_key(session, &batch_key(batch), &messages)
        .in_store(store.path())?;
    let n = batch.len() as u64;
    if receipts.first().is_some_and(|r| r.lsn <= before) {
        summary.skipped += n;
    } else {
        summary.messages += n;
        if !summary.sessions.contains(session) {
            summary.sessions.insert(session.to_owned());
        }
    }
    Ok(())
}

/// `import:<line>.<message>-<line>.<message>:<bytes>:<crc32>`: where the batch's first and
/// last messages are, the bytes of its messages, and a CRC-32 over their lengths and bytes.
/// The same lines give the same key in every run.
fn batch_key(batch: &[(At, Vec<u8>)]) -> String {
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0;
    for (_, m) in batch {
        crc.update(&(m.len() as u64).to_le_bytes());
        crc.update(m);
        bytes += m.len();
    }
    let (first, last) = match (batch.first(), batch.last()) {
        (Some((a, _)), Some((b, _))) => (*a, *b),
        _ => ((0, 0), (0, 0)),
    };
    format!(
        "import:{}.{}-{}.{}:{bytes}:{:08x}",
        first.0,
        first.1,
        last.0,
        last.1,
        crc.finalize()
    )
}

/// The first line of the chunk that line `n` is in.
fn chunk_start(n: usize) -> usize {
    chunk((n, 0)) * CHUNK_LINES + 1
}

/// The chunk of [`CHUNK_LINES`] lines that the message at `at` is in.
fn chunk(at: At) -> usize {
    at.0.saturating_sub(1) / CHUNK_LINES
}
