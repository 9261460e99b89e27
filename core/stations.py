"""Station metadata and the registry that maps station ids to array positions.

Detectors work on arrays indexed by station position; every runtime needs the same
mapping from ``station_id`` to that position plus the per-station facts the meter
uses to judge independence: source kind, region and *correlation group* (stations
that share an upstream feed or market, whose anomalies are not independent).

A station first seen at run time (not declared in the fleet) is added with region
``unknown`` and a group of its own, so nothing is rejected merely for being new.

Examples
--------
>>> reg = StationRegistry([StationInfo("news-1", "osint_news", "eu", "wire-a")])
>>> reg.index_of("news-1"), len(reg)
(0, 1)
>>> reg.ensure("social-9", "osint_social")
1
>>> reg.info(1).region, reg.kind_idx.tolist()
('unknown', [0, 1])
>>> reg.ids(), reg.version
(('news-1', 'social-9'), 2)
>>> StationInfo("x", "telepathy")
Traceback (most recent call last):
...
ValueError: 'telepathy' is not a valid SourceKind
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.schema import KIND_INDEX, SOURCE_KINDS, SourceKind


@dataclass(frozen=True)
class StationInfo:
    """What the pipeline knows about a station."""

    station_id: str
    source_kind: SourceKind | str
    region: str = "unknown"
    group: str = ""
    name: str = ""
    rate_per_s: float = 0.0  # expected background rate, when known (synthetic fleets)

    def __post_init__(self) -> None:
        # Converted once: an unknown kind fails here, and ``kind`` costs nothing later
        # (a StrEnum equals its string, so comparisons with plain strings still hold).
        object.__setattr__(self, "source_kind", SourceKind(self.source_kind))

    @property
    def kind(self) -> SourceKind:
        kind = self.source_kind
        assert isinstance(kind, SourceKind)  # __post_init__ converted it
        return kind

    @property
    def correlation_group(self) -> str:
        return self.group or self.station_id


@dataclass
class StationRegistry:
    """Grows as stations appear; exposes per-station index arrays for the detectors."""

    stations: list[StationInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[str, int] = {}
        self._regions: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._kind: list[int] = []
        self._region: list[int] = []
        self._group: list[int] = []
        #: bumped by every :meth:`add` that registers a new station; the cached arrays
        #: and ids below belong to one version
        self.version = 0
        self._cache_version = -1
        self._ids: tuple[str, ...] = ()
        self._kind_arr = self._region_arr = self._group_arr = np.zeros(0, dtype=np.int64)
        self._rates_arr = np.zeros(0, dtype=np.float64)
        infos, self.stations = list(self.stations), []
        for info in infos:
            self.add(info)

    def __len__(self) -> int:
        return len(self.stations)

    def add(self, info: StationInfo) -> int:
        """Register a station (idempotent by id) and return its index."""
        if info.station_id in self._index:
            return self._index[info.station_id]
        idx = len(self.stations)
        self.stations.append(info)
        self._index[info.station_id] = idx
        self._kind.append(KIND_INDEX[info.kind.value])
        self._region.append(self._regions.setdefault(info.region, len(self._regions)))
        self._group.append(self._groups.setdefault(info.correlation_group, len(self._groups)))
        self.version += 1
        return idx

    def _refresh(self) -> None:
        """Rebuild the cached arrays once per registry version (read-only: shared)."""
        if self._cache_version == self.version:
            return

        def frozen(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            a.setflags(write=False)
            return a

        self._ids = tuple(s.station_id for s in self.stations)
        self._kind_arr = frozen(np.asarray(self._kind, dtype=np.int64))
        self._region_arr = frozen(np.asarray(self._region, dtype=np.int64))
        self._group_arr = frozen(np.asarray(self._group, dtype=np.int64))
        self._rates_arr = frozen(np.asarray([s.rate_per_s for s in self.stations],
                                            dtype=np.float64))
        self._cache_version = self.version

    def ensure(self, station_id: str, source_kind: str | SourceKind) -> int:
        """Index of ``station_id``, registering an undeclared station if needed."""
        idx = self._index.get(station_id)
        if idx is None:
            idx = self.add(StationInfo(station_id, source_kind))
        return idx

    def ensure_many(self, station_ids: Sequence[str],
                    kinds: Sequence[int] | npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int64]:
        """:meth:`ensure` for a column of events: each one's station index, registering
        undeclared stations in order of first appearance with the kind (an index into
        :data:`~convergence.schema.SOURCE_KINDS`) of their first event.

        >>> reg = StationRegistry([StationInfo("a", "sensor")])
        >>> reg.ensure_many(["b", "a", "b", "c"], [0, 4, 0, 3]).tolist(), reg.ids()
        ([1, 0, 1, 2], ('a', 'b', 'c'))
        >>> reg.info(2).kind.value
        'market_volume'
        """
        index = self._index
        n = len(station_ids)
        if not set(station_ids) <= index.keys():
            first = dict(zip(reversed(station_ids), range(n - 1, -1, -1), strict=True))
            for sid in dict.fromkeys(station_ids):  # first appearance order
                if sid not in index:
                    self.add(StationInfo(sid, SOURCE_KINDS[int(kinds[first[sid]])]))
        return np.fromiter(map(index.__getitem__, station_ids), np.int64, n)

    def index_of(self, station_id: str) -> int:
        return self._index[station_id]

    def get(self, station_id: str) -> int | None:
        """Index of ``station_id``, or ``None`` if it is not registered."""
        return self._index.get(station_id)

    def info(self, idx: int) -> StationInfo:
        return self.stations[idx]

    def ids(self) -> tuple[str, ...]:
        """Station ids by index (cached until the next :meth:`add`)."""
        self._refresh()
        return self._ids

    def region_names(self) -> list[str]:
        return list(self._regions)

    def group_names(self) -> list[str]:
        """Correlation group names by group index."""
        return list(self._groups)

    # The arrays below are cached per version and read-only: copy before changing one.
    @property
    def kind_idx(self) -> npt.NDArray[np.int64]:
        self._refresh()
        return self._kind_arr

    @property
    def region_idx(self) -> npt.NDArray[np.int64]:
        self._refresh()
        return self._region_arr

    @property
    def group_idx(self) -> npt.NDArray[np.int64]:
        self._refresh()
        return self._group_arr

    @property
    def rates(self) -> npt.NDArray[np.float64]:
        self._refresh()
        return self._rates_arr

    @classmethod
    def of(cls, infos: Iterable[StationInfo]) -> StationRegistry:
        return cls(list(infos))
