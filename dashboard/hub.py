"""The dashboard's hub: the live picture runtimes push to, fanned out to browsers.

Runtimes (the embedded run, the cluster's topics) call the hub's input methods with
the typed records of :mod:`convergence.records`; browsers subscribe and receive a
snapshot, then every change. The hub is pure asyncio: no Kafka, no HTTP, no clock of
its own (times come from the records), and not thread-safe - a feed that reads in a
thread hands records over with ``loop.call_soon_threadsafe``.

Everything it keeps is bounded:

* per region, the meter score over the last ``history_s`` seconds (by the readings'
  own times, at most ``max_points`` each), for at most ``max_regions`` regions;
* the last ``max_alerts`` alerts, the last ``max_reports`` reports (each with its last
  ``max_revisions`` revisions);
* the latest status of at most ``max_stations`` stations, each with the last
  ``max_commands`` commands sent to it and their acknowledgements;
* per browser, a queue of ``queue_size`` updates: a browser that falls behind gets a
  fresh snapshot instead of an ever-growing queue.

Input from outside (a topic) is untrusted: a record whose ids are not plain names
(``[A-Za-z0-9_.:-]{1,64}``) or that would pass a bound is skipped and counted in
:attr:`Hub.rejected` (with the last reason, which the page shows), never raised.

Station updates are coalesced: at most one ``stations`` update per
``station_flush_s`` (longer for big fleets: at most ``MAX_STATION_ROWS_PER_S`` rows a
second) carries every station that changed; a station's first update carries its whole
row, later ones only what changes (state, verdict, times, counts), so a browser's feed
stays small.

Examples
--------
>>> import asyncio
>>> from convergence.records import Alert, Level, RegionReading
>>> async def demo():
...     hub = Hub()
...     sub = hub.subscribe()
...     hub.reading(RegionReading("mena", 100, 1000.0, 62.0, Level.WARNING, Level.WATCH,
...                               True, 3, 9, report_id="rpt-1"))
...     hub.alert(Alert("alt-1", "rpt-1", "mena", Level.WARNING, 62.0, 100, 1000.0, 99,
...                     ("news-mena-001",), ("osint_news",), True))
...     got = [await sub.next_update() for _ in range(3)]
...     hub.close()
...     return [u.kind for u in got], got[2].data["alert_id"], hub.regions()
>>> asyncio.run(demo())
(['snapshot', 'reading', 'alert'], 'alt-1', ['mena'])
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from convergence.control import CommandAck, ControlCommand
from convergence.dashboard.geo import MAP_H, MAP_W, project, region_box, station_point
from convergence.records import Alert, Level, RegionReading, Report, StationStatus

__all__ = ["NAME_RE", "CommandPort", "Hub", "Subscription", "Update", "level_of"]

log = logging.getLogger(__name__)

#: what a region, station, alert or report id may look like (as event station ids)
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

#: longest free text (a reason, an ack's detail) kept from a command
MAX_TEXT: Final = 200
#: station rows pushed to browsers per second at most (big fleets update less often)
MAX_STATION_ROWS_PER_S: Final = 2000
#: the fields of a station row that change; later updates carry only these
STATION_LIVE_FIELDS: Final = ("station_id", "state", "node_state", "at_s", "last_event_s",
                              "rate_per_s", "events", "interval_s", "change")


class CommandPort(Protocol):
    """How the page's quarantine/resume buttons reach the stations.

    The embedded runtime applies the command to its fleet in-process; the cluster
    publishes it on the control topic and waits for acks on the acks topic. ``send``
    returns the acknowledgements that arrived within ``timeout_s`` (``[]``: none) and
    raises ``RuntimeError`` with a readable message when the command could not be sent.
    """

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        ...


@dataclass(frozen=True)
class Update:
    """One message to browsers: ``kind`` names the SSE event, ``data`` is JSON-able."""

    kind: str
    data: dict[str, Any]


class Subscription:
    """One browser's view of the hub: iterate (``async for``) or :meth:`next_update`."""

    def __init__(self, hub: Hub, queue_size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(maxsize=queue_size)
        self.resyncs = 0
        self.closed = False

    def _put(self, update: Update | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            # a browser that cannot keep up starts over from a snapshot, not a backlog
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resyncs += 1
            self.queue.put_nowait(None if update is None else
                                  Update("snapshot", self._hub.snapshot()))

    async def next_update(self) -> Update | None:
        """The next update; ``None`` once the hub has closed (or this was closed)."""
        if self.closed and self.queue.empty():
            return None
        update = await self.queue.get()
        if update is None:
            self.closed = True
        return update

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Update:
        update = await self.next_update()
        if update is None:
            raise StopAsyncIteration
        return update

    def close(self) -> None:
        """Stop receiving (the browser went away)."""
        self._hub._subs.discard(self)
        self.closed = True


@dataclass
class _Region:
    latest: RegionReading
    series: deque[tuple[float, float]]


@dataclass
class _Station:
    status: StationStatus
    last_event_s: float | None = None
    rate_per_s: float | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=12))
    commands: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    #: whether browsers have had the whole row (later updates carry the live fields)
    announced: bool = False


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    s = str(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


class Hub:
    """The live picture and its fan-out (see module docstring)."""

    def __init__(self, *, history_s: float = 3600.0, max_points: int = 7200,
                 max_regions: int = 64, max_alerts: int = 200, max_reports: int = 200,
                 max_revisions: int = 20, max_stations: int = 20_000, max_commands: int = 10,
                 queue_size: int = 2000, max_subscribers: int = 32,
                 station_flush_s: float = 1.0, source: str = "") -> None:
        for name, value in (("history_s", history_s), ("max_points", max_points),
                            ("max_regions", max_regions), ("max_alerts", max_alerts),
                            ("max_reports", max_reports), ("max_revisions", max_revisions),
                            ("max_stations", max_stations), ("max_commands", max_commands),
                            ("queue_size", queue_size), ("max_subscribers", max_subscribers)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if station_flush_s < 0:
            raise ValueError(f"station_flush_s must be >= 0, got {station_flush_s}")
        self.history_s = history_s
        self.max_points = max_points
        self.max_regions = max_regions
        self.max_alerts = max_alerts
        self.max_reports = max_reports
        self.max_revisions = max_revisions
        self.max_stations = max_stations
        self.max_commands = max_commands
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.station_flush_s = station_flush_s
        #: what feeds this hub, for the page's header (e.g. ``embedded run run-7-...``)
        self.source = source
        #: whether control buttons are offered (a command port is attached)
        self.controls = False
        #: records skipped as malformed or over a bound, and the last reason
        self.rejected = 0
        self.last_rejected = ""
        self._regions: dict[str, _Region] = {}
        self._alerts: deque[Alert] = deque(maxlen=max_alerts)
        self._reports: OrderedDict[str, dict[int, Report]] = OrderedDict()
        self._stations: dict[str, _Station] = {}
        self._subs: set[Subscription] = set()
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._closed = False
        self._latest_s = 0.0

    # -- input ----------------------------------------------------------------------
    def reject(self, what: str, reason: str) -> None:
        """Count a record skipped as malformed (the page shows the count and the last reason)."""
        self.rejected += 1
        self.last_rejected = _text(f"{what}: {reason}")
        if self.rejected <= 10 or self.rejected % 1000 == 0:  # a flood must not flood the log
            log.warning("dashboard: skipped %s (%d skipped so far)", self.last_rejected,
                        self.rejected)

    def _name_ok(self, what: str, **names: str) -> bool:
        for key, value in names.items():
            if not isinstance(value, str) or not NAME_RE.match(value):
                self.reject(what, f"{key} {_text(repr(value), 80)} is not a plain name "
                                   "([A-Za-z0-9_.:-], at most 64 characters)")
                return False
        return True

    def reading(self, r: RegionReading) -> None:
        """One region's meter at one closed tick (the score chart and the map colour)."""
        if not self._name_ok("meter reading", region=r.region):
            return
        region = self._regions.get(r.region)
        if region is None:
            if len(self._regions) >= self.max_regions:
                self.reject("meter reading", f"region {r.region!r} would pass the "
                                              f"{self.max_regions}-region bound")
                return
            region = self._regions[r.region] = _Region(r, deque(maxlen=self.max_points))
        if region.series and r.time_s < region.series[-1][0]:
            return  # older than what is shown (a replayed or reordered reading)
        region.latest = r
        region.series.append((r.time_s, round(float(r.score), 2)))
        self._latest_s = max(self._latest_s, r.time_s)
        horizon = self._latest_s - self.history_s
        for reg in self._regions.values():
            while reg.series and reg.series[0][0] < horizon:
                reg.series.popleft()
        self._publish(Update("reading", self._region_row(r.region, region, series=False)))

    def alert(self, a: Alert) -> None:
        """A region's meter rose to warning or converged (the alert feed)."""
        if not self._name_ok("alert", alert_id=a.alert_id, report_id=a.report_id, region=a.region):
            return
        self._alerts = deque((x for x in self._alerts if x.alert_id != a.alert_id),
                             maxlen=self.max_alerts)  # a replayed alert replaces itself
        self._alerts.append(a)
        self._publish(Update("alert", self._alert_row(a)))

    def report(self, rep: Report) -> None:
        """A report revision (kept for the drill-down; the page is told it exists)."""
        if not self._name_ok("report", report_id=rep.report_id, region=rep.region):
            return
        revs = self._reports.pop(rep.report_id, {})
        revs[rep.revision] = rep
        while len(revs) > self.max_revisions:
            del revs[min(revs)]
        self._reports[rep.report_id] = revs
        while len(self._reports) > self.max_reports:
            self._reports.popitem(last=False)
        self._publish(Update("report", self._report_row(rep)))

    def station(self, s: StationStatus) -> None:
        """A station's latest status. Rate and last event are derived from successive
        event counts when the status does not carry them."""
        if not self._name_ok("station status", station_id=s.station_id, region=s.region):
            return
        st = self._stations.get(s.station_id)
        if st is None:
            if len(self._stations) >= self.max_stations:
                self.reject("station status", f"station {s.station_id!r} would pass the "
                                               f"{self.max_stations}-station bound")
                return
            st = self._stations[s.station_id] = _Station(s)
        elif s.at_s < st.status.at_s:
            return  # an older status than the one shown
        prev_events = st.samples[-1][1] if st.samples else None
        st.status = s
        st.samples.append((s.at_s, s.events))
        if s.last_event_s is not None:
            st.last_event_s = s.last_event_s
        elif prev_events is not None and s.events > prev_events:
            st.last_event_s = s.at_s
        if s.rate_per_s is not None:
            st.rate_per_s = s.rate_per_s
        elif len(st.samples) >= 2:
            (t0, n0), (t1, n1) = st.samples[0], st.samples[-1]
            st.rate_per_s = (n1 - n0) / (t1 - t0) if t1 > t0 and n1 >= n0 else None
        self._dirty.add(s.station_id)
        self._schedule_flush()

    def command(self, cmd: ControlCommand, acks: Iterable[CommandAck]) -> None:
        """A control command sent to stations and the acks that came back. May be
        called again for the same command as more acks arrive."""
        acks = [a for a in acks if isinstance(a.station_id, str) and NAME_RE.match(a.station_id)]
        if cmd.target.type == "station":
            targets = {cmd.target.value}
        else:
            targets = {sid for sid, st in self._stations.items()
                       if cmd.applies_to(sid, st.status.source_kind, st.status.region)}
        targets |= {a.station_id for a in acks}
        by_station = {a.station_id: a for a in acks}
        touched: dict[str, dict[str, Any]] = {}
        for sid in sorted(targets):
            st = self._stations.get(sid)
            if st is None:
                continue
            entry = st.commands.pop(cmd.command_id, None) or {
                "command_id": cmd.command_id, "action": cmd.action.value,
                "target": f"{cmd.target.type}:{cmd.target.value}",
                "reason": _text(cmd.reason), "issued_at_s": cmd.issued_at_s,
                "expires_at_s": cmd.expires_at_s, "ack": None}
            ack = by_station.get(sid)
            if ack is not None:
                entry["ack"] = {"applied": bool(ack.applied), "at_s": ack.at_s,
                                "detail": _text(ack.detail)}
            st.commands[cmd.command_id] = entry
            while len(st.commands) > self.max_commands:
                st.commands.popitem(last=False)
            touched[sid] = entry
        if touched:
            self._publish(Update("command", {"command_id": cmd.command_id, "stations": touched}))

    # -- reads ----------------------------------------------------------------------
    def regions(self) -> list[str]:
        """Names of the regions seen, in order of appearance."""
        return list(self._regions)

    def region(self, name: str) -> dict[str, Any] | None:
        """One region's latest reading and its score series (``None``: never seen)."""
        region = self._regions.get(name)
        return None if region is None else self._region_row(name, region, series=True,
                                                             max_points=None)

    def alerts(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The kept alerts, newest first."""
        rows = [self._alert_row(a) for a in reversed(self._alerts)]
        return rows if limit is None else rows[:limit]

    def get_report(self, report_id: str, revision: int | None = None) -> Report | None:
        """A cached report revision (the latest when ``revision`` is ``None``)."""
        revs = self._reports.get(report_id)
        if not revs:
            return None
        return revs.get(revision) if revision is not None else revs[max(revs)]

    def revisions(self, report_id: str) -> list[int]:
        """The cached revisions of a report, oldest first."""
        return sorted(self._reports.get(report_id, {}))

    def stations(self) -> list[dict[str, Any]]:
        """Every station's row (state, last event, rate, commands, map position)."""
        return [self._station_row(st) for st in self._stations.values()]

    def station_row(self, station_id: str) -> dict[str, Any] | None:
        """One station's row, ``None`` when it never reported."""
        st = self._stations.get(station_id)
        return None if st is None else self._station_row(st)

    def snapshot(self) -> dict[str, Any]:
        """The whole picture for a browser that just connected."""
        return {
            "source": self.source, "controls": self.controls, "history_s": self.history_s,
            "latest_s": self._latest_s, "map": {"width": MAP_W, "height": MAP_H},
            "regions": [self._region_row(n, r, series=True) for n, r in self._regions.items()],
            "alerts": self.alerts(),
            "reports": [self._report_row(revs[max(revs)]) for revs in self._reports.values()],
            "stations": self.stations(),
            "rejected": {"count": self.rejected, "last": self.last_rejected},
        }

    # -- fan-out --------------------------------------------------------------------
    def subscribe(self) -> Subscription:
        """A new browser: its first update is the snapshot. ``RuntimeError`` when
        ``max_subscribers`` are already connected or the hub has closed."""
        if self._closed:
            raise RuntimeError("the dashboard is shutting down")
        if len(self._subs) >= self.max_subscribers:
            raise RuntimeError(f"{self.max_subscribers} dashboards are already connected; "
                               "close one")
        sub = Subscription(self, self.queue_size)
        self._subs.add(sub)
        sub._put(Update("snapshot", self.snapshot()))
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self, reason: str = "the dashboard stopped") -> None:
        """Flush pending station changes, tell every browser ``reason`` (an ``ended``
        update) and end every subscription. Closing twice does nothing more."""
        if self._closed:
            return
        self._flush_stations()
        self._publish(Update("ended", {"reason": _text(reason)}))
        self._closed = True
        for sub in list(self._subs):
            sub._put(None)
        self._subs.clear()

    def _publish(self, update: Update) -> None:
        if self._dirty and update.kind != "stations":
            self._flush_stations()  # keep station changes ahead of what refers to them
        for sub in list(self._subs):
            sub._put(update)

    def _schedule_flush(self) -> None:
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_stations()  # no loop (plain code, a test): publish right away
            return
        delay = max(self.station_flush_s, len(self._stations) / MAX_STATION_ROWS_PER_S)
        if delay == 0:
            self._flush_stations()
        else:
            self._flush = loop.call_later(delay, self._flush_stations)

    def _flush_stations(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._dirty:
            return
        rows = []
        for sid in sorted(self._dirty):
            st = self._stations.get(sid)
            if st is None:
                continue
            row = self._station_row(st)
            rows.append(row if not st.announced else {k: row[k] for k in STATION_LIVE_FIELDS})
            st.announced = True
        self._dirty.clear()
        self._publish(Update("stations", {"stations": rows}))

    # -- rows (what the page and the API see) ----------------------------------------
    def _region_row(self, name: str, region: _Region, *, series: bool,
                    max_points: int | None = 720) -> dict[str, Any]:
        r = region.latest
        box = region_box(name)
        row: dict[str, Any] = {
            "region": name, "time_s": r.time_s, "tick": r.tick, "score": round(r.score, 2),
            "level": r.level.value, "prev_level": r.prev_level.value,
            "thresholds": list(r.thresholds), "report_id": r.report_id,
            "osint_corroborated": r.osint_corroborated, "n_kinds": r.n_kinds,
            "n_stations": r.n_stations,
            "box": None if box is None else [*project(box[0], box[3]), *project(box[2], box[1])],
        }
        if series:
            row["series"] = [list(p) for p in _downsample(region.series, max_points)]
        return row

    @staticmethod
    def _alert_row(a: Alert) -> dict[str, Any]:
        return {"alert_id": a.alert_id, "report_id": a.report_id, "region": a.region,
                "level": a.level.value, "score": round(a.score, 2), "tick": a.tick,
                "time_s": a.time_s, "time": a.time_iso, "n_stations": a.n_stations,
                "stations": list(a.stations[:200]), "source_kinds": list(a.source_kinds[:10]),
                "osint_corroborated": a.osint_corroborated}

    @staticmethod
    def _report_row(rep: Report) -> dict[str, Any]:
        return {"report_id": rep.report_id, "revision": rep.revision, "region": rep.region,
                "level": rep.level.value, "status": rep.status, "title": _text(rep.title),
                "time_s": rep.time_s}

    @staticmethod
    def _station_row(st: _Station) -> dict[str, Any]:
        s = st.status
        xy = station_point(s.station_id, s.region, lat=s.lat, lon=s.lon)
        return {
            "station_id": s.station_id, "source_kind": s.source_kind, "region": s.region,
            "group": s.group, "state": s.state.value,
            "node_state": None if s.node_state is None else s.node_state.value,
            "at_s": _r(s.at_s, 1), "last_event_s": _r(st.last_event_s, 1),
            "rate_per_s": _r(st.rate_per_s),
            "events": s.events, "interval_s": _r(s.interval_s, 3),
            "change": None if s.change is None else _text(s.change),
            "xy": None if xy is None else list(xy),
            "commands": list(st.commands.values())[-5:],
        }


def _downsample(points: deque[tuple[float, float]],
                max_points: int | None) -> Iterator[tuple[float, float]]:
    """At most ``max_points`` points: the highest score of each equal slice of the series
    (a peak never disappears from the chart)."""
    n = len(points)
    if max_points is None or n <= max_points:
        yield from points
        return
    step = n / max_points
    items = list(points)
    for i in range(max_points):
        chunk = items[int(i * step): max(int((i + 1) * step), int(i * step) + 1)]
        yield max(chunk, key=lambda p: p[1]) if chunk else items[-1]


def level_of(score: float, thresholds: tuple[float, float, float]) -> Level:
    """The level a score reaches by the thresholds alone (no hysteresis).

    >>> level_of(60.0, (30.0, 55.0, 75.0))
    <Level.WARNING: 'warning'>
    """
    return Level.from_rank(sum(score >= t for t in thresholds))
