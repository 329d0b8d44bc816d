//! Delete and compaction: what a compaction keeps (every live message, with its interaction
//! id and LSN; keys; metadata; forks' shared prefixes), what it drops (popped, truncated,
//! cleared, replaced and deleted messages: no byte of them left in any file), and that a
//! crash at any operation of it leaves the old segments or the new one in force.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use convlog::io::sim::{Fault, SimFs, SplitMix, Tear};
use convlog::{Durability, Error, Lsn, RecoveryMode, Store};
use serde_json::json;

mod store_files;
use store_files::{all_files, contains};

/// Everything a reader can see of a store: per session, its messages (id, LSN, bytes) and
/// metadata.
type Seen = BTreeMap<String, (Vec<(u64, Lsn, Vec<u8>)>, Option<Vec<u8>>)>;

fn seen(store: &Store, sessions: &[String]) -> Seen {
    sessions
        .iter()
        .map(|s| {
            let msgs = store
                .range(s, ..)
                .raw()
                .map(|e| {
                    let e = e.unwrap();
                    (e.interaction_id, e.lsn, e.message)
                })
                .collect();
            let meta = store.meta(s).unwrap();
            (s.clone(), (msgs, meta))
        })
        .collect()
}

fn open_sim(fs: &SimFs) -> Store {
    Store::builder()
        .vfs(Arc::new(fs.clone()))
        .durability(Durability::Always)
        .segment_size(4 << 10)
        .open("/c")
        .unwrap()
}

fn msg(session: &str, i: u64, marker: &str) -> serde_json::Value {
    json!({"role": "user", "content": format!("{marker} {session} message {i} {}", "x".repeat(60))})
}

/// A workload touching every kind of record, over many small segments.
fn workload(store: &Store, rng: &mut SplitMix, sessions: &[String]) {
    for step in 0..400u64 {
        let s = &sessions[rng.below(sessions.len() as u64) as usize];
        match rng.below(20) {
            0 => drop(store.pop(s).unwrap()),
            1 => drop(store.truncate(s, rng.below(4)).unwrap()),
            2 => drop(store.clear(s).unwrap()),
            3 => drop(store.delete_session(s).unwrap()),
            4 => {
                let meta = json!({"step": step});
                store.set_meta(s, &meta).unwrap();
            }
            5 => {
                let key = format!("k{}", rng.below(8));
                store
                    .append_with_key(s, &key, &msg(s, step, "keyed"))
                    .unwrap();
            }
            6 => {
                let n = store.interaction_count(s);
                let items: Vec<Vec<u8>> = (0..2)
                    .map(|i| serde_json::to_vec(&msg(s, step + i, "replaced")).unwrap())
                    .collect();
                drop(store.replace(s, Some(n + 1), &items).unwrap());
            }
            7 => {
                let dst = &sessions[rng.below(sessions.len() as u64) as usize];
                let at = rng.below(store.interaction_count(s) + 2);
                match store.fork(s, dst, Some(at)) {
                    Ok(_) | Err(Error::SessionExists { .. }) => {}
                    Err(e) => panic!("fork {s} -> {dst} at {at}: {e}"),
                }
            }
            _ => drop(store.append(s, &msg(s, step, "plain")).unwrap()),
        }
    }
}

#[test]
fn compaction_keeps_every_live_message_and_drops_the_rest() {
    let base = std::env::var("CONVLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0A1);
    for seed in base..base + 30 {
        println!("seed {seed} (CONVLOG_SEED={seed} runs this one first)");
        compaction_round(seed);
    }
}

fn compaction_round(seed: u64) {
    let fs = SimFs::new(seed);
    let store = open_sim(&fs);
    let sessions: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    let mut rng = SplitMix(seed);
    workload(&store, &mut rng, &sessions);
    assert!(store.seal().unwrap());
    let before = seen(&store, &sessions);
    let segments_before = store.segment_ids().len();
    let report = store.compact().unwrap();
    assert_eq!(report.segments_rewritten, segments_before - 1, "{report:?}");
    assert!(report.records_dropped > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(
        seen(&store, &sessions),
        before,
        "seed {seed}: in the open store"
    );
    assert_eq!(store.segment_ids().len(), 2);
    // Appends go on after it, with the ids they would have had.
    let next = store.interaction_count("s0") + 1;
    assert_eq!(
        store
            .append("s0", &msg("s0", 9, "after"))
            .unwrap()
            .interaction_id,
        next
    );
    // A second workload and compaction over the compacted segment.
    workload(&store, &mut rng, &sessions);
    store.seal().unwrap();
    let again = seen(&store, &sessions);
    store.compact().unwrap();
    assert_eq!(
        seen(&store, &sessions),
        again,
        "seed {seed}: a second compaction"
    );
    drop(store);
    let reopened = open_sim(&fs);
    assert_eq!(
        seen(&reopened, &sessions),
        again,
        "seed {seed}: after a reopen"
    );
    drop(reopened);
    let strict = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .recovery(RecoveryMode::Strict)
        .read_only(true)
        .open("/c")
        .unwrap();
    assert_eq!(
        seen(&strict, &sessions),
        again,
        "seed {seed}: a strict (verify) read"
    );
}

#[test]
fn a_crash_at_any_operation_of_a_compaction_leaves_the_old_or_the_new_segments() {
    let seed = 0xC4A5;
    println!("seed {seed}");
    let fs = SimFs::new(seed);
    let sessions: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    {
        let store = open_sim(&fs);
        workload(&store, &mut SplitMix(seed), &sessions);
        store.seal().unwrap();
    }
    let expected = seen(&open_sim(&fs), &sessions);
    let mut points = 0;
    for k in 1.. {
        let run = fs.crash(Tear::DropUnsynced);
        let store = open_sim(&run);
        let from = run.ops() + k;
        run.fail_sticky(from, Fault::Io);
        let done = store.compact().is_ok();
        drop(store);
        for tear in [Tear::DropUnsynced, Tear::Sectors(512)] {
            let after = open_sim(&run.crash(tear));
            assert_eq!(
                seen(&after, &sessions),
                expected,
                "crash at op {k} ({tear:?})"
            );
        }
        points += 1;
        if done {
            break;
        }
    }
    println!("crash points exercised: {points}");
    assert!(points > 10, "{points}");
}

#[test]
fn after_delete_and_compaction_no_byte_of_the_session_remains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::builder().segment_size(4 << 10).open(&dir).unwrap();
    let marker = "my SSN is 123-45-6789";
    for i in 0..50 {
        store.append("keep", &msg("keep", i, "ordinary")).unwrap();
        store.append("secret", &msg("secret", i, marker)).unwrap();
        store.append("cleared", &msg("cleared", i, marker)).unwrap();
    }
    store.set_meta("secret", &json!({"note": marker})).unwrap();
    store
        .append_with_key("secret", marker, &msg("secret", 99, marker))
        .unwrap();
    assert!(store.delete_session("secret").unwrap());
    assert_eq!(store.clear("cleared").unwrap(), 50);
    assert!(!store.contains("secret"));
    assert_eq!(store.meta("secret").unwrap(), None);
    assert!(store.sessions().iter().all(|s| s.id != "secret"));
    let found = |needle: &str| {
        all_files(&dir)
            .into_iter()
            .filter(|(_, b)| contains(b, needle.as_bytes()))
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
    };
    assert!(
        !found(marker).is_empty(),
        "the marker is on disk before compaction"
    );
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert_eq!(
        report.sessions_erased,
        vec!["cleared".to_owned(), "secret".to_owned()]
    );
    assert_eq!(found(marker), Vec::<std::path::PathBuf>::new());
    assert_eq!(report.quarantine_purged, 0, "there was no quarantine");
    assert_eq!(store.interaction_count("keep"), 50);
    // Bytes a repair set aside may hold the marker too: a purge of quarantine/ removes them.
    let q = dir.join(convlog::QUARANTINE_DIR);
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(q.join("00000000000000000009-000000000048.torn"), marker).unwrap();
    assert_eq!(found(marker).len(), 1);
    assert_eq!(store.purge_quarantine().unwrap(), 1);
    assert_eq!(found(marker), Vec::<std::path::PathBuf>::new());
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.interaction_count("keep"), 50);
    assert_eq!(store.interaction_count("secret"), 0);
    // A deleted id can be used again, from 1.
    assert_eq!(
        store
            .append("secret", &msg("secret", 0, "new"))
            .unwrap()
            .interaction_id,
        1
    );
}

#[test]
fn forks_keep_their_shared_prefix_through_compaction() {
    let fs = SimFs::new(7);
    let store = open_sim(&fs);
    for i in 0..40 {
        store.append("src", &msg("src", i, "m")).unwrap();
    }
    store.fork("src", "dst", Some(30)).unwrap();
    store.clear("src").unwrap();
    store.append("dst", &msg("dst", 31, "own")).unwrap();
    store.seal().unwrap();
    let names = vec!["src".to_owned(), "dst".to_owned()];
    let before = seen(&store, &names);
    store.compact().unwrap();
    assert_eq!(seen(&store, &names), before);
    drop(store);
    assert_eq!(seen(&open_sim(&fs), &names), before);
}

#[test]
fn compaction_is_refused_where_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store.append("s", &msg("s", 1, "m")).unwrap();
    drop(store);
    let ro = Store::builder().read_only(true).open(tmp.path()).unwrap();
    assert!(matches!(ro.compact(), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        ro.delete_session("s"),
        Err(Error::ReadOnly { .. })
    ));
    let rw = Store::open(tmp.path()).unwrap();
    assert!(matches!(
        rw.delete_session(""),
        Err(Error::InvalidSessionId { .. })
    ));
    // Nothing sealed: nothing to do, nothing changed.
    let report = rw.compact().unwrap();
    assert_eq!(report.segments_rewritten, 0);
    assert_eq!(rw.interaction_count("s"), 1);
}

#[test]
fn another_process_reads_and_follows_the_log_across_a_compaction() {
    let fs = SimFs::new(11);
    // Two handles on one simulated file system act as two processes.
    let (a, b) = (open_sim(&fs), open_sim(&fs));
    let sessions: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    workload(&a, &mut SplitMix(11), &sessions);
    let mut live = b.subscribe(convlog::Since::Now);
    let reading = b.messages("s1").raw();
    let want_s1 = a.interaction_count("s1");
    a.seal().unwrap();
    assert!(a.compact().unwrap().segments_rewritten > 0);
    assert_eq!(
        seen(&b, &sessions),
        seen(&a, &sessions),
        "b after a's compaction"
    );
    // A read b began before the compaction still yields exactly what it held.
    assert_eq!(reading.count() as u64, want_s1);
    // b writes after it, with the next ids; a sees them.
    let n = b.interaction_count("s2");
    assert_eq!(
        b.append("s2", &msg("s2", 1, "b")).unwrap().interaction_id,
        n + 1
    );
    a.append("s3", &msg("s3", 1, "a")).unwrap();
    assert_eq!(
        seen(&a, &sessions),
        seen(&b, &sessions),
        "both, after writes"
    );
    // b's subscription, begun before the compaction, sees the two appends and nothing else.
    let mut got = Vec::new();
    while let Some(e) = live
        .next_timeout(std::time::Duration::from_millis(50))
        .unwrap()
    {
        got.push(e);
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|e| matches!(e, convlog::LogEvent::Message { .. }))
    );
}

#[test]
fn the_compacting_process_sees_the_others_appends_after_it() {
    let fs = SimFs::new(12);
    let (a, b) = (open_sim(&fs), open_sim(&fs));
    for i in 0..100 {
        a.append("s", &msg("s", i, "m")).unwrap();
    }
    a.clear("s").unwrap();
    a.append("t", &msg("t", 0, "m")).unwrap();
    assert_eq!(b.interaction_count("t"), 1);
    for round in 0..3 {
        a.seal().unwrap();
        a.compact().unwrap();
        assert_eq!(b.interaction_count("t"), 1, "round {round}");
    }
    a.append("t", &msg("t", 1, "m")).unwrap();
    assert_eq!(b.interaction_count("t"), 2);
    b.append("t", &msg("t", 2, "m")).unwrap();
    assert_eq!(b.interaction_count("t"), 3);
    assert_eq!(a.interaction_count("t"), 3, "a sees b's append");
}

#[test]
fn retention_deletes_idle_sessions_then_the_least_recently_appended() {
    let fs = SimFs::new(13);
    let store = open_sim(&fs);
    for s in ["old-1", "old-2"] {
        store.append(s, &msg(s, 0, "m")).unwrap();
    }
    fs.advance(std::time::Duration::from_millis(80));
    for s in ["mid", "new"] {
        store.append(s, &msg(s, 0, "m")).unwrap();
    }
    store.append("new", &msg("new", 1, "m")).unwrap();
    let idle = convlog::Retention::keep_all().idle_for(std::time::Duration::from_millis(60));
    let report = store.compact_retaining(idle).unwrap();
    assert_eq!(report.sessions_expired, ["old-1", "old-2"]);
    assert_eq!(report.sessions_erased, ["old-1", "old-2"]);
    let ids: Vec<String> = store.sessions().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["mid", "new"]);
    // At most one session: the most recently appended stays.
    let one = convlog::Retention::keep_all().max_sessions(1);
    assert_eq!(
        store.compact_retaining(one).unwrap().sessions_expired,
        ["mid"]
    );
    // A byte budget below one session's messages: everything goes, oldest first.
    let bytes = convlog::Retention::keep_all().max_bytes(10);
    assert_eq!(
        store.compact_retaining(bytes).unwrap().sessions_expired,
        ["new"]
    );
    assert!(store.sessions().is_empty());
    drop(store);
    assert!(open_sim(&fs).sessions().is_empty(), "after a reopen");
}

#[test]
fn the_background_compactor_compacts_once_enough_is_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = convlog::AutoCompact::new(0.5, std::time::Duration::from_millis(20));
    let store = Store::builder()
        .segment_size(4 << 10)
        .auto_compact(policy)
        .open(tmp.path())
        .unwrap();
    for i in 0..200 {
        store.append("gone", &msg("gone", i, "m")).unwrap();
        if i % 10 == 0 {
            store.append("kept", &msg("kept", i, "m")).unwrap();
        }
    }
    let before = store.segment_ids().len();
    store.delete_session("gone").unwrap();
    store.seal().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.segment_ids().len() >= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        store.segment_ids().len() < before,
        "{:?}",
        store.segment_ids()
    );
    assert_eq!(store.interaction_count("kept"), 20);
    assert_eq!(store.interaction_count("gone"), 0);
}

#[test]
fn a_deleted_fork_source_loses_every_message_no_fork_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::builder().segment_size(4 << 10).open(&dir).unwrap();
    for i in 0..30 {
        store.append("src", &msg("src", i, "shared-part")).unwrap();
    }
    store.fork("src", "fork", Some(20)).unwrap();
    // The fork drops some of what it shares, then goes its own way.
    store.truncate("fork", 15).unwrap();
    store.append("fork", &msg("fork", 16, "fork-own")).unwrap();
    for i in 30..40 {
        store
            .append("src", &msg("src", i, "src-only secret"))
            .unwrap();
    }
    let second = store.fork("fork", "grandchild", None).unwrap();
    assert_eq!(second, 16);
    store.delete_session("src").unwrap();
    store.pop("grandchild").unwrap();
    let names: Vec<String> = ["src", "fork", "grandchild"].map(String::from).to_vec();
    let before = seen(&store, &names);
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert_eq!(seen(&store, &names), before);
    assert_eq!(report.sessions_erased, ["src"]);
    let found = all_files(&dir)
        .into_iter()
        .any(|(_, b)| contains(&b, b"src-only secret"));
    assert!(!found, "the deleted source's own messages are gone");
    // Messages 16..20 of src were shared with the fork, which truncated them: gone too.
    let shared_dropped = all_files(&dir)
        .into_iter()
        .any(|(_, b)| contains(&b, b"shared-part src message 17 "));
    assert!(!shared_dropped);
    drop(store);
    assert_eq!(
        seen(&Store::open(&dir).unwrap(), &names),
        before,
        "after a reopen"
    );
}

/// A store on `fs` whose one session `s` got `n` messages, then was cut to `keep`, and
/// whose active segment was then sealed: most of its sealed bytes are dead.
fn cut_and_sealed(fs: &SimFs, n: u64, keep: u64) -> Store {
    let store = open_sim(fs);
    for i in 0..n {
        store.append("s", &msg("s", i, "m")).unwrap();
    }
    store.truncate("s", keep).unwrap();
    store.seal().unwrap();
    store
}

#[test]
fn compaction_reports_its_progress_up_to_the_whole_input() {
    let fs = SimFs::new(14);
    let store = cut_and_sealed(&fs, 200, 10);
    let mut seen_progress = Vec::new();
    let report = store
        .compact_with(convlog::Retention::keep_all(), &mut |p| {
            seen_progress.push(p)
        })
        .unwrap();
    assert!(report.segments_rewritten > 1);
    // Two passes over the input (plan, write), one report per segment each.
    assert_eq!(seen_progress.len(), 2 * report.segments_rewritten);
    assert!(seen_progress.windows(2).all(|w| w[0].done <= w[1].done));
    let last = seen_progress.last().unwrap();
    assert_eq!(
        (last.done, last.total),
        (last.total, 2 * report.bytes_before)
    );
}

/// Regression (found by the `open_image` fuzz target): a compacted segment that ends up last
/// (its successor's creation was lost) is never appended to: a writable open starts a new
/// segment after it.
#[test]
fn a_compacted_last_segment_gets_a_new_segment_after_it() {
    let fs = SimFs::new(15);
    let store = cut_and_sealed(&fs, 100, 40);
    store.compact().unwrap();
    let ids = store.segment_ids();
    let names = vec!["s".to_owned()];
    let before = seen(&store, &names);
    drop(store);
    // The active segment (empty) is lost: the compacted one is last.
    use convlog::io::Vfs;
    let active = std::path::Path::new("/c").join(ids.last().unwrap().file_name());
    fs.remove_file(&active).unwrap();
    let store = open_sim(&fs);
    assert_eq!(seen(&store, &names), before);
    assert_eq!(
        store
            .append("s", &msg("s", 41, "m"))
            .unwrap()
            .interaction_id,
        41
    );
    assert_eq!(
        store.segment_ids().len(),
        2,
        "a new active segment after the compacted one"
    );
    drop(store);
    assert_eq!(open_sim(&fs).interaction_count("s"), 41);
}

/// A session whose bytes a torn-tail cut set aside in `quarantine/`, then deleted: what the
/// quarantine file holds of it, and whether it is still there after a compaction.
fn quarantined_then_deleted(keep_quarantine: bool) -> (convlog::CompactReport, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let marker = "card 4111-1111-1111-1111";
    let open = || {
        Store::builder()
            .segment_size(4 << 10)
            .keep_quarantine(keep_quarantine)
            .open(&dir)
            .unwrap()
    };
    let store = open();
    for i in 0..20 {
        store.append("keep", &msg("keep", i, "ordinary")).unwrap();
        store.append("secret", &msg("secret", i, marker)).unwrap();
    }
    drop(store);
    // A write of `secret` that a crash tore: half a record at the end of the last segment.
    let last = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let start = bytes[..end]
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[start - 60..end], end as u64).unwrap();
    drop(f);
    let store = open();
    assert!(
        store.recovery_report().torn_tail.is_some(),
        "the tear was cut"
    );
    let q = dir.join(convlog::QUARANTINE_DIR);
    let in_quarantine = || {
        all_files(&q)
            .iter()
            .any(|(_, b)| contains(b, marker.as_bytes()))
    };
    assert!(in_quarantine(), "the cut bytes are in quarantine/");
    assert!(store.delete_session("secret").unwrap());
    store.seal().unwrap();
    let report = store.compact().unwrap();
    assert_eq!(report.sessions_erased, vec!["secret".to_owned()]);
    assert_eq!(store.interaction_count("keep"), 20);
    (report, in_quarantine())
}

#[test]
fn a_compaction_that_erases_empties_quarantine_unless_the_store_keeps_it() {
    let (report, left) = quarantined_then_deleted(false);
    assert_eq!(report.quarantine_purged, 1);
    assert!(!left, "an erased session's bytes stayed in quarantine/");
    let (report, left) = quarantined_then_deleted(true);
    assert_eq!(report.quarantine_purged, 0);
    assert!(left, "keep_quarantine(true) keeps quarantine/ as it was");
}
