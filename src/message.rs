//! Messages: the OpenAI chat format, and the entries that reads yield.

use std::fmt;

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{Lsn, Timestamp};

/// One message or item of a conversation: any JSON object, with the OpenAI chat fields typed.
///
/// Every JSON object decodes: chat messages (`{"role":"user","content":"hi"}`), and items
/// without a role, such as the OpenAI Agents SDK's and Responses API's
/// `{"type":"function_call_output","call_id":"c1","output":"42"}`. A named field whose value
/// does not have the expected shape (a `role` that is not a string, `tool_calls` elements that
/// are not [`ToolCall`]s, ...) is left in [`ChatMessage::extra`] instead of failing the decode.
///
/// Fields this type does not name are kept in [`ChatMessage::extra`] and written back, so
/// a message round-trips through `ChatMessage` without losing anything: the JSON written back
/// equals the JSON read as a value (key order may change; use the raw read API for byte-exact
/// round trips).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// Who wrote it; `None` for items without a (string) `role`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The content: absent (`None`), null, a string, an array of content parts, or any
    /// other JSON value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// An optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A legacy function call (as in Automata's `FunctionCall`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// Tool calls made by an assistant message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The tool call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field, preserved (and any named field whose value has another shape).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with a role and text content.
    #[must_use]
    pub fn new(role: Role, text: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Some(role),
            content: Some(Content::Text(text.into())),
            name: None,
            function_call: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// A `system` message.
    #[must_use]
    pub fn system(text: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::System, text)
    }

    /// A `user` message.
    #[must_use]
    pub fn user(text: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::User, text)
    }

    /// An `assistant` message.
    #[must_use]
    pub fn assistant(text: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::Assistant, text)
    }

    /// A `tool` message answering the tool call `tool_call_id`.
    #[must_use]
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> ChatMessage {
        ChatMessage {
            tool_call_id: Some(tool_call_id.into()),
            ..ChatMessage::new(Role::Tool, text)
        }
    }

    /// The author's role; `None` for an item without one.
    #[must_use]
    pub fn role(&self) -> Option<&Role> {
        self.role.as_ref()
    }

    /// The content as text, when it is a string.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Some(Content::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The tool calls of an assistant message; empty when it has none.
    #[must_use]
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }

    /// The item's `type` field when it is a string: `"message"`, `"function_call"`,
    /// `"function_call_output"`... in the Responses API and the Agents SDK. Chat messages
    /// have none.
    #[must_use]
    pub fn item_type(&self) -> Option<&str> {
        self.extra.get("type").and_then(Value::as_str)
    }

    /// The item's `call_id` field when it is a string: the id that pairs a Responses-API
    /// `function_call` with its `function_call_output`. (A chat `tool` message names its
    /// call in [`ChatMessage::tool_call_id`] instead.)
    #[must_use]
    pub fn call_id(&self) -> Option<&str> {
        self.extra.get("call_id").and_then(Value::as_str)
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    /// Decodes any JSON object; fails only for other JSON values.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChatMessage, D::Error> {
        let object = Map::<String, Value>::deserialize(d)?;
        let mut m = ChatMessage {
            role: None,
            content: None,
            name: None,
            function_call: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        };
        for (key, value) in object {
            // A value of another shape than the field's stays in `extra`, under its key.
            let value = match (key.as_str(), value) {
                ("role", Value::String(s)) => {
                    m.role = Some(Role::from(s));
                    continue;
                }
                ("content", v) => {
                    m.content = Some(Content::from(v));
                    continue;
                }
                ("name", Value::String(s)) => {
                    m.name = Some(s);
                    continue;
                }
                ("tool_call_id", Value::String(s)) => {
                    m.tool_call_id = Some(s);
                    continue;
                }
                ("function_call", v) => match FunctionCall::deserialize(&v) {
                    Ok(call) => {
                        m.function_call = Some(call);
                        continue;
                    }
                    Err(_) => v,
                },
                ("tool_calls", v) => match Vec::<ToolCall>::deserialize(&v) {
                    Ok(calls) => {
                        m.tool_calls = Some(calls);
                        continue;
                    }
                    Err(_) => v,
                },
                (_, v) => v,
            };
            m.extra.insert(key, value);
        }
        Ok(m)
    }
}

/// The role of a message's author. Unknown roles are kept as [`Role::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// `system`
    System,
    /// `developer`
    Developer,
    /// `user`
    User,
    /// `assistant`
    Assistant,
    /// `tool`
    Tool,
    /// `function` (legacy function results)
    Function,
    /// Any other role string.
    Other(String),
}

impl Role {
    /// The role's wire name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
            Role::Other(s) => s,
        }
    }
}

impl From<String> for Role {
    fn from(s: String) -> Role {
        match Role::from(s.as_str()) {
            Role::Other(_) => Role::Other(s),
            known => known,
        }
    }
}

impl From<&str> for Role {
    fn from(s: &str) -> Role {
        match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            other => Role::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Role::from(&*s))
    }
}

/// A message's content: every JSON value is one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// JSON `null` (for example an assistant message that only calls tools).
    Null,
    /// A plain string.
    Text(String),
    /// An array of content parts (text, images, files...), kept as JSON.
    Parts(Vec<Value>),
    /// Any other JSON value (an object, a number, a boolean), kept as is.
    Other(Value),
}

impl From<Value> for Content {
    fn from(v: Value) -> Content {
        match v {
            Value::Null => Content::Null,
            Value::String(s) => Content::Text(s),
            Value::Array(parts) => Content::Parts(parts),
            other => Content::Other(other),
        }
    }
}

/// A function call: a name and its arguments as a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, as the model wrote them (a JSON string).
    pub arguments: String,
}

/// One tool call of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed by the `tool` message that answers it.
    pub id: String,
    /// The tool type (`"function"`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function called.
    pub function: FunctionCall,
    /// Every other field, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message as read back, with where it sits in the log.
///
/// Serializes as `{"interaction_id":..,"lsn":..,"timestamp":..,"message":..}`, with the LSN
/// and the timestamp as numbers (the timestamp in microseconds since the Unix epoch, as the
/// CLI's `--meta` output writes it; its `Display` is RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry<T> {
    /// 1-based, gapless position in its session.
    pub interaction_id: u64,
    /// The record's log sequence number.
    pub lsn: Lsn,
    /// When it was appended.
    pub timestamp: Timestamp,
    /// The message: decoded, or its raw JSON bytes.
    pub message: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shapes_round_trip() {
        let json = r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}],"refusal":null}"#;
        let m: ChatMessage = serde_json::from_str(json).unwrap();
        assert_eq!(m.role(), Some(&Role::Assistant));
        assert_eq!(m.content, Some(Content::Null));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(m.extra.get("refusal"), Some(&Value::Null));
        let back: Value = serde_json::to_value(&m).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(json).unwrap());
    }

    #[test]
    fn absent_content_stays_absent_and_unknown_roles_survive() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"critic","function_call":{"name":"f","arguments":"{}"}}"#,
        )
        .unwrap();
        assert_eq!(m.role(), Some(&Role::Other("critic".into())));
        assert_eq!(m.content, None);
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"role":"critic","function_call":{"name":"f","arguments":"{}"}}"#
        );
    }

    #[test]
    fn content_parts_are_kept_as_json() {
        let json = r#"{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}"#;
        let m: ChatMessage = serde_json::from_str(json).unwrap();
        assert!(matches!(&m.content, Some(Content::Parts(p)) if p.len() == 2));
        assert_eq!(serde_json::to_string(&m).unwrap(), json);
    }

    #[test]
    fn any_json_object_decodes_and_round_trips() {
        for json in [
            r#"{"type":"function_call_output","call_id":"c1","output":"42"}"#,
            r#"{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}"#,
            r#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}"#,
            r#"{}"#,
            r#"{"role":7,"content":{"a":1},"name":["x"],"tool_call_id":3,"function_call":"f"}"#,
            r#"{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}},{"odd":true}]}"#,
            r#"{"role":"user","content":12.5}"#,
            r#"{"content":true,"tool_calls":null}"#,
        ] {
            let m: ChatMessage =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let back = serde_json::to_value(&m).unwrap();
            assert_eq!(back, serde_json::from_str::<Value>(json).unwrap(), "{json}");
            let again: ChatMessage = serde_json::from_value(back).unwrap();
            assert_eq!(again, m, "{json}");
        }
    }

    #[test]
    fn item_helpers_read_sdk_items() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}"#,
        )
        .unwrap();
        assert_eq!(m.role(), None);
        assert_eq!(m.item_type(), Some("function_call"));
        assert_eq!(m.call_id(), Some("c1"));
        assert_eq!(m.name.as_deref(), Some("f"));
        assert!(m.tool_calls().is_empty());
        assert_eq!(m.text(), None);

        // Odd shapes of named fields land in `extra`; the typed fields stay empty.
        let m: ChatMessage =
            serde_json::from_str(r#"{"role":7,"tool_calls":[{"odd":true}],"content":{"a":1}}"#)
                .unwrap();
        assert_eq!(m.role(), None);
        assert_eq!(m.extra.get("role"), Some(&Value::from(7)));
        assert!(m.tool_calls.is_none() && m.extra.contains_key("tool_calls"));
        assert!(matches!(&m.content, Some(Content::Other(Value::Object(_)))));

        let m = ChatMessage::assistant("x");
        assert_eq!(m.role(), Some(&Role::Assistant));
        assert_eq!((m.item_type(), m.call_id()), (None, None));
    }

    #[test]
    fn only_objects_decode() {
        for json in ["[]", "1", "\"s\"", "null"] {
            assert!(serde_json::from_str::<ChatMessage>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn entries_serialize_with_numeric_lsn_and_timestamp() {
        let e = Entry {
            interaction_id: 3,
            lsn: Lsn(9),
            timestamp: Timestamp(1_700_000_000_123_456),
            message: ChatMessage::user("hi"),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"interaction_id":3,"lsn":9,"timestamp":1700000000123456,"message":{"role":"user","content":"hi"}}"#
        );
    }
}
