//! `convlog window DIR SESSION [--max-messages N] [--max-bytes B] [--keep-system]`: the
//! longest recent history that fits a budget and never splits a tool call from its result,
//! as JSONL.

use std::path::PathBuf;

use convlog::{RecoveryMode, WindowSpec};

use crate::cmd::cat::write_entry;
use crate::error::{CliResult, InStore};
use crate::util::{Out, check_session, open_read_only, require_session};

/// Arguments of `convlog window`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// Most messages in the window.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Most bytes of message JSON in the window (`4096`, or with a suffix: `64K`, `1M`).
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_size)]
    pub max_bytes: Option<u64>,
    /// Put the session's leading system message first (counted in the budget).
    #[arg(long)]
    pub keep_system: bool,
    /// Wrap each message with its interaction id, LSN and timestamp.
    #[arg(long)]
    pub with_meta: bool,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Prints the window, oldest first.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    require_session(&store, &args.session)?;
    let mut spec = WindowSpec::new().keep_system(args.keep_system);
    if let Some(n) = args.max_messages {
        spec = spec.max_messages(n);
    }
    if let Some(b) = args.max_bytes {
        spec = spec.max_bytes(b);
    }
    let mut out = Out::stdout();
    for entry in store.window(&args.session, &spec).in_store(&args.dir)? {
        write_entry(&mut out, &entry, args.with_meta)?;
    }
    out.finish()
}
