"""The store benchmark writes the very same records both ways and counts them afterwards."""

from __future__ import annotations

import asyncio

import pytest

from convergence.responses.examples import example_revisions
from convergence.store.bench import bench_store, graph_records
from convergence.store.graph import report_records
from convergence.store.integrity import Chain


def test_graph_records_are_what_the_report_graph_writes_each_key_once() -> None:
    revs = example_revisions(seed=1) + example_revisions(seed=2)
    recs = graph_records(revs)
    chain = Chain("reports")
    links = [(r, chain.append(r.revision_id, {"r": r.revision_id})) for r in revs]
    every = [(t, i) for r, link in links for t, i, _ in report_records(r, link, newest=True)]
    assert set(recs) == set(every) | {("chain", "reports")}
    assert recs[("chain", "reports")]["seq"] == 8
    assert recs[("report", revs[0].report_id)]["revision"] == 4  # the newest revision wins
    assert graph_records(revs + revs) == recs  # replays add nothing


@pytest.mark.parametrize("engine", ["mem", "surrealkv"])
def test_both_paths_store_every_record(engine: str) -> None:
    revs = [r for seed in range(3) for r in example_revisions(seed)]
    out = asyncio.run(bench_store(revs, engine=engine, repeats=1, batch_size=100))
    n = len(graph_records(revs))
    assert out["records"] == n == out["writer"]["records"] == out["raw_sdk"]["records"]
    assert out["reports"] == 3 and out["revisions"] == 12 and sum(out["by_table"].values()) == n
    assert out["writer"]["records_per_s"] > 0 and out["raw_sdk"]["records_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["raw_sdk"]["seconds"] / out["writer"]["seconds"], rel=1e-3)


def test_bad_arguments_are_refused() -> None:
    revs = example_revisions(seed=1)
    with pytest.raises(ValueError, match="engine must be mem or surrealkv"):
        asyncio.run(bench_store(revs, engine="ws"))
    with pytest.raises(ValueError, match="no reports"):
        asyncio.run(bench_store([]))
