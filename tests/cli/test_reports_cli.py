"""``convergence reports ...`` as a person uses it, on a real surrealkv database."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.records import Label, Report, Verdict
from convergence.responses.examples import example_revisions
from convergence.store.graph import ReportGraph, get_labels
from convergence.store.surreal import SurrealStore
from convergence.store.writer import BatchedWriter

runner = CliRunner()
DAY = 86400.0


def episodes(now: float) -> list[list[Report]]:
    """Three episodes: mena two days ago, mena (warning only) five hours ago, apac an hour ago."""
    return [example_revisions(seed=0, region="mena", start_s=now - 2 * DAY),
            example_revisions(seed=1, region="mena", start_s=now - 5 * 3600)[:2],
            example_revisions(seed=2, region="apac", start_s=now - 3600)]


def store_do(db: str, fn: Any) -> Any:
    async def main() -> Any:
        async with SurrealStore(db, "convergence", "main") as store:
            return await fn(store)

    return asyncio.run(main())


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[list[Report]]]:
    db = f"surrealkv://{tmp_path_factory.mktemp('reports') / 'db'}"
    eps = episodes(time.time())

    async def write(store: SurrealStore) -> None:
        async with BatchedWriter(store) as writer:
            graph = ReportGraph(writer)
            await graph.load(store)
            for r in (r for ep in eps for r in ep):
                graph.submit(r)

    store_do(db, write)
    return db, eps


@pytest.fixture
def copy(stored: tuple[str, list[list[Report]]], tmp_path: Path) -> tuple[str, list[list[Report]]]:
    """A private copy of the stored database, for tests that change it."""
    import shutil

    src = Path(stored[0].split("://", 1)[1])
    shutil.copytree(src, tmp_path / "db")
    return f"surrealkv://{tmp_path / 'db'}", stored[1]


def cli(*args: str) -> Any:
    return runner.invoke(app, ["reports", *args])


def ids(result: Any) -> list[str]:
    return [r["report_id"] for r in json.loads(result.stdout)]


# -- list ---------------------------------------------------------------------------------


def test_list_shows_reports_newest_first_with_an_iso_time(stored: tuple[str, list[list[Report]]]) -> None:
    db, eps = stored
    r = cli("list", "--db", db)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("began (UTC)") and "report" in lines[0] and "peak" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == [ep[-1].report_id for ep in reversed(eps)]
    first = lines[1].split()
    assert first[0].endswith("Z") and first[0][:19] == time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(eps[2][0].time_s))
    assert first[2:4] == ["apac", "converged"]


def test_list_filters(stored: tuple[str, list[list[Report]]]) -> None:
    db, eps = stored
    r0, r1, r2 = (ep[-1].report_id for ep in eps)
    assert ids(cli("list", "--db", db, "--json", "--region", "mena")) == [r1, r0]
    assert ids(cli("list", "--db", db, "--json", "--level", "converged")) == [r2, r0]
    assert ids(cli("list", "--db", db, "--json", "--level", "WARNING")) == [r2, r1, r0]
    assert ids(cli("list", "--db", db, "--json", "--since", "-1d")) == [r2, r1]
    assert ids(cli("list", "--db", db, "--json", "--since", "-1d", "--until", "-2h")) == [r1]
    station = eps[2][-1].contributions[0].station_id
    assert ids(cli("list", "--db", db, "--json", "--station", station)) == [r2]
    assert ids(cli("list", "--db", db, "--json", "--limit", "1")) == [r2]
    none = cli("list", "--db", db, "--region", "antarctica")
    assert none.exit_code == 0 and none.stdout.strip() == "no reports match"


def test_list_json_fields(stored: tuple[str, list[list[Report]]]) -> None:
    db, eps = stored
    row = json.loads(cli("list", "--db", db, "--json", "--region", "apac").stdout)[0]
    final = eps[2][-1]
    assert row["report_id"] == final.report_id and row["time"].endswith("Z")
    assert (row["level"], row["peak_level"], row["revision"], row["status"]) == ("quiet", "converged", 4,
                                                                                 "closed")
    assert row["stations"] == len(final.contributions) and row["verdict"] is None
    assert row["time_s"] == final.outcome.started_s  # type: ignore[union-attr]
    # an open report began at its first level change, not when it was last revised
    open_row = json.loads(cli("list", "--db", db, "--json", "--region", "mena", "--limit", "1").stdout)[0]
    assert open_row["status"] == "open" and open_row["time_s"] == eps[1][-1].timeline[0].time_s
    assert open_row["updated"] == eps[1][-1].time_iso != open_row["time"]


@pytest.mark.parametrize("args", [["list"], ["show", "rpt-x"], ["export", "--since", "-1d"], ["verify"],
                                  ["stats"], ["label", "rpt-x", "genuine"]])
def test_a_missing_database_is_an_error_naming_it_and_is_not_created(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "no" / "db"
    r = cli(*args, "--db", f"surrealkv://{missing}")
    assert r.exit_code == 1 and f"error: no database at {missing}" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "no").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--since", "yesterday"], "--since: 'yesterday' is neither unix seconds nor ISO-8601"),
    (["list", "--until", "-3y"], "--until: '-3y' is not a time: use ISO 8601"),
    (["list", "--since", "-1h", "--until", "-2h"], "is before --since"),
    (["export", "--since", "-1x"], "--since: '-1x' is not a time"),
])
def test_bad_times_are_one_clear_error(stored: tuple[str, list[list[Report]]], args: list[str],
                                       message: str) -> None:
    r = cli(*args, "--db", stored[0])
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- show ---------------------------------------------------------------------------------


def test_show_formats(stored: tuple[str, list[list[Report]]]) -> None:
    db, eps = stored
    final = eps[0][-1]
    text = cli("show", final.report_id, "--db", db)
    assert text.exit_code == 0 and text.stdout.startswith("CONVERGED — mena — ")
    assert "WHAT MOVED" in text.stdout and "share" in text.stdout
    md = cli("show", final.report_id, "--db", db, "--format", "md")
    assert md.stdout.startswith("# CONVERGED — mena") and "## What the sources said" in md.stdout
    assert "| 4 (this one) |" in md.stdout  # the revision history comes from the store
    as_json = json.loads(cli("show", final.report_id, "--db", db, "--format", "json").stdout)
    assert Report.from_dict(as_json) == final and as_json["revisions"][0]["revision"] == 1
    legacy_flag = cli("show", final.report_id, "--db", db, "--json")
    assert json.loads(legacy_flag.stdout)["report_id"] == final.report_id


def test_show_an_earlier_revision(stored: tuple[str, list[list[Report]]]) -> None:
    db, eps = stored
    rev2 = eps[0][1]
    r = cli("show", rev2.report_id, "--db", db, "--revision", "2", "-f", "json")
    assert Report.from_dict(json.loads(r.stdout)) == rev2
    missing = cli("show", rev2.report_id, "--db", db, "--revision", "9")
    assert missing.exit_code == 1
    assert f"report '{rev2.report_id}' has no revision 9 (it has revision(s) 1, 2, 3, 4)" in missing.stderr


def test_show_html_writes_a_standalone_file(stored: tuple[str, list[list[Report]]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db, eps = stored
    rid = eps[2][-1].report_id
    monkeypatch.chdir(tmp_path)
    r = cli("show", rid, "--db", db, "--format", "html")
    assert r.exit_code == 0 and r.stdout == ""
    page = (tmp_path / f"{rid}.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and f"wrote report {rid}" in r.stderr
    out = tmp_path / "brief.md"
    assert cli("show", rid, "--db", db, "-f", "md", "--out", str(out)).exit_code == 0
    assert out.read_text().startswith("# CONVERGED — apac")
    bad = cli("show", rid, "--db", db, "--out", str(tmp_path / "nodir" / "x.txt"))
    assert bad.exit_code == 1 and "cannot write" in bad.stderr


@pytest.mark.parametrize(("rid", "code", "message"), [
    ("rpt-nope", 1, "no report 'rpt-nope' in this database; list them with `convergence reports list`"),
    ("", 2, "the report id is empty"),
    ("rpt\x1b[31m", 2, "is not a report id"),
])
def test_show_unknown_or_bad_ids(stored: tuple[str, list[list[Report]]], rid: str, code: int,
                                 message: str) -> None:
    r = cli("show", rid, "--db", stored[0])
    assert r.exit_code == code and message in r.stderr and "Traceback" not in r.output


# -- export -------------------------------------------------------------------------------


def test_export_a_window(stored: tuple[str, list[list[Report]]], tmp_path: Path) -> None:
    db, eps = stored
    md = cli("export", "--since", "-1d", "--db", db)
    assert md.exit_code == 0 and md.stdout.count("\n---\n") == 1
    assert md.stdout.startswith("# CONVERGED — apac") and "# WARNING — mena" in md.stdout
    assert "exported 2 report(s)" in md.stderr
    headline = next(e.text for e in eps[2][-1].evidence if e.text)
    assert f"“{headline}”" in md.stdout and "## What the sources said" in md.stdout  # the full reports
    as_json = json.loads(cli("export", "--since", "-3d", "--format", "json", "--db", db).stdout)
    assert [d["report_id"] for d in as_json] == [ep[-1].report_id for ep in reversed(eps)]
    folder = tmp_path / "out"
    folder.mkdir()
    r = cli("export", "--since", "-3d", "--until", "-3h", "-f", "md", "--out", str(folder), "--db", db)
    assert r.exit_code == 0 and sorted(p.name for p in folder.iterdir()) == sorted(
        f"{ep[-1].report_id}.md" for ep in eps[:2])
    empty = cli("export", "--since", "-1m", "-f", "json", "--db", db)
    assert empty.exit_code == 0 and json.loads(empty.stdout) == [] and "exported 0 report(s)" in empty.stderr


# -- verify ------------------------------------------------------------------------------


def test_verify_an_intact_database(stored: tuple[str, list[list[Report]]]) -> None:
    r = cli("verify", "--db", stored[0])
    assert r.exit_code == 0 and r.stdout.startswith("intact: 10 report revision(s) of 3 report(s)")
    doc = json.loads(cli("verify", "--db", stored[0], "--json").stdout)
    assert doc["ok"] is True and doc["streams"]["reports"]["head"]["seq"] == 10


def test_verify_catches_a_report_edited_through_surrealql(copy: tuple[str, list[list[Report]]]) -> None:
    db, eps = copy
    target = eps[1][0]  # link 5: the second episode's first revision
    store_do(db, lambda s: s.select("edit", "UPDATE $r SET score = 12.0, summary = 'nothing happened'",
                                    {"r": RecordID("revision", target.revision_id)}))
    r = cli("verify", "--db", db)
    assert r.exit_code == 1
    assert (f"error: integrity broken at link 5 of the reports chain (revision:{target.revision_id}): "
            "its content does not match the hash written with it") in r.stderr
    doc = json.loads(cli("verify", "--db", db, "--json").stdout)
    assert doc["ok"] is False and doc["first_broken_link"]["link"] == 5


# -- label and stats ---------------------------------------------------------------------


def test_label_stores_the_verdict_with_the_report(copy: tuple[str, list[list[Report]]]) -> None:
    db, eps = copy
    r0, r1, r2 = (ep[-1].report_id for ep in eps)
    first = cli("label", r0, "genuine", "--note", "port authority confirmed", "--by", "ann", "--db", db)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"labelled {r0} genuine (label {r0}-l001 by ann at ")
    assert cli("label", r1, "false-alarm", "--by", "bo", "--db", db).exit_code == 0
    assert cli("label", r2, "UNSURE", "--db", db, "--json").exit_code == 0
    labels = store_do(db, get_labels)
    assert [(lb.report_id, lb.verdict, lb.by, lb.revision) for lb in labels] == [
        (r0, Verdict.GENUINE, "ann", 4), (r1, Verdict.FALSE_ALARM, "bo", 2), (r2, Verdict.UNSURE,
                                                                               labels[2].by, 4)]
    assert labels[0].note == "port authority confirmed" and abs(labels[0].at_s - time.time()) < 120
    rows = json.loads(cli("list", "--db", db, "--json").stdout)
    listed = {row["report_id"]: row["verdict"] for row in rows}
    assert listed == {r0: "genuine", r1: "false-alarm", r2: "unsure"}
    shown = cli("show", r0, "--db", db, "-f", "md").stdout
    assert "**genuine** by ann" in shown and "port authority confirmed" in shown
    stats = json.loads(cli("stats", "--db", db, "--json").stdout)
    assert stats["overall"] == {"labelled": 3, "genuine": 1, "false_alarm": 1, "unsure": 1, "precision": 0.5}
    assert stats["by_level"]["converged"]["precision"] == 1.0
    assert stats["by_region"]["mena"]["precision"] == 0.5
    text = cli("stats", "--db", db).stdout
    assert text.startswith("3 labelled report(s): precision 50%") and "converged / apac" in text
    assert cli("verify", "--db", db).exit_code == 0  # labels are chained too


def test_label_mistakes(copy: tuple[str, list[list[Report]]]) -> None:
    db, eps = copy
    rid = eps[0][-1].report_id
    unknown = cli("label", "rpt-nope", "genuine", "--db", db)
    assert unknown.exit_code == 1 and "no report 'rpt-nope'" in unknown.stderr
    bad = cli("label", rid, "maybe", "--db", db)
    assert bad.exit_code == 2
    long = cli("label", rid, "genuine", "--note", "x" * 1001, "--db", db)
    assert long.exit_code == 2 and "--note is 1001 characters" in long.stderr
    assert store_do(db, get_labels) == []


def test_stats_without_labels(stored: tuple[str, list[list[Report]]]) -> None:
    r = cli("stats", "--db", stored[0])
    assert r.exit_code == 0 and r.stdout.startswith("no labelled reports yet")


def test_labels_from_the_store_read_back_as_records(copy: tuple[str, list[list[Report]]]) -> None:
    db, eps = copy
    rid = eps[0][-1].report_id
    cli("label", rid, "false-alarm", "--db", db, "--by", "ann")
    (lb,) = store_do(db, get_labels)
    assert isinstance(lb, Label) and lb.label_id == f"{rid}-l001"
