"""Ingest bucketing: events to per-station, per-tick cells.

Events arrive as columns (:class:`EventColumns`: station position, event time, value,
category bin, content hash, source hash). :func:`bucket` turns one array of events into
dense cells for a range of ticks in a single vectorised pass (``bincount`` on a flat
``tick * stations + station`` key): event count, value sum / sum of squares / min / max /
last, a fixed-size category histogram and a 64-bit source bitmap whose popcount is the
distinct-source count (exact up to 64 sources per cell, a lower bound beyond).

:class:`TickAccumulator` is the streaming form: it keeps the open ticks, merges batches
into them, counts duplicates (same content hash) once, reports events that arrive after
their tick closed (beyond the allowed lateness) so the runtime can dead-letter them, and
closes ticks — contiguous, empty ones included — when the watermark passes them.

Examples
--------
>>> import numpy as np
>>> cols = EventColumns.from_arrays(station=[0, 0, 1], time_s=[0.2, 0.7, 1.5],
...                                 value=[1.0, 3.0, 5.0], category_bin=[2, 2, 3])
>>> cells = bucket(cols, t0_tick=0, n_ticks=2, n_stations=2, tick_s=1.0, n_bins=4)
>>> cells["count"].tolist(), cells["value_last"][0].tolist()
([[2.0, 0.0], [0.0, 1.0]], [3.0, 0.0])
>>> acc = TickAccumulator(n_stations=2, tick_s=1.0, allowed_lateness_s=0.5, n_bins=4)
>>> acc.add(cols).accepted
3
>>> [t for t, _ in acc.close_until(watermark_s=2.5)]
[0, 1]
>>> late = EventColumns.from_arrays(station=[1], time_s=[0.9], value=[1.0], category_bin=[0],
...                             event_hash=[99])
>>> acc.add(late).late_idx.tolist()
[0]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array, check_positive
from convergence.schema import EventBatch

N_CATEGORY_BINS = 16
CELL_FIELDS = (
    "count", "value_sum", "value_sumsq", "value_min", "value_max", "value_last",
    "last_time", "sources",
)


@lru_cache(maxsize=65536)
def category_bin(category: str, n_bins: int = N_CATEGORY_BINS) -> int:
    """Stable bin of a category name (BLAKE2b, so the same across processes)."""
    return int.from_bytes(hashlib.blake2b(category.encode(), digest_size=4).digest(), "little") % n_bins


@lru_cache(maxsize=65536)
def source_hash(source: str | None) -> int:
    """Stable 64-bit hash of an upstream source name (0 for none)."""
    if not source:
        return 0
    return int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "little")


@dataclass
class EventColumns:
    """A batch of events as parallel numpy arrays (what every stage consumes)."""

    station: npt.NDArray[np.int64]
    time_s: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    category_bin: npt.NDArray[np.int64]
    event_hash: npt.NDArray[np.uint64]
    source_hash: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return int(self.station.shape[0])

    @classmethod
    def from_arrays(
        cls,
        *,
        station: Sequence[int] | Array,
        time_s: Sequence[float] | Array,
        value: Sequence[float] | Array,
        category_bin: Sequence[int] | Array,
        event_hash: Sequence[int] | Array | None = None,
        source_hash: Sequence[int] | Array | None = None,
    ) -> EventColumns:
        st = np.asarray(station, dtype=np.int64)
        n = st.shape[0]
        eh = (np.arange(1, n + 1, dtype=np.uint64) if event_hash is None
              else np.asarray(event_hash, dtype=np.uint64))
        sh = np.zeros(n, np.uint64) if source_hash is None else np.asarray(source_hash, np.uint64)
        return cls(st, np.asarray(time_s, np.float64), np.asarray(value, np.float64),
                   np.asarray(category_bin, np.int64), eh, sh)

    @classmethod
    def from_events(cls, events: Sequence[Any], station_index: Any,
                    n_bins: int = N_CATEGORY_BINS) -> EventColumns:
        """Columns from :class:`convergence.schema.Event` objects.

        ``station_index(event) -> int`` maps an event to its station position
        (e.g. ``lambda e: registry.ensure(e.station_id, e.source_kind)``).
        """
        n = len(events)
        st = np.fromiter((station_index(e) for e in events), np.int64, n)
        t = np.fromiter((e.event_time_s for e in events), np.float64, n)
        v = np.fromiter((e.value for e in events), np.float64, n)
        c = np.fromiter((category_bin(e.category, n_bins) for e in events), np.int64, n)
        h = np.fromiter((int(e.event_id, 16) for e in events), np.uint64, n)
        s = np.fromiter((source_hash(e.source) for e in events), np.uint64, n)
        return cls(st, t, v, c, h, s)

    @classmethod
    def from_batch(cls, batch: EventBatch, station: Sequence[int] | Array,
                   n_bins: int = N_CATEGORY_BINS) -> EventColumns:
        """Columns of a validated :class:`~convergence.schema.EventBatch` (no event objects).

        ``station`` is each event's station position (e.g. from
        :meth:`~convergence.stations.StationRegistry.ensure_many`). A batch holds few
        distinct categories and sources, so each is binned or hashed once.

        >>> from convergence.schema import EventBatch, make_event
        >>> evs = [make_event("s1", "sensor", 1.5, "air", 2.0, source="a"),
        ...        make_event("s2", "sensor", 1.7, "air", 3.0)]
        >>> a = EventColumns.from_batch(EventBatch.from_events(evs), [0, 1])
        >>> b = EventColumns.from_events(evs, lambda e: int(e.station_id[1]) - 1)
        >>> all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
        ...     ("station", "time_s", "value", "category_bin", "event_hash", "source_hash"))
        True
        """
        n = len(batch)
        bins = {c: category_bin(c, n_bins) for c in set(batch.category)}
        sources = {s: source_hash(s) for s in set(batch.source)}
        return cls(np.asarray(station, dtype=np.int64), batch.event_time_s, batch.value,
                   np.fromiter(map(bins.__getitem__, batch.category), np.int64, n),
                   batch.event_hash,
                   np.fromiter(map(sources.__getitem__, batch.source), np.uint64, n))

    def take(self, idx: npt.NDArray[Any]) -> EventColumns:
        return EventColumns(self.station[idx], self.time_s[idx], self.value[idx],
                            self.category_bin[idx], self.event_hash[idx], self.source_hash[idx])


def empty_cells(shape: tuple[int, ...], n_bins: int) -> dict[str, Array]:
    """Cells with no events for leading ``shape`` (e.g. ``(ticks, stations)``)."""
    return {
        "count": np.zeros(shape),
        "value_sum": np.zeros(shape),
        "value_sumsq": np.zeros(shape),
        "value_min": np.full(shape, np.inf),
        "value_max": np.full(shape, -np.inf),
        "value_last": np.zeros(shape),
        "last_time": np.full(shape, -np.inf),
        "sources": np.zeros(shape, np.uint64),
        "hist": np.zeros(shape + (n_bins,)),
    }


def bucket(
    cols: EventColumns, *, t0_tick: int, n_ticks: int, n_stations: int, tick_s: float,
    n_bins: int = N_CATEGORY_BINS,
) -> dict[str, Array]:
    """Cells of shape ``(n_ticks, n_stations)`` for events in ticks ``[t0_tick, t0_tick+n_ticks)``.

    Events outside that range or with a station position outside ``[0, n_stations)`` are
    ignored (callers filter first; :class:`TickAccumulator` does).
    """
    tick = np.floor(cols.time_s / tick_s).astype(np.int64) - t0_tick
    ok = (tick >= 0) & (tick < n_ticks) & (cols.station >= 0) & (cols.station < n_stations)
    if not ok.all():
        cols, tick = cols.take(np.flatnonzero(ok)), tick[ok]
    size = n_ticks * n_stations
    key = tick * n_stations + cols.station
    shape = (n_ticks, n_stations)
    cells = empty_cells(shape, n_bins)
    if len(cols) == 0:
        return cells
    v = cols.value
    cells["count"] = np.bincount(key, minlength=size).astype(np.float64).reshape(shape)
    cells["value_sum"] = np.bincount(key, weights=v, minlength=size).reshape(shape)
    cells["value_sumsq"] = np.bincount(key, weights=v * v, minlength=size).reshape(shape)
    cells["hist"] = np.bincount(key * n_bins + cols.category_bin,
                                minlength=size * n_bins).astype(np.float64).reshape(shape + (n_bins,))
    vmin = cells["value_min"].reshape(-1)
    vmax = cells["value_max"].reshape(-1)
    np.minimum.at(vmin, key, v)
    np.maximum.at(vmax, key, v)
    # last value per cell. Batches almost always arrive time-ordered; then the last event
    # of a cell is simply its highest index (one O(n) ufunc.at, no sort)
    t_s = cols.time_s
    if t_s.size < 2 or bool((t_s[1:] >= t_s[:-1]).all()):
        last_idx = np.full(size, -1, np.int64)
        np.maximum.at(last_idx, key, np.arange(len(cols), dtype=np.int64))
        has = np.flatnonzero(last_idx >= 0)
        cells["value_last"].reshape(-1)[has] = v[last_idx[has]]
        cells["last_time"].reshape(-1)[has] = t_s[last_idx[has]]
    else:
        order = np.lexsort((t_s, key))
        k_sorted = key[order]
        last = np.flatnonzero(np.r_[k_sorted[1:] != k_sorted[:-1], True])
        cells["value_last"].reshape(-1)[k_sorted[last]] = v[order][last]
        cells["last_time"].reshape(-1)[k_sorted[last]] = t_s[order][last]
    bits = np.left_shift(np.uint64(1), (cols.source_hash % np.uint64(64)))
    bits[cols.source_hash == 0] = 0
    np.bitwise_or.at(cells["sources"].reshape(-1), key, bits)
    return cells


def finish_cells(cells: dict[str, Array]) -> dict[str, Array]:
    """Add derived fields: ``value_mean``, ``distinct_sources``; tidy empty cells."""
    n = cells["count"]
    has = n > 0
    out = dict(cells)
    out["value_mean"] = np.divide(cells["value_sum"], n, out=np.zeros_like(n), where=has)
    out["distinct_sources"] = np.bitwise_count(cells["sources"]).astype(np.float64)
    out["value_min"] = np.where(has, cells["value_min"], 0.0)
    out["value_max"] = np.where(has, cells["value_max"], 0.0)
    return out


def merge_cells(into: dict[str, Array], new: dict[str, Array]) -> None:
    """Merge ``new`` cells into ``into`` in place (same shapes)."""
    for name in ("count", "value_sum", "value_sumsq", "hist"):
        into[name] += new[name]
    np.minimum(into["value_min"], new["value_min"], out=into["value_min"])
    np.maximum(into["value_max"], new["value_max"], out=into["value_max"])
    newer = new["last_time"] >= into["last_time"]
    into["value_last"] = np.where(newer, new["value_last"], into["value_last"])
    into["last_time"] = np.where(newer, new["last_time"], into["last_time"])
    np.bitwise_or(into["sources"], new["sources"], out=into["sources"])


SeenChunk = tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]
_MAX_CHUNKS = 8


def _duplicates(t: npt.NDArray[np.float64], h: npt.NDArray[np.uint64],
                seen: Sequence[SeenChunk]) -> npt.NDArray[np.bool_]:
    """True for events whose content hash occurred earlier in the batch or in ``seen``.

    A content hash covers the event time, so equal hashes imply equal times: candidates
    are found by comparing *times*, which arrive sorted (cache-friendly binary search,
    no sort of the 64-bit hashes), and confirmed by comparing hashes.
    """
    n = t.shape[0]
    out = np.zeros(n, bool)
    if n == 0:
        return out
    order = None
    if n > 1 and not bool((t[1:] >= t[:-1]).all()):
        order = np.argsort(t, kind="stable")
        t, h = t[order], h[order]
    if n > 1:
        eq = np.flatnonzero(t[1:] == t[:-1]) + 1
        if eq.size:
            cand = np.unique(np.concatenate([eq - 1, eq]))
            _, first = np.unique(h[cand], return_index=True)
            rep = np.ones(cand.size, bool)
            rep[first] = False
            out[cand[rep]] = True
    for st, sh in seen:
        if st.size == 0:
            continue
        # only the batch's events within the chunk's time span can match it (a chunk is
        # one tick's, the batch may span many): two scalar searches bound them
        a = int(np.searchsorted(t, st[0], "left"))
        b = int(np.searchsorted(t, st[-1], "right"))
        if a >= b:
            continue
        left = np.searchsorted(st, t[a:b], "left")
        right = np.searchsorted(st, t[a:b], "right")
        cand = np.flatnonzero((right > left) & ~out[a:b])
        if cand.size:
            # the hash covers the time, so a hash found anywhere in the span of seen
            # events at these times is the same event: one vectorised test per chunk
            span = sh[left[cand].min():right[cand].max()]
            out[a + cand] |= np.isin(h[a + cand], span)
    if order is not None:
        back = np.empty(n, bool)
        back[order] = out
        return back
    return out


@dataclass
class AddResult:
    """What happened to a batch given to :meth:`TickAccumulator.add`."""

    accepted: int
    duplicates: int
    late_idx: npt.NDArray[np.int64]


@dataclass
class TickAccumulator:
    """Streaming bucketer: open ticks, dedup, lateness, contiguous closing.

    An event is late when its tick has closed. Until the first tick closes, an event
    older than the oldest open tick opens its own (a station that starts late sends what
    it recorded since the start; nothing downstream has seen those ticks yet):

    >>> from convergence.detectors.ingest import EventColumns
    >>> acc = TickAccumulator(n_stations=2, tick_s=1.0, allowed_lateness_s=0.0, n_bins=1)
    >>> one = lambda t: EventColumns.from_arrays(station=[0], time_s=[t], value=[1.0],
    ...                                          category_bin=[0], event_hash=[int(t)])
    >>> acc.add(one(10.5)).accepted, acc.add(one(7.5)).accepted, acc.next_close
    (1, 1, 7)
    >>> [t for t, _ in acc.close_until(11.0)], acc.add(one(8.5)).late_idx.tolist()
    ([7, 8, 9, 10], [0])
    """

    n_stations: int
    tick_s: float = 1.0
    allowed_lateness_s: float = 3.0
    n_bins: int = N_CATEGORY_BINS
    dedupe_retention_ticks: int = 64
    #: at most this many empty ticks in a row are closed; a longer gap is skipped past
    max_gap_ticks: int = 64
    _open: dict[int, dict[str, Array]] = field(default_factory=dict, repr=False)
    # per tick: chunks of (event times sorted, their content hashes) already accepted
    _seen: dict[int, list[SeenChunk]] = field(default_factory=dict, repr=False)
    _next_close: int | None = field(default=None, repr=False)
    # until a tick has closed, an older event moves the first open tick back instead of
    # being late (nothing downstream has seen those ticks yet)
    _closed_any: bool = field(default=False, repr=False)
    duplicates: int = 0
    late: int = 0
    skipped_ticks: int = 0

    def __post_init__(self) -> None:
        check_positive("tick_s", self.tick_s)
        check_positive("allowed_lateness_s", self.allowed_lateness_s, allow_zero=True)
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")

    @property
    def next_close(self) -> int | None:
        """The oldest tick still open (``None`` before the first event)."""
        return self._next_close

    def grow(self, n_stations: int) -> None:
        """Widen the station axis (a new station appeared)."""
        if n_stations <= self.n_stations:
            return
        for cells in self._open.values():
            extra = empty_cells((n_stations - self.n_stations,), self.n_bins)
            for k in cells:
                cells[k] = np.concatenate([cells[k], extra[k]])
        self.n_stations = n_stations

    def add(self, cols: EventColumns) -> AddResult:
        """Merge a batch into the open ticks. Late events are returned, not merged."""
        if len(cols) == 0:
            return AddResult(0, 0, np.zeros(0, np.int64))
        if int(cols.station.max()) >= self.n_stations:
            self.grow(int(cols.station.max()) + 1)
        tick = np.floor(cols.time_s / self.tick_s).astype(np.int64)
        if self._next_close is None or not self._closed_any:
            first = int(tick.min())
            self._next_close = first if self._next_close is None else min(self._next_close, first)
        # a re-sent event can only collide with hashes of its own tick (the hash covers
        # the event time), so only the batch's tick range is searched
        lo_t, hi_t = int(tick.min()), int(tick.max())
        chunks = [c for t in range(lo_t, hi_t + 1) for c in self._seen.get(t, ())]
        keep = ~_duplicates(cols.time_s, cols.event_hash, chunks)
        n_dup = int((~keep).sum())
        late_mask = keep & (tick < self._next_close)
        keep &= ~late_mask
        self.duplicates += n_dup
        self.late += int(late_mask.sum())
        idx = np.flatnonzero(keep)
        if idx.size:
            sub = cols.take(idx)
            t_sub = tick[idx]
            lo, hi = int(t_sub.min()), int(t_sub.max())
            cells = bucket(sub, t0_tick=lo, n_ticks=hi - lo + 1, n_stations=self.n_stations,
                           tick_s=self.tick_s, n_bins=self.n_bins)
            present = np.bincount(t_sub - lo, minlength=hi - lo + 1)
            order = np.argsort(t_sub, kind="stable") if hi > lo else None
            start = 0
            for off in np.flatnonzero(present):
                t = lo + int(off)
                one = {k: v[off] for k, v in cells.items()}
                if t in self._open:
                    merge_cells(self._open[t], one)
                else:
                    self._open[t] = {k: v.copy() for k, v in one.items()}
                n_t = int(present[off])
                rows = order[start:start + n_t] if order is not None else slice(None)
                start += n_t
                ts, hs = sub.time_s[rows], sub.event_hash[rows]
                if ts.size > 1 and not bool((ts[1:] >= ts[:-1]).all()):
                    o = np.argsort(ts, kind="stable")
                    ts, hs = ts[o], hs[o]
                chunks = self._seen.setdefault(t, [])
                chunks.append((ts, hs))
                if len(chunks) > _MAX_CHUNKS:
                    # many small batches into one tick: fold them into one sorted chunk so
                    # the next duplicate check searches a few arrays, not hundreds
                    all_t = np.concatenate([c[0] for c in chunks])
                    all_h = np.concatenate([c[1] for c in chunks])
                    o = np.argsort(all_t, kind="stable")
                    self._seen[t] = [(all_t[o], all_h[o])]
        return AddResult(int(idx.size), n_dup, np.flatnonzero(late_mask))

    def closable_tick(self, watermark_s: float) -> int:
        """Ticks strictly below this index may close at ``watermark_s``."""
        return int(np.floor((watermark_s - self.allowed_lateness_s) / self.tick_s))

    def close_until(self, watermark_s: float) -> list[tuple[int, dict[str, Array]]]:
        """Close every tick that ends before ``watermark_s - allowed_lateness_s``.

        Returns ``(tick, cells)`` for each closed tick in order, empty ticks included, so
        downstream baselines see time pass even when a station is silent - up to
        ``max_gap_ticks`` of them in a row: a longer gap with no event from any station (an
        outage, or one old event after a restart) is skipped past, so closing costs the
        data plus at most ``max_gap_ticks`` per gap, never the gap's length.
        """
        if self._next_close is None:
            return []
        stop = self.closable_tick(watermark_s)
        if stop <= self._next_close:
            return []
        out = []
        t = self._next_close
        for t_data in [*sorted(k for k in self._open if k < stop), stop]:
            n_empty = t_data - t
            for k in range(t, t + min(n_empty, self.max_gap_ticks)):
                out.append((k, finish_cells(empty_cells((self.n_stations,), self.n_bins))))
            self.skipped_ticks += max(n_empty - self.max_gap_ticks, 0)
            if t_data < stop:
                out.append((t_data, finish_cells(self._open.pop(t_data))))
            t = t_data + 1
        self._next_close = stop
        self._closed_any = True
        horizon = stop - self.dedupe_retention_ticks
        for k in [k for k in self._seen if k < horizon]:
            del self._seen[k]
        return out

    def flush(self) -> list[tuple[int, dict[str, Array]]]:
        """Close every open tick (end of stream)."""
        if not self._open:
            return []
        last = max(self._open)
        return self.close_until((last + 1) * self.tick_s + self.allowed_lateness_s)
