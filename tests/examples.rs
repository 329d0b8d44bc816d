//! The examples run as tests, so they cannot rot: `cargo test` builds them first.

use std::path::PathBuf;
use std::process::Command;

/// Runs example `name` with `args`, asserts it succeeded, and returns its stdout.
fn run_example(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(example(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `target/<profile>/examples/<name>`, beside this test binary's `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

#[test]
fn quickstart_writes_reopens_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let stdout = run_example("quickstart", &[store.as_os_str()]);
    for line in [
        "travel-agent: 5 messages appended durably, last LSN 5",
        "popped the last message of code-review: Some(\"Here is a plan for a Rust PR.\")",
        "11 records, clean",
        "session code-review (4 messages)",
        "#3 [assistant] <1 tool call(s)>",
        "tail(2) of travel-agent: interaction ids [4, 5]",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // It made a real store.
    let reopened = convlog::Store::builder()
        .read_only(true)
        .open(&store)
        .unwrap();
    assert_eq!(reopened.interaction_count("travel-agent"), 5);
    assert_eq!(reopened.interaction_count("code-review"), 4);
}

#[test]
fn reopen_probe_reports_a_time_per_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = convlog::Store::open(dir.path()).unwrap();
    store
        .append_raw("s", br#"{"role":"user","content":"hi"}"#)
        .unwrap();
    drop(store);
    let stdout = run_example("reopen_probe", &[dir.path().as_os_str(), "3".as_ref()]);
    assert!(stdout.contains("per open"));
}
