//! `Store::subscribe` wake-up latency (part of `--only multiprocess`, issue 11): how long
//! after an append returns a subscriber waiting for it has it, when the appender is a thread
//! of the same process, and when it is another process.
//!
//! Each append carries the wall-clock time (µs) just before the call; the subscriber takes
//! the time when the event reaches it. Appends are spaced [`GAP`] apart so that each one finds
//! the subscriber waiting. Same clock, same machine: the difference is the latency (plus the
//! append itself, a few µs).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use convlog::{LogEvent, Since, Store};

/// The hidden argument that makes the binary an appending child: `--tail-child DIR N`.
pub const CHILD_FLAG: &str = "--tail-child";
/// Time between two appends.
const GAP: Duration = Duration::from_millis(3);

/// p50 and p99 wake-up latency, µs: (same process, another process).
pub struct Latency {
    pub same: (f64, f64),
    pub cross: (f64, f64),
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn append_stamped(store: &Store, i: usize) {
    let msg = format!(
        r#"{{"role":"user","content":"ping {i}","sent_us":{}}}"#,
        now_micros()
    );
    store
        .append_raw("tail-latency", msg.as_bytes())
        .expect("append");
}

/// Waits for `n` messages on `sub`; their latencies in µs.
fn collect(sub: &mut convlog::Subscription, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(event) = sub
            .next_timeout(Duration::from_secs(10))
            .expect("subscribe")
        else {
            panic!("tail latency: no event within 10 s");
        };
        let got = now_micros();
        if let LogEvent::Message { entry, .. } = event {
            let v: serde_json::Value = serde_json::from_slice(&entry.message).expect("json");
            let sent = v["sent_us"].as_u64().unwrap_or(got);
            out.push(got.saturating_sub(sent) as f64);
        }
    }
    out
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Measures both latencies with `n` appends each, in a fresh store under `root`.
pub fn run(root: &Path, n: usize) -> Latency {
    let dir = root.join("tail-latency");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).expect("open");
    // Same process: a thread appends, this one waits.
    let mut sub = store.subscribe(Since::Now);
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                std::thread::sleep(GAP);
                append_stamped(&store, i);
            }
        })
    };
    let same = collect(&mut sub, n);
    appender.join().expect("appender");
    // Another process appends.
    let mut sub = store.subscribe(Since::Now);
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([CHILD_FLAG, dir.to_str().expect("utf-8 dir"), &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the appending child");
    let mut ready = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready);
    let cross = collect(&mut sub, n);
    let _ = child.wait();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Latency {
        same: percentiles(same),
        cross: percentiles(cross),
    }
}

/// The appending child: opens the store (shared with the parent), says `ready`, appends.
pub fn child(argv: &[String]) -> ! {
    let (Some(dir), Some(n)) = (argv.first(), argv.get(1).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: convlog-bench {CHILD_FLAG} DIR N");
        std::process::exit(2);
    };
    let store = Store::open(dir).expect("open the store");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for i in 0..n {
        std::thread::sleep(GAP);
        append_stamped(&store, i);
    }
    std::process::exit(0);
}
