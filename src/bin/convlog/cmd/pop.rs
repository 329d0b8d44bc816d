//! `convlog pop DIR SESSION`: removes a session's last message and prints it.

use std::path::PathBuf;

use crate::cmd::cat::write_entry;
use crate::error::{CliError, CliResult, InStore};
use crate::util::{Out, check_session, done_but, open_existing, sync};

/// Arguments of `convlog pop`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// Wrap the message with its interaction id, LSN and timestamp.
    #[arg(long)]
    pub with_meta: bool,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Pops the last message and prints it as one JSON line; fails when the session is empty.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    let Some(entry) = store.pop_raw(&args.session).in_store(&args.dir)? else {
        return Err(CliError::Message(format!(
            "session {:?} in store {} is empty: nothing to pop",
            args.session,
            args.dir.display()
        )));
    };
    sync(&store)?;
    let mut out = Out::stdout();
    let printed = write_entry(&mut out, &entry, args.with_meta).and_then(|()| out.finish());
    let done = format!(
        "popped interaction {} of {:?}",
        entry.interaction_id, args.session
    );
    done_but(&done, printed)
}
