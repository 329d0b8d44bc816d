//! `convlog repair DIR`: salvages a damaged store. Every valid record is kept; damaged
//! bytes are copied to `DIR/quarantine/` and cut out of their segment; what was dropped is
//! printed.

use std::path::PathBuf;

use convlog::{Durability, RecoveryMode, Store};

use crate::error::{CliError, CliResult};
use crate::util::{
    human_bytes, human_duration, kinds, plural, print, print_done, require_store, segment_bytes_in,
    segment_files_in, spinner, torn_tail,
};

/// Arguments of `convlog repair`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// Repairs the store and reports.
pub fn run(args: Args) -> CliResult {
    require_store(&args.dir)?;
    let key = args.master.load()?;
    let spin = spinner(format!(
        "salvaging {} of records in {}",
        human_bytes(segment_bytes_in(&args.dir)),
        args.dir.display()
    ));
    let mut builder = Store::builder()
        .durability(Durability::Always)
        .recovery(RecoveryMode::Salvage)
        .permissions(args.mode.permissions());
    if let Some(k) = &key {
        builder = builder.encryption(k.master.clone());
    }
    let opened = builder.open(&args.dir).map_err(|e| match e {
        e @ (convlog::Error::KeyRequired { .. }
        | convlog::Error::WrongKey { .. }
        | convlog::Error::NotEncrypted { .. }) => CliError::opening(&args.dir, e, key.as_ref()),
        e => CliError::repair(&args.dir, e, segment_files_in(&args.dir)),
    });
    spin.finish_and_clear();
    let store = opened?;
    let report = store.recovery_report();
    let mut text = String::new();
    let clean = report.classification() == convlog::Classification::Clean;
    match report.classification() {
        convlog::Classification::Clean => text.push_str(&format!(
            "{}: clean, nothing to repair\n",
            args.dir.display()
        )),
        c => text.push_str(&format!("{}: repaired ({c})\n", args.dir.display())),
    }
    for d in &report.dropped {
        text.push_str(&format!(
            "  dropped {} at segment {} offset {}: {}",
            human_bytes(d.len),
            d.segment,
            d.offset,
            d.damage
        ));
        match &d.quarantined {
            Some(p) => text.push_str(&format!(", kept aside in {}\n", p.display())),
            None => text.push('\n'),
        }
    }
    if let Some(t) = &report.torn_tail {
        text.push_str(&format!(
            "  cut a torn tail: {} (a write a crash interrupted)\n",
            torn_tail(t)
        ));
    }
    for s in &report.removed_segments {
        text.push_str(&format!(
            "  removed segment {s}: its creation never completed (it held nothing)\n"
        ));
    }
    text.push_str(&format!(
        "  kept {} ({}) in {}, last LSN {}; {}, {}\n  took {}\n",
        plural(report.records, "record"),
        kinds(&report.records_by_kind),
        plural(report.segments_scanned as u64, "segment"),
        report.last_lsn,
        plural(store.stats().sessions as u64, "session"),
        plural(store.stats().messages, "message"),
        human_duration(report.duration),
    ));
    if clean {
        print(&text)
    } else {
        print_done(&text)
    }
}
