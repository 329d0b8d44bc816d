//! The conversations `convlog demo` appends, generated from a seeded PRNG before the clock
//! starts: system prompts, user turns, assistant answers, tool calls with their results, of
//! skewed sizes, in sessions of Zipf-skewed lengths, scheduled over the agents.

use convlog::io::sim::SplitMix;
use convlog::{ChatMessage, Content, FunctionCall, Role, ToolCall};
use serde_json::{Map, Value, json};

pub(super) enum Op {
    /// Appends a message to the session.
    Append(Box<ChatMessage>),
    /// Regenerates: removes the session's last message (an answer about to be redone).
    Pop,
}

/// One conversation, generated ahead of time.
pub(super) struct Conversation {
    pub(super) id: String,
    pub(super) ops: Vec<Op>,
}

/// Splits `total` messages over `n` sessions with Zipf weights `1/(i+1)^s`, each at least 1.
pub(super) fn zipf_sizes(n: usize, total: u64, s: f64) -> Vec<u64> {
    let weights: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect();
    let sum: f64 = weights.iter().sum();
    let spare = total - n as u64;
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| 1 + (spare as f64 * w / sum).floor() as u64)
        .collect();
    let mut left = total - sizes.iter().sum::<u64>();
    let mut i = 0;
    while left > 0 {
        sizes[i % n] += 1;
        left -= 1;
        i += 1;
    }
    sizes
}

/// Interleaves the conversations over the agents: conversation `c` belongs to agent
/// `c % agents`, which takes a random one of its conversations' next turn at each step.
/// Returns, per agent, `(conversation, op)` indexes in execution order.
pub(super) fn schedule(
    conversations: &[Conversation],
    agents: usize,
    seed: u64,
) -> Vec<Vec<(usize, usize)>> {
    (0..agents)
        .map(|a| {
            let mut rng = Rng::new(seed ^ 0xA6E7_0000 ^ a as u64);
            let mut mine: Vec<(usize, usize)> = (a..conversations.len())
                .step_by(agents)
                .map(|c| (c, 0))
                .collect();
            let mut order = Vec::new();
            while !mine.is_empty() {
                let k = rng.below(mine.len() as u64) as usize;
                let (c, next) = mine[k];
                // A turn: everything up to and including the next assistant text (or pop).
                let ops = &conversations[c].ops;
                let mut i = next;
                loop {
                    order.push((c, i));
                    i += 1;
                    let end_of_turn = match ops.get(i - 1) {
                        Some(Op::Append(m)) => {
                            m.role() == Some(&Role::Assistant) && m.tool_calls.is_none()
                                || m.role() == Some(&Role::System)
                        }
                        _ => false,
                    };
                    if i >= ops.len() || end_of_turn {
                        break;
                    }
                }
                if i >= ops.len() {
                    mine.swap_remove(k);
                } else {
                    mine[k].1 = i;
                }
            }
            order
        })
        .collect()
}

/// The agents, by role; conversation `c` is held by agent `c % agents`.
const AGENTS: [(&str, &str); 6] = [
    (
        "support-bot",
        "You are a customer support agent for a cloud hosting company.",
    ),
    (
        "code-reviewer",
        "You review pull requests and explain problems precisely.",
    ),
    (
        "research-assistant",
        "You search papers and the web, then summarise what you find with sources.",
    ),
    (
        "sql-analyst",
        "You answer business questions by writing and running SQL.",
    ),
    (
        "travel-planner",
        "You plan trips: trains, flights, hotels, weather.",
    ),
    (
        "ops-oncall",
        "You triage production incidents from alerts, logs and metrics.",
    ),
];

/// Tools the agents call, with an argument name.
const TOOLS: [(&str, &str); 8] = [
    ("search_docs", "query"),
    ("read_file", "path"),
    ("run_sql", "sql"),
    ("http_get", "url"),
    ("get_weather", "city"),
    ("grep_logs", "pattern"),
    ("create_ticket", "title"),
    ("run_tests", "filter"),
];

const WORDS: [&str; 64] = [
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "this",
    "be",
    "we",
    "can",
    "you",
    "not",
    "but",
    "request",
    "latency",
    "store",
    "session",
    "message",
    "deploy",
    "error",
    "timeout",
    "retry",
    "config",
    "query",
    "index",
    "result",
    "user",
    "agent",
    "tool",
    "cache",
    "region",
    "replica",
    "invoice",
    "customer",
    "ticket",
    "branch",
    "commit",
    "test",
    "flaky",
    "memory",
    "disk",
    "segment",
    "budget",
    "flight",
    "hotel",
    "train",
    "paper",
    "dataset",
    "model",
    "prompt",
    "token",
    "summary",
    "metric",
    "alert",
    "rollback",
    "schema",
    "migration",
];

const UNICODE: [&str; 12] = [
    "café",
    "naïve",
    "Zürich",
    "東京",
    "→",
    "✓",
    "😀",
    "Ωmega",
    "≥",
    "–",
    "ß",
    "Привет",
];

/// One conversation of about `n` messages (exactly `n` appends), held by agent `c % agents`.
pub(super) fn conversation(seed: u64, c: usize, agents: usize, n: u64) -> Conversation {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c as u64);
    let agent = c % agents;
    let (name, persona) = AGENTS[agent % AGENTS.len()];
    // Plain, stable ids (`support-bot-1`, `code-reviewer-2`, ...) that docs can name. The
    // draw that once made a random suffix is kept, so a seed still generates the same text.
    let _ = rng.next();
    let id = format!("{name}-{}", c + 1);
    let mut b = Ops {
        ops: Vec::new(),
        left: n,
    };
    let system_len = rng.skewed(300, 2500);
    b.push(ChatMessage::system(format!(
        "{persona} {}",
        text(&mut rng, system_len)
    )));
    let mut call = 0u64;
    while b.left > 0 {
        let user_len = if rng.chance(0.15) {
            rng.skewed(400, 6000)
        } else {
            rng.skewed(15, 400)
        };
        b.push(ChatMessage::user(text(&mut rng, user_len)));
        // Tool rounds, then a final answer.
        while b.left > 0 && rng.chance(0.4) {
            let k = 1 + rng.below(3) as usize;
            let calls: Vec<ToolCall> = (0..k)
                .map(|_| {
                    call += 1;
                    tool_call(&mut rng, call)
                })
                .collect();
            let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
            b.push(ChatMessage {
                content: Some(Content::Null),
                tool_calls: Some(calls),
                ..ChatMessage::assistant("")
            });
            for id in ids {
                let len = rng.skewed(40, 8000);
                let result = if rng.chance(0.5) {
                    json!({ "ok": true, "rows": rng.below(500), "data": text(&mut rng, len) })
                        .to_string()
                } else {
                    text(&mut rng, len)
                };
                b.push(ChatMessage::tool(id, result));
            }
        }
        let answer_len = rng.skewed(60, 3000);
        // Now and then the user asks to regenerate the answer: a pop, then a new one.
        if b.push(answer(&mut rng, answer_len)) && rng.chance(0.03) {
            b.ops.push(Op::Pop);
            b.left += 1;
            let answer_len = rng.skewed(60, 3000);
            b.push(answer(&mut rng, answer_len));
        }
    }
    Conversation { id, ops: b.ops }
}

/// Ops of a conversation being generated, and how many more messages it may append.
struct Ops {
    ops: Vec<Op>,
    left: u64,
}

impl Ops {
    /// Appends `m` unless the conversation is full; says whether it did.
    fn push(&mut self, m: ChatMessage) -> bool {
        if self.left == 0 {
            return false;
        }
        self.ops.push(Op::Append(Box::new(m)));
        self.left -= 1;
        true
    }
}

/// A call of a random tool with JSON arguments (a string, as chat APIs carry them).
fn tool_call(rng: &mut Rng, call: u64) -> ToolCall {
    let (tool, arg) = TOOLS[rng.below(TOOLS.len() as u64) as usize];
    let value_len = rng.skewed(5, 120);
    let arguments = json!({ arg: text(rng, value_len), "limit": rng.below(50) + 1 }).to_string();
    ToolCall {
        id: format!("call_{call:06}_{:06x}", rng.next() as u32 & 0xFF_FFFF),
        kind: "function".into(),
        function: FunctionCall {
            name: tool.into(),
            arguments,
        },
        extra: Map::new(),
    }
}

/// An assistant answer with token usage, as chat APIs return it.
fn answer(rng: &mut Rng, len: usize) -> ChatMessage {
    let mut m = ChatMessage::assistant(text(rng, len));
    let mut usage = Map::new();
    usage.insert("prompt_tokens".into(), Value::from(rng.below(8000) + 50));
    usage.insert("completion_tokens".into(), Value::from(len as u64 / 4 + 1));
    m.extra.insert("usage".into(), Value::Object(usage));
    m
}

/// About `len` bytes of prose, sometimes with unicode, quotes, and code blocks.
fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut sentence_start = true;
    while s.len() < len {
        if rng.chance(0.004) && len > 200 {
            s.push_str("\n\n```python\ndef handler(event):\n    return {\"status\": \"ok\", \"path\": \"C:\\\\tmp\"}\n```\n\n");
            sentence_start = true;
            continue;
        }
        let word = if rng.chance(0.02) {
            UNICODE[rng.below(UNICODE.len() as u64) as usize]
        } else {
            WORDS[rng.below(WORDS.len() as u64) as usize]
        };
        if sentence_start {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push(' ');
            }
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                s.extend(first.to_uppercase());
                s.push_str(chars.as_str());
            }
            sentence_start = false;
        } else {
            s.push(' ');
            if rng.chance(0.01) {
                s.push('"');
                s.push_str(word);
                s.push('"');
            } else {
                s.push_str(word);
            }
        }
        if rng.chance(0.08) {
            s.push_str(if rng.chance(0.1) { "?" } else { "." });
            if rng.chance(0.1) {
                s.push('\n');
            }
            sentence_start = true;
        }
    }
    s
}

/// The demo's draws, on the library's SplitMix64 stream.
struct Rng(SplitMix);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-uniform in `[min, max]`: most values small, a long tail of large ones.
    fn skewed(&mut self, min: usize, max: usize) -> usize {
        let (lo, hi) = ((min as f64).ln(), (max as f64).ln());
        (lo + self.unit() * (hi - lo)).exp() as usize
    }
}
