"""Several processes on one store (the library's default: any number of writers): appends
from each, the read cache of one process against another's writes, and a subscription in
one process to another's appends. Workers are started with the "spawn" context."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pathlib
from typing import Any

import pytest

import convlog
from convlog import Store

WAIT = 10.0  # generous: no timing is asserted beyond "it came within this"
SPAWN = multiprocessing.get_context("spawn")


# -- workers (module level, so that spawned processes can import them) ----------------------


def _append_worker(path: str, worker: int, n: int, sessions: list[str], go: Any) -> None:
    go.wait()
    with Store(path) as s:
        for i in range(n):
            session = sessions[i % len(sessions)]
            if i % 5 == 4:
                s.append_batch(session, [{"w": worker, "i": i, "part": 0},
                                         {"w": worker, "i": i, "part": 1}])
            else:
                s.append(session, {"w": worker, "i": i})


def _agents_worker(path: str, worker: int, n: int, session: str, go: Any) -> None:
    from convlog.agents import ConvlogSession

    go.wait()

    async def run() -> None:
        with ConvlogSession(session, path) as sess:
            for i in range(n):
                await sess.add_items([{"role": "user", "content": f"{worker}:{i}", "w": worker,
                                       "i": i}])

    asyncio.run(run())


def _run(target: Any, *args: Any) -> None:
    p = SPAWN.Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode == 0


def _append_one(path: str, session: str, message: dict[str, Any]) -> None:
    with Store(path) as s:
        s.append(session, message)


def _pop_and_append(path: str, session: str, message: dict[str, Any]) -> None:
    with Store(path) as s:
        s.pop(session)
        s.append(session, message)


def _append_delayed(path: str, session: str, n: int, ready: Any) -> None:
    with Store(path) as s:
        ready.wait()
        for i in range(n):
            s.append(session, {"child": i})


# -- tests ---------------------------------------------------------------------------------


def test_processes_appending_to_shared_sessions_get_gapless_ids(
    store_dir: pathlib.Path,
) -> None:
    pytest.importorskip("agents")
    path = str(store_dir)
    sessions = ["shared-1", "shared-2"]
    workers, n, agent_items = 3, 60, 40
    go = SPAWN.Event()
    procs = [
        SPAWN.Process(target=_append_worker, args=(path, w, n, sessions, go))
        for w in range(workers)
    ]
    procs.append(SPAWN.Process(target=_agents_worker, args=(path, 99, agent_items, "shared-1", go)))
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store(store_dir) as s:
        seen: dict[tuple[Any, ...], int] = {}
        total = 0
        for session in sessions:
            count = s.count(session)
            messages = list(s.messages(session))
            assert len(messages) == count  # interaction ids 1..count, no gap
            assert [s.get(session, i) for i in (1, count)] == [messages[0], messages[-1]]
            assert s.get(session, count + 1) is None
            for m in messages:
                key = (session, m["w"], m["i"], m.get("part"))
                seen[key] = seen.get(key, 0) + 1
            total += count
        expected = set()
        for w in range(workers):
            for i in range(n):
                parts = [0, 1] if i % 5 == 4 else [None]
                expected.update((sessions[i % 2], w, i, part) for part in parts)
        expected.update(("shared-1", 99, i, None) for i in range(agent_items))
        assert set(seen) == expected  # every message present ...
        assert set(seen.values()) == {1}  # ... once
        assert total == len(expected)
        assert s.last_lsn == total
        # Each batch kept its two messages next to each other.
        for session in sessions:
            ms = list(s.messages(session))
            for k, m in enumerate(ms):
                if m.get("part") == 0:
                    assert ms[k + 1] == {**m, "part": 1}


def test_the_read_cache_sees_another_process_write(store_dir: pathlib.Path) -> None:
    path = str(store_dir)
    with Store(store_dir) as s:
        for i in range(3):
            s.append("chat", {"i": i})
        assert s.tail("chat", 2) == [{"i": 1}, {"i": 2}]
        assert s.tail_if_cached("chat", 2) == [{"i": 1}, {"i": 2}]  # cached
        # Another process appends to the session this one has cached.
        _run(_append_one, path, "chat", {"from": "B"})
        assert s.tail_if_cached("chat", 2) is None  # the log moved: the cache was dropped
        assert s.tail("chat", 2) == [{"i": 2}, {"from": "B"}]
        assert s.tail_if_cached("chat", 2) == [{"i": 2}, {"from": "B"}]  # refilled
        # A pop and an append leave the count as it was: the LSN still tells.
        _run(_pop_and_append, path, "chat", {"from": "B again"})
        assert s.count("chat") == 4
        assert s.tail_if_cached("chat", 2) is None
        assert s.tail("chat", 2) == [{"i": 2}, {"from": "B again"}]
        # This process's own writes keep the cache (no other process wrote meanwhile).
        s.append("chat", {"own": 1})
        assert s.tail_if_cached("chat", 2) == [{"from": "B again"}, {"own": 1}]
        # Another process writing another session also drops it (it cannot tell which).
        _run(_append_one, path, "elsewhere", {})
        assert s.tail_if_cached("chat", 2) is None
        assert s.tail("chat", 1) == [{"own": 1}]


def test_a_cached_agents_session_sees_another_process_add_items(
    store_dir: pathlib.Path,
) -> None:
    pytest.importorskip("agents")
    from convlog.agents import ConvlogSession

    path = str(store_dir)

    async def check() -> None:
        with ConvlogSession("user-1", path) as sess:
            await sess.add_items([{"role": "user", "content": "hi"}])
            assert await sess.get_items(5) == [{"role": "user", "content": "hi"}]
            await asyncio.to_thread(_run, _agents_worker, path, 7, 1, "user-1", _set_event())
            items = await sess.get_items(5)
            assert items == [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": "7:0", "w": 7, "i": 0},
            ]

    asyncio.run(check())


def _set_event() -> Any:
    e = SPAWN.Event()
    e.set()
    return e


def test_a_subscriber_sees_another_process_append(store_dir: pathlib.Path) -> None:
    path = str(store_dir)
    with Store(store_dir) as s:
        s.append("log", {"parent": 0})
        sub = s.subscribe()
        session_sub = s.subscribe(session="log")
        ready = SPAWN.Event()
        p = SPAWN.Process(target=_append_delayed, args=(path, "log", 5, ready))
        p.start()
        try:
            ready.set()
            got = [sub.next(WAIT) for _ in range(5)]
            assert all(e is not None for e in got), got
            assert [e.message for e in got] == [{"child": i} for i in range(5)]
            assert [e.interaction_id for e in got] == [2, 3, 4, 5, 6]
            backlog_and_live = [session_sub.next(WAIT) for _ in range(6)]
            assert [e.message for e in backlog_and_live] == (
                [{"parent": 0}] + [{"child": i} for i in range(5)]
            )
        finally:
            p.join(60)
        assert p.exitcode == 0
        assert sub.next(0) is None
        sub.close()
        session_sub.close()


async def test_an_async_subscriber_sees_another_process_append(
    store_dir: pathlib.Path,
) -> None:
    path = str(store_dir)
    with Store(store_dir) as s:
        sub = s.subscribe()
        ready = SPAWN.Event()
        p = SPAWN.Process(target=_append_delayed, args=(path, "alog", 3, ready))
        p.start()
        got: list[convlog.Event] = []

        async def consume() -> None:
            async for event in sub:
                got.append(event)
                if len(got) == 3:
                    break

        try:
            ready.set()
            await asyncio.wait_for(consume(), WAIT)
        finally:
            await asyncio.to_thread(p.join, 60)
        assert [e.message for e in got] == [{"child": i} for i in range(3)]
        sub.close()


# -- os.fork(): a Store object created before the fork, used on both sides ----------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")


def _fork(child: Any) -> int:
    """Forks; the child runs `child()` and exits 0 if it returned, 1 if it raised."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
def test_a_store_used_on_both_sides_of_a_fork_loses_and_corrupts_nothing(
    store_dir: pathlib.Path,
) -> None:
    # What gunicorn --preload or a "fork" multiprocessing pool does with a module-level
    # Store: the child opens the store again itself, as a process of its own.
    store = Store(store_dir)
    store.append("s", {"role": "user", "content": "before the fork"})
    n = 300

    def child() -> None:
        for i in range(n):
            store.append("s", {"who": "child", "i": i})

    pid = _fork(child)
    for i in range(n):
        store.append("s", {"who": "parent", "i": i})
    assert _exit_code(pid) == 0
    assert store.count("s") == 2 * n + 1
    store.close()
    with Store(store_dir) as s:
        got = s.tail("s")
    assert len(got) == 2 * n + 1
    for who in ("parent", "child"):
        assert [m["i"] for m in got if m.get("who") == who] == list(range(n))


@needs_fork
def test_a_forked_child_leaves_a_memory_store_to_the_parent() -> None:
    memory = Store(":memory:")
    memory.append("s", {"a": 1})

    def child() -> None:
        memory.append("s", {"a": 2})  # opened again in the child: the same directory
        memory.close()  # must not remove the parent's directory

    assert _exit_code(_fork(child)) == 0
    assert memory.path.is_dir()
    assert memory.count("s") == 2
    memory.append("s", {"a": 3})
    memory.close()


@needs_fork
def test_a_forked_child_cannot_write_to_its_parents_exclusive_store(
    store_dir: pathlib.Path,
) -> None:
    store = Store(store_dir, exclusive=True)
    store.append("s", {"a": 1})

    def child() -> None:
        assert store.count("s") == 1  # reads go on through the parent's handle
        with pytest.raises(convlog.Error, match="fork"):
            store.append("s", {"a": 2})
        store.close()  # must leave the parent's lock held: a new open is refused
        with pytest.raises(convlog.Locked):
            Store(store_dir)

    assert _exit_code(_fork(child)) == 0
    store.append("s", {"a": 2})
    assert store.count("s") == 2
    store.close()


@needs_fork
def test_a_subscription_made_before_a_fork_raises_in_the_child_instead_of_hanging(
    store_dir: pathlib.Path,
) -> None:
    import threading
    import time

    store = Store(store_dir)
    sub = store.subscribe()
    waiter = threading.Thread(target=sub.next, args=(5,), daemon=True)
    waiter.start()
    time.sleep(0.2)  # the thread waits in a slice, holding the subscription's lock

    def child() -> None:
        with pytest.raises(RuntimeError, match="before os.fork"):
            sub.next(timeout=0.2)
        sub.close()
        store.append("s", {"from": "child"})  # the store itself is opened again
        store.close()

    pid = _fork(child)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    store.append("s", {"from": "parent"})
    event = sub.next(timeout=WAIT)
    assert event is not None
    sub.close()
    waiter.join(WAIT)
    assert store.count("s") == 2
    store.close()
