//! Forks: one logged record sharing the source's prefix; afterwards the two sessions are
//! independent, through reopens (scans and hints) and power cuts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use convlog::io::sim::{SimFs, Tear};
use convlog::{Durability, Error, Store};
use serde_json::json;

fn open(fs: &SimFs) -> Store {
    Store::builder()
        .vfs(Arc::new(fs.clone()))
        .durability(Durability::Always)
        .segment_size(16 << 10)
        .open("/f")
        .unwrap()
}

fn texts(store: &Store, session: &str) -> Vec<String> {
    store
        .messages(session)
        .map(|e| e.unwrap().message.text().unwrap().to_owned())
        .collect()
}

fn fill(store: &Store, session: &str, n: usize) {
    for i in 0..n {
        store
            .append(
                session,
                &json!({"role": "user", "content": format!("{session} {i}")}),
            )
            .unwrap();
    }
}

#[test]
fn a_fork_shares_the_prefix_and_then_goes_its_own_way() {
    let fs = SimFs::new(1);
    let store = open(&fs);
    fill(&store, "src", 50);
    assert_eq!(store.fork("src", "dst", Some(30)).unwrap(), 30);
    let want: Vec<String> = (0..30).map(|i| format!("src {i}")).collect();
    assert_eq!(texts(&store, "dst"), want);
    let r = store
        .append("dst", &json!({"role": "user", "content": "dst own"}))
        .unwrap();
    assert_eq!(r.interaction_id, 31, "ids go on after the shared prefix");
    store.truncate("src", 5).unwrap();
    store.clear("src").unwrap();
    fill(&store, "src", 3);
    let mut want_dst = want.clone();
    want_dst.push("dst own".into());
    assert_eq!(
        texts(&store, "dst"),
        want_dst,
        "the source's changes do not reach the fork"
    );
    // A fork of a fork, then a pop of its middle parent.
    assert_eq!(store.fork("dst", "dst2", None).unwrap(), 31);
    store.pop_raw("dst").unwrap();
    store.truncate("dst", 2).unwrap();
    assert_eq!(texts(&store, "dst2"), want_dst);
    assert_eq!(store.tail("dst2", 2).count(), 2);
    assert_eq!(store.interaction_count("dst"), 2);
    // The destination must not exist; a fork of nothing logs nothing.
    assert!(matches!(
        store.fork("src", "dst2", None),
        Err(Error::SessionExists { .. })
    ));
    let lsn = store.last_lsn();
    assert_eq!(store.fork("nosuch", "empty", None).unwrap(), 0);
    assert_eq!(store.last_lsn(), lsn);
    assert!(!store.contains("empty"));
    let before = (
        texts(&store, "src"),
        texts(&store, "dst"),
        texts(&store, "dst2"),
    );
    drop(store);
    let store = open(&fs);
    let after = (
        texts(&store, "src"),
        texts(&store, "dst"),
        texts(&store, "dst2"),
    );
    assert_eq!(after, before, "after a reopen");
    let crashed = fs.crash(Tear::Sectors(512));
    let store = open(&crashed);
    let crashed_state = (
        texts(&store, "src"),
        texts(&store, "dst"),
        texts(&store, "dst2"),
    );
    assert_eq!(
        crashed_state, before,
        "after a power cut (every write was durable)"
    );
}

#[test]
fn a_fork_costs_one_record_whatever_the_source_length() {
    let mut growth = Vec::new();
    for n in [10usize, 1000] {
        let fs = SimFs::new(2);
        let store = open(&fs);
        fill(&store, "src", n);
        let (lsn, bytes) = (store.last_lsn().0, store.stats().index_bytes);
        store.fork("src", "dst", None).unwrap();
        assert_eq!(store.last_lsn().0, lsn + 1, "one record");
        assert_eq!(store.interaction_count("dst"), n as u64);
        growth.push(store.stats().index_bytes as i64 - bytes as i64);
    }
    assert_eq!(
        growth[0], growth[1],
        "index growth of a fork, 10 vs 1000 messages"
    );
}

#[test]
fn forks_survive_rotations_and_hinted_reopens() {
    let fs = SimFs::new(3);
    let store = open(&fs);
    fill(&store, "src", 600);
    store.fork("src", "dst", Some(450)).unwrap();
    fill(&store, "dst", 600);
    store.truncate("src", 1).unwrap();
    assert!(store.segment_ids().len() > 3);
    let before = (texts(&store, "src"), texts(&store, "dst"));
    drop(store);
    for _ in 0..2 {
        let store = open(&fs);
        assert!(store.recovery_report().hints_used > 0);
        assert_eq!((texts(&store, "src"), texts(&store, "dst")), before);
    }
}
