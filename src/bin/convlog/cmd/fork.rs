//! `convlog fork DIR SRC DST [--at K]`: a new session that starts as SRC's first K messages
//! (all by default), sharing them: one logged record, whatever SRC's length.

use std::path::PathBuf;

use crate::error::{CliResult, InStore};
use crate::util::{check_session, open_existing, plural, print_done, require_session, sync};

/// Arguments of `convlog fork`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session to fork.
    pub src: String,
    /// The new session (it must not exist).
    pub dst: String,
    /// How many of SRC's first messages the new session starts with (default: all).
    #[arg(long, value_name = "K")]
    pub at: Option<u64>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Forks the session and says how many messages the new one shares.
pub fn run(args: Args) -> CliResult {
    check_session(&args.src)?;
    check_session(&args.dst)?;
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    require_session(&store, &args.src)?;
    let n = store
        .fork(&args.src, &args.dst, args.at)
        .in_store(&args.dir)?;
    sync(&store)?;
    print_done(&format!(
        "forked {:?} into {:?}: it starts with {} (interaction ids go on at {})\n",
        args.src,
        args.dst,
        plural(n, "message"),
        n + 1
    ))
}
