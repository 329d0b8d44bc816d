//! I/O error injection (issue 3, part 4).
//!
//! A reference workload (appends, batches, `append_if`, pops, truncations, a clear, syncs,
//! a clean reopen and a process kill, on 4 KiB segments so segments rotate) is run once on a
//! clean simulated file system to count its file-system operations. Then, for every `n` up to
//! that count, it runs again with operation `n` failing (`EIO`, then `ENOSPC`), and with every
//! operation from `n` on failing (a full or dead disk). In every run:
//!
//! - nothing panics; every failure is a typed error (`Io`, or `Poisoned` afterwards);
//! - a failed `sync()`, or a write whose records were written but whose fsync failed, poisons
//!   the store: every later write and sync fails with `Poisoned`;
//! - an open that meets the fault fails with `Io`; without faults it succeeds;
//! - afterwards, with the faults cleared, a power cut (each tear) and a reopen hold a state the
//!   model's history passed through, with every acknowledged-durable unit, and a reopen without
//!   a crash holds every unit written (`tests/common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Op};
use convlog::Durability;
use convlog::io::sim::{Fault, SimFs};

const SEG: u64 = 4096;

/// The reference workload: about 60 operations, rotating segments several times.
fn workload(durability: u8) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..60u16 {
        let s = (i % 3) as u8;
        let len = 60 + (i * 97) % 900;
        ops.push(match i {
            7 | 31 => Op::Batch { s, n: 3, len },
            11 | 40 => Op::Pop { s, typed: i == 11 },
            15 => Op::AppendIf { s, delta: 0, len },
            16 => Op::AppendIf { s, delta: 1, len },
            19 => Op::Truncate { s: 0, keep: 2 },
            23 | 47 | 58 => Op::Sync,
            27 => Op::Reopen { durability },
            35 => Op::Clear { s: 1 },
            44 => Op::Kill { durability },
            _ => Op::Append {
                s,
                len,
                typed: i % 5 == 0,
            },
        });
    }
    ops
}

#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    failed_runs: u64,
    poisoned_runs: u64,
}

/// Runs the workload with `fault` armed, then checks it with faults cleared.
fn run(fault: (u64, Fault, bool), durability: u8, what: &str, tally: &mut Tally) {
    let mut h = Harness::with_faults(fault.0, SEG, common::durability(durability), &[fault])
        .unwrap_or_else(|v| panic!("{what}: {v}"));
    for op in workload(durability) {
        h.apply(&op).unwrap_or_else(|v| panic!("{what}: {v}"));
    }
    tally.runs += 1;
    if h.stats.failed_ops + h.stats.faults_fired > 0 {
        tally.failed_runs += 1;
    }
    if h.stats.poisonings > 0 {
        tally.poisoned_runs += 1;
    }
    h.finish()
        .unwrap_or_else(|v| panic!("{what}: after clearing faults: {v}"));
}

/// How many file-system operations the workload makes on a clean file system.
fn clean_ops(durability: u8) -> u64 {
    let mut h = Harness::new(1, SEG, common::durability(durability)).unwrap();
    for op in workload(durability) {
        h.apply(&op).unwrap();
    }
    let n = h.fs.ops();
    h.finish().unwrap();
    n
}

fn sweep(durability: u8, sticky: bool) {
    let total = clean_ops(durability);
    let mut tally = Tally::default();
    let faults: &[Fault] = if sticky {
        &[Fault::NoSpace]
    } else {
        &[Fault::Io, Fault::NoSpace]
    };
    for n in 1..=total {
        for &fault in faults {
            let what = format!(
                "{} {fault:?} at operation {n} of {total} ({:?})",
                if sticky { "sticky" } else { "one" },
                common::durability(durability)
            );
            run((n, fault, sticky), durability, &what, &mut tally);
        }
    }
    eprintln!(
        "faults ({:?}, {}): {total} operations in the clean run; {} runs, {} ended with a failed \
         operation, {} had to poison",
        common::durability(durability),
        if sticky { "sticky" } else { "single" },
        tally.runs,
        tally.failed_runs,
        tally.poisoned_runs
    );
    assert!(
        tally.failed_runs > 0 && tally.poisoned_runs > 0,
        "{tally:?}"
    );
}

#[test]
fn every_single_fault_under_always() {
    sweep(0, false);
}

#[test]
fn every_single_fault_under_buffered() {
    sweep(1, false);
}

#[test]
fn disk_fails_for_good_from_every_point() {
    sweep(0, true);
}

/// A failed fsync poisons the store: later writes and syncs fail with `Poisoned`, reads go
/// on, and a reopen re-derives the state from disk.
#[test]
fn failed_fsync_poisons_until_reopen() {
    use std::sync::Arc;
    let fs = SimFs::new(5);
    let store = convlog::Store::builder()
        .vfs(Arc::new(fs.clone()))
        .durability(Durability::Always)
        .open(common::DIR)
        .unwrap();
    store.append_raw("s", &common::payload(1, 50)).unwrap();
    fs.fail_next_sync(Fault::Io);
    let err = store.append_raw("s", &common::payload(2, 50)).unwrap_err();
    assert!(
        matches!(
            err,
            convlog::Error::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err:?}"
    );
    for _ in 0..2 {
        let e = store.append_raw("s", &common::payload(3, 50)).unwrap_err();
        assert!(matches!(e, convlog::Error::Poisoned { .. }), "{e:?}");
        let e = store.sync().unwrap_err();
        assert!(matches!(e, convlog::Error::Poisoned { .. }), "{e:?}");
        let e = store.clear("s").unwrap_err();
        assert!(matches!(e, convlog::Error::Poisoned { .. }), "{e:?}");
    }
    // Reads still work: both messages are in the index (the second was written, not synced).
    assert_eq!(store.messages("s").count(), 2);
    let crashed = fs.crash(convlog::io::sim::Tear::DropUnsynced);
    drop(store);
    let store = convlog::Store::builder()
        .vfs(Arc::new(crashed))
        .open(common::DIR)
        .unwrap();
    assert_eq!(
        store.interaction_count("s"),
        1,
        "only the synced append survives"
    );
    store.append_raw("s", &common::payload(4, 50)).unwrap();
}

/// Regression (found by `disk_fails_for_good_from_every_point`, operation 296): a batch
/// write that fails with `ENOSPC` after landing part of its bytes, and whose undo (zeroing
/// them again) also fails after landing part of *its* bytes, leaves zeros followed by the
/// rest of the partial batch, with valid record headers in it. Recovery then called the
/// unacknowledged tail corruption, and the store could not be opened after the disk was
/// freed. A failed write must leave a tail that recovery classifies as torn.
#[test]
fn failed_write_and_failed_undo_leave_an_openable_store() {
    use std::sync::Arc;
    for seed in 0..64 {
        let fs = SimFs::new(seed);
        let open = |fs: &SimFs| {
            convlog::Store::builder()
                .vfs(Arc::new(fs.clone()))
                .durability(Durability::Always)
                .segment_size(1 << 20)
                .open(common::DIR)
        };
        let store = open(&fs).unwrap();
        store.append_raw("s", &common::payload(1, 100)).unwrap();
        let batch: Vec<Vec<u8>> = (2..10).map(|i| common::payload(i, 150)).collect();
        fs.fail_sticky(fs.ops() + 1, Fault::NoSpace);
        assert!(store.append_batch_raw("s", &batch).is_err());
        common::kill(&fs, store); // the disk is freed (faults cleared) and the process restarts
        let store = open(&fs).unwrap_or_else(|e| {
            panic!("seed {seed}: the store does not open after a failed write: {e}")
        });
        assert_eq!(store.interaction_count("s"), 1, "seed {seed}");
    }
}

/// Review finding: the cut of a torn tail found before the first append behind a hint
/// (after a reopen from that hint) did not poison the store when its fdatasync failed, so the
/// next append could go after a cut that never reached the disk.
#[test]
fn a_failed_sync_of_the_cut_before_the_first_append_poisons() {
    use std::path::PathBuf;
    use std::sync::Arc;
    let dir = PathBuf::from("/d");
    let seg = dir.join("00000000000000000001.seg");
    let hint = dir.join("00000000000000000001.hint");
    let mut checked = false;
    for n in 1..40u64 {
        let fs = SimFs::new(7);
        let open = || {
            convlog::Store::builder()
                .vfs(Arc::new(fs.clone()))
                .open(&dir)
                .unwrap()
        };
        open().append("s", &serde_json::json!({"m": 1})).unwrap();
        let h = fs.read_file(&hint).unwrap();
        let end = u64::from_le_bytes(h[32..40].try_into().unwrap()) as usize;
        let mut b = fs.read_file(&seg).unwrap();
        if b.len() < end + 600 {
            b.resize(end + 600, 0);
        }
        b[end + 100..end + 200].fill(0x5a); // torn bytes past the hint's end
        fs.write_file(&seg, &b);
        let store = open();
        fs.fail_at(fs.ops() + n, Fault::Io);
        if let Err(convlog::Error::Io {
            op: "fdatasync",
            path,
            ..
        }) = store.append("s", &serde_json::json!({"m": 2}))
            && path == seg
        {
            checked = true;
            fs.clear_faults();
            let again = store.append("s", &serde_json::json!({"m": 3}));
            assert!(
                matches!(again, Err(convlog::Error::Poisoned { .. })),
                "next append: {again:?}"
            );
        }
    }
    assert!(checked, "no fault landed on the cut's fdatasync");
}

/// The sweeps above number file operations, and a fuzz input or a seed names its faults by
/// number: the operations a workload makes must not depend on how fast it runs. (A shared
/// writer keeps the write lock across writes that come back to back, and skips the catch-up
/// with other processes while it does; on the simulated file system it never does, so the
/// catch-up's reads are made on every write however the writes are timed.) Nor may the bytes
/// it writes: where a torn write ends up as a valid record depends on them, so the simulated
/// file system gives the store its clock, its segments' salts and an encrypted store's
/// random bytes (`Vfs::now`, `Vfs::salt`, `Vfs::seeded_random`).
#[test]
fn file_operations_and_bytes_do_not_depend_on_timing() {
    for encrypted in [false, true] {
        same_operations_and_bytes_however_timed(encrypted);
    }
}

fn same_operations_and_bytes_however_timed(encrypted: bool) {
    let run = |pause: Option<std::time::Duration>| {
        let fs = SimFs::new(7);
        let mut opts = convlog::Options::default()
            .vfs(std::sync::Arc::new(fs.clone()))
            .durability(Durability::Buffered)
            .segment_size(4096);
        if encrypted {
            opts = opts.encryption(convlog::MasterKey::from_bytes([7; 32]));
        }
        let store = opts.open(common::DIR).unwrap();
        for i in 0..30 {
            store
                .append_raw(&format!("s{}", i % 3), br#"{"role":"user","content":"hi"}"#)
                .unwrap();
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
        }
        store.delete_session("s1").unwrap();
        store.seal().unwrap();
        store.compact().unwrap();
        drop(store);
        let image: Vec<_> = fs
            .paths()
            .into_iter()
            .map(|p| (fs.read_file(&p), p))
            .collect();
        (fs.ops(), image)
    };
    let back_to_back = run(None);
    let paused = run(Some(std::time::Duration::from_millis(2)));
    assert_eq!(
        back_to_back.0, paused.0,
        "operations (encrypted: {encrypted})"
    );
    assert!(back_to_back.1.len() > 3, "{:?}", back_to_back.1.len());
    for ((a, path), (b, _)) in back_to_back.1.iter().zip(&paused.1) {
        assert!(
            a == b,
            "{} differs (encrypted: {encrypted})",
            path.display()
        );
    }
    assert_eq!(back_to_back.1.len(), paused.1.len());
    assert_eq!(back_to_back, run(None));
}

/// A write cut short by an I/O error is wiped; when the wipe fails too, the store is poisoned
/// and the write is indeterminate (`Store::append`): a record without payload ends in its
/// timestamp's high bytes, zeros like the preallocated space after it, so a short write can
/// leave it whole, and an open after a power cut finds it. The model allows that unit, and
/// only that one. Here a delete is cut short under a disk that fails every operation from
/// some point on, for many seeds (each cuts the write, and the wipe, at other lengths);
/// then come the harness's final power cuts (each tear), taken with the poisoned store still
/// open, and reopens.
#[test]
fn a_failed_write_whose_wipe_failed_may_be_found_whole_and_nothing_else() {
    let (mut found, mut runs) = (0, 0);
    for seed in 0..6000u64 {
        for after in 4..16u8 {
            let ops = [
                Op::Append {
                    s: 0,
                    len: 40,
                    typed: false,
                },
                Op::Fault {
                    after,
                    kind: 1,
                    sticky: true,
                },
                Op::Delete { s: 0 },
            ];
            let stats = common::run_ops(seed, SEG, Durability::Buffered, &ops)
                .unwrap_or_else(|v| panic!("seed {seed}, after {after}: {v}"));
            found += stats.indeterminate_found;
            runs += 1;
        }
    }
    // Rare: the cut must keep 43 of the delete's 44 bytes (its last byte is a zero), and
    // the failed wipe after it must land none of its zeros (21 of the 72 000 runs when
    // this was written; the runs are seeded, so the count moves only when the operations of a
    // write do: the first write's check for a lost `KEYS` moved them).
    assert!(
        found > 0,
        "no run left the failed delete whole ({runs} runs)"
    );
    eprintln!("{found} of {runs} runs found the failed delete whole");
}
