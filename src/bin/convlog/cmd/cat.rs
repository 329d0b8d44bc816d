//! `convlog cat DIR SESSION`: a session's messages as JSONL. Also the output helpers that
//! `tail` and `pop` share.

use std::path::PathBuf;

use convlog::{Entry, RecoveryMode};

use crate::error::{CliResult, InStore};
use crate::util::{Out, check_session, one_line, open_read_only, require_session};

/// Arguments of `convlog cat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory.
    pub dir: PathBuf,
    /// The session.
    pub session: String,
    /// Only these interaction ids (1-based): `A..B` (B excluded), `A..=B`, `A..`, `..B`, `N`.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    pub range: Option<IdRange>,
    /// Wrap each message with its interaction id, LSN and timestamp (µs since the epoch):
    /// `{"interaction_id":..,"lsn":..,"timestamp":..,"message":{..}}`.
    #[arg(long)]
    pub with_meta: bool,
    #[command(flatten)]
    pub master: crate::keys::KeyArg,
}

/// A range of interaction ids: `start..end`, `end` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id (at least 1).
    pub start: u64,
    /// One past the last id.
    pub end: u64,
}

/// Parses `A..B`, `A..=B`, `A..`, `..B`, `..=B`, `..` or `N`.
pub fn parse_range(s: &str) -> Result<IdRange, String> {
    let num = |t: &str| -> Result<u64, String> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("{t:?} is not an interaction id (a positive integer)"))
    };
    let (start, end) = match s.split_once("..") {
        None => {
            let n = num(s)?;
            (n, n.saturating_add(1))
        }
        Some((a, b)) => {
            let start = if a.trim().is_empty() { 1 } else { num(a)? };
            let end = if let Some(b) = b.strip_prefix('=') {
                num(b)?.saturating_add(1)
            } else if b.trim().is_empty() {
                u64::MAX
            } else {
                num(b)?
            };
            (start, end)
        }
    };
    if start == 0 {
        return Err("interaction ids start at 1".into());
    }
    if end < start {
        return Err(format!("range {s:?} ends before it starts"));
    }
    Ok(IdRange { start, end })
}

/// Prints the session.
pub fn run(args: Args) -> CliResult {
    check_session(&args.session)?;
    let store = open_read_only(&args.dir, RecoveryMode::PointInTime, &args.master)?;
    require_session(&store, &args.session)?;
    let range = args.range.unwrap_or(IdRange {
        start: 1,
        end: u64::MAX,
    });
    let mut out = Out::stdout();
    for entry in store.range(&args.session, range.start..range.end).raw() {
        let entry = entry.in_store(&args.dir)?;
        write_entry(&mut out, &entry, args.with_meta)?;
    }
    out.finish()
}

/// Writes one message as a JSONL line, bare or wrapped with its metadata.
pub fn write_entry(out: &mut Out, entry: &Entry<Vec<u8>>, with_meta: bool) -> CliResult {
    if with_meta {
        out.text(&format!(
            "{{\"interaction_id\":{},\"lsn\":{},\"timestamp\":{},\"message\":",
            entry.interaction_id, entry.lsn.0, entry.timestamp.0
        ))?;
        out.bytes(&one_line(&entry.message))?;
        out.text("}\n")
    } else {
        out.bytes(&one_line(&entry.message))?;
        out.text("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rust() {
        let r = |s| parse_range(s).unwrap();
        assert_eq!(r("2..5"), IdRange { start: 2, end: 5 });
        assert_eq!(r("2..=5"), IdRange { start: 2, end: 6 });
        assert_eq!(
            r("3.."),
            IdRange {
                start: 3,
                end: u64::MAX
            }
        );
        assert_eq!(r("..4"), IdRange { start: 1, end: 4 });
        assert_eq!(r("..=4"), IdRange { start: 1, end: 5 });
        assert_eq!(
            r(".."),
            IdRange {
                start: 1,
                end: u64::MAX
            }
        );
        assert_eq!(r("7"), IdRange { start: 7, end: 8 });
        assert!(parse_range("0..3").is_err());
        assert!(parse_range("5..2").is_err());
        assert!(parse_range("a..b").is_err());
        assert!(parse_range("1...3").is_err());
        assert!(parse_range("-1..3").is_err());
    }
}
