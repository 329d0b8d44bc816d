//! Several processes on one store (issue 11): a multi-process model test with kills.
//!
//! The test re-runs its own binary as children (`CONVLOG_MP_CHILD` set, filtered to
//! `mp_child`). Four writer children append, batch, `append_if`, pop and clear on shared
//! sessions of one store (16 KiB segments, so they rotate often, or 4 MiB ones, whose files
//! grow as they fill; `Buffered` or `Always`; each child its own), each printing one line per acknowledged operation. The parent SIGKILLs a random
//! writer every few milliseconds and starts another in its place. A reader child reads
//! beside them the whole time, through one long-lived read-only store and fresh read-only
//! opens, and reports anything wrong. At the end the parent checks:
//!
//! - the store opens (the next writer repairs a torn tail), nothing is dropped, and a strict
//!   read-only open (`convlog verify`) finds it clean;
//! - replaying the whole log (`Store::subscribe` from LSN 1): interaction ids are gapless in
//!   every session, and the replayed sessions equal what the store reads;
//! - every acknowledged append, batch and `append_if` is in the log exactly once, where its
//!   receipt says; every batch in the log is whole, acknowledged or not; every acknowledged
//!   pop removed exactly the message it returned;
//! - the reader never died of a signal, never saw half a batch, a gap or an error.
//!
//! A second run adds a process that seals and compacts in a loop (killed every fifth kill):
//! the same checks hold, except that what was popped or cleared may be gone from the log.
//!
//! `CONVLOG_MP_KILLS` sets the number of kills (default 200; 100 with the compactor);
//! `CONVLOG_SEED` the seed (printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Rng, count_from_env, seed_from_env};
use convlog::{Durability, LogEvent, Lsn, RecoveryMode, Since, Store};

const CHILD_ENV: &str = "CONVLOG_MP_CHILD";
/// Sessions that only ever get appends and batches (so any batch in them must read whole).
const BATCH_SESSIONS: [&str; 2] = ["b0", "b1"];
/// Sessions that also get `append_if`, pops and clears.
const POP_SESSIONS: [&str; 3] = ["p0", "p1", "p2"];
const WRITERS: usize = 4;
const SEGMENT: u64 = 16 << 10;

/// Opens the store as a writer does: `Always` or `Buffered`, and small segments (which
/// rotate often) or large ones (whose files grow, one preallocation at a time, while other
/// processes read them through older, shorter maps).
fn open(dir: &Path, always: bool, large: bool) -> convlog::Result<Store> {
    let durability = if always {
        Durability::Always
    } else {
        Durability::Buffered
    };
    builder(dir)
        .durability(durability)
        .segment_size(if large { 4 << 20 } else { SEGMENT })
        .open(dir)
}

/// Options for the store in `dir`: encrypted (a fixed master key) when the run's directory
/// holds the marker file [`ENCRYPTED`], which every process of the run sees.
fn builder(dir: &Path) -> convlog::Options {
    let b = Store::builder();
    if dir.with_file_name(ENCRYPTED).exists() {
        b.encryption(convlog::MasterKey::from_bytes([0x33; 32]))
    } else {
        b
    }
}

/// The marker file beside the store directory that makes a run's store encrypted.
const ENCRYPTED: &str = "ENCRYPTED";

/// A message whose `tag` names it uniquely: `w<child>-<op>` (`-<j>of<n>` in a batch).
fn message(tag: &str, rng: &mut Rng) -> Vec<u8> {
    let pad = "x".repeat(rng.below(400) as usize);
    format!(r#"{{"role":"user","tag":"{tag}","pad":"{pad}"}}"#).into_bytes()
}

fn tag_of(message: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(message).unwrap();
    v["tag"].as_str().unwrap().to_owned()
}

/// The children: a writer (`w|<n>|<seed>|<dir>`) or the reader (`r|<dir>`).
#[test]
fn mp_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // not a child
    };
    let parts: Vec<&str> = spec.splitn(4, '|').collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    // (A newline first: libtest has printed "test mp_child ... " without one.)
    writeln!(out).unwrap();
    match parts[0] {
        "w" => writer(
            &mut out,
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
            parts[3],
        ),
        "c" => compactor(&mut out, parts[1]),
        _ => reader(&mut out, parts[1]),
    }
}

/// Seals and compacts, over and over, beside the writers (killed at random too).
fn compactor(out: &mut impl Write, dir: &str) {
    let store = open(Path::new(dir), false, false).unwrap();
    writeln!(out, "@@READY").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let mut rng = Rng(started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id()));
    while started.elapsed() < Duration::from_secs(20) {
        store.seal().unwrap();
        match store.compact() {
            Ok(r) => writeln!(out, "@@K {}", r.segments_rewritten).unwrap(),
            Err(convlog::Error::Compacting { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(30)));
    }
}

fn writer(out: &mut impl Write, n: u64, seed: u64, dir: &str) {
    let mut rng = Rng(seed);
    let store = open(Path::new(dir), rng.below(4) == 0, rng.below(2) == 0).unwrap();
    writeln!(out, "@@READY").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    for i in 0.. {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let tag = format!("w{n}-{i}");
        let line = match rng.below(100) {
            0..=39 => {
                let s = pick(&mut rng);
                let r = store.append_raw(s, &message(&tag, &mut rng)).unwrap();
                format!("A {s} {} {} {tag}", r.interaction_id, r.lsn.0)
            }
            40..=54 => {
                let s = BATCH_SESSIONS[rng.below(2) as usize];
                let k = 2 + rng.below(4);
                let msgs: Vec<Vec<u8>> = (0..k)
                    .map(|j| message(&format!("{tag}-{j}of{k}"), &mut rng))
                    .collect();
                let r = store.append_batch_raw(s, &msgs).unwrap();
                format!("B {s} {} {} {tag} {k}", r[0].interaction_id, r[0].lsn.0)
            }
            55..=79 => {
                let s = POP_SESSIONS[rng.below(3) as usize];
                let expected = store.interaction_count(s) + 1;
                let msg: serde_json::Value =
                    serde_json::from_slice(&message(&tag, &mut rng)).unwrap();
                match store.append_if(s, expected, &msg) {
                    Ok(r) => {
                        assert_eq!(r.interaction_id, expected);
                        format!("A {s} {} {} {tag}", r.interaction_id, r.lsn.0)
                    }
                    Err(convlog::Error::Conflict { .. }) => format!("C {s}"),
                    Err(e) => panic!("{e}"),
                }
            }
            80..=97 => {
                let s = POP_SESSIONS[rng.below(3) as usize];
                match store.pop_raw(s).unwrap() {
                    Some(e) => format!("P {s} {} {}", e.interaction_id, e.lsn.0),
                    None => format!("N {s}"),
                }
            }
            _ => {
                let s = POP_SESSIONS[rng.below(3) as usize];
                format!("X {s} {}", store.clear(s).unwrap())
            }
        };
        writeln!(out, "@@{line}").unwrap();
        out.flush().unwrap();
    }
}

fn pick(rng: &mut Rng) -> &'static str {
    let all: Vec<&str> = BATCH_SESSIONS
        .iter()
        .chain(&POP_SESSIONS)
        .copied()
        .collect();
    all[rng.below(all.len() as u64) as usize]
}

/// Checks the batch sessions as one read sees them: ids gapless, every batch whole.
fn check_batches(store: &Store, what: &str) -> Result<usize, String> {
    let mut read = 0;
    for s in BATCH_SESSIONS {
        let entries: Vec<_> = store
            .messages(s)
            .raw()
            .collect::<convlog::Result<_>>()
            .map_err(|e| format!("{what}: {s}: {e}"))?;
        let mut open: Option<(String, u64, u64)> = None;
        for (i, e) in entries.iter().enumerate() {
            if e.interaction_id != i as u64 + 1 {
                return Err(format!("{what}: {s}: id {} at {i}", e.interaction_id));
            }
            let tag = tag_of(&e.message);
            let part = tag.rsplit_once('-').and_then(|(base, p)| {
                let (j, k) = p.split_once("of")?;
                Some((
                    base.to_owned(),
                    j.parse::<u64>().ok()?,
                    k.parse::<u64>().ok()?,
                ))
            });
            match (&mut open, part) {
                (Some((base, next, k)), Some((b, j, kk)))
                    if *base == b && *next == j && *k == kk =>
                {
                    *next += 1;
                }
                (Some((base, next, k)), _) => {
                    return Err(format!("{what}: {s}: batch {base} cut at {next} of {k}"));
                }
                (None, Some((b, 0, k))) => open = Some((b, 1, k)),
                (None, Some((b, j, _))) => return Err(format!("{what}: {s}: {b} starts at {j}")),
                (None, None) => {}
            }
            if open.as_ref().is_some_and(|(_, next, k)| next == k) {
                open = None;
            }
        }
        if let Some((base, next, k)) = open {
            return Err(format!("{what}: {s}: batch {base} ends at {next} of {k}"));
        }
        read += entries.len();
    }
    Ok(read)
}

fn reader(out: &mut impl Write, dir: &str) {
    let dir = Path::new(dir);
    let follow = builder(dir).read_only(true).open(dir).unwrap();
    writeln!(out, "@@READY").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let (mut reads, mut opens, mut last) = (0u64, 0u64, 0u64);
    while started.elapsed() < Duration::from_secs(30) {
        if std::env::var_os("CONVLOG_MP_STOP").is_some_and(|p| Path::new(&p).exists()) {
            break;
        }
        match check_batches(&follow, "follow") {
            Ok(_) => reads += 1,
            Err(e) => writeln!(out, "@@ERR {e}").unwrap(),
        }
        let lsn = follow.last_lsn().0;
        if lsn < last {
            writeln!(out, "@@ERR last LSN went back from {last} to {lsn}").unwrap();
        }
        last = lsn;
        if reads.is_multiple_of(10) {
            match builder(dir).read_only(true).open(dir) {
                Ok(fresh) => match check_batches(&fresh, "fresh open") {
                    Ok(_) => opens += 1,
                    Err(e) => writeln!(out, "@@ERR {e}").unwrap(),
                },
                Err(e) => writeln!(out, "@@ERR fresh read-only open: {e}").unwrap(),
            }
        }
        out.flush().unwrap();
    }
    writeln!(out, "@@DONE {reads} {opens}").unwrap();
}

/// A running child and the thread collecting its lines.
struct Running {
    child: Child,
    lines: JoinHandle<Vec<String>>,
}

fn spawn(spec: &str, stop: &Path) -> Running {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mp_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .env("CONVLOG_MP_STOP", stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut ready = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(l) = line.strip_prefix("@@") {
                if l == "READY" {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else {
                    lines.push(l.to_owned());
                }
            }
        }
        lines
    });
    // Wait until it opened the store (a kill may also come during an open: see below).
    let _ = rx.recv_timeout(Duration::from_secs(20));
    Running { child, lines }
}

/// What the writers acknowledged.
#[derive(Default)]
struct Acked {
    /// tag -> (session, interaction id, LSN), for appends and `append_if`.
    appends: BTreeMap<String, (String, u64, u64)>,
    /// tag -> (session, first id, first LSN, size).
    batches: BTreeMap<String, (String, u64, u64, u64)>,
    /// (session, popped id, popped LSN).
    pops: Vec<(String, u64, u64)>,
    ops: u64,
}

impl Acked {
    fn add(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f[i].parse::<u64>().unwrap();
        self.ops += 1;
        match f[0] {
            "A" => {
                self.appends
                    .insert(f[4].to_owned(), (f[1].to_owned(), num(2), num(3)));
            }
            "B" => {
                self.batches
                    .insert(f[4].to_owned(), (f[1].to_owned(), num(2), num(3), num(5)));
            }
            "P" => self.pops.push((f[1].to_owned(), num(2), num(3))),
            _ => {}
        }
    }
}

#[test]
fn processes_killed_at_random_never_lose_or_break_what_the_others_acknowledged() {
    killed_at_random(false, false, 200);
}

#[test]
fn a_compactor_killed_at_random_beside_them_loses_nothing_live() {
    killed_at_random(true, false, 100);
}

/// The same with encryption on: every process seals under data keys that the others create
/// (`KEYS` appended to by whichever process first writes a session), and the checks read
/// every message back through its seal.
#[test]
fn writers_killed_at_random_on_an_encrypted_store_lose_nothing() {
    killed_at_random(false, true, 100);
}

/// Writers (and, with `compacting`, a process that seals and compacts in a loop, killed
/// every few kills too) killed at random; then the checks.
fn killed_at_random(compacting: bool, encrypted: bool, default_kills: u64) {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed = seed_from_env("multi_process", 0x6d70_0011);
    let kills = count_from_env("CONVLOG_MP_KILLS", default_kills);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let stop = tmp.path().join("stop");
    if encrypted {
        std::fs::write(tmp.path().join(ENCRYPTED), b"").unwrap();
    }
    // The store exists before the reader opens it read-only.
    drop(open(&dir, false, false).unwrap());
    let dir_s = dir.to_str().unwrap().to_owned();
    let mut rng = Rng(seed);
    let reader = spawn(&format!("r|{dir_s}"), &stop);
    let mut next_child = 0u64;
    let mut new_writer = |rng: &mut Rng| {
        next_child += 1;
        spawn(&format!("w|{next_child}|{}|{dir_s}", rng.next_u64()), &stop)
    };
    let mut writers: Vec<Running> = (0..WRITERS).map(|_| new_writer(&mut rng)).collect();
    let new_compactor = || spawn(&format!("c|{dir_s}"), &stop);
    let mut compactor = compacting.then(new_compactor);
    let mut compactions = 0usize;
    let mut acked = Acked::default();
    for i in 0..kills {
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(20_000)));
        if let Some(c) = compactor.as_mut().filter(|_| i % 5 == 4) {
            let mut dead = std::mem::replace(c, new_compactor());
            dead.child.kill().unwrap();
            dead.child.wait().unwrap();
            compactions += dead.lines.join().unwrap().len();
            continue;
        }
        let victim = rng.below(WRITERS as u64) as usize;
        let replacement = new_writer(&mut rng);
        let mut dead = std::mem::replace(&mut writers[victim], replacement);
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        for line in dead.lines.join().unwrap() {
            acked.add(&line);
        }
    }
    for mut w in writers.into_iter().chain(compactor) {
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        for line in w.lines.join().unwrap() {
            if line.starts_with('K') {
                compactions += 1;
            } else {
                acked.add(&line);
            }
        }
    }
    std::fs::write(&stop, b"").unwrap();
    let mut reader = reader;
    let status = reader.child.wait().unwrap();
    let reader_lines = reader.lines.join().unwrap();
    eprintln!(
        "multi_process{}: {kills} kills, {} acknowledged operations ({} appends, {} batches, {} pops), {compactions} compactions; reader: {:?}",
        if encrypted { " (encrypted)" } else { "" },
        acked.ops,
        acked.appends.len(),
        acked.batches.len(),
        acked.pops.len(),
        reader_lines.last()
    );
    assert!(status.success(), "the reader died: {status:?}");
    let errors: Vec<&String> = reader_lines
        .iter()
        .filter(|l| l.starts_with("ERR"))
        .collect();
    assert!(errors.is_empty(), "the reader saw: {errors:#?}");
    assert!(acked.appends.len() > 100, "the writers got work done");
    if compacting {
        assert!(compactions > 0, "the compactor got work done");
    }
    check_store(&dir, &acked, compacting);
    let torn = std::fs::read_dir(dir.join(convlog::QUARANTINE_DIR)).map_or(0, |d| d.count());
    eprintln!(
        "multi_process: the writers cut {torn} torn writes of killed ones (kept in quarantine/)"
    );
}

/// The parent's checks of the final store against the log and what was acknowledged. After
/// compactions the log no longer holds what was popped or cleared: then an acknowledged
/// append of a session that gets pops and clears must be where its receipt says *if* it is
/// in the log, and acknowledged pops are not looked for.
fn check_store(dir: &Path, acked: &Acked, compacted: bool) {
    let store = builder(dir).open(dir).unwrap();
    assert!(store.recovery_report().dropped.is_empty());
    drop(store);
    builder(dir)
        .read_only(true)
        .recovery(RecoveryMode::Strict)
        .open(dir)
        .expect("verify finds the store clean");
    let store = builder(dir).read_only(true).open(dir).unwrap();
    let mut sub = store.subscribe(Since::Lsn(Lsn(1)));
    // Replay the log: each session's messages as (tag, LSN).
    let mut model: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut logged: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    let mut popped: BTreeSet<(String, u64, u64)> = BTreeSet::new();
    while let Some(e) = sub.next_timeout(Duration::from_millis(100)).unwrap() {
        match e {
            LogEvent::Message { session, entry } => {
                let v = model.entry(session.clone()).or_default();
                assert_eq!(
                    entry.interaction_id,
                    v.len() as u64 + 1,
                    "gapless in {session}"
                );
                let tag = tag_of(&entry.message);
                let dup = logged.insert(tag.clone(), (session, entry.interaction_id, entry.lsn.0));
                assert!(dup.is_none(), "{tag} is in the log twice");
                v.push((tag, entry.lsn.0));
            }
            LogEvent::Cut { session, keep, .. } => {
                let v = model.entry(session.clone()).or_default();
                assert!(
                    keep < v.len() as u64,
                    "a cut of {session} that removes nothing"
                );
                if keep + 1 == v.len() as u64 {
                    let (_, lsn) = v.last().unwrap();
                    popped.insert((session.clone(), keep + 1, *lsn));
                }
                v.truncate(keep as usize);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (session, v) in &model {
        let read: Vec<(String, u64)> = store
            .messages(session)
            .raw()
            .map(|e| {
                let e = e.unwrap();
                (tag_of(&e.message), e.lsn.0)
            })
            .collect();
        assert_eq!(
            &read, v,
            "{session}: the store reads what the log replays to"
        );
    }
    for (tag, want) in &acked.appends {
        let removable = POP_SESSIONS.contains(&want.0.as_str());
        if compacted && removable && !logged.contains_key(tag) {
            continue;
        }
        assert_eq!(logged.get(tag), Some(want), "acknowledged append {tag}");
    }
    for (tag, (session, id, lsn, k)) in &acked.batches {
        for j in 0..*k {
            let part = format!("{tag}-{j}of{k}");
            assert_eq!(
                logged.get(&part),
                Some(&(session.clone(), id + j, lsn + j)),
                "acknowledged batch {part}"
            );
        }
    }
    // Every batch in the log is whole, acknowledged or not.
    for tag in logged.keys() {
        if let Some((base, p)) = tag.rsplit_once('-')
            && let Some((_, k)) = p.split_once("of")
        {
            for j in 0..k.parse::<u64>().unwrap() {
                assert!(
                    logged.contains_key(&format!("{base}-{j}of{k}")),
                    "half of {base}"
                );
            }
        }
    }
    for pop in acked.pops.iter().filter(|_| !compacted) {
        assert!(
            popped.contains(pop),
            "acknowledged pop {pop:?} removed that message"
        );
    }
}
