//! Recovery: torn tails, batch atomicity, corruption, salvage, read-only opens.

use std::fs;
use std::path::Path;

use convlog::format::FORMAT_VERSION;
use convlog::{Damage, Error, RecoveryMode, Store};
use serde_json::json;

mod store_files;
use store_files::{drop_hints, records_end, segments, verify};

const SEG: u64 = 4096;

fn open(dir: &Path) -> convlog::Result<Store> {
    Store::builder().segment_size(SEG).open(dir)
}

/// Where a segment's records end: its files keep preallocated zeros after them.
fn nonzero_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn message(i: usize) -> serde_json::Value {
    json!({"role": "user", "content": format!("message {i} {}", "·".repeat(i % 40))})
}

/// The whole store: each session with its messages' raw bytes, in order.
type Dump = Vec<(String, Vec<Vec<u8>>)>;

fn dump(store: &Store) -> Dump {
    store
        .sessions()
        .into_iter()
        .map(|s| {
            let msgs = store
                .messages(&s.id)
                .raw()
                .map(|e| e.unwrap().message)
                .collect();
            (s.id, msgs)
        })
        .collect()
}

/// The end of the records in a segment file: the active segment is preallocated with zeros,
/// and every record ends in a non-zero byte (a JSON `}` or a session id).
/// Builds a store of at least 3 segments whose last segment holds single appends and a batch.
/// Returns the states after each committed unit written to the last segment, keyed by the
/// end offset of that unit.
fn build(dir: &Path) -> Vec<(u64, Dump)> {
    let store = open(dir).unwrap();
    let mut i = 0;
    let mut before = dump(&store);
    while segments(dir).len() < 3 {
        before = dump(&store);
        store.append(&format!("s{}", i % 3), &message(i)).unwrap();
        i += 1;
    }
    let last = segments(dir).pop().unwrap();
    // An empty last segment (just its header) holds the state before the rotating append.
    let mut states = vec![(48, before), (records_end(&last), dump(&store))];
    for k in 0..6 {
        if k == 3 {
            store
                .append_batch("s1", &[message(100), message(101), message(102)])
                .unwrap();
        } else if k == 4 {
            store.pop("s0").unwrap();
        } else {
            store
                .append(&format!("s{}", k % 3), &message(200 + k))
                .unwrap();
        }
        assert_eq!(
            segments(dir).last(),
            Some(&last),
            "units stay in the last segment"
        );
        states.push((records_end(&last), dump(&store)));
    }
    states
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_segment() {
    let src = tempfile::tempdir().unwrap();
    let states = build(src.path());
    let last = segments(src.path()).pop().unwrap();
    let bytes = fs::read(&last).unwrap();
    let first_unit_start = states[0].0;
    let work = tempfile::tempdir().unwrap();
    for cut in 0..=bytes.len() as u64 {
        let dir = work.path().join(format!("cut{cut}"));
        fs::create_dir(&dir).unwrap();
        for seg in segments(src.path()) {
            fs::copy(&seg, dir.join(seg.file_name().unwrap())).unwrap();
        }
        let name = last.file_name().unwrap();
        fs::write(dir.join(name), &bytes[..cut as usize]).unwrap();

        let store = open(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // The longest committed prefix: the last state whose unit ends at or before the cut.
        let want = states
            .iter()
            .rev()
            .find(|(end, _)| *end <= cut)
            .map(|(_, s)| s.clone());
        match want {
            Some(want) => assert_eq!(dump(&store), want, "cut at {cut}"),
            // A cut inside the header: the segment's creation never completed.
            None => {
                assert!(cut < first_unit_start);
                assert_eq!(store.recovery_report().removed_segments.len(), 1);
                assert_eq!(dump(&store), states[0].1, "cut at {cut}");
            }
        }
        // Bytes after the last whole unit are a torn tail, unless they are all zero (a clean
        // end: a cut a few bytes into a header can leave only zero bytes of its salted CRC).
        let report = store.recovery_report();
        let unit_end = states
            .iter()
            .map(|(end, _)| *end)
            .filter(|end| *end <= cut)
            .max()
            .unwrap_or(0);
        let leftover = &bytes[unit_end.min(cut) as usize..cut as usize];
        if cut < 48 || leftover.iter().all(|b| *b == 0) {
            assert!(report.torn_tail.is_none(), "cut at {cut}: {report:?}");
        } else {
            assert_eq!(report.classification().name(), "torn tail", "cut at {cut}");
        }
        // An append then a reopen keeps everything.
        let before = dump(&store);
        store
            .append("after", &json!({"role": "user", "content": "new"}))
            .unwrap();
        drop(store);
        let store = open(&dir).unwrap();
        let mut after = dump(&store);
        let new = after.iter().position(|(s, _)| s == "after").unwrap();
        assert_eq!(
            after.remove(new).1,
            vec![br#"{"role":"user","content":"new"}"#.to_vec()]
        );
        assert_eq!(after, before, "cut at {cut}");
        assert_eq!(
            store.recovery_report().classification().name(),
            "clean",
            "cut at {cut}"
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_batch_cut_anywhere_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store.append("s", &message(0)).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let before = records_end(&seg);
    store
        .append_batch("s", &[message(1), message(2), message(3), message(4)])
        .unwrap();
    let after = records_end(&seg);
    drop(store);
    let bytes = fs::read(&seg).unwrap();
    // A crash, not a clean close: no hint records the batch as durable.
    drop_hints(dir.path());
    for cut in before..after {
        fs::write(&seg, &bytes[..cut as usize]).unwrap();
        let store = open(dir.path()).unwrap();
        assert_eq!(
            store.interaction_count("s"),
            1,
            "cut at {cut} exposed part of the batch"
        );
    }
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(open(dir.path()).unwrap().interaction_count("s"), 5);
}

fn three_segment_store(dir: &Path) -> usize {
    let store = open(dir).unwrap();
    let mut n = 0;
    while segments(dir).len() < 3 {
        store.append("s", &message(n)).unwrap();
        n += 1;
    }
    n
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_salvage_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let n = three_segment_store(dir.path());
    let sealed = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&sealed).unwrap();
    let at = 48 + 40 + 300; // inside some early record
    bytes[at] ^= 0x20;
    fs::write(&sealed, &bytes).unwrap();
    let original = bytes.clone();

    // With its hint, the sealed segment is not scanned on open: the damage shows on read
    // (every read verifies both CRCs), and a strict open (`convlog verify`) finds it.
    let store = open(dir.path()).unwrap();
    let errors: Vec<_> = store.messages("s").raw().filter_map(|e| e.err()).collect();
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0], Error::Corrupt { .. }), "{}", errors[0]);
    drop(store);
    assert!(matches!(verify(dir.path()), Err(Error::Corrupt { .. })));
    drop_hints(dir.path());

    for mode in [RecoveryMode::Strict, RecoveryMode::PointInTime] {
        let err = Store::builder()
            .segment_size(SEG)
            .recovery(mode)
            .open(dir.path())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { segment, offset, .. }
                if segment.file_name() == sealed.file_name().unwrap().to_str().unwrap() && *offset < at as u64),
            "{mode:?}: {err}"
        );
        assert_eq!(
            fs::read(&sealed).unwrap(),
            original,
            "a failed open changes nothing"
        );
    }
    // A read-only salvage keeps every valid record in memory and changes nothing.
    let ro = Store::builder()
        .segment_size(SEG)
        .read_only(true)
        .recovery(RecoveryMode::Salvage)
        .open(dir.path())
        .unwrap();
    assert_eq!(ro.interaction_count("s"), n as u64 - 1);
    assert_eq!(ro.recovery_report().dropped.len(), 1);
    assert!(ro.recovery_report().dropped[0].quarantined.is_none());
    drop(ro);
    assert_eq!(fs::read(&sealed).unwrap(), original);

    let store = Store::builder()
        .segment_size(SEG)
        .recovery(RecoveryMode::Salvage)
        .open(dir.path())
        .unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(report.classification().name(), "salvaged");
    let d = &report.dropped[0];
    assert!(
        matches!(d.damage, Damage::PayloadChecksum | Damage::HeaderChecksum),
        "{d:?}"
    );
    let q = d.quarantined.as_ref().unwrap();
    assert_eq!(
        fs::read(q).unwrap(),
        original[d.offset as usize..(d.offset + d.len) as usize]
    );
    // Every other message is there, in order, byte for byte.
    let got: Vec<serde_json::Value> = store
        .messages("s")
        .raw()
        .map(|e| serde_json::from_slice(&e.unwrap().message).unwrap())
        .collect();
    assert_eq!(got.len(), n - 1);
    let lost = (0..n).find(|i| !got.contains(&message(*i))).unwrap();
    let want: Vec<_> = (0..n).filter(|i| *i != lost).map(message).collect();
    assert_eq!(got, want);
    store.append("s", &message(9999)).unwrap();
    drop(store);
    // The repaired store opens cleanly in the default and strict modes.
    let store = Store::builder()
        .segment_size(SEG)
        .recovery(RecoveryMode::Strict)
        .open(dir.path())
        .unwrap();
    assert_eq!(store.interaction_count("s"), n as u64);
    assert_eq!(
        store
            .recovery_report()
            .records_by_kind
            .get(&convlog::Kind::Gap),
        Some(&1)
    );
    drop(store);
    // The rewritten segment got a hint of its own: a default open scans nothing.
    let store = open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().bytes_scanned, 0);
    assert_eq!(
        store.recovery_report().hints_used,
        segments(dir.path()).len()
    );
    assert_eq!(store.interaction_count("s"), n as u64);
}

#[test]
fn damage_followed_by_a_valid_record_in_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    for i in 0..5 {
        store.append("s", &message(i)).unwrap();
    }
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[48 + 20] ^= 1; // the first record's LSN field
    fs::write(&seg, &bytes).unwrap();
    drop_hints(dir.path());
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                offset: 48,
                damage: Damage::HeaderChecksum,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn strict_mode_refuses_a_torn_tail_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store.append("s", &message(1)).unwrap();
    store.append("s", &message(2)).unwrap();
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    // A torn write of a crash: no clean close wrote a hint recording it as durable.
    drop_hints(dir.path());
    fs::write(&seg, &bytes[..nonzero_end(&bytes) - 3]).unwrap();
    let err = Store::builder()
        .recovery(RecoveryMode::Strict)
        .open(dir.path())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                damage: Damage::TornTail { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap().len(), nonzero_end(&bytes) - 3);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.interaction_count("s"), 1);
    let torn = store.recovery_report().torn_tail.clone().unwrap();
    assert!(torn.bytes > 0);
    let after = fs::read(&seg).unwrap();
    assert_eq!(
        nonzero_end(&after) as u64,
        torn.offset,
        "the cut is physical (zeroed: files never shrink)"
    );
    let kept = fs::read(torn.quarantined.as_ref().unwrap()).unwrap();
    assert_eq!(
        kept.len() as u64,
        torn.bytes,
        "the cut bytes are kept aside"
    );
}

#[test]
fn foreign_and_future_files_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_store(dir.path());
    let first = segments(dir.path())[0].clone();
    let good = fs::read(&first).unwrap();

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    fs::write(&first, &bad_magic).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(Error::Corrupt {
            damage: Damage::BadMagic,
            offset: 0,
            ..
        })
    ));

    // A valid header of the next version, of the one before (version 5 wrote a key as a
    // record of its own, kind 6: refused whole rather than met as an unknown kind), and of
    // version 1 (before sessions were referred to by offset).
    assert_eq!(FORMAT_VERSION, 6, "docs/format.md documents version 6");
    for version in [FORMAT_VERSION + 1, FORMAT_VERSION - 1, 1] {
        let mut other = good.clone();
        other[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&other[..44]);
        other[44..48].copy_from_slice(&crc.to_le_bytes());
        fs::write(&first, &other).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(Error::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
                ..
            }) if found == version
        ));
    }

    fs::write(&first, &good).unwrap();
    assert!(open(dir.path()).is_ok());

    // A missing middle segment is an LSN gap.
    fs::remove_file(&segments(dir.path())[1]).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(Error::Corrupt {
            damage: Damage::LsnGap { .. },
            ..
        })
    ));
}

#[test]
fn an_interrupted_segment_creation_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let n = three_segment_store(dir.path());
    let last = segments(dir.path()).pop().unwrap();
    let id: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // A crash right after creating the next segment file, before its header was written.
    let next = dir.path().join(format!("{:020}.seg", id + 1000));
    fs::write(&next, [0u8; 20]).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(store.interaction_count("s"), n as u64);
    assert_eq!(store.recovery_report().removed_segments.len(), 1);
    assert!(!next.exists());
}

#[test]
fn read_only_opens_never_change_a_file_and_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_store(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    fs::write(&seg, &bytes[..nonzero_end(&bytes) - 5]).unwrap(); // a torn tail
    drop_hints(dir.path()); // of a crash: no hint records the cut bytes as durable
    let listing = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(dir.path());
    let ro = Store::builder()
        .read_only(true)
        .segment_size(SEG)
        .open(dir.path())
        .unwrap();
    assert!(ro.is_read_only());
    assert!(ro.recovery_report().torn_tail.is_some());
    assert!(matches!(
        ro.append("s", &message(1)),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(ro.pop("s"), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.clear("s"), Err(Error::ReadOnly { .. })));
    assert!(ro.messages("s").all(|e| e.is_ok()));
    drop(ro);
    assert_eq!(listing(dir.path()), before, "read-only open changed files");

    let missing = dir.path().join("nope");
    assert!(matches!(
        Store::builder().read_only(true).open(&missing),
        Err(Error::NotAStore { .. })
    ));
    assert!(!missing.exists());
    // A directory without segment files is not a store either (and stays untouched).
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::write(empty.join("notes.txt"), b"hello").unwrap();
    assert!(matches!(
        Store::builder().read_only(true).open(&empty),
        Err(Error::NotAStore { .. })
    ));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 1);
}

#[test]
fn read_only_open_works_beside_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path()).unwrap();
    for i in 0..50 {
        writer.append("s", &message(i)).unwrap();
    }
    let reader = Store::builder().read_only(true).open(dir.path()).unwrap();
    assert_eq!(reader.interaction_count("s"), 50);
    let before = reader.messages("s");
    writer.append("s", &message(50)).unwrap();
    assert_eq!(
        before.count(),
        50,
        "a read is a snapshot of when it started"
    );
    assert_eq!(
        reader.messages("s").count(),
        51,
        "a read that starts after an append returned sees it"
    );
    assert_eq!(reader.interaction_count("s"), 51);
}

#[test]
fn a_second_writer_in_the_same_process_shares_the_open_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    first.append("s", &json!({"role": "user"})).unwrap();
    let second = Store::open(dir.path()).unwrap();
    assert_eq!(second.interaction_count("s"), 1);
    drop((first, second));
    assert!(Store::open(dir.path()).is_ok());
}

/// Nothing kept aside is ever replaced: two torn tails cut at the same offset (a crash, a
/// reopen, the same crash again) leave two copies in `quarantine/`.
#[test]
fn torn_tails_cut_at_one_offset_keep_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store.append("s", &message(1)).unwrap();
    drop(store);
    drop_hints(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let end = nonzero_end(&fs::read(&seg).unwrap());
    let mut copies = Vec::new();
    for garbage in [&b"first torn write"[..], &b"second torn write"[..]] {
        let mut bytes = fs::read(&seg).unwrap();
        bytes[end..end + garbage.len()].copy_from_slice(garbage);
        fs::write(&seg, &bytes).unwrap();
        let store = open(dir.path()).unwrap();
        let torn = store.recovery_report().torn_tail.clone().unwrap();
        assert_eq!(torn.offset, end as u64);
        let copy = torn.quarantined.unwrap();
        assert_eq!(fs::read(&copy).unwrap(), garbage);
        copies.push(copy);
        drop(store);
        drop_hints(dir.path());
    }
    assert_ne!(copies[0], copies[1]);
    assert_eq!(fs::read(&copies[0]).unwrap(), b"first torn write");
}

/// Review finding: a last segment now shorter than the end its (matching) hint records lost
/// bytes that a clean close had synced: that is corruption, never a torn tail to cut.
#[test]
fn a_segment_cut_below_its_hints_durable_end_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .durability(convlog::Durability::Always)
        .open(dir.path())
        .unwrap();
    for i in 0..20 {
        store.append("s", &message(i)).unwrap();
    }
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    fs::write(&seg, &bytes[..nonzero_end(&bytes) - 10]).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
