"""Benchmark: events/s from the broker through N real cluster workers, beside a raw consume.

:func:`bench_cluster` runs, against a real broker and in one go, for every combination of
worker count and batch size it is given:

1. **backlog** - a seeded synthetic fleet (the default fleet's ids, kinds, regions and
   correlation groups, each station at ``rate_scale`` times its declared rate, with the
   default scenario's random episodes) is drawn poll interval by poll interval; each
   station's events of one interval are one Kafka message keyed by its id, and the
   interval is chosen so the mean message holds ``batch`` events. The event stream is
   the same whatever the batch size; only its packaging differs. Produced as the
   stations' own sink produces (acks=all, idempotent, linger 20 ms, lz4 or gzip) to a
   fresh events topic.
2. **baseline** - a plain kafka-python ``KafkaConsumer`` reads that topic from the
   beginning to its end, decoding nothing: the raw consume rate.
3. **workers** - N ``convergence cluster worker`` processes, started the way
   ``convergence cluster up`` starts them (the supervisor's :func:`worker_argv` and
   :func:`worker_env`, a fleet file the workers learn the stations from; worker 0 owns
   the store, an in-memory SurrealDB), with the full detector chain in two stages:
   each worker runs the first stage (ingest, station detectors) for the events
   partitions it owns and the second (meter, responses, reports) for the
   ``node-evidence`` partitions it owns. They are a black box: the harness only feeds
   the events topic and watches the consumer group's committed offsets, until every
   event is committed.
   ``events_per_s`` is the sustained rate from the first evidence the workers hand on
   (their first ticks closed: they are draining) until :data:`SUSTAINED_SHARE` of the
   backlog is committed (startup excluded; offsets are committed every few seconds, so
   short runs are coarse; the first commit comes late, once ticks closed, so it cannot
   mark the start);
   ``tail_s`` is the rest, until the last event is committed: the backlog's last ticks
   wait for the watermark's recovery hold (a partition that was behind waits 30 s of
   caught-up time for stations still resending), the same for any number of workers.
   ``ratio_to_baseline`` compares the rate with phase 2.
4. **live** - once the backlog is consumed, the fleet goes on in real time (each
   station sends its interval's events when the interval ends) with ``live_episodes``
   genuine convergences, staggered. Alert latency is, for every alert of the live
   phase read from the alerts topic, the time from the send of the last message that
   contributed to it (a station of its region, with events before the alert's tick
   end) to the alert being read. A tick closes once events ``allowed_lateness_s``
   later have arrived, so latency includes the poll interval and the lateness: the
   price of bigger batches.
5. **stop** - the workers are stopped in waves (those without the store first); each
   sends its counters to the ``runs`` topic as it stops, from which the run reports
   the share of station-ticks skipped at ingress (stations at baseline send nothing
   to the second stage) and the ``node-evidence`` bytes per closed tick. Then the
   run's topics and consumer group are deleted, its temporary data directory removed.

The workers' settings are this process's, with the run's own topic prefix, consumer
group and data directory, the fleet file (the default fleet of ``stations``, each
station declaring the rate it really sends at: ``rate_scale`` times the default),
the rule-based meter (no trained model), and an allowed
lateness of one poll interval plus 1.5 s (a message holds events up to one interval
old). Baselines are seeded from the declared rates.

The parts live beside this module: :mod:`~convergence.simulation.cluster_backlog` (the
synthetic fleet as messages, and the workers' fleet file),
:mod:`~convergence.simulation.cluster_broker` (filling, raw consume, watching the
drain, the stage figures, clean-up), :mod:`~convergence.simulation.cluster_live` (the
live phase and alert latency) and :mod:`~convergence.simulation.cluster_figures` (the
arithmetic and the JSON). This module starts the workers and runs the phases in order.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from convergence.settings import Settings
from convergence.simulation.cluster_backlog import (
    DEFAULT_BATCH,
    DEFAULT_RATE_SCALE,
    BacklogPlan,
    Message,
    backlog_messages,
    fleet_toml,
)
from convergence.simulation.cluster_broker import (
    EvidenceWatch,
    committed_offsets,
    count_alerts,
    delete_run_topics,
    fill_backlog,
    raw_consume,
    stage_figures,
)
from convergence.simulation.cluster_figures import (
    SUSTAINED_SHARE,
    compare,
    cpu_delta,
    drain_figures,
    events_before,
    percentile,
    quiet_since,
    run_figures,
    sustained_rate,
)
from convergence.simulation.cluster_live import Say, live_phase

# the backlog's and the figures' names are re-exported: callers import them from here
__all__ = ["CORE_EVENTS", "DEFAULT_BATCH", "DEFAULT_RATE_SCALE", "SUSTAINED_SHARE", "BacklogPlan",
           "Message", "backlog_messages", "bench_cluster", "compare", "core_rate", "fleet_toml",
           "percentile", "quiet_since", "sustained_rate"]

#: slack added to the allowed lateness beyond one poll interval (the setting's default)
LATENESS_SLACK_S = 1.5


def _quiet(_text: str) -> None:
    pass


#: the in-process measurement of the workers' own code takes at most this many events
CORE_EVENTS = 300_000


def core_rate(s: Settings, plan: BacklogPlan, partitions: int) -> dict[str, Any]:
    """The workers' own code without Faust or a broker: the backlog's messages (at most
    :data:`CORE_EVENTS` events) through one first-stage core owning every partition and
    one second-stage core owning every region, in this process, timed in CPU seconds.
    Beside the workers' events per CPU second it says where their time goes: what this
    does not spend, Faust, aiokafka and the tables do.

    >>> import tempfile
    >>> from convergence.settings import load_settings
    >>> plan = BacklogPlan(stations=20, seed=3, events=2000, t0_s=time.time() - 3600.0)
    >>> d = tempfile.mkdtemp()
    >>> _ = (Path(d) / "fleet.toml").write_text(fleet_toml(plan))
    >>> s = load_settings(env={}, config_path=None).replace(
    ...     stations=20, seed=3, fleet=str(Path(d) / "fleet.toml"), meter_model="rules")
    >>> r = core_rate(s, plan, 2)
    >>> r["events"] > 1000, r["events_per_cpu_s"] > 0
    (True, True)
    """
    from convergence.streams.directory import StationDirectory
    from convergence.streams.faust_app import INBOX_BYTES, INBOX_MESSAGES
    from convergence.streams.region_core import RegionCore
    from convergence.streams.topics import station_partition
    from convergence.streams.worker import InMessage, WorkerCore

    plan = replace(plan, events=min(plan.events, CORE_EVENTS))
    msgs = [(m.key, m.value, station_partition(m.key.decode(), partitions))
            for m in backlog_messages(plan)]
    directory = StationDirectory.from_settings(s)
    first = WorkerCore(s, directory=directory, stations_only=True, n_sources=partitions,
                       n_units=partitions, run_id="bench-core")
    first.on_assignment(range(partitions))
    second = RegionCore(s, directory, n_sources=partitions, n_units=partitions,
                        run_id="bench-core")
    second.on_assignment(range(partitions))
    now = time.time()
    offsets = [0] * partitions
    alerts = 0

    def carry(emits: Sequence[Any]) -> None:
        nonlocal alerts
        for e in emits:
            if e.topic == "node-evidence":
                alerts += sum(x.topic == "alerts" for x in second.on_message(e.value, e.partition, now))

    # batched as the worker's ingest agent hands them over (its inbox's bounds), so what
    # this does not spend is what Faust and aiokafka do
    batch: list[InMessage] = []
    size = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for key, value, p in msgs:
        batch.append(InMessage(value, key, p, offsets[p]))
        offsets[p] += 1
        size += len(value)
        if size >= INBOX_BYTES or len(batch) >= INBOX_MESSAGES:
            carry(first.on_messages(batch, now))
            batch, size = [], 0
    if batch:
        carry(first.on_messages(batch, now))
    carry(first.on_stop(now))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    events = int(first.pipeline.counters.events)
    return {"what": "the workers' code in this process: decode, ingest, station detectors, "
                    "node evidence, meter, responses, reports (no Faust, no broker), messages "
                    "handed over in the worker's batches",
            "events": events, "messages": len(msgs), "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(events / cpu) if cpu > 0 else None,
            "events_per_s": round(events / wall) if wall > 0 else None, "alerts": alerts}


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used (Linux ``/proc``), else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return f"    (no log at {path})"
    return "\n".join(f"    | {ln[:300]}" for ln in text) + f"\n    (whole log: {path})"


# -- one run --------------------------------------------------------------------------------


def _run_once(base: Settings, bootstrap: str, plan: BacklogPlan, *, workers: int, partitions: int,
              drain_timeout_s: float, say: Say, python: str | None,
              worker_log_level: str = "warning", join_late: bool = False) -> dict[str, Any]:
    import sys

    from kafka import KafkaAdminClient

    from convergence.streams import kafka_client
    from convergence.streams.supervisor import Child, RestartPolicy, Supervisor, worker_argv, worker_env
    from convergence.streams.topics import ensure_topics

    tag = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix=f"convergence-bench-{tag}-"))
    fleet = tmp / "fleet.toml"
    fleet.write_text(fleet_toml(plan))
    s = base.replace(kafka_bootstrap=bootstrap, topic_prefix=f"bench-{tag}",
                     faust_app_id=f"bench-{tag}", data_dir=tmp, db="mem://", metrics_port=-1,
                     meter_model="rules", allowed_lateness_s=round(plan.poll_s + LATENESS_SLACK_S, 3),
                     stations=plan.stations, seed=plan.seed, fleet=str(fleet),
                     partitions=partitions)
    topic = s.topic("events")
    sup = Supervisor(say=say, policy=RestartPolicy(max_quick_failures=1))
    admin = None
    watch: EvidenceWatch | None = None
    result: dict[str, Any] = {}
    try:
        ensure_topics(s, partitions=partitions)
        say(f"filling {topic} with {plan.events:,} events, {plan.batch} per message ...")
        fill = fill_backlog(bootstrap, topic, plan)
        offsets = fill.pop("_offsets")
        table, end = offsets.table(), offsets.end
        say(f"raw consume of {fill['messages']:,} messages ...")
        base_r = raw_consume(bootstrap, topic, offsets)
        say("the workers' own code in process, for comparison ...")
        core_r = core_rate(s, plan, partitions)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 client_id="convergence-bench-lag",
                                 bootstrap_timeout_ms=kafka_client.BOOTSTRAP_TIMEOUT_MS)
        py = python or sys.executable
        log_dir = tmp / "logs"
        extra = ["--partitions", str(partitions)]

        def add_worker(i: int) -> None:
            sup.add(Child(f"worker {i}", "worker",
                          [*worker_argv(log_level=worker_log_level, store=i == 0, python=py),
                           *extra], worker_env(s), log_dir / f"worker-{i}.log", store=i == 0))

        say(f"starting {workers} worker(s) ..." if not join_late or workers == 1 else
            f"starting 1 worker; {workers - 1} more once it is draining the backlog ...")
        started = time.monotonic()
        for i in range(1 if join_late else workers):
            add_worker(i)
        # the workers are draining once their first ticks closed (their evidence is on the
        # node-evidence topic); they commit a message only later, once its ticks closed
        watch = EvidenceWatch(bootstrap, s.topic("node-evidence"))
        cpu0: dict[str, float | None] = {c.name: None for c in sup.children}
        samples: list[tuple[float, int]] = []
        first: tuple[float, int] | None = None
        done_at: float | None = None
        deadline = started + drain_timeout_s
        while time.monotonic() < deadline:
            for child in sup.poll():
                raise RuntimeError(f"{child.name} (pid {child.proc.pid if child.proc else '?'}) "
                                   f"exited during the benchmark; its log:\n{_tail(child.log_path)}")
            committed = committed_offsets(admin, s.faust_app_id, topic)
            now = time.monotonic()
            done = events_before(table, committed)
            if first is None and (done > 0 or watch.handed_on()):
                first = (now, done)
                cpu0 = {c.name: _cpu_s(c.proc.pid) if c.proc else None for c in sup.children}
                if len(sup.children) < workers:
                    # join_late: the first worker is draining the backlog; the others join
                    # a busy group, the rebalance lands in its fetched batches
                    say(f"the first worker hands on evidence: starting {workers - 1} more ...")
                    for i in range(1, workers):
                        add_worker(i)
                        cpu0[f"worker {i}"] = 0.0
            samples.append((now, done))
            if all(committed.get(p, 0) >= e for p, e in end.items()):
                done_at = now
                break
            time.sleep(0.25)
        # the workers read their last input about when the committed offsets last stood
        # still for long (the tail's recovery hold): their watermark runs on from there
        quiet_wall = time.time() - (time.monotonic() - quiet_since(samples))
        if done_at is None:
            logs = "\n".join(f"  {c.name} ({c.log_path}):\n{_tail(c.log_path)}" for c in sup.children)
            raise RuntimeError(f"the workers did not consume the backlog within {drain_timeout_s:g} s "
                               f"(committed {samples[-1][1] if samples else 0:,} of "
                               f"{fill['events']:,} events); their logs:\n{logs}")
        cpu = {c.name: _cpu_s(c.proc.pid) if c.proc else None for c in sup.children}
        assert first is not None
        cpu_used = {name: cpu_delta(cpu[name], cpu0.get(name)) for name in cpu}
        # the rate from the first evidence handed on (or the first commit, if seen first)
        # until SUSTAINED_SHARE of the backlog is committed; see drain_figures
        worker_r, rate = drain_figures(samples, fill, started=started, first=first, done_at=done_at,
                                       cpu_used=cpu_used)
        backlog_alerts = count_alerts(bootstrap, s.topic("alerts"))
        live = live_phase(bootstrap, s, plan, say, quiet_wall) if plan.live_s > 0 else None
        for child in sup.poll():
            raise RuntimeError(f"{child.name} exited during the live phase; its log:\n"
                               f"{_tail(child.log_path)}")
        result.update(run_figures(plan, s, workers=workers, partitions=partitions,
                                  join_late=join_late, fill=fill, baseline=base_r, cluster=worker_r,
                                  rate=rate, core=core_r,
                                  alerts={"backlog": backlog_alerts, **(live or {})}))
        return result
    finally:
        # as `cluster down` does: the workers without the store first
        sup.stop([c for c in sup.children if not c.store], timeout_s=60.0)
        sup.stop([c for c in sup.children if c.store], timeout_s=60.0)
        if watch is not None:
            watch.close()
        result["worker_exit_codes"] = [c.proc.returncode if c.proc else None for c in sup.children]
        if result.get("consumed_all"):
            with contextlib.suppress(Exception):  # the figures stay; only this one is missing
                result["stages"] = stage_figures(bootstrap, s, len(sup.children))
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
        delete_run_topics(bootstrap, s)
        if result.get("consumed_all"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a failed run keeps its workers' logs for whoever looks into it
            for left in tmp.iterdir():
                if left.is_dir() and left.name != "logs":
                    shutil.rmtree(left, ignore_errors=True)
                elif not left.is_dir():
                    left.unlink(missing_ok=True)


# -- the sweep ---------------------------------------------------------------------------------


def bench_cluster(settings: Settings, bootstrap: str, *, workers: Sequence[int] = (1,),
                  batches: Sequence[int] = (DEFAULT_BATCH,), events: int = 2_000_000,
                  partitions: int | None = None, rate_scale: float = DEFAULT_RATE_SCALE,
                  live_s: float = 20.0, live_episodes: int = 2, seed: int | None = None,
                  drain_timeout_s: float = 1800.0, say: Say = _quiet,
                  python: str | None = None, worker_log_level: str = "warning",
                  join_late: bool = False) -> dict[str, Any]:
    """Throughput and alert latency of real workers for each (workers, batch) pair
    (module docstring); one run after the other on the broker at ``bootstrap``.

    ``partitions``: of the events topic (and the ``node-evidence`` topic), default
    ``settings.partitions`` as ``cluster up`` creates them; a worker owns a share.
    ``join_late``: start one worker, and the others once it hands on its first evidence
    (scaling out a busy cluster: their rebalance lands in the middle of the backlog).
    ``worker_log_level``: of the workers' logs (kept when a run fails).
    """
    if not workers or any(not 1 <= w <= 16 for w in workers):
        raise ValueError(f"workers must be between 1 and 16, got {list(workers)}")
    if not batches or any(not 1 <= b <= 5000 for b in batches):
        raise ValueError(f"batch must be between 1 and 5000 events per message, got {list(batches)}")
    if events < 1000:
        raise ValueError(f"events must be >= 1000, got {events}")
    if partitions is not None and not 1 <= partitions <= 64:
        raise ValueError(f"partitions must be between 1 and 64, got {partitions}")
    if live_s < 0 or live_episodes < 0:
        raise ValueError(f"live_s and live_episodes must be >= 0, got {live_s}, {live_episodes}")
    seed = settings.seed if seed is None else seed
    runs = []
    t_start = time.time()
    for w in workers:
        for b in batches:
            # event time: the backlog ends a little before now; the live phase continues it
            plan = BacklogPlan(stations=settings.stations, seed=seed, batch=b, events=events,
                               rate_scale=rate_scale, live_s=live_s, live_episodes=live_episodes)
            plan = replace(plan, t0_s=float(math.floor(time.time())) - plan.backlog_s - 60.0)
            say(f"run: {w} worker(s), {b} events per message")
            try:
                runs.append(_run_once(settings, bootstrap, plan, workers=w,
                                      partitions=partitions or settings.partitions,
                                      drain_timeout_s=drain_timeout_s,
                                      say=say, python=python,
                                      worker_log_level=worker_log_level,
                                      join_late=join_late))
            except RuntimeError as exc:  # the other runs still count; this one says why not
                say(f"run failed: {exc}")
                runs.append({"workers": w, "batch": b, "error": str(exc)[:4000]})
    import kafka

    return {
        "benchmark": "cluster", "stations": settings.stations, "seed": seed,
        "rate_scale": rate_scale, "events_requested": events, "live_s": live_s,
        "live_episodes": live_episodes, "runs": runs, "compare": compare(runs),
        "seconds": round(time.time() - t_start, 1), "kafka_bootstrap": bootstrap,
        "kafka_python": kafka.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }
