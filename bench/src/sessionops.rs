//! The session operations (`--only sessionops`): fork, window, replace and keyed appends.
//!
//! Fork, window and replace run on stores of their own holding one long chat of small
//! (~200 B) messages, built untimed with `append_batch_raw`, so that a 1M-message session is
//! quick to make. Keyed appends use the main workload, like the buffered-append line.

use std::path::Path;
use std::time::Duration;

use convlog::{Durability, Store, WindowSpec};

use crate::workload::{self, Corpus, Workload};
use crate::{Args, Log, Row, convlog_side, latencies, median, met, rate, remove, sqlite};

/// Forks timed per source size, each into a fresh destination.
const FORKS: usize = 51;
/// Fork + append pairs timed per source size (the source's first change after a fork).
const AFTER_FORK: usize = 21;
const WINDOW_N: u64 = 50;
const WINDOW_BYTES: u64 = 16_000;
/// A byte budget that fits in the window's first read of 64 messages (16 000 B does not).
const WINDOW_BYTES_SHORT: u64 = 12_000;
const REPLACE_N: usize = 100;

/// One source size's fork figures (seconds, bytes).
struct Fork {
    messages: usize,
    p50: f64,
    bytes: f64,
    lsns: f64,
    /// p50 of an append to the source just after a fork, and of the append after that.
    append_after: f64,
    append_next: f64,
}

/// One window spec's figures on the largest source.
struct Window {
    label: String,
    returned: usize,
    p50: f64,
}

pub struct Results {
    forks: Vec<Fork>,
    windows: Vec<Window>,
    /// p50 of `tail(WINDOW_N)` of the same session.
    tail: f64,
    /// Messages in the session the windows read.
    window_session: usize,
    /// p50 seconds: convlog, SQLite.
    replace: (f64, f64),
    /// Buffered appends/s: plain `append_raw`, keyed (medians over the rounds).
    keyed: (f64, f64),
    /// keyed/plain of each round (its two stores' chunks interleaved): median, lowest,
    /// highest.
    keyed_ratio: (f64, f64, f64),
    /// Index bytes per message after the appends: plain, keyed.
    key_index: (f64, f64),
}

/// Source session sizes: 1k / 100k / 1M (quick: 1k / 10k / 100k).
fn sizes(quick: bool) -> [usize; 3] {
    if quick {
        [1_000, 10_000, 100_000]
    } else {
        [1_000, 100_000, 1_000_000]
    }
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub fn run(args: &Args, workload: &Workload, corpus: &Corpus, root: &Path, log: &Log) -> Results {
    let sizes = sizes(args.quick);
    let largest = sizes[2];
    let chat = Corpus::small_chat(largest, args.seed);
    log.say(format!(
        "sessionops: small chat of {} messages, mean {:.0} B",
        chat.len(),
        chat.input_bytes() as f64 / chat.len() as f64
    ));
    let ids = workload::uuids(1 + FORKS + AFTER_FORK, args.seed ^ 0xf0);
    let mut forks = Vec::new();
    let mut windows = (Vec::new(), 0.0);
    for &n in &sizes {
        let dir = root.join(format!("sessionops-fork-{n}"));
        let store = convlog_side::open(&dir, Durability::Buffered);
        convlog_side::fill(&store, &ids[0], &chat, n);
        let mut f = fork_times(&store, &dir, &ids, n, log);
        if n == largest {
            windows = window_times(&store, &ids[0], args.quick, log);
        }
        (f.append_after, f.append_next) = append_after_fork(&store, &ids, &chat, log);
        forks.push(f);
        drop(store);
        remove(&dir);
    }
    let replace = replace_times(args, &chat, &ids[0], root, log);
    drop(chat);
    let (keyed, keyed_ratio, key_index) = keyed_rounds(args, workload, corpus, root, log);
    Results {
        forks,
        windows: windows.0,
        tail: windows.1,
        window_session: largest,
        replace,
        keyed,
        keyed_ratio,
        key_index,
    }
}

/// Times `FORKS` forks of the whole of `ids[0]` (holding `n` messages), each into a fresh
/// destination, and what they add to the store.
fn fork_times(store: &Store, dir: &Path, ids: &[String], n: usize, log: &Log) -> Fork {
    let (bytes0, lsn0) = (convlog_side::segment_bytes(dir), store.last_lsn().0);
    let files0 = crate::sysinfo::dir_bytes(dir, |f| f.ends_with(".seg"));
    let times: Vec<f64> = ids[1..=FORKS]
        .iter()
        .map(|dst| convlog_side::fork(store, &ids[0], dst).as_secs_f64())
        .collect();
    let (bytes1, lsn1) = (convlog_side::segment_bytes(dir), store.last_lsn().0);
    let files1 = crate::sysinfo::dir_bytes(dir, |f| f.ends_with(".seg"));
    let tail = |s: &str| -> Vec<(u64, Vec<u8>)> {
        convlog_side::tail(store, s, 3)
            .into_iter()
            .map(|e| (e.interaction_id, e.message))
            .collect()
    };
    assert_eq!(
        tail(&ids[FORKS]),
        tail(&ids[0]),
        "a fork reads as its source"
    );
    let f = Fork {
        messages: n,
        p50: median(times),
        bytes: (bytes1 - bytes0) as f64 / FORKS as f64,
        lsns: (lsn1 - lsn0) as f64 / FORKS as f64,
        append_after: 0.0,
        append_next: 0.0,
    };
    log.say(format!(
        "fork of a {n}-message session, {FORKS} forks: p50 {:.2} µs; {:.1} B of records and \
         {:.2} LSNs per fork (segment files {files0} → {files1} B, preallocated)",
        f.p50 * 1e6,
        f.bytes,
        f.lsns
    ));
    f
}

/// p50 of an append to the source right after a fork of it (its first change since: it
/// copies its block table then) and of the append after that.
fn append_after_fork(store: &Store, ids: &[String], chat: &Corpus, log: &Log) -> (f64, f64) {
    let src = &ids[0];
    let msg = chat.get(chat.len() - 1);
    let append = || {
        let t = std::time::Instant::now();
        store.append_raw(src, msg).expect("append_raw");
        t.elapsed().as_secs_f64()
    };
    let (mut after, mut next) = (Vec::new(), Vec::new());
    for dst in &ids[1 + FORKS..] {
        convlog_side::fork(store, src, dst);
        after.push(append());
        next.push(append());
    }
    let (after, next) = (median(after), median(next));
    log.say(format!(
        "append to the source of {} messages just after a fork: p50 {:.2} µs; the next \
         append: {:.2} µs",
        store.interaction_count(src),
        after * 1e6,
        next * 1e6
    ));
    (after, next)
}

/// p50 of each window spec on `session`, and of `tail(WINDOW_N)` of it.
fn window_times(store: &Store, session: &str, quick: bool, log: &Log) -> (Vec<Window>, f64) {
    let iters = if quick { 2_000 } else { 20_000 };
    let specs = [
        (
            format!("max_messages({WINDOW_N})"),
            WindowSpec::new().max_messages(WINDOW_N),
        ),
        (
            format!("max_bytes({WINDOW_BYTES})"),
            WindowSpec::new().max_bytes(WINDOW_BYTES),
        ),
        (
            format!("max_bytes({WINDOW_BYTES_SHORT})"),
            WindowSpec::new().max_bytes(WINDOW_BYTES_SHORT),
        ),
    ];
    let mut out = Vec::new();
    for (label, spec) in specs {
        let got = convlog_side::window(store, session, &spec);
        let first: serde_json::Value = serde_json::from_slice(&got[0].message).expect("json");
        assert_eq!(first["role"], "user", "a window starts at a user message");
        let bytes: usize = got.iter().map(|e| e.message.len()).sum();
        let p50 = latencies(iters, || {
            std::hint::black_box(convlog_side::window(store, session, &spec));
        })[0];
        log.say(format!(
            "window {label}: {} messages, {bytes} B; p50 {:.2} µs",
            got.len(),
            p50 * 1e6
        ));
        out.push(Window {
            label,
            returned: got.len(),
            p50,
        });
    }
    let tail = latencies(iters, || {
        std::hint::black_box(convlog_side::tail(store, session, WINDOW_N));
    })[0];
    log.say(format!("tail({WINDOW_N}): p50 {:.2} µs", tail * 1e6));
    (out, tail)
}

/// p50 of replacing a `REPLACE_N`-message session with `REPLACE_N` other messages: convlog
/// `replace` (conditional on the next id), SQLite DELETE + INSERTs in one transaction.
fn replace_times(args: &Args, chat: &Corpus, session: &str, root: &Path, log: &Log) -> (f64, f64) {
    let iters = if args.quick { 300 } else { 2_000 };
    let lists: [Vec<&[u8]>; 2] = [
        (0..REPLACE_N).map(|i| chat.get(i)).collect(),
        (REPLACE_N..2 * REPLACE_N).map(|i| chat.get(i)).collect(),
    ];
    let dir = root.join("sessionops-replace-convlog");
    let store = convlog_side::open(&dir, Durability::Buffered);
    convlog_side::replace(&store, session, 1, &lists[0]);
    let mut k = 0;
    let conv = latencies(iters, || {
        k ^= 1;
        convlog_side::replace(&store, session, REPLACE_N as u64 + 1, &lists[k]);
    });
    assert_eq!(store.interaction_count(session), REPLACE_N as u64);
    drop(store);
    remove(&dir);
    let dir = root.join("sessionops-replace-sqlite");
    let conn = sqlite::open(&dir, args.schema, sqlite::Sync::Normal).expect("open sqlite");
    sqlite::replace(&conn, session, &lists[0]);
    let sql = latencies(iters, || {
        k ^= 1;
        sqlite::replace(&conn, session, &lists[k]);
    });
    assert_eq!(
        sqlite::tail(&conn, session, 1000).len(),
        REPLACE_N,
        "the session holds exactly the new rows"
    );
    drop(conn);
    remove(&dir);
    log.say(format!(
        "replace {REPLACE_N} with {REPLACE_N}: convlog p50/p99 {:.1}/{:.1} µs, sqlite NORMAL \
         {:.1}/{:.1} µs",
        conv[0] * 1e6,
        conv[1] * 1e6,
        sql[0] * 1e6,
        sql[1] * 1e6
    ));
    (conv[0], sql[0])
}

/// What [`keyed_rounds`] measures: median rates (plain, keyed), the rounds' keyed/plain
/// ratio (median, lowest, highest), index bytes per message (plain, keyed).
type KeyedRounds = ((f64, f64), (f64, f64, f64), (f64, f64));

/// Messages per chunk of [`keyed_rounds`]: small enough that the two stores see the same
/// moment of the machine, large enough that the clock's cost is noise.
const KEYED_CHUNK: usize = 1000;

/// Buffered appends of the whole workload, one message per call, plain (`append_raw`) and
/// keyed (a fresh 36-byte key per message), in rounds (5, or 1 with `--quick`), each into
/// two fresh stores open side by side. A round goes through the workload in chunks of
/// [`KEYED_CHUNK`] messages, each chunk appended to one store then to the other (the order
/// alternates), and times each store's chunks: both see the same moments of a shared
/// machine, whose speed drifts by ±15% between passes of a second. Returns the median rates,
/// the median, lowest and highest of the rounds' keyed/plain ratios, and the index bytes per
/// message of the last round.
fn keyed_rounds(
    args: &Args,
    workload: &Workload,
    corpus: &Corpus,
    root: &Path,
    log: &Log,
) -> KeyedRounds {
    let rounds = if args.quick { 1 } else { 5 };
    let keys = workload::uuids(corpus.len(), args.seed ^ 0x6b);
    let per_sec = |t: Duration| corpus.len() as f64 / t.as_secs_f64();
    let (mut plain, mut keyed) = (Vec::new(), Vec::new());
    let mut index = (0.0, 0.0);
    for round in 0..rounds {
        let dirs = [0, 1].map(|v| root.join(format!("sessionops-keyed-{v}")));
        let stores = dirs
            .clone()
            .map(|d| convlog_side::open(&d, Durability::Buffered));
        let mut times = [Duration::ZERO; 2];
        for (c, start) in (0..corpus.len()).step_by(KEYED_CHUNK).enumerate() {
            let chunk = start..(start + KEYED_CHUNK).min(corpus.len());
            let first = (c + round) % 2;
            for variant in [first, 1 - first] {
                let t = std::time::Instant::now();
                let store = &stores[variant];
                for i in chunk.clone() {
                    let session = &workload.sessions[corpus.session[i] as usize];
                    if variant == 0 {
                        store
                            .append_raw(session, corpus.get(i))
                            .expect("append_raw");
                    } else {
                        store
                            .append_batch_raw_with_key(session, &keys[i], &[corpus.get(i)])
                            .expect("append_batch_raw_with_key");
                    }
                }
                times[variant] += t.elapsed();
            }
        }
        let per_msg = |store: &Store| {
            let st = store.stats();
            st.index_bytes as f64 / st.messages as f64
        };
        index = (per_msg(&stores[0]), per_msg(&stores[1]));
        plain.push(per_sec(times[0]));
        keyed.push(per_sec(times[1]));
        drop(stores);
        dirs.iter().for_each(|d| remove(d));
        log.say(format!(
            "keyed round {}/{rounds}: append_raw {}, keyed {}",
            round + 1,
            rate(plain.last().copied()),
            rate(keyed.last().copied())
        ));
    }
    log.say(format!(
        "index bytes/message after the appends: plain {:.1}, keyed {:.1}",
        index.0, index.1
    ));
    let ratios: Vec<f64> = keyed.iter().zip(&plain).map(|(k, p)| k / p).collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    let ratio = (median(ratios), low, high);
    ((median(plain), median(keyed)), ratio, index)
}

/// The table's rows for these results.
pub fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let sizes = r
        .forks
        .iter()
        .map(|f| label(f.messages))
        .collect::<Vec<_>>()
        .join(" / ");
    let each = |v: &dyn Fn(&Fork) -> String| r.forks.iter().map(v).collect::<Vec<_>>().join(" / ");
    let (first, last) = (&r.forks[0], &r.forks[r.forks.len() - 1]);
    let span = format!("{}/{}", label(last.messages), label(first.messages));
    let q = last.p50 / first.p50;
    rows.push(Row {
        metric: format!("fork, p50 of {FORKS} (source of {sizes} msgs)"),
        convlog: each(&|f| format!("{:.2}", f.p50 * 1e6)) + " µs",
        peer: String::new(),
        ratio: format!("{q:.2}× {span} time"),
        target: "constant".into(),
        met: met(Some(q < 2.0)),
    });
    let q = last.bytes / first.bytes;
    rows.push(Row {
        metric: format!("fork, record bytes added per fork ({sizes})"),
        convlog: each(&|f| format!("{:.0}", f.bytes)) + " B",
        peer: String::new(),
        ratio: format!("{q:.2}× {span} bytes"),
        target: "constant".into(),
        met: met(Some(q <= 1.0 + 1e-9)),
    });
    rows.push(Row {
        metric: format!("fork, LSNs per fork ({sizes})"),
        convlog: each(&|f| format!("{:.2}", f.lsns)),
        peer: String::new(),
        ratio: String::new(),
        target: "1 record".into(),
        met: met(Some(r.forks.iter().all(|f| f.lsns == 1.0))),
    });
    rows.push(Row {
        metric: format!("append to the source just after a fork, p50 ({sizes})"),
        convlog: each(&|f| format!("{:.2}", f.append_after * 1e6)) + " µs",
        peer: each(&|f| format!("{:.2}", f.append_next * 1e6)) + " µs (the next append)",
        ratio: format!(
            "{:.2}× after/next at {}",
            last.append_after / last.append_next,
            label(last.messages)
        ),
        target: String::new(),
        met: "",
    });
    for w in &r.windows {
        rows.push(Row {
            metric: format!(
                "window({}) of a {}-msg session ({} returned), p50",
                w.label,
                label(r.window_session),
                w.returned
            ),
            convlog: format!("{:.2} µs", w.p50 * 1e6),
            peer: format!("{:.2} µs (convlog tail({WINDOW_N}))", r.tail * 1e6),
            ratio: format!("{:.2}× window/tail time", w.p50 / r.tail),
            target: String::new(),
            met: "",
        });
    }
    let (c, s) = r.replace;
    rows.push(Row {
        metric: format!("replace a {REPLACE_N}-msg session with {REPLACE_N} msgs, p50"),
        convlog: format!("{:.1} µs", c * 1e6),
        peer: format!(
            "{:.1} µs (NORMAL, DELETE + {REPLACE_N} INSERTs, 1 txn)",
            s * 1e6
        ),
        ratio: format!("{:.2}× convlog/sqlite time", c / s),
        target: String::new(),
        met: "",
    });
    let (plain, keyed) = r.keyed;
    let (q, low, high) = r.keyed_ratio;
    rows.push(Row {
        metric: "buffered appends/s, 1 message per call, keyed (fresh 36-byte key)".into(),
        convlog: rate(Some(keyed)),
        peer: format!("{} (convlog append_raw)", rate(Some(plain))),
        ratio: format!("{q:.2}× keyed/plain throughput (rounds {low:.2}–{high:.2})"),
        target: "≥ 0.9×".into(),
        met: met(Some(q >= 0.9)),
    });
    rows.push(Row {
        metric: "index bytes / message after keyed appends (writer)".into(),
        convlog: format!("{:.1} B", r.key_index.1),
        peer: format!("{:.1} B (convlog append_raw)", r.key_index.0),
        ratio: String::new(),
        target: String::new(),
        met: "",
    });
    rows
}
