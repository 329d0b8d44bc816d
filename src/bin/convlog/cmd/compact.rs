//! `convlog compact DIR [--seal] [--json]`: rewrites the sealed segments keeping only what a
//! live session can reach, and reports what it reclaimed and which sessions it erased (with
//! a progress bar on a terminal).

use std::path::PathBuf;

use convlog::CompactReport;
use serde_json::json;

use crate::error::{CliResult, InStore};
use crate::util::{
    Out, done_but, human_bytes, human_duration, open_existing_with, plural, progress, thousands,
};

/// Arguments of `convlog compact`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// Seal the active segment first, so what it holds is compacted too.
    #[arg(long)]
    pub seal: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Delete first the sessions whose last message is older than this (`30d`, `12h`,
    /// `90m`, `45s`).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub idle_for: Option<std::time::Duration>,
    /// Keep at most this many bytes of messages (`500M`, `2G`): the least recently
    /// appended sessions are deleted first.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_bytes)]
    pub max_bytes: Option<u64>,
    /// Keep at most this many sessions (the most recently appended).
    #[arg(long, value_name = "N", value_parser = parse_max_sessions)]
    pub max_sessions: Option<usize>,
    /// Remove every file in `quarantine/` (bytes repairs and torn-tail cuts set aside, which
    /// may hold messages of deleted sessions) even when nothing is dropped. (A compaction that
    /// drops records empties it anyway, unless `--keep-quarantine`.)
    #[arg(long, conflicts_with = "keep_quarantine")]
    pub purge_quarantine: bool,
    /// Leave `quarantine/` as it is, for inspection (an erased session's bytes may stay there
    /// until a later compaction or `--purge-quarantine`).
    #[arg(long)]
    pub keep_quarantine: bool,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Compacts the store and prints the report.
pub fn run(args: Args) -> CliResult {
    let options = convlog::Store::builder().keep_quarantine(args.keep_quarantine);
    let store = open_existing_with(&args.dir, options, &args.mode, &args.master)?;
    if args.seal {
        store.seal().in_store(&args.dir)?;
    }
    let bar = progress(0, "compact", true);
    let report = store
        .compact_with(retention(&args), &mut |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .in_store(&args.dir);
    bar.finish_and_clear();
    let r = report?;
    let purged = r.quarantine_purged
        + if args.purge_quarantine {
            store.purge_quarantine().in_store(&args.dir)?
        } else {
            0
        };
    let done = format!(
        "compacted {}: {} rewritten",
        args.dir.display(),
        plural(r.segments_rewritten as u64, "segment")
    );
    done_but(&done, print_report(&args, &r, purged))
}

/// Prints the report of a compaction: as JSON with `--json`, as text otherwise.
fn print_report(args: &Args, r: &CompactReport, purged: usize) -> CliResult {
    let mut out = Out::stdout();
    if args.json {
        out.json_pretty(&json!({
            "segments_rewritten": r.segments_rewritten,
            "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after,
            "records_kept": r.records_kept,
            "records_dropped": r.records_dropped,
            "sessions_erased": r.sessions_erased,
            "sessions_expired": r.sessions_expired,
            "segment": r.segment.map(|s| s.0),
            "seconds": r.duration.as_secs_f64(),
            "quarantine_files_removed": purged,
        }))?;
    } else {
        out.text(&text_report(args, r, purged))?;
    }
    out.finish()
}

/// The retention rule the arguments give (none: keep every session).
fn retention(args: &Args) -> convlog::Retention {
    let mut retention = convlog::Retention::keep_all();
    if let Some(d) = args.idle_for {
        retention = retention.idle_for(d);
    }
    if let Some(b) = args.max_bytes {
        retention = retention.max_bytes(b);
    }
    if let Some(n) = args.max_sessions {
        retention = retention.max_sessions(n);
    }
    retention
}

/// The report for a terminal: what was reclaimed, expired and erased.
fn text_report(args: &Args, r: &convlog::CompactReport, purged: usize) -> String {
    let mut out = String::new();
    if purged > 0 {
        out += &format!(
            "removed {} from quarantine/\n",
            plural(purged as u64, "file")
        );
    }
    if r.segments_rewritten == 0 {
        out += &format!(
            "nothing to reclaim in {} (kept {}): no sealed segment holds a dropped record{}\n",
            args.dir.display(),
            plural(r.records_kept, "record"),
            if args.seal {
                ""
            } else {
                " (--seal includes the active one)"
            }
        );
        return out;
    }
    out += &format!(
        "compacted {} into one in {}: {} -> {}, kept {} records, dropped {}\n",
        plural(r.segments_rewritten as u64, "segment"),
        human_duration(r.duration),
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after),
        thousands(r.records_kept),
        thousands(r.records_dropped),
    );
    if !r.sessions_expired.is_empty() {
        out += &format!(
            "deleted {} by the retention rule first\n",
            plural(r.sessions_expired.len() as u64, "session"),
        );
    }
    if !r.sessions_erased.is_empty() {
        out += &format!(
            "erased {}: no byte of their messages is left in the store's segments or hints\n",
            plural(r.sessions_erased.len() as u64, "session"),
        );
        for s in &r.sessions_erased {
            out += &format!("  {s}\n");
        }
    }
    out
}

/// What a retention limit of 0 is told: it would erase the whole store, which `delete` says
/// outright.
const ZERO_LIMIT: &str = "would delete every session; to delete sessions, use `convlog delete`";

/// `--max-bytes`: a size (`500M`) of at least 1 byte.
fn parse_max_bytes(text: &str) -> Result<u64, String> {
    match crate::util::parse_size(text)? {
        0 => Err(format!("{text:?} {ZERO_LIMIT}")),
        n => Ok(n),
    }
}

/// `--max-sessions`: a count of at least 1.
fn parse_max_sessions(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(format!("0 {ZERO_LIMIT}")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a number of sessions: {e}")),
    }
}

/// `--idle-for`: an age, a number followed by `s`, `m`, `h` or `d` (`30d`), of at least one
/// second.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not an age: a number followed by s, m, h or d"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an age: a number followed by s, m, h or d"))?;
    match n.checked_mul(secs) {
        Some(0) => Err(format!("an age of {text:?} {ZERO_LIMIT}")),
        Some(secs) => Ok(std::time::Duration::from_secs(secs)),
        None => Err(format!("{text:?} is too long an age")),
    }
}
