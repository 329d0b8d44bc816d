//! `convlog stats DIR`: segments, bytes, records by kind, sessions, index memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use convlog::RecoveryMode;
use serde::Serialize;

use crate::error::CliResult;
use crate::util::{
    Out, disk_bytes, human_bytes, kind_names, kinds, open_read_only, recovery_summary, thousands,
    torn_tail,
};

/// Arguments of `convlog stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
    /// The modes the store was made with (`--mode` of the commands that wrote it), in octal:
    /// 0600 by default. Files and directories that let other users in further are noted.
    #[arg(long, value_name = "OCTAL", value_parser = crate::perms::parse_mode)]
    pub mode: Option<convlog::Permissions>,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// `--json` output.
#[derive(Serialize)]
struct Stats<'a> {
    dir: &'a str,
    segments: usize,
    bytes: u64,
    records: u64,
    records_by_kind: BTreeMap<&'static str, u64>,
    sessions: usize,
    messages: u64,
    keys: u64,
    index_bytes: usize,
    last_lsn: u64,
    recovery: &'static str,
    segments_scanned: usize,
    segments_from_hint_files: usize,
    bytes_scanned: u64,
    torn_tail_bytes: Option<u64>,
    encrypted: bool,
    permissions: serde_json::Value,
}

/// Prints the counters.
pub fn run(args: Args) -> CliResult {
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    let permissions = crate::perms::note_exposed(&args.dir, args.mode.unwrap_or_default());
    let stats = store.stats();
    let report = store.recovery_report();
    let bytes = disk_bytes(&store)?;
    let mut out = Out::stdout();
    if args.json {
        let dir = args.dir.to_string_lossy();
        out.json_pretty(&Stats {
            dir: &dir,
            segments: stats.segments,
            bytes,
            records: report.records,
            records_by_kind: kind_names(&report.records_by_kind),
            sessions: stats.sessions,
            messages: stats.messages,
            keys: stats.keys,
            index_bytes: stats.index_bytes,
            last_lsn: stats.last_lsn.0,
            recovery: report.classification().name(),
            segments_scanned: report.segments_scanned,
            segments_from_hint_files: report.hints_used,
            bytes_scanned: report.bytes_scanned,
            torn_tail_bytes: report.torn_tail.as_ref().map(|t| t.bytes),
            encrypted: store.is_encrypted(),
            permissions: crate::perms::report_json(permissions.as_ref()),
        })?;
        return out.finish();
    }
    let mut text = format!(
        "store       {}\n\
         segments    {} ({} on disk)\n\
         records     {} ({})\n\
         sessions    {}\n\
         messages    {}\n\
         keys        {} (idempotency keys remembered)\n\
         index       {} in memory\n\
         last LSN    {}\n\
         recovery    {}\n\
         encrypted   {}\n",
        args.dir.display(),
        thousands(stats.segments as u64),
        human_bytes(bytes),
        thousands(report.records),
        kinds(&report.records_by_kind),
        thousands(stats.sessions as u64),
        thousands(stats.messages),
        thousands(stats.keys),
        human_bytes(stats.index_bytes as u64),
        stats.last_lsn,
        recovery_summary(report, stats.segments, &args.dir),
        if store.is_encrypted() {
            "yes (messages and metadata sealed; data keys in KEYS, wrapped by the master key)"
        } else {
            "no"
        },
    );
    if let Some(t) = &report.torn_tail {
        text.push_str(&format!(
            "torn tail   {} (left in place: read-only; the next writer cuts it)\n",
            torn_tail(t)
        ));
    }
    out.text(&text)?;
    out.finish()
}
