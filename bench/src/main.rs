//! convlog-bench: convlog against tuned SQLite on one generated agent workload (issue 5).
//!
//! `cargo run --release -p convlog-bench [-- --quick] [--scale 200k|2m] [--only a,b]
//! [--dir PATH] [--keep] [--duration SECS] [--seed N] [--messages N] [--sqlite-schema S]`
//!
//! Prints one Markdown table (stdout) of both engines and their ratio; progress goes to
//! stderr. See `bench/README.md` for what each line measures.

mod appends;
mod ceilings;
mod compaction;
mod convlog_side;
mod encryption;
mod floor;
mod multiprocess;
mod reopen;
mod sessionops;
mod sqlite;
mod sysinfo;
mod tail_latency;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convlog::Durability;

use crate::sqlite::Schema;
use crate::workload::Workload;

const GROUPS: [&str; 11] = [
    "buffered",
    "durable",
    "floor",
    "reopen",
    "tail",
    "stream",
    "space",
    "sessionops",
    "multiprocess",
    "compaction",
    "encryption",
];
const SESSIONS: usize = 1000;
const ZIPF_S: f64 = 1.1;
const TAIL_N: u64 = 20;
const BATCH: usize = 1000;
const BIG: usize = 2_000_000;

struct Args {
    quick: bool,
    big: bool,
    only: Vec<String>,
    dir: Option<PathBuf>,
    keep: bool,
    duration: Duration,
    seed: u64,
    messages: usize,
    schema: Schema,
}

fn usage() -> ! {
    eprintln!(
        "usage: convlog-bench [--quick] [--scale 200k|2m] [--only {}] [--dir PATH] [--keep]\n\
         \x20                    [--duration SECS] [--seed N] [--messages N]\n\
         \x20                    [--sqlite-schema rowid|without-rowid]\n\
         \n\
         --quick           20k messages, short timed loops, no 2M store (~20 s)\n\
         --scale 200k|2m   2m (default unless --quick) also builds a 2M-message store for reopen\n\
         --only a,b        run only these groups (stores the reads need are still built)\n\
         --dir PATH        where to put data (a fresh subdirectory is made; default ./target)\n\
         --keep            keep the data directory\n\
         --duration SECS   length of each timed durable / floor loop (default 3, quick 0.5)\n\
         --messages N      messages in the main workload (default 200000, quick 20000)",
        GROUPS.join(",")
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        quick: false,
        big: true,
        only: Vec::new(),
        dir: None,
        keep: false,
        duration: Duration::ZERO,
        seed: 0x5eed_c0de,
        messages: 0,
        schema: Schema::Rowid,
    };
    let mut scale: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => args.quick = true,
            "--scale" => scale = Some(value().to_ascii_lowercase()),
            "--only" => {
                args.only = value().split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = args.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    eprintln!("unknown group {bad:?}");
                    usage()
                }
            }
            "--dir" => args.dir = Some(PathBuf::from(value())),
            "--keep" => args.keep = true,
            "--duration" => {
                args.duration = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()))
            }
            "--seed" => args.seed = value().parse().unwrap_or_else(|_| usage()),
            "--messages" => args.messages = value().parse().unwrap_or_else(|_| usage()),
            "--sqlite-schema" => {
                args.schema = match value().as_str() {
                    "rowid" => Schema::Rowid,
                    "without-rowid" => Schema::WithoutRowid,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    args.big = match scale.as_deref() {
        None => !args.quick,
        Some("200k") => false,
        Some("2m") => true,
        Some(_) => usage(),
    };
    if args.duration.is_zero() {
        args.duration = Duration::from_secs_f64(if args.quick { 0.5 } else { 3.0 });
    }
    if args.messages == 0 {
        args.messages = if args.quick { 20_000 } else { 200_000 };
    }
    args
}

/// Progress on stderr, stamped with the time since start.
struct Log(Instant);

impl Log {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!("[{:7.2}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

#[derive(Default)]
struct Results {
    conv_each: Option<f64>,
    conv_batch: Option<f64>,
    sql_each: Option<f64>,
    sql_batched: Option<f64>,
    floor_prealloc: Option<f64>,
    floor_growing: Option<f64>,
    conv_durable: [Option<f64>; 3],
    sql_durable_single: Option<f64>,
    sql_group: [Option<(f64, f64)>; 3],
    ceilings: Option<ceilings::Ceilings>,
    group_floor: Option<appends::GroupLine>,
    conv_group: Option<appends::GroupLine>,
    /// (messages, warm or cold, convlog seconds, sqlite seconds).
    reopen: Vec<(usize, reopen::Cache, f64, f64)>,
    tail: Option<([f64; 2], [f64; 2])>,
    stream: Option<(f64, f64)>,
    index_per_msg: Option<f64>,
    disk: Option<(f64, f64)>,
    sessionops: Option<sessionops::Results>,
    multiprocess: Option<multiprocess::Results>,
    compaction: Option<compaction::Results>,
    encryption: Option<encryption::Results>,
}

const THREADS: [usize; 3] = [1, 4, 8];

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(multiprocess::CHILD_FLAG) {
        multiprocess::child(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(tail_latency::CHILD_FLAG) {
        tail_latency::child(&argv[2..]);
    }
    let args = parse_args();
    let log = Log(Instant::now());
    let want = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);

    let parent = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().expect("cwd").join("target"),
    };
    std::fs::create_dir_all(&parent).expect("create data dir parent");
    let data = tempfile::Builder::new()
        .prefix("convlog-bench-")
        .tempdir_in(&parent)
        .expect("create data dir");
    let root = data.path().to_owned();

    let header = vec![
        format!(
            "convlog-bench, {}, convlog at git {}",
            sysinfo::utc_now(),
            sysinfo::convlog_revision()
        ),
        format!("machine: {}; {}", sysinfo::kernel(), sysinfo::cpu()),
        format!(
            "data dir: {} ({})",
            root.display(),
            sysinfo::filesystem(&root)
        ),
    ];
    for h in &header {
        log.say(h);
    }

    let workload = Workload::new(args.messages, SESSIONS, ZIPF_S, args.seed);
    let corpus = Arc::new(workload.materialize());
    let input = corpus.input_bytes();
    let largest = workload.largest();
    let big_session = workload.sessions[largest].clone();
    let mean_len = input as f64 / corpus.len() as f64;
    let workload_line = format!(
        "workload: {} messages in {SESSIONS} sessions (Zipf s={ZIPF_S}, seed {:#x}), {:.1} MB of JSON, \
         mean {mean_len:.0} B/message; largest session {} messages; 36-byte UUID session ids; \
         sqlite schema: {}",
        corpus.len(),
        args.seed,
        input as f64 / 1e6,
        workload.lengths[largest],
        args.schema.name(),
    );
    log.say(&workload_line);

    let mut r = Results::default();

    // Sync-bound loops first, before the big builds leave dirty pages for the disk to flush.
    if want("floor") || want("durable") {
        appends::sync_bound(
            &args, &want, &workload, &corpus, mean_len, &root, &mut r, &log,
        );
    }

    // Also fdatasync-bound (its durable lines), so before the big builds too.
    if want("multiprocess") {
        r.multiprocess = Some(multiprocess::run(&args, &workload, &corpus, &root, &log));
    }

    // The main stores, which the read measurements use.
    let needs_stores = ["buffered", "reopen", "tail", "stream", "space"]
        .iter()
        .any(|g| want(g));
    let conv_dir = root.join("convlog-main");
    let sql_dir = root.join("sqlite-main");
    if needs_stores {
        let store = convlog_side::open(&conv_dir, Durability::Buffered);
        let t = convlog_side::append_each(&store, &workload.sessions, &corpus);
        drop(store);
        log.say(format!(
            "convlog buffered append_raw (main store): {} ({:.2} s)",
            rate(Some(corpus.len() as f64 / t.as_secs_f64())),
            t.as_secs_f64()
        ));
        let mut app = sqlite::Appender::new(
            sqlite::open(&sql_dir, args.schema, sqlite::Sync::Normal).expect("open sqlite"),
        );
        if want("buffered") {
            let t = sqlite::append_each(&mut app, &workload.sessions, &corpus);
            r.sql_each = Some(corpus.len() as f64 / t.as_secs_f64());
            log.say(format!(
                "sqlite NORMAL 1 txn/append: {} ({:.2} s)",
                rate(r.sql_each),
                t.as_secs_f64()
            ));
        } else {
            sqlite::append_batched(&mut app, &workload.sessions, &corpus, BATCH);
        }
        sqlite::checkpoint(&app.conn);
        drop(app);
    }
    if want("buffered") {
        appends::buffered_rounds(&args, &workload, &corpus, &root, &mut r, &log);
    }

    if want("space") {
        let conv = sysinfo::dir_bytes(&conv_dir, |_| true);
        let sql = sysinfo::dir_bytes(&sql_dir, |n| !n.ends_with("-shm"));
        r.disk = Some((conv as f64 / input as f64, sql as f64 / input as f64));
        let store = convlog::Store::builder()
            .read_only(true)
            .open(&conv_dir)
            .expect("open");
        let st = store.stats();
        r.index_per_msg = Some(st.index_bytes as f64 / st.messages as f64);
        log.say(format!(
            "disk: convlog {conv} B, sqlite {sql} B (db+wal) for {input} B of JSON; index {} B for {} messages",
            st.index_bytes, st.messages
        ));
    }

    if want("tail") || want("stream") {
        let store = convlog::Store::open(&conv_dir).expect("open");
        let conn = sqlite::open(&sql_dir, args.schema, sqlite::Sync::Normal).expect("open");
        if want("tail") {
            let iters = if args.quick { 3000 } else { 30_000 };
            let conv = latencies(iters, || {
                std::hint::black_box(convlog_side::tail(&store, &big_session, TAIL_N));
            });
            let sql = latencies(iters, || {
                std::hint::black_box(sqlite::tail(&conn, &big_session, TAIL_N as i64));
            });
            assert_eq!(
                convlog_side::tail(&store, &big_session, TAIL_N)
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>(),
                sqlite::tail(&conn, &big_session, TAIL_N as i64)
                    .into_iter()
                    .map(|e| e.2)
                    .collect::<Vec<_>>(),
                "both engines return the same tail"
            );
            log.say(format!(
                "tail({TAIL_N}) p50/p99: convlog {:.2}/{:.2} µs, sqlite {:.2}/{:.2} µs",
                conv[0] * 1e6,
                conv[1] * 1e6,
                sql[0] * 1e6,
                sql[1] * 1e6
            ));
            r.tail = Some((conv, sql));
        }
        if want("stream") {
            let reps = if args.quick { 3 } else { 9 };
            let conv = gbps(reps, || convlog_side::stream(&store, &big_session));
            let sql = gbps(reps, || sqlite::stream(&conn, &big_session));
            log.say(format!(
                "stream largest session: convlog {conv:.2} GB/s, sqlite {sql:.2} GB/s"
            ));
            r.stream = Some((conv, sql));
        }
    }

    if want("reopen") {
        let reps = if args.quick { 3 } else { 9 };
        for cache in [reopen::Cache::Warm, reopen::Cache::Cold] {
            let (c, s) = reopen::pair(&conv_dir, &sql_dir, &big_session, reps, cache, &log);
            r.reopen.push((corpus.len(), cache, c, s));
        }
    }
    // Before the 2M build: keyed appends use the corpus; its stores are removed when done.
    if want("sessionops") {
        r.sessionops = Some(sessionops::run(&args, &workload, &corpus, &root, &log));
    }
    if want("encryption") {
        r.encryption = Some(encryption::run(&args, &workload, &corpus, &root, &log));
    }
    drop(corpus);

    // Before the 2M build too (its dirty pages would slow the compaction's writes).
    if want("compaction") {
        r.compaction = Some(compaction::run(&args, &root, &log));
    }

    if want("reopen") && args.big {
        let big = Workload::new(BIG, SESSIONS, ZIPF_S, args.seed);
        let conv_big = root.join("convlog-2m");
        let sql_big = root.join("sqlite-2m");
        build_big(&big, &conv_big, &sql_big, args.schema, &log);
        let reps = if args.quick { 3 } else { 7 };
        let session = &big.sessions[big.largest()];
        let warm = reopen::Cache::Warm;
        let (c, s) = reopen::pair(&conv_big, &sql_big, session, reps, warm, &log);
        r.reopen.push((BIG, warm, c, s));
        if !args.keep {
            remove(&conv_big);
            remove(&sql_big);
        }
    }

    let table = render(&r, workload.lengths[largest]);
    println!("{}\n", header.join("  \n"));
    println!("{workload_line}\n");
    println!("{table}");
    log.say("done");
    if args.keep {
        let kept = data.keep();
        eprintln!("data kept in {}", kept.display());
    }
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn rate(r: Option<f64>) -> String {
    match r {
        None => "skipped".into(),
        Some(r) if r >= 1e6 => format!("{:.2} M/s", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1} k/s", r / 1e3),
        Some(r) => format!("{r:.0} /s"),
    }
}

/// p50 and p99 of `f`'s duration in seconds, after a warm-up.
fn latencies(iters: usize, mut f: impl FnMut()) -> [f64; 2] {
    for _ in 0..iters / 10 {
        f();
    }
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[v.len() * 99 / 100]]
}

/// Median GB/s of `reps` runs of `f` (which returns (messages, bytes)), after a warm-up.
fn gbps(reps: usize, mut f: impl FnMut() -> (u64, u64)) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let (_, bytes) = f();
            bytes as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Builds the 2M-message stores for the reopen measurement (not timed): convlog with one
/// `append_raw` per message, SQLite with 1000 appends per transaction.
fn build_big(w: &Workload, conv: &Path, sql: &Path, schema: Schema, log: &Log) {
    log.say(format!(
        "building {}-message stores (largest session {} messages)...",
        w.len(),
        w.lengths[w.largest()]
    ));
    let store = convlog_side::open(conv, Durability::Buffered);
    let mut app = sqlite::Appender::new(
        sqlite::open(sql, schema, sqlite::Sync::Normal).expect("open sqlite"),
    );
    let mut g = w.generator();
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    let mut sess = Vec::new();
    let (mut tc, mut ts) = (Duration::ZERO, Duration::ZERO);
    loop {
        buf.clear();
        ends.clear();
        sess.clear();
        while sess.len() < BATCH {
            match g.next_into(&mut buf) {
                Some(s) => {
                    sess.push(s);
                    ends.push(buf.len());
                }
                None => break,
            }
        }
        if sess.is_empty() {
            break;
        }
        let body = |i: usize| &buf[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
        let t = Instant::now();
        for (i, &s) in sess.iter().enumerate() {
            store
                .append_raw(&w.sessions[s as usize], body(i))
                .expect("append");
        }
        tc += t.elapsed();
        let t = Instant::now();
        app.begin().expect("begin");
        for (i, &s) in sess.iter().enumerate() {
            app.insert(u32::from(s), &w.sessions[s as usize], body(i))
                .expect("insert");
        }
        app.commit().expect("commit");
        ts += t.elapsed();
    }
    drop(store);
    let t = Instant::now();
    sqlite::checkpoint(&app.conn);
    drop(app);
    ts += t.elapsed();
    log.say(format!(
        "built: convlog append_raw {:.1} s ({}), sqlite batched {:.1} s ({})",
        tc.as_secs_f64(),
        rate(Some(w.len() as f64 / tc.as_secs_f64())),
        ts.as_secs_f64(),
        rate(Some(w.len() as f64 / ts.as_secs_f64()))
    ));
}

struct Row {
    metric: String,
    convlog: String,
    peer: String,
    ratio: String,
    target: String,
    met: &'static str,
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

fn render(r: &Results, largest: u64) -> String {
    let mut rows = Vec::new();
    let x = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let xs = |v: Option<f64>, unit: &str| v.map_or_else(String::new, |v| format!("{v:.2}× {unit}"));
    let thr = "convlog/sqlite throughput";
    let tim = "convlog/sqlite time";

    let q = x(r.conv_each, r.sql_batched);
    rows.push(Row {
        metric: "buffered appends/s, 1 thread, 1 message per call".into(),
        convlog: rate(r.conv_each),
        peer: format!("{} (NORMAL, {BATCH} appends/txn)", rate(r.sql_batched)),
        ratio: xs(q, thr),
        target: "≥ 4×".into(),
        met: met(q.map(|q| q >= 4.0)),
    });
    rows.push(Row {
        metric: "buffered appends/s, 1 thread, 1 message per call".into(),
        convlog: rate(r.conv_each),
        peer: format!("{} (NORMAL, 1 txn/append)", rate(r.sql_each)),
        ratio: xs(x(r.conv_each, r.sql_each), thr),
        target: String::new(),
        met: "",
    });
    if let Some(c) = r.ceilings {
        rows.push(Row {
            metric: "buffered appends/s vs (a) CPU ceiling: validate, frame, CRC, copy".into(),
            convlog: rate(r.conv_each),
            peer: rate(Some(c.cpu)),
            ratio: xs(x(r.conv_each, Some(c.cpu)), "convlog/ceiling"),
            target: String::new(),
            met: "",
        });
        rows.push(Row {
            metric: "buffered appends/s vs (b) page-cache ceiling: 1 MiB sequential writes".into(),
            convlog: rate(r.conv_each),
            peer: format!(
                "{} ({:.0} MB/s)",
                rate(Some(c.page_cache)),
                c.page_cache_bytes / 1e6
            ),
            ratio: xs(x(r.conv_each, Some(c.page_cache)), "convlog/ceiling"),
            target: String::new(),
            met: "",
        });
        let t = c.target();
        rows.push(Row {
            metric: "buffered appends/s vs min(40% of (a), 80% of (b))".into(),
            convlog: rate(r.conv_each),
            peer: rate(Some(t)),
            ratio: xs(x(r.conv_each, Some(t)), "convlog/bar"),
            target: "≥ 1×".into(),
            met: met(r.conv_each.map(|v| v >= t)),
        });
    }
    rows.push(Row {
        metric: format!("buffered appends/s, batches of ≤{BATCH} (convlog: one session per batch)"),
        convlog: rate(r.conv_batch),
        peer: format!("{} (NORMAL, {BATCH} appends/txn)", rate(r.sql_batched)),
        ratio: xs(x(r.conv_batch, r.sql_batched), thr),
        target: String::new(),
        met: "",
    });
    rows.push(Row {
        metric: "raw write+fdatasync loop, ops/s (the floor)".into(),
        convlog: String::new(),
        peer: format!(
            "{} preallocated; {} growing file",
            rate(r.floor_prealloc),
            rate(r.floor_growing)
        ),
        ratio: String::new(),
        target: String::new(),
        met: "",
    });
    let q = x(r.conv_durable[0], r.floor_prealloc);
    rows.push(Row {
        metric: "durable appends/s, 1 writer, vs the floor".into(),
        convlog: rate(r.conv_durable[0]),
        peer: format!("{} (raw floor, preallocated)", rate(r.floor_prealloc)),
        ratio: xs(q, "convlog/floor throughput"),
        target: "≥ 0.91× (floor within 1.1×)".into(),
        met: met(q.map(|q| q >= 1.0 / 1.1)),
    });
    rows.push(Row {
        metric: "durable appends/s, 1 writer".into(),
        convlog: rate(r.conv_durable[0]),
        peer: format!("{} (FULL, 1 txn/append)", rate(r.sql_durable_single)),
        ratio: xs(x(r.conv_durable[0], r.sql_durable_single), thr),
        target: String::new(),
        met: "",
    });
    for (k, threads) in THREADS.iter().enumerate().skip(1) {
        let g = r.sql_group[k];
        let q = x(r.conv_durable[k], g.map(|g| g.0));
        rows.push(Row {
            metric: format!("durable appends/s, {threads} writers"),
            convlog: rate(r.conv_durable[k]),
            peer: format!(
                "{} (FULL, group commit{})",
                rate(g.map(|g| g.0)),
                g.map_or(String::new(), |g| format!(", {:.1}/txn", g.1))
            ),
            ratio: xs(q, thr),
            target: if *threads == 8 {
                "≥ 2×".into()
            } else {
                String::new()
            },
            met: if *threads == 8 {
                met(q.map(|q| q >= 2.0))
            } else {
                ""
            },
        });
    }
    if let (Some(f), Some(c)) = (r.group_floor, r.conv_group) {
        let n = appends::GROUP_THREADS;
        rows.push(Row {
            metric: format!("durable appends/s, {n} writers, vs the group-commit floor"),
            convlog: format!(
                "{} ({:.1}/sync, p99 {:.2} ms)",
                rate(Some(c.rate)),
                c.group,
                c.p99 * 1e3
            ),
            peer: format!(
                "{} ({:.1}/sync, p99 {:.2} ms: {n} threads, write+fdatasync, shared syncs)",
                rate(Some(f.rate)),
                f.group,
                f.p99 * 1e3
            ),
            ratio: xs(Some(c.rate / f.rate), "convlog/floor throughput"),
            target: "≥ 0.8×".into(),
            met: met(Some(c.rate >= 0.8 * f.rate)),
        });
    }
    for &(n, cache, c, s) in &r.reopen {
        let label = if n >= BIG {
            "2M".to_owned()
        } else {
            format!("{}k", n / 1000)
        };
        let (target, ok) = match (cache, n >= BIG) {
            (reopen::Cache::Warm, false) => ("≤ 1 ms".to_owned(), c <= 1e-3),
            (reopen::Cache::Warm, true) => ("≤ 20 ms".to_owned(), c <= 20e-3),
            (reopen::Cache::Cold, _) => ("≤ 3× sqlite".to_owned(), c <= 3.0 * s),
        };
        rows.push(Row {
            metric: format!(
                "reopen + first tail({TAIL_N}), {label} messages, {}",
                cache.name()
            ),
            convlog: format!("{:.3} ms", c * 1e3),
            peer: format!("{:.3} ms", s * 1e3),
            ratio: xs(Some(c / s), tim),
            target,
            met: met(Some(ok)),
        });
    }
    if r.reopen.iter().all(|&(n, ..)| n < BIG) {
        rows.push(Row {
            metric: format!("reopen + first tail({TAIL_N}), 2M messages, warm"),
            convlog: "skipped".into(),
            peer: "skipped".into(),
            ratio: String::new(),
            target: "≤ 20 ms".into(),
            met: "",
        });
    }
    for (i, p) in ["p50", "p99"].iter().enumerate() {
        let v = r.tail.map(|(c, s)| (c[i], s[i]));
        rows.push(Row {
            metric: format!("tail({TAIL_N}) of the largest session ({largest} msgs), {p}"),
            convlog: v.map_or("skipped".into(), |v| format!("{:.2} µs", v.0 * 1e6)),
            peer: v.map_or("skipped".into(), |v| format!("{:.2} µs", v.1 * 1e6)),
            ratio: xs(v.map(|v| v.0 / v.1), tim),
            target: "≤ 0.5×".into(),
            met: met(v.map(|v| v.0 / v.1 <= 0.5)),
        });
    }
    let v = r.stream;
    rows.push(Row {
        metric: "stream the largest session, GB/s".into(),
        convlog: v.map_or("skipped".into(), |v| format!("{:.2} GB/s", v.0)),
        peer: v.map_or("skipped".into(), |v| format!("{:.2} GB/s", v.1)),
        ratio: xs(v.map(|v| v.0 / v.1), thr),
        target: "≥ 2×".into(),
        met: met(v.map(|v| v.0 / v.1 >= 2.0)),
    });
    rows.push(Row {
        metric: "index bytes / message (in memory)".into(),
        convlog: r
            .index_per_msg
            .map_or("skipped".into(), |v| format!("{v:.2} B")),
        peer: "n/a (on-disk B-tree)".into(),
        ratio: String::new(),
        target: "≤ 16 B".into(),
        met: met(r.index_per_msg.map(|v| v <= 16.0)),
    });
    let v = r.disk;
    rows.push(Row {
        metric: "disk bytes / input JSON bytes".into(),
        convlog: v.map_or("skipped".into(), |v| format!("{:.3}", v.0)),
        peer: v.map_or("skipped".into(), |v| format!("{:.3} (db+wal)", v.1)),
        ratio: xs(v.map(|v| v.0 / v.1), "convlog/sqlite size"),
        target: "≤ 1.06".into(),
        met: met(v.map(|v| v.0 <= 1.06)),
    });
    if let Some(s) = &r.sessionops {
        rows.extend(sessionops::rows(s));
    }
    if let Some(m) = &r.multiprocess {
        rows.extend(multiprocess::rows(m));
    }
    if let Some(c) = &r.compaction {
        rows.extend(compaction::rows(c));
    }
    if let Some(e) = &r.encryption {
        rows.extend(encryption::rows(e));
    }

    let head = Row {
        metric: "metric".into(),
        convlog: "convlog".into(),
        peer: "sqlite (variant) / baseline".into(),
        ratio: "ratio".into(),
        target: "target".into(),
        met: "met?",
    };
    let cells = |r: &Row| {
        [
            r.metric.clone(),
            r.convlog.clone(),
            r.peer.clone(),
            r.ratio.clone(),
            r.target.clone(),
            r.met.to_owned(),
        ]
    };
    let all: Vec<[String; 6]> = std::iter::once(&head).chain(&rows).map(cells).collect();
    let mut w = [0usize; 6];
    for row in &all {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |row: &[String; 6]| {
        let mut s = String::from("|");
        for (i, c) in row.iter().enumerate() {
            s.push(' ');
            s.push_str(c);
            s.push_str(&" ".repeat(w[i] - c.chars().count()));
            s.push_str(" |");
        }
        s
    };
    let mut out = vec![line(&all[0])];
    out.push(format!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    out.extend(all[1..].iter().map(line));
    out.join("\n")
}
