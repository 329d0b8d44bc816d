"""convlog.automata: the drop-in for Automata's OpenAIAutomataConversationDatabase."""

from __future__ import annotations

import os
import pathlib
import threading

import pytest

import convlog
from convlog.automata import FunctionCall, OpenAIAutomataConversationDatabase, OpenAIChatMessage


def test_the_automata_documentation_example_runs(tmp_path: pathlib.Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        # The documentation's example, as written (only its imports changed, above).
        db = OpenAIAutomataConversationDatabase(db_path="path/to/db")
        message = OpenAIChatMessage(role="user", content="Hello, bot", function_call=FunctionCall(function_name="Hello", kwargs={}))
        db.save_message(session_id= "session1", message= message)
        messages_in_session = db.get_messages(session_id="session1")

        assert messages_in_session == [message]
        [m] = messages_in_session
        assert (m.role, m.content) == ("user", "Hello, bot")
        assert m.function_call == FunctionCall(name="Hello", arguments={})
        assert (tmp_path / "path" / "to" / "db").is_dir()
        db.close()
    finally:
        os.chdir(cwd)


def test_function_calls_and_none_content_round_trip(tmp_path: pathlib.Path) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    msgs = [
        OpenAIChatMessage(role="system", content="You are Automata. ✨"),
        OpenAIChatMessage(role="assistant", content=None,
                          function_call=FunctionCall(name="py-retriever",
                                                     arguments={"query": "Where's \"main\"?", "n": "3"})),
        OpenAIChatMessage(role="user", content="Résultat: 日本語 'quotes' -- ; DROP TABLE interactions"),
    ]
    ids = [db.save_message("s", m) for m in msgs]
    assert ids == [1, 2, 3]
    back = db.get_messages("s")
    assert back == msgs
    assert back[1].function_call is not None
    assert back[1].function_call.arguments == {"query": "Where's \"main\"?", "n": "3"}
    assert back[1].to_dict() == msgs[1].to_dict()
    assert back[1].to_dict()["function_call"]["arguments"] == '{"query": "Where\'s \\"main\\"?", "n": "3"}'
    assert str(back[1].function_call) == '{"name": "py-retriever", "arguments": {"query": "Where\'s \\"main\\"?", "n": "3"}}'
    db.close()


def test_interaction_counts_and_session_isolation(tmp_path: pathlib.Path) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    assert db.get_interaction_count("a") == 0 and db._get_last_interaction_id("a") == 0
    db.save_message("a", OpenAIChatMessage(role="user", content="1"))
    assert db.get_interaction_count("a") == 1
    db.save_message("a", OpenAIChatMessage(role="assistant", content="2"))
    db.save_message("b", OpenAIChatMessage(role="user", content="b"))
    assert db._get_last_interaction_id("a") == 2 and db.get_interaction_count("b") == 1
    assert [m.content for m in db.get_messages("a")] == ["1", "2"]
    assert db.get_messages("nobody") == []
    db.close()
    again = OpenAIAutomataConversationDatabase(str(tmp_path / "db"))
    assert [m.content for m in again.get_messages("a")] == ["1", "2"]
    assert again.save_message("a", OpenAIChatMessage(role="user", content="3")) == 3
    again.close()


@pytest.mark.parametrize(
    "bad, words",
    [(123, "must be a string"), (None, "must be a string"), (b"s1", "must be a string"),
     ("", "empty"), ("x" * 300, "longer than 256 bytes"), ("tab\there", "control character"),
     ("new\nline", "control character")],
)
def test_bad_session_ids_raise_a_clear_error(tmp_path: pathlib.Path, bad: object, words: str) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    for call in (lambda: db.save_message(bad, OpenAIChatMessage(role="user", content="x")),  # type: ignore[arg-type]
                 lambda: db.get_messages(bad),  # type: ignore[arg-type]
                 lambda: db.get_interaction_count(bad)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=words):
            call()
    if isinstance(bad, str):
        with pytest.raises(convlog.InvalidSessionId):
            db.get_messages(bad)
    db.close()


def test_only_openai_chat_messages_are_saved(tmp_path: pathlib.Path) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    with pytest.raises(ValueError, match="OpenAIChatMessage"):
        db.save_message("s", {"role": "user", "content": "dict"})  # type: ignore[arg-type]
    assert db.get_interaction_count("s") == 0
    db.close()


def test_function_call_spellings() -> None:
    assert FunctionCall("f", {"a": "1"}) == FunctionCall(function_name="f", kwargs={"a": "1"})
    assert FunctionCall(name="f").arguments == {}
    assert FunctionCall.from_response_dict({"name": "f", "arguments": '{"a": "1"}'}) == FunctionCall("f", {"a": "1"})
    assert FunctionCall("f", {"a": "1"}).to_dict() == {"name": "f", "arguments": '{"a": "1"}'}
    with pytest.raises(TypeError):
        FunctionCall()
    with pytest.raises(TypeError):
        FunctionCall("f", function_name="g")


def test_threads_saving_to_one_session_get_gapless_ids(tmp_path: pathlib.Path) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    n_threads, per = 8, 100
    ids: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(per):
            got = db.save_message("race", OpenAIChatMessage(role="user", content=f"{t}-{i}"))
            with lock:
                ids.append(got)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(ids) == list(range(1, n_threads * per + 1))
    contents = [m.content for m in db.get_messages("race")]
    assert len(contents) == len(set(contents)) == n_threads * per  # each stored once
    assert db.get_interaction_count("race") == n_threads * per
    db.close()


def test_closed_database_raises(tmp_path: pathlib.Path) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    db.close()
    with pytest.raises(convlog.Closed):
        db.get_messages("s")


def test_function_call_arguments_that_are_no_json_are_refused() -> None:
    call = FunctionCall(name="f", arguments={"x": float("nan")})
    with pytest.raises(ValueError):
        call.to_dict()


def test_a_function_call_in_wire_form_is_taken_and_a_malformed_stored_one_is_a_value_error(
    tmp_path: pathlib.Path,
) -> None:
    db = OpenAIAutomataConversationDatabase(tmp_path / "db")
    wire = {"name": "f", "arguments": '{"x": 1}'}
    db.save_message("s", OpenAIChatMessage("assistant", None, function_call=wire))  # type: ignore[arg-type]
    [back] = db.get_messages("s")
    assert back.function_call == FunctionCall(name="f", arguments={"x": 1})
    with pytest.raises(TypeError):
        OpenAIChatMessage("assistant", None, function_call="f")  # type: ignore[arg-type]
    # What another writer may have stored: a ValueError, not AttributeError or TypeError.
    store = db._store
    for bad in ("f", {"name": "f", "arguments": "[1]"}, {"arguments": "{}"}):
        store.append("t", {"role": "assistant", "content": None, "function_call": bad})
        with pytest.raises(ValueError):
            db.get_messages("t")
        store.pop("t")
    db.close()
