//! `convlog export DIR [--session S] [FILE]`: JSONL out, one
//! `{"session": "...", "message": {...}}` per line, each message's JSON exactly as stored.

use std::path::PathBuf;

use convlog::RecoveryMode;

use crate::error::{CliError, CliResult, InStore};
use crate::util::{
    Out, check_session, one_line, open_read_only, plural, progress, require_outside_store,
    require_session,
};

/// Arguments of `convlog export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// Export only this session.
    #[arg(long, short)]
    pub session: Option<String>,
    /// The output file (created or truncated); stdout when absent or `-`. Never a file
    /// inside the store directory, nor a link to one of the store's files.
    pub file: Option<PathBuf>,
    /// The mode of the output file, in octal: 0600 (only you may read it) by default. An
    /// existing file gets it too, before anything is written to it.
    #[arg(long, value_name = "OCTAL", value_parser = crate::perms::parse_mode)]
    pub mode: Option<convlog::Permissions>,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Exports the sessions, in session id order, each oldest message first.
pub fn run(args: Args) -> CliResult {
    if let Some(s) = &args.session {
        check_session(s)?;
    }
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    let sessions: Vec<String> = match &args.session {
        Some(s) => {
            require_session(&store, s)?;
            vec![s.clone()]
        }
        None => store.sessions().into_iter().map(|s| s.id).collect(),
    };
    let total: u64 = sessions.iter().map(|s| store.interaction_count(s)).sum();
    let to_file = args.file.as_ref().filter(|f| f.as_os_str() != "-");
    if let Some(f) = to_file {
        require_outside_store(&args.dir, f)?;
    }
    let mut out = match to_file {
        Some(f) => Out::create(f, args.mode.unwrap_or_default().file_mode())?,
        None => Out::stdout(),
    };
    let bar = progress(total, "exporting", false);
    let mut written = 0u64;
    for session in &sessions {
        let prefix = format!(
            "{{\"session\":{},\"message\":",
            serde_json::to_string(session)
                .map_err(|e| CliError::Message(format!("cannot encode session id: {e}")))?
        );
        for entry in store.messages(session).raw() {
            let entry = entry.in_store(&args.dir)?;
            out.text(&prefix)?;
            out.bytes(&one_line(&entry.message))?;
            out.text("}\n")?;
            written += 1;
            if written.is_multiple_of(1024) {
                bar.set_position(written);
            }
        }
    }
    bar.finish_and_clear();
    out.finish()?;
    if let Some(f) = to_file {
        let mut out = Out::stdout();
        out.text(&format!(
            "exported {} from {} to {}\n",
            plural(written, "message"),
            plural(sessions.len() as u64, "session"),
            f.display()
        ))?;
        out.finish()?;
    }
    Ok(())
}
