//! `convlog append DIR SESSION [JSON | -]`: one message from the argument, or JSONL (one
//! message object per line) from stdin.

use std::path::PathBuf;

use serde_json::value::RawValue;

use crate::error::{CliError, CliResult, InStore};
use crate::jsonl::{Source, check_message, json_error};
use crate::util::{check_session, open_writable, plural, print, sync};

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
    /// stdin and appends all of it, or nothing when a line is invalid.
    pub message: Option<String>,
    /// The size at which a segment is sealed and the next one started, in bytes, or with a
    /// suffix: 64K, 16M, 1G (4K to 1G; default 64M). It applies to the segments this run
    /// writes; the store does not record it.
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_size)]
    pub segment_size: Option<u64>,
    /// An idempotency key: if the session already holds messages appended with this key,
    /// print their receipts and append nothing (a retry is safe). With stdin, every line is
    /// one atomic batch under the key.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

/// Appends the message(s) and prints where they landed.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let messages: Vec<Vec<u8>> = match args.message.as_deref() {
        Some(json) if json != "-" => {
            let raw: &RawValue = serde_json::from_str(json)
                .map_err(|e| CliError::Input(format!("message argument: {}", json_error(&e))))?;
            check_message(raw).map_err(|e| CliError::Input(format!("message argument: {e}")))?;
            vec![raw.get().as_bytes().to_vec()]
        }
        _ => read_stdin()?,
    };
    if messages.is_empty() {
        return Err(CliError::Input(
            "stdin holds no message: nothing appended".into(),
        ));
    }
    let store = open_writable(&args.dir, true, args.segment_size)?;
    let receipts = match &args.key {
        Some(key) => store
            .append_batch_raw_with_key(&args.session, key, &messages)
            .in_store(&args.dir)?,
        None => append_in_batches(&store, &args, &messages)?,
    };
    sync(&store)?;
    report(&args, &receipts)
}

/// Appends `messages` in atomic batches of at most [`MAX_BATCH_BYTES`].
fn append_in_batches(
    store: &convlog::Store,
    args: &Args,
    messages: &[Vec<u8>],
) -> CliResult<Vec<convlog::Receipt>> {
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
fn report(args: &Args, receipts: &[convlog::Receipt]) -> CliResult {
    match (receipts.first(), receipts.last()) {
        (Some(a), Some(b)) if receipts.len() == 1 => print(&format!(
            "appended to {:?}: interaction {}, LSN {}\n",
            args.session, a.interaction_id, b.lsn
        )),
        (Some(a), Some(b)) => print(&format!(
            "appended {} to {:?}: interactions {}..={}, LSNs {}..={}\n",
            plural(receipts.len() as u64, "message"),
            args.session,
            a.interaction_id,
            b.interaction_id,
            a.lsn,
            b.lsn
        )),
        _ => Ok(()),
    }
}

/// Reads and checks every line of stdin; any invalid line fails the whole append.
pub fn read_stdin() -> CliResult<Vec<Vec<u8>>> {
    let source = Source::stdin()?;
    let mut lines = source.lines()?;
    let mut messages = Vec::new();
    while let Some((n, line)) = lines.next_line()? {
        let raw: &RawValue = serde_json::from_slice(line).map_err(|e| {
            CliError::Input(format!(
                "stdin line {n}: {}; nothing appended",
                json_error(&e)
            ))
        })?;
        check_message(raw)
            .map_err(|e| CliError::Input(format!("stdin line {n}: {e}; nothing appended")))?;
        messages.push(raw.get().as_bytes().to_vec());
    }
    Ok(messages)
}
