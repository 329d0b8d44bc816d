//! Encryption at rest (`--only encryption`): an encrypted store against an unencrypted one
//! on the same workload, in the same run, in interleaved rounds.
//!
//! Each round builds both stores with buffered `append_raw` (one message per call, the main
//! workload), then streams the largest session whole and reads its last 20 messages, on
//! each. The peer is convlog itself without a key; the target is ≥ 0.7× on appends and
//! streams (issue 15). SQLite's buffered rate on the same workload is the other baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use convlog::{Durability, MasterKey, Store};

use crate::workload::{Corpus, Workload};
use crate::{Args, Log, Row, TAIL_N, convlog_side, gbps, latencies, median, met, rate, remove};

pub struct Results {
    /// Buffered appends/s, the workload into a new store (each session's first append
    /// creates its key in the encrypted one): plain, encrypted.
    appends: (f64, f64),
    /// The same appends again, into the sessions the store holds (their keys exist).
    steady: (f64, f64),
    /// Messages/s of the largest session streamed decoded as `ChatMessage`s.
    decoded: (f64, f64),
    /// Stream of the largest session, GB/s of message JSON: plain, encrypted (decrypting
    /// ahead on a second thread, the default).
    stream: (f64, f64),
    /// The encrypted stream on one thread (`Options::decrypt_ahead(false)`), GB/s.
    stream_alone: f64,
    /// CPU seconds (every thread of the process) per GB of that stream: plain, encrypted.
    cpu: (f64, f64),
    /// The same for the encrypted stream on one thread.
    cpu_alone: f64,
    /// AES-256-GCM alone opening the same messages (sealed in memory), GB/s: the cipher's
    /// ceiling on this machine, which an encrypted raw stream pays on top of the plain one.
    cipher: f64,
    /// p50 seconds of tail(20) of the largest session: plain, encrypted.
    tail: (f64, f64),
    /// Message bytes that tail returns.
    tail_bytes: u64,
    /// Store bytes on disk per input JSON byte: plain, encrypted.
    disk: (f64, f64),
    /// Time of the first append to each new session (key creation, synced): p50 seconds.
    new_session: f64,
    /// Time of a delete (key destruction: a log sync and a KEYS rewrite): p50 seconds.
    delete: f64,
}

fn open(dir: &Path, key: Option<&MasterKey>, ahead: bool) -> Store {
    let b = Store::builder()
        .durability(Durability::Buffered)
        .decrypt_ahead(ahead);
    match key {
        Some(k) => b.encryption(k.clone()),
        None => b,
    }
    .open(dir)
    .expect("open convlog store")
}

pub fn run(args: &Args, workload: &Workload, corpus: &Corpus, root: &Path, log: &Log) -> Results {
    let rounds = if args.quick { 1 } else { 3 };
    let key = MasterKey::from_bytes([0x42; 32]);
    let big = &workload.sessions[workload.largest()];
    let per_sec = |t: Duration| corpus.len() as f64 / t.as_secs_f64();
    let mut appends = (Vec::new(), Vec::new());
    let mut steady = (Vec::new(), Vec::new());
    let mut decoded = (Vec::new(), Vec::new());
    let mut stream = (Vec::new(), Vec::new());
    let mut stream_alone = Vec::new();
    let mut cpu = (Vec::new(), Vec::new());
    let mut cpu_alone = Vec::new();
    let mut cipher = Vec::new();
    let mut tail = (Vec::new(), Vec::new());
    let mut tail_bytes = 0;
    let mut disk = (0.0, 0.0);
    let (mut new_session, mut delete) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for variant in [round % 2, 1 - round % 2] {
            let encrypted = variant == 1;
            let dir = root.join(format!("encryption-{variant}"));
            let store = open(&dir, encrypted.then_some(&key), true);
            let t = convlog_side::append_each(&store, &workload.sessions, corpus);
            store.sync().expect("sync");
            let t2 = convlog_side::append_each(&store, &workload.sessions, corpus);
            store.sync().expect("sync");
            let d = decoded_rate(&store, big, if args.quick { 2 } else { 5 });
            let reps = if args.quick { 3 } else { 7 };
            // An encrypted store's stream with and without the helper, through two handles
            // of the one open store, in an order that alternates by round.
            let alone = encrypted.then(|| open(&dir, Some(&key), false));
            let mut one_thread = || {
                alone.as_ref().map(|a| {
                    let g = gbps(reps, || convlog_side::stream(a, big));
                    (g, cpu_per_gb(reps, || convlog_side::stream(a, big)))
                })
            };
            let first = if round % 2 == 1 { one_thread() } else { None };
            let g = gbps(reps, || convlog_side::stream(&store, big));
            let c = cpu_per_gb(reps, || convlog_side::stream(&store, big));
            if let Some((g1, c1)) = first.or_else(&mut one_thread) {
                stream_alone.push(g1);
                cpu_alone.push(c1);
            }
            drop(alone);
            let [p50, _] = latencies(if args.quick { 200 } else { 2000 }, || {
                std::hint::black_box(convlog_side::tail(&store, big, TAIL_N));
            });
            let bytes = dir_bytes(&dir) as f64 / corpus.input_bytes() as f64;
            if encrypted {
                appends.1.push(per_sec(t));
                steady.1.push(per_sec(t2));
                decoded.1.push(d);
                stream.1.push(g);
                cpu.1.push(c);
                tail.1.push(p50);
                disk.1 = bytes;
                let (n, d) = key_ops(&store, corpus);
                new_session.push(n);
                delete.push(d);
            } else {
                cipher.push(cipher_gbps(&store, big, reps));
                tail_bytes = convlog_side::tail(&store, big, TAIL_N)
                    .iter()
                    .map(|e| e.message.len() as u64)
                    .sum();
                appends.0.push(per_sec(t));
                steady.0.push(per_sec(t2));
                decoded.0.push(d);
                stream.0.push(g);
                cpu.0.push(c);
                tail.0.push(p50);
                disk.0 = bytes;
            }
            drop(store);
            remove(&dir);
        }
        log.say(format!(
            "encryption round {}/{rounds}: appends plain {} encrypted {}; stream {:.2} / {:.2} GB/s",
            round + 1,
            rate(appends.0.last().copied()),
            rate(appends.1.last().copied()),
            stream.0.last().copied().unwrap_or_default(),
            stream.1.last().copied().unwrap_or_default(),
        ));
    }
    Results {
        appends: (median(appends.0), median(appends.1)),
        steady: (median(steady.0), median(steady.1)),
        decoded: (median(decoded.0), median(decoded.1)),
        stream: (median(stream.0), median(stream.1)),
        stream_alone: median(stream_alone),
        cpu: (median(cpu.0), median(cpu.1)),
        cpu_alone: median(cpu_alone),
        cipher: median(cipher),
        tail: (median(tail.0), median(tail.1)),
        tail_bytes,
        disk,
        new_session: median(new_session),
        delete: median(delete),
    }
}

/// CPU seconds the whole process spends per GB `f` reads (its `(messages, bytes)`), over
/// `reps` calls: what a stream costs, whatever threads it uses.
fn cpu_per_gb(reps: usize, mut f: impl FnMut() -> (u64, u64)) -> f64 {
    let before = process_cpu();
    let bytes: u64 = (0..reps).map(|_| f().1).sum();
    (process_cpu() - before) / (bytes as f64 / 1e9)
}

/// CPU seconds this process has used, all threads.
fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Median messages/s of `reps` streams of `session` decoded as `ChatMessage`s.
fn decoded_rate(store: &Store, session: &str, reps: usize) -> f64 {
    let runs = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let mut n = 0usize;
            for m in store.messages(session) {
                std::hint::black_box(m.expect("decode"));
                n += 1;
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

/// GB/s of AES-256-GCM alone over each message of `session` (read from `store` into
/// memory), in place, under a random key: the cipher's own rate on these messages with
/// nothing of convlog around it, not even a copy. (Sealing and opening cost the same: CTR
/// and GHASH over the same bytes; sealing can be repeated in place, so it is what is timed.)
fn cipher_gbps(store: &Store, session: &str, reps: usize) -> f64 {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use ring::rand::{SecureRandom, SystemRandom};
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw).expect("random");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("key"));
    let mut messages: Vec<Vec<u8>> = store
        .messages(session)
        .raw()
        .map(|e| e.expect("stream").message)
        .collect();
    let mut counter = 0u64;
    gbps(reps, || {
        let mut bytes = 0u64;
        for m in &mut messages {
            counter += 1;
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&counter.to_le_bytes());
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), m)
                .expect("seal");
            let _ = std::hint::black_box(tag);
            bytes += m.len() as u64;
        }
        (messages.len() as u64, bytes)
    })
}

/// p50 seconds of a first append to a new session, and of deleting such a session, on an
/// encrypted store that already holds the workload.
fn key_ops(store: &Store, corpus: &Corpus) -> (f64, f64) {
    let (mut first, mut del) = (Vec::new(), Vec::new());
    for i in 0..50 {
        let s = format!("encryption-new-{i}");
        let t = Instant::now();
        store.append_raw(&s, corpus.get(i)).expect("append");
        first.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        store.delete_session(&s).expect("delete");
        del.push(t.elapsed().as_secs_f64());
    }
    (median(first), median(del))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn rows(r: &Results) -> Vec<Row> {
    let ratio = |(plain, enc): (f64, f64)| enc / plain;
    let mut rows = Vec::new();
    let q = ratio(r.appends);
    rows.push(Row {
        metric: "encrypted store: buffered appends/s, 1 message per call, new store (1 key created per session)".into(),
        convlog: rate(Some(r.appends.1)),
        peer: format!("{} (unencrypted)", rate(Some(r.appends.0))),
        ratio: format!("{q:.2}× encrypted/plain"),
        target: "≥ 0.7×".into(),
        met: met(Some(q >= 0.7)),
    });
    let q = ratio(r.steady);
    rows.push(Row {
        metric:
            "encrypted store: buffered appends/s, 1 message per call, sessions that have their keys"
                .into(),
        convlog: rate(Some(r.steady.1)),
        peer: format!("{} (unencrypted)", rate(Some(r.steady.0))),
        ratio: format!("{q:.2}× encrypted/plain"),
        target: "≥ 0.7×".into(),
        met: met(Some(q >= 0.7)),
    });
    let q = ratio(r.decoded);
    rows.push(Row {
        metric: "encrypted store: stream largest session decoded (ChatMessage)".into(),
        convlog: rate(Some(r.decoded.1)),
        peer: format!("{} (unencrypted)", rate(Some(r.decoded.0))),
        ratio: format!("{q:.2}× encrypted/plain"),
        target: "≥ 0.7×".into(),
        met: met(Some(q >= 0.7)),
    });
    let q = ratio(r.stream);
    // What an encrypted raw stream could reach on one thread: the plain stream's work plus
    // the cipher's.
    let ceiling = 1.0 / (1.0 / r.stream.0 + 1.0 / r.cipher);
    rows.push(Row {
        metric: "encrypted store: stream largest session raw (GB/s of JSON; decrypting ahead on a 2nd thread, the default)".into(),
        convlog: format!("{:.2} GB/s", r.stream.1),
        peer: format!("{:.2} GB/s (unencrypted)", r.stream.0),
        ratio: format!("{q:.2}× encrypted/plain"),
        target: "≥ 0.7×".into(),
        met: met(Some(q >= 0.7)),
    });
    rows.push(Row {
        metric: "encrypted store: the same stream on one thread (decrypt_ahead off)".into(),
        convlog: format!("{:.2} GB/s", r.stream_alone),
        peer: format!(
            "AES-256-GCM alone {:.2} GB/s (in place), so one thread reaches at best {:.2} GB/s ({:.2}× plain)",
            r.cipher,
            ceiling,
            ceiling / r.stream.0
        ),
        ratio: format!("{:.2}× encrypted/plain", r.stream_alone / r.stream.0),
        target: "measured".into(),
        met: "",
    });
    rows.push(Row {
        metric: "encrypted store: CPU per GB of that raw stream (every thread)".into(),
        convlog: format!("{:.2} s", r.cpu.1),
        peer: format!(
            "{:.2} s (unencrypted); {:.2} s on one thread",
            r.cpu.0, r.cpu_alone
        ),
        ratio: format!(
            "{:.2}× plain's CPU ({:.2}× on one thread)",
            r.cpu.1 / r.cpu.0,
            r.cpu_alone / r.cpu.0
        ),
        target: "measured".into(),
        met: "",
    });
    let q = r.tail.0 / r.tail.1;
    rows.push(Row {
        metric: format!("encrypted store: tail({TAIL_N}) p50"),
        convlog: format!("{:.1} µs", r.tail.1 * 1e6),
        peer: {
            // The plain tail's time plus the cipher's over the same bytes.
            let best = r.tail.0 + r.tail_bytes as f64 / (r.cipher * 1e9);
            format!(
                "{:.1} µs (unencrypted); with AES-256-GCM over its {} bytes, at best {:.1} µs ({:.2}×)",
                r.tail.0 * 1e6,
                r.tail_bytes,
                best * 1e6,
                r.tail.0 / best
            )
        },
        ratio: format!("{q:.2}× plain/encrypted time"),
        // Issue 15 sets its 0.7× on appends and streams; a tail is measured (it sits at
        // the cipher's bound: the plain tail's time plus AES-GCM's over the same bytes).
        target: "measured".into(),
        met: "",
    });
    rows.push(Row {
        metric: "encrypted store: disk bytes / input JSON bytes".into(),
        convlog: format!("{:.3}", r.disk.1),
        peer: format!("{:.3} (unencrypted)", r.disk.0),
        ratio: format!("{:.3}× bytes", r.disk.1 / r.disk.0),
        target: String::new(),
        met: "",
    });
    rows.push(Row {
        metric: "encrypted store: first append to a new session (key created; KEYS synced by the next sync), p50"
            .into(),
        convlog: format!("{:.0} µs", r.new_session * 1e6),
        peer: String::new(),
        ratio: String::new(),
        target: String::new(),
        met: "",
    });
    rows.push(Row {
        metric: "encrypted store: delete_session (log synced, key destroyed), p50".into(),
        convlog: format!("{:.0} µs", r.delete * 1e6),
        peer: String::new(),
        ratio: String::new(),
        target: String::new(),
        met: "",
    });
    rows
}
