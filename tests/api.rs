//! Every public store operation, and its state after a reopen.

use convlog::{ChatMessage, Content, Durability, Error, Role, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn texts(store: &Store, session: &str) -> Vec<String> {
    store
        .messages(session)
        .map(|e| e.unwrap().message.text().unwrap_or_default().to_owned())
        .collect()
}

fn ids(store: &Store, session: &str) -> Vec<u64> {
    store
        .messages(session)
        .map(|e| e.unwrap().interaction_id)
        .collect()
}

#[test]
fn append_assigns_gapless_ids_per_session_and_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a1 = store.append("a", &ChatMessage::system("sys")).unwrap();
    let b1 = store.append("b", &ChatMessage::user("b-one")).unwrap();
    let a2 = store.append("a", &ChatMessage::user("hi")).unwrap();
    assert_eq!(
        (a1.interaction_id, b1.interaction_id, a2.interaction_id),
        (1, 1, 2)
    );
    assert!(a1.lsn < b1.lsn && b1.lsn < a2.lsn);
    assert!(a1.timestamp <= a2.timestamp);
    assert_eq!(texts(&store, "a"), ["sys", "hi"]);
    assert_eq!(ids(&store, "a"), [1, 2]);
    let first = store.messages("a").next().unwrap().unwrap();
    assert_eq!((first.lsn, first.timestamp), (a1.lsn, a1.timestamp));
    assert_eq!(store.interaction_count("a"), 2);
    assert_eq!(store.interaction_count("nobody"), 0);
    assert!(store.contains("b") && !store.contains("nobody"));
    assert_eq!(store.messages("nobody").count(), 0);
    assert_eq!(store.tail("nobody", 5).count(), 0);
}

#[test]
fn range_and_tail_select_by_interaction_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 1..=10 {
        store
            .append("s", &ChatMessage::user(format!("m{i}")))
            .unwrap();
    }
    let r: Vec<u64> = store
        .range("s", 3..6)
        .map(|e| e.unwrap().interaction_id)
        .collect();
    assert_eq!(r, [3, 4, 5]);
    let r: Vec<u64> = store
        .range("s", 8..=20)
        .map(|e| e.unwrap().interaction_id)
        .collect();
    assert_eq!(r, [8, 9, 10]);
    assert_eq!(
        store
            .range("s", 0..2)
            .map(|e| e.unwrap().interaction_id)
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(store.range("s", 11..).count(), 0);
    let t: Vec<String> = store
        .tail("s", 3)
        .map(|e| e.unwrap().message.text().unwrap().to_owned())
        .collect();
    assert_eq!(t, ["m8", "m9", "m10"]);
    assert_eq!(store.tail("s", 100).count(), 10);
    assert_eq!(store.tail("s", 0).count(), 0);
    assert_eq!(store.tail("s", 4).len(), 4);
    assert!(store.read_entry("s", 0).unwrap().is_none());
    let one = store.read_entry("s", 7).unwrap().unwrap();
    assert_eq!(one.interaction_id, 7);
    assert!(store.read_entry("s", 11).unwrap().is_none());
}

#[test]
fn sessions_lists_live_sessions_with_counts_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r1 = store.append("b", &ChatMessage::user("1")).unwrap();
    store.append("a", &ChatMessage::user("1")).unwrap();
    let r3 = store.append("b", &ChatMessage::user("2")).unwrap();
    store.append("c", &ChatMessage::user("1")).unwrap();
    store.clear("c").unwrap();
    let s = store.sessions();
    assert_eq!(
        s.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(s[1].count, 2);
    assert_eq!((s[1].first, s[1].last), (r1.timestamp, r3.timestamp));
}

#[test]
fn pop_truncate_clear_change_the_session_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 1..=6 {
            store
                .append("s", &ChatMessage::user(format!("m{i}")))
                .unwrap();
        }
        store.append("other", &ChatMessage::user("x")).unwrap();
        let popped = store.pop("s").unwrap().unwrap();
        assert_eq!(
            (popped.interaction_id, popped.message.text()),
            (6, Some("m6"))
        );
        assert_eq!(store.truncate("s", 3).unwrap(), 2);
        assert_eq!(store.truncate("s", 3).unwrap(), 0);
        assert_eq!(store.truncate("s", 10).unwrap(), 0);
        // Ids continue gaplessly after a removal, as Automata's MAX+1.
        assert_eq!(
            store
                .append("s", &ChatMessage::user("m4'"))
                .unwrap()
                .interaction_id,
            4
        );
        assert_eq!(store.clear("other").unwrap(), 1);
        assert_eq!(store.clear("other").unwrap(), 0);
        assert!(store.pop("other").unwrap().is_none());
        assert!(store.pop_raw("nobody").unwrap().is_none());
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(texts(&store, "s"), ["m1", "m2", "m3", "m4'"]);
    assert_eq!(ids(&store, "s"), [1, 2, 3, 4]);
    assert!(!store.contains("other"));
    assert_eq!(
        store
            .append("other", &ChatMessage::user("again"))
            .unwrap()
            .interaction_id,
        1
    );
    assert_eq!(store.sessions().len(), 2);
    assert_eq!(
        store.sessions()[1].last,
        store.tail("s", 1).next().unwrap().unwrap().timestamp
    );
}

#[test]
fn reopen_after_each_kind_of_event_keeps_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    type Step = Box<dyn Fn(&Store)>;
    let steps: Vec<(&str, Step, Vec<&str>)> = vec![
        (
            "append",
            Box::new(|s| {
                s.append("s", &ChatMessage::user("a")).unwrap();
            }),
            vec!["a"],
        ),
        (
            "batch",
            Box::new(|s| {
                s.append_batch("s", &[ChatMessage::user("b"), ChatMessage::user("c")])
                    .unwrap();
            }),
            vec!["a", "b", "c"],
        ),
        (
            "pop",
            Box::new(|s| {
                s.pop("s").unwrap();
            }),
            vec!["a", "b"],
        ),
        (
            "truncate",
            Box::new(|s| {
                s.truncate("s", 1).unwrap();
            }),
            vec!["a"],
        ),
        (
            "append_if",
            Box::new(|s| {
                s.append_if("s", 2, &ChatMessage::user("d")).unwrap();
            }),
            vec!["a", "d"],
        ),
        (
            "clear",
            Box::new(|s| {
                s.clear("s").unwrap();
            }),
            vec![],
        ),
        (
            "append after clear",
            Box::new(|s| {
                s.append("s", &ChatMessage::user("e")).unwrap();
            }),
            vec!["e"],
        ),
    ];
    for (name, step, want) in steps {
        {
            let store = Store::open(dir.path()).unwrap();
            step(&store);
            assert_eq!(texts(&store, "s"), want, "before reopen, after {name}");
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(texts(&store, "s"), want, "after reopen, after {name}");
        let want_ids: Vec<u64> = (1..=want.len() as u64).collect();
        assert_eq!(ids(&store, "s"), want_ids, "ids after {name}");
        assert_eq!(store.recovery_report().classification().name(), "clean");
    }
}

#[test]
fn append_if_rejects_a_stale_expectation_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store
            .append_if("s", 1, &ChatMessage::user("a"))
            .unwrap()
            .interaction_id,
        1
    );
    let err = store
        .append_if("s", 1, &ChatMessage::user("b"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.interaction_count("s"), 1);
    assert_eq!(
        store
            .append_if("s", 2, &ChatMessage::user("b"))
            .unwrap()
            .interaction_id,
        2
    );
}

#[test]
fn racing_append_if_writers_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let wins: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                s.spawn(move || {
                    let mut won = 0;
                    for _ in 0..50 {
                        let next = store.interaction_count("race") + 1;
                        if store
                            .append_if("race", next, &json!({"role": "user", "t": t}))
                            .is_ok()
                        {
                            won += 1;
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().sum::<u64>(), store.interaction_count("race"));
    assert_eq!(
        ids(&store, "race"),
        (1..=store.interaction_count("race")).collect::<Vec<_>>()
    );
}

#[test]
fn batches_take_consecutive_ids_and_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.append("s", &ChatMessage::user("first")).unwrap();
    let r = store
        .append_batch(
            "s",
            &[
                ChatMessage::user("a"),
                ChatMessage::assistant("b"),
                ChatMessage::user("c"),
            ],
        )
        .unwrap();
    assert_eq!(
        r.iter().map(|r| r.interaction_id).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(r[2].lsn.0 - r[0].lsn.0, 2);
    assert!(
        store
            .append_batch::<ChatMessage>("s", &[])
            .unwrap()
            .is_empty()
    );
    let raw = store
        .append_batch_raw("s", &[br#"{"x":1}"#.as_slice(), br#"{"y":2}"#])
        .unwrap();
    assert_eq!(raw[1].interaction_id, 6);
}

#[test]
fn generic_and_raw_messages_round_trip() {
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Note {
        role: String,
        body: String,
        tokens: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let note = Note {
        role: "user".into(),
        body: "é ✓ \n \"q\"".into(),
        tokens: 7,
    };
    store.append("g", &note).unwrap();
    store
        .append(
            "g",
            &json!({"role": "tool", "tool_call_id": "c1", "content": "42"}),
        )
        .unwrap();
    let raw = br#"{ "z": 1, "a": [true, null, {"k": "\u00e9"}], "role": "user" }"#;
    store.append_raw("g", raw).unwrap();

    let back: Note = store
        .range("g", 1..2)
        .decode_as::<Note>()
        .next()
        .unwrap()
        .unwrap()
        .message;
    assert_eq!(back, note);
    let m: Vec<ChatMessage> = store.range("g", 2..).map(|e| e.unwrap().message).collect();
    assert_eq!(m[0].role(), Some(&Role::Tool));
    assert_eq!(m[0].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(m[1].extra.get("z"), Some(&json!(1)));
    let bytes = store.tail("g", 1).raw().next().unwrap().unwrap().message;
    assert_eq!(bytes, raw);
    // A stored message that does not decode as the requested type is a typed decode error.
    store.append("g", &json!({"kind": "note"})).unwrap();
    let err = store
        .tail("g", 1)
        .decode_as::<Note>()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decode {
                interaction_id: 4,
                ..
            }
        ),
        "{err}"
    );
    // As a ChatMessage (any JSON object), it decodes.
    let note = store.tail("g", 1).next().unwrap().unwrap().message;
    assert_eq!(note.role(), None);
    assert_eq!(note.extra.get("kind"), Some(&json!("note")));
    assert!(store.pop_raw("g").unwrap().is_some());
}

#[test]
fn agents_sdk_and_responses_items_read_and_pop_as_chat_messages() {
    let items = [
        json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
        json!({"type": "function_call_output", "call_id": "c1", "output": "42"}),
        json!({"type": "message", "role": "assistant",
               "content": [{"type": "output_text", "text": "hi"}]}),
        json!({"type": "reasoning", "id": "rs_1", "summary": [], "content": {"odd": 1}}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for item in &items {
        store
            .append_raw("sdk", serde_json::to_string(item).unwrap().as_bytes())
            .unwrap();
    }
    let values = |it: convlog::Messages<ChatMessage>| -> Vec<serde_json::Value> {
        it.map(|e| serde_json::to_value(e.unwrap().message).unwrap())
            .collect()
    };
    assert_eq!(values(store.messages("sdk")), items);
    assert_eq!(values(store.tail("sdk", 2)), items[2..]);
    assert_eq!(values(store.range("sdk", 2..3)), items[1..2]);
    let call = store.messages("sdk").next().unwrap().unwrap().message;
    assert_eq!(
        (call.role(), call.item_type(), call.call_id()),
        (None, Some("function_call"), Some("c1"))
    );
    let reply = store.tail("sdk", 2).next().unwrap().unwrap().message;
    assert_eq!(reply.role(), Some(&Role::Assistant));
    assert!(matches!(reply.content, Some(Content::Parts(ref p)) if p.len() == 1));
    // A typed value written back through `append` is the same JSON again.
    store.append("copy", &call).unwrap();
    assert_eq!(values(store.messages("copy")), items[..1]);
    for (n, want) in items.iter().enumerate().rev() {
        let popped = store.pop("sdk").unwrap().unwrap();
        assert_eq!(popped.interaction_id, n as u64 + 1);
        assert_eq!(&serde_json::to_value(popped.message).unwrap(), want);
    }
    assert_eq!(store.interaction_count("sdk"), 0);
}

#[test]
fn chat_messages_with_tool_calls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let call: ChatMessage = serde_json::from_value(json!({
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "call_9", "type": "function",
                        "function": {"name": "search", "arguments": "{\"q\":\"rust\"}"}}],
        "function_call": {"name": "legacy", "arguments": "{}"},
        "name": "planner", "audio": {"id": "a1"}
    }))
    .unwrap();
    store.append("t", &call).unwrap();
    store
        .append("t", &ChatMessage::tool("call_9", "result"))
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let back: Vec<ChatMessage> = store.messages("t").map(|e| e.unwrap().message).collect();
    assert_eq!(back[0], call);
    assert_eq!(back[0].content, Some(Content::Null));
    assert_eq!(back[1].tool_call_id.as_deref(), Some("call_9"));
}

/// Nesting up to `MAX_JSON_DEPTH` levels is stored, and read back byte for byte.
#[test]
fn a_message_nested_as_deep_as_allowed_is_stored_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let at_limit = format!(
        "{{\"a\":{}{}}}",
        "[".repeat(convlog::MAX_JSON_DEPTH - 1),
        "]".repeat(convlog::MAX_JSON_DEPTH - 1)
    );
    assert!(
        store.append_raw("deep", at_limit.as_bytes()).is_ok(),
        "{} levels are fine",
        convlog::MAX_JSON_DEPTH
    );
    let back = store.messages("deep").raw().next().unwrap().unwrap();
    assert_eq!(back.message, at_limit.as_bytes());
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .max_record_len(1024)
        .open(dir.path())
        .unwrap();
    store.append("ok", &ChatMessage::user("keep")).unwrap();
    let before = store.last_lsn();
    let long = "x".repeat(257);
    for bad in ["", long.as_str(), "a\nb", "tab\there", "nul\0"] {
        let err = store.append(bad, &ChatMessage::user("m")).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSessionId { .. }),
            "{bad:?}: {err}"
        );
        assert!(matches!(
            store.pop(bad),
            Err(Error::InvalidSessionId { .. })
        ));
        assert!(matches!(
            store.clear(bad),
            Err(Error::InvalidSessionId { .. })
        ));
        assert!(matches!(
            store.truncate(bad, 0),
            Err(Error::InvalidSessionId { .. })
        ));
    }
    assert!(
        store
            .append(&"é".repeat(128), &ChatMessage::user("256 bytes is fine"))
            .is_ok()
    );
    for not_object in [json!([1, 2]), json!("text"), json!(3), json!(null)] {
        let err = store.append("ok", &not_object).unwrap_err();
        assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");
    }
    for raw in [&b"[1]"[..], b"{\"a\":", b"not json", b"{} {}", b""] {
        let err = store.append_raw("ok", raw).unwrap_err();
        assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");
    }
    // Invalid UTF-8, in a key, a value the check skips over, or outside any string.
    for raw in [
        &b"{\"a\":\"\xff\xfe\"}"[..],
        b"{\"\xc3\":1}",
        b"{\"a\":1}\xa0",
    ] {
        let err = store.append_raw("ok", raw).unwrap_err();
        assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");
        let err = store.set_meta_raw("ok", raw).unwrap_err();
        assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
    }
    // Valid JSON that a reader building its values would refuse: nested too deep.
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(600), "]".repeat(600));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(600), "}".repeat(600));
    for raw in [deep.as_bytes(), deep_objects.as_bytes()] {
        let err = store.append_raw("ok", raw).unwrap_err();
        assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");
        let err = store.set_meta_raw("ok", raw).unwrap_err();
        assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
    }
    let built: serde_json::Value = (0..600).fold(json!(1), |v, _| json!([v]));
    let err = store.append("ok", &json!({ "a": built })).unwrap_err();
    assert!(
        err.to_string().contains("nested deeper than 512 levels"),
        "{err}"
    );
    let err = store.append_raw("ok", b"{\"a\":\"\xff\"}").unwrap_err();
    assert!(
        err.to_string()
            .contains("not UTF-8: invalid byte at offset 6"),
        "{err}"
    );
    let big = ChatMessage::user("y".repeat(2000));
    let err = store.append("ok", &big).unwrap_err();
    assert!(
        matches!(err, Error::RecordTooLarge { max: 1024, .. }),
        "{err}"
    );
    let err = store
        .append_batch("ok", &[ChatMessage::user("fine"), big])
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    let err = store
        .append_batch_raw("ok", &[&b"{}"[..], b"[]"])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");

    // A serializer failure is an error too (a map with non-string keys cannot be JSON).
    let mut weird = std::collections::HashMap::new();
    weird.insert((1, 2), "v");
    assert!(matches!(
        store.append("ok", &weird),
        Err(Error::InvalidMessage { .. })
    ));

    assert_eq!(
        store.last_lsn().0,
        before.0 + 1,
        "only the 256-byte session id appended"
    );
    assert_eq!(texts(&store, "ok"), ["keep"]);
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        Store::builder().segment_size(100),
        Store::builder().segment_size(2 << 30),
        Store::builder().max_record_len(0),
        Store::builder().max_record_len(17 << 20),
        Store::builder().durability(Durability::Interval(std::time::Duration::ZERO)),
    ] {
        assert!(matches!(
            opts.open(dir.path()),
            Err(Error::InvalidOption { .. })
        ));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn a_store_path_that_is_a_file_is_not_a_store_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"mine").unwrap();
    for opts in [Store::builder(), Store::builder().read_only(true)] {
        let e = opts.open(&file).map(|_| ()).unwrap_err();
        assert!(
            matches!(&e, Error::NotAStore { path, .. } if path == &file),
            "{e}"
        );
    }
    let e = Store::open(&file).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn rotation_spreads_sessions_over_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .segment_size(4096)
        .open(dir.path())
        .unwrap();
    for i in 0..400 {
        store
            .append(
                &format!("s{}", i % 7),
                &ChatMessage::user(format!("message {i} {}", "z".repeat(i % 50))),
            )
            .unwrap();
    }
    assert!(
        store.segment_ids().len() > 10,
        "{} segments",
        store.segment_ids().len()
    );
    store.truncate("s3", 10).unwrap();
    let before: Vec<Vec<String>> = (0..7).map(|s| texts(&store, &format!("s{s}"))).collect();
    drop(store);
    let store = Store::builder()
        .segment_size(4096)
        .open(dir.path())
        .unwrap();
    let after: Vec<Vec<String>> = (0..7).map(|s| texts(&store, &format!("s{s}"))).collect();
    assert_eq!(before, after);
    assert_eq!(after[3].len(), 10);
    // A message larger than a segment gets a segment of its own.
    store
        .append("big", &ChatMessage::user("b".repeat(10_000)))
        .unwrap();
    store.append("big", &ChatMessage::user("after")).unwrap();
    assert_eq!(texts(&store, "big")[1], "after");
}

#[test]
fn durability_modes_ack_and_sync() {
    for d in [
        Durability::Always,
        Durability::Buffered,
        Durability::Interval(std::time::Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::builder()
            .durability(d)
            .segment_size(4096)
            .open(dir.path())
            .unwrap();
        let mut last = None;
        for i in 0..100 {
            last = Some(
                store
                    .append("s", &ChatMessage::user(format!("{i}")))
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        if d == Durability::Always {
            assert!(store.durable_lsn() >= last.lsn);
        }
        assert_eq!(store.sync().unwrap(), last.lsn);
        assert_eq!(store.durable_lsn(), last.lsn);
        if let Durability::Interval(_) = d {
            store.append("s", &ChatMessage::user("late")).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.durable_lsn() < store.last_lsn() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(
                store.durable_lsn(),
                store.last_lsn(),
                "the background sync ran"
            );
        }
        drop(store);
        // The lock is released when the last handle drops, even with a background thread.
        let store = Store::builder().durability(d).open(dir.path()).unwrap();
        assert_eq!(
            store.interaction_count("s"),
            if matches!(d, Durability::Interval(_)) {
                101
            } else {
                100
            }
        );
    }
}

#[test]
fn readers_on_threads_during_appends_see_consistent_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .segment_size(8192)
        .open(dir.path())
        .unwrap();
    std::thread::scope(|s| {
        let writer = store.clone();
        s.spawn(move || {
            for i in 0..2000u64 {
                writer
                    .append("live", &json!({"role": "user", "n": i}))
                    .unwrap();
            }
        });
        for _ in 0..2 {
            let reader = store.clone();
            s.spawn(move || {
                let mut seen = 0;
                while seen < 2000 {
                    let entries: Vec<_> = reader.messages("live").map(|e| e.unwrap()).collect();
                    for (i, e) in entries.iter().enumerate() {
                        assert_eq!(e.interaction_id, i as u64 + 1);
                        let v: serde_json::Value = e.message.extra["n"].clone();
                        assert_eq!(v, json!(i));
                    }
                    assert!(entries.len() >= seen, "a reader never goes back");
                    seen = entries.len();
                    let tail: Vec<_> = reader
                        .tail("live", 5)
                        .map(|e| e.unwrap().interaction_id)
                        .collect();
                    assert!(tail.windows(2).all(|w| w[1] == w[0] + 1));
                }
            });
        }
    });
}

#[test]
fn an_iterator_is_a_snapshot_through_pops_truncations_clears_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..1000 {
        store
            .append("s", &ChatMessage::user(format!("{i}")))
            .unwrap();
    }
    let mut it = store.messages("s");
    let tail = store.tail("s", 20);
    assert_eq!(it.len(), 1000);
    assert_eq!(it.next().unwrap().unwrap().message.text(), Some("0"));
    store.pop("s").unwrap();
    store.truncate("s", 10).unwrap();
    store.append("s", &ChatMessage::user("new")).unwrap();
    assert_eq!(it.len(), 999, "the length is exact");
    let texts: Vec<String> = it
        .map(|e| e.unwrap().message.text().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (1..1000).map(|i| i.to_string()).collect();
    assert_eq!(
        texts, want,
        "exactly the messages present when the read started"
    );
    store.clear("s").unwrap();
    let ids: Vec<u64> = tail.map(|e| e.unwrap().interaction_id).collect();
    assert_eq!(ids, (981..=1000).collect::<Vec<_>>());
}

/// Finding 9 of the hostile-use review: `tail(n)` under concurrent appends and pops
/// returned more than `n` messages, or failed with `SessionChanged`.
#[test]
fn tail_under_concurrent_appends_and_pops_is_an_exact_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..100 {
        store
            .append("s", &ChatMessage::user(format!("{i}")))
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..3000 {
                store
                    .append("s", &ChatMessage::user(format!("{i}")))
                    .unwrap();
                if i % 3 == 0 {
                    store.pop("s").unwrap();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::Acquire) || reads < 100 {
            let it = store.tail("s", 20);
            assert_eq!(it.len(), 20);
            let ids: Vec<u64> = it.map(|e| e.unwrap().interaction_id).collect();
            assert_eq!(ids.len(), 20);
            assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
            reads += 1;
        }
    });
}

#[test]
fn store_is_send_and_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
    fn send<T: Send>() {}
    send::<convlog::Messages<ChatMessage>>();
    send::<convlog::RawMessages>();
}

#[test]
fn stats_count_segments_sessions_and_index_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .segment_size(64 << 10)
        .open(dir.path())
        .unwrap();
    let sessions = 100;
    let per = 500;
    for i in 0..per {
        for s in 0..sessions {
            store
                .append(&format!("session-{s}"), &json!({"role": "user", "i": i}))
                .unwrap();
        }
    }
    drop(store);
    let store = Store::builder()
        .segment_size(64 << 10)
        .open(dir.path())
        .unwrap();
    let st = store.stats();
    assert_eq!(
        (st.sessions, st.messages),
        (sessions, (sessions * per) as u64)
    );
    assert_eq!(st.last_lsn.0, (sessions * per) as u64);
    let per_message = st.index_bytes as f64 / st.messages as f64;
    eprintln!(
        "index: {} bytes for {} messages = {per_message:.2} B/message",
        st.index_bytes, st.messages
    );
    assert!(per_message <= 16.0, "{per_message} bytes per message");
    assert_eq!(
        store
            .recovery_report()
            .records_by_kind
            .get(&convlog::Kind::Append),
        Some(&((sessions * per) as u64))
    );
}

#[test]
fn entries_serialize_and_timestamps_display_as_rfc3339() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = store.append("s", &ChatMessage::user("hi")).unwrap();
    let e = store.tail("s", 1).next().unwrap().unwrap();
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({
            "interaction_id": 1,
            "lsn": r.lsn.0,
            "timestamp": r.timestamp.as_micros(),
            "message": {"role": "user", "content": "hi"},
        })
    );
    let shown = e.timestamp.to_string();
    // 2026-12-02T00:18:45.123456Z
    assert_eq!(shown.len(), 27, "{shown}");
    assert!(shown.ends_with('Z') && &shown[10..11] == "T" && &shown[19..20] == ".");
    assert_eq!(
        shown[20..26].parse::<u64>().unwrap(),
        e.timestamp.as_micros() % 1_000_000
    );
    let raw = store.tail("s", 1).raw().next().unwrap().unwrap();
    assert!(serde_json::to_value(&raw).unwrap()["lsn"].is_u64());
}

#[test]
fn a_second_open_in_the_same_process_shares_the_open_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path()).unwrap();
    // Another spelling of the same directory is the same store.
    let b = Store::open(dir.path().join(".")).unwrap();
    a.append("s", &ChatMessage::user("from a")).unwrap();
    b.append("s", &ChatMessage::user("from b")).unwrap();
    assert_eq!(texts(&a, "s"), ["from a", "from b"]);
    assert_eq!(texts(&b, "s"), ["from a", "from b"]);
    assert_eq!(a.last_lsn(), b.last_lsn());
    // A read-only open is unaffected: its own snapshot, no lock.
    let ro = Store::builder().read_only(true).open(dir.path()).unwrap();
    assert!(ro.is_read_only() && !a.is_read_only());
    assert_eq!(ro.interaction_count("s"), 2);
    drop(a);
    b.append("s", &ChatMessage::user("b alone")).unwrap();
    drop(b);
    drop(ro);
    // Once the last handle is gone the store is closed; a reopen opens it afresh.
    let c = Store::open(dir.path()).unwrap();
    assert_eq!(texts(&c, "s"), ["from a", "from b", "b alone"]);
    assert_eq!(
        c.recovery_report().classification(),
        convlog::Classification::Clean
    );
}

#[test]
fn a_second_open_with_other_options_is_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::builder()
        .segment_size(64 << 10)
        .open(dir.path())
        .unwrap();
    for opts in [
        Store::builder(),
        Store::builder()
            .segment_size(64 << 10)
            .durability(Durability::Always),
        Store::builder()
            .segment_size(64 << 10)
            .recovery(convlog::RecoveryMode::Salvage),
    ] {
        let err = opts.open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::AlreadyOpen { .. }), "{err}");
        assert!(
            err.to_string().contains("already open in this process"),
            "{err}"
        );
    }
    let same = Store::builder()
        .segment_size(64 << 10)
        .open(dir.path())
        .unwrap();
    same.append("s", &ChatMessage::user("x")).unwrap();
    assert_eq!(first.interaction_count("s"), 1);
    drop((first, same));
    assert!(
        Store::open(dir.path()).is_ok(),
        "closed with its last handle"
    );
}

#[test]
fn threads_opening_and_dropping_one_store_never_see_locked() {
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = dir.path();
            s.spawn(move || {
                for i in 0..25 {
                    let store = Store::open(dir).unwrap_or_else(|e| panic!("{t}/{i}: {e}"));
                    store
                        .append(&format!("t{t}"), &json!({"role": "user", "i": i}))
                        .unwrap();
                }
            });
        }
    });
    let store = Store::open(dir.path()).unwrap();
    for t in 0..4 {
        assert_eq!(ids(&store, &format!("t{t}")), (1..=25).collect::<Vec<_>>());
    }
}

/// A reader during `replace` and `fork` sees the old session or the new one, never a mix.
#[test]
fn readers_see_a_replace_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"role":"user","content":"a{i}"}}"#))
        .collect();
    let b: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"role":"user","content":"b{i}"}}"#))
        .collect();
    store.replace("s", None, &a).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..400 {
                let next = if i % 2 == 0 { &b } else { &a };
                store.replace("s", None, next).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::Acquire) || reads < 50 {
            let texts: Vec<String> = store
                .messages("s")
                .map(|e| e.unwrap().message.text().unwrap().to_owned())
                .collect();
            let all_a = texts.len() == 10 && texts.iter().all(|t| t.starts_with('a'));
            let all_b = texts.len() == 5 && texts.iter().all(|t| t.starts_with('b'));
            assert!(all_a || all_b, "a mix: {texts:?}");
            reads += 1;
        }
    });
}

#[test]
fn append_raw_if_stores_the_bytes_as_given_and_rejects_a_stale_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let raw = br#"{ "role":"user",  "content":"x" }"#;
    let r = store.append_raw_if("s", 1, raw).unwrap();
    assert_eq!(r.interaction_id, 1);
    let err = store.append_raw_if("s", 1, raw).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        store.append_raw_if("s", 2, b"[1]"),
        Err(Error::InvalidMessage { .. })
    ));
    assert_eq!(store.interaction_count("s"), 1);
    assert_eq!(store.read_entry("s", 1).unwrap().unwrap().message, raw);
}

/// `replace_if` refuses a session that changed in any way since its version was read,
/// a pop then an append (same count) included; a reopen and a compaction keep versions.
#[test]
fn replace_if_refuses_any_change_since_the_version_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = |i: u32| format!(r#"{{"role":"user","content":"m{i}"}}"#).into_bytes();
    let empty = store.version("s").unwrap();
    assert_eq!((empty.next_id, empty.last_lsn), (1, None));
    for i in 0..3 {
        store.append_raw("s", &m(i)).unwrap();
    }
    let v = store.version("s").unwrap();
    assert_eq!(v.next_id, 4);
    assert_eq!(
        v.last_lsn,
        Some(store.read_entry("s", 3).unwrap().unwrap().lsn)
    );
    // A pop then an append: same count, another version; the replace changes nothing.
    store.pop_raw("s").unwrap();
    store.append_raw("s", &m(2)).unwrap();
    let now = store.version("s").unwrap();
    assert_eq!(now.next_id, v.next_id);
    assert_ne!(now, v);
    let err = store.replace_if("s", v, &[m(9)]).unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    let err = store.replace_if("s", empty, &[m(9)]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let held: Vec<Vec<u8>> = store
        .messages("s")
        .raw()
        .map(|e| e.unwrap().message)
        .collect();
    assert_eq!(held, vec![m(0), m(1), m(2)]);
    // Versions survive a compaction and a reopen; the current one replaces.
    store.compact().unwrap();
    assert_eq!(store.version("s").unwrap(), now);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.version("s").unwrap(), now);
    store.replace_if("s", now, &[m(7)]).unwrap();
    let held: Vec<Vec<u8>> = store
        .messages("s")
        .raw()
        .map(|e| e.unwrap().message)
        .collect();
    assert_eq!(held, vec![m(7)]);
}
