"""Who the stations are: the facts a cluster worker needs before it can judge a station.

Every station has a source kind, a region and a correlation group (stations on one wire
service or market count once). The meter's whole idea - independent sources in one
region - rests on them, so a worker never guesses them: it learns them from the fleet
file the cluster runs (``settings.fleet``; ``cluster up`` sets it) and from the stations'
own status messages (the compacted ``station-status`` topic: every running agent
publishes its kind, region and group). A station known from neither is *unknown*: its
events are held a short while (its first status may still be on its way) and then
dead-lettered with the reason, never fused under a made-up region.

Examples
--------
>>> d = StationDirectory([StationInfo("news-1", "osint_news", "eu-west", "wire-a")])
>>> d.lookup("news-1").region, d.lookup("ghost") is None
('eu-west', True)
>>> d.note_status({"station_id": "sensor-9", "kind": "sensor", "region": "mena",
...                "group": "sensor-9", "state": "running", "rate_per_s": 2.0})
True
>>> d.lookup("sensor-9").region, d.version
('mena', 2)
>>> d.note_status({"station_id": "x", "kind": "telepathy", "region": "r"})  # not a kind
False
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from convergence.schema import valid_station_id
from convergence.stations import StationInfo

__all__ = ["StationDirectory"]

log = logging.getLogger(__name__)

#: longest region or group name taken from a status message
MAX_NAME = 200


class StationDirectory:
    """Station facts by id, from a fleet file and from status messages (see module doc)."""

    def __init__(self, infos: Iterable[StationInfo] = ()) -> None:
        self._by_id: dict[str, StationInfo] = {}
        #: bumped whenever a station is added or its facts change
        self.version = 0
        self._listeners: list[Callable[[StationInfo], None]] = []
        for info in infos:
            self.add(info)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, station_id: object) -> bool:
        return station_id in self._by_id

    @classmethod
    def from_fleet_file(cls, path: str | Path) -> StationDirectory:
        """Every station of a fleet file (raises ``FleetError`` for a bad file)."""
        from convergence.ground_stations.fleet import load_fleet

        return cls(s.info for s in load_fleet(path).stations)

    @classmethod
    def from_settings(cls, settings: Any) -> StationDirectory:
        """The fleet file named by ``settings.fleet``, or an empty directory."""
        return cls.from_fleet_file(settings.fleet) if settings.fleet else cls()

    def on_new(self, fn: Callable[[StationInfo], None]) -> None:
        """Call ``fn`` with every station added from now on."""
        self._listeners.append(fn)

    def add(self, info: StationInfo) -> bool:
        """Learn a station (or its changed facts); True if anything changed."""
        old = self._by_id.get(info.station_id)
        if old == info:
            return False
        if old is not None and (old.region, old.kind, old.correlation_group) != (
                info.region, info.kind, info.correlation_group):
            log.warning("station %s now says it is %s in %s (group %s), was %s in %s; the "
                        "worker keeps the first facts until it restarts", info.station_id,
                        info.kind.value, info.region, info.correlation_group, old.kind.value,
                        old.region, old.correlation_group)
            return False
        self._by_id[info.station_id] = info
        self.version += 1
        if old is None:
            for fn in self._listeners:
                fn(info)
        return True

    def lookup(self, station_id: str) -> StationInfo | None:
        return self._by_id.get(station_id)

    def stations(self) -> list[StationInfo]:
        """Every known station, in the order they were learnt."""
        return list(self._by_id.values())

    def note_status(self, doc: Mapping[str, Any]) -> bool:
        """Learn a station from its status message; False if the message cannot say who it
        is (no valid id, an unknown kind, no region)."""
        sid = valid_station_id(str(doc.get("station_id", ""))[:200])
        kind = doc.get("kind", doc.get("source_kind"))
        region = doc.get("region")
        if sid is None or not isinstance(kind, str) or not isinstance(region, str) or not region:
            return False
        group = doc.get("group", doc.get("correlation_group", ""))
        rate = doc.get("rate_per_s")
        try:
            info = StationInfo(sid, kind, region[:MAX_NAME],
                               str(group)[:MAX_NAME] if isinstance(group, str) else "",
                               rate_per_s=float(rate) if isinstance(rate, int | float)
                               and math.isfinite(rate) and rate >= 0 else 0.0)
        except ValueError:  # not a source kind
            return False
        known = self._by_id.get(sid)
        if known is not None and (known.region, known.kind, known.correlation_group) == (
                info.region, info.kind, info.correlation_group):
            return True  # nothing new (the fleet file may know its rate better)
        self.add(info)
        return True
