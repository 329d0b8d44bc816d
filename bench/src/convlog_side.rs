//! The convlog side of each measurement, through its public API only.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convlog::format::{Decoded, SEGMENT_HEADER_LEN, SegmentHeader, decode_record};
use convlog::{Durability, SegmentId, Store, WindowSpec};

use crate::floor::{self, Group};
use crate::workload::Corpus;

pub fn open(dir: &Path, durability: Durability) -> Store {
    Store::builder()
        .durability(durability)
        .open(dir)
        .expect("open convlog store")
}

/// One `append_raw` per message, in workload order. Returns the elapsed time.
pub fn append_each(store: &Store, sessions: &[String], corpus: &Corpus) -> Duration {
    let t = Instant::now();
    for i in 0..corpus.len() {
        let s = corpus.session[i] as usize;
        store
            .append_raw(&sessions[s], corpus.get(i))
            .expect("append_raw");
    }
    t.elapsed()
}

/// `append_batch_raw` of up to `batch` messages of one session at a time, visiting the
/// sessions round-robin (a batch holds one session's messages). Returns the elapsed time.
pub fn append_batched(
    store: &Store,
    sessions: &[String],
    corpus: &Corpus,
    batch: usize,
) -> Duration {
    let mut per_session: Vec<Vec<&[u8]>> = vec![Vec::new(); sessions.len()];
    for i in 0..corpus.len() {
        per_session[corpus.session[i] as usize].push(corpus.get(i));
    }
    let mut plan: Vec<(usize, &[&[u8]])> = Vec::new();
    let mut round = 0;
    loop {
        let before = plan.len();
        for (s, msgs) in per_session.iter().enumerate() {
            if let Some(chunk) = msgs.chunks(batch).nth(round) {
                plan.push((s, chunk));
            }
        }
        if plan.len() == before {
            break;
        }
        round += 1;
    }
    let t = Instant::now();
    for (s, chunk) in plan {
        store
            .append_batch_raw(&sessions[s], chunk)
            .expect("append_batch_raw");
    }
    t.elapsed()
}

/// Durable (`Durability::Always`) appends from `threads` threads for `run`; thread `t`
/// appends to the sessions `names[t]`. Returns the appends, elapsed time, group commits the
/// store ran, and the p99 of one append's latency, as the group-commit floor's.
pub fn durable(
    dir: &Path,
    names: Arc<Vec<Vec<String>>>,
    corpus: Arc<Corpus>,
    threads: usize,
    run: Duration,
) -> Group {
    let store = open(dir, Durability::Always);
    let (mut lat, elapsed) = floor::timed_threads(threads, run, |th| {
        let (store, names, corpus) = (store.clone(), names.clone(), corpus.clone());
        move |n| {
            let i = ((th as u64 + n * threads as u64) % corpus.len() as u64) as usize;
            let s = corpus.session[i] as usize;
            store
                .append_raw(&names[th][s], corpus.get(i))
                .expect("durable append");
        }
    });
    Group {
        appends: lat.len() as u64,
        elapsed,
        syncs: store.stats().group_commits,
        p99: floor::p99(&mut lat),
    }
}

/// The last `n` messages of `session` as raw bytes (with their ids and timestamps).
pub fn tail(store: &Store, session: &str, n: u64) -> Vec<convlog::Entry<Vec<u8>>> {
    store
        .tail(session, n)
        .raw()
        .collect::<Result<Vec<_>, _>>()
        .expect("tail")
}

/// Streams a whole session; returns (messages, payload bytes).
pub fn stream(store: &Store, session: &str) -> (u64, u64) {
    let (mut n, mut bytes) = (0u64, 0u64);
    for e in store.messages(session).raw() {
        let e = e.expect("stream");
        std::hint::black_box((e.interaction_id, e.timestamp, e.message.first()));
        bytes += e.message.len() as u64;
        n += 1;
    }
    (n, bytes)
}

/// Opens the store (as a writer, as an agent process would) and reads a tail.
pub fn reopen_and_tail(dir: &Path, session: &str, n: u64) -> (Store, usize) {
    let store = Store::open(dir).expect("reopen");
    let got = tail(&store, session, n).len();
    (store, got)
}

/// Appends the first `n` messages of `corpus` to `session`, 1000 per `append_batch_raw`.
pub fn fill(store: &Store, session: &str, corpus: &Corpus, n: usize) {
    let msgs: Vec<&[u8]> = (0..n).map(|i| corpus.get(i)).collect();
    for chunk in msgs.chunks(1000) {
        store
            .append_batch_raw(session, chunk)
            .expect("append_batch_raw");
    }
}

/// Forks all of `src` into the new session `dst`; returns the elapsed time.
pub fn fork(store: &Store, src: &str, dst: &str) -> Duration {
    let t = Instant::now();
    let shared = store.fork(src, dst, None).expect("fork");
    let e = t.elapsed();
    assert_eq!(
        shared,
        store.interaction_count(src),
        "a fork shares all of its source"
    );
    e
}

/// The history window of `session` for `spec`, raw.
pub fn window(store: &Store, session: &str, spec: &WindowSpec) -> Vec<convlog::Entry<Vec<u8>>> {
    store.window(session, spec).expect("window")
}

/// Makes `session` exactly `msgs`, on the condition that its next id is `expected_next`.
pub fn replace(store: &Store, session: &str, expected_next: u64, msgs: &[&[u8]]) {
    let r = store
        .replace(session, Some(expected_next), msgs)
        .expect("replace");
    assert_eq!(r.len(), msgs.len());
}

/// Bytes of records in the store's segment files: each file's header plus its records up to
/// the first clean end (the files themselves are preallocated, so their lengths grow in
/// chunks, not by record).
pub fn segment_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let name = e.file_name();
        if SegmentId::parse_file_name(&name.to_string_lossy()).is_none() {
            continue;
        }
        let buf = std::fs::read(e.path()).expect("read segment");
        total += records_end(&buf);
    }
    total
}

/// Where the records of one segment file end.
fn records_end(buf: &[u8]) -> u64 {
    let salt = SegmentHeader::decode(buf).expect("segment header").salt;
    let mut at = SEGMENT_HEADER_LEN;
    while let Decoded::Record(r) = decode_record(&buf[at..], salt, u32::MAX) {
        at += r.framed_len();
    }
    at as u64
}
