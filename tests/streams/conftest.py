"""One synthetic feed shared by the worker-core tests and the Faust tier, and the wait
for a worker subprocess that the real-broker tests share.

Test modules cannot import each other, so these are session fixtures: ``feed``,
``start_worker``, ``wait_for_worker`` and ``stop_worker``; and ``make_shard``, the campaign
shard the ``test_campaign_*`` modules vary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convergence.ground_stations.scenario import SyntheticWorld, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.settings import Settings


class Feed:
    """The default scenario's first 20 s as Kafka-sized messages, plus a probe station."""

    scenario_s = 20.0
    slice_s = 0.5
    probe = "probe-001"

    @classmethod
    def messages(cls, s: Settings, t0: float) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """(station, records) messages in time order.

        Time order matters: the worker's watermark is the largest event time seen, so a
        station replayed all at once would make everyone else's events late.
        """
        sc = default_scenario(s.stations, s.seed, cls.scenario_s + 40)
        world = SyntheticWorld(sc)
        sources = [SyntheticSource(world, i, t0, s.seed) for i in range(len(sc.fleet))]
        for k in range(int(cls.scenario_s / cls.slice_s)):
            for src in sources:
                recs = src.draw(k * cls.slice_s, (k + 1) * cls.slice_s)
                if recs:
                    yield src.info.station_id, recs

    @classmethod
    def genuine_region(cls, s: Settings) -> str:
        sc = default_scenario(s.stations, s.seed, cls.scenario_s + 40)
        (ep,) = [e for e in sc.genuine() if e.start_s < cls.scenario_s]
        assert ep.region is not None
        return ep.region

    @classmethod
    def probe_batch(cls, t: float) -> list[dict[str, Any]]:
        """Three good events and one bad one (a value that is not a number)."""
        good = [{"station_id": cls.probe, "source_kind": "sensor", "event_time_s": t + 0.1 * i,
                 "category": "seismic", "value": 10.0 + i} for i in range(3)]
        bad = {"station_id": cls.probe, "source_kind": "sensor", "event_time_s": t + 0.05,
               "category": "seismic", "value": "twelve"}
        return [*good[:2], bad, good[2]]


@pytest.fixture(scope="session")
def feed() -> type[Feed]:
    return Feed


def wait_for(pred: Callable[[], Any], proc: subprocess.Popen[bytes], log_path: Path,
             timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """``pred()``'s first truthy answer; fails the test (with the worker log's tail) when
    the worker exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n"
                        + log_path.read_text(errors="replace")[-4000:])
        time.sleep(poll_s)
    pytest.fail(f"no {what} within {timeout_s:g} s; worker log tail:\n"
                + log_path.read_text(errors="replace")[-4000:])


def start(env: dict[str, str], folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``convergence cluster worker`` at log level info, in ``folder`` with ``env`` on top
    of this process's environment; its output goes to ``folder/worker.log``."""
    from convergence.cli.cluster import worker_command

    log_path = folder / "worker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([*worker_command(), "--log-level", "info"],
                                env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=folder)
    return proc, log_path


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM the worker (if it still runs) and wait for it; its exit code, or ``None``
    when it had to be killed after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.fixture(scope="session")
def wait_for_worker() -> Callable[..., Any]:
    """``wait_for_worker(pred, proc, log_path, timeout_s, what)``: see :func:`wait_for`."""
    return wait_for


@pytest.fixture(scope="session")
def start_worker() -> Callable[[dict[str, str], Path], tuple[subprocess.Popen[bytes], Path]]:
    """``start_worker(env, folder)``: ``(process, log path)``, see :func:`start`."""
    return start


@pytest.fixture(scope="session")
def stop_worker() -> Callable[[subprocess.Popen[bytes], float], int | None]:
    """``stop_worker(proc, timeout_s)``: see :func:`stop`."""
    return stop


@pytest.fixture(scope="session")
def make_shard() -> Callable[..., Any]:
    """``make_shard(**changes)``: a small valid campaign shard (two ``lone-surge`` runs of
    campaign ``c1``, this code's fingerprint, expiring in a minute), with ``changes``."""
    from convergence.simulation.campaign import DEFAULT_DETECTOR, ParamSpace
    from convergence.streams.campaign_orders import Shard, code_fingerprint

    def make(**kw: Any) -> Shard:
        base: dict[str, Any] = {"campaign": "c1", "shard": 0, "scenario": "lone-surge", "first": 0,
                                "count": 2, "seed": 3, "space": ParamSpace(), "sweep": False,
                                "mode": "cells", "detector": DEFAULT_DETECTOR,
                                "code": code_fingerprint(), "expires_at_s": time.time() + 60}
        return Shard(**(base | kw))

    return make
