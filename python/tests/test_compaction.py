"""Deleting sessions, sealing and compacting a store, and the modes of the files it creates:
``Store.delete_session``, ``Store.seal``, ``Store.compact``, ``Store(..., mode=)``."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import pathlib
import stat
import uuid
from typing import Any

import pytest

import convlog
from convlog import Store
from convlog.automata import OpenAIAutomataConversationDatabase, OpenAIChatMessage

SPAWN = multiprocessing.get_context("spawn")
WAIT = 60.0


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every regular file under ``root``, its subdirectories included."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = pathlib.Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def _holding(root: pathlib.Path, needle: bytes) -> list[str]:
    """The files under ``root`` whose bytes contain ``needle``."""
    return [str(p.relative_to(root)) for p in _files(root) if needle in p.read_bytes()]


def _snapshot(s: Store, sessions: list[str]) -> dict[str, list[tuple[int, Any]]]:
    """Each session's messages with their interaction ids, read one by one."""
    return {
        name: [(i, s.get(name, i)) for i in range(1, s.count(name) + 1)] for name in sessions
    }


def _fill(s: Store, marker: str) -> dict[str, list[tuple[int, Any]]]:
    """Two live sessions (one popped, truncated and with metadata; one forked) and a doomed
    one whose every message holds ``marker``; returns the live ones as appended."""
    live: dict[str, list[tuple[int, Any]]] = {"keep-a": [], "keep-b": []}
    for i in range(40):
        r = s.append("doomed", {"role": "user", "content": f"{marker} secret {i}", "pad": "x" * 200})
        assert r.interaction_id == i + 1
        for name in live:
            msg = {"role": "assistant", "content": f"{name} {i}", "pad": "y" * 50}
            live[name].append((s.append(name, msg).interaction_id, msg))
    s.set_meta("doomed", {"owner": marker})
    s.append("doomed", {"content": marker}, key=f"key-{marker}")
    # Some dead records in the live sessions too: popped and truncated messages.
    s.pop("keep-a")
    live["keep-a"].pop()
    assert s.truncate("keep-b", 30) == 10
    del live["keep-b"][30:]
    s.set_meta("keep-a", {"title": "A"})
    return live


# -- delete_session -------------------------------------------------------------------------


def test_delete_session_empties_it_and_removes_it_from_sessions(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for i in range(3):
            s.append("gone", {"i": i})
            s.append("stays", {"i": i})
        s.append("gone", {"i": 3}, key="k1")
        s.set_meta("gone", {"user": "u1"})
        assert s.tail("gone", 2) == [{"i": 2}, {"i": 3}]  # cached in this process
        assert s.delete_session("gone") is True
        assert s.count("gone") == 0
        assert "gone" not in s
        assert [i.id for i in s.sessions()] == ["stays"]
        assert s.tail("gone") == []
        assert s.tail_if_cached("gone", 2) in (None, [])
        assert s.get("gone", 1) is None
        assert list(s.messages("gone")) == []
        assert s.meta("gone") is None
        assert s.sessions_where("user", "u1") == []
        assert s.tail("stays") == [{"i": 0}, {"i": 1}, {"i": 2}]
        # Nothing left to delete.
        assert s.delete_session("gone") is False
        assert s.delete_session("never-existed") is False
        # The id is usable again, from interaction id 1, and its key was forgotten.
        r = s.append("gone", {"new": True}, key="k1")
        assert r.interaction_id == 1
        assert s.tail("gone") == [{"new": True}]
    with Store(store_dir) as s:  # the same after a reopen
        assert s.tail("gone") == [{"new": True}]
        assert [i.id for i in s.sessions()] == ["gone", "stays"]
        assert s.meta("gone") is None


def test_delete_session_of_metadata_only_session(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.set_meta("m", {"a": 1})
        assert s.delete_session("m") is True
        assert s.meta("m") is None
        assert s.delete_session("m") is False


def test_delete_session_validates_the_id(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        with pytest.raises(convlog.InvalidSessionId):
            s.delete_session("")
        with pytest.raises(convlog.InvalidSessionId):
            s.delete_session("a\nb")


# -- seal and compact -----------------------------------------------------------------------


def test_seal_reports_whether_it_sealed(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        assert s.seal() is False  # nothing in the active segment
        s.append("a", {"i": 1})
        segments = s.stats()["segments"]
        assert s.seal() is True
        assert s.stats()["segments"] == segments + 1
        assert s.seal() is False
        assert s.tail("a") == [{"i": 1}]
        assert s.append("a", {"i": 2}).interaction_id == 2


def test_compact_with_nothing_sealed_does_nothing(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("a", {"i": 1})
        s.pop("a")
        r = s.compact()
        assert isinstance(r, convlog.CompactReport)
        assert r.segments_rewritten == 0
        assert r.segment is None
        assert (r.bytes_before, r.bytes_after, r.records_dropped) == (0, 0, 0)
        assert r.sessions_erased == []
        assert isinstance(r.duration, float) and r.duration >= 0.0
        assert "CompactReport(segments_rewritten=0" in repr(r)


def test_compact_reclaims_bytes_and_erases_a_deleted_session(store_dir: pathlib.Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    needle = marker.encode()
    with Store(store_dir) as s:
        live = _fill(s, marker)
        assert _snapshot(s, ["keep-a", "keep-b"]) == live
        assert s.delete_session("doomed") is True
        s.sync()
        assert _holding(store_dir, needle)  # still on disk: deleting only logs a record
        last_lsn = s.last_lsn
        # Bytes a repair set aside may hold the session too: a compaction that erases
        # empties quarantine/.
        quarantine = store_dir / "quarantine"
        quarantine.mkdir(exist_ok=True)
        (quarantine / "00000000000000000001-000000000048.bin").write_bytes(needle)
        report = s.compact(seal=True)
        assert report.quarantine_purged == 1
        assert list(quarantine.iterdir()) == []
        assert report.segments_rewritten >= 1
        assert report.bytes_after < report.bytes_before
        assert report.records_dropped > 0 and report.records_kept > 0
        assert report.sessions_erased == ["doomed"]
        assert isinstance(report.segment, int)
        assert isinstance(report.duration, float) and report.duration >= 0.0
        assert s.last_lsn == last_lsn  # no LSN changes
        # Not one byte of the deleted session's messages, metadata or key remains.
        assert _holding(store_dir, needle) == []
        # The live sessions read back identical, with the same interaction ids.
        assert _snapshot(s, ["keep-a", "keep-b"]) == live
        assert list(s.messages("keep-a")) == [m for _, m in live["keep-a"]]
        assert s.tail("keep-b", 3) == [m for _, m in live["keep-b"][-3:]]
        assert s.meta("keep-a") == {"title": "A"}
        assert [i.id for i in s.sessions()] == ["keep-a", "keep-b"]
        assert s.count("doomed") == 0
        # Appends go on from the right ids.
        assert s.append("keep-a", {"after": 1}).interaction_id == len(live["keep-a"]) + 1
        live["keep-a"].append((len(live["keep-a"]) + 1, {"after": 1}))
        # A second compaction has nothing of the deleted session to erase.
        again = s.compact(seal=True)
        assert "doomed" not in again.sessions_erased
    assert _holding(store_dir, needle) == []
    with Store(store_dir) as s:  # and after a reopen
        assert _snapshot(s, ["keep-a", "keep-b"]) == live
        assert s.meta("keep-a") == {"title": "A"}
        assert s.count("doomed") == 0
        assert s.append("keep-b", {"after": 2}).interaction_id == len(live["keep-b"]) + 1
    with Store(store_dir, read_only=True) as ro:
        assert _snapshot(ro, ["keep-a"]) == {"keep-a": live["keep-a"]}


def test_compact_without_seal_leaves_the_active_segment(store_dir: pathlib.Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    with Store(store_dir) as s:
        s.append("doomed", {"content": marker})
        s.append("live", {"i": 1})
        s.delete_session("doomed")
        s.sync()
        report = s.compact()  # the records are all in the active segment: nothing to do
        assert report.segments_rewritten == 0
        assert _holding(store_dir, marker.encode())
        assert s.seal() is True
        report = s.compact()
        assert report.sessions_erased == ["doomed"]
        assert _holding(store_dir, marker.encode()) == []
        assert s.tail("live") == [{"i": 1}]


def test_compaction_keeps_cached_tails_right(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        for i in range(10):
            s.append("chat", {"i": i})
            s.append("other", {"i": i})
        s.pop("chat")
        assert s.tail("chat", 3) == [{"i": 6}, {"i": 7}, {"i": 8}]
        s.delete_session("other")
        s.compact(seal=True)
        assert s.tail("chat", 3) == [{"i": 6}, {"i": 7}, {"i": 8}]
        s.append("chat", {"i": 9})
        assert s.tail("chat", 2) == [{"i": 8}, {"i": 9}]
        assert s.get("chat", 10) == {"i": 9}


def test_writes_on_a_read_only_store_raise_read_only(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("a", {"i": 1})
        s.seal()
    with Store(store_dir, read_only=True) as ro:
        with pytest.raises(convlog.ReadOnly) as e:
            ro.compact()
        assert pathlib.Path(e.value.path).samefile(store_dir)
        with pytest.raises(convlog.ReadOnly):
            ro.compact(seal=True)
        with pytest.raises(convlog.ReadOnly):
            ro.seal()
        with pytest.raises(convlog.ReadOnly):
            ro.delete_session("a")
        assert ro.tail("a") == [{"i": 1}]


def test_a_compaction_under_way_raises_compacting(store_dir: pathlib.Path) -> None:
    with Store(store_dir) as s:
        s.append("a", {"i": 1})
        s.delete_session("a")
        s.seal()
        # Another compaction holds the store's COMPACT lock (flock, as the library takes it).
        fd = os.open(store_dir / "COMPACT", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(convlog.Compacting) as e:
                s.compact()
            assert isinstance(e.value, convlog.Error)
            assert pathlib.Path(e.value.path).samefile(store_dir)
            assert "being compacted" in str(e.value)
        finally:
            os.close(fd)
        assert s.compact().sessions_erased == ["a"]


def test_closed_store_raises_closed(store_dir: pathlib.Path) -> None:
    s = Store(store_dir)
    s.close()
    for call in (s.seal, s.compact, lambda: s.delete_session("a")):
        with pytest.raises(convlog.Closed):
            call()


# -- another process ------------------------------------------------------------------------


def _reader_worker(path: str, names: list[str], ready: Any, compacted: Any, out: Any) -> None:
    """Holds the store open across another process's compaction, then reads and appends."""
    try:
        with Store(path) as s:
            before = _snapshot(s, names)
            tails = {n: s.tail(n, 5) for n in names}  # fills this process's cache
            ready.set()
            if not compacted.wait(WAIT):
                raise TimeoutError("no compaction")
            after = _snapshot(s, names)
            tails_after = {n: s.tail(n, 5) for n in names}
            receipt = s.append(names[0], {"from": "child"})
            out.put(("ok", before, after, tails == tails_after, receipt.interaction_id,
                     s.count("doomed")))
    except BaseException as e:  # reported to the parent, whose assertion says what failed
        out.put(("error", repr(e)))
        raise


def _compact_worker(path: str, out: Any) -> None:
    try:
        with Store(path) as s:
            r = s.compact(seal=True)
            out.put(("ok", r.sessions_erased, r.bytes_before, r.bytes_after))
    except BaseException as e:
        out.put(("error", repr(e)))
        raise


def test_another_process_reads_and_appends_after_a_compaction(store_dir: pathlib.Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    names = ["keep-a", "keep-b"]
    with Store(store_dir) as s:
        live = _fill(s, marker)
        s.delete_session("doomed")
        s.sync()
        ready, compacted, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
        p = SPAWN.Process(target=_reader_worker, args=(str(store_dir), names, ready, compacted, out))
        p.start()
        try:
            assert ready.wait(WAIT)
            report = s.compact(seal=True)
            assert report.sessions_erased == ["doomed"]
            assert report.bytes_after < report.bytes_before
            compacted.set()
            result = out.get(timeout=WAIT)
        finally:
            p.join(WAIT)
        assert result[0] == "ok", result
        _, before, after, same_tails, next_id, doomed_count = result
        expected = {n: [list(pair) for pair in live[n]] for n in names}
        assert {n: [list(pair) for pair in v] for n, v in before.items()} == expected
        assert {n: [list(pair) for pair in v] for n, v in after.items()} == expected
        assert same_tails
        assert next_id == len(live["keep-a"]) + 1
        assert doomed_count == 0
        assert p.exitcode == 0
        # This process sees the child's append.
        assert s.get("keep-a", next_id) == {"from": "child"}
        assert s.append("keep-a", {"from": "parent"}).interaction_id == next_id + 1
    assert _holding(store_dir, marker.encode()) == []


def test_this_process_reads_and_appends_after_another_compacts(store_dir: pathlib.Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    with Store(store_dir) as s:
        live = _fill(s, marker)
        s.delete_session("doomed")
        assert s.tail("keep-b", 4) == [m for _, m in live["keep-b"][-4:]]  # cached
        out = SPAWN.Queue()
        p = SPAWN.Process(target=_compact_worker, args=(str(store_dir), out))
        p.start()
        try:
            result = out.get(timeout=WAIT)
        finally:
            p.join(WAIT)
        assert result[0] == "ok", result
        assert result[1] == ["doomed"]
        assert result[3] < result[2]
        assert p.exitcode == 0
        assert _holding(store_dir, marker.encode()) == []
        assert _snapshot(s, ["keep-a", "keep-b"]) == live
        assert s.tail("keep-b", 4) == [m for _, m in live["keep-b"][-4:]]
        assert s.append("keep-b", {"x": 1}).interaction_id == len(live["keep-b"]) + 1
        assert s.count("doomed") == 0


# -- file modes -----------------------------------------------------------------------------


def _modes(root: pathlib.Path) -> tuple[set[int], set[int]]:
    """The permission bits of the directories (``root`` included) and of the files in it."""
    dirs = {stat.S_IMODE(root.stat().st_mode)}
    for dirpath, subdirs, _ in os.walk(root):
        dirs.update(stat.S_IMODE((pathlib.Path(dirpath) / d).stat().st_mode) for d in subdirs)
    files = {stat.S_IMODE(p.stat().st_mode) for p in _files(root)}
    return dirs, files


def _exercise(s: Store) -> None:
    """Writes that create every kind of file: segments, hints, the compacted segment."""
    for i in range(5):
        s.append("a", {"i": i})
        s.append("b", {"i": i})
    s.delete_session("b")
    s.compact(seal=True)
    s.append("a", {"i": 5})


@pytest.fixture
def umask() -> Any:
    """Sets a umask for the test, restoring the old one after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_files_are_owner_only_by_default(store_dir: pathlib.Path, umask: Any) -> None:
    umask(0o002)  # a permissive umask changes nothing
    with Store(store_dir) as s:
        _exercise(s)
    dirs, files = _modes(store_dir)
    assert dirs == {0o700}
    assert files == {0o600}
    assert len(_files(store_dir)) >= 3


def test_mode_sets_the_file_modes_exactly(store_dir: pathlib.Path, umask: Any) -> None:
    umask(0o077)  # a narrow umask does not narrow the modes asked for
    with Store(store_dir, mode=0o640) as s:
        _exercise(s)
        assert s.tail("a", 1) == [{"i": 5}]
    dirs, files = _modes(store_dir)
    assert dirs == {0o750}
    assert files == {0o640}
    other = store_dir.parent / "wider"
    with Store(other, mode=0o644) as s:
        s.append("a", {"i": 1})
    assert _modes(other) == ({0o755}, {0o644})


def test_mode_none_is_the_default(store_dir: pathlib.Path) -> None:
    with Store(store_dir, mode=None) as s:
        s.append("a", {"i": 1})
        with Store(store_dir) as same:  # the same options: shares the open store
            assert same.tail("a") == [{"i": 1}]
        with pytest.raises(convlog.AlreadyOpen):
            Store(store_dir, mode=0o640)
    assert _modes(store_dir) == ({0o700}, {0o600})


@pytest.mark.parametrize("bad", [0o777, 0o400, 0o660 | 0o4000, 0o1600, 0o700, -1, 2**40])
def test_bad_modes_raise_invalid_option(store_dir: pathlib.Path, bad: int) -> None:
    with pytest.raises(convlog.InvalidOption) as e:
        Store(store_dir, mode=bad)
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, convlog.Error)
    assert e.value.option == "permissions"
    assert "invalid option permissions" in str(e.value)
    assert "0666" in str(e.value) and "0600" in str(e.value)
    assert not store_dir.exists()


def test_bad_mode_message_is_the_librarys(store_dir: pathlib.Path) -> None:
    with pytest.raises(convlog.InvalidOption, match=r"file mode 0777 must lie within 0666"):
        Store(store_dir, mode=0o777)


@pytest.mark.parametrize("bad", [True, "0640", 0o640 * 1.0])
def test_modes_that_are_not_ints_raise_type_error(store_dir: pathlib.Path, bad: Any) -> None:
    with pytest.raises(TypeError):
        Store(store_dir, mode=bad)


# -- Automata -------------------------------------------------------------------------------


def test_automata_delete_session_and_compact(tmp_path: pathlib.Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    path = tmp_path / "db"
    db = OpenAIAutomataConversationDatabase(db_path=path)
    try:
        db.save_message("s1", OpenAIChatMessage(role="user", content=f"{marker} hello"))
        db.save_message("s2", OpenAIChatMessage(role="user", content="kept"))
        assert db.delete_session("s1") is True
        assert db.get_messages("s1") == []
        assert db.get_interaction_count("s1") == 0
        assert db.delete_session("s1") is False
        with pytest.raises(ValueError):
            db.delete_session("")
        report = db.compact()
        assert report.sessions_erased == ["s1"]
        assert _holding(path, marker.encode()) == []
        assert db.get_messages("s2") == [OpenAIChatMessage(role="user", content="kept")]
        assert db.save_message("s1", OpenAIChatMessage(role="user", content="again")) == 1
    finally:
        db.close()
