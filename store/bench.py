"""Benchmark: report graph records through the project's writer beside the SDK's bulk insert.

``bench_store`` turns report revisions into the graph records :class:`~convergence.store.graph.ReportGraph`
writes (stations, reports, revisions with their integrity links, evidence events, responses
and the four kinds of relation), each key once, and writes the same records, into the same
engine, two ways in one run:

* **writer**: :meth:`BatchedWriter.submit` per record, then ``close()`` (batching, the breaker,
  validation, RELATE for relations: the path the product uses);
* **raw SDK**: ``AsyncSurreal.insert(table, rows)`` / ``insert_relation(table, rows)`` in
  chunks of the same size, records already grouped by table (the best case for it).

Each gets a fresh database per repeat; the figure is the best of ``repeats`` and the
*ratio* writer/raw is what to compare across machines (target: at least 0.9). Both
databases are counted afterwards, so a path that wrote less cannot look faster.

Examples
--------
>>> import asyncio
>>> from convergence.responses.examples import example_revisions
>>> reports = [r for seed in range(2) for r in example_revisions(seed)]
>>> out = asyncio.run(bench_store(reports, repeats=1))
>>> out["records"] == out["writer"]["records"] == out["raw_sdk"]["records"], out["ratio"] > 0
(True, True)
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surrealdb import AsyncSurreal, RecordID

from convergence.records import Report
from convergence.store.graph import clean, report_records
from convergence.store.integrity import HEAD_TABLE, Chain
from convergence.store.surreal import EDGE_TABLES, SurrealStore, _endpoint
from convergence.store.writer import BatchedWriter

__all__ = ["bench_store", "graph_records"]

_Key = tuple[str, str]


def graph_records(reports: Sequence[Report]) -> dict[_Key, dict[str, Any]]:
    """The records a :class:`ReportGraph` writes for ``reports`` (chained in order), each
    key once with its final document, in first-write order."""
    chain = Chain("reports")
    newest: dict[str, int] = {}
    out: dict[_Key, dict[str, Any]] = {}
    for rep in reports:
        link = chain.append(rep.revision_id, clean(rep.to_dict()))
        if link is None:
            continue
        is_newest = rep.revision >= newest.get(rep.report_id, 0)
        if is_newest:
            newest[rep.report_id] = rep.revision
        for table, rid, doc in report_records(rep, link, newest=is_newest):
            out[(table, rid)] = doc
        out[(HEAD_TABLE, "reports")] = chain.head_record()
    return out


_Q_COUNT = "SELECT count() AS n FROM type::table($tb) GROUP ALL"


async def _counts(conn: Any, tables: Sequence[str]) -> dict[str, int]:
    out = {}
    for t in tables:
        rows = await conn.query(_Q_COUNT, {"tb": t})
        out[t] = int(rows[0]["n"]) if rows else 0
    return out


async def _writer_run(url: str, ns: str, db: str, records: dict[_Key, dict[str, Any]],
                      batch_size: int, tables: Sequence[str]) -> tuple[float, dict[str, int]]:
    async with SurrealStore(url, ns, db) as store:
        writer = BatchedWriter(store, batch_size=batch_size, flush_interval_s=0.05,
                               max_pending=max(10_000, len(records)), name="bench")
        t0 = time.perf_counter()
        for (table, rid), doc in records.items():
            writer.submit(table, rid, doc)
        await writer.close()
        seconds = time.perf_counter() - t0
        return seconds, {t: await store.count(t) for t in tables}


async def _raw_run(url: str, ns: str, db: str, records: dict[_Key, dict[str, Any]],
                   batch_size: int, tables: Sequence[str]) -> tuple[float, dict[str, int]]:
    by_table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for (table, rid), doc in records.items():
        by_table.setdefault(table, []).append((rid, doc))
    conn: Any = AsyncSurreal(url)
    await conn.connect()
    try:
        await conn.use(ns, db)
        t0 = time.perf_counter()
        for table, items in by_table.items():
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                if table in EDGE_TABLES:
                    rows = [{**doc, "id": RecordID(table, rid),
                             "in": _endpoint(table, rid, "in", doc["in"]),
                             "out": _endpoint(table, rid, "out", doc["out"])} for rid, doc in chunk]
                    await conn.insert_relation(table, rows)
                else:
                    await conn.insert(table, [{**doc, "id": RecordID(table, rid)} for rid, doc in chunk])
        seconds = time.perf_counter() - t0
        return seconds, await _counts(conn, tables)
    finally:
        await conn.close()


async def bench_store(reports: Sequence[Report], *, engine: str = "mem", repeats: int = 3,
                      batch_size: int = 500) -> dict[str, Any]:
    """Records/s of the writer and of the raw SDK on the same records (module docstring)."""
    if engine not in ("mem", "surrealkv"):
        raise ValueError(f"engine must be mem or surrealkv, got {engine!r}")
    if repeats < 1 or batch_size < 1:
        raise ValueError("need repeats >= 1 and batch_size >= 1")
    records = graph_records(reports)
    if not records:
        raise ValueError("no reports to write")
    tables = sorted({t for t, _ in records})
    expected = {t: sum(1 for tb, _ in records if tb == t) for t in tables}
    best = {"writer": float("inf"), "raw_sdk": float("inf")}
    counted: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="convergence-bench-store-") as tmp:
        for k in range(repeats):
            # alternate which path goes first, so neither always gets a warm engine
            for path in ("writer", "raw_sdk") if k % 2 == 0 else ("raw_sdk", "writer"):
                url = "mem://" if engine == "mem" else f"surrealkv://{Path(tmp) / f'{path}-{k}'}"
                run = _writer_run if path == "writer" else _raw_run
                seconds, counted[path] = await run(url, "bench", f"{path}-{k}", records, batch_size,
                                                   tables)
                best[path] = min(best[path], seconds)
                if counted[path] != expected:
                    raise RuntimeError(f"bench store: the {path} path stored {counted[path]}, "
                                       f"expected {expected}")
    n = len(records)
    return {
        "benchmark": "store", "engine": engine, "reports": len({r.report_id for r in reports}),
        "revisions": len(reports), "records": n, "by_table": expected, "batch_size": batch_size,
        "repeats": repeats,
        "writer": {"records": sum(counted["writer"].values()), "seconds": round(best["writer"], 4),
                   "records_per_s": round(n / best["writer"])},
        "raw_sdk": {"records": sum(counted["raw_sdk"].values()), "seconds": round(best["raw_sdk"], 4),
                    "records_per_s": round(n / best["raw_sdk"]),
                    "method": "AsyncSurreal.insert / insert_relation, records grouped by table"},
        "ratio": round(best["raw_sdk"] / best["writer"], 4),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
    }
