"""Store.fork, replace, keyed appends, window and metadata (issue #13), the read cache
staying exact across them, and ConvlogSession's replace_items, fork and compaction hook."""

from __future__ import annotations

import asyncio
import pathlib
import types
from typing import Any

import pytest

import convlog
from convlog import Store


def msgs(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(start, start + n)]


# ---- fork ----------------------------------------------------------------------------


def test_fork_shares_a_prefix_and_then_diverges(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(5))
        lsn = s.last_lsn
        assert s.fork("a", "b", 3) == 3
        assert s.last_lsn == lsn + 1  # one record, whatever the length
        assert s.tail("b") == msgs(3)
        r = s.append("b", {"role": "user", "content": "b4"})
        assert r.interaction_id == 4
        s.truncate("a", 1)
        assert s.tail("b") == [*msgs(3), {"role": "user", "content": "b4"}]
        assert s.tail("a") == msgs(1)
        assert s.fork("a", "c") == 1  # at=None: everything
        assert s.fork("a", "d", 99) == 1  # at most all
        assert s.fork("nobody", "e") == 0 and "e" not in s
    with Store(store_dir) as s:  # durable
        assert s.tail("b") == [*msgs(3), {"role": "user", "content": "b4"}]


def test_fork_into_an_existing_session_raises_session_exists(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(2))
        s.append("b", {"role": "user", "content": "mine"})
        lsn = s.last_lsn
        with pytest.raises(convlog.SessionExists) as e:
            s.fork("a", "b")
        assert e.value.session == "b"
        assert isinstance(e.value, convlog.Error)
        assert s.tail("b") == [{"role": "user", "content": "mine"}]
        assert s.last_lsn == lsn
        with pytest.raises(convlog.InvalidSessionId):
            s.fork("a", "")


# ---- replace -------------------------------------------------------------------------


def test_replace_makes_the_session_exactly_the_messages(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(4))
        s.append("other", {"role": "user", "content": "x"})
        receipts = s.replace("a", msgs(2, start=10))
        assert [r.interaction_id for r in receipts] == [1, 2]
        assert s.tail("a") == msgs(2, start=10)
        assert s.count("a") == 2
        assert s.tail("other") == [{"role": "user", "content": "x"}]
        # Into a new session, and with raw JSON.
        assert [r.interaction_id for r in s.replace("new", ['{"role":"user","content":"j"}'])] == [1]
        assert s.get_json("new", 1) == '{"role":"user","content":"j"}'
        # Empty: the session is emptied.
        assert s.replace("a", []) == []
        assert s.count("a") == 0
    with Store(store_dir) as s:
        assert s.count("a") == 0 and s.tail("new") == [{"role": "user", "content": "j"}]


def test_replace_with_a_stale_expected_next_id_conflicts_and_changes_nothing(
    store_dir: pathlib.Path,
) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(3))
        lsn = s.last_lsn
        with pytest.raises(convlog.Conflict) as e:
            s.replace("a", msgs(1, start=9), expected_next_id=3)
        assert (e.value.expected, e.value.actual) == (3, 4)
        assert s.tail("a") == msgs(3) and s.last_lsn == lsn
        s.replace("a", msgs(1, start=9), expected_next_id=4)
        assert s.tail("a") == msgs(1, start=9)


def test_replace_with_an_invalid_message_changes_nothing(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(2))
        with pytest.raises(convlog.InvalidMessage):
            s.replace("a", [msgs(1)[0], "[1, 2]"])
        with pytest.raises(TypeError):
            s.replace("a", {"role": "user"})  # a dict is not a list of messages
        assert s.tail("a") == msgs(2)


# ---- keyed appends -------------------------------------------------------------------


def test_a_keyed_retry_returns_the_original_receipts_and_writes_nothing(
    store_dir: pathlib.Path,
) -> None:
    with Store(store_dir) as s:
        first = s.append("a", {"role": "user", "content": "hi"}, key="k1")
        lsn = s.last_lsn
        again = s.append("a", {"role": "user", "content": "hi"}, key="k1")
        assert again == first
        assert s.count("a") == 1 and s.last_lsn == lsn
        batch = s.append_batch("a", msgs(3), key="k2")
        assert [r.interaction_id for r in batch] == [2, 3, 4]
        lsn = s.last_lsn
        assert s.append_batch("a", msgs(3), key="k2") == batch
        assert s.count("a") == 4 and s.last_lsn == lsn
        # A key is per session.
        assert s.append("b", {"role": "user", "content": "hi"}, key="k1").interaction_id == 1
    with Store(store_dir) as s:  # remembered across a reopen
        assert s.append_batch("a", msgs(3), key="k2") == batch
        assert s.count("a") == 4


def test_a_keyed_append_is_one_record_per_message_and_keeps_other_cached_tails(
    store_dir: pathlib.Path,
) -> None:
    with Store(store_dir) as s:
        s.append_batch("b", msgs(2))
        assert s.tail("b", 2) == msgs(2)  # fills the cache
        lsn = s.last_lsn
        r = s.append_batch("a", msgs(2), key="turn-1")
        assert [x.lsn for x in r] == [lsn + 1, lsn + 2]  # the key rides on the first
        assert s.last_lsn == lsn + 2
        # This process made every record since: b's cached tail stands.
        assert s.tail_if_cached("b", 2) == msgs(2)


def test_a_key_is_forgotten_with_its_messages(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("a", {"role": "user", "content": "hi"}, key="k")
        s.pop("a")
        r = s.append("a", {"role": "user", "content": "hi"}, key="k")
        assert r.interaction_id == 1 and s.count("a") == 1


def test_an_invalid_key_raises_invalid_key(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for key in ("", "x" * 257):
            with pytest.raises(convlog.InvalidKey) as e:
                s.append("a", {"role": "user", "content": "hi"}, key=key)
            assert isinstance(e.value, ValueError) and e.value.session == "a"
        assert s.count("a") == 0
        assert s.append("a", {"role": "user", "content": "hi"}, key="x" * 256).interaction_id == 1


# ---- window --------------------------------------------------------------------------

TOOL_SESSION: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": "20C"},
    {"role": "assistant", "content": "sunny, 20C"},
]


def test_window_keeps_a_tool_call_with_its_results(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("t", TOOL_SESSION)
        assert s.window("t") == TOOL_SESSION
        # 3 messages would start at a tool result: the window goes back to a user message,
        # and with only 4 that start right, exactly the exchange from "weather?" on...
        assert s.window("t", max_messages=5) == TOOL_SESSION[3:]
        # ...and with fewer, nothing fits (never a result without its call).
        for n in (1, 2, 3, 4):
            got = s.window("t", max_messages=n)
            assert got == [], (n, got)
        # The kept system message counts in the budget; alone when the exchange does not fit.
        assert s.window("t", max_messages=5, keep_system=True) == [TOOL_SESSION[0]]
        assert s.window("t", max_messages=6, keep_system=True) == [TOOL_SESSION[0], *TOOL_SESSION[3:]]
        assert s.window("t", keep_system=True) == TOOL_SESSION  # no duplicate system message


def test_window_with_a_byte_budget_and_responses_items(store_dir: pathlib.Path) -> None:
    items = [
        {"role": "user", "content": "q1"},
        {"type": "function_call", "call_id": "x", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "x", "output": "ok"},
        {"role": "user", "content": "q2"},
        {"type": "function_call", "call_id": "y", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "y", "output": "ok"},
    ]
    with Store(store_dir) as s:
        s.append_batch("r", items)
        sizes = [len(j) for j in s.tail_json("r")]
        assert s.window("r", max_bytes=sum(sizes[3:])) == items[3:]
        assert s.window("r", max_bytes=sum(sizes[3:]) - 1) == []
        assert s.window("r", max_bytes=sum(sizes)) == items
        assert s.window("nobody") == []


# ---- metadata ------------------------------------------------------------------------


def test_meta_round_trip_and_sessions_where(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        assert s.meta("a") is None
        s.append("a", {"role": "user", "content": "hi"})
        s.append("b", {"role": "user", "content": "hi"})
        lsn = s.set_meta("a", {"user": "u1", "tags": ["x", "y"], "n": 1})
        assert lsn == s.last_lsn
        s.set_meta("b", {"user": "u2"})
        assert s.meta("a") == {"user": "u1", "tags": ["x", "y"], "n": 1}
        s.set_meta("b", '{"user":"u1"}')  # the latest wins; raw JSON too
        assert s.meta("b") == {"user": "u1"}
        assert [i.id for i in s.sessions_where("user", "u1")] == ["a", "b"]
        assert [i.id for i in s.sessions_where("n", 1)] == ["a"]
        assert s.sessions_where("user", "u3") == []
        s.clear("a")  # a clear keeps the metadata; an empty session is not listed
        assert s.meta("a") == {"user": "u1", "tags": ["x", "y"], "n": 1}
        assert [i.id for i in s.sessions_where("user", "u1")] == ["b"]
        s.set_meta("nomsgs", {"k": 1})  # metadata before any message
        assert s.meta("nomsgs") == {"k": 1}
        with pytest.raises(convlog.InvalidMessage):
            s.set_meta("a", "[1]")
        with pytest.raises(convlog.RecordTooLarge):
            s.set_meta("a", {"big": "x" * (64 << 10)})
    with Store(store_dir) as s:
        assert s.meta("b") == {"user": "u1"}


# ---- the cache stays exact -----------------------------------------------------------


def test_the_cache_stays_exact_across_replace_fork_keys_and_meta(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", msgs(5))
        s.append_batch("b", msgs(2, start=50))
        assert s.tail("a", 3) == msgs(3, start=3)  # fills the cache
        assert s.tail("b", 2) == msgs(2, start=50)
        assert s.tail_if_cached("a", 3) == msgs(3, start=3)

        s.replace("a", msgs(2, start=20))
        assert s.tail_if_cached("a", 3) is None  # dropped, not stale
        assert s.tail("a", 3) == msgs(2, start=20)
        assert s.tail_if_cached("a", 3) == msgs(2, start=20)
        # This process's own replace is accounted for: other sessions keep their entries.
        assert s.tail_if_cached("b", 2) == msgs(2, start=50)

        s.fork("a", "f")
        assert s.tail("f", 5) == msgs(2, start=20)
        s.replace("f", msgs(1, start=30), expected_next_id=3)
        assert s.tail("f", 5) == msgs(1, start=30)
        assert s.tail("a", 5) == msgs(2, start=20)  # the fork's source is unchanged

        with pytest.raises(convlog.Conflict):
            s.replace("a", msgs(1), expected_next_id=1)
        assert s.tail("a", 5) == msgs(2, start=20)

        s.append("a", {"role": "user", "content": "k"}, key="key")
        assert s.tail("a", 5) == [*msgs(2, start=20), {"role": "user", "content": "k"}]
        s.append("a", {"role": "user", "content": "other bytes"}, key="key")  # a retry
        assert s.tail("a", 5) == [*msgs(2, start=20), {"role": "user", "content": "k"}]

        assert s.tail("b", 2) == msgs(2, start=50)
        s.set_meta("b", {"x": 1})  # no message changed: the entry stays
        assert s.tail_if_cached("b", 2) == msgs(2, start=50)
        assert s.tail_if_cached("a", 3) == [*msgs(2, start=20), {"role": "user", "content": "k"}]


def test_another_stores_replace_is_seen(store_dir: pathlib.Path) -> None:
    """A replace through a second Store object on the same path (they share the open store
    and its cache): the first object's cached tail never hides it."""
    with Store(store_dir) as s, Store(store_dir) as t:  # shared open store, shared cache
        s.append_batch("a", msgs(3))
        assert s.tail("a", 3) == msgs(3)
        t.replace("a", msgs(1, start=7))
        assert s.tail_if_cached("a", 3) is None
        assert s.tail("a", 3) == msgs(1, start=7)


# ---- ConvlogSession ------------------------------------------------------------------


def test_convlog_session_replace_items_and_fork(tmp_path: pathlib.Path) -> None:
    from convlog.agents import ConvlogSession

    async def go() -> None:
        s = ConvlogSession("s1")  # ":memory:"
        await s.add_items(msgs(4))
        await s.replace_items(msgs(2, start=10))
        assert await s.get_items() == msgs(2, start=10)
        f = s.fork("s2", at=1)
        assert f.session_id == "s2" and f.db_path == s.db_path
        assert await f.get_items() == msgs(1, start=10)
        await f.add_items(msgs(1, start=99))
        assert await s.get_items() == msgs(2, start=10)
        with pytest.raises(convlog.SessionExists):
            s.fork("s2")
        s.close()
        # The fork keeps the shared ":memory:" store open until it closes too.
        assert await f.get_items() == [*msgs(1, start=10), *msgs(1, start=99)]
        f.close()
        assert f._store.closed
        with pytest.raises(RuntimeError, match="closed"):
            await f.get_items()
        with pytest.raises(RuntimeError, match="closed"):
            await s.replace_items([])

        d = ConvlogSession("d1", tmp_path / "d")
        await d.add_items(msgs(2))
        d.fork("d2").close()
        d.close()
        e = ConvlogSession("d2", tmp_path / "d")
        assert await e.get_items() == msgs(2)
        e.close()

    asyncio.run(go())


def test_responses_compaction_replaces_through_store_replace(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's OpenAIResponsesCompactionSession uses the atomic hook: no clear, no add."""
    from agents.memory import OpenAIResponsesCompactionSession

    from convlog.agents import ConvlogSession

    class Responses:
        async def compact(self, **kwargs: Any) -> Any:
            return types.SimpleNamespace(
                output=[{"type": "compaction", "id": "cmp_1", "encrypted_content": "zzz"}],
                usage=None,
            )

    async def go() -> None:
        inner = ConvlogSession("comp", tmp_path / "c")
        await inner.add_items(msgs(12))

        async def refuse(*_: Any) -> None:
            raise AssertionError("compaction cleared or added instead of replacing")

        monkeypatch.setattr(ConvlogSession, "clear_session", refuse)
        monkeypatch.setattr(ConvlogSession, "add_items", refuse)
        s = OpenAIResponsesCompactionSession(
            "comp", inner, client=types.SimpleNamespace(responses=Responses())  # type: ignore[arg-type]
        )
        await s.run_compaction({"force": True, "compaction_mode": "input"})
        assert await inner.get_items() == [
            {"type": "compaction", "id": "cmp_1", "encrypted_content": "zzz"}
        ]
        inner.close()

    asyncio.run(go())


def test_a_subclass_does_not_inherit_the_atomic_hook() -> None:
    from convlog.agents import ConvlogSession

    class Sub(ConvlogSession):
        pass

    async def go() -> None:
        s = Sub("x")
        await s.add_items(msgs(2))
        assert await s._atomic_replace_items(msgs(1)) is False
        assert await s.get_items() == msgs(2)
        s.close()

    asyncio.run(go())
