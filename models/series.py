"""Reading a ``timestamp,value`` history from CSV, with errors that name the line.

The file needs a header with ``timestamp`` and ``value`` columns (any order, other
columns ignored). A timestamp is unix seconds (``1714000000`` or ``1714000000.5``) or
ISO-8601 (``2024-04-25T00:00:00Z``; without an offset it is taken as UTC; dates before
1970 are fine, historical series have them). Values must be finite numbers. Blank lines
are skipped. A malformed row stops the read with :class:`SeriesError` naming the file,
the line number and what is wrong, because a silently skipped row would shift every
label after it.

Real exports are not always in order: a logger restart re-sends rows, a DST change or a
merge of two files puts some out of order. Those are accepted, and ``Series.notes``
says what was done:

* rows out of order are sorted into place when they are at most ``max_disorder_rows``
  rows late (a bounded window, as a stream would hold them); rows later than that are
  dropped, since a causal detector has already moved past them;
* rows sharing a timestamp are merged into one row with their mean value (a label
  column, if asked for, keeps the largest label).

``Series.row_of`` maps every data row of the file, in file order, to its row in the
series (``-1`` if it was dropped), so per-row facts such as labels can follow.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "s.csv"
>>> _ = path.write_text("timestamp,value\\n2024-01-01T00:00:00Z,100\\n1704067260,101.5\\n")
>>> s = read_series(path)
>>> s.timestamps.tolist(), s.values.tolist(), s.text
([1704067200.0, 1704067260.0], [100.0, 101.5], ('2024-01-01T00:00:00Z', '1704067260'))
>>> _ = path.write_text("timestamp,value\\n3,1\\n1,2\\n3,5\\n")
>>> s = read_series(path)
>>> s.timestamps.tolist(), s.values.tolist(), s.row_of.tolist()
([1.0, 3.0], [2.0, 3.0], [1, 0, 1])
>>> print("\\n".join(s.notes))
sorted 1 row that arrived out of order (at most 1 row late)
merged 2 rows sharing a timestamp into 1 (their mean value)
>>> _ = path.write_text("timestamp,value\\n1,2\\n2,oops\\n")
>>> try:
...     read_series(path)
... except SeriesError as exc:
...     print(str(exc).split("s.csv ")[1])
line 3: value 'oops' is not a number
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from convergence.timeparse import parse_time, to_number

__all__ = ["MAX_DISORDER_ROWS", "Series", "SeriesError", "parse_timestamp", "read_series"]

#: how many rows late a row may arrive and still be sorted into place
MAX_DISORDER_ROWS = 1000


class SeriesError(ValueError):
    """The CSV cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Series:
    """A validated history: float seconds, float values, and the timestamps as written.

    ``notes`` say what was done to out-of-order and duplicate rows; ``row_of`` maps each
    data row of the file to its row here (``-1``: dropped); ``labels`` holds the label
    column when one was asked for.
    """

    timestamps: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    text: tuple[str, ...]
    notes: tuple[str, ...] = ()
    row_of: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    labels: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def parse_timestamp(raw: str) -> float:
    """Unix seconds from ``raw`` (unix seconds or milliseconds, or ISO-8601; naive ISO is UTC).

    ISO-8601 dates before 1970 give negative seconds (historical series have them).
    """
    try:
        return parse_time(raw)
    except ValueError as exc:
        early = _iso_before_1970(raw)
        if early is not None:
            return early
        raise ValueError(f"timestamp {exc}") from None


def _iso_before_1970(raw: str) -> float | None:
    text = raw.strip()
    if not text[:1].isdigit() or len(text) > 64:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    return t if t < 0 else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _tidy(stamps: npt.NDArray[np.float64], max_disorder_rows: int) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.bool_], list[str]]:
    """Order rows by time within the bounded window: (order of kept rows, kept mask, notes)."""
    n = stamps.shape[0]
    notes: list[str] = []
    # a row is too late when a row at least max_disorder_rows before it was already later
    keep = np.ones(n, bool)
    if n > max_disorder_rows:
        running = np.maximum.accumulate(stamps)
        ahead = np.r_[np.full(max_disorder_rows, -np.inf), running[:-max_disorder_rows]]
        keep = stamps >= ahead
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(stamps[idx], kind="stable")]
    moved = order != idx
    if moved.any():
        late = np.flatnonzero(np.diff(stamps[idx]) < 0) + 1
        pos = np.empty(n, np.int64)
        pos[order] = np.arange(order.shape[0])
        lag = int((np.arange(idx.shape[0]) - pos[idx]).max())
        notes.append(f"sorted {_plural(int(late.size), 'row')} that arrived out of order "
                     f"(at most {_plural(lag, 'row')} late)")
    if not keep.all():
        notes.append(f"dropped {_plural(int((~keep).sum()), 'row')} that arrived more than "
                     f"{max_disorder_rows} rows out of order")
    return order, keep, notes


def read_series(path: Path, *, label_column: str | None = None,
                max_disorder_rows: int = MAX_DISORDER_ROWS) -> Series:
    """Read and validate a ``timestamp,value`` CSV file (see the module docstring).

    ``label_column`` names an extra 0/1 column to carry along (e.g. ``is_anomaly``).
    """
    path = Path(path)
    if max_disorder_rows < 1:
        raise ValueError(f"max_disorder_rows must be >= 1, got {max_disorder_rows}")
    try:
        fh = path.open(newline="", encoding="utf-8-sig")  # -sig: Excel's byte-order mark
    except OSError as exc:
        raise SeriesError(f"cannot open {path}: {exc.strerror or exc}") from None
    stamps: list[float] = []
    values: list[float] = []
    text: list[str] = []
    labels: list[int] = []
    with fh:
        reader = csv.reader(fh)
        try:
            header = next((row for row in reader if any(c.strip() for c in row)), None)
            if header is None:
                raise SeriesError(f"{path} is empty; expected a header 'timestamp,value' "
                                  "and one row per tick")
            cols = [c.strip().lower() for c in header]
            if "timestamp" not in cols or "value" not in cols:
                raise SeriesError(f"{path} line {reader.line_num}: header must name the columns "
                                  f"'timestamp' and 'value', got {','.join(header)!r}")
            ti, vi = cols.index("timestamp"), cols.index("value")
            li = -1
            if label_column is not None:
                if label_column.lower() not in cols:
                    raise SeriesError(f"{path} line {reader.line_num}: header has no label column "
                                      f"{label_column!r}, got {','.join(header)!r}")
                li = cols.index(label_column.lower())
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                where = f"{path} line {reader.line_num}"
                if len(row) != len(header):
                    raise SeriesError(f"{where}: expected {len(header)} fields like the header, "
                                      f"got {len(row)}: {','.join(row)!r}")
                try:
                    t = parse_timestamp(row[ti])
                except ValueError as exc:
                    raise SeriesError(f"{where}: {exc}") from None
                try:
                    v = to_number(row[vi].strip())
                except ValueError as exc:
                    raise SeriesError(f"{where}: value {exc}") from None
                if li >= 0:
                    lab = row[li].strip()
                    if lab not in ("0", "1"):
                        raise SeriesError(f"{where}: label {lab[:40]!r} in column {label_column!r} "
                                          "must be 0 or 1")
                    labels.append(int(lab))
                stamps.append(t)
                values.append(v)
                text.append(row[ti].strip())
        except csv.Error as exc:
            raise SeriesError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise SeriesError(f"{path} is not UTF-8 text ({exc.reason}); is it a CSV file?") from None
    if not values:
        raise SeriesError(f"{path} has a header but no data rows")
    return _assemble(np.asarray(stamps), np.asarray(values), text,
                     np.asarray(labels, np.int64) if li >= 0 else None, max_disorder_rows)


def _assemble(t: npt.NDArray[np.float64], v: npt.NDArray[np.float64], text: list[str],
              labels: npt.NDArray[np.int64] | None, max_disorder_rows: int) -> Series:
    """Sort within the window, merge equal timestamps, and say what was done."""
    order, _keep, notes = _tidy(t, max_disorder_rows)
    ts = t[order]
    new = np.r_[True, ts[1:] != ts[:-1]]  # first row of each distinct timestamp
    group = np.cumsum(new) - 1
    n_out = int(group[-1]) + 1 if group.size else 0
    row_of = np.full(t.shape[0], -1, np.int64)
    row_of[order] = group
    counts = np.bincount(group, minlength=n_out).astype(np.float64)
    # a mean that cannot overflow: each value divided by its group's size first
    vals = np.bincount(group, weights=v[order] / counts[group], minlength=n_out).astype(np.float64)
    out_labels = None
    if labels is not None:
        out_labels = np.zeros(n_out, np.int64)
        np.maximum.at(out_labels, group, labels[order])
    if n_out < ts.shape[0]:
        notes.append(f"merged {_plural(int(ts.shape[0] - n_out + (counts > 1).sum()), 'row')} sharing "
                     f"a timestamp into {int((counts > 1).sum())} (their mean value)")
    first = order[new]
    return Series(ts[new], vals, tuple(text[i] for i in first), tuple(notes), row_of, out_labels)
