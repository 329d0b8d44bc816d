//! History windows: the longest recent suffix of a session that fits a budget and that a
//! model API accepts (it never starts inside a tool call's exchange).

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;

use super::Store;
use super::read::RawMessages;
use crate::error::Result;
use crate::message::Entry;

/// What [`Store::window`] may return: at most so many messages and so many bytes of message
/// JSON, and whether the session's leading system message comes first.
///
/// Default = no limit, no system message kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct WindowSpec {
    /// Most messages in the window (the kept system message included).
    pub max_messages: Option<u64>,
    /// Most bytes of message JSON in the window (the kept system message included).
    pub max_bytes: Option<u64>,
    /// Put the session's first message first when it is a `system` (or `developer`)
    /// message, counted in the budget.
    pub keep_system: bool,
}

impl WindowSpec {
    /// No limit, no system message kept.
    pub fn new() -> WindowSpec {
        WindowSpec::default()
    }

    /// At most `n` messages. Default = no limit.
    pub fn max_messages(mut self, n: u64) -> WindowSpec {
        self.max_messages = Some(n);
        self
    }

    /// At most `bytes` bytes of message JSON. Default = no limit.
    pub fn max_bytes(mut self, bytes: u64) -> WindowSpec {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether the session's leading system message comes first. Default = `false`.
    pub fn keep_system(mut self, keep: bool) -> WindowSpec {
        self.keep_system = keep;
        self
    }
}

/// The fields of a message that decide where a window may start; the rest is skipped.
#[derive(Debug, Default, Deserialize)]
struct Shape<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallId<'a>>>,
}

#[derive(Debug, Deserialize)]
struct CallId<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

impl Shape<'_> {
    /// A message of an unexpected shape counts as a plain message: no start, no call.
    fn of(json: &[u8]) -> Shape<'_> {
        serde_json::from_slice(json).unwrap_or_default()
    }

    fn role_is(&self, roles: &[&str]) -> bool {
        self.role.as_deref().is_some_and(|r| roles.contains(&r))
    }

    /// The call ids this message makes: an assistant's `tool_calls`, a Responses-API
    /// `function_call`.
    fn calls(&self) -> impl Iterator<Item = &str> {
        let chat = self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.id.as_deref());
        let item = (self.kind.as_deref() == Some("function_call"))
            .then_some(self.call_id.as_deref())
            .flatten();
        chat.chain(item)
    }

    /// The call id this message answers: a `tool` message, a `function_call_output`.
    fn answers(&self) -> Option<&str> {
        if self.role_is(&["tool"]) {
            return self.tool_call_id.as_deref();
        }
        (self.kind.as_deref() == Some("function_call_output"))
            .then_some(self.call_id.as_deref())
            .flatten()
    }
}

/// How many messages the first attempt reads back from the end; each further attempt reads
/// four times as many (so the work stays within a constant factor of the window).
const FIRST_READ: u64 = 64;

impl Store {
    /// The longest suffix of `session` that fits `spec`'s budget and starts at a `user`
    /// message (or at the session's start), such that no tool result in it is cut off from
    /// the call it answers: an assistant message with `tool_calls` stays with the `tool`
    /// messages answering it (parallel calls included), and a Responses-API `function_call`
    /// with its `function_call_output` (matched by `call_id`). With
    /// [`WindowSpec::keep_system`], the session's leading system message comes first,
    /// counted in the budget. Oldest first; raw JSON, as stored.
    ///
    /// Costs O(window): messages are read back from the end, only as far as the budget
    /// reaches. It is a snapshot, like every read. An empty result when nothing fits.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] if a message it reads fails its checksums; [`crate::Error::Io`].
    pub fn window(&self, session: &str, spec: &WindowSpec) -> Result<Vec<Entry<Vec<u8>>>> {
        let mut reach = FIRST_READ;
        loop {
            let (mut tail, mut head) = self.window_reads(session, reach);
            let count = tail.last_id();
            let first = if spec.keep_system {
                head.next().transpose()?
            } else {
                None
            };
            let system = first.filter(|e| Shape::of(&e.message).role_is(&["system", "developer"]));
            match choose(&mut tail, count, system, spec)? {
                Some(window) => return Ok(window),
                None => reach = reach.saturating_mul(4),
            }
        }
    }

    /// The last `reach` messages of `session`, and its first, under one guard.
    fn window_reads(&self, session: &str, reach: u64) -> (RawMessages, RawMessages) {
        let state = self.view();
        let tail = RawMessages::from_state(&state, self.inner.crypt.as_ref(), session, |count| {
            count.saturating_sub(reach) + 1..count + 1
        });
        let head = RawMessages::from_state(&state, self.inner.crypt.as_ref(), session, |_| 1..2);
        (tail, head)
    }
}

/// Picks the window from `tail` (the session's last messages, ids up to `count`), or `None`
/// when the budget reaches past what `tail` holds (read further back, then).
fn choose(
    tail: &mut RawMessages,
    count: u64,
    system: Option<Entry<Vec<u8>>>,
    spec: &WindowSpec,
) -> Result<Option<Vec<Entry<Vec<u8>>>>> {
    let (mut messages, mut bytes) = (0u64, 0u64);
    if let Some(s) = &system {
        (messages, bytes) = (1, s.message.len() as u64);
    }
    let fits = |m: u64, b: u64| {
        spec.max_messages.is_none_or(|max| m <= max) && spec.max_bytes.is_none_or(|max| b <= max)
    };
    let lowest = if system.is_some() { 2 } else { 1 };
    let mut read: Vec<Entry<Vec<u8>>> = Vec::new();
    // Call ids answered in the suffix whose call is not in it (yet, reading backwards).
    let mut unanswered: HashSet<String> = HashSet::new();
    // How many of `read` (from its end back) make the best window found so far.
    let mut best = 0;
    let mut id = count;
    while id >= lowest {
        let Some(entry) = tail.entry(id).transpose()? else {
            // Past what this read holds: read further back.
            return Ok(None);
        };
        (messages, bytes) = (messages + 1, bytes + entry.message.len() as u64);
        if !fits(messages, bytes) {
            break;
        }
        let shape = Shape::of(&entry.message);
        for call in shape.calls() {
            unanswered.remove(call);
        }
        if let Some(answer) = shape.answers() {
            unanswered.insert(answer.to_owned());
        }
        let starts = shape.role_is(&["user"]) || id == lowest;
        read.push(entry);
        if starts && unanswered.is_empty() {
            best = read.len();
        }
        id -= 1;
    }
    if !fits(
        u64::from(system.is_some()),
        system.as_ref().map_or(0, |s| s.message.len() as u64),
    ) {
        return Ok(Some(Vec::new()));
    }
    read.truncate(best);
    read.reverse();
    Ok(Some(system.into_iter().chain(read).collect()))
}
