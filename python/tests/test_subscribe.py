"""Store.subscribe: the live tail, blocking and async, in one process (test_multiprocess.py
has the cross-process cases)."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import convlog
from convlog import Store

WAIT = 10.0  # generous: no timing is asserted beyond "it came within this"


def test_events_of_every_kind_in_log_order(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("a", {"n": 0})
        sub = s.subscribe()
        assert isinstance(sub, convlog.Subscription)
        assert sub.position == s.last_lsn + 1
        assert sub.next(0) is None  # nothing after "now" yet
        r = s.append("a", {"n": 1, "text": "é"})
        s.append_batch("b", [{"n": 2}, '{"n":  3}'])
        s.pop("b")
        s.truncate("a", 1)
        s.clear("a")
        events = [sub.next(WAIT) for _ in range(6)]
        assert sub.next(0) is None
        m = events[0]
        assert isinstance(m, convlog.Event)
        assert (m.kind, m.session, m.lsn, m.interaction_id) == ("message", "a", r.lsn, 2)
        assert m.timestamp == r.timestamp
        assert m.message == {"n": 1, "text": "é"}
        assert m.message_json == '{"n":1,"text":"é"}'
        assert (m.keep, m.source, m.at) == (None, None, None)
        assert [(e.kind, e.session) for e in events] == [
            ("message", "a"), ("message", "b"), ("message", "b"),
            ("cut", "b"), ("cut", "a"), ("cut", "a"),
        ]
        assert events[2].message_json == '{"n":  3}'  # as stored, byte for byte
        assert [e.keep for e in events[3:]] == [1, 1, 0]
        assert [e.lsn for e in events] == list(range(r.lsn, r.lsn + 6))
        c = events[3]
        assert (c.interaction_id, c.timestamp, c.message, c.message_json) == (None,) * 4
        assert repr(m) == "Event(kind='message', session='a', lsn=2, interaction_id=2)"
        assert repr(c) == "Event(kind='cut', session='b', lsn=5, keep=1)"
        assert sub.position == events[-1].lsn + 1
        sub.close()


def test_since_an_lsn_replays_the_log_and_position_resumes(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        receipts = [s.append(f"s{i % 2}", {"i": i}) for i in range(10)]
        with s.subscribe(0) as sub:
            got = [sub.next(WAIT) for _ in range(10)]
            assert [e.message["i"] for e in got] == list(range(10))
        with s.subscribe(receipts[6].lsn) as sub:
            first = sub.next(WAIT)
            assert first.message == {"i": 6}
            resume = sub.position
            assert resume == receipts[6].lsn + 1
        with s.subscribe(resume) as sub:
            assert [sub.next(WAIT).message["i"] for _ in range(3)] == [7, 8, 9]
            assert sub.next(0) is None
        # One session's events from an LSN on.
        with s.subscribe(receipts[3].lsn, session="s0") as sub:
            assert [sub.next(WAIT).message["i"] for _ in range(3)] == [4, 6, 8]
            assert sub.next(0) is None
            s.append("s1", {"i": 10})
            s.append("s0", {"i": 11})
            assert sub.next(WAIT).message == {"i": 11}


def test_a_session_subscription_yields_its_messages_then_live_ones(
    store_dir: pathlib.Path,
) -> None:
    with Store(store_dir) as s:
        for i in range(1, 6):
            s.append("chat", {"i": i})
            s.append("other", {"i": -i})
        with s.subscribe(session="chat", from_id=3) as sub:
            got = [sub.next(WAIT) for _ in range(3)]
            assert [(e.interaction_id, e.message["i"]) for e in got] == [(3, 3), (4, 4), (5, 5)]
            assert sub.next(0) is None
            s.append("other", {"i": -6})
            s.append("chat", {"i": 6})
            s.pop("chat")
            e = sub.next(WAIT)
            assert (e.kind, e.interaction_id, e.message) == ("message", 6, {"i": 6})
            e = sub.next(WAIT)
            assert (e.kind, e.keep) == ("cut", 5)
            assert sub.next(0) is None
        with s.subscribe(session="chat") as sub:  # from_id=1 by default
            assert [sub.next(WAIT).interaction_id for _ in range(5)] == [1, 2, 3, 4, 5]
        with s.subscribe("now", session="chat") as sub:  # only what comes next
            assert sub.next(0) is None
            s.append("other", {})
            s.append("chat", {"new": True})
            assert sub.next(WAIT).message == {"new": True}


def test_arguments_are_checked(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        with pytest.raises(ValueError, match="now"):
            s.subscribe("later")
        with pytest.raises(TypeError):
            s.subscribe(True)
        with pytest.raises(ValueError, match="at least 0"):
            s.subscribe(-1)
        with pytest.raises(ValueError, match="from_id"):
            s.subscribe(from_id=2)
        with pytest.raises(ValueError, match="from_id"):
            s.subscribe(5, session="x", from_id=2)
        with pytest.raises(convlog.InvalidSessionId):
            s.subscribe(session="")
        with s.subscribe() as sub:
            with pytest.raises(ValueError):
                sub.next(-1)
            with pytest.raises(ValueError):
                sub.next(float("nan"))
            assert sub.next(0.0) is None


def test_blocking_iteration_releases_the_gil_and_close_ends_it(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        sub = s.subscribe()
        got: list[convlog.Event] = []
        done = threading.Event()

        def consume() -> None:
            for event in sub:  # blocks without the GIL
                got.append(event)
            done.set()

        t = threading.Thread(target=consume)
        t.start()
        # This thread runs Python (appends, counting) while the consumer waits.
        spins = 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            spins += 1
        assert spins > 1000
        for i in range(5):
            s.append("x", {"i": i})
        end = time.monotonic() + WAIT
        while len(got) < 5 and time.monotonic() < end:
            time.sleep(0.01)
        assert [e.message["i"] for e in got] == list(range(5))
        sub.close()  # from another thread: the consumer's for loop ends
        assert done.wait(WAIT)
        t.join(WAIT)
        assert sub.closed
        assert sub.next(0) is None
        with pytest.raises(StopIteration):
            next(sub)


def test_closing_the_store_closes_its_subscriptions(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.append("a", {})
    sub = s.subscribe(0)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in sub:
                pass
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.2)
    s.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], convlog.Closed)
    assert sub.closed
    with pytest.raises(convlog.Closed):
        sub.next(0)
    with pytest.raises(convlog.Closed):
        s.subscribe()
    # The subscription held no store handle past close: the store really closed (a new
    # open with other options is not AlreadyOpen).
    with Store(store_dir, durability="always") as again:
        assert again.count("a") == 1


def test_ctrl_c_interrupts_a_blocking_iteration(store_dir: pathlib.Path) -> None:
    code = textwrap.dedent(
        f"""
        import convlog
        s = convlog.Store({str(store_dir)!r})
        sub = s.subscribe()
        print("waiting", flush=True)
        try:
            for event in sub:
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
    assert out.strip() == "interrupted"
    assert child.returncode == 0


async def test_async_iteration(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        sub = s.subscribe()

        async def produce() -> None:
            for i in range(5):
                await asyncio.sleep(0.01)
                s.append("a", {"i": i})

        producer = asyncio.create_task(produce())
        got = []

        async def consume() -> None:
            async for event in sub:
                got.append(event.message["i"])
                if len(got) == 5:
                    break

        await asyncio.wait_for(consume(), WAIT)
        await producer
        assert got == list(range(5))
        # The loop kept running while the iteration waited: the producer's sleeps ran.
        sub.close()
        async for _ in sub:  # a closed subscription ends at once
            raise AssertionError("no event after close")


async def test_a_cancelled_async_wait_loses_no_event(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        sub = s.subscribe()
        it = sub.__aiter__()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(it.__anext__(), 0.05)  # cancelled while its thread waits
        s.append("a", {"n": 1})  # possibly read by the cancelled wait's thread
        event = await asyncio.wait_for(it.__anext__(), WAIT)
        assert event.message == {"n": 1}
        s.append("a", {"n": 2})
        assert sub.next(WAIT).message == {"n": 2}
        sub.close()


async def test_async_iteration_raises_closed_when_the_store_closes(
    store_dir: pathlib.Path,
) -> None:
    s = Store(store_dir)
    sub = s.subscribe()

    async def consume() -> None:
        async for _ in sub:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await asyncio.to_thread(s.close)
    with pytest.raises(convlog.Closed):
        await asyncio.wait_for(task, WAIT)


def test_read_only_stores_subscribe_too(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as w:
        w.append("a", {"n": 1})
        with Store(store_dir, read_only=True) as ro:
            with ro.subscribe(0) as sub:
                assert sub.next(WAIT).message == {"n": 1}
                w.append("a", {"n": 2})
                assert sub.next(WAIT).message == {"n": 2}
