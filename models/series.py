"""Reading a ``timestamp,value`` history from CSV, with errors that name the line.

The file needs a header with ``timestamp`` and ``value`` columns (any order, other
columns ignored). A timestamp is unix seconds (``1714000000`` or ``1714000000.5``) or
ISO-8601 (``2024-04-25T00:00:00Z``; without an offset it is taken as UTC).
Timestamps must strictly increase; values must be finite numbers. Blank lines are
skipped. Anything else stops the read with :class:`SeriesError` naming the file,
the line number and what is wrong, because a silently skipped row would shift every
regime label after it.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "s.csv"
>>> _ = path.write_text("timestamp,value\\n2024-01-01T00:00:00Z,100\\n1704067260,101.5\\n")
>>> s = read_series(path)
>>> s.timestamps.tolist(), s.values.tolist(), s.text
([1704067200.0, 1704067260.0], [100.0, 101.5], ('2024-01-01T00:00:00Z', '1704067260'))
>>> _ = path.write_text("timestamp,value\\n1,2\\n2,oops\\n")
>>> try:
...     read_series(path)
... except SeriesError as exc:
...     print(str(exc).split("s.csv ")[1])
line 3: value 'oops' is not a number
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from convergence.timeparse import parse_time, to_number

__all__ = ["Series", "SeriesError", "parse_timestamp", "read_series"]


class SeriesError(ValueError):
    """The CSV cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Series:
    """A validated history: float seconds, float values, and the timestamps as written."""

    timestamps: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    text: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.values.shape[0])


def parse_timestamp(raw: str) -> float:
    """Unix seconds from ``raw`` (unix seconds or milliseconds, or ISO-8601; naive ISO is UTC)."""
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise ValueError(f"timestamp {exc}") from None


def read_series(path: Path) -> Series:
    """Read and validate a ``timestamp,value`` CSV file."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")  # -sig: Excel's byte-order mark
    except OSError as exc:
        raise SeriesError(f"cannot open {path}: {exc.strerror or exc}") from None
    stamps: list[float] = []
    values: list[float] = []
    text: list[str] = []
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
                if stamps and t <= stamps[-1]:
                    raise SeriesError(f"{where}: timestamp {row[ti].strip()!r} is not after the "
                                      f"previous row's {text[-1]!r}; sort the file by time and "
                                      "drop duplicate rows")
                stamps.append(t)
                values.append(v)
                text.append(row[ti].strip())
        except csv.Error as exc:
            raise SeriesError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise SeriesError(f"{path} is not UTF-8 text ({exc.reason}); is it a CSV file?") from None
    if not values:
        raise SeriesError(f"{path} has a header but no data rows")
    return Series(np.asarray(stamps), np.asarray(values), tuple(text))
