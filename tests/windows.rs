//! `Store::window` against a brute-force model, over random sessions of user, assistant,
//! tool-call, tool, Responses-API `function_call` / `function_call_output` and system
//! messages: every window starts at a user message (or the session's start), keeps every
//! tool result with its call, fits the budget, and no longer window would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use convlog::io::sim::SimFs;
use convlog::{Store, WindowSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};

/// One step of a generated conversation.
#[derive(Debug, Clone)]
enum Turn {
    User(usize),
    Assistant(usize),
    /// An assistant message with `n` parallel tool calls, then their results (reversed when
    /// `reversed`, as parallel results may come back).
    ToolCalls {
        n: usize,
        reversed: bool,
    },
    /// A Responses-API function call and its output.
    FunctionCall,
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        3 => (0usize..200).prop_map(Turn::User),
        3 => (0usize..300).prop_map(Turn::Assistant),
        2 => (1usize..4, any::<bool>()).prop_map(|(n, reversed)| Turn::ToolCalls { n, reversed }),
        1 => Just(Turn::FunctionCall),
    ]
}

/// The messages of a conversation, in order.
fn messages(system: bool, turns: &[Turn]) -> Vec<Value> {
    let mut out = Vec::new();
    if system {
        out.push(json!({"role": "system", "content": "You are terse."}));
    }
    for (t, turn) in turns.iter().enumerate() {
        match turn {
            Turn::User(len) => out.push(json!({"role": "user", "content": "u".repeat(*len)})),
            Turn::Assistant(len) => {
                out.push(json!({"role": "assistant", "content": "a".repeat(*len)}));
            }
            Turn::ToolCalls { n, reversed } => {
                let ids: Vec<String> = (0..*n).map(|i| format!("call_{t}_{i}")).collect();
                let calls: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}))
                    .collect();
                out.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
                let mut results: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"role": "tool", "tool_call_id": id, "content": "42"}))
                    .collect();
                if *reversed {
                    results.reverse();
                }
                out.extend(results);
            }
            Turn::FunctionCall => {
                let id = format!("fc_{t}");
                out.push(
                    json!({"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"}),
                );
                out.push(json!({"type": "function_call_output", "call_id": id, "output": "ok"}));
            }
        }
    }
    out
}

/// The call ids a message makes, and the one it answers.
fn calls_and_answer(m: &Value) -> (Vec<String>, Option<String>) {
    let calls = m["tool_calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut calls: Vec<String> = calls;
    if m["type"] == "function_call" {
        calls.extend(m["call_id"].as_str().map(String::from));
    }
    let answer = if m["role"] == "tool" {
        m["tool_call_id"].as_str().map(String::from)
    } else if m["type"] == "function_call_output" {
        m["call_id"].as_str().map(String::from)
    } else {
        None
    };
    (calls, answer)
}

/// The model: the window's 1-based interaction ids, by brute force over every start.
fn model(msgs: &[Value], spec: &WindowSpec) -> Vec<u64> {
    let len = |m: &Value| serde_json::to_vec(m).unwrap().len() as u64;
    let system = spec.keep_system && msgs.first().is_some_and(|m| m["role"] == "system");
    let lowest = if system { 2 } else { 1 };
    let fits = |ids: &[u64]| {
        let bytes: u64 = ids.iter().map(|&i| len(&msgs[i as usize - 1])).sum();
        spec.max_messages.is_none_or(|m| ids.len() as u64 <= m)
            && spec.max_bytes.is_none_or(|b| bytes <= b)
    };
    let head: Vec<u64> = if system { vec![1] } else { vec![] };
    if !fits(&head) {
        return Vec::new();
    }
    let n = msgs.len() as u64;
    for s in lowest..=n {
        let suffix: Vec<u64> = (s..=n).collect();
        let starts = s == lowest || msgs[s as usize - 1]["role"] == "user";
        let called: Vec<String> = suffix
            .iter()
            .flat_map(|&i| calls_and_answer(&msgs[i as usize - 1]).0)
            .collect();
        let orphan = suffix.iter().any(|&i| {
            calls_and_answer(&msgs[i as usize - 1])
                .1
                .is_some_and(|a| !called.contains(&a))
        });
        let window: Vec<u64> = head.iter().copied().chain(suffix).collect();
        if starts && !orphan && fits(&window) {
            return window;
        }
    }
    head
}

#[test]
fn windows_match_a_brute_force_model() {
    let seed = std::env::var("CONVLOG_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x0057_1d0f);
    println!("windows: seed {seed:#x} (set CONVLOG_SEED to change)");
    let config = Config {
        cases: 200,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(turn(), 0..40),
        proptest::option::of(1u64..60),
        proptest::option::of(50u64..4000),
        any::<bool>(),
    );
    let result = TestRunner::new(config).run(&strategy, |(system, turns, max_m, max_b, keep)| {
        let msgs = messages(system, &turns);
        let fs = SimFs::new(1);
        let store = Store::builder().vfs(Arc::new(fs)).open("/w").unwrap();
        for m in &msgs {
            store.append("s", m).unwrap();
        }
        let mut spec = WindowSpec::new().keep_system(keep);
        if let Some(m) = max_m {
            spec = spec.max_messages(m);
        }
        if let Some(b) = max_b {
            spec = spec.max_bytes(b);
        }
        let got: Vec<u64> = store
            .window("s", &spec)
            .unwrap()
            .iter()
            .map(|e| e.interaction_id)
            .collect();
        prop_assert_eq!(got, model(&msgs, &spec), "spec {:?}", spec);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n(windows seed {seed:#x})");
    }
}

#[test]
fn a_window_of_a_long_session_reads_back_only_as_far_as_its_budget() {
    let store = Store::builder()
        .vfs(Arc::new(SimFs::new(2)))
        .open("/w")
        .unwrap();
    for i in 0..5000 {
        let m = if i % 2 == 0 {
            json!({"role": "user", "content": format!("q{i}")})
        } else {
            json!({"role": "assistant", "content": format!("a{i}")})
        };
        store.append("s", &m).unwrap();
    }
    let w = store
        .window("s", &WindowSpec::new().max_messages(7))
        .unwrap();
    // 7 messages back from 5000 would start at 4994, an assistant message: the longest
    // window that starts at a user message holds 6.
    let ids: Vec<u64> = w.iter().map(|e| e.interaction_id).collect();
    assert_eq!(ids, (4995..=5000).collect::<Vec<_>>());
    let all = store.window("s", &WindowSpec::new()).unwrap();
    assert_eq!(all.len(), 5000);
    assert_eq!(store.window("nosuch", &WindowSpec::new()).unwrap().len(), 0);
}
