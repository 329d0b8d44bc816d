//! `convlog compact DIR [--seal] [--json]`: rewrites the sealed segments keeping only what a
//! live session can reach, and reports what it reclaimed and which sessions it erased.

use std::path::PathBuf;

use serde_json::json;

use crate::error::{CliResult, InStore};
use crate::util::{Out, human_bytes, human_duration, open_writable, plural, spinner, thousands};

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
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
}

/// Compacts the store and prints the report.
pub fn run(args: Args) -> CliResult {
    let store = open_writable(&args.dir, false, None, args.mode.permissions())?;
    if args.seal {
        store.seal().in_store(&args.dir)?;
    }
    let bar = spinner(format!("compacting {}", args.dir.display()));
    let report = store.compact().in_store(&args.dir);
    bar.finish_and_clear();
    let r = report?;
    let mut out = Out::stdout();
    if args.json {
        out.json_pretty(&json!({
            "segments_rewritten": r.segments_rewritten,
            "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after,
            "records_kept": r.records_kept,
            "records_dropped": r.records_dropped,
            "sessions_erased": r.sessions_erased,
            "segment": r.segment.map(|s| s.0),
            "seconds": r.duration.as_secs_f64(),
        }))?;
        return out.finish();
    }
    if r.segments_rewritten == 0 {
        out.text(&format!(
            "nothing to reclaim in {} (kept {}): no sealed segment holds a dropped record{}\n",
            args.dir.display(),
            plural(r.records_kept, "record"),
            if args.seal {
                ""
            } else {
                " (--seal includes the active one)"
            }
        ))?;
        return out.finish();
    }
    out.text(&format!(
        "compacted {} into one in {}: {} -> {}, kept {} records, dropped {}\n",
        plural(r.segments_rewritten as u64, "segment"),
        human_duration(r.duration),
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after),
        thousands(r.records_kept),
        thousands(r.records_dropped),
    ))?;
    if !r.sessions_erased.is_empty() {
        out.text(&format!(
            "erased {}: no byte of their messages is left in the store's segments or hints\n",
            plural(r.sessions_erased.len() as u64, "session"),
        ))?;
        for s in &r.sessions_erased {
            out.text(&format!("  {s}\n"))?;
        }
    }
    out.finish()
}
