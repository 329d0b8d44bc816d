//! `convlog meta DIR SESSION [JSON]`: print a session's metadata, or set it.

use std::path::PathBuf;

use convlog::RecoveryMode;

use crate::error::{CliError, CliResult, InStore};
use crate::util::{Out, check_session, open_existing, open_read_only, print_done, sync};

/// Arguments of `convlog meta`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// New metadata, a JSON object (replacing the old); without it, print the current one.
    pub json: Option<String>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Prints or sets the metadata.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    match &args.json {
        Some(json) => {
            let store = open_existing(&args.dir, &args.mode, &args.master)?;
            let lsn = store
                .set_meta_raw(&args.session, json.as_bytes())
                .in_store(&args.dir)?;
            sync(&store)?;
            print_done(&format!(
                "set the metadata of {:?} (LSN {lsn})\n",
                args.session
            ))
        }
        None => {
            let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
            let meta = store.meta(&args.session).in_store(&args.dir)?;
            let meta = meta.ok_or_else(|| {
                CliError::Message(format!("session {:?} has no metadata", args.session))
            })?;
            let mut out = Out::stdout();
            out.bytes(&meta)?;
            out.text("\n")?;
            out.finish()
        }
    }
}
