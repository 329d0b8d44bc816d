//! `convlog replace DIR SESSION [--expect N] [-]`: the session becomes exactly the JSONL on
//! stdin (one message object per line), as one committed unit.

use std::path::PathBuf;

use crate::cmd::append::read_stdin;
use crate::error::{CliResult, InStore};
use crate::util::{check_session, open_existing, plural, print_done, sync};

/// Arguments of `convlog replace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// Only if the session's next interaction id is N (nothing was appended since you read
    /// it); else nothing changes and the command fails with a conflict.
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
    /// `-` (or nothing): read the new messages from stdin. Empty stdin empties the session.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Replaces the session's messages and says how many it now holds.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let messages = read_stdin()?;
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    let receipts = store
        .replace(&args.session, args.expect, &messages)
        .in_store(&args.dir)?;
    sync(&store)?;
    print_done(&format!(
        "replaced {:?}: it holds {}\n",
        args.session,
        plural(receipts.len() as u64, "message")
    ))
}
