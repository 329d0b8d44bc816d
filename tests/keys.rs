//! Idempotent appends: a retry with a key the session already used returns the original
//! receipt and writes nothing, in this process, after a clean reopen (hint files), after a
//! reopen that scans, and after a power cut; pops, truncations and clears forget the keys of
//! the messages they remove.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use convlog::io::Vfs;
use convlog::io::sim::{SimFs, Tear};
use convlog::{Durability, Error, Store};
use serde_json::json;

mod store_files;
use store_files::{all_files, contains};

fn open(fs: &SimFs) -> Store {
    open_with(fs, Durability::Always)
}

fn open_with(fs: &SimFs, durability: Durability) -> Store {
    Store::builder()
        .vfs(Arc::new(fs.clone()))
        .durability(durability)
        .segment_size(4096)
        .open("/k")
        .unwrap()
}

#[test]
fn a_retry_returns_the_original_receipt_and_writes_nothing() {
    let fs = SimFs::new(1);
    let store = open(&fs);
    let first = store
        .append_with_key("s", "req-1", &json!({"role": "user", "content": "hi"}))
        .unwrap();
    let lsn = store.last_lsn();
    let again = store
        .append_with_key("s", "req-1", &json!({"role": "user", "content": "hi"}))
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.last_lsn(), lsn, "nothing written");
    assert_eq!(store.interaction_count("s"), 1);
    // The same key in another session is another key.
    let other = store
        .append_with_key("t", "req-1", &json!({"a": 1}))
        .unwrap();
    assert_eq!(other.interaction_id, 1);
    // A batch under one key: all of it, once.
    let batch = [br#"{"n":1}"#.as_slice(), br#"{"n":2}"#];
    let r = store
        .append_batch_raw_with_key("s", "req-2", &batch)
        .unwrap();
    assert_eq!(
        r.iter().map(|r| r.interaction_id).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        store
            .append_batch_raw_with_key("s", "req-2", &batch)
            .unwrap(),
        r
    );
    assert_eq!(store.interaction_count("s"), 3);
    assert!(matches!(
        store.append_with_key("s", "", &json!({})),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        store.append_with_key("s", &"k".repeat(257), &json!({})),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn keys_survive_reopens_with_and_without_hints_and_a_power_cut() {
    let fs = SimFs::new(2);
    let store = open(&fs);
    let mut receipts = Vec::new();
    for i in 0..60 {
        let m = json!({"role": "user", "content": format!("message {i} {}", "x".repeat(80))});
        receipts.push(store.append_with_key("s", &format!("k{i}"), &m).unwrap());
    }
    assert!(store.segment_ids().len() > 2, "rotations happened");
    drop(store);
    let check = |store: &Store, what: &str| {
        let lsn = store.last_lsn();
        for (i, want) in receipts.iter().enumerate() {
            let got = store
                .append_with_key("s", &format!("k{i}"), &json!({"retry": true}))
                .unwrap();
            assert_eq!(&got, want, "{what}: key k{i}");
        }
        assert_eq!(store.last_lsn(), lsn, "{what}: a retry wrote something");
    };
    check(&open(&fs), "reopen from hints");
    let dir = std::path::Path::new("/k");
    for name in fs.list(dir).unwrap() {
        if name.ends_with(".hint") {
            fs.remove_file(&dir.join(name)).unwrap();
        }
    }
    check(&open(&fs), "reopen by scan");
    let crashed = fs.crash(Tear::Sectors(512));
    check(&open(&crashed), "after a power cut");
}

#[test]
fn removing_a_keyed_message_forgets_its_key() {
    let fs = SimFs::new(3);
    let store = open(&fs);
    store.append_with_key("s", "a", &json!({"n": 1})).unwrap();
    store.append_with_key("s", "b", &json!({"n": 2})).unwrap();
    store.pop_raw("s").unwrap();
    let b = store.append_with_key("s", "b", &json!({"n": 3})).unwrap();
    assert_eq!(b.interaction_id, 2, "a popped message's key is forgotten");
    assert_eq!(
        store
            .append_with_key("s", "a", &json!({"n": 9}))
            .unwrap()
            .interaction_id,
        1,
        "a kept message's key is remembered"
    );
    store.clear("s").unwrap();
    assert_eq!(
        store
            .append_with_key("s", "a", &json!({"n": 4}))
            .unwrap()
            .interaction_id,
        1
    );
    assert_eq!(store.interaction_count("s"), 1);
    drop(store);
    let store = open(&fs);
    let r = store.append_with_key("s", "a", &json!({"n": 5})).unwrap();
    assert_eq!((r.interaction_id, store.interaction_count("s")), (1, 1));
}

/// What a key costs the index: measured, and printed for the notes.
#[test]
fn index_memory_per_key_is_bounded() {
    let n = 5000u64;
    let index_bytes = |keyed: bool| {
        let store = Store::builder()
            .vfs(Arc::new(SimFs::new(4)))
            .open("/m")
            .unwrap();
        for i in 0..n {
            let key = format!("{i:08}-aaaa-bbbb-cccc-dddddddddddd"); // 36 bytes, like a UUID
            if keyed {
                store.append_with_key("s", &key, &json!({"a": 1})).unwrap();
            } else {
                store.append_raw("s", br#"{"a":1}"#).unwrap();
            }
        }
        store.stats().index_bytes as f64
    };
    let per_key = (index_bytes(true) - index_bytes(false)) / n as f64;
    println!("index memory per 36-byte key: {per_key:.1} B");
    assert!(per_key > 36.0 && per_key < 250.0, "{per_key} B per key");
}

#[test]
fn an_empty_batch_under_a_known_key_is_a_retry_and_an_unknown_one_writes_nothing() {
    let fs = SimFs::new(21);
    let store = open(&fs);
    let batch: Vec<Vec<u8>> = (0..2)
        .map(|i| format!(r#"{{"role":"user","content":"m{i}"}}"#).into_bytes())
        .collect();
    let first = store.append_batch_raw_with_key("s", "k", &batch).unwrap();
    assert_eq!(first.len(), 2);
    let last = store.last_lsn();
    let none: [&[u8]; 0] = [];
    assert_eq!(
        store.append_batch_raw_with_key("s", "k", &none).unwrap(),
        first
    );
    assert!(
        store
            .append_batch_raw_with_key("s", "other", &none)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.last_lsn(), last, "nothing written");
    assert_eq!(store.interaction_count("s"), 2);
}

/// Regression (found by the `ops_crash` fuzz target): an empty keyed batch consults the log
/// (is the key remembered?), so on a failing disk it may fail, having written nothing.
#[test]
fn an_empty_keyed_batch_on_a_failing_disk_fails_cleanly() {
    let fs = SimFs::new(22);
    let store = open(&fs);
    store
        .append_batch_raw_with_key("s", "k", &[br#"{"role":"user","content":"m"}"#])
        .unwrap();
    let last = store.last_lsn();
    fs.fail_sticky(fs.ops() + 1, convlog::io::sim::Fault::NoSpace);
    let none: [&[u8]; 0] = [];
    // Whatever it returns, nothing is written; an error is an I/O error.
    match store.append_batch_raw_with_key("s", "other", &none) {
        Ok(r) => assert!(r.is_empty()),
        Err(e) => assert!(matches!(e, Error::Io { .. }), "{e}"),
    }
    fs.clear_faults();
    assert_eq!(store.last_lsn(), last);
    assert_eq!(store.interaction_count("s"), 1);
}

/// Regression (found by the `ops_crash` fuzz target): the index keeps keys as hashes, so a
/// retry reads the key's record to confirm the hit. A read that failed counted as "not this
/// key": the retry then appended its messages a second time, or, as an empty batch, returned
/// no receipts. Now whether the key is remembered is either known or the retry fails with an
/// I/O error, having written nothing and leaving the store usable. A failing disk (every
/// operation from the `at`-th of the retry on) is placed at each step of a retry in turn;
/// with or without it, the messages are in the session once.
#[test]
fn a_retry_whose_key_cannot_be_read_fails_and_writes_nothing() {
    use convlog::io::sim::Fault;
    let batch: Vec<Vec<u8>> = (0..3)
        .map(|i| format!(r#"{{"role":"user","content":"m{i}"}}"#).into_bytes())
        .collect();
    let none: [&[u8]; 0] = [];
    let open = |fs: &SimFs| open_with(fs, Durability::Buffered);
    let mut failed = 0;
    for at in 1..=12u64 {
        for (empty, fault) in [
            (false, Fault::Io),
            (true, Fault::Io),
            (false, Fault::NoSpace),
        ] {
            let fs = SimFs::new(23);
            let store = open(&fs);
            let first = store.append_batch_raw_with_key("s", "k", &batch).unwrap();
            let last = store.last_lsn();
            fs.fail_sticky(fs.ops() + at, fault);
            let r = if empty {
                store.append_batch_raw_with_key("s", "k", &none)
            } else {
                store.append_batch_raw_with_key("s", "k", &batch)
            };
            fs.clear_faults();
            let what = format!("failing from +{at} ({fault:?}, empty {empty})");
            match r {
                Ok(r) => assert_eq!(r, first, "{what}: a retry's receipts"),
                Err(e) => {
                    assert!(matches!(e, Error::Io { .. }), "{what}: {e}");
                    failed += 1;
                }
            }
            assert_eq!(store.last_lsn(), last, "{what}: nothing written");
            assert_eq!(store.interaction_count("s"), 3, "{what}");
            // With the disk well again, the retry is a retry (nothing poisoned the store),
            // also after a reopen.
            assert_eq!(
                store.append_batch_raw_with_key("s", "k", &batch).unwrap(),
                first,
                "{what}"
            );
            drop(store);
            let store = open(&fs);
            assert_eq!(store.interaction_count("s"), 3, "{what}: after a reopen");
        }
    }
    assert!(failed > 0, "no fault reached the retry's read of its key");
}

/// Format 6: a key rides on the first append it names, so a keyed append is one record, and
/// a compaction keeps the key of a live batch and drops the key block of a forgotten one
/// (its kept messages stay, without it).
#[test]
fn a_keyed_append_is_one_record_and_compaction_drops_only_forgotten_keys() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Store::builder()
            .durability(Durability::Buffered)
            .open(dir.path())
            .unwrap()
    };
    let store = open();
    let before = store.last_lsn();
    let a = store
        .append_with_key("s", "KEY-A-LIVE", &json!({"n": 1}))
        .unwrap();
    assert_eq!(
        store.last_lsn().0,
        before.0 + 1,
        "one record per keyed append"
    );
    let batch = [br#"{"n":2}"#.as_slice(), br#"{"n":3}"#, br#"{"n":4}"#];
    let b = store
        .append_batch_raw_with_key("s", "KEY-B-FORGOTTEN", &batch)
        .unwrap();
    assert_eq!(store.last_lsn().0, before.0 + 4, "one record per message");
    // Message 4 goes: key B names it, so B is forgotten, and messages 2 and 3 stay.
    assert_eq!(store.truncate("s", 3).unwrap(), 1);
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert!(report.records_dropped > 0, "{report:?}");
    let files = all_files(dir.path());
    let found = |needle: &[u8]| files.iter().any(|(_, b)| contains(b, needle));
    assert!(found(b"KEY-A-LIVE"), "a live key is kept");
    assert!(
        !found(b"KEY-B-FORGOTTEN"),
        "a forgotten key's block is gone from every file"
    );
    let check = |store: &Store, what: &str| {
        let n: Vec<u64> = store
            .messages("s")
            .raw()
            .map(|e| e.unwrap().interaction_id)
            .collect();
        assert_eq!(n, [1, 2, 3], "{what}: the messages");
        let lsn = store.last_lsn();
        let again = store
            .append_with_key("s", "KEY-A-LIVE", &json!({"n": 1}))
            .unwrap();
        assert_eq!(again, a, "{what}: a live key's retry");
        assert_eq!(store.last_lsn(), lsn, "{what}: the retry wrote nothing");
    };
    check(&store, "after the compaction");
    drop(store);
    let store = open();
    check(&store, "after a reopen");
    // B was forgotten: appending under it again is a new append.
    let again = store
        .append_batch_raw_with_key("s", "KEY-B-FORGOTTEN", &batch[..1])
        .unwrap();
    assert_eq!(again[0].interaction_id, 4);
    assert_ne!(again[0], b[0]);
}

/// A retry whose keyed record fails its checksum (damaged on disk) cannot tell whether the
/// key is logged: it fails with `Error::Corrupt` and writes nothing, rather than appending
/// the message a second time.
#[test]
fn a_retry_whose_keyed_record_is_damaged_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    let marker = "DAMAGE-ME-HERE";
    store
        .append_with_key("s", "req", &json!({"content": marker}))
        .unwrap();
    store.sync().unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    bytes[at] ^= 0x20;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&bytes[at..=at], at as u64).unwrap();
    }
    let lsn = store.last_lsn();
    let r = store.append_with_key("s", "req", &json!({"content": marker}));
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    assert_eq!(store.last_lsn(), lsn, "nothing written");
    assert_eq!(store.interaction_count("s"), 1);
}
