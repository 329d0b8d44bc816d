//! `convlog sessions DIR`: every live session with its message count and first/last time.

use std::path::PathBuf;

use clap::ValueEnum;
use convlog::{RecoveryMode, SessionInfo};
use serde::Serialize;

use crate::error::{CliError, CliResult, InStore};
use crate::util::{Out, open_read_only, plural, rfc3339, thousands};

/// Arguments of `convlog sessions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// Order of the listing.
    #[arg(long, value_enum, default_value_t = SortKey::Id)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long, short)]
    pub reverse: bool,
    /// Print a JSON array (timestamps as microseconds since the epoch), with each session's
    /// metadata.
    #[arg(long)]
    pub json: bool,
    /// Only sessions whose metadata has KEY equal to VALUE (VALUE as JSON, or as a string
    /// when it is not JSON): `--where user=u42`, `--where pinned=true`.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// What `sessions` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// Session id.
    Id,
    /// Number of messages.
    Count,
    /// Time of the first message.
    First,
    /// Time of the last message.
    Last,
}

/// One session in `--json` output.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    count: u64,
    first: u64,
    last: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Box<serde_json::value::RawValue>>,
}

/// Lists the sessions.
pub fn run(args: Args) -> CliResult {
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    let mut sessions = match &args.filter {
        Some(f) => {
            let (key, value) = f
                .split_once('=')
                .ok_or_else(|| CliError::Input(format!("--where {f:?}: expected KEY=VALUE")))?;
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            store.sessions_where(key, &value).in_store(&args.dir)?
        }
        None => store.sessions(),
    };
    sort(&mut sessions, args.sort);
    if args.reverse {
        sessions.reverse();
    }
    let mut out = Out::stdout();
    if args.json {
        let rows = sessions
            .iter()
            .map(|s| {
                let meta = store.meta(&s.id).in_store(&args.dir)?;
                Ok(Row {
                    id: &s.id,
                    count: s.count,
                    first: s.first.0,
                    last: s.last.0,
                    meta: meta.and_then(|m| {
                        serde_json::value::RawValue::from_string(String::from_utf8(m).ok()?).ok()
                    }),
                })
            })
            .collect::<CliResult<Vec<Row<'_>>>>()?;
        out.json_pretty(&rows)?;
        return out.finish();
    }
    let id_width = sessions
        .iter()
        .map(|s| s.id.chars().count())
        .max()
        .unwrap_or(0)
        .clamp("SESSION".len(), 64);
    out.text(&format!(
        "{:<id_width$}  {:>9}  {:<27}  {}\n",
        "SESSION", "MESSAGES", "FIRST", "LAST"
    ))?;
    let mut total = 0;
    for s in &sessions {
        total += s.count;
        out.text(&format!(
            "{:<id_width$}  {:>9}  {:<27}  {}\n",
            s.id,
            thousands(s.count),
            rfc3339(s.first),
            rfc3339(s.last)
        ))?;
    }
    out.text(&format!(
        "{}, {}\n",
        plural(sessions.len() as u64, "session"),
        plural(total, "message")
    ))?;
    out.finish()
}

/// Sorts by `key`, then by id, so the order is total.
fn sort(sessions: &mut [SessionInfo], key: SortKey) {
    match key {
        SortKey::Id => sessions.sort_by(|a, b| a.id.cmp(&b.id)),
        SortKey::Count => sessions.sort_by(|a, b| a.count.cmp(&b.count).then(a.id.cmp(&b.id))),
        SortKey::First => sessions.sort_by(|a, b| a.first.cmp(&b.first).then(a.id.cmp(&b.id))),
        SortKey::Last => sessions.sort_by(|a, b| a.last.cmp(&b.last).then(a.id.cmp(&b.id))),
    }
}
