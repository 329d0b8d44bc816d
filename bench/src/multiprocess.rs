//! Several processes on one store (`--only multiprocess`, issue 11).
//!
//! - One process, buffered `append_raw` of the main workload: the default (multi-process)
//!   mode, which takes the write lock and checks for other writers on every write, against
//!   `exclusive(true)`, which holds the lock for the store's lifetime.
//! - [`PROCS`] processes appending at once to [`SHARED`] shared sessions, each message to a
//!   random one of them: convlog in its default mode against SQLite WAL, buffered
//!   (`Durability::Buffered` vs `synchronous=NORMAL`) and durable (`Durability::Always` vs
//!   `synchronous=FULL`), one transaction per append on the SQLite side.
//!
//! The processes are this binary run again with a hidden first argument (`--mp-child`, see
//! [`child`]). Each child builds its messages and opens the store before it says `ready`; the
//! parent then sends every child a line at once, and each appends for the slice's duration
//! and reports what it did. After every run the parent opens the store (convlog read-only)
//! and checks that it holds exactly what the children reported, with gapless ids.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use convlog::{Durability, Store};
use rusqlite::{Connection, params};

use crate::appends::Acc;
use crate::sqlite::{self, Schema};
use crate::workload::{self, Corpus, Rng, Workload};
use crate::{Args, Log, Row, convlog_side, floor, median, met, rate, remove};

/// Processes appending at once.
pub const PROCS: usize = 4;
/// Sessions they share.
const SHARED: usize = 16;
/// Messages each child generates (of the main workload's kind) and cycles through.
const CHILD_MESSAGES: usize = 8_000;
/// The SQLite children's busy timeout (rusqlite's default too, set explicitly).
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// The hidden argument that makes the binary a child.
pub const CHILD_FLAG: &str = "--mp-child";

/// SQLite has no in-memory next id across processes: the next id is read in the insert
/// itself (through the primary-key index), atomically, in the autocommit transaction.
const INSERT_NEXT: &str = "INSERT INTO messages (session_id, interaction_id, body, ts) \
     SELECT ?1, COALESCE(MAX(interaction_id), 0) + 1, ?2, ?3 FROM messages WHERE session_id = ?1 \
     RETURNING interaction_id";

/// The four multi-process measurements, in the order they run in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    ConvBuffered,
    SqlNormal,
    ConvAlways,
    SqlFull,
}

const VARIANTS: [Variant; 4] = [
    Variant::ConvBuffered,
    Variant::SqlNormal,
    Variant::ConvAlways,
    Variant::SqlFull,
];

impl Variant {
    fn args(self) -> (&'static str, &'static str) {
        match self {
            Variant::ConvBuffered => ("convlog", "buffered"),
            Variant::ConvAlways => ("convlog", "always"),
            Variant::SqlNormal => ("sqlite", "normal"),
            Variant::SqlFull => ("sqlite", "full"),
        }
    }

    fn parse(engine: &str, mode: &str) -> Option<Variant> {
        VARIANTS.into_iter().find(|v| v.args() == (engine, mode))
    }

    fn is_convlog(self) -> bool {
        matches!(self, Variant::ConvBuffered | Variant::ConvAlways)
    }

    fn sqlite_sync(self) -> sqlite::Sync {
        if self == Variant::SqlFull {
            sqlite::Sync::Full
        } else {
            sqlite::Sync::Normal
        }
    }

    fn name(self) -> String {
        let (e, m) = self.args();
        format!("{e} {m}")
    }
}

pub struct Results {
    /// Buffered appends/s in one process: default mode, exclusive.
    single: (f64, f64),
    /// Total appends/s of the `PROCS` processes, per variant (in `VARIANTS` order).
    multi: [Multi; 4],
    /// The raw `pwrite` + `fdatasync` loop, one process, preallocated file (ops/s).
    floor: f64,
    /// `subscribe` wake-up latency.
    tail: crate::tail_latency::Latency,
}

/// The shared sessions' ids.
fn shared_sessions(seed: u64) -> Vec<String> {
    workload::uuids(SHARED, seed ^ 0x3d)
}

pub fn run(args: &Args, workload: &Workload, corpus: &Corpus, root: &Path, log: &Log) -> Results {
    let single = single_rounds(args, workload, corpus, root, log);
    let rounds: u32 = if args.quick { 1 } else { 3 };
    let slice = args.duration / rounds;
    let mean_len = corpus.input_bytes() as f64 / corpus.len() as f64;
    let rec = mean_len.round() as usize + convlog::format::RECORD_HEADER_LEN;
    let mut multi: [Multi; 4] = Default::default();
    let mut floor_acc = Acc::default();
    for round in 0..rounds {
        let (n, t) = floor::write_sync_loop(&root.join("mp-floor.prealloc"), rec, true, slice);
        floor_acc.add(n, t);
        for (k, v) in VARIANTS.into_iter().enumerate() {
            let (engine, mode) = v.args();
            let dir = root.join(format!("mp-{engine}-{mode}-{round}"));
            // The store or the schema is made once, before the children open it.
            if v.is_convlog() {
                drop(convlog_side::open(&dir, Durability::Buffered));
            } else {
                drop(sqlite::open(&dir, args.schema, v.sqlite_sync()).expect("create sqlite db"));
            }
            multi[k].runs += 1;
            let outcome = spawn_children(v, &dir, args, slice).and_then(|reports| {
                let (ops, bytes) = reports
                    .iter()
                    .fold((0, 0), |(n, b), r| (n + r.appends, b + r.bytes));
                if v.is_convlog() {
                    verify_convlog(&dir, args.seed, ops, bytes)?;
                } else {
                    verify_sqlite(&dir, args.seed, ops, bytes)?;
                }
                Ok((reports, ops))
            });
            match outcome {
                Ok((reports, ops)) => {
                    let secs = reports.iter().map(|r| r.secs).sum::<f64>() / reports.len() as f64;
                    multi[k].acc.add(ops, Duration::from_secs_f64(secs));
                    log.say(format!(
                        "multiprocess round {}/{rounds}: {} × {PROCS} processes: {} total ({ops} \
                         appends in {secs:.2} s; per process {}), store checked",
                        round + 1,
                        v.name(),
                        rate(Some(ops as f64 / secs)),
                        reports
                            .iter()
                            .map(|r| r.appends.to_string())
                            .collect::<Vec<_>>()
                            .join(" / "),
                    ));
                }
                Err(e) => {
                    log.say(format!(
                        "multiprocess round {}/{rounds}: {} × {PROCS} processes FAILED: {e}",
                        round + 1,
                        v.name(),
                    ));
                    multi[k].failed += 1;
                    multi[k].error.get_or_insert(e);
                    if args.keep {
                        // Keep the failed store for inspection (the whole data dir is kept).
                        continue;
                    }
                }
            }
            remove(&dir);
        }
    }
    let floor = floor_acc.rate().unwrap_or(0.0);
    log.say(format!(
        "multiprocess: convlog buffered {}, sqlite NORMAL {}, convlog Always {}, sqlite FULL {}; \
         floor {}",
        multi[0].cell(),
        multi[1].cell(),
        multi[2].cell(),
        multi[3].cell(),
        rate(Some(floor)),
    ));
    let tail = crate::tail_latency::run(root, if args.quick { 100 } else { 300 });
    log.say(format!(
        "multiprocess: subscribe wake-up p50/p99: same process {:.0}/{:.0} µs, another process {:.0}/{:.0} µs",
        tail.same.0, tail.same.1, tail.cross.0, tail.cross.1
    ));
    Results {
        single,
        multi,
        floor,
        tail,
    }
}

/// One multi-process variant over the rounds.
#[derive(Default)]
struct Multi {
    /// Appends and mean child time of the runs that passed.
    acc: Acc,
    runs: u32,
    failed: u32,
    /// The first failure: a child's error, or what the check of the store found.
    error: Option<String>,
}

impl Multi {
    /// Total appends/s over the runs that passed (none if any failed: a rate measured beside
    /// a broken store says nothing).
    fn rate(&self) -> Option<f64> {
        if self.failed > 0 {
            None
        } else {
            self.acc.rate()
        }
    }

    fn cell(&self) -> String {
        match self.rate() {
            Some(r) => rate(Some(r)),
            None => format!("FAILED ({}/{} runs)", self.failed, self.runs),
        }
    }
}

/// Buffered `append_raw` of the whole workload into fresh stores in this one process, default
/// mode and `exclusive(true)`, in interleaved rounds (3, or 1 with `--quick`; the order
/// alternates). Returns the median rates (default, exclusive).
fn single_rounds(
    args: &Args,
    workload: &Workload,
    corpus: &Corpus,
    root: &Path,
    log: &Log,
) -> (f64, f64) {
    let rounds = if args.quick { 1 } else { 3 };
    let per_sec = |t: Duration| corpus.len() as f64 / t.as_secs_f64();
    let (mut shared, mut exclusive) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for excl in [round % 2 == 1, round % 2 == 0] {
            let dir = root.join(format!("mp-single-{excl}"));
            let store = Store::builder()
                .durability(Durability::Buffered)
                .exclusive(excl)
                .open(&dir)
                .expect("open convlog store");
            let t = convlog_side::append_each(&store, &workload.sessions, corpus);
            assert_eq!(store.stats().messages, corpus.len() as u64);
            drop(store);
            remove(&dir);
            if excl {
                exclusive.push(per_sec(t));
            } else {
                shared.push(per_sec(t));
            }
        }
        log.say(format!(
            "multiprocess single-process round {}/{rounds}: default mode {}, exclusive {}",
            round + 1,
            rate(shared.last().copied()),
            rate(exclusive.last().copied())
        ));
    }
    (median(shared), median(exclusive))
}

/// What one child did.
struct Report {
    appends: u64,
    bytes: u64,
    secs: f64,
}

/// Runs `PROCS` children of variant `v` on `dir` for `run`, started together. `Err` names
/// the first child that failed and what it said.
fn spawn_children(
    v: Variant,
    dir: &Path,
    args: &Args,
    run: Duration,
) -> Result<Vec<Report>, String> {
    let exe = std::env::current_exe().expect("current_exe");
    let (engine, mode) = v.args();
    let schema = match args.schema {
        Schema::Rowid => "rowid",
        Schema::WithoutRowid => "without-rowid",
    };
    let mut children = Vec::new();
    let mut pipes: Vec<(ChildStdin, BufReader<ChildStdout>)> = Vec::new();
    for index in 0..PROCS {
        let mut c = Command::new(&exe)
            .arg(CHILD_FLAG)
            .args([engine, mode])
            .arg(dir)
            .args([
                args.seed.to_string(),
                index.to_string(),
                run.as_secs_f64().to_string(),
                schema.to_owned(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdin = c.stdin.take().expect("stdin");
        let stdout = BufReader::new(c.stdout.take().expect("stdout"));
        children.push(c);
        pipes.push((stdin, stdout));
    }
    let read = |out: &mut BufReader<ChildStdout>| {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        line.trim().to_owned()
    };
    let mut first_error = None;
    for (i, (_, out)) in pipes.iter_mut().enumerate() {
        let line = read(out);
        if line != "ready" {
            first_error.get_or_insert(format!("child {i} did not start: {line:?}"));
        }
    }
    let started = first_error.is_none();
    if started {
        for (stdin, _) in &mut pipes {
            let _ = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
        }
    }
    // Closing stdin stops a child that is still waiting (after a failed start).
    let outs: Vec<_> = pipes.into_iter().map(|(_, out)| out).collect();
    let mut reports = Vec::new();
    for (i, mut out) in outs.into_iter().enumerate() {
        if !started {
            break;
        }
        // Every child's line is read, so that none fails to write its report.
        let line = read(&mut out);
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = match f.as_slice() {
            ["done", n, secs, bytes] => n
                .parse()
                .ok()
                .zip(secs.parse().ok())
                .zip(bytes.parse().ok()),
            _ => None,
        };
        match parsed {
            Some(((appends, secs), bytes)) => reports.push(Report {
                appends,
                bytes,
                secs,
            }),
            None => {
                first_error.get_or_insert(format!("child {i}: {line}"));
            }
        }
    }
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait().expect("wait child");
        if !status.success() {
            first_error.get_or_insert(format!("child {i} exited with {status}"));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// The store holds exactly what the children reported: `ops` messages of `bytes` bytes, in
/// the shared sessions only, each session's ids 1..=count in order and its count its last id.
fn verify_convlog(dir: &Path, seed: u64, ops: u64, bytes: u64) -> Result<(), String> {
    let store = Store::builder()
        .read_only(true)
        .open(dir)
        .map_err(|e| format!("read-only open of the store: {e}"))?;
    let shared = shared_sessions(seed);
    let sessions = store.sessions();
    if let Some(s) = sessions.iter().find(|s| !shared.contains(&s.id)) {
        return Err(format!("unexpected session {:?}", s.id));
    }
    let total: u64 = sessions.iter().map(|s| s.count).sum();
    let messages = store.stats().messages;
    if total != ops || messages != ops {
        return Err(format!(
            "the store holds {total} messages ({messages} by stats); the children reported {ops}"
        ));
    }
    let mut read_bytes = 0u64;
    for s in &sessions {
        let mut next = 1u64;
        for e in store.messages(&s.id).raw() {
            let e = e.map_err(|e| format!("read of {}: {e}", s.id))?;
            if e.interaction_id != next {
                return Err(format!(
                    "{}: id {} where {next} was due",
                    s.id, e.interaction_id
                ));
            }
            read_bytes += e.message.len() as u64;
            next += 1;
        }
        if next - 1 != s.count || store.interaction_count(&s.id) != s.count {
            return Err(format!(
                "{}: {} messages read, count {}",
                s.id,
                next - 1,
                s.count
            ));
        }
    }
    if read_bytes != bytes {
        return Err(format!(
            "the store holds {read_bytes} B of messages; the children reported {bytes} B"
        ));
    }
    Ok(())
}

/// As `verify_convlog`, for SQLite: per session, count == max(id) and min(id) == 1 (ids are
/// unique: the primary key), so the ids are 1..=count.
fn verify_sqlite(dir: &Path, seed: u64, ops: u64, bytes: u64) -> Result<(), String> {
    let c = Connection::open(dir.join(sqlite::DB_FILE)).expect("open sqlite");
    let shared = shared_sessions(seed);
    let mut st = c
        .prepare(
            "SELECT session_id, COUNT(*), MIN(interaction_id), MAX(interaction_id), \
             SUM(LENGTH(body)) FROM messages GROUP BY session_id",
        )
        .expect("prepare");
    let rows: Vec<(String, i64, i64, i64, i64)> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| format!("sqlite check: {e}"))?;
    let (mut total, mut total_bytes) = (0u64, 0u64);
    for (s, n, min, max, b) in rows {
        if !shared.contains(&s) {
            return Err(format!("unexpected session {s:?}"));
        }
        if min != 1 || max != n {
            return Err(format!("{s}: {n} rows with ids {min}..={max}"));
        }
        total += n as u64;
        total_bytes += b as u64;
    }
    if total != ops || total_bytes != bytes {
        return Err(format!(
            "the database holds {total} rows, {total_bytes} B; the children reported {ops}, \
             {bytes} B"
        ));
    }
    Ok(())
}

/// One engine's appender in a child.
enum Appender {
    Convlog(Store),
    Sqlite(Connection),
}

impl Appender {
    /// Appends `body` to `session`; returns its interaction id.
    fn append(&self, session: &str, body: &[u8]) -> Result<u64, String> {
        match self {
            Appender::Convlog(store) => store
                .append_raw(session, body)
                .map(|r| r.interaction_id)
                .map_err(|e| format!("append_raw: {e}")),
            Appender::Sqlite(c) => c
                .prepare_cached(INSERT_NEXT)
                .and_then(|mut st| {
                    st.query_row(params![session, body, now_micros()], |r| r.get::<_, i64>(0))
                })
                .map(|id| id as u64)
                .map_err(|e| format!("sqlite insert: {e}")),
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn child_usage() -> ! {
    eprintln!(
        "usage: convlog-bench {CHILD_FLAG} convlog|sqlite buffered|always|normal|full DIR SEED \
         INDEX SECS rowid|without-rowid"
    );
    std::process::exit(2)
}

/// A child (`--mp-child ENGINE MODE DIR SEED INDEX SECS SCHEMA`, the arguments after the
/// flag): builds its messages and opens the store, prints `ready`, waits for a line on stdin,
/// appends for SECS seconds, each message to a random shared session, checking that each
/// session's ids grow, then prints `done APPENDS SECS BYTES`.
pub fn child(argv: &[String]) -> ! {
    let [engine, mode, dir, seed, index, secs, schema] = argv else {
        child_usage()
    };
    let v = Variant::parse(engine, mode).unwrap_or_else(|| child_usage());
    let seed: u64 = seed.parse().unwrap_or_else(|_| child_usage());
    let index: u64 = index.parse().unwrap_or_else(|_| child_usage());
    let run = Duration::from_secs_f64(secs.parse().unwrap_or_else(|_| child_usage()));
    let schema = match schema.as_str() {
        "rowid" => Schema::Rowid,
        "without-rowid" => Schema::WithoutRowid,
        _ => child_usage(),
    };
    let dir = Path::new(dir);
    let corpus = Workload::new(CHILD_MESSAGES, crate::SESSIONS, crate::ZIPF_S, seed).materialize();
    let shared = shared_sessions(seed);
    let mut rng = Rng::new(seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = std::io::stdout().lock();
    let app = match v {
        Variant::ConvBuffered | Variant::ConvAlways => {
            let durability = if v == Variant::ConvAlways {
                Durability::Always
            } else {
                Durability::Buffered
            };
            Store::builder()
                .durability(durability)
                .open(dir)
                .map(Appender::Convlog)
                .map_err(|e| e.to_string())
        }
        Variant::SqlNormal | Variant::SqlFull => {
            sqlite::open_with_busy_timeout(dir, schema, v.sqlite_sync(), BUSY_TIMEOUT)
                .map(Appender::Sqlite)
                .map_err(|e| e.to_string())
        }
    };
    let app = app.unwrap_or_else(|e| fail(&mut out, &format!("open: {e}")));
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 || line.trim() != "go" {
        // The parent gave up (another child failed to start).
        std::process::exit(1);
    }
    let mut last: HashMap<usize, u64> = HashMap::new();
    let start = (index as usize * CHILD_MESSAGES / PROCS) % corpus.len();
    let (mut n, mut bytes) = (0u64, 0u64);
    let t = Instant::now();
    while t.elapsed() < run {
        let s = rng.below(SHARED as u64) as usize;
        let body = corpus.get((start + n as usize) % corpus.len());
        let id = match app.append(&shared[s], body) {
            Ok(id) => id,
            Err(e) => fail(&mut out, &format!("after {n} appends: {e}")),
        };
        let prev = last.insert(s, id).unwrap_or(0);
        if id <= prev {
            fail(
                &mut out,
                &format!("ids of {} went from {prev} to {id}", shared[s]),
            );
        }
        n += 1;
        bytes += body.len() as u64;
    }
    let e = t.elapsed().as_secs_f64();
    drop(app);
    // (A parent that is gone reads no report: nothing to do about a failed write.)
    let _ = writeln!(out, "done {n} {e} {bytes}").and_then(|()| out.flush());
    std::process::exit(0)
}

/// An error for a table cell: no `|`, at most 120 characters.
fn short(e: &str) -> String {
    let e = e.replace('|', "/");
    match e.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &e[..at]),
        None => e,
    }
}

/// A child's failure: reported on stdout (the parent shows it), exit status 1.
fn fail(out: &mut impl Write, what: &str) -> ! {
    let _ = writeln!(out, "failed: {what}").and_then(|()| out.flush());
    std::process::exit(1)
}

/// The table's rows for these results.
pub fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let (shared, excl) = r.single;
    let q = shared / excl;
    rows.push(Row {
        metric: "buffered appends/s, 1 process, 1 message per call, default (multi-process) mode"
            .into(),
        convlog: rate(Some(shared)),
        peer: format!("{} (convlog exclusive(true))", rate(Some(excl))),
        ratio: format!("{q:.2}× default/exclusive throughput"),
        target: "≥ 0.8×".into(),
        met: met(Some(q >= 0.8)),
    });
    let pairs = [
        (0, 1, "buffered", "NORMAL", 3.0, "≥ 3×"),
        (2, 3, "durable", "FULL", 2.0, "≥ 2×"),
    ];
    for (c, p, what, sync, target, shown) in pairs {
        let (conv, peer) = (&r.multi[c], &r.multi[p]);
        let q = conv.rate().zip(peer.rate()).map(|(a, b)| a / b);
        rows.push(Row {
            metric: format!("{what} appends/s, {PROCS} processes, {SHARED} shared sessions, total"),
            convlog: conv.cell(),
            peer: format!(
                "{} ({sync}, 1 txn/append, busy_timeout {} s)",
                peer.cell(),
                BUSY_TIMEOUT.as_secs()
            ),
            ratio: q.map_or_else(String::new, |q| {
                format!("{q:.2}× convlog/sqlite throughput")
            }),
            target: shown.into(),
            met: met(Some(q.is_some_and(|q| q >= target))),
        });
    }
    for (what, (p50, p99), target) in [
        ("same process (a thread appends)", r.tail.same, 1_000.0),
        ("another process appends", r.tail.cross, 50_000.0),
    ] {
        rows.push(Row {
            metric: format!("subscribe wake-up latency, p50 / p99, {what}"),
            convlog: format!("{p50:.0} / {p99:.0} µs"),
            peer: String::new(),
            ratio: String::new(),
            target: format!("about {} ms", target / 1000.0),
            met: met(Some(p50 <= target)),
        });
    }
    let durable = r.multi[2].rate();
    rows.push(Row {
        metric: "raw write+fdatasync loop, 1 process, ops/s (same rounds)".into(),
        convlog: r.multi[2].cell(),
        peer: format!("{} (raw floor, preallocated)", rate(Some(r.floor))),
        ratio: durable.map_or_else(String::new, |d| {
            format!(
                "{:.2}× convlog {PROCS}-process durable/floor throughput",
                d / r.floor
            )
        }),
        target: String::new(),
        met: "",
    });
    for (v, m) in VARIANTS.iter().zip(&r.multi) {
        if let Some(e) = &m.error {
            rows.push(Row {
                metric: format!("{} × {PROCS} processes FAILED: {}", v.name(), short(e)),
                convlog: String::new(),
                peer: String::new(),
                ratio: String::new(),
                target: String::new(),
                met: "",
            });
        }
    }
    rows
}
