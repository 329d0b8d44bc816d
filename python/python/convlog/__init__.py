"""convlog: an embedded, append-only store for the conversations of LLM agents.

``convlog.Store`` is the store itself (a Rust library; every call releases the GIL);
``Store.subscribe`` gives a live tail of it (``convlog.Subscription``, blocking or async).
``convlog.agents.ConvlogSession`` is an OpenAI Agents SDK session,
``convlog.langchain.ConvlogChatMessageHistory`` a LangChain chat history, and
``convlog.automata`` a drop-in for Automata's ``OpenAIAutomataConversationDatabase``.
"""

from __future__ import annotations

from ._errors import (
    AlreadyOpen,
    Closed,
    Compacting,
    CompactionMismatch,
    Conflict,
    Corrupt,
    Error,
    InvalidKey,
    InvalidMasterKey,
    InvalidMessage,
    InvalidOption,
    InvalidSessionId,
    IoError,
    KeyDestroyed,
    KeyRequired,
    Locked,
    NotAStore,
    NotEncrypted,
    Poisoned,
    ReadOnly,
    RecordTooLarge,
    SessionExists,
    UnsupportedFormat,
    WrongKey,
)
from ._convlog import (
    MAX_SESSION_ID_BYTES,
    CompactReport,
    Event,
    Messages,
    Receipt,
    SessionInfo,
    Store,
    Subscription,
    generate_key,
    validate_session_id,
)

__version__ = "0.1.0"

__all__ = [
    "MAX_SESSION_ID_BYTES",
    "AlreadyOpen",
    "Closed",
    "CompactReport",
    "Compacting",
    "CompactionMismatch",
    "Conflict",
    "Corrupt",
    "Error",
    "Event",
    "InvalidKey",
    "InvalidMasterKey",
    "InvalidMessage",
    "InvalidOption",
    "InvalidSessionId",
    "IoError",
    "KeyDestroyed",
    "KeyRequired",
    "Locked",
    "Messages",
    "NotAStore",
    "NotEncrypted",
    "Poisoned",
    "ReadOnly",
    "Receipt",
    "RecordTooLarge",
    "SessionExists",
    "SessionInfo",
    "Store",
    "Subscription",
    "UnsupportedFormat",
    "WrongKey",
    "generate_key",
    "validate_session_id",
]
