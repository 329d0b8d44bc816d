//! Process kill loop (issue 3, part 5).
//!
//! The test re-runs its own binary as a child (`CONVLOG_KILL_CHILD` set, filtered to
//! `kill_loop_child`) that appends, batches, pops and truncates on a real directory, under
//! `Always` and `Buffered` in turn, with 64 KiB segments, printing one line per acknowledged
//! operation. The parent SIGKILLs it at a random moment (0–30 ms after it opened the store,
//! or sometimes while it is still opening), then opens the store and checks:
//!
//! - the open succeeds, with nothing dropped (a process kill is not a power cut, so under
//!   `Buffered` too every acknowledged operation is in the OS and must be found);
//! - the store holds exactly the acknowledged operations, or those plus the one in flight
//!   (never a part of it), every message byte for byte with its receipt's id and LSN.
//!
//! `CONVLOG_KILLS` sets the number of kills (default 200); `CONVLOG_SEED` the seed (printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Rng, count_from_env, payload, seed_from_env};
use convlog::{Durability, Store};

const CHILD_ENV: &str = "CONVLOG_KILL_CHILD";
const SESSIONS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Rounds that share one store directory before a fresh one is started.
const ROUNDS_PER_STORE: u64 = 10;

/// One operation of a round; the parent derives the same sequence from the round's seed.
#[derive(Debug, Clone, Copy)]
enum KOp {
    Append { s: usize, len: usize },
    Batch { s: usize, n: usize, len: usize },
    Pop { s: usize },
    Truncate { s: usize, quarter: u64 },
}

fn gen_op(rng: &mut Rng) -> KOp {
    let s = rng.below(SESSIONS.len() as u64) as usize;
    let len = 20 + rng.below(700) as usize;
    match rng.below(100) {
        0..=79 => KOp::Append { s, len },
        80..=89 => KOp::Batch {
            s,
            n: 2 + rng.below(3) as usize,
            len,
        },
        90..=97 => KOp::Pop { s },
        _ => KOp::Truncate {
            s,
            quarter: rng.below(4),
        },
    }
}

/// The id of message `j` of operation `i` in round `round`: unique over a run.
fn msg_id(round: u64, i: u64, j: usize) -> u64 {
    (round << 40) | (i << 8) | j as u64
}

fn durability(round: u64) -> Durability {
    if round.is_multiple_of(2) {
        Durability::Always
    } else {
        Durability::Buffered
    }
}

fn open(dir: &Path, round: u64) -> convlog::Result<Store> {
    Store::builder()
        .durability(durability(round))
        .segment_size(64 << 10)
        .open(dir)
}

/// The child: runs the round's operations until killed (or for at most 20 s).
#[test]
fn kill_loop_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // not a child: nothing to do
    };
    let mut parts = spec.splitn(3, '|');
    let (round, seed, dir) = (
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap(),
    );
    let store = open(Path::new(dir), round).unwrap();
    let out = std::io::stdout();
    let mut out = out.lock();
    // (A newline first: libtest has printed "test kill_loop_child ... " without one.)
    writeln!(out, "\n@@READY").unwrap();
    out.flush().unwrap();
    let mut rng = Rng(seed);
    let started = Instant::now();
    for i in 0.. {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let line = match gen_op(&mut rng) {
            KOp::Append { s, len } => {
                let r = store
                    .append_raw(SESSIONS[s], &payload(msg_id(round, i, 0), len))
                    .unwrap();
                format!("@@{i} A {} {}", r.interaction_id, r.lsn)
            }
            KOp::Batch { s, n, len } => {
                let msgs: Vec<Vec<u8>> = (0..n)
                    .map(|j| payload(msg_id(round, i, j), len + j))
                    .collect();
                let r = store.append_batch_raw(SESSIONS[s], &msgs).unwrap();
                format!("@@{i} B {} {}", r[0].interaction_id, r[0].lsn)
            }
            KOp::Pop { s } => {
                let p = store.pop_raw(SESSIONS[s]).unwrap();
                format!("@@{i} P {}", p.map_or(0, |e| e.interaction_id))
            }
            KOp::Truncate { s, quarter } => {
                let keep = store.interaction_count(SESSIONS[s]) * quarter / 4;
                let removed = store.truncate(SESSIONS[s], keep).unwrap();
                format!("@@{i} T {removed}")
            }
        };
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

/// The parent's model of the store: each session's messages with their LSNs.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    sessions: BTreeMap<&'static str, Vec<(Vec<u8>, u64)>>,
    last_lsn: u64,
}

impl Model {
    /// Applies operation `i` of `round`; returns what the child would print after it.
    fn apply(&mut self, round: u64, i: u64, op: KOp) -> String {
        match op {
            KOp::Append { s, len } => {
                self.last_lsn += 1;
                let v = self.sessions.entry(SESSIONS[s]).or_default();
                v.push((payload(msg_id(round, i, 0), len), self.last_lsn));
                format!("@@{i} A {} {}", v.len(), self.last_lsn)
            }
            KOp::Batch { s, n, len } => {
                let v = self.sessions.entry(SESSIONS[s]).or_default();
                let first = (v.len() + 1, self.last_lsn + 1);
                for j in 0..n {
                    self.last_lsn += 1;
                    v.push((payload(msg_id(round, i, j), len + j), self.last_lsn));
                }
                format!("@@{i} B {} {}", first.0, first.1)
            }
            KOp::Pop { s } => {
                let v = self.sessions.entry(SESSIONS[s]).or_default();
                let id = v.len();
                if v.pop().is_some() {
                    self.last_lsn += 1;
                }
                self.sessions.retain(|_, v| !v.is_empty());
                format!("@@{i} P {id}")
            }
            KOp::Truncate { s, quarter } => {
                let v = self.sessions.entry(SESSIONS[s]).or_default();
                let count = v.len() as u64;
                let keep = count * quarter / 4;
                if keep < count {
                    v.truncate(keep as usize);
                    self.last_lsn += 1;
                }
                self.sessions.retain(|_, v| !v.is_empty());
                format!("@@{i} T {}", count - keep.min(count))
            }
        }
    }

    /// Compares the reopened store with the model.
    fn check(&self, store: &Store, what: &str) {
        assert_eq!(store.last_lsn().0, self.last_lsn, "{what}: last LSN");
        let listed: Vec<(String, u64)> = store
            .sessions()
            .into_iter()
            .map(|s| (s.id, s.count))
            .collect();
        let want: Vec<(String, u64)> = self
            .sessions
            .iter()
            .map(|(s, v)| ((*s).to_owned(), v.len() as u64))
            .collect();
        assert_eq!(listed, want, "{what}: sessions");
        for (s, v) in &self.sessions {
            let got: Vec<_> = store
                .messages(s)
                .raw()
                .map(|e| e.unwrap_or_else(|e| panic!("{what}: read of {s}: {e}")))
                .collect();
            assert_eq!(got.len(), v.len(), "{what}: {s} length");
            for (n, (e, (bytes, lsn))) in got.iter().zip(v).enumerate() {
                assert_eq!(e.interaction_id, n as u64 + 1, "{what}: {s} order");
                assert_eq!(e.lsn.0, *lsn, "{what}: {s} message {} LSN", n + 1);
                assert!(
                    e.message == *bytes,
                    "{what}: {s} message {} differs from what was appended",
                    n + 1
                );
            }
        }
    }
}

/// Runs the child for one round and kills it; returns the acknowledged lines.
fn round_child(
    round: u64,
    seed: u64,
    dir: &Path,
    delay: Duration,
    wait_ready: bool,
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "kill_loop_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{round}|{seed}|{}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                // Only whole lines count: a line cut by the kill was never acknowledged.
                Ok(_) if buf.last() == Some(&b'\n') => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if line.starts_with("@@") && tx.send(line).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let mut lines = Vec::new();
    if wait_ready {
        // Wait (bounded) for the child to have opened the store.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    let ready = l == "@@READY";
                    lines.push(l);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines.retain(|l| l != "@@READY");
    lines
}

#[test]
fn sigkill_loses_no_acknowledged_operation() {
    if std::env::var(CHILD_ENV).is_ok() {
        return; // a child runs only `kill_loop_child`
    }
    let kills = count_from_env("CONVLOG_KILLS", 200);
    let seed = seed_from_env("kill_loop", 0x0000_C0DE_D1ED);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut tmp = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let (mut acked_total, mut in_flight_found, mut mid_open) = (0u64, 0u64, 0u64);
    let mut durable_modes = [0u64; 2];
    for round in 0..kills {
        if round.is_multiple_of(ROUNDS_PER_STORE) {
            tmp = tempfile::tempdir().unwrap();
            model = Model::default();
        }
        let dir = tmp.path().join("store");
        let round_seed = rng.next_u64();
        let wait_ready = rng.below(8) != 0;
        let delay = Duration::from_micros(rng.below(if wait_ready { 30_000 } else { 15_000 }));
        if !wait_ready {
            mid_open += 1;
        }
        let lines = round_child(round, round_seed, &dir, delay, wait_ready);
        let what = format!(
            "seed {seed:#x} round {round} ({:?}, {} acknowledged, killed {delay:?} after {})",
            durability(round),
            lines.len(),
            if wait_ready { "opening" } else { "spawning" }
        );
        // Replay the acknowledged operations on the model, checking each receipt.
        let mut ops = Rng(round_seed);
        for (i, line) in lines.iter().enumerate() {
            let op = gen_op(&mut ops);
            let want = model.apply(round, i as u64, op);
            assert_eq!(
                line, &want,
                "{what}: operation {i} acknowledged differently"
            );
        }
        acked_total += lines.len() as u64;
        durable_modes[(round % 2) as usize] += lines.len() as u64;
        let with_next = {
            let mut m = model.clone();
            m.apply(round, lines.len() as u64, gen_op(&mut ops));
            m
        };
        let store = open(&dir, round).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        let report = store.recovery_report().clone();
        assert!(report.dropped.is_empty(), "{what}: dropped {report:?}");
        if store.last_lsn().0 == with_next.last_lsn && with_next.last_lsn != model.last_lsn {
            // The operation in flight had reached the OS whole: it counts from now on.
            model = with_next;
            in_flight_found += 1;
        }
        model.check(&store, &what);
    }
    eprintln!(
        "kill_loop: {kills} kills in {:.1?} ({mid_open} during open), {acked_total} acknowledged \
         operations verified ({} under Always, {} under Buffered), {in_flight_found} in-flight \
         operations found whole",
        started.elapsed(),
        durable_modes[0],
        durable_modes[1]
    );
}
