//! The generated workload: sessions of Zipf-skewed length holding OpenAI-format messages.
//!
//! Everything is derived from one seed with a hand-written PRNG (SplitMix64), so two runs with
//! the same seed and size produce the same bytes, and both engines store exactly those bytes.

use convlog::io::sim::SplitMix;
use serde_json::{Value, json};

/// The workload's draws, on convlog's SplitMix64 stream.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }

    /// A length with mean about `mean`, spread from mean/4 to 2.5·mean (sum of two uniforms,
    /// skewed right like real message lengths).
    pub fn length(&mut self, mean: u64) -> usize {
        let a = self.range(mean / 4, mean);
        let b = self.range(0, mean * 3 / 2);
        (a + b / 2 + mean / 8) as usize
    }
}

/// Seed for one stream, mixed from the run's seed and a stream number.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut r = Rng::new(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    r.next_u64()
}

/// Which session each message goes to, and the session ids.
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    /// Session ids (UUID-formatted, 36 bytes, as agent frameworks typically use).
    pub sessions: Vec<String>,
    /// Messages per session; `lengths[0]` is the largest (Zipf rank 1).
    pub lengths: Vec<u64>,
    /// The session index of every message, in append order (sessions interleaved).
    pub order: Vec<u16>,
}

impl Workload {
    /// `messages` messages over `sessions` sessions whose lengths follow Zipf(`s`) by rank,
    /// interleaved uniformly at random.
    pub fn new(messages: usize, sessions: usize, s: f64, seed: u64) -> Workload {
        assert!((1..=u16::MAX as usize).contains(&sessions) && messages >= sessions);
        let weights: Vec<f64> = (1..=sessions).map(|r| (r as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut lengths: Vec<u64> = weights
            .iter()
            .map(|w| ((w / total) * messages as f64).round().max(1.0) as u64)
            .collect();
        // Make the sum exact by adjusting the largest session.
        let sum: u64 = lengths.iter().sum();
        lengths[0] = (lengths[0] + messages as u64).saturating_sub(sum).max(1);
        let mut rng = Rng::new(mix(seed, 1));
        let sessions_ids = (0..sessions).map(|_| uuid(&mut rng)).collect();
        let mut order: Vec<u16> = Vec::with_capacity(messages);
        for (i, &n) in lengths.iter().enumerate() {
            order.extend(std::iter::repeat_n(i as u16, n as usize));
        }
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        Workload {
            seed,
            sessions: sessions_ids,
            lengths,
            order,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The index of the largest session.
    pub fn largest(&self) -> usize {
        0
    }

    /// A generator of the messages, in append order.
    pub fn generator(&self) -> Generator<'_> {
        Generator {
            workload: self,
            sessions: (0..self.sessions.len())
                .map(|i| SessionGen::new(mix(self.seed, 1000 + i as u64)))
                .collect(),
            next: 0,
        }
    }

    /// Every message generated and kept in memory.
    pub fn materialize(&self) -> Corpus {
        let mut g = self.generator();
        let mut bytes = Vec::with_capacity(self.len() * 1100);
        let mut ends = Vec::with_capacity(self.len());
        while g.next_into(&mut bytes).is_some() {
            ends.push(bytes.len());
        }
        Corpus {
            session: self.order.clone(),
            ends,
            bytes,
        }
    }
}

/// Streams the workload's messages in append order.
pub struct Generator<'a> {
    workload: &'a Workload,
    sessions: Vec<SessionGen>,
    next: usize,
}

impl Generator<'_> {
    /// Appends the next message's JSON to `out` and returns its session index.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Option<u16> {
        let s = *self.workload.order.get(self.next)?;
        self.next += 1;
        let v = self.sessions[s as usize].next();
        serde_json::to_writer(&mut *out, &v).expect("serializing a Value cannot fail");
        Some(s)
    }
}

/// All messages of a workload, serialized once.
pub struct Corpus {
    pub session: Vec<u16>,
    ends: Vec<usize>,
    bytes: Vec<u8>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn input_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

impl Corpus {
    /// One long chat of `n` small messages (about 200 B of JSON each), all in session 0: a
    /// system prompt, then turns of `user` → (one turn in five) an `assistant` tool call and
    /// its `tool` result → `assistant` answer. For the session-operation lines, which need
    /// sessions of up to 1M messages built quickly.
    pub fn small_chat(n: usize, seed: u64) -> Corpus {
        let mut rng = Rng::new(mix(seed, 2));
        let mut bytes = Vec::with_capacity(n * 220);
        let mut ends = Vec::with_capacity(n);
        let mut turn = SmallTurn::System;
        while ends.len() < n {
            let v;
            (v, turn) = small_message(&mut rng, turn);
            serde_json::to_writer(&mut bytes, &v).expect("serializing a Value cannot fail");
            ends.push(bytes.len());
        }
        Corpus {
            session: vec![0; n],
            ends,
            bytes,
        }
    }
}

/// What the small chat says next.
enum SmallTurn {
    System,
    User,
    Call,
    Result(String),
    Answer,
}

/// The message for `turn`, and the turn after it.
fn small_message(rng: &mut Rng, turn: SmallTurn) -> (Value, SmallTurn) {
    match turn {
        SmallTurn::System => {
            let n = rng.length(170);
            let v = json!({"role": "system", "content": text(rng, n)});
            (v, SmallTurn::User)
        }
        SmallTurn::User => {
            let n = rng.length(160);
            let v = json!({"role": "user", "content": text(rng, n)});
            let next = if rng.chance(0.2) {
                SmallTurn::Call
            } else {
                SmallTurn::Answer
            };
            (v, next)
        }
        SmallTurn::Call => {
            let id = call_id(rng);
            let args = json!({"path": path(rng)}).to_string();
            let v = json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": id,
                "type": "function",
                "function": {"name": "read_file", "arguments": args},
            }]});
            (v, SmallTurn::Result(id))
        }
        SmallTurn::Result(id) => {
            let n = rng.length(110);
            let v = json!({"role": "tool", "tool_call_id": id, "content": text(rng, n)});
            (v, SmallTurn::Answer)
        }
        SmallTurn::Answer => {
            let n = rng.length(150);
            let v = json!({"role": "assistant", "content": text(rng, n)});
            (v, SmallTurn::User)
        }
    }
}

/// `n` UUID-formatted (36-byte) strings: session ids, idempotency keys.
pub fn uuids(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(mix(seed, 3));
    (0..n).map(|_| uuid(&mut rng)).collect()
}

/// Where one conversation is: system prompt, then turns of user → (assistant tool calls →
/// tool results)* → assistant answer.
struct SessionGen {
    rng: Rng,
    state: State,
    rounds_left: u32,
    pending_calls: Vec<(String, &'static str)>,
}

enum State {
    System,
    User,
    ToolCall,
    ToolResult,
    Answer,
}

const TOOLS: [&str; 6] = [
    "read_file",
    "search_code",
    "run_shell",
    "web_search",
    "edit_file",
    "list_directory",
];

impl SessionGen {
    fn new(seed: u64) -> SessionGen {
        SessionGen {
            rng: Rng::new(seed),
            state: State::System,
            rounds_left: 0,
            pending_calls: Vec::new(),
        }
    }

    fn next(&mut self) -> Value {
        match self.state {
            State::System => {
                self.state = State::User;
                let n = self.rng.length(1200);
                json!({"role": "system", "content": text(&mut self.rng, n)})
            }
            State::User => {
                self.rounds_left = self.rng.below(4) as u32;
                self.state = if self.rounds_left > 0 {
                    State::ToolCall
                } else {
                    State::Answer
                };
                let n = self.rng.length(450);
                json!({"role": "user", "content": text(&mut self.rng, n)})
            }
            State::ToolCall => {
                let calls = if self.rng.chance(0.3) { 2 } else { 1 };
                let mut tool_calls = Vec::new();
                self.pending_calls.clear();
                for _ in 0..calls {
                    let id = call_id(&mut self.rng);
                    let tool = TOOLS[self.rng.below(TOOLS.len() as u64) as usize];
                    let args = arguments(&mut self.rng, tool);
                    tool_calls.push(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": tool, "arguments": args},
                    }));
                    self.pending_calls.push((id, tool));
                }
                self.state = State::ToolResult;
                let content = if self.rng.chance(0.4) {
                    let n = self.rng.length(120);
                    Value::String(text(&mut self.rng, n))
                } else {
                    Value::Null
                };
                json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
            }
            State::ToolResult => {
                let (id, tool) = self.pending_calls.remove(0);
                if self.pending_calls.is_empty() {
                    self.rounds_left -= 1;
                    self.state = if self.rounds_left > 0 {
                        State::ToolCall
                    } else {
                        State::Answer
                    };
                }
                let n = self.rng.length(1300);
                let content = tool_output(&mut self.rng, tool, n);
                json!({"role": "tool", "tool_call_id": id, "content": content})
            }
            State::Answer => {
                self.state = State::User;
                let n = self.rng.length(850);
                json!({"role": "assistant", "content": text(&mut self.rng, n)})
            }
        }
    }
}

const WORDS: [&str; 96] = [
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "this",
    "it",
    "be",
    "as",
    "are",
    "we",
    "you",
    "can",
    "not",
    "function",
    "file",
    "error",
    "value",
    "return",
    "test",
    "config",
    "user",
    "request",
    "response",
    "server",
    "client",
    "data",
    "type",
    "string",
    "number",
    "list",
    "result",
    "call",
    "module",
    "import",
    "package",
    "version",
    "build",
    "run",
    "check",
    "update",
    "change",
    "line",
    "code",
    "index",
    "query",
    "table",
    "session",
    "message",
    "tool",
    "agent",
    "model",
    "token",
    "context",
    "output",
    "input",
    "path",
    "directory",
    "log",
    "debug",
    "warning",
    "failed",
    "passed",
    "should",
    "would",
    "could",
    "because",
    "when",
    "then",
    "also",
    "which",
    "here",
    "there",
    "now",
    "let's",
    "I'll",
    "first",
    "next",
    "finally",
    "fix",
    "issue",
    "bug",
    "feature",
    "API",
    "endpoint",
    "JSON",
    "Rust",
    "Python",
    "async",
    "struct",
];

/// Prose of about `n` bytes: words, punctuation, the odd quote, newline and code span (so the
/// JSON carries escapes like real messages do).
fn text(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    let mut sentence = 0;
    while s.len() < n {
        if sentence == 0 && !s.is_empty() {
            s.push(' ');
        }
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        match rng.below(40) {
            0 => {
                s.push('"');
                s.push_str(w);
                s.push('"');
            }
            1 => {
                s.push('`');
                s.push_str(w);
                s.push_str("()`");
            }
            2 => s.push_str(&rng.below(10_000).to_string()),
            _ => s.push_str(w),
        }
        sentence += 1;
        if sentence > 6 && rng.chance(0.15) {
            s.push_str(if rng.chance(0.2) { ".\n\n" } else { "." });
            sentence = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

fn call_id(rng: &mut Rng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from("call_");
    for _ in 0..24 {
        s.push(ALNUM[rng.below(ALNUM.len() as u64) as usize] as char);
    }
    s
}

fn path(rng: &mut Rng) -> String {
    const DIRS: [&str; 6] = ["src", "src/store", "tests", "lib/util", "app/api", "docs"];
    const EXT: [&str; 4] = ["rs", "py", "ts", "md"];
    format!(
        "{}/{}_{}.{}",
        DIRS[rng.below(6) as usize],
        WORDS[20 + rng.below(60) as usize],
        WORDS[20 + rng.below(60) as usize],
        EXT[rng.below(4) as usize]
    )
}

/// The `arguments` string of a tool call: JSON text, as the OpenAI API sends it.
fn arguments(rng: &mut Rng, tool: &str) -> String {
    let v = match tool {
        "read_file" | "list_directory" => json!({"path": path(rng)}),
        "edit_file" => {
            let n = rng.length(200);
            json!({"path": path(rng), "old": text(rng, n / 2), "new": text(rng, n)})
        }
        "run_shell" => {
            json!({"command": format!("cargo test -p {} -- --nocapture", WORDS[rng.below(96) as usize]), "timeout_s": 120})
        }
        _ => {
            let n = rng.length(40);
            json!({"query": text(rng, n), "max_results": 5})
        }
    };
    v.to_string()
}

fn tool_output(rng: &mut Rng, tool: &str, n: usize) -> String {
    match tool {
        "read_file" | "edit_file" => {
            let mut s = String::with_capacity(n + 64);
            let mut line = 1;
            while s.len() < n {
                let w = rng.length(40);
                s.push_str(&format!("{line:>4}\t    {}\n", text(rng, w)));
                line += 1;
            }
            s
        }
        "list_directory" => {
            let mut s = String::new();
            while s.len() < n {
                s.push_str(&path(rng));
                s.push('\n');
            }
            s
        }
        _ => text(rng, n),
    }
}

fn uuid(rng: &mut Rng) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let w = Workload::new(5000, 100, 1.1, 7);
        assert_eq!(w.len(), 5000);
        assert_eq!(w.lengths.iter().sum::<u64>(), 5000);
        let a = w.materialize();
        let b = Workload::new(5000, 100, 1.1, 7).materialize();
        assert_eq!(a.bytes, b.bytes);
        for i in 0..a.len() {
            let v: Value = serde_json::from_slice(a.get(i)).unwrap();
            assert!(v.is_object());
        }
        assert_eq!(w.sessions[0].len(), 36);
    }

    #[test]
    fn small_chat_is_small_and_well_formed() {
        let c = Corpus::small_chat(2000, 7);
        assert_eq!(c.len(), 2000);
        let mean = c.input_bytes() as f64 / c.len() as f64;
        assert!((150.0..260.0).contains(&mean), "mean {mean}");
        for i in 0..c.len() {
            let v: Value = serde_json::from_slice(c.get(i)).unwrap();
            assert!(v.is_object());
        }
        assert!(uuids(3, 7).iter().all(|u| u.len() == 36));
    }
}
