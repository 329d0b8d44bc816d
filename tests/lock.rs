//! The write lock across processes. In a test binary of its own: a child spawned while other
//! tests of the same process hold stores would briefly share their lock file descriptors
//! (between fork and exec), which could make their reopen see `Locked`.

use convlog::{Error, Store};
use serde_json::json;

/// Child side of the lock test: hold the store open until stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("CONVLOG_LOCK_CHILD_DIR") else {
        return;
    };
    let _store = Store::builder().exclusive(true).open(&dir).unwrap();
    println!("LOCKED");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn any_writer_fails_fast_with_locked_beside_an_exclusive_one() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path())
        .unwrap()
        .append("s", &json!({"role": "user", "content": "hi"}))
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONVLOG_LOCK_CHILD_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LOCKED") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    for exclusive in [false, true] {
        let started = std::time::Instant::now();
        let err = Store::builder()
            .exclusive(exclusive)
            .open(dir.path())
            .unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "fails fast"
        );
    }
    let ro = Store::builder().read_only(true).open(dir.path()).unwrap();
    assert_eq!(ro.interaction_count("s"), 1);
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        Store::open(dir.path()).is_ok(),
        "the lock goes with its holder"
    );
}
