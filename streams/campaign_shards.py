"""Campaigns on the cluster: seeded shards on a topic, run by the workers' own Faust agent.

``convergence montecarlo run --cluster`` hands a campaign's chunks
(:func:`convergence.simulation.campaign.plan`) to the cluster instead of a local process
pool. This module owns both ends of that exchange, and nothing else:

* :class:`Shard` - one chunk as a work order: ``(scenario, first run, count)`` plus
  everything :func:`~convergence.simulation.campaign.run_chunk` is deterministic in (seed,
  parameter space, sweep, mode, detector settings), the campaign it belongs to, and a
  fingerprint of the code that decides a run's outcome;
* :func:`register_campaign_agent` - the worker side: a Faust agent on ``campaign-shards``
  that runs each shard in a thread (the event loop keeps heartbeating) and answers on
  ``campaign-results``; :func:`run_shard` is the pure part it calls;
* :func:`cluster_chunk_runner` - the client side: publishes the shards, collects the
  answers of its own campaign (:class:`ResultCollector`), reports progress, fails with one
  clear :class:`~convergence.streams.topics.ClusterError` when nobody answers.

It imports :mod:`convergence.simulation` because running a shard *is* running a campaign
chunk; :mod:`convergence.simulation` never imports the Kafka side, so there is no cycle.

Topics (``settings.topic(name)``; values are JSON):

================  ======================  ===============================================
name              key                     value
================  ======================  ===============================================
campaign-shards   ``<campaign>/<shard>``  :meth:`Shard.to_json` (dealt to the workers in
                                          turn: :func:`routes`)
campaign-results  ``<campaign>``          ``{"campaign", "shard", "state", "worker", ...}``:
                                          ``started``, ``running`` (every
                                          :data:`HEARTBEAT_S`), ``done`` (a part of the
                                          :class:`~convergence.simulation.campaign.ChunkResult`,
                                          at most :data:`MAX_RESULT_BYTES`), ``failed``
campaign-cancel   ``<campaign>``          ``{"campaign", "at_s"}``: a client gave up
================  ======================  ===============================================

Failures. A shard's offset is committed only after its result is delivered, so a worker
killed mid-shard leaves it to whichever worker gets its partition after the broker's
session timeout: at-least-once. Runs are deterministic, so a shard run twice gives the
same records; the client keeps the first complete answer per shard. A client that gives
up (no worker, a stall, Ctrl-C) publishes a cancel; workers read the cancel topic in full
(no consumer group) and skip that campaign's queued shards. A shard also expires
(``expires_at_s``) if a client died without cancelling.

Results equal a local campaign's exactly: the shards are the very chunks a local run
makes, and merging is order-independent (:func:`~convergence.simulation.campaign.run_campaign`
sorts chunk results before it sums them).

Examples
--------
The worker's part and the client's part, without a broker:

>>> from convergence.simulation.campaign import ParamSpace, run_chunk
>>> shard = Shard("c1", 0, "lone-surge", first=0, count=2, seed=1, space=ParamSpace(),
...               sweep=False, mode="cells", detector=DEFAULT_DETECTOR, code=code_fingerprint(),
...               expires_at_s=2e9)
>>> Shard.from_json(shard.to_json()) == shard
True
>>> answer = run_shard(shard, worker="w1")
>>> collector = ResultCollector("c1", [("lone-surge", 0, 2)])
>>> got = [collector.add(orjson.loads(m)) for m in answer]
>>> got[-1].records == run_chunk("lone-surge", 0, 2, seed=1, space=ParamSpace(), sweep=False).records
True
>>> collector.complete, collector.add(orjson.loads(answer[0])) is None  # a re-run: ignored
(True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_args

import orjson

from convergence.settings import Settings
from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    ChunkResult,
    DetectorParams,
    ParamSpace,
    RunRecord,
    run_chunk,
)
from convergence.simulation.simulator import Mode
from convergence.streams.topics import ClusterError

if TYPE_CHECKING:
    import faust

__all__ = [
    "CAMPAIGN_TOPICS", "DEFAULT_DETECTOR", "HEARTBEAT_S", "MAX_RESULT_BYTES", "ClusterProgress",
    "ResultCollector", "Shard", "ShardError", "ShardFailed", "cluster_chunk_runner",
    "code_fingerprint", "register_campaign_agent", "run_shard",
]

log = logging.getLogger(__name__)

#: The topics this module uses (declared with the others in :mod:`~convergence.streams.topics`).
CAMPAIGN_TOPICS: tuple[str, ...] = ("campaign-shards", "campaign-results", "campaign-cancel")
#: One result message stays below this (Kafka's default message limit is 1 MB); a bigger
#: chunk result goes out in parts.
MAX_RESULT_BYTES = 512_000
#: A worker running a shard says so this often, so a client tells "slow" from "gone".
HEARTBEAT_S = 10.0
#: How long a client waits for the first word from any worker.
START_TIMEOUT_S = 30.0
#: How long a client waits without any word while shards are unfinished: longer than a
#: failover (session timeout, then a rebalance that waits for running shards).
STALL_TIMEOUT_S = 120.0
#: Shards expire after this long at least (or one minute per shard, if more): a client
#: that died without cancelling does not keep the cluster busy for ever.
MIN_TTL_S = 6 * 3600.0
#: Campaign ids a worker remembers as cancelled (oldest forgotten first).
MAX_CANCELLED = 10_000
#: Packages whose code decides a run's outcome; workers refuse shards from other code.
_OUTCOME_PACKAGES = ("convergence", "convergence.detectors", "convergence.ground_stations",
                     "convergence.responses", "convergence.simulation")
_MODES: tuple[str, ...] = get_args(Mode)
WIRE_VERSION = 1


class ShardError(ValueError):
    """A shard message that cannot be run; ``campaign`` / ``shard`` when they were readable."""

    def __init__(self, reason: str, campaign: str | None = None, shard: int | None = None) -> None:
        super().__init__(reason)
        self.campaign = campaign
        self.shard = shard


class ShardFailed(ClusterError):
    """A worker could not run a shard (a deterministic failure: re-running cannot help)."""


_code_fingerprint: str | None = None


def code_fingerprint() -> str:
    """A digest of the source that decides a run's outcome (see :data:`_OUTCOME_PACKAGES`).

    A worker started from other code would judge runs differently and silently break
    "the merged result equals the local one", so it refuses such shards instead.

    >>> len(code_fingerprint()), code_fingerprint() == code_fingerprint()
    (16, True)
    """
    global _code_fingerprint
    if _code_fingerprint is None:
        h = hashlib.sha256()
        for name in _OUTCOME_PACKAGES:
            pkg = importlib.import_module(name)
            for root in map(Path, pkg.__path__):
                # the top package holds only core modules; sub-packages are whole folders
                files = root.glob("*.py") if name == "convergence" else root.rglob("*.py")
                for f in sorted(files):
                    h.update(f.relative_to(root).as_posix().encode())
                    h.update(f.read_bytes())
        _code_fingerprint = h.hexdigest()[:16]
    return _code_fingerprint


# -- the work order -------------------------------------------------------------------


def _space_from(d: Mapping[str, Any]) -> ParamSpace:
    def pair(v: Any) -> tuple[float, float]:
        lo, hi = v
        return (float(lo), float(hi))

    return ParamSpace(effect=pair(d["effect"]), onset_jitter_s=float(d["onset_jitter_s"]),
                      rate_spread=pair(d["rate_spread"]), noise=pair(d["noise"]),
                      membership=pair(d["membership"]),
                      warning=tuple(float(x) for x in d["warning"]),
                      window_ticks=tuple(int(x) for x in d["window_ticks"]),
                      pattern_weight=tuple(float(x) for x in d["pattern_weight"]))


def _detector_from(d: Mapping[str, Any]) -> DetectorParams:
    return DetectorParams(warning=float(d["warning"]), window_ticks=int(d["window_ticks"]),
                          pattern_weight=float(d["pattern_weight"]))


@dataclass(frozen=True)
class Shard:
    """One chunk of a campaign as a work order (see the module docstring).

    >>> s = Shard("c", 3, "simultaneous", first=500, count=500, seed=7, space=ParamSpace(),
    ...           sweep=True, mode="cells", detector=DEFAULT_DETECTOR, code="x", expires_at_s=0)
    >>> s.key, s.runs
    (b'c/3', 'runs 500-999')
    """

    campaign: str
    shard: int
    scenario: str
    first: int
    count: int
    seed: int
    space: ParamSpace
    sweep: bool
    mode: Mode
    detector: DetectorParams
    code: str
    expires_at_s: float

    @property
    def key(self) -> bytes:
        return f"{self.campaign}/{self.shard}".encode()

    @property
    def runs(self) -> str:
        return f"runs {self.first}-{self.first + self.count - 1}"

    def to_json(self) -> bytes:
        return orjson.dumps({"v": WIRE_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, value: bytes | None) -> Shard:
        """Decode and validate; a bad message raises :class:`ShardError` with the reason."""
        try:
            d = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise ShardError(f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ShardError(f"not a JSON object: {type(d).__name__}")
        campaign, shard = d.get("campaign"), d.get("shard")
        if not isinstance(campaign, str) or not campaign or not isinstance(shard, int):
            raise ShardError(f"no campaign id and shard number (campaign={campaign!r}, "
                             f"shard={shard!r})")
        if d.get("v") != WIRE_VERSION:
            raise ShardError(f"shard format version {d.get('v')!r}, this worker reads "
                             f"{WIRE_VERSION}: run the same convergence version on the client "
                             "and the workers", campaign, shard)
        try:
            out = cls(campaign, shard, str(d["scenario"]), int(d["first"]), int(d["count"]),
                      int(d["seed"]), _space_from(d["space"]), bool(d["sweep"]), d["mode"],
                      _detector_from(d["detector"]), str(d["code"]), float(d["expires_at_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"malformed shard: {type(exc).__name__}: {exc}", campaign,
                             shard) from None
        if out.mode not in _MODES:
            raise ShardError(f"mode {out.mode!r} is not one of {', '.join(_MODES)}", campaign, shard)
        if out.first < 0 or out.count < 1:
            raise ShardError(f"runs first={out.first} count={out.count} (need first >= 0, "
                             "count >= 1)", campaign, shard)
        return out


# -- the worker's part ------------------------------------------------------------------


def _message(shard: Shard, state: str, worker: str, **extra: Any) -> bytes:
    return orjson.dumps({"v": WIRE_VERSION, "campaign": shard.campaign, "shard": shard.shard,
                         "state": state, "worker": worker, **extra})


def _wire_float(x: float) -> float | str:
    # JSON has no NaN or infinity (orjson writes null); float() reads these strings back
    return x if math.isfinite(x) else str(x)


def _record_to_wire(r: RunRecord) -> dict[str, Any]:
    return {"run": r.run, "genuine": r.genuine, "detected": r.detected,
            "false_alarms": r.false_alarms, "ttd_ticks": [_wire_float(x) for x in r.ttd_ticks],
            "detector": asdict(r.detector),
            "alerts": [[lvl, _wire_float(sc), g] for lvl, sc, g in r.alerts],
            "peak_in": [_wire_float(x) for x in r.peak_in], "peak_out": _wire_float(r.peak_out)}


def _record_from_wire(scenario: str, d: Mapping[str, Any]) -> RunRecord:
    return RunRecord(scenario, int(d["run"]), int(d["genuine"]), int(d["detected"]),
                     int(d["false_alarms"]), tuple(float(x) for x in d["ttd_ticks"]),
                     _detector_from(d["detector"]),
                     tuple((int(lvl), float(sc), bool(g)) for lvl, sc, g in d["alerts"]),
                     tuple(float(x) for x in d["peak_in"]), float(d["peak_out"]))


def refusal(shard: Shard, now_s: float, *, code: str | None = None,
            cancelled: Mapping[str, float] | None = None) -> tuple[str, str] | None:
    """``(state, reason)`` when a worker must not run ``shard``, else ``None``.

    >>> s = Shard("c", 0, "lone-surge", first=0, count=1, seed=1, space=ParamSpace(),
    ...           sweep=False, mode="cells", detector=DEFAULT_DETECTOR, code="abc",
    ...           expires_at_s=100.0)
    >>> refusal(s, 50.0, code="abc") is None, refusal(s, 50.0, code="abc", cancelled={"c": 1.0})[0]
    (True, 'cancelled')
    >>> refusal(s, 150.0, code="abc")[0], refusal(s, 50.0, code="def")[0]
    ('expired', 'failed')
    """
    from convergence.ground_stations.scenario_library import SCENARIOS

    if cancelled is not None and shard.campaign in cancelled:
        return ("cancelled", "its client gave up")
    if now_s > shard.expires_at_s:
        return ("expired", f"expired {now_s - shard.expires_at_s:.0f} s before a worker took it")
    mine = code if code is not None else code_fingerprint()
    if shard.code != mine:
        return ("failed", f"the worker runs other code (fingerprint {mine}) than the client "
                          f"({shard.code}): restart the cluster from the client's version")
    if shard.scenario not in SCENARIOS:
        return ("failed", f"the worker does not know scenario {shard.scenario!r}")
    return None


def run_shard(shard: Shard, worker: str, *, max_bytes: int = MAX_RESULT_BYTES) -> list[bytes]:
    """Run one shard (:func:`~convergence.simulation.campaign.run_chunk`) and return its
    ``done`` messages: the records split into parts of at most ``max_bytes`` each.

    Raises :class:`ShardError` when one run's record alone exceeds ``max_bytes``.
    """
    res = run_chunk(shard.scenario, shard.first, shard.count, seed=shard.seed, space=shard.space,
                    sweep=shard.sweep, mode=shard.mode, detector=shard.detector)
    return result_messages(shard, res, worker, max_bytes=max_bytes)


def result_messages(shard: Shard, res: ChunkResult, worker: str, *,
                    max_bytes: int = MAX_RESULT_BYTES) -> list[bytes]:
    """The ``done`` messages of a chunk result, each at most ``max_bytes`` (see :func:`run_shard`)."""
    head = {"station_hours": res.station_hours, "events": res.events, "seconds": res.seconds}
    rows = [orjson.dumps(_record_to_wire(r)) for r in res.records]
    base = len(_message(shard, "done", worker, part=999_999, parts=999_999, records=[], **head))
    groups: list[list[bytes]] = [[]]
    size = base
    for row in rows:
        if base + len(row) + 1 > max_bytes:
            raise ShardError(f"run {orjson.loads(row)['run']}'s record is {len(row):,} bytes, "
                             f"more than one message may carry ({max_bytes:,})",
                             shard.campaign, shard.shard)
        if groups[-1] and size + len(row) + 1 > max_bytes:
            groups.append([])
            size = base
        groups[-1].append(row)
        size += len(row) + 1
    return [_message(shard, "done", worker, part=k, parts=len(groups),
                     records=orjson.Fragment(b"[" + b",".join(g) + b"]"), **head)
            for k, g in enumerate(groups)]


class CancelledCampaigns:
    """Every worker reads ``campaign-cancel`` in full, outside any consumer group, so
    each knows every cancelled campaign (a mapping: campaign id -> when it was cancelled).

    ``caught_up`` is set once what was on the topic at start has been read, so a
    restarted worker skips an abandoned campaign's shards instead of running them.
    """

    def __init__(self, settings: Settings, *, limit: int = MAX_CANCELLED) -> None:
        self.settings = settings
        self.topic = settings.topic("campaign-cancel")
        self.limit = limit
        self.cancelled: dict[str, float] = {}
        self.caught_up = asyncio.Event()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    def add(self, value: bytes | None) -> None:
        """Note one cancel message (a bad one is ignored: it cancels nothing)."""
        try:
            d = orjson.loads(value or b"")
            cid, at = d["campaign"], float(d.get("at_s", 0.0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if isinstance(cid, str):
            self.cancelled.pop(cid, None)
            self.cancelled[cid] = at
            while len(self.cancelled) > self.limit:
                self.cancelled.pop(next(iter(self.cancelled)))

    async def start(self, wait_s: float = 10.0) -> None:
        """Start reading; without the topic (or a broker) after ``wait_s``, shards run
        without cancel checks rather than the worker failing to start."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        try:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","), group_id=None,
                enable_auto_commit=False,
                client_id=f"{self.settings.faust_app_id}-campaign-cancel")
            await self._consumer.start()
            deadline = time.monotonic() + wait_s
            while self.topic not in await self._consumer.topics():  # fetches metadata
                if time.monotonic() > deadline:
                    raise LookupError(f"no topic {self.topic}")
                await asyncio.sleep(0.5)
            # one partition, declared so (TOPIC_PARTITIONS): no metadata needed to assign it
            tps = [TopicPartition(self.topic, 0)]
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            end = await self._consumer.end_offsets(tps)
        except Exception as exc:
            log.warning("campaign cancels cannot be read (%s: %s): shards of campaigns whose "
                        "client gave up will still run", type(exc).__name__, exc)
            self.caught_up.set()
            return
        self._task = asyncio.ensure_future(self._run(tps, end))

    async def _run(self, tps: list[Any], end: Mapping[Any, int]) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
                for msgs in batch.values():
                    for m in msgs:
                        self.add(m.value)
                if not self.caught_up.is_set():
                    positions = [await self._consumer.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                        self.caught_up.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker hiccup: go on reading
                log.warning("campaign cancels: read failed (%s: %s); retrying in 1 s",
                            type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


def register_campaign_agent(app: faust.App, settings: Settings, topics: Mapping[str, Any]) -> Any:
    """Give a worker's Faust app the agent that runs campaign shards (and the cancel reader).

    ``topics`` maps logical names to the app's raw-bytes Faust topics (as
    :func:`~convergence.streams.faust_app.build_worker` makes them for every name in
    :data:`~convergence.streams.topics.TOPICS`). One shard at a time per worker, in a
    thread: the numpy work releases the event loop often enough for heartbeats, commits
    and the other agents. Returns the agent.
    """

    from convergence.streams.faust_config import worker_client_id

    shards, results = topics["campaign-shards"], topics["campaign-results"]
    worker = worker_client_id(settings.faust_app_id)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-shard")
    cancels = CancelledCampaigns(settings)

    from convergence.streams.faust_app import run_with_app

    run_with_app(app, cancels, "reads the cancel topic for as long as the app runs")

    async def send(key: bytes, value: bytes) -> None:
        # wait for delivery: the shard's offset is committed only after its answer is out
        delivered = await results.send(key=key, value=value)
        await delivered

    async def serve(value: bytes) -> None:
        try:
            shard = Shard.from_json(value)
        except ShardError as exc:
            log.error("campaign shard skipped: %s", exc)
            if exc.campaign is not None and exc.shard is not None:
                await send(exc.campaign.encode(), orjson.dumps(
                    {"v": WIRE_VERSION, "campaign": exc.campaign, "shard": exc.shard,
                     "state": "failed", "worker": worker, "reason": str(exc)}))
            return
        with contextlib.suppress(asyncio.TimeoutError):
            # a restarted worker first learns which campaigns were given up
            await asyncio.wait_for(cancels.caught_up.wait(), 15.0)
        key = shard.campaign.encode()
        refused = refusal(shard, time.time(), cancelled=cancels.cancelled)
        if refused is not None:
            state, reason = refused
            log.warning("campaign %s shard %d (%s %s) not run: %s", shard.campaign, shard.shard,
                        shard.scenario, shard.runs, reason)
            if state != "cancelled":  # nobody listens for a cancelled campaign
                await send(key, _message(shard, state, worker, reason=reason))
            return
        await send(key, _message(shard, "started", worker))
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, run_shard, shard, worker)
        while True:
            done, _ = await asyncio.wait({job}, timeout=HEARTBEAT_S)
            if done:
                break
            await send(key, _message(shard, "running", worker,
                                     seconds=round(time.monotonic() - t0, 1)))
        try:
            answer = job.result()
        except Exception as exc:
            log.exception("campaign %s shard %d (%s %s) failed", shard.campaign, shard.shard,
                          shard.scenario, shard.runs)
            await send(key, _message(shard, "failed", worker,
                                     reason=f"{type(exc).__name__}: {exc}"))
            return
        for m in answer:
            await send(key, m)
        log.info("campaign %s shard %d (%s %s) done in %.1f s", shard.campaign, shard.shard,
                 shard.scenario, shard.runs, time.monotonic() - t0)

    @app.agent(shards, name="convergence-campaign-shards")
    async def campaign_shards(stream: Any) -> None:
        async for value in stream:
            try:
                await serve(value)
            except Exception:
                # a bug met by one shard must not stop the agent; the client times out
                # on it with a clear message instead
                log.exception("campaign shard agent: unexpected error; going on")

    return campaign_shards


# -- the client's part ------------------------------------------------------------------


@dataclass
class ClusterProgress:
    """What a client knows while its campaign runs on the cluster (for a progress line)."""

    shards: int
    done: int = 0
    running: int = 0
    workers: int = 0
    reruns: int = 0
    waiting_s: float = 0.0

    def text(self) -> str:
        """A short line for a person.

        >>> ClusterProgress(41, done=3, running=2, workers=2, reruns=1).text()
        'cluster: 3/41 shards, 2 running on 2 workers, 1 re-run'
        >>> ClusterProgress(41, waiting_s=4.2).text()
        'cluster: waiting for a worker (4 s)'
        """
        if not self.workers:
            return f"cluster: waiting for a worker ({self.waiting_s:.0f} s)"
        out = (f"cluster: {self.done}/{self.shards} shards, {self.running} running on "
               f"{self.workers} worker{'s' if self.workers != 1 else ''}")
        if self.reruns:
            out += f", {self.reruns} re-run{'s' if self.reruns != 1 else ''}"
        return out


@dataclass
class _Parts:
    head: dict[str, Any]
    parts: dict[int, list[Any]] = field(default_factory=dict)


class ResultCollector:
    """Gathers one campaign's answers: ignores other campaigns', joins parts, keeps the
    first complete answer of each shard (a shard re-run after a failover answers twice),
    and raises :class:`ShardFailed` for a shard no worker can run.

    ``jobs`` are the campaign's chunks ``(scenario, first, count)``, shard ``i`` being
    ``jobs[i]``. :meth:`add` returns a shard's :class:`ChunkResult` once, when complete.
    """

    def __init__(self, campaign: str, jobs: Sequence[tuple[str, int, int]]) -> None:
        self.campaign = campaign
        self.jobs = list(jobs)
        self.done: set[int] = set()
        self.started_by: dict[int, str] = {}
        self.workers: set[str] = set()
        self.reruns = 0
        self.heard_at = time.monotonic()
        self._parts: dict[int, _Parts] = {}

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.jobs)

    def progress(self) -> ClusterProgress:
        running = sum(1 for s in self.started_by if s not in self.done)
        return ClusterProgress(len(self.jobs), len(self.done), running, len(self.workers),
                               self.reruns)

    def add(self, doc: Any) -> ChunkResult | None:
        """One decoded message from the results topic (see the class docstring)."""
        if not isinstance(doc, dict) or doc.get("campaign") != self.campaign:
            return None
        i, state, worker = doc.get("shard"), doc.get("state"), str(doc.get("worker", "?"))
        if not isinstance(i, int) or not 0 <= i < len(self.jobs) or i in self.done:
            return None
        self.heard_at = time.monotonic()
        self.workers.add(worker)
        scenario, first, count = self.jobs[i]
        where = f"shard {i} ({scenario} runs {first}-{first + count - 1}) on worker {worker}"
        if state in ("failed", "expired"):
            raise ShardFailed(f"{where} {state}: {doc.get('reason', 'no reason given')}")
        if state == "started":
            if i in self.started_by and self.started_by[i] != worker:
                self.reruns += 1
            self.started_by[i] = worker
            return None
        if state != "done":
            return None
        self.started_by.setdefault(i, worker)
        try:
            part, parts = int(doc["part"]), int(doc["parts"])
            got = self._parts.setdefault(i, _Parts({k: doc[k] for k in
                                                    ("station_hours", "events", "seconds")}))
            got.parts.setdefault(part, doc["records"])
            if len(got.parts) < parts:
                return None
            records = [_record_from_wire(scenario, r) for k in range(parts) for r in got.parts[k]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardFailed(f"{where}: malformed answer ({type(exc).__name__}: {exc})") from None
        if [r.run for r in records] != list(range(first, first + count)):
            raise ShardFailed(f"{where}: answered runs {records[0].run if records else '-'}.."
                              f"{records[-1].run if records else '-'}, not {first}..{first + count - 1}")
        self.done.add(i)
        del self._parts[i]
        return ChunkResult(scenario, records, float(got.head["station_hours"]),
                           int(got.head["events"]), float(got.head["seconds"]))


def routes(owners: Sequence[Sequence[int]], n: int) -> list[int]:
    """The partitions shards go to, in turn, so consecutive shards land on different workers.

    ``owners`` are the shard partitions each worker of the group owns now (read from the
    group's assignment); shards are dealt to the workers in turn, and to each worker's
    partitions in turn. Owners unknown: the lower and upper halves of the ``n`` partitions
    interleaved (two workers of a fresh group own one half each). A partition that changes
    hands later still gets its shards run, by its new owner.

    >>> routes([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]], 12)[:6]
    [0, 6, 1, 7, 2, 8]
    >>> routes([], 12), routes([], 3)
    ([0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11], [0, 2, 1])
    """
    owned = [list(p) for p in owners if p]
    if owned:
        return [parts[k % len(parts)] for k in range(max(map(len, owned))) for parts in owned]
    half = (n + 1) // 2
    return [p for k in range(half) for p in (k, half + k) if p < n]


class Transport(Protocol):
    """What the client needs from Kafka (a fake one runs the client in unit tests)."""

    def publish(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None: ...
    def partitions(self, topic: str) -> int: ...
    def owners(self, topic: str) -> list[list[int]]: ...
    def flush(self) -> None: ...
    def poll(self, timeout_s: float) -> list[bytes]: ...
    def close(self) -> None: ...


class KafkaTransport:
    """The client's Kafka side: a producer, and a consumer of the results topic that starts
    at its end (so only answers to shards published after it count)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from convergence.streams import kafka_client
        from convergence.streams.topics import ensure_topics

        self.bootstrap = settings.kafka_bootstrap
        self.group = settings.faust_app_id
        ensure_topics(settings, CAMPAIGN_TOPICS, timeout_s=15.0)
        self._consumer = None
        self._producer = None
        try:
            self._consumer = kafka_client.consumer(self.bootstrap, "convergence-campaign-client")
            kafka_client.assign_all(self._consumer, settings.topic("campaign-results"),
                                    start="end", wait_s=15.0)
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","), acks="all", linger_ms=5,
                client_id="convergence-campaign-client",
                bootstrap_timeout_ms=kafka_client.BOOTSTRAP_TIMEOUT_MS)
        except (KafkaError, OSError) as exc:
            self.close()
            raise ClusterError(kafka_client.unreachable(self.bootstrap, exc)) from None

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from kafka.errors import KafkaError

        try:
            yield
        except (KafkaError, OSError) as exc:
            raise ClusterError(f"lost Kafka at {self.bootstrap} while {doing} "
                               f"({type(exc).__name__}: {exc})") from None

    def publish(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None:
        assert self._producer is not None
        with self._errors("publishing shards"):
            self._producer.send(topic, key=key, value=value, partition=partition)

    def partitions(self, topic: str) -> int:
        assert self._producer is not None
        with self._errors(f"reading {topic}'s partitions"):
            return len(self._producer.partitions_for(topic))

    def owners(self, topic: str) -> list[list[int]]:
        """The partitions of ``topic`` each member of the workers' group owns ([] if unknown)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","),
                                     client_id="convergence-campaign-client",
                                     request_timeout_ms=5000, bootstrap_timeout_ms=5000)
            try:
                info = admin.describe_groups([self.group]).get(self.group) or {}
            finally:
                admin.close()
            return [sorted(int(p) for p in a.get("partitions") or [])
                    for m in info.get("members", [])
                    for a in (m.get("member_assignment") or {}).get("assigned_partitions", [])
                    if a.get("topic") == topic and a.get("partitions")]
        except (KafkaError, OSError, AttributeError, TypeError, ValueError) as exc:
            log.info("campaign client: cannot read group %s's assignment (%s); spreading shards "
                     "over the partitions", self.group, exc)
            return []

    def flush(self) -> None:
        assert self._producer is not None
        with self._errors("publishing shards"):
            self._producer.flush(timeout=30.0)

    def poll(self, timeout_s: float) -> list[bytes]:
        assert self._consumer is not None
        with self._errors("reading results"):
            batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [r.value for records in batch.values() for r in records]

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()


ChunkRunner = Callable[[list[tuple[str, int, int]], dict[str, Any]], Iterable[ChunkResult]]


def cluster_chunk_runner(settings: Settings, *, on_progress: Callable[[ClusterProgress], None] | None = None,
                         start_timeout_s: float | None = None, stall_timeout_s: float | None = None,
                         transport: Callable[[Settings], Transport] | None = None) -> ChunkRunner:
    """A ``chunk_runner`` for :func:`~convergence.simulation.campaign.run_campaign` that
    runs the chunks on the cluster's workers (see the module docstring).

    Raises :class:`~convergence.streams.topics.ClusterError` (one line that says what to
    do) when Kafka cannot be reached, no worker answers within ``start_timeout_s``
    (default :data:`START_TIMEOUT_S`), the cluster goes silent for ``stall_timeout_s``
    (default :data:`STALL_TIMEOUT_S`) with shards unfinished, or a shard fails.

    >>> from convergence.settings import load_settings
    >>> runner = cluster_chunk_runner(load_settings(env={}, config_path=None))
    >>> callable(runner)
    True
    """

    def runner(jobs: list[tuple[str, int, int]], kw: dict[str, Any]) -> Iterator[ChunkResult]:
        return run_on_cluster(settings, jobs, kw, on_progress=on_progress,
                              start_timeout_s=START_TIMEOUT_S if start_timeout_s is None
                              else start_timeout_s,
                              stall_timeout_s=STALL_TIMEOUT_S if stall_timeout_s is None
                              else stall_timeout_s,
                              transport=transport or KafkaTransport)

    return runner


def make_shards(campaign: str, jobs: Sequence[tuple[str, int, int]], kw: Mapping[str, Any],
                now_s: float) -> list[Shard]:
    """The shards of a campaign's chunks; ``kw`` as :func:`run_campaign` passes it."""
    ttl = max(MIN_TTL_S, 60.0 * len(jobs))
    code = code_fingerprint()
    return [Shard(campaign, i, s, first, count, int(kw["seed"]), kw["space"], bool(kw["sweep"]),
                  kw.get("mode", "cells"), kw.get("detector", DEFAULT_DETECTOR), code, now_s + ttl)
            for i, (s, first, count) in enumerate(jobs)]


def run_on_cluster(settings: Settings, jobs: list[tuple[str, int, int]], kw: Mapping[str, Any], *,
                   on_progress: Callable[[ClusterProgress], None] | None = None,
                   start_timeout_s: float = START_TIMEOUT_S,
                   stall_timeout_s: float = STALL_TIMEOUT_S,
                   transport: Callable[[Settings], Transport] = KafkaTransport,
                   poll_s: float = 0.5) -> Iterator[ChunkResult]:
    """Publish the shards, yield each chunk's result as it completes (in any order)."""
    campaign = f"{kw['seed']}-{uuid.uuid4().hex[:12]}"
    shards = make_shards(campaign, jobs, kw, time.time())
    t = transport(settings)
    collector = ResultCollector(campaign, jobs)
    try:
        topic = settings.topic("campaign-shards")
        order = routes(t.owners(topic), max(1, t.partitions(topic)))
        for sh in shards:
            t.publish(topic, sh.key, sh.to_json(), order[sh.shard % len(order)])
        t.flush()
        t0 = last_note = time.monotonic()
        collector.heard_at = t0
        while not collector.complete:
            for value in t.poll(poll_s):
                try:
                    doc = orjson.loads(value or b"")
                except orjson.JSONDecodeError:
                    continue
                res = collector.add(doc)
                if res is not None:
                    yield res
            now = time.monotonic()
            if on_progress is not None and (now - last_note >= 0.5 or collector.complete):
                last_note = now
                p = collector.progress()
                p.waiting_s = now - t0
                on_progress(p)
            if not collector.workers and now - t0 > start_timeout_s:
                raise ClusterError(
                    f"no cluster worker took the campaign's shards within {start_timeout_s:g} s; "
                    f"is `convergence cluster up` running with the same CONVERGENCE_TOPIC_PREFIX "
                    f"({settings.topic_prefix}) on Kafka at {settings.kafka_bootstrap}?")
            if collector.workers and not collector.complete and now - collector.heard_at > stall_timeout_s:
                raise ClusterError(
                    f"the cluster stopped answering: {len(jobs) - len(collector.done)} of "
                    f"{len(jobs)} shards unfinished and no word from any worker for "
                    f"{stall_timeout_s:g} s; see `convergence cluster status`")
    finally:
        if not collector.complete:
            with contextlib.suppress(Exception):
                t.publish(settings.topic("campaign-cancel"), campaign.encode(),
                          orjson.dumps({"campaign": campaign, "at_s": time.time()}), None)
                t.flush()
        t.close()

