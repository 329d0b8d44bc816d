//! A process's first step on an existing store: open it and read a session's tail, warm (its
//! files in the page cache) and cold (evicted first with `posix_fadvise(DONTNEED)`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use crate::{Log, TAIL_N, convlog_side, median, sqlite};

/// Whether a reopen starts with the store's files in the page cache or evicted from it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cache {
    Warm,
    Cold,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

/// Median seconds of (open + first tail(20)) for each engine: `reps` timed runs after an
/// untimed one; for [`Cache::Cold`], both stores' files are evicted before every run.
pub fn pair(
    conv: &Path,
    sql: &Path,
    session: &str,
    reps: usize,
    cache: Cache,
    log: &Log,
) -> (f64, f64) {
    let prepare = || {
        if cache == Cache::Cold {
            evict(conv);
            evict(sql);
        }
    };
    let mut c = Vec::new();
    let mut report = None;
    for i in 0..=reps {
        prepare();
        let t = Instant::now();
        let (store, got) = convlog_side::reopen_and_tail(conv, session, TAIL_N);
        let e = t.elapsed().as_secs_f64();
        assert_eq!(got, TAIL_N as usize);
        if i > 0 {
            c.push(e);
        }
        let rep = store.recovery_report();
        report = Some(format!(
            "{} segments, {} records, {} B scanned, {} hints used, recovery {:.2} ms",
            rep.segments_scanned,
            rep.records,
            rep.bytes_scanned,
            rep.hints_used,
            rep.duration.as_secs_f64() * 1e3
        ));
        drop(store);
    }
    let mut s = Vec::new();
    for i in 0..=reps {
        prepare();
        let t = Instant::now();
        let got = sqlite::reopen_and_tail(sql, session, TAIL_N as i64);
        let e = t.elapsed().as_secs_f64();
        assert_eq!(got.len(), TAIL_N as usize);
        if i > 0 {
            s.push(e);
        }
    }
    let (c, s) = (median(c), median(s));
    log.say(format!(
        "reopen + tail({TAIL_N}) at {}, {}: convlog {:.3} ms ({}), sqlite {:.3} ms",
        conv.display(),
        cache.name(),
        c * 1e3,
        report.unwrap_or_default(),
        s * 1e3
    ));
    (c, s)
}

/// Drops every file of `dir` from the page cache: synced first (only clean pages can be
/// dropped), then `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file.
fn evict(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read store dir").flatten() {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        f.sync_all().expect("sync before evicting");
        // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open
        // for the duration of the call (`f` lives until the end of the loop body).
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise({}) failed: {rc}", e.path().display());
    }
}
