"""An OpenAI Agents SDK session kept in a convlog store (``pip install convlog-store[agents]``).

``ConvlogSession`` implements the SDK's ``Session`` protocol, so it goes wherever the SDK
takes a session: ``Runner.run(agent, "...", session=ConvlogSession("user-42", "chats"))``,
``Runner.run_sync``, ``Runner.run_streamed``, or as the ``underlying_session`` of the SDK's
``EncryptedSession``.

Items are stored as opaque JSON, one record each, and come back as fresh objects equal to
what was added. ``db_path=":memory:"`` (the default, as for ``SQLiteSession``) is a
private store for this one object, in a temporary directory removed by ``close()``; any
other ``db_path`` is a store directory that sessions with other ids share, and that a later
object (or process) reopens.

The async methods run the store call in a worker thread (as ``asyncio.to_thread`` and the
SDK's ``SQLiteSession`` do, through a lighter hand-off: ``convlog._worker``): no blocking
I/O on the event loop's thread. Two exceptions never wait for anything:
``get_items(limit)`` for a limit of at most 64, when the store's in-memory cache of
recently read or written session tails holds those items, copies them on the loop's thread
(after the cheap check, every read makes, of whether another process wrote the store); and
``add_items`` of a few items in a store that does not sync every write (durability
``"buffered"`` or an interval) hands them to the page cache on the loop's thread with
``Store.try_append_batch`` (a few microseconds, a tenth of a thread hop), unless that would
wait: for another writer, thread or process, or for a sync; then the worker thread appends
them. One object may be used from several threads, each running its own loop.

Replacing the history: the SDK's session protocol has no replace method; its
``OpenAIResponsesCompactionSession`` uses two private hooks when the session's class has
them (as the SDK's ``SQLiteSession`` and ``RedisSession`` do), and ``ConvlogSession`` has
both. ``_get_compaction_snapshot`` serves automatic compaction: the last items, and a
``replace_suffix`` that swaps the part the model saw for the compacted items in one
``Store.replace`` (unless the session changed since), keeping the older history.
``_atomic_replace_items`` serves manual compaction: the whole history, by ``Store.replace``.
Either leaves the old history or the new one after a crash, never an empty session in
between. ``replace_items(items)`` is the whole replacement, to call directly;
``fork(new_id, at)`` starts another session of the same store with this one's first ``at``
items, shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from . import _errors, _worker
from ._convlog import Store, validate_session_id

try:  # the SDK's (private) snapshot type for suffix compaction, in openai-agents 0.24
    from agents.memory.session import _CompactionSnapshot
except ImportError:  # pragma: no cover - an SDK without it: no snapshot hook
    _CompactionSnapshot = None

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["ConvlogSession"]

#: The most items ``add_items`` appends on the event loop's thread (see the module docs).
INLINE_ITEMS = _worker.INLINE_ITEMS

_T = TypeVar("_T")

_CLOSED = "ConvlogSession is closed"


async def _finish(fut: asyncio.Future[_T]) -> _T:
    """Await a write to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a cancelled ``add_items`` has either written its items or not, and the
    caller is not told it failed while the write goes on. The SDK's sessions do the same."""
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if fut.done():
            raise
        while not fut.done():
            try:
                await asyncio.wait({fut})
            except asyncio.CancelledError:
                pass
        raise


def _read_tail(store: Store, sid: str, limit: int) -> tuple[tuple[int, int | None], list[str]]:
    """The stored JSON of the last ``limit`` items of ``sid``, and the session's version
    when it held them (read before and after, again if another write came in between)."""
    while True:
        version = store.version(sid)
        texts = store.tail_json(sid, limit)
        if store.version(sid) == version:
            return version, texts


def _replace_suffix(
    store: Store,
    sid: str,
    version: tuple[int, int | None],
    replaced: int,
    output: list[Any],
    prune_prefix: Callable[[Any], bool] | None,
) -> bool:
    """Makes ``sid`` its items before its last ``replaced`` ones at ``version`` (minus the
    leading ones ``prune_prefix`` says are expired), then ``output``, in one
    ``Store.replace``, if the session is still at ``version``; whether it did."""
    if store.version(sid) != version:
        return False  # stale: spare reading the items kept
    first = version[0] - replaced  # the id of the first item replaced
    keep_from = 1
    if prune_prefix is not None:
        for item in store.messages(sid, 1, first):
            if not prune_prefix(item):
                break
            keep_from += 1
    kept = list(store.messages_json(sid, keep_from, first))
    try:
        # The version is checked again under the store's write lock: any write since the
        # snapshot (a pop then an append too) refuses the replace.
        store.replace(sid, [*kept, *output], expected_version=version)
    except _errors.Conflict:
        return False
    return True


class _Sharers:
    """How many open sessions share one ``Store`` object (a session and its forks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 1

    def join(self) -> None:
        with self._lock:
            self._count += 1

    def leave(self) -> bool:
        """One fewer; whether it was the last."""
        with self._lock:
            self._count -= 1
            return self._count == 0


class ConvlogSession:
    """The OpenAI Agents SDK ``Session`` protocol on a convlog store.

    Args:
        session_id: the conversation's id: a str of 1 to 256 UTF-8 bytes without control
            characters (else ``convlog.InvalidSessionId``, a ``ValueError``).
        db_path: a store directory (created when missing), or ``":memory:"``.
        session_settings: an ``agents.SessionSettings`` (a dict is normalized with the
            SDK's own helper); its ``limit`` is the default of ``get_items``.
        durability: the store's durability (``"buffered"``, ``"always"`` or seconds), see
            ``convlog.Store``.
        key, key_file: the store's master key (32 bytes, or 64 hex digits as a str), or
            the path of a file holding it, to encrypt the store at rest (at most one), see
            ``convlog.Store``. Neither is kept on this object.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        db_path: str | os.PathLike[str] = ":memory:",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        *,
        durability: str | float | None = None,
        key: bytes | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        validate_session_id(session_id)
        self.session_id = session_id
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self.db_path = db_path
        self._closed = False
        self._store = Store(db_path, durability=durability, key=key, key_file=key_file)
        # add_items may append on the loop's thread: never when every write syncs.
        self._inline = durability != "always"
        # The open sessions sharing `_store` (this one and its forks): the last to close
        # closes it.
        self._sharers = _Sharers()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<ConvlogSession {self.session_id!r} in {os.fspath(self.db_path)!r}{state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(_CLOSED)

    def _run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """``fn(*args)`` in a worker thread (with the caller's context variables, as
        ``asyncio.to_thread``); a store closed meanwhile reads as closed."""
        self._check_open()

        def call() -> _T:
            try:
                return fn(*args)
            except _errors.Closed:
                raise RuntimeError(_CLOSED) from None

        return _worker.run(call)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items, oldest first (all of them when the limit is None).

        ``limit=None`` falls back to ``session_settings.limit``; ``0`` gives ``[]``; a
        negative limit gives every item (as ``SQLiteSession``, whose SQL ``LIMIT`` does)."""
        self._check_open()
        n = resolve_session_limit(limit, self.session_settings)
        if n is not None and n < 0:
            n = None
        elif n is not None:
            n = min(n, 2**64 - 1)  # more than a session can hold: every item
        if n == 0:
            return []
        if n is not None:
            # The last items of a session just read or written are in memory: served here,
            # without I/O (and without the hop to a worker thread).
            try:
                cached = self._store.tail_if_cached(self.session_id, n)
            except _errors.Closed:
                raise RuntimeError(_CLOSED) from None
            if cached is not None:
                return cached
        return await self._run(self._store.tail, self.session_id, n)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` atomically (all of them or, after a crash, none)."""
        self._check_open()
        if isinstance(items, (str, bytes, bytearray, Mapping)):
            # One item where a list belongs: list() would make it characters, bytes or keys.
            raise TypeError(f"add_items takes a list of items, not a {type(items).__name__}")
        if not items:
            return
        items = list(items)
        if self._inline:
            try:
                if _worker.append_inline(self._store, self.session_id, items):
                    return
            except _errors.Closed:
                raise RuntimeError(_CLOSED) from None
        await _finish(self._run(self._store.append_batch, self.session_id, items))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item of this session, or None when it is empty."""
        return await _finish(self._run(self._store.pop, self.session_id))

    async def clear_session(self) -> None:
        """Remove every item of this session; the session stays usable."""
        await _finish(self._run(self._store.clear, self.session_id))

    async def replace_items(self, items: list[TResponseInputItem]) -> None:
        """Make this session's history exactly ``items``, atomically (``Store.replace``):
        after a crash it holds the old history or the new one, and a concurrent reader sees
        one or the other, never the empty session that ``clear_session()`` then
        ``add_items()`` leaves in between. ``replace_items([])`` empties it."""
        self._check_open()
        await _finish(self._run(self._store.replace, self.session_id, list(items)))

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """The SDK's hook for whole-history replacement (``OpenAIResponsesCompactionSession``
        looks it up on the session's class): ``replace_items``, returning True. False for a
        subclass, as the SDK's own sessions do: a subclass may transform what ``add_items``
        stores, which this would bypass (the SDK then clears and adds)."""
        if type(self) is not ConvlogSession:
            return False
        await self.replace_items(items)
        return True

    async def _get_compaction_snapshot(
        self,
        limit: int,
        *,
        prune_prefix: Callable[[TResponseInputItem], bool] | None = None,
    ) -> Any:
        """The SDK's hook for automatic compaction of a suffix of the history
        (``OpenAIResponsesCompactionSession`` and ``EncryptedSession`` look it up): the last
        ``limit`` items, whether they are the whole history, and ``replace_suffix(start,
        output)``, which makes the history the items before ``items[start]`` followed by
        ``output``, as one ``Store.replace``, unless the session changed since this read
        (then it returns False and changes nothing). With ``prune_prefix``, the replacement
        also drops the leading items of the history it says are expired (EncryptedSession's
        TTL). None for a subclass, as the SDK's own sessions do (a subclass may transform
        what it stores, which this would bypass)."""
        self._check_open()
        if type(self) is not ConvlogSession or _CompactionSnapshot is None:
            return None
        store, sid = self._store, self.session_id
        version, texts = await self._run(_read_tail, store, sid, limit)
        items = [json.loads(t) for t in texts]

        async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
            replaced = len(texts[start:])
            if not replaced:
                return False
            replace = _replace_suffix
            return await _finish(
                self._run(replace, store, sid, version, replaced, list(output), prune_prefix)
            )

        return _CompactionSnapshot(items, len(texts) == version[0] - 1, replace_suffix)

    def fork(self, new_session_id: str, at: int | None = None) -> ConvlogSession:
        """A new session ``new_session_id`` in the same store, starting as this one's first
        ``at`` items (all of them when None), shared rather than copied (``Store.fork``: one
        record, whatever the length); from then on the two are independent. It shares this
        object's open store (a ``":memory:"`` store too, removed when the last of them
        closes) and its ``session_settings``. Raises ``convlog.SessionExists`` when
        ``new_session_id`` holds items.

        Synchronous (one small write, as ``close()``): call it from a worker thread when
        the store is opened with ``durability="always"``, which syncs."""
        self._check_open()
        validate_session_id(new_session_id)
        try:
            self._store.fork(self.session_id, new_session_id, at)
        except _errors.Closed:
            raise RuntimeError(_CLOSED) from None
        other = object.__new__(ConvlogSession)
        other.session_id = new_session_id
        other.session_settings = self.session_settings
        other.db_path = self.db_path
        other._closed = False
        other._store = self._store
        other._sharers = self._sharers
        other._inline = self._inline
        self._sharers.join()
        return other

    def close(self) -> None:
        """Close this session's handle on the store (a ``":memory:"`` store is removed once
        this session and every fork made from it are closed). Every later operation raises
        ``RuntimeError("ConvlogSession is closed")``."""
        if self._closed:
            return
        self._closed = True
        if self._sharers.leave():
            self._store.close()

    def __enter__(self) -> ConvlogSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
