//! The SQLite peer, tuned as issue 5 describes: WAL, prepared statements, one table keyed by
//! `(session_id, interaction_id)`, next interaction id kept in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::workload::Corpus;

/// How the table is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// A rowid table plus the primary-key index.
    Rowid,
    /// A clustered `WITHOUT ROWID` table.
    WithoutRowid,
}

impl Schema {
    pub fn name(self) -> &'static str {
        match self {
            Schema::Rowid => "rowid table + PK index",
            Schema::WithoutRowid => "WITHOUT ROWID",
        }
    }
}

/// `synchronous=NORMAL` (commits survive a process crash, not a power cut) or `FULL`
/// (every commit is fsynced: durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Normal,
    Full,
}

pub const DB_FILE: &str = "messages.db";
const INSERT: &str =
    "INSERT INTO messages (session_id, interaction_id, body, ts) VALUES (?1, ?2, ?3, ?4)";
const TAIL: &str = "SELECT interaction_id, ts, body FROM messages WHERE session_id = ?1 ORDER BY interaction_id DESC LIMIT ?2";
const DELETE: &str = "DELETE FROM messages WHERE session_id = ?1";
const STREAM: &str =
    "SELECT interaction_id, ts, body FROM messages WHERE session_id = ?1 ORDER BY interaction_id";

/// Opens (creating) the database in `dir` with the tuning pragmas.
pub fn open(dir: &Path, schema: Schema, sync: Sync) -> rusqlite::Result<Connection> {
    std::fs::create_dir_all(dir).expect("create sqlite dir");
    tune(Connection::open(dir.join(DB_FILE))?, schema, sync)
}

/// As [`open`], with the busy timeout set first, for a database other processes write at
/// the same time (it waits that long for their locks, sleeping in SQLite's busy handler).
pub fn open_with_busy_timeout(
    dir: &Path,
    schema: Schema,
    sync: Sync,
    busy: Duration,
) -> rusqlite::Result<Connection> {
    let c = Connection::open(dir.join(DB_FILE))?;
    c.busy_timeout(busy)?;
    tune(c, schema, sync)
}

/// The tuning pragmas, and the table made if missing.
fn tune(c: Connection, schema: Schema, sync: Sync) -> rusqlite::Result<Connection> {
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    c.execute_batch(match sync {
        Sync::Normal => "PRAGMA synchronous=NORMAL;",
        Sync::Full => "PRAGMA synchronous=FULL;",
    })?;
    c.execute_batch("PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;")?;
    if let Ok(extra) = std::env::var("CONVLOG_BENCH_SQLITE_PRAGMAS") {
        c.execute_batch(&extra)?;
    }
    let without = match schema {
        Schema::Rowid => "",
        Schema::WithoutRowid => " WITHOUT ROWID",
    };
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS messages (
            session_id TEXT NOT NULL,
            interaction_id INTEGER NOT NULL,
            body BLOB NOT NULL,
            ts INTEGER NOT NULL,
            PRIMARY KEY (session_id, interaction_id)
        ){without};"
    ))?;
    c.set_prepared_statement_cache_capacity(16);
    Ok(c)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// An appender: one connection, next ids in memory.
pub struct Appender {
    pub conn: Connection,
    next: HashMap<u32, i64>,
}

impl Appender {
    pub fn new(conn: Connection) -> Appender {
        Appender {
            conn,
            next: HashMap::new(),
        }
    }

    /// Inserts one row (autocommit: one transaction per append unless inside `begin`).
    pub fn insert(&mut self, key: u32, session: &str, body: &[u8]) -> rusqlite::Result<()> {
        let id = self.next.entry(key).or_insert(0);
        *id += 1;
        let mut st = self.conn.prepare_cached(INSERT)?;
        st.execute(params![session, *id, body, now_micros()])?;
        Ok(())
    }

    pub fn begin(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(())
    }

    pub fn commit(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

/// Appends every message of `corpus`, one transaction per append. Returns the elapsed time.
pub fn append_each(app: &mut Appender, sessions: &[String], corpus: &Corpus) -> Duration {
    let t = Instant::now();
    for i in 0..corpus.len() {
        let s = corpus.session[i];
        app.insert(u32::from(s), &sessions[s as usize], corpus.get(i))
            .expect("sqlite insert");
    }
    t.elapsed()
}

/// Appends every message of `corpus`, `batch` appends per transaction.
pub fn append_batched(
    app: &mut Appender,
    sessions: &[String],
    corpus: &Corpus,
    batch: usize,
) -> Duration {
    let t = Instant::now();
    for chunk_start in (0..corpus.len()).step_by(batch) {
        app.begin().expect("begin");
        for i in chunk_start..(chunk_start + batch).min(corpus.len()) {
            let s = corpus.session[i];
            app.insert(u32::from(s), &sessions[s as usize], corpus.get(i))
                .expect("sqlite insert");
        }
        app.commit().expect("commit");
    }
    t.elapsed()
}

/// Durable appends (`synchronous=FULL`) from one thread, one transaction each, for `run`.
/// Returns (appends, elapsed).
pub fn durable_single(
    dir: &Path,
    schema: Schema,
    names: &[String],
    corpus: &Corpus,
    run: Duration,
) -> (u64, Duration) {
    let mut app = Appender::new(open(dir, schema, Sync::Full).expect("open sqlite"));
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < run {
        let i = n as usize % corpus.len();
        let s = corpus.session[i];
        app.insert(u32::from(s), &names[s as usize], corpus.get(i))
            .expect("insert");
        n += 1;
    }
    (n, t.elapsed())
}

struct Request {
    thread: u8,
    msg: u32,
}

/// Durable appends from `threads` threads through a group-commit writer: one thread owns a
/// `synchronous=FULL` connection, drains everything queued, commits it in one transaction,
/// then acknowledges each request. Thread `t` appends to the sessions `names[t]`.
pub fn durable_group_commit(
    dir: &Path,
    schema: Schema,
    names: Arc<Vec<Vec<String>>>,
    corpus: Arc<Corpus>,
    threads: usize,
    run: Duration,
) -> (u64, Duration, f64) {
    let (tx, rx) = mpsc::channel::<Request>();
    let mut acks = Vec::new();
    let mut ack_rx = Vec::new();
    for _ in 0..threads {
        let (a, b) = mpsc::channel::<()>();
        acks.push(a);
        ack_rx.push(b);
    }
    let conn = open(dir, schema, Sync::Full).expect("open sqlite");
    let writer = {
        let (names, corpus) = (names.clone(), corpus.clone());
        std::thread::spawn(move || {
            let mut app = Appender::new(conn);
            let mut queued = Vec::new();
            let (mut commits, mut rows) = (0u64, 0u64);
            while let Ok(first) = rx.recv() {
                queued.clear();
                queued.push(first);
                while let Ok(r) = rx.try_recv() {
                    queued.push(r);
                }
                app.begin().expect("begin");
                for r in &queued {
                    let s = corpus.session[r.msg as usize];
                    let key = (u32::from(r.thread) << 16) | u32::from(s);
                    app.insert(
                        key,
                        &names[r.thread as usize][s as usize],
                        corpus.get(r.msg as usize),
                    )
                    .expect("insert");
                }
                app.commit().expect("commit");
                commits += 1;
                rows += queued.len() as u64;
                for r in &queued {
                    let _ = acks[r.thread as usize].send(());
                }
            }
            (commits, rows)
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let clients: Vec<_> = ack_rx
        .into_iter()
        .enumerate()
        .map(|(th, ack)| {
            let (tx, stop, corpus) = (tx.clone(), stop.clone(), corpus.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let msg = ((th as u64 + n * threads as u64) % corpus.len() as u64) as u32;
                    tx.send(Request {
                        thread: th as u8,
                        msg,
                    })
                    .expect("writer alive");
                    ack.recv().expect("ack");
                    n += 1;
                }
                n
            })
        })
        .collect();
    drop(tx);
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let elapsed = t.elapsed();
    let (commits, rows) = writer.join().expect("writer");
    (total, elapsed, rows as f64 / commits.max(1) as f64)
}

/// The last `n` messages of `session` (id, timestamp, body), oldest first.
pub fn tail(c: &Connection, session: &str, n: i64) -> Vec<(i64, i64, Vec<u8>)> {
    let mut st = c.prepare_cached(TAIL).expect("prepare tail");
    let mut rows = st.query(params![session, n]).expect("query");
    let mut out = Vec::with_capacity(n as usize);
    while let Some(r) = rows.next().expect("row") {
        let id: i64 = r.get(0).expect("id");
        let ts: i64 = r.get(1).expect("ts");
        let body = r.get_ref(2).expect("col").as_blob().expect("blob").to_vec();
        out.push((id, ts, body));
    }
    out.reverse();
    out
}

/// Streams a whole session in order, reading each body in place (no copy); returns
/// (messages, bytes).
pub fn stream(c: &Connection, session: &str) -> (u64, u64) {
    let mut st = c.prepare_cached(STREAM).expect("prepare stream");
    let mut rows = st.query(params![session]).expect("query");
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(r) = rows.next().expect("row") {
        let id: i64 = r.get(0).expect("id");
        let ts: i64 = r.get(1).expect("ts");
        let b = r.get_ref(2).expect("col").as_blob().expect("blob");
        std::hint::black_box((id, ts, b.first()));
        bytes += b.len() as u64;
        n += 1;
    }
    (n, bytes)
}

/// Opens an existing database the way a reader process would, and reads a tail.
pub fn reopen_and_tail(dir: &Path, session: &str, n: i64) -> Vec<(i64, i64, Vec<u8>)> {
    let c = Connection::open(dir.join(DB_FILE)).expect("open");
    tail(&c, session, n)
}

/// Makes `session` exactly `msgs` (interaction ids `1..=n`) in one transaction: DELETE its
/// rows, then INSERT the new ones.
pub fn replace(c: &Connection, session: &str, msgs: &[&[u8]]) {
    c.prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .expect("begin");
    c.prepare_cached(DELETE)
        .and_then(|mut s| s.execute(params![session]))
        .expect("delete");
    let mut st = c.prepare_cached(INSERT).expect("prepare insert");
    let ts = now_micros();
    for (i, body) in msgs.iter().enumerate() {
        st.execute(params![session, i as i64 + 1, body, ts])
            .expect("insert");
    }
    drop(st);
    c.prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .expect("commit");
}

/// Checkpoints the WAL into the database and truncates it.
pub fn checkpoint(c: &Connection) {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}
