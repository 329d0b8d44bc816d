"""``async for event in subscription``: the async iterator of ``convlog.Subscription``.

The wait for the next event runs in a thread of its own (one per ``async for``, started at
its first wait), never on the event loop's thread and never in the worker threads that
``ConvlogSession`` hands its store calls to (a subscription may wait for hours; those
threads must stay free). A wait is short (``SLICE``): the thread then hands back to the
loop, so a cancelled ``async for`` frees it soon. An event read by a wait whose awaiting
task was cancelled is not lost: it stays in the subscription, and the next ``__anext__``
(or ``next()``) yields it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._convlog import Event, Subscription

__all__ = ["AsyncEvents"]

#: Seconds a thread waits for an event before it hands back to the loop.
SLICE = 0.25


class AsyncEvents:
    """What ``Subscription.__aiter__`` returns: an async iterator over its events, which
    ends once the subscription is closed (and raises ``convlog.Closed`` once its store
    is)."""

    __slots__ = ("_sub", "_executor")

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub
        self._executor: ThreadPoolExecutor | None = None

    def __aiter__(self) -> AsyncEvents:
        return self

    async def __anext__(self) -> Event:
        sub = self._sub
        while True:
            event = sub._take()  # an event already read: no waiting, no I/O
            if event is not None:
                return event
            if sub.closed:
                self._shutdown()
                raise StopAsyncIteration
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="convlog-subscription"
                )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, sub._wait, SLICE)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __del__(self) -> None:
        self._shutdown()
