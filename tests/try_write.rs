//! `Store::try_append_batch_raw`: a write that never waits. It goes through when the store
//! is free and needs no sync, and otherwise is `Error::Busy` having changed nothing.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use convlog::{Durability, Error, MasterKey, Store};

const MSG: &[u8] = br#"{"role":"user","content":"hello"}"#;

/// Everything the store holds that a write could change: every session's messages (id,
/// LSN, bytes) and the log's last LSN.
type Contents = (Vec<(String, u64, u64, Vec<u8>)>, u64);

fn contents(store: &Store) -> Contents {
    let mut all = Vec::new();
    for s in store.sessions() {
        for e in store.messages(&s.id).raw() {
            let e = e.unwrap();
            all.push((s.id.clone(), e.interaction_id, e.lsn.0, e.message));
        }
    }
    all.sort();
    (all, store.last_lsn().0)
}

fn assert_busy(store: &Store, session: &str, reason_part: &str) {
    let before = contents(store);
    let r = store.try_append_batch_raw(session, &[MSG]);
    assert!(
        matches!(&r, Err(Error::Busy { reason, .. }) if reason.contains(reason_part)),
        "expected busy ({reason_part}): {r:?}"
    );
    assert_eq!(contents(store), before, "a busy write changed the store");
}

/// Takes the store's write lock as another process would (an open file description of
/// its own), once this process's lease (if any) has let it go.
fn hold_write_lock(dir: &Path) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .open(dir.join("LOCK"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.try_lock().is_err() {
        assert!(Instant::now() < deadline, "the write lock was never free");
        std::thread::sleep(Duration::from_millis(1));
    }
    f
}

#[test]
fn a_free_buffered_store_takes_the_write_as_append_batch_raw_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append_raw("s", MSG).unwrap();
    let r = store
        .try_append_batch_raw("s", &[MSG, br#"{"role":"assistant","content":"hi"}"#])
        .unwrap();
    assert_eq!(
        r.iter().map(|r| r.interaction_id).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(store.interaction_count("s"), 3);
    // Bad input is the usual typed error, and changes nothing.
    let before = contents(&store);
    assert!(matches!(
        store.try_append_batch_raw("s", &[b"[1]"]),
        Err(Error::InvalidMessage { .. })
    ));
    assert!(matches!(
        store.try_append_batch_raw("", &[MSG]),
        Err(Error::InvalidSessionId { .. })
    ));
    assert_eq!(contents(&store), before);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.interaction_count("s"), 3);
}

#[test]
fn a_write_that_would_sync_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .durability(Durability::Always)
        .open(dir.path())
        .unwrap();
    assert_busy(&store, "s", "durability Always");
    drop(store);
    let store = Store::builder()
        .durability(Durability::Interval(Duration::from_millis(1)))
        .open(dir.path())
        .unwrap();
    store.append_raw("s", MSG).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_busy(&store, "s", "interval is due");
    assert_eq!(store.interaction_count("s"), 1);
}

#[test]
fn another_processs_write_lock_or_another_threads_turn_makes_it_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append_raw("s", MSG).unwrap();
    let lock = hold_write_lock(dir.path());
    assert_busy(&store, "s", "another process's write");
    std::thread::scope(|scope| {
        // A thread waiting for the lock holds this process's turn meanwhile.
        let waiting = scope.spawn(|| store.append_raw("s", MSG).unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = store.try_append_batch_raw("s", &[MSG]);
            assert!(matches!(&r, Err(Error::Busy { .. })), "{r:?}");
            if matches!(&r, Err(Error::Busy { reason, .. }) if reason.contains("thread")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the other thread never took its turn"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(lock);
        assert_eq!(waiting.join().unwrap().interaction_id, 2);
    });
    // Free again: it goes through.
    assert_eq!(
        store.try_append_batch_raw("s", &[MSG]).unwrap()[0].interaction_id,
        3
    );
}

#[test]
fn sealing_a_full_segment_or_verifying_a_reopened_one_is_left_to_a_blocking_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .segment_size(4096)
        .open(dir.path())
        .unwrap();
    let mut written = 0;
    loop {
        match store.try_append_batch_raw("s", &[MSG]) {
            Ok(_) => written += 1,
            Err(Error::Busy { reason, .. }) => {
                assert!(reason.contains("full segment"), "{reason}");
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(written < 1000, "never full");
    }
    assert!(written > 10, "{written}");
    assert_busy(&store, "s", "full segment");
    // The blocking write seals it; the next segment takes writes that may not wait.
    store.append_raw("s", MSG).unwrap();
    store.try_append_batch_raw("s", &[MSG]).unwrap();
    assert_eq!(store.interaction_count("s"), written + 2);
    drop(store);
    // A clean close leaves the active segment's hint: the first write after the reopen
    // verifies the segment, which a write that may not wait leaves to a blocking one.
    let store = Store::builder()
        .segment_size(4096)
        .open(dir.path())
        .unwrap();
    assert_busy(&store, "s", "verifying");
    store.append_raw("s", MSG).unwrap();
    store.try_append_batch_raw("s", &[MSG]).unwrap();
    assert_eq!(store.interaction_count("s"), written + 4);
}

/// A new data key's entry goes to `KEYS` without a sync (the next sync of the log syncs it
/// first), so an encrypted session's first write need not wait.
#[test]
fn an_encrypted_sessions_first_write_creates_its_data_key_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    let open = || {
        Store::builder()
            .encryption(MasterKey::from_bytes(key))
            .open(dir.path())
            .unwrap()
    };
    let store = open();
    store.try_append_batch_raw("s", &[MSG]).unwrap();
    store.append_raw("s", MSG).unwrap();
    store.try_append_batch_raw("t", &[MSG, MSG]).unwrap();
    drop(store);
    let store = open();
    assert_eq!(store.interaction_count("s"), 2);
    assert_eq!(store.interaction_count("t"), 2);
    assert_eq!(store.read_entry("t", 2).unwrap().unwrap().message, MSG);
}

#[test]
fn a_compaction_by_another_process_is_read_by_a_blocking_write_first() {
    let fs = convlog::io::sim::SimFs::new(0x7e57);
    let open = || {
        Store::builder()
            .vfs(std::sync::Arc::new(fs.clone()))
            .segment_size(4096)
            .open(Path::new("/store"))
            .unwrap()
    };
    let (a, b) = (open(), open());
    for _ in 0..100 {
        a.append_raw("s", MSG).unwrap();
    }
    a.clear("s").unwrap();
    b.append_raw("t", MSG).unwrap();
    a.seal().unwrap();
    a.compact().unwrap();
    // `a` may still hold its write lease for a moment: wait for it, not for the compaction.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        match b.try_append_batch_raw("t", &[MSG]) {
            Err(Error::Busy { reason, .. }) if reason.contains("process's write") => {}
            Err(Error::Busy { reason, .. }) => break reason,
            r => panic!("expected busy: {r:?}"),
        }
        assert!(Instant::now() < deadline, "the other handle never let go");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(reason.contains("compacted"), "{reason}");
    assert_eq!(b.interaction_count("t"), 1);
    // A blocking write reads the new segments and goes through; then so does a `try_`.
    b.append_raw("t", MSG).unwrap();
    b.try_append_batch_raw("t", &[MSG]).unwrap();
    let t: Vec<_> = b.messages("t").raw().map(|e| e.unwrap().message).collect();
    assert_eq!(t, vec![MSG.to_vec(); 3]);
    assert_eq!(a.interaction_count("s"), 0);
}
