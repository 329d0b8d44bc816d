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
    InvalidMessage,
    InvalidOption,
    InvalidSessionId,
    IoError,
    Locked,
    NotAStore,
    Poisoned,
    ReadOnly,
    RecordTooLarge,
    SessionExists,
    UnsupportedFormat,
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
    "InvalidMessage",
    "InvalidOption",
    "InvalidSessionId",
    "IoError",
    "Locked",
    "Messages",
    "NotAStore",
    "Poisoned",
    "ReadOnly",
    "Receipt",
    "RecordTooLarge",
    "SessionExists",
    "SessionInfo",
    "Store",
    "Subscription",
    "UnsupportedFormat",
    "validate_session_id",
]
