//! Messages: the OpenAI chat format, and the entries that reads yield.

use std::fmt;

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{Lsn, Timestamp};

/// One message in the OpenAI chat format.
///
/// Fields this type does not name are kept in [`ChatMessage::extra`] and written back, so
/// a message round-trips through `ChatMessage` without losing anything (key order of the
/// extra fields may change; use the raw read API for byte-exact round trips).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The content: absent, null, a string, or an array of content parts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub content: Option<Content>,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A legacy function call (as in Automata's `FunctionCall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The tool call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with a role and text content.
    #[must_use]
    pub fn new(role: Role, text: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
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

    /// The content as text, when it is a string.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Some(Content::Text(s)) => Some(s),
            _ => None,
        }
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Content>, D::Error> {
    Content::deserialize(d).map(Some)
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

/// A message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// JSON `null` (for example an assistant message that only calls tools).
    Null,
    /// A plain string.
    Text(String),
    /// An array of content parts (text, images, files...), kept as JSON.
    Parts(Vec<Value>),
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
#[derive(Debug, Clone, PartialEq)]
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
        assert_eq!(m.role, Role::Assistant);
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
        assert_eq!(m.role, Role::Other("critic".into()));
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
}
