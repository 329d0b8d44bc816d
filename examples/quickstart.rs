//! Writes a few conversations, reopens the store, reads them back, printing what it did.
//!
//! Run with `cargo run --release --example quickstart [DIR]` (default `./convlog-quickstart`).

use std::error::Error;
use std::time::Instant;

use convlog::{ChatMessage, Durability, Store};
use serde_json::json;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "convlog-quickstart".into());
    if std::path::Path::new(&dir).join("LOCK").exists() {
        std::fs::remove_dir_all(&dir)?; // a store this example made before
    }
    println!("store: {dir}");

    let store = Store::builder().durability(Durability::Always).open(&dir)?;
    for (session, topic) in [
        ("travel-agent", "a trip to Lisbon"),
        ("code-review", "a Rust PR"),
    ] {
        store.append(
            session,
            &ChatMessage::system("You are a helpful assistant."),
        )?;
        store.append(
            session,
            &ChatMessage::user(format!("Help me with {topic}.")),
        )?;
        // An assistant turn that calls a tool, and the tool's answer.
        store.append(
            session,
            &json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "search", "arguments": format!("{{\"q\":\"{topic}\"}}")}}]}),
        )?;
        store.append(session, &ChatMessage::tool("call_1", "3 results found"))?;
        let r = store.append(
            session,
            &ChatMessage::assistant(format!("Here is a plan for {topic}.")),
        )?;
        println!(
            "  {session}: 5 messages appended durably, last LSN {}",
            r.lsn
        );
    }
    let popped = store.pop("code-review")?;
    let popped = popped.and_then(|e| e.message.text().map(str::to_owned));
    println!("  popped the last message of code-review: {popped:?}");
    drop(store);

    let started = Instant::now();
    let store = Store::open(&dir)?;
    let report = store.recovery_report();
    println!(
        "reopened in {:?}: {} segment(s), {} records, {}",
        started.elapsed(),
        report.segments_scanned,
        report.records,
        report.classification()
    );
    for s in store.sessions() {
        println!("session {} ({} messages)", s.id, s.count);
        for e in store.messages(&s.id) {
            let e = e?;
            let text = e.message.text().map(str::to_owned).unwrap_or_else(|| {
                let calls = e.message.tool_calls();
                format!("<{} tool call(s)>", calls.len())
            });
            let role = e.message.role().map_or("-", |r| r.as_str());
            println!("  #{} [{role}] {text}", e.interaction_id);
        }
    }
    let last2: Vec<u64> = store
        .tail("travel-agent", 2)
        .map(|e| e.map(|e| e.interaction_id))
        .collect::<Result<_, _>>()?;
    println!("tail(2) of travel-agent: interaction ids {last2:?}");
    Ok(())
}
