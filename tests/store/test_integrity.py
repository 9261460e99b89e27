"""The integrity chain against the real embedded engine: an edited, deleted, reordered or
inserted record is caught through SurrealQL edits, and replays or a lagging head are not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from surrealdb import RecordID

from convergence.records import Label, Report, Verdict
from convergence.responses.examples import example_revisions
from convergence.store.graph import ReportGraph
from convergence.store.integrity import (
    GENESIS,
    Chain,
    ChainConflict,
    Verification,
    canonical,
    content_hash,
    link_hash,
    load_chain,
    verify,
)
from convergence.store.surreal import SurrealStore
from convergence.store.writer import BatchedWriter


def reports() -> list[Report]:
    """Three reports of four revisions: links 1-12 of the report chain, in this order."""
    return [r for seed in (1, 2, 3) for r in example_revisions(seed=seed)]


REVS = reports()


async def write(store: SurrealStore, revs: list[Report] = REVS, labels: list[Label] = ()) -> None:  # type: ignore[assignment]
    async with BatchedWriter(store, flush_interval_s=0.01) as writer:
        graph = ReportGraph(writer)
        await graph.load(store)
        for r in revs:
            graph.submit(r)
        for lb in labels:
            graph.submit_label(lb)


def after(edit: Callable[[SurrealStore], Awaitable[Any]] | None = None) -> Verification:
    """Write the reports, apply ``edit`` through SurrealQL, verify."""

    async def main() -> Verification:
        async with SurrealStore("mem://", "convergence", "test") as store:
            await write(store)
            if edit is not None:
                await edit(store)
            return await verify(store)

    return asyncio.run(main())


def sql(statement: str, **params: Any) -> Callable[[SurrealStore], Awaitable[Any]]:
    async def run(store: SurrealStore) -> Any:
        return await store.select("test edit", statement, params)

    return run


def rev(i: int) -> RecordID:
    """The record of link ``i`` (1-based)."""
    return RecordID("revision", REVS[i - 1].revision_id)


def test_an_untouched_store_verifies() -> None:
    v = after()
    assert v.ok and v.first is None and v.reports_checked == 3
    reports_chain = v.streams[0]
    assert (reports_chain.links, reports_chain.head_seq, reports_chain.head_lag) == (12, 12, 0)
    assert v.to_dict()["first_broken_link"] is None


def test_an_edited_revision_is_caught_at_its_link() -> None:
    v = after(sql("UPDATE $r SET score = 99.0", r=rev(6)))
    assert not v.ok and v.problems_total == 1
    first = v.first
    assert first is not None and first.seq == 6 and first.record == f"revision:{REVS[5].revision_id}"
    assert "edited after it was written" in first.what
    assert first.sentence().startswith(f"link 6 of the reports chain (revision:{REVS[5].revision_id})")


def test_an_edited_report_record_is_caught() -> None:
    newest = REVS[7]  # the second report's newest revision is link 8
    v = after(sql("UPDATE $r SET level = 'quiet', title = 'nothing to see'",
                  r=RecordID("report", newest.report_id)))
    assert not v.ok and v.first is not None and v.first.seq == 8
    assert v.first.record == f"report:{newest.report_id}"
    assert "does not match revision 4, which it copies: it was edited" in v.first.what


def test_a_report_record_rolled_back_to_an_older_revision_is_caught_and_a_replay_heals_it() -> None:
    async def main() -> tuple[Verification, Verification]:
        async with SurrealStore("mem://", "convergence", "test") as store:
            await write(store)
            older = (await store.select("r2", "SELECT * FROM ONLY $r", {"r": rev(2)}))[0]
            older.pop("id")
            older["integrity"] = {"revision_id": REVS[1].revision_id, "content": content_hash(older)}
            await store.upsert("report", REVS[0].report_id, older)
            rolled_back = await verify(store)
            await write(store)  # the pipeline replays its input
            return rolled_back, await verify(store)

    rolled_back, healed = asyncio.run(main())
    assert rolled_back.first is not None and rolled_back.first.seq == 4
    assert "it copies revision 2 but revision 4 is newer" in rolled_back.first.what
    assert healed.ok


def test_a_nested_edit_is_caught() -> None:
    v = after(sql("UPDATE $r SET evidence[0].text = 'all quiet at the port'", r=rev(3)))
    assert v.first is not None and v.first.seq == 3 and "edited" in v.first.what


def test_a_deleted_revision_leaves_a_named_gap() -> None:
    v = after(sql("DELETE $r", r=rev(5)))
    assert v.first is not None and v.first.seq == 5 and "link 5 of the chain are missing" in v.first.what


def test_deleting_the_last_revisions_is_caught_by_the_head() -> None:
    v = after(sql("DELETE $a; DELETE $b", a=rev(11), b=rev(12)))
    assert v.first is not None and v.first.seq == 11
    assert "links 11-12 at the end of the chain are missing" in v.first.what


def test_a_deleted_report_is_caught() -> None:
    rid = REVS[0].report_id
    v = after(sql("DELETE $r", r=RecordID("report", rid)))
    assert v.first is not None and v.first.seq == 4 and v.first.record == f"report:{rid}"
    assert "the report record is missing" in v.first.what


def test_a_deleted_whole_report_is_caught() -> None:
    rid = REVS[4].report_id  # links 5-8
    v = after(sql("DELETE revision WHERE report_id = $rid; DELETE $r", rid=rid, r=RecordID("report", rid)))
    assert v.first is not None and v.first.seq == 5 and "links 5-8 of the chain are missing" in v.first.what


def test_reordered_revisions_are_caught() -> None:
    swap = sql("UPDATE $a SET integrity.seq = 3; UPDATE $b SET integrity.seq = 2", a=rev(2), b=rev(3))
    v = after(swap)
    assert v.first is not None and v.first.seq == 2
    assert "does not follow link 1" in v.first.what or "integrity fields were altered" in v.first.what


def test_swapped_contents_are_caught() -> None:
    async def swap(store: SurrealStore) -> None:
        a = (await store.select("a", "SELECT * FROM ONLY $r", {"r": rev(9)}))[0]
        b = (await store.select("b", "SELECT * FROM ONLY $r", {"r": rev(10)}))[0]
        a.pop("id"), b.pop("id")
        await store.upsert("revision", REVS[8].revision_id, b)
        await store.upsert("revision", REVS[9].revision_id, a)

    v = after(swap)
    assert v.first is not None and v.first.seq == 9


def test_a_record_inserted_by_hand_is_named() -> None:
    fake = REVS[0].to_dict()
    v = after(sql("UPSERT $r CONTENT $d", r=RecordID("revision", "rpt-fake-r001"), d=fake))
    assert not v.ok and v.first is not None and v.first.seq is None
    assert v.first.record == "revision:rpt-fake-r001" and "not in the chain" in v.first.what


def test_a_deleted_head_is_caught() -> None:
    v = after(sql("DELETE chain:reports"))
    assert v.first is not None and "chain head record is missing" in v.first.what


def test_a_head_left_behind_by_a_stopped_writer_is_harmless() -> None:
    async def lag(store: SurrealStore) -> None:
        hash10 = (await store.select("h", "SELECT integrity.hash AS h FROM ONLY $r", {"r": rev(10)}))[0]["h"]
        await store.upsert("chain", "reports", {"stream": "reports", "seq": 10, "hash": hash10})

    v = after(lag)
    assert v.ok and v.streams[0].head_lag == 2


def test_two_writers_appending_at_once_show_as_a_fork() -> None:
    async def main() -> Verification:
        async with SurrealStore("mem://", "convergence", "test") as store:
            await write(store, REVS[:4])
            # two writers loaded the same head, then each appended its own revision
            writers = []
            for r in (REVS[4], REVS[8]):
                w = BatchedWriter(store, flush_interval_s=0.01)
                g = ReportGraph(w)
                await g.load(store)
                writers.append((w, g, r))
            for _, g, r in writers:
                g.submit(r)
            for w, _, _ in writers:
                await w.close()
            return await verify(store)

    v = asyncio.run(main())
    assert v.first is not None and v.first.seq == 5 and "two records claim link 5" in v.first.what


def test_an_edited_label_is_caught() -> None:
    rid = REVS[0].report_id
    labels = [Label(f"{rid}-l001", rid, Verdict.FALSE_ALARM, "ann", 1.0)]

    async def main() -> tuple[Verification, Verification]:
        async with SurrealStore("mem://", "convergence", "test") as store:
            await write(store, REVS[:4], labels)
            ok = await verify(store)
            await store.select("edit", "UPDATE $r SET verdict = 'genuine'",
                               {"r": RecordID("label", f"{rid}-l001")})
            return ok, await verify(store)

    ok, broken = asyncio.run(main())
    assert ok.ok and ok.streams[1].links == 1
    assert broken.first is not None and broken.first.stream == "labels" and broken.first.seq == 1


def test_load_chain_resumes_from_the_furthest_of_head_and_records() -> None:
    async def main() -> tuple[Chain, Chain]:
        async with SurrealStore("mem://", "convergence", "test") as store:
            await write(store, REVS[:4])
            resumed = await load_chain(store, "reports")
            await store.upsert("chain", "reports", {"stream": "reports", "seq": 9, "hash": "f" * 64})
            return resumed, await load_chain(store, "reports")

    resumed, ahead = asyncio.run(main())
    assert resumed.seq == 4 and len(resumed) == 4 and REVS[0].revision_id in resumed
    assert (ahead.seq, ahead.head) == (9, "f" * 64)


def test_chain_links() -> None:
    c = Chain("labels")
    a = c.append("x", {"v": 1})
    assert a is not None and a.prev == GENESIS and a.seq == 1
    assert a.hash == link_hash("labels", 1, "x", GENESIS, content_hash({"v": 1}))
    assert c.append("x", {"v": 1}) is None and c.seq == 1
    with pytest.raises(ChainConflict, match="already holds x with different content"):
        c.append("x", {"v": 2})
    with pytest.raises(ValueError, match="unknown chain stream"):
        Chain("alerts")
    # what the store gives back hashes like what was written
    assert canonical({"b": 1.0, "a": [1, None], "c": None}) == canonical({"a": [1, None], "b": 1})
    assert content_hash({"x": 1, "integrity": {"seq": 3}}) == content_hash({"x": 1})
