//! Running the `convlog` binary from tests, and small helpers shared by
//! `tests/hostile.rs` and `tests/live_readers.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use convlog::Store;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Running the binary.

/// Held while this process spawns a child and while it closes a store it opened: a child
/// shares the parent's open files (the store's `LOCK` among them) until it execs, so without
/// this a store closed by one test thread can stay locked by a child another one is forking.
pub static FORK: Mutex<()> = Mutex::new(());

pub fn fork_guard() -> MutexGuard<'static, ()> {
    FORK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes a store with no child being forked meanwhile (see [`FORK`]).
pub fn close(store: Store) {
    let _guard = fork_guard();
    drop(store);
}

/// What one run of `convlog` did.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Whether stderr is one clear line: `convlog: <what and where>`, no panic.
    pub fn clear_error(&self) -> bool {
        let e = self.stderr.trim_end();
        e.lines().count() == 1 && e.starts_with("convlog: ") && !e.contains("panicked")
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| s.chars().take(2000).collect::<String>();
        write!(
            f,
            "`convlog {}`: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.status,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

/// Runs `convlog args...` with `stdin` (or none); waits for it.
pub fn convlog_in(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convlog"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = {
        let _guard = fork_guard();
        cmd.spawn().expect("run convlog")
    };
    let writer = child.stdin.take().map(|mut input| {
        let data = stdin.unwrap_or_default().to_vec();
        // The child may exit before reading it all: ignore a broken pipe.
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        })
    });
    let mut err = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("read stdout");
    let status = child.wait().expect("wait for convlog");
    let stderr = err_reader.join().expect("stderr reader");
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    Run {
        args: args.join(" "),
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn convlog(args: &[&str]) -> Run {
    convlog_in(args, None)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The seconds a racing test runs for (`CONVLOG_HOSTILE_SECS`, else `default`).
pub fn budget(default: f64) -> Duration {
    let secs = std::env::var("CONVLOG_HOSTILE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

/// The raw messages of `session`, read by a read-only library open.
pub fn messages(dir: &Path, session: &str) -> Vec<Value> {
    let store = Store::builder().read_only(true).open(dir).unwrap();
    store
        .messages(session)
        .raw()
        .map(|e| serde_json::from_slice(&e.unwrap().message).unwrap())
        .collect()
}

/// A message object of about `len` bytes carrying `n`.
pub fn msg(n: u64, len: usize) -> String {
    let pad = "x".repeat(len.saturating_sub(40));
    format!(r#"{{"role":"user","content":"{pad}","n":{n}}}"#)
}
