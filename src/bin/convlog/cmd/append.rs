//! `convlog append DIR SESSION [JSON | -]`: one message from the argument, or JSONL (one
//! message object per line) from stdin.
//!
//! From stdin, each line is appended as it arrives and its receipt printed (and flushed) at
//! once, so a pipe from a running agent works and a receipt on stdout means the message is
//! in the store. `--batch` (and `--key`) read all of stdin first and append all of it or
//! nothing.

use std::io::{self, Write};
use std::path::PathBuf;

use convlog::{Receipt, Store};
use serde_json::value::RawValue;

use crate::error::{CliError, CliResult, InStore};
use crate::jsonl::{Lines, Source, check_message, json_error};
use crate::util::{check_session, done_but, open_writable, plural, print, sync};

/// Most payload bytes appended in one atomic batch (the library caps a batch at 1 GiB).
const MAX_BATCH_BYTES: usize = 256 << 20;

/// Arguments of `convlog append`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory (created when missing).
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// The message, a JSON object; `-` or nothing reads JSONL (one object per line) from
    /// stdin and appends each line as it arrives, printing one receipt line per message. An
    /// invalid line stops the command (exit status 1); the lines before it stay appended.
    pub message: Option<String>,
    /// With stdin: read all of it first, and append all of it, or nothing when a line is
    /// invalid; prints one summary line.
    #[arg(long)]
    pub batch: bool,
    /// The size at which a segment is sealed and the next one started, in bytes, or with a
    /// suffix: 64K, 16M, 1G (4K to 1G; default 64M). It applies to the segments this run
    /// writes; the store does not record it.
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_segment_size)]
    pub segment_size: Option<u64>,
    /// An idempotency key: if the session already holds messages appended with this key,
    /// print their receipts and append nothing (a retry is safe). With stdin, the whole input
    /// is one atomic batch under the key (so `--key` implies `--batch`).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Appends the message(s) and prints where they landed.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let messages: Vec<Vec<u8>> = match args.message.as_deref() {
        Some(json) if json != "-" => vec![parse_argument(json)?],
        _ if args.batch || args.key.is_some() => read_stdin()?,
        _ => return stream(&args),
    };
    if messages.is_empty() {
        return Err(CliError::Input(
            "stdin holds no message: nothing appended".into(),
        ));
    }
    let store = open_writable(
        &args.dir,
        true,
        args.segment_size,
        args.mode.permissions(),
        &args.master,
    )?;
    let receipts = match &args.key {
        Some(key) => store
            .append_batch_raw_with_key(&args.session, key, &messages)
            .in_store(&args.dir)?,
        None => append_in_batches(&store, &args, &messages)?,
    };
    sync(&store)?;
    report(&args, &receipts)
}

/// The message argument, checked.
fn parse_argument(json: &str) -> CliResult<Vec<u8>> {
    let raw: &RawValue = serde_json::from_str(json).map_err(|e| {
        CliError::Input(format!(
            "message argument: {}",
            json_error(json.as_bytes(), &e)
        ))
    })?;
    check_message(raw).map_err(|e| CliError::Input(format!("message argument: {e}")))?;
    Ok(raw.get().as_bytes().to_vec())
}

/// Appends `messages` in atomic batches of at most [`MAX_BATCH_BYTES`].
fn append_in_batches(store: &Store, args: &Args, messages: &[Vec<u8>]) -> CliResult<Vec<Receipt>> {
    let mut receipts = Vec::with_capacity(messages.len());
    let mut batch: Vec<&[u8]> = Vec::new();
    let mut batch_bytes = 0;
    for m in messages {
        if !batch.is_empty() && batch_bytes + m.len() > MAX_BATCH_BYTES {
            receipts.extend(
                store
                    .append_batch_raw(&args.session, &batch)
                    .in_store(&args.dir)?,
            );
            batch.clear();
            batch_bytes = 0;
        }
        batch.push(m);
        batch_bytes += m.len();
    }
    receipts.extend(
        store
            .append_batch_raw(&args.session, &batch)
            .in_store(&args.dir)?,
    );
    Ok(receipts)
}

/// Prints where the messages landed.
fn report(args: &Args, receipts: &[Receipt]) -> CliResult {
    let line = match (receipts.first(), receipts.last()) {
        (Some(a), _) if receipts.len() == 1 => receipt_line(&args.session, a),
        (Some(a), Some(b)) => format!(
            "appended {} to {:?}: interactions {}..={}, LSNs {}..={}\n",
            plural(receipts.len() as u64, "message"),
            args.session,
            a.interaction_id,
            b.interaction_id,
            a.lsn,
            b.lsn
        ),
        _ => return Ok(()),
    };
    done_but(line.trim_end(), print(&line))
}

/// The receipt of one message, one line: `appended to "s": interaction 3, LSN 17`.
fn receipt_line(session: &str, r: &Receipt) -> String {
    format!(
        "appended to {session:?}: interaction {}, LSN {}\n",
        r.interaction_id, r.lsn
    )
}

/// Reads and checks every line of stdin; any invalid line fails the whole append.
pub fn read_stdin() -> CliResult<Vec<Vec<u8>>> {
    let source = Source::stdin(crate::jsonl::MESSAGE_LINE)?;
    let mut lines = source.lines()?;
    let mut messages = Vec::new();
    while let Some((n, line)) = lines.next_line()? {
        let raw =
            parse_line(line, n).map_err(|e| CliError::Input(format!("{e}; nothing appended")))?;
        messages.push(raw.get().as_bytes().to_vec());
    }
    Ok(messages)
}

/// Parses and checks stdin line `n`; the error names the line.
fn parse_line(line: &[u8], n: usize) -> Result<&RawValue, String> {
    let raw: &RawValue = serde_json::from_slice(line)
        .map_err(|e| format!("stdin line {n}: {}", json_error(line, &e)))?;
    check_message(raw).map_err(|e| format!("stdin line {n}: {e}"))?;
    Ok(raw)
}

/// A streaming append in progress: the store (opened at the first valid line, so input
/// without a message creates no store) and what has been appended.
struct Stream<'a> {
    args: &'a Args,
    store: Option<Store>,
    appended: u64,
    /// Whether receipts are still printed (not once the reader of stdout went away).
    printing: bool,
    /// Whether opening the store failed (its error already says nothing was written).
    open_failed: bool,
    /// Whether the error ending the stream already says what was appended (a receipt that
    /// could not be printed).
    explained: bool,
}

/// Appends each stdin line as it arrives, printing its receipt at once; syncs at the end,
/// also when a line is invalid (the lines before it stay appended).
fn stream(args: &Args) -> CliResult {
    let mut s = Stream {
        args,
        store: None,
        appended: 0,
        printing: true,
        open_failed: false,
        explained: false,
    };
    let result = s.run(&mut Lines::stdin_streaming());
    let synced = s.store.as_ref().map_or(Ok(()), sync);
    match result {
        // What stays appended is said either way; a failed sync of it too.
        Err(e) => Err(match (s.explain(e), synced) {
            (e, Ok(())) => e,
            (e, Err(sync)) => CliError::Message(format!("{e}; and then {sync}")),
        }),
        Ok(()) if s.appended == 0 => Err(CliError::Input(
            "stdin holds no message: nothing appended".into(),
        )),
        Ok(()) => synced,
    }
}

impl Stream<'_> {
    fn run(&mut self, lines: &mut Lines<'_>) -> CliResult {
        while let Some((n, line)) = lines.next_line()? {
            let raw = parse_line(line, n).map_err(CliError::Input)?;
            let receipt = self.append(raw.get().as_bytes()).map_err(|e| match e {
                e if self.open_failed => e,
                e => CliError::Message(format!("stdin line {n}: {e}")),
            })?;
            self.appended += 1;
            if let Err(e) = self.print(&receipt) {
                // The message is in: say so, and stop before reading more (a retry of the
                // whole input would append it again).
                self.explained = true;
                let receipt = receipt_line(&self.args.session, &receipt);
                return Err(CliError::Message(format!(
                    "stdin line {n}: {} (done), but {e}; {} appended in all, nothing after \
                     line {n}",
                    receipt.trim_end(),
                    plural(self.appended, "message")
                )));
            }
        }
        Ok(())
    }

    fn append(&mut self, message: &[u8]) -> CliResult<Receipt> {
        let store = match &mut self.store {
            Some(store) => store,
            None => {
                let a = &self.args;
                let opened = open_writable(
                    &a.dir,
                    true,
                    a.segment_size,
                    a.mode.permissions(),
                    &a.master,
                );
                self.open_failed = opened.is_err();
                self.store.insert(opened?)
            }
        };
        store
            .append_raw(&self.args.session, message)
            .in_store(&self.args.dir)
    }

    /// Prints and flushes one receipt. A reader of stdout that went away ends the printing,
    /// not the appending.
    fn print(&mut self, receipt: &Receipt) -> CliResult {
        if !self.printing {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        let written = out
            .write_all(receipt_line(&self.args.session, receipt).as_bytes())
            .and_then(|()| out.flush());
        match written.map_err(|e| CliError::io("write", "stdout", e)) {
            Err(CliError::BrokenPipe) => {
                self.printing = false;
                Ok(())
            }
            other => other,
        }
    }

    /// `e` with what the append did before it: which messages stay appended.
    fn explain(&self, e: CliError) -> CliError {
        let outcome = match (self.appended, self.printing) {
            (0, _) => "nothing appended".to_owned(),
            (n, true) => format!(
                "the {} before it stay appended (their receipts are on stdout)",
                plural(n, "message")
            ),
            (n, false) => format!("the {} before it stay appended", plural(n, "message")),
        };
        match e {
            e if self.open_failed || self.explained => e,
            CliError::BrokenPipe => e,
            CliError::Input(m) => CliError::Input(format!("{m}; {outcome}")),
            e => CliError::Message(format!("{e}; {outcome}")),
        }
    }
}
