//! Encryption at rest (issue 15 §2–§4): sealed payloads, per-session data keys in `KEYS`,
//! erasure by key destruction, and key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use convlog::format::{
    Decoded, SEGMENT_HEADER_LEN, SegmentHeader, SessionField, decode_record, encode_record,
};
use convlog::io::sim::{Fault, SimFs, Tear};
use convlog::{Damage, Error, KEYS_FILE, MasterKey, Options, RecoveryMode, Store};

mod store_files;
use store_files::{all_files, contains};

/// Length of `KEYS`'s header, version 2 (docs/format.md, "`KEYS` layout").
const KEYS_HEADER: usize = 96;

fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

fn enc(n: u8) -> Options {
    Store::builder().encryption(key(n))
}

fn msg(session: &str, i: usize) -> Vec<u8> {
    format!(r#"{{"role":"user","content":"{session} says SECRET-{session}-{i:04} (123-45-6789)"}}"#)
        .into_bytes()
}

/// `rounds` rounds of one message to each of `sessions`, in turn.
fn append_rounds(store: &Store, sessions: &[&str], rounds: usize) {
    for i in 0..rounds {
        for s in sessions {
            store.append_raw(s, &msg(s, i)).unwrap();
        }
    }
}

/// Each session's messages, read back (an error as its text).
fn seen(store: &Store, sessions: &[&str]) -> Vec<Result<Vec<Vec<u8>>, String>> {
    sessions
        .iter()
        .map(|s| {
            store
                .messages(s)
                .raw()
                .map(|e| e.map(|e| e.message))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[test]
fn no_plaintext_reaches_any_file_of_an_encrypted_store() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<Vec<u8>> = (0..300).map(|i| msg("a", i)).collect();
    {
        let store = enc(1).segment_size(16 << 10).open(dir.path()).unwrap();
        assert!(store.is_encrypted());
        for m in &expected[..200] {
            store.append_raw("a", m).unwrap();
        }
        store.append_batch_raw("a", &expected[200..250]).unwrap();
        for m in &expected[250..] {
            store
                .append_batch_raw_with_key("a", "KEY-SECRET-IDEMPOTENT", &[m])
                .unwrap_or_default();
        }
        // (The same key again is a retry: only the first of those 50 was appended.)
        store
            .set_meta_raw("a", br#"{"user":"SECRET-META-alice"}"#)
            .unwrap();
        store.append_raw("b", &msg("b", 0)).unwrap();
        store.fork("a", "c", Some(10)).unwrap();
        store.append_raw("c", &msg("c", 0)).unwrap();
        store.pop("b").unwrap();
        store.replace("b", None, &[msg("b", 1)]).unwrap();
        store.delete_session("b").unwrap();
        store.seal().unwrap();
        store.compact().unwrap();
    }
    for (path, bytes) in all_files(dir.path()) {
        for needle in [&b"SECRET"[..], b"123-45-6789", b"alice", b"IDEMPOTENT"] {
            assert!(
                !contains(&bytes, needle),
                "{} holds {:?} in the clear",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    let store = enc(1).open(dir.path()).unwrap();
    let a = seen(&store, &["a"]).remove(0).unwrap();
    assert_eq!(a, expected[..251].to_vec());
    assert_eq!(
        store.meta("a").unwrap().unwrap(),
        br#"{"user":"SECRET-META-alice"}"#
    );
    let c = seen(&store, &["c"]).remove(0).unwrap();
    assert_eq!(c[..10], expected[..10]);
    assert_eq!(c[10], msg("c", 0));
    assert_eq!(store.interaction_count("b"), 0);
    // The idempotency key is remembered through its HMAC: a retry writes nothing.
    let last = store.last_lsn();
    let again = store
        .append_batch_raw_with_key("a", "KEY-SECRET-IDEMPOTENT", &[&expected[299]])
        .unwrap();
    assert_eq!(again[0].interaction_id, 251);
    assert_eq!(store.last_lsn(), last);
    let tail: Vec<Vec<u8>> = store
        .tail("a", 3)
        .raw()
        .map(|e| e.unwrap().message)
        .collect();
    assert_eq!(tail, expected[248..251].to_vec());
}

/// The names and bytes of every file in `dir`.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    all_files(dir)
}

/// A store encrypted under key 1 holding one message, `msg("s", 0)`, closed.
fn one_message_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    enc(1)
        .open(dir.path())
        .unwrap()
        .append_raw("s", &msg("s", 0))
        .unwrap();
    dir
}

#[test]
fn a_missing_or_wrong_key_is_a_typed_error_naming_the_store_and_changes_nothing() {
    let dir = one_message_store();
    let before = snapshot(dir.path());
    for read_only in [false, true] {
        let e = Store::builder()
            .read_only(read_only)
            .open(dir.path())
            .unwrap_err();
        assert!(
            matches!(&e, Error::KeyRequired { path } if path == dir.path()),
            "{e}"
        );
        let e = enc(2).read_only(read_only).open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::WrongKey { path } if path == dir.path()),
            "{e}"
        );
        assert!(e.to_string().contains(&dir.path().display().to_string()));
        assert_eq!(snapshot(dir.path()), before, "read_only {read_only}");
    }
    // A key for a store written without one.
    let plain = tempfile::tempdir().unwrap();
    Store::open(plain.path())
        .unwrap()
        .append_raw("s", &msg("s", 0))
        .unwrap();
    let before = snapshot(plain.path());
    let e = enc(1).open(plain.path()).unwrap_err();
    assert!(
        matches!(&e, Error::NotEncrypted { path } if path == plain.path()),
        "{e}"
    );
    assert_eq!(snapshot(plain.path()), before);
    // And the right key still opens the encrypted store, whole.
    let store = enc(1).open(dir.path()).unwrap();
    assert_eq!(seen(&store, &["s"]), vec![Ok(vec![msg("s", 0)])]);
}

/// A `KEYS` far longer than any this crate writes (here sparse: its entries, then a hole
/// past 1 GiB) is refused with a typed error, not read into memory; put back to its length,
/// the store opens whole.
#[test]
fn an_oversized_key_file_is_a_key_file_error_not_an_allocation() {
    let dir = one_message_store();
    let keys = dir.path().join(KEYS_FILE);
    let len = std::fs::metadata(&keys).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&keys).unwrap();
    f.set_len((1 << 30) + 1).unwrap();
    for read_only in [false, true] {
        let e = enc(1).read_only(read_only).open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::KeyFile { path, offset, .. } if *path == keys && *offset == 1 << 30),
            "{e}"
        );
    }
    f.set_len(len).unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    assert_eq!(seen(&store, &["s"]), vec![Ok(vec![msg("s", 0)])]);
}

/// The offsets of the `append` records in the segment `bytes`, with its salt.
fn appends_in(bytes: &[u8]) -> (u64, Vec<usize>) {
    let salt = SegmentHeader::decode(bytes).unwrap().salt;
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Decoded::Record(r) = decode_record(&bytes[at..], salt, 16 << 20) {
        if r.meta.kind == convlog::Kind::Append {
            out.push(at);
        }
        at += r.framed_len();
    }
    (salt, out)
}

#[test]
fn a_payload_copied_over_another_records_fails_its_authentication() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = enc(1).open(dir.path()).unwrap();
        store.append_raw("s", &msg("s", 1)).unwrap();
        store.append_raw("s", &msg("s", 2)).unwrap();
        store.append_raw("s", &msg("s", 3)).unwrap();
    }
    let seg = dir.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let (salt, at) = appends_in(&bytes);
    assert_eq!(at.len(), 3);
    // Record 2's sealed payload over record 1's, with both checksums made right again: only
    // the seal can tell.
    let Decoded::Record(second) = decode_record(&bytes[at[1]..], salt, 16 << 20) else {
        panic!()
    };
    let payload = second.payload.to_vec();
    let Decoded::Record(first) = decode_record(&bytes[at[0]..], salt, 16 << 20) else {
        panic!()
    };
    let (meta, name) = match first.session {
        SessionField::Named(n) => (first.meta, n.to_vec()),
        SessionField::Ref(_) => panic!("the first record names its session"),
    };
    let len = first.framed_len();
    let mut forged = Vec::new();
    encode_record(
        &mut forged,
        salt,
        &meta,
        SessionField::Named(&name),
        None,
        &payload,
    );
    assert_eq!(forged.len(), len);
    bytes[at[0]..at[0] + len].copy_from_slice(&forged);
    std::fs::write(&seg, &bytes).unwrap();
    // Nothing but the hint would notice: remove it so the open scans the segment.
    let _ = std::fs::remove_file(dir.path().join("00000000000000000001.hint"));
    let store = enc(1).open(dir.path()).unwrap();
    let e = store.read_entry("s", 1).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Corrupt { damage: Damage::Unauthenticated, offset, .. } if *offset == at[0] as u64
        ),
        "{e}"
    );
    assert_eq!(
        store.read_entry("s", 2).unwrap().unwrap().message,
        msg("s", 2)
    );
}

/// Copies every segment and hint of `from` into a new directory (a backup of them).
fn copy_segments(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for (p, bytes) in all_files(from) {
        let name = p.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".seg") || name.ends_with(".hint") {
            std::fs::write(to.path().join(name), bytes).unwrap();
        }
    }
    to
}

#[test]
fn a_deleted_sessions_records_stay_unreadable_in_a_copy_of_the_segments_taken_before() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = ["a", "b", "c"];
    let store = enc(1).open(dir.path()).unwrap();
    append_rounds(&store, &sessions, 40);
    store.sync().unwrap();
    let backup = copy_segments(dir.path());
    assert!(store.delete_session("b").unwrap());
    drop(store);
    // The segments from before the delete, beside the key file from after it.
    std::fs::copy(dir.path().join(KEYS_FILE), backup.path().join(KEYS_FILE)).unwrap();
    let old = enc(1).read_only(true).open(backup.path()).unwrap();
    let got = seen(&old, &sessions);
    for (i, s) in sessions.iter().enumerate() {
        if *s == "b" {
            continue;
        }
        let want: Vec<Vec<u8>> = (0..40).map(|n| msg(s, n)).collect();
        assert_eq!(got[i], Ok(want), "session {s}");
    }
    // "b" is still in that old log, and not one of its messages opens.
    assert_eq!(old.interaction_count("b"), 40);
    for id in 1..=40 {
        let e = old.read_entry("b", id).unwrap_err();
        assert!(matches!(e, Error::KeyDestroyed { .. }), "{e}");
    }
    assert!(old.tail("b", 5).raw().all(|e| e.is_err()));
    // And no file of the store holds b's key any more: the key file has none of its bytes
    // a reader could use (nothing else in the store could open b's records either).
    let live = enc(1).open(dir.path()).unwrap();
    assert_eq!(live.interaction_count("b"), 0);
}

#[test]
fn a_fork_keeps_its_prefix_when_its_source_is_deleted_and_the_sources_own_messages_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    for i in 0..5 {
        store.append_raw("src", &msg("src", i)).unwrap();
    }
    assert_eq!(store.fork("src", "dst", None).unwrap(), 5);
    for i in 5..8 {
        store.append_raw("src", &msg("src", i)).unwrap();
    }
    store.append_raw("dst", &msg("dst", 0)).unwrap();
    store.sync().unwrap();
    let backup = copy_segments(dir.path());
    store.delete_session("src").unwrap();
    let dst: Vec<Vec<u8>> = (0..5)
        .map(|i| msg("src", i))
        .chain([msg("dst", 0)])
        .collect();
    assert_eq!(seen(&store, &["dst"]), vec![Ok(dst.clone())]);
    std::fs::copy(dir.path().join(KEYS_FILE), backup.path().join(KEYS_FILE)).unwrap();
    {
        let old = enc(1).read_only(true).open(backup.path()).unwrap();
        // The prefix the fork shares still opens; what src wrote after the fork does not.
        for id in 1..=5 {
            assert_eq!(
                old.read_entry("src", id).unwrap().unwrap().message,
                msg("src", id as usize - 1)
            );
        }
        for id in 6..=8 {
            let e = old.read_entry("src", id).unwrap_err();
            assert!(matches!(e, Error::KeyDestroyed { .. }), "{e}");
        }
        assert_eq!(seen(&old, &["dst"]), vec![Ok(dst.clone())]);
    }
    // With the fork deleted too, nothing of either opens from the old segments.
    store.delete_session("dst").unwrap();
    drop(store);
    std::fs::copy(dir.path().join(KEYS_FILE), backup.path().join(KEYS_FILE)).unwrap();
    let old = enc(1).read_only(true).open(backup.path()).unwrap();
    for (s, n) in [("src", 8), ("dst", 6)] {
        for id in 1..=n {
            assert!(old.read_entry(s, id).is_err(), "{s} {id}");
        }
    }
}

fn open_sim(fs: &SimFs, k: u8) -> Result<Store, Error> {
    enc(k)
        .vfs(Arc::new(fs.clone()))
        .segment_size(8 << 10)
        .open("/e")
}

#[test]
fn rekey_rewraps_every_data_key_and_only_the_new_master_key_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = ["a", "b", "c"];
    let want = {
        let store = enc(1).open(dir.path()).unwrap();
        append_rounds(&store, &sessions, 20);
        let want = seen(&store, &sessions);
        assert_eq!(store.rekey(&key(2)).unwrap(), 3);
        // The open store goes on with its data keys.
        store.append_raw("a", &msg("a", 20)).unwrap();
        want
    };
    let e = enc(1).open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    let store = enc(2).open(dir.path()).unwrap();
    let got = seen(&store, &sessions);
    assert_eq!(got[1..], want[1..]);
    assert_eq!(got[0].as_ref().unwrap().len(), 21);
    let e = Store::open(tempfile::tempdir().unwrap().path())
        .unwrap()
        .rekey(&key(3))
        .unwrap_err();
    assert!(matches!(e, Error::NotEncrypted { .. }), "{e}");
}

/// Runs `op` on a crashed copy of `fs` with every file operation from the `k`-th on
/// failing, for k = 1, 2, ... until `op` succeeds; after each, `check` judges the store a
/// crash then leaves (both tears). Returns the number of crash points.
fn at_every_crash_point(
    fs: &SimFs,
    k_open: u8,
    op: impl Fn(&Store) -> convlog::Result<()>,
    check: impl Fn(&SimFs, u64),
) -> u64 {
    let mut points = 0;
    for k in 1.. {
        let run = fs.crash(Tear::DropUnsynced);
        let store = open_sim(&run, k_open).unwrap();
        run.fail_sticky(run.ops() + k, Fault::Io);
        let done = op(&store).is_ok();
        drop(store);
        for tear in [Tear::DropUnsynced, Tear::Sectors(512)] {
            check(&run.crash(tear), k);
        }
        points += 1;
        if done {
            return points;
        }
    }
    unreachable!()
}

#[test]
fn a_crash_at_any_operation_of_key_creation_destruction_or_rotation_loses_nothing() {
    let seed = 0xE5C1;
    println!("seed {seed}");
    let fs = SimFs::new(seed);
    let sessions = ["a", "b", "c"];
    {
        let store = open_sim(&fs, 1).unwrap();
        append_rounds(&store, &sessions, 30);
        store.fork("a", "f", Some(12)).unwrap();
        store.sync().unwrap();
    }
    let all = ["a", "b", "c", "f", "new"];
    let before = seen(&open_sim(&fs, 1).unwrap(), &all);
    // Key creation: the first append to a new session (Always: acknowledged is durable).
    let mut points = at_every_crash_point(
        &fs,
        1,
        |s| {
            s.append_raw("new", &msg("new", 0))?;
            s.sync().map(|_| ())
        },
        |after, k| {
            let got = seen(&open_sim(after, 1).unwrap(), &all);
            assert_eq!(got[..4], before[..4], "crash at op {k}");
            assert!(
                got[4] == Ok(vec![]) || got[4] == Ok(vec![msg("new", 0)]),
                "op {k}: {:?}",
                got[4]
            );
        },
    );
    // Key destruction: deleting a fork's source (its shared key stays, its own goes).
    points += at_every_crash_point(
        &fs,
        1,
        |s| s.delete_session("a").map(|_| ()),
        |after, k| {
            let got = seen(&open_sim(after, 1).unwrap(), &all);
            assert!(
                got[0] == before[0] || got[0] == Ok(vec![]),
                "op {k}: a is whole or gone"
            );
            assert_eq!(got[1..4], before[1..4], "crash at op {k}");
        },
    );
    // Rotation: the old key or the new one opens it, never neither, and all is there.
    points += at_every_crash_point(
        &fs,
        1,
        |s| s.rekey(&key(2)).map(|_| ()),
        |after, k| {
            let store = open_sim(after, 1).or_else(|_| open_sim(after, 2));
            let got = seen(&store.unwrap(), &all);
            assert_eq!(got, before, "crash at op {k}");
        },
    );
    println!("crash points exercised: {points}");
    assert!(points > 15, "{points}");
}

#[test]
fn a_damaged_key_entry_is_an_error_and_a_torn_append_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = ["a", "b", "c"];
    let want = {
        let store = enc(1).open(dir.path()).unwrap();
        for s in sessions {
            store.append_raw(s, &msg(s, 0)).unwrap();
        }
        seen(&store, &sessions)
    };
    let keys = dir.path().join(KEYS_FILE);
    let good = std::fs::read(&keys).unwrap();
    // A flipped byte in the first of three key entries: damage, never taken for a torn
    // append (which would lose every key after it); the open fails and changes nothing.
    let mut damaged = good.clone();
    damaged[KEYS_HEADER + 30] ^= 0x40;
    std::fs::write(&keys, &damaged).unwrap();
    let before = snapshot(dir.path());
    for read_only in [false, true] {
        let e = enc(1).read_only(read_only).open(dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::KeyFile { offset, .. } if offset == KEYS_HEADER as u64),
            "{e}"
        );
    }
    assert_eq!(snapshot(dir.path()), before);
    // A flipped byte in the last entry reads like a torn append, but records are sealed
    // under the key it holds (an entry is synced before anything is sealed under it): the
    // log proves it was whole, so it is damage too, and the open changes nothing.
    let mut starts = vec![KEYS_HEADER];
    while let Some(len) = good
        .get(starts[starts.len() - 1]..)
        .and_then(|e| e.get(..4))
    {
        let next = starts[starts.len() - 1] + u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if next >= good.len() {
            break;
        }
        starts.push(next);
    }
    let last = starts[starts.len() - 1];
    assert_eq!(starts.len(), 3, "one key entry per session");
    let mut damaged = good.clone();
    damaged[last + 20] ^= 0x04;
    std::fs::write(&keys, &damaged).unwrap();
    let before = snapshot(dir.path());
    for read_only in [false, true] {
        let e = enc(1).read_only(read_only).open(dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::KeyFile { offset, .. } if offset == last as u64),
            "{e}"
        );
    }
    assert_eq!(snapshot(dir.path()), before);
    // A torn append at the end (a crash mid-write): ignored; the next key's append sets
    // its bytes aside in quarantine/ and rewrites the file without them.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0x77, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]);
    std::fs::write(&keys, &torn).unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    assert_eq!(seen(&store, &sessions), want);
    store.append_raw("d", &msg("d", 0)).unwrap();
    drop(store);
    let aside = std::fs::read(
        dir.path()
            .join("quarantine")
            .join(format!("{KEYS_FILE}-{:012}.torn", good.len())),
    )
    .unwrap();
    assert_eq!(aside, torn[good.len()..]);
    let store = enc(1).open(dir.path()).unwrap();
    let mut all = want.clone();
    all.push(Ok(vec![msg("d", 0)]));
    assert_eq!(seen(&store, &["a", "b", "c", "d"]), all);
}

/// A rewrite of `KEYS` (a delete destroying keys) drops a torn append at its end as the
/// next key's append does: its bytes set aside in `quarantine/` first.
#[test]
fn a_delete_sets_a_torn_key_append_aside_before_it_rewrites_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = enc(1).open(dir.path()).unwrap();
        for s in ["a", "b"] {
            store.append_raw(s, &msg(s, 0)).unwrap();
        }
    }
    let keys = dir.path().join(KEYS_FILE);
    let good = std::fs::read(&keys).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(&[0x77, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]);
    std::fs::write(&keys, &torn).unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    store.delete_session("b").unwrap();
    assert!(store.read_entry("a", 1).unwrap().is_some());
    let aside = dir
        .path()
        .join("quarantine")
        .join(format!("{KEYS_FILE}-{:012}.torn", good.len()));
    assert_eq!(std::fs::read(aside).unwrap(), torn[good.len()..]);
    assert!(!contains(
        &std::fs::read(&keys).unwrap(),
        &[1, 2, 3, 4, 1, 9, 9]
    ));
}

/// The last `KEYS` entry may hold a key that only metadata is sealed under (a session with
/// no message): damage to it is caught all the same.
#[test]
fn damage_to_a_key_entry_only_metadata_depends_on_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = enc(1).open(dir.path()).unwrap();
        store.append_raw("a", &msg("a", 0)).unwrap();
        store
            .set_meta("m", &serde_json::json!({"title": "only metadata"}))
            .unwrap();
    }
    let keys = dir.path().join(KEYS_FILE);
    let mut bytes = std::fs::read(&keys).unwrap();
    let first = u32::from_le_bytes(bytes[KEYS_HEADER..KEYS_HEADER + 4].try_into().unwrap());
    let last = KEYS_HEADER + first as usize;
    assert!(last < bytes.len(), "a second key entry, for the metadata");
    bytes[last + 20] ^= 0x04;
    std::fs::write(&keys, &bytes).unwrap();
    let before = snapshot(dir.path());
    let e = enc(1).open(dir.path()).unwrap_err();
    assert!(
        matches!(e, Error::KeyFile { offset, .. } if offset == last as u64),
        "{e}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn after_a_rekey_the_open_store_is_shared_with_the_new_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    store.append_raw("s", &msg("s", 0)).unwrap();
    store.rekey(&key(2)).unwrap();
    let again = enc(2).open(dir.path()).unwrap();
    assert_eq!(again.interaction_count("s"), 1);
    let e = enc(1).open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::AlreadyOpen { .. }), "{e}");
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::AlreadyOpen { .. }), "{e}");
}

#[test]
fn a_replay_of_the_log_reads_cleared_messages_and_skips_erased_ones() {
    use convlog::{LogEvent, Lsn, Since};
    let dir = tempfile::tempdir().unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    store.append_raw("kept", &msg("kept", 0)).unwrap();
    store.append_raw("cleared", &msg("cleared", 0)).unwrap();
    store.clear("cleared").unwrap();
    store.append_raw("cleared", &msg("cleared", 1)).unwrap();
    store.append_raw("gone", &msg("gone", 0)).unwrap();
    store.delete_session("gone").unwrap();
    store.append_raw("gone", &msg("gone", 1)).unwrap();
    let mut sub = store.subscribe(Since::Lsn(Lsn(1)));
    let mut messages = Vec::new();
    let mut cuts = 0;
    while let Some(e) = sub
        .next_timeout(std::time::Duration::from_millis(50))
        .unwrap()
    {
        match e {
            LogEvent::Message { session, entry } => messages.push((session, entry.message)),
            LogEvent::Cut { .. } => cuts += 1,
            _ => {}
        }
    }
    // A clear is no erasure: the cleared message still opens; the deleted one's key is
    // gone, so the replay skips it (as a compaction would), and shows the delete.
    assert_eq!(
        messages,
        vec![
            ("kept".to_owned(), msg("kept", 0)),
            ("cleared".to_owned(), msg("cleared", 0)),
            ("cleared".to_owned(), msg("cleared", 1)),
            ("gone".to_owned(), msg("gone", 1)),
        ]
    );
    assert_eq!(cuts, 2);
}

/// (Found by the open_image fuzz target: a payload that starts like a sealed one in a store
/// without a key file.)
#[test]
fn sealed_payloads_in_a_store_whose_key_file_is_gone_are_a_typed_error() {
    let dir = one_message_store();
    std::fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
    let store = Store::builder().read_only(true).open(dir.path()).unwrap();
    assert_eq!(store.interaction_count("s"), 1);
    let e = store.read_entry("s", 1).unwrap_err();
    assert!(
        matches!(&e, Error::KeyRequired { path } if path == dir.path()),
        "{e}"
    );
}

#[test]
fn a_read_open_across_a_delete_opens_nothing_more_once_the_key_is_destroyed() {
    // A read looks its key up once per key, not per message; a delete still stops it at
    // once: the messages it reaches after the delete returned do not open.
    let dir = tempfile::tempdir().unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    for i in 0..10 {
        store.append_raw("a", &msg("a", i)).unwrap();
    }
    let mut read = store.messages("a").raw();
    for i in 0..4 {
        assert_eq!(read.next().unwrap().unwrap().message, msg("a", i));
    }
    assert!(store.delete_session("a").unwrap());
    let rest: Vec<_> = read.collect();
    assert_eq!(rest.len(), 6);
    for e in rest {
        let e = e.unwrap_err();
        assert!(matches!(e, Error::KeyDestroyed { .. }), "{e}");
    }
}

/// Copies the file `name` of the store `/e` from `from` over the one in `to`.
fn copy_sim_file(from: &SimFs, to: &SimFs, name: &str) {
    use convlog::io::{OpenMode, Vfs};
    let path = Path::new("/e").join(name);
    let src = from.open(&path, OpenMode::Read).unwrap();
    let mut bytes = vec![0; src.len().unwrap() as usize];
    src.read_exact_at(&mut bytes, 0).unwrap();
    let _ = to.remove_file(&path);
    to.open(&path, OpenMode::CreateNew)
        .unwrap()
        .write_all_at(&bytes, 0)
        .unwrap();
}

/// Regression (found by the `ops_crash` fuzz target): a delete whose key-file rewrite failed
/// (a full disk) after the delete was logged returned the error with the store still
/// writable, the session deleted and its key alive. Now the store poisons itself, and the
/// reopen it asks for destroys the key. A full disk is placed at each step of a delete.
#[test]
fn a_delete_whose_key_destruction_fails_poisons_the_store_and_the_reopen_destroys_the_key() {
    let mut poisoned = 0;
    for at in 1..=40u64 {
        let fs = SimFs::new(0xDE1);
        {
            let store = open_sim(&fs, 1).unwrap();
            append_rounds(&store, &["a", "b"], 5);
            store.sync().unwrap();
        }
        // The store as a backup taken before the delete holds it.
        let backup = fs.crash(Tear::DropUnsynced);
        let store = open_sim(&fs, 1).unwrap();
        fs.fail_sticky(fs.ops() + at, Fault::NoSpace);
        let r = store.delete_session("b");
        fs.clear_faults();
        let logged = match r {
            Ok(deleted) => {
                assert!(deleted, "full disk from +{at}");
                true
            }
            Err(e) => {
                assert!(matches!(e, Error::Io { .. }), "full disk from +{at}: {e}");
                let logged = store.interaction_count("b") == 0;
                if logged {
                    // Logged, keys not destroyed: nothing more may be written.
                    let next = store.append_raw("a", &msg("a", 9)).unwrap_err();
                    assert!(
                        matches!(next, Error::Poisoned { .. }),
                        "full disk from +{at}: {next}"
                    );
                    poisoned += 1;
                }
                logged
            }
        };
        drop(store);
        let store = open_sim(&fs, 1).unwrap();
        if !logged {
            // Nothing was logged: delete it now.
            assert_eq!(store.interaction_count("b"), 5, "full disk from +{at}");
            assert!(store.delete_session("b").unwrap());
        }
        assert_eq!(store.interaction_count("b"), 0, "full disk from +{at}");
        assert_eq!(store.interaction_count("a"), 5, "full disk from +{at}");
        drop(store);
        // The old segments beside today's key file: not one of b's messages opens.
        copy_sim_file(&fs, &backup, KEYS_FILE);
        let old = open_sim(&backup, 1).unwrap();
        assert_eq!(old.interaction_count("b"), 5, "full disk from +{at}");
        let e = old.read_entry("b", 1).unwrap_err();
        assert!(
            matches!(e, Error::KeyDestroyed { .. }),
            "full disk from +{at}: {e}"
        );
    }
    assert!(poisoned > 0, "no fault hit the key file's rewrite");
}

/// A compaction by another process, after a delete whose key destruction failed (the
/// deleting process poisoned itself and never reopened), destroys the key before it drops
/// the delete record: no later open would find the delete to destroy it then.
#[test]
fn a_compaction_destroys_the_keys_of_deleted_sessions_before_dropping_their_deletes() {
    for at in 1..=40u64 {
        let fs = SimFs::new(0xC0DE);
        // Two processes on one store.
        let (p1, p2) = (open_sim(&fs, 1).unwrap(), open_sim(&fs, 1).unwrap());
        append_rounds(&p1, &["a", "b"], 5);
        p1.sync().unwrap();
        let backup = fs.crash(Tear::DropUnsynced);
        fs.fail_sticky(fs.ops() + at, Fault::NoSpace);
        let r = p1.delete_session("b");
        fs.clear_faults();
        if r.is_ok() || p1.interaction_count("b") != 0 {
            continue; // not the case under test: the key was destroyed, or nothing logged
        }
        // p1 is poisoned with b's delete logged and b's key alive; p2 compacts it all.
        p2.append_raw("a", &msg("a", 5)).unwrap();
        assert_eq!(p2.interaction_count("b"), 0);
        p2.seal().unwrap();
        let report = p2.compact().unwrap();
        assert!(report.records_dropped >= 6, "{report:?}");
        drop((p1, p2));
        // The old segments beside today's key file: not one of b's messages opens.
        copy_sim_file(&fs, &backup, KEYS_FILE);
        let old = open_sim(&backup, 1).unwrap();
        assert_eq!(old.interaction_count("b"), 5);
        let e = old.read_entry("b", 1).unwrap_err();
        assert!(
            matches!(e, Error::KeyDestroyed { .. }),
            "full disk from +{at}: {e}"
        );
        return;
    }
    panic!("no fault left b's delete logged with its key alive");
}

/// Regression (found by the `ops_crash` fuzz target): a process appended a new session's
/// key entry to `KEYS` and died when its `fdatasync` failed. The next process read the
/// entry (written, not durable), sealed an acknowledged-durable record under it without
/// syncing `KEYS`, and a power cut then took the entry away: the record read as
/// `KeyDestroyed`. A key read from `KEYS` is now made durable before anything is sealed
/// under it.
#[test]
fn a_key_entry_left_unsynced_by_a_dead_process_is_synced_before_it_seals_anything() {
    let mut hit = 0;
    for at in 1..=30u64 {
        let fs = SimFs::new(0x5EED);
        let open = |fs: &SimFs| {
            enc(1)
                .vfs(Arc::new(fs.clone()))
                .durability(convlog::Durability::Always)
                .open("/e")
        };
        let store = open(&fs).unwrap();
        store.append_raw("a", &msg("a", 0)).unwrap();
        fs.fail_sticky(fs.ops() + at, Fault::NoSpace);
        let r = store.append_raw("n", &msg("n", 0));
        let keys_sync_failed = matches!(
            &r,
            Err(Error::Io { op: "fdatasync", path, .. }) if path.ends_with(KEYS_FILE)
        );
        // The process dies (its close writes nothing).
        drop(store);
        fs.clear_faults();
        if !keys_sync_failed {
            continue;
        }
        hit += 1;
        let store = open(&fs).unwrap();
        let receipt = store.append_raw("n", &msg("n", 1)).unwrap(); // acknowledged durable
        let crashed = fs.crash(Tear::DropUnsynced);
        drop(store);
        let store = open(&crashed).unwrap();
        let got = store.read_entry("n", receipt.interaction_id);
        assert!(
            matches!(&got, Ok(Some(e)) if e.message == msg("n", 1)),
            "full disk from +{at}: {got:?}"
        );
    }
    assert!(hit > 0, "no fault failed the key file's fdatasync");
}

/// A new session's key goes to `KEYS` unsynced (the next sync of a segment syncs `KEYS`
/// first). A power cut that kept the segment's newer records but lost that entry (the disk
/// wrote one file back and not the other) ends the log before the first record sealed
/// under the lost key, as at a torn write: nothing acknowledged durable is lost, no record
/// reads as `KeyDestroyed`, and the store goes on.
#[test]
fn a_key_entry_a_power_cut_took_away_ends_the_log_before_its_first_record() {
    use convlog::io::{OpenMode, Vfs};
    let fs = SimFs::new(0x105E);
    let store = open_sim(&fs, 1).unwrap();
    append_rounds(&store, &["a", "b"], 3);
    store.sync().unwrap();
    let mut want = seen(&store, &["a", "b"]);
    want.push(Ok(vec![]));
    let keys = Path::new("/e").join(KEYS_FILE);
    let durable_keys = fs.read_file(&keys).unwrap();
    store.append_raw("n", &msg("n", 0)).unwrap(); // n's key: in KEYS, unsynced
    store.append_raw("a", &msg("a", 3)).unwrap();
    assert!(fs.read_file(&keys).unwrap().len() > durable_keys.len());
    // The disk writes the active segment back, not KEYS; then the power goes.
    let last = fs
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    fs.open(&last, OpenMode::ReadWrite)
        .unwrap()
        .sync_data()
        .unwrap();
    let image = fs.crash(Tear::DropUnsynced);
    drop(store);
    assert_eq!(image.read_file(&keys).unwrap(), durable_keys);
    let try_open = |fs: &SimFs, read_only, mode| {
        enc(1)
            .vfs(Arc::new(fs.clone()))
            .segment_size(8 << 10)
            .read_only(read_only)
            .recovery(mode)
            .open("/e")
    };
    let open = |fs: &SimFs, read_only, mode| try_open(fs, read_only, mode).unwrap();
    // Strict refuses it, as a torn tail.
    let strict = try_open(&image, false, RecoveryMode::Strict).unwrap_err();
    assert!(
        matches!(
            strict,
            Error::Corrupt {
                damage: Damage::TornTail { .. },
                ..
            }
        ),
        "{strict}"
    );
    // Salvage (`convlog repair`) ends the log there too.
    for mode in [RecoveryMode::PointInTime, RecoveryMode::Salvage] {
        let crashed = image.crash(Tear::DropUnsynced);
        for read_only in [true, false] {
            let store = open(&crashed, read_only, mode);
            let what = format!("{mode:?}, read only: {read_only}");
            assert_eq!(seen(&store, &["a", "b", "n"]), want, "{what}");
            let torn = store.recovery_report().torn_tail.clone();
            assert!(
                torn.as_ref()
                    .is_some_and(|t| t.quarantined.is_some() != read_only),
                "{what}: {torn:?}"
            );
        }
    }
    // The store goes on: n gets a new key; a reopen reads it all.
    let crashed = image;
    let open = |read_only| open(&crashed, read_only, RecoveryMode::PointInTime);
    let store = open(false);
    store.append_raw("n", &msg("n", 1)).unwrap();
    store.sync().unwrap();
    drop(store);
    want[2] = Ok(vec![msg("n", 1)]);
    let store = open(false);
    assert_eq!(seen(&store, &["a", "b", "n"]), want);
    assert!(store.recovery_report().torn_tail.is_none());
}

#[test]
fn a_write_to_a_sealed_store_without_keys_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    store.append_raw("s", &msg("s", 1)).unwrap();
    drop(store);
    let keys = dir.path().join(KEYS_FILE);
    let aside = dir.path().join("KEYS.aside");
    std::fs::rename(&keys, &aside).unwrap();
    let before = all_files(dir.path());
    // Without its key file the store would look unencrypted: writes would be plaintext.
    let opened = Store::open(dir.path()).unwrap();
    let refused =
        |r: convlog::Result<()>| matches!(r, Err(Error::KeyFile { ref path, .. }) if *path == keys);
    assert!(refused(opened.append_raw("s", &msg("s", 2)).map(drop)));
    assert!(refused(opened.set_meta_raw("s", br#"{"m":1}"#).map(drop)));
    assert!(refused(opened.delete_session("s").map(drop)));
    assert!(refused(opened.append_raw("new", &msg("new", 1)).map(drop)));
    drop(opened);
    assert_eq!(
        all_files(dir.path()),
        before,
        "a refused write changed a file"
    );
    // A read-only open still says what it is: each read needs the key.
    let ro = Options::default().read_only(true).open(dir.path()).unwrap();
    assert!(matches!(
        ro.read_entry("s", 1),
        Err(Error::KeyRequired { .. })
    ));
    drop(ro);
    std::fs::rename(&aside, &keys).unwrap();
    let store = enc(1).open(dir.path()).unwrap();
    assert_eq!(
        store.read_entry("s", 1).unwrap().unwrap().message,
        msg("s", 1)
    );
    store.append_raw("s", &msg("s", 2)).unwrap();
    // An unencrypted store with messages opens as before.
    let plain = tempfile::tempdir().unwrap();
    Store::open(plain.path())
        .unwrap()
        .append_raw("p", &msg("p", 1))
        .unwrap();
    assert_eq!(Store::open(plain.path()).unwrap().interaction_count("p"), 1);
}
