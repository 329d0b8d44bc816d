"""Type stubs of the native module: convlog's Rust ``Store``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, final

#: A message: a dict (or other mapping) of JSON values, or its JSON text as str or bytes.
Message = Mapping[str, Any] | str | bytes

MAX_SESSION_ID_BYTES: int

def validate_session_id(session: object) -> None:
    """Raise ``InvalidSessionId`` unless ``session`` is a str of 1 to 256 UTF-8 bytes
    without control characters."""

def generate_key() -> bytes:
    """A new random master key for ``Store(..., key=...)``: 32 bytes from the operating
    system's generator. Keep it (or a key file of it) safe: without it the store's messages
    cannot be read."""

@final
class Receipt:
    """Where an appended message went."""

    #: Its 1-based, gapless position in its session.
    interaction_id: int
    #: The record's log sequence number (store-wide, +1 per record).
    lsn: int
    #: When it was appended: microseconds since the Unix epoch.
    timestamp: int
    def __init__(self, interaction_id: int, lsn: int, timestamp: int) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SessionInfo:
    """A live session, as ``Store.sessions()`` lists it."""

    id: str
    #: How many messages it holds (its last interaction id).
    count: int
    #: When its first and last messages were appended (microseconds since the Unix epoch).
    first: int
    last: int
    def __init__(self, id: str, count: int, first: int, last: int) -> None: ...
    def __eq__(self, other: object) -> bool: ...

@final
class CompactReport:
    """What ``Store.compact()`` did."""

    #: Sealed segments read and replaced (0: there was nothing to reclaim).
    segments_rewritten: int
    #: Bytes of the segments replaced, and of the compacted segment that replaced them.
    bytes_before: int
    bytes_after: int
    #: Records kept, and dropped (removed messages, superseded events, dead keys and
    #: metadata).
    records_kept: int
    records_dropped: int
    #: Sessions none of whose records were kept (deleted, cleared): no byte of their
    #: messages in the compacted range remains in any file of the store.
    sessions_erased: list[str]
    #: Files removed from ``quarantine/`` afterwards: a compaction that drops records empties
    #: it (the bytes repairs and torn-tail cuts set aside may hold erased sessions' messages).
    quarantine_purged: int
    #: The compacted segment's id (the first LSN it covers), or None when none was written.
    segment: int | None
    #: How long it took, in seconds.
    duration: float
    def __eq__(self, other: object) -> bool: ...

@final
class Messages(Iterator[Any]):
    """A lazy iterator over a session's messages, oldest first: a snapshot of the messages
    present when it was made (later appends, pops and clears do not change it), read and
    decoded 64 at a time, so a session of millions is read in constant memory. Raises
    ``Closed`` if its ``Store`` is closed before it is exhausted. Threads may share one:
    their ``next()`` calls take turns, so each message is yielded once, in order."""

    def __iter__(self) -> Messages: ...
    def __next__(self) -> Any: ...
    def __length_hint__(self) -> int: ...

@final
class Event:
    """One change to the log, as a ``Subscription`` yields it.

    ``kind`` is ``"message"`` (a message appended: ``interaction_id``, ``timestamp``,
    ``message``), ``"cut"`` (a pop, truncate or clear: the session now holds its first
    ``keep`` messages) or ``"fork"`` (the session became the first ``at`` messages of
    ``source``). The fields of the other kinds are None."""

    kind: Literal["message", "cut", "fork"]
    session: str
    #: The LSN of the record that logged it (store-wide, increasing in log order).
    lsn: int
    interaction_id: int | None
    #: When the message was appended: microseconds since the Unix epoch.
    timestamp: int | None
    #: The message, decoded as ``tail()`` returns it (a fresh dict per event).
    message: Any | None
    #: The message's JSON text as stored.
    message_json: str | None
    keep: int | None
    source: str | None
    at: int | None

@final
class Subscription(Iterator[Event]):
    """A live tail of the log, from ``Store.subscribe``: the events of every process that
    writes the store, in LSN order. Appends in this process wake it at once; appends in
    another process within about 10 ms.

    ``for event in sub:`` blocks for the next event, with the GIL released (other threads
    run), in waits of at most 100 ms between which signals are checked (Ctrl-C raises
    ``KeyboardInterrupt``); it ends once ``close()`` is called, from another thread say.
    ``async for event in sub:`` waits in a thread of its own (never on the event loop's
    thread); cancelling it loses no event. A usable context manager.

    It holds the store open until it is closed; ``Store.close()`` closes it (then every
    call raises ``Closed``)."""

    def __iter__(self) -> Subscription: ...
    def __next__(self) -> Event: ...
    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting at most ``timeout`` seconds (for ever when None; 0
        polls); None when none came in time, or once closed."""
    def __aiter__(self) -> AsyncIterator[Event]: ...
    @property
    def position(self) -> int:
        """The LSN to resume from right after the last event yielded (that event's
        ``lsn + 1``): ``store.subscribe(sub.position)`` (with the same ``session=``) goes on
        where this one stopped. Before the first event: where it started reading the log
        (the ``since`` LSN, or for ``"now"`` and session subscriptions the LSN the next
        record was to carry when it was made; a session subscription's existing messages
        come before that)."""
    @property
    def closed(self) -> bool: ...
    def close(self) -> None:
        """Stop (idempotent): iteration ends, and the store handle it held is released."""
    def __enter__(self) -> Subscription: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class Store:
    """An open convlog store: one directory of segment files.

    ``path`` is the store's directory (created when missing), or ``":memory:"`` for a
    private store in a temporary directory that ``close()`` removes.

    ``durability``: ``"buffered"`` (the default: written to the OS when an append returns,
    synced by ``sync()``, at segment seals and every 8 MiB), ``"always"`` (fdatasync before
    an append returns; concurrent appenders share one sync), or a number of seconds (synced
    at least that often).

    ``exclusive``: False (the default) lets any number of processes open the store for
    writing at once (each write takes the store's write lock for a moment; every read first
    checks, cheaply, whether another process wrote, so reads are current across processes).
    True holds the write lock for as long as the store is open: other writable opens get
    ``Locked`` (read-only ones still work), and reads skip that check.

    After ``os.fork()``, a ``Store`` made before it opens the store again at its first call
    in the child, as a process of its own (an exclusive store stays the parent's: the
    child reads through it, and its writes raise ``convlog.Error``); closing it in the
    child leaves the parent's store alone. A subscription made before the fork raises
    ``RuntimeError`` in the child: subscribe again there.

    ``mode``: the permission bits of the files the store creates, exactly, whatever the
    umask (existing files keep theirs): None (the default) is owner-only, files ``0o600``
    and directories ``0o700``; ``0o640`` lets the owner's group read (directories get
    ``x`` wherever ``r`` is set: ``0o750``). A mode outside ``0o666`` or without ``0o600``
    raises ``InvalidOption`` (a ``ValueError``).

    ``key`` / ``key_file`` (at most one, else ``ValueError``): encryption at rest. ``key``
    is the master key, 32 ``bytes`` (or ``bytearray``) or 64 hex digits as a ``str``;
    ``key_file`` the path of a file holding it (the 32 bytes raw, or 64 hex digits, with
    one optional trailing newline). A malformed key raises ``InvalidMasterKey`` (a
    ``ValueError``), another type ``TypeError``. A new store is created encrypted: each
    session's messages and metadata are sealed (AES-256-GCM) under a data key of its
    own, kept in the store's ``KEYS`` file wrapped by the master key; ``delete_session``
    destroys the session's keys, so its records stay unreadable even in copies of the
    segments made before (reading them raises ``KeyDestroyed``). Session ids, interaction
    ids, timestamps and record sizes are not encrypted. Opening an encrypted store without
    a key raises ``KeyRequired``, with another key ``WrongKey``; giving a key for a store
    written without one raises ``NotEncrypted``. The key is never kept on the ``Store``
    object (no attribute, not in its repr).

    ``decrypt_ahead``: True (the default) lets a long read of an encrypted store (past its
    first 256 messages, with 1 024 or more to go) decrypt every other batch on a helper
    thread, when the machine has a core to spare: the same messages, in less time, for
    about 1.2× the CPU. False keeps every read on its own thread. A setting of this
    ``Store`` object only.

    Thread-safe, and the GIL is released during every store call. Several ``Store``
    objects on one path in one process share one open store, as long as they are opened
    with the same options, the master key included (else ``AlreadyOpen``); it closes when
    the last of them closes.

    A usable context manager: ``with Store(path) as store: ...`` closes it. After
    ``close()`` every method raises ``Closed``.

    Counts, interaction ids and LSNs given as arguments (``n``, ``keep``, ``at``,
    ``start``, ``stop``, ``interaction_id``, ``expected_next_id``, ``max_messages``,
    ``max_bytes``, ``from_id``, ``since``) are ``int``\ s of at least 0: a negative one
    raises ``ValueError`` and changes nothing (none counts from the end), a ``float``
    ``TypeError``. One past ``2**64 - 1`` means more than any: ``tail(s, 2**70)`` is every
    message, as a slice may run past a list's end; ``expected_next_id`` and
    ``expected_version``, which are compared for equality, refuse it (``ValueError``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["buffered", "always"] | float | None = None,
        read_only: bool = False,
        segment_size: int | None = None,
        max_record_len: int | None = None,
        exclusive: bool = False,
        mode: int | None = None,
        key: bytes | bytearray | str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        decrypt_ahead: bool = True,
    ) -> None: ...
    @property
    def path(self) -> Path: ...
    @property
    def closed(self) -> bool: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def is_encrypted(self) -> bool:
        """Whether the store is encrypted (opened with its master key)."""
    @property
    def is_poisoned(self) -> bool:
        """Whether an I/O failure poisoned the store: every later write and ``sync()``
        raises ``Poisoned`` until the store is closed and opened again."""
    def rekey(
        self,
        new_key: bytes | bytearray | str | None = None,
        new_key_file: str | os.PathLike[str] | None = None,
    ) -> int:
        """Wrap every data key anew under a new master key (exactly one of ``new_key`` and
        ``new_key_file``, as ``key``/``key_file`` of ``Store``), without rewriting any
        segment and crash-atomically (one rename replaces ``KEYS``): from then on the store
        opens with the new key only. Returns how many data keys were rewrapped. Raises
        ``NotEncrypted`` for a store without encryption, ``ReadOnly`` on a read-only store;
        after any error the old key still opens the store. Other processes with the store
        open keep working with the data keys they hold until their next change to ``KEYS``
        (then ``WrongKey``); in this process, a new ``Store`` on its path shares it given
        the new key only."""
    @property
    def last_lsn(self) -> int: ...
    @property
    def durable_lsn(self) -> int: ...
    def append(self, session: str, message: Message, *, key: str | None = None) -> Receipt:
        """Append one message (a dict, or a JSON object as str or bytes, stored byte for
        byte) to ``session``. JSON nested deeper than 512 levels is ``InvalidMessage``
        (reading it back would raise ``RecursionError``).

        With ``key`` (an idempotency key: a str of 1 to 256 UTF-8 bytes, else
        ``InvalidKey``): if ``session`` already holds a message appended under ``key``, its
        original receipt comes back and nothing is written, also after a reopen or a crash
        (the key is logged in the same unit as the message). A key is remembered while the
        messages it names are in the session: a pop, truncate, clear or replace that removes
        them forgets it."""
    def append_batch(
        self, session: str, messages: Iterable[Message], *, key: str | None = None
    ) -> list[Receipt]:
        """Append several messages atomically: after a crash all of them are there or none.
        With ``key``, the batch is named by one key, as for ``append``: a retry returns every
        original receipt and writes nothing."""
    def try_append_batch(
        self, session: str, messages: Iterable[Message]
    ) -> list[Receipt] | None:
        """``append_batch`` only if it goes through at once: without waiting for another
        writer (a thread or a process) and without a sync (so never under ``"always"``).
        Its receipts, or None when nothing was written: then ``append_batch``, on a thread
        that may wait, goes through. For an event loop's thread."""
    def append_if(self, session: str, expected_next_id: int, message: Message) -> Receipt:
        """Append only if the session's next interaction id is ``expected_next_id`` (1 for an
        empty session); else raise ``Conflict`` and change nothing."""
    def tail(self, session: str, n: int | None = None) -> list[Any]:
        """The last ``n`` messages (all when ``n`` is None), oldest first, as fresh dicts.
        Costs O(n) whatever the session's length."""
    def tail_if_cached(self, session: str, n: int) -> list[Any] | None:
        """``tail(session, n)`` if the store's cache holds those messages, else None; reads
        no message (for async callers, on the event loop's thread): its one I/O is the
        cheap check, every read makes, of whether another process wrote.

        A writable store keeps the decoded last 64 messages of the sessions it recently
        read with ``tail(session, n)`` (``n`` of at most 64), up to 8192 messages in all
        (least recently used first out), and every write of this process updates or drops
        them. A write by another process (seen in the log's last LSN) drops them all. A hit
        returns fresh copies (new dicts and lists)."""
    def tail_json(self, session: str, n: int | None = None) -> list[str]:
        """``tail`` as the JSON text of each message, as stored."""
    def messages(self, session: str, start: int | None = None, stop: int | None = None) -> Messages:
        """A lazy iterator over the messages whose interaction ids are in
        ``range(start, stop)`` (ids are 1-based; by default every message)."""
    def messages_json(
        self, session: str, start: int | None = None, stop: int | None = None
    ) -> Messages:
        """``messages`` yielding the JSON text of each message."""
    def get(self, session: str, interaction_id: int) -> Any | None:
        """One message by interaction id, or None."""
    def get_json(self, session: str, interaction_id: int) -> str | None: ...
    def count(self, session: str) -> int:
        """How many messages ``session`` holds (0 for an unknown session)."""
    def version(self, session: str) -> tuple[int, int | None]:
        """``(next_id, last_lsn)``: the session's version (``last_lsn`` None when it is
        empty). Every change of the session changes it (a pop then an append too); a
        compaction or a reopen does not. For ``replace(..., expected_version=)``."""
    def __contains__(self, session: str) -> bool: ...
    def sessions(self) -> list[SessionInfo]:
        """Every live session, sorted by id."""
    def pop(self, session: str) -> Any | None:
        """Remove and return the last message (a logged event), or None when empty."""
    def pop_json(self, session: str) -> str | None: ...
    def truncate(self, session: str, keep: int) -> int:
        """Cut ``session`` to its first ``keep`` messages; return how many were removed."""
    def clear(self, session: str) -> int:
        """Empty ``session`` (it stays usable); return how many messages were removed."""
    def fork(self, src: str, dst: str, at: int | None = None) -> int:
        """Start ``dst`` as the first ``at`` messages of ``src`` (all of them when None; at
        most all), sharing them: one logged record, O(1) whatever ``src``'s length. ``dst``'s
        interaction ids go on from ``at + 1``; from then on the two are independent. Returns
        how many messages ``dst`` holds (0, and nothing logged, when there are none to
        share, or when ``src == dst``). Raises ``SessionExists`` when ``dst`` holds
        messages."""
    def replace(
        self,
        session: str,
        messages: Iterable[Message],
        *,
        expected_next_id: int | None = None,
        expected_version: tuple[int, int | None] | None = None,
    ) -> list[Receipt]:
        """Make ``session`` exactly ``messages``, as one committed unit: after a crash at
        any instant it holds its old history or the new one, never neither, and a concurrent
        reader sees one or the other. The new messages get interaction ids ``1..n`` (their
        receipts are returned). With ``expected_next_id``, raise ``Conflict`` and change
        nothing unless the session's next interaction id is that one; with
        ``expected_version`` (from ``version()``), unless the session has not changed at
        all since (checked under the store's write lock). Not both. ``replace(s, [])``
        empties the session."""
    def window(
        self,
        session: str,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        keep_system: bool = False,
    ) -> list[Any]:
        """The longest recent suffix of ``session`` within ``max_messages`` messages and
        ``max_bytes`` bytes of stored JSON (no limit when None) that starts at a ``user``
        message (or at the session's start) and cuts no tool result off from the call it
        answers: an assistant message with ``tool_calls`` stays with the ``tool`` messages
        answering it, a Responses-API ``function_call`` with its ``function_call_output``
        (by ``call_id``). With ``keep_system``, the session's first message comes first when
        it is a ``system`` (or ``developer``) message, counted in the budget. Oldest first,
        fresh dicts; ``[]`` when nothing fits. Costs O(window)."""
    def set_meta(self, session: str, meta: Mapping[str, Any] | str | bytes) -> int:
        """Set ``session``'s metadata (a JSON object of at most 64 KiB, else
        ``RecordTooLarge``), replacing any earlier one; returns the record's LSN. A session
        may have metadata before it has messages; a ``clear`` keeps it."""
    def meta(self, session: str) -> dict[str, Any] | None:
        """``session``'s metadata (a fresh dict), or None when it has none."""
    def sessions_where(self, key: str, value: Any) -> list[SessionInfo]:
        """The live sessions (those holding messages) whose metadata has ``key`` equal to
        ``value`` (compared as JSON: ``1`` and ``1.0`` differ), sorted by id. Reads the
        metadata of every live session."""
    def subscribe(
        self,
        since: Literal["now"] | int | None = None,
        *,
        session: str | None = None,
        from_id: int | None = None,
    ) -> Subscription:
        """A live tail of the log (see ``Subscription``).

        - ``subscribe()`` or ``subscribe("now")``: every event after now;
        - ``subscribe(lsn)``: every event from the record with LSN ``lsn`` on (0 or 1:
          the whole log), then the live ones;
        - ``subscribe(session=s, from_id=1)``: the messages of ``s`` from interaction id
          ``from_id`` on (those in the store now, then each one appended), and its cuts and
          forks after now;
        - ``subscribe("now", session=s)``: the events of ``s`` after now;
        - ``subscribe(lsn, session=s)``: the events of ``s`` from LSN ``lsn`` on.
        """
    def delete_session(self, session: str) -> bool:
        """Delete ``session``: its messages, idempotency keys and metadata (one logged
        record). Returns whether it held any. Afterwards it is absent from ``sessions()``,
        and its id may be used again (from interaction id 1). Its bytes stay on disk until
        ``compact()`` rewrites the segments holding them."""
    def seal(self) -> bool:
        """Seal the active segment (synced) and start a new one, if it holds any record, so
        that ``compact()`` can rewrite what it held; returns whether it sealed one."""
    def compact(self, *, seal: bool = False) -> CompactReport:
        """Rewrite the sealed segments keeping only what a live session can reach: popped,
        truncated, cleared, replaced and deleted messages and superseded events leave the
        disk. With ``seal=True``, ``seal()`` first, so the active segment's records are
        included. Appends and reads (of this and other processes) go on meanwhile; no
        message, interaction id or LSN changes. Raises ``ReadOnly`` on a read-only store,
        ``Compacting`` while another compaction of the store runs, ``Corrupt`` if a sealed
        segment is damaged (nothing is replaced)."""
    def sync(self) -> int:
        """Make everything appended so far durable; return the durable LSN."""
    def stats(self) -> dict[str, int]:
        """segments, sessions, messages, index_bytes, last_lsn, durable_lsn."""
    def close(self) -> None:
        """Close this object (idempotent). Waits for calls under way; the store itself closes
        (synced, unlocked) when the last object sharing it closes."""
    def __enter__(self) -> Store: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...
