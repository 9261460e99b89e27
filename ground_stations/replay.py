"""File replay: market ticks or event rows from CSV / JSON Lines, replayed on the station clock.

This module owns :class:`FileReplaySource` and :data:`FILE_FORMATS` (file extension to
format, also used by the probe's kind detection). The helpers every real source shares
live elsewhere: :func:`~convergence.timeparse.parse_time` and
:func:`~convergence.timeparse.to_number` in ``convergence.timeparse``;
:class:`~convergence.ground_stations.base.RejectBuffer` and
:func:`~convergence.ground_stations.base.check_record` in ``ground_stations.base``.

Rows
----
One row per line. CSV files need a header; JSON Lines files hold one object per line
with the same keys. Column names are matched case-insensitively (``rename`` maps other
names onto ours, e.g. ``{"Date": "timestamp", "Close": "price"}``).

==================  =========================================================================
station kind        columns read
==================  =========================================================================
``market_price``    ``timestamp``, ``price`` (or ``value``), optional ``symbol``/``source``,
                    ``category`` (default ``trade``)
``market_volume``   ``timestamp``, ``volume`` (or ``value``), same optional columns
anything else       ``timestamp``, ``category``, optional ``value`` (default 1.0), ``text``,
                    ``lat`` + ``lon``, ``source``
==================  =========================================================================

``event_time_s`` (the event's own field) is read as the time when a row has no
``timestamp``, so events exported as JSON Lines replay as they are.

A tick file ``timestamp,symbol,price,volume`` therefore feeds two stations: a
``market_price`` one and a ``market_volume`` one, one record per row each. Timestamps
are unix seconds or ISO-8601 (naive means UTC) between 1970 and 9999; numbers of 1e11
or more are read as unix *milliseconds* (1e11 seconds would be the year 5138).

Re-stamping
-----------
Replayed history would fail the edge's "not absurdly old" check, so each record is
re-stamped onto the station clock: with ``speed=S`` the first row maps to the start
time ``W0`` (``start_s``, or the clock at the first poll) and a row stamped ``T`` gets
``event_time_s = W0 + (T - T0) / S`` and is released by the first poll at or after that
time (rows earlier than the first row get ``W0``). With ``speed=None`` rows are released
as fast as possible, at most ``batch_rows`` per poll, stamped with the poll's clock.
The schema has no field for the original time, so when re-stamping changed it, it is kept
at the end of ``text`` as ``[orig 2024-05-01T12:00:00Z]``; that also keeps two equal rows from different
times from collapsing into one event id. ``restamp=False`` keeps the original times
instead (the edge then judges their age).

Bad input: the dead-letter design shared by every real source
--------------------------------------------------------------
``poll()`` never raises because of bad *input*. Each bad row, line, item or response
becomes one :class:`~convergence.schema.DeadLetter` (stage ``source.<kind>``) whose
reason names where it came from (file and line, or URL and item) and what to do; the
source keeps them in ``rejects`` (bounded: past ``max_rejects`` the overflow is counted
in ``rejects_dropped`` and logged, never silent) until the caller takes them with
``drain_rejects()`` after each poll and sends them to the dead-letter topic/table.
Records the source does return have already passed
:func:`~convergence.schema.validate_event` at the poll's clock, so a reason can name
the line; the edge validates again anyway. ``poll()`` raises
:class:`~convergence.ground_stations.base.SourceError` only when the source itself
cannot be read (missing file, I/O error, HTTP failure), which is what the station
agent's circuit breaker is for.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from convergence.ground_stations.base import (
    RejectBuffer,
    RejectingSource,
    SourceError,
    check_record,
)
from convergence.schema import (
    Limits,
    SourceKind,
    ValidationError,
)
from convergence.stations import StationInfo
from convergence.timeparse import parse_time, to_number
from convergence.wire import certainly_valid

log = logging.getLogger(__name__)

_HEAD_KEPT = 256  # bytes of an over-long line kept in its dead letter
_NAMED_KEY_SETS = 64  # JSON Lines key sets whose column names a source remembers
_CSV_SPECIAL = re.compile(r'["\r\n\x00]')
#: file extension -> format read by :class:`FileReplaySource`
FILE_FORMATS: Mapping[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def iso_utc(t: float) -> str:
    """``2024-05-01T12:00:00Z`` (sub-second digits only when present)."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return dt.strftime(fmt)


@dataclass(frozen=True, slots=True)
class _Row:
    line_no: int
    t: float
    rec: dict[str, Any]  # everything except event_time_s
    payload: str


class _BadRow(ValueError):
    """One row is unusable: ``field`` names the culprit, ``reason`` is a whole sentence."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class FileReplaySource(RejectingSource):
    """Replays a CSV or JSON Lines file (ticks or event rows) at a chosen speed-up.

    See the module docstring for the columns, the re-stamping of event times and the
    dead-letter design.

    Parameters
    ----------
    path
        The file. ``.csv`` is CSV; ``.jsonl``/``.ndjson`` is JSON Lines; otherwise pass ``fmt``.
    station
        The station this source feeds; its source kind decides which columns are read.
    speed
        Data seconds per wall second (``60`` = one hour of data per minute), or ``None``
        to release rows as fast as possible.
    batch_rows
        At most this many lines (good rows, bad rows, blank lines; not the CSV header) are
        read per poll, so one poll stays short.
    fmt
        ``"csv"`` or ``"jsonl"`` when the extension does not say.
    start_s
        Station time the first row maps to (default: the clock at the first poll).
    restamp
        ``False`` keeps the original timestamps instead of re-stamping.
    rename
        File column name -> our column name.
    limits
        Edge limits (text length, event size, future tolerance).
    max_rejects
        Undrained dead letters kept (see :class:`RejectBuffer`).

    Examples
    --------
    >>> import asyncio, tempfile, os
    >>> from convergence.stations import StationInfo
    >>> fd, path = tempfile.mkstemp(suffix=".csv"); os.close(fd)
    >>> with open(path, "w") as fh:
    ...     _ = fh.write("timestamp,symbol,price,volume\\n"
    ...                  "2024-05-01T12:00:00Z,ACME,101.5,300\\n"
    ...                  "2024-05-01T12:01:00Z,ACME,oops,200\\n"
    ...                  "2024-05-01T13:00:00Z,ACME,102.0,100\\n")
    >>> src = FileReplaySource(path, StationInfo("px-1", "market_price"), speed=60.0)
    >>> [(r["event_time_s"], r["value"], r["source"]) for r in asyncio.run(src.poll(1_800_000_000.0))]
    [(1800000000.0, 101.5, 'ACME')]
    >>> asyncio.run(src.poll(1_800_000_059.0)), [d.field for d in src.drain_rejects()]
    ([], ['price'])
    >>> [(r["event_time_s"], r["text"]) for r in asyncio.run(src.poll(1_800_000_060.0))]
    [(1800000060.0, '[orig 2024-05-01T13:00:00Z]')]
    >>> src.done
    True
    >>> os.remove(path)
    """

    kind = "replay"

    def __init__(
        self,
        path: str | Path,
        station: StationInfo,
        *,
        speed: float | None = 60.0,
        batch_rows: int = 1000,
        fmt: str | None = None,
        start_s: float | None = None,
        restamp: bool = True,
        rename: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        max_rejects: int = 10_000,
    ) -> None:
        self.path = Path(path)
        if fmt is None:
            fmt = FILE_FORMATS.get(self.path.suffix.lower())
            if fmt is None:
                raise ValueError(f"cannot tell the format of {self.path} from its extension; "
                                 "pass fmt='csv' or fmt='jsonl'")
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be > 0 (data seconds per wall second) or None, got {speed}")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        station.kind  # noqa: B018 - an unknown source kind fails here, not in every poll
        self.station = station
        self.speed = speed
        self.batch_rows = batch_rows
        self.fmt = fmt
        self.kind = fmt
        self.start_s = start_s
        self.restamp = restamp
        self.rename = {k.strip().lower(): v.strip().lower() for k, v in (rename or {}).items()}
        self.limits = limits or Limits()
        self.max_rejects = max_rejects
        self._reset()

    def _reset(self) -> None:
        self._fh: IO[bytes] | None = None
        self._line_no = 0
        self._header: list[str] | None = None
        self._header_line = 0
        self._pending: _Row | None = None
        self._t0: float | None = None
        self._w0: float | None = None
        self._eof = False
        self._rejects = RejectBuffer(f"source.{self.fmt}", self.station.station_id, self.max_rejects)
        self._names: dict[tuple[str, ...], list[str]] = {}
        self.lines_read = 0
        self.emitted = 0


    def first_time(self) -> float | None:
        """The time of the file's first good row (``None``: it has none), read without
        touching this source: where a backtest's simulated clock starts.

        Raises :class:`~convergence.ground_stations.base.SourceError` if the file cannot be
        read."""
        peek = FileReplaySource(self.path, self.station, speed=self.speed, fmt=self.fmt,
                                restamp=self.restamp, rename=self.rename, limits=self.limits,
                                max_rejects=1)
        try:
            while (got := peek._read_line(time.time())) is not None:
                row = peek._parse(got[0], got[1], time.time())
                if row is not None:
                    return row.t
            return None
        finally:
            peek.close_file()

    @property
    def done(self) -> bool:
        """Every line has been read and every good row released."""
        return self._eof and self._pending is None

    # -- reading ------------------------------------------------------------------------
    def _where(self, line_no: int) -> str:
        return f"file {self.path} line {line_no}"

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            try:
                self._fh = self.path.open("rb")
            except OSError as exc:
                raise SourceError(f"cannot open replay file {self.path}: {exc.strerror or exc}; "
                                  "check the path and its permissions") from None
        return self._fh

    def _read_line(self, now_s: float) -> tuple[int, str] | None:
        """The next line as text, or ``None`` at the end of the file.

        Lines are read with a byte cap so one enormous line cannot exhaust memory; an
        over-long or non-UTF-8 line becomes a dead letter and reads as an empty line.
        """
        fh = self._open()
        cap = self.limits.max_event_bytes
        try:
            chunk = fh.readline(cap + 1)
            if not chunk:
                return None
            self._line_no += 1
            n = self._line_no
            if len(chunk) > cap and not chunk.endswith(b"\n"):
                head, size = chunk[:_HEAD_KEPT], len(chunk)
                while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line
                    chunk = fh.readline(1 << 20)
                    size += len(chunk)
                self._rejects.add(head, "line", f"{self._where(n)}: is {size} bytes long; the limit is "
                                  f"{cap} (max_event_bytes). Is this the right file?", now_s=now_s)
                return n, ""
        except OSError as exc:
            raise SourceError(f"cannot read replay file {self.path} after line {self._line_no}: "
                              f"{exc.strerror or exc}") from None
        if n == 1 and chunk.startswith(b"\xef\xbb\xbf"):  # Excel's byte-order mark
            chunk = chunk[3:]
        try:
            return n, chunk.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            self._rejects.add(chunk, "line", f"{self._where(n)}: is not UTF-8 text ({exc.reason} at "
                              f"byte {exc.start}); re-export the file as UTF-8", now_s=now_s)
            return n, ""

    def _fields(self, line_no: int, text: str) -> dict[str, Any] | None:
        """Column -> raw value for one line; ``None`` for the CSV header line."""
        if self.fmt == "jsonl":
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise _BadRow("line", f"is not valid JSON ({exc}); each line must be one "
                                      "JSON object") from None
            if not isinstance(obj, dict):
                raise _BadRow("line", f"is a JSON {type(obj).__name__}, not an object")
            # null reads like an empty CSV cell: the column is absent. Lines of a file
            # share their keys: each set of keys is named once (a few sets at most)
            keys = tuple(obj)
            names = self._names.get(keys)
            if names is None:
                names = [self.rename.get(k.strip().lower(), k.strip().lower()) for k in keys]
                if len(self._names) < _NAMED_KEY_SETS:
                    self._names[keys] = names
            return {n: v for n, v in zip(names, obj.values(), strict=True) if v is not None}
        try:
            # a line without quotes (or line breaks, NULs) is its cells split on commas
            cells = (text.split(",") if not _CSV_SPECIAL.search(text)
                     else next(csv.reader([text], strict=True)))
        except csv.Error as exc:
            raise _BadRow("line", f"is malformed CSV ({exc}); quote fields that contain commas, "
                                  "and keep each row on one line") from None
        if self._header is None:
            self._header = [self.rename.get(c.strip().lower(), c.strip().lower()) for c in cells]
            self._header_line = line_no
            return None
        if len(cells) != len(self._header):
            raise _BadRow("line", f"has {len(cells)} fields; the header on line {self._header_line} "
                                  f"has {len(self._header)} ({','.join(self._header)})")
        return {k: v for k, v in zip(self._header, cells, strict=True) if v.strip() != ""}

    def _missing(self, col: str, why: str) -> _BadRow:
        if self.fmt == "csv" and self._header is not None:
            return _BadRow(col, f"has no '{col}' column ({why}); the header on line "
                                f"{self._header_line} names: {','.join(self._header)}")
        return _BadRow(col, f"has no '{col}' key ({why})")

    def _build(self, f: Mapping[str, Any], now_s: float) -> tuple[float, dict[str, Any]]:
        kind = self.station.kind
        # an exported event (JSON Lines of Event.to_dict()) carries its time as event_time_s
        time_col = "timestamp" if "timestamp" in f or "event_time_s" not in f else "event_time_s"
        if time_col not in f:
            raise self._missing("timestamp", "every row needs its time; event_time_s works too")
        try:
            t = parse_time(f[time_col])
        except ValueError as exc:
            raise _BadRow(time_col, f"{time_col} {exc}") from None
        # history is older than now - the real now: a simulated clock may run in the past
        # of a recording (a re-stamped row is judged again at its new time when released);
        # the real clock is read only for a row ahead of the station's
        if t > now_s + self.limits.max_future_s:
            now = max(now_s, time.time())
            if t > now + self.limits.max_future_s:
                raise _BadRow("timestamp", f"timestamp {iso_utc(t)} is {t - now:.0f} s after the "
                                           f"station clock ({iso_utc(now)}); a replay file holds "
                                           "history. Fix the row or the station's clock")
        rec: dict[str, Any] = {"station_id": self.station.station_id, "source_kind": kind.value}
        if kind in (SourceKind.MARKET_PRICE, SourceKind.MARKET_VOLUME):
            wanted = "price" if kind == SourceKind.MARKET_PRICE else "volume"
            value_col = wanted if wanted in f else "value"
            if value_col not in f:
                raise self._missing(wanted, f"a {kind.value} station replays "
                                            "timestamp,symbol,price,volume rows")
            rec["category"] = f.get("category", "trade")
        else:
            value_col = "value"
            if "category" not in f:
                raise self._missing("category", f"a {kind.value} station replays "
                                                "timestamp,category,text,lat,lon[,value] rows")
            rec["category"] = f["category"]
        numbers = [(value_col, "value"), ("lat", "lat"), ("lon", "lon")]
        for col, name in numbers:
            if col in f:
                try:
                    rec[name] = to_number(f[col])
                except ValueError as exc:
                    raise _BadRow(col, f"{col} {exc}") from None
        rec.setdefault("value", 1.0)  # an event row without a value counts one occurrence
        src = f.get("symbol", f.get("source"))
        if src is not None:
            # a numeric symbol (a ticker id) is still a name; anything else the check names
            rec["source"] = str(src) if isinstance(src, int) and not isinstance(src, bool) else src
        text = f.get("text")
        if text is not None:
            if isinstance(text, str) and len(text) > self.limits.max_text_chars:
                raise _BadRow("text", f"text is {len(text)} characters long; the limit is "
                                      f"{self.limits.max_text_chars} (max_text_chars)")
            rec["text"] = text
        return t, rec

    def _parse(self, line_no: int, text: str, now_s: float) -> _Row | None:
        if not text.strip():
            return None
        try:
            fields = self._fields(line_no, text)
            if fields is None:
                return None
            t, rec = self._build(fields, now_s)
        except _BadRow as bad:
            self._rejects.add(text, bad.field, f"{self._where(line_no)}: {bad.reason}", now_s=now_s)
            return None
        except Exception as exc:  # a bug must not stop the replay: keep the row, say so loudly
            log.exception("replay of %s: unexpected error on line %d", self.path, line_no)
            self._rejects.add(text, "line", f"{self._where(line_no)}: unexpected {type(exc).__name__} "
                              f"({exc}); this is a bug in the replay source, please report it with "
                              "this row", now_s=now_s)
            return None
        return _Row(line_no, t, rec, text)

    def _stamp(self, row: _Row, event_time_s: float, *, note: bool) -> dict[str, Any]:
        """The row's record at its (re-stamped) time, the original time kept in the text."""
        rec = dict(row.rec)
        rec["event_time_s"] = round(event_time_s, 6)
        if note:  # re-stamped onto another time: the original goes with the text
            orig = f"[orig {iso_utc(row.t)}]"
            text = rec.get("text")
            if isinstance(text, str) and text:
                # the note must fit: only a text already near the limit loses its tail
                rec["text"] = f"{text[: self.limits.max_text_chars - len(orig) - 1]} {orig}"
            elif text is None or text == "":
                rec["text"] = orig
        return rec

    def _checked(self, rows: list[_Row], recs: list[dict[str, Any]],
                 now_s: float) -> list[dict[str, Any]]:
        """The records the edge will accept; each other one a dead letter naming its line.
        Judged in columns (the batch at once); a record the columns doubt is checked on
        its own, which says why."""
        sure = certainly_valid(recs, now_s=now_s, limits=self.limits).tolist()
        cap = self.limits.max_event_bytes
        out = []
        for row, rec, ok in zip(rows, recs, sure, strict=True):
            try:
                if ok:
                    try:
                        ok = len(orjson.dumps(rec)) <= cap
                    except TypeError:  # cannot be encoded: the check says why
                        ok = False
                if not ok:
                    check_record(rec, now_s=now_s, limits=self.limits)
            except ValidationError as err:
                self._rejects.add(row.payload, err.field,
                                  f"{self._where(row.line_no)}: {err.field} {err.reason}",
                                  now_s=now_s)
                continue
            out.append(rec)
        return out

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        # Reading is synchronous on purpose: a poll reads at most batch_rows lines of a
        # local file, and a thread would let a timed-out poll race the next one.
        if not self._eof:
            self._open()  # before the start time is fixed: a file that appears late starts late
        if self._w0 is None:
            self._w0 = now_s if self.start_s is None else self.start_s
        rows: list[_Row] = []
        recs: list[dict[str, Any]] = []
        examined = 0
        while examined < self.batch_rows:
            if self._pending is None:
                if self._eof:
                    break
                examined += self._read_row(now_s)
                if self._pending is None:
                    continue
            row = self._pending
            assert row is not None and self._t0 is not None
            if self.speed is None:
                due = now_s
            else:
                due = self._w0 + max(0.0, row.t - self._t0) / self.speed
                if due > now_s:
                    break
            self._pending = None
            rows.append(row)
            recs.append(self._stamp(row, due if self.restamp else row.t,
                                    note=self.restamp and abs(due - row.t) > 1e-3))
        out = self._checked(rows, recs, now_s) if recs else []
        self.emitted += len(out)
        return out

    def _read_row(self, now_s: float) -> int:
        """Read the next line into ``_pending`` (when it is a good row); the number of rows
        it counts as examined (0 for the CSV header and the end of the file)."""
        got = self._read_line(now_s)
        if got is None:
            self._eof = True
            self.close_file()
            return 0
        self.lines_read += 1
        # the header is not a row: batch_rows counts rows, good or bad
        counted = 0 if (self.fmt == "csv" and self._header is None and got[1].strip()) else 1
        row = self._parse(got[0], got[1], now_s)
        if row is not None:
            if self._t0 is None:
                self._t0 = row.t
            self._pending = row
        return counted

    def next_due_s(self, now_s: float) -> float | None:
        """When the next good row is due on the station clock (reading up to it, at most
        ``batch_rows`` lines: past bad lines too, whose dead letters wait for the next
        drain); ``math.inf`` at the end of the file; ``None`` before the first poll or
        when rows are released as fast as possible (``speed=None``)."""
        if self.speed is None or self._w0 is None:
            return None
        examined = 0
        while self._pending is None and not self._eof and examined < self.batch_rows:
            examined += self._read_row(now_s) or 1
        if self._pending is None:
            return math.inf if self._eof else now_s  # only bad lines so far: poll again now
        assert self._t0 is not None
        return self._w0 + max(0.0, self._pending.t - self._t0) / self.speed

    def close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    async def close(self) -> None:
        self.close_file()
