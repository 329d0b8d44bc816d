"""Helpers the adapters' tests share."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from typing import Any


class StoreSpy:
    """Stands in for a ``convlog.Store``: calls ``record(name)`` on the calling thread before
    each method call, then forwards it to ``real``."""

    def __init__(self, real: Any, record: Callable[[str], None]) -> None:
        self._real = real
        self._record = record

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)

        def call(*args: Any) -> Any:
            self._record(name)
            return attr(*args)

        return call


@contextlib.contextmanager
def holding_write_lock(store_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Holds the store's ``LOCK`` as another process's write does, for the ``with`` body."""
    with open(os.path.join(store_dir, "LOCK"), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
