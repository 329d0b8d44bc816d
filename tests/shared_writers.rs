//! Several writers on one store, deterministically (issue 11): what a writer that died
//! mid-write or mid-rotation leaves is repaired by the next one, and two store handles on the
//! simulated file system behave as two processes, checked against a model through crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{Rng, payload, seed_from_env};
use convlog::io::sim::{SimFs, Tear};
use convlog::{Durability, RecoveryMode, SegmentId, Store};

/// The end of the records of a segment file: its last non-zero byte, plus one.
fn records_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

#[test]
fn a_torn_write_of_a_dead_writer_is_cut_by_the_next_writer_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    writer.append_raw("s", &payload(1, 300)).unwrap();
    let reader = Store::builder().read_only(true).open(dir.path()).unwrap();
    // Another process died half-way through writing a record: its first 100 bytes landed.
    let seg = dir.path().join(SegmentId(1).file_name());
    let end = records_end(&seg);
    let whole = std::fs::read(&seg).unwrap()[32..end].to_vec(); // (a record's bytes)
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&whole[..100.min(whole.len())], end as u64)
            .unwrap();
    }
    // Readers see the committed log and never take the torn bytes for damage.
    assert_eq!(reader.interaction_count("s"), 1);
    assert!(reader.messages("s").all(|m| m.is_ok()));
    // The next append, under the write lock, cuts them (copied aside first).
    let r = writer.append_raw("s", &payload(2, 300)).unwrap();
    assert_eq!((r.interaction_id, r.lsn.0), (2, 2));
    let quarantined = std::fs::read_dir(dir.path().join(convlog::QUARANTINE_DIR))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1, "the torn bytes are kept aside");
    assert_eq!(reader.interaction_count("s"), 2);
    drop(writer);
    let strict = Store::builder()
        .read_only(true)
        .recovery(RecoveryMode::Strict)
        .open(dir.path())
        .unwrap();
    let got: Vec<Vec<u8>> = strict
        .messages("s")
        .raw()
        .map(|e| e.unwrap().message)
        .collect();
    assert_eq!(got, [payload(1, 300), payload(2, 300)]);
}

#[test]
fn a_segment_a_dead_writer_began_to_create_is_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    writer.append_raw("s", &payload(1, 100)).unwrap();
    // Another process died while rotating: it had recorded the next segment in the head
    // (`LOCK`: see `docs/format.md`), and the segment exists, its header half-written.
    let mut head = b"CVLGHEAD".to_vec();
    head.extend_from_slice(&2u64.to_le_bytes());
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join("LOCK"), &head).unwrap();
    let next = dir.path().join(SegmentId(2).file_name());
    std::fs::write(&next, [7u8; 20]).unwrap();
    let reader = Store::builder().read_only(true).open(dir.path()).unwrap();
    assert_eq!(
        reader.interaction_count("s"),
        1,
        "a reader waits for the header"
    );
    writer.append_raw("s", &payload(2, 100)).unwrap();
    assert!(!next.exists(), "the next writer removed it");
    assert_eq!(reader.interaction_count("s"), 2);
    assert_eq!(
        std::fs::read(dir.path().join("LOCK")).unwrap()[8..16],
        1u64.to_le_bytes(),
        "and set the head back to the last segment"
    );
    drop(writer);
    Store::builder()
        .read_only(true)
        .recovery(RecoveryMode::Strict)
        .open(dir.path())
        .unwrap();
}

/// A model of the sessions: each one's messages.
type Model = BTreeMap<String, Vec<Vec<u8>>>;

fn check(store: &Store, model: &Model, what: &str) {
    for (s, want) in model {
        let got: Vec<Vec<u8>> = store
            .messages(s)
            .raw()
            .map(|e| e.unwrap().message)
            .collect();
        assert_eq!(&got, want, "{what}: session {s}");
    }
    let live = model.values().filter(|v| !v.is_empty()).count();
    assert_eq!(store.sessions().len(), live, "{what}: sessions");
}

fn open_sim(fs: &SimFs) -> Store {
    Store::builder()
        .vfs(Arc::new(fs.clone()))
        .durability(Durability::Always)
        .segment_size(4 << 10)
        .open(common::dir())
        .unwrap()
}

#[test]
fn two_handles_on_the_simulated_file_system_act_as_two_processes_through_crashes() {
    let seed = seed_from_env("shared_writers", 0x5117);
    let mut rng = Rng(seed);
    for round in 0..20 {
        let mut fs = SimFs::new(rng.next_u64());
        let mut handles = [open_sim(&fs), open_sim(&fs)];
        let mut model = Model::new();
        let mut n = 0u64;
        for step in 0..200 {
            let h = rng.below(2) as usize;
            let s = format!("s{}", rng.below(3));
            let v = model.entry(s.clone()).or_default();
            let what = format!("seed {seed:#x} round {round} step {step}");
            match rng.below(10) {
                0..=5 => {
                    n += 1;
                    let m = payload(n, 50 + rng.below(400) as usize);
                    let r = handles[h].append_raw(&s, &m).unwrap();
                    assert_eq!(r.interaction_id, v.len() as u64 + 1, "{what}");
                    v.push(m);
                }
                6 => {
                    let k = 2 + rng.below(3);
                    let ms: Vec<Vec<u8>> = (0..k)
                        .map(|_| {
                            n += 1;
                            payload(n, 100)
                        })
                        .collect();
                    handles[h].append_batch_raw(&s, &ms).unwrap();
                    v.extend(ms);
                }
                7 => {
                    let expected = v.len() as u64 + 1 + rng.below(2);
                    n += 1;
                    let m: serde_json::Value = serde_json::from_slice(&payload(n, 80)).unwrap();
                    match handles[h].append_if(&s, expected, &m) {
                        Ok(_) => v.push(serde_json::to_vec(&m).unwrap()),
                        Err(convlog::Error::Conflict { .. }) => {
                            assert_ne!(expected, v.len() as u64 + 1, "{what}")
                        }
                        Err(e) => panic!("{what}: {e}"),
                    }
                }
                8 => {
                    let popped = handles[h].pop_raw(&s).unwrap().map(|e| e.message);
                    assert_eq!(popped, v.pop(), "{what}");
                }
                _ if rng.below(4) == 0 => {
                    // A compaction by one "process" while the other has the store open:
                    // the other reads the new segments from its next read on.
                    handles[h].seal().unwrap();
                    handles[h].compact().unwrap();
                }
                _ => {
                    assert_eq!(handles[h].clear(&s).unwrap(), v.len() as u64, "{what}");
                    v.clear();
                }
            }
            check(
                &handles[1 - h],
                &model,
                &format!("{what}, the other handle"),
            );
            if rng.below(40) == 0 {
                // A power cut: both "processes" die; under `Always` everything acknowledged
                // survives, whatever the tear.
                let crashed = fs.crash(Tear::Sectors(512));
                drop(handles);
                fs = crashed;
                handles = [open_sim(&fs), open_sim(&fs)];
                check(&handles[0], &model, &format!("{what}, after a crash"));
            }
        }
    }
}

#[test]
fn a_durable_lsn_left_in_lock_beyond_the_log_is_capped_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .durability(Durability::Always)
        .open(dir.path())
        .unwrap();
    store.append_raw("s", &payload(1, 100)).unwrap();
    drop(store);
    // LOCK says LSN 1000 is durable (the segments were restored from an older copy).
    let lock = dir.path().join("LOCK");
    let mut bytes = std::fs::read(&lock).unwrap();
    bytes.resize(40, 0);
    bytes[24..32].copy_from_slice(&1000u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes[24..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&lock, &bytes).unwrap();
    let store = Store::builder()
        .durability(Durability::Always)
        .open(dir.path())
        .unwrap();
    let after = std::fs::read(&lock).unwrap();
    assert_eq!(
        after[24..32],
        1u64.to_le_bytes(),
        "capped at the log's last LSN"
    );
    store.append_raw("s", &payload(2, 100)).unwrap();
    assert_eq!(store.durable_lsn().0, 2);
}
