//! The `convlog` binary under other umasks and as another user: what it creates in a store
//! and outside it (`export`) gets exactly the modes asked for (owner-only by default), a
//! store others may read is noted once by `verify` and `stats`, and a planted symbolic link
//! is never written through.

#![cfg(feature = "cli")]

mod store_files;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use store_files::{records_end, segments};

const BIN: &str = env!("CARGO_BIN_EXE_convlog");
const MESSAGE: &str = r#"{"role":"user","content":"my password is hunter2"}"#;

/// Runs `convlog args...` under `umask` (through `sh`, as there is no libc to set it here),
/// optionally as another user (`setpriv ...` words first); returns (code, stdout, stderr).
fn run_as(prefix: &[&str], umask: &str, args: &[&str]) -> (i32, String, String) {
    let script = format!("umask {umask}; exec \"$0\" \"$@\"");
    let mut words: Vec<&str> = prefix.to_vec();
    words.extend(["sh", "-c", &script, BIN]);
    words.extend(args);
    let out = Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(umask: &str, args: &[&str]) -> (i32, String, String) {
    run_as(&[], umask, args)
}

/// Runs and asserts success.
fn ok(umask: &str, args: &[impl AsRef<str>]) -> (String, String) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let (code, out, err) = run(umask, &args);
    assert_eq!(code, 0, "convlog {args:?}: {out}{err}");
    (out, err)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `dir`, and every entry under it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if fs::symlink_metadata(&all[i]).unwrap().is_dir() {
            all.extend(fs::read_dir(&all[i]).unwrap().map(|e| e.unwrap().path()));
        }
        i += 1;
    }
    all
}

/// Asserts every directory of the tree at `dir` has mode `d` and every file `f`; returns the
/// names found.
fn assert_modes(dir: &Path, d: u32, f: u32) -> Vec<String> {
    walk(dir)
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).unwrap();
            let want = if meta.is_dir() { d } else { f };
            assert_eq!(mode(&path), want, "{:04o}: {}", mode(&path), path.display());
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

/// Writes a store in `dir` with every command that creates or writes one, under `umask`, with
/// `mode` args (`--mode 0640`, or none): two segments and more, hints, lock files, a
/// quarantined torn tail (repair), imported sessions.
fn write_store(dir: &Path, umask: &str, mode: &[&str]) {
    let d = s(dir);
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(mode).map(|a| (*a).to_owned()).collect()
    };
    ok(
        umask,
        &with(&["append", d, "s", MESSAGE, "--segment-size", "4K"]),
    );
    let lines: String = (0..40)
        .map(|i| format!("{{\"session\":\"t{i}\",\"message\":{MESSAGE}}}\n"))
        .collect();
    let jsonl = dir.with_extension("jsonl");
    fs::write(&jsonl, lines).unwrap();
    ok(
        umask,
        &with(&["import", d, s(&jsonl), "--segment-size", "4K"]),
    );
    ok(umask, &with(&["pop", d, "t1"]));
    ok(umask, &with(&["clear", d, "t2"]));
    ok(umask, &with(&["fork", d, "t3", "t3-copy"]));
    ok(umask, &with(&["meta", d, "t4", r#"{"user":"ann"}"#]));
    // A torn write at the end of the last segment: repair copies it to quarantine/.
    for hint in fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if hint.extension().is_some_and(|e| e == "hint") {
            fs::remove_file(hint).unwrap();
        }
    }
    let seg = segments(dir).pop().unwrap();
    let end = records_end(&seg) as usize;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[end..end + 4].copy_from_slice(b"torn");
    fs::write(&seg, &bytes).unwrap();
    ok(umask, &with(&["repair", d]));
    ok(umask, &with(&["append", d, "s", MESSAGE]));
}

fn assert_every_kind(names: &[String]) {
    for want in [
        ".seg",
        ".hint",
        "LOCK",
        "WRITERS",
        "SYNC",
        "quarantine",
        ".torn",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} in {names:?}"
        );
    }
}

#[test]
fn every_file_is_owner_only_under_umask_000_and_077() {
    for umask in ["000", "077", "022"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("store");
        write_store(&dir, umask, &[]);
        assert_every_kind(&assert_modes(&dir, 0o700, 0o600));
    }
}

#[test]
fn mode_0640_widens_exactly_whatever_the_umask() {
    for umask in ["077", "000"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        write_store(&dir, umask, &["--mode", "0640"]);
        assert_every_kind(&assert_modes(&dir, 0o750, 0o640));
        // verify and stats told the modes chosen have nothing to say; without, they note it.
        for cmd in ["verify", "stats"] {
            let (_, err) = ok(umask, &[cmd, s(&dir), "--mode", "640"]);
            assert!(!err.contains("note"), "{cmd}: {err}");
            let (_, err) = ok(umask, &[cmd, s(&dir)]);
            assert_eq!(err.matches("readable by other users").count(), 1, "{err}");
        }
    }
}

#[test]
fn demo_creates_its_store_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    ok(
        "000",
        &[
            "demo",
            "--dir",
            s(&dir),
            "--sessions",
            "3",
            "--messages",
            "30",
        ],
    );
    let names = assert_modes(&dir, 0o700, 0o600);
    assert!(names.iter().any(|n| n == ".convlog-demo"), "{names:?}");
    let wide = tmp.path().join("wide");
    let args = [
        "demo",
        "--dir",
        s(&wide),
        "--sessions",
        "3",
        "--messages",
        "30",
    ];
    ok("077", &[&args[..], &["--mode", "0660"]].concat());
    assert_modes(&wide, 0o770, 0o660);
}

#[test]
fn export_files_are_0600_unless_mode_says_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    ok("000", &["append", s(&dir), "s", MESSAGE]);
    let out = tmp.path().join("out.jsonl");
    ok("000", &["export", s(&dir), s(&out)]);
    assert_eq!(mode(&out), 0o600);
    assert!(fs::read_to_string(&out).unwrap().contains("hunter2"));
    // An existing file others may read gets the mode before the conversations go in.
    fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
    ok("000", &["export", s(&dir), "--session", "s", s(&out)]);
    assert_eq!(mode(&out), 0o600);
    // --mode widens it, exactly, past the umask.
    let shared = tmp.path().join("shared.jsonl");
    ok("077", &["export", s(&dir), s(&shared), "--mode", "0640"]);
    assert_eq!(mode(&shared), 0o640);
    assert_eq!(fs::read(&shared).unwrap(), fs::read(&out).unwrap());
    // stdout is no file to chmod.
    let (stdout, _) = ok("000", &["export", s(&dir), "-"]);
    assert!(stdout.contains("hunter2"));
}

#[test]
fn bad_modes_are_usage_errors_that_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    for (bad, why) in [
        ("0755", "must lie within 0666"),
        ("0400", "include 0600"),
        ("rw", "not an octal file mode"),
        ("04600", "not an octal file mode"),
        ("", "not an octal file mode"),
    ] {
        for cmd in [&["append", s(&dir), "s", MESSAGE][..], &["verify", s(&dir)]] {
            let (code, out, err) = run("022", &[cmd, &["--mode", bad]].concat());
            assert_eq!(code, 2, "{bad}: {out}{err}");
            assert!(
                err.contains("invalid value") && err.contains("--mode"),
                "{err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
    assert!(!dir.exists(), "nothing was created");
}

#[test]
fn verify_and_stats_note_a_store_others_may_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    ok("022", &["append", s(&dir), "s", MESSAGE]);
    let files = walk(&dir).len() - 1;
    for path in walk(&dir) {
        let m = if path.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
    }
    let want = format!(
        "convlog: note: {files} files (mode 0644) and 1 directory (mode 0755) of the store {} \
         are readable by other users; convlog creates 0600 files and 0700 directories; \
         chmod -R go-rwx {} to fix\n",
        s(&dir),
        s(&dir)
    );
    for args in [
        &["verify", s(&dir)][..],
        &["verify", s(&dir), "--json"],
        &["stats", s(&dir)],
        &["stats", s(&dir), "--json"],
    ] {
        let (out, err) = ok("022", args);
        assert_eq!(err, want, "{args:?}");
        assert!(!out.contains("note"), "stdout stays clean: {out}");
    }
    // The store still works, and the writer leaves the modes it found.
    ok("022", &["append", s(&dir), "s", MESSAGE]);
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("LOCK")), 0o644);
    // Fixed as the note says: silent.
    let fixed = Command::new("chmod")
        .args(["-R", "go-rwx", s(&dir)])
        .status()
        .unwrap();
    assert!(fixed.success());
    let (_, err) = ok("022", &["verify", s(&dir)]);
    assert_eq!(err, "");
}

#[test]
fn a_symlinked_lock_or_segment_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("outside");
    fs::write(&target, "not yours").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tmp.path().join("store");
    ok("022", &["append", s(&dir), "s", MESSAGE]);
    for name in ["LOCK", "00000000000000000001.seg"] {
        let path = dir.join(name);
        let real = dir.join("real");
        fs::rename(&path, &real).unwrap();
        symlink(&target, &path).unwrap();
        let (code, out, err) = run("022", &["append", s(&dir), "s", MESSAGE]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains("symbolic link"), "{name}: {err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "not yours");
        assert_eq!(mode(&target), 0o644);
        fs::remove_file(&path).unwrap();
        fs::rename(&real, &path).unwrap();
    }
    let (out, _) = ok("022", &["cat", s(&dir), "s"]);
    assert_eq!(out.lines().count(), 1, "nothing was appended: {out}");
}

/// `setpriv` words that run a command as uid/gid `id`, if this test may (it runs as root,
/// and `setpriv` is there and can run the binary); else `None`, saying why.
fn as_user(id: u32) -> Option<Vec<String>> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        println!("skipped: not running as root (setpriv needs it)");
        return None;
    }
    let words = vec![
        "setpriv".to_owned(),
        format!("--reuid={id}"),
        format!("--regid={id}"),
        "--clear-groups".to_owned(),
    ];
    let probe = Command::new(&words[0])
        .args(&words[1..])
        .args([BIN, "--version"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: setpriv is missing or uid {id} cannot run {BIN}");
        return None;
    }
    Some(words)
}

#[test]
fn as_an_unprivileged_user_files_are_theirs_alone() {
    let Some(user) = as_user(65534) else { return };
    let Some(other) = as_user(65533) else { return };
    let user: Vec<&str> = user.iter().map(String::as_str).collect();
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["65534:65534", s(&home)])
        .status()
        .unwrap();
    assert!(chown.success());
    let dir = home.join("store");
    for umask in ["000", "077"] {
        let (code, out, err) = run_as(&user, umask, &["append", s(&dir), "s", MESSAGE]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let out = home.join("out.jsonl");
    let (code, _, err) = run_as(&user, "000", &["export", s(&dir), s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&out), 0o600);
    for path in walk(&dir) {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "{}",
            path.display()
        );
    }
    assert_every_kind_but_quarantine(&assert_modes(&dir, 0o700, 0o600));
    // Another unprivileged user can read nothing of it.
    let (code, _, err) = run_as(&other, "022", &["cat", s(&dir), "s"]);
    assert_ne!(code, 0, "another user read the store");
    assert!(err.contains("ermission denied"), "{err}");
    let before: Vec<PathBuf> = walk(&dir);
    let (code, _, err) = run_as(&other, "000", &["append", s(&dir), "s", MESSAGE]);
    assert_ne!(code, 0, "another user wrote the store");
    assert!(err.contains("ermission denied"), "{err}");
    assert_eq!(walk(&dir), before);
    let cat = Command::new(other[0])
        .args(&other[1..])
        .args(["cat", s(&out)])
        .output()
        .unwrap();
    assert!(!cat.status.success(), "another user read the export");
}

fn assert_every_kind_but_quarantine(names: &[String]) {
    for want in [".seg", ".hint", "LOCK", "WRITERS", "SYNC"] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} in {names:?}"
        );
    }
}
