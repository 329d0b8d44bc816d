//! Files in a store directory that are not regular files (here, FIFOs) are foreign: never
//! opened as a segment, hint or lock, never waited on.
//!
//! In a test binary of its own, with one test: it spawns `mkfifo`, and a child spawned while
//! other tests of the same process hold stores would briefly share their lock file
//! descriptors (between fork and exec), which could make their reopen see `Locked`. Here the
//! children run only while no store is open.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use convlog::{Error, Store};
use serde_json::json;

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Opens the store in `dir` on a thread: the result, or a panic if it takes over 10 s.
fn open_promptly(dir: &Path, read_only: bool) -> convlog::Result<Store> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(Store::builder().read_only(read_only).open(&dir));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("opening the store (read_only: {read_only}) blocked on a FIFO"))
}

fn count(store: &Store) -> u64 {
    store.interaction_count("s")
}

#[test]
fn fifos_in_the_store_directory_are_ignored_or_refused_never_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let store = Store::open(d).unwrap();
        store
            .append("s", &json!({"role": "user", "content": "hi"}))
            .unwrap();
    }
    let hint = d.join("00000000000000000001.hint");
    assert!(hint.is_file(), "the clean close wrote the hint");

    // A FIFO where the hint should be: ignored as a bad hint; the segment is scanned.
    mkfifo(&hint);
    // And FIFOs with names a store uses: the next segment, a hint's temporary file, junk.
    mkfifo(&d.join("00000000000000000099.seg"));
    mkfifo(&d.join("00000000000000000002.hint"));
    mkfifo(&d.join("stray"));
    let ro = open_promptly(d, true).unwrap();
    assert_eq!(count(&ro), 1);
    assert_eq!(ro.segment_ids().len(), 1, "a FIFO is never a segment");
    drop(ro);
    let rw = open_promptly(d, false).unwrap();
    assert_eq!(count(&rw), 1);
    rw.append("s", &json!({"role": "assistant", "content": "hello"}))
        .unwrap();
    drop(rw);
    // The clean close put a real hint in the FIFO's place, and the next open uses it.
    assert!(hint.is_file());
    let rw = open_promptly(d, false).unwrap();
    assert_eq!(count(&rw), 2);
    drop(rw);

    // A FIFO where the lock file should be: a writable open is a typed error, at once;
    // a read-only open takes no lock and works.
    mkfifo(&d.join("LOCK"));
    let err = open_promptly(d, false).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "open", path, .. } if path.ends_with("LOCK")),
        "{err}"
    );
    assert!(err.to_string().contains("FIFO"), "{err}");
    assert_eq!(count(&open_promptly(d, true).unwrap()), 2);
}
