"""The exceptions convlog raises: one class per kind of failure of the Rust library.

Each carries the library's message, which says where (session, segment and offset, path);
the fields that message is made of are attributes too (``session``, ``segment``,
``offset``, ``path``, ``expected``/``actual``, ...).
"""

from __future__ import annotations


class Error(Exception):
    """The base class of every convlog error."""


class Conflict(Error):
    """``append_if`` (or ``replace`` with ``expected_next_id``) found another next
    interaction id (``expected``, ``actual``)."""


class Locked(Error):
    """The store's write lock is held for good: an ``exclusive=True`` open met another
    writer, or a writable open met an exclusive one."""


class AlreadyOpen(Locked):
    """The store is open for writing in this process with other options (durability,
    segment size, record limit): a second open with the same options shares it instead."""


class Corrupt(Error):
    """Bytes on disk are damaged (``segment``, ``offset``)."""


class UnsupportedFormat(Error):
    """A file was written by a newer convlog (unknown format version or record kind)."""


class InvalidSessionId(Error, ValueError):
    """A session id is not a str, is empty, longer than 256 bytes, or holds a control
    character."""


class SessionExists(Error):
    """The destination of ``fork`` already holds messages (``session``)."""


class InvalidKey(Error, ValueError):
    """An idempotency key (``key=`` of ``append``/``append_batch``) is empty or longer than
    256 bytes (``session``)."""


class InvalidMessage(Error, ValueError):
    """A message is not a JSON object (or not valid JSON)."""


class RecordTooLarge(Error, ValueError):
    """A message is over the store's size limit (``size``, ``limit``)."""


class ReadOnly(Error):
    """A write on a store opened with ``read_only=True``."""


class Poisoned(Error):
    """An earlier write or fsync failed: the store refuses writes until it is reopened."""


class Closed(Error):
    """The ``Store`` (or the iterator's ``Store``) was closed."""


class NotAStore(Error):
    """The path is not a convlog store (a read-only open of a missing directory, say)."""


class InvalidOption(Error, ValueError):
    """An option of ``Store(...)`` is out of range (``option``)."""


class Compacting(Error):
    """``compact()`` met another compaction of the store under way, in this process or
    another (``path``): one runs at a time; try again later."""


class CompactionMismatch(Error):
    """A compaction's output, read back before it replaced anything, differs from the log
    for ``session`` (a broken internal invariant, ``path``): nothing was replaced."""


class IoError(Error, OSError):
    """An I/O operation failed (``path``, ``errno``)."""


__all__ = [
    "AlreadyOpen",
    "Closed",
    "Compacting",
    "CompactionMismatch",
    "Conflict",
    "Corrupt",
    "Error",
    "InvalidKey",
    "InvalidMessage",
    "InvalidOption",
    "InvalidSessionId",
    "IoError",
    "Locked",
    "NotAStore",
    "Poisoned",
    "ReadOnly",
    "RecordTooLarge",
    "SessionExists",
    "UnsupportedFormat",
]

# Shown as convlog.Conflict (not convlog._errors.Conflict) in tracebacks and reprs.
for _cls in (
    Error, Conflict, Locked, AlreadyOpen, Corrupt, UnsupportedFormat, InvalidSessionId,
    InvalidMessage, RecordTooLarge, ReadOnly, Poisoned, Closed, NotAStore, InvalidOption,
    IoError, SessionExists, InvalidKey, Compacting, CompactionMismatch,
):
    _cls.__module__ = "convlog"
del _cls
