//! `convlog delete DIR SESSION...`: deletes sessions (messages, keys and metadata), each one
//! logged record; `-` reads more session ids from stdin, one per line. Their bytes leave
//! the disk at the next `convlog compact`.

use crate::jsonl::Lines;
use std::path::PathBuf;

use crate::error::{CliError, CliResult, InStore};
use crate::util::{check_session, open_existing, plural, print_done, sync};

/// Arguments of `convlog delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The sessions to delete; `-` reads session ids from stdin, one per line.
    #[arg(required = true)]
    pub sessions: Vec<String>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Deletes the sessions and says how many held anything.
pub fn run(args: Args) -> CliResult {
    // The store first: a wrong DIR is said before stdin is read.
    let store = open_existing(&args.dir, &args.mode, &args.master)?;
    let mut sessions = session_ids(&args.sessions)?;
    for s in &sessions {
        check_session(s)?;
    }
    // An id given twice is deleted (and counted) once.
    let mut seen = std::collections::HashSet::new();
    sessions.retain(|s| seen.insert(s.clone()));
    drop(seen);
    let mut deleted = 0;
    for s in &sessions {
        if store.delete_session(s).in_store(&args.dir)? {
            deleted += 1;
        }
    }
    sync(&store)?;
    let absent = sessions.len() as u64 - deleted;
    let mut line = format!("deleted {}", plural(deleted, "session"));
    if absent > 0 {
        line += &format!(" ({} held nothing)", plural(absent, "other"));
    }
    print_done(&format!(
        "{line}; their bytes go at the next `convlog compact`\n"
    ))
}

/// Most session ids one `delete` takes (all are checked before any is deleted, so all are
/// held in memory: about 100 MB at 36-byte ids).
const MAX_IDS: usize = 1 << 20;

/// The ids given, with `-` replaced by the lines of stdin (blank lines skipped).
fn session_ids(args: &[String]) -> CliResult<Vec<String>> {
    let mut out = Vec::new();
    for a in args {
        if a != "-" {
            out.push(a.clone());
            continue;
        }
        let stdin = Box::new(std::io::stdin().lock());
        let mut lines = Lines::new(stdin, "stdin".into()).at_most(
            convlog::format::MAX_SESSION_LEN + 2,
            format!(
                "a session id is at most {} bytes",
                convlog::format::MAX_SESSION_LEN
            ),
        );
        while let Some((n, line)) = lines.next_line()? {
            let id = std::str::from_utf8(line)
                .map_err(|_| CliError::Input(format!("stdin line {n}: not UTF-8")))?;
            if out.len() >= MAX_IDS {
                return Err(CliError::Input(format!(
                    "stdin line {n}: more than {MAX_IDS} session ids in one delete; \
                     nothing was deleted (split the list)"
                )));
            }
            out.push(id.to_owned());
        }
    }
    Ok(out)
}
