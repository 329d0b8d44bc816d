//! `convlog tail DIR SESSION -n N`: the last messages of a session as JSONL.

use std::path::PathBuf;

use convlog::RecoveryMode;

use crate::cmd::cat::write_entry;
use crate::error::{CliResult, InStore};
use crate::util::{Out, check_session, open_read_only, require_session};

/// Arguments of `convlog tail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// How many messages.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    pub n: u64,
    /// Wrap each message with its interaction id, LSN and timestamp.
    #[arg(long)]
    pub with_meta: bool,
}

/// Prints the last `n` messages, oldest first.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime)?;
    require_session(&store, &args.session)?;
    let mut out = Out::stdout();
    for entry in store.tail(&args.session, args.n).raw() {
        let entry = entry.in_store(&args.dir)?;
        write_entry(&mut out, &entry, args.with_meta)?;
    }
    out.finish()
}
