//! `convlog truncate DIR SESSION KEEP`: keeps a session's first KEEP messages (a logged
//! event, like a pop or a clear).

use std::path::PathBuf;

use crate::error::{CliResult, InStore};
use crate::util::{check_session, open_existing, plural, print, print_done, sync};

/// Arguments of `convlog truncate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// How many of its first messages to keep (0 empties it, as `clear` does).
    pub keep: u64,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Truncates the session and says how many messages went.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    let removed = store
        .truncate(&args.session, args.keep)
        .in_store(&args.dir)?;
    sync(&store)?;
    if removed == 0 {
        print(&format!(
            "session {:?} holds at most {}: nothing removed\n",
            args.session,
            plural(args.keep, "message")
        ))
    } else {
        print_done(&format!(
            "truncated {:?} to {}: removed {}\n",
            args.session,
            plural(args.keep, "message"),
            plural(removed, "message")
        ))
    }
}
