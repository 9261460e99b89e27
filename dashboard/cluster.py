"""Feeding the dashboard from a running cluster: its topics and its store.

:class:`ClusterFeed` reads, without joining a consumer group (a dashboard must never
steal partitions from a worker or another dashboard), from the last ``since_s``
seconds of:

* ``alerts`` - :class:`~convergence.records.Alert` JSON (plus the worker's ``run_id``),
  keyed by alert id;
* ``reports`` - one :class:`~convergence.records.Report` revision per message, keyed by
  report id (every revision of an episode, each with its ``revision`` number);
* ``readings`` - :class:`~convergence.records.RegionReading` JSON keyed by region, one
  per region per closed tick (the workers create and fill it; a dashboard started
  before the cluster waits for it);
* ``station-status`` (each station's latest state from its agent, compacted: ``kind``
  and ``sent``, its count of events, are read as ``source_kind`` and ``events``);
* ``control`` and ``acks`` (``ControlCommand`` / ``CommandAck`` JSON), so the station
  table shows every command sent to a station (by the adaptive responses, the CLI or
  this page) and its acknowledgement.

One reader thread per topic (kafka-python blocks) hands each decoded record to the
event loop with ``call_soon_threadsafe``; the hub is touched only on the loop. A
message that is not JSON, not an object, over ``MAX_MESSAGE`` bytes or not a valid
record (a required field missing, a number that is not one) is skipped and counted by
the hub (the page shows it).

:class:`KafkaCommandPort` sends the page's commands the way ``convergence stations
command`` does (:func:`~convergence.ground_stations.kafka_fleet.issue_command`);
:func:`store_reports` reads a report the hub has not cached from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from convergence.control import CommandAck, ControlCommand
from convergence.dashboard.hub import Hub
from convergence.dashboard.server import DashboardServer, ReportLookup
from convergence.records import Alert, RegionReading, Report, StationStatus

if TYPE_CHECKING:
    from convergence.settings import Settings
    from convergence.store.surreal import SurrealStore

__all__ = ["TOPICS", "ClusterFeed", "KafkaCommandPort", "serve_cluster", "store_reports"]

log = logging.getLogger(__name__)

#: the topics the dashboard reads (logical names; ``settings.topic(name)`` is the real one)
TOPICS: Final = ("alerts", "reports", "station-status", "readings", "control", "acks")
#: topics a cluster's workers create: their absence before the cluster runs is no news
OPTIONAL: Final = frozenset({"readings"})
MAX_MESSAGE: Final = 1_000_000
#: commands remembered so that their acks (which carry only the id) can be shown
MAX_PENDING_COMMANDS: Final = 1000

R = TypeVar("R")


def checked(record: R) -> R:
    """``record`` when its plain fields hold what they say, else ``ValueError``.

    A topic is untrusted: ``from_dict`` takes values as they come, and a score that is
    text or a missing time must be skipped here, not break the page later.

    >>> from convergence.records import Level
    >>> checked(RegionReading("mena", 1, 2.0, 30.0, Level.WATCH, Level.QUIET, True, 2, 3)).region
    'mena'
    >>> checked(RegionReading.from_dict({"region": "mena", "tick": 1, "time_s": 2.0,
    ...     "score": "high", "level": "watch", "prev_level": "quiet",
    ...     "osint_corroborated": True, "n_kinds": 2, "n_stations": 3}))
    Traceback (most recent call last):
    ...
    ValueError: score must be a finite number, got 'high'
    """
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        kind = str(f.type)
        optional = kind.endswith(" | None")
        kind = kind.removesuffix(" | None")
        if value is None:
            if optional:
                continue
            raise ValueError(f"{f.name} is missing")
        if kind in ("float", "int") and (isinstance(value, bool)
                                         or not isinstance(value, int | float)
                                         or not math.isfinite(value)):
            raise ValueError(f"{f.name} must be a finite number, got {str(value)[:40]!r}")
        if kind == "str" and not isinstance(value, str):
            raise ValueError(f"{f.name} must be text, got {type(value).__name__}")
    return record


class ClusterFeed:
    """Reads the cluster's topics into ``hub`` (see module docstring).

    ``on_note`` receives one line per notable condition (a topic that does not exist
    yet), for the command line to print.
    """

    def __init__(self, hub: Hub, settings: Settings, loop: asyncio.AbstractEventLoop, *,
                 since_s: float = 3600.0, on_note: Callable[[str], None] | None = None) -> None:
        self.hub = hub
        self.settings = settings
        self.loop = loop
        self.since_s = since_s
        self.on_note = on_note
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._commands: OrderedDict[str, ControlCommand] = OrderedDict()
        #: topic -> records handed to the hub, for tests and the health line
        self.received: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.ready = threading.Event()
        self._ready_count = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start one reader thread per topic."""
        for name in TOPICS:
            t = threading.Thread(target=self._read, args=(name,), daemon=True,
                                 name=f"dashboard-{name}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the readers (blocks up to ``timeout_s`` for them to close their consumers)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- reader threads ---------------------------------------------------------------
    def _positioned(self) -> None:
        with self._lock:
            self._ready_count += 1
            if self._ready_count == len(TOPICS):
                self.ready.set()

    def _read(self, name: str) -> None:
        from kafka.errors import KafkaError

        from convergence.streams import kafka_client

        topic = self.settings.topic(name)
        bootstrap = self.settings.kafka_bootstrap
        start = int((time.time() - self.since_s) * 1000)
        try:
            consumer = kafka_client.consumer(bootstrap, f"convergence-dashboard-{name}")
        except (KafkaError, OSError) as exc:
            self._note(f"cannot read {topic}: {kafka_client.unreachable(bootstrap, exc)}")
            self._positioned()
            return
        try:
            tps = kafka_client.assign_all(consumer, topic, start=start, wait_s=0.0)
            if not tps:
                if name not in OPTIONAL:
                    self._note(f"topic {topic!r} does not exist on {bootstrap} yet; waiting for "
                               "it (is the cluster running with the same CONVERGENCE_TOPIC_PREFIX?)")
                self._positioned()
                tps = kafka_client.assign_all(consumer, topic, start="beginning", wait_s=math.inf,
                                              should_stop=self._stop.is_set)
                if not tps:
                    return
            else:
                self._positioned()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=250).values():
                    for rec in records:
                        self._decode(name, rec)
        except (KafkaError, OSError) as exc:
            if not self._stop.is_set():
                self._note(f"stopped reading {topic}: {type(exc).__name__}: {exc}")
        finally:
            consumer.close()

    def _decode(self, name: str, rec: Any) -> None:
        raw = rec.value or b""
        where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
        if len(raw) > MAX_MESSAGE:
            self.loop.call_soon_threadsafe(self.hub.reject, where,
                                           f"message of {len(raw)} bytes is over {MAX_MESSAGE}")
            return
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.loop.call_soon_threadsafe(self.hub.reject, where, f"not JSON ({exc})")
            return
        if not isinstance(doc, dict):
            self.loop.call_soon_threadsafe(self.hub.reject, where,
                                           f"expected a JSON object, got {type(doc).__name__}")
            return
        self.loop.call_soon_threadsafe(self.handle, name, doc, where)

    def _note(self, line: str) -> None:
        log.warning("dashboard: %s", line)
        if self.on_note is not None:
            self.loop.call_soon_threadsafe(self.on_note, line)

    # -- on the loop ------------------------------------------------------------------
    def handle(self, name: str, doc: Mapping[str, Any], where: str = "") -> None:
        """One decoded message of topic ``name`` into the hub (on the event loop)."""
        try:
            if name == "alerts":
                self.hub.alert(checked(Alert.from_dict(doc)))
            elif name == "reports":
                self.hub.report(checked(Report.from_dict(doc)))
            elif name == "station-status":
                self.hub.station(checked(StationStatus.from_dict(
                    {**doc, "events": doc.get("events", doc.get("sent", 0))})))
            elif name == "readings":
                self.hub.reading(checked(RegionReading.from_dict(doc)))
            elif name == "control":
                cmd = ControlCommand.from_dict(dict(doc))
                self._commands[cmd.command_id] = cmd
                while len(self._commands) > MAX_PENDING_COMMANDS:
                    self._commands.popitem(last=False)
                self.hub.command(cmd, [])
            elif name == "acks":
                ack = CommandAck(str(doc["command_id"]), str(doc["station_id"]),
                                 bool(doc["applied"]), float(doc["at_s"]),
                                 str(doc.get("detail", "")))
                known = self._commands.get(ack.command_id)
                if known is not None:
                    self.hub.command(known, [ack])
            self.received[name] += 1
        except (KeyError, TypeError, ValueError) as exc:
            self.hub.reject(where or name, f"not a valid {name} record ({exc})")


class KafkaCommandPort:
    """The page's commands on the control topic; acks from the acks topic."""

    def __init__(self, bootstrap: str, control_topic: str, acks_topic: str) -> None:
        self.bootstrap = bootstrap
        self.control_topic = control_topic
        self.acks_topic = acks_topic

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        """Publish ``cmd`` and wait up to ``timeout_s`` for acks (a station target returns
        at its first). ``RuntimeError`` (``CommandError``) says why it was not sent."""
        from kafka.errors import KafkaError

        from convergence.ground_stations.kafka_fleet import issue_command

        loop = asyncio.get_running_loop()
        try:
            docs = await loop.run_in_executor(None, lambda: issue_command(
                self.bootstrap, self.control_topic, self.acks_topic, cmd, wait_s=timeout_s))
        except (KafkaError, OSError) as exc:
            raise RuntimeError(f"Kafka at {self.bootstrap}: {type(exc).__name__}: {exc}") from None
        return [CommandAck(str(d["command_id"]), str(d["station_id"]), bool(d["applied"]),
                           float(d["at_s"]), str(d.get("detail", ""))) for d in docs]


def store_reports(store: SurrealStore) -> ReportLookup:
    """A report lookup reading a report's revisions from ``store``'s report graph
    (oldest first; a report stored before revisions were kept is its one revision)."""
    from convergence.store.graph import get_report, get_revisions

    async def lookup(report_id: str) -> list[Report]:
        revisions = await get_revisions(store, report_id)
        if revisions:
            return revisions
        newest = await get_report(store, report_id)
        return [] if newest is None else [newest]

    return lookup


async def _open_store(settings: Settings,
                      on_note: Callable[[str], None] | None) -> SurrealStore | None:
    """The cluster's store for report look-ups, or ``None`` (with a note saying why).

    Never creates a database: a file store that does not exist, or an in-memory one
    (which holds nothing a cluster wrote), is no store.
    """
    from convergence.settings import DB_FILE_SCHEMES, db_scheme
    from convergence.store.surreal import StoreError, SurrealStore

    def note(why: str) -> None:
        if on_note is not None:
            on_note(f"{why}; reports are shown from the reports topic's last hour only")

    url = settings.db_url
    scheme = db_scheme(url)
    if scheme in ("mem", "memory"):
        note(f"the store {url} is in memory and holds nothing the cluster wrote")
        return None
    if scheme in DB_FILE_SCHEMES and not Path(url.split("://", 1)[1]).expanduser().exists():
        note(f"there is no database at {url}")
        return None
    store = SurrealStore.from_settings(settings)
    try:
        await store.open()
    except StoreError as exc:
        note(f"the store cannot be opened ({exc})")
        return None
    return store


async def serve_cluster(settings: Settings, stop: asyncio.Event, *, host: str = "127.0.0.1",
                        port: int = 8765, on_ready: Callable[[DashboardServer], None] | None = None,
                        on_note: Callable[[str], None] | None = None,
                        since_s: float = 3600.0) -> None:
    """Serve the dashboard for the cluster at ``settings.kafka_bootstrap`` until ``stop``.

    Raises ``KafkaError`` / ``OSError`` when the broker cannot be reached, and
    :class:`~convergence.dashboard.server.DashboardError` when the address is taken.
    A store that cannot be opened is a note (``on_note``), not an error: the live
    picture does not need it, only reports older than the topics' last hour do.
    """
    from convergence.streams import kafka_client

    loop = asyncio.get_running_loop()
    bootstrap = settings.kafka_bootstrap

    def probe() -> None:
        c = kafka_client.consumer(bootstrap, "convergence-dashboard-probe")
        c.close()

    await loop.run_in_executor(None, probe)  # no broker: KafkaError, before anything starts
    hub = Hub(source=f"cluster at {bootstrap}")
    store = await _open_store(settings, on_note)
    feed = ClusterFeed(hub, settings, loop, since_s=since_s, on_note=on_note)
    server = DashboardServer(
        hub, host=host, port=port,
        commands=KafkaCommandPort(bootstrap, settings.topic("control"), settings.topic("acks")),
        reports=None if store is None else store_reports(store))
    try:
        await server.start()
        feed.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        await loop.run_in_executor(None, feed.stop)
        await server.stop()
        if store is not None:
            await store.close()
