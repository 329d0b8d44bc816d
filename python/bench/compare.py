"""ConvlogSession against the OpenAI Agents SDK's SQLiteSession (and AsyncSQLiteSession,
when aiosqlite is installed), side by side in one run, on the same items.

    python python/bench/compare.py            # the full run (a few minutes on 2 cores)
    python python/bench/compare.py --quick    # a smaller run, to see that it works

Every store is a file (a directory for convlog) in a fresh temporary directory. The items
are realistic Responses-API items of about 1 KB: user and assistant messages, function
calls and their outputs. Workloads:

1. add_items of 1 item, 10 k times (one await each);
2. add_items of 100-item batches (10 k items);
3. get_items(limit=20) on a 50 k-item session;
4. get_items() of that whole session;
5. a fresh process: open the store and the first get_items(limit=20) (timed in the child,
   from before the session is constructed; the interpreter's start and imports excluded).

Each workload runs its variants in interleaved rounds (so that a noisy neighbour on the
machine hits them alike), and the table gives the median round.

Durability is not the same by default: SQLiteSession commits every add_items in WAL mode
with SQLite's default synchronous=FULL, which fsyncs the WAL at each commit; ConvlogSession's
default ("buffered") writes to the OS and syncs every 8 MiB and at close. So the write rows
are run for convlog twice: with its default, and with durability="always" (an fsync per
add_items, as SQLite's commit), which is the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from agents import SQLiteSession

import convlog
from convlog.agents import ConvlogSession

try:
    from agents.extensions.memory import AsyncSQLiteSession  # needs aiosqlite
except ImportError:  # pragma: no cover - depends on what is installed
    AsyncSQLiteSession = None


def make_items(n: int, start: int = 0) -> list[dict[str, Any]]:
    """n realistic items of about 1 KB each, cycling through four kinds."""
    text = (
        "Here is what I found about the deployment: the rollout to eu-west-1 finished at "
        "14:02 UTC, error rates stayed under 0.1%, and the canary's p99 latency went from "
        "212 ms to 198 ms. The migration of the sessions table is still pending — it waits "
        "for the DBA's approval. Shall I open a ticket for the follow-up on the cache "
        "eviction policy, or page the on-call engineer? "
    )
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        k = i % 4
        if k == 0:
            item: dict[str, Any] = {"role": "user", "content": f"[{i}] " + text * 2}
        elif k == 1:
            item = {
                "type": "function_call",
                "id": f"fc_{i:08d}",
                "call_id": f"call_{i:08d}",
                "name": "search_incidents",
                "arguments": json.dumps({"query": text[:300], "region": "eu-west-1",
                                         "limit": 20, "since": "2026-11-01T00:00:00Z"}),
                "status": "completed",
            }
        elif k == 2:
            item = {
                "type": "function_call_output",
                "call_id": f"call_{i - 1:08d}",
                "output": json.dumps({"incidents": [{"id": f"INC-{i}-{j}", "sev": j % 3,
                                                     "title": text[:120]} for j in range(5)]}),
            }
        else:
            item = {
                "type": "message",
                "id": f"msg_{i:08d}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text * 2, "annotations": []}],
            }
        out.append(item)
    return out


def new_session(kind: str, sid: str, path: str, durability: str | None = None) -> Any:
    if kind == "convlog":
        return ConvlogSession(sid, path, durability=durability)
    if kind == "sqlite":
        return SQLiteSession(sid, path)
    if kind == "async-sqlite":
        assert AsyncSQLiteSession is not None
        return AsyncSQLiteSession(sid, path)
    raise ValueError(kind)


async def close(session: Any) -> None:
    result = session.close()
    if asyncio.iscoroutine(result):
        await result


def store_path(root: str, kind: str, name: str) -> str:
    return os.path.join(root, f"{kind}-{name}" + ("" if kind == "convlog" else ".db"))


async def time_adds(s: Any, items: list[dict[str, Any]], batch: int) -> float:
    """Seconds per item of adding ``items`` to ``s`` in batches of ``batch``."""
    t = time.perf_counter()
    for i in range(0, len(items), batch):
        await s.add_items(items[i : i + batch])
    return (time.perf_counter() - t) / len(items)


async def bench_adds(variants: list[tuple[str, str, str | None]], root: str, n: int,
                     batch: int, rounds: int) -> dict[str, float]:
    """Per variant (name, kind, durability): the median over interleaved rounds of the
    seconds per item of n items added in batches of ``batch``."""
    sessions = {name: new_session(kind, f"add{batch}", store_path(root, kind, f"add{batch}-{name}"), d)
                for name, kind, d in variants}
    for s in sessions.values():
        await s.add_items(make_items(1))  # the schema, the first segment
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(rounds):
        items = make_items(n, r * n)
        for name, s in sessions.items():
            times[name].append(await time_adds(s, items, batch))
    for s in sessions.values():
        assert len(await s.get_items(limit=5)) == 5
        await close(s)
    return {name: statistics.median(t) for name, t in times.items()}


async def fill(kind: str, path: str, n: int) -> None:
    s = new_session(kind, "big", path)
    for i in range(0, n, 1000):
        await s.add_items(make_items(min(1000, n - i), i))
    await close(s)


async def bench_reads(paths: dict[str, str], n: int, calls20: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per kind: seconds per get_items(limit=20) and per get_items() on the n-item session,
    medians over interleaved rounds."""
    sessions = {kind: new_session(kind, "big", path) for kind, path in paths.items()}
    t20: dict[str, list[float]] = {k: [] for k in sessions}
    tall: dict[str, list[float]] = {k: [] for k in sessions}
    # The same items from every variant (checked once, untimed).
    first = await next(iter(sessions.values())).get_items()
    for s in sessions.values():
        assert len(await s.get_items(limit=20)) == 20
        assert await s.get_items() == first
    del first
    for _ in range(rounds):
        for kind, s in sessions.items():
            t = time.perf_counter()
            for _ in range(calls20):
                await s.get_items(limit=20)
            t20[kind].append((time.perf_counter() - t) / calls20)
        for kind, s in sessions.items():
            t = time.perf_counter()
            items = await s.get_items()
            tall[kind].append(time.perf_counter() - t)
            assert len(items) == n
            del items
            # Let the loop drop the finished future that still holds the result, so that
            # freeing these n items is not counted in the next variant's call.
            await asyncio.sleep(0)
    for s in sessions.values():
        await close(s)
    return {k: (statistics.median(t20[k]), statistics.median(tall[k])) for k in sessions}


CHILD = """
import asyncio, sys, time
kind, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from compare import new_session
async def main():
    t = time.perf_counter()
    s = new_session(kind, "big", path)
    items = await s.get_items(limit=20)
    dt = time.perf_counter() - t
    assert len(items) == 20
    print(dt)
asyncio.run(main())
"""


def bench_fresh_process(paths: dict[str, str], runs: int) -> dict[str, float]:
    here = os.path.dirname(os.path.abspath(__file__))
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(runs):
        for kind, path in paths.items():
            out = subprocess.run([sys.executable, "-c", CHILD, kind, path, here],
                                 check=True, capture_output=True, text=True).stdout
            times[kind].append(float(out.split()[-1]))
    return {k: statistics.median(t) for k, t in times.items()}


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = ap.parse_args()
    n_add = 1_000 if args.quick else 10_000
    n_big = 5_000 if args.quick else 50_000
    calls20 = 200 if args.quick else 1_000
    rounds = 3 if args.quick else 5
    runs = 3 if args.quick else 7

    kinds = ["convlog", "sqlite"] + (["async-sqlite"] if AsyncSQLiteSession is not None else [])
    variants = [("convlog", "convlog", None), ("convlog-always", "convlog", "always")] + [
        (k, k, None) for k in kinds[1:]
    ]
    results: dict[str, dict[str, float]] = {v[0]: {} for v in variants}
    with tempfile.TemporaryDirectory(prefix="convlog-bench-") as root:
        print("... add_items(1 item)", file=sys.stderr)
        for name, t in asyncio.run(bench_adds(variants, root, n_add, 1, rounds)).items():
            results[name]["add1"] = t
        print("... add_items(100 items)", file=sys.stderr)
        for name, t in asyncio.run(bench_adds(variants, root, n_add, 100, rounds)).items():
            results[name]["add100"] = t
        paths = {kind: store_path(root, kind, "big") for kind in kinds}
        for kind, path in paths.items():
            print(f"... filling a {n_big}-item session: {kind}", file=sys.stderr)
            asyncio.run(fill(kind, path, n_big))
        print("... get_items", file=sys.stderr)
        for kind, (t20, tall) in asyncio.run(bench_reads(paths, n_big, calls20, rounds)).items():
            results[kind]["get20"], results[kind]["getall"] = t20, tall
        print("... fresh processes", file=sys.stderr)
        for kind, t in bench_fresh_process(paths, runs).items():
            results[kind]["fresh"] = t

    rows = [
        ("add1", f"add_items(1 item) × {n_add:,}", "per call"),
        ("add100", f"add_items(100-item batches), {n_add:,} items", "per item"),
        ("get20", f"get_items(limit=20), {n_big:,}-item session", "per call"),
        ("getall", f"get_items(), {n_big:,}-item session", "per call"),
        ("fresh", "fresh process: open + first get_items(limit=20)", "once"),
    ]
    others = [k for k in kinds if k != "convlog"]
    head = ["workload", "convlog (buffered)", "convlog (always)"] + [
        f"{'SQLiteSession' if k == 'sqlite' else 'AsyncSQLiteSession'}" for k in others
    ] + [f"× vs {'SQLiteSession' if k == 'sqlite' else 'AsyncSQLiteSession'}" for k in others]
    print(f"convlog {convlog.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, {datetime.date.today().isoformat()}")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for key, name, unit in rows:
        c = results["convlog"][key]
        always = results["convlog-always"].get(key)
        cells = [f"{name} ({unit})", fmt_time(c), fmt_time(always) if always is not None else "—"]
        cells += [fmt_time(results[k][key]) for k in others]
        for k in others:
            ratio = results[k][key] / c
            if always is not None:
                cells.append(f"{ratio:.1f}× ({results[k][key] / always:.1f}× always)")
            else:
                cells.append(f"{ratio:.1f}×")
        print("| " + " | ".join(cells) + " |")
    print()
    print("× = the SQLite session's time / convlog's (higher is better for convlog).")


if __name__ == "__main__":
    main()
