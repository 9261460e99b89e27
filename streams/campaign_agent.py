"""Campaign shards, the worker's side: a Faust agent that runs each shard and answers.

:func:`register_campaign_agent` gives a cluster worker's Faust app an agent on
``campaign-shards``: it runs each shard (:func:`run_shard`, the pure part) in a thread,
so the event loop keeps heartbeating, and answers on ``campaign-results``, saying
``running`` every :data:`~convergence.streams.campaign_orders.HEARTBEAT_S`. A shard's
offset is committed only after its answer is delivered (at-least-once). Before running
one it checks :func:`refusal`: other code than the client's, an unknown scenario, an
expired shard, or a campaign whose client gave up (:class:`CancelledCampaigns` reads the
cancel topic in full). The exchange as a whole is described in
:mod:`convergence.streams.campaign_shards`.

Examples
--------
>>> from convergence.simulation.campaign import DEFAULT_DETECTOR, ParamSpace
>>> shard = Shard("c1", 0, "lone-surge", first=0, count=2, seed=1, space=ParamSpace(),
...               sweep=False, mode="cells", detector=DEFAULT_DETECTOR, code=code_fingerprint(),
...               expires_at_s=2e9)
>>> refusal(shard, 1e9) is None, [orjson.loads(m)["state"] for m in run_shard(shard, worker="w1")]
(True, ['done'])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from convergence.settings import Settings
from convergence.simulation.campaign import run_chunk
from convergence.streams.campaign_orders import (
    HEARTBEAT_S,
    MAX_RESULT_BYTES,
    WIRE_VERSION,
    Shard,
    ShardError,
    code_fingerprint,
    result_messages,
    shard_message,
)

if TYPE_CHECKING:
    import faust

__all__ = ["MAX_CANCELLED", "CancelledCampaigns", "refusal", "register_campaign_agent", "run_shard"]

log = logging.getLogger(__name__)

#: Campaign ids a worker remembers as cancelled (oldest forgotten first).
MAX_CANCELLED = 10_000


def refusal(shard: Shard, now_s: float, *, code: str | None = None,
            cancelled: Mapping[str, float] | None = None) -> tuple[str, str] | None:
    """``(state, reason)`` when a worker must not run ``shard``, else ``None``.

    >>> from convergence.simulation.campaign import DEFAULT_DETECTOR, ParamSpace
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
                await send(key, shard_message(shard, state, worker, reason=reason))
            return
        await send(key, shard_message(shard, "started", worker))
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, run_shard, shard, worker)
        while True:
            done, _ = await asyncio.wait({job}, timeout=HEARTBEAT_S)
            if done:
                break
            await send(key, shard_message(shard, "running", worker,
                                     seconds=round(time.monotonic() - t0, 1)))
        try:
            answer = job.result()
        except Exception as exc:
            log.exception("campaign %s shard %d (%s %s) failed", shard.campaign, shard.shard,
                          shard.scenario, shard.runs)
            await send(key, shard_message(shard, "failed", worker,
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
