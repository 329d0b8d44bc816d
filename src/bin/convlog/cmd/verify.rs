//! `convlog verify DIR`: reads every record, checks both checksums of each and the LSN
//! chain (a strict, read-only recovery), then reads every live message back and checks it
//! is a JSON object. Exits 0 only when the store is clean.

use std::path::PathBuf;
use std::time::Instant;

use convlog::RecoveryMode;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{CliError, CliResult};
use crate::util::{
    Out, human_bytes, human_duration, kinds, open_read_only, plural, progress, require_store,
    segment_bytes_in, spinner,
};

/// Arguments of `convlog verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// Print a JSON object (`"ok": true|false`) on stdout.
    #[arg(long)]
    pub json: bool,
    /// The modes the store was made with (`--mode` of the commands that wrote it), in octal:
    /// 0600 by default. Files and directories that let other users in further are noted.
    #[arg(long, value_name = "OCTAL", value_parser = crate::perms::parse_mode)]
    pub mode: Option<convlog::Permissions>,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// What a clean verification found.
struct Clean {
    segments: usize,
    records: u64,
    records_by_kind: std::collections::BTreeMap<convlog::Kind, u64>,
    bytes: u64,
    last_lsn: u64,
    sessions: usize,
    messages: u64,
    /// Bytes after the last committed record of a segment a live writer is appending to.
    live_tail: Option<u64>,
    /// Whether the store is encrypted.
    encrypted: bool,
    /// What the check of the modes found (`None`: could not tell).
    permissions: Option<convlog::PermissionReport>,
}

/// Verifies the store; the first problem found is the error.
pub fn run(args: Args) -> CliResult {
    let started = Instant::now();
    let result = check(&args);
    let elapsed = started.elapsed();
    let mut out = Out::stdout();
    match (&result, args.json) {
        (Ok(c), true) => out.json_pretty(&json!({
            "ok": true,
            "dir": args.dir.to_string_lossy(),
            "segments": c.segments,
            "records": c.records,
            "records_by_kind": crate::util::kind_names(&c.records_by_kind),
            "bytes": c.bytes,
            "last_lsn": c.last_lsn,
            "sessions": c.sessions,
            "messages": c.messages,
            "live_tail_bytes": c.live_tail,
            "encrypted": c.encrypted,
            "permissions": crate::perms::report_json(c.permissions.as_ref()),
            "duration_ms": elapsed.as_secs_f64() * 1e3,
        }))?,
        (Ok(c), false) => out
            .text(&format!(
                "{}: clean\n  {}, {}, {} ({}), last LSN {}\n  \
             {}, {}, every one read back{}\n  verified in {}\n",
                args.dir.display(),
                plural(c.segments as u64, "segment"),
                human_bytes(c.bytes),
                plural(c.records, "record"),
                kinds(&c.records_by_kind),
                c.last_lsn,
                plural(c.sessions as u64, "session"),
                plural(c.messages, "message"),
                if c.encrypted {
                    " (encrypted: each one decrypted and authenticated)"
                } else {
                    " (not encrypted)"
                },
                human_duration(elapsed),
            ))
            .and_then(|()| match c.live_tail {
                Some(n) => out.text(&format!(
                    "  a writer is appending: the {} after its last committed record were not \
                 checked\n",
                    human_bytes(n)
                )),
                None => Ok(()),
            })?,
        (Err(e), true) => out.json_pretty(&error_json(&args, e))?,
        (Err(_), false) => {}
    }
    out.finish()?;
    result.map(|_| ())
}

fn check(args: &Args) -> CliResult<Clean> {
    require_store(&args.dir)?;
    let bytes = segment_bytes_in(&args.dir);
    let spin = spinner(format!(
        "checking {} of records in {}",
        human_bytes(bytes),
        args.dir.display()
    ));
    let opened = open_read_only(&args.dir, RecoveryMode::Strict, &args.master);
    spin.finish_and_clear();
    let store = opened?;
    let permissions = crate::perms::note_exposed(&args.dir, args.mode.unwrap_or_default());
    let report = store.recovery_report();
    let stats = store.stats();
    let bar = progress(stats.messages, "reading", false);
    for session in store.sessions() {
        for entry in store.messages(&session.id).raw() {
            let entry = entry.map_err(|e| CliError::store(&args.dir, e))?;
            let problem = match serde_json::from_slice::<&RawValue>(&entry.message) {
                Ok(raw) if raw.get().starts_with('{') => None,
                Ok(_) => Some("not a JSON object".to_owned()),
                Err(e) => Some(format!("not valid JSON: {e}")),
            };
            if let Some(problem) = problem {
                bar.finish_and_clear();
                return Err(CliError::Message(format!(
                    "store {}: message {} of session {:?} (LSN {}) is {problem}",
                    args.dir.display(),
                    entry.interaction_id,
                    session.id,
                    entry.lsn
                )));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(Clean {
        segments: report.segments_scanned,
        records: report.records,
        records_by_kind: report.records_by_kind.clone(),
        bytes: report.bytes_scanned,
        last_lsn: report.last_lsn.0,
        sessions: stats.sessions,
        messages: stats.messages,
        live_tail: report.live_tail,
        encrypted: store.is_encrypted(),
        permissions,
    })
}

/// The `--json` output for a failed verification.
fn error_json(args: &Args, e: &CliError) -> Value {
    let mut v = json!({
        "ok": false,
        "dir": args.dir.to_string_lossy(),
        "error": e.to_string(),
    });
    if let CliError::Key { source, .. } = e {
        let kind = match source {
            convlog::Error::KeyRequired { .. } => "key_required",
            convlog::Error::WrongKey { .. } => "wrong_key",
            _ => "not_encrypted",
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert("kind".into(), kind.into());
        }
    } else if let CliError::KeyFile(_) = e {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("kind".into(), "key_file".into());
        }
    } else if let CliError::Store { source, .. } = e {
        let (kind, extra) = match source {
            convlog::Error::Corrupt {
                segment,
                offset,
                damage,
            } => (
                "corrupt",
                json!({
                    "segment": segment.file_name(),
                    "offset": offset,
                    "damage": damage.to_string(),
                }),
            ),
            convlog::Error::UnknownRecordKind {
                segment,
                offset,
                kind,
                version,
            } => (
                "unknown_record_kind",
                json!({
                    "segment": segment.file_name(),
                    "offset": offset,
                    "record_kind": kind,
                    "version": version,
                }),
            ),
            convlog::Error::UnsupportedVersion { path, found, .. } => (
                "unsupported_version",
                json!({ "path": path.to_string_lossy(), "version": found }),
            ),
            convlog::Error::NotAStore { .. } => ("not_a_store", json!({})),
            convlog::Error::Io { .. } => ("io", json!({})),
            convlog::Error::KeyDestroyed { .. } | convlog::Error::KeyFile { .. } => {
                ("keys", json!({}))
            }
            _ => ("other", json!({})),
        };
        if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
            obj.insert("kind".into(), kind.into());
            obj.extend(extra);
        }
    } else if let Some(obj) = v.as_object_mut() {
        // The only other failure: a stored message that is not a JSON object.
        obj.insert("kind".into(), "bad_message".into());
    }
    v
}
