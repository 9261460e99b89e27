"""``convergence bench store``: report graph records/s through the project's writer, beside the
SurrealDB SDK's own bulk insert on the same records and engine.

This file holds only the command function :func:`store`; it is mounted on the ``bench``
sub-app (``bench.app.command("store")(store)``). The benchmark itself is
:func:`convergence.store.bench.bench_store`.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated

import typer

from convergence.cli.common import console, fail, print_json


class Engine(StrEnum):
    mem = "mem"
    surrealkv = "surrealkv"


def store(
    reports: Annotated[int, typer.Option(
        min=1, max=10_000, help="Report episodes (4 revisions each, about 70 records).")] = 25,
    engine: Annotated[Engine, typer.Option(
        help="Embedded engine: mem (in memory) or surrealkv (files in a temporary directory).")]
        = Engine.mem,
    batch_size: Annotated[int, typer.Option(min=1, max=5000, help="Records per write, both paths.")]
        = 500,
    repeats: Annotated[int, typer.Option(min=1, max=20, help="Best of this many runs.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Records/s of report graphs (stations, reports, revisions, evidence, responses and their
    relations) through BatchedWriter, beside AsyncSurreal.insert on the same records.

    Both paths write the same records into fresh databases of the same engine and are
    counted afterwards; the ratio is writer/raw (target: at least 0.9).
    """
    from convergence.responses.examples import example_revisions
    from convergence.store.bench import bench_store
    from convergence.store.surreal import StoreError

    regions = ("na-east", "na-west", "eu-west", "eu-east", "mena", "apac")
    revs = [r for i in range(reports) for r in example_revisions(i, region=regions[i % len(regions)])]
    try:
        r = asyncio.run(bench_store(revs, engine=engine.value, repeats=repeats, batch_size=batch_size))
    except (StoreError, RuntimeError, ValueError) as exc:
        fail(exc)
    if json_out:
        print_json(r)
        return
    console.print(
        f"store ({r['engine']}): {r['records']:,} records from {r['reports']} reports "
        f"({r['revisions']} revisions), batches of {r['batch_size']}, best of {r['repeats']}\n"
        f"project writer: {r['writer']['records_per_s']:,} records/s\n"
        f"raw SDK insert: {r['raw_sdk']['records_per_s']:,} records/s\n"
        f"writer/raw = {r['ratio']:.3f}"
    )
