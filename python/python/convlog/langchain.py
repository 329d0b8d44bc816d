"""A LangChain chat message history kept in a convlog store (``pip install convlog-store[langchain]``).

``ConvlogChatMessageHistory(session_id, path)`` is a ``BaseChatMessageHistory``: it works
under ``RunnableWithMessageHistory`` and wherever LangChain takes a chat history. Each
message is stored as ``langchain_core.messages.message_to_dict(message)`` (its type and
every field), so every message type comes back equal to what was added.

Note: langchain-core deprecated ``BaseChatMessageHistory`` in 1.6.4, for removal in 2.0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from . import _worker
from ._convlog import Store, validate_session_id

__all__ = ["ConvlogChatMessageHistory"]


def _dicts(messages: Sequence[BaseMessage]) -> list[dict]:
    """Each message as ``message_to_dict`` stores it; a TypeError for anything but
    ``BaseMessage`` objects in a sequence (nothing is written then)."""
    if isinstance(messages, (str, bytes, BaseMessage, Mapping)):
        raise TypeError(
            f"add_messages takes a sequence of BaseMessage, not a {type(messages).__name__}"
        )
    messages = list(messages)
    for m in messages:
        if not isinstance(m, BaseMessage):
            raise TypeError(f"a chat message is a BaseMessage, not a {type(m).__name__}")
    return [message_to_dict(m) for m in messages]


class ConvlogChatMessageHistory(BaseChatMessageHistory):
    """The chat history of ``session_id`` in the store at ``path`` (a directory, created
    when missing, that histories of other sessions share; or ``":memory:"``, a private store
    removed by ``close()``). ``durability``, ``key`` and ``key_file`` are those of
    ``convlog.Store`` (``key``/``key_file``: the master key of an encrypted store, not kept
    on this object)."""

    def __init__(
        self,
        session_id: str,
        path: str | os.PathLike[str] = ":memory:",
        *,
        durability: str | float | None = None,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        validate_session_id(session_id)
        self.session_id = session_id
        self.path = path
        self._store = Store(path, durability=durability, key=key, key_file=key_file)
        # aadd_messages may append on the loop's thread: never when every write syncs.
        self._inline = durability != "always"

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the session, oldest first: a new list of new objects."""
        return messages_from_dict(self._store.tail(self.session_id))

    async def aget_messages(self) -> list[BaseMessage]:
        return await _worker.run(lambda: self.messages)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically."""
        dicts = _dicts(messages)
        if dicts:
            self._store.append_batch(self.session_id, dicts)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically: on the event loop's thread when the write cannot
        wait (up to 16 messages, durability not ``"always"``, no other writer's turn and no
        sync due), else in a worker thread."""
        # Only this class's own add_messages may be bypassed (a subclass's override runs,
        # in a worker thread, as LangChain's default aadd_messages would run it).
        own = type(self).add_messages is ConvlogChatMessageHistory.add_messages
        if own and self._inline and 0 < len(messages) <= _worker.INLINE_ITEMS:
            dicts = _dicts(messages)
            if _worker.append_inline(self._store, self.session_id, dicts):
                return
            await _worker.run(self._store.append_batch, self.session_id, dicts)
            return
        await _worker.run(self.add_messages, messages)

    def add_message(self, message: BaseMessage) -> None:
        self.add_messages([message])

    def clear(self) -> None:
        """Remove every message of the session (a logged event; the session stays usable)."""
        self._store.clear(self.session_id)

    async def aclear(self) -> None:
        await _worker.run(self.clear)

    def close(self) -> None:
        """Close this history's handle on the store; later calls raise ``convlog.Closed``."""
        self._store.close()

    def __eq__(self, other: object) -> bool:
        """Histories (or a history and a list of messages) are equal when they hold equal
        messages in the same order."""
        if isinstance(other, BaseChatMessageHistory):
            return self.messages == other.messages
        if isinstance(other, list):
            return self.messages == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ConvlogChatMessageHistory({self.session_id!r}, {os.fspath(self.path)!r})"
