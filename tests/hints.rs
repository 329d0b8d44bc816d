//! Hint files: used on open when valid, ignored (and the segment scanned) when not.

use std::fs;
use std::path::Path;

use convlog::{Durability, Store};
use serde_json::json;

mod store_files;
use store_files::files;

const SEG: u64 = 8192;

/// Every session's info and messages as (interaction id, lsn, timestamp, raw bytes).
/// Each session, its messages, and the metadata of s1 and s3 (set, and deleted).
type Snapshot = (
    Vec<(convlog::SessionInfo, Vec<(u64, u64, u64, Vec<u8>)>)>,
    Vec<Option<Vec<u8>>>,
);

fn snapshot(store: &Store) -> Snapshot {
    let metas = ["s1", "s3"].map(|s| store.meta(s).unwrap()).to_vec();
    let sessions = store
        .sessions()
        .into_iter()
        .map(|s| {
            let m = store
                .messages(&s.id)
                .raw()
                .map(|e| e.unwrap())
                .map(|e| (e.interaction_id, e.lsn.0, e.timestamp.0, e.message))
                .collect();
            (s, m)
        })
        .collect();
    (sessions, metas)
}

fn build(dir: &Path, durability: Durability) -> Snapshot {
    let store = Store::builder()
        .segment_size(SEG)
        .durability(durability)
        .open(dir)
        .unwrap();
    for i in 0..600u64 {
        let s = format!("s{}", i % 5);
        store.append(&s, &json!({"role": "user", "content": format!("m{i}"), "pad": "x".repeat((i % 30) as usize)})).unwrap();
        match i % 97 {
            13 => drop(store.pop(&s).unwrap()),
            41 => drop(store.truncate(&s, 3).unwrap()),
            77 => drop(store.clear("s4").unwrap()),
            // A delete, with metadata that it removes: hint files carry deletes too.
            50 => {
                store.set_meta("s3", &json!({"t": i})).unwrap();
                store.delete_session("s3").unwrap();
            }
            60 => drop(store.set_meta("s1", &json!({"t": i})).unwrap()),
            88 => drop(
                store
                    .append_batch("s2", &[json!({"b": 1}), json!({"b": 2})])
                    .unwrap(),
            ),
            _ => {}
        }
    }
    snapshot(&store)
}

#[test]
fn a_clean_reopen_reads_hints_only_and_rebuilds_the_same_index() {
    for durability in [Durability::Buffered, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let want = build(dir.path(), durability);
        let segs = files(dir.path(), "seg").len();
        assert!(segs >= 4, "{segs} segments");
        assert_eq!(
            files(dir.path(), "hint").len(),
            segs,
            "sealed segments and the closed active one"
        );
        let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
        let r = store.recovery_report();
        assert_eq!((r.hints_used, r.bytes_scanned), (segs, 0), "{r:?}");
        assert_eq!(snapshot(&store), want);
        drop(store);
        // The same index from a full scan (strict mode never trusts hints).
        let strict = Store::builder()
            .segment_size(SEG)
            .recovery(convlog::RecoveryMode::Strict)
            .open(dir.path())
            .unwrap();
        assert_eq!(strict.recovery_report().hints_used, 0);
        assert_eq!(snapshot(&strict), want);
        let scanned = strict.recovery_report().records_by_kind.clone();
        drop(strict);
        let hinted = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
        assert_eq!(hinted.recovery_report().records_by_kind, scanned);
    }
}

#[test]
fn missing_damaged_or_foreign_hints_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path(), Durability::Buffered);
    let hints = files(dir.path(), "hint");
    let segs = hints.len();
    // Missing.
    fs::remove_file(&hints[0]).unwrap();
    // Another segment's hint in its place.
    fs::copy(&hints[2], &hints[1]).unwrap();
    // Garbage.
    fs::write(&hints[3], b"not a hint").unwrap();
    let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().hints_used, segs - 3);
    assert_eq!(snapshot(&store), want);
    drop(store);
    // That open rewrote the three hints it could not use: the next one scans nothing.
    let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().hints_used, segs);
    assert_eq!(store.recovery_report().bytes_scanned, 0);
    assert_eq!(snapshot(&store), want);
}

#[test]
fn every_single_byte_corruption_of_a_hint_yields_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path(), Durability::Buffered);
    let hint = files(dir.path(), "hint")[0].clone();
    let good = fs::read(&hint).unwrap();
    let step = (good.len() / 200).max(1); // every byte of the header, then a sample
    for at in (0..good.len()).filter(|i| *i < 128 || i % step == 0) {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        fs::write(&hint, &bad).unwrap();
        let store = Store::builder()
            .segment_size(SEG)
            .read_only(true)
            .open(dir.path())
            .unwrap();
        assert_eq!(snapshot(&store), want, "byte {at}");
        assert_eq!(
            store.recovery_report().hints_used,
            files(dir.path(), "hint").len() - 1,
            "byte {at}"
        );
    }
}

#[test]
fn a_stale_active_hint_is_not_trusted_after_more_appends() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), Durability::Always);
    // Reopen, append more, and "crash" (forget the store without a clean close).
    let store = Store::builder()
        .segment_size(SEG)
        .durability(Durability::Always)
        .open(dir.path())
        .unwrap();
    store
        .append(
            "late",
            &json!({"role": "user", "content": "after the hint"}),
        )
        .unwrap();
    let want = snapshot(&store);
    std::mem::forget(store);
    let store = Store::builder()
        .segment_size(SEG)
        .read_only(true)
        .open(dir.path())
        .unwrap();
    assert_eq!(snapshot(&store), want);
    assert!(
        store.recovery_report().bytes_scanned > 0,
        "the active segment was scanned"
    );
}

/// Every session's id and messages as (interaction id, lsn, raw bytes).
type Contents = Vec<(String, Vec<(u64, u64, Vec<u8>)>)>;

/// A snapshot without the timestamps, which differ between two stores given the same appends.
fn contents(store: &Store) -> Contents {
    snapshot(store)
        .0
        .into_iter()
        .map(|(s, m)| (s.id, m.into_iter().map(|(i, l, _, b)| (i, l, b)).collect()))
        .collect()
}

#[test]
fn changes_after_a_hint_only_open_match_those_after_a_full_scan() {
    let hinted = tempfile::tempdir().unwrap();
    build(hinted.path(), Durability::Buffered);
    let scanned = tempfile::tempdir().unwrap();
    for seg in files(hinted.path(), "seg") {
        fs::copy(&seg, scanned.path().join(seg.file_name().unwrap())).unwrap();
    }
    let open = |dir: &Path| Store::builder().segment_size(SEG).open(dir).unwrap();
    let stores = [open(hinted.path()), open(scanned.path())];
    assert_eq!(stores[0].recovery_report().bytes_scanned, 0);
    assert_eq!(stores[1].recovery_report().hints_used, 0);
    // Cut every session inside what the open read (from hints, or by a scan): the same
    // messages, and the same last timestamps, found through either.
    for store in &stores {
        for s in store.sessions() {
            store.truncate(&s.id, s.count * 2 / 3).unwrap();
            store.pop_raw(&s.id).unwrap();
        }
    }
    let cut = snapshot(&stores[0]);
    assert_eq!(cut, snapshot(&stores[1]));
    for (info, messages) in &cut.0 {
        let ts = |m: Option<&(u64, u64, u64, Vec<u8>)>| m.map(|m| m.2);
        assert_eq!(info.count, messages.len() as u64);
        assert_eq!(Some(info.first.0), ts(messages.first()), "{}", info.id);
        assert_eq!(Some(info.last.0), ts(messages.last()), "{}", info.id);
    }
    // Appends after the cuts, and cuts into both the new and the old messages.
    for store in &stores {
        for s in store.sessions() {
            for i in 0..4 {
                store
                    .append(&s.id, &json!({"role": "user", "i": i}))
                    .unwrap();
            }
            store.pop_raw(&s.id).unwrap();
            store.truncate(&s.id, s.count / 2).unwrap();
            store
                .append(&s.id, &json!({"role": "user", "i": 9}))
                .unwrap();
        }
        store.clear("s1").unwrap();
    }
    let want = contents(&stores[1]);
    assert_eq!(contents(&stores[0]), want);
    drop(stores);
    for dir in [&hinted, &scanned] {
        assert_eq!(contents(&open(dir.path())), want);
    }
}

#[test]
fn a_close_without_writes_keeps_the_active_segments_hint() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path(), Durability::Buffered);
    let active = files(dir.path(), "hint").pop().unwrap();
    // A hint is replaced by rename: a new inode.
    let inode = || fs::metadata(&active).unwrap().ino();
    let written = inode();
    let open = || Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    let store = open();
    assert_eq!(snapshot(&store), want);
    store.sync().unwrap();
    drop(store);
    assert_eq!(inode(), written, "nothing written: the hint is still exact");
    let store = open();
    assert_eq!(store.recovery_report().bytes_scanned, 0);
    store.append("s0", &json!({"role": "user"})).unwrap();
    let want = snapshot(&store);
    drop(store);
    assert_ne!(inode(), written, "an append: the hint is written anew");
    let store = open();
    assert_eq!(store.recovery_report().bytes_scanned, 0);
    assert_eq!(snapshot(&store), want);
}

/// Review finding: a hint whose checksum holds but whose next LSN is 0 made the open panic
/// (an LSN subtraction underflowed). Such a hint is not used; the open never panics.
#[test]
fn a_hint_with_a_nonsense_next_lsn_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = convlog::Store::open(dir.path()).unwrap();
        store.append("s", &serde_json::json!({"c": "x"})).unwrap();
    }
    let hint = dir.path().join("00000000000000000001.hint");
    let mut h = std::fs::read(&hint).unwrap();
    h[40..48].copy_from_slice(&0u64.to_le_bytes());
    let n = h.len() - 4;
    let crc = crc32fast::hash(&h[..n]);
    h[n..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&hint, h).unwrap();
    let store = convlog::Store::open(dir.path()).unwrap();
    assert_eq!(store.interaction_count("s"), 1);
    assert_eq!(store.recovery_report().hints_used, 0);
}

/// Sealed segments' hints are written by a thread of the store, off the append path (see
/// `store/hints.rs`); compactions running meanwhile never leave a hint of a segment they
/// replaced, nor a temporary file, and a clean close leaves every segment its hint.
#[test]
fn hints_written_off_the_append_path_never_outlive_their_segments() {
    let seed = 0x6869_6e74_u64;
    eprintln!("keys and sizes: SplitMix seed {seed:#x}");
    let mut rng = convlog::io::sim::SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    let mut live = std::collections::BTreeMap::new();
    for round in 0..12u64 {
        for i in 0..80u64 {
            let s = format!("s{}", rng.below(6));
            let pad = "y".repeat(rng.below(400) as usize);
            let key = format!("r{round}-{i}");
            let m = format!(r#"{{"role":"user","content":"{round}/{i}","pad":"{pad}"}}"#);
            store
                .append_batch_raw_with_key(&s, &key, &[m.as_bytes()])
                .unwrap();
            *live.entry(s).or_insert(0u64) += 1;
        }
        // A session goes, and a compaction runs while the last rotations' hints may still
        // be in flight.
        if round == 10 {
            // What a crash leaves of a hint being written: the next compaction removes it.
            let leftover = dir
                .path()
                .join("00000000000000000001-00000000deadbeef.hint.tmp");
            fs::write(leftover, b"s9 key-of-a-session-since-erased").unwrap();
        }
        let gone = format!("s{}", rng.below(6));
        store.delete_session(&gone).unwrap();
        live.remove(&gone);
        store.seal().unwrap();
        store.compact().unwrap();
    }
    let want: Vec<(String, u64)> = live.into_iter().collect();
    drop(store);
    let segments = files(dir.path(), "seg");
    let hints = files(dir.path(), "hint");
    let stem = |p: &std::path::PathBuf| p.file_stem().unwrap().to_owned();
    assert_eq!(
        hints.iter().map(stem).collect::<Vec<_>>(),
        segments.iter().map(stem).collect::<Vec<_>>(),
        "every segment has its hint, and no hint is left without its segment"
    );
    assert_eq!(files(dir.path(), "tmp"), Vec::<std::path::PathBuf>::new());
    let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().hints_used, segments.len());
    assert_eq!(store.recovery_report().bytes_scanned, 0);
    let got: Vec<(String, u64)> = store
        .sessions()
        .into_iter()
        .map(|s| (s.id.clone(), store.interaction_count(&s.id)))
        .collect();
    assert_eq!(got, want);
    drop(store);
    // A first compaction, of the one segment just sealed, whose hint is still in flight:
    // the compacted segment keeps the hint the compaction wrote for it.
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
        for i in 0..10 {
            let m = format!(r#"{{"role":"user","content":"{round}/{i}"}}"#);
            store
                .append_raw(&format!("s{}", i % 2), m.as_bytes())
                .unwrap();
        }
        store.delete_session("s1").unwrap();
        store.seal().unwrap();
        store.compact().unwrap();
        drop(store);
        let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
        assert_eq!(store.recovery_report().bytes_scanned, 0, "round {round}");
        assert_eq!(store.interaction_count("s0"), 5, "round {round}");
    }
}

/// A store closed cleanly twice; returns its directory, the last segment, where its
/// records ended after the first close (`lost_from`) and after the second (the end its
/// hint records, `durable`), and what the first close held.
fn closed_twice() -> (tempfile::TempDir, std::path::PathBuf, u64, u64, Contents) {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    let store = open();
    for i in 0..40u64 {
        let m = json!({"role": "user", "content": format!("first {i}")});
        store.append(&format!("s{}", i % 3), &m).unwrap();
    }
    let first = contents(&store);
    drop(store);
    let seg = store_files::segments(dir.path()).pop().unwrap();
    let lost_from = store_files::records_end(&seg);
    let store = open();
    for i in 0..5u64 {
        let m = json!({"role": "user", "content": format!("second {i}")});
        store.append(&format!("s{}", i % 3), &m).unwrap();
    }
    drop(store);
    let durable = store_files::records_end(&seg);
    assert!(durable > lost_from);
    (dir, seg, lost_from, durable, first)
}

/// The `open_image` fuzz target found this (`fuzz/regressions`, session 35): the last
/// segment's records ended cleanly (zeros follow) before the end its hint file records,
/// which a sync had made durable. Recovery called that a clean end; so salvage kept the
/// hint, its second pass trusted it, and the store listed messages no later open found.
/// Now it is corruption: `verify` reports it, and `repair` leaves a store every later open
/// reads alike.
#[test]
fn records_lost_below_the_last_segments_durable_end_are_corruption() {
    let (dir, seg, lost_from, durable, first) = closed_twice();
    // The second close's appends are lost: their bytes read as zeros.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[lost_from as usize..durable as usize].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let err = store_files::verify(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            convlog::Error::Corrupt { offset, damage: convlog::Damage::DurableLost { end }, .. }
                if offset == lost_from && end == durable
        ),
        "{err:?}"
    );
    // A point-in-time open trusts the hint (its end is followed by zeros): the lost
    // messages read as `Corrupt`, and the first append, which verifies the segment
    // first, is refused and writes nothing.
    let store = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    let s0 = store.messages("s0").raw().collect::<Vec<_>>();
    assert!(
        s0.iter()
            .any(|e| matches!(e, Err(convlog::Error::Corrupt { .. })))
    );
    let refused = store.append("s0", &json!({"role": "user"})).unwrap_err();
    assert!(
        matches!(refused, convlog::Error::Corrupt { .. }),
        "{refused:?}"
    );
    drop(store);

    let repaired = Store::builder()
        .segment_size(SEG)
        .recovery(convlog::RecoveryMode::Salvage)
        .open(dir.path())
        .unwrap();
    assert_eq!(
        repaired.recovery_report().classification(),
        convlog::Classification::Salvaged
    );
    assert_eq!(contents(&repaired), first);
    drop(repaired);
    assert_eq!(contents(&store_files::verify(dir.path()).unwrap()), first);
    let again = Store::builder().segment_size(SEG).open(dir.path()).unwrap();
    assert_eq!(
        contents(&again),
        first,
        "a point-in-time open after the repair"
    );
}

/// The same loss as a last segment cut short at a record boundary: the hint's end lies past
/// the file's, so it is not used, and the scan finds the records end before it.
#[test]
fn a_last_segment_cut_short_of_its_durable_end_does_not_open_silently() {
    let (dir, seg, lost_from, durable, first) = closed_twice();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(lost_from).unwrap();
    drop(f);
    for recovery in [
        convlog::RecoveryMode::PointInTime,
        convlog::RecoveryMode::Strict,
    ] {
        let err = Store::builder()
            .recovery(recovery)
            .open(dir.path())
            .unwrap_err();
        assert!(
            matches!(
                err,
                convlog::Error::Corrupt { damage: convlog::Damage::DurableLost { end }, .. }
                    if end == durable
            ),
            "{recovery:?}: {err:?}"
        );
    }
    let repaired = Store::builder()
        .recovery(convlog::RecoveryMode::Salvage)
        .open(dir.path())
        .unwrap();
    assert_eq!(contents(&repaired), first);
}
