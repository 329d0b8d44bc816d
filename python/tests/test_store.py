"""convlog.Store: the core, driven as a Python caller would."""

from __future__ import annotations

import copy
import gc
import json
import pathlib
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

import convlog
from convlog import Store

CHAT = {"role": "user", "content": "What's the weather in Paris? — 18°C ☔ 🎉"}


def test_dict_str_and_bytes_round_trip(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        r1 = s.append("chat", CHAT)
        r2 = s.append("chat", '{"role": "assistant",  "content": "Je vérifie."}')
        r3 = s.append("chat", b'{"x":[1,2,{"y":null}],"b":true}')
        assert [r1.interaction_id, r2.interaction_id, r3.interaction_id] == [1, 2, 3]
        assert r1.lsn < r2.lsn < r3.lsn
        assert s.tail("chat") == [
            CHAT,
            {"role": "assistant", "content": "Je vérifie."},
            {"x": [1, 2, {"y": None}], "b": True},
        ]
        # JSON text given as str or bytes is kept byte for byte, whitespace included.
        assert s.get_json("chat", 2) == '{"role": "assistant",  "content": "Je vérifie."}'
        assert s.get_json("chat", 3) == '{"x":[1,2,{"y":null}],"b":true}'
        # A dict is stored as compact UTF-8 JSON, key order kept.
        assert json.loads(s.get_json("chat", 1)) == CHAT
        assert list(json.loads(s.get_json("chat", 1))) == ["role", "content"]


def test_receipt(store_dir: pathlib.Path) -> None:
    before = time.time_ns() // 1000
    with Store(store_dir) as s:
        r = s.append("a", {})
        after = time.time_ns() // 1000
        assert isinstance(r, convlog.Receipt)
        assert (r.interaction_id, r.lsn) == (1, 1)
        assert before - 1_000_000 <= r.timestamp <= after + 1_000_000
        assert r == convlog.Receipt(1, 1, r.timestamp)
        assert hash(r) == hash(convlog.Receipt(1, 1, r.timestamp))
        assert "interaction_id=1" in repr(r)
        r2 = s.append("b", {})
        assert (r2.interaction_id, r2.lsn) == (1, 2)
        assert r2.timestamp >= r.timestamp


def test_receipts_and_session_infos_pickle_and_copy(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        r = s.append("a", {})
        s.append("a", {})
        (info,) = s.sessions()
    for value in (r, info):
        for again in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
            assert type(again) is type(value)
            assert again == value
            assert repr(again) == repr(value)
    assert (info.id, info.count) == ("a", 2)
    assert convlog.SessionInfo("a", 2, info.first, info.last) == info
    assert convlog.SessionInfo("a", 3, info.first, info.last) != info


def test_values_that_json_can_spell(store_dir: pathlib.Path) -> None:
    msg = {
        "big": 2**80,
        "neg": -(2**70),
        "floats": [0.1, 1e308, -0.0, 5e-324, 1.5],
        "unicode": "𝄞 日本語 עברית \u0000 \t \"quoted\" \\ back",
        "lone_surrogate": "\ud83d",
        "sql": "'; DROP TABLE agent_messages; --",
        "nested": {"a": {"b": {"c": [[], {}, [None]]}}},
        "empty": "",
    }
    with Store(store_dir) as s:
        s.append("v", msg)
        [back] = s.tail("v")
        assert back == msg
        assert back["big"] == 2**80 and isinstance(back["big"], int)
        assert str(back["floats"][2]) == "-0.0"


def test_json_nested_past_max_json_depth_is_refused_and_changes_nothing(store_dir: pathlib.Path) -> None:
    # Stored, it would make every read of the session (and a pop, after removing it)
    # raise RecursionError.
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    with Store(store_dir) as s:
        s.append("d", {"ok": 1})
        with pytest.raises(convlog.InvalidMessage, match="nested deeper than 512 levels"):
            s.append("d", deep)
        assert s.count("d") == 1
        s.append("d", '{"a":' + "[" * 511 + "]" * 511 + "}")
        assert s.pop("d") == {"a": json.loads("[" * 511 + "]" * 511)}


def test_a_dict_nested_past_the_interpreters_limit_is_invalid_message(store_dir: pathlib.Path) -> None:
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep}
    with Store(store_dir) as s:
        with pytest.raises(convlog.InvalidMessage):
            s.append("d", deep)
        with pytest.raises(convlog.InvalidMessage):
            s.append_batch("d", [{"ok": 1}, deep])
        assert s.count("d") == 0


def test_negative_zero_reads_back_as_json_loads_reads_it(store_dir: pathlib.Path) -> None:
    text = '{"a":-0,"b":[-0,-0.0,0],"c":{"d":-0.0}}'
    with Store(store_dir) as s:
        s.append("z", text)
        assert repr(s.tail("z")) == repr([json.loads(text)])
        assert repr(s.get("z", 1)) == repr(json.loads(text))
        assert repr(list(s.messages("z"))) == repr([json.loads(text)])


def test_lone_surrogates_in_keys_round_trip_at_every_level(store_dir: pathlib.Path) -> None:
    msgs = [{"\ud800": 1}, {"x\udc00": {"\ud83d": [2]}}, {"a": {"\ud800": 3}}]
    with Store(store_dir) as s:
        for m in msgs:
            s.append("k", m)
        assert s.tail("k") == msgs
        assert [json.loads(t) for t in s.tail_json("k")] == msgs


def test_one_message_where_a_batch_belongs_is_a_type_error(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for one in ('{"a":1}', b'{"a":1}', bytearray(b'{"a":1}'), {"a": 1}):
            with pytest.raises(TypeError, match="takes a list"):
                s.append_batch("b", one)
        assert s.count("b") == 0


def test_non_str_keys_become_str_as_in_json(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("k", {1: "a", 2.5: "b", None: "c"})
        assert s.tail("k") == [{"1": "a", "2.5": "b", "null": "c"}]


def test_append_batch_is_atomic(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        rs = s.append_batch("b", [{"i": i} for i in range(5)])
        assert [r.interaction_id for r in rs] == [1, 2, 3, 4, 5]
        assert len({r.timestamp for r in rs}) == 1
        assert s.append_batch("b", []) == []
        # One bad message: nothing of the batch is appended.
        with pytest.raises(convlog.InvalidMessage):
            s.append_batch("b", [{"ok": 1}, "[1, 2]", {"ok": 2}])
        with pytest.raises(TypeError):
            s.append_batch("b", [{"ok": 1}, 42])
        assert s.count("b") == 5
        # Any iterable, not just lists.
        s.append_batch("b", ({"g": i} for i in range(2)))
        assert s.tail("b", 2) == [{"g": 0}, {"g": 1}]
        with pytest.raises(TypeError):
            s.append_batch("b", {"role": "user"})


def test_append_if(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        assert s.append_if("c", 1, {"n": 1}).interaction_id == 1
        assert s.append_if("c", 2, '  {"n": 2}  ').interaction_id == 2
        with pytest.raises(convlog.Conflict) as e:
            s.append_if("c", 2, {"n": "late"})
        assert (e.value.session, e.value.expected, e.value.actual) == ("c", 2, 3)
        assert 'conflict on session "c": expected next interaction id 2, found 3' in str(e.value)
        assert isinstance(e.value, convlog.Error)
        with pytest.raises(convlog.InvalidMessage):
            s.append_if("c", 3, "[]")
        with pytest.raises(convlog.InvalidMessage):
            s.append_if("c", 3, "{not json")
        assert s.tail("c") == [{"n": 1}, {"n": 2}]


def test_tail_get_count_sessions(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("t", [{"i": i} for i in range(1, 11)])
        s.append("other", {"x": 1})
        assert s.tail("t", 3) == [{"i": 8}, {"i": 9}, {"i": 10}]
        assert s.tail("t", 0) == []
        assert s.tail("t", 1000) == [{"i": i} for i in range(1, 11)]
        assert s.tail_json("t", 2) == ['{"i":9}', '{"i":10}']
        assert s.tail("nobody", 5) == [] and s.tail("nobody") == []
        assert s.get("t", 1) == {"i": 1} and s.get("t", 10) == {"i": 10}
        assert s.get("t", 0) is None and s.get("t", 11) is None and s.get("nobody", 1) is None
        assert s.count("t") == 10 and s.count("nobody") == 0
        assert "t" in s and "nobody" not in s
        infos = s.sessions()
        assert [(i.id, i.count) for i in infos] == [("other", 1), ("t", 10)]
        assert infos[1].first <= infos[1].last
        st = s.stats()
        assert st["sessions"] == 2 and st["messages"] == 11 and st["last_lsn"] == s.last_lsn == 11
        with pytest.raises(ValueError, match="at least 0"):
            s.tail("t", -1)


def test_pop_truncate_clear(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("p", [{"i": i} for i in range(1, 6)])
        assert s.pop("p") == {"i": 5}
        assert s.pop_json("p") == '{"i":4}'
        assert s.count("p") == 3
        assert s.truncate("p", 5) == 0
        assert s.truncate("p", 1) == 2
        assert s.tail("p") == [{"i": 1}]
        assert s.clear("p") == 1 and s.clear("p") == 0
        assert s.pop("p") is None and s.pop_json("p") is None
        # The session stays usable, ids start again at 1.
        assert s.append("p", {"again": True}).interaction_id == 1
        s.sync()
    with Store(store_dir) as s:  # logged events: exact after a reopen
        assert s.tail("p") == [{"again": True}]


def test_messages_is_a_lazy_snapshot(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("m", [{"i": i} for i in range(1, 201)])
        it = s.messages("m")
        assert it.__length_hint__() == 200
        first = next(it)
        s.append("m", {"i": 201})
        s.truncate("m", 10)
        # The iterator yields exactly what was there when it was made.
        rest = list(it)
        assert [first, *rest] == [{"i": i} for i in range(1, 201)]
        assert list(s.messages("m")) == [{"i": i} for i in range(1, 11)]
        assert list(s.messages("m", 3, 6)) == [{"i": 3}, {"i": 4}, {"i": 5}]
        assert list(s.messages("m", 9)) == [{"i": 9}, {"i": 10}]
        assert list(s.messages("m", stop=3)) == [{"i": 1}, {"i": 2}]
        assert list(s.messages("m", 50)) == []
        assert list(s.messages_json("m", 10)) == ['{"i":10}']
        assert list(s.messages("nobody")) == []
        assert iter(it) is it


def test_an_iterator_with_nothing_left_is_exhausted_after_close(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append("z", {"a": 1})
    it = s.messages("z")
    assert next(it) == {"a": 1}  # all read; StopIteration not yet raised
    s.close()
    assert list(it) == []
    assert it.__length_hint__() == 0


def test_messages_read_ahead_is_not_yielded_after_close(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append_batch("m", [{"i": i} for i in range(100)])
    # Read whole into its buffer (10), or a chunk of it (100): closed is closed either way.
    its = [s.messages("m", stop=n + 1) for n in (10, 100)]
    for it in its:
        assert next(it) == {"i": 0}
    s.close()
    for it in its:
        with pytest.raises(convlog.Closed):
            next(it)


# Decoding takes the GIL and may run Python code (here json.loads, for integers past 64
# bits): code that closes the store meanwhile must not wait for the read in progress,
# which waits for the GIL. Run apart, so that a deadlock fails the test by its timeout.
_CLOSE_DURING_DECODE = {
    "signal handler": """
        import convlog, signal, sys
        s = convlog.Store(sys.argv[1])
        s.append_batch("a", [{"n": 10**30 + i} for i in range(20000)])
        signal.signal(signal.SIGALRM, lambda *_: s.close())
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        assert len(s.tail("a")) == 20000
        assert s.closed
    """,
    "signal handler that raises": """
        import convlog, signal, sys
        s = convlog.Store(sys.argv[1])
        s.append_batch("a", [{"n": 10**30 + i} for i in range(20000)])
        def stop(*_):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, stop)
        for read in (lambda: s.tail("a"), lambda: list(s.messages("a"))):
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            try:
                read()
                raise SystemExit("the interrupt was swallowed")
            except KeyboardInterrupt:
                pass
        s.close()
    """,
    "another thread": """
        import convlog, sys, threading, time
        s = convlog.Store(sys.argv[1])
        s.append_batch("a", [{"n": 10**30 + i} for i in range(200000)])
        s.tail("a", 5)  # the cache holds it
        def read():
            try:
                s.tail("a")
            except convlog.Closed:
                pass
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.1)
        closer = threading.Thread(target=s.close)
        closer.start()
        time.sleep(0.1)
        try:
            s.tail_if_cached("a", 5)
        except convlog.Closed:
            pass
        reader.join()
        closer.join()
        # close() waited for the read under way: the store is closed, so a store with
        # other options opens (a store still open would be AlreadyOpen).
        convlog.Store(sys.argv[1], durability="always").close()
    """,
}


@pytest.mark.parametrize("how", sorted(_CLOSE_DURING_DECODE))
def test_closing_while_a_read_decodes_does_not_deadlock(store_dir: pathlib.Path, how: str) -> None:
    script = textwrap.dedent(_CLOSE_DURING_DECODE[how])
    done = subprocess.run(
        [sys.executable, "-c", script, str(store_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_messages_streams_in_constant_memory(store_dir: pathlib.Path) -> None:
    n = 100_000
    payload = {"role": "assistant", "content": "x" * 200}
    with Store(store_dir) as s:
        for start in range(0, n, 10_000):
            s.append_batch("big", [payload] * 10_000)
        assert s.count("big") == n
        gc.collect()
        tracemalloc.start()
        seen = 0
        for m in s.messages("big"):
            seen += len(m["content"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seen == 200 * n
        # 100k decoded messages would take > 30 MB; the iterator holds one chunk of 64.
        assert peak < 2_000_000, peak


def test_the_gil_is_released_during_store_calls(store_dir: pathlib.Path) -> None:
    counter = 0
    stop = False

    def spin() -> None:
        nonlocal counter
        while not stop:
            counter += 1

    big = [b'{"role":"tool","content":"' + b"y" * 20_000 + b'"}'] * 2_000  # 40 MB
    with Store(store_dir, durability="always") as s:
        t = threading.Thread(target=spin)
        t.start()
        try:
            time.sleep(0.05)
            before = counter
            s.append_batch("g", big)  # validating, framing and syncing 40 MB, in Rust
            during = counter - before
        finally:
            stop = True
            t.join()
        assert s.count("g") == 2_000
        # With the GIL held for the whole call, the other thread could not have counted.
        assert during > 1_000, during


def test_threads_append_gapless(store_dir: pathlib.Path) -> None:
    threads, per = 8, 250
    with Store(store_dir) as s:
        receipts: list[convlog.Receipt] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            for i in range(per):
                r = s.append("shared", {"t": t, "i": i})
                with lock:
                    receipts.append(r)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ids = sorted(r.interaction_id for r in receipts)
        assert ids == list(range(1, threads * per + 1))
        stored = s.tail("shared")
        assert sorted((m["t"], m["i"]) for m in stored) == [
            (t, i) for t in range(threads) for i in range(per)
        ]
        # Each thread's own messages are in its order.
        for t in range(threads):
            assert [m["i"] for m in stored if m["t"] == t] == list(range(per))


def test_threads_sharing_one_iterator_take_turns(store_dir: pathlib.Path) -> None:
    n = 20_000
    with Store(store_dir) as s:
        s.append_batch("a", [{"i": i} for i in range(n)])
        for it in (s.messages("a"), s.messages_json("a")):
            got: list[list[int]] = [[] for _ in range(4)]
            errors: list[BaseException] = []

            def drain(k: int, it=it) -> None:
                try:
                    for m in it:
                        got[k].append((json.loads(m) if isinstance(m, str) else m)["i"])
                        if len(got[k]) % 97 == 0:
                            time.sleep(0)  # let another thread in
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            ts = [threading.Thread(target=drain, args=(k,)) for k in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert errors == []
            # Each message once, and each thread saw its share in order.
            assert sorted(i for g in got for i in g) == list(range(n))
            assert all(g == sorted(g) for g in got)
            assert next(it, None) is None


def test_threads_mixing_reads_writes_and_close(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append_batch("r", [{"i": i} for i in range(1000)])
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while True:
                assert len(s.tail("r", 50)) == 50
                for _ in s.messages("r", 1, 200):
                    pass
        except convlog.Closed:
            pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=reader) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    s.close()
    for t in ts:
        t.join(timeout=10)
        assert not t.is_alive()
    assert errors == []


def test_several_objects_share_one_open_store(store_dir: pathlib.Path) -> None:
    a = Store(store_dir)
    b = Store(str(store_dir))
    a.append("s", {"from": "a"})
    assert b.tail("s") == [{"from": "a"}]
    with pytest.raises(convlog.AlreadyOpen) as e:
        Store(store_dir, durability="always")
    assert isinstance(e.value, convlog.Locked)
    assert "already open in this process" in str(e.value)
    a.close()
    assert a.closed and not b.closed
    b.append("s", {"from": "b"})
    assert b.count("s") == 2
    b.close()
    # All closed: the lock is released, another process can write.
    code = textwrap.dedent(
        f"""
        import convlog
        with convlog.Store({str(store_dir)!r}) as s:
            s.append("s", {{"from": "child"}})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with Store(store_dir) as c:
        assert [m["from"] for m in c.tail("s")] == ["a", "b", "child"]


def test_another_process_holding_the_store_exclusively_means_locked(
    store_dir: pathlib.Path,
) -> None:
    code = textwrap.dedent(
        f"""
        import sys, convlog
        s = convlog.Store({str(store_dir)!r}, exclusive=True)
        s.append("held", {{"x": 1}})
        print("ready", flush=True)
        sys.stdin.readline()
        s.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(convlog.Locked) as e:
            Store(store_dir)
        assert str(store_dir) in str(e.value) and "locked by another writer" in str(e.value)
        assert pathlib.Path(e.value.path) == store_dir
        with pytest.raises(convlog.Locked):
            Store(store_dir, exclusive=True)
        # A read-only open takes no lock and reads what the writer wrote.
        with Store(store_dir, read_only=True) as ro:
            assert ro.tail("held") == [{"x": 1}]
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0


def test_processes_write_one_store_unless_exclusive(store_dir: pathlib.Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, convlog
        s = convlog.Store({str(store_dir)!r})
        s.append("both", {{"from": "child", "n": 1}})
        print("ready", flush=True)
        sys.stdin.readline()
        s.append("both", {{"from": "child", "n": 2}})
        print(s.count("both"), flush=True)
        s.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # The child has the store open for writing (not exclusively): so can this process.
        with Store(store_dir) as s:
            assert s.count("both") == 1
            assert s.append("both", {"from": "parent"}).interaction_id == 2
            with pytest.raises(convlog.Locked):  # AlreadyOpen here: other options
                Store(store_dir, exclusive=True)
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "3"
            assert [m["from"] for m in s.tail("both")] == ["child", "parent", "child"]
            assert s.last_lsn == 3
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0


def test_read_only(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("r", {"a": 1})
    with Store(store_dir, read_only=True) as ro:
        assert ro.read_only and ro.tail("r") == [{"a": 1}]
        with pytest.raises(convlog.ReadOnly) as e:
            ro.append("r", {"a": 2})
        assert "read-only" in str(e.value)
        with pytest.raises(convlog.ReadOnly):
            ro.clear("r")
    with pytest.raises(convlog.NotAStore):
        Store(store_dir.parent / "missing", read_only=True)
    with pytest.raises(ValueError):
        Store(":memory:", read_only=True)


def test_is_poisoned_is_false_on_a_healthy_store_and_closed_raises(store_dir: pathlib.Path) -> None:
    # (A poisoned store needs a failing fsync, which the Rust tests inject through their
    # simulated file system; here the property's healthy value and its closed error.)
    s = Store(store_dir)
    s.append("p", {"a": 1})
    s.sync()
    assert s.is_poisoned is False
    s.close()
    with pytest.raises(convlog.Closed):
        s.is_poisoned


def test_options(store_dir: pathlib.Path) -> None:
    for durability in ("buffered", "always", 0.05, 1, None):
        with Store(store_dir, durability=durability) as s:
            s.append("o", {})
    with pytest.raises(ValueError):
        Store(store_dir, durability="sometimes")
    with pytest.raises(ValueError):
        Store(store_dir, durability=0)
    with pytest.raises(ValueError):
        Store(store_dir, durability=float("inf"))
    with pytest.raises(ValueError, match='less than a nanosecond.*durability="always"'):
        Store(store_dir, durability=1e-10)
    # A path that is a file is not a store, and is left as it was.
    notes = store_dir.parent / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(convlog.NotAStore, match="not a directory"):
        Store(notes)
    assert notes.read_text() == "mine"
    with pytest.raises(TypeError):
        Store(store_dir, durability=True)
    with pytest.raises(convlog.InvalidOption) as e:
        Store(store_dir, segment_size=1)
    assert e.value.option == "segment_size" and "segment_size" in str(e.value)
    # Small segments: a session spans many of them, and reads across them.
    with Store(store_dir.parent / "small", segment_size=4096) as s:
        for i in range(500):
            s.append("seg", {"i": i, "pad": "p" * 100})
        assert s.stats()["segments"] > 5
        assert [m["i"] for m in s.messages("seg")] == list(range(500))


def test_invalid_session_ids(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for bad, reason in [("", "empty"), ("x" * 257, "longer than 256 bytes"),
                            ("a\nb", "control character"), ("é" * 129, "longer than 256")]:
            with pytest.raises(convlog.InvalidSessionId) as e:
                s.append(bad, {})
            assert reason in str(e.value)
            assert isinstance(e.value, ValueError) and isinstance(e.value, convlog.Error)
        s.append("x" * 256, {})  # 256 bytes is the limit
        with pytest.raises(TypeError):
            s.append(42, {})  # type: ignore[arg-type]
        convlog.validate_session_id("ok")
        with pytest.raises(convlog.InvalidSessionId):
            convlog.validate_session_id(None)
        assert s.count("x" * 256) == 1
        for bad in ["", "a\nb"]:  # a read names a valid session too
            with pytest.raises(convlog.InvalidSessionId):
                s.count(bad)
            with pytest.raises(convlog.InvalidSessionId):
                s.tail_if_cached(bad, 3)


def test_invalid_messages(store_dir: pathlib.Path) -> None:
    with Store(store_dir, max_record_len=1000) as s:
        for bad in ["[1]", "3", '"str"', "{", b"null", "{} {}", b"\xff"]:
            with pytest.raises(convlog.InvalidMessage) as e:
                s.append("i", bad)
            assert 'invalid message for session "i"' in str(e.value)
            assert e.value.session == "i"
        with pytest.raises(convlog.InvalidMessage):
            s.append("i", {"nan": float("nan")})
        with pytest.raises(TypeError):
            s.append("i", {"when": object()})
        with pytest.raises(TypeError):
            s.append("i", [{"role": "user"}])  # type: ignore[arg-type]
        with pytest.raises(convlog.RecordTooLarge) as e:
            s.append("i", {"content": "z" * 2000})
        assert e.value.limit == 1000 and e.value.size > 1000
        assert "exceeds the limit of 1000 bytes" in str(e.value)
        assert s.count("i") == 0


def test_corruption_is_reported_with_segment_and_offset(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("c", {"content": "A" * 64})
        s.append("c", {"content": "B" * 64})
    [seg] = [p for p in store_dir.iterdir() if p.suffix == ".seg"]
    data = bytearray(seg.read_bytes())
    at = data.index(b"B" * 64)
    data[at + 10] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Store(store_dir, read_only=True) as s:
        try:
            assert s.get("c", 1) == {"content": "A" * 64}
            s.get("c", 2)
        except convlog.Corrupt as e:
            assert e.segment == seg.name
            assert 0 < e.offset < at
            assert f"segment {seg.name} at offset {e.offset}" in str(e)
        else:
            # A scan on open may cut the damaged record off instead: then it is gone.
            assert s.count("c") == 1


def test_closed_store(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append("z", {"a": 1})
    it = s.messages("z")
    s.close()
    s.close()  # idempotent
    assert s.closed and "closed" in repr(s)
    calls = [
        lambda: s.append("z", {}), lambda: s.append_batch("z", [{}]),
        lambda: s.append_if("z", 2, {}), lambda: s.tail("z"), lambda: s.tail_json("z"),
        lambda: s.messages("z"), lambda: s.messages_json("z"), lambda: s.get("z", 1),
        lambda: s.get_json("z", 1), lambda: s.count("z"), lambda: s.sessions(),
        lambda: s.pop("z"), lambda: s.pop_json("z"), lambda: s.truncate("z", 0),
        lambda: s.clear("z"), lambda: s.sync(), lambda: s.stats(), lambda: "z" in s,
        lambda: s.last_lsn, lambda: next(it),
    ]
    for call in calls:
        with pytest.raises(convlog.Closed):
            call()
    # The closed store released its lock: it reopens at once, data intact.
    with Store(store_dir) as again:
        assert again.tail("z") == [{"a": 1}]


def test_exhausted_iterator_stays_exhausted_after_close(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append("z", {"a": 1})
    it = s.messages("z")
    assert list(it) == [{"a": 1}]
    s.close()
    assert list(it) == []


def test_memory_store_is_private_and_removed_on_close() -> None:
    a = Store(":memory:")
    b = Store(":memory:")
    assert a.path != b.path and a.path.is_dir()
    a.append("s", {"in": "a"})
    assert b.count("s") == 0
    assert repr(a) == '<convlog.Store ":memory:" open>'
    path = a.path
    a.close()
    assert not path.exists()
    b.close()


def test_reopen_keeps_everything(store_dir: pathlib.Path) -> None:
    with Store(store_dir, durability="always") as s:
        for i in range(50):
            s.append(f"s{i % 5}", {"i": i, "text": "héllo"})
        s.pop("s0")
    with Store(store_dir) as s:
        assert [i.count for i in s.sessions()] == [9, 10, 10, 10, 10]
        assert s.tail("s1", 1) == [{"i": 46, "text": "héllo"}]
        assert s.append("s1", {}).interaction_id == 11


def test_exceptions_hierarchy() -> None:
    for name in ["Conflict", "Locked", "Corrupt", "InvalidSessionId", "InvalidMessage",
                 "RecordTooLarge", "ReadOnly", "Poisoned", "Closed", "AlreadyOpen",
                 "NotAStore", "InvalidOption", "IoError", "UnsupportedFormat"]:
        cls = getattr(convlog, name)
        assert issubclass(cls, convlog.Error) and cls.__module__ == "convlog"
    assert issubclass(convlog.IoError, OSError)
    assert issubclass(convlog.Error, Exception)


def test_io_error_carries_the_path_and_errno(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(convlog.IoError) as e:
        Store(blocker / "store")
    assert isinstance(e.value, OSError) and e.value.errno == 20  # ENOTDIR
    assert pathlib.Path(e.value.path) == blocker / "store"
    assert str(e.value).startswith(f"I/O error: create directory {blocker / 'store'}")


def test_reads_decode_as_json_loads_does(store_dir: pathlib.Path) -> None:
    import random

    rnd = random.Random(7)
    floats = [rnd.uniform(-1e6, 1e6) for _ in range(200)] + [rnd.random() * 10 ** rnd.randint(-300, 300) for _ in range(200)]
    texts = [
        json.dumps({"floats": floats}),
        '{"dup": 1, "dup": 2}',  # the last one wins, as in json.loads
        '{"big": 123456789012345678901234567890, "neg": -98765432109876543210, "e": 1e16, "f": 1.5e300}',
        '{"s": "\\ud83d\\ude00 \\ud83d lone", "esc": "\\n\\t\\"\\\\\\/"}',
        '{"deep": ' + "[" * 300 + "]" * 300 + "}",
        '{"u64": 18446744073709551615, "i64": -9223372036854775808, "small": 9007199254740993}',
    ]
    with Store(store_dir) as s:
        for t in texts:
            s.append("d", t)
        got = s.tail("d")
        for t, g in zip(texts, got):
            assert g == json.loads(t)
            assert repr(g) == repr(json.loads(t))
        for i, t in enumerate(texts, start=1):
            assert s.get("d", i) == json.loads(t)
        assert list(s.messages("d")) == [json.loads(t) for t in texts]


def test_a_read_of_thousands_decodes_each_as_json_loads_does(store_dir: pathlib.Path) -> None:
    """A tail of more than a thousand messages is read by a helper thread while this one
    decodes: every message still comes back as json.loads builds it, in order, the slow
    path (big integers, lone surrogates, deep nesting) included, and the GC as it was."""
    texts = [
        '{"n": %d, "big": 123456789012345678901234567890, "f": 1.5e300}',
        '{"n": %d, "s": "\\ud83d lone", "esc": "\\n\\t\\"", "k": [1, 2.5, null, true]}',
        '{"n": %d, "deep": ' + "[" * 200 + "]" * 200 + "}",
        '{"n": %d, "role": "user", "content": "' + "x" * 900 + '"}',
    ]
    messages = [texts[i % 4] % i for i in range(3001)]
    with Store(store_dir) as s:
        for i in range(0, len(messages), 500):
            s.append_batch("many", messages[i : i + 500])
        got = s.tail("many")
        assert gc.isenabled()
        assert len(got) == len(messages)
        for t, g in zip(messages, got):
            assert repr(g) == repr(json.loads(t))
        assert s.tail("many", 2000) == [json.loads(t) for t in messages[-2000:]]


def test_a_damaged_record_in_a_read_of_thousands_raises_corrupt(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for i in range(0, 3000, 100):
            s.append_batch("big", [{"n": j, "pad": "p" * 200} for j in range(i, i + 100)])
    [seg] = [p for p in store_dir.iterdir() if p.suffix == ".seg"]
    data = bytearray(seg.read_bytes())
    at = data.index(b'{"n":1500,')
    data[at + 20] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Store(store_dir, read_only=True) as s:
        try:
            got = s.tail("big")
        except convlog.Corrupt as e:
            assert e.segment == seg.name
        else:
            # A scan on open may cut the damaged record off instead: then it and every
            # later record of the unit are gone, and what is left is intact.
            assert len(got) == s.count("big") < 3000
            assert got == [{"n": i, "pad": "p" * 200} for i in range(len(got))]


def test_a_large_read_leaves_the_garbage_collector_as_it_found_it(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("gc", [{"content": "c" * 1000}] * 500)  # 500 KB: the GC is paused
        assert gc.isenabled()
        assert len(s.tail("gc")) == 500
        assert gc.isenabled()
        gc.disable()
        try:
            assert len(s.tail("gc")) == 500
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_tail_cache_follows_every_write(store_dir: pathlib.Path) -> None:
    a = Store(store_dir)
    b = Store(store_dir)  # shares the open store, and its cache
    a.append_batch("c", [{"i": i} for i in range(1, 11)])
    assert a.tail_if_cached("c", 3) is None  # nothing read yet
    assert a.tail("c", 3) == [{"i": 8}, {"i": 9}, {"i": 10}]
    assert a.tail_if_cached("c", 3) == [{"i": 8}, {"i": 9}, {"i": 10}]
    assert a.tail_if_cached("c", 4) is None  # the cache holds what was read, and later writes
    b.append("c", {"i": 11})
    b.append_batch("c", [{"i": 12}, '{"i": 13}'])
    b.append_if("c", 14, b'{"i": 14}')
    assert a.tail_if_cached("c", 7) == [{"i": i} for i in range(8, 15)]
    hit = a.tail_if_cached("c", 2)
    assert hit == [{"i": 13}, {"i": 14}]
    hit[0]["i"] = "mutated"  # a fresh copy
    assert a.tail("c", 2) == [{"i": 13}, {"i": 14}]
    for change in (lambda: b.pop("c"), lambda: b.truncate("c", 9), lambda: b.clear("c")):
        assert a.tail("c", 3) == b.tail_if_cached("c", 3)
        change()
        assert a.tail_if_cached("c", 3) is None
        assert a.tail("c", 3) == [json.loads(t) for t in a.tail_json("c", 3)]
    assert a.tail("c", 3) == []
    assert a.tail_if_cached("c", 3) == []
    b.append("c", {"i": "new"})
    assert a.tail_if_cached("c", 3) == [{"i": "new"}]  # a complete entry extends too
    assert a.tail_if_cached("c", 65) is None and a.tail_if_cached("c", 0) is None
    a.close()
    b.close()
    with pytest.raises(convlog.Closed):
        a.tail_if_cached("c", 1)


def test_no_cache_on_read_only_stores(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("r", {"a": 1})
    with Store(store_dir, read_only=True) as ro:
        assert ro.tail("r", 1) == [{"a": 1}]
        assert ro.tail_if_cached("r", 1) is None


def test_tail_cache_under_concurrent_writers_and_readers(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    stop = threading.Event()
    errors: list[str] = []
    writers, per = 3, 400

    def writer(w: int) -> None:
        for i in range(per):
            if i % 2:
                s.append("hot", {"w": w, "i": i})
            else:
                s.append_batch("hot", [{"w": w, "i": i}, {"w": w, "i": i, "b": 1}])

    def reader() -> None:
        last = 0
        while not stop.is_set():
            n = 1 + last % 20
            before = s.count("hot")
            got = s.tail_if_cached("hot", n)
            if got is None:
                got = s.tail("hot", n)
            after = s.count("hot")
            if not min(n, before) <= len(got) <= min(n, after):
                errors.append(f"{len(got)} of {n} with count from {before} to {after}")
            last += 1

    def checker() -> None:
        # Each read must be exactly what the store holds at some instant: compare with the
        # library's own view, taken before and after (no pops here, so the count only grows).
        while not stop.is_set():
            before = s.count("hot")
            got = s.tail("hot", 10)
            after = s.count("hot")
            for k in range(before, after + 1):
                ids = list(range(max(1, k - 9), k + 1))
                if len(got) == len(ids) and all(
                    s.get("hot", i) == m for i, m in zip(ids, got)
                ):
                    break
            else:
                errors.append("a tail that matches no state of the store")

    ts = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    rs = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=checker)]
    for t in rs + ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    for t in rs:
        t.join()
    assert errors == []
    total = writers * per * 3 // 2
    assert s.count("hot") == total
    assert s.tail("hot", 20) == [json.loads(t) for t in s.tail_json("hot", 20)]
    assert s.tail_if_cached("hot", 20) == s.tail("hot", 20)
    s.close()


def test_tail_cache_with_pops_truncates_and_clears_racing_readers(store_dir: pathlib.Path) -> None:
    import random

    s = Store(store_dir)
    rnd = random.Random(3)
    states: list[list[int]] = [[]]  # states[v]: the session's item ids after write v
    done = 0  # writes completed (their call returned)
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        nonlocal done
        items: list[int] = []
        next_id = 0
        for _ in range(1500):
            op = rnd.random()
            # The state after this write is recorded before it is made, `done` after.
            if op < 0.6 or not items:
                k = rnd.choice([1, 1, 3])
                batch = list(range(next_id, next_id + k))
                next_id += k
                items = items + batch
                states.append(items)
                if k == 1:
                    s.append("x", {"id": batch[0]})
                else:
                    s.append_batch("x", [{"id": i} for i in batch])
            elif op < 0.85:
                last = items[-1]
                items = items[:-1]
                states.append(items)
                assert s.pop("x") == {"id": last}
            elif op < 0.97:
                keep = rnd.randrange(len(items) + 1)
                items = items[:keep]
                states.append(items)
                s.truncate("x", keep)
            else:
                items = []
                states.append(items)
                s.clear("x")
            done += 1

    def reader() -> None:
        while not stop.is_set():
            n = rnd.randint(1, 30)
            v0 = done
            got = s.tail_if_cached("x", n)
            if got is None:
                got = s.tail("x", n)
            v1 = done
            ids = [m["id"] for m in got]
            # Exactly some state from the one before the read to the one being written after.
            if not any(states[v][-n:] == ids for v in range(v0, min(v1 + 2, len(states)))):
                errors.append(f"read {ids} between writes {v0} and {v1}")

    rs = [threading.Thread(target=reader) for _ in range(3)]
    w = threading.Thread(target=writer)
    for t in rs:
        t.start()
    w.start()
    w.join()
    stop.set()
    for t in rs:
        t.join()
    assert errors == []
    assert [m["id"] for m in s.tail("x", 30)] == states[-1][-30:]
    s.close()


def test_reads_of_a_session_id_no_session_can_have_raise(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("ok", {"a": 1})
        for bad in ("", "a" * 257, "a\nb"):
            for read in (
                lambda: s.tail(bad),
                lambda: s.tail_json(bad),
                lambda: s.get(bad, 1),
                lambda: s.get_json(bad, 1),
                lambda: list(s.messages(bad)),
                lambda: list(s.messages_json(bad)),
                lambda: s.version(bad),
                lambda: s.meta(bad),
                lambda: s.window(bad, max_messages=5),
                lambda: s.count(bad),
            ):
                with pytest.raises(convlog.InvalidSessionId):
                    read()
            assert bad not in s  # a membership test answers, as for any dict


def test_counts_and_ids_are_ints_of_at_least_zero_and_huge_ones_mean_more_than_any(
    store_dir: pathlib.Path,
) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", [{"i": i} for i in range(3)])
        last = s.last_lsn
        negative = [
            lambda: s.tail("a", -1),
            lambda: s.tail_json("a", -1),
            lambda: s.tail_if_cached("a", -1),
            lambda: s.get("a", -1),
            lambda: s.get_json("a", -1),
            lambda: s.messages("a", -1),
            lambda: s.messages_json("a", 1, -1),
            lambda: s.window("a", max_messages=-1),
            lambda: s.window("a", max_bytes=-5),
            lambda: s.truncate("a", -1),
            lambda: s.fork("a", "b", -1),
            lambda: s.append_if("a", -1, {"x": 1}),
            lambda: s.replace("a", [{"x": 1}], expected_next_id=-1),
            lambda: s.replace("a", [{"x": 1}], expected_version=(4, -1)),
            lambda: s.subscribe(-1),
            lambda: s.subscribe(session="a", from_id=-2),
        ]
        for call in negative:
            with pytest.raises(ValueError, match="at least 0, got -"):
                call()
        # A float is not a count, whatever its value.
        for call in (lambda: s.tail("a", 1.0), lambda: s.truncate("a", 2.5)):
            with pytest.raises(TypeError):
                call()
        # Nothing was written by any of them.
        assert s.last_lsn == last
        assert s.tail("a") == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert "b" not in s

        huge = 2**70
        assert s.tail("a", huge) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert s.tail_json("a", huge) == ['{"i":0}', '{"i":1}', '{"i":2}']
        assert s.get("a", huge) is None
        assert s.get_json("a", huge) is None
        assert list(s.messages("a", 2, huge)) == [{"i": 1}, {"i": 2}]
        assert list(s.messages("a", huge)) == []
        assert s.window("a", max_messages=huge, max_bytes=huge) == s.tail("a")
        assert s.truncate("a", huge) == 0
        with pytest.raises(ValueError, match="below 2"):
            s.append_if("a", huge, {"x": 1})
        assert s.last_lsn == last
        # An int subclass with __index__ semantics is an int.
        assert s.tail("a", True) == [{"i": 2}]


def test_a_session_id_with_a_lone_surrogate_is_an_invalid_session_id(store_dir: pathlib.Path) -> None:
    bad = "a\ud800"
    with Store(store_dir) as s:
        s.append("ok", {"a": 1})
        last = s.last_lsn
        calls = [
            lambda: convlog.validate_session_id(bad),
            lambda: s.append(bad, {"a": 1}),
            lambda: s.append_batch(bad, [{"a": 1}]),
            lambda: s.append_if(bad, 1, {"a": 1}),
            lambda: s.replace(bad, [{"a": 1}]),
            lambda: s.tail(bad),
            lambda: s.get(bad, 1),
            lambda: list(s.messages(bad)),
            lambda: s.count(bad),
            lambda: s.pop(bad),
            lambda: s.truncate(bad, 0),
            lambda: s.clear(bad),
            lambda: s.fork("ok", bad),
            lambda: s.fork(bad, "new"),
            lambda: s.set_meta(bad, {"m": 1}),
            lambda: s.meta(bad),
            lambda: s.window(bad, max_messages=3),
            lambda: s.delete_session(bad),
            lambda: s.subscribe(session=bad),
        ]
        for call in calls:
            with pytest.raises(convlog.InvalidSessionId) as info:
                call()
            assert info.value.session == bad
        assert bad not in s  # a membership test answers
        # So is an idempotency key, and a master key given as a str.
        for call in (
            lambda: s.append("ok", {"a": 1}, key="k\ud800"),
            lambda: s.append_batch("ok", [{"a": 1}], key="\udc00"),
        ):
            with pytest.raises(convlog.InvalidKey, match="lone surrogate"):
                call()
        assert s.last_lsn == last, "nothing was written"
    with pytest.raises(convlog.InvalidMasterKey, match="lone surrogate"):
        Store(store_dir.parent / "sealed", key="\ud800" * 64)


def test_a_next_re_entered_on_its_own_thread_raises_instead_of_waiting(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append_batch("a", [{"i": i, "pad": [1, 2, 3]} for i in range(3000)])
        it = s.messages("a")
        raised: list[BaseException] = []
        inside = [False]

        def callback(phase: str, info: dict) -> None:
            # A garbage collection that decoding sets off, calling back into the iterator.
            if phase == "start" and not inside[0]:
                inside[0] = True
                try:
                    next(it, None)
                except RuntimeError as e:
                    raised.append(e)
                finally:
                    inside[0] = False

        threshold = gc.get_threshold()
        gc.callbacks.append(callback)
        gc.set_threshold(5)
        try:
            kept = list(it)  # kept, so that decoding's allocations set off collections
        finally:
            gc.callbacks.remove(callback)
            gc.set_threshold(*threshold)
        assert raised and "re-entered" in str(raised[0])
        # Whatever the callbacks took outside a next() is missing here; nothing repeats.
        got = [m["i"] for m in kept]
        assert got == sorted(set(got)) and len(got) <= 3000


def test_int_like_arguments_and_exact_ids(store_dir: pathlib.Path) -> None:
    class Index:
        def __init__(self, v: int) -> None:
            self.v = v

        def __index__(self) -> int:
            return self.v

    with Store(store_dir) as s:
        s.append_batch("a", [{"i": i} for i in range(3)])
        assert s.tail("a", Index(2)) == [{"i": 1}, {"i": 2}]
        assert s.tail("a", Index(2**70)) == s.tail("a")
        with pytest.raises(ValueError, match="at least 0"):
            s.tail("a", Index(-1))
        # Compared for equality, a value no session reaches is refused as such, not taken as
        # 2**64 - 1 (which a conflict would then name as what was expected).
        for call in (
            lambda: s.append_if("a", 2**64, {"x": 1}),
            lambda: s.replace("a", [], expected_next_id=2**70),
            lambda: s.replace("a", [], expected_version=(4, 2**64)),
        ):
            with pytest.raises(ValueError, match="below 2\\*\\*64"):
                call()
        with pytest.raises(ValueError, match="at least 0"):
            s.append_if("a", -1, {"x": 1})
        assert s.count("a") == 3
        # Text where an LSN or a metadata key or value belongs, that has no UTF-8 form.
        with pytest.raises(ValueError, match="since is"):
            s.subscribe("\ud800")
        with pytest.raises(ValueError, match="lone surrogate"):
            s.sessions_where("\ud800", 1)
        for value in ("\ud800", 10**400):
            with pytest.raises(ValueError, match="cannot compare this value"):
                s.sessions_where("k", value)
