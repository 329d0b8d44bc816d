"""convlog.agents.ConvlogSession against the OpenAI Agents SDK: the protocol, the Runner,
EncryptedSession, and the SDK's own SQLiteSession as the reference behaviour."""

from __future__ import annotations

import asyncio
import copy
import pathlib
import threading
from typing import Any

import pytest
from agents import Agent, Runner, SessionSettings, SQLiteSession, set_tracing_disabled
from agents.memory import Session
from agents.testing import ScriptedModel, assistant_message, function_call

import convlog
from helpers import StoreSpy, holding_write_lock
from convlog.agents import ConvlogSession

set_tracing_disabled(True)  # no trace export (and no API key) in tests

ITEMS: list[Any] = [
    {"role": "user", "content": "Hello 👋 — ça va? 日本語"},
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "She said \"hi\" and 'bye'", "annotations": []}],
    },
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q": "Robert\'); DROP TABLE agent_messages;--"}',
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": '{"rows": [], "note": "\\\\n"}'},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
    {"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": "gAAAAABo" + "x" * 100},
    {"role": "user", "content": [{"type": "input_text", "text": "line1\nline2\t\u0000 end"}],
     "extra_field": {"nested": [1, 2.5, None, True]}},
]


async def test_round_trip_of_sdk_items() -> None:
    s = ConvlogSession("rt")
    await s.add_items(ITEMS)
    got = await s.get_items()
    assert got == ITEMS
    # Fresh objects, equal to what was added, not the same ones.
    assert all(a is not b for a, b in zip(got, ITEMS))
    got[0]["content"] = "mutated"
    assert (await s.get_items())[0] == ITEMS[0]
    s.close()


async def test_add_items_of_one_item_is_a_type_error_and_writes_nothing() -> None:
    s = ConvlogSession("one")
    for one in ({"role": "user", "content": "hi"}, "hello", b"hello", {'{"role":"user"}': 1}):
        with pytest.raises(TypeError, match="takes a list"):
            await s.add_items(one)  # type: ignore[arg-type]
    assert await s.get_items() == []
    s.close()


async def test_get_items_limits() -> None:
    s = ConvlogSession("lim")
    items = [{"role": "user", "content": str(i)} for i in range(10)]
    await s.add_items(items)
    assert await s.get_items(limit=3) == items[-3:]
    assert await s.get_items(3) == items[-3:]
    assert await s.get_items(limit=0) == []
    assert await s.get_items(limit=100) == items
    assert await s.get_items(limit=None) == items
    assert await s.get_items(limit=-1) == items  # as SQLiteSession (SQL's LIMIT -1)
    assert await s.get_items(limit=2**64) == items  # past what a u64 holds: all
    s.close()


async def test_session_settings_limit_is_the_default() -> None:
    s = ConvlogSession("set", session_settings=SessionSettings(limit=2))
    await s.add_items([{"role": "user", "content": str(i)} for i in range(5)])
    assert [i["content"] for i in await s.get_items()] == ["3", "4"]
    assert [i["content"] for i in await s.get_items(limit=4)] == ["1", "2", "3", "4"]
    # A dict is normalized by the SDK's own helper.
    d = ConvlogSession("set2", session_settings={"limit": 1})
    assert isinstance(d.session_settings, SessionSettings) and d.session_settings.limit == 1
    with pytest.raises(TypeError):
        ConvlogSession("set3", session_settings={"limt": 1})
    # Settings (and methods) can be replaced on an instance.
    s.session_settings = SessionSettings(limit=1)
    assert [i["content"] for i in await s.get_items()] == ["4"]
    assert ConvlogSession("set4").session_settings == SessionSettings()
    s.close()
    d.close()


async def test_pop_item_is_per_session(tmp_path: pathlib.Path) -> None:
    a = ConvlogSession("a", tmp_path / "db")
    b = ConvlogSession("b", tmp_path / "db")
    await a.add_items([{"role": "user", "content": "a1"}, {"role": "user", "content": "a2"}])
    await b.add_items([{"role": "user", "content": "b1"}])
    assert await a.pop_item() == {"role": "user", "content": "a2"}
    assert await b.get_items() == [{"role": "user", "content": "b1"}]
    assert await a.pop_item() == {"role": "user", "content": "a1"}
    assert await a.pop_item() is None
    assert await b.pop_item() == {"role": "user", "content": "b1"}
    a.close()
    b.close()


async def test_clear_session_keeps_it_usable(tmp_path: pathlib.Path) -> None:
    a = ConvlogSession("a", tmp_path / "db")
    b = ConvlogSession("b", tmp_path / "db")
    await a.add_items(ITEMS)
    await b.add_items(ITEMS[:1])
    await a.clear_session()
    assert await a.get_items() == []
    assert await b.get_items() == ITEMS[:1]
    await a.clear_session()
    await a.add_items(ITEMS[:2])
    assert await a.get_items() == ITEMS[:2]
    a.close()
    b.close()


async def test_a_path_is_shared_and_reopened(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "chats"
    sessions = [ConvlogSession(f"user-{i}", db) for i in range(3)]
    for i, s in enumerate(sessions):
        await s.add_items([{"role": "user", "content": f"I am {i}"}])
    for s in sessions:
        s.close()
    later = ConvlogSession("user-1", str(db))
    assert await later.get_items() == [{"role": "user", "content": "I am 1"}]
    with convlog.Store(db) as store:
        assert [i.id for i in store.sessions()] == ["user-0", "user-1", "user-2"]
    later.close()


async def test_memory_sessions_are_private_and_removed() -> None:
    a = ConvlogSession("same")
    b = ConvlogSession("same")
    await a.add_items(ITEMS[:1])
    assert await b.get_items() == []
    path = a._store.path
    assert path.is_dir()
    a.close()
    assert not path.exists()
    b.close()


async def test_closed_session_raises_runtime_error() -> None:
    s = ConvlogSession("c")
    await s.add_items(ITEMS[:1])
    s.close()
    for op in (s.get_items(), s.get_items(limit=0), s.add_items(ITEMS), s.add_items([]),
               s.pop_item(), s.clear_session()):
        with pytest.raises(RuntimeError, match="^ConvlogSession is closed$"):
            await op
    s.close()  # idempotent


def test_invalid_session_id() -> None:
    with pytest.raises(convlog.InvalidSessionId):
        ConvlogSession("")
    with pytest.raises(ValueError):
        ConvlogSession("bad\x00id")


def test_is_an_sdk_session() -> None:
    s = ConvlogSession("p")
    assert isinstance(s, Session)
    s.close()


async def test_no_store_call_runs_on_the_event_loop_thread() -> None:
    s = ConvlogSession("t")
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = s._store

    def record(name: str) -> None:
        # The two calls made on the loop: a cached tail (memory only), and a write that
        # never waits (no other writer, no sync: a copy to the page cache).
        if name in ("tail_if_cached", "try_append_batch"):
            on_loop.append((name, threading.get_ident()))
        else:
            threads.append(threading.get_ident())

    on_loop: list[tuple[str, int]] = []
    s._store = StoreSpy(real, record)  # type: ignore[assignment]
    await s.add_items(ITEMS)
    await s.get_items()
    await s.get_items(limit=2)  # a miss: read in a worker thread, then cached
    assert await s.get_items(limit=2) == ITEMS[-2:]  # a hit
    await s.pop_item()
    await s.clear_session()
    assert len(threads) == 4 and loop_thread not in threads
    assert on_loop == [
        ("try_append_batch", loop_thread),
        ("tail_if_cached", loop_thread),
        ("tail_if_cached", loop_thread),
    ]
    s._store = real
    s.close()


@pytest.mark.parametrize("durability", ["always", "buffered"])
async def test_add_items_that_would_wait_or_sync_runs_in_a_worker_thread(
    durability: str,
) -> None:
    # Under "always" every write syncs; a batch of more than INLINE_ITEMS is too long to
    # encode on the loop. Both go to a worker, whatever the store's state.
    from convlog.agents import INLINE_ITEMS

    s = ConvlogSession("t", durability=durability)
    real = s._store
    calls: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    s._store = StoreSpy(  # type: ignore[assignment]
        real, lambda name: calls.append((name, threading.get_ident() == loop_thread))
    )
    many = [{"role": "user", "content": str(i)} for i in range(INLINE_ITEMS + 1)]
    await s.add_items(many)
    expected = [("append_batch", False)]
    if durability == "always":
        await s.add_items(ITEMS[:1])
        expected.append(("append_batch", False))
    assert calls == expected
    s._store = real
    assert await s.get_items() == (many + ITEMS[:1] if durability == "always" else many)
    s.close()


async def test_add_items_waits_in_a_worker_while_another_process_holds_the_write_lock(
    tmp_path: pathlib.Path,
) -> None:
    s = ConvlogSession("t", tmp_path / "db")
    await s.add_items(ITEMS[:1])  # the store exists, with its LOCK file
    with holding_write_lock(tmp_path / "db"):
        task = asyncio.ensure_future(s.add_items(ITEMS[1:2]))
        await asyncio.sleep(0.2)
        assert not task.done()  # busy inline: handed to a worker, which waits for the lock
    await asyncio.wait_for(task, 10)
    assert await s.get_items() == ITEMS[:2]
    s.close()


def test_one_object_from_several_threads_each_with_its_own_loop(tmp_path: pathlib.Path) -> None:
    s = ConvlogSession("shared", tmp_path / "db")
    n_threads, per = 6, 40
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        async def go() -> None:
            for i in range(per):
                await s.add_items([{"role": "user", "content": f"{t}:{i}"}])
                await s.get_items(limit=5)

        try:
            asyncio.run(go())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    items = asyncio.run(s.get_items())
    contents = [i["content"] for i in items]
    assert sorted(contents) == sorted(f"{t}:{i}" for t in range(n_threads) for i in range(per))
    for t in range(n_threads):
        assert [c for c in contents if c.startswith(f"{t}:")] == [f"{t}:{i}" for i in range(per)]
    s.close()


async def test_same_behaviour_as_sqlite_session(tmp_path: pathlib.Path) -> None:
    """One script of operations on both; every result must agree."""
    ours = ConvlogSession("ref", tmp_path / "convlog")
    theirs = SQLiteSession("ref", tmp_path / "sqlite.db")
    other_ours = ConvlogSession("other", tmp_path / "convlog")
    other_theirs = SQLiteSession("other", tmp_path / "sqlite.db")

    async def both(op: str, *args: Any, **kwargs: Any) -> Any:
        a = await getattr(ours, op)(*copy.deepcopy(args), **kwargs)
        b = await getattr(theirs, op)(*copy.deepcopy(args), **kwargs)
        assert a == b, (op, args, kwargs, a, b)
        return a

    await both("get_items")
    await both("pop_item")
    await both("add_items", ITEMS)
    await other_ours.add_items(ITEMS[:2])
    await other_theirs.add_items(ITEMS[:2])
    for limit in (None, 0, 1, 3, len(ITEMS), 100, -1):
        await both("get_items", limit=limit)
    await both("add_items", [])
    await both("pop_item")
    await both("pop_item")
    await both("get_items", limit=2)
    await both("clear_session")
    await both("get_items")
    await both("pop_item")
    await both("add_items", ITEMS[3:5])
    await both("get_items")
    assert await other_ours.get_items() == await other_theirs.get_items() == ITEMS[:2]
    for s in (ours, theirs, other_ours, other_theirs):
        s.close()
    for s in (ours, theirs):
        with pytest.raises(RuntimeError, match="is closed"):
            await s.add_items(ITEMS)


async def test_runner_keeps_history_across_turns(tmp_path: pathlib.Path) -> None:
    model = ScriptedModel([[assistant_message("Hi Ada!")], [assistant_message("Your name is Ada.")]])
    agent = Agent(name="assistant", instructions="Be brief.", model=model)
    session = ConvlogSession("user-42", tmp_path / "chats")
    r1 = await Runner.run(agent, "My name is Ada.", session=session)
    assert r1.final_output == "Hi Ada!"
    r2 = await Runner.run(agent, "What is my name?", session=session)
    assert r2.final_output == "Your name is Ada."
    # The second call's model input held the first turn, read back from the store.
    second_input = model.calls[1].input
    assert isinstance(second_input, list)
    texts = [str(i.get("content")) for i in second_input]
    assert "My name is Ada." in texts[0] and "What is my name?" in texts[-1]
    assert any("Hi Ada!" in t for t in texts)
    items = await session.get_items()
    assert [i.get("role") for i in items] == ["user", "assistant", "user", "assistant"]
    session.close()
    # A later process (here: object) sees the conversation.
    again = ConvlogSession("user-42", tmp_path / "chats")
    assert len(await again.get_items()) == 4
    again.close()


async def test_runner_with_a_tool_call_round_trips_its_items() -> None:
    from agents import function_tool

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"18°C in {city}"

    model = ScriptedModel([
        [function_call("weather", {"city": "Paris"}, call_id="call_9")],
        [assistant_message("It is 18°C in Paris.")],
    ])
    agent = Agent(name="a", model=model, tools=[weather])
    session = ConvlogSession("tools")
    result = await Runner.run(agent, "Weather in Paris?", session=session)
    assert result.final_output == "It is 18°C in Paris."
    items = await session.get_items()
    kinds = [i.get("type", i.get("role")) for i in items]
    assert kinds == ["user", "function_call", "function_call_output", "message"]
    assert items[2]["output"] == "18°C in Paris" and items[2]["call_id"] == "call_9"
    # What the Runner saved is what the next turn's model input holds.
    model.enqueue([assistant_message("ok")])
    await Runner.run(agent, "thanks", session=session)
    replay = model.calls[2].input
    assert isinstance(replay, list) and replay[1]["call_id"] == "call_9"
    session.close()


def test_run_sync(tmp_path: pathlib.Path) -> None:
    model = ScriptedModel([[assistant_message("one")], [assistant_message("two")]])
    agent = Agent(name="a", model=model)
    session = ConvlogSession("sync", tmp_path / "db")
    assert Runner.run_sync(agent, "first", session=session).final_output == "one"
    assert Runner.run_sync(agent, "second", session=session).final_output == "two"
    assert len(asyncio.run(session.get_items())) == 4
    session.close()


async def test_run_streamed() -> None:
    model = ScriptedModel([[assistant_message("streamed reply")]])
    agent = Agent(name="a", model=model)
    session = ConvlogSession("stream")
    result = Runner.run_streamed(agent, "stream please", session=session)
    async for _ in result.stream_events():
        pass
    assert result.final_output == "streamed reply"
    items = await session.get_items()
    assert items[0]["content"] == "stream please"
    assert items[-1]["content"][0]["text"] == "streamed reply"
    session.close()


async def test_runner_respects_the_session_limit() -> None:
    model = ScriptedModel([[assistant_message(f"r{i}")] for i in range(3)])
    agent = Agent(name="a", model=model)
    session = ConvlogSession("limited", session_settings=SessionSettings(limit=2))
    for i in range(3):
        await Runner.run(agent, f"q{i}", session=session)
    # History read for the third turn: the last 2 items (q1, r1), then the new input.
    third = model.calls[2].input
    assert isinstance(third, list) and len(third) == 3
    assert third[0]["content"] == "q1" and third[-1]["content"] == "q2"
    session.close()


async def test_wrapped_by_encrypted_session(tmp_path: pathlib.Path) -> None:
    from agents.extensions.memory import EncryptedSession
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode("ascii")
    inner = ConvlogSession("secret", tmp_path / "db")
    enc = EncryptedSession("secret", underlying_session=inner, encryption_key=key)
    await enc.add_items(ITEMS)
    # Stored as envelopes: nothing readable in the store.
    stored = await inner.get_items()
    assert len(stored) == len(ITEMS) and all(i.get("__enc__") == 1 for i in stored)
    assert "Hello" not in str(stored)
    assert await enc.get_items() == ITEMS
    assert await enc.get_items(limit=2) == ITEMS[-2:]
    assert await enc.pop_item() == ITEMS[-1]
    # Through the Runner too.
    model = ScriptedModel([[assistant_message("encrypted hi")]])
    await Runner.run(Agent(name="a", model=model), "hi", session=enc)
    assert (await enc.get_items())[-1]["content"][0]["text"] == "encrypted hi"
    # Settings go through to the underlying session.
    enc.session_settings = SessionSettings(limit=1)
    assert inner.session_settings == SessionSettings(limit=1)
    await enc.clear_session()
    assert await inner.get_items() == []
    inner.close()


async def test_cached_reads_follow_every_write(tmp_path: pathlib.Path) -> None:
    a = ConvlogSession("c", tmp_path / "db")
    b = ConvlogSession("c", tmp_path / "db")  # the same session through another object
    await a.add_items(ITEMS[:3])
    assert await a.get_items(limit=2) == ITEMS[1:3]  # fills the cache
    await b.add_items(ITEMS[3:5])
    assert await a.get_items(limit=2) == ITEMS[3:5]
    assert await a.pop_item() == ITEMS[4]
    assert await b.get_items(limit=3) == ITEMS[1:4]
    got = await a.get_items(limit=3)
    got[0]["role"] = "mutated"
    assert await a.get_items(limit=3) == ITEMS[1:4]
    await b.clear_session()
    assert await a.get_items(limit=3) == []
    await a.add_items(ITEMS[:1])
    assert await b.get_items(limit=3) == ITEMS[:1]
    a.close()
    b.close()


async def test_a_cancelled_add_items_still_writes_then_raises() -> None:
    # "always": the write goes to a worker thread (an inline one cannot be cancelled).
    s = ConvlogSession("cancel", durability="always")
    real = s._store
    entered, release = threading.Event(), threading.Event()

    class Slow:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def append_batch(self, *args: Any) -> Any:
            entered.set()
            release.wait(10)
            return real.append_batch(*args)

    s._store = Slow()  # type: ignore[assignment]
    task = asyncio.ensure_future(s.add_items(ITEMS[:2]))
    await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # it waits for the write to end
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    s._store = real
    assert await s.get_items() == ITEMS[:2]
    s.close()


async def test_store_calls_see_the_callers_context_variables() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    s = ConvlogSession("ctx")
    real = s._store
    seen: list[str] = []

    s._store = StoreSpy(real, lambda _: seen.append(var.get()))  # type: ignore[assignment]
    var.set("from the caller")
    await s.add_items(ITEMS[:1])
    await s.get_items()
    assert seen == ["from the caller", "from the caller"]
    s._store = real
    s.close()


async def test_store_errors_reach_the_awaiting_caller() -> None:
    s = ConvlogSession("err")
    with pytest.raises(convlog.InvalidMessage):
        await s.add_items([{"ok": 1}, "[not an object]"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await s.add_items([{"when": object()}])
    assert await s.get_items() == []
    s.close()


def test_worker_threads_grow_on_demand_up_to_their_limit() -> None:
    from convlog import _worker

    barrier = threading.Barrier(_worker.THREADS + 1, timeout=10)

    async def go() -> None:
        # THREADS calls that each wait for all of them: they can only all get there if
        # each has its own thread.
        await asyncio.gather(*(_worker.run(barrier.wait) for _ in range(_worker.THREADS)),
                             asyncio.to_thread(barrier.wait))
        assert len(_worker._threads) == _worker.THREADS

    asyncio.run(go())


async def test_a_worker_thread_keeps_no_result_alive() -> None:
    """Once its caller dropped it, a call's result is freed: the idle worker thread holds
    no reference to it (a 50 k-item list would otherwise live on until the next call)."""
    import time
    import weakref

    from convlog import _worker

    class Result:
        pass

    ref = weakref.ref(await _worker.run(Result))
    await asyncio.sleep(0)  # the loop drops the finished future, which held it
    deadline = time.monotonic() + 5
    while ref() is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the worker may not have returned from the call yet
    assert ref() is None


class _CompactResponses:
    """A stand-in for the API client's ``responses``: records each input, returns one
    compaction item."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    async def compact(self, **kwargs: Any) -> Any:
        import types

        self.inputs.append(kwargs.get("input"))
        return types.SimpleNamespace(
            output=[{"type": "compaction", "id": "cmp_1", "encrypted_content": "zzz"}],
            usage=None,
        )


def _turns(n: int, start: int = 0) -> list[Any]:
    """n items alternating user and assistant messages."""
    return [
        {"role": "user", "content": f"q{i}"} if i % 2 == 0 else
        {"type": "message", "role": "assistant", "id": f"m{i}", "status": "completed",
         "content": [{"type": "output_text", "text": f"a{i}", "annotations": []}]}
        for i in range(start, start + n)
    ]


async def test_wrapped_by_the_responses_compaction_session(tmp_path: pathlib.Path) -> None:
    """The SDK's OpenAIResponsesCompactionSession replaces the history with the compacted
    items; with a stand-in for the API client, on ConvlogSession and SQLiteSession alike."""
    import types

    from agents.memory import OpenAIResponsesCompactionSession

    history = _turns(12)
    results = []
    for inner in (ConvlogSession("comp", tmp_path / "c"), SQLiteSession("comp", tmp_path / "s.db")):
        client = types.SimpleNamespace(responses=_CompactResponses())
        s = OpenAIResponsesCompactionSession("comp", inner, client=client)  # type: ignore[arg-type]
        await s.add_items(copy.deepcopy(history))
        await s.run_compaction({"force": True, "compaction_mode": "input"})
        results.append((len(client.responses.inputs[0]), await inner.get_items(), await s.get_items()))
        inner.close()
    assert results[0] == results[1]
    assert results[0][1] == [{"type": "compaction", "id": "cmp_1", "encrypted_content": "zzz"}]


async def test_automatic_compaction_replaces_the_suffix_the_model_saw(tmp_path: pathlib.Path) -> None:
    """A Runner turn under OpenAIResponsesCompactionSession that sees only the last items
    (session limit 2) compacts just that suffix and keeps the older history: through
    ConvlogSession's snapshot hook, with the same outcome as SQLiteSession's. (Without the
    hook the SDK skips compaction of a partial history.)"""
    import types

    from agents.memory import OpenAIResponsesCompactionSession

    old = _turns(6)
    results = []
    settings = SessionSettings(limit=2)
    for inner in (ConvlogSession("auto", tmp_path / "c", session_settings=settings),
                  SQLiteSession("auto", tmp_path / "s.db", session_settings=settings)):
        await inner.add_items(copy.deepcopy(old))
        client = types.SimpleNamespace(responses=_CompactResponses())
        s = OpenAIResponsesCompactionSession(
            "auto", inner, client=client, compaction_mode="input",  # type: ignore[arg-type]
            should_trigger_compaction=lambda ctx: True,
        )
        model = ScriptedModel([[assistant_message("r6")]])
        await Runner.run(Agent(name="a", model=model), "q6", session=s)
        results.append((client.responses.inputs, await inner.get_items(limit=100)))
        inner.close()
    assert results[0] == results[1]
    inputs, history = results[0]
    # The model saw q4, a5, then the turn (q6, r6): that suffix was compacted.
    assert [i.get("content") for i in inputs[0][:1]] == ["q4"] and len(inputs[0]) == 4
    assert history == [*old[:4], {"type": "compaction", "id": "cmp_1", "encrypted_content": "zzz"}]


async def test_compaction_snapshot_replaces_a_suffix_as_sqlite_session_does(
    tmp_path: pathlib.Path,
) -> None:
    """The snapshot hook on its own, beside SQLiteSession's: the items, completeness, a
    suffix replacement with an expired prefix pruned, and a replacement refused (history
    kept) once the stored suffix changed after the snapshot."""
    out = [{"type": "compaction", "id": "c", "encrypted_content": "x"}]
    results = []
    for s in (ConvlogSession("snap", tmp_path / "c"), SQLiteSession("snap", tmp_path / "s.db")):
        await s.add_items(_turns(8))
        whole = await s._get_compaction_snapshot(100)
        snap = await s._get_compaction_snapshot(3)
        assert whole is not None and snap is not None
        row = [whole.complete, whole.items == _turns(8), snap.complete, snap.items == _turns(3, 5)]
        # Items 0 and 1 "expired": dropped with the suffix from items[1] (id 7) on replaced.
        expired = {"q0", "a1"}

        def prune(item: Any) -> bool:
            text = item.get("content")
            text = text if isinstance(text, str) else text[0]["text"]
            return text in expired

        row.append(await snap.replace_suffix(1, out))
        row.append(await s.get_items())
        # Stale: an append after the snapshot; a pop then another item (same count).
        stale = await s._get_compaction_snapshot(2)
        assert stale is not None
        await s.add_items(_turns(1, 50))
        row.append(await stale.replace_suffix(0, out))
        stale = await s._get_compaction_snapshot(2)
        assert stale is not None
        await s.pop_item()
        await s.add_items(_turns(1, 60))
        row.append(await stale.replace_suffix(0, out))
        row.append(await s.get_items())
        pruned = await s._get_compaction_snapshot(2, prune_prefix=prune)
        assert pruned is not None
        row.append(await pruned.replace_suffix(1, out))
        row.append(await s.get_items())
        # A pop then the same item again: the same bytes, but not the same history.
        stale = await s._get_compaction_snapshot(2)
        assert stale is not None
        last = await s.pop_item()
        assert last is not None
        await s.add_items([last])
        row.append(await stale.replace_suffix(0, out))
        row.append(await s.get_items() == row[10])
        results.append(row)
        s.close()
    assert results[0] == results[1]
    row = results[0]
    assert row[:4] == [True, True, False, True]
    assert row[4] is True and row[5] == [*_turns(6), *out]
    assert row[6] is False and row[7] is False
    assert row[8] == [*_turns(6), *out, *_turns(1, 60)]
    assert row[9] is True and row[10] == [*_turns(4, 2), *out, *out]
    assert row[11] is False and row[12] is True


async def test_compaction_snapshot_hook_is_not_inherited_by_a_subclass() -> None:
    class Sub(ConvlogSession):
        pass

    s = Sub("sub")
    await s.add_items(_turns(2))
    assert await s._get_compaction_snapshot(5) is None
    assert await s.get_items() == _turns(2)
    s.close()
    plain = ConvlogSession("plain")
    await plain.add_items(_turns(2))
    snap = await plain._get_compaction_snapshot(5)
    assert snap is not None and snap.items == _turns(2) and snap.complete
    plain.close()
