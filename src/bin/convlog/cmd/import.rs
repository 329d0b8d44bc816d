//! `convlog import DIR FILE`: JSONL in, batched. Each line is one message,
//! `{"session": "...", "message": {...}}`, or one conversation,
//! `{"session": "...", "messages": [...]}` (a session id is generated when absent).
//!
//! Each message's JSON is stored byte for byte as it appears in the line. By default the
//! whole file is checked first and an invalid line stops the import before anything is
//! appended; `--skip-invalid` appends every valid line and lists the invalid ones.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use convlog::{Store, Timestamp};
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{CliError, CliResult, InStore};
use crate::jsonl::{Source, check_message, json_error, json_kind};
use crate::util::{Out, human_duration, open_writable, plural, progress, sync, thousands};

/// Most messages appended in one batch.
const BATCH_MESSAGES: usize = 1000;
/// Most payload bytes appended in one batch.
const BATCH_BYTES: usize = 64 << 20;

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
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_size)]
    pub segment_size: Option<u64>,
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
    messages: u64,
    sessions: HashSet<String>,
    generated: Vec<String>,
    invalid: Vec<(usize, String)>,
}

/// Imports the file.
pub fn run(args: Args) -> CliResult {
    let started = Instant::now();
    let source = Source::open(&args.file)?;
    // Generated session ids are unique to this run and the same in both passes.
    let run_id = format!("{:x}", Timestamp::now().0);
    if !args.skip_invalid {
        let bar = progress(source.len(), "checking", true);
        let checked = apply(&source, None, false, &run_id, &bar);
        bar.finish_and_clear();
        checked?;
    }
    let store = open_writable(&args.dir, true, args.segment_size)?;
    let bar = progress(source.len(), "importing", true);
    let summary = apply(&source, Some(&store), args.skip_invalid, &run_id, &bar);
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
    let mut out = Out::stdout();
    out.text(&text)?;
    out.finish()
}

/// Reads every line of `source`; appends the valid ones to `store` when given. An invalid
/// line fails the pass unless `skip_invalid`, when it is listed in the summary instead.
fn apply(
    source: &Source,
    store: Option<&Store>,
    skip_invalid: bool,
    run_id: &str,
    bar: &ProgressBar,
) -> CliResult<Summary> {
    let mut summary = Summary::default();
    let mut batch = Batch::default();
    let mut lines = source.lines()?;
    while let Some((n, line)) = lines.next_line()? {
        let parsed = match parse_line(line, n, run_id) {
            Ok(p) => p,
            Err(reason) if skip_invalid => {
                summary.invalid.push((n, reason));
                continue;
            }
            Err(reason) => {
                // The first pass checked every line; a line can only go bad in the second
                // if the file changed in between.
                let outcome = if store.is_some() {
                    "the file changed during the import; the lines before it were imported"
                } else {
                    "nothing was imported"
                };
                return Err(CliError::Input(format!(
                    "{} line {n}: {reason}; {outcome}",
                    lines.name()
                )));
            }
        };
        if let Some(store) = store {
            for m in &parsed.messages {
                batch.push(store, &parsed.session, m.get().as_bytes())?;
            }
            summary.messages += parsed.messages.len() as u64;
            if parsed.generated {
                summary.generated.push(parsed.session.clone());
            }
            if !parsed.messages.is_empty() && !summary.sessions.contains(&parsed.session) {
                summary.sessions.insert(parsed.session);
            }
        }
        if n.is_multiple_of(256) {
            bar.set_position(lines.bytes());
        }
    }
    if let Some(store) = store {
        batch.flush(store)?;
    }
    bar.set_position(lines.bytes());
    Ok(summary)
}

/// Parses and checks one line.
fn parse_line<'a>(line: &'a [u8], n: usize, run_id: &str) -> Result<Parsed<'a>, String> {
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
            _ => json_error(&e),
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
        None => (format!("import-{run_id}-{n}"), true),
    };
    Ok(Parsed {
        session,
        generated,
        messages,
    })
}

/// Consecutive messages of one session, appended together.
#[derive(Default)]
struct Batch {
    session: String,
    messages: Vec<Vec<u8>>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, store: &Store, session: &str, message: &[u8]) -> CliResult {
        if !self.messages.is_empty()
            && (self.session != session
                || self.messages.len() >= BATCH_MESSAGES
                || self.bytes + message.len() > BATCH_BYTES)
        {
            self.flush(store)?;
        }
        if self.messages.is_empty() && self.session != session {
            session.clone_into(&mut self.session);
        }
        self.messages.push(message.to_vec());
        self.bytes += message.len();
        Ok(())
    }

    fn flush(&mut self, store: &Store) -> CliResult {
        if self.messages.is_empty() {
            return Ok(());
        }
        store
            .append_batch_raw(&self.session, &self.messages)
            .in_store(store.path())?;
        self.messages.clear();
        self.bytes = 0;
        Ok(())
    }
}
