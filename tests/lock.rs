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

/// Child side of the lease test: append 50 messages to session "c" of a shared store.
#[test]
fn lease_child() {
    let Ok(dir) = std::env::var("CONVLOG_LEASE_CHILD_DIR") else {
        return;
    };
    let store = Store::open(&dir).unwrap();
    for i in 0..50 {
        store
            .append("c", &json!({"role": "user", "content": i}))
            .unwrap();
    }
    store.sync().unwrap();
}

/// Runs [`lease_child`] on `dir` and waits for it, at most `limit`.
fn run_lease_child(dir: &std::path::Path, limit: std::time::Duration) -> std::time::Duration {
    use std::process::{Command, Stdio};
    let started = std::time::Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lease_child", "--test-threads=1"])
        .env("CONVLOG_LEASE_CHILD_DIR", dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the child failed");
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("another process could not write within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_writer_keeps_the_write_lock_only_while_it_writes_back_to_back() {
    // Appends of one process keep the write lock between them (a lease), but a writer that
    // went idle, or one that never stops writing, still lets another process write.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append("p", &json!({"role": "user", "content": 0}))
        .unwrap();
    // Idle, the store open: the child writes at once.
    let limit = std::time::Duration::from_secs(20);
    run_lease_child(dir.path(), limit);
    assert_eq!(store.interaction_count("c"), 50);
    // Writing without a pause meanwhile.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .append("p", &json!({"role": "user", "content": n}))
                    .unwrap();
                n += 1;
            }
            n
        });
        run_lease_child(dir.path(), limit);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert_eq!(store.interaction_count("c"), 100);
    assert_eq!(store.interaction_count("p"), 1 + written);
    let ids: Vec<u64> = store
        .messages("c")
        .map(|e| e.unwrap().interaction_id)
        .collect();
    assert_eq!(
        ids,
        (1..=100).collect::<Vec<_>>(),
        "gapless across processes"
    );
}
