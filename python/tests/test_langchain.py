"""convlog.langchain.ConvlogChatMessageHistory: lossless messages, the async methods, and
RunnableWithMessageHistory."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import warnings
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

import convlog
from helpers import StoreSpy, holding_write_lock

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # langchain-core deprecated BaseChatMessageHistory (1.6.4)
    from convlog.langchain import ConvlogChatMessageHistory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MESSAGES: list[BaseMessage] = [
    SystemMessage("You are terse. Ünïcödé 🎉", id="sys-1"),
    HumanMessage("What's 2+2? \"quoted\" 'single'; DROP TABLE message_store;", name="ada",
                 additional_kwargs={"x": [1, 2]}),
    HumanMessage(content=[{"type": "text", "text": "look"},
                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
    AIMessage(
        "",
        tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "call_1", "type": "tool_call"}],
        usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
        response_metadata={"model_name": "m", "finish_reason": "tool_calls"},
        id="ai-1",
    ),
    ToolMessage("4", tool_call_id="call_1", artifact={"raw": 4}, status="success"),
    AIMessage("4.", invalid_tool_calls=[{"name": "x", "args": "{bad", "id": "c2", "error": "e",
                                          "type": "invalid_tool_call"}]),
    FunctionMessage("result", name="legacy_fn"),
    ChatMessage("custom role text", role="critic"),
    AIMessageChunk("chunk", id="chunk-1"),
    HumanMessageChunk("human chunk"),
]


def test_is_a_base_chat_message_history(tmp_path: pathlib.Path) -> None:
    h = ConvlogChatMessageHistory("s", tmp_path / "db")
    assert isinstance(h, BaseChatMessageHistory)
    h.close()


async def test_what_is_not_a_base_message_is_a_type_error_and_writes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    h = ConvlogChatMessageHistory("s", tmp_path / "db")
    for bad in ("hi", HumanMessage("hi"), [{"role": "user", "content": "hi"}], [HumanMessage("a"), "b"]):
        with pytest.raises(TypeError):
            h.add_messages(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await h.aadd_messages(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        h.add_message("hi")  # type: ignore[arg-type]
    assert h.messages == []
    h.close()


def test_every_message_type_round_trips(tmp_path: pathlib.Path) -> None:
    h = ConvlogChatMessageHistory("all", tmp_path / "db")
    h.add_messages(MESSAGES)
    got = h.messages
    assert type(got) is list
    assert got == MESSAGES
    assert [type(m) for m in got] == [type(m) for m in MESSAGES]
    assert got[3].tool_calls == MESSAGES[3].tool_calls  # type: ignore[attr-defined]
    assert got[3].usage_metadata == MESSAGES[3].usage_metadata  # type: ignore[attr-defined]
    assert got[4].artifact == {"raw": 4}  # type: ignore[attr-defined]
    # Fresh objects each time.
    assert h.messages[0] is not got[0]
    h.close()
    # And after a reopen.
    again = ConvlogChatMessageHistory("all", tmp_path / "db")
    assert again.messages == MESSAGES
    again.close()


def test_add_message_helpers_and_clear(tmp_path: pathlib.Path) -> None:
    h = ConvlogChatMessageHistory("h", tmp_path / "db")
    other = ConvlogChatMessageHistory("other", tmp_path / "db")
    other.add_message(HumanMessage("kept"))
    h.add_user_message("hi")
    h.add_ai_message("hello")
    h.add_message(SystemMessage("sys"))
    h.add_messages([])
    assert [type(m).__name__ for m in h.messages] == ["HumanMessage", "AIMessage", "SystemMessage"]
    h.clear()
    assert h.messages == []
    assert other.messages == [HumanMessage("kept")]
    h.add_user_message("again")
    assert h.messages == [HumanMessage("again")]
    h.close()
    other.close()


def test_eq_compares_messages(tmp_path: pathlib.Path) -> None:
    a = ConvlogChatMessageHistory("a", tmp_path / "db")
    b = ConvlogChatMessageHistory("b", tmp_path / "db")
    a.add_messages(MESSAGES[:3])
    b.add_messages(MESSAGES[:3])
    assert a == b and a == MESSAGES[:3]
    b.add_user_message("more")
    assert a != b
    assert a != "not a history"
    a.close()
    b.close()


async def test_async_methods_do_not_block_the_loop(tmp_path: pathlib.Path) -> None:
    h = ConvlogChatMessageHistory("async", tmp_path / "db")
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = h._store

    def record(name: str) -> None:
        # The one call made on the loop: a write that never waits (no other writer, no
        # sync: a copy to the page cache).
        if name == "try_append_batch":
            on_loop.append((name, threading.get_ident()))
        else:
            seen.append(threading.get_ident())

    on_loop: list[tuple[str, int]] = []
    h._store = StoreSpy(real, record)  # type: ignore[assignment]
    await h.aadd_messages(MESSAGES)
    assert await h.aget_messages() == MESSAGES
    await h.aclear()
    assert await h.aget_messages() == []
    assert len(seen) == 3 and loop_thread not in seen
    assert on_loop == [("try_append_batch", loop_thread)]
    h._store = real
    h.close()


@pytest.mark.parametrize("durability", ["always", "buffered"])
async def test_aadd_messages_that_would_wait_or_sync_runs_in_a_worker_thread(
    tmp_path: pathlib.Path, durability: str
) -> None:
    # Under "always" every write syncs; more than INLINE_ITEMS messages are too many to
    # encode on the loop. Both go to a worker, whatever the store's state.
    from convlog._worker import INLINE_ITEMS

    h = ConvlogChatMessageHistory("w", tmp_path / "db", durability=durability)
    real = h._store
    calls: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    h._store = StoreSpy(  # type: ignore[assignment]
        real, lambda name: calls.append((name, threading.get_ident() == loop_thread))
    )
    many = [HumanMessage(content=str(i)) for i in range(INLINE_ITEMS + 1)]
    await h.aadd_messages(many)
    expected = [("append_batch", False)]
    if durability == "always":
        await h.aadd_messages(MESSAGES[:1])
        expected.append(("append_batch", False))
    assert calls == expected
    h._store = real
    assert h.messages == (many + MESSAGES[:1] if durability == "always" else many)
    h.close()


async def test_aadd_messages_waits_in_a_worker_while_another_process_holds_the_write_lock(
    tmp_path: pathlib.Path,
) -> None:
    h = ConvlogChatMessageHistory("l", tmp_path / "db")
    await h.aadd_messages(MESSAGES[:1])  # the store exists, with its LOCK file
    with holding_write_lock(tmp_path / "db"):
        task = asyncio.ensure_future(h.aadd_messages(MESSAGES[1:2]))
        await asyncio.sleep(0.2)
        assert not task.done()  # busy inline: handed to a worker, which waits for the lock
    await asyncio.wait_for(task, 10)
    assert h.messages == MESSAGES[:2]
    h.close()


def test_closed_history_raises(tmp_path: pathlib.Path) -> None:
    h = ConvlogChatMessageHistory("c", tmp_path / "db")
    h.close()
    with pytest.raises(convlog.Closed):
        h.messages
    with pytest.raises(convlog.Closed):
        h.add_user_message("x")


def test_memory_history_is_private() -> None:
    a = ConvlogChatMessageHistory("m")
    b = ConvlogChatMessageHistory("m")
    a.add_user_message("only in a")
    assert b.messages == []
    a.close()
    b.close()


def test_under_runnable_with_message_history(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "db"
    histories: dict[str, ConvlogChatMessageHistory] = {}

    def get_history(session_id: str) -> ConvlogChatMessageHistory:
        if session_id not in histories:
            histories[session_id] = ConvlogChatMessageHistory(session_id, db)
        return histories[session_id]

    def fake_model(prompt: Any) -> AIMessage:
        msgs = prompt.to_messages()
        # Answers with what it was shown, so the test sees the history it got.
        return AIMessage(f"saw {len(msgs)}: " + " | ".join(str(m.content) for m in msgs))

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | RunnableLambda(fake_model),
        get_history,
        input_messages_key="question",
        history_messages_key="history",
    )
    cfg = {"configurable": {"session_id": "lc-1"}}
    r1 = chain.invoke({"question": "I am Ada"}, config=cfg)
    assert r1.content == "saw 2: Be brief. | I am Ada"
    r2 = chain.invoke({"question": "Who am I?"}, config=cfg)
    assert r2.content.startswith("saw 4: Be brief. | I am Ada | saw 2")
    assert r2.content.endswith("| Who am I?")
    r3 = asyncio.run(chain.ainvoke({"question": "other"}, config={"configurable": {"session_id": "lc-2"}}))
    assert r3.content == "saw 2: Be brief. | other"
    for h in histories.values():
        h.close()
    reopened = ConvlogChatMessageHistory("lc-1", db)
    assert [type(m).__name__ for m in reopened.messages] == [
        "HumanMessage", "AIMessage", "HumanMessage", "AIMessage"]
    reopened.close()


async def test_aadd_messages_goes_through_a_subclass_add_messages(tmp_path: pathlib.Path) -> None:
    # A subclass that overrides add_messages keeps it: the loop-thread path is this class's.
    class OnlyHuman(ConvlogChatMessageHistory):
        def add_messages(self, messages: Any) -> None:
            super().add_messages([m for m in messages if isinstance(m, HumanMessage)])

    h = OnlyHuman("sub", tmp_path / "db")
    await h.aadd_messages([HumanMessage("kept"), AIMessage("dropped")])
    assert h.messages == [HumanMessage("kept")]
    h.close()
