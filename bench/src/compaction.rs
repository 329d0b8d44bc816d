//! Compaction (`--only compaction`, issue 14): throughput, space given back, appends during a
//! compaction, and reopen after one; SQLite's `DELETE` + `VACUUM` beside it.
//!
//! - **The 1 KB workload** (about 1 GB of JSON, `--quick` 100 MB): the main workload's
//!   generator (chat and tool messages, 36-byte UUID session ids) over many sessions
//!   (Zipf s = 0.8), interleaved, streamed (never held in memory). Every 1% of the appends,
//!   messages already written are killed until 60% of the bytes written are dead: sessions
//!   deleted, cleared, truncated, popped and replaced (a shorter history: the first message and
//!   the last), each kind aiming at its share of the dead bytes ([`SHARES`]). A SQLite database
//!   gets the same rows and the same removals (as `DELETE`s) in the same order.
//! - **Many small sessions** (50k, `--quick` 5k, of 3–9 messages of ~200 B), interleaved; then
//!   60% of the sessions deleted.
//!
//! convlog: `seal()`, then `compact()` timed; the disk (every file of the store, closed)
//! against the live JSON (every live message read back). SQLite: `VACUUM` and a truncating
//! checkpoint, timed; the database file against the same live JSON.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use convlog::{CompactReport, Durability, Store};
use rusqlite::{Connection, params};

use crate::sqlite::{self, Schema};
use crate::workload::{self, Corpus, Rng, Workload};
use crate::{Args, Log, Row, TAIL_N, convlog_side, median, met, remove, sysinfo};

/// Bytes of JSON appended to the 1 KB store (about 1 GB; `--quick`: 100 MB), as messages of
/// the main workload's mean size (963 B).
const BIG_MESSAGES: [usize; 2] = [1_040_000, 104_000];
/// Sessions of the 1 KB store (`--quick`: fewer).
const BIG_SESSIONS: [usize; 2] = [20_000, 2_000];
/// Their Zipf exponent: flatter than the main workload's 1.1, so that no one session holds a
/// large part of the store (largest ~3%, smallest ~12 messages at full size).
const BIG_ZIPF: f64 = 0.8;
/// Share of the bytes written that the removals make dead.
const DEAD: f64 = 0.6;
/// Times during the appends when removals bring the dead share back to [`DEAD`].
const CHECKPOINTS: usize = 100;
/// Small sessions (`--quick`: fewer) and their message counts.
const SMALL_SESSIONS: [usize; 2] = [50_000, 5_000];
const SMALL_LEN: (u64, u64) = (3, 9);
/// Appends per SQLite transaction while the stores are built.
const SQL_BATCH: usize = 10_000;
/// Pace of the appender in the latency lines (one `append_raw` every so often, not flat out:
/// a flat-out appender on 2 vCPUs would grow the store faster than it is compacted).
const APPEND_EVERY: Duration = Duration::from_micros(500);
/// Untimed opens before the timed ones, and timed ones (`--quick`: fewer).
const REOPENS: [usize; 2] = [5, 3];

/// The removals, and the share of the dead bytes each aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Delete,
    Clear,
    Truncate,
    Pop,
    Replace,
}

const SHARES: [(Kill, f64); 5] = [
    (Kill::Delete, 0.35),
    (Kill::Clear, 0.15),
    (Kill::Truncate, 0.30),
    (Kill::Pop, 0.10),
    (Kill::Replace, 0.10),
];

/// The 1 KB store's figures.
pub struct Big {
    messages: u64,
    sessions: usize,
    /// JSON bytes appended (replacements included), and of those still live.
    written: u64,
    live: u64,
    live_messages: u64,
    /// convlog: the compaction alone, and the store's bytes before and after (closed).
    report: CompactReport,
    compact_secs: f64,
    disk_before: u64,
    disk_after: u64,
    /// Read + write with fdatasync of the same bytes (the machine's ceiling).
    ceiling_bytes: u64,
    ceiling_secs: f64,
    /// Read of the input's segment files + write and fdatasync of the output's size.
    ceiling_out: f64,
    /// Open + first tail(20) before and after the compaction (median seconds).
    reopen_before: (f64, String),
    reopen_after: (f64, String),
    /// Paced `append_raw` latency (p50, p99, max; samples) on an idle store and during a
    /// compaction of it, and that compaction's seconds and input bytes.
    idle: ([f64; 3], usize),
    during: ([f64; 3], usize),
    loaded_compact: (f64, u64),
    sql: Option<SqlVacuum>,
}

/// SQLite after the same removals: `VACUUM` + checkpoint.
struct SqlVacuum {
    secs: f64,
    before: u64,
    after: u64,
}

/// The many-small-sessions store's figures.
pub struct Small {
    sessions: usize,
    messages: u64,
    written: u64,
    live: u64,
    report: CompactReport,
    compact_secs: f64,
    disk_before: u64,
    disk_after: u64,
    sql: SqlVacuum,
}

pub struct Results {
    big: Big,
    small: Small,
}

pub fn run(args: &Args, root: &Path, log: &Log) -> Results {
    let q = usize::from(args.quick);
    let big = big(args, q, root, log);
    let small = small(args, q, root, log);
    Results { big, small }
}

/// What is live, message by message: per session, the length of each live message (ids are
/// always `1..=count`), so the removals know what they kill without reading the store.
struct Live {
    lens: Vec<Vec<u32>>,
    bytes: u64,
}

impl Live {
    fn new(sessions: usize) -> Live {
        Live {
            lens: vec![Vec::new(); sessions],
            bytes: 0,
        }
    }

    fn push(&mut self, s: usize, len: usize) -> u64 {
        self.lens[s].push(len as u32);
        self.bytes += len as u64;
        self.lens[s].len() as u64
    }

    /// Cuts session `s` to `keep` messages; returns the bytes removed.
    fn cut(&mut self, s: usize, keep: usize) -> u64 {
        let gone: u64 = self.lens[s][keep..].iter().map(|&l| u64::from(l)).sum();
        self.lens[s].truncate(keep);
        self.bytes -= gone;
        gone
    }
}

/// The SQLite side of a build: the same rows and removals, `SQL_BATCH` statements per
/// transaction, with convlog's interaction ids.
struct SqlMirror {
    conn: Connection,
    pending: usize,
    time: Duration,
}

const INSERT: &str =
    "INSERT INTO messages (session_id, interaction_id, body, ts) VALUES (?1, ?2, ?3, ?4)";
const DELETE_FROM: &str = "DELETE FROM messages WHERE session_id = ?1 AND interaction_id > ?2";

impl SqlMirror {
    fn open(dir: &Path, schema: Schema) -> SqlMirror {
        let conn = sqlite::open(dir, schema, sqlite::Sync::Normal).expect("open sqlite");
        SqlMirror {
            conn,
            pending: 0,
            time: Duration::ZERO,
        }
    }

    fn step(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<usize>) {
        let t = Instant::now();
        if self.pending == 0 {
            self.conn.execute_batch("BEGIN").expect("begin");
        }
        f(&self.conn).expect("sqlite statement");
        self.pending += 1;
        if self.pending == SQL_BATCH {
            self.conn.execute_batch("COMMIT").expect("commit");
            self.pending = 0;
        }
        self.time += t.elapsed();
    }

    fn insert(&mut self, session: &str, id: u64, body: &[u8]) {
        self.step(|c| {
            c.prepare_cached(INSERT)?
                .execute(params![session, id as i64, body, 0i64])
        });
    }

    /// Deletes the rows of `session` past its first `keep`.
    fn cut(&mut self, session: &str, keep: u64) {
        self.step(|c| {
            c.prepare_cached(DELETE_FROM)?
                .execute(params![session, keep as i64])
        });
    }

    /// Commits, checkpoints; returns the database's bytes.
    fn finish(&mut self, dir: &Path) -> u64 {
        let t = Instant::now();
        if self.pending > 0 {
            self.conn.execute_batch("COMMIT").expect("commit");
            self.pending = 0;
        }
        sqlite::checkpoint(&self.conn);
        self.time += t.elapsed();
        sql_bytes(dir)
    }

    /// `VACUUM` and a truncating checkpoint, timed.
    fn vacuum(&self, dir: &Path, before: u64, log: &Log, what: &str) -> SqlVacuum {
        let t = Instant::now();
        self.conn.execute_batch("VACUUM").expect("vacuum");
        sqlite::checkpoint(&self.conn);
        let secs = t.elapsed().as_secs_f64();
        let after = sql_bytes(dir);
        log.say(format!(
            "compaction, {what}: sqlite VACUUM + checkpoint {secs:.2} s, {before} → {after} B"
        ));
        SqlVacuum {
            secs,
            before,
            after,
        }
    }
}

fn sql_bytes(dir: &Path) -> u64 {
    sysinfo::dir_bytes(dir, |n| !n.ends_with("-shm"))
}

/// The 1 KB store: built with removals, then copied (the ceiling), compacted alone (A), and
/// its copy (B) compacted under paced appends.
fn big(args: &Args, q: usize, root: &Path, log: &Log) -> Big {
    let (n, sessions) = (BIG_MESSAGES[q], BIG_SESSIONS[q]);
    let w = Workload::new(n, sessions, BIG_ZIPF, args.seed ^ 0xc0);
    let dir_a = root.join("compaction-a");
    let dir_b = root.join("compaction-b");
    let dir_sql = root.join("compaction-sqlite");
    log.say(format!(
        "compaction: building {n} messages in {sessions} sessions (Zipf s={BIG_ZIPF}, largest \
         {} messages), {:.0}% of the bytes made dead on the way; sqlite beside it",
        w.lengths[w.largest()],
        DEAD * 100.0
    ));
    let (store, sql, live, written, sql_before) = build(args, &w, &dir_a, &dir_sql, log);
    store.seal().expect("seal");
    drop(store);
    let disk_before = store_bytes(&dir_a, log, "1 KB store before compaction");

    // The session tailed at reopen: the one with the most live messages.
    let tailed = (0..sessions)
        .max_by_key(|&s| live.lens[s].len())
        .expect("a session");
    let tailed = w.sessions[tailed].clone();
    let reps = REOPENS[q];
    let reopen_before = reopen(&dir_a, &tailed, reps, log, "before compaction");

    flush_disk();
    let (ceiling_bytes, ceiling_secs) = copy_dir(&dir_a, &dir_b);
    log.say(format!(
        "compaction: ceiling: read + write + fdatasync of {:.1} MB in {ceiling_secs:.2} s \
         ({:.0} MB/s)",
        ceiling_bytes as f64 / 1e6,
        ceiling_bytes as f64 / 1e6 / ceiling_secs
    ));

    let store = Store::open(&dir_a).expect("open");
    flush_disk();
    let t = Instant::now();
    let report = store.compact().expect("compact");
    let compact_secs = t.elapsed().as_secs_f64();
    log.say(format!(
        "compaction: compact() alone: {:.2} s ({:.0} MB/s of input): {}",
        compact_secs,
        report.bytes_before as f64 / 1e6 / compact_secs,
        report_line(&report)
    ));
    drop(store);
    flush_disk();
    let ceiling_out = read_then_write(&dir_b, &root.join("compaction-scratch"), report.bytes_after);
    log.say(format!(
        "compaction: ceiling for this output: read {:.1} MB + write + fdatasync {:.1} MB in \
         {ceiling_out:.2} s ({:.0} MB/s of input)",
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        report.bytes_before as f64 / 1e6 / ceiling_out
    ));
    let disk_after = store_bytes(&dir_a, log, "1 KB store after compaction");
    let reopen_after = reopen(&dir_a, &tailed, reps, log, "after compaction");
    let store = Store::open(&dir_a).expect("open");
    let (live_messages, live_read) = live_bytes(&store);
    assert_eq!(
        live_read, live.bytes,
        "the live JSON read back is what was kept"
    );
    drop(store);
    if !args.keep {
        remove(&dir_a);
    }

    let (idle, during, loaded_compact) = appends_during(&dir_b, &w, live_messages, args, log);
    if !args.keep {
        remove(&dir_b);
    }

    flush_disk();
    let sql_v = sql.vacuum(&dir_sql, sql_before, log, "1 KB store");
    drop(sql);
    if !args.keep {
        remove(&dir_sql);
    }

    Big {
        messages: n as u64,
        sessions,
        written,
        live: live.bytes,
        live_messages,
        report,
        compact_secs,
        disk_before,
        disk_after,
        ceiling_bytes,
        ceiling_secs,
        ceiling_out,
        reopen_before,
        reopen_after,
        idle,
        during,
        loaded_compact,
        sql: Some(sql_v),
    }
}

/// Appends the 1 KB workload `w` to a new store in `dir_a` and its SQLite mirror in
/// `dir_sql`, removing messages at every checkpoint until [`DEAD`] of the bytes written are
/// dead. Returns the open store, the mirror, what is live, the JSON bytes written, and the
/// mirror's bytes on disk.
fn build(
    args: &Args,
    w: &Workload,
    dir_a: &Path,
    dir_sql: &Path,
    log: &Log,
) -> (Store, SqlMirror, Live, u64, u64) {
    let (n, sessions) = (w.order.len(), w.sessions.len());
    let store = convlog_side::open(dir_a, Durability::Buffered);
    let mut sql = SqlMirror::open(dir_sql, args.schema);
    let mut live = Live::new(sessions);
    let mut rng = Rng::new(args.seed ^ 0xdead);
    let mut kills = [(0u64, 0u64); 5];
    let mut written = 0u64;
    let mut buf = Vec::new();
    let mut g = w.generator();
    let (mut conv_time, mut kill_time, mut gen_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut appended = 0usize;
    let t_build = Instant::now();
    for cp in 1..=CHECKPOINTS {
        let upto = n * cp / CHECKPOINTS;
        while appended < upto {
            buf.clear();
            let t = Instant::now();
            let s = g.next_into(&mut buf).expect("workload message") as usize;
            gen_time += t.elapsed();
            let t = Instant::now();
            let id = store
                .append_raw(&w.sessions[s], &buf)
                .expect("append_raw")
                .interaction_id;
            conv_time += t.elapsed();
            assert_eq!(id, live.push(s, buf.len()), "interaction ids are 1..=count");
            sql.insert(&w.sessions[s], id, &buf);
            written += buf.len() as u64;
            appended += 1;
        }
        while (written - live.bytes) < (DEAD * written as f64) as u64 {
            let t = Instant::now();
            kill_one(
                &store,
                &mut sql,
                w,
                &mut live,
                &mut rng,
                &mut kills,
                &mut written,
            );
            kill_time += t.elapsed();
        }
    }
    let sql_before = sql.finish(dir_sql);
    log.say(format!(
        "compaction: built in {:.1} s (generating {:.1} s, convlog appends {:.1} s, removals \
         {:.1} s (both engines), sqlite {:.1} s in all): {:.1} MB written, {:.1} MB live \
         ({:.1}% dead); removals {}",
        t_build.elapsed().as_secs_f64(),
        gen_time.as_secs_f64(),
        conv_time.as_secs_f64(),
        kill_time.as_secs_f64(),
        sql.time.as_secs_f64(),
        written as f64 / 1e6,
        live.bytes as f64 / 1e6,
        100.0 * (1.0 - live.bytes as f64 / written as f64),
        kills_line(&kills)
    ));
    (store, sql, live, written, sql_before)
}

/// One removal, of the kind furthest below its share of the dead bytes, on a random session
/// that has something for it to remove.
fn kill_one(
    store: &Store,
    sql: &mut SqlMirror,
    w: &Workload,
    live: &mut Live,
    rng: &mut Rng,
    kills: &mut [(u64, u64); 5],
    written: &mut u64,
) {
    let dead: u64 = kills.iter().map(|k| k.1).sum();
    let (k, &(kind, _)) = SHARES
        .iter()
        .enumerate()
        .max_by(|a, b| {
            let behind = |(i, (_, share)): &(usize, &(Kill, f64))| {
                share * (dead as f64 + 1.0) - kills[*i].1 as f64
            };
            behind(a).total_cmp(&behind(b))
        })
        .expect("shares");
    let min = match kind {
        Kill::Delete | Kill::Clear | Kill::Pop => 1,
        Kill::Truncate => 2,
        Kill::Replace => 4,
    };
    let pick = |rng: &mut Rng, min: usize| {
        (0..100_000)
            .map(|_| rng.below(live.lens.len() as u64) as usize)
            .find(|&s| live.lens[s].len() >= min)
    };
    // (No session long enough for this kind: a deletion instead.)
    let (k, kind, s) = match pick(rng, min) {
        Some(s) => (k, kind, s),
        None => (0, Kill::Delete, pick(rng, 1).expect("a live session")),
    };
    let id = &w.sessions[s];
    let count = live.lens[s].len();
    let gone = match kind {
        Kill::Delete => {
            assert!(store.delete_session(id).expect("delete_session"));
            sql.cut(id, 0);
            live.cut(s, 0)
        }
        Kill::Clear => {
            assert_eq!(store.clear(id).expect("clear"), count as u64);
            sql.cut(id, 0);
            live.cut(s, 0)
        }
        Kill::Truncate => {
            let keep = rng.range(count as u64 / 4, count as u64 * 3 / 4).max(1) as usize;
            assert_eq!(
                store.truncate(id, keep as u64).expect("truncate"),
                (count - keep) as u64
            );
            sql.cut(id, keep as u64);
            live.cut(s, keep)
        }
        Kill::Pop => {
            let pops = (rng.range(1, 3) as usize).min(count);
            for _ in 0..pops {
                store.pop_raw(id).expect("pop").expect("a message to pop");
            }
            sql.cut(id, (count - pops) as u64);
            live.cut(s, count - pops)
        }
        Kill::Replace => {
            // A shorter history, as an agent summarizing its context would write: the first
            // message (the system prompt) and the last.
            let first = store.range(id, 1..=1).raw().next();
            let last = store.tail(id, 1).raw().next();
            let new: Vec<Vec<u8>> = [first, last]
                .into_iter()
                .map(|e| e.expect("a message").expect("read").message)
                .collect();
            store
                .replace(id, Some(count as u64 + 1), &new)
                .expect("replace");
            sql.cut(id, 0);
            let gone = live.cut(s, 0);
            for (i, m) in new.iter().enumerate() {
                live.push(s, m.len());
                sql.insert(id, i as u64 + 1, m);
                *written += m.len() as u64;
            }
            gone
        }
    };
    kills[k].0 += 1;
    kills[k].1 += gone;
}

fn kills_line(kills: &[(u64, u64); 5]) -> String {
    SHARES
        .iter()
        .zip(kills)
        .map(|((kind, _), (n, b))| format!("{kind:?} {n} ({:.1} MB)", *b as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report_line(r: &CompactReport) -> String {
    format!(
        "{} segments, {} → {} B, {} records kept, {} dropped, {} sessions erased, report \
         duration {:.2} s",
        r.segments_rewritten,
        r.bytes_before,
        r.bytes_after,
        r.records_kept,
        r.records_dropped,
        r.sessions_erased.len(),
        r.duration.as_secs_f64()
    )
}

/// `sync(1)`: what earlier steps left dirty is written back before a timed step, so that it
/// is not charged to that step.
fn flush_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Every file of a closed store (as the space line counts), logged by kind.
fn store_bytes(dir: &Path, log: &Log, what: &str) -> u64 {
    let seg = sysinfo::dir_bytes(dir, |n| n.ends_with(".seg"));
    let hint = sysinfo::dir_bytes(dir, |n| n.ends_with(".hint"));
    let all = sysinfo::dir_bytes(dir, |_| true);
    log.say(format!(
        "compaction: {what}: {all} B on disk (segments {seg}, hints {hint}, other {})",
        all - seg - hint
    ));
    all
}

/// Every live message read back: (messages, payload bytes).
fn live_bytes(store: &Store) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for s in store.sessions() {
        let (m, b) = convlog_side::stream(store, &s.id);
        assert_eq!(m, s.count, "a session reads back whole");
        n += m;
        bytes += b;
    }
    (n, bytes)
}

/// Median seconds of `Store::open` + the first `tail(session, 20)`, after one untimed open.
fn reopen(dir: &Path, session: &str, reps: usize, log: &Log, what: &str) -> (f64, String) {
    let mut times = Vec::new();
    let mut rec = String::new();
    for i in 0..=reps {
        let t = Instant::now();
        let (store, got) = convlog_side::reopen_and_tail(dir, session, TAIL_N);
        let e = t.elapsed().as_secs_f64();
        assert_eq!(got, TAIL_N as usize);
        if i > 0 {
            times.push(e);
        }
        let r = store.recovery_report();
        rec = format!(
            "{} segments scanned ({:.0} MB), {} hints used",
            r.segments_scanned,
            r.bytes_scanned as f64 / 1e6,
            r.hints_used
        );
        drop(store);
    }
    let m = median(times);
    log.say(format!(
        "compaction: reopen + tail({TAIL_N}) {what}: {:.3} ms ({rec})",
        m * 1e3
    ));
    (m, rec)
}

/// Copies every file of `src` into the new directory `dst` (owner-only, as a store's), each
/// file read, written and `fdatasync`ed in turn: the machine's sequential read + write of the
/// same bytes. Returns (bytes, seconds).
fn copy_dir(src: &Path, dst: &Path) -> (u64, f64) {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut buf = vec![0u8; 8 << 20];
    let t = Instant::now();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .expect("create copy dir");
    let mut total = 0u64;
    for name in names {
        let mut from = std::fs::File::open(src.join(&name)).expect("open source file");
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst.join(&name))
            .expect("create copy");
        loop {
            let k = from.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            to.write_all(&buf[..k]).expect("write");
            total += k as u64;
        }
        to.sync_data().expect("fdatasync");
    }
    std::fs::File::open(dst)
        .and_then(|d| d.sync_all())
        .expect("sync dir");
    (total, t.elapsed().as_secs_f64())
}

/// Reads every segment file of `src` (the compaction's input, here its copy) and writes
/// `out` bytes of it to the new file `scratch`, `fdatasync`ed: the machine's ceiling for
/// producing this compaction's output. Returns seconds.
fn read_then_write(src: &Path, scratch: &Path, out: u64) -> f64 {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".seg"))
        .collect();
    names.sort();
    let mut buf = vec![0u8; 8 << 20];
    let t = Instant::now();
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(scratch)
        .expect("create scratch");
    let (mut read, mut left) = (0u64, out);
    for name in names {
        let mut from = std::fs::File::open(src.join(&name)).expect("open source file");
        loop {
            let k = from.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            read += k as u64;
            let w = (k as u64).min(left) as usize;
            to.write_all(&buf[..w]).expect("write");
            left -= w as u64;
        }
    }
    to.sync_data().expect("fdatasync");
    let secs = t.elapsed().as_secs_f64();
    assert!(read >= out && left == 0);
    drop(to);
    let _ = std::fs::remove_file(scratch);
    secs
}

/// Paced `append_raw` latencies on the store in `dir`: idle (for `--duration`, half before
/// and half after), and while another thread compacts it (the same `Store`, cloned). Returns ((p50, p99, max), samples)
/// of each, and the compaction's (seconds, input bytes).
#[allow(clippy::type_complexity)]
fn appends_during(
    dir: &Path,
    w: &Workload,
    live_messages: u64,
    args: &Args,
    log: &Log,
) -> (([f64; 3], usize), ([f64; 3], usize), (f64, u64)) {
    let msgs = Workload::new(20_000, 1000, 1.1, args.seed ^ 0xa9).materialize();
    let store = Store::open(dir).expect("open the copy");
    flush_disk();
    let mut next = 0usize;
    // Also returns when the slowest append began.
    let mut append = |until: &dyn Fn(usize) -> bool| -> (Vec<f64>, Instant) {
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut slowest = (0.0, start);
        while !until(lat.len()) {
            let due = start + APPEND_EVERY * lat.len() as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let i = next % msgs.len();
            next += 1;
            let s = &w.sessions[msgs.session[i] as usize % w.sessions.len()];
            let t = Instant::now();
            store.append_raw(s, msgs.get(i)).expect("append_raw");
            let e = t.elapsed().as_secs_f64();
            if e > slowest.0 {
                slowest = (e, t);
            }
            lat.push(e);
        }
        (lat, slowest.1)
    };
    // Idle: half before the compaction (after a short warm-up), half after it, pooled.
    let idle_n = (args.duration.as_secs_f64() / APPEND_EVERY.as_secs_f64()) as usize / 2;
    let warm = append(&|n| n >= 200).0.len();
    let mut idle = append(&|n| n >= idle_n).0;
    let done = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(2));
    let compactor = {
        let (store, done, go) = (store.clone(), done.clone(), go.clone());
        std::thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                go.wait();
                let t = Instant::now();
                let r = store.compact();
                let e = t.elapsed().as_secs_f64();
                done.store(true, Ordering::Release);
                (r, e)
            })
            .expect("spawn")
    };
    go.wait();
    let t0 = Instant::now();
    let (during, slowest) = append(&|_| done.load(Ordering::Acquire));
    let slowest = slowest.duration_since(t0).as_secs_f64();
    let (report, secs) = compactor.join().expect("compaction thread");
    let report = report.expect("compact during appends");
    idle.extend(append(&|n| n >= idle_n).0);
    let appended = (warm + idle.len() + during.len()) as u64;
    let messages = store.stats().messages;
    assert_eq!(
        messages,
        live_messages + appended,
        "the copy kept every message"
    );
    drop(store);
    let (idle, during) = (summary(idle), summary(during));
    log.say(format!(
        "compaction: append_raw every {} µs: idle p50/p99/max {:.2}/{:.2}/{:.1} µs ({} \
         samples); during compact() p50/p99/max {:.2}/{:.2}/{:.1} µs ({} samples; the slowest \
         began {slowest:.3} s into the compaction); that compaction {secs:.2} s ({:.0} MB/s of input): {}; {messages} messages after \
         ({appended} appended)",
        APPEND_EVERY.as_micros(),
        idle.0[0] * 1e6,
        idle.0[1] * 1e6,
        idle.0[2] * 1e6,
        idle.1,
        during.0[0] * 1e6,
        during.0[1] * 1e6,
        during.0[2] * 1e6,
        during.1,
        report.bytes_before as f64 / 1e6 / secs,
        report_line(&report)
    ));
    (idle, during, (secs, report.bytes_before))
}

fn summary(mut v: Vec<f64>) -> ([f64; 3], usize) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    ([v[n / 2], v[n * 99 / 100], v[n - 1]], n)
}

/// Many small sessions, interleaved; 60% of them deleted; compacted.
fn small(args: &Args, q: usize, root: &Path, log: &Log) -> Small {
    let sessions = SMALL_SESSIONS[q];
    let ids = workload::uuids(sessions, args.seed ^ 0x5a);
    let mut rng = Rng::new(args.seed ^ 0x5b);
    let chats: Vec<Corpus> = (0..sessions)
        .map(|i| {
            let n = rng.range(SMALL_LEN.0, SMALL_LEN.1) as usize;
            Corpus::small_chat(n, args.seed ^ (0x5c00_0000 + i as u64))
        })
        .collect();
    let mut order: Vec<u32> = Vec::new();
    for (i, c) in chats.iter().enumerate() {
        order.extend(std::iter::repeat_n(i as u32, c.len()));
    }
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let dir = root.join("compaction-small");
    let dir_sql = root.join("compaction-small-sqlite");
    let store = convlog_side::open(&dir, Durability::Buffered);
    let mut sql = SqlMirror::open(&dir_sql, args.schema);
    let mut live = Live::new(sessions);
    let mut written = 0u64;
    for &s in &order {
        let s = s as usize;
        let m = chats[s].get(live.lens[s].len());
        let id = store
            .append_raw(&ids[s], m)
            .expect("append_raw")
            .interaction_id;
        assert_eq!(id, live.push(s, m.len()));
        sql.insert(&ids[s], id, m);
        written += m.len() as u64;
    }
    let mut victims: Vec<usize> = (0..sessions).collect();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.below(i as u64 + 1) as usize);
    }
    victims.truncate((sessions as f64 * DEAD) as usize);
    for &s in &victims {
        assert!(store.delete_session(&ids[s]).expect("delete_session"));
        sql.cut(&ids[s], 0);
        live.cut(s, 0);
    }
    let sql_before = sql.finish(&dir_sql);
    log.say(format!(
        "compaction, small sessions: {} messages (mean {:.0} B) in {sessions} sessions, {} \
         deleted: {:.1} MB written, {:.1} MB live",
        order.len(),
        written as f64 / order.len() as f64,
        victims.len(),
        written as f64 / 1e6,
        live.bytes as f64 / 1e6
    ));
    drop(chats);
    store.seal().expect("seal");
    drop(store);
    let disk_before = store_bytes(&dir, log, "small sessions before compaction");
    let store = Store::open(&dir).expect("open");
    flush_disk();
    let t = Instant::now();
    let report = store.compact().expect("compact");
    let compact_secs = t.elapsed().as_secs_f64();
    log.say(format!(
        "compaction, small sessions: compact() {:.2} s ({:.0} MB/s of input): {}",
        compact_secs,
        report.bytes_before as f64 / 1e6 / compact_secs,
        report_line(&report)
    ));
    drop(store);
    let disk_after = store_bytes(&dir, log, "small sessions after compaction");
    let store = Store::open(&dir).expect("open");
    let (_, live_read) = live_bytes(&store);
    assert_eq!(
        live_read, live.bytes,
        "the live JSON read back is what was kept"
    );
    drop(store);
    if !args.keep {
        remove(&dir);
    }
    flush_disk();
    let sql_v = sql.vacuum(&dir_sql, sql_before, log, "small sessions");
    drop(sql);
    if !args.keep {
        remove(&dir_sql);
    }
    Small {
        sessions,
        messages: order.len() as u64,
        written,
        live: live.bytes,
        report,
        compact_secs,
        disk_before,
        disk_after,
        sql: sql_v,
    }
}

/// The table's rows for these results.
pub fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let b = &r.big;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let input = b.report.bytes_before;
    let conv_rate = mb(input) / b.compact_secs;
    let ceiling = mb(b.ceiling_bytes) / b.ceiling_secs;
    let label = format!(
        "{:.0} MB store, {:.0}% dead, {}k msgs in {}k sessions",
        mb(input),
        100.0 * (1.0 - b.live as f64 / b.written as f64),
        b.messages / 1000,
        b.sessions / 1000
    );
    rows.push(Row {
        metric: format!("compact() throughput, MB/s of input ({label})"),
        convlog: format!("{conv_rate:.0} MB/s ({:.2} s)", b.compact_secs),
        peer: format!(
            "{ceiling:.0} MB/s (read + write + fdatasync of {:.0} MB: the ceiling)",
            mb(b.ceiling_bytes)
        ),
        ratio: format!("{:.2}× convlog/ceiling throughput", conv_rate / ceiling),
        target: String::new(),
        met: "",
    });
    let ceiling_out = mb(input) / b.ceiling_out;
    rows.push(Row {
        metric: "compact() throughput, MB/s of input, vs reading it and writing its output's size"
            .into(),
        convlog: format!("{conv_rate:.0} MB/s"),
        peer: format!(
            "{ceiling_out:.0} MB/s (read {:.0} MB + write + fdatasync {:.0} MB)",
            mb(input),
            mb(b.report.bytes_after)
        ),
        ratio: format!("{:.2}× convlog/ceiling throughput", conv_rate / ceiling_out),
        target: String::new(),
        met: "",
    });
    if let Some(s) = &b.sql {
        let rate = mb(s.before) / s.secs;
        rows.push(Row {
            metric: "reclaim time, same removals (convlog compact; sqlite VACUUM)".into(),
            convlog: format!("{:.2} s", b.compact_secs),
            peer: format!(
                "{:.2} s (VACUUM + checkpoint of a {:.0} MB db: {rate:.0} MB/s)",
                s.secs,
                mb(s.before)
            ),
            ratio: format!("{:.2}× convlog/sqlite time", b.compact_secs / s.secs),
            target: String::new(),
            met: "",
        });
    }
    let disk_row = |what: &str, after: u64, before: u64, live: u64, sql: Option<&SqlVacuum>| {
        let x = after as f64 / live as f64;
        Row {
            metric: format!("disk after compaction / live JSON ({what})"),
            convlog: format!("{x:.3} (before: {:.3})", before as f64 / live as f64),
            peer: sql.map_or(String::new(), |s| {
                format!(
                    "{:.3} after VACUUM (before: {:.3})",
                    s.after as f64 / live as f64,
                    s.before as f64 / live as f64
                )
            }),
            ratio: sql.map_or(String::new(), |s| {
                format!("{:.2}× convlog/sqlite size", after as f64 / s.after as f64)
            }),
            target: "≤ 1.10".into(),
            met: met(Some(x <= 1.10)),
        }
    };
    rows.push(disk_row(
        &format!(
            "1 KB msgs, {:.0} MB live in {}k msgs",
            mb(b.live),
            b.live_messages / 1000
        ),
        b.disk_after,
        b.disk_before,
        b.live,
        b.sql.as_ref(),
    ));
    let s = &r.small;
    rows.push(disk_row(
        &format!(
            "{}k small sessions, {:.0} B/msg, 60% deleted, {:.1} MB live",
            s.sessions / 1000,
            s.written as f64 / s.messages as f64,
            mb(s.live)
        ),
        s.disk_after,
        s.disk_before,
        s.live,
        Some(&s.sql),
    ));
    rows.push(Row {
        metric: "compact() of the small sessions, time".into(),
        convlog: format!(
            "{:.2} s ({:.0} MB/s of input)",
            s.compact_secs,
            mb(s.report.bytes_before) / s.compact_secs
        ),
        peer: format!("{:.2} s (VACUUM + checkpoint)", s.sql.secs),
        ratio: format!("{:.2}× convlog/sqlite time", s.compact_secs / s.sql.secs),
        target: String::new(),
        met: "",
    });
    for (i, p) in ["p50", "p99"].iter().enumerate() {
        let (d, idle) = (b.during.0[i], b.idle.0[i]);
        rows.push(Row {
            metric: format!(
                "append_raw ~1 KB, every {} µs, {p}, during compact() vs idle",
                APPEND_EVERY.as_micros()
            ),
            convlog: format!("{:.2} µs", d * 1e6),
            peer: format!("{:.2} µs (idle store)", idle * 1e6),
            ratio: format!("{:.2}× during/idle time", d / idle),
            target: String::new(),
            met: "",
        });
    }
    rows.push(Row {
        metric: "append_raw, max, during compact() vs idle".into(),
        convlog: format!("{:.0} µs ({} samples)", b.during.0[2] * 1e6, b.during.1),
        peer: format!("{:.0} µs ({} samples)", b.idle.0[2] * 1e6, b.idle.1),
        ratio: format!("{:.2}× during/idle time", b.during.0[2] / b.idle.0[2]),
        target: String::new(),
        met: "",
    });
    let (secs, bytes) = b.loaded_compact;
    rows.push(Row {
        metric: "compact() throughput while appending (copy of the store)".into(),
        convlog: format!("{:.0} MB/s ({secs:.2} s)", mb(bytes) / secs),
        peer: format!("{conv_rate:.0} MB/s (alone)"),
        ratio: format!(
            "{:.2}× loaded/alone throughput",
            mb(bytes) / secs / conv_rate
        ),
        target: String::new(),
        met: "",
    });
    let (after, before) = (&b.reopen_after, &b.reopen_before);
    rows.push(Row {
        metric: format!("reopen + first tail({TAIL_N}), after compaction vs before"),
        convlog: format!("{:.3} ms ({})", after.0 * 1e3, after.1),
        peer: format!("{:.3} ms before ({})", before.0 * 1e3, before.1),
        ratio: format!("{:.3}× after/before time", after.0 / before.0),
        target: String::new(),
        met: "",
    });
    rows
}
