//! The `convlog` binary, run as a user would: every subcommand, its output, its errors and
//! exit codes, and a 10 000-message import/export round trip compared byte for byte.

#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use convlog::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use convlog::io::sim::SplitMix as Rng;
use convlog::{SegmentId, Store};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tempfile::TempDir;

/// Held while this process forks a child, and while it closes a store it wrote.
///
/// A forked child shares the parent's open files until it execs, the store's `LOCK` among
/// them, and an flock lives as long as any copy. Without this, a test that closes a store
/// and reopens it (or runs `convlog` on it) can find it still locked by a child that another
/// test thread is spawning at that instant.
static FORK: Mutex<()> = Mutex::new(());

fn fork_guard() -> MutexGuard<'static, ()> {
    FORK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes a store, with no child being forked meanwhile (see [`FORK`]).
fn close(store: Store) {
    let _guard = fork_guard();
    drop(store);
}

/// Starts `convlog args...` with piped stdio. `spawn` returns once the child has exec'd, so
/// the guard covers the whole window in which the child holds copies of our files.
fn spawn(args: &[&str]) -> Child {
    let _guard = fork_guard();
    Command::new(env!("CARGO_BIN_EXE_convlog"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run convlog")
}

/// Runs `convlog args...`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    run_with_stdin(args, "")
}

fn run_with_stdin(args: &[&str], stdin: impl AsRef<[u8]>) -> (i32, String, String) {
    let mut child = spawn(args);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_ref().to_vec();
    // The child may not read all of it (or exit first): ignore a broken pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for convlog");
    writer.join().expect("stdin writer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A store at `tmp/store` holding `messages` (session, raw JSON), written by the library.
fn store_with(tmp: &TempDir, messages: &[(&str, &str)]) -> PathBuf {
    let dir = tmp.path().join("store");
    let store = Store::open(&dir).unwrap();
    for (session, json) in messages {
        store.append_raw(session, json.as_bytes()).unwrap();
        // Distinct timestamps (they have microsecond resolution), so sorting by time is
        // deterministic.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    close(store);
    dir
}

fn chat_store(tmp: &TempDir) -> PathBuf {
    store_with(
        tmp,
        &[
            ("alpha", r#"{"role":"system","content":"Be brief."}"#),
            ("alpha", r#"{"role":"user","content":"Hi \"there\"\n"}"#),
            (
                "beta",
                r#"{"role":"user","content":"naïve café → 東京 😀"}"#,
            ),
            (
                "alpha",
                r#"{"role":"assistant","content":"Hello.","z":1,"a":2}"#,
            ),
            ("alpha", r#"{"role":"user","content":"And?"}"#),
        ],
    )
}

/// Every file under `dir` with its size, for "nothing changed" checks.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), meta.len());
            }
        }
    }
    out
}

#[test]
fn demo_runs_reports_and_recreates_only_stores() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("demo");
    let args = [
        "demo",
        "--dir",
        s(&dir),
        "--sessions",
        "6",
        "--messages",
        "400",
        "--agents",
        "3",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "400 messages",
        "appends/s",
        "reopen",
        "tail     last 20 of",
        "recovery report",
        "classification    clean",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let store = Store::builder().read_only(true).open(&dir).unwrap();
    assert_eq!(store.stats().messages, 400);
    assert_eq!(store.stats().sessions, 6);
    drop(store);

    // Run again: the store is recreated, not appended to.
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let store = Store::builder().read_only(true).open(&dir).unwrap();
    assert_eq!(store.stats().messages, 400);
    drop(store);

    // A directory holding anything else is never deleted.
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = run(&args);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to delete") && err.contains("notes.txt"),
        "{err}"
    );
    assert!(dir.join("notes.txt").exists());

    // Nor a store another process writes.
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    let held = Store::open(&dir).unwrap();
    let (code, _, err) = run(&args);
    assert_eq!(code, 1);
    assert!(err.contains("locked"), "{err}");
    close(held);

    let (code, _, err) = run(&[
        "demo",
        "--dir",
        s(&dir),
        "--sessions",
        "10",
        "--messages",
        "5",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--messages"), "{err}");
}

#[test]
fn sessions_lists_sorts_and_prints_json() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (code, out, err) = run(&["sessions", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("SESSION"), "{out}");
    assert!(
        lines[1].starts_with("alpha") && lines[1].contains(" 4 "),
        "{out}"
    );
    assert!(lines[2].starts_with("beta"), "{out}");
    // RFC 3339 UTC timestamps.
    assert!(lines[1].contains('T') && lines[1].contains("Z"), "{out}");
    assert!(out.contains("2 sessions, 5 messages"), "{out}");

    let (code, out, _) = run(&["sessions", s(&dir), "--sort", "count", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows[0]["id"], "beta");
    assert_eq!(rows[0]["count"], 1);
    assert_eq!(rows[1]["id"], "alpha");
    assert_eq!(rows[1]["count"], 4);
    assert!(rows[1]["first"].as_u64().unwrap() <= rows[1]["last"].as_u64().unwrap());

    let (_, out, _) = run(&[
        "sessions",
        s(&dir),
        "--sort",
        "count",
        "--reverse",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "alpha");
    let (_, out, _) = run(&["sessions", s(&dir), "--sort", "last", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "beta", "beta's last message is older");

    let (code, _, err) = run(&["sessions", s(&dir), "--sort", "size"]);
    assert_eq!(code, 2, "usage errors exit 2: {err}");
}

#[test]
fn commands_but_append_and_import_fail_cleanly_without_a_store_and_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("nope");
    for args in [
        vec!["sessions", s(&missing)],
        vec!["cat", s(&missing), "a"],
        vec!["tail", s(&missing), "a"],
        vec!["stats", s(&missing)],
        vec!["export", s(&missing)],
        vec!["verify", s(&missing)],
        vec!["pop", s(&missing), "a"],
        vec!["clear", s(&missing), "a"],
        vec!["truncate", s(&missing), "a", "1"],
        vec!["repair", s(&missing)],
        // Commands that write, but only to a store that exists (`append` and `import`
        // create one).
        vec!["meta", s(&missing), "a", "{\"m\":1}"],
        vec!["replace", s(&missing), "a"],
        vec!["fork", s(&missing), "a", "b"],
        vec!["delete", s(&missing), "a"],
        vec!["compact", s(&missing)],
        vec!["window", s(&missing), "a"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("convlog: ")
                && err.contains("is not a convlog store")
                && err.contains("nope"),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    // An empty directory is not a store either.
    std::fs::create_dir(&missing).unwrap();
    let (code, _, err) = run(&["stats", s(&missing)]);
    assert_eq!(code, 1);
    assert!(err.contains("no segment files"), "{err}");

    let dir = chat_store(&tmp);
    let before = listing(&dir);
    for args in [
        vec!["sessions", s(&dir)],
        vec!["cat", s(&dir), "alpha"],
        vec!["tail", s(&dir), "alpha"],
        vec!["stats", s(&dir)],
        vec!["export", s(&dir)],
        vec!["verify", s(&dir)],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(listing(&dir), before, "{args:?} changed the store");
    }
}

#[test]
fn cat_and_tail_print_jsonl_ranges_and_meta() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (code, out, _) = run(&["cat", s(&dir), "alpha"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        concat!(
            r#"{"role":"system","content":"Be brief."}"#,
            "\n",
            r#"{"role":"user","content":"Hi \"there\"\n"}"#,
            "\n",
            r#"{"role":"assistant","content":"Hello.","z":1,"a":2}"#,
            "\n",
            r#"{"role":"user","content":"And?"}"#,
            "\n"
        )
    );
    let (_, out, _) = run(&["cat", s(&dir), "beta"]);
    assert_eq!(
        out,
        "{\"role\":\"user\",\"content\":\"naïve café → 東京 😀\"}\n"
    );

    let (_, out, _) = run(&["cat", s(&dir), "alpha", "--range", "2..=3"]);
    assert_eq!(out.lines().count(), 2);
    assert!(out.starts_with(r#"{"role":"user","content":"Hi"#));
    let (_, out, _) = run(&["cat", s(&dir), "alpha", "--range", "2..3"]);
    assert_eq!(out.lines().count(), 1);
    let (_, out, _) = run(&["cat", s(&dir), "alpha", "--range", "3.."]);
    assert_eq!(out.lines().count(), 2);
    let (_, out, _) = run(&["cat", s(&dir), "alpha", "--range", "9..20"]);
    assert_eq!(out, "");

    let (_, out, _) = run(&["cat", s(&dir), "alpha", "--with-meta", "--range", "..2"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["interaction_id"], 1);
    assert_eq!(v["lsn"], 1);
    assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(v["message"]["content"], "Be brief.");

    let (code, out, _) = run(&["tail", s(&dir), "alpha", "-n", "2"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"role":"assistant","content":"Hello.","z":1,"a":2}"#,
            r#"{"role":"user","content":"And?"}"#
        ]
    );
    let (_, out, _) = run(&["tail", s(&dir), "alpha", "-n", "1", "--with-meta"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["interaction_id"].as_u64(), v["lsn"].as_u64()),
        (Some(4), Some(5))
    );
    let (_, out, _) = run(&["tail", s(&dir), "alpha"]);
    assert_eq!(out.lines().count(), 4, "default -n 10 covers all");

    // Errors.
    let (code, _, err) = run(&["cat", s(&dir), "gamma"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session \"gamma\""), "{err}");
    let (code, _, err) = run(&["tail", s(&dir), ""]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid session id"), "{err}");
    let long = "x".repeat(300);
    let (code, _, err) = run(&["cat", s(&dir), &long]);
    assert_eq!(code, 1);
    assert!(err.contains("longer than 256 bytes"), "{err}");
    for bad in ["0..2", "3..1", "a..b", "1...2"] {
        let (code, _, err) = run(&["cat", s(&dir), "alpha", "--range", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--range"), "{err}");
    }
}

#[test]
fn stats_reports_counters_in_text_and_json() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let store = Store::open(&dir).unwrap();
    store.pop_raw("alpha").unwrap();
    close(store);
    let (code, out, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "segments    1",
        "records     6 (append 5, pop 1)",
        "sessions    2",
        "messages    4",
        "in memory",
        "recovery    no damage found: 0 segments scanned",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, out, _) = run(&["stats", s(&dir), "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["segments"], 1);
    assert_eq!(v["sessions"], 2);
    assert_eq!(v["messages"], 4);
    assert_eq!(v["records"], 6);
    assert_eq!(v["records_by_kind"]["append"], 5);
    assert_eq!(v["records_by_kind"]["pop"], 1);
    assert_eq!(v["last_lsn"], 6);
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(v["index_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn append_pop_and_clear_change_sessions() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("new-store");
    // append creates the store.
    let (code, out, err) = run(&[
        "append",
        s(&dir),
        "s1",
        r#"{"role":"user","content":"one"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "appended to \"s1\": interaction 1, LSN 1\n");
    let stdin = "{\"role\":\"assistant\", \"content\":\"two\"}\n\n{\"b\":[1,{\"c\":null}]}\r\n";
    let (code, out, err) = run_with_stdin(&["append", s(&dir), "s1", "-"], stdin);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "appended to \"s1\": interaction 2, LSN 2\nappended to \"s1\": interaction 3, LSN 3\n"
    );
    let (code, _, _) = run_with_stdin(&["append", s(&dir), "s1"], "{\"n\":4}\n");
    assert_eq!(code, 0, "no argument reads stdin too");
    let (_, out, _) = run(&["cat", s(&dir), "s1"]);
    assert_eq!(
        out,
        "{\"role\":\"user\",\"content\":\"one\"}\n{\"role\":\"assistant\", \"content\":\"two\"}\n{\"b\":[1,{\"c\":null}]}\n{\"n\":4}\n"
    );

    // Invalid input appends nothing.
    let count = || {
        Store::builder()
            .read_only(true)
            .open(&dir)
            .unwrap()
            .interaction_count("s1")
    };
    for (args, stdin, needle) in [
        (
            vec!["append", s(&dir), "s1", "{\"a\":"],
            "",
            "message argument: invalid JSON at column",
        ),
        (
            vec!["append", s(&dir), "s1", "[1,2]"],
            "",
            "must be a JSON object, not an array",
        ),
        (vec!["append", s(&dir), "s1", "\"hi\""], "", "not a string"),
        (vec!["append", s(&dir), "s1", "{} {}"], "", "invalid JSON"),
        (
            vec!["append", s(&dir), "s1", "--batch"],
            "{\"ok\":1}\n{\"bad\" 2}\n",
            "stdin line 2: invalid JSON",
        ),
        (
            vec!["append", s(&dir), "s1", "--batch"],
            "{\"ok\":1}\n42\n",
            "stdin line 2: a message must be a JSON object",
        ),
        (vec!["append", s(&dir), "s1"], "\n\n", "no message"),
        (
            vec!["append", s(&dir), "", "{}"],
            "",
            "invalid session id \"\": empty",
        ),
        (
            vec!["append", s(&dir), "a\tb", "{}"],
            "",
            "control character",
        ),
    ] {
        let (code, out, err) = run_with_stdin(&args, stdin);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty());
        assert!(
            err.starts_with("convlog: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(count(), 4, "{args:?} appended something");
    }

    let (code, out, _) = run(&["pop", s(&dir), "s1"]);
    assert_eq!(code, 0);
    assert_eq!(out, "{\"n\":4}\n");
    let (code, out, _) = run(&["pop", s(&dir), "s1", "--with-meta"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["interaction_id"], 3);
    assert_eq!(v["message"]["b"][1]["c"], Value::Null);
    assert_eq!(count(), 2);

    // truncate keeps the first KEEP messages; past the count it removes nothing.
    let (code, out, _) = run(&["append", s(&dir), "s1", r#"{"n":5}"#]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&["truncate", s(&dir), "s1", "5"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "session \"s1\" holds at most 5 messages: nothing removed\n"
    );
    assert_eq!(count(), 3);
    let (code, out, _) = run(&["truncate", s(&dir), "s1", "2"]);
    assert_eq!(code, 0);
    assert_eq!(out, "truncated \"s1\" to 2 messages: removed 1 message\n");
    assert_eq!(count(), 2);
    let (_, out, _) = run(&["tail", s(&dir), "s1", "-n", "1"]);
    assert_eq!(out, "{\"role\":\"assistant\", \"content\":\"two\"}\n");
    let (code, _, err) = run(&["truncate", s(&dir), "s1", "x"]);
    assert_eq!(code, 2, "not a count: a usage error: {err}");
    let (code, _, err) = run(&["truncate", s(&dir), "", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid session id"), "{err}");
    assert_eq!(count(), 2);

    let (code, out, _) = run(&["clear", s(&dir), "s1"]);
    assert_eq!(code, 0);
    assert_eq!(out, "cleared \"s1\": removed 2 messages\n");
    let (code, out, _) = run(&["clear", s(&dir), "s1"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing cleared"));
    let (code, _, err) = run(&["pop", s(&dir), "s1"]);
    assert_eq!(code, 1);
    assert!(err.contains("is empty: nothing to pop"), "{err}");
    let (code, _, err) = run(&["cat", s(&dir), "s1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session"), "{err}");
    let (code, _, err) = run(&["pop", s(&dir), ""]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid session id"), "{err}");
    let (code, _, err) = run(&["clear", s(&dir), &"y".repeat(257)]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid session id"), "{err}");

    // Appending into a non-empty directory that is not a store is refused.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), "x").unwrap();
    let (code, _, err) = run(&["append", s(&other), "s", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a convlog store"), "{err}");
}

#[test]
fn writers_fail_on_a_locked_store_and_readers_still_work() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let file = tmp.path().join("in.jsonl");
    std::fs::write(&file, "{\"session\":\"x\",\"message\":{}}\n").unwrap();
    let held = Store::builder().exclusive(true).open(&dir).unwrap();
    for args in [
        vec!["append", s(&dir), "alpha", "{}"],
        vec!["pop", s(&dir), "alpha"],
        vec!["clear", s(&dir), "alpha"],
        vec!["import", s(&dir), s(&file)],
        vec!["repair", s(&dir)],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(
            err.starts_with("convlog: store ") && err.contains("locked by another writer"),
            "{args:?}: {err}"
        );
        assert!(err.contains(s(&dir)), "{args:?} names the store: {err}");
    }
    for args in [
        vec!["sessions", s(&dir)],
        vec!["stats", s(&dir)],
        vec!["cat", s(&dir), "alpha"],
        vec!["export", s(&dir)],
        vec!["verify", s(&dir)],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    assert_eq!(held.interaction_count("alpha"), 4);
    close(held);
    // Beside a writer that shares the store (the default), the CLI writes too, and the
    // writer sees it; only a repair, which rewrites segments, needs the store alone.
    let shared = Store::open(&dir).unwrap();
    let (code, _, err) = run(&["append", s(&dir), "alpha", "{}"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(shared.interaction_count("alpha"), 5);
    let (code, _, err) = run(&["repair", s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("locked by another writer"), "{err}");
    close(shared);
}

#[test]
fn verify_finds_damage_and_repair_salvages_it() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("clean") && out.contains("5 records"), "{out}");
    let (code, out, _) = run(&["verify", s(&dir), "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["records"], 5);
    assert_eq!(v["messages"], 5);

    // Flip a byte in the payload of the first record: "alpha"'s system prompt.
    let segment = SegmentId(1).file_name();
    let path = dir.join(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + "alpha".len() + 3;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("segment {segment} at offset {SEGMENT_HEADER_LEN}"))
            && err.contains("payload checksum mismatch")
            && err.contains(s(&dir)),
        "{err}"
    );
    let (code, out, _) = run(&["verify", s(&dir), "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "corrupt");
    assert_eq!(v["segment"], segment.as_str());
    assert_eq!(v["offset"], SEGMENT_HEADER_LEN);

    let (code, out, err) = run(&["repair", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("repaired (salvaged)")
            && out.contains(&format!("at segment {segment} offset {SEGMENT_HEADER_LEN}"))
            && out.contains("quarantine"),
        "{out}"
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.join("quarantine")).unwrap().collect();
    assert_eq!(quarantined.len(), 1);

    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("clean"), "{out}");
    // The other messages survived; the damaged one is gone.
    let (_, out, _) = run(&["cat", s(&dir), "beta"]);
    assert!(out.contains("東京"));
    let (_, out, _) = run(&["sessions", s(&dir), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let (code, out, _) = run(&["repair", s(&dir)]);
    assert_eq!(code, 0);
    assert!(out.contains("clean, nothing to repair"), "{out}");
}

#[test]
fn verify_rejects_a_torn_tail_and_repair_cuts_it() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let path = dir.join(SegmentId(1).file_name());
    let mut bytes = std::fs::read(&path).unwrap();
    // The end of the written records: the file may be preallocated with zeros past it.
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(&[0xAB; 30]);
    std::fs::write(&path, &bytes).unwrap();

    let (code, _, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("torn tail") && err.contains(&format!("offset {end}")),
        "{err}"
    );
    let (code, out, err) = run(&["repair", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("torn tail"), "{out}");
    let (code, _, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn verify_names_a_bad_segment_header() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let path = dir.join(SegmentId(1).file_name());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("00000000000000000001.seg at offset 0: bad segment magic"),
        "{err}"
    );
    let (code, _, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt store"), "{err}");
}

/// One line of an export.
#[derive(Deserialize)]
struct ExportLine<'a> {
    session: String,
    #[serde(borrow)]
    message: &'a RawValue,
}

fn parse_export(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let e: ExportLine<'_> = serde_json::from_str(l).unwrap();
            (e.session, e.message.get().to_owned())
        })
        .collect()
}

#[test]
fn bytes_that_are_not_json_text_are_named_and_empty_input_creates_no_store() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let (code, _, err) =
        run_with_stdin(&["append", s(&dir), "s", "-"], b"\n{\"a\":\"\xff\"}\n{}\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stdin line 2: not UTF-8: invalid byte at offset 6; nothing appended"),
        "{err}"
    );
    let (code, _, err) = run(&["append", s(&dir), "s", "\u{feff}{}"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("message argument: invalid JSON: starts with a byte order mark"),
        "{err}"
    );
    let file = tmp.path().join("in.jsonl");
    std::fs::write(&file, b"{\"session\":\"a\",\"message\":{\"x\":\"\xc3\"}}\n").unwrap();
    let (code, _, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("line 1: not UTF-8: invalid byte at offset 31"),
        "{err}"
    );
    assert!(!dir.exists(), "bad input created {}", dir.display());
    // Input without a message: nothing to import, and no store made for it.
    std::fs::write(&file, "\n  \n").unwrap();
    let (code, out, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("nothing to import: "), "{out}");
    assert!(!dir.exists(), "an empty import created {}", dir.display());
}

#[test]
fn import_is_all_or_nothing_unless_skip_invalid() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let file = tmp.path().join("in.jsonl");
    let good = "{\"session\":\"a\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}";
    let cases = [
        ("{\"session\":\"a\",\"message\":", "invalid JSON at column"),
        ("[1,2]", "a line must be a JSON object"),
        (
            "{\"session\":\"a\",\"message\":[1]}",
            "\"message\": a message must be a JSON object, not an array",
        ),
        (
            "{\"session\":\"a\",\"messages\":[{},3]}",
            "\"messages\"[1]: a message must be a JSON object",
        ),
        ("{\"session\":\"a\"}", "needs \"message\" or \"messages\""),
        (
            "{\"session\":\"a\",\"message\":{},\"messages\":[]}",
            "not both",
        ),
        ("{\"message\":{}}", "a \"message\" line needs a \"session\""),
        (
            "{\"session\":\"\",\"message\":{}}",
            "invalid session id \"\": empty",
        ),
        (
            "{\"session\":\"a\\u0007\",\"message\":{}}",
            "control character",
        ),
        ("{\"session\":7,\"message\":{}}", "invalid type"),
    ];
    // Nested past what an append takes: found before anything is appended, too.
    let deep = format!(
        "{{\"session\":\"b\",\"message\":{{\"x\":{}{}}}}}",
        "[".repeat(600),
        "]".repeat(600)
    );
    let cases: Vec<(String, &str)> = cases
        .iter()
        .map(|&(bad, needle)| (bad.to_owned(), needle))
        .chain([(deep, "nested deeper than 512 levels")])
        .collect();
    for (bad, needle) in &cases {
        std::fs::write(&file, format!("{good}\n{good}\n{bad}\n{good}\n")).unwrap();
        let (code, out, err) = run(&["import", s(&dir), s(&file)]);
        assert_eq!(code, 1, "{bad}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{} line 3: ", s(&file)))
                && err.contains(needle)
                && err.contains("nothing was imported"),
            "{bad}: {err}"
        );
        assert!(!dir.exists(), "a failed import created the store");
    }

    // --skip-invalid: every valid line goes in, the invalid ones are listed.
    let mut text = String::new();
    for (i, (bad, _)) in cases.iter().enumerate() {
        text.push_str(&format!(
            "{{\"session\":\"a\",\"message\":{{\"i\":{i}}}}}\n{bad}\n"
        ));
    }
    std::fs::write(&file, &text).unwrap();
    let (code, out, err) = run(&["import", s(&dir), s(&file), "--skip-invalid"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 11 messages into 1 session"), "{out}");
    assert!(
        out.contains("skipped 11 invalid lines: 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22"),
        "{out}"
    );
    assert_eq!(err.lines().count(), 11, "{err}");
    assert!(err.lines().all(|l| l.contains("(skipped)")), "{err}");
    let (_, out, _) = run(&["cat", s(&dir), "a"]);
    let expected: String = (0..11).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    assert_eq!(out, expected);

    // Stdin, conversations, generated session ids, blank lines and CRLF.
    let stdin = "\u{feff}{\"messages\":[{\"role\":\"system\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"}],\"title\":\"t\"}\r\n\n{\"session\":\"b\",\"messages\":[]}\n{\"messages\":[]}\n";
    let (code, out, err) = run_with_stdin(&["import", s(&dir), "-"], stdin);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("imported 2 messages into 1 session from stdin"),
        "{out}"
    );
    // (The conversation of no messages made no session: no id said to be generated.)
    assert!(
        out.contains("generated session ids for 1 conversation without one (import-"),
        "{out}"
    );
    let (_, out, _) = run(&["sessions", s(&dir), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let generated = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_str().unwrap().starts_with("import-"))
        .expect("a generated session");
    assert_eq!(generated["count"], 2);

    // A pipe given as a path is read once, into memory.
    #[cfg(target_os = "linux")]
    {
        let stdin = "{\"session\":\"p\",\"message\":{\"via\":\"pipe\"}}\n";
        let (code, out, err) = run_with_stdin(&["import", s(&dir), "/dev/stdin"], stdin);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("imported 1 message"), "{out}");
        let (_, out, _) = run(&["cat", s(&dir), "p"]);
        assert_eq!(out, "{\"via\":\"pipe\"}\n");
    }

    let (code, _, err) = run(&["import", s(&dir), s(&tmp.path().join("missing.jsonl"))]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot open") && err.contains("missing.jsonl"),
        "{err}"
    );
}

#[test]
fn export_writes_files_and_single_sessions() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (code, out, err) = run(&["export", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.is_empty(),
        "no progress output when stderr is not a terminal: {err}"
    );
    let lines = parse_export(&out);
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0],
        (
            "alpha".into(),
            r#"{"role":"system","content":"Be brief."}"#.into()
        )
    );
    assert_eq!(
        lines[2].1,
        r#"{"role":"assistant","content":"Hello.","z":1,"a":2}"#
    );
    assert_eq!(lines[4].0, "beta");

    let file = tmp.path().join("beta.jsonl");
    let (code, out, _) = run(&["export", s(&dir), "--session", "beta", s(&file)]);
    assert_eq!(code, 0);
    assert!(
        out.contains("exported 1 message from 1 session to"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"session\":\"beta\",\"message\":{\"role\":\"user\",\"content\":\"naïve café → 東京 😀\"}}\n"
    );
    let (code, _, err) = run(&["export", s(&dir), "--session", "gamma"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session \"gamma\""), "{err}");
    let (code, _, err) = run(&["export", s(&dir), "--session", ""]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid session id"), "{err}");
    let (code, _, err) = run(&[
        "export",
        s(&dir),
        s(&tmp.path().join("no/such/dir/out.jsonl")),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot create") && err.contains("out.jsonl"),
        "{err}"
    );
}

/// One of `items`, drawn from `rng`.
fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

/// A JSON string literal for `text`, escaped in one of the many valid ways.
fn json_string(rng: &mut Rng, text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '/' if rng.below(2) == 0 => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' if rng.below(2) == 0 => out.push_str("\\u2028"),
            c if !c.is_ascii() && rng.below(4) == 0 => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const PIECES: [&str; 16] = [
    "hello",
    "naïve café",
    "東京タワー",
    "😀🚀",
    "line\nbreak",
    "tab\there",
    "quote \"q\"",
    "back\\slash",
    "a/b",
    "\u{2028}sep\u{2029}",
    "\u{1}\u{1f}",
    "Ωmega ≥ ß",
    "Привет",
    "",
    "{\"json\": [1, 2]}",
    "   spaced   ",
];

fn text(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| pick(rng, &PIECES))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One message's JSON, written by hand: varied key order, whitespace, escapes, numbers.
fn message(rng: &mut Rng, i: usize) -> String {
    let sp = if rng.below(5) == 0 { " " } else { "" };
    let role = pick(
        rng,
        &["system", "user", "assistant", "tool", "developer", "critic"],
    );
    let content = if i % 2011 == 7 {
        // A few large contents (~100 KB).
        let big = text(rng, 100_000 / 6);
        json_string(rng, &big)
    } else {
        let n = rng.below(30) as usize;
        let t = text(rng, n);
        json_string(rng, &t)
    };
    let query_text = text(rng, 3);
    let query = json_string(rng, &query_text);
    let arguments = json_string(
        rng,
        &format!("{{\"q\":{query},\"opts\":{{\"k\":[1,2.5,-3e-7]}}}}"),
    );
    let name = json_string(rng, "agent/é");
    match rng.below(6) {
        0 => format!(
            "{{\"role\":{sp}\"assistant\",\"content\":null,\"tool_calls\":[{{\"id\":\"call_{i}\",\"type\":\"function\",\"function\":{{\"name\":\"search\",\"arguments\":{}}}}},{{\"type\":\"function\",\"id\":\"call_{i}b\",\"function\":{{\"arguments\":\"{{}}\",\"name\":\"noop\"}},\"extra\":{{\"nested\":{{\"deep\":[[[{{\"x\":[]}}]]]}}}}}}]}}",
            arguments
        ),
        1 => format!(
            "{{ \"z_last_first\" : true , \"role\" : \"{role}\" , \"content\" : {content} }}"
        ),
        2 => format!(
            "{{\"role\":\"tool\",\"tool_call_id\":\"call_{i}\",\"content\":{content},\"n\":[0,-0,1.0,1e400,12345678901234567890123,-1.5E-10,true,false,null]}}"
        ),
        3 => format!(
            "{{\"role\":\"user\",\"content\":[{{\"type\":\"text\",\"text\":{content}}},{{\"type\":\"image_url\",\"image_url\":{{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}}}}]}}"
        ),
        4 => format!(
            "{{\"content\":{content},{sp}\"role\":\"{role}\",\"name\":{name},\"dup\":1,\"dup\":2}}"
        ),
        _ => format!("{{\"role\":\"{role}\",\"content\":{content}}}"),
    }
}

#[test]
fn ten_thousand_messages_round_trip_byte_for_byte_through_import_and_export() {
    const SEED: u64 = 0xC0_4F_10_65;
    println!("seed = {SEED:#x}");
    let mut rng = Rng(SEED);
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let file = tmp.path().join("in.jsonl");

    let sessions: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            0 => format!("agent-{i}"),
            1 => format!("会话 {i} ✓"),
            2 => format!("user/{i}/\"quoted\" \\ back"),
            _ => format!("s{i}\u{2028}"),
        })
        .collect();
    // Expected messages per explicit session, and the conversations without one.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut anonymous: Vec<Vec<String>> = Vec::new();
    let mut input = String::new();
    let mut total = 0;
    let mut i = 0;
    while total < 10_000 {
        let session = sessions[rng.below(sessions.len() as u64) as usize].clone();
        let session_json = json_string(&mut rng, &session);
        match rng.below(10) {
            0..=6 => {
                let m = message(&mut rng, i);
                i += 1;
                if rng.below(2) == 0 {
                    input.push_str(&format!("{{\"session\":{session_json},\"message\":{m}}}\n"));
                } else {
                    input.push_str(&format!(
                        "{{\"message\": {m}, \"session\": {session_json}}}\n"
                    ));
                }
                expected.entry(session).or_default().push(m);
                total += 1;
            }
            n => {
                let k = 1 + rng.below(25) as usize;
                let ms: Vec<String> = (0..k)
                    .map(|_| {
                        i += 1;
                        message(&mut rng, i)
                    })
                    .collect();
                total += k;
                if n == 9 {
                    input.push_str(&format!(
                        "{{\"title\":\"chat export\",\"messages\":[{}],\"created\":1700000000}}\n",
                        ms.join(",")
                    ));
                    anonymous.push(ms);
                } else {
                    input.push_str(&format!(
                        "{{\"session\":{session_json},\"messages\":[ {} ]}}\n",
                        ms.join(" , ")
                    ));
                    expected.entry(session).or_default().extend(ms);
                }
            }
        }
    }
    assert!(total >= 10_000);
    assert!(input.len() > 1_000_000, "large contents are in");
    std::fs::write(&file, &input).unwrap();

    let started = std::time::Instant::now();
    let (code, out, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.is_empty(),
        "nothing on stderr when it is not a terminal: {err}"
    );
    assert!(
        out.contains(&format!("imported {} messages", format_thousands(total))),
        "{out}"
    );
    println!("import: {out} ({:?})", started.elapsed());

    let export = tmp.path().join("out.jsonl");
    let (code, out, err) = run(&["export", s(&dir), s(&export)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.contains(&format!("exported {} messages", format_thousands(total))),
        "{out}"
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    let lines = parse_export(&exported);
    assert_eq!(lines.len(), total);

    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (session, m) in lines {
        got.entry(session).or_default().push(m);
    }
    let mut got_anonymous: Vec<Vec<String>> = Vec::new();
    for (session, ms) in &got {
        if session.starts_with("import-") {
            got_anonymous.push(ms.clone());
        } else {
            let want = &expected[session];
            assert_eq!(ms.len(), want.len(), "session {session:?}");
            for (k, (a, b)) in ms.iter().zip(want).enumerate() {
                assert_eq!(a, b, "session {session:?} message {}", k + 1);
            }
        }
    }
    assert_eq!(got.len() - got_anonymous.len(), expected.len());
    got_anonymous.sort();
    anonymous.sort();
    assert_eq!(got_anonymous, anonymous);

    // The export imports into another store and exports identically.
    let dir2 = tmp.path().join("store2");
    let (code, _, err) = run(&["import", s(&dir2), s(&export)]);
    assert_eq!(code, 0, "{err}");
    let (code, again, _) = run(&["export", s(&dir2)]);
    assert_eq!(code, 0);
    assert_eq!(again, exported);

    // cat of one session prints the same bytes.
    let one = sessions.iter().find(|s| expected.contains_key(*s)).unwrap();
    let (code, out, _) = run(&["cat", s(&dir), one]);
    assert_eq!(code, 0);
    let want: String = expected[one].iter().map(|m| format!("{m}\n")).collect();
    assert_eq!(out, want);
}

fn format_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn usage_errors_exit_2_and_help_lists_every_subcommand() {
    let (code, _, err) = run(&[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&["cat"]);
    assert_eq!(code, 2);
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for sub in [
        "demo", "sessions", "cat", "tail", "stats", "append", "pop", "truncate", "clear", "verify",
        "repair", "import", "export",
    ] {
        assert!(out.contains(sub), "help lists {sub}: {out}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_output_quietly() {
    use std::io::{BufRead, BufReader};

    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir).unwrap();
    let filler = format!("{{\"role\":\"user\",\"content\":\"{}\"}}", "x".repeat(200));
    let batch: Vec<&[u8]> = vec![filler.as_bytes(); 2000];
    store.append_batch_raw("big", &batch).unwrap();
    close(store);
    // 400 KB of output: more than a pipe buffers, so the writer sees the pipe close.
    let mut child = spawn(&["cat", s(&dir), "big"]);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim_end(), filler);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn creation_interrupted_after_the_lock_is_finished_by_the_next_writer() {
    let tmp = TempDir::new().unwrap();
    // A writer killed right after it created and locked `LOCK`.
    let dir = tmp.path().join("only-lock");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), "").unwrap();
    let (code, out, err) = run(&["append", s(&dir), "s", "{}"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "appended to \"s\": interaction 1, LSN 1\n");
    let (code, out, err) = run(&["cat", s(&dir), "s"]);
    assert_eq!((code, out.as_str()), (0, "{}\n"), "{err}");

    // Killed while writing the first segment's header: `LOCK` and a short segment.
    let header = {
        let fresh = tmp.path().join("fresh");
        close(Store::open(&fresh).unwrap());
        std::fs::read(fresh.join(SegmentId(1).file_name())).unwrap()
    };
    let dir = tmp.path().join("half-header");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), "").unwrap();
    std::fs::write(
        dir.join(SegmentId(1).file_name()),
        &header[..SEGMENT_HEADER_LEN / 2],
    )
    .unwrap();
    let file = tmp.path().join("in.jsonl");
    std::fs::write(&file, "{\"session\":\"x\",\"message\":{\"n\":1}}\n").unwrap();
    let (code, _, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 message"), "{out}");

    // `import` finishes an interrupted creation too.
    let dir = tmp.path().join("only-lock-import");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), "").unwrap();
    let (code, _, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");

    // Anything else in the directory still keeps it from becoming a store.
    let dir = tmp.path().join("lock-and-notes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), "").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = run(&["append", s(&dir), "s", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a convlog store"), "{err}");
    assert!(!dir.join(SegmentId(1).file_name()).exists());
    // And the read-only commands do not take a bare `LOCK` for a store.
    let dir = tmp.path().join("only-lock-read");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), "").unwrap();
    let (code, _, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("no segment files"), "{err}");
}

#[test]
fn writers_racing_to_create_one_store_all_succeed() {
    let tmp = TempDir::new().unwrap();
    // The loser's view, made deterministic: the winner has created and locked `LOCK` and not
    // yet written the first segment. The loser waits for the write lock, then goes on.
    let dir = tmp.path().join("mid-creation");
    std::fs::create_dir(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("LOCK")).unwrap();
    lock.try_lock().unwrap();
    let child = spawn(&["append", s(&dir), "s", "{}"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    {
        let _guard = fork_guard();
        drop(lock);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the winner let go: the waiting writer creates the store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An exclusive writer (it holds `WRITERS` exclusively) makes the others fail fast.
    let dir = tmp.path().join("exclusive-winner");
    std::fs::create_dir(&dir).unwrap();
    let writers = std::fs::File::create(dir.join(convlog::WRITERS_FILE)).unwrap();
    writers.try_lock().unwrap();
    for args in [
        vec!["append", s(&dir), "s", "{}"],
        vec!["import", s(&dir), "-"],
    ] {
        let (code, _, err) = run_with_stdin(&args, "{\"session\":\"s\",\"message\":{}}\n");
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains("locked by another writer") && !err.contains("not a convlog store"),
            "{args:?}: {err}"
        );
    }
    {
        let _guard = fork_guard();
        drop(writers);
    }
    let (code, _, err) = run(&["append", s(&dir), "s", "{}"]);
    assert_eq!(
        code, 0,
        "the winner died: the next writer creates the store: {err}"
    );

    // The real race.
    for round in 0..12 {
        let dir = tmp.path().join(format!("race-{round}"));
        // Each child reads its message from stdin before it touches the store: start all of
        // them, then release them at once by closing their stdin.
        let mut children: Vec<Child> = (0..8)
            .map(|_| spawn(&["append", s(&dir), "s", "-"]))
            .collect();
        let mut inputs: Vec<_> = children
            .iter_mut()
            .map(|c| c.stdin.take().unwrap())
            .collect();
        for (i, input) in inputs.iter_mut().enumerate() {
            writeln!(input, "{{\"n\":{i}}}").unwrap();
        }
        drop(inputs);
        let mut appended = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("not a convlog store"), "round {round}: {err}");
            assert_eq!(out.status.code(), Some(0), "round {round}: {err}");
            appended += 1;
        }
        let store = Store::builder().read_only(true).open(&dir).unwrap();
        assert_eq!(store.interaction_count("s"), appended);
    }
}

#[test]
fn a_failed_export_leaves_the_file_it_would_replace_as_it_was() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let file = tmp.path().join("backup.jsonl");
    let input: String = (1..=50)
        .map(|i| format!("{{\"c\":\"msg {i}\"}}\n"))
        .collect();
    let (code, _, err) = run_with_stdin(&["append", s(&dir), "s", "--batch"], &input);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["export", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");
    let backup = std::fs::read(&file).unwrap();
    assert_eq!(backup.iter().filter(|&&b| b == b'\n').count(), 50);
    // Damage message 40: the next export fails after 39 messages.
    let seg = dir.join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(6).position(|w| w == b"msg 40").unwrap();
    bytes[at + 4] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, _, err) = run(&["export", s(&dir), s(&file)]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        backup,
        "the good backup was replaced"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "a temporary file was left: {names:?}");
}

#[test]
fn export_refuses_to_write_into_the_store_it_reads() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let segment = dir.join(SegmentId(1).file_name());
    let before = std::fs::read(&segment).unwrap();
    let listed = listing(&dir);

    let symlink = tmp.path().join("link.jsonl");
    std::os::unix::fs::symlink(&segment, &symlink).unwrap();
    let hardlink = tmp.path().join("hard.jsonl");
    std::fs::hard_link(&segment, &hardlink).unwrap();
    let dangling = tmp.path().join("dangling.jsonl");
    std::os::unix::fs::symlink(dir.join("new.jsonl"), &dangling).unwrap();
    let dotdot = dir.join("..").join("store").join(SegmentId(1).file_name());
    let new_inside = dir.join("out.jsonl");
    for (out, needle) in [
        (segment.clone(), "inside the store directory"),
        (dotdot, "inside the store directory"),
        (new_inside.clone(), "inside the store directory"),
        (symlink, "inside the store directory"),
        (dangling, "inside the store directory"),
        (hardlink, "is the store's file"),
    ] {
        for session in [None, Some("alpha")] {
            let mut args = vec!["export", s(&dir)];
            if let Some(session) = session {
                args.extend(["--session", session]);
            }
            args.push(s(&out));
            let (code, stdout, err) = run(&args);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(stdout.is_empty(), "{args:?}: {stdout}");
            assert!(
                err.starts_with("convlog: refusing to write to ") && err.contains(needle),
                "{args:?}: {err}"
            );
            assert_eq!(std::fs::read(&segment).unwrap(), before, "{args:?}");
            assert_eq!(listing(&dir), listed, "{args:?} changed the store");
        }
    }
    assert!(!new_inside.exists());
    // The store is whole: it still reads back.
    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 messages"), "{out}");
    // A file beside the store is fine.
    let beside = tmp.path().join("out.jsonl");
    let (code, _, err) = run(&["export", s(&dir), s(&beside)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        parse_export(&std::fs::read_to_string(&beside).unwrap()).len(),
        5
    );
}

#[test]
fn a_failing_repair_says_what_to_do_instead_of_suggesting_repair() {
    let tmp = TempDir::new().unwrap();
    // One segment whose header is damaged: nothing for salvage to keep.
    let dir = chat_store(&tmp);
    let path = dir.join(SegmentId(1).file_name());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    // Other commands point at repair.
    for args in [vec!["verify", s(&dir)], vec!["stats", s(&dir)]] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(&format!("`convlog repair {}`", s(&dir))),
            "{args:?}: {err}"
        );
    }
    // Repair itself sets the unreadable segment aside, whole, and says where.
    let (code, out, err) = run(&["repair", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".aside"), "{out}");
    let aside = dir
        .join("quarantine")
        .join(format!("{}.aside", SegmentId(1).file_name()));
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        bytes,
        "kept aside byte for byte"
    );
    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("clean"), "{out}");

    // A repair that cannot proceed (a segment of a newer format) says so, without
    // suggesting itself, and changes nothing.
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let path = dir.join(SegmentId(1).file_name());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 99; // format version 99, header checksum recomputed
    let crc = crc32fast::hash(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (code, out, err) = run(&["repair", s(&dir)]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("unsupported format version 99"), "{err}");
    assert!(!err.contains("convlog repair"), "circular advice: {err}");
    assert!(!err.contains("salvages every valid record"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "repair changed nothing"
    );
}

/// The segment files of the store in `dir`, sorted.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(SegmentId::parse_file_name)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn segment_size_sets_where_segments_are_sealed() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("small");
    let message = format!("{{\"role\":\"user\",\"content\":\"{}\"}}", "z".repeat(500));
    for i in 0..30 {
        let size = if i % 2 == 0 { "4096" } else { "4K" };
        let (code, _, err) = run(&["append", s(&dir), "s", &message, "--segment-size", size]);
        assert_eq!(code, 0, "{err}");
    }
    let segments = segment_files(&dir);
    assert!(
        segments.len() >= 3,
        "30 × 0.5 KiB in 4 KiB segments: {segments:?}"
    );
    for seg in &segments[..segments.len() - 1] {
        let len = std::fs::metadata(seg).unwrap().len();
        assert!(len <= 4096 + 600, "{seg:?} is {len} bytes");
    }
    let (code, out, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30 messages"), "{out}");

    // import too, with a suffix.
    let file = tmp.path().join("in.jsonl");
    // One session per line: a batch (one session's messages) never spans segments.
    let lines: String = (0..40)
        .map(|i| format!("{{\"session\":\"t{i}\",\"message\":{message}}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let dir = tmp.path().join("imported");
    let (code, _, err) = run(&["import", s(&dir), s(&file), "--segment-size", "8K"]);
    assert_eq!(code, 0, "{err}");
    let n = segment_files(&dir).len();
    assert!(n >= 2, "40 × 0.5 KiB in 8 KiB segments: {n}");
    // Without the option, the default (64 MiB) holds it all in one.
    let dir = tmp.path().join("default");
    let (code, _, err) = run(&["import", s(&dir), s(&file)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(segment_files(&dir).len(), 1);

    // Out of range or malformed: an error, and nothing is created.
    let dir = tmp.path().join("never");
    for (size, code_wanted, needle) in [
        (
            "100",
            2,
            "'--segment-size <BYTES>': 100 is outside 4096..=1073741824",
        ),
        ("2G", 2, "is outside"),
        ("12X", 2, "not a size"),
    ] {
        let (code, _, err) = run(&["append", s(&dir), "s", "{}", "--segment-size", size]);
        assert_eq!(code, code_wanted, "{size}: {err}");
        assert!(err.contains(needle), "{size}: {err}");
        assert!(!dir.exists(), "{size}");
    }
    let (code, _, err) = run(&["demo", "--dir", s(&dir), "--segment-size", "1K"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'--segment-size <BYTES>': 1024 is outside"),
        "{err}"
    );
    assert!(!dir.exists());
}

#[test]
fn demo_replaces_only_its_own_store_unless_forced() {
    let tmp = TempDir::new().unwrap();
    let small = ["--sessions", "3", "--messages", "30", "--agents", "2"];
    let demo = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["demo", "--dir", s(dir)];
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        run(&args)
    };
    // A store holding a user's data, written by `convlog append`.
    let dir = tmp.path().join("mine");
    let (code, _, err) = run(&[
        "append",
        s(&dir),
        "precious",
        r#"{"role":"user","content":"keep me"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let before = listing(&dir);
    let (code, out, err) = demo(&dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("refusing to replace")
            && err.contains("did not write")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(listing(&dir), before, "the store was left alone");
    let (code, out, _) = run(&["cat", s(&dir), "precious"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "{\"role\":\"user\",\"content\":\"keep me\"}\n")
    );

    // --force replaces it.
    let (code, out, err) = demo(&dir, &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replaced the store that was there: --force"),
        "{out}"
    );
    let store = Store::builder().read_only(true).open(&dir).unwrap();
    assert!(!store.contains("precious"));
    assert_eq!(store.stats().messages, 30);
    drop(store);
    // From then on it is the demo's own: replaced without --force.
    let (code, out, err) = demo(&dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replaced the store an earlier demo wrote"),
        "{out}"
    );
    // Appending to the demo's store keeps it the demo's.
    let (code, _, err) = run(&["append", s(&dir), "extra", "{}"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = demo(&dir, &[]);
    assert_eq!(code, 0, "{err}");

    // --force never deletes files that are not a store's.
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = demo(&dir, &["--force"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to delete") && err.contains("notes.txt"),
        "{err}"
    );
    assert!(dir.join("notes.txt").exists());

    // An empty directory is used as it is, and a file is refused.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, out, err) = demo(&empty, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(new)"), "{out}");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = demo(&file, &["--force"]);
    assert_eq!(code, 1);
    assert!(err.contains("is a file"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn stats_says_which_segments_it_checked() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    // A clean close wrote the segment's hint: the open loads it without reading the segment.
    let hint = dir.join(SegmentId(1).file_name()).with_extension("hint");
    assert!(hint.exists());
    let (code, out, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("recovery    clean"), "{out}");
    assert!(
        out.contains(&format!(
            "recovery    no damage found: 0 segments scanned (0 B); 1 segment loaded from its \
             hint file without a scan (not checked; `convlog verify {}` checks every byte)",
            s(&dir)
        )),
        "{out}"
    );
    let (_, out, _) = run(&["stats", s(&dir), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["segments_scanned"], 0);
    assert_eq!(v["segments_from_hint_files"], 1);
    assert_eq!(v["bytes_scanned"], 0);

    // Damage in a segment loaded from its hint goes unseen by stats: that is why it says so.
    // Without the hint, the segment is scanned, and clean means checked.
    std::fs::remove_file(&hint).unwrap();
    let (code, out, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    let len = std::fs::metadata(dir.join(SegmentId(1).file_name()))
        .unwrap()
        .len();
    assert!(
        out.contains("recovery    clean: 1 segment scanned (") && !out.contains("hint file"),
        "{out}"
    );
    let (_, out, _) = run(&["stats", s(&dir), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["segments_scanned"], 1);
    assert_eq!(v["segments_from_hint_files"], 0);
    assert_eq!(v["bytes_scanned"], len);
}

#[test]
fn demo_and_stats_report_the_same_size_on_disk() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("demo");
    let (code, out, err) = run(&[
        "demo",
        "--dir",
        s(&dir),
        "--sessions",
        "5",
        "--messages",
        "300",
    ]);
    assert_eq!(code, 0, "{err}");
    // on disk  1 segment, 312.5 KiB for 5 sessions, 300 messages
    let line = out.lines().find(|l| l.starts_with("on disk  ")).unwrap();
    let demo_size = line
        .split(", ")
        .nth(1)
        .and_then(|x| x.strip_suffix(" for 5 sessions"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let (code, stats, err) = run(&["stats", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    // segments    1 (312.5 KiB on disk)
    let line = stats.lines().find(|l| l.starts_with("segments ")).unwrap();
    let stats_size = line
        .split_once('(')
        .and_then(|(_, x)| x.strip_suffix(" on disk)"))
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(demo_size, stats_size, "demo:\n{out}\nstats:\n{stats}");
    // Both count the segment files, as they are on disk once the demo has closed the store
    // (no preallocated space).
    let (_, json, _) = run(&["stats", s(&dir), "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let on_disk: u64 = segment_files(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(v["bytes"], on_disk);
    assert!(
        on_disk < 1 << 20,
        "300 small messages, no 1 MiB preallocation: {on_disk}"
    );
    // The demo's reopen does not claim hint-loaded segments were checked either.
    assert!(
        out.contains("1 segment loaded from its hint file without a scan (not checked"),
        "{out}"
    );
}

/// Runs `convlog args...` in the working directory `cwd`; returns (exit code, stdout, stderr).
fn run_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let child = {
        let _guard = fork_guard();
        Command::new(env!("CARGO_BIN_EXE_convlog"))
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run convlog")
    };
    let out = child.wait_with_output().expect("wait for convlog");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A shell command line's words: blanks separate them, single quotes quote, and an unquoted
/// `#` after a blank starts a comment. (All the README's commands need.)
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut in_word) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if quoted => word.push(c),
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn the_readme_cli_examples_run_as_written_after_the_demo() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## The `convlog` CLI").unwrap()..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let tmp = TempDir::new().unwrap();
    let mut ran = Vec::new();
    for line in block.lines() {
        let words = shell_words(line);
        let args: Vec<&str> = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["cargo", "run", "--release", "--", ref rest @ ..] => rest.to_vec(),
            ["cargo", "install", "--locked", "--path", "."] => continue,
            ["convlog", ref rest @ ..] => rest.to_vec(),
            _ => panic!("unexpected README command {line:?}"),
        };
        let (code, out, err) = run_in(tmp.path(), &args);
        assert_eq!(code, 0, "README: {line}\n{out}{err}");
        ran.push(args[0].to_owned());
        if args[0] == "demo" {
            // The demo's `next:` lines run too, spelled for this binary (target/debug).
            let next: Vec<&str> = out
                .lines()
                .skip_while(|l| !l.starts_with("next: "))
                .map(|l| l.trim_start_matches("next: ").trim())
                .take_while(|l| l.starts_with("cargo run -- "))
                .collect();
            assert!(next.len() >= 3, "{out}");
            for cmd in next {
                let words = shell_words(cmd.trim_start_matches("cargo run -- "));
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                let (code, out, err) = run_in(tmp.path(), &words);
                assert_eq!(code, 0, "demo's next: {cmd}\n{out}{err}");
            }
        }
    }
    assert_eq!(
        ran,
        [
            "demo", "sessions", "cat", "tail", "window", "stats", "append", "pop", "truncate",
            "clear", "delete", "compact", "verify", "repair", "export", "import"
        ]
    );
    // The exported session went into the new store whole.
    let (code, out, err) = run_in(tmp.path(), &["verify", "chats"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 session"), "{out}");
}

#[test]
fn readme_names_its_license_and_platforms_and_no_invisible_references() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cli = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    for (name, text) in [("README.md", &readme), ("docs/cli.md", &cli)] {
        for gone in [
            "issue 5",
            "DESIGN",
            "the performance issue",
            "cargo install --path",
        ] {
            assert!(!text.contains(gone), "{name} mentions {gone:?}");
        }
    }
    assert!(readme.contains("Supported platforms: Unix (Linux and macOS)"));
    assert!(readme.contains(r#"convlog = { path = "../convlog", default-features = false }"#));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.contains("Copyright (c) the convlog developers"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
}

/// `convlog window` prints the longest recent history within its budget that starts at a
/// user message and keeps each tool result with its call, with the system message first.
#[test]
fn window_prints_a_budgeted_history_that_never_splits_a_tool_call() {
    let tmp = TempDir::new().unwrap();
    let dir = store_with(
        &tmp,
        &[
            ("w", r#"{"role":"system","content":"Be brief."}"#),
            ("w", r#"{"role":"user","content":"weather?"}"#),
            (
                "w",
                r#"{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"wx","arguments":"{}"}}]}"#,
            ),
            (
                "w",
                r#"{"role":"tool","tool_call_id":"c1","content":"18C"}"#,
            ),
            ("w", r#"{"role":"assistant","content":"18C."}"#),
        ],
    );
    // Four messages would start at the tool call: the window starts at the user message.
    let (code, out, err) = run(&["window", s(&dir), "w", "--max-messages", "4"]);
    assert_eq!(code, 0, "{err}");
    let roles: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["role"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    let (code, out, err) = run(&[
        "window",
        s(&dir),
        "w",
        "--max-messages",
        "4",
        "--keep-system",
        "--with-meta",
    ]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["interaction_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        [1],
        "with the system message, 4 cannot reach back to the user message"
    );
}

/// `convlog replace` makes a session exactly its stdin, only when the expected next id holds.
#[test]
fn replace_makes_a_session_exactly_its_stdin_when_nothing_was_appended_since() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let before = run(&["cat", s(&dir), "alpha"]).1;
    let new = "{\"role\":\"system\",\"content\":\"summary\"}\n{\"role\":\"user\",\"content\":\"go on\"}\n";
    let (code, _, err) = run_with_stdin(&["replace", s(&dir), "alpha", "--expect", "1", "-"], new);
    assert_eq!(code, 1, "a stale expectation is a conflict");
    assert!(err.contains("conflict"), "{err}");
    assert_eq!(run(&["cat", s(&dir), "alpha"]).1, before, "nothing changed");
    let (_, meta, _) = run(&["cat", s(&dir), "alpha", "--with-meta"]);
    let next = meta.lines().count() + 1;
    let (code, out, err) = run_with_stdin(
        &[
            "replace",
            s(&dir),
            "alpha",
            "--expect",
            &next.to_string(),
            "-",
        ],
        new,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 messages"), "{out}");
    assert_eq!(run(&["cat", s(&dir), "alpha"]).1, new);
    let (code, _, err) = run(&["verify", s(&dir)]);
    assert_eq!(code, 0, "{err}");
}

/// `convlog append --key K` is safe to retry: the second run prints the first run's receipt
/// and appends nothing.
#[test]
fn append_with_a_key_is_safe_to_retry() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("keyed");
    let args = [
        "append",
        s(&dir),
        "s",
        r#"{"role":"user","content":"once"}"#,
        "--key",
        "req-7",
    ];
    let (code, first, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let (code, again, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, first, "the original receipt");
    let (_, out, _) = run(&["cat", s(&dir), "s"]);
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// `convlog fork` starts a session as another's first messages; the source's later changes
/// do not reach it.
#[test]
fn fork_starts_a_session_as_another_ones_prefix() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (_, alpha, _) = run(&["cat", s(&dir), "alpha"]);
    let (code, out, err) = run(&["fork", s(&dir), "alpha", "alpha-b", "--at", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 messages"), "{out}");
    let first_two: String = alpha.lines().take(2).map(|l| format!("{l}\n")).collect();
    assert_eq!(run(&["cat", s(&dir), "alpha-b"]).1, first_two);
    let (code, _, _) = run(&["clear", s(&dir), "alpha"]);
    assert_eq!(code, 0);
    assert_eq!(run(&["cat", s(&dir), "alpha-b"]).1, first_two);
    let (code, _, err) = run(&["fork", s(&dir), "beta", "alpha-b"]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
}

/// `convlog meta` sets and prints a session's metadata; `sessions --json` shows it and
/// `sessions --where` filters by it.
#[test]
fn meta_sets_prints_lists_and_filters() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let (code, _, err) = run(&["meta", s(&dir), "alpha", r#"{"title":"Hello","user":"u1"}"#]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["meta", s(&dir), "alpha"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"title\":\"Hello\",\"user\":\"u1\"}\n");
    let (code, _, err) = run(&["meta", s(&dir), "beta", "[1]"]);
    assert_eq!(code, 1, "not an object");
    assert!(
        err.contains("invalid metadata for session \"beta\": not a JSON object"),
        "{err}"
    );
    let (_, json, _) = run(&["sessions", s(&dir), "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&json).unwrap();
    let alpha = rows.iter().find(|r| r["id"] == "alpha").unwrap();
    assert_eq!(alpha["meta"]["title"], "Hello");
    let (_, listed, _) = run(&["sessions", s(&dir), "--where", "user=u1"]);
    assert!(
        listed.contains("alpha") && !listed.contains("beta"),
        "{listed}"
    );
}

#[test]
fn compact_empties_quarantine_when_it_erases_unless_told_to_keep_it() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let d = s(&dir);
    let q = dir.join(convlog::QUARANTINE_DIR);
    let set_aside = |name: &str| {
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join(name), b"what a repair set aside").unwrap();
    };
    let (code, _, err) = run(&["compact", d, "--purge-quarantine", "--keep-quarantine"]);
    assert_eq!(code, 2, "{err}");
    // Kept: nothing erased is said to be gone from quarantine/.
    set_aside("a.bin");
    let (code, out, err) = run(&["delete", d, "beta"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["compact", d, "--seal", "--keep-quarantine", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["sessions_erased"], serde_json::json!(["beta"]));
    assert_eq!(report["quarantine_files_removed"], 0);
    assert!(q.join("a.bin").exists());
    // By default a compaction that drops records empties it.
    let (code, out, err) = run(&["clear", d, "alpha"]);
    assert_eq!(code, 0, "{out}{err}");
    set_aside("b.bin");
    let (code, out, err) = run(&["compact", d, "--seal"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed 2 files from quarantine/"), "{out}");
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), 0);
}

#[test]
fn delete_reads_session_ids_from_stdin_and_refuses_a_line_no_id_can_be() {
    let tmp = TempDir::new().unwrap();
    let dir = chat_store(&tmp);
    let d = s(&dir);
    // A line longer than any session id: refused before anything is deleted, without
    // reading the rest of it.
    let long = format!("alpha\n{}\n", "x".repeat(100_000));
    let (code, out, err) = run_with_stdin(&["delete", d, "-"], &long);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("stdin line 2: longer than 258 bytes; a session id is at most 256 bytes"),
        "{err}"
    );
    let (_, out, _) = run(&["sessions", d]);
    assert!(out.contains("alpha") && out.contains("beta"), "{out}");
    // Blank lines are skipped, `\r\n` endings taken off.
    let (code, out, err) = run_with_stdin(&["delete", d, "-"], "alpha\r\n\n  \nbeta\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted 2 sessions"), "{out}");
    let (_, out, _) = run(&["sessions", d]);
    assert!(!out.contains("alpha") && !out.contains("beta"), "{out}");
    // An id given twice is one session; a wrong DIR is said before stdin is read.
    let (code, _, err) = run(&["append", d, "gamma", "{\"a\":1}"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["delete", d, "gamma", "gamma"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "deleted 1 session; their bytes go at the next `convlog compact`\n"
    );
    let missing = tmp.path().join("missing");
    let (code, _, err) = run_with_stdin(&["delete", s(&missing), "-"], "alpha\n");
    assert_eq!(code, 1);
    assert!(err.contains("is not a convlog store"), "{err}");
}

#[test]
fn a_change_whose_output_fails_says_it_is_done() {
    if !Path::new("/dev/full").exists() {
        return; // (Linux only)
    }
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let to_full = |args: &[&str]| {
        let _guard = fork_guard();
        let out = Command::new(env!("CARGO_BIN_EXE_convlog"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = to_full(&["append", d, "s", "{\"a\":1}"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("appended to \"s\": interaction 1, LSN 1 (done), but cannot write stdout"),
        "{err}"
    );
    let (code, _, err) = run(&["append", d, "s", "{\"a\":2}"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = to_full(&["pop", d, "s"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("popped interaction 2 of \"s\" (done), but cannot write stdout"),
        "{err}"
    );
    let (_, out, _) = run(&["cat", d, "s"]);
    assert_eq!(out, "{\"a\":1}\n", "the pop happened, once");

    // A streaming append stops at the line whose receipt failed, and says it is in.
    let input = tmp.path().join("in.jsonl");
    let full_with_stdin = |args: &[&str], stdin: &str| {
        std::fs::write(&input, stdin).unwrap();
        let _guard = fork_guard();
        let out = Command::new(env!("CARGO_BIN_EXE_convlog"))
            .args(args)
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = full_with_stdin(&["append", d, "s"], "{\"a\":2}\n{\"a\":3}\n");
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "stdin line 1: appended to \"s\": interaction 2, LSN 4 (done), but cannot write \
             stdout"
        ) && err.contains("1 message appended in all, nothing after line 1"),
        "{err}"
    );
    let (_, out, _) = run(&["cat", d, "s"]);
    assert_eq!(
        out, "{\"a\":1}\n{\"a\":2}\n",
        "line 1 in, once; line 2 not read"
    );

    // Every other command that changes the store says so when its report cannot be printed.
    let import = tmp.path().join("import.jsonl");
    std::fs::write(&import, "{\"session\":\"i\",\"message\":{\"a\":9}}\n").unwrap();
    let im = s(&import);
    let cases: [(&[&str], &str, &str); 8] = [
        (
            &["fork", d, "s", "f"],
            "",
            "forked \"s\" into \"f\": it starts with 2 messages",
        ),
        (
            &["truncate", d, "s", "1"],
            "",
            "truncated \"s\" to 1 message: removed 1 message",
        ),
        (&["clear", d, "f"], "", "cleared \"f\": removed 2 messages"),
        (
            &["meta", d, "s", "{\"m\":1}"],
            "",
            "set the metadata of \"s\"",
        ),
        (
            &["replace", d, "r"],
            "{\"b\":1}\n",
            "replaced \"r\": it holds 1 message",
        ),
        (&["import", d, im], "", "imported 1 message into 1 session"),
        (&["delete", d, "r"], "", "deleted 1 session"),
        (&["compact", d, "--seal", "--json"], "", "compacted "),
    ];
    for (args, stdin, done) in cases {
        let (code, err) = full_with_stdin(args, stdin);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(done) && err.contains("(done), but cannot write stdout"),
            "{args:?}: {err}"
        );
    }
    let (_, out, _) = run(&["sessions", d]);
    let ids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(ids.contains(&"s") && ids.contains(&"i"), "{out}");
    assert!(!ids.contains(&"f") && !ids.contains(&"r"), "{out}");
    let (_, out, _) = run(&["cat", d, "s"]);
    assert_eq!(out, "{\"a\":1}\n", "each change happened once");
}

#[test]
fn retention_limits_of_zero_are_usage_errors_and_erase_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let (code, _, err) = run(&["append", d, "s", "{\"a\":1}"]);
    assert_eq!(code, 0, "{err}");
    for flag in [
        ["--idle-for", "0s"],
        ["--idle-for", "0d"],
        ["--max-sessions", "0"],
        ["--max-bytes", "0"],
    ] {
        let (code, out, err) = run(&["compact", d, "--seal", flag[0], flag[1]]);
        assert_eq!(code, 2, "{flag:?}: a usage error: {err}");
        assert!(out.is_empty(), "{flag:?}: {out}");
        assert!(
            err.contains("would delete every session") && err.contains("convlog delete"),
            "{flag:?}: {err}"
        );
    }
    let (_, out, _) = run(&["cat", d, "s"]);
    assert_eq!(out, "{\"a\":1}\n", "nothing was erased");
    // One is a limit like any other.
    let (code, _, err) = run(&["compact", d, "--max-sessions", "1"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn stdin_read_whole_refuses_a_line_no_message_can_fill_and_writes_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let d = s(&dir);
    let (code, _, err) = run(&["append", d, "s", "{\"a\":1}"]);
    assert_eq!(code, 0, "{err}");
    // A second line of 17 MiB without an ending, after a valid one: no message is that
    // long. And one that ends just past the limit, within one read of the input.
    let mut endless = b"{\"b\":1}\n".to_vec();
    endless.resize(endless.len() + (17 << 20), b'x');
    let limit = (16 << 20) + (64 << 10);
    let mut just_past = b"{\"b\":1}\n{\"c\":1}".to_vec();
    just_past.resize(8 + limit, b' ');
    just_past.extend_from_slice(b"\n{\"d\":1}\n");
    assert_eq!(
        just_past.len() - 8 - 8,
        limit + 1,
        "line 2 is one byte too long"
    );
    for (args, input) in [
        (vec!["append", d, "s", "--batch"], &endless),
        (vec!["replace", d, "s"], &endless),
        (vec!["append", d, "s", "--batch"], &just_past),
        (vec!["replace", d, "s"], &just_past),
    ] {
        let (code, out, err) = run_with_stdin(&args, input);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(
            err.contains("stdin line 2: longer than") && err.contains("a message is at most"),
            "{args:?}: {err}"
        );
    }
    let (_, out, _) = run(&["cat", d, "s"]);
    assert_eq!(out, "{\"a\":1}\n", "nothing changed");
}
