//! `convlog clear DIR SESSION`: removes every message of a session (a logged tombstone).

use std::path::PathBuf;

use crate::error::{CliResult, InStore};
use crate::util::{check_session, open_existing, plural, print, print_done, sync};

/// Arguments of `convlog clear`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Clears the session and says how many messages went.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    let removed = store.clear(&args.session).in_store(&args.dir)?;
    sync(&store)?;
    if removed == 0 {
        print(&format!(
            "session {:?} holds no messages: nothing cleared\n",
            args.session
        ))
    } else {
        print_done(&format!(
            "cleared {:?}: removed {}\n",
            args.session,
            plural(removed, "message")
        ))
    }
}
