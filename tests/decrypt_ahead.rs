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

/// Threads of this process named as a helper.
fn helpers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == HELPER)
        .count()
}

/// Waits (a little) for the helper count to become `n`, and says what it was (a thread
/// names itself once it runs).
fn helpers_become(n: usize) -> usize {
    for _ in 0..200 {
        if helpers() == n {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    helpers()
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
    assert_eq!(helpers_become(0), 0, "no helper when decrypt_ahead is off");
    expected.extend(items(stream));
    let plain: Vec<bool> = without.messages("long").map(|e| e.is_ok()).collect();
    drop(without);

    let with = enc().open(dir.path()).unwrap();
    let mut stream = with.messages("long").raw();
    let mut seen: Vec<Item> = items_of(&mut stream, 600);
    assert_eq!(helpers_become(1), 1, "a long stream has started its helper");
    seen.extend(items_of(&mut stream, 1900));
    assert_eq!(helpers(), 1, "the helper reads to the end with its stream");
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
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(helpers(), 0, "a read of {len} messages started a helper");
        assert_eq!(read.count(), 10);
    };
    no_helper_while(store.tail("s", 1000).raw(), 1000);
    no_helper_while(store.range("s", 1000..).raw(), 1001);
    // A long tail does.
    let mut tail = store.tail("s", 1500).raw();
    assert_eq!(tail.by_ref().take(300).count(), 300);
    assert_eq!(helpers_become(1), 1);
    assert_eq!(tail.count(), 1200);
    assert_eq!(helpers_become(0), 0);
    let mut stream = store.messages("s").raw();
    assert_eq!(stream.by_ref().take(300).count(), 300);
    assert_eq!(helpers_become(1), 1);
    // Appends while it reads are not in its snapshot, with or without the helper.
    store.append_raw("s", &common::payload(2001, 500)).unwrap();
    assert_eq!(stream.len(), 1700);
    drop(stream);
    assert_eq!(
        helpers_become(0),
        0,
        "dropping the stream stopped its helper"
    );
    // Without encryption there is nothing to decrypt: no helper.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Store::open(plain_dir.path()).unwrap();
    for i in 1..=2000 {
        plain.append_raw("s", &common::payload(i, 500)).unwrap();
    }
    let mut stream = plain.messages("s").raw();
    assert_eq!(stream.by_ref().take(300).count(), 300);
    assert_eq!(helpers(), 0);
    assert_eq!(stream.count(), 1700);
}
