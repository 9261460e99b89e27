"""The cluster benchmark's live phase: the fleet in real time after the backlog, and
how long each alert took.

Once the workers consumed the backlog, :func:`live_phase` sends the fleet's next
messages in real time (each station its interval's events when the interval ends),
with the plan's genuine convergences, while :class:`AlertReader` reads the alerts topic.
An alert's latency is the time from the send of the last message that contributed to
it (a station of its region, with events before the alert's tick end) to the alert
being read; only alerts of a convergence's region whose tick ends after the convergence
began count, every other alert of the live phase is a false alarm (``live_false``, the
first 20 listed with why). A tick closes once events ``allowed_lateness_s`` later have arrived, so
latency includes the poll interval and the lateness: the price of bigger batches.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from convergence.settings import Settings
from convergence.simulation.cluster_backlog import BacklogPlan, Message, backlog_messages
from convergence.simulation.cluster_broker import fleet_producer
from convergence.simulation.cluster_figures import percentile, round3

__all__ = ["COMMIT_SLACK_S", "AlertReader", "Say", "live_phase"]

#: Faust commits a worker's offsets every 2.8 s by default; the watermark may run that
#: far (and the polling period) ahead of what the harness saw committed
COMMIT_SLACK_S = 4.0
#: how the benchmark tells a person what it is doing, one line at a time
Say = Callable[[str], None]


class AlertReader:
    """Reads the alerts topic in a thread from where it is now, noting when each came."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from convergence.streams import kafka_client

        self._consumer = kafka_client.consumer(bootstrap, "convergence-bench-alerts")
        self._tps = kafka_client.assign_all(self._consumer, topic, start="end", wait_s=10.0)
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-alerts")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                for r in records:
                    with contextlib.suppress(ValueError):
                        self.alerts.append((now, orjson.loads(r.value)))

    def close(self) -> None:
        """Stop reading and close the consumer."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._consumer.close()


def live_phase(bootstrap: str, s: Settings, plan: BacklogPlan, say: Say,
               quiet_wall: float) -> dict[str, Any]:
    """The fleet in real time after the backlog; alert latency (see the module docstring).

    Since the workers read the backlog's last events (about ``quiet_wall``: committed
    offsets trail them by up to Faust's commit interval) their watermark went on with
    wall time; the live phase's event time starts that much, plus a margin, after the
    backlog's end, so none of it is late: to the detectors, some quiet seconds.
    """
    reader = AlertReader(bootstrap, s.topic("alerts"))
    producer = fleet_producer(bootstrap)
    topic = s.topic("events")
    sent: list[tuple[float, Message]] = []
    shift = time.time() - quiet_wall + COMMIT_SLACK_S
    plan = replace(plan, t0_s=plan.t0_s + shift)
    live_t0 = plan.t0_s + plan.backlog_s
    # each live convergence's region and when its events begin (the backlog's episodes
    # ended well before the live phase): a station draws a poll interval's events at the
    # rate of the interval's middle, so they begin with the first interval whose middle
    # is past the convergence's start (up to half an interval before it)
    poll = plan.poll_s
    began = {e.region: plan.t0_s + math.ceil(e.start_s / poll - 0.5) * poll
             for e in plan.scenario().episodes if e.genuine and e.start_s >= plan.backlog_s}
    regions = set(began)
    say(f"live phase: {plan.live_s:g} s in real time, {plan.live_episodes} genuine convergence(s) ...")
    try:
        wall0 = time.time()
        for m in backlog_messages(plan, live=True):
            wait = wall0 + (m.send_at_s - live_t0) - time.time()
            if wait > 0:
                time.sleep(wait)
            producer.send(topic, key=m.key, value=m.value)
            sent.append((time.time(), m))
        producer.flush()
        # the last ticks close once input has been quiet (idle advance) or later events came
        time.sleep(plan.poll_s + s.allowed_lateness_s + s.tick_s + 4.0)
    finally:
        producer.close(timeout=10)
        reader.close()
    latencies: list[float] = []
    per_alert = []
    others: list[dict[str, Any]] = []
    for got_at, doc in reader.alerts:
        t_alert = float(doc.get("time_s", 0.0))
        if t_alert <= live_t0:
            continue
        region = doc.get("region")
        if region not in began or t_alert <= began[region]:
            # a false alarm: a region with no convergence, or before its convergence began
            others.append({"region": region, "level": doc.get("level"),
                           "tick_end_s": round(t_alert - live_t0, 2),
                           "why": "no convergence in this region" if region not in began
                           else f"{round(began[region] - t_alert, 2)} s before its convergence began"})
            continue
        contrib = [at for at, m in sent if m.region == region and m.first_s < t_alert]
        if not contrib:
            continue
        lat = got_at - max(contrib)
        latencies.append(lat)
        per_alert.append({"region": region, "level": doc.get("level"),
                          "tick_end_s": round(t_alert - live_t0, 2), "latency_s": round(lat, 3)})
    return {"live": len(per_alert), "live_false": len(others),
            "false_alarms": others[:20], "live_s": plan.live_s,
            "live_regions": sorted(regions), "live_gap_s": round(shift, 2),
            "live_events": sum(m.n_events for _, m in sent),
            "latency_s": {"p50": round3(percentile(latencies, 50)),
                          "p99": round3(percentile(latencies, 99)),
                          "max": round3(max(latencies) if latencies else None),
                          "n": len(latencies)},
            "per_alert": per_alert}
