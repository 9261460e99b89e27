"""``convergence reports ...``: read, export, verify and label the synthesized reports.

Read commands (``list``, ``show``, ``export``, ``verify``, ``stats``) never create a
database: a ``surrealkv://`` path that does not exist is an error naming it.
Times (``--since``, ``--until``) take ISO 8601 (``2026-03-14T03:00:00Z``), unix seconds,
``now`` or a relative ``-2h`` / ``-1d`` / ``-30m`` / ``-1w``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from convergence.cli.common import fail, plural, print_json, settings
from convergence.records import MAX_LABEL_NOTE, Label, Level, Report, Verdict, iso_time
from convergence.responses.render import Format, clip_words, render, safe_text
from convergence.timeparse import parse_when

if TYPE_CHECKING:  # the store (and its engine) load only when a command runs
    from convergence.store.surreal import SurrealStore

T = TypeVar("T")

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Read, export, verify and label the synthesized convergence reports.",
    no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option(
    help="SurrealDB URL (default: the embedded file; env CONVERGENCE_DB).")]
SinceOption = Annotated[str | None, typer.Option(
    help="Only reports active at or after this time: ISO 8601, unix seconds, now, or -2h / -1d.")]
UntilOption = Annotated[str | None, typer.Option(
    help="Only reports that began at or before this time (same forms as --since).")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


class ExportFormat(StrEnum):
    MD = "md"
    JSON = "json"


def _time(option: str, raw: str | None, now_s: float) -> float | None:
    if raw is None:
        return None
    try:
        return parse_when(raw, now_s)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)


def _window(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    now = time.time()
    lo, hi = _time("--since", since, now), _time("--until", until, now)
    if lo is not None and hi is not None and hi < lo:
        fail(f"--until ({iso_time(hi)}) is before --since ({iso_time(lo)}); swap them", 2)
    return lo, hi


def _read(db: str | None, fn: Callable[[SurrealStore], Awaitable[T]]) -> T:
    """``fn(store)`` on the configured database, which must exist; a store failure ends the
    command with one clear line."""
    from convergence.store.graph import require_existing
    from convergence.store.surreal import StoreError, SurrealStore

    s = settings(db=db)

    async def go() -> T:
        async with SurrealStore.from_settings(s) as store:
            return await fn(store)

    try:
        require_existing(s.db_url)
        return asyncio.run(go())
    except StoreError as exc:
        fail(exc)


def _check_id(report_id: str) -> str:
    rid = report_id.strip()
    if not rid:
        fail("the report id is empty; list them with `convergence reports list`", 2)
    if len(rid) > 200 or any(ord(c) < 32 for c in rid):
        fail(f"{safe_text(report_id, 60)!r} is not a report id; list them with "
             "`convergence reports list`", 2)
    return rid


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc.strerror or exc}; check the directory exists and is writable")


# -- list ---------------------------------------------------------------------------------


def _row_dict(r: Report, started: float, verdict: Label | None) -> dict[str, Any]:
    return {"report_id": r.report_id, "time": iso_time(started), "time_s": started,
            "updated": r.time_iso, "region": r.region, "level": r.level.value,
            "peak_level": r.peak_level.value, "score": r.score, "peak_score": r.peak_score,
            "revision": r.revision, "status": r.status, "stations": len(r.contributions),
            "source_kinds": list(r.source_kinds), "title": r.title,
            "verdict": verdict.verdict.value if verdict else None}


@app.command("list")
def list_reports(
    region: Annotated[str | None, typer.Option(help="Only this region, e.g. mena.")] = None,
    level: Annotated[Level | None, typer.Option(
        help="Only reports that reached at least this level.", case_sensitive=False)] = None,
    station: Annotated[str | None, typer.Option(help="Only reports involving this station id.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 50,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List reports, newest first, with when each episode began (ISO 8601 UTC)."""
    from convergence.store.graph import get_labels, list_reports, newest_labels

    lo, hi = _window(since, until)

    async def go(store: SurrealStore) -> tuple[list[Any], dict[str, Label]]:
        rows = await list_reports(store, region=region, level=level, station=station,
                                  since_s=lo, until_s=hi, limit=limit)
        ids = [r.report.report_id for r in rows if r.report]
        return rows, newest_labels(await get_labels(store, ids)) if ids else {}

    rows, verdicts = _read(db, go)
    good = [(r.report, r.started_s if r.started_s is not None else r.report.time_s)
            for r in rows if r.report is not None]
    bad = [r for r in rows if r.report is None]
    for r in bad:
        typer.echo(f"warning: skipped report:{safe_text(r.record_id, 80)}: {safe_text(r.error, 300)}",
                   err=True)
    if json_out:
        print_json([_row_dict(r, t, verdicts.get(r.report_id)) for r, t in good])
        return
    if not good:
        what = "no reports match" if any(x is not None for x in (region, level, station, lo, hi)) \
            else "no reports yet - run `convergence run` first"
        typer.echo(what)
        return
    header = (f"{'began (UTC)':<20}  {'report':<20}  {'region':<8}  {'peak':<9}  {'score':>5}  "
              f"{'stations':>8}  {'rev':>3}  {'status':<6}  {'verdict':<11}  title")
    typer.echo(header)
    for r, t in good:
        d = _row_dict(r, t, verdicts.get(r.report_id))
        typer.echo(f"{d['time'] or '?':<20}  {safe_text(r.report_id, 20):<20}  "
                   f"{safe_text(r.region, 8):<8}  {r.peak_level.value:<9}  {r.peak_score:>5.0f}  "
                   f"{d['stations']:>8}  {r.revision:>3}  {r.status:<6}  {d['verdict'] or '-':<11}  "
                   f"{clip_words(r.title, 90)}")


# -- show ---------------------------------------------------------------------------------


def _fetch(db: str | None, report_id: str,
           revision: int | None) -> tuple[Report, list[Report], list[Label]]:
    from convergence.store.graph import get_labels, get_report, get_revisions

    async def go(store: SurrealStore) -> tuple[Report | None, list[Report], list[Label], Report | None]:
        rep = await get_report(store, report_id, revision)
        newest = rep if revision is None else await get_report(store, report_id)
        revs = await get_revisions(store, report_id) if (rep or newest) else []
        labels = await get_labels(store, [report_id]) if (rep or newest) else []
        return rep, revs, labels, newest

    try:
        rep, revs, labels, newest = _read(db, go)
    except ValueError as exc:  # a stored document this version cannot read
        fail(exc)
    if rep is None:
        if newest is not None and revision is not None:
            have = ", ".join(str(r.revision) for r in revs) or str(newest.revision)
            which = "revision" if len(revs) == 1 else "revisions"
            fail(f"report {report_id!r} has no revision {revision} (it has {which} {have}); "
                 "leave out --revision for the newest")
        fail(f"no report {report_id!r} in this database; list them with `convergence reports list`")
    return rep, revs, labels


@app.command()
def show(
    report_id: Annotated[str, typer.Argument(help="Report id, e.g. rpt-1a2b3c4d5e6f7a8b.")],
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="text (terminal), md (a brief to paste), json (the record), "
                               "html (a standalone page, written to a file).")] = Format.TEXT,
    revision: Annotated[int | None, typer.Option(min=1, help="This revision (default: the newest).")]
        = None,
    out: Annotated[Path | None, typer.Option(
        help="Write to this file instead of stdout (html: default REPORT_ID.html here).")] = None,
    db: DbOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Show one report as a brief: what happened, how sure we are, what was done, what to check."""
    rid = _check_id(report_id)
    fmt = Format.JSON if json_out else fmt
    rep, revs, labels = _fetch(db, rid, revision)
    text = render(rep, fmt, revisions=revs, labels=labels)
    if fmt == Format.HTML and out is None:
        out = Path(f"{rid}{'' if revision is None else f'-r{revision:03d}'}.html")
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _write_file(out, text)
    extra = " (a standalone page: open it in a browser, no network needed)" if fmt == Format.HTML else ""
    typer.echo(f"wrote report {rid} revision {rep.revision} as {fmt.value} to {out}{extra}", err=True)


# -- export -------------------------------------------------------------------------------


@app.command()
def export(
    since: Annotated[str, typer.Option(
        help="Reports active at or after this time: ISO 8601, unix seconds, now, or -2h / -1d.")],
    until: UntilOption = None,
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", "-f", help="md (one brief per report) or json (the records).")] = ExportFormat.MD,
    out: Annotated[Path | None, typer.Option(
        help="A file for all of them, or an existing directory for one file per report "
             "(default: stdout).")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    level: Annotated[Level | None, typer.Option(
        help="Only reports that reached at least this level.", case_sensitive=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many, newest first.")]
        = 1000,
    db: DbOption = None,
) -> None:
    """Export the reports of a time window as Markdown briefs or JSON records."""
    from convergence.store.graph import get_labels, get_report, get_revisions, list_reports

    lo, hi = _window(since, until)

    async def go(store: SurrealStore) -> list[tuple[Report, list[Report], list[Label]]]:
        rows = await list_reports(store, region=region, level=level, since_s=lo, until_s=hi,
                                  limit=limit + 1)
        out_rows = []
        for row in rows[:limit]:
            if row.report is None:
                typer.echo(f"warning: skipped report:{safe_text(row.record_id, 80)}: "
                           f"{safe_text(row.error, 300)}", err=True)
                continue
            rid = row.report.report_id
            full = await get_report(store, rid)  # the listing leaves out evidence and timeline
            if full is not None:
                out_rows.append((full, await get_revisions(store, rid), await get_labels(store, [rid])))
        if len(rows) > limit:
            typer.echo(f"warning: more than {limit} reports match; exported the newest {limit} "
                       "(raise --limit or narrow --since/--until)", err=True)
        return out_rows

    try:
        found = _read(db, go)
    except ValueError as exc:
        fail(exc)
    ext = fmt.value
    texts = [(rep.report_id, render(rep, ext, revisions=revs, labels=labels)) for rep, revs, labels in found]
    window = (f"{iso_time(lo) if lo is not None else 'the start'} to "
              f"{iso_time(hi) if hi is not None else 'now'}")
    if out is not None and out.is_dir():
        for rid, text in texts:
            _write_file(out / f"{rid}.{ext}", text)
        typer.echo(f"exported {plural(len(texts), 'report')} from {window} to {out}/ (one .{ext} file each)",
                   err=True)
        return
    if fmt == ExportFormat.JSON:
        body = "[\n" + ",\n".join(t.rstrip("\n") for _, t in texts) + "\n]\n" if texts else "[]\n"
    else:
        body = "\n---\n\n".join(t for _, t in texts)
    if out is None:
        sys.stdout.write(body)
        sys.stdout.flush()
    else:
        _write_file(out, body)
    typer.echo(f"exported {plural(len(texts), 'report')} from {window}" + (f" to {out}" if out else ""),
               err=True)


# -- verify -------------------------------------------------------------------------------


@app.command()
def verify(db: DbOption = None, json_out: JsonOption = False) -> None:
    """Check the integrity chain: every report revision and label unedited, none deleted or
    reordered. Exits 1 and names the first broken link if not."""
    from convergence.store.integrity import Verification
    from convergence.store.integrity import verify as run_verify

    result: Verification = _read(db, run_verify)
    if json_out:
        print_json(result.to_dict())
    streams = {s.stream: s for s in result.streams}
    rep, lab = streams["reports"], streams["labels"]
    if result.ok:
        if not json_out:
            typer.echo(f"intact: {plural(rep.links, 'report revision')} of "
                       f"{plural(result.reports_checked, 'report')} and {plural(lab.links, 'label')} "
                       f"{'checks' if rep.links + lab.links == 1 else 'check'} out.")
            for s in (rep, lab):
                if s.links:
                    lag = f" ({s.head_lag} written after the head was saved)" if s.head_lag else ""
                    typer.echo(f"  {s.stream} chain head: link {s.head_seq}, hash {s.head_hash}{lag}")
            typer.echo("Keep the head hash elsewhere to detect a rewrite of the whole chain later.")
        return
    first = result.first
    assert first is not None
    more = result.problems_total - 1
    fail(f"integrity broken at {first.sentence()}"
         + (f" ({plural(more, 'more problem')}; `convergence reports verify --json` lists them)"
              if more else ""))


# -- label --------------------------------------------------------------------------------


@app.command()
def label(
    report_id: Annotated[str, typer.Argument(help="Report id, e.g. rpt-1a2b3c4d5e6f7a8b.")],
    verdict: Annotated[Verdict, typer.Argument(
        help="genuine (a real convergence), false-alarm, or unsure.", case_sensitive=False)],
    note: Annotated[str, typer.Option(help=f"Why (at most {MAX_LABEL_NOTE} characters).")] = "",
    by: Annotated[str | None, typer.Option(help="Who is labelling (default: your login name).")] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Record an analyst's verdict on a report (kept with it; the learned meter trains on it)."""
    rid = _check_id(report_id)
    if len(note) > MAX_LABEL_NOTE:
        fail(f"--note is {len(note)} characters; keep it under {MAX_LABEL_NOTE} "
             "(put longer notes in your case system and reference them here)", 2)
    who = by if by is not None else _login()
    if not who.strip() or len(who) > 100:
        fail(f"--by {safe_text(who, 40)!r}: give a name of 1 to 100 characters", 2)

    async def go(store: SurrealStore) -> Label | None:
        from convergence.store.graph import ReportGraph, get_report, next_label_id
        from convergence.store.writer import BatchedWriter

        rep = await get_report(store, rid)
        if rep is None:
            return None
        lb = Label(label_id=await next_label_id(store, rid), report_id=rid, verdict=verdict,
                   by=safe_text(who, 100), at_s=time.time(), note=note.strip(), revision=rep.revision)
        writer = BatchedWriter(store, name="reports label", close_timeout_s=30.0)
        graph = ReportGraph(writer)
        await graph.load(store, streams=("labels",))
        stored = graph.submit_label(lb)
        await writer.close()  # raises StoreError if it could not be written
        return stored

    try:
        stored = _read(db, go)
    except ValueError as exc:
        fail(exc)
    if stored is None:
        fail(f"no report {rid!r} in this database; list them with `convergence reports list`")
    if json_out:
        print_json(stored.to_dict())
        return
    typer.echo(f"labelled {rid} {stored.verdict.value} (label {stored.label_id} by {stored.by} at "
               f"{stored.at_iso}, on revision {stored.revision})")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


# -- stats --------------------------------------------------------------------------------


def _pct(p: float | None) -> str:
    return "-" if p is None else f"{p * 100:.0f}%"


def _stats_lines(title: str, key: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [title, f"  {key:<22}  {'labelled':>8}  {'genuine':>7}  {'false alarm':>11}  {'unsure':>6}  "
                    f"{'precision':>9}"]
    for name, b in rows:
        lines.append(f"  {safe_text(name, 22):<22}  {b['labelled']:>8}  {b['genuine']:>7}  "
                     f"{b['false_alarm']:>11}  {b['unsure']:>6}  {_pct(b['precision']):>9}")
    return lines


@app.command()
def stats(db: DbOption = None, json_out: JsonOption = False) -> None:
    """Precision of the alerts analysts labelled: genuine / (genuine + false alarm), overall,
    by level and by region (unsure labels are counted, not judged)."""
    from convergence.store.graph import label_stats, labelled_reports

    labelled = _read(db, labelled_reports)
    s = label_stats(labelled)
    if json_out:
        print_json(s)
        return
    if not labelled:
        typer.echo("no labelled reports yet - label one with `convergence reports label ID genuine`")
        return
    o = s["overall"]
    lines = [f"{plural(o['labelled'], 'labelled report')}: precision {_pct(o['precision'])} "
             f"({o['genuine']} genuine, {o['false_alarm']} false alarm, {o['unsure']} unsure)", ""]
    lines += _stats_lines("by level", "level", list(s["by_level"].items()))
    lines += [""] + _stats_lines("by region", "region", list(s["by_region"].items()))
    lines += [""] + _stats_lines("by level and region", "level / region",
                                 [(f"{r['level']} / {r['region']}", r) for r in s["by_level_region"]])
    typer.echo("\n".join(lines))
