"""Reports as a graph in SurrealDB: stations, reports, revisions, evidence and responses.

:class:`ReportGraph` writes each :class:`~convergence.records.Report` revision through the
project's :class:`~convergence.store.writer.BatchedWriter` (batched, retried with backoff
behind the breaker, never dropped) as these records, all with deterministic ids so a
replay or a retry upserts the same ones:

=====================================  ============================================================
record                                 holds
=====================================  ============================================================
``station:<station_id>``               kind, region, correlation group
``report:<report_id>``                 the newest revision (what ``reports list/show`` read)
``revision:<report_id>-r<NNN>``        every revision as written, with its ``integrity`` link
``event:<evt-…>``                      an evidence sample (headline and link, or a market value)
``response:<response_id>``             an adaptive response with its acknowledgements
``label:<report_id>-l<NNN>``           an analyst's verdict (also chained)
``chain:reports`` / ``chain:labels``   the integrity chains' heads (:mod:`.integrity`)
=====================================  ============================================================

and these relations (SurrealDB ``RELATE``, so graph traversals see them):
``report->involves->station`` (share, correlated), ``report->cites->event``,
``report->triggered->response`` and ``revision->of->report``.

The two questions the graph answers directly (every value is a bound variable):

*All reports involving station X in the last day* (:func:`reports_involving`)::

    SELECT * FROM $station<-involves<-report WHERE time_s >= $since ORDER BY time_s DESC
    -- $station = station:⟨news-mena-018⟩, $since = now - 86400

*Stations that co-occur most in converged reports* (:func:`co_occurring_stations`)::

    SELECT * FROM (
        SELECT a, b, count() AS reports FROM (
            SELECT VALUE array::combine(->involves->station, ->involves->station)
            FROM report WHERE peak_level = $level AND time_s >= $since
        ).flatten().map(|$p| { a: record::id($p[0]), b: record::id($p[1]) })
        WHERE a < b GROUP BY a, b
    ) ORDER BY reports DESC, a, b LIMIT $limit
    -- $level = "converged"; every pair of stations of each report, counted once per report

Reading never creates a database: :func:`require_existing` refuses a ``surrealkv://``
path that does not exist, naming it.

Examples
--------
>>> import asyncio
>>> from convergence.responses.examples import example_revisions
>>> from convergence.store.surreal import SurrealStore
>>> from convergence.store.writer import BatchedWriter
>>> async def demo() -> tuple[list[str], list[tuple[str, str, int]]]:
...     async with SurrealStore("mem://", "convergence", "demo") as store:
...         async with BatchedWriter(store) as writer:
...             graph = ReportGraph(writer)
...             await graph.load(store)
...             for rev in example_revisions(seed=1):
...                 graph.submit(rev)
...         involving = await reports_involving(store, "news-mena-018", since_s=0.0)
...         pairs = await co_occurring_stations(store, limit=1)
...         return [r.report_id for r in involving], pairs
>>> asyncio.run(demo())
(['rpt-a46a3354385c6bf3'], [('news-mena-018', 'news-mena-019', 1)])
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from surrealdb import RecordID

from convergence.records import (
    Contribution,
    Label,
    Level,
    MeterMethod,
    PatternNote,
    Report,
    ResponseTaken,
    Verdict,
)
from convergence.schema import dead_letter
from convergence.settings import DB_FILE_SCHEMES, db_scheme, redact_url
from convergence.store.integrity import (
    HEAD_TABLE,
    Chain,
    ChainConflict,
    Link,
    content_hash,
    load_chain,
)
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter, StoreBackpressure

__all__ = [
    "LabelledRow", "ReportGraph", "ReportRow", "co_occurring_stations", "event_id", "get_labels",
    "get_report", "get_revisions", "label_stats", "labelled_rows", "list_reports",
    "next_label_id", "report_from_doc", "report_records", "reports_involving", "require_existing",
]

log = logging.getLogger(__name__)

#: longest text kept in any stored string (a headline, a note); longer ones are clipped
MAX_STORED_TEXT: Final = 2000

# -- the SurrealQL, all constant; only bound variables vary ---------------------------------

Q_REPORTS_INVOLVING: Final = (
    "SELECT * FROM $station<-involves<-report WHERE time_s >= $since "
    "AND ($until = NONE OR time_s <= $until) ORDER BY time_s DESC LIMIT $limit")
# the outer SELECT orders the groups: this engine ignores ORDER BY on an aggregate in the
# statement that groups
Q_CO_OCCURRING: Final = (
    "SELECT * FROM (SELECT a, b, count() AS reports FROM ("
    "SELECT VALUE array::combine(->involves->station, ->involves->station) "
    "FROM report WHERE peak_level = $level AND time_s >= $since"
    ").flatten().map(|$p| { a: record::id($p[0]), b: record::id($p[1]) }) "
    "WHERE a < b GROUP BY a, b) ORDER BY reports DESC, a, b LIMIT $limit")
_LIST_WHERE: Final = (
    "WHERE ($since = NONE OR time_s >= $since) "
    "AND ($until = NONE OR (listing.started_s ?? time_s) <= $until) "
    "AND ($region = NONE OR region = $region) "
    "AND ($levels = NONE OR peak_level IN $levels) "
    "ORDER BY time_s DESC LIMIT $limit")
# a list needs neither the evidence, the timeline nor the score series (the bulk of a report)
_LIST_FIELDS: Final = "SELECT * OMIT evidence, timeline, score_series, responses, features "
Q_LIST: Final = _LIST_FIELDS + "FROM report " + _LIST_WHERE
Q_LIST_STATION: Final = _LIST_FIELDS + "FROM $station<-involves<-report " + _LIST_WHERE
Q_GET: Final = "SELECT * FROM ONLY $rid"
Q_REVISIONS: Final = "SELECT * FROM revision WHERE report_id = $report_id ORDER BY revision"
Q_LABELS_OF: Final = "SELECT * FROM label WHERE report_id IN $ids ORDER BY at_s, id"
Q_ALL_LABELS: Final = "SELECT * FROM label ORDER BY at_s, id"
Q_LABEL_COUNT: Final = "SELECT count() AS n FROM label WHERE report_id = $report_id GROUP ALL"
Q_REPORTS_BY_ID: Final = ("SELECT report_id, region, peak_level, level, time_s, revision "
                          "FROM report WHERE report_id IN $ids")
Q_NEWEST_REVISIONS: Final = ("SELECT report_id, math::max(revision) AS newest FROM revision "
                             "GROUP BY report_id")
Q_REVISIONS_OF: Final = ("SELECT report_id, revision, level, peak_level, features FROM revision "
                         "WHERE report_id IN $ids ORDER BY report_id, revision")

Record = tuple[str, str, dict[str, Any]]


# -- documents -------------------------------------------------------------------------------


def clean(value: Any, limit: int = MAX_STORED_TEXT) -> Any:
    """A document fit to store: NUL characters (which SurrealDB cannot return) replaced,
    strings clipped to ``limit``, ``None`` fields of objects dropped (the store drops them
    anyway, and the integrity hash must cover what is stored), tuples as lists."""
    if isinstance(value, str):
        s = value.replace("\x00", "\ufffd")
        return s if len(s) <= limit else s[: limit - 1] + "…"
    if isinstance(value, Mapping):
        return {clean(str(k), limit): clean(v, limit) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [clean(v, limit) for v in value]
    return value


def event_id(station_id: str, time_s: float, category: str, value: float,
             text: str | None, link: str | None) -> str:
    """Deterministic id of an evidence sample (the same sample cited twice is one record)."""
    key = f"{station_id}|{time_s!r}|{category}|{value!r}|{text or ''}|{link or ''}"
    return "evt-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def episode_start_s(report: Report) -> float:
    """When the episode began: the outcome's start, else the first level change, else now."""
    if report.outcome is not None:
        return report.outcome.started_s
    levels = [e.time_s for e in report.timeline if e.what == "level"]
    return min(levels) if levels else report.time_s


def report_records(report: Report, link: Link | None, *, newest: bool) -> list[Record]:
    """The graph records of one chained revision, nodes before the edges that join them.

    ``link``: the revision's place in the integrity chain; ``None`` for a revision already
    chained (a replay), whose own record is then left as stored and only the records
    derived from it are written again (idempotent, and it heals a writer that stopped
    between tables). ``newest``: the revision is the newest of its report, so the
    ``report`` record is (re)written to copy it.
    """
    doc = clean(report.to_dict())
    content = link.content if link is not None else content_hash(doc)
    rid = report.report_id
    rec: list[Record] = []
    for c in report.contributions:
        rec.append(("station", c.station_id, clean({
            "station_id": c.station_id, "source_kind": c.source_kind, "region": c.region,
            "group": c.group})))
    events: dict[str, dict[str, Any]] = {}
    for s in report.evidence:
        eid = event_id(s.station_id, s.time_s, s.category, s.value, s.text, s.link)
        events[eid] = clean({**s.to_dict(), "region": report.region})
    rec += [("event", eid, d) for eid, d in events.items()]
    rec += [("response", r.response_id,
             clean({**r.to_dict(), "report_id": rid, "region": report.region}))
            for r in report.responses]
    if link is not None:
        rec.append(("revision", report.revision_id, {**doc, "integrity": link.to_dict()}))
    if newest:
        rec.append(("report", rid, {
            **doc, "integrity": {"revision_id": report.revision_id, "content": content},
            "listing": {"started_s": episode_start_s(report)}}))
    rec.append(("of", report.revision_id, {"in": f"revision:{report.revision_id}",
                                           "out": f"report:{rid}", "revision": report.revision}))
    for c in report.contributions:
        rec.append(("involves", f"{rid}|{c.station_id}", clean({
            "in": f"report:{rid}", "out": f"station:{c.station_id}", "share": c.share,
            "correlated": c.correlated, "correlated_with": c.correlated_with,
            "revision": report.revision})))
    rec += [("cites", f"{rid}|{eid}", {"in": f"report:{rid}", "out": f"event:{eid}",
                                        "station_id": d["station_id"]})
            for eid, d in events.items()]
    rec += [("triggered", f"{rid}|{r.response_id}", {
        "in": f"report:{rid}", "out": f"response:{r.response_id}", "action": r.action})
        for r in report.responses]
    return rec


# -- writing ---------------------------------------------------------------------------------


class ReportGraph:
    """Writes report revisions and analysts' labels as a graph with integrity chains.

    One ``ReportGraph`` per store: it holds the chains' heads in memory (loaded by
    :meth:`load`) and appends every new revision and label to them, so only one writer may
    append to a store at a time (a ``surrealkv://`` file is locked to one process anyway;
    on a server, :func:`~convergence.store.integrity.verify` reports a fork if two did).

    :meth:`submit` is synchronous and never blocks on the database: it queues records on
    the writer. A revision already stored with the same content (a replay) is skipped; one
    stored with different content is not overwritten but becomes a dead letter saying so.
    A replay still rewrites what is derived from the revision (its stations, events,
    relations, and the report record if it is the newest), so a writer that stopped
    halfway is healed by replaying its input.
    """

    def __init__(self, writer: BatchedWriter, *, clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.clock = clock
        self._chains: dict[str, Chain] = {}
        self._newest: dict[str, int] = {}
        self.written = 0
        self.replayed = 0
        self.conflicts = 0
        self.labels = 0

    async def load(self, store: SurrealStore, streams: Iterable[str] = ("reports", "labels")) -> None:
        """Resume the chains of ``streams`` from the store (call once, before submitting)."""
        for stream in streams:
            self._chains[stream] = await load_chain(store, stream)
        if "reports" in self._chains:
            rows = await store.select("read the newest revision of each report", Q_NEWEST_REVISIONS)
            self._newest = {str(r["report_id"]): int(r["newest"]) for r in rows
                            if isinstance(r.get("report_id"), str) and isinstance(r.get("newest"), int)}

    def _chain(self, stream: str) -> Chain:
        chain = self._chains.get(stream)
        if chain is None:
            raise RuntimeError(f"ReportGraph: the {stream} chain is not loaded; "
                               "`await graph.load(store)` before submitting")
        return chain

    def _room(self, records: int, what: str) -> None:
        """Refuse up front when the writer cannot take ``records`` more, so a revision is
        queued whole or not at all (and never takes a link it does not fill)."""
        free = self.writer.max_pending - self.writer.pending
        if records > free:
            raise StoreBackpressure(
                f"store writer for {self.writer.name} has room for {free} more records but {what} "
                f"needs up to {records}; it was NOT queued. The database is not keeping up: check it "
                "is up and the disk is not full, then submit it again (ids are deterministic)")

    def submit(self, report: Report) -> str:
        """Queue one revision's records; returns ``written``, ``replayed`` or ``conflict``.

        Raises :class:`~convergence.store.writer.StoreBackpressure` (and queues nothing)
        when the writer has no room for the whole revision.
        """
        chain = self._chain("reports")
        self._room(6 + 2 * (len(report.contributions) + len(report.evidence) + len(report.responses)),
                   f"revision {report.revision_id}")
        doc = clean(report.to_dict())
        try:
            link = chain.append(report.revision_id, doc)
        except ChainConflict as exc:
            self.conflicts += 1
            log.warning("%s", exc)
            dl = dead_letter("report-store", doc, str(exc), received_at_s=self.clock())
            self.writer.submit("dead_letter", dl.dead_letter_id,
                               {**dl.to_dict(), "record": f"revision:{report.revision_id}"})
            return "conflict"
        newest = report.revision >= self._newest.get(report.report_id, 0)
        if newest:
            self._newest[report.report_id] = report.revision
        for table, rid, d in report_records(report, link, newest=newest):
            self.writer.submit(table, rid, d)
        if link is None:
            self.replayed += 1
            return "replayed"
        self.writer.submit(HEAD_TABLE, "reports", chain.head_record(), after_pending=True)
        self.written += 1
        return "written"

    def submit_label(self, label: Label) -> Label:
        """Queue an analyst's label (chained like a revision); returns it as stored."""
        chain = self._chain("labels")
        self._room(2, f"label {label.label_id}")
        doc = clean(label.to_dict())
        link = chain.append(label.label_id, doc)
        if link is not None:
            self.writer.submit("label", label.label_id, {**doc, "integrity": link.to_dict()})
            self.writer.submit(HEAD_TABLE, "labels", chain.head_record(), after_pending=True)
            self.labels += 1
        return Label.from_dict(doc)

    def stats(self) -> dict[str, int]:
        """Revisions written, replays skipped, conflicts dead-lettered, labels written."""
        return {"written": self.written, "replayed": self.replayed, "conflicts": self.conflicts,
                "labels": self.labels}


# -- reading ---------------------------------------------------------------------------------


def require_existing(url: str) -> None:
    """Refuse to read a ``surrealkv://`` database that does not exist (opening would create
    it). Other URLs pass: ``mem://`` is always empty, a server says for itself."""
    if db_scheme(url) not in DB_FILE_SCHEMES:
        return
    path = Path(url.split("://", 1)[1]).expanduser()
    if not path.exists():
        raise StoreError(
            f"no database at {path} ({redact_url(url)}): nothing has been written there. Check "
            "--db (or CONVERGENCE_DB), or run `convergence run` to create it")


def _legacy(doc: Mapping[str, Any]) -> Report:
    """A report written before revisions existed (one flat document per episode)."""
    regions = doc.get("regions") or [""]
    level = Level(doc.get("level", "quiet"))
    method = str(doc.get("method", "rule-based fusion"))
    contributions = tuple(
        Contribution(station_id=str(n["station_id"]), source_kind=str(n.get("source_kind", "")),
                     region=str(n.get("region", regions[0])), share=float(n.get("share", 0.0)),
                     peak_evidence=dict(n.get("peak_evidence", {})), by_type=dict(n.get("by_type", {})),
                     correlated=bool(n.get("correlated", False)))
        for n in doc.get("nodes", []))
    responses = []
    for r in doc.get("responses", []):
        cmd = r.get("command") or {}
        target = cmd.get("target") or {}
        responses.append(ResponseTaken(
            response_id=str(r.get("response_id", "")), action=str(r.get("action", "")),
            target=f"{target['type']}:{target.get('value', '*')}" if target.get("type")
            else "on-call analyst" if r.get("action") == "escalate" else "",
            params={k: float(v) for k, v in (cmd.get("params") or {}).items()},
            issued_at_s=float(cmd.get("issued_at_s", r.get("time_s", doc.get("time_s", 0.0)))),
            expires_at_s=cmd.get("expires_at_s"), reason=str(r.get("reason", ""))))
    return Report(
        report_id=str(doc["report_id"]), revision=1, region=str(regions[0]),
        episode_tick=int(doc.get("episode_tick", 0)), tick=int(doc.get("episode_tick", 0)),
        time_s=float(doc.get("time_s", math.nan)), level=level, peak_level=level,
        score=float(doc.get("score", 0.0)), peak_score=float(doc.get("score", 0.0)), status="open",
        title=str(doc.get("title", "")), summary=str(doc.get("summary", "")),
        method=MeterMethod("rule") if method.startswith("rule") else MeterMethod("lightgbm", method),
        contributions=contributions, by_kind=dict(doc.get("by_kind", {})),
        by_evidence=dict(doc.get("by_evidence", {})),
        patterns=tuple(PatternNote.from_dict(p) for p in doc.get("patterns", [])),
        responses=tuple(responses), window_s=float(doc.get("window_s", 8.0)),
        run_id=str(doc.get("run_id", "")))


def report_from_doc(doc: Mapping[str, Any]) -> Report:
    """The :class:`Report` of a stored document (either this version's or an older flat
    one); ``ValueError`` naming what is missing when it is neither."""
    try:
        if "revision" in doc and "region" in doc:
            return Report.from_dict(doc)
        if "nodes" in doc and "report_id" in doc:
            return _legacy(doc)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"report {doc.get('report_id', doc.get('id', '?'))!r} cannot be read "
                         f"({type(exc).__name__}: {exc})") from exc
    raise ValueError(f"record {doc.get('id', '?')!r} is not a report this version can read "
                     "(it has neither revision fields nor an older report's station list)")


async def get_report(store: SurrealStore, report_id: str,
                     revision: int | None = None) -> Report | None:
    """The newest revision of a report, or revision ``revision``; ``None`` if absent."""
    if revision is None:
        rows = await store.select(f"read report {report_id}", Q_GET,
                                  {"rid": RecordID("report", report_id)})
    else:
        rows = await store.select(f"read revision {revision} of report {report_id}", Q_GET,
                                  {"rid": RecordID("revision", f"{report_id}-r{revision:03d}")})
    return report_from_doc(rows[0]) if rows else None


async def get_revisions(store: SurrealStore, report_id: str) -> list[Report]:
    """Every stored revision of a report, oldest first."""
    rows = await store.select(f"read the revisions of report {report_id}", Q_REVISIONS,
                              {"report_id": report_id})
    return [report_from_doc(r) for r in rows]


@dataclass(frozen=True)
class ReportRow:
    """One line of ``reports list``: a report's newest revision (without its bulk), when its
    episode began, or why it cannot be read."""

    report: Report | None
    record_id: str
    error: str | None = None
    started_s: float | None = None


def _levels_from(level: Level | None) -> list[str] | None:
    return None if level is None else [lv.value for lv in Level if lv >= level]


async def list_reports(store: SurrealStore, *, region: str | None = None, level: Level | None = None,
                       station: str | None = None, since_s: float | None = None,
                       until_s: float | None = None, limit: int = 50) -> list[ReportRow]:
    """Reports whose episode overlaps ``[since_s, until_s]``, newest first, without their
    evidence, timeline, score series, responses and features (fetch one with
    :func:`get_report` for those).

    ``level``: reports that reached at least that level; ``station``: reports involving
    that station (a graph traversal). A record that cannot be read comes back with its error.
    """
    params: dict[str, Any] = {"since": since_s, "until": until_s, "region": region,
                              "levels": _levels_from(level), "limit": limit}
    if station is None:
        rows = await store.select("list reports", Q_LIST, params)
    else:
        params["station"] = RecordID("station", station)
        rows = await store.select(f"list reports involving {station}", Q_LIST_STATION, params)
    out = []
    for r in rows:
        try:
            rep = report_from_doc(r)
        except ValueError as exc:
            out.append(ReportRow(None, str(r.get("id")), str(exc)))
            continue
        started = (r.get("listing") or {}).get("started_s")
        out.append(ReportRow(rep, str(r.get("id")), None,
                             float(started) if isinstance(started, int | float) else episode_start_s(rep)))
    return out


async def reports_involving(store: SurrealStore, station_id: str, *, since_s: float,
                            until_s: float | None = None, limit: int = 1000) -> list[Report]:
    """Reports involving a station, newest first (see the module docstring's query)."""
    rows = await store.select(f"read reports involving {station_id}", Q_REPORTS_INVOLVING,
                              {"station": RecordID("station", station_id), "since": since_s,
                               "until": until_s, "limit": limit})
    return [report_from_doc(r) for r in rows]


async def co_occurring_stations(store: SurrealStore, *, level: Level = Level.CONVERGED,
                                since_s: float = 0.0, limit: int = 20) -> list[tuple[str, str, int]]:
    """Pairs of stations seen together in the most reports that reached ``level``:
    ``(a, b, reports)`` with ``a < b``, most first (see the module docstring's query)."""
    rows = await store.select("count stations that co-occur in reports", Q_CO_OCCURRING,
                              {"level": Level(level).value, "since": since_s, "limit": limit})
    return [(str(r["a"]), str(r["b"]), int(r["reports"])) for r in rows]


async def get_labels(store: SurrealStore, report_ids: Sequence[str] | None = None) -> list[Label]:
    """Analysts' labels, oldest first (of ``report_ids`` only, when given)."""
    if report_ids is None:
        rows = await store.select("read labels", Q_ALL_LABELS)
    else:
        rows = await store.select("read labels", Q_LABELS_OF, {"ids": list(report_ids)})
    out = []
    for r in rows:
        try:
            out.append(Label.from_dict(r))
        except (TypeError, ValueError) as exc:
            log.warning("label %s cannot be read (%s); skipped", r.get("id"), exc)
    return out


async def next_label_id(store: SurrealStore, report_id: str) -> str:
    """Id of the next label of a report (``<report_id>-l<NNN>``, counting from 1)."""
    rows = await store.select(f"count labels of {report_id}", Q_LABEL_COUNT, {"report_id": report_id})
    n = int(rows[0]["n"]) if rows else 0
    return f"{report_id}-l{n + 1:03d}"


def newest_labels(labels: Iterable[Label]) -> dict[str, Label]:
    """The verdict that counts per report: its newest label."""
    out: dict[str, Label] = {}
    for lb in sorted(labels, key=lambda lb: (lb.at_s, lb.label_id)):
        out[lb.report_id] = lb
    return out


def label_stats(labelled: Iterable[tuple[Label, str, str]]) -> dict[str, Any]:
    """Precision of the alerts analysts labelled, overall, by level and by region.

    ``labelled`` holds ``(newest label, peak level, region)`` per report. Precision is
    genuine / (genuine + false alarm); ``unsure`` labels are counted but not in it.

    >>> from convergence.records import Label, Verdict
    >>> rows = [(Label("a-l001", "a", Verdict.GENUINE, "ann", 1.0), "converged", "mena"),
    ...         (Label("b-l001", "b", Verdict.FALSE_ALARM, "ann", 2.0), "warning", "mena"),
    ...         (Label("c-l001", "c", Verdict.GENUINE, "bo", 3.0), "converged", "apac")]
    >>> s = label_stats(rows)
    >>> s["overall"]["precision"], s["by_level"]["converged"]["precision"]
    (0.6667, 1.0)
    >>> s["by_region"]["mena"]["precision"]
    0.5
    """
    def empty() -> dict[str, Any]:
        return {"labelled": 0, "genuine": 0, "false_alarm": 0, "unsure": 0, "precision": None}

    overall = empty()
    by_level: dict[str, dict[str, Any]] = {}
    by_region: dict[str, dict[str, Any]] = {}
    by_both: dict[tuple[str, str], dict[str, Any]] = {}
    for lb, level, region in labelled:
        key = {Verdict.GENUINE: "genuine", Verdict.FALSE_ALARM: "false_alarm"}.get(lb.verdict, "unsure")
        for bucket in (overall, by_level.setdefault(level, empty()),
                       by_region.setdefault(region, empty()), by_both.setdefault((level, region), empty())):
            bucket["labelled"] += 1
            bucket[key] += 1
    for bucket in (overall, *by_level.values(), *by_region.values(), *by_both.values()):
        judged = bucket["genuine"] + bucket["false_alarm"]
        bucket["precision"] = round(bucket["genuine"] / judged, 4) if judged else None
    order = {lv.value: lv.rank for lv in Level}
    return {
        "overall": overall,
        "by_level": dict(sorted(by_level.items(), key=lambda kv: -order.get(kv[0], -1))),
        "by_region": dict(sorted(by_region.items())),
        "by_level_region": [{"level": lv, "region": rg, **b} for (lv, rg), b in
                            sorted(by_both.items(), key=lambda kv: (-order.get(kv[0][0], -1), kv[0][1]))],
    }


async def labelled_reports(store: SurrealStore) -> list[tuple[Label, str, str]]:
    """``(newest label, peak level, region)`` of every labelled report still stored."""
    newest = newest_labels(await get_labels(store))
    if not newest:
        return []
    rows = await store.select("read labelled reports", Q_REPORTS_BY_ID, {"ids": sorted(newest)})
    info = {str(r.get("report_id")): r for r in rows}
    return [(lb, str(info[rid].get("peak_level") or info[rid].get("level") or "?"),
             str(info[rid].get("region") or "?"))
            for rid, lb in sorted(newest.items()) if rid in info]


@dataclass(frozen=True)
class LabelledRow:
    """One training row from an analyst's label: the meter's features at a revision the
    analyst judged, and whether the analyst called the report genuine."""

    report_id: str
    revision: int
    features: dict[str, float]
    genuine: bool


async def labelled_rows(store: SurrealStore) -> tuple[list[LabelledRow], dict[str, int]]:
    """Training rows from labelled reports, and counts of what was used or skipped.

    A report labelled ``genuine`` or ``false-alarm`` gives one row per revision that
    alarmed (warning or higher; its peak revision if it never did) and carries the meter's
    features. ``unsure`` labels and revisions without features are skipped (and counted).
    """
    newest = newest_labels(await get_labels(store))
    judged = {rid: lb for rid, lb in newest.items() if lb.verdict != Verdict.UNSURE}
    counts = {"labelled_reports": len(newest), "unsure": len(newest) - len(judged),
              "reports_used": 0, "rows": 0, "without_features": 0, "missing_reports": 0}
    if not judged:
        return [], counts
    rows = await store.select("read revisions of labelled reports", Q_REVISIONS_OF,
                              {"ids": sorted(judged)})
    by_report: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_report.setdefault(str(r.get("report_id")), []).append(r)
    out: list[LabelledRow] = []
    for rid, lb in sorted(judged.items()):
        revs = by_report.get(rid)
        if not revs:
            counts["missing_reports"] += 1
            continue
        alarmed = [r for r in revs if Level(r.get("level", "quiet")) >= Level.WARNING]
        if not alarmed:
            peak = max(revs, key=lambda r: Level(r.get("level", "quiet")).rank)
            alarmed = [peak]
        used = False
        for r in alarmed:
            feats = r.get("features")
            if not isinstance(feats, Mapping) or not feats:
                counts["without_features"] += 1
                continue
            out.append(LabelledRow(rid, int(r.get("revision", 0)),
                                   {str(k): float(v) for k, v in feats.items()},
                                   lb.verdict == Verdict.GENUINE))
            used = True
        counts["reports_used"] += int(used)
    counts["rows"] = len(out)
    return out, counts
