"""A drop-in for Automata's ``OpenAIAutomataConversationDatabase``, kept in a convlog store.

Automata's own example runs with only its imports changed::

    from convlog.automata import FunctionCall, OpenAIAutomataConversationDatabase, OpenAIChatMessage

    db = OpenAIAutomataConversationDatabase(db_path="path/to/db")
    message = OpenAIChatMessage(role="user", content="Hello, bot",
                                function_call=FunctionCall(function_name="Hello", kwargs={}))
    db.save_message(session_id="session1", message=message)
    messages_in_session = db.get_messages(session_id="session1")

Unlike the SQLite original, interaction ids are assigned by the store in one atomic step:
several threads (or agents) saving to one session get gapless ids 1, 2, 3, ... and each
message is stored once. ``db_path`` is a directory (a convlog store), not a SQLite file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ._convlog import CompactReport, Store, validate_session_id

__all__ = [
    "FunctionCall",
    "LLMChatMessage",
    "OpenAIAutomataConversationDatabase",
    "OpenAIChatMessage",
]


class FunctionCall:
    """A function call the model asked for: ``name`` and ``arguments`` (a dict).

    Accepts Automata's ``FunctionCall(name=..., arguments=...)`` and its documentation's
    ``FunctionCall(function_name=..., kwargs=...)``.
    """

    __slots__ = ("name", "arguments")

    def __init__(
        self,
        name: str | None = None,
        arguments: dict[str, Any] | None = None,
        *,
        function_name: str | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        if name is not None and function_name is not None:
            raise TypeError("give name or function_name, not both")
        if arguments is not None and kwargs is not None:
            raise TypeError("give arguments or kwargs, not both")
        name = name if name is not None else function_name
        if not isinstance(name, str):
            raise TypeError("FunctionCall needs a name (a str)")
        self.name = name
        self.arguments: dict[str, Any] = dict(
            arguments if arguments is not None else kwargs if kwargs is not None else {}
        )

    def to_dict(self) -> dict[str, str]:
        """The OpenAI wire form: ``{"name": ..., "arguments": "<JSON text>"}``."""
        # NaN and infinities are no JSON: refused here (ValueError), not stored as `NaN`.
        return {"name": self.name, "arguments": json.dumps(self.arguments, allow_nan=False)}

    @classmethod
    def from_response_dict(cls, response: dict[str, Any]) -> FunctionCall:
        """From the wire form (``arguments`` as JSON text, or already a dict). ValueError
        for anything else (a stored message another writer made, say)."""
        if not isinstance(response, dict) or not isinstance(response.get("name"), str):
            raise ValueError(f"not a function call (a dict with a str name): {response!r:.200}")
        arguments = response.get("arguments")
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        if arguments is not None and not isinstance(arguments, dict):
            raise ValueError(f"function call arguments are not a JSON object: {arguments!r:.200}")
        return cls(name=response["name"], arguments=arguments or {})

    def _asdict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    def __str__(self) -> str:
        return json.dumps(self._asdict())

    def __repr__(self) -> str:
        return f"FunctionCall(name={self.name!r}, arguments={self.arguments!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FunctionCall):
            return NotImplemented
        return (self.name, self.arguments) == (other.name, other.arguments)

    __hash__ = None  # type: ignore[assignment]


class LLMChatMessage:
    """A chat message: ``role`` and ``content``."""

    def __init__(self, role: str, content: str | None = None) -> None:
        self.role = role
        self.content = content

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


class OpenAIChatMessage(LLMChatMessage):
    """A message to or from the OpenAI chat API: ``role``, ``content``, ``function_call``."""

    def __init__(
        self,
        role: str,
        content: str | None = None,
        function_call: FunctionCall | None = None,
    ) -> None:
        super().__init__(role=role, content=content)
        if isinstance(function_call, dict):
            # The wire form (``{"name": ..., "arguments": ...}``), as the API returns it.
            function_call = FunctionCall.from_response_dict(function_call)
        elif function_call is not None and not isinstance(function_call, FunctionCall):
            raise TypeError(
                "function_call is a FunctionCall (or its wire-form dict), not "
                f"{type(function_call).__name__}"
            )
        self.function_call = function_call

    def __str__(self) -> str:
        return f"{self.role}:\ncontent={self.content}\nfunction_call={self.function_call}"

    def __repr__(self) -> str:
        return (
            f"OpenAIChatMessage(role={self.role!r}, content={self.content!r}, "
            f"function_call={self.function_call!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        if self.function_call is None:
            return {"role": self.role, "content": self.content}
        return {
            "role": self.role,
            "content": self.content,
            "function_call": self.function_call.to_dict(),
        }


def _check_session_id(session_id: object) -> None:
    if not isinstance(session_id, str):
        raise ValueError(f"The session_id must be a string, not {type(session_id).__name__}.")
    validate_session_id(session_id)  # convlog.InvalidSessionId, a ValueError


class OpenAIAutomataConversationDatabase:
    """Automata's conversation database: messages of many sessions in one store.

    ``db_path`` is the store's directory (created when missing). Bad session ids (not a
    str, empty, over 256 bytes, control characters) raise ``ValueError``
    (``convlog.InvalidSessionId`` for the last three).

    ``key`` or ``key_file`` (keyword-only, at most one; not in Automata's original) is the
    master key of an encrypted store, as for ``convlog.Store``; it is not kept on this
    object.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.db_path = db_path
        self._store = Store(db_path, key=key, key_file=key_file)

    def save_message(self, session_id: str, message: LLMChatMessage) -> int:
        """Append ``message`` to ``session_id``; return its interaction id (1-based)."""
        _check_session_id(session_id)
        if not isinstance(message, OpenAIChatMessage):
            raise ValueError("Expected an OpenAIChatMessage instance.")
        return self._store.append(session_id, message.to_dict()).interaction_id

    def get_messages(self, session_id: str) -> list[LLMChatMessage]:
        """Every message of ``session_id``, in interaction-id order."""
        _check_session_id(session_id)
        out: list[LLMChatMessage] = []
        for m in self._store.tail(session_id):
            fc = m.get("function_call")
            out.append(
                OpenAIChatMessage(
                    role=m.get("role"),
                    content=m.get("content"),
                    function_call=FunctionCall.from_response_dict(fc) if fc else None,
                )
            )
        return out

    def get_interaction_count(self, session_id: str) -> int:
        """How many messages ``session_id`` holds (its last interaction id)."""
        _check_session_id(session_id)
        return self._store.count(session_id)

    # Automata's private name for the same number.
    _get_last_interaction_id = get_interaction_count

    def delete_session(self, session_id: str) -> bool:
        """Delete ``session_id`` and every message of it; return whether it held any. Its
        id may be used again (from interaction id 1). ``compact()`` reclaims the space."""
        _check_session_id(session_id)
        return self._store.delete_session(session_id)

    def compact(self) -> CompactReport:
        """Rewrite the store without the messages of deleted sessions
        (``Store.compact(seal=True)``): their bytes leave the disk."""
        return self._store.compact(seal=True)

    def close(self) -> None:
        """Close the database; later calls raise ``convlog.Closed``."""
        self._store.close()
