"""Encryption at rest: Store(..., key=/key_file=), rekey, is_encrypted, generate_key, the
key errors, and the adapters passing the key through."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

import convlog
from convlog import Store

MARKER = "ZEBRA-MARKER-7f3a9c"


def files_of(d: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in d.rglob("*") if p.is_file()]


def holds(d: pathlib.Path, needle: bytes) -> list[str]:
    """The files of `d` whose bytes contain `needle`."""
    return [p.name for p in files_of(d) if needle in p.read_bytes()]


def fill(s: Store, sessions: list[str], n: int) -> None:
    for i in range(n):
        for sid in sessions:
            s.append(sid, {"role": "user", "content": f"{sid}-{i}"})


# --- keys -----------------------------------------------------------------------------------


def test_generate_key_is_32_random_bytes() -> None:
    a, b = convlog.generate_key(), convlog.generate_key()
    assert isinstance(a, bytes) and len(a) == 32 and len(b) == 32
    assert a != b


def test_round_trip_with_a_raw_key(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    with Store(store_dir, key=key) as s:
        assert s.is_encrypted
        s.append("chat", {"role": "user", "content": "hi"})
        s.set_meta("chat", {"topic": "t"})
    with Store(store_dir, key=key) as s:
        assert s.is_encrypted
        assert s.tail("chat") == [{"role": "user", "content": "hi"}]
        assert s.meta("chat") == {"topic": "t"}
    with Store(store_dir, key=bytearray(key), read_only=True) as s:
        assert s.tail("chat") == [{"role": "user", "content": "hi"}]


def test_long_reads_are_the_same_with_or_without_decrypt_ahead(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    expected = [{"role": "user", "content": f"m-{i}-" + "x" * (i % 700)} for i in range(3000)]
    with Store(store_dir, key=key) as s:
        for m in expected:
            s.append("long", m)
    # Two Store objects on one open store, which differ only in decrypt_ahead.
    with Store(store_dir, key=key) as ahead, Store(store_dir, key=key, decrypt_ahead=False) as alone:
        for s in (ahead, alone):
            assert list(s.messages("long")) == expected
            assert s.tail("long", 2000) == expected[1000:]
            assert list(s.messages("long", 500, 2900)) == expected[499:2899]


def test_round_trip_with_a_hex_key_and_key_files(tmp_path: pathlib.Path) -> None:
    key = convlog.generate_key()
    d = tmp_path / "store"
    with Store(d, key=key.hex()) as s:
        s.append("chat", {"n": 1})
    # The same key: as upper-case hex, and as key files of hex and raw bytes (with and
    # without a trailing newline).
    with Store(d, key=key.hex().upper()) as s:
        s.append("chat", {"n": 2})
    files = {
        "hex": key.hex().encode(),
        "hex-nl": key.hex().encode() + b"\n",
        "hex-crlf": key.hex().encode() + b"\r\n",
        "raw": key,
        "raw-nl": key + b"\n",
    }
    for i, (name, contents) in enumerate(files.items()):
        f = tmp_path / f"{name}.key"
        f.write_bytes(contents)
        with Store(d, key_file=f) as s:
            assert s.count("chat") == 2 + i
            s.append("chat", {"n": 3 + i})
        with Store(d, key_file=str(f), read_only=True) as s:
            assert s.get("chat", 1) == {"n": 1}
    with Store(d, key=key) as s:
        assert [m["n"] for m in s.tail("chat")] == list(range(1, 3 + len(files)))


def test_key_arguments_are_checked(store_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    key = convlog.generate_key()
    f = tmp_path / "k"
    f.write_bytes(key)
    with pytest.raises(ValueError, match="not both"):
        Store(store_dir, key=key, key_file=f)
    with pytest.raises(TypeError):
        Store(store_dir, key=12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Store(store_dir, key_file=b"/some/path")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Store(store_dir, key_file=3)  # type: ignore[arg-type]
    for bad in (key[:31], key + b"x", b"", key.hex()[:63], key.hex() + "0", "zz" * 32, key.hex() + "\n"):
        with pytest.raises(convlog.InvalidMasterKey) as e:
            Store(store_dir, key=bad)
        assert isinstance(e.value, ValueError) and isinstance(e.value, convlog.Error)
        assert e.value.path is None
        # The message says what was wrong, never the key.
        assert key.hex() not in str(e.value)
    f.write_bytes(b"not a key\n")
    with pytest.raises(convlog.InvalidMasterKey) as e:
        Store(store_dir, key_file=f)
    assert pathlib.Path(e.value.path) == f
    assert e.value.reason
    with pytest.raises(convlog.IoError):
        Store(store_dir, key_file=tmp_path / "missing")
    # None of those created a store that holds anything.
    with Store(store_dir) as s:
        assert not s.is_encrypted
        assert s.sessions() == []


def test_the_key_is_in_no_attribute_and_not_in_the_repr(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    with Store(store_dir, key=key) as s:
        assert key.hex() not in repr(s) and repr(key) not in repr(s)
        for name in dir(s):
            try:
                value = getattr(s, name)
            except Exception:
                continue
            assert value != key and value != key.hex(), name
            assert key.hex() not in repr(value), name
        assert not hasattr(s, "key") and not hasattr(s, "key_file")


def test_memory_store_with_a_key() -> None:
    with Store(":memory:", key=convlog.generate_key()) as s:
        assert s.is_encrypted
        s.append("a", {"x": 1})
        assert s.tail("a") == [{"x": 1}]


# --- at rest --------------------------------------------------------------------------------


def test_no_plaintext_reaches_any_file_of_the_store(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    with Store(store_dir, key=key, segment_size=64 * 1024) as s:
        for i in range(300):
            s.append("chat", {"role": "user", "content": f"{MARKER} {i} " + "x" * 200})
        s.append_batch("chat", [{"content": MARKER}] * 3, key=f"{MARKER}-idem")
        s.append("chat", {"content": "again"}, key=f"{MARKER}-idem2")
        s.set_meta("chat", {"title": MARKER})
        s.fork("chat", "other", 10)
        s.replace("third", [{"content": MARKER}])
        s.sync()
        assert s.stats()["segments"] > 1
        assert holds(store_dir, MARKER.encode()) == []
        s.compact(seal=True)
    names = [p.name for p in files_of(store_dir)]
    assert "KEYS" in names and any(n.endswith(".seg") for n in names)
    assert holds(store_dir, MARKER.encode()) == []
    # The control: without a key the marker is there.
    plain = store_dir.parent / "plain"
    with Store(plain) as s:
        s.append("chat", {"content": MARKER})
    assert holds(plain, MARKER.encode()) != []


def test_opening_without_the_key_is_key_required(store_dir: pathlib.Path) -> None:
    with Store(store_dir, key=convlog.generate_key()) as s:
        s.append("chat", {"x": 1})
    for kwargs in ({}, {"read_only": True}):
        with pytest.raises(convlog.KeyRequired) as e:
            Store(store_dir, **kwargs)
        assert isinstance(e.value, convlog.Error)
        assert pathlib.Path(e.value.path) == store_dir
        assert "key= or key_file=" in str(e.value), "Python's names, not Rust's or the CLI's"


def test_a_wrong_key_is_wrong_key_and_changes_nothing(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    with Store(store_dir, key=key) as s:
        s.append("chat", {"x": 1})
    before = {p.name: p.read_bytes() for p in files_of(store_dir) if p.name == "KEYS"}
    for kwargs in ({}, {"read_only": True}):
        with pytest.raises(convlog.WrongKey) as e:
            Store(store_dir, key=convlog.generate_key(), **kwargs)
        assert isinstance(e.value, convlog.Error)
        assert pathlib.Path(e.value.path) == store_dir
        assert key.hex() not in str(e.value)
    assert {p.name: p.read_bytes() for p in files_of(store_dir) if p.name == "KEYS"} == before
    with Store(store_dir, key=key) as s:
        assert s.tail("chat") == [{"x": 1}]


def test_a_key_on_an_unencrypted_store_is_not_encrypted(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        assert not s.is_encrypted
        s.append("chat", {"x": 1})
        with pytest.raises(convlog.NotEncrypted):
            s.rekey(convlog.generate_key())
    with pytest.raises(convlog.NotEncrypted) as e:
        Store(store_dir, key=convlog.generate_key())
    assert isinstance(e.value, convlog.Error)
    assert pathlib.Path(e.value.path) == store_dir
    with Store(store_dir) as s:
        assert s.tail("chat") == [{"x": 1}]
        assert not s.is_encrypted
    assert "KEYS" not in [p.name for p in files_of(store_dir)]


def test_a_damaged_key_file_is_an_error_of_the_store(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    with Store(store_dir, key=key) as s:
        s.append("chat", {"x": 1})
    keys = store_dir / "KEYS"
    data = bytearray(keys.read_bytes())
    data[10] ^= 0xFF  # in the key file's header
    keys.write_bytes(bytes(data))
    for read_only in (True, False):
        with pytest.raises(convlog.Corrupt) as e:
            Store(store_dir, key=key, read_only=read_only)
        assert e.value.segment is None
        assert pathlib.Path(e.value.path) == keys
        assert isinstance(e.value.offset, int)


# --- delete ---------------------------------------------------------------------------------


def test_a_deleted_session_stays_unreadable_in_a_copy_of_the_segments(tmp_path: pathlib.Path) -> None:
    key = convlog.generate_key()
    live, backup = tmp_path / "live", tmp_path / "backup"
    sessions = ["a", "b", "c"]
    with Store(live, key=key) as s:
        fill(s, sessions, 30)
        s.sync()
        backup.mkdir()
        for p in files_of(live):
            if p.suffix in (".seg", ".hint"):
                shutil.copy(p, backup / p.name)
        assert s.delete_session("b")
    # The segments from before the delete, beside the key file from after it.
    shutil.copy(live / "KEYS", backup / "KEYS")
    with Store(backup, key=key, read_only=True) as old:
        for sid in ("a", "c"):
            assert old.tail(sid) == [{"role": "user", "content": f"{sid}-{i}"} for i in range(30)]
            assert list(old.messages(sid)) == old.tail(sid)
        # "b" is still in that old log, and not one of its messages opens.
        assert old.count("b") == 30
        with pytest.raises(convlog.KeyDestroyed) as e:
            old.tail("b")
        assert isinstance(e.value, convlog.Error)
        assert e.value.segment.endswith(".seg")
        assert isinstance(e.value.offset, int) and isinstance(e.value.key_id, int)
        for i in (1, 15, 30):
            with pytest.raises(convlog.KeyDestroyed):
                old.get("b", i)
        with pytest.raises(convlog.KeyDestroyed):
            list(old.messages("b"))
    with Store(live, key=key) as s:
        assert s.count("b") == 0
        assert s.count("a") == 30


# --- rekey ----------------------------------------------------------------------------------


def test_rekey_then_only_the_new_key_opens(store_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    k1, k2, k3 = (convlog.generate_key() for _ in range(3))
    with Store(store_dir, key=k1) as s:
        fill(s, ["a", "b"], 5)
        s.delete_session("b")
        n = s.rekey(k2)
        assert isinstance(n, int) and n >= 1
        # The open store goes on.
        s.append("a", {"after": "rekey"})
        assert s.count("a") == 6
    with pytest.raises(convlog.WrongKey):
        Store(store_dir, key=k1)
    with Store(store_dir, key=k2) as s:
        assert s.count("a") == 6
        f = tmp_path / "k3"
        f.write_text(k3.hex() + "\n")
        assert s.rekey(new_key_file=f) == n
    with pytest.raises(convlog.WrongKey):
        Store(store_dir, key=k2, read_only=True)
    with Store(store_dir, key=k3, read_only=True) as s:
        assert s.tail("a")[-1] == {"after": "rekey"}
        with pytest.raises(convlog.ReadOnly):
            s.rekey(k1)


def test_rekey_arguments_are_checked(store_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    key = convlog.generate_key()
    f = tmp_path / "k"
    f.write_bytes(key)
    with Store(store_dir, key=key) as s:
        s.append("a", {"x": 1})
        with pytest.raises(ValueError):
            s.rekey()
        with pytest.raises(ValueError, match="not both"):
            s.rekey(key, f)
        with pytest.raises(convlog.InvalidMasterKey):
            s.rekey(b"short")
        with pytest.raises(TypeError):
            s.rekey(1.5)  # type: ignore[arg-type]
        s.close()
        with pytest.raises(convlog.Closed):
            s.rekey(key)
    with Store(store_dir, key=key) as s:
        assert s.tail("a") == [{"x": 1}]


# --- one open store per path in the process -------------------------------------------------


def test_stores_on_one_path_share_only_with_the_same_key(store_dir: pathlib.Path) -> None:
    key = convlog.generate_key()
    first = Store(store_dir, key=key)
    try:
        first.append("a", {"x": 1})
        # Another key, or none: refused at once (no hang, nothing changed).
        for kwargs in ({}, {"key": convlog.generate_key()}, {"key": key.hex()[::-1]}):
            with pytest.raises(convlog.AlreadyOpen):
                Store(store_dir, **kwargs)
        # The same key (in any of its forms) shares the open store.
        with Store(store_dir, key=key.hex()) as second:
            assert second.tail("a") == [{"x": 1}]
            second.append("a", {"x": 2})
        assert first.count("a") == 2
        # A read-only open takes no part in the sharing: it checks the key itself.
        with pytest.raises(convlog.WrongKey):
            Store(store_dir, key=convlog.generate_key(), read_only=True)
        with pytest.raises(convlog.KeyRequired):
            Store(store_dir, read_only=True)
    finally:
        first.close()
    with pytest.raises(convlog.KeyRequired):
        Store(store_dir)
    with Store(store_dir, key=key) as s:
        assert s.count("a") == 2


def test_after_rekey_stores_on_the_same_path_share_with_the_new_key_only(
    store_dir: pathlib.Path,
) -> None:
    k1, k2 = convlog.generate_key(), convlog.generate_key()
    with Store(store_dir, key=k1) as s:
        s.append("a", {"x": 1})
        s.rekey(k2)
        with pytest.raises(convlog.AlreadyOpen):
            Store(store_dir, key=k1).close()
        with Store(store_dir, key=k2) as t:
            assert t.count("a") == 1


# --- adapters -------------------------------------------------------------------------------


async def test_agents_session_with_a_key(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("agents")
    from convlog.agents import ConvlogSession

    key = convlog.generate_key()
    d = tmp_path / "agents"
    items = [{"role": "user", "content": MARKER}]
    with ConvlogSession("u1", d, key=key) as sess:
        await sess.add_items(items)
        assert key.hex() not in repr(sess)
        assert all(v is not key and v != key for v in vars(sess).values())
    assert holds(d, MARKER.encode()) == []
    with pytest.raises(convlog.KeyRequired):
        ConvlogSession("u1", d)
    with pytest.raises(convlog.WrongKey):
        ConvlogSession("u1", d, key=convlog.generate_key())
    f = tmp_path / "key"
    f.write_bytes(key)
    with ConvlogSession("u1", d, key_file=f) as sess:
        assert await sess.get_items() == items
        fork = sess.fork("u2")
        assert await fork.get_items() == items
        fork.close()


def test_langchain_history_with_a_key(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage, HumanMessage

    from convlog.langchain import ConvlogChatMessageHistory

    key = convlog.generate_key()
    d = tmp_path / "lc"
    msgs = [HumanMessage(content=MARKER), AIMessage(content="ok")]
    h = ConvlogChatMessageHistory("s", d, key=key.hex())
    h.add_messages(msgs)
    assert key.hex() not in repr(h)
    h.close()
    assert holds(d, MARKER.encode()) == []
    with pytest.raises(convlog.KeyRequired):
        ConvlogChatMessageHistory("s", d)
    f = tmp_path / "key"
    f.write_text(key.hex())
    h = ConvlogChatMessageHistory("s", d, key_file=f)
    assert h.messages == msgs
    h.close()


def test_automata_database_with_a_key(tmp_path: pathlib.Path) -> None:
    from convlog.automata import OpenAIAutomataConversationDatabase, OpenAIChatMessage

    key = convlog.generate_key()
    d = tmp_path / "automata"
    db = OpenAIAutomataConversationDatabase(d, key=key)
    assert db.save_message("s1", OpenAIChatMessage(role="user", content=MARKER)) == 1
    db.close()
    assert holds(d, MARKER.encode()) == []
    with pytest.raises(convlog.KeyRequired):
        OpenAIAutomataConversationDatabase(d)
    f = tmp_path / "key"
    f.write_bytes(key)
    db = OpenAIAutomataConversationDatabase(os.fspath(d), key_file=f)
    assert [m.content for m in db.get_messages("s1")] == [MARKER]
    db.close()
