//! Session references: a session's first record in a segment names it, its later records
//! there refer to that record. Recovery, verification and salvage resolve every reference;
//! a reference that leads nowhere is corruption, never a torn tail or a silent loss.

use std::fs;
use std::path::Path;

use convlog::format::{NAME_EVERY, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use convlog::{Damage, Error, RecoveryMode, Store};
use serde_json::json;

mod store_files;
use store_files::{Rec, drop_hints, records, rewrite_ref, segments, verify};

const SEG: u64 = 4096;

fn open(dir: &Path, mode: RecoveryMode) -> convlog::Result<Store> {
    Store::builder().segment_size(SEG).recovery(mode).open(dir)
}

fn message(i: usize) -> serde_json::Value {
    json!({"role": "user", "content": format!("message {i} {}", "·".repeat(i % 40))})
}

/// Each session's messages, as JSON values.
fn read(store: &Store, session: &str) -> Vec<serde_json::Value> {
    store
        .messages(session)
        .raw()
        .map(|e| serde_json::from_slice(&e.unwrap().message).unwrap())
        .collect()
}

/// A one-segment store holding `sessions[i]`'s message `i` for each `i`, closed.
fn store_of(dir: &Path, sessions: &[&str]) -> Vec<Rec> {
    let store = open(dir, RecoveryMode::PointInTime).unwrap();
    for (i, s) in sessions.iter().enumerate() {
        store.append(s, &message(i)).unwrap();
    }
    drop(store);
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    records(&segs[0])
}

fn flip(seg: &Path, at: u64) {
    let mut bytes = fs::read(seg).unwrap();
    bytes[at as usize] ^= 0x01;
    fs::write(seg, bytes).unwrap();
}

#[test]
fn only_a_sessions_first_record_in_a_segment_names_it_and_a_reopen_names_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let recs = store_of(dir.path(), &["a", "b", "a", "a", "b"]);
    let named: Vec<(bool, &str)> = recs.iter().map(|r| (r.named, &*r.session)).collect();
    assert_eq!(
        named,
        [
            (true, "a"),
            (true, "b"),
            (false, "a"),
            (false, "a"),
            (false, "b")
        ]
    );
    assert_eq!(
        recs[2].len,
        RECORD_HEADER_LEN as u64 + message(2).to_string().len() as u64
    );
    // The writer of a reopened segment does not know who was named: it names them again.
    let store = open(dir.path(), RecoveryMode::PointInTime).unwrap();
    store.append("a", &message(5)).unwrap();
    store.append("a", &message(6)).unwrap();
    drop(store);
    let seg = &segments(dir.path())[0];
    let recs = records(seg);
    assert_eq!(recs.len(), 7);
    assert!(recs[5].named && !recs[6].named, "{recs:?}");
    // Both names serve: a scan (no hints) rebuilds the same sessions.
    drop_hints(dir.path());
    let store = open(dir.path(), RecoveryMode::Strict).unwrap();
    let want_a: Vec<_> = [0, 2, 3, 5, 6].into_iter().map(message).collect();
    assert_eq!(read(&store, "a"), want_a);
    assert_eq!(read(&store, "b"), [message(1), message(4)]);
}

#[test]
fn a_trailing_record_with_a_bad_reference_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let recs = store_of(dir.path(), &["a", "b", "a", "b", "a"]);
    let seg = &segments(dir.path())[0];
    // The last record now refers to another referring record: checksums hold, the
    // reference leads to no name.
    let (last, bad) = (recs[4].off, recs[2].off as u32);
    rewrite_ref(seg, last, bad);
    drop_hints(dir.path());
    let original = fs::read(seg).unwrap();
    for mode in [RecoveryMode::PointInTime, RecoveryMode::Strict] {
        let err = open(dir.path(), mode).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, damage: Damage::BadSessionRef { at }, .. }
                if offset == last && at == bad),
            "{mode:?}: {err}"
        );
        assert_eq!(
            fs::read(seg).unwrap(),
            original,
            "a failed open changes nothing"
        );
    }
    let store = open(dir.path(), RecoveryMode::Salvage).unwrap();
    let report = store.recovery_report();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.dropped.len(), 1, "{:?}", report.dropped);
    let d = &report.dropped[0];
    assert_eq!((d.offset, d.len), (last, recs[4].len));
    assert_eq!(d.damage, Damage::BadSessionRef { at: bad });
    let kept = fs::read(d.quarantined.as_ref().unwrap()).unwrap();
    assert_eq!(kept, original[last as usize..(last + recs[4].len) as usize]);
    assert_eq!(read(&store, "a"), [message(0), message(2)]);
    assert_eq!(read(&store, "b"), [message(1), message(3)]);
}

#[test]
fn a_bad_reference_behind_a_hint_stops_the_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let recs = store_of(dir.path(), &["a", "a", "a", "b"]);
    let seg = &segments(dir.path())[0];
    rewrite_ref(seg, recs[2].off, recs[1].off as u32);
    // The hint was written at the clean close; it matches the segment (same length), so the
    // open trusts it and scans nothing.
    let store = open(dir.path(), RecoveryMode::PointInTime).unwrap();
    assert_eq!(store.recovery_report().hints_used, 1);
    let before = store.last_lsn();
    let err = store.append("b", &message(9)).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { offset, damage: Damage::BadSessionRef { .. }, .. }
            if offset == recs[2].off),
        "{err}"
    );
    assert_eq!(store.last_lsn(), before, "nothing was appended");
    drop(store);
    assert!(matches!(
        verify(dir.path()),
        Err(Error::Corrupt {
            damage: Damage::BadSessionRef { .. },
            ..
        })
    ));
}

#[test]
fn a_naming_record_with_a_damaged_payload_still_names_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let recs = store_of(dir.path(), &["a", "b", "a", "a", "b"]);
    let seg = &segments(dir.path())[0];
    flip(seg, recs[0].off + recs[0].len - 3); // inside the first message's JSON
    drop_hints(dir.path());
    let store = open(dir.path(), RecoveryMode::Salvage).unwrap();
    let dropped = &store.recovery_report().dropped;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].damage, Damage::PayloadChecksum);
    assert_eq!(read(&store, "a"), [message(2), message(3)]);
    assert_eq!(read(&store, "b"), [message(1), message(4)]);
}

/// When salvage drops a record whose header named a session, the records referring to it go
/// too (their session is unknowable), each reported and kept aside; every other record stays,
/// the same session's records in other segments included.
#[test]
fn salvage_of_a_damaged_naming_record_drops_the_records_that_refer_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), RecoveryMode::PointInTime).unwrap();
    let mut sent: [Vec<serde_json::Value>; 2] = Default::default();
    let mut n = 0;
    while segments(dir.path()).len() < 3 {
        let s = n % 2;
        store.append(["a", "b"][s], &message(n)).unwrap();
        sent[s].push(message(n));
        n += 1;
    }
    // The last segment ends with records of "a" too.
    for _ in 0..3 {
        store.append("a", &message(n)).unwrap();
        sent[0].push(message(n));
        n += 1;
    }
    drop(store);
    let (first, last) = (
        segments(dir.path())[0].clone(),
        segments(dir.path())[2].clone(),
    );
    // The records of "a" in the two segments to damage: (segment file name, offset, length).
    let a_records: Vec<(String, u64, u64)> = [&first, &last]
        .iter()
        .flat_map(|seg| {
            let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
            records(seg)
                .into_iter()
                .filter(|r| r.session == "a")
                .map(move |r| (name.clone(), r.off, r.len))
        })
        .collect();
    let lost = a_records.len();
    let a_in_first = records(&first).iter().filter(|r| r.session == "a").count();
    for seg in [&first, &last] {
        let recs = records(seg);
        let naming = recs.iter().find(|r| r.session == "a").unwrap();
        assert!(naming.named);
        flip(seg, naming.off + RECORD_HEADER_LEN as u64); // the name's only byte
    }
    drop_hints(dir.path());
    assert!(matches!(
        open(dir.path(), RecoveryMode::PointInTime),
        Err(Error::Corrupt {
            offset,
            damage: Damage::HeaderChecksum,
            ..
        }) if offset == SEGMENT_HEADER_LEN as u64
    ));

    let store = open(dir.path(), RecoveryMode::Salvage).unwrap();
    // Exactly the records of "a" in those segments were dropped (adjacent ones as one range),
    // each range kept aside.
    let dropped = &store.recovery_report().dropped;
    let covered = |d: &convlog::DroppedRange| -> u64 {
        a_records
            .iter()
            .filter(|(seg, off, _)| {
                *seg == d.segment.file_name() && (d.offset..d.offset + d.len).contains(off)
            })
            .map(|(_, _, len)| len)
            .sum()
    };
    assert!(
        dropped.iter().all(|d| covered(d) == d.len
            && d.quarantined.is_some()
            && matches!(
                d.damage,
                Damage::HeaderChecksum | Damage::BadSessionRef { .. }
            )),
        "{dropped:?}"
    );
    assert_eq!(
        dropped.iter().map(covered).sum::<u64>(),
        a_records.iter().map(|r| r.2).sum::<u64>(),
        "{dropped:?}"
    );
    assert_eq!(
        dropped
            .iter()
            .filter(|d| d.damage == Damage::HeaderChecksum)
            .count(),
        2
    );
    assert_eq!(store.recovery_report().torn_tail, None);
    let middle = sent[0].len() - lost;
    assert_eq!(read(&store, "a"), sent[0][a_in_first..a_in_first + middle]);
    assert_eq!(read(&store, "b"), sent[1]);
    drop(store);
    let store = open(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(store.interaction_count("a"), middle as u64);
    assert_eq!(
        records(&first)[0].session,
        "-",
        "a gap record now leads the segment"
    );
}

/// A writer names a session again once `NAME_EVERY` records refer to one record naming it,
/// within a batch as across calls: a damaged name then costs a salvage at most that many
/// records of its session, dropped as one range with the naming record.
#[test]
fn a_session_is_named_again_every_name_every_records_which_bounds_a_salvage_loss() {
    let dir = tempfile::tempdir().unwrap();
    let n = NAME_EVERY as usize;
    let small = |i: usize| json!({"role": "user", "content": i});
    let store = Store::builder().open(dir.path()).unwrap(); // one 64 MiB segment
    let batch: Vec<_> = (0..n + 100).map(small).collect();
    store.append_batch("a", &batch).unwrap();
    for i in n + 100..2 * n + 100 {
        store.append("a", &small(i)).unwrap();
    }
    store.append("b", &small(0)).unwrap();
    drop(store);
    let seg = &segments(dir.path())[0];
    let recs = records(seg);
    let named: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].named).collect();
    assert_eq!(named, [0, n + 1, 2 * (n + 1), 2 * n + 100]);
    assert_eq!(recs[2 * n + 100].session, "b");

    // The third name's header damaged (a single append; damage inside a batch drops the
    // whole batch): it and the records referring to it are dropped, as one range.
    let third = 2 * (n + 1);
    flip(seg, recs[third].off + RECORD_HEADER_LEN as u64);
    drop_hints(dir.path());
    let store = Store::builder()
        .recovery(RecoveryMode::Salvage)
        .open(dir.path())
        .unwrap();
    let dropped = &store.recovery_report().dropped;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let last_a = &recs[2 * n + 99];
    assert_eq!(
        (dropped[0].offset, dropped[0].len, &dropped[0].damage),
        (
            recs[third].off,
            last_a.off + last_a.len - recs[third].off,
            &Damage::HeaderChecksum
        )
    );
    let kept: Vec<_> = (0..third).map(small).collect();
    assert_eq!(read(&store, "a"), kept);
    assert_eq!(read(&store, "b"), [small(0)]);
}
