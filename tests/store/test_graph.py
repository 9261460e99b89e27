"""Reports as a graph in the real embedded SurrealDB: what is written, the documented graph
queries, replays, listing filters, labels and reading without creating anything."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID

from convergence.records import EvidenceSample, Label, Level, Report, Verdict
from convergence.responses.examples import example_revisions
from convergence.store.graph import (
    Q_CO_OCCURRING,
    Q_REPORTS_INVOLVING,
    ReportGraph,
    clean,
    co_occurring_stations,
    get_labels,
    get_report,
    get_revisions,
    label_stats,
    labelled_reports,
    labelled_rows,
    list_reports,
    next_label_id,
    report_from_doc,
    reports_involving,
    require_existing,
)
from convergence.store.integrity import verify
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter

DAY = 86400.0


def in_store(body: Callable[[SurrealStore], Awaitable[Any]], url: str = "mem://") -> Any:
    async def main() -> Any:
        async with SurrealStore(url, "convergence", "test") as store:
            return await body(store)

    return asyncio.run(main())


async def write(store: SurrealStore, reports: Sequence[Report],
                labels: Sequence[Label] = ()) -> tuple[list[str], ReportGraph]:
    async with BatchedWriter(store, flush_interval_s=0.01) as writer:
        graph = ReportGraph(writer, clock=lambda: 1.0)
        await graph.load(store)
        outcomes = [graph.submit(r) for r in reports]
        for lb in labels:
            graph.submit_label(lb)
    return outcomes, graph


def episodes() -> list[list[Report]]:
    """Three episodes a day apart; the second never gets past warning."""
    base = 1_800_000_000.0
    return [example_revisions(seed=0, region="mena", start_s=base),
            example_revisions(seed=1, region="mena", start_s=base + DAY)[:2],
            example_revisions(seed=2, region="apac", start_s=base + 2 * DAY)]


def test_a_revision_becomes_nodes_and_relations() -> None:
    revs = example_revisions(seed=3)

    async def body(store: SurrealStore) -> dict[str, Any]:
        outcomes, _ = await write(store, revs)
        assert outcomes == ["written"] * 4
        counts = {t: await store.count(t) for t in ("station", "report", "revision", "event", "response",
                                                     "involves", "cites", "triggered", "of", "chain")}
        edge = await store.get("involves", f"{revs[-1].report_id}|{revs[-1].contributions[0].station_id}")
        traversal = await store.select("t", "SELECT ->involves->station AS s, ->triggered->response AS r, "
                                            "<-of<-revision AS v FROM ONLY $rid",
                                       {"rid": RecordID("report", revs[0].report_id)})
        return {"counts": counts, "edge": edge, "traversal": traversal[0]}

    out = in_store(body)
    final = revs[-1]
    events = {(e.station_id, e.time_s, e.text) for r in revs for e in r.evidence}
    responses = {x.response_id for r in revs for x in r.responses}
    assert out["counts"] == {
        "station": len(final.contributions), "report": 1, "revision": 4, "event": len(events),
        "response": len(responses), "involves": len(final.contributions), "cites": len(events),
        "triggered": len(responses), "of": 4, "chain": 1}
    assert out["edge"]["share"] == final.contributions[0].share and out["edge"]["revision"] == 4
    assert len(out["traversal"]["s"]) == len(final.contributions)
    assert len(out["traversal"]["r"]) == len(responses) and len(out["traversal"]["v"]) == 4


def test_reports_involving_a_station_in_the_last_day() -> None:
    eps = episodes()
    shared = eps[0][-1].contributions[0].station_id  # news-mena-0xx, in episodes 0 and 1?
    now = eps[2][-1].time_s + 60  # a minute after the last episode ended

    async def body(store: SurrealStore) -> tuple[list[str], list[str], list[str]]:
        await write(store, [r for ep in eps for r in ep])
        last_day = await reports_involving(store, shared, since_s=now - DAY)
        all_time = await reports_involving(store, shared, since_s=0.0)
        apac = eps[2][-1].contributions[0].station_id
        recent_apac = await reports_involving(store, apac, since_s=now - DAY)
        return [r.report_id for r in last_day], [r.report_id for r in all_time], \
            [r.report_id for r in recent_apac]

    last_day, all_time, recent_apac = in_store(body)
    involving = [ep[-1].report_id for ep in eps
                 if shared in {c.station_id for c in ep[-1].contributions}]
    assert sorted(all_time) == sorted(involving) and eps[0][-1].report_id in all_time
    assert last_day == []  # the mena episodes ended more than a day before `now`
    assert recent_apac == [eps[2][-1].report_id]
    assert "$station<-involves<-report" in Q_REPORTS_INVOLVING and "$since" in Q_REPORTS_INVOLVING


def test_stations_that_co_occur_most_in_converged_reports() -> None:
    eps = episodes() + [example_revisions(seed=0, region="mena", start_s=1_800_000_000.0 + 3 * DAY)]

    async def body(store: SurrealStore) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
        await write(store, [r for ep in eps for r in ep])
        return await co_occurring_stations(store, limit=500), \
            await co_occurring_stations(store, level=Level.WARNING, limit=500)

    converged, warning = in_store(body)
    # worked out independently: pairs of stations per report that reached converged
    expect: Counter[tuple[str, str]] = Counter()
    for ep in eps:
        if ep[-1].peak_level == Level.CONVERGED:
            expect.update(itertools.combinations(sorted({c.station_id for c in ep[-1].contributions}), 2))
    assert {(a, b): n for a, b, n in converged} == dict(expect)
    assert [n for _, _, n in converged] == sorted((n for _, _, n in converged), reverse=True)
    assert converged[0][2] == 2  # the two seed-0 mena episodes share all their stations
    warning_only = eps[1][-1]
    assert {(a, b) for a, b, _ in warning} == set(itertools.combinations(
        sorted({c.station_id for c in warning_only.contributions}), 2))
    assert "$level" in Q_CO_OCCURRING and "array::combine" in Q_CO_OCCURRING


def test_a_replay_is_skipped_and_a_changed_replay_becomes_a_dead_letter() -> None:
    revs = example_revisions(seed=6)

    async def body(store: SurrealStore) -> tuple[list[str], list[str], dict[str, int], Report | None,
                                                 list[dict[str, Any]]]:
        first, _ = await write(store, revs)
        altered = dataclasses.replace(revs[1], score=1.0)
        second, graph = await write(store, [*revs, altered])
        stored = await get_report(store, revs[1].report_id, revision=2)
        dls = await store.list("dead_letter", order_by="received_at_s")
        return first, second, graph.stats(), stored, dls

    first, second, stats, stored, dls = in_store(body)
    assert first == ["written"] * 4
    assert second == ["replayed"] * 4 + ["conflict"]
    assert stats == {"written": 0, "replayed": 4, "conflicts": 1, "labels": 0}
    assert stored == revs[1]  # history is not rewritten
    assert len(dls) == 1 and dls[0]["stage"] == "report-store"
    assert "different content" in dls[0]["reason"] and dls[0]["record"] == f"revision:{revs[1].revision_id}"


def test_revisions_arriving_out_of_order_keep_the_newest_as_the_report() -> None:
    revs = example_revisions(seed=7)

    async def body(store: SurrealStore) -> tuple[Report | None, list[Report], bool]:
        await write(store, [revs[0], revs[2], revs[1]])
        return await get_report(store, revs[0].report_id), await get_revisions(store, revs[0].report_id), \
            (await verify(store)).ok

    newest, all_revs, ok = in_store(body)
    assert newest == revs[2] and all_revs == revs[:3] and ok


def test_listing_filters() -> None:
    eps = episodes()
    t0 = eps[0][0].time_s

    async def body(store: SurrealStore) -> dict[str, list[str]]:
        await write(store, [r for ep in eps for r in ep])

        async def ids(**kw: Any) -> list[str]:
            return [r.record_id for r in await list_reports(store, **kw)]

        station = eps[1][-1].contributions[-1].station_id
        return {"all": await ids(), "mena": await ids(region="mena"),
                "converged": await ids(level=Level.CONVERGED), "warning+": await ids(level=Level.WARNING),
                "since": await ids(since_s=t0 + DAY - 60), "until": await ids(until_s=t0 + DAY + 60),
                "window": await ids(since_s=t0 + DAY - 60, until_s=t0 + DAY + 60),
                "station": await ids(station=station), "one": await ids(limit=1)}

    got = in_store(body)
    r0, r1, r2 = (ep[-1].report_id for ep in eps)
    assert got["all"] == [r2, r1, r0]  # newest first
    assert got["mena"] == [r1, r0] and got["converged"] == [r2, r0] and got["warning+"] == [r2, r1, r0]
    assert got["since"] == [r2, r1] and got["until"] == [r1, r0] and got["window"] == [r1]
    assert r1 in got["station"] and got["one"] == [r2]


def test_labels_are_chained_counted_and_become_training_rows() -> None:
    eps = episodes()
    r0, r1, r2 = (ep[-1].report_id for ep in eps)

    async def body(store: SurrealStore) -> tuple[Any, ...]:
        labels = [Label(f"{r0}-l001", r0, Verdict.FALSE_ALARM, "ann", 10.0, "", 4),
                  Label(f"{r0}-l002", r0, Verdict.GENUINE, "bo", 20.0, "second look", 4),
                  Label(f"{r1}-l001", r1, Verdict.FALSE_ALARM, "ann", 30.0),
                  Label(f"{r2}-l001", r2, Verdict.UNSURE, "ann", 40.0)]
        await write(store, [r for ep in eps for r in ep], labels)
        return (await get_labels(store), await get_labels(store, [r0]), await next_label_id(store, r0),
                await labelled_reports(store), await labelled_rows(store), await verify(store))

    every, of_r0, next_id, labelled, (rows, counts), v = in_store(body)
    assert [lb.label_id for lb in every] == [f"{r0}-l001", f"{r0}-l002", f"{r1}-l001", f"{r2}-l001"]
    assert [lb.verdict for lb in of_r0] == [Verdict.FALSE_ALARM, Verdict.GENUINE]
    assert next_id == f"{r0}-l003" and v.ok and v.streams[1].links == 4
    stats = label_stats(labelled)
    assert stats["overall"] == {"labelled": 3, "genuine": 1, "false_alarm": 1, "unsure": 1, "precision": 0.5}
    assert stats["by_level"]["converged"]["precision"] == 1.0
    assert stats["by_level"]["warning"]["precision"] == 0.0
    assert stats["by_region"]["apac"] == {"labelled": 1, "genuine": 0, "false_alarm": 0, "unsure": 1,
                                          "precision": None}
    # genuine r0: its warning and converged revisions; false-alarm r1: its warning revision
    assert [(r.report_id, r.revision, r.genuine) for r in rows] == [(r0, 2, True), (r0, 3, True),
                                                                     (r1, 2, False)]
    assert rows[1].features == eps[0][2].features
    assert counts == {"labelled_reports": 3, "unsure": 1, "reports_used": 2, "rows": 3,
                      "without_features": 0, "missing_reports": 0}


def test_stored_text_is_bounded_and_free_of_nul() -> None:
    rep = example_revisions(seed=8)[0]
    long_text = "breaking\x00news " + "x" * 5000
    ev = EvidenceSample(rep.contributions[0].station_id, rep.time_s, "politics", 1.0, text=long_text)
    rep = dataclasses.replace(rep, evidence=(ev,))

    async def body(store: SurrealStore) -> Report | None:
        await write(store, [rep])
        return await get_report(store, rep.report_id)

    back = in_store(body)
    assert back is not None
    text = back.evidence[0].text or ""
    assert "\x00" not in text and text.startswith("breaking\ufffdnews") and len(text) == 2000
    assert clean({"a": None, "b": ("x", None), "c\x00": 1}) == {"b": ["x", None], "c\ufffd": 1}


def test_an_older_flat_report_still_reads() -> None:
    legacy = {"report_id": "rpt-old", "alert_id": "alt-old", "episode_tick": 100, "time_s": 101.0,
              "level": "converged", "score": 88.0, "title": "CONVERGED: 2 stations", "summary": "s",
              "regions": ["eu"], "source_kinds": ["osint_news", "sensor"], "method": "rule-based fusion",
              "nodes": [{"station_id": "news-eu-1", "source_kind": "osint_news", "region": "eu",
                         "share": 0.6, "peak_evidence": {"burst": 9.0}, "correlated": False,
                         "by_type": {"burst": 0.6}}],
              "responses": [{"response_id": "rsp-1", "action": "burst_mode", "reason": "r", "level": "watch",
                             "tick": 100, "time_s": 101.0, "stations": ["news-eu-1"],
                             "command": {"target": {"type": "station", "value": "news-eu-1"},
                                         "params": {"interval_s": 0.25}, "issued_at_s": 101.0,
                                         "expires_at_s": 221.0}}]}

    async def body(store: SurrealStore) -> tuple[Report | None, list[Any]]:
        await store.upsert("report", "rpt-old", legacy)
        await store.upsert("report", "rpt-junk", {"hello": 1})
        return await get_report(store, "rpt-old"), await list_reports(store)

    rep, rows = in_store(body)
    assert rep is not None and rep.region == "eu" and rep.contributions[0].share == 0.6
    assert rep.responses[0].target == "station:news-eu-1" and rep.responses[0].expires_at_s == 221.0
    by_id = {r.record_id: r for r in rows}
    assert by_id["rpt-old"].report is not None
    assert by_id["rpt-junk"].report is None and "not a report" in (by_id["rpt-junk"].error or "")
    with pytest.raises(ValueError, match="not a report this version can read"):
        report_from_doc({"id": "x"})


def test_reading_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "db"
    with pytest.raises(StoreError, match=f"no database at {missing}"):
        require_existing(f"surrealkv://{missing}")
    assert not (tmp_path / "nowhere").exists()
    require_existing("mem://")  # nothing to create


def test_the_chain_resumes_after_the_store_is_reopened(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    first, second = example_revisions(seed=1), example_revisions(seed=2)

    in_store(lambda s: write(s, first), url)

    async def again(store: SurrealStore) -> tuple[list[str], Any]:
        outcomes, _ = await write(store, [*first, *second])
        return outcomes, await verify(store)

    outcomes, v = in_store(again, url)
    assert outcomes == ["replayed"] * 4 + ["written"] * 4
    assert v.ok and v.streams[0].links == 8 and v.streams[0].head_seq == 8


def test_submitting_before_loading_is_a_clear_error() -> None:
    async def body(store: SurrealStore) -> None:
        graph = ReportGraph(BatchedWriter(store))
        with pytest.raises(RuntimeError, match=r"await graph\.load"):
            graph.submit(example_revisions(seed=1)[0])

    in_store(body)


def test_a_writer_without_room_refuses_a_whole_revision_and_takes_no_link() -> None:
    from convergence.store.writer import StoreBackpressure

    revs = example_revisions(seed=4)

    async def body(store: SurrealStore) -> tuple[int, int, bool]:
        writer = BatchedWriter(store, batch_size=10, max_pending=80, flush_interval_s=0.01)
        graph = ReportGraph(writer)
        await graph.load(store)
        assert graph.submit(revs[0]) == "written"
        queued = writer.pending
        with pytest.raises(StoreBackpressure, match=f"revision {revs[1].revision_id} needs up to"):
            graph.submit(revs[1])
        assert writer.pending == queued  # nothing of it was queued
        await writer.flush()
        assert graph.submit(revs[1]) == "written"  # once there is room, it goes through whole
        await writer.close()
        v = await verify(store)
        return queued, v.streams[0].links, v.ok

    queued, links, ok = in_store(body)
    assert queued > 0 and links == 2 and ok
