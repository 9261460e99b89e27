"""Tamper evidence: every report revision and every analyst label is a link in a hash chain.

A store keeps two chains (*streams*): ``reports`` over the ``revision`` table and
``labels`` over the ``label`` table. Each record of a stream carries an ``integrity``
object::

    {"stream": "reports", "seq": 17, "prev": <hash of link 16>,
     "content": sha256(canonical record without "integrity"), "hash": sha256(stream, seq, id, prev, content)}

and the store keeps each stream's head (``chain:reports``: the last link's ``seq`` and
``hash``). :func:`verify` walks a stream in ``seq`` order and recomputes everything, so:

* an **edited** record no longer matches its ``content`` hash;
* a **deleted** record leaves a gap in ``seq`` (or, at the end, a head that names a link
  no record holds);
* **reordered** records (swapped ``seq``, or one record's content moved to another) break
  ``prev``/``hash``;
* a record **inserted** by hand has no ``integrity`` at all, and is named as such.

The ``report`` table holds each report's newest revision for listing; its record names
the revision it copies, and :func:`verify` checks that it still does, byte for byte.

Writing is the job of one writer per store (:class:`~convergence.store.graph.ReportGraph`
keeps the head in memory and resumes it with :func:`load_chain`); two processes appending
to one server at once would fork the chain, which :func:`verify` reports as two records
claiming one link. Replays are harmless: a revision already in the chain with the same
content is not appended again (ids are deterministic, writes are idempotent upserts); one
with *different* content is refused (:class:`ChainConflict`), so history is never
rewritten silently.

What this does not do: someone who can write the database can rewrite the whole chain
from the edit onwards, head included. Keep the head hash printed by ``convergence reports
verify --json`` somewhere else (a ticket, a log) to detect that too.

Examples
--------
>>> chain = Chain("reports")
>>> first = chain.append("rpt-1-r001", {"score": 40.0})
>>> second = chain.append("rpt-1-r002", {"score": 80.0})
>>> (first.seq, second.seq, second.prev == first.hash)
(1, 2, True)
>>> chain.append("rpt-1-r001", {"score": 40.0}) is None  # a replay: already chained
True
>>> content_hash({"a": 1, "b": None}) == content_hash({"a": 1})  # the store drops None fields
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from surrealdb import RecordID

__all__ = [
    "GENESIS", "STREAMS", "Chain", "ChainConflict", "Link", "Problem", "StreamCheck",
    "Verification", "canonical", "content_hash", "link_hash", "load_chain", "verify",
]

#: ``prev`` of the first link of every stream
GENESIS: Final = "0" * 64
#: stream name -> the table whose records are its links
STREAMS: Final[dict[str, str]] = {"reports": "revision", "labels": "label"}
#: table of the heads (one record per stream, id = the stream's name)
HEAD_TABLE: Final = "chain"
#: the report table's link back to the revision it copies; excluded from its content hash
#: together with ``listing`` (fields derived for list queries)
REPORT_META: Final = ("integrity", "listing")
PAGE: Final = 500
#: hex digits of a content hash kept in memory per chained record (replay detection)
_KEPT_HEX: Final = 16

_Q_HEAD: Final = "SELECT * FROM ONLY $rid"
_Q_INDEX: Final = ("SELECT record::id(id) AS key, integrity.seq AS seq, integrity.hash AS hash, "
                   "integrity.content AS content FROM type::table($tb) "
                   "WHERE integrity.stream = $stream")
_Q_MAX_SEQ: Final = ("SELECT math::max(integrity.seq) AS top FROM type::table($tb) "
                     "WHERE integrity.stream = $stream GROUP ALL")
_Q_WINDOW: Final = ("SELECT * FROM type::table($tb) WHERE integrity.stream = $stream "
                    "AND integrity.seq > $lo AND integrity.seq <= $hi ORDER BY integrity.seq, id")
_Q_UNCHAINED: Final = ("SELECT record::id(id) AS key FROM type::table($tb) "
                       "WHERE integrity.stream != $stream OR type::is::none(integrity.seq) "
                       "LIMIT $limit")
_Q_REPORTS_PAGE: Final = "SELECT * FROM report ORDER BY id LIMIT $limit START $start"


class _Reader(Protocol):
    """The part of :class:`~convergence.store.surreal.SurrealStore` reading uses."""

    async def select(self, what: str, sql: str,
                     params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...


def _normal(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        # 3.0 and 3 are the same number to the store's readers; hash them alike
        return int(value)
    return value


def canonical(doc: Any) -> bytes:
    """The bytes a content hash covers: sorted-key JSON of ``doc``, with ``None`` fields of
    objects left out (SurrealDB does not store them) and tuples as lists."""
    return json.dumps(_normal(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode()


def content_hash(doc: Mapping[str, Any], exclude: tuple[str, ...] = ("integrity",)) -> str:
    """sha256 of :func:`canonical` ``doc`` without the ``exclude`` keys (its integrity fields)."""
    return hashlib.sha256(canonical({k: v for k, v in doc.items() if k not in exclude})).hexdigest()


def link_hash(stream: str, seq: int, key: str, prev: str, content: str) -> str:
    """The hash of one link: binds its content to its place (stream, position, record id)."""
    return hashlib.sha256(f"{stream}\n{seq}\n{key}\n{prev}\n{content}".encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    """One record's place in its stream's chain (stored as its ``integrity`` object)."""

    stream: str
    seq: int
    key: str
    prev: str
    content: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The ``integrity`` object stored with the record."""
        return {"stream": self.stream, "seq": self.seq, "prev": self.prev,
                "content": self.content, "hash": self.hash}


class ChainConflict(ValueError):
    """A record id already in the chain came again with different content; history is
    not rewritten (the first version stays), the caller decides where the new one goes."""


class Chain:
    """One stream's chain as its single writer sees it: the head and what is chained.

    ``known`` maps each chained record id to (the start of) its content hash, so a replay
    of a record is recognised instead of appended twice.
    """

    def __init__(self, stream: str, *, seq: int = 0, head: str = GENESIS,
                 known: dict[str, str] | None = None) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown chain stream {stream!r}; streams are {sorted(STREAMS)}")
        if seq < 0:
            raise ValueError(f"chain seq must be >= 0, got {seq}")
        self.stream = stream
        self._seq = seq
        self._head = head
        self._known: dict[str, str] = dict(known or {})

    @property
    def seq(self) -> int:
        """Position of the last link (0: empty)."""
        return self._seq

    @property
    def head(self) -> str:
        """Hash of the last link (:data:`GENESIS` when empty)."""
        return self._head

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, key: object) -> bool:
        return key in self._known

    def append(self, key: str, doc: Mapping[str, Any]) -> Link | None:
        """The next link for record ``key`` with content ``doc``; ``None`` if ``key`` is
        already chained with this content (a replay). :class:`ChainConflict` if it is
        chained with other content."""
        content = content_hash(doc)
        seen = self._known.get(key)
        if seen is not None:
            if content.startswith(seen):
                return None
            raise ChainConflict(
                f"{self.stream} chain already holds {key} with different content; the stored "
                "version is kept (a replay produced a different record under the same id)")
        seq = self._seq + 1
        link = Link(self.stream, seq, key, self._head, content,
                    link_hash(self.stream, seq, key, self._head, content))
        self._seq, self._head = seq, link.hash
        self._known[key] = content[:_KEPT_HEX]
        return link

    def head_record(self) -> dict[str, Any]:
        """The head as stored in ``chain:<stream>``."""
        return {"stream": self.stream, "seq": self._seq, "hash": self._head}


async def load_chain(store: _Reader, stream: str) -> Chain:
    """The chain of ``stream`` as stored, ready to append to.

    Resumes from the stored head or from the last chained record, whichever is further
    on (a writer that stopped between writing a record and its head left the head
    behind; a head ahead of every record means records at the end were lost, and
    continuing from the head keeps that gap visible to :func:`verify`).
    """
    table = STREAMS[stream]
    rows = await store.select(f"read the {stream} chain index", _Q_INDEX,
                              {"tb": table, "stream": stream})
    known: dict[str, str] = {}
    seq, head = 0, GENESIS
    for r in rows:
        if isinstance(r.get("key"), str) and isinstance(r.get("content"), str):
            known[r["key"]] = r["content"][:_KEPT_HEX]
        s = r.get("seq")
        if isinstance(s, int) and s > seq and isinstance(r.get("hash"), str):
            seq, head = s, r["hash"]
    stored = await _head(store, stream)
    if stored is not None and stored[0] > seq:
        seq, head = stored
    return Chain(stream, seq=seq, head=head, known=known)


async def _head(store: _Reader, stream: str) -> tuple[int, str] | None:
    rows = await store.select(f"read the {stream} chain head", _Q_HEAD,
                              {"rid": RecordID(HEAD_TABLE, stream)})
    if not rows:
        return None
    seq, h = rows[0].get("seq"), rows[0].get("hash")
    if not isinstance(seq, int) or not isinstance(h, str):
        return (-1, "")  # present but unreadable: verify says so
    return seq, h


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One break in the chain, worded for whoever has to act on it."""

    stream: str
    seq: int | None  # the chain position it concerns (None: a record outside the chain)
    record: str  # "table:id"
    what: str
    hint: str

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "link": self.seq, "record": self.record, "what": self.what,
                "hint": self.hint}

    def sentence(self) -> str:
        where = f"link {self.seq} of the {self.stream} chain" if self.seq is not None \
            else f"the {self.stream} chain"
        return f"{where} ({self.record}): {self.what}; {self.hint}"


@dataclass
class StreamCheck:
    """What :func:`verify` found in one stream."""

    stream: str
    table: str
    links: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    #: links written after the head was last saved (the writer stopped in between): harmless
    head_lag: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "table": self.table, "links": self.links,
                "head": {"seq": self.head_seq, "hash": self.head_hash}, "head_lag": self.head_lag,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class Verification:
    """The result of :func:`verify`: intact, or the problems with the first one named."""

    streams: list[StreamCheck]
    reports_checked: int = 0
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    @property
    def problems(self) -> list[Problem]:
        """Every problem, first link first (records outside the chain last)."""
        ps = [p for s in self.streams for p in s.problems]
        return sorted(ps, key=lambda p: (p.seq is None, p.seq or 0, p.stream != "reports"))

    @property
    def first(self) -> Problem | None:
        ps = self.problems
        return ps[0] if ps else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first
        return {"ok": self.ok, "problems": self.problems_total,
                "first_broken_link": first.to_dict() if first else None,
                "reports_checked": self.reports_checked,
                "streams": {s.stream: s.to_dict() for s in self.streams}}


#: most problems kept per stream (the count goes on)
MAX_PROBLEMS = 50


class _Collector:
    def __init__(self, check: StreamCheck, total: list[int]) -> None:
        self.check, self.total = check, total

    def add(self, seq: int | None, record: str, what: str, hint: str) -> None:
        self.total[0] += 1
        if len(self.check.problems) < MAX_PROBLEMS:
            self.check.problems.append(Problem(self.check.stream, seq, record, what, hint))


_EDITED = "restore it from a backup or export; nothing in this chain after it can be trusted either"
_DELETED = "the record was deleted (or lost before it was written); restore it from a backup"


#: a chained revision: (report id, revision number, content hash, link)
_Chained = tuple[str, int, str, int]


async def _walk(store: _Reader, stream: str, check: StreamCheck, out: _Collector,
                chained: dict[str, _Chained]) -> None:
    table = STREAMS[stream]
    top_rows = await store.select(f"read the {stream} chain length", _Q_MAX_SEQ,
                                  {"tb": table, "stream": stream})
    top = top_rows[0].get("top") if top_rows else None
    top = top if isinstance(top, int) else 0
    expected, prev, last_key = 1, GENESIS, ""
    hashes: dict[int, str] = {}
    for lo in range(0, top, PAGE):
        rows = await store.select(f"read links {lo + 1}-{lo + PAGE} of the {stream} chain",
                                  _Q_WINDOW, {"tb": table, "stream": stream, "lo": lo, "hi": lo + PAGE})
        for row in rows:
            key = str(row.get("id"))
            rec = f"{table}:{key}"
            integ = row.get("integrity") or {}
            seq, claimed_prev = integ.get("seq"), integ.get("prev")
            claimed_content, claimed_hash = integ.get("content"), integ.get("hash")
            if not isinstance(seq, int):
                continue
            check.links += 1
            if seq < expected:
                out.add(seq, rec, f"two records claim link {seq} ({table}:{last_key} and {key})",
                        "two writers appended to this store at once (only one process may write "
                        "a store), or a record was copied by hand")
                continue
            if seq > expected:
                gap = f"link {expected}" if seq == expected + 1 else f"links {expected}-{seq - 1}"
                out.add(expected, f"{table}:? (before {key})", f"{gap} of the chain are missing", _DELETED)
            doc = {k: v for k, v in row.items() if k != "id"}
            if content_hash(doc) != claimed_content:
                out.add(seq, rec, "its content does not match the hash written with it: it was "
                        "edited after it was written", _EDITED)
            elif seq == expected and claimed_prev != prev:
                follows = f"link {seq - 1}" if seq > 1 else "the start of the chain"
                out.add(seq, rec, f"it does not follow {follows}: records were reordered, or "
                        "the record before it was replaced", _EDITED)
            elif link_hash(stream, seq, key, str(claimed_prev), str(claimed_content)) != claimed_hash:
                out.add(seq, rec, "its integrity fields were altered (the link hash does not match "
                        "its position, id and content)", _EDITED)
            prev = str(claimed_hash)
            hashes[seq] = prev
            expected, last_key = seq + 1, key
            if stream == "reports" and isinstance(row.get("report_id"), str) \
                    and isinstance(row.get("revision"), int):
                chained[key] = (row["report_id"], row["revision"], str(claimed_content), seq)
    last = expected - 1
    head = await _head(store, stream)
    if head is None:
        if check.links:
            out.add(last, f"{HEAD_TABLE}:{stream}", "the chain head record is missing",
                    "it was deleted; without it, records deleted from the end go unnoticed. "
                    "Restore it from a backup")
        return
    check.head_seq, check.head_hash = head
    if head[0] < 0:
        out.add(None, f"{HEAD_TABLE}:{stream}", "the chain head record is unreadable", _EDITED)
    elif head[0] > last:
        gap = f"link {last + 1}" if head[0] == last + 1 else f"links {last + 1}-{head[0]}"
        out.add(last + 1, f"{table}:? (after link {last})",
                f"{gap} at the end of the chain are missing (the head names link {head[0]})", _DELETED)
    elif head[0] > 0 and hashes.get(head[0]) not in (None, head[1]):
        out.add(head[0], f"{HEAD_TABLE}:{stream}", f"the chain head does not match link {head[0]}",
                _EDITED)
    else:
        check.head_lag = last - head[0]


async def _unchained(store: _Reader, stream: str, out: _Collector) -> None:
    table = STREAMS[stream]
    rows = await store.select(f"find {table} records outside the {stream} chain", _Q_UNCHAINED,
                              {"tb": table, "stream": stream, "limit": MAX_PROBLEMS})
    for r in rows:
        out.add(None, f"{table}:{r.get('key')}", "it is not in the chain (no integrity fields)",
                "it was inserted by hand or by a writer that bypassed the chain; do not trust it")


async def _reports(store: _Reader, out: _Collector, chained: dict[str, _Chained]) -> int:
    """Each report record must copy its newest chained revision, and exist if that does."""
    newest: dict[str, _Chained] = {}
    for c in chained.values():
        if c[0] not in newest or c[1] > newest[c[0]][1]:
            newest[c[0]] = c
    seen: set[str] = set()
    start = 0
    while True:
        rows = await store.select("read reports", _Q_REPORTS_PAGE, {"limit": PAGE, "start": start})
        start += len(rows)
        for row in rows:
            rid = str(row.get("id"))
            seen.add(rid)
            integ = row.get("integrity") or {}
            copies = chained.get(str(integ.get("revision_id")))
            top = newest.get(rid)
            rec = f"report:{rid}"
            if not isinstance(integ.get("content"), str):
                out.add(None, rec, "it is not in the chain (no integrity fields; written by an older "
                        "version or by hand)", "its revisions cannot be verified")
            elif copies is None or copies[0] != rid:
                out.add(None, rec, f"the revision it copies ({integ.get('revision_id')}) is not in the "
                        "chain", _DELETED)
            elif content_hash(row, exclude=("id", *REPORT_META)) != integ["content"] \
                    or integ["content"] != copies[2]:
                out.add(copies[3], rec, f"it does not match revision {copies[1]}, which it copies: it "
                        "was edited after it was written", _EDITED)
            elif top is not None and top[1] > copies[1]:
                out.add(top[3], rec, f"it copies revision {copies[1]} but revision {top[1]} is newer: "
                        "it was rolled back, or its writer stopped before updating it",
                        "replay the pipeline's input (it rewrites the report record), or restore it "
                        "from a backup")
        if len(rows) < PAGE:
            break
    for rid, (_, rev, _, seq) in newest.items():
        if rid not in seen:
            out.add(seq, f"report:{rid}", f"the report record is missing (its revision {rev} is in "
                    "the chain)", _DELETED)
    return len(seen)


async def verify(store: _Reader) -> Verification:
    """Walk every stream of the store and check every link (see the module docstring)."""
    total = [0]
    checks: list[StreamCheck] = []
    chained: dict[str, _Chained] = {}
    reports = 0
    for stream, table in STREAMS.items():
        check = StreamCheck(stream, table)
        col = _Collector(check, total)
        await _walk(store, stream, check, col, chained)
        await _unchained(store, stream, col)
        if stream == "reports":
            reports = await _reports(store, col, chained)
        checks.append(check)
    return Verification(checks, reports_checked=reports, problems_total=total[0])
