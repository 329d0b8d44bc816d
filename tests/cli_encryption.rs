//! The `convlog` binary with encrypted stores (issue 15): the master key comes from the file
//! named by `--key-file` or `$CONVLOG_KEY_FILE`, never from an argument; `keygen` writes one;
//! `rekey` rewraps every data key; a missing, wrong or malformed key is a clear one-line
//! error that changes nothing and never shows a key's bytes; `stats` and `verify` say
//! whether a store is encrypted, and their `--json` says whether its files are private.

#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_convlog");
const ENV: &str = "CONVLOG_KEY_FILE";
/// A marker that must never reach a file of an encrypted store.
const MARK: &str = "PLAINTEXT-MARKER-hunter2";

/// Runs `convlog args...` with `env` set (and `$CONVLOG_KEY_FILE` unset unless `env` sets
/// it), `stdin` on its standard input, in `cwd`; returns (exit code, stdout, stderr).
fn run_full(cwd: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove(ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run convlog");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
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

fn run_env(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    run_full(Path::new("/"), env, args, "")
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_env(&[], args)
}

/// Runs and asserts success; returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "convlog {args:?}: {out}{err}");
    out
}

/// Runs and asserts failure with exit status 1, nothing on stdout, and one line on stderr
/// (`convlog: ...`); returns that line.
fn fails(env: &[(&str, &str)], args: &[&str]) -> String {
    let (code, out, err) = run_env(env, args);
    assert_eq!(code, 1, "convlog {args:?} should fail: {out}{err}");
    assert_eq!(out, "", "convlog {args:?}");
    assert!(err.starts_with("convlog: ") && err.ends_with('\n'), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                all.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A new key file `name` in `tmp`, written by `convlog keygen`.
fn keygen(tmp: &TempDir, name: &str) -> PathBuf {
    let path = tmp.path().join(name);
    let out = ok(&["keygen", s(&path)]);
    assert!(out.contains(s(&path)), "{out}");
    path
}

/// An encrypted store at `tmp/store` under `key`, with three messages in `a` and two in `b`
/// (each holding [`MARK`]); returns its directory and the messages appended to `a`.
fn encrypted_store(tmp: &TempDir, key: &Path) -> (PathBuf, Vec<String>) {
    let dir = tmp.path().join("store");
    let a: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"role":"user","content":"{MARK} a{i}"}}"#))
        .collect();
    for m in &a {
        ok(&["append", s(&dir), "a", m, "--key-file", s(key)]);
    }
    for i in 0..2 {
        let m = format!(r#"{{"role":"user","content":"{MARK} b{i}"}}"#);
        ok(&["append", s(&dir), "b", &m, "--key-file", s(key)]);
    }
    (dir, a)
}

fn lines(v: &[String]) -> String {
    v.iter().map(|m| format!("{m}\n")).collect()
}

#[test]
fn keygen_writes_a_private_hex_key_and_never_overwrites_a_file() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let text = fs::read_to_string(&key).unwrap();
    assert_eq!(text.len(), 65, "{text:?}");
    assert!(text.ends_with('\n'));
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    // The key never shows on stdout.
    let out = ok(&["keygen", s(&tmp.path().join("k2.hex"))]);
    assert!(!out.contains(&text[..64]));
    let other = fs::read_to_string(tmp.path().join("k2.hex")).unwrap();
    assert_ne!(other, text, "each key is new");
    // An existing file is left alone.
    let err = fails(&[], &["keygen", s(&key)]);
    assert!(
        err.contains("refusing to overwrite") && err.contains(s(&key)),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&key).unwrap(), text);
    // Nor is a key put beside the store it would protect.
    let (dir, _) = encrypted_store(&tmp, &key);
    let inside = dir.join("key.hex");
    let err = fails(&[], &["keygen", s(&inside)]);
    assert!(err.contains("holds a convlog store"), "{err}");
    assert!(!inside.exists());
}

#[test]
fn messages_round_trip_with_key_file_or_the_environment_and_no_plaintext_reaches_the_store() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let (dir, mut a) = encrypted_store(&tmp, &key);
    let env = [(ENV, s(&key))];
    // The variable stands for --key-file, for writing (stdin JSONL too) and reading.
    let more: Vec<String> = (3..5)
        .map(|i| format!(r#"{{"role":"assistant","content":"{MARK} a{i}"}}"#))
        .collect();
    let (code, out, err) = run_full(
        Path::new("/"),
        &env,
        &["append", s(&dir), "a", "-"],
        &lines(&more),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    a.extend(more);
    let (code, out, err) = run_env(&env, &["cat", s(&dir), "a"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, lines(&a));
    assert_eq!(ok(&["cat", s(&dir), "a", "--key-file", s(&key)]), lines(&a));
    // --key-file wins over the variable.
    let bogus = tmp.path().join("missing.key");
    assert_eq!(
        run_env(
            &[(ENV, s(&bogus))],
            &["cat", s(&dir), "a", "--key-file", s(&key)]
        )
        .1,
        lines(&a)
    );
    // Metadata and idempotency keys are sealed too; export prints the plaintext.
    let meta = format!(r#"{{"title":"{MARK} meta"}}"#);
    ok(&["meta", s(&dir), "b", &meta, "--key-file", s(&key)]);
    assert_eq!(
        ok(&["meta", s(&dir), "b", "--key-file", s(&key)]),
        format!("{meta}\n")
    );
    let keyed = format!(r#"{{"role":"user","content":"{MARK} keyed"}}"#);
    let idem = format!("{MARK}-idempotency");
    ok(&[
        "append",
        s(&dir),
        "c",
        &keyed,
        "--key",
        &idem,
        "--key-file",
        s(&key),
    ]);
    let out = ok(&[
        "export",
        s(&dir),
        "-",
        "--session",
        "c",
        "--key-file",
        s(&key),
    ]);
    assert!(out.contains(&keyed), "{out}");
    assert!(ok(&["verify", s(&dir), "--key-file", s(&key)]).contains("clean"));
    let files = snapshot(&dir);
    assert!(files.keys().any(|p| p.ends_with("KEYS")), "{files:?}");
    assert!(
        files
            .keys()
            .any(|p| p.extension().is_some_and(|e| e == "seg"))
    );
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, MARK.as_bytes()),
            "plaintext in {}",
            path.display()
        );
        assert!(
            !contains(bytes, b"hunter2"),
            "plaintext in {}",
            path.display()
        );
    }
}

#[test]
fn a_missing_key_fails_naming_the_store_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let (dir, _) = encrypted_store(&tmp, &key);
    let before = snapshot(&dir);
    let d = s(&dir);
    let msg = r#"{"role":"user","content":"more"}"#;
    for args in [
        &["cat", d, "a"][..],
        &["tail", d, "a"],
        &["sessions", d],
        &["stats", d],
        &["verify", d],
        &["export", d, "-"],
        &["append", d, "a", msg],
        &["pop", d, "a"],
        &["clear", d, "a"],
        &["delete", d, "a"],
        &["compact", d, "--seal"],
        &["repair", d],
        &["rekey", d, "--new-key-file", s(&key)],
    ] {
        let err = fails(&[], args);
        assert!(err.contains(d), "{args:?}: {err}");
        assert!(
            err.contains("encrypted") || err.contains("current master key"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("--key-file") && err.contains(ENV),
            "{args:?}: {err}"
        );
        assert!(err.contains("nothing was changed"), "{args:?}: {err}");
        assert_eq!(snapshot(&dir), before, "{args:?} changed the store");
    }
    // An empty variable is no key either.
    let err = fails(&[(ENV, "")], &["cat", d, "a"]);
    assert!(err.contains("is encrypted"), "{err}");
    // verify --json names the kind.
    let (code, out, _) = run(&["verify", d, "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "key_required");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_wrong_key_fails_plainly_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let wrong = keygen(&tmp, "wrong.hex");
    let (dir, _) = encrypted_store(&tmp, &key);
    let before = snapshot(&dir);
    let d = s(&dir);
    for (env, args) in [
        (&[][..], &["cat", d, "a", "--key-file", s(&wrong)][..]),
        (
            &[],
            &["append", d, "a", r#"{"a":1}"#, "--key-file", s(&wrong)],
        ),
        (&[], &["delete", d, "a", "--key-file", s(&wrong)]),
        (&[(ENV, s(&wrong))], &["stats", d]),
        (&[(ENV, s(&wrong))], &["compact", d]),
    ] {
        let err = fails(env, args);
        assert!(err.contains("wrong key"), "{args:?}: {err}");
        assert!(
            err.contains(d) && err.contains(s(&wrong)),
            "{args:?}: {err}"
        );
        assert_eq!(snapshot(&dir), before, "{args:?} changed the store");
    }
    let err = fails(&[(ENV, s(&wrong))], &["cat", d, "a"]);
    assert!(
        err.contains(&format!("(${ENV})")),
        "names where the key came from: {err}"
    );
    let (code, out, _) = run(&["verify", d, "--json", "--key-file", s(&wrong)]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "wrong_key");
}

#[test]
fn a_malformed_or_missing_key_file_is_named_without_showing_its_bytes() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let (dir, _) = encrypted_store(&tmp, &key);
    let before = snapshot(&dir);
    let d = s(&dir);
    let secretish = "correct-horse-battery-staple-SECRET";
    let almost_hex = format!("{}zz\n", "ab".repeat(31));
    for (name, contents) in [
        ("short.key", secretish.as_bytes().to_vec()),
        ("almost.key", almost_hex.clone().into_bytes()),
        ("empty.key", Vec::new()),
        ("long.key", vec![b'a'; 4096]),
    ] {
        let path = tmp.path().join(name);
        fs::write(&path, &contents).unwrap();
        for (env, args) in [
            (&[][..], &["cat", d, "a", "--key-file", s(&path)][..]),
            (&[(ENV, s(&path))], &["cat", d, "a"]),
            (
                &[],
                &[
                    "rekey",
                    d,
                    "--key-file",
                    s(&key),
                    "--new-key-file",
                    s(&path),
                ],
            ),
        ] {
            let err = fails(env, args);
            assert!(err.contains(s(&path)), "{name}: {err}");
            assert!(err.contains("does not hold a master key"), "{name}: {err}");
            assert!(
                !err.contains(secretish) && !err.contains("abababab"),
                "{name}: {err}"
            );
        }
        // A new store is not created with it.
        let fresh = tmp.path().join(format!("fresh-{name}"));
        fails(
            &[],
            &[
                "append",
                s(&fresh),
                "a",
                r#"{"a":1}"#,
                "--key-file",
                s(&path),
            ],
        );
        assert!(!fresh.exists());
    }
    // A key file that is not there.
    let missing = tmp.path().join("no-such.key");
    let err = fails(&[], &["cat", d, "a", "--key-file", s(&missing)]);
    assert!(
        err.contains(s(&missing)) && err.contains("no such file"),
        "{err}"
    );
    // The key itself where its file's path belongs: refused, and not printed back.
    let hex = fs::read_to_string(&key).unwrap();
    let hex = hex.trim_end();
    for (env, args) in [
        (&[][..], &["cat", d, "a", "--key-file", hex][..]),
        (&[(ENV, hex)], &["cat", d, "a"]),
    ] {
        let err = fails(env, args);
        assert!(!err.contains(hex) && !err.contains(&hex[..16]), "{err}");
        assert!(err.contains("never the key itself"), "{err}");
    }
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_key_for_a_store_without_encryption_is_refused_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let dir = tmp.path().join("plain");
    ok(&["append", s(&dir), "a", r#"{"a":1}"#]);
    let before = snapshot(&dir);
    let d = s(&dir);
    let err = fails(&[], &["cat", d, "a", "--key-file", s(&key)]);
    assert!(err.contains("is not encrypted") && err.contains(d), "{err}");
    assert!(err.contains("leave out --key-file"), "{err}");
    let err = fails(&[(ENV, s(&key))], &["append", d, "a", r#"{"a":2}"#]);
    assert!(err.contains(&format!("unset {ENV}")), "{err}");
    let new = keygen(&tmp, "new.hex");
    let err = fails(
        &[],
        &["rekey", d, "--key-file", s(&key), "--new-key-file", s(&new)],
    );
    assert!(err.contains("is not encrypted"), "{err}");
    assert_eq!(snapshot(&dir), before);
    assert_eq!(ok(&["cat", d, "a"]), "{\"a\":1}\n");
}

#[test]
fn rekey_rewraps_every_data_key_without_rewriting_a_segment() {
    let tmp = TempDir::new().unwrap();
    let old = keygen(&tmp, "old.hex");
    let new = keygen(&tmp, "new.hex");
    let (dir, a) = encrypted_store(&tmp, &old);
    let d = s(&dir);
    let b = ok(&["cat", d, "b", "--key-file", s(&old)]);
    let segments = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(dir)
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
            .collect()
    };
    let before = segments(&dir);
    // The same key twice is refused.
    let err = fails(
        &[],
        &["rekey", d, "--key-file", s(&old), "--new-key-file", s(&old)],
    );
    assert!(err.contains("same master key"), "{err}");
    // The variable stands for --key-file.
    let (code, out, err) = run_env(&[(ENV, s(&old))], &["rekey", d, "--new-key-file", s(&new)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 data keys rewrapped") && out.contains(s(&new)),
        "{out}"
    );
    assert_eq!(segments(&dir), before, "no segment rewritten");
    assert!(!dir.join("KEYS.tmp").exists());
    // Only the new key opens it, and every message is there.
    let err = fails(&[], &["cat", d, "a", "--key-file", s(&old)]);
    assert!(err.contains("wrong key"), "{err}");
    assert_eq!(ok(&["cat", d, "a", "--key-file", s(&new)]), lines(&a));
    assert_eq!(ok(&["cat", d, "b", "--key-file", s(&new)]), b);
    ok(&[
        "append",
        d,
        "a",
        r#"{"after":"rekey"}"#,
        "--key-file",
        s(&new),
    ]);
    let out = ok(&["verify", d, "--key-file", s(&new)]);
    assert!(out.contains("6 messages"), "{out}");
}

#[test]
fn stats_and_verify_say_whether_a_store_is_encrypted_and_whether_it_is_private() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    let (dir, _) = encrypted_store(&tmp, &key);
    let plain = tmp.path().join("plain");
    ok(&["append", s(&plain), "a", r#"{"a":1}"#]);
    let k = s(&key);
    let out = ok(&["stats", s(&dir), "--key-file", k]);
    assert!(out.contains("\nencrypted   yes"), "{out}");
    assert!(ok(&["stats", s(&plain)]).contains("\nencrypted   no\n"));
    let out = ok(&["verify", s(&dir), "--key-file", k]);
    assert!(out.contains("every one read back (encrypted"), "{out}");
    assert!(ok(&["verify", s(&plain)]).contains("(not encrypted)"));
    for (d, key, encrypted) in [(&dir, Some(k), true), (&plain, None, false)] {
        for cmd in ["stats", "verify"] {
            let mut args = vec![cmd, s(d), "--json"];
            args.extend(key.iter().flat_map(|k| ["--key-file", *k]));
            let v: Value = serde_json::from_str(&ok(&args)).unwrap();
            assert_eq!(v["encrypted"], encrypted, "{cmd} {v}");
            assert_eq!(v["permissions"]["private"], true, "{cmd} {v}");
            assert_eq!(
                v["permissions"]["exposed"],
                serde_json::json!([]),
                "{cmd} {v}"
            );
        }
    }
    // A store others may read: said once on stderr, and in the JSON.
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(plain.join("LOCK"), fs::Permissions::from_mode(0o644)).unwrap();
    for cmd in ["stats", "verify"] {
        let (code, out, err) = run(&[cmd, s(&plain), "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(err.matches("readable by other users").count(), 1, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let p = &v["permissions"];
        assert_eq!(p["private"], false, "{v}");
        assert_eq!(p["file_mode"], "0600");
        let exposed = p["exposed"].as_array().unwrap();
        assert_eq!(exposed.len(), 2, "{v}");
        assert!(exposed.iter().any(|e| e["mode"] == "0644"
            && e["is_dir"] == false
            && e["path"].as_str().unwrap().ends_with("LOCK")));
        assert!(
            exposed
                .iter()
                .any(|e| e["mode"] == "0755" && e["is_dir"] == true)
        );
        assert!(
            !out.contains("readable by other users"),
            "the note is on stderr only: {out}"
        );
    }
}

#[test]
fn a_creation_cut_short_after_its_key_file_can_be_finished() {
    let tmp = TempDir::new().unwrap();
    let key = keygen(&tmp, "k.hex");
    // What a creation killed before its first segment's header completed leaves: the lock
    // files, an empty segment, and a half-written key file under its temporary name.
    let dir = tmp.path().join("store");
    fs::create_dir(&dir).unwrap();
    for name in ["LOCK", "WRITERS", "00000000000000000001.seg"] {
        fs::write(dir.join(name), "").unwrap();
    }
    fs::write(dir.join("KEYS.tmp"), "CVLGK").unwrap();
    let m = r#"{"role":"user","content":"first"}"#;
    ok(&["append", s(&dir), "a", m, "--key-file", s(&key)]);
    assert_eq!(
        ok(&["cat", s(&dir), "a", "--key-file", s(&key)]),
        format!("{m}\n")
    );
    assert!(dir.join("KEYS").exists());
    // A store with its KEYS but no segment yet: the next writer finishes it, with the key.
    let dir = tmp.path().join("store2");
    ok(&["append", s(&dir), "a", m, "--key-file", s(&key)]);
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "seg" || e == "hint") {
            fs::remove_file(p).unwrap();
        }
    }
    let err = fails(&[], &["append", s(&dir), "a", m]);
    assert!(
        err.contains("is encrypted"),
        "never finished without its key: {err}"
    );
    ok(&["append", s(&dir), "b", m, "--key-file", s(&key)]);
    assert_eq!(
        ok(&["cat", s(&dir), "b", "--key-file", s(&key)]),
        format!("{m}\n")
    );
    // A directory holding anything else is left alone.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("KEYS.bak"), "x").unwrap();
    let err = fails(&[], &["append", s(&other), "a", m, "--key-file", s(&key)]);
    assert!(err.contains("not a convlog store"), "{err}");
}

/// A shell command line's words: blanks separate them, single quotes quote, and an unquoted
/// `#` after a blank starts a comment (all the README's commands need).
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

/// The README's encryption example (the `sh` block after "Encryption at rest" in the CLI
/// section) runs as written, in a fresh directory, in order.
#[test]
fn the_readme_encryption_example_runs_as_written() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## The `convlog` CLI").unwrap()..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let example = &section[section
        .find("Encryption at rest")
        .expect("an encryption example")..];
    let block = &example[example.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let tmp = TempDir::new().unwrap();
    let mut ran = Vec::new();
    for line in block.lines() {
        let words = shell_words(line);
        let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut env = Vec::new();
        while let Some((k, v)) = words.first().and_then(|w| w.split_once('=')) {
            env.push((k, v));
            words.remove(0);
        }
        let ["convlog", args @ ..] = &words[..] else {
            panic!("unexpected README command {line:?}");
        };
        let (code, out, err) = run_full(tmp.path(), &env, args, "");
        assert_eq!(code, 0, "README: {line}\n{out}{err}");
        ran.push(args[0].to_owned());
    }
    assert_eq!(
        ran,
        [
            "keygen", "append", "cat", "stats", "keygen", "rekey", "verify"
        ]
    );
    // What it wrote is an encrypted store, and no key file was put inside it.
    let stores: Vec<PathBuf> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("KEYS").is_file())
        .collect();
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert!(
        !snapshot(&stores[0])
            .keys()
            .any(|p| p.extension().is_some_and(|e| e == "key"))
    );
}
