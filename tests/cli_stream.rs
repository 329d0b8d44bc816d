//! The `convlog` binary reading stdin as a stream (`append DIR SESSION -`: one receipt per
//! line, as the line arrives) and resuming imports (`import DIR FILE` run again appends only
//! what is missing).

#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use convlog::Store;
use tempfile::TempDir;

/// How long a test waits for a receipt or an exit before it fails (instead of hanging).
const PATIENCE: Duration = Duration::from_secs(20);

/// Held while this process forks a child (see `tests/cli.rs`: a child holds copies of our
/// open files until it execs).
static FORK: Mutex<()> = Mutex::new(());

fn fork_guard() -> MutexGuard<'static, ()> {
    FORK.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convlog"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running `convlog` whose stdin we write line by line and whose stdout lines arrive on a
/// channel (read by a thread, so a missing line times out instead of blocking the test).
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = {
            let _guard = fork_guard();
            command(args).spawn().expect("run convlog")
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            stdin,
            lines,
        }
    }

    /// Writes one line (and flushes it down the pipe).
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next stdout line, waiting at most [`PATIENCE`].
    fn receipt(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("a receipt line within the timeout (the append did not stream)")
    }

    /// Closes stdin and waits for the exit: (exit code, rest of stdout, stderr).
    fn finish(mut self) -> (i32, Vec<String>, String) {
        drop(self.stdin.take());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "convlog did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        let rest = self.lines.iter().collect();
        (status.code().unwrap_or(-1), rest, err)
    }
}

/// Runs `convlog args...` to its end with `stdin`: (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = {
        let _guard = fork_guard();
        command(args).spawn().expect("run convlog")
    };
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // The child may stop reading early: ignore a broken pipe.
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

/// The raw messages of `session` in the store in `dir`, read with the library.
fn messages(dir: &Path, session: &str) -> Vec<String> {
    let store = Store::builder().read_only(true).open(dir).unwrap();
    store
        .messages(session)
        .raw()
        .map(|e| String::from_utf8(e.unwrap().message).unwrap())
        .collect()
}

fn receipt(session: &str, id: u64, lsn: u64) -> String {
    format!("appended to {session:?}: interaction {id}, LSN {lsn}")
}

#[test]
fn append_from_stdin_prints_each_receipt_before_the_next_line_arrives() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Running::start(&["append", s(&dir), "s", "-"]);
    let sent = [
        r#"{"role":"user","content":"one"}"#,
        r#"{"role":"assistant", "content": "two"}"#,
        r#"{"n":3}"#,
    ];
    for (i, line) in sent.iter().enumerate() {
        child.send(line);
        // The next line is not written until this one's receipt is back: a command that
        // waited for the end of stdin would time out here.
        let n = i as u64 + 1;
        assert_eq!(child.receipt(), receipt("s", n, n));
    }
    child.send("");
    let (code, rest, err) = child.finish();
    assert_eq!(code, 0, "{err}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(messages(&dir, "s"), sent);

    // No message argument reads stdin the same way, and goes on from the session's end.
    let mut child = Running::start(&["append", s(&dir), "s"]);
    child.send(r#"{"n":4}"#);
    assert_eq!(child.receipt(), receipt("s", 4, 4));
    let (code, _, err) = child.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(messages(&dir, "s").len(), 4);
}

#[test]
fn a_killed_streaming_append_keeps_every_acknowledged_message() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Running::start(&["append", s(&dir), "agent", "-"]);
    let sent: Vec<String> = (1..=25)
        .map(|i| format!(r#"{{"role":"user","content":"message {i}"}}"#))
        .collect();
    for (i, line) in sent.iter().enumerate() {
        child.send(line);
        let n = i as u64 + 1;
        assert_eq!(child.receipt(), receipt("agent", n, n));
    }
    // SIGKILL: no clean shutdown, no final sync, stdin still open.
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    assert_eq!(messages(&dir, "agent"), sent);

    // The store takes new appends after the kill, going on from the last acknowledged one.
    let (code, out, err) = run(&["append", s(&dir), "agent", "-"], b"{\"after\":true}\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\n", receipt("agent", 26, 26)));
}

#[test]
fn an_invalid_line_stops_a_streaming_append_and_keeps_the_lines_before_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Running::start(&["append", s(&dir), "s", "-"]);
    child.send(r#"{"ok":1}"#);
    assert_eq!(child.receipt(), receipt("s", 1, 1));
    child.send("");
    child.send(r#"{"ok":2}"#);
    assert_eq!(child.receipt(), receipt("s", 2, 2));
    child.send(r#"{"bad" 3}"#);
    child.send(r#"{"never":4}"#);
    let (code, rest, err) = child.finish();
    assert_eq!(code, 1, "{err}");
    assert!(
        rest.is_empty(),
        "no receipt after the invalid line: {rest:?}"
    );
    assert!(
        err.starts_with("convlog: stdin line 4: invalid JSON")
            && err.contains("the 2 messages before it stay appended"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(messages(&dir, "s"), [r#"{"ok":1}"#, r#"{"ok":2}"#]);

    // A first line that is invalid appends nothing, and creates no store.
    let fresh = tmp.path().join("fresh");
    let (code, out, err) = run(&["append", s(&fresh), "s"], b"[1,2]\n{\"a\":1}\n");
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("stdin line 1: a message must be a JSON object, not an array")
            && err.contains("nothing appended"),
        "{err}"
    );
    assert!(
        !fresh.exists(),
        "no store for input without a valid first line"
    );
}

#[test]
fn an_overlong_line_stops_a_streaming_append_without_reading_all_of_it() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    // Just over what one message line may hold, and no line ending: the command must stop
    // at the limit, not wait for the rest.
    let mut input = b"{\"ok\":1}\n".to_vec();
    input.extend_from_slice(b"{\"big\":\"");
    input.resize(
        input.len() + convlog::format::DEFAULT_MAX_RECORD_LEN as usize + 70_000,
        b'x',
    );
    let (code, out, err) = run(&["append", s(&dir), "s", "-"], &input);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, format!("{}\n", receipt("s", 1, 1)));
    assert!(
        err.contains("stdin line 2: longer than")
            && err.contains("the 1 message before it stay appended"),
        "{err}"
    );
    assert_eq!(messages(&dir, "s"), [r#"{"ok":1}"#]);
}

#[test]
fn batch_append_is_all_or_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let (code, out, err) = run(
        &["append", s(&dir), "s", "-", "--batch"],
        b"{\"a\":1}\n{\"b\":2}\n42\n{\"c\":3}\n",
    );
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("stdin line 3: a message must be a JSON object")
            && err.contains("nothing appended"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing appended, not even a store created");

    let (code, out, err) = run(
        &["append", s(&dir), "s", "--batch"],
        b"{\"a\":1}\n\n{\"b\":2}\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "appended 2 messages to \"s\": interactions 1..=2, LSNs 1..=2\n"
    );
    assert_eq!(messages(&dir, "s"), [r#"{"a":1}"#, r#"{"b":2}"#]);
}

#[test]
fn a_key_makes_all_of_stdin_one_batch_and_a_retry_a_no_op() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("store");
    let input = b"{\"a\":1}\n{\"b\":2}\n";
    let args = ["append", s(&dir), "s", "-", "--key", "turn-1"];
    let (code, first, err) = run(&args, input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        first,
        "appended 2 messages to \"s\": interactions 1..=2, LSNs 1..=2\n"
    );
    let (code, again, err) = run(&args, input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, first, "a retry prints the original receipts");
    assert_eq!(messages(&dir, "s").len(), 2);

    // An invalid line with a key appends nothing: --key implies --batch.
    let (code, _, err) = run(
        &["append", s(&dir), "s", "--key", "turn-2"],
        b"{\"c\":3}\nnope\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("stdin line 2") && err.contains("nothing appended"),
        "{err}"
    );
    assert_eq!(messages(&dir, "s").len(), 2);
}

/// A JSONL import file of `lines` lines: runs of single messages for a few sessions,
/// conversations with a session, and conversations without one (generated ids).
fn import_lines(lines: usize) -> Vec<String> {
    (1..=lines)
        .map(|n| match n % 7 {
            0 => format!(
                r#"{{"title":"chat {n}","messages":[{{"role":"user","content":"q{n}"}},{{"role":"assistant","content":"a{n}"}}]}}"#
            ),
            3 => format!(
                r#"{{"session":"conv-{}","messages":[{{"role":"user","content":"hi {n}"}}]}}"#,
                n % 5
            ),
            _ => format!(
                r#"{{"session":"s{}","message":{{"role":"user","content":"line {n}"}}}}"#,
                (n / 40) % 3
            ),
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// Messages in `lines`.
fn message_count(lines: &[String]) -> u64 {
    lines
        .iter()
        .map(|l| {
            if l.contains("\"messages\"") {
                l.matches("\"role\"").count()
            } else {
                1
            }
        })
        .sum::<usize>() as u64
}

/// Everything in the store, as `convlog export` prints it (sessions by id, messages in order).
fn exported(dir: &Path) -> String {
    let (code, out, err) = run(&["export", s(dir)], b"");
    assert_eq!(code, 0, "{err}");
    out
}

fn import(dir: &Path, file: &Path) -> String {
    let (code, out, err) = run(&["import", s(dir), s(file)], b"");
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn an_import_run_again_appends_nothing_and_says_it_skipped_everything() {
    let tmp = TempDir::new().unwrap();
    let lines = import_lines(2_500);
    let total = message_count(&lines);
    let file = write_lines(&tmp.path().join("chats.jsonl"), &lines);
    let dir = tmp.path().join("store");

    let first = import(&dir, &file);
    assert!(
        first.starts_with(&format!("imported {} messages into ", thousands(total))),
        "{first}"
    );
    assert!(!first.contains("skipped"), "{first}");
    let before = exported(&dir);

    let again = import(&dir, &file);
    assert!(
        again.starts_with("imported 0 messages into 0 sessions"),
        "{again}"
    );
    assert!(
        again.contains(&format!(
            "skipped {} messages already imported",
            thousands(total)
        )),
        "{again}"
    );
    assert_eq!(exported(&dir), before, "a rerun changes nothing");

    // Generated session ids come from the lines, not the run: the same in another store.
    let other = tmp.path().join("other");
    import(&other, &file);
    assert_eq!(exported(&other), before);
    let generated: Vec<String> = Store::builder()
        .read_only(true)
        .open(&dir)
        .unwrap()
        .sessions()
        .into_iter()
        .map(|i| i.id)
        .filter(|id| id.starts_with("import-"))
        .collect();
    assert_eq!(generated.len(), 2_500 / 7);
    let line_7 = format!("import-{:08x}-7", crc32fast::hash(lines[6].as_bytes()));
    assert!(generated.contains(&line_7), "{generated:?}");
}

#[test]
fn an_import_of_a_prefix_then_of_the_whole_file_appends_only_the_rest() {
    let tmp = TempDir::new().unwrap();
    let lines = import_lines(2_500);
    let full = write_lines(&tmp.path().join("full.jsonl"), &lines);
    let reference = tmp.path().join("reference");
    import(&reference, &full);

    // A prefix of whole 1,000-line chunks (what a kill or an earlier, shorter file leaves
    // behind, batch for batch).
    let prefix = &lines[..2_000];
    let part = write_lines(&tmp.path().join("part.jsonl"), prefix);
    let dir = tmp.path().join("store");
    import(&dir, &part);
    let rest = import(&dir, &full);
    let appended = message_count(&lines[2_000..]);
    assert!(
        rest.starts_with(&format!("imported {} into ", plural(appended))),
        "{rest}"
    );
    assert!(
        rest.contains(&format!(
            "skipped {} messages already imported",
            thousands(message_count(prefix))
        )),
        "{rest}"
    );
    assert_eq!(
        exported(&dir),
        exported(&reference),
        "no duplicates, nothing missing"
    );
}

#[test]
fn an_import_alternating_sessions_line_by_line_makes_one_batch_per_session_and_chunk() {
    let tmp = TempDir::new().unwrap();
    let lines: Vec<String> = (1..=3_000)
        .map(|n| format!(r#"{{"session":"s{}","message":{{"n":{n}}}}}"#, n % 2))
        .collect();
    let file = write_lines(&tmp.path().join("alternating.jsonl"), &lines);
    let dir = tmp.path().join("store");
    import(&dir, &file);
    let keys = || {
        let (code, out, err) = run(&["stats", s(&dir), "--json"], b"");
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["keys"].as_u64(), v["messages"].as_u64())
    };
    // 2 sessions x 3 chunks of 1,000 lines: one keyed batch each, not one per line.
    assert_eq!(keys(), (Some(6), Some(3_000)));
    let again = import(&dir, &file);
    assert!(
        again.contains("skipped 3,000 messages already imported"),
        "{again}"
    );
    assert_eq!(keys(), (Some(6), Some(3_000)));
    let evens: Vec<String> = (1..=1_500)
        .map(|i| format!(r#"{{"n":{}}}"#, 2 * i))
        .collect();
    assert_eq!(
        messages(&dir, "s0"),
        evens,
        "each session's messages in file order"
    );
}

#[test]
fn an_import_killed_at_any_moment_completes_on_a_rerun_without_duplicates() {
    let tmp = TempDir::new().unwrap();
    let lines = import_lines(30_000);
    let file = write_lines(&tmp.path().join("big.jsonl"), &lines);
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    import(&reference, &file);
    let took = started.elapsed();
    let want = exported(&reference);

    // Kills spread over the time one import takes: some land in the checking pass, some
    // while batches go in, maybe some after the end. None may matter.
    for round in 0..6u32 {
        let wait = took * (2 * round + 1) / 12;
        let dir = tmp.path().join(format!("killed-{round}"));
        let mut child = {
            let _guard = fork_guard();
            command(&["import", s(&dir), s(&file)]).spawn().unwrap()
        };
        std::thread::sleep(wait);
        // Whenever the kill lands (checking, mid-batch, or after the end), a rerun gives the
        // same store as one uninterrupted import.
        let _ = child.kill();
        child.wait().unwrap();
        let out = import(&dir, &file);
        assert!(out.starts_with("imported "), "round {round}: {out}");
        assert_eq!(exported(&dir), want, "round {round}");
    }
}

fn thousands(n: u64) -> String {
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

fn plural(n: u64) -> String {
    if n == 1 {
        "1 message".into()
    } else {
        format!("{} messages", thousands(n))
    }
}
