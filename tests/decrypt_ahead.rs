//! Decrypting ahead (`Options::decrypt_ahead`): a long stream of an encrypted store yields
//! exactly what it yields without a helper thread, errors included and in place, and its
//! helper is gone when the stream is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Mutex;

use convlog::format::{Decoded, SEGMENT_HEADER_LEN, SegmentHeader, decode_record};
use convlog::{MasterKey, Options, Store};

/// The tests count this process's helper threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The name a helper thread has (as `/proc` shows it).
const HELPER: &str = "convlog-ahead";

fn enc() -> Options {
    Store::builder()
        .encryption(MasterKey::from_bytes([9; 32]))
        .segment_size(4 << 20)
}

/// Threads of this process named as a helper (Linux: `/proc`; elsewhere the count is not
/// checked, and this says what it is expected to be).
fn helpers() -> usize {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == HELPER)
            .count(),
        Err(_) => usize::MAX,
    }
}

/// How many helpers one long stream gets: one, unless the machine has a single core.
fn one() -> usize {
    usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1)
}

/// Waits (a little) for the helper count to become `n` (a thread names itself once it
/// runs), and says what it was; `n` where threads cannot be counted.
fn helpers_become(n: usize) -> usize {
    for _ in 0..200 {
        match helpers() {
            usize::MAX => return n,
            h if h == n => return n,
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    helpers()
}

/// Asserts no helper is running now (a short wait first: one that started names itself
/// within it); nothing where threads cannot be counted.
fn assert_no_helper(why: &str) {
    std::thread::sleep(std::time::Duration::from_millis(50));
    let h = helpers();
    assert!(h == 0 || h == usize::MAX, "{why}: {h} helpers");
}

#[test]
fn a_stream_stays_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<convlog::RawMessages>();
    send_sync::<convlog::Messages>();
}

type Item = Result<(u64, u64, u64, Vec<u8>), String>;

fn items(stream: convlog::RawMessages) -> Vec<Item> {
    items_iter(stream)
}

/// `n` messages of 1.2 to 21 KiB (drawn from `seed`) in session "long", "other" between
/// them, in segments of 4 MiB: the helper's batches often end on their byte budget.
fn fill(store: &Store, seed: u64, n: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut long = Vec::new();
    for i in 1..=n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1200 + (x % (20 << 10)) as usize;
        long.push(common::payload(i, len));
        store.append_raw("long", &long[long.len() - 1]).unwrap();
        if i % 7 == 0 {
            store.append_raw("other", &common::payload(i, 300)).unwrap();
        }
    }
    long
}

/// Flips a ciphertext byte of each of `damaged`'s messages (interaction ids of "long", the
/// only session with more than one message per 7), in the store's segment files.
fn damage(dir: &std::path::Path, damaged: &[u64]) {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let mut id = 0;
    for seg in segs {
        let mut bytes = std::fs::read(&seg).unwrap();
        let salt = SegmentHeader::decode(&bytes).unwrap().salt;
        let mut at = SEGMENT_HEADER_LEN;
        let mut flips = Vec::new();
        while let Decoded::Record(r) = decode_record(&bytes[at..], salt, 64 << 20) {
            if r.meta.kind == convlog::Kind::Append && r.payload.len() > 1000 {
                id += 1;
                if damaged.contains(&id) {
                    flips.push(at + r.framed_len() / 2);
                }
            }
            at += r.framed_len();
        }
        for f in flips {
            bytes[f] ^= 0x20;
        }
        std::fs::write(&seg, &bytes).unwrap();
    }
}

#[test]
fn a_long_encrypted_stream_yields_the_same_with_or_without_its_helper_errors_in_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("CONVLOG_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x00de_c0de);
    println!("decrypt_ahead: seed {seed:#x} (set CONVLOG_SEED to change)");
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    // Every message of "long" is over 1000 bytes of payload once sealed; "other"'s not.
    let written = fill(&enc().open(dir.path()).unwrap(), seed, n);
    // Damage in the stream's own batches and in the helper's, and the last message.
    let damaged = [300, 301, 777, 1500, 2222, n];
    damage(dir.path(), &damaged);
    let without = enc().decrypt_ahead(false).open(dir.path()).unwrap();
    let mut stream = without.messages("long").raw();
    let mut expected = items_of(&mut stream, 600);
    assert_no_helper("decrypt_ahead is off");
    expected.extend(items(stream));
    let plain: Vec<bool> = without.messages("long").map(|e| e.is_ok()).collect();

    // A second handle of the same open store, with the helper: the setting is the handle's.
    let with = enc().open(dir.path()).unwrap();
    let mut stream = with.messages("long").raw();
    let mut seen: Vec<Item> = items_of(&mut stream, 600);
    assert_eq!(
        helpers_become(one()),
        one(),
        "a long stream has started its helper"
    );
    seen.extend(items_of(&mut stream, 1900));
    assert_eq!(
        helpers_become(one()),
        one(),
        "the helper reads to the end with its stream"
    );
    seen.extend(items(stream));
    assert_eq!(helpers_become(0), 0, "the helper ends with its stream");
    assert_eq!(seen.len(), n as usize);
    let errors: Vec<u64> = (1..=n).filter(|i| seen[*i as usize - 1].is_err()).collect();
    assert_eq!(
        errors, damaged,
        "exactly the damaged messages fail, in place"
    );
    assert!(
        seen == expected,
        "the same items with and without the helper"
    );
    for (i, item) in seen.iter().enumerate() {
        if let Ok((id, _, _, message)) = item {
            assert_eq!(*id, i as u64 + 1);
            assert_eq!(*message, written[i]);
        }
    }

    // A range from the middle, and a decoded stream.
    let part = items(with.range("long", 500..2800).raw());
    assert!(part == expected[499..2799], "a range yields the same too");
    let decoded: Vec<bool> = with.messages("long").map(|e| e.is_ok()).collect();
    assert_eq!(decoded, plain);
}

/// The first `n` items of `stream`.
fn items_of(stream: &mut convlog::RawMessages, n: usize) -> Vec<Item> {
    items_iter(stream.by_ref().take(n))
}

fn items_iter(it: impl Iterator<Item = convlog::Result<convlog::Entry<Vec<u8>>>>) -> Vec<Item> {
    it.map(|e| {
        e.map(|e| (e.interaction_id, e.lsn.0, e.timestamp.0, e.message))
            .map_err(|e| e.to_string())
    })
    .collect()
}

#[test]
fn a_stream_dropped_midway_stops_its_helper_and_short_reads_never_start_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = enc().open(dir.path()).unwrap();
    for i in 1..=2000 {
        store.append_raw("s", &common::payload(i, 500)).unwrap();
    }
    // Reads with too little left after their first 256 messages never start one.
    let no_helper_while = |mut read: convlog::RawMessages, len: usize| {
        assert_eq!(read.len(), len);
        assert_eq!(read.by_ref().take(len - 10).count(), len - 10);
        assert_no_helper(&format!("a read of {len} messages"));
        assert_eq!(read.count(), 10);
    };
    no_helper_while(store.tail("s", 1000).raw(), 1000);
    no_helper_while(store.range("s", 1000..).raw(), 1001);
    // A long tail does.
    let mut tail = store.tail("s", 1500).raw();
    assert_eq!(tail.by_ref().take(300).count(), 300);
    assert_eq!(helpers_become(one()), one());
    assert_eq!(tail.count(), 1200);
    assert_eq!(helpers_become(0), 0);
    // However many long streams, no more helpers than cores but one.
    let mut streams: Vec<_> = (0..4).map(|_| store.messages("s").raw()).collect();
    for stream in &mut streams {
        assert_eq!(stream.by_ref().take(300).count(), 300);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(helpers_become((cores - 1).min(4)), (cores - 1).min(4));
    // Appends while they read are not in their snapshots, with or without a helper.
    store.append_raw("s", &common::payload(2001, 500)).unwrap();
    for stream in &streams {
        assert_eq!(stream.len(), 1700);
    }
    let mut last = streams.pop().unwrap();
    drop(streams);
    if cores == 2 {
        // The one slot is free again: the stream that found none tries again a batch later.
        assert_eq!(last.by_ref().take(700).count(), 700);
        assert_eq!(helpers_become(1), 1, "a stream took the freed slot");
    }
    assert_eq!(last.map(|e| e.unwrap().interaction_id).last(), Some(2000));
    assert_eq!(
        helpers_become(0),
        0,
        "dropping the streams stopped their helpers"
    );
    // Without encryption there is nothing to decrypt: no helper.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Store::open(plain_dir.path()).unwrap();
    for i in 1..=2000 {
        plain.append_raw("s", &common::payload(i, 500)).unwrap();
    }
    let mut stream = plain.messages("s").raw();
    assert_eq!(stream.by_ref().take(300).count(), 300);
    assert_no_helper("a store without encryption");
    assert_eq!(stream.count(), 1700);
}

#[test]
fn a_key_destroyed_while_a_stream_reads_makes_its_helpers_messages_errors_as_without_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = |ahead: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = enc().decrypt_ahead(ahead).open(dir.path()).unwrap();
        for i in 1..=3000 {
            store.append_raw("s", &common::payload(i, 500)).unwrap();
        }
        let mut stream = store.messages("s").raw();
        assert_eq!(stream.by_ref().take(300).count(), 300);
        // Give a helper time to open its batches ahead.
        std::thread::sleep(std::time::Duration::from_millis(100));
        store.delete_session("s").unwrap();
        let rest: Vec<bool> = stream.map(|e| e.is_ok()).collect();
        assert_eq!(rest.len(), 2700);
        rest
    };
    let without = outcome(false);
    assert!(
        without.iter().all(|ok| !ok),
        "its key is gone: every later read fails"
    );
    assert!(outcome(true) == without, "the same with the helper");
}
