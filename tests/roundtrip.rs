//! Any JSON object round-trips byte for byte through the raw API, across a reopen.

use convlog::Store;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC*".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((any::<String>(), json_value()), 0..8),
        any::<bool>(),
    )
        .prop_map(|(kv, pretty)| {
            let obj = Value::Object(kv.into_iter().collect());
            if pretty {
                serde_json::to_string_pretty(&obj).unwrap()
            } else {
                serde_json::to_string(&obj).unwrap()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("CONVLOG_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn raw_json_objects_round_trip_byte_for_byte(
        objects in prop::collection::vec(json_object_text(), 1..20),
        session in "[a-zA-Z0-9 _./:@é-]{1,40}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::builder().segment_size(4096).open(dir.path()).unwrap();
        for o in &objects {
            store.append_raw(&session, o.as_bytes()).unwrap();
        }
        drop(store);
        let store = Store::builder().segment_size(4096).open(dir.path()).unwrap();
        let back: Vec<Vec<u8>> = store.messages(&session).raw().map(|e| e.unwrap().message).collect();
        let want: Vec<Vec<u8>> = objects.iter().map(|o| o.as_bytes().to_vec()).collect();
        prop_assert_eq!(back, want);
        // The same objects through the typed API come back as equal JSON values.
        for (o, e) in objects.iter().zip(store.messages(&session).decode_as::<Value>()) {
            prop_assert_eq!(serde_json::from_str::<Value>(o).unwrap(), e.unwrap().message);
        }
    }
}
