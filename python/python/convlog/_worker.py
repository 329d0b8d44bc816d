"""The worker threads that async adapters hand store calls to, so that no blocking I/O runs
on an event loop's thread.

``asyncio.to_thread`` does the same through the loop's default executor, but its layers (a
``concurrent.futures.Future`` wrapped into an asyncio one) cost about twice the hand-off
itself: here a call is one queue put, and its result one ``call_soon_threadsafe``. The
threads serve every loop of the process (each call carries its loop and future) and run
each call in a copy of the caller's context variables, as ``asyncio.to_thread`` does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Threads taking calls: more than one, so that a long read or sync does not hold up the
#: rest, and concurrent appends share a group commit.
THREADS = 4

#: The most messages an async adapter appends on the event loop's thread (``append_inline``):
#: encoding and copying more would hold the loop longer than the hand-off to a worker.
INLINE_ITEMS = 16


def append_inline(store: Any, session: str, items: list[Any]) -> bool:
    """Appends ``items`` to ``session`` on the calling thread (the event loop's) if that
    never waits: at most ``INLINE_ITEMS`` of them, through ``Store.try_append_batch``
    (no other writer's turn, no sync: a copy to the page cache, a few microseconds).
    Returns False, having written nothing, when the caller must hand the append to a
    worker thread instead."""
    if len(items) > INLINE_ITEMS:
        return False
    return store.try_append_batch(session, items) is not None


_jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_lock = threading.Lock()
#: Threads waiting for a call, and calls queued that no thread took yet: a call that finds
#: more calls queued than threads waiting starts another thread (up to THREADS).
_idle = 0
_queued = 0


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _call(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    ctx: contextvars.Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """Runs one call and hands its outcome to the awaiting coroutine's loop."""
    try:
        result = ctx.run(fn, *args)
    except BaseException as exc:  # handed to the awaiting coroutine
        try:
            loop.call_soon_threadsafe(_set_exception, fut, exc)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting
            pass
    else:
        try:
            loop.call_soon_threadsafe(_set_result, fut, result)
        except RuntimeError:
            pass


def _work() -> None:
    global _idle, _queued
    while True:
        with _lock:
            _idle += 1
        job = _jobs.get()
        with _lock:
            _idle -= 1
            _queued -= 1
        if job is None:
            return
        _call(*job)
        # Nothing of the call stays referenced by this thread while it waits for the next
        # one (a result of 50 k items would otherwise live on, and be freed inside the next
        # call's time).
        del job


def _submit(job: Any) -> None:
    global _queued
    with _lock:
        _queued += 1
        t = None
        if _queued > _idle and len(_threads) < THREADS:
            t = threading.Thread(target=_work, name=f"convlog-worker-{len(_threads)}", daemon=True)
            _threads.append(t)
    if t is not None:
        t.start()
    _jobs.put(job)


def _stop() -> None:
    """At exit: the calls already queued finish first (writes are not cut short)."""
    global _queued
    with _lock:
        threads = list(_threads)
        _queued += len(threads)
    for _ in threads:
        _jobs.put(None)
    for t in threads:
        t.join(timeout=10)
    _threads.clear()


def _after_fork() -> None:
    global _jobs, _lock, _idle, _queued
    _jobs = queue.SimpleQueue()
    _lock = threading.Lock()
    _idle = _queued = 0
    _threads.clear()


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def run(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
    """``fn(*args)`` in a worker thread; a future of the running loop for its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()
    _submit((loop, fut, contextvars.copy_context(), fn, args))
    return fut
