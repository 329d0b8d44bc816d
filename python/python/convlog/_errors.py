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
    segment size, record limit, master key): a second open with the same options shares it
    instead."""


class Corrupt(Error):
    """Bytes on disk are damaged (``segment``, ``offset``): a checksum, length or header
    does not hold, or a sealed record of an encrypted store fails its authentication. For a
    damaged key file (``KEYS``), ``segment`` is None and ``path`` names the file."""

    #: The damaged key file; None for a segment.
    path = None


class UnsupportedFormat(Error):
    """A file was written by a newer convlog (unknown format version or record kind)."""


class InvalidSessionId(Error, ValueError):
    """A session id is not a str, is empty, longer than 256 bytes, or holds a control
    character or a lone surrogate (which has no UTF-8 form)."""


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


class KeyRequired(Error):
    """The store is encrypted and was opened without its master key (``path``): give
    ``key=`` or ``key_file=``."""


class WrongKey(Error):
    """The master key given does not open the store (``path``)."""


class NotEncrypted(Error):
    """A master key was given for a store written without encryption that holds records
    (``path``), or ``rekey`` was called on such a store: open it without a key."""


class KeyDestroyed(Error):
    """A record is sealed under a data key that was destroyed when its session was deleted
    (``segment``, ``offset``, ``key_id``: the data key's id, not secret): its contents are
    gone for good, in copies of the segments too."""


class InvalidMasterKey(Error, ValueError):
    """A master key is malformed: ``key=`` is not 32 bytes (or 64 hex digits as a str), or
    the key file at ``path`` (None for ``key=``) holds neither; ``reason`` says what is wrong
    (never the key's bytes)."""


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
    "InvalidMasterKey",
    "InvalidMessage",
    "InvalidOption",
    "InvalidSessionId",
    "IoError",
    "KeyDestroyed",
    "KeyRequired",
    "Locked",
    "NotAStore",
    "NotEncrypted",
    "Poisoned",
    "ReadOnly",
    "RecordTooLarge",
    "SessionExists",
    "UnsupportedFormat",
    "WrongKey",
]

# Shown as convlog.Conflict (not convlog._errors.Conflict) in tracebacks and reprs.
for _cls in (
    Error, Conflict, Locked, AlreadyOpen, Corrupt, UnsupportedFormat, InvalidSessionId,
    InvalidMessage, RecordTooLarge, ReadOnly, Poisoned, Closed, NotAStore, InvalidOption,
    IoError, SessionExists, InvalidKey, Compacting, CompactionMismatch, KeyRequired,
    WrongKey, NotEncrypted, KeyDestroyed, InvalidMasterKey,
):
    _cls.__module__ = "convlog"
del _cls
