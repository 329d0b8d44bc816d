//! `convlog rekey DIR --key-file OLD --new-key-file NEW`: wraps every data key of an
//! encrypted store anew under the master key in NEW, without rewriting a segment. One rename
//! replaces the store's `KEYS` file, so a crash leaves either the old key opening the store
//! or the new one, never neither.

use std::path::PathBuf;

use crate::error::{CliError, CliResult, InStore};
use crate::keys::{Origin, read_key};
use crate::util::{open_writable_with, plural, print, require_store};

/// Arguments of `convlog rekey`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory (an encrypted store).
    pub dir: PathBuf,
    /// The current master key (`--key-file PATH`, or $CONVLOG_KEY_FILE).
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
    /// The file holding the new master key (as `convlog keygen` writes): from now on only it
    /// opens the store.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: PathBuf,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
}

/// Rewraps the data keys and says how many.
pub fn run(args: Args) -> CliResult {
    let dir = &args.dir;
    require_store(dir)?;
    let shown = dir.display();
    let old = args.master.load()?.ok_or_else(|| {
        CliError::Input(format!(
            "rekey needs the current master key of {shown}: name its file with --key-file PATH \
             (or ${}); nothing was changed",
            crate::keys::KEY_FILE_ENV
        ))
    })?;
    let new = read_key(&args.new_key_file, Origin::Option("--new-key-file"))?;
    if new.master == old.master {
        return Err(CliError::Input(format!(
            "the {} holds the same master key as the {}: a rekey would change nothing \
             (`convlog keygen FILE` writes a new key); nothing was changed",
            new.source, old.source
        )));
    }
    if !dir.join(convlog::KEYS_FILE).exists() {
        return Err(CliError::Message(format!(
            "store {shown} is not encrypted (it has no {} file): it has no keys to rekey; \
             nothing was changed",
            convlog::KEYS_FILE
        )));
    }
    let store = open_writable_with(dir, None, args.mode.permissions(), Some(&old))?;
    let rewrapped = store.rekey(&new.master).in_store(dir)?;
    print(&format!(
        "rekeyed {shown}: {} rewrapped under the master key in the {}, no segment \
         rewritten; the old key no longer opens the store\n",
        plural(rewrapped as u64, "data key"),
        new.source
    ))
}
