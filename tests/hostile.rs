//! Regression tests for findings of a hostile review about damage and what commands change:
//! a missing first segment, salvage of broken batches and of zeroed sectors, a rejected
//! `pop` that must change nothing, stray segment copies, a fake segment file, and files
//! that never shrink. (Readers beside live writers: `tests/live_readers.rs`.)
//!
//! Every test drives the `convlog` binary (or the library) on a real directory.

#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_run;
mod store_files;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_run::{close, convlog, convlog_in, messages, msg, s};
use convlog::io::sim::SplitMix;
use convlog::{Damage, Error, Store};
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// Looking at files.

/// One file or directory of a store, as `stat` and `read` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    dir: bool,
    len: u64,
    ino: u64,
    mtime: (i64, i64),
    bytes: Vec<u8>,
}

/// Every entry under `dir` (recursively), by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, FileState> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_owned();
            let bytes = if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.insert(
                rel,
                FileState {
                    dir: meta.is_dir(),
                    len: meta.len(),
                    ino: meta.ino(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    bytes,
                },
            );
        }
    }
    out
}

/// The differences between two snapshots, one line each (empty when they are the same).
fn diff(before: &BTreeMap<PathBuf, FileState>, after: &BTreeMap<PathBuf, FileState>) -> String {
    let mut out = String::new();
    for (p, a) in before {
        match after.get(p) {
            None => out.push_str(&format!("removed {}\n", p.display())),
            Some(b) if a != b => out.push_str(&format!(
                "changed {}: len {} -> {}, ino {} -> {}, mtime {:?} -> {:?}, bytes {}\n",
                p.display(),
                a.len,
                b.len,
                a.ino,
                b.ino,
                a.mtime,
                b.mtime,
                if a.bytes == b.bytes { "same" } else { "differ" }
            )),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push_str(&format!("created {}\n", p.display()));
    }
    out
}

/// The files of `dir/quarantine`, with their bytes.
fn quarantine(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let q = dir.join("quarantine");
    let Ok(entries) = std::fs::read_dir(&q) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A missing first segment.

/// Finding: a store whose first segment was deleted opened as healthy, its surviving
/// messages renumbered from interaction 1 (the log started wherever its first file did).
///
/// The log starts at LSN 1: with `00000000000000000001.seg` (and its hint) gone, `verify`
/// fails naming the LSN gap, `cat` refuses, and the library's open is
/// `Error::Corrupt { damage: Damage::LsnGap { expected: 1, .. } }`. `repair` then writes a
/// gap in its place, reports the dropped range, and the store verifies clean with every
/// message of the other segments.
#[test]
fn a_missing_first_segment_is_corruption_until_repaired() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::builder().segment_size(4096).open(&dir).unwrap();
    for n in 0..120 {
        store.append_raw("a", msg(n, 120).as_bytes()).unwrap();
    }
    close(store);
    let segs = store_files::segments(&dir);
    assert!(segs.len() >= 4, "{} segments", segs.len());
    assert!(segs[0].ends_with("00000000000000000001.seg"));
    let second: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(&segs[0]).unwrap();
    let _ = std::fs::remove_file(segs[0].with_extension("hint"));
    let d = s(&dir);

    for read_only in [true, false] {
        let r = Store::builder().read_only(read_only).open(&dir);
        assert!(
            matches!(
                r,
                Err(Error::Corrupt {
                    damage: Damage::LsnGap { expected: 1, found },
                    ..
                }) if found == second
            ),
            "read_only {read_only}: {:?}",
            r.map(|_| ())
        );
    }
    let v = convlog(&["verify", d]);
    assert!(!v.ok(), "{v}");
    assert!(
        v.stderr.contains("LSN gap") && v.stderr.contains("expected 1"),
        "{v}"
    );
    let c = convlog(&["cat", d, "a"]);
    assert!(!c.ok() && c.stdout.is_empty(), "{c}");
    assert!(c.clear_error() && c.stderr.contains("LSN gap"), "{c}");
    let t = convlog(&["tail", d, "a"]);
    assert!(!t.ok() && t.stdout.is_empty(), "{t}");

    let r = convlog(&["repair", d]);
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout.contains("dropped")
            && r.stdout
                .contains(&format!("LSN gap: expected 1, found {second}")),
        "{r}"
    );
    let v = convlog(&["verify", d]);
    assert!(v.ok() && v.stdout.contains("clean"), "{v}");
    // Message n had LSN n + 1; those of the first segment (LSNs 1..second) are gone.
    let kept: Vec<u64> = messages(&dir, "a")
        .iter()
        .map(|m| m["n"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, (second - 1..120).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Salvage.

/// Finding: `repair` kept the undamaged records of a damaged batch, so a batch appended as
/// one atomic unit came back in part (b:0 and b:2 without b:1).
///
/// A batch of three messages, then one more message in another session; one byte of b:1's
/// payload flipped. `repair` drops the whole batch (its bytes kept in `quarantine/`), keeps
/// the other session, and the store verifies clean.
#[test]
fn repair_drops_a_broken_batch_whole() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let batch = "{\"b\":0,\"pad\":\"aaaaaaaaaa\"}\n{\"b\":1,\"pad\":\"bbbbbbbbbb\"}\n\
                 {\"b\":2,\"pad\":\"cccccccccc\"}\n";
    let a = convlog_in(
        &["append", d, "chat", "-", "--batch"],
        Some(batch.as_bytes()),
    );
    assert!(a.ok(), "{a}");
    let a = convlog(&["append", d, "other", r#"{"x":1}"#]);
    assert!(a.ok(), "{a}");

    let seg = store_files::segments(&dir)[0].clone();
    let recs = store_files::records(&seg);
    assert_eq!(recs.len(), 4, "{recs:?}");
    // b:1 is the second record: a 44-byte header referring to "chat", then its payload.
    let payload = recs[1].off + 44..recs[1].off + recs[1].len;
    assert!(!recs[1].named && payload.contains(&180), "{recs:?}");
    let mut bytes = std::fs::read(&seg).unwrap();
    assert_eq!(&bytes[payload.start as usize..][..6], b"{\"b\":1");
    bytes[180] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let r = convlog(&["repair", d]);
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("dropped"), "{r}");
    let chat = messages(&dir, "chat");
    assert!(chat.is_empty(), "part of the batch survived: {chat:?}");
    assert_eq!(messages(&dir, "other"), vec![serde_json::json!({"x": 1})]);
    // The whole batch's bytes are in quarantine, the damaged byte included.
    let q = quarantine(&dir);
    let all: Vec<u8> = q.values().flatten().copied().collect();
    let batch_bytes = &bytes[recs[0].off as usize..(recs[2].off + recs[2].len) as usize];
    assert!(
        all.windows(batch_bytes.len()).any(|w| w == batch_bytes),
        "the batch's bytes are not in quarantine: {:?}",
        q.keys().collect::<Vec<_>>()
    );
    let v = convlog(&["verify", d]);
    assert!(v.ok() && v.stdout.contains("clean"), "{v}");
}

/// Parses a quarantine file name `{segment:020}-{offset:012}.bin` into (segment, offset).
fn quarantine_range(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".bin")?;
    let (seg, off) = stem.split_once('-')?;
    Some((seg.parse().ok()?, off.parse().ok()?))
}

/// Zeroes `from..to` of the store's only segment; returns the damaged bytes.
fn zero(seg: &Path, from: usize, to: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(seg).unwrap();
    assert!(bytes.len() > to, "segment of {} bytes", bytes.len());
    bytes[from..to].fill(0);
    std::fs::write(seg, &bytes).unwrap();
    bytes
}

/// Checks that every dropped byte range of `seg` is in `quarantine/`, byte for byte, and
/// that the quarantined ranges cover `from..to`. Returns the quarantined ranges.
fn assert_quarantined(dir: &Path, damaged: &[u8], from: u64, to: u64) -> Vec<(u64, u64)> {
    let q = quarantine(dir);
    let mut ranges = Vec::new();
    for (name, bytes) in &q {
        let Some((seg, off)) = quarantine_range(name) else {
            continue;
        };
        assert_eq!(seg, 1, "{name}");
        let end = off + bytes.len() as u64;
        assert_eq!(
            &damaged[off as usize..end as usize],
            &bytes[..],
            "quarantine/{name} is not a copy of the bytes it stands for"
        );
        ranges.push((off, end));
    }
    ranges.sort();
    assert!(
        ranges.first().is_some_and(|r| r.0 <= from) && ranges.last().is_some_and(|r| r.1 >= to),
        "dropped {from}..{to} but quarantined {ranges:?} (files {:?})",
        q.keys().collect::<Vec<_>>()
    );
    ranges
}

/// Finding: damage that zeroes an aligned sector inside a cleanly closed last segment was
/// taken for a torn write (the zero-sector rule), and everything after it was cut off
/// silently: durable data deleted, with no copy.
///
/// 200 messages (one append each, closed cleanly); bytes 8192..12288 zeroed. `append`
/// refuses (corrupt) and writes nothing; `repair` keeps every message whose record lies
/// outside the damaged records, those after the zeroed range included, and every dropped
/// byte is in `quarantine/`.
#[test]
fn repair_keeps_durable_messages_after_a_zeroed_range() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let store = Store::open(&dir).unwrap();
    for n in 0..200 {
        store.append_raw("s", msg(n, 200).as_bytes()).unwrap();
    }
    close(store);
    let seg = store_files::segments(&dir)[0].clone();
    let recs = store_files::records(&seg);
    assert_eq!(recs.len(), 200);
    let damaged = zero(&seg, 8192, 12288);

    let a = convlog(&["append", d, "s", &msg(999, 200)]);
    assert!(
        !a.ok() && a.clear_error() && a.stderr.contains("corrupt"),
        "{a}"
    );
    let after = std::fs::read(&seg).unwrap();
    assert!(
        after.len() >= damaged.len() && after[..damaged.len()] == damaged[..],
        "the refused append changed the segment"
    );

    let r = convlog(&["repair", d]);
    assert!(r.ok(), "{r}");
    let kept: Vec<u64> = messages(&dir, "s")
        .iter()
        .map(|m| m["n"].as_u64().unwrap())
        .collect();
    // Record n holds message n; only those touching the zeroed bytes are damaged.
    let expected: Vec<u64> = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.off + r.len <= 8192 || r.off >= 12288)
        .map(|(n, _)| n as u64)
        .collect();
    assert!(expected.len() > 150 && *expected.last().unwrap() == 199);
    assert_eq!(kept, expected, "repair lost messages outside the damage");
    let lost: Vec<_> = recs
        .iter()
        .filter(|r| !(r.off + r.len <= 8192 || r.off >= 12288))
        .collect();
    let (from, to) = (
        lost[0].off,
        lost.last().unwrap().off + lost.last().unwrap().len,
    );
    assert_quarantined(&dir, &damaged, from, to);
    let v = convlog(&["verify", d]);
    assert!(v.ok() && v.stdout.contains("clean"), "{v}");
}

/// Finding (the same, through `convlog import`): 200 messages imported into one session
/// are one batch, so a zeroed range inside it breaks the unit; `repair` may drop it (units
/// are atomic) but never without a copy: every byte of the batch is in `quarantine/`.
#[test]
fn repair_of_a_zeroed_imported_batch_keeps_a_copy_of_all_of_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let file = tmp.path().join("in.jsonl");
    let lines: String = (0..200)
        .map(|n| format!("{{\"session\":\"s\",\"message\":{}}}\n", msg(n, 200)))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let i = convlog(&["import", d, s(&file)]);
    assert!(i.ok(), "{i}");
    let seg = store_files::segments(&dir)[0].clone();
    let recs = store_files::records(&seg);
    // The batch's 200 messages, the first carrying its idempotency key (`import` is
    // resumable).
    assert_eq!(recs.len(), 200);
    let damaged = zero(&seg, 8192, 12288);

    let a = convlog(&["append", d, "s", &msg(999, 200)]);
    assert!(!a.ok() && a.stderr.contains("corrupt"), "{a}");
    let r = convlog(&["repair", d]);
    assert!(r.ok(), "{r}");
    let kept = messages(&dir, "s");
    if kept.len() < 200 {
        let end = recs[199].off + recs[199].len;
        // What was dropped is the batch, or more: all of it is kept aside.
        let lost_from = if kept.is_empty() { recs[0].off } else { 8192 };
        assert_quarantined(&dir, &damaged, lost_from, end.max(12288));
    }
    let v = convlog(&["verify", d]);
    assert!(v.ok() && v.stdout.contains("clean"), "{v}");
}

// ---------------------------------------------------------------------------------------
// Commands that must change nothing.

/// Finding: a `pop` of a session that does not exist, which pops nothing, still rewrote
/// files of the store on its way out (a trim, a hint, preallocation).
///
/// After a clean close, `convlog pop S nosuch` fails saying there is nothing to pop, and
/// every file of the store is byte-identical, with the same inode and mtime, and no file
/// appeared or went away.
#[test]
fn a_rejected_pop_changes_no_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    for n in 0..3 {
        let a = convlog(&["append", d, "s", &msg(n, 100)]);
        assert!(a.ok(), "{a}");
    }
    let before = snapshot(&dir);
    // mtimes have a granularity: let any change show.
    std::thread::sleep(Duration::from_millis(20));
    let p = convlog(&["pop", d, "nosuch"]);
    assert!(!p.ok() && p.clear_error(), "{p}");
    assert!(p.stderr.contains("nothing to pop"), "{p}");
    assert!(p.stdout.is_empty(), "{p}");
    let after = snapshot(&dir);
    let changes = diff(&before, &after);
    assert!(
        changes.is_empty(),
        "a rejected pop changed the store:\n{changes}"
    );
    assert_eq!(messages(&dir, "s").len(), 3);
}

/// Finding: a stray copy of a segment under another segment's name (a backup restored
/// beside the store, a copy made by hand) either blocked every command with no way out, or
/// was read as part of the log.
///
/// For a copy of the first segment named `00000000000000099999.seg` (past the end), named
/// as the next segment would be, and named inside the first segment's LSN range: `verify`
/// fails naming the stray file; no other command succeeds silently in a way that uses it;
/// `repair` sets it aside into `quarantine/` (byte-identical, `<name>.aside`), and the store
/// then verifies clean with every original message.
#[test]
fn a_stray_segment_copy_is_named_and_set_aside_by_repair() {
    for variant in ["past-the-end", "next", "inside"] {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("store");
        let d = s(&dir);
        let store = Store::builder().segment_size(4096).open(&dir).unwrap();
        for n in 0..100 {
            store.append_raw("a", msg(n, 120).as_bytes()).unwrap();
        }
        let last = store.last_lsn().0;
        close(store);
        let segs = store_files::segments(&dir);
        assert!(segs.len() >= 3, "{} segments", segs.len());
        let name = match variant {
            "past-the-end" => "00000000000000099999.seg".to_owned(),
            "next" => format!("{:020}.seg", last + 1),
            _ => format!("{:020}.seg", 2),
        };
        let stray = dir.join(&name);
        assert!(!stray.exists(), "{variant}: {name} exists");
        std::fs::copy(&segs[0], &stray).unwrap();
        let copy = std::fs::read(&stray).unwrap();
        let id = name.strip_suffix(".seg").unwrap();

        let v = convlog(&["verify", d]);
        assert!(!v.ok(), "{variant}: {v}");
        assert!(v.clear_error() && v.stderr.contains(id), "{variant}: {v}");
        let mut appended = 0;
        for args in [
            vec!["cat", d, "a"],
            vec!["sessions", d],
            vec!["append", d, "a", r#"{"role":"user","content":"more"}"#],
        ] {
            let r = convlog(&args);
            if r.ok() {
                // A command that went ahead must not have read the copy as part of the log.
                match args[0] {
                    "cat" => {
                        let ns: Vec<u64> = r
                            .stdout
                            .lines()
                            .map(|l| {
                                serde_json::from_str::<Value>(l).unwrap()["n"]
                                    .as_u64()
                                    .unwrap()
                            })
                            .collect();
                        assert_eq!(ns, (0..100).collect::<Vec<_>>(), "{variant}: {r}");
                    }
                    "sessions" => assert!(
                        r.stdout.contains("1 session, 100 messages"),
                        "{variant}: {r}"
                    ),
                    _ => appended += 1,
                }
            } else {
                assert!(r.clear_error() && r.stderr.contains(id), "{variant}: {r}");
            }
        }

        let r = convlog(&["repair", d]);
        assert!(r.ok(), "{variant}: {r}");
        assert!(r.stdout.contains(id), "{variant}: {r}");
        assert!(
            !stray.exists(),
            "{variant}: the stray copy is still in the store"
        );
        let q = quarantine(&dir);
        let aside = format!("{name}.aside");
        assert_eq!(
            q.get(&aside),
            Some(&copy),
            "{variant}: quarantine holds {:?}",
            q.keys().collect::<Vec<_>>()
        );
        let v = convlog(&["verify", d]);
        assert!(v.ok() && v.stdout.contains("clean"), "{variant}: {v}");
        let kept: Vec<u64> = messages(&dir, "a")
            .iter()
            .filter_map(|m| m["n"].as_u64())
            .collect();
        assert_eq!(kept, (0..100).collect::<Vec<_>>(), "{variant}");
        assert_eq!(
            messages(&dir, "a").len() as u64,
            100 + appended,
            "{variant}"
        );
    }
}

/// Finding: `convlog append` on a directory holding only a fake segment file (random bytes
/// under a segment's name) created `LOCK` (and could start writing) before finding out the
/// file is no segment.
///
/// The append fails with one clear line naming the file, and the directory is exactly as it
/// was: the same single file, byte-identical, same inode and mtime, no `LOCK`.
#[test]
fn append_to_a_fake_segment_fails_and_changes_nothing() {
    let seed = 0x5eed_f00d_u64;
    eprintln!("fake segment bytes: SplitMix seed {seed:#x}");
    let mut rng = SplitMix(seed);
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let bytes: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(dir.join("00000000000000000001.seg"), &bytes).unwrap();
    let before = snapshot(&dir);
    std::thread::sleep(Duration::from_millis(20));

    let a = convlog(&["append", s(&dir), "s", r#"{"role":"user","content":"hi"}"#]);
    assert!(!a.ok() && a.code() == Some(1), "{a}");
    assert!(
        a.clear_error() && a.stderr.contains("00000000000000000001"),
        "{a}"
    );
    let after = snapshot(&dir);
    let changes = diff(&before, &after);
    assert!(
        changes.is_empty(),
        "a failed append changed the directory:\n{changes}"
    );
    assert!(!dir.join("LOCK").exists());
}

// ---------------------------------------------------------------------------------------
// Files never shrink.

/// Sizes of every file seen so far, by (path, inode): a file replaced by a rename is a new
/// file; the same file must never get shorter.
#[derive(Default)]
struct Sizes {
    seen: BTreeMap<(PathBuf, u64), u64>,
    /// The inode each segment had when first seen: segments are never replaced.
    segments: BTreeMap<PathBuf, u64>,
    observations: u64,
}

impl Sizes {
    fn observe(&mut self, dir: &Path, when: &str) {
        self.observations += 1;
        for (rel, st) in snapshot(dir) {
            if st.dir {
                continue;
            }
            let key = (rel.clone(), st.ino);
            if let Some(&len) = self.seen.get(&key) {
                assert!(
                    st.len >= len,
                    "{} shrank from {len} to {} bytes {when}",
                    rel.display(),
                    st.len
                );
            }
            self.seen.insert(key, st.len);
            if rel.extension().is_some_and(|e| e == "seg") {
                let ino = *self.segments.entry(rel.clone()).or_insert(st.ino);
                assert_eq!(ino, st.ino, "{} was replaced {when}", rel.display());
            }
        }
    }
}

/// Finding: the writer trimmed the active segment's preallocated space at every clean close
/// and seal (and undid preallocation with `set_len`), so a file another process had mapped
/// got shorter under it (the cause of the SIGBUS above).
///
/// Rounds of library appends (random sizes, 4 KiB segments: rotations), syncs, clean
/// closes, read-only opens, reopens, and a `convlog append` process between rounds; after
/// every step, no store file is shorter than it was.
#[test]
fn store_files_never_shrink() {
    let seed = 0x9e37_79b9_u64;
    eprintln!("message sizes: SplitMix seed {seed:#x}");
    let mut rng = SplitMix(seed);
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let mut sizes = Sizes::default();
    let mut n = 0u64;
    for round in 0..6 {
        let store = Store::builder().segment_size(4096).open(&dir).unwrap();
        sizes.observe(&dir, &format!("after open {round}"));
        for i in 0..40 {
            let len = 60 + rng.below(700) as usize;
            let session = format!("s{}", rng.below(3));
            if i % 10 == 9 {
                let batch: Vec<String> = (0..3).map(|k| msg(n + k, len)).collect();
                store.append_batch_raw(&session, &batch).unwrap();
                n += 3;
            } else {
                store.append_raw(&session, msg(n, len).as_bytes()).unwrap();
                n += 1;
            }
            if i % 13 == 0 {
                store.sync().unwrap();
            }
            sizes.observe(&dir, &format!("after append {i} of round {round}"));
        }
        close(store);
        sizes.observe(&dir, &format!("after close {round}"));
        let ro = Store::builder().read_only(true).open(&dir).unwrap();
        assert_eq!(ro.stats().messages, n);
        drop(ro);
        sizes.observe(&dir, &format!("after a read-only open {round}"));
        let a = convlog(&["append", s(&dir), "cli", &msg(n, 300)]);
        assert!(a.ok(), "{a}");
        n += 1;
        sizes.observe(&dir, &format!("after convlog append {round}"));
    }
    assert!(store_files::segments(&dir).len() >= 10);
    eprintln!(
        "{} observations of {} files",
        sizes.observations,
        sizes.seen.len()
    );
}
