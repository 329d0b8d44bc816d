//! Session metadata: logged, latest wins, kept through clears and reopens (scans and hints),
//! filterable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use convlog::io::Vfs;
use convlog::io::sim::SimFs;
use convlog::{Error, Store};
use serde_json::{Value, json};

fn open(fs: &SimFs) -> Store {
    Store::builder()
        .vfs(Arc::new(fs.clone()))
        .segment_size(4096)
        .open("/m")
        .unwrap()
}

fn meta(store: &Store, s: &str) -> Option<Value> {
    store
        .meta(s)
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn metadata_is_logged_replaced_kept_and_filtered() {
    let fs = SimFs::new(1);
    let store = open(&fs);
    assert_eq!(meta(&store, "a"), None);
    store
        .set_meta("a", &json!({"title": "first", "user": "u1"}))
        .unwrap();
    store
        .set_meta("a", &json!({"title": "Trip to Paris", "user": "u1"}))
        .unwrap();
    store.set_meta("b", &json!({"user": "u2"})).unwrap();
    for i in 0..80 {
        store
            .append(
                ["a", "b", "c"][i % 3],
                &json!({"role": "user", "content": format!("m{i} {}", "x".repeat(60))}),
            )
            .unwrap();
    }
    store.clear("b").unwrap();
    assert_eq!(meta(&store, "a").unwrap()["title"], "Trip to Paris");
    assert_eq!(
        meta(&store, "b").unwrap()["user"],
        "u2",
        "a clear keeps the metadata"
    );
    let u1: Vec<String> = store
        .sessions_where("user", &json!("u1"))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(u1, ["a"]);
    let e = store.set_meta_raw("a", b"[1,2]").unwrap_err();
    assert!(matches!(&e, Error::InvalidMetadata { session, .. } if session == "a"));
    assert_eq!(
        e.to_string(),
        "invalid metadata for session \"a\": not a JSON object"
    );
    assert!(matches!(
        store.set_meta_raw("a", b"{\"a\":\"\xff\"}"),
        Err(Error::InvalidMetadata { reason, .. }) if reason.contains("not UTF-8")
    ));
    assert!(store.segment_ids().len() > 2);
    drop(store);
    let store = open(&fs);
    assert!(store.recovery_report().hints_used > 0);
    assert_eq!(
        meta(&store, "a").unwrap()["title"],
        "Trip to Paris",
        "from hints"
    );
    drop(store);
    let dir = std::path::Path::new("/m");
    for name in fs.list(dir).unwrap() {
        if name.ends_with(".hint") {
            fs.remove_file(&dir.join(name)).unwrap();
        }
    }
    let store = open(&fs);
    assert_eq!(
        meta(&store, "a").unwrap()["title"],
        "Trip to Paris",
        "from a scan"
    );
    assert_eq!(meta(&store, "b").unwrap()["user"], "u2");
    assert_eq!(meta(&store, "c"), None);
}

#[test]
fn sessions_where_finds_a_member_beside_values_a_json_value_cannot_hold() {
    let fs = SimFs::new(1);
    let store = open(&fs);
    let ids = |v: Vec<convlog::SessionInfo>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    for s in ["a", "b", "c", "d", "e"] {
        store.append(s, &json!({"role": "user"})).unwrap();
    }
    // What an append accepts but a `serde_json::Value` cannot hold: a lone surrogate escape
    // (in a value and in a key), a number past f64's range.
    store
        .set_meta_raw("a", br#"{"user":"u1","title":"Caf\ud83d"}"#)
        .unwrap();
    store
        .set_meta_raw("b", br#"{"cost":1e999,"user":"u1"}"#)
        .unwrap();
    store
        .set_meta_raw("c", br#"{"\udc00":1,"us\u0065r":"u1"}"#)
        .unwrap();
    // The member asked for is one of them: it equals nothing.
    store
        .set_meta_raw("d", br#"{"user":"\ud800","n":1e999}"#)
        .unwrap();
    // A key given twice: the last one counts, as when the object is read.
    store
        .set_meta_raw("e", br#"{"user":"u1","user":"u2"}"#)
        .unwrap();
    let u1 = ids(store.sessions_where("user", &json!("u1")).unwrap());
    assert_eq!(u1, ["a", "b", "c"]);
    assert_eq!(
        ids(store.sessions_where("user", &json!("u2")).unwrap()),
        ["e"]
    );
    assert!(
        store
            .sessions_where("n", &json!(f64::MAX))
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .sessions_where("nope", &json!("u1"))
            .unwrap()
            .is_empty()
    );
}
