//! Live tail (issue 11, part 4): `Store::subscribe` and `Store::subscribe_session` yield the
//! log's events in LSN order, from where they start, and block for the next ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use convlog::{LogEvent, Lsn, Since, Store};
use serde_json::json;

fn msg(n: u64) -> serde_json::Value {
    json!({"role": "user", "content": format!("message {n}")})
}

/// Drains what a subscription holds now (it waits 50 ms for more at the end).
fn drain(sub: &mut convlog::Subscription) -> Vec<LogEvent> {
    let mut out = Vec::new();
    while let Some(e) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
        out.push(e);
    }
    out
}

#[test]
fn a_subscription_from_the_start_replays_every_event_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .segment_size(8 << 10)
        .open(dir.path())
        .unwrap();
    let mut expected = Vec::new();
    for n in 0..300u64 {
        let session = format!("s{}", n % 3);
        let r = store.append(&session, &msg(n)).unwrap();
        expected.push((session, r.interaction_id, r.lsn));
    }
    assert!(store.segment_ids().len() > 3, "the log spans segments");
    store.pop("s0").unwrap();
    store.truncate("s1", 10).unwrap();
    store.clear("s2").unwrap();
    store.fork("s1", "f", Some(5)).unwrap();
    let mut sub = store.subscribe(Since::Lsn(Lsn(1)));
    let events = drain(&mut sub);
    assert_eq!(events.len(), 304, "{:?}", events.last());
    for (e, (session, id, lsn)) in events.iter().zip(&expected) {
        let LogEvent::Message { session: s, entry } = e else {
            panic!("{e:?}");
        };
        assert_eq!((s, entry.interaction_id, entry.lsn), (session, *id, *lsn));
        let value: serde_json::Value = serde_json::from_slice(&entry.message).unwrap();
        assert_eq!(value, msg(lsn.0 - 1));
    }
    let cuts: Vec<(&str, u64)> = events[300..303]
        .iter()
        .map(|e| match e {
            LogEvent::Cut { session, keep, .. } => (session.as_str(), *keep),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cuts, [("s0", 99), ("s1", 10), ("s2", 0)]);
    assert!(
        matches!(&events[303], LogEvent::Forked { session, from, at: 5, .. } if session == "f" && from == "s1"),
        "{:?}",
        events[303]
    );
    assert!(events.windows(2).all(|w| w[0].lsn() < w[1].lsn()));
    assert_eq!(sub.position(), Lsn(store.last_lsn().0 + 1));
    // From an LSN in the middle: the events from there on.
    let mut mid = store.subscribe(Since::Lsn(Lsn(151)));
    let rest = drain(&mut mid);
    assert_eq!(rest.len(), 304 - 150);
    assert_eq!(rest[0].lsn(), Lsn(151));
}

#[test]
fn a_subscription_from_now_blocks_until_an_append_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append("old", &msg(0)).unwrap();
    let mut sub = store.subscribe(Since::Now);
    assert!(
        sub.next_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none(),
        "nothing new yet"
    );
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for e in sub.by_ref().take(3) {
            got.push((e.unwrap(), Instant::now()));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(Instant::now());
        store.append("new", &msg(n)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = reader.join().unwrap();
    let ids: Vec<u64> = got
        .iter()
        .map(|(e, _)| match e {
            LogEvent::Message { session, entry } if session == "new" => entry.interaction_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    // Woken by the append, not by a poll (generous bound: shared machines are noisy).
    for ((_, at), sent) in got.iter().zip(&sent) {
        assert!(at.duration_since(*sent) < Duration::from_secs(2));
    }
}

#[test]
fn a_session_subscription_yields_its_backlog_then_its_new_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for n in 0..5 {
        store.append("a", &msg(n)).unwrap();
        store.append("b", &msg(100 + n)).unwrap();
    }
    let mut sub = store.subscribe_session("a", 3);
    store.append("b", &msg(200)).unwrap();
    store.append("a", &msg(5)).unwrap();
    store.pop("a").unwrap();
    let events = drain(&mut sub);
    let ids: Vec<String> = events
        .iter()
        .map(|e| match e {
            LogEvent::Message { session, entry } => format!("{session}:{}", entry.interaction_id),
            LogEvent::Cut { session, keep, .. } => format!("{session}:cut{keep}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["a:3", "a:4", "a:5", "a:6", "a:cut5"]);
}

#[test]
fn a_read_only_store_subscribes_to_what_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::builder()
        .segment_size(4 << 10)
        .open(dir.path())
        .unwrap();
    writer.append("s", &msg(0)).unwrap();
    let reader = Store::builder().read_only(true).open(dir.path()).unwrap();
    let mut sub = reader.subscribe(Since::Now);
    for n in 1..=200 {
        writer.append("s", &msg(n)).unwrap();
    }
    assert!(writer.segment_ids().len() > 2, "the writer rotated");
    let events = drain(&mut sub);
    assert_eq!(events.len(), 200);
    assert_eq!(reader.interaction_count("s"), 201);
}

/// Reads one line of a child's stdout, failing after `secs` seconds.
fn line_within(rx: &std::sync::mpsc::Receiver<String>, secs: u64) -> String {
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("a line in time")
}

fn follow(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_convlog"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn convlog_tail_f_follows_a_session_and_every_session_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for n in 0..3 {
        store.append("s", &msg(n)).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let (mut one, one_rx) = follow(&["tail", "-f", d, "s", "-n", "2"]);
    let (mut all, all_rx) = follow(&["tail", "-f", d]);
    let parse = |l: String| -> serde_json::Value { serde_json::from_str(&l).unwrap() };
    assert_eq!(parse(line_within(&one_rx, 20)), msg(1));
    assert_eq!(parse(line_within(&one_rx, 20)), msg(2));
    // Give the follower of every session time to start from "now".
    std::thread::sleep(Duration::from_millis(500));
    store.append("other", &msg(7)).unwrap();
    store.append("s", &msg(3)).unwrap();
    assert_eq!(parse(line_within(&one_rx, 20)), msg(3));
    let first = parse(line_within(&all_rx, 20));
    assert_eq!(
        (first["session"].as_str(), &first["message"]),
        (Some("other"), &msg(7))
    );
    let second = parse(line_within(&all_rx, 20));
    assert_eq!(
        (
            second["session"].as_str(),
            second["interaction_id"].as_u64()
        ),
        (Some("s"), Some(4))
    );
    for child in [&mut one, &mut all] {
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = child.wait().unwrap();
        assert!(!exited.success() || exited.code() == Some(0), "{exited:?}");
    }
    assert!(one_rx.try_recv().is_err(), "nothing after the interrupt");
}
