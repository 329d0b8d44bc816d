//! `convlog tail DIR SESSION -n N`: the last messages of a session as JSONL; with `-f`, then
//! every message appended to it, by any process, until interrupted. `convlog tail -f DIR`
//! follows every session.

use std::path::PathBuf;

use convlog::{LogEvent, RecoveryMode, Since, Store};

use crate::cmd::cat::write_entry;
use crate::error::{CliError, CliResult, InStore};
use crate::util::{Out, check_session, one_line, open_read_only, require_session};

/// Arguments of `convlog tail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session (with `-f`, optional: without it, every session is followed).
    pub session: Option<String>,
    /// How many messages.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    pub n: u64,
    /// Wrap each message with its interaction id, LSN and timestamp.
    #[arg(long)]
    pub with_meta: bool,
    /// Follow: after the last messages, print each message appended (by any process) as it
    /// arrives, until interrupted (Ctrl-C; each line is written whole). Without SESSION,
    /// follows every session from now, each line `{"session":…,"interaction_id":…,"lsn":…,
    /// "timestamp":…,"message":…}`.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Prints the last `n` messages, oldest first; then follows, with `-f`.
pub fn run(args: Args) -> CliResult {
    if let Some(session) = &args.session {
        check_session(session)?;
    }
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    let mut out = Out::stdout();
    let Some(session) = args.session.as_deref() else {
        if !args.follow {
            return Err(CliError::Input(
                "give a SESSION (or -f to follow every session)".into(),
            ));
        }
        return follow_all(&store, &args, &mut out);
    };
    if !args.follow {
        require_session(&store, session)?;
        for entry in store.tail(session, args.n).raw() {
            let entry = entry.in_store(&args.dir)?;
            write_entry(&mut out, &entry, args.with_meta)?;
        }
        return out.finish();
    }
    let from = store.interaction_count(session).saturating_sub(args.n) + 1;
    for event in store.subscribe_session(session, from) {
        if let LogEvent::Message { entry, .. } = event.in_store(&args.dir)? {
            write_entry(&mut out, &entry, args.with_meta)?;
            out.flush()?;
        }
    }
    out.finish()
}

/// Follows every session from now on.
fn follow_all(store: &Store, args: &Args, out: &mut Out) -> CliResult {
    for event in store.subscribe(Since::Now) {
        let event = event.in_store(&args.dir)?;
        let LogEvent::Message { session, entry } = event else {
            continue;
        };
        let name = serde_json::to_string(&session).unwrap_or_default();
        out.text(&format!(
            "{{\"session\":{name},\"interaction_id\":{},\"lsn\":{},\"timestamp\":{},\"message\":",
            entry.interaction_id, entry.lsn.0, entry.timestamp.0
        ))?;
        out.bytes(&one_line(&entry.message))?;
        out.text("}\n")?;
        out.flush()?;
    }
    out.flush()
}
